"""One rebalancing cycle: bars → returns → Σ → target → policy → legs → venues → fills → ledger.

The arithmetic (``plan_orders`` and everything in ``bot.riskmath``) is pure; ``Engine`` is the edge
that talks to plugins, venues and the ledger. A cycle is identified by a key that is unique per
scheduled hour (``2026-11-25T07:00Z``) or per risk trigger (``2026-11-25T07:15Z/risk``), so a
retried or restarted cycle finds its own plan in the ledger and resumes it instead of planning
twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
from sqlmodel import select

from bot.alerts import Alerts, build_alerts, resolve_notifiers
from bot.clock import RealClock, SimulatedClock, floor_hour
from bot.components import (
    ComponentConfig,
    ComponentContext,
    DataSource,
    Forecaster,
    Optimizer,
    Policy,
    ReturnModel,
    Venue,
)
from bot.config import Config
from bot.domain import (
    CycleInfo,
    CycleReport,
    Forecast,
    Order,
    OrderState,
    OrderStatus,
    RiskEvent,
    Severity,
    Transfer,
    TransferState,
    TransferStatus,
    check_prices,
)
from bot.errors import (
    ConfigError,
    DataError,
    ForecastError,
    InsufficientFunds,
    InvalidOrder,
    OptimizerError,
    PluginError,
    TransferRefused,
    VenueError,
)
from bot.funding import transfer_refusal
from bot.guards import Exposure, order_denial
from bot.guards import active as limits_active
from bot.inflight import follow_in_flight, in_flight_count, in_flight_legs
from bot.killswitch import (
    ACTIVE,
    KillSwitch,
    Trip,
    allows,
    equity_trip,
    failed_cycles_trip,
    mismatch_trip,
    sigma_trip,
)
from bot.ledger import CycleRow, FillRow, Ledger, OrderRow, SnapshotRow, TargetRow, TransferRow, utc
from bot.plugins import Registration, Registry, make_plugin_manager
from bot.riskmath import annualise_sigma, log_returns, portfolio_sigma, rc_dispersion, risk_contributions
from bot.stages import (  # noqa: F401 - the pure planning names stay importable from here
    Bounds,
    Decided,
    FundingInputs,
    Holdings,
    Layout,
    Observation,
    Plan,
    PlanInputs,
    Skip,
    Targeted,
    bounds_stage,
    client_order_id,
    decide_stage,
    floor_to_step,
    forecast_stage,
    in_optimizer_frame,
    plan_orders,
    planned_transfer_message,
    restrict_stage,
    takes_groups,
    target_stage,
)
from bot.staleness import check_calendar, rules_from_config, stale_assets

log = logging.getLogger("rwabot.cycle")

TERMINAL_CYCLE = ("done", "failed", "expired")
SHORTFALL_CHANGE = 0.25
"""A venue's cash shortfall is reported again when the amount to move changes by more than this share."""
SHORTFALL_MIN_SHARE = 0.005
"""A shortfall below this share of NAV is none: drift inside a no-trade band moves value between venues by
about this much, and reporting it would bring back the hourly noise. It is also the least change reported."""


def cycle_key(when: datetime, trigger: str) -> str:
    when = when.astimezone(UTC)
    if trigger == "scheduled":
        return floor_hour(when).strftime("%Y-%m-%dT%H:00Z")
    return when.strftime("%Y-%m-%dT%H:%MZ") + f"/{trigger}"


# -- the edge ---------------------------------------------------------------------------------------


@dataclass
class Components:
    data: DataSource
    forecaster: Forecaster
    optimizer: Optimizer
    policy: Policy
    venues: dict[str, Venue]
    returns: ReturnModel | None = None


def make_clock(cfg: Config) -> RealClock | SimulatedClock:
    if cfg.clock.kind == "real":
        return RealClock()
    start = cfg.clock.start or datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=60)
    return SimulatedClock(start, cfg.clock.speed)


@dataclass(frozen=True)
class Resolved:
    """One configured component with its options validated: what ``build_components`` calls."""

    registration: Registration
    options: ComponentConfig
    where: str

    def build(self, ctx: ComponentContext) -> Any:
        return self.registration.factory(self.options, ctx)


@dataclass(frozen=True)
class ResolvedComponents:
    sections: dict[str, Resolved]  # data, forecaster, optimizer, policy
    venues: dict[str, Resolved]


def resolve_components(
    cfg: Config, registry: Registry, ctx: ComponentContext, *, source: str | None = None
) -> ResolvedComponents:
    """Find every configured plugin and validate its options, building none of them.

    A misspelled option must stop the program before anything has a side effect (a ledger file, a
    paper book, a local chain), so this runs first. Errors name ``source`` (default: the file the
    config was read from) and the key. A strategy, the one component that is called here, fills the
    sections the config leaves out.
    """
    src = source if source is not None else cfg.source
    prefix = f"{src}: " if src else ""
    sections: dict[str, tuple[dict[str, Any], str] | None] = {
        k: ((sec.model_dump(), f"{prefix}{k}.options") if sec is not None else None)
        for k, sec in (("forecaster", cfg.forecaster), ("optimizer", cfg.optimizer), ("policy", cfg.policy))
    }
    if cfg.strategy is not None:
        strategy = cfg.strategy.plugin
        preset = registry.get("strategy", strategy).build(cfg.strategy.options, ctx, where=f"{prefix}strategy.options")
        for k in sections:
            if sections[k] is None and k in preset:
                sections[k] = (preset[k], f"{prefix}strategy {strategy}: {k}.options")
    missing = [k for k, v in sections.items() if v is None]
    if missing:
        raise ConfigError(f"{prefix}sections {missing} are missing and no strategy provides them")

    def resolve(family: str, plugin: str, options: dict[str, Any] | None, where: str) -> Resolved:
        reg = registry.get(family, plugin)
        return Resolved(reg, reg.validate(options, where=where), where)

    out = {"data": resolve("data", cfg.data.plugin, cfg.data.options, f"{prefix}data.options")}
    for k, found in sections.items():
        assert found is not None
        sec, where = found
        out[k] = resolve(k, sec["plugin"], sec.get("options", {}), where)
    if cfg.returns is not None:
        out["returns"] = resolve("returns", cfg.returns.plugin, cfg.returns.options, f"{prefix}returns.options")
    check_return_tilt(cfg, out, prefix)
    venues = {}
    for vname, vsec in cfg.venues.items():
        where = f"{prefix}venues.{vname}.options"
        reg = registry.get("venue", vsec.plugin)
        venues[vname] = Resolved(reg, reg.validate(mode_is_law(cfg.bot.mode, reg, vsec.options, where), where=where),
                                 where)  # fmt: skip
    return ResolvedComponents(out, venues)


def check_return_tilt(cfg: Config, sections: Mapping[str, Resolved], prefix: str = "") -> None:
    """λ > 0 needs a μ: from a return model, or from a forecaster that gives one. A forecaster that
    gives none (dcc, lstm: ``gives_mu = False``) with λ > 0 and no ``[returns]`` would make the tilt
    silently zero; it is refused at start instead, naming both."""
    lam = float(getattr(sections["optimizer"].options, "lam", 0.0) or 0.0)
    if lam <= 0 or "returns" in sections:
        return
    fc = sections["forecaster"].registration
    gives = getattr(fc.factory, "gives_mu", None)
    if gives is False:
        raise ConfigError(
            f"{prefix}optimizer {sections['optimizer'].registration.name} has lam = {lam:g} but forecaster "
            f"{fc.name!r} forecasts no expected returns: add a [returns] section (zero, ewma_mean, shrunk_mean, "
            "carry) or set lam = 0"
        )


