"""Domain objects passed between the cycle and its plugins.

They are plain frozen dataclasses over numpy arrays so that the maths stays pure and a plugin author
never has to import the ledger or the scheduler to implement a component. Units are part of the
contract: prices and cash are in the quote currency (``bot.quote`` in the config), volumes are in
units of the asset, times are timezone-aware UTC ``datetime`` objects, covariances are per hour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal

import numpy as np

from bot.errors import DataError, ForecastError

HOURS_PER_YEAR = 24 * 365
"""Every venue in rwabot's default universe trades around the clock; annualisation uses 8760 h."""


@dataclass(frozen=True)
class Bars:
    """Hourly bars for a set of assets on a common time grid.

    ``times[k]`` is the *close* time of bar ``k`` (a bar covers ``(times[k] - 1h, times[k]]``);
    ``close[k, i]`` the last price of asset ``i`` in that hour; ``volume[k, i]`` the units of asset
    ``i`` traded in that hour.
    """

    assets: tuple[str, ...]
    times: tuple[datetime, ...]
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        n, t = len(self.assets), len(self.times)
        if self.close.shape != (t, n) or self.volume.shape != (t, n):
            raise DataError(
                f"bars: close {self.close.shape} and volume {self.volume.shape} must both be ({t} times, {n} assets)"
            )

    @property
    def traded_value(self) -> np.ndarray:
        """Quote-currency value traded per hour and asset, shape (T, N)."""
        return self.close * self.volume

    def column(self, asset: str) -> int:
        return self.assets.index(asset)


@dataclass(frozen=True)
class Snapshot:
    """The freshest price of each asset, possibly from inside the current hour."""

    assets: tuple[str, ...]
    prices: np.ndarray
    times: tuple[datetime, ...]


@dataclass(frozen=True)
class Forecast:
    """A one-step-ahead covariance forecast Σ = ρ ∘ σσᵀ of hourly log returns."""

    assets: tuple[str, ...]
    cov: np.ndarray
    sigma: np.ndarray
    corr: np.ndarray
    model: str
    horizon_hours: int = 1
    mu: np.ndarray | None = None
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_cov(
        cls,
        assets: Sequence[str],
        cov: np.ndarray,
        model: str,
        *,
        mu: np.ndarray | None = None,
        diagnostics: Mapping[str, Any] | None = None,
    ) -> Forecast:
        cov = 0.5 * (np.asarray(cov, dtype=float) + np.asarray(cov, dtype=float).T)
        sigma = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = cov / np.outer(sigma, sigma)
        corr[~np.isfinite(corr)] = 0.0
        np.fill_diagonal(corr, 1.0)
        return cls(tuple(assets), cov, sigma, corr, model, 1, mu, dict(diagnostics or {}))

    def validate(self) -> None:
        """Raise ForecastError unless Σ is finite, symmetric and positive semi-definite."""
        n = len(self.assets)
        if self.cov.shape != (n, n):
            raise ForecastError(f"{self.model}: covariance shape {self.cov.shape}, expected ({n}, {n})")
        bad = [a for a, ok in zip(self.assets, np.isfinite(self.cov).all(axis=1)) if not ok]
        if bad:
            raise ForecastError(f"{self.model}: covariance is not finite for assets {bad}")
        c = self.cov
        if not (np.abs(c - c.T) <= 1e-14 + 1e-10 * np.abs(c.T)).all():  # np.allclose's test, without its overhead
            raise ForecastError(f"{self.model}: covariance is not symmetric")
        scale = float(np.abs(np.diag(c)).max()) if n else 0.0
        try:  # positive definite (the usual case) needs no eigenvalues: a Cholesky factor is proof
            np.linalg.cholesky(c)
            lam_min = 0.0
        except np.linalg.LinAlgError:
            lam_min = float(np.linalg.eigvalsh(c).min()) if n else 0.0
        if lam_min < -1e-10 * max(scale, 1e-300):
            raise ForecastError(
                f"{self.model}: covariance is not positive semi-definite (smallest eigenvalue {lam_min:.3e})"
            )
        zero = [a for a, s in zip(self.assets, self.sigma) if s <= 0.0]
        if zero:
            raise ForecastError(f"{self.model}: zero forecast volatility for assets {zero}")


