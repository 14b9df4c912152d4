"""The public plugin contract of rwabot: every hook a plugin may implement.

Hooks are grouped by phase. Component hooks are *registration* hooks: they hand the plugin a
``register(name, factory, config_model)`` callback and the cycle then calls the typed objects the
factories build (see ``bot.components``), never ``pm.hook`` on its hot path. Lifecycle hooks are
notifications; their return values are ignored and an exception in one is logged and recorded as
a risk event, never allowed to stop a cycle that is moving money.
"""

from __future__ import annotations

import pluggy

from bot.components import Register
from bot.domain import CycleInfo, CycleReport, Fill, Order, RiskEvent

PROJECT = "rwabot"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# -- registration: data ---------------------------------------------------------------------------


@hookspec
def rwabot_register_data_sources(register: Register) -> None:
    """Register market-data sources.

    :param register: call ``register(name, factory, config_model)`` once per source. ``factory``
        is called as ``factory(options, ctx)`` with a validated ``config_model`` instance and a
        ``bot.components.ComponentContext``; it returns a ``DataSource``: ``bars(assets, end,
        hours)`` gives the hourly ``Bars`` closing in ``(end - hours, end]`` (prices in the quote
        currency, volumes in asset units), ``latest(assets, now)`` the freshest prices.
    :raises PluginError: from ``register`` when the name is already taken in this family.
    A source raises ``DataError`` naming the asset when it cannot give a price; it never fills a
    gap silently.
    """


# -- registration: forecast ------------------------------------------------------------------------


@hookspec
def rwabot_register_forecasters(register: Register) -> None:
    """Register covariance forecasters.

    :param register: as for data sources; the factory returns a ``Forecaster`` whose
        ``forecast(assets, returns)`` takes hourly log returns (T × N, oldest first, no NaN) and
        returns a ``Forecast`` of the next hour: Σ per hour (N × N), σ, ρ, the model name and fit
        diagnostics.
    A forecaster raises ``ForecastError`` when it cannot produce a finite PSD matrix; the cycle
    checks every forecast with ``Forecast.validate`` anyway.
    """


# -- registration: optimize --------------------------------------------------------------------------


@hookspec
def rwabot_register_optimizers(register: Register) -> None:
    """Register portfolio optimizers.

    :param register: as above; the factory returns an ``Optimizer`` whose
        ``optimize(forecast, upper=, lower=, current=)`` returns a ``Target``: long-only weights of
        NAV with ``lower <= w <= upper`` and ``sum(w) <= 1`` (the rest stays in cash), their risk
        contributions as fractions of σ_p, and ``capped`` flags.
    Raises ``InfeasibleBoundsError`` (naming the assets) when the bounds admit no portfolio, and
    ``OptimizerError`` for unusable input.
    """


# -- registration: rebalance ---------------------------------------------------------------------------


@hookspec
def rwabot_register_policies(register: Register) -> None:
    """Register rebalancing policies.

    :param register: as above; the factory returns a ``Policy`` whose
        ``decide(current, target, forecast)`` returns a ``Decision``: the weights to move to this
        cycle (between current and target, or anything the policy can justify), whether to trade
        at all, and a one-line reason that is written to the ledger.
    """


# -- registration: execute -----------------------------------------------------------------------------


@hookspec
def rwabot_register_venues(register: Register) -> None:
    """Register venues (connectors) that hold cash and positions and execute orders.

    :param register: as above; the factory returns a ``Venue``: ``market(asset)`` trading rules,
        ``quote(asset)``, ``balances()``, ``place_order(order)`` (idempotent per client id),
        ``fetch_order(client_id)`` (None when the venue never saw it), ``cancel_order``, ``close``.
        ``Balances.reserved`` is cash that counts in NAV but cannot buy assets (a gas reserve).
    Venue methods raise ``VenueError`` (``retryable`` set for transient faults),
    ``InsufficientFunds`` or ``InvalidOrder``; they never return a partial result silently.
    """


# -- registration: compose -----------------------------------------------------------------------------


@hookspec
def rwabot_register_strategies(register: Register) -> None:
    """Register strategies: named compositions of a forecaster, an optimizer and a policy.

    :param register: as above; the factory is called as ``factory(options, ctx)`` and returns a
        mapping ``{"forecaster": {"plugin": ..., "options": {...}}, "optimizer": ..., "policy":
        ...}`` that fills the sections a config leaves out.
    """


# -- lifecycle events ------------------------------------------------------------------------------------


@hookspec
def rwabot_cycle_started(cycle: CycleInfo) -> None:
    """A cycle begins. ``cycle.key`` is unique per scheduled hour (or per risk trigger)."""


@hookspec
def rwabot_cycle_finished(cycle: CycleInfo, report: CycleReport) -> None:
    """A cycle ended (done, skipped or failed); ``report`` holds NAV, weights and costs."""


@hookspec
def rwabot_order_placed(order: Order) -> None:
    """An order was handed to its venue (after its intent was committed to the ledger)."""


@hookspec
def rwabot_fill(fill: Fill) -> None:
    """A fill was recorded in the ledger; fee, slippage and gas are in the quote currency."""


@hookspec
def rwabot_risk_event(event: RiskEvent) -> None:
    """A risk event was recorded: a volatility breach, a rejected order, bad data, a venue failure."""
