"""One rebalancing cycle: bars → returns → Σ → target → policy → legs → venues → fills → ledger.

The arithmetic (``plan_orders`` and everything in ``bot.riskmath``) is pure; ``Engine`` is the edge
that talks to plugins, venues and the ledger. A cycle is identified by a key that is unique per
scheduled hour (``2026-11-25T07:00Z``) or per risk trigger (``2026-11-25T07:15Z/risk``), so a
retried or restarted cycle finds its own plan in the ledger and resumes it instead of planning
twice.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
from sqlmodel import select

from bot.clock import RealClock, SimulatedClock, floor_hour
from bot.components import ComponentConfig, ComponentContext, DataSource, Forecaster, Optimizer, Policy, Venue
from bot.config import Config
from bot.domain import (
    CycleInfo,
    CycleReport,
    Forecast,
    GroupBound,
    MarketInfo,
    Order,
    OrderState,
    OrderStatus,
    RiskEvent,
    Severity,
    Target,
    Transfer,
    TransferState,
    TransferStatus,
    check_prices,
)
from bot.errors import (
    ConfigError,
    DataError,
    ForecastError,
    InfeasibleBoundsError,
    InsufficientFunds,
    InvalidOrder,
    OptimizerError,
    PluginError,
    TransferRefused,
    VenueError,
)
from bot.funding import VenueCash, plan_transfers, transfer_client_id
from bot.ledger import CycleRow, FillRow, Ledger, OrderRow, PlannedLeg, SnapshotRow, TargetRow, TransferRow, utc
from bot.plugins import Registration, Registry, make_plugin_manager
from bot.riskmath import (
    annualise_sigma,
    liquidity_limits,
    log_returns,
    portfolio_sigma,
    rc_dispersion,
    risk_contributions,
)

log = logging.getLogger("rwabot.cycle")

TERMINAL_CYCLE = ("done", "failed", "expired")
SHORTFALL_CHANGE = 0.25
"""A venue's cash shortfall is reported again when the amount to move changes by more than this share."""
SHORTFALL_MIN_SHARE = 0.005
"""A shortfall below this share of NAV is none: drift inside a no-trade band moves value between venues by
about this much, and reporting it would bring back the hourly noise. It is also the least change reported."""


# -- pure planning ---------------------------------------------------------------------------------


def client_order_id(cycle_key: str, asset: str, attempt: int = 0) -> str:
    """Deterministic per (cycle, asset, attempt), short enough for every exchange's limit (≤ 32)."""
    digest = hashlib.blake2b(f"{cycle_key}|{asset}|{attempt}".encode(), digest_size=12).hexdigest()
    return f"rw{digest}"


def floor_to_step(qty: float, step: float) -> float:
    if step <= 0:
        return qty
    return math.floor(qty / step * (1 + 1e-12)) * step


@dataclass(frozen=True)
class Skip:
    asset: str
    reason: str


@dataclass(frozen=True)
class PlanInputs:
    """Everything ``plan_orders`` needs, as plain numbers."""

    cycle_key: str
    assets: tuple[str, ...]
    venue_of: Mapping[str, str]
    prices: np.ndarray  # decision prices (mid), quote currency
    positions: np.ndarray  # units held
    cash_by_venue: Mapping[str, float]
    nav: float
    decided: np.ndarray  # weights of NAV to move to
    markets: Mapping[str, MarketInfo]
    last_hour_volume: np.ndarray  # units traded in the last closed hour
    participation: float
    cost_margin: float = 0.01  # extra cash kept aside per buy for spread and impact
    min_trade_weight: float = 0.0  # trades smaller than this fraction of NAV are not worth their fixed costs
    hold: frozenset[str] = frozenset()  # assets not traded this cycle (their venue failed)


@dataclass
class Plan:
    legs: list[PlannedLeg] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    shortfalls: dict[str, float] = field(default_factory=dict)


