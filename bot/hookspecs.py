"""The public plugin contract of rwabot: every hook a plugin may implement.

Hooks are grouped by phase. Component hooks are *registration* hooks: they hand the plugin a
``register(name, factory, config_model)`` callback and the cycle then calls the typed objects the
factories build (see ``bot.components``), never ``pm.hook`` on its hot path. The command hook adds
subcommands to the ``rwabot`` CLI. Lifecycle hooks are notifications; their return values are ignored
and an exception in one is logged and recorded as a risk event, never allowed to stop a cycle that is
moving money.

Every hook documents each parameter (``:param``), what it returns (``:returns:``) and what it raises
(``:raises``), or that an exception in it never escapes; ``tests/bot/test_plugins.py`` holds them to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from bot.components import Register
from bot.domain import CycleInfo, CycleReport, Fill, Order, RiskEvent

if TYPE_CHECKING:
    import typer

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
    :returns: None; the return value is ignored (components reach the cycle only through ``register``).
    :raises PluginError: from ``register`` when the name is already taken in this family or
        ``config_model`` does not subclass ``ComponentConfig``; rwabot stops at start, naming both plugins.
    A factory raises ``ConfigError`` for options it cannot use (rwabot stops at start). A source raises
    ``DataError`` naming the asset when it cannot give a price (the cycle fails with a ``cycle_failed``
    event, nothing is traded); it never fills a gap silently.
    """


# -- registration: forecast ------------------------------------------------------------------------


@hookspec
def rwabot_register_forecasters(register: Register) -> None:
    """Register covariance forecasters.

    :param register: as for data sources; the factory returns a ``Forecaster`` whose
        ``forecast(assets, returns)`` takes hourly log returns (T × N, oldest first, no NaN) and
        returns a ``Forecast`` of the next hour: Σ per hour (N × N), σ, ρ, the model name and fit
        diagnostics.
    :returns: None; the return value is ignored.
    :raises PluginError: from ``register``, as for data sources.
    A forecaster raises ``ForecastError`` when it cannot produce a finite PSD matrix (the cycle fails
    with a ``cycle_failed`` event, nothing is traded); the cycle checks every forecast with
    ``Forecast.validate`` anyway.
    """


@hookspec
def rwabot_register_return_models(register: Register) -> None:
    """Register expected-return models: the μ of the objective's λ·wᵀμ term.

    :param register: as for data sources; the factory returns a ``ReturnModel`` whose
        ``expected(assets, returns)`` takes the same window of hourly log returns a forecaster gets
        (T × N, oldest first) and returns μ, the next hour's expected log return per asset (N,).
        The cycle puts it in ``Forecast.mu`` (replacing the forecaster's own, if any) when the config
        has a ``[returns]`` section.
    :returns: None; the return value is ignored.
    :raises PluginError: from ``register``, as for data sources.
    ``expected`` raises ``ForecastError`` when it cannot give a finite μ for every asset (the cycle
    fails with ``cycle_failed``, nothing is traded); a μ that is silently zero is never an answer.
    """


# -- registration: optimize --------------------------------------------------------------------------


@hookspec
def rwabot_register_optimizers(register: Register) -> None:
    """Register portfolio optimizers.

    :param register: as above; the factory returns an ``Optimizer`` whose
        ``optimize(forecast, upper=, lower=, current=)`` returns a ``Target``: long-only weights of
        NAV with ``lower <= w <= upper`` and ``sum(w) <= 1`` (the rest stays in cash), their risk
        contributions as fractions of σ_p, and ``capped`` flags.
    :returns: None; the return value is ignored.
    :raises PluginError: from ``register``, as for data sources.
    ``optimize`` raises ``InfeasibleBoundsError`` (naming the assets) when the bounds admit no portfolio
    (the cycle then holds every asset at its cap and keeps the rest in cash, with a ``liquidity_cap``
    event), and ``OptimizerError`` for unusable input (the cycle fails with ``cycle_failed``).
    """


# -- registration: rebalance ---------------------------------------------------------------------------


@hookspec
def rwabot_register_policies(register: Register) -> None:
    """Register rebalancing policies.

    :param register: as above; the factory returns a ``Policy`` whose
        ``decide(current, target, forecast)`` returns a ``Decision``: the weights to move to this
        cycle (between current and target, or anything the policy can justify), whether to trade
        at all, and a one-line reason that is written to the ledger.
    :returns: None; the return value is ignored.
    :raises PluginError: from ``register``, as for data sources.
    ``decide`` raises ``PluginError`` when it cannot decide (the cycle fails with a ``cycle_failed``
    event, nothing is traded); any other exception fails the scheduled job (a ``job_failed`` event).
    The cycle clips the decided weights to ``[0, upper]`` and never trades a held asset, whatever the
    policy returns.
    """


# -- registration: execute -----------------------------------------------------------------------------


@hookspec
def rwabot_register_venues(register: Register) -> None:
    """Register venues (connectors) that hold cash and positions and execute orders.

    :param register: as above; the factory returns a ``Venue``: ``market(asset)`` trading rules,
        ``quote(asset)``, ``balances()``, ``place_order(order)`` (idempotent per client id),
        ``fetch_order(client_id)`` (None when the venue never saw it), ``cancel_order``, ``close``.
        ``Balances.reserved`` is cash that counts in NAV but cannot buy assets (a gas reserve).
        ``ctx.extra["venue_name"]`` is the config's name for the venue and ``ctx.extra["where"]``
        the prefix for the factory's own ``ConfigError`` (``config/paper.toml: venues.chain.options``).
    :returns: None; the return value is ignored.
    :raises PluginError: from ``register``, as for data sources.
    Venue methods raise ``VenueError`` (``retryable`` set for transient faults; the venue is held for
    the cycle with a ``venue_failed`` event), ``InsufficientFunds`` or ``InvalidOrder`` (the leg is
    rejected with an ``order_rejected`` event); they never return a partial result silently.
    ``bot.testing.VenueContract`` holds a venue to this, ``bot/template_venue.py`` is one to copy.
    """