def mode_is_law(mode: str, reg: Registration, options: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """A venue's options under the bot's mode: a paper bot's venues are all paper.

    A venue that can trade live has a ``paper`` option (ccxt, evm); under ``bot.mode = "paper"`` it is
    set for the user, so a paper config one line short of ``paper = true`` can never send a live order
    (or ask for keys), and one that says ``paper = false`` is a contradiction, refused by name. Live needs
    ``bot.mode = "live"``; there a venue's own ``paper = true`` still keeps that one venue simulated.
    (``evm_devnet``'s ``live`` signs on the throwaway anvil chain the venue starts itself, with anvil's
    published development key: no money can move, so a paper bot may use it.)
    """
    opts = dict(options or {})
    if "paper" not in reg.config_model.model_fields or mode != "paper":
        return opts
    if opts.get("paper") is False:
        raise ConfigError(
            f'{where}.paper: false asks for live trading under bot.mode = "paper"; a paper bot never trades '
            'live (set bot.mode = "live" to trade, or drop the option)'
        )
    opts["paper"] = True
    return opts


def build_components(
    cfg: Config,
    registry: Registry,
    ctx: ComponentContext,
    *,
    resolved: ResolvedComponents | None = None,
    source: str | None = None,
) -> tuple[Components, dict[str, str]]:
    """Build every configured plugin (``resolve_components`` first, unless given its result)."""
    r = resolved if resolved is not None else resolve_components(cfg, registry, ctx, source=source)
    data = r.sections["data"].build(ctx)
    known = set(data.assets())
    unknown = [a for a in cfg.asset_names if a not in known]
    if unknown:
        src = source if source is not None else cfg.source
        raise ConfigError(
            f"{src + ': ' if src else ''}assets {unknown}: data source {cfg.data.plugin!r} does not know them "
            f"(it has {sorted(known)})"
        )
    built = {k: r.sections[k].build(ctx) for k in ("forecaster", "optimizer", "policy")}
    names = {k: r.sections[k].registration.name for k in ("data", "forecaster", "optimizer", "policy")}
    venues: dict[str, Venue] = {}
    for vname, res in r.venues.items():
        vctx = ComponentContext(
            ctx.clock, ctx.state_dir, ctx.assets, ctx.emit, data, {**ctx.extra, "venue_name": vname, "where": res.where}
        )  # ``where`` lets a factory's own errors name the file and the key as option errors do
        venues[vname] = res.build(vctx)
    returns = r.sections["returns"].build(ctx) if "returns" in r.sections else None
    if returns is not None:
        names["returns"] = r.sections["returns"].registration.name
    return Components(data, built["forecaster"], built["optimizer"], built["policy"], venues, returns), names


class Engine:
    """Owns the components, the ledger and the clock; runs cycles and the risk monitor."""

    def __init__(
        self,
        cfg: Config,
        *,
        pm: pluggy.PluginManager | None = None,
        clock: RealClock | SimulatedClock | None = None,
    ) -> None:
        self.cfg = cfg
        self.pm = pm if pm is not None else make_plugin_manager()
        self.registry = Registry(self.pm)
        state_dir = Path(str(Path(cfg.bot.ledger).with_suffix("")) + ".state")
        self.assets = cfg.asset_names
        self.clock = clock if clock is not None else make_clock(cfg)
        early: list[RiskEvent] = []  # what a strategy reports before the ledger exists, recorded once it does
        # every option is valid before the ledger file exists and before anything is built
        early_ctx = ComponentContext(self.clock, state_dir, self.assets, early.append)
        resolved = resolve_components(cfg, self.registry, early_ctx)
        notifiers = resolve_notifiers(cfg, self.registry)  # options checked before anything exists
        for a in {s.calendar for s in cfg.assets.values()} - {None}:
            check_calendar(a)  # type: ignore[arg-type]
        self._age_rules = rules_from_config(cfg)
        self._nav_hint: float | None = None  # the last NAV seen, for the size of an alert's shortfall
        self.alerts: Alerts | None = None
        self.ledger = Ledger(cfg.bot.ledger)
        self.kill = KillSwitch(self.ledger, cfg.guard, lambda: self.clock.now())
        if clock is None and isinstance(self.clock, SimulatedClock):
            # a restarted simulated daemon continues where its ledger stopped, not at clock.start
            last = self.ledger.last_cycle()
            if last is not None and utc(last.scheduled_for) >= self.clock.now():  # type: ignore[operator]
                self.clock = SimulatedClock(utc(last.scheduled_for) + timedelta(seconds=1), cfg.clock.speed)  # type: ignore[operator]
        self.venue_of = {a: s.venue for a, s in cfg.assets.items()}
        self.layout = Layout(tuple(self.assets), self.venue_of, tuple(cfg.venues))
        self._caps = np.array([cfg.assets[a].upper for a in self.assets])  # the operator's caps: never tolerated
        self._floors = np.array([cfg.assets[a].lower for a in self.assets])
        self._pending_events: list[RiskEvent] = []  # said by one stage, stored with the plan
        self._stage_events: list[RiskEvent] = []
        # the ledger is offered to venues that keep their own records in it (chain transactions)
        ctx = ComponentContext(self.clock, state_dir, self.assets, self.emit, extra={"ledger": self.ledger})
        try:
            with self.clock.hold():  # starting a venue (a local chain) takes no simulated time
                self.c, self.names = build_components(cfg, self.registry, ctx, resolved=resolved)
        except Exception:
            self.ledger.close()
            raise
        try:
            self._check_routes()
            self.alerts = build_alerts(cfg, self.registry, ctx, resolved=notifiers)
        except Exception:
            self.close()
            raise
        self._groups_ok = takes_groups(self.c.optimizer)
        for e in early:
            self.emit(e)
        self._above_threshold = False
        # venues with the optional ``reconcile`` hook are reconciled on start and after a failure
        self._venues_to_reconcile: set[str] = set(self.c.venues)
        self._failed_at_plan: dict[str, dict[str, str]] = {}  # cycle key -> venue -> why, until it executes
        self._shortfall_reported: dict[str, float] = {}  # venue -> amount of its last cash_shortfall event
        self._venue_scale: dict[str, float] = {}  # venue -> factor its targets were scaled by last cycle
        self._skip_reported: set[str] = set()  # destinations whose funding skip was said and still holds
        self._fit_note = ""  # the last venue_budget note, so that an unchanged one is not repeated hourly
        self._monitor_bars: tuple[datetime, Any] | None = None  # (hour, its bars): the monitor's window

    def close(self) -> None:
        if self.alerts is not None:
            self.alerts.close()  # what is queued is sent (each notifier has its own timeout)
        for v in self.c.venues.values():
            try:
                v.close()
            except Exception:  # closing must not hide the error that brought us here
                log.exception("closing venue failed")
        self.ledger.close()

    # -- events -----------------------------------------------------------------------------------------

    def emit(self, event: RiskEvent, *, store: bool = True) -> None:
        level = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING}.get(event.severity, logging.ERROR)
        log.log(level, "risk event %s at %s: %s", event.kind, event.where, event.message)
        if store:
            self.ledger.record_event(event)
        if self.alerts is not None:
            self.alerts.consider(event, self._nav_hint)
        self._notify("rwabot_risk_event", event=event)

    def _event(
        self, kind: str, where: str, message: str, key: str | None, sev: Severity = Severity.WARNING, **data: Any
    ) -> RiskEvent:
        return RiskEvent(kind, sev, where, message, self.clock.now(), key, data)

    def _notify(self, hook: str, **kwargs: Any) -> None:
        try:
            getattr(self.pm.hook, hook)(**kwargs)
        except Exception as exc:  # a listener must never stop a cycle that moves money
            log.exception("plugin hook %s failed", hook)
            if hook != "rwabot_risk_event":
                self.ledger.record_event(self._event("plugin_error", f"hook:{hook}", repr(exc), None))

    # -- portfolio ----------------------------------------------------------------------------------------

    def _read_venues(self, fallback_prices: np.ndarray, *, quotes: bool = True) -> Holdings:
        """Cash, positions and quotes of every venue; a venue that raises is held, not fatal.

        A venue whose node or API is unreachable (``VenueError`` from ``balances`` or ``quote``)
        must not stop the others from being planned and traded. Its assets are held at the
        ledger's last known positions and prices (the last snapshot plus the fills recorded
        since), or left out of NAV when the ledger has never seen the venue; ``fallback_prices``
        (the data source's) price its assets the ledger never priced, and every asset when
        ``quotes`` is false (the risk monitor needs holdings, not the venues' quotes).
        """
        with self.clock.hold():  # transfers and balances are read at one instant: a credit is counted once
            self._follow_transfers()
            return self._read_venues_now(fallback_prices, quotes=quotes)

    def _read_venues_now(self, fallback_prices: np.ndarray, *, quotes: bool) -> Holdings:
        n = len(self.assets)
        prices = np.array(fallback_prices, dtype=float, copy=True)
        positions = np.zeros(n)
        cash: dict[str, float] = {}
        spendable: dict[str, float] = {}
        failed: dict[str, str] = {}
        held: set[str] = set()
        excluded: list[str] = []
        in_flight: dict[str, float] = {}
        as_of: dict[str, dict[str, Any]] = {}
        for vname, venue in self.c.venues.items():
            idx = [i for i, a in enumerate(self.assets) if self.venue_of[a] == vname]
            try:
                bal = venue.balances()
                qs = [venue.quote(self.assets[i]) for i in idx] if quotes else []
                mids = [q.mid for q in qs] if quotes else [prices[i] for i in idx]
                for i, q in zip(idx, qs):
                    as_of[self.assets[i]] = {"quote": q.time, "balance": getattr(bal, "time", None)}
            except VenueError as exc:
                failed[vname] = str(exc)
                held.update(self.assets[i] for i in idx)
                known = self._last_known(vname)
                if known is None:
                    excluded.append(vname)
                    cash[vname], spendable[vname] = 0.0, 0.0
                    continue
                kcash, kpos, kprices = known
                cash[vname], spendable[vname] = kcash, 0.0
                for i in idx:
                    a = self.assets[i]
                    positions[i] = kpos.get(a, 0.0)
                    p = kprices.get(a)
                    if p is not None and math.isfinite(p) and p > 0:
                        prices[i] = p
                continue
            cash[vname] = float(bal.cash)
            spendable[vname] = bal.spendable
            pend = getattr(bal, "pending", None) or {}
            for i, mid in zip(idx, mids):
                a = self.assets[i]
                units = float(pend.get(a, 0.0))
                positions[i] = float(bal.positions.get(a, 0.0)) + units  # value in flight counts in NAV and risk
                prices[i] = mid
                if units > 0:
                    in_flight[a] = units
        live = [i for i, a in enumerate(self.assets) if a not in held]
        check_prices([self.assets[i] for i in live], prices[live], "venue quotes")
        check_prices(self.assets, prices, "last known prices")
        held.update(in_flight)  # not traded until the request settles
        incoming: dict[str, float] = {}
        for t in self.ledger.transfers(open_only=True):
            if t.status == TransferStatus.PENDING.value:  # a sending one has not been confirmed by its source
                incoming[t.destination] = incoming.get(t.destination, 0.0) + t.amount
        return Holdings(prices, positions, cash, spendable, failed, frozenset(held), tuple(excluded), in_flight,
                        float(sum(incoming.values())), incoming, as_of)  # fmt: skip

    def _last_known(self, vname: str) -> tuple[float, dict[str, float], dict[str, float]] | None:
        """The ledger's view of a venue: cash, positions and prices of the last cycle's snapshot,
        moved by the fills recorded for later cycles; None when no snapshot has the venue."""
        with self.ledger.session() as s:
            snap = s.exec(
                select(SnapshotRow)
                .where(SnapshotRow.cycle_id.is_not(None))  # type: ignore[union-attr]
                .order_by(SnapshotRow.cycle_id.desc(), SnapshotRow.id.desc())  # type: ignore[union-attr]
            ).first()
            if snap is None or vname not in snap.cash_by_venue:
                return None
            later = s.exec(
                select(FillRow)
                .join(OrderRow, OrderRow.client_id == FillRow.client_id)  # type: ignore[arg-type]
                .where(FillRow.venue == vname, OrderRow.cycle_id > snap.cycle_id)
            ).all()
        cash = float(snap.cash_by_venue[vname])
        positions = {a: float(snap.positions.get(a, 0.0)) for a in self.assets if self.venue_of[a] == vname}
        for f in later:
            sign = 1.0 if f.side == "buy" else -1.0
            if f.asset in positions:
                positions[f.asset] += sign * f.qty
            cash -= sign * f.qty * f.price + f.fee + f.gas
        with self.ledger.session() as s:
            moved = s.exec(select(TransferRow).where(TransferRow.cycle_id > snap.cycle_id)).all()
            arrived = s.exec(
                select(TransferRow).where(TransferRow.destination == vname, TransferRow.arrived_at > snap.time)  # type: ignore[operator]
            ).all()
        for t in moved:  # sent since the snapshot: gone from the source
            if t.source == vname and t.status in (TransferStatus.PENDING.value, TransferStatus.ARRIVED.value):
                cash -= t.amount + t.fee + t.gas
        for t in arrived:  # credited since the snapshot (the snapshot counted it in transit)
            if t.status == TransferStatus.ARRIVED.value:
                cash += t.amount
        return cash, positions, {a: float(p) for a, p in snap.prices.items()}

    def _snapshot(self, now: datetime, fallback_prices: np.ndarray) -> tuple[SnapshotRow, Holdings]:
        h = self._read_venues(fallback_prices)
        row = SnapshotRow(
            time=now,
            nav=h.nav,
            cash=float(sum(h.cash.values())),
            transit=h.transit,
            cash_by_venue=h.cash,
            positions={a: float(q) for a, q in zip(self.assets, h.positions)},
            prices={a: float(p) for a, p in zip(self.assets, h.prices)},
        )
        return row, h

    def _history(self, now: datetime, key: str | None) -> tuple[np.ndarray, Any]:
        bars = self.c.data.bars(self.assets, now, self.cfg.risk.history_hours + 1)
        if len(bars.times) < 3:
            raise DataError(f"data {self.names['data']}: only {len(bars.times)} bars before {now.isoformat()}")
        bad = [a for a, ok in zip(self.assets, (np.isfinite(bars.close) & (bars.close > 0)).all(axis=0)) if not ok]
        if bad:
            raise DataError(f"data {self.names['data']}: NaN or non-positive prices for {bad}")
        return log_returns(bars.close), bars

    # -- the cycle ----------------------------------------------------------------------------------------

    def run_cycle(self, now: datetime | None = None, trigger: str = "scheduled") -> CycleReport:
        now = now or self.clock.now()
        key = cycle_key(now, trigger)
        info = CycleInfo(key, trigger, floor_hour(now) if trigger == "scheduled" else now)
        self.reconcile(exclude=key)
        self._venues_to_reconcile.update(self._venues_with_open_legs())
        self.reconcile_venues()
        existing = self.ledger.get_cycle(key)
        if existing is not None and existing.status in TERMINAL_CYCLE:
            log.info("cycle %s already %s; nothing to do", key, existing.status)
            return replace(self._report_from_row(existing, "already ran"), repeated=True)
        if existing is None and self.kill.refresh() == "halt":
            return self._halted(info)
        self._notify("rwabot_cycle_started", cycle=info)
        if existing is None:
            try:
                existing, forecast = self._plan(info, now)
            except (DataError, ForecastError, OptimizerError, VenueError, PluginError) as exc:
                kind = type(exc).__name__
                ev = self._event("cycle_failed", "cycle", f"{kind}: {exc}", key, Severity.CRITICAL)
                self.ledger.record_failed_cycle(
                    CycleRow(
                        key=key,
                        trigger=trigger,
                        scheduled_for=info.scheduled_for,
                        started_at=now,
                        status="failed",
                        message=str(exc)[:2000],
                    ),
                    ev,
                )
                self.emit(ev, store=False)
                report = self._report_from_row(self.ledger.get_cycle(key), str(exc))  # type: ignore[arg-type]
                self._notify("rwabot_cycle_finished", cycle=info, report=report)
                statuses = [c.status for c in self.ledger.recent_cycles(self.cfg.guard.max_failed_cycles or 0)]
                if trip := failed_cycles_trip(statuses, self.cfg.guard):
                    self._trip(trip, "cycle", None, key)
                return report
        else:
            forecast = None
        report = self._execute(existing, info, forecast)
        self._notify("rwabot_cycle_finished", cycle=info, report=report)
        return report

    def _plan(self, info: CycleInfo, now: datetime) -> tuple[CycleRow, Forecast]:
        """The cycle up to its durable plan, one stage after the other (bot/stages.py)."""
        obs = self._observe(info.key, now)  # bars and holdings: the I/O at the start
        forecast = forecast_stage(self.c.forecaster, self.assets, obs.returns, self.c.returns)
        self._guard_plan(obs, forecast)  # the kill switch's rules on what the cycle sees
        bounds = self._bounds(obs)
        targeted = self._target(obs, forecast, bounds)
        decided = decide_stage(self.c.policy, obs.w0, targeted, forecast, bounds.held)
        targeted, decided = self._restrict(obs, targeted, decided, bounds.held)
        plan = self._plan_legs(obs, targeted, decided)
        return self._book_plan(info, obs, forecast, bounds, targeted, decided, plan), forecast

    # -- the kill switch and the pre-trade limits (bot/killswitch.py, bot/guards.py) -----------------------

    def _trip(self, trip: Trip, by: str, nav: float | None, key: str | None = None) -> bool:
        """Stop trading (once: a tripped switch keeps its first cause); a halt cancels open orders."""
        ev = self.kill.trip(trip, by, nav, key)
        if ev is None:
            return False
        self.emit(ev, store=False)  # stored with the state, in one transaction
        if self.kill.state == "halt":
            self._cancel_in_flight(key)
        return True

    def _cancel_in_flight(self, key: str | None) -> None:
        """Cancel every order a venue holds open for us (an ERC-7540 request it cannot cancel is said)."""
        for leg in in_flight_legs(self.ledger):
            venue = self.c.venues.get(leg.venue)
            if venue is None:
                continue
            try:
                for f in self.ledger.record_order_state(venue.cancel_order(leg.client_id)):
                    self._notify("rwabot_fill", fill=f)
            except VenueError as exc:
                self.emit(self._event("cancel_failed", f"venue:{leg.venue}", f"kill switch: cannot cancel "
                                      f"{leg.client_id} ({leg.asset}): {exc}", key, Severity.CRITICAL,
                                      client_id=leg.client_id))  # fmt: skip

    def _guard_plan(self, obs: Observation, forecast: Forecast) -> None:
        """At planning: the marked book's drawdown and daily loss, and its forecast σ_p against the ceiling."""
        if self.kill.refresh() != ACTIVE:
            return
        g = self.cfg.guard
        sigma = annualise_sigma(portfolio_sigma(obs.w0, forecast.cov))
        trip = equity_trip(obs.nav, *self.kill.equity_baselines(obs.now), g) or sigma_trip(sigma, g, "planning")
        if trip is not None:
            self._trip(trip, "cycle", obs.nav, obs.key)

    def _restrict(self, obs: Observation, t: Targeted, d: Decided, held: np.ndarray) -> tuple[Targeted, Decided]:
        """Under a tripped switch the plan only shrinks the book (``reduce_only``) or sells it (``flatten``):
        no buys and no transfers; held assets stay where they are."""
        state = self.kill.state
        if state == ACTIVE:
            return t, d
        self._stage_events = [e for e in self._stage_events if e.kind != "transfer_planned"]
        return restrict_stage(state, obs.w0, t, d, held)

    def _halted(self, info: CycleInfo) -> CycleReport:
        """A halted bot plans nothing; the hour is said once, and the report carries the reason."""
        row = self.kill.row
        why = f"trading halted by the kill switch ({row.cause if row else '?'}): run `rwabot resume --reason ...`"
        self.emit(self._event("cycle_halted", "guard", why, info.key, Severity.WARNING))
        last = self.ledger.last_mark()
        n = len(self.assets)
        report = CycleReport(info.key, "halted", float(last.nav) if last else 0.0, 0.0, tuple(self.assets),
                             np.zeros(n), np.zeros(n), np.zeros(n), 0, 0, 0.0, 0.0, why)  # fmt: skip
        self._notify("rwabot_cycle_finished", cycle=info, report=report)
        return report

    def _denial(self, venue: Venue, order: Order, qty: float, nav: float) -> str | None:
        """Why a leg may not be sent now: the kill switch's state, then the pre-trade limits."""
        state = self.kill.state
        if not allows(state, order.side):
            return f"kill switch {state}: no {order.side} orders"
        limits = self.cfg.limits
        if not limits_active(limits):
            return None
        q = venue.quote(order.asset)
        price = q.ask if order.side == "buy" else q.bid
        held = venue.balances().positions
        on_venue = 0.0
        if limits.max_venue_exposure:  # the venue's other assets are quoted only when a venue limit is set
            on_venue = sum(float(held.get(a, 0.0)) * (price if a == order.asset else venue.quote(a).mid)
                           for a in self.assets if self.venue_of[a] == order.venue)  # fmt: skip
        e = Exposure(nav, {order.asset: float(held.get(order.asset, 0.0)) * price}, {order.venue: on_venue},
                     self.ledger.traded_since(self.clock.now() - timedelta(hours=24)))  # fmt: skip
        return order_denial(limits, order.asset, order.venue, order.side, qty * price, e, exiting=state != ACTIVE)

    # -- the stages that need the engine's venues, ledger and memory ------------------------------------

    def _observe(self, key: str, now: datetime) -> Observation:
        """Bars up to the last closed hour and the book the venues hold now; price holds applied."""
        returns, bars = self._history(now, key)
        h = self._read_venues(bars.close[-1])
        if h.failed and len(h.failed) == len(self.c.venues):
            raise VenueError(", ".join(h.failed), "every venue failed: " + "; ".join(h.failed.values()))
        if h.nav <= 0:
            raise DataError(f"portfolio NAV is {h.nav:.2f}: nothing to allocate")
        self._nav_hint = h.nav
        self._pending_events = self._stale_holds(h, key, now, bars.times[-1]) + self._price_holds(h, key)
        risk = self.cfg.risk
        return Observation(key, now, returns, bars.close[-1], bars.traded_value[-risk.liquidity_lookback_hours :],
                           bars.volume[-1], h)  # fmt: skip

    def _bounds(self, obs: Observation) -> Bounds:
        h = obs.holdings
        held = np.array([a in h.held for a in self.assets], dtype=bool)
        return bounds_stage(self.cfg.risk, self._caps, self._floors, obs.traded_value, obs.nav, obs.w0, held)

    def _target(self, obs: Observation, forecast: Forecast, b: Bounds) -> Targeted:
        """The target stage (pure, bot/stages.py) fed with what only the ledger knows (transfer fees, what
        was sent today), and the events of its outcome, each said when it starts or changes."""
        h, key, nav = obs.holdings, obs.key, obs.nav
        day_ago = self.clock.now() - timedelta(hours=24)
        routed = {r.source for r in self.cfg.funding.routes}
        inputs = FundingInputs(
            {v: self._fee_estimate(v) for v in routed},
            {v: self.ledger.sent_since(v, day_ago) for v in self.c.venues} if routed else {},
            self.cfg.bot.quote,
        )
        t = target_stage(self.c.optimizer, self._groups_ok, self.layout, self.cfg.risk, self.cfg.funding, key,
                         forecast, b, h, self._venue_scale, inputs)  # fmt: skip
        self._venue_scale = t.venue_scale
        events = self._pending_events
        self._pending_events = []
        w0 = obs.w0
        for vname, why in h.failed.items():
            self._venues_to_reconcile.add(vname)
            mine = [a for a in self.assets if self.venue_of[a] == vname]
            fate = (
                "left out of NAV: the ledger has no value for it yet"
                if vname in h.excluded
                else f"held at its last known value {float(w0[b.held & np.isin(self.assets, mine)].sum()):.2%} of NAV"
            )
            events.append(self._event("venue_failed", f"venue:{vname}",
                                      f"at planning: {why}; not traded this cycle, its assets {mine} {fate}", key,
                                      Severity.CRITICAL, assets=mine, stage="plan"))  # fmt: skip
        if h.failed:
            self._failed_at_plan[key] = dict(h.failed)
        for a, units in h.pending.items():
            events.append(self._event("async_pending", f"venue:{self.venue_of[a]}",
                                      f"{a}: {units:.6g} units ({w0[self.assets.index(a)]:.2%} of NAV with the "
                                      "wallet's) in an open request; held fixed until it settles", key,
                                      Severity.INFO, asset=a, units=units))  # fmt: skip
        if t.infeasible:
            events.append(self._event("liquidity_cap", "optimizer", t.infeasible, key, invested=t.invested))
        # a skip that lasts (no cash to send, a cap reached) is said when it starts, not every hour
        now_skipped = {k.destination for k in t.funding.skips}
        events.extend(self._event("funding_skipped", f"venue:{k.destination}", k.reason, key, Severity.INFO)
                      for k in t.funding.skips if k.destination not in self._skip_reported)  # fmt: skip
        self._skip_reported = now_skipped
        for tr, minutes in t.funding.planned:
            # a destination sends nothing, so its budget is the one the transfer was decided on
            msg = planned_transfer_message(tr, minutes, t.want[tr.destination], t.budgets[tr.destination])
            events.append(self._event("transfer_planned", f"venue:{tr.source}", msg, key, Severity.INFO,
                                      client_id=tr.client_id, amount=tr.amount))  # fmt: skip
        events.extend(self._shortfall_events(t.budgets, t.want, nav, key, t.covered))
        if t.fit_note and t.fit_note != self._fit_note:  # said when it starts or changes, not every hour
            events.append(self._event("venue_budget", "optimizer", t.fit_note, key, Severity.INFO))
        self._fit_note = t.fit_note
        self._stage_events = events
        return t

    def _plan_legs(self, obs: Observation, t: Targeted, d: Decided) -> Plan:
        h = obs.holdings
        if not d.decision.trade:
            return Plan()
        markets = {a: self.c.venues[self.venue_of[a]].market(a) for a in self.assets if a not in h.held}
        risk = self.cfg.risk
        return plan_orders(PlanInputs(obs.key, self.assets, self.venue_of, h.prices, h.positions, t.spendable,
                                      obs.nav, d.weights, markets, obs.last_volume, risk.participation,
                                      min_trade_weight=risk.min_trade_weight, hold=h.held))  # fmt: skip

    def _book_plan(self, info: CycleInfo, obs: Observation, forecast: Forecast, b: Bounds, t: Targeted,
                   d: Decided, plan: Plan) -> CycleRow:  # fmt: skip
        """The plan made durable in one transaction: the cycle row, its targets, legs, transfers and events."""
        key, h, w0 = obs.key, obs.holdings, obs.w0
        events = self._stage_events
        self._stage_events = []
        for s in plan.skips:
            events.append(self._event("order_skipped", f"venue:{self.venue_of[s.asset]}", f"{s.asset}: {s.reason}",
                                      key, Severity.INFO))  # fmt: skip
        for v, amount in plan.shortfalls.items():
            msg = f"buys scaled down: {amount:.2f} more cash needed"
            events.append(self._event("cash_shortfall", f"venue:{v}", msg, key, shortfall=amount))
        row = CycleRow(
            key=key,
            trigger=info.trigger,
            scheduled_for=info.scheduled_for,
            started_at=obs.now,
            status="executing",
            nav_before=obs.nav,
            sigma_p_annual=annualise_sigma(portfolio_sigma(d.weights, forecast.cov)),
            rc_dispersion_target=t.optimizer_dispersion,
            rc_dispersion_traded=t.traded_dispersion,
            forecaster=self.names["forecaster"],
            optimizer=self.names["optimizer"],
            policy=self.names["policy"],
            decision=d.decision.reason,
        )
        target = t.target
        rc_frac = np.asarray(target.risk_contributions, dtype=float)
        targets = [
            TargetRow(
                cycle_id=0,
                asset=a,
                venue=self.venue_of[a],
                price=float(h.prices[i]),
                upper=float(b.upper[i]),
                current_weight=float(w0[i]),
                target_weight=float(target.weights[i]),
                decided_weight=float(d.weights[i]),
                risk_contribution=float(rc_frac[i]),
                capped=bool(target.capped[i]),
                bound=t.bound[i],
            )
            for i, a in enumerate(self.assets)
        ]
        row = self.ledger.create_plan(row, targets, plan.legs, events, t.funding.transfers)
        for e in events:
            self.emit(e, store=False)
        return row

    def _stale_holds(self, h: Holdings, key: str, now: datetime, bar_time: datetime) -> list[RiskEvent]:
        """The staleness gate (bot/staleness.py): an asset whose last bar, quote or balance is older than its
        rule allows (open-market minutes for an asset with a calendar) is held, not traded, with a
        ``stale_price`` event; when every asset is stale the data source itself is, and the cycle fails."""
        # the last bar is judged at the cycle's time, what the venues said at the moment they were read
        stale = stale_assets(now, {a: {"data": bar_time} for a in self.assets}, self._age_rules)
        at = self.clock.now()  # a venue ahead of a simulated clock (a live exchange under a backtest) is not stale
        read = stale_assets(at, {a: {k: min(t, at) if t is not None else None for k, t in h.as_of.get(a, {}).items()}
                                 for a in self.assets}, self._age_rules)  # fmt: skip
        stale |= {a: st for a, st in read.items() if a not in stale}
        if len(stale) == len(self.assets):
            worst = next(iter(stale.values()))
            raise DataError(f"data {self.names['data']}: every asset's price is stale (last bar closed at "
                            f"{bar_time.isoformat()}, {now - bar_time} before {now.isoformat()}); "
                            f"{worst.message}")  # fmt: skip
        if stale:
            h.held = frozenset({*h.held, *stale})
        return [self._event("stale_price", f"venue:{self.venue_of[a]}", f"{st.message}; not traded this cycle", key,
                            asset=a, source=st.source, as_of=st.as_of.isoformat(), open_age_minutes=st.open_age_minutes)
                for a, st in stale.items()]  # fmt: skip

    def _price_holds(self, h: Holdings, key: str) -> list[RiskEvent]:
        """Optional venue hook ``price_holds()`` -> ``{asset: (message, data)}``: assets whose price source
        breaks its rules (stale oracle, NAV/market divergence) are held fixed this cycle (not traded), each
        with a ``price_rule`` event. A venue that fails here holds its assets, as at reading."""
        events: list[RiskEvent] = []
        held = set(h.held)
        for vname, venue in self.c.venues.items():
            hook = getattr(venue, "price_holds", None)
            if hook is None or vname in h.failed:
                continue
            try:
                found = hook()
            except VenueError as exc:
                mine = [a for a in self.assets if self.venue_of[a] == vname]
                held.update(mine)
                found = {a: (f"{a}: price rules cannot be checked: {exc}", {"asset": a}) for a in mine}
            for a, (message, data) in found.items():
                if a not in self.venue_of or self.venue_of[a] != vname:
                    continue
                held.add(a)
                events.append(
                    self._event("price_rule", f"venue:{vname}", f"{message}; not traded this cycle", key, **data)
                )
        h.held = frozenset(held)
        return events

    def _shortfall_events(
        self,
        budgets: Mapping[str, float],
        want: Mapping[str, float],
        nav: float,
        key: str,
        covered: Mapping[str, float] | None = None,
    ) -> list[RiskEvent]:
        """``cash_shortfall`` when a venue's share of the optimizer's book first exceeds what the venue holds,
        and again only when the amount to move changes by more than ``SHORTFALL_CHANGE`` of itself.

        The condition persists for as long as nobody moves cash, so an event every hour would bury the
        news (9193 events in a simulated year); the ledger keeps the last one per venue, which is what a
        restarted daemon compares with.
        """
        events: list[RiskEvent] = []
        for vname, budget in budgets.items():
            # cash already travelling there (or sent this cycle) closes the gap: only the rest is news
            need = (want[vname] - budget - (covered or {}).get(vname, 0.0)) * nav
            last = self._shortfall_reported.get(vname)
            if last is None:
                last = self._last_shortfall(vname)
                self._shortfall_reported[vname] = last
            if need <= SHORTFALL_MIN_SHARE * nav:
                if last > 0:
                    self._shortfall_reported[vname] = 0.0
                    events.append(
                        self._event(
                            "cash_shortfall",
                            f"venue:{vname}",
                            f"resolved: {vname} holds what the target needs there",
                            key,
                            Severity.INFO,
                            needed=0.0,
                        )
                    )
                continue
            if last > 0 and abs(need - last) <= max(SHORTFALL_CHANGE * last, SHORTFALL_MIN_SHARE * nav):
                continue
            self._shortfall_reported[vname] = need
            events.append(
                self._event(
                    "cash_shortfall",
                    f"venue:{vname}",
                    f"target needs {want[vname]:.2%} of NAV on {vname}, which holds {budget:.2%}; "
                    f"move {need:,.2f} {self.cfg.bot.quote} there to reach it",
                    key,
                    needed=need,
                )
            )
        return events

    def _last_shortfall(self, vname: str) -> float:
        """The amount of the last ``cash_shortfall`` planning event of a venue in the ledger (0: none open)."""
        for ev in self.ledger.events("cash_shortfall"):  # newest first
            if ev.where == f"venue:{vname}" and ev.data and "needed" in ev.data:
                return float(ev.data["needed"])
        return 0.0

    def _in_optimizer_frame(self, w0: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """``bot.stages.in_optimizer_frame`` with the venue scaling of the last cycle."""
        return in_optimizer_frame(self.layout, w0, upper, self._venue_scale)

    # -- funding ----------------------------------------------------------------------------------------

    def _check_routes(self) -> None:
        """Every route's source must be able to send and its destination to receive (or the route pins
        its address): found at start, not when the first hour needs the cash."""
        prefix = f"{self.cfg.source}: " if self.cfg.source else ""
        for k, r in enumerate(self.cfg.funding.routes):
            src, dst = self.c.venues[r.source], self.c.venues[r.destination]
            lacks = [m for m in ("send_transfer", "fetch_transfer") if not callable(getattr(src, m, None))]
            if lacks:
                raise ConfigError(f"{prefix}funding.routes[{k}]: venue {r.source!r} cannot send transfers (no {lacks})")
            if r.address is None and not callable(getattr(dst, "deposit_address", None)):
                raise ConfigError(
                    f"{prefix}funding.routes[{k}]: venue {r.destination!r} has no deposit_address; pin address there"
                )

    def _route(self, source: str, destination: str) -> Any:
        return next(r for r in self.cfg.funding.routes if r.source == source and r.destination == destination)

    def _follow_transfers(self) -> None:
        """Ask the venues about every transfer in transit: the source first (accepted, failed), then the
        destination (credited). Runs at every venue read, so cycles and monitor ticks both follow
        them, and a transfer is never counted in transit and at its destination at once."""
        for t in self.ledger.transfers(open_only=True):
            if t.status != TransferStatus.PENDING.value:
                continue  # a sending one belongs to its cycle's execution (or to reconcile after a crash)
            src, dst = self.c.venues.get(t.source), self.c.venues.get(t.destination)
            if src is None or dst is None:
                continue
            try:
                st = src.fetch_transfer(t.client_id)  # type: ignore[attr-defined]
                if st is None:
                    msg = (f"transfer {t.client_id} of {t.amount:,.2f} is in the ledger as sent, "
                           f"but {t.source} does not have it")  # fmt: skip
                    self.emit(self._event("transfer_missing", f"venue:{t.source}", msg, None, Severity.CRITICAL,
                                          client_id=t.client_id))  # fmt: skip
                    continue
                st = self._confirm_arrival(t, st, dst)
            except VenueError as exc:
                self.emit(self._event("transfer_unknown", f"venue:{t.source}", f"transfer {t.client_id}: {exc}", None,
                                      client_id=t.client_id))  # fmt: skip
                continue
            self._record_transfer(t, st)

    def _confirm_arrival(self, t: TransferRow, st: TransferState, dst: Venue) -> TransferState:
        """The destination's word on arrival wins where it can give one (an exchange credits a deposit
        after its confirmations, later than the source sees the transaction mined)."""
        hook = getattr(dst, "deposit_status", None)
        if st.status in (TransferStatus.PENDING, TransferStatus.ARRIVED) and hook is not None:
            seen = hook(t.to_transfer(""), st)
            status = TransferStatus.ARRIVED if seen is TransferStatus.ARRIVED else TransferStatus.PENDING
            if status is not st.status:
                st = TransferState(st.client_id, status, st.amount, st.fee, st.gas, st.external_id, st.txid,
                                   st.message, st.time if status is TransferStatus.ARRIVED else None)  # fmt: skip
        return st

    def _record_transfer(self, t: TransferRow, st: TransferState) -> None:
        before = t.status
        row = self.ledger.record_transfer_state(st, self.clock.now())
        if row.status == before:
            return
        if st.status is TransferStatus.ARRIVED:
            self.emit(self._event("transfer_arrived", f"venue:{t.destination}",
                                  f"{t.amount:,.2f} {t.asset} from {t.source} credited", None, Severity.INFO,
                                  client_id=t.client_id, amount=t.amount, fee=row.fee, gas=row.gas))  # fmt: skip
        elif st.status is TransferStatus.FAILED:
            self.emit(self._event("transfer_failed", f"venue:{t.source}",
                                  f"transfer {t.client_id} of {t.amount:,.2f} {t.asset} to {t.destination} failed: "
                                  f"{st.message or 'no reason given'}; the cash stays at {t.source}", None,
                                  Severity.CRITICAL, client_id=t.client_id))  # fmt: skip

    def _fee_estimate(self, venue: str) -> float:
        """A source's fee per transfer, from its last transfer (0 before the first): the amount planned
        leaves room for it."""
        last = self.ledger.last_transfer_cost(venue)  # one indexed row, not every transfer ever made
        if last is not None:
            return last
        cfg = getattr(self.c.venues[venue], "cfg", None)
        names = ("transfer_fee", "paper_transfer_fee", "paper_transfer_gas")
        return float(sum(float(getattr(cfg, n, 0.0) or 0.0) for n in names))

    def _execute_transfers(self, row: CycleRow, fresh: bool, failed_venues: dict[str, str]) -> None:
        """Transfers go before any order: the intent (with the address, checked against the allow-list)
        is committed, then the source is asked; after a crash it is asked first whether it has the
        transfer, and only a transfer it never received is sent, and only while the plan is fresh."""
        assert row.id is not None
        for t in self.ledger.transfers_of(row.id):
            status = TransferStatus(t.status)
            if status.terminal or status is TransferStatus.PENDING:
                continue
            src, dst = self.c.venues[t.source], self.c.venues[t.destination]
            if t.source in failed_venues:
                if status is TransferStatus.PLANNED:
                    self.ledger.close_transfer(t.client_id, TransferStatus.CANCELED,
                                               f"not sent: venue failed ({failed_venues[t.source]})")  # fmt: skip
                continue
            try:
                st: TransferState | None = None
                if status is TransferStatus.SENDING:
                    st = src.fetch_transfer(t.client_id)  # type: ignore[attr-defined]
                if st is None:
                    if not fresh:
                        self.ledger.close_transfer(t.client_id, TransferStatus.CANCELED,
                                                   "not sent: plan expired before it was executed")  # fmt: skip
                        continue
                    address, tag = t.address, t.tag
                    if not address:
                        dep = dst.deposit_address(t.asset, t.network)  # type: ignore[attr-defined]
                        address, tag = dep.address, dep.tag
                    refusal = self._refusal(t, address)
                    if refusal:
                        self.ledger.close_transfer(t.client_id, TransferStatus.CANCELED, f"refused: {refusal}")
                        self.emit(self._event("transfer_refused", f"venue:{t.source}", refusal, row.key,
                                              Severity.CRITICAL, client_id=t.client_id, address=address))  # fmt: skip
                        continue
                    self.ledger.mark_transfer_sending(t.client_id, address, tag, self.clock.now())
                    transfer = Transfer(t.client_id, row.key, t.source, t.destination, t.asset, t.amount, t.network,
                                        address, tag)  # fmt: skip
                    st = src.send_transfer(transfer)  # type: ignore[attr-defined]
                st = self._confirm_arrival(t, st, dst)
                self._record_transfer(self.ledger.transfers_of(row.id)[t.leg], st)
            except TransferRefused as exc:
                self.ledger.close_transfer(t.client_id, TransferStatus.CANCELED, f"refused: {exc}")
                self.emit(self._event("transfer_refused", f"venue:{t.source}", str(exc), row.key, Severity.CRITICAL,
                                      client_id=t.client_id))  # fmt: skip
            except VenueError as exc:  # outcome unknown: it stays sending and is looked up, never resent blindly
                failed_venues[t.source] = str(exc)
                self._venues_to_reconcile.add(t.source)
                self.emit(self._event("venue_failed", f"venue:{t.source}", f"transfer {t.client_id}: {exc}", row.key,
                                      Severity.CRITICAL, client_id=t.client_id))  # fmt: skip

    def _refusal(self, t: TransferRow, address: str) -> str:
        """``bot.funding.transfer_refusal`` with what the ledger says the source sent in the last 24 h."""
        sent = self.ledger.sent_since(t.source, self.clock.now() - timedelta(hours=24))
        return transfer_refusal(self.cfg.funding, t.client_id, t.source, t.destination, t.asset, t.amount, address,
                                sent)  # fmt: skip

    def _execute(self, row: CycleRow, info: CycleInfo, forecast: Forecast | None) -> CycleReport:
        assert row.id is not None
        now = self.clock.now()
        self.kill.refresh()  # `rwabot resume` (or a trip) may have changed it since the plan was made
        ttl = timedelta(minutes=self.cfg.schedule.plan_ttl_minutes)
        fresh = now - (utc(row.started_at) or now) <= ttl
        failed_venues: dict[str, str] = {
            v: f"at planning: {why}" for v, why in self._failed_at_plan.pop(row.key, {}).items()
        }
        self._execute_transfers(row, fresh, failed_venues)
        pending: list[tuple[OrderRow, Future[OrderState]]] = []
        pools: dict[str, ThreadPoolExecutor] = {}
        for o in self.ledger.orders_of(row.id):
            status = OrderStatus(o.status)
            if pending and o.side != pending[0][0].side:
                self._drain(pending, row, failed_venues)  # sells settle before any buy is sized
            if status.terminal:
                continue
            if o.venue in failed_venues:
                if status is OrderStatus.PLANNED:
                    self.ledger.close_order(
                        o.client_id, OrderStatus.CANCELED, f"not sent: venue failed ({failed_venues[o.venue]})"
                    )
                continue
            venue = self.c.venues[o.venue]
            order = o.to_order(row.key)
            try:
                state: OrderState | None = None
                if status is not OrderStatus.PLANNED:
                    state = venue.fetch_order(o.client_id)  # sent before a crash? ask before sending again
                if state is None:
                    if not fresh:
                        self.ledger.close_order(
                            o.client_id, OrderStatus.CANCELED, "not sent: plan expired before it was executed"
                        )
                        continue
                    qty = self._affordable(venue, order) if order.side == "buy" else order.qty
                    denied = self._denial(venue, order, qty, float(row.nav_before or 0.0)) if qty > 0 else None
                    if denied is not None:
                        by_switch = denied.startswith("kill switch")
                        fate = OrderStatus.CANCELED if by_switch else OrderStatus.REJECTED
                        self.ledger.close_order(o.client_id, fate, f"not sent: {denied}")
                        if not by_switch:
                            self.emit(self._event("order_denied", f"venue:{o.venue}", denied, row.key,
                                                  Severity.CRITICAL, client_id=o.client_id, asset=o.asset))  # fmt: skip
                        continue
                    if qty <= 0:
                        self.ledger.close_order(
                            o.client_id, OrderStatus.CANCELED, "not sent: venue lacks cash at execution"
                        )
                        self.emit(
                            self._event(
                                "cash_shortfall", f"venue:{o.venue}", f"{o.asset}: buy dropped at execution", row.key
                            )
                        )
                        continue
                    order = Order(
                        order.client_id,
                        order.cycle_key,
                        order.venue,
                        order.asset,
                        order.side,
                        qty,
                        order.decision_price,
                    )
                    self.ledger.mark_sending(o.client_id, qty)
                    self._notify("rwabot_order_placed", order=order)
                    width = int(getattr(venue, "max_concurrent_orders", 1))
                    if width > 1:  # optional venue attribute: its legs of one side go out concurrently
                        pool = pools.get(o.venue) or pools.setdefault(o.venue, ThreadPoolExecutor(width))
                        pending.append((o, pool.submit(venue.place_order, order)))
                        continue
                    state = venue.place_order(order)
                new = self.ledger.record_order_state(state)
                for f in new:
                    self._notify("rwabot_fill", fill=f)
            except VenueError as exc:
                self._leg_failed(o, venue, row, exc, failed_venues)
        self._drain(pending, row, failed_venues)
        for pool in pools.values():
            pool.shutdown(wait=True)
        status = "done" if fresh else "expired"
        message = "; ".join(f"venue {v} failed: {m}" for v, m in failed_venues.items())
        targets = self.ledger.targets_of(row.id)
        try:
            snapshot: SnapshotRow | None
            fallback = np.array(
                [t.price for t in targets] if len(targets) == len(self.assets) else [np.nan] * len(self.assets)
            )
            snapshot, closing = self._snapshot(now, fallback)
            for v, why in closing.failed.items():
                if v not in failed_venues:  # it answered at planning but not now
                    self._venues_to_reconcile.add(v)
                    ev = self._event(
                        "venue_failed", f"venue:{v}", f"closing snapshot: {why}", row.key, Severity.CRITICAL
                    )
                    self.emit(ev)
            if closing.excluded:  # a NAV without a whole venue would be a false loss: write none
                raise DataError(f"no value known for venues {list(closing.excluded)}")
            if closing.failed:
                down = ", ".join(sorted(closing.failed))
                message = "; ".join(filter(None, [message, f"closing snapshot holds {down} at last known values"]))
        except (VenueError, DataError) as exc:
            snapshot = None
            message = "; ".join(filter(None, [message, f"no closing snapshot: {exc}"]))
        held = held_bound = held_all = None
        if forecast is not None and snapshot is not None and snapshot.nav > 0 and len(targets) == len(self.assets):
            w = np.array([snapshot.positions[a] * snapshot.prices[a] for a in self.assets]) / snapshot.nav
            held, held_bound, held_all = held_dispersion(w, forecast.cov, [t.bound if t.bound or not t.capped else "cap"
                                                                  for t in targets])  # fmt: skip
        self.ledger.finish_cycle(row.key, status, snapshot=snapshot, message=message, rc_dispersion_held=held,
                                 rc_dispersion_held_bound=held_bound, rc_dispersion_held_all=held_all)  # fmt: skip
        return self._report_from_row(self.ledger.get_cycle(row.key), message)  # type: ignore[arg-type]

    def _leg_failed(
        self, o: OrderRow, venue: Venue, row: CycleRow, exc: VenueError, failed_venues: dict[str, str]
    ) -> None:
        """A refused order is a rejection; any other venue error fails the venue for this cycle."""
        if isinstance(exc, InsufficientFunds | InvalidOrder):
            state = venue.fetch_order(o.client_id) if isinstance(exc, InsufficientFunds) else None
            if state is not None:
                self.ledger.record_order_state(state)
            else:
                self.ledger.close_order(o.client_id, OrderStatus.REJECTED, str(exc))
            self.emit(
                self._event(
                    "order_rejected",
                    f"venue:{o.venue}",
                    str(exc),
                    row.key,
                    Severity.CRITICAL,
                    client_id=o.client_id,
                )
            )
            return
        failed_venues[o.venue] = str(exc)
        self._venues_to_reconcile.add(o.venue)
        self.emit(
            self._event("venue_failed", f"venue:{o.venue}", str(exc), row.key, Severity.CRITICAL, client_id=o.client_id)
        )

    def _drain(
        self, pending: list[tuple[OrderRow, Future[OrderState]]], row: CycleRow, failed_venues: dict[str, str]
    ) -> None:
        """Record the legs sent concurrently, in leg order, exactly as a sequential send would."""
        for o, fut in pending:
            venue = self.c.venues[o.venue]
            try:
                for f in self.ledger.record_order_state(fut.result()):
                    self._notify("rwabot_fill", fill=f)
            except VenueError as exc:
                self._leg_failed(o, venue, row, exc, failed_venues)
        pending.clear()

    def reconcile_venues(self) -> None:
        """Optional venue hook ``reconcile(in_flight)``, on start and after the venue failed.

        ``in_flight`` maps the client ids of the legs the ledger has sent on that venue but not
        closed (``sending``, ``open``) to their assets; the venue returns ``(states, events)``: the
        state of every one of them it has (open ones cancelled, since nobody waits for them any
        more) and risk events for what does not match (orders that are not ours, orders open at the
        exchange but closed in the ledger). The states are recorded; a leg the venue does not have
        whose cycle is over is closed as cancelled (a leg of a cycle still executing is left to
        ``_execute``). Then the venue's positions, the truth, are compared with what the ledger
        expects (last snapshot plus the fills of later cycles) and differences become risk events.
        """
        for vname in sorted(self._venues_to_reconcile):
            venue = self.c.venues[vname]
            hook = getattr(venue, "reconcile", None)
            if hook is None:
                self._venues_to_reconcile.discard(vname)
                continue
            try:
                with self.ledger.session() as s:
                    rows = s.exec(
                        select(OrderRow, CycleRow.status)
                        .join(CycleRow, CycleRow.id == OrderRow.cycle_id)  # type: ignore[arg-type]
                        .where(
                            OrderRow.venue == vname,
                            OrderRow.status.in_([OrderStatus.SENDING.value, OrderStatus.OPEN.value]),  # type: ignore[attr-defined]
                        )
                    ).all()
                states, events = hook({r.client_id: r.asset for r, _ in rows})
                for st in states:
                    for f in self.ledger.record_order_state(st):
                        self._notify("rwabot_fill", fill=f)
                seen = {st.client_id for st in states}
                settled = {r.asset for r, _ in rows for st in states if st.client_id == r.client_id and st.fills}
                for r, cycle_status in rows:
                    if r.client_id not in seen and cycle_status in TERMINAL_CYCLE:
                        # its cycle is over and the venue does not have it: it never reached the exchange
                        self.ledger.close_order(r.client_id, OrderStatus.CANCELED, "not at the venue (reconciled)")
                for e in events:
                    self.emit(e)
                done = {st.client_id for st in states if st.status.terminal}
                # a leg still in flight (an async request) moves its asset by an amount not known yet:
                # its position is compared once it settles, not while its value is an estimate
                open_assets = {r.asset for r, _ in rows if r.client_id not in done} - settled
                self._check_positions(vname, venue, settled, skip=open_assets)
            except VenueError as exc:
                self.emit(self._event("venue_failed", f"venue:{vname}", f"reconcile: {exc}", None, Severity.CRITICAL))
                continue
            self._venues_to_reconcile.discard(vname)

    def _check_positions(
        self, vname: str, venue: Venue, settled: frozenset[str] | set[str] = frozenset(),
        skip: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        """Venue positions (wallet + pending) against the ledger's. ``settled``: assets whose in-flight
        order just got its fills, after the last snapshot was taken; that snapshot could only count the
        value in flight (an ERC-7540 request's units at that day's NAV), so a difference there is the
        settlement, reported as ``position_settled`` (info), not as a mismatch."""
        known = self._last_known(vname)
        if known is None:
            return  # nothing in the ledger yet: whatever the venue holds is the starting point
        expected, prices = known[1], known[2]
        off = 0.0  # value of the differences, at the last snapshot's prices
        bal = venue.balances()
        pend = getattr(bal, "pending", None) or {}  # snapshots count value in flight as a position
        held = {a: float(bal.positions.get(a, 0.0)) + float(pend.get(a, 0.0)) for a in {*bal.positions, *pend}}
        for a, want in expected.items():
            if a in skip:
                continue
            have = float(held.get(a, 0.0))
            if abs(have - want) > max(0.5 * venue.market(a).qty_step, 1e-9 * max(abs(have), abs(want))):
                if a in settled:
                    msg = f"{a}: venue holds {have:.10g} after a settlement, the last snapshot counted {want:.10g}"
                    self.emit(self._event("position_settled", f"venue:{vname}", msg, None, Severity.INFO, asset=a,
                                          venue_qty=have, ledger_qty=want))  # fmt: skip
                    continue
                off += abs(have - want) * float(prices.get(a, 0.0))
                self.emit(
                    self._event(
                        "position_mismatch",
                        f"venue:{vname}",
                        f"{a}: venue holds {have:.10g}, ledger expects {want:.10g}; the venue is the truth",
                        None,
                        Severity.CRITICAL,
                        asset=a,
                        venue_qty=have,
                        ledger_qty=want,
                    )
                )
        nav = self.ledger.last_nav()
        if off > 0 and nav is not None and (trip := mismatch_trip(vname, off, nav, self.cfg.guard)):
            self._trip(trip, "reconcile", nav)

    def _affordable(self, venue: Venue, order: Order) -> float:
        """The largest quantity of a buy the venue's free cash pays for now (fee and a margin)."""
        cash = venue.balances().spendable
        q = venue.quote(order.asset)
        m = venue.market(order.asset)
        unit = q.ask * (1 + m.taker_fee) * 1.01
        qty = min(order.qty, floor_to_step(max(cash, 0.0) / unit, m.qty_step))
        if qty < m.min_qty or qty * q.ask < m.min_notional:
            return 0.0
        return qty

    def _venues_with_open_legs(self) -> set[str]:
        """Venues holding legs of finished cycles still open (an asynchronous request waits days for
        its fund's manager): each cycle asks them, so a settlement is booked when it happens, not at
        the next restart."""
        with self.ledger.session() as s:
            rows = s.exec(
                select(OrderRow.venue)
                .join(CycleRow, CycleRow.id == OrderRow.cycle_id)  # type: ignore[arg-type]
                .where(OrderRow.status == OrderStatus.OPEN.value, CycleRow.status.in_(TERMINAL_CYCLE))  # type: ignore[attr-defined]
            ).all()
        return {v for v in rows if v in self.c.venues}

    def reconcile(self, exclude: str | None = None) -> None:
        """Resolve legs left in flight by an earlier run: ask the venue, never resend blindly."""
        for row in self.ledger.unfinished_cycles():
            if row.key == exclude:
                continue
            self._execute(row, CycleInfo(row.key, row.trigger, utc(row.scheduled_for)), None)  # type: ignore[arg-type]

    def _report_from_row(self, row: CycleRow, message: str) -> CycleReport:
        targets = self.ledger.targets_of(row.id) if row.id is not None else []
        orders = self.ledger.orders_of(row.id) if row.id is not None else []
        ids = {o.client_id for o in orders}
        fills = [f for f in self.ledger.fills() if f.client_id in ids]
        arr = lambda attr: np.array([getattr(t, attr) for t in targets])  # noqa: E731
        return CycleReport(
            key=row.key,
            status=row.status,
            nav=float(row.nav_after or row.nav_before or 0.0),
            sigma_p_annual=float(row.sigma_p_annual or 0.0),
            assets=tuple(t.asset for t in targets),
            current=arr("current_weight"),
            target=arr("target_weight"),
            decided=arr("decided_weight"),
            orders=len(orders),
            fills=len(fills),
            fees=float(sum(f.fee for f in fills)),
            slippage=float(sum(f.slippage for f in fills)),
            message=message or row.message,
            in_flight=in_flight_count(self.ledger, row.key),
        )

    # -- the risk monitor -------------------------------------------------------------------------------

    def forecast_sigma(self, now: datetime | None = None) -> float:
        """Annualised forecast σ_p of the current holdings, using prices from inside the hour."""
        return self._mark(now or self.clock.now())[0]

    def _mark(self, now: datetime) -> tuple[float, float, datetime]:
        """The book marked now: (annualised forecast σ_p, NAV of the venues' balances, the as-of time of the
        freshest price). A venue that is down counts at its last known holdings and prices."""
        # the hourly window is the same for every tick of an hour: read once per closed bar (the data
        # source itself fetches only the new bar, bot/components.DataSource implementations cache)
        hour = floor_hour(now)
        cached = self._monitor_bars
        if cached is None or cached[0] != hour:
            cached = self._monitor_bars = (hour, self.c.data.bars(self.assets, now, self.cfg.risk.history_hours + 1))
        bars = cached[1]
        close = bars.close
        snap = self.c.data.latest(self.assets, now)
        check_prices(self.assets, snap.prices, f"data {self.names['data']} latest")
        if max(snap.times) > bars.times[-1]:
            close = np.vstack([close, snap.prices])
        forecast = self.c.forecaster.forecast(self.assets, log_returns(close))
        forecast.validate()
        # the venues' balances at the market's latest prices (the data source's, every few minutes): a quote
        # per asset per tick would double the cost of a tick for nothing the kill switch needs
        h = self._read_venues(snap.prices, quotes=False)
        if h.excluded:  # a NAV without a whole venue would be a false loss (and a false drawdown)
            raise DataError(f"no value known for venues {list(h.excluded)}: the book is not marked")
        nav = h.nav
        w = h.positions * h.prices / nav if nav > 0 else np.zeros(len(self.assets))
        return annualise_sigma(portfolio_sigma(w, forecast.cov)), nav, max(snap.times)

    def monitor(self, now: datetime | None = None) -> CycleReport | None:
        """Every tick: follow orders in flight, mark the book, apply the kill switch's rules, and trigger an
        immediate rebalance when forecast σ_p crosses the threshold from below.

        The trigger re-arms once σ_p falls back under 90% of the threshold, so a volatile
        afternoon gives one emergency rebalance, not one every few minutes. A tripped switch
        cancels what is open (``halt``) or starts selling at once (``flatten``); while it is tripped
        no rebalance is triggered.
        """
        now = now or self.clock.now()
        # orders still open at a venue are booked as they fill, not at the next cycle or restart
        follow_in_flight(self.ledger, self.c.venues, on_fill=lambda f: self._notify("rwabot_fill", fill=f),
                         emit=self.emit, now=now)  # fmt: skip
        if self.alerts is not None:
            self.alerts.tick()  # a rate-limited notifier's "N suppressed" summary goes out when it may
        threshold = self.cfg.risk.vol_threshold_annual
        try:
            sigma, nav, data_time = self._mark(now)
        except (DataError, ForecastError, VenueError) as exc:
            self.emit(self._event("monitor_failed", "monitor", str(exc), None))
            return None
        self.ledger.record_mark(now, nav, sigma, data_time)
        self._nav_hint = nav
        g = self.cfg.guard
        if self.kill.refresh() == ACTIVE:
            trip = equity_trip(nav, *self.kill.equity_baselines(now), g) or sigma_trip(sigma, g, "monitor")
            if trip is not None and self._trip(trip, "monitor", nav) and self.kill.state == "flatten":
                return self.run_cycle(now, trigger="risk")
        if self.kill.state != ACTIVE:
            return None
        if sigma > threshold and not self._above_threshold:
            self._above_threshold = True
            self.emit(
                self._event(
                    "vol_breach",
                    "monitor",
                    f"forecast σ_p {sigma:.2%} crossed threshold {threshold:.2%}; rebalancing now",
                    None,
                    Severity.WARNING,
                    sigma=sigma,
                    threshold=threshold,
                )
            )
            return self.run_cycle(now, trigger="risk")
        if sigma < 0.9 * threshold:
            self._above_threshold = False
        return None

    def last_cycle_time(self) -> datetime | None:
        row = self.ledger.last_cycle(statuses=TERMINAL_CYCLE)
        return utc(row.scheduled_for) if row is not None else None


def held_dispersion(
    w: np.ndarray, cov: np.ndarray, bound: Sequence[str | None]
) -> tuple[float | None, float | None, float | None]:
    """RC dispersion of a book, split three ways: over the free assets (max |RC_i/mean − 1|, the promise
    of risk parity); over the assets at a bound, measured against the free assets' mean RC (how far the
    bounds pull them off it); and over every asset not at a cap, floor or hold, venue-budget ones
    included (what a venue budget costs the balance of the whole book). None where a set holds nothing."""
    held = w > 0
    free = np.array([b is None for b in bound]) & held
    rest = ~np.array([b is None for b in bound]) & held
    loose = np.array([b is None or b.startswith("venue:") for b in bound]) & held
    rc, _ = risk_contributions(w, cov)
    d_all = rc_dispersion(w, cov, loose) if loose.any() else None
    if not free.any():
        return None, None, d_all
    mean = float(rc[free].mean())
    if mean <= 0:
        return float("inf"), None, d_all
    d_free = float(np.max(np.abs(rc[free] / mean - 1.0)))
    d_bound = float(np.max(np.abs(rc[rest] / mean - 1.0))) if rest.any() else None
    return d_free, d_bound, d_all


def assets_weights(snapshot: SnapshotRow, assets: Sequence[str]) -> np.ndarray:
    if snapshot.nav <= 0:
        return np.zeros(len(assets))
    return np.array([snapshot.positions.get(a, 0.0) * snapshot.prices.get(a, 0.0) for a in assets]) / snapshot.nav