def plan_orders(p: PlanInputs) -> Plan:
    """Turn decided weights into venue legs: sells first, buys scaled to each venue's cash.

    Rules: no order exceeds ``participation ×`` the last hour's traded volume; quantities are
    floored to the venue's step; dust below the venue's minimum quantity or notional is skipped;
    a sell never exceeds the position; buys on a venue are scaled down together when that venue's
    cash plus its sells' proceeds cannot pay for them (cash does not move between venues);
    ``cash_by_venue`` is the cash that can buy assets (a gas reserve is not); assets in ``hold``
    are not traded.
    """
    plan = Plan()
    sells: list[tuple[str, float]] = []
    buys: dict[str, list[tuple[str, float]]] = {}
    for i, a in enumerate(p.assets):
        if a in p.hold:
            continue
        price = float(p.prices[i])
        delta_value = float(p.decided[i]) * p.nav - float(p.positions[i]) * price
        if abs(delta_value) < p.min_trade_weight * p.nav:
            continue
        qty = abs(delta_value) / price
        side = "buy" if delta_value > 0 else "sell"
        if side == "sell":
            qty = min(qty, max(float(p.positions[i]), 0.0))
        cap = p.participation * max(float(p.last_hour_volume[i]), 0.0)
        if qty > cap:
            plan.skips.append(Skip(a, f"{side} {qty:.6g} clipped to {cap:.6g} (participation of last hour's volume)"))
            qty = cap
        m = p.markets[a]
        qty = floor_to_step(qty, m.qty_step)
        if qty <= 0 or qty < m.min_qty or qty * price < m.min_notional:
            if abs(delta_value) > 0:
                plan.skips.append(Skip(a, f"dust: {side} {qty:.6g} ({qty * price:.2f}) below venue minimum"))
            continue
        if side == "sell":
            sells.append((a, qty))
        else:
            buys.setdefault(p.venue_of[a], []).append((a, qty))
    idx = {a: i for i, a in enumerate(p.assets)}
    leg = 0
    for a, qty in sells:
        order = Order(
            client_order_id(p.cycle_key, a), p.cycle_key, p.venue_of[a], a, "sell", qty, float(p.prices[idx[a]])
        )
        plan.legs.append(PlannedLeg(order, leg))
        leg += 1
    for venue, items in sorted(buys.items()):
        fee = max((p.markets[a].taker_fee for a, _ in items), default=0.0)
        proceeds = sum(
            q * float(p.prices[idx[a]]) * (1 - p.markets[a].taker_fee - p.cost_margin)
            for a, q in sells
            if p.venue_of[a] == venue
        )
        available = max(p.cash_by_venue.get(venue, 0.0) + proceeds, 0.0)
        cost = sum(q * float(p.prices[idx[a]]) for a, q in items) * (1 + fee + p.cost_margin)
        scale = 1.0
        if cost > available:
            scale = available / cost if cost > 0 else 0.0
            plan.shortfalls[venue] = cost - available
        for a, q in items:
            m = p.markets[a]
            q2 = floor_to_step(q * scale, m.qty_step)
            price = float(p.prices[idx[a]])
            if q2 <= 0 or q2 < m.min_qty or q2 * price < m.min_notional:
                plan.skips.append(Skip(a, f"buy {q:.6g} dropped: venue {venue} lacks cash"))
                continue
            order = Order(client_order_id(p.cycle_key, a), p.cycle_key, venue, a, "buy", q2, price)
            plan.legs.append(PlannedLeg(order, leg))
            leg += 1
    return plan


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