@dataclass(frozen=True)
class Target:
    """Target weights of NAV per asset; ``1 - weights.sum()`` stays in cash.

    ``risk_contributions`` are fractions of forecast portfolio volatility (they sum to 1 over the
    invested assets); ``capped`` marks assets held at their upper bound.
    """

    assets: tuple[str, ...]
    weights: np.ndarray
    risk_contributions: np.ndarray
    sigma_p: float
    capped: np.ndarray
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cash_weight(self) -> float:
        return float(1.0 - self.weights.sum())


@dataclass(frozen=True)
class Decision:
    """What a rebalancing policy decided: the weights to move to, and why."""

    weights: np.ndarray
    trade: bool
    reason: str


Side = Literal["buy", "sell"]


class OrderStatus(str, Enum):
    """Life of a leg; only the last three are terminal."""

    PLANNED = "planned"
    SENDING = "sending"
    OPEN = "open"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED)


@dataclass(frozen=True)
class MarketInfo:
    """Trading rules of one asset on one venue."""

    asset: str
    qty_step: float
    min_qty: float
    min_notional: float
    price_step: float
    taker_fee: float


@dataclass(frozen=True)
class Quote:
    asset: str
    bid: float
    ask: float
    time: datetime
    hourly_volume: float

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask)


@dataclass(frozen=True)
class Balances:
    """Free cash in the quote currency and positions in asset units, as the venue reports them.

    ``reserved`` is the part of ``cash`` that cannot buy assets (an on-chain wallet's gas reserve
    in the native token): it counts in NAV, but the cycle never plans buys with it.

    ``pending`` is value in flight that is neither cash nor in the wallet yet, in asset units at
    today's price: an asynchronous subscription or redemption (ERC-7540) waiting to be claimed. It
    counts in NAV and risk as a position of that asset, and the cycle holds the asset fixed (does
    not trade it) until the request settles.
    """

    cash: float
    positions: Mapping[str, float]
    reserved: float = 0.0
    pending: Mapping[str, float] = field(default_factory=dict)
    time: datetime | None = None  # as of when the venue says these are true (a block's time); None: now

    @property
    def spendable(self) -> float:
        """Cash that can pay for assets: ``cash - reserved``, never below zero."""
        return max(float(self.cash) - float(self.reserved), 0.0)


@dataclass(frozen=True)
class Order:
    """One leg of a rebalance plan. ``client_id`` is deterministic per (cycle, asset, attempt)."""

    client_id: str
    cycle_key: str
    venue: str
    asset: str
    side: Side
    qty: float
    decision_price: float
    limit_price: float | None = None


@dataclass(frozen=True)
class Fill:
    """An execution. ``slippage`` is the cost against the decision price in the quote currency
    (positive when the fill was worse), ``fee`` and ``gas`` are paid in the quote currency."""

    fill_id: str
    client_id: str
    venue: str
    asset: str
    side: Side
    qty: float
    price: float
    fee: float
    slippage: float
    time: datetime
    gas: float = 0.0


@dataclass(frozen=True)
class OrderState:
    """The venue's view of an order, looked up by client order id."""

    client_id: str
    status: OrderStatus
    filled_qty: float
    fills: tuple[Fill, ...] = ()
    venue_order_id: str | None = None
    message: str = ""


@dataclass(frozen=True)
class GroupBound:
    """A linear bound on a group of weights, ``lower ≤ Σ_{i ∈ members} w_i ≤ upper``: a venue budget.

    The cycle hands the optimizer one per venue whose assets cannot all be bought with the value the
    venue holds now (cash cannot jump between venues: it travels, see ``Transfer``). Weights are in the
    optimizer's frame (they sum to 1), so are ``upper`` and ``lower``. Groups passed together are
    disjoint (a venue partition); ``members`` is a boolean mask over the assets.
    """

    name: str
    members: np.ndarray
    upper: float = 1.0
    lower: float = 0.0


