"""Typed interfaces of the five plugin families and what their factories receive.

The cycle only ever talks to these protocols; a plugin may be any object with these methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from bot.domain import (
    Balances,
    Bars,
    Decision,
    DepositAddress,
    Forecast,
    GroupBound,
    MarketInfo,
    Order,
    OrderState,
    Quote,
    RiskEvent,
    Snapshot,
    Target,
    Transfer,
    TransferState,
    TransferStatus,
)


class ComponentConfig(BaseModel):
    """Base of every component's options: strict types, frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NoOptions(ComponentConfig):
    """For components that take no options."""


class Clock(Protocol):
    """Where "now" comes from: the wall clock live, a simulated clock in backtests and demos."""

    def now(self) -> datetime: ...


@runtime_checkable
class DataSource(Protocol):
    """Gives hourly bars and the freshest prices of the assets it knows."""

    def assets(self) -> tuple[str, ...]: ...

    def bars(self, assets: Sequence[str], end: datetime, hours: int) -> Bars: ...

    def latest(self, assets: Sequence[str], now: datetime) -> Snapshot: ...

    def asset_kind(self, asset: str) -> str: ...


@runtime_checkable
class Forecaster(Protocol):
    """Turns a window of hourly log returns (T × N, oldest first) into a one-hour-ahead Forecast."""

    name: str

    def forecast(self, assets: Sequence[str], returns: np.ndarray) -> Forecast: ...


@runtime_checkable
class ReturnModel(Protocol):
    """Expected next-hour log returns from a window of hourly log returns (T × N, oldest first)."""

    name: str

    def expected(self, assets: Sequence[str], returns: np.ndarray) -> np.ndarray: ...


class ForecastStream(Protocol):
    """A forecast kept current one return at a time (optional: ``Forecaster.stream(assets, window)``
    returns one, or None when the model cannot be updated in one step). The fast backtest uses it so an
    hour costs an update, not a refit on the whole window. ``update`` gives what ``forecast`` gives on the
    window slid by one return (``ewma``, ``ledoit_wolf``: exactly), or, for a recursive model, what its
    recursion gives carried forward from its last refit: ``dcc`` filters on from its last fit where the
    daemon re-runs the filter over each rolled window, a difference of order max(b, β)^window that closes
    at every refit (docs/forecasting.md)."""

    def update(self, new_return: np.ndarray) -> Forecast: ...


@runtime_checkable
class Optimizer(Protocol):
    """Turns a Forecast and bounds into target weights (Σw ≤ 1, the rest in cash).

    ``groups`` (optional keyword; an optimizer that does not take it gets none) are linear bounds on
    disjoint groups of weights, the venue budgets: risk parity holds on the assets that no bound, box
    or group, binds. The cycle passes them only when some venue cannot hold its share of the
    unconstrained target now; ``Target.diagnostics["groups"]`` then names the groups that bind
    (``{name: "upper" | "lower"}``).
    """

    name: str

    def optimize(
        self,
        forecast: Forecast,
        *,
        upper: np.ndarray,
        lower: np.ndarray,
        current: np.ndarray,
        groups: Sequence[GroupBound] = (),
    ) -> Target: ...


@runtime_checkable
class Policy(Protocol):
    """Decides how far to move from the current weights toward the target this cycle."""

    name: str

    def decide(self, current: np.ndarray, target: Target, forecast: Forecast) -> Decision: ...


@runtime_checkable
class Venue(Protocol):
    """Where orders go. Every call may raise VenueError; place_order must be idempotent per
    client id (a second call with the same client id returns the existing order's state)."""

    name: str

    def market(self, asset: str) -> MarketInfo: ...

    def quote(self, asset: str) -> Quote: ...

    def balances(self) -> Balances: ...

    def place_order(self, order: Order) -> OrderState: ...

    def fetch_order(self, client_id: str) -> OrderState | None: ...

    def cancel_order(self, client_id: str) -> OrderState: ...

    def close(self) -> None: ...


@runtime_checkable
class FundingVenue(Protocol):
    """A venue that can send and receive the quote currency (optional methods of a Venue).

    Source side: ``send_transfer`` is idempotent per ``Transfer.client_id`` (a second call returns the
    first one's state, never a second withdrawal) and ``fetch_transfer`` finds a transfer by that id,
    None when the venue never received it (then, and only then, it may be sent). Destination side:
    ``deposit_address`` is where it receives ``asset`` over ``network``; ``deposit_status`` says whether
    a transfer the source reports sent has been credited (ARRIVED), is seen but not credited (PENDING)
    or is not seen (None). Every call may raise VenueError; a destination address the config's
    allow-list does not hold is refused by the cycle before ``send_transfer`` is called.
    """

    def deposit_address(self, asset: str, network: str) -> DepositAddress: ...

    def send_transfer(self, transfer: Transfer) -> TransferState: ...

    def fetch_transfer(self, client_id: str) -> TransferState | None: ...

    def deposit_status(self, transfer: Transfer, state: TransferState) -> TransferStatus | None: ...


@dataclass
class ComponentContext:
    """What a factory receives besides its options: shared services, never globals."""

    clock: Clock
    state_dir: Path
    assets: tuple[str, ...]
    emit: Callable[[RiskEvent], None]
    data: DataSource | None = None
    extra: dict[str, Any] = field(default_factory=dict)


ConfigT = TypeVar("ConfigT", bound=ComponentConfig)
Factory = Callable[[Any, ComponentContext], Any]


class Register(Protocol):
    """The callback a registration hook receives: ``register(name, factory, config_model)``."""

    def __call__(self, name: str, factory: Factory, config_model: type[ComponentConfig] = NoOptions) -> None: ...