@dataclass
class Holdings:
    """What the venues hold, read at one moment; venues that could not be read are held at the
    ledger's last known values (``failed`` says why, ``held`` lists their assets). Assets with value
    in flight (``Balances.pending``: an asynchronous request) are held too, listed in ``pending``
    with their units, which ``positions`` include."""

    prices: np.ndarray
    positions: np.ndarray
    cash: dict[str, float]  # all cash per venue, reserves included: what NAV counts
    spendable: dict[str, float]  # cash per venue that can buy assets
    failed: dict[str, str] = field(default_factory=dict)
    held: frozenset[str] = frozenset()
    excluded: tuple[str, ...] = ()  # venues with no value known at all: left out of NAV
    pending: Mapping[str, float] = field(default_factory=dict)  # units in flight, held until settled
    transit: float = 0.0  # quote cash sent by one venue and not yet credited by another: in NAV, spendable nowhere
    incoming: Mapping[str, float] = field(default_factory=dict)  # venue -> cash in transit to it

    @property
    def nav(self) -> float:
        return float(sum(self.cash.values()) + self.positions @ self.prices + self.transit)


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
    venues = {
        vname: resolve("venue", vsec.plugin, vsec.options, f"{prefix}venues.{vname}.options")
        for vname, vsec in cfg.venues.items()
    }
    return ResolvedComponents(out, venues)


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
    return Components(data, built["forecaster"], built["optimizer"], built["policy"], venues), names


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
        self.ledger = Ledger(cfg.bot.ledger)
        if clock is None and isinstance(self.clock, SimulatedClock):
            # a restarted simulated daemon continues where its ledger stopped, not at clock.start
            last = self.ledger.last_cycle()
            if last is not None and utc(last.scheduled_for) >= self.clock.now():  # type: ignore[operator]
                self.clock = SimulatedClock(utc(last.scheduled_for) + timedelta(seconds=1), cfg.clock.speed)  # type: ignore[operator]
        self.venue_of = {a: s.venue for a, s in cfg.assets.items()}
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
        except Exception:
            self.close()
            raise
        params = inspect.signature(self.c.optimizer.optimize).parameters
        self._groups_ok = "groups" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
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

    def close(self) -> None:
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
        for vname, venue in self.c.venues.items():
            idx = [i for i, a in enumerate(self.assets) if self.venue_of[a] == vname]
            try:
                bal = venue.balances()
                mids = [venue.quote(self.assets[i]).mid if quotes else prices[i] for i in idx]
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
                        float(sum(incoming.values())), incoming)  # fmt: skip

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
        age = now - bars.times[-1]
        if age > timedelta(minutes=self.cfg.risk.max_price_age_minutes):
            raise DataError(
                f"data {self.names['data']}: last bar closed at {bars.times[-1].isoformat()}, "
                f"{age} before {now.isoformat()} (max {self.cfg.risk.max_price_age_minutes} min)"
            )
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
            return self._report_from_row(existing, "already ran")
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
                return report
        else:
            forecast = None
        report = self._execute(existing, info, forecast)
        self._notify("rwabot_cycle_finished", cycle=info, report=report)
        return report

    def _plan(self, info: CycleInfo, now: datetime) -> tuple[CycleRow, Forecast]:
        key = info.key
        returns, bars = self._history(now, key)
        forecast = self.c.forecaster.forecast(self.assets, returns)
        forecast.validate()
        h = self._read_venues(bars.close[-1])
        if h.failed and len(h.failed) == len(self.c.venues):
            raise VenueError(", ".join(h.failed), "every venue failed: " + "; ".join(h.failed.values()))
        prices, positions = h.prices, h.positions
        nav = h.nav
        if nav <= 0:
            raise DataError(f"portfolio NAV is {nav:.2f}: nothing to allocate")
        w0 = positions * prices / nav
        price_events = self._price_holds(h, key)
        risk = self.cfg.risk
        tv = bars.traded_value[-risk.liquidity_lookback_hours :]
        liq = liquidity_limits(tv, risk.participation, nav, risk.liquidity_horizon_hours)
        hard = np.array([self.cfg.assets[a].upper for a in self.assets])  # the operator's caps: never tolerated
        upper = np.minimum(hard, liq)
        lower = np.minimum(np.array([self.cfg.assets[a].lower for a in self.assets]), upper)
        held = np.array([a in h.held for a in self.assets], dtype=bool)
        # a failed venue's assets stay where they are: the optimizer plans the rest around them
        upper[held] = lower[held] = w0[held]
        invest = 1.0 - risk.cash_buffer
        events: list[RiskEvent] = list(price_events)
        for vname, why in h.failed.items():
            self._venues_to_reconcile.add(vname)
            mine = [a for a in self.assets if self.venue_of[a] == vname]
            fate = (
                "left out of NAV: the ledger has no value for it yet"
                if vname in h.excluded
                else f"held at its last known value {float(w0[held & np.isin(self.assets, mine)].sum()):.2%} of NAV"
            )
            events.append(
                self._event(
                    "venue_failed",
                    f"venue:{vname}",
                    f"at planning: {why}; not traded this cycle, its assets {mine} {fate}",
                    key,
                    Severity.CRITICAL,
                    assets=mine,
                    stage="plan",
                )
            )
        if h.failed:
            self._failed_at_plan[key] = dict(h.failed)
        for a, units in h.pending.items():
            events.append(
                self._event(
                    "async_pending",
                    f"venue:{self.venue_of[a]}",
                    f"{a}: {units:.6g} units ({w0[self.assets.index(a)]:.2%} of NAV with the wallet's) in an open "
                    "request; held fixed until it settles",
                    key,
                    Severity.INFO,
                    asset=a,
                    units=units,
                )
            )
        w_frame = self._in_optimizer_frame(w0, upper)
        target, infeasible = self._optimize(forecast, upper, lower, w_frame, invest)
        if infeasible:
            events.append(
                self._event(
                    "liquidity_cap",
                    "optimizer",
                    infeasible,
                    key,
                    invested=float(target.weights.sum()),
                )
            )
        if np.any(target.weights > upper + 1e-9) or np.any(target.weights < -1e-12) or target.weights.sum() > 1 + 1e-9:
            raise OptimizerError(f"optimizer {self.names['optimizer']} broke its bounds: {target.weights}")
        budgets, want = self._venue_budgets(target.weights, positions, prices, h, nav)
        transfers, fund_events, outgoing = self._plan_funding(key, budgets, want, h, nav)
        events.extend(fund_events)
        spendable = dict(h.spendable)
        covered = {v: h.incoming.get(v, 0.0) / nav * invest for v in budgets}
        for t in transfers:
            covered[t.destination] = covered.get(t.destination, 0.0) + t.amount / nav * invest
        for v, gone in outgoing.items():  # what leaves now can neither be held nor spent there this cycle
            spendable[v] = max(spendable.get(v, 0.0) - gone, 0.0)
            budgets[v] = max(budgets[v] - gone / nav * invest, 0.0)
        events.extend(self._shortfall_events(budgets, want, nav, key, covered))
        free = ~np.asarray(target.capped, bool) & (target.weights > 0)
        opt_dispersion = rc_dispersion(target.weights, forecast.cov, free) if free.any() else None
        fit = self._funded_budgets(budgets, want)
        target, fit_note = self._fit_to_venues(target, fit, forecast, upper, lower, w_frame, invest)
        if fit_note and fit_note != self._fit_note:  # said when it starts or changes, not every hour
            events.append(self._event("venue_budget", "optimizer", fit_note, key, Severity.INFO))
        self._fit_note = fit_note
        bound = self._bounds_of(target, upper, lower, held)
        # the stored target is what the policy trades toward: its balance, not the optimizer's, is the honest
        # one (a venue that cannot hold its share of the book binds its assets at their venue budget)
        free = np.array([b is None for b in bound]) & (target.weights > 0)
        traded_dispersion = rc_dispersion(target.weights, forecast.cov, free) if free.any() else None
        # A holding a little above a liquidity cap that moved with the hour's volume is kept, not sold (a
        # configured ``upper`` is the operator's limit and always binds): the target
        # stays under L_i (issue 2), but the policy is handed the target re-planned around the kept holding,
        # so the rest of the book does not move to make room for a sale nobody needs.
        keep = ~held & (w0 > upper) & (w0 <= upper * (1.0 + risk.cap_tolerance)) & (w0 <= hard)
        aim = target
        if keep.any():
            scale = dict(self._venue_scale)
            pin = w0.copy()  # the kept holdings in the optimizer's frame, so that the venue scaling returns w0
            for vname, sv in scale.items():
                mine = np.array([self.venue_of[a] == vname for a in self.assets])
                pin[mine] = w0[mine] / sv
            up_k, lo_k = upper.copy(), lower.copy()
            up_k[keep] = lo_k[keep] = pin[keep]
            aim, _ = self._optimize(forecast, up_k, np.minimum(lo_k, up_k), w_frame, invest)
            aim, _ = self._fit_to_venues(aim, fit, forecast, up_k, np.minimum(lo_k, up_k), w_frame, invest)
            self._venue_scale = scale
        upper_dec = np.where(keep, w0, upper)
        decision = self.c.policy.decide(w0, aim, forecast)
        decided = np.clip(decision.weights, 0.0, upper_dec)
        decided[held] = w0[held]
        if decided.sum() > 1.0:
            decided = decided / decided.sum()
        markets = {a: self.c.venues[self.venue_of[a]].market(a) for a in self.assets if a not in h.held}
        plan = Plan()
        if decision.trade:
            plan = plan_orders(
                PlanInputs(
                    key,
                    self.assets,
                    self.venue_of,
                    prices,
                    positions,
                    spendable,
                    nav,
                    decided,
                    markets,
                    bars.volume[-1],
                    risk.participation,
                    min_trade_weight=risk.min_trade_weight,
                    hold=h.held,
                )
            )
        for s in plan.skips:
            events.append(
                self._event(
                    "order_skipped", f"venue:{self.venue_of[s.asset]}", f"{s.asset}: {s.reason}", key, Severity.INFO
                )
            )
        for v, amount in plan.shortfalls.items():
            events.append(
                self._event(
                    "cash_shortfall",
                    f"venue:{v}",
                    f"buys scaled down: {amount:.2f} more cash needed",
                    key,
                    shortfall=amount,
                )
            )
        sigma_ann = annualise_sigma(portfolio_sigma(decided, forecast.cov))
        row = CycleRow(
            key=key,
            trigger=info.trigger,
            scheduled_for=info.scheduled_for,
            started_at=now,
            status="executing",
            nav_before=nav,
            sigma_p_annual=sigma_ann,
            rc_dispersion_target=opt_dispersion,
            rc_dispersion_traded=traded_dispersion,
            forecaster=self.names["forecaster"],
            optimizer=self.names["optimizer"],
            policy=self.names["policy"],
            decision=decision.reason,
        )
        rc_frac = np.asarray(target.risk_contributions, dtype=float)
        targets = [
            TargetRow(
                cycle_id=0,
                asset=a,
                venue=self.venue_of[a],
                price=float(prices[i]),
                upper=float(upper[i]),
                current_weight=float(w0[i]),
                target_weight=float(target.weights[i]),
                decided_weight=float(decided[i]),
                risk_contribution=float(rc_frac[i]),
                capped=bool(target.capped[i]),
                bound=bound[i],
            )
            for i, a in enumerate(self.assets)
        ]
        row = self.ledger.create_plan(row, targets, plan.legs, events, transfers)
        for e in events:
            self.emit(e, store=False)
        return row, forecast

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

    def _optimize(
        self,
        forecast: Forecast,
        upper: np.ndarray,
        lower: np.ndarray,
        current: np.ndarray,
        total: float,
        groups: Sequence[GroupBound] = (),
    ) -> tuple[Target, str]:
        """The optimizer on a book of ``total`` of NAV (its weights sum to 1): the cycle's weights in, out.

        Bounds that leave less than ``total`` investable hold every asset at its cap (the rest in cash);
        floors that ask for more than ``total`` are scaled down together to fit; either way the reason
        is the second value.
        """
        try:
            if groups:  # in the optimizer's frame too; an infeasible set of budgets is the caller's to handle
                scaled = [GroupBound(g.name, g.members, g.upper / total, g.lower / total) for g in groups]
                t = self.c.optimizer.optimize(
                    forecast, upper=upper / total, lower=lower / total, current=current / total, groups=scaled
                )
            else:
                t = self.c.optimizer.optimize(
                    forecast, upper=upper / total, lower=lower / total, current=current / total
                )
        except InfeasibleBoundsError as exc:
            if groups:
                raise
            if upper.sum() < total:  # the caps leave cash: every asset at its cap
                weights = upper.copy()
                why = f"caps allow only {weights.sum():.2%} invested; the rest stays in cash ({exc})"
            else:  # the floors ask for more than the book: they are scaled down together to fit it
                weights = lower * (total / lower.sum())
                why = f"floors sum to {lower.sum():.2%}, over the {total:.2%} investable: scaled to fit ({exc})"
            rc, sp = risk_contributions(weights, forecast.cov)
            frac = rc / sp if sp > 0 else rc
            capped = np.ones(len(weights), bool)
            return Target(self.assets, weights, frac, sp, capped, {"infeasible": str(exc)}), why
        weights = t.weights * total
        rc, sp = risk_contributions(weights, forecast.cov)
        return Target(t.assets, weights, rc / sp if sp > 0 else rc, sp, t.capped, t.diagnostics), ""

    def _venue_budgets(
        self, weights: np.ndarray, positions: np.ndarray, prices: np.ndarray, h: Holdings, nav: float
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Per venue that can trade: the share of NAV it can hold (its assets and spendable cash, less the
        cash buffer) and the share ``weights`` put on it. A failed venue's assets are fixed and not listed."""
        invest = 1.0 - self.cfg.risk.cash_buffer
        budgets: dict[str, float] = {}
        want: dict[str, float] = {}
        for vname in self.c.venues:
            idx = [i for i, a in enumerate(self.assets) if self.venue_of[a] == vname]
            if not idx or vname in h.failed:
                continue
            budgets[vname] = (h.spendable.get(vname, 0.0) + float(positions[idx] @ prices[idx])) / nav * invest
            want[vname] = float(weights[idx].sum())
        return budgets, want

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

    def _funded_budgets(self, budgets: Mapping[str, float], want: Mapping[str, float]) -> dict[str, float]:
        """Venue budgets for the target traded now. A short venue holds at most what it has; a venue with
        more than its share, and a route to a short one, holds at most its share: the excess is sold into
        cash that the next cycle's transfer carries over (only cash can travel, and transfers go before
        the sells). Without a route the excess could never leave, and is better invested where it is."""
        # only a gap worth a transfer is funded (funding.min_gap): a smaller one stays where it is, and
        # making the other venue sell into cash for it would leave that cash idle
        short = {v for v, b in budgets.items() if want[v] > b + self.cfg.funding.min_gap}
        out = dict(budgets)
        for v, b in budgets.items():
            if v not in short and any(r.source == v and r.destination in short for r in self.cfg.funding.routes):
                out[v] = min(b, want[v])
        return out

    def _venue_mask(self, vname: str) -> np.ndarray:
        return np.array([self.venue_of[a] == vname for a in self.assets])

    def _fit_to_venues(
        self,
        target: Target,
        budgets: Mapping[str, float],
        forecast: Forecast,
        upper: np.ndarray,
        lower: np.ndarray,
        current: np.ndarray,
        invest: float,
    ) -> tuple[Target, str]:
        """The best risk-balanced book the venues can hold now: the optimizer again, under venue budgets.

        Cash does not jump between venues, so a target that needs more value on a venue than it holds
        is unreachable this cycle (the funding legs bring the cash for a later one). Scaling that
        venue's assets down after optimising breaks the risk balance of the whole book (RC dispersion
        0.16 on the default config); instead the optimizer solves again with Σ_{i∈v} w_i ≤ B_v for
        every venue, so the assets no bound binds keep equal risk contributions and only the short
        venue's assets sit at its budget. The book invests what the venues hold (cash in transit is
        in none of them). An optimizer without ``groups`` gets the old proportional scaling, said in
        the second value (so is a set of budgets the optimizer finds infeasible).
        """
        w = target.weights
        # a venue short by less than a trade worth making is not refitted: its buys are scaled to its cash
        # at planning anyway, and a budget that binds by rounding would mark its assets bound for nothing
        tol = max(self.cfg.risk.min_trade_weight, 1e-9)
        over = [v for v, b in budgets.items() if float(w[self._venue_mask(v)].sum()) > b + tol]
        if not over:
            self._venue_scale = {}
            return target, ""
        note = ""
        if self._groups_ok:
            masks = {v: self._venue_mask(v) for v in budgets}
            outside = ~np.any(np.array(list(masks.values())), axis=0) if masks else np.ones(len(w), bool)
            room = sum(min(b, float(upper[masks[v]].sum())) for v, b in budgets.items())
            total = min(invest, room + float(upper[outside].sum()))
            groups = [GroupBound(f"venue:{v}", masks[v], upper=min(b, total)) for v, b in budgets.items()]
            try:
                fitted, _ = self._optimize(forecast, upper, lower, current, total, groups)
                self._venue_scale = {}
                return fitted, ""
            except OptimizerError as exc:
                note = f"venue budgets {dict((v, round(b, 6)) for v, b in budgets.items())} refused ({exc}); "
        scale: dict[str, float] = {}
        w = w.copy()
        for vname, budget in budgets.items():
            mine = self._venue_mask(vname)
            want = float(w[mine].sum())
            if want > budget + 1e-12:
                scale[vname] = budget / want
                w[mine] *= scale[vname]
        self._venue_scale = scale
        rc, sp = risk_contributions(w, forecast.cov)
        diag = {**target.diagnostics, "venue_scaled": scale,
                "groups": {f"venue:{v}": "upper" for v in scale}}  # fmt: skip
        why = "the optimizer takes no venue budgets" if not self._groups_ok else ""
        note = (note + why + f"; venues {sorted(scale)} scaled to the value they hold").lstrip("; ")
        return Target(target.assets, w, rc / sp if sp > 0 else rc, sp, target.capped, diag), note

    def _bounds_of(self, target: Target, upper: np.ndarray, lower: np.ndarray, held: np.ndarray) -> list[str | None]:
        """Per asset, the bound that binds its target (None: free, the assets risk parity is promised on)."""
        groups = target.diagnostics.get("groups") or {}
        out: list[str | None] = []
        for i, a in enumerate(self.assets):
            wi = float(target.weights[i])
            if held[i]:
                out.append("held")
            elif bool(target.capped[i]) and wi >= float(upper[i]) - 1e-9:
                out.append("cap")
            elif float(lower[i]) > 0 and wi <= float(lower[i]) + 1e-9:
                out.append("floor")
            elif f"venue:{self.venue_of[a]}" in groups:
                out.append(f"venue:{self.venue_of[a]}")
            else:
                out.append(None)
        return out

    def _in_optimizer_frame(self, w0: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """The holdings as the optimizer's unscaled book: a venue scaled by s last cycle holds w0/s of it.

        Without this the optimizer is told that a venue held at its reachable target is underweight (and
        that the other venue's idle cash must be invested), so a cost-aware optimizer, which trades only
        when the gain pays the cost, trades every hour to chase a target the venue scaling then undoes.
        """
        w = w0.copy()
        for vname, s in getattr(self, "_venue_scale", {}).items():
            mine = np.array([self.venue_of[a] == vname for a in self.assets])
            w[mine] = np.minimum(w0[mine] / s, np.maximum(upper[mine], w0[mine]))
        return w

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

    def _plan_funding(
        self, key: str, budgets: Mapping[str, float], want: Mapping[str, float], h: Holdings, nav: float
    ) -> tuple[list[Transfer], list[RiskEvent], dict[str, float]]:
        """The transfers this cycle sends, the events of the decision, and the cash each source gives up
        (amount and fee), which neither its budget nor its buys can count on any more."""
        f = self.cfg.funding
        if not f.routes:
            return [], [], {}
        invest = 1.0 - self.cfg.risk.cash_buffer
        venues = {
            v: VenueCash(
                value=budgets[v] / invest * nav,
                need=want[v] / invest * nav,
                spendable=float(h.spendable.get(v, 0.0)),
                incoming=float(h.incoming.get(v, 0.0)),
                fee=self._fee_estimate(v),
                reserve=self.cfg.risk.cash_buffer * want[v] / invest * nav,
            )
            for v in budgets
        }
        day_ago = self.clock.now() - timedelta(hours=24)
        limits = {v: f.limits_of(v) for v in venues}
        sent = {v: self.ledger.sent_since(v, day_ago) for v in venues}
        planned, skips = plan_transfers(venues, f.routes, limits, sent, f.min_gap * nav)
        # a skip that lasts (no cash to send, a cap reached) is said when it starts, not every hour
        now_skipped = {k.destination for k in skips}
        events = [self._event("funding_skipped", f"venue:{k.destination}", k.reason, key, Severity.INFO)
                  for k in skips if k.destination not in self._skip_reported]  # fmt: skip
        self._skip_reported = now_skipped
        out: list[Transfer] = []
        outgoing: dict[str, float] = {}
        for p in planned:
            r = p.route
            asset = r.asset or self.cfg.bot.quote
            cid = transfer_client_id(key, p.source, p.destination)
            out.append(Transfer(cid, key, p.source, p.destination, asset, p.amount, r.network,
                                r.address or "", r.tag))  # fmt: skip
            outgoing[p.source] = outgoing.get(p.source, 0.0) + p.amount + venues[p.source].fee
            events.append(self._event("transfer_planned", f"venue:{p.source}",
                                      f"move {p.amount:,.2f} {asset} from {p.source} to {p.destination} over "
                                      f"{r.network} (expected {r.expected_minutes:g} min): the target needs "
                                      f"{want[p.destination]:.2%} of NAV there, it holds {budgets[p.destination]:.2%}",
                                      key, Severity.INFO, client_id=cid, amount=p.amount))  # fmt: skip
        return out, events, outgoing

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
        """Why a transfer must not be sent (empty: it may): the allow-list and the source's limits."""
        f = self.cfg.funding
        if not f.allowed(address):
            return (f"transfer {t.client_id} of {t.amount:,.2f} {t.asset} from {t.source} to {t.destination}: address "
                    f"{address!r} is not on funding.allow; nothing sent")  # fmt: skip
        lim = f.limits_of(t.source)
        if not lim.min_transfer <= t.amount <= lim.max_transfer:
            return (f"transfer {t.client_id}: {t.amount:,.2f} is outside the limits of {t.source} "
                    f"[{lim.min_transfer:,.2f}, {lim.max_transfer:,.2f}]")  # fmt: skip
        sent = self.ledger.sent_since(t.source, self.clock.now() - timedelta(hours=24))
        if sent + t.amount > lim.daily_cap * (1 + 1e-9):
            return (f"transfer {t.client_id}: {t.source} sent {sent:,.2f} in 24 h; {t.amount:,.2f} more passes "
                    f"its daily cap {lim.daily_cap:,.2f}")  # fmt: skip
        return ""

    def _execute(self, row: CycleRow, info: CycleInfo, forecast: Forecast | None) -> CycleReport:
        assert row.id is not None
        now = self.clock.now()
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
        expected = known[1]
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
        )

    # -- the risk monitor -------------------------------------------------------------------------------

    def forecast_sigma(self, now: datetime | None = None) -> float:
        """Annualised forecast σ_p of the current holdings, using prices from inside the hour."""
        now = now or self.clock.now()
        bars = self.c.data.bars(self.assets, now, self.cfg.risk.history_hours + 1)
        close = bars.close
        snap = self.c.data.latest(self.assets, now)
        check_prices(self.assets, snap.prices, f"data {self.names['data']} latest")
        if max(snap.times) > bars.times[-1]:
            close = np.vstack([close, snap.prices])
        forecast = self.c.forecaster.forecast(self.assets, log_returns(close))
        forecast.validate()
        h = self._read_venues(snap.prices, quotes=False)  # a venue that is down counts at its last known holdings
        nav = float(sum(h.cash.values()) + h.positions @ snap.prices)
        w = h.positions * snap.prices / nav if nav > 0 else np.zeros(len(self.assets))
        return annualise_sigma(portfolio_sigma(w, forecast.cov))

    def monitor(self, now: datetime | None = None) -> CycleReport | None:
        """Trigger an immediate rebalance when forecast σ_p crosses the threshold from below.

        The trigger re-arms once σ_p falls back under 90% of the threshold, so a volatile
        afternoon gives one emergency rebalance, not one every few minutes.
        """
        now = now or self.clock.now()
        threshold = self.cfg.risk.vol_threshold_annual
        try:
            sigma = self.forecast_sigma(now)
        except (DataError, ForecastError, VenueError) as exc:
            self.emit(self._event("monitor_failed", "monitor", str(exc), None))
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