class TransferStatus(str, Enum):
    """Life of a cash movement between two venues; only the last three are terminal.

    ``pending``: the source has accepted it (a withdrawal id, a mined transaction) and the destination
    has not credited it yet: the cash is *in transit*, in NAV but spendable nowhere.
    """

    PLANNED = "planned"
    SENDING = "sending"
    PENDING = "pending"
    ARRIVED = "arrived"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (TransferStatus.ARRIVED, TransferStatus.FAILED, TransferStatus.CANCELED)


@dataclass(frozen=True)
class DepositAddress:
    """Where a venue receives ``asset`` over ``network``: a chain address (and tag/memo where the
    network needs one), or ``paper:<venue>`` for the paper venues' simulated network."""

    venue: str
    asset: str
    network: str
    address: str
    tag: str | None = None


@dataclass(frozen=True)
class Transfer:
    """One funding leg: ``amount`` of the quote currency (``asset`` is its code at the venues, USDT, USDC)
    from venue ``source`` to venue ``destination``'s deposit ``address`` over ``network``.

    ``amount`` is what must arrive; a venue whose withdrawal fee is taken out of the amount sends
    ``amount + fee`` so that it does. ``client_id`` is deterministic per (cycle, route) and is the
    idempotency key at the source (a withdrawal's client order id, the journal key of a signed
    transaction).
    """

    client_id: str
    cycle_key: str
    source: str
    destination: str
    asset: str
    amount: float
    network: str
    address: str
    tag: str | None = None


@dataclass(frozen=True)
class TransferState:
    """The source's (or destination's) view of a transfer, looked up by its client id.

    ``amount`` is what arrives (or arrived) at the destination, ``fee`` the source's withdrawal fee and
    ``gas`` the network gas it paid, both in the quote currency and both costs of their own kind in the
    ledger. ``external_id`` is the source's id (withdrawal id, transaction hash); ``txid`` the on-chain
    hash of the movement once known, which the destination is asked about.
    """

    client_id: str
    status: TransferStatus
    amount: float
    fee: float = 0.0
    gas: float = 0.0
    external_id: str | None = None
    txid: str | None = None
    message: str = ""
    time: datetime | None = None


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class RiskEvent:
    """Something a human should know about: a breach, a rejected order, bad data.

    ``where`` names the component (``venue:cex``, ``data:simulated``, ``cycle``) so that an alert
    can be routed without parsing the message.
    """

    kind: str
    severity: Severity
    where: str
    message: str
    time: datetime
    cycle_key: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CycleInfo:
    key: str
    trigger: str
    scheduled_for: datetime


@dataclass(frozen=True)
class CycleReport:
    """Summary of a finished cycle, handed to ``rwabot_cycle_finished`` and printed by the CLI."""

    key: str
    status: str
    nav: float
    sigma_p_annual: float
    assets: tuple[str, ...]
    current: np.ndarray
    target: np.ndarray
    decided: np.ndarray
    orders: int
    fills: int
    fees: float
    slippage: float
    message: str = ""
    in_flight: int = 0  # legs of this cycle a venue accepted and has not finished (followed at every tick)
    repeated: bool = False  # the cycle had already run (a catch-up and the hour's own job on the same key)


def check_prices(assets: Sequence[str], prices: np.ndarray, where: str) -> None:
    """Raise DataError naming the assets whose prices are NaN, infinite or not positive."""
    bad = [a for a, p in zip(assets, np.asarray(prices, dtype=float)) if not np.isfinite(p) or p <= 0]
    if bad:
        raise DataError(f"{where}: invalid price (NaN, infinite or <= 0) for {bad}")