# -- registration: operate -----------------------------------------------------------------------------


@hookspec
def rwabot_register_notifiers(register: Register) -> None:
    """Register notifiers: where alerts go (a webhook, a Telegram chat, a pager).

    :param register: as above; the factory returns a ``bot.alerts.Notifier``: ``send(alert)`` delivers
        one ``bot.alerts.Alert`` (kind, severity, where, message, time, data) or raises
        ``NotifierError`` naming the notifier and why (HTTP status, timeout); secrets such as tokens
        are read from the environment by the factory and never appear in an error or a log line.
    :returns: None; the return value is ignored.
    :raises PluginError: from ``register``, as for data sources.
    ``bot.alerts.Alerts`` decides what is sent (kill switch, venue failure, stale data, a large cash
    shortfall, a failed cycle), deduplicates and rate-limits it, and sends from a thread of its own:
    a notifier that hangs or fails never delays a cycle; its failures are logged and counted.
    """


# -- registration: compose -----------------------------------------------------------------------------


@hookspec
def rwabot_register_strategies(register: Register) -> None:
    """Register strategies: named compositions of a forecaster, an optimizer and a policy.

    :param register: as above; the factory is called as ``factory(options, ctx)`` and returns a
        mapping ``{"forecaster": {"plugin": ..., "options": {...}}, "optimizer": ..., "policy":
        ...}`` that fills the sections a config leaves out.
    :returns: None; the return value is ignored.
    :raises PluginError: from ``register``, as for data sources.
    The factory runs at start, before anything is built; it raises ``ConfigError`` for options it cannot
    compose, and the options it hands on are validated by each component (errors name the strategy).
    """


# -- commands ------------------------------------------------------------------------------------------


@hookspec
def rwabot_register_commands(cli: typer.Typer) -> None:
    """Add subcommands to the ``rwabot`` command line (``rwabot devnet`` comes from the evm plugin).

    :param cli: a ``typer.Typer`` of this plugin's own: add commands with ``@cli.command()``. It is
        called only when a command that is not one of the core's is asked for (or listed by
        ``rwabot --help``), so a plugin costs nothing to ``rwabot run``.
    :returns: None; the return value is ignored.
    :raises PluginError: raised by the CLI, not the hook, when a command's name is a core command's
        or another plugin's (the message names both). A command reports failure as the core's do:
        ``bot.cli.fail(exc)`` prints ``error: …`` and exits 2.
    """


# -- lifecycle events ------------------------------------------------------------------------------------


@hookspec
def rwabot_cycle_started(cycle: CycleInfo) -> None:
    """A cycle begins planning, or resumes a plan an earlier run left unfinished.

    :param cycle: ``key`` (unique per scheduled hour, or per risk trigger: ``…T07:15Z/risk``),
        ``trigger`` (``scheduled`` or ``risk``) and ``scheduled_for``.
    :returns: None; the return value is ignored.
    :raises: never raises into the cycle: an exception is logged and recorded as a ``plugin_error`` risk
        event (the other implementations of this call are then skipped), and the cycle goes on.
    """


@hookspec
def rwabot_cycle_finished(cycle: CycleInfo, report: CycleReport) -> None:
    """A cycle ended: done, failed or expired.

    :param cycle: the same ``CycleInfo`` as ``rwabot_cycle_started``.
    :param report: NAV, annualised σ_p, weights (current, target, decided), orders, fills, fees and
        slippage of the cycle, and its message (why it failed, which venue was held).
    :returns: None; the return value is ignored.
    :raises: never raises into the cycle: an exception is logged and recorded as a ``plugin_error`` risk
        event.
    """


@hookspec
def rwabot_order_placed(order: Order) -> None:
    """An order is about to reach its venue: its intent is committed to the ledger, the venue not yet called.

    :param order: the leg as sent (client id, cycle key, venue, asset, side, quantity, decision price).
    :returns: None; the return value is ignored.
    :raises: never raises into the cycle: an exception is logged and recorded as a ``plugin_error`` risk
        event, and the order is still sent.
    """


@hookspec
def rwabot_fill(fill: Fill) -> None:
    """A fill new to the ledger was recorded (each venue fill is announced once, restarts included).

    :param fill: quantity, price, and fee, slippage and gas in the quote currency.
    :returns: None; the return value is ignored.
    :raises: never raises into the cycle: an exception is logged and recorded as a ``plugin_error`` risk
        event.
    """


@hookspec
def rwabot_risk_event(event: RiskEvent) -> None:
    """A risk event was recorded: a volatility breach, a rejected order, bad data, a venue failure.

    :param event: ``kind`` (``vol_breach``, ``cycle_failed``, ``venue_failed``, ``order_rejected``, …),
        ``severity``, ``where`` (the component, for routing), ``message``, ``time``, cycle key and data.
    :returns: None; the return value is ignored.
    :raises: never raises into the cycle: an exception is logged only (recording it as a risk event
        would call this hook again).
    """
