"""The operations endpoint: Prometheus ``/metrics``, ``/healthz`` and ``/status`` read from the ledger.

Everything here is read from the ledger at the time it is asked for (a scrape, a health probe, ``rwabot
status --json``), never from the daemon's memory: what the endpoint says is what the ledger says, and it
says the same whether the daemon is busy, stuck or restarting. Each read is one SQLite read transaction
(the ledger is in WAL mode: it never blocks the daemon's writes), so a scrape during a cycle sees the
ledger as it was at one instant, never the targets of one cycle beside the snapshot of another.

Health (``health``) fails when

- the last finished cycle (``done``, ``failed`` or ``expired``) was scheduled more than
  ``ops.max_cycle_age_hours`` before ``now``; with no finished cycle yet, only when the ledger's first
  record (mark, risk event, trading state or snapshot) is older than that: a daemon that has just started
  is healthy, with the reason ``starting``;
- the last finished cycle failed (``bot.outcome.cycle_failure``: it could not plan, or every venue
  failed), or a configured venue failed (a ``venue_failed`` event) during or since the last ``done``
  cycle: one venue of several failing does not fail the cycle, but it is a failing venue;
- the kill switch is not ``active`` (the last ``trading_state`` row).

``now`` is always an input: the daemon may run on a simulated clock. docs/ops.md lists the metrics.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import exists
from sqlmodel import Session, func, or_, select

from bot.config import Config
from bot.errors import LedgerError
from bot.inflight import FINISHED_CYCLE, InFlightLeg, in_flight_legs
from bot.ledger import (
    CycleRow,
    FillRow,
    Ledger,
    MarkRow,
    OrderRow,
    RiskEventRow,
    SnapshotRow,
    TargetRow,
    TradingStateRow,
    TransferRow,
    utc,
)
from bot.outcome import cycle_failure, one_line

log = logging.getLogger(__name__)

KILL_SWITCH_STATES = ("active", "halt", "reduce_only", "flatten")
COST_KINDS = ("fees", "slippage", "gas", "transfer_fees", "transfer_gas", "product_fees")
VENUE_ERROR_KINDS = (
    "venue_failed",
    "order_rejected",
    "order_denied",
    "transfer_failed",
    "transfer_refused",
    "transfer_missing",
    "transfer_unknown",
    "not_eligible",
)
"""Risk events at ``venue:<name>`` counted as that venue's errors (``rwabot_venue_errors_total``)."""
RC_SETS = ("free", "bound", "all", "target", "traded")

AlertStats = Callable[[], Mapping[str, Any]]


# -- one consistent read of the ledger -------------------------------------------------------------------


class _Pinned(Ledger):
    """The ledger's read methods on one session inside one read transaction (opens nothing itself)."""

    def __init__(self, session: Session, path: Path) -> None:  # the engine is the caller's ledger's
        self._pinned = session
        self.path = path

    @contextmanager
    def session(self) -> Iterator[Session]:
        yield self._pinned


@contextmanager
def _read_transaction(ledger: Ledger) -> Iterator[_Pinned]:
    """A ``Ledger`` whose every read sees the same instant of the file: pysqlite begins no transaction
    before a SELECT by itself, so each query would otherwise see the commits made between them."""
    with ledger.session() as s:
        conn = s.connection()
        raw = conn.connection.dbapi_connection
        if raw is not None and not getattr(raw, "in_transaction", True):
            conn.exec_driver_sql("BEGIN")  # deferred: a read snapshot from the first SELECT, never a write lock
        yield _Pinned(s, ledger.path)  # the session's close rolls the read transaction back


def _aware(dt: datetime) -> datetime:
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def _t(dt: datetime | None) -> datetime | None:
    return None if dt is None else _aware(utc(dt))  # type: ignore[arg-type]


def _iso(dt: datetime | None) -> str | None:
    t = _t(dt)
    return None if t is None else t.isoformat()


def _num(x: Any) -> float | None:
    """A JSON-able number: NaN and infinities are null (JSON has neither)."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


@dataclass
class LedgerState:
    """What the ledger says at one instant, and what follows from it at ``now``."""

    now: datetime
    last: CycleRow | None  # the last cycle, of any status
    last_finished: CycleRow | None  # the last done, failed or expired cycle
    last_done: CycleRow | None
    planned: CycleRow | None  # the last finished cycle with targets: its targets, dispersions and sigma
    targets: list[TargetRow]
    snapshot: SnapshotRow | None
    mark: MarkRow | None
    trading: TradingStateRow | None
    costs: dict[str, float]
    cycles: dict[str, int]  # status -> count
    orders: dict[tuple[str, str], int]  # (venue, status) -> count
    fills: dict[str, int]  # venue -> count
    venue_errors: dict[tuple[str, str], int]  # (venue, kind) -> count
    risk_events: dict[tuple[str, str], int]  # (kind, severity) -> count
    in_flight: list[InFlightLeg]
    transfers_open: list[TransferRow]
    recent: list[RiskEventRow]
    failing_venues: dict[str, RiskEventRow]  # configured venue -> its newest venue_failed event
    cycle_failure: str | None
    ok: bool
    reasons: list[str]

    @property
    def kill_switch(self) -> str:
        return self.trading.state if self.trading is not None else "active"

    @property
    def sigma_p_annual(self) -> float | None:
        """The last mark's σ_p, else the last planned cycle's."""
        if self.mark is not None and self.mark.sigma_p_annual is not None:
            return self.mark.sigma_p_annual
        return self.planned.sigma_p_annual if self.planned is not None else None

    @property
    def last_cycle_age_s(self) -> float | None:
        """``now`` minus the scheduled time of the last finished cycle (what health compares)."""
        c = self.last_finished
        return None if c is None else (self.now - _t(c.scheduled_for)).total_seconds()  # type: ignore[operator]

    def data_time(self) -> datetime | None:
        """The as-of time of the freshest price: the last mark's, else the last snapshot's time."""
        if self.mark is not None and self.mark.data_time is not None:
            return _t(self.mark.data_time)
        return _t(self.snapshot.time) if self.snapshot is not None else None

    @property
    def data_age_s(self) -> float | None:
        dt = self.data_time()
        return None if dt is None else (self.now - dt).total_seconds()

    def weights(self, cfg: Config) -> list[dict[str, Any]]:
        """Per asset: the weight held at the last snapshot (``position × price / NAV``) beside the last
        finished cycle's target, risk contribution, upper bound and binding bound."""
        by_asset = {t.asset: t for t in self.targets}
        snap = self.snapshot
        names = list(cfg.assets)
        names += [a for a in by_asset if a not in names]
        names += [a for a in (snap.positions if snap else {}) if a not in names]
        out = []
        for a in names:
            t = by_asset.get(a)
            w: float | None = None
            if snap is not None and snap.nav:
                q = snap.positions.get(a, 0.0)
                p = snap.prices.get(a)
                w = 0.0 if q == 0 else (None if p is None else q * p / snap.nav)
            venue = t.venue if t is not None else (cfg.assets[a].venue if a in cfg.assets else None)
            out.append(
                {
                    "asset": a,
                    "venue": venue,
                    "weight": _num(w),
                    "target": _num(t.target_weight) if t else None,
                    "risk_contribution": _num(t.risk_contribution) if t else None,
                    "upper": _num(t.upper) if t else None,
                    "bound": (t.bound or ("cap" if t.capped else None)) if t else None,
                }
            )
        return out

    def rc_dispersion(self) -> dict[str, float | None]:
        c = self.planned
        if c is None:
            return dict.fromkeys(RC_SETS)
        return {
            "free": _num(c.rc_dispersion_held),
            "bound": _num(c.rc_dispersion_held_bound),
            "all": _num(c.rc_dispersion_held_all),
            "target": _num(c.rc_dispersion_target),
            "traded": _num(c.rc_dispersion_traded),
        }

    def cycle_duration_s(self, cfg: Config, c: CycleRow | None = None) -> float | None:
        """Finish minus start of a finished cycle; None on a simulated clock, where the start is simulated
        time and the finish is the wall clock's (the ledger keeps no simulated finish)."""
        c = self.last_finished if c is None else c
        if c is None or c.finished_at is None or cfg.clock.kind != "real":
            return None
        return (_t(c.finished_at) - _t(c.started_at)).total_seconds()  # type: ignore[operator]


def _first_record(led: Ledger) -> datetime | None:
    """The time of the ledger's first mark, risk event, trading state or snapshot."""
    with led.session() as s:
        times = [
            s.exec(select(func.min(MarkRow.time))).one(),
            s.exec(select(func.min(RiskEventRow.time))).one(),
            s.exec(select(func.min(TradingStateRow.time))).one(),
            s.exec(select(func.min(SnapshotRow.time))).one(),
        ]
    known = [_t(t) for t in times if t is not None]
    return min(known) if known else None  # type: ignore[type-var]


def read_state(ledger: Ledger, cfg: Config, now: datetime) -> LedgerState:
    """Everything the endpoint reports, in one read transaction of ``ledger``, judged at ``now``."""
    now = _aware(now)
    with _read_transaction(ledger) as led, led.session() as s:
        last = led.last_cycle()
        last_finished = led.last_cycle(statuses=FINISHED_CYCLE)
        last_done = led.last_cycle(statuses=("done",))
        planned = s.exec(
            select(CycleRow)
            .where(CycleRow.status.in_(FINISHED_CYCLE), exists().where(TargetRow.cycle_id == CycleRow.id))  # type: ignore[attr-defined]
            .order_by(CycleRow.scheduled_for.desc(), CycleRow.id.desc())  # type: ignore[attr-defined, union-attr]
        ).first()
        targets = led.targets_of(planned.id) if planned is not None and planned.id is not None else []
        snapshot = s.exec(select(SnapshotRow).order_by(SnapshotRow.time.desc(), SnapshotRow.id.desc())).first()  # type: ignore[attr-defined, union-attr]
        mark = led.last_mark()
        trading = led.trading_state()
        costs = led.cost_totals()
        cycles = {st: int(n) for st, n in s.exec(select(CycleRow.status, func.count()).group_by(CycleRow.status))}
        orders = {
            (v, st): int(n)
            for v, st, n in s.exec(
                select(OrderRow.venue, OrderRow.status, func.count()).group_by(OrderRow.venue, OrderRow.status)
            )
        }
        fills = {v: int(n) for v, n in s.exec(select(FillRow.venue, func.count()).group_by(FillRow.venue))}
        venue_errors = {
            (where.removeprefix("venue:"), kind): int(n)
            for where, kind, n in s.exec(
                select(RiskEventRow.where, RiskEventRow.kind, func.count())
                .where(RiskEventRow.kind.in_(VENUE_ERROR_KINDS), RiskEventRow.where.startswith("venue:"))  # type: ignore[attr-defined]
                .group_by(RiskEventRow.where, RiskEventRow.kind)
            )
        }
        risk_events = {
            (k, sev): int(n)
            for k, sev, n in s.exec(
                select(RiskEventRow.kind, RiskEventRow.severity, func.count()).group_by(
                    RiskEventRow.kind, RiskEventRow.severity
                )
            )
        }
        in_flight = in_flight_legs(led)
        transfers_open = led.transfers(open_only=True)
        recent = led.events(limit=10)
        # venues failing during or since the last done cycle (all of the ledger's, with none done yet)
        q = select(RiskEventRow).where(RiskEventRow.kind == "venue_failed")
        if last_done is not None:
            q = q.where(or_(RiskEventRow.cycle_key == last_done.key, RiskEventRow.time >= last_done.started_at))
        failing: dict[str, RiskEventRow] = {}
        for e in s.exec(q.order_by(RiskEventRow.id.desc())):  # type: ignore[union-attr]
            v = e.where.removeprefix("venue:")
            if e.where.startswith("venue:") and v in cfg.venues:
                failing.setdefault(v, e)
        failure = None
        if last_finished is not None:
            own = list(
                s.exec(
                    select(RiskEventRow)
                    .where(RiskEventRow.kind == "venue_failed", RiskEventRow.cycle_key == last_finished.key)
                    .order_by(RiskEventRow.id.desc())  # type: ignore[union-attr]
                )
            )
            failure = cycle_failure(last_finished, led, cfg.venues, events=own)
        first = _first_record(led) if last_finished is None else None

    reasons: list[str] = []
    max_age = timedelta(hours=cfg.ops.max_cycle_age_hours)
    starting = False
    if last_finished is None:
        if first is not None and now - first > max_age:
            reasons.append(
                f"no cycle has finished in the {(now - first).total_seconds() / 3600:.1f} h since the ledger's "
                f"first record ({first.isoformat()}); limit {cfg.ops.max_cycle_age_hours:g} h"
            )
        else:
            starting = True
    else:
        age = now - _t(last_finished.scheduled_for)  # type: ignore[operator]
        if age > max_age:
            reasons.append(
                f"last cycle {last_finished.key} ({last_finished.status}) is {age.total_seconds() / 3600:.1f} h old; "
                f"limit {cfg.ops.max_cycle_age_hours:g} h"
            )
    if failure is not None:
        reasons.append(failure)
    for v, e in sorted(failing.items()):
        reasons.append(one_line(f"venue {v} failing (last failure {_iso(e.time)}): {e.message}"))
    if trading is not None and trading.state != "active":
        reasons.append(
            one_line(
                f"kill switch {trading.state} ({trading.cause}) since {_iso(trading.time)} by {trading.by}: "
                f"{trading.reason}"
            )
        )
    ok = not reasons
    if ok and starting:
        reasons.append("starting: no cycle has finished yet")
    return LedgerState(
        now=now,
        last=last,
        last_finished=last_finished,
        last_done=last_done,
        planned=planned,
        targets=targets,
        snapshot=snapshot,
        mark=mark,
        trading=trading,
        costs=costs,
        cycles=cycles,
        orders=orders,
        fills=fills,
        venue_errors=venue_errors,
        risk_events=risk_events,
        in_flight=in_flight,
        transfers_open=transfers_open,
        recent=recent,
        failing_venues=failing,
        cycle_failure=failure,
        ok=ok,
        reasons=reasons,
    )


def health(ledger: Ledger, cfg: Config, now: datetime) -> tuple[bool, list[str]]:
    """(healthy, the reasons it is not, or ``starting``); the rules are in the module's docstring."""
    st = read_state(ledger, cfg, now)
    return st.ok, st.reasons


def _cycle_doc(c: CycleRow | None, st: LedgerState, cfg: Config) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "key": c.key,
        "trigger": c.trigger,
        "status": c.status,
        "scheduled_for": _iso(c.scheduled_for),
        "started_at": _iso(c.started_at),
        "finished_at": _iso(c.finished_at),
        "duration_s": _num(st.cycle_duration_s(cfg, c)),
        "age_s": _num((st.now - _t(c.scheduled_for)).total_seconds()),  # type: ignore[operator]
        "nav_before": _num(c.nav_before),
        "nav_after": _num(c.nav_after),
        "sigma_p_annual": _num(c.sigma_p_annual),
        "decision": c.decision,
        "message": c.message,
    }


def status_doc(st: LedgerState, cfg: Config, ledger_path: str | Path | None = None) -> dict[str, Any]:
    """``LedgerState`` as one JSON-able dict (what ``/status`` and ``rwabot status --json`` print)."""
    snap = st.snapshot
    mark = st.mark
    t = st.trading
    return {
        "now": _iso(st.now),
        "bot": {
            "name": cfg.bot.name,
            "mode": cfg.bot.mode,
            "quote": cfg.bot.quote,
            "clock": cfg.clock.kind,
            "ledger": str(ledger_path) if ledger_path is not None else None,
        },
        "health": {"ok": st.ok, "reasons": st.reasons, "failing_venues": sorted(st.failing_venues)},
        "last_cycle": _cycle_doc(st.last, st, cfg),
        "last_finished_cycle": _cycle_doc(st.last_finished, st, cfg),
        "cycles": dict(sorted(st.cycles.items())),
        "snapshot": None
        if snap is None
        else {
            "time": _iso(snap.time),
            "nav": _num(snap.nav),
            "cash": _num(snap.cash),
            "transit": _num(snap.transit or 0.0),
            "cash_by_venue": {v: _num(c) for v, c in sorted(snap.cash_by_venue.items())},
        },
        "mark": None
        if mark is None
        else {
            "time": _iso(mark.time),
            "nav": _num(mark.nav),
            "sigma_p_annual": _num(mark.sigma_p_annual),
            "data_time": _iso(mark.data_time),
        },
        "sigma_p_annual": _num(st.sigma_p_annual),
        "data_time": _iso(st.data_time()),
        "data_age_s": _num(st.data_age_s),
        "targets_cycle": st.planned.key if st.planned is not None else None,
        "weights": st.weights(cfg),
        "rc_dispersion": st.rc_dispersion(),
        "costs": {k: _num(v) for k, v in st.costs.items()},
        "orders": {
            "by_venue": {
                v: {s: n for (v2, s), n in sorted(st.orders.items()) if v2 == v}
                for v in sorted({v for v, _ in st.orders})
            },
            "in_flight": len(st.in_flight),
            "in_flight_legs": [
                {
                    "client_id": leg.client_id,
                    "venue": leg.venue,
                    "asset": leg.asset,
                    "status": leg.status,
                    "cycle": leg.cycle_key,
                    "cycle_status": leg.cycle_status,
                }
                for leg in st.in_flight
            ],
        },
        "fills": dict(sorted(st.fills.items())),
        "transfers_open": [
            {
                "client_id": tr.client_id,
                "status": tr.status,
                "source": tr.source,
                "destination": tr.destination,
                "asset": tr.asset,
                "network": tr.network,
                "amount": _num(tr.amount),
                "external_id": tr.external_id,
                "sent_at": _iso(tr.sent_at),
            }
            for tr in st.transfers_open
        ],
        "kill_switch": {
            "state": st.kill_switch,
            "tripped": st.kill_switch != "active",
            "cause": t.cause if t else None,
            "reason": t.reason if t else None,
            "since": _iso(t.time) if t else None,
            "by": t.by if t else None,
        },
        "events": [
            {
                "time": _iso(e.time),
                "kind": e.kind,
                "severity": e.severity,
                "where": e.where,
                "cycle": e.cycle_key,
                "message": e.message,
            }
            for e in st.recent
        ],
    }


def ledger_status(ledger: Ledger, cfg: Config, now: datetime) -> dict[str, Any]:
    """Everything a script needs to know of the bot, as one JSON-able dict, times ISO-8601 UTC: the last
    cycle, health, NAV, the last mark, weights against targets, RC dispersion, costs, orders in flight,
    open transfers, the kill switch and the last ten risk events."""
    return status_doc(read_state(ledger, cfg, now), cfg, ledger.path)


def ledger_now(ledger: Ledger, cfg: Config) -> datetime:
    """The "now" of a reader outside the daemon (``rwabot status``): the wall clock on a real clock; on a
    simulated one the last time the ledger was written at (its last mark or snapshot, else its last
    cycle's start, else the clock's start), since simulated time exists only while the daemon runs."""
    if cfg.clock.kind == "real":
        return datetime.now(UTC)
    mark, cycle = ledger.last_mark(), ledger.last_cycle()
    with ledger.session() as s:
        snap = s.exec(select(func.max(SnapshotRow.time))).one()
    times = [_t(x) for x in (mark.time if mark else None, snap) if x is not None]
    if times:
        return max(times)  # type: ignore[type-var]
    if cycle is not None:
        return _t(cycle.started_at)  # type: ignore[return-value]
    return cfg.clock.start or datetime.now(UTC)


# -- Prometheus ------------------------------------------------------------------------------------------


def _metric_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text).strip("_") or "x"


class LedgerCollector:
    """A prometheus-client collector reading the ledger at every scrape (``rwabot_*``, docs/ops.md).

    ``ledger``: a ``Ledger`` (used as it is) or the path of one (opened on the first scrape with its own
    engine, and never created: a missing file is an error). ``alert_stats``: the daemon's alert counters,
    a mapping of name to a number (``rwabot_alerts_<name>_total``) or to a mapping of label to number
    (``rwabot_alerts_<name>_total{key=...}``)."""

    def __init__(
        self,
        ledger: Ledger | str | Path,
        cfg: Config,
        now: Callable[[], datetime],
        alert_stats: AlertStats | None = None,
    ) -> None:
        self._ledger = ledger if isinstance(ledger, Ledger) else None
        self._path = ledger.path if isinstance(ledger, Ledger) else Path(ledger)
        self._owned = not isinstance(ledger, Ledger)
        self._lock = threading.Lock()
        self.cfg = cfg
        self.now = now
        self.alert_stats = alert_stats

    def ledger(self) -> Ledger:
        with self._lock:
            if self._ledger is None:
                if not self._path.exists():
                    raise LedgerError(f"no ledger at {self._path}")
                self._ledger = Ledger(self._path)
            return self._ledger

    def close(self) -> None:
        with self._lock:
            if self._owned and self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def state(self) -> LedgerState:
        return read_state(self.ledger(), self.cfg, self.now())

    def collect(self) -> Iterator[Metric]:
        st = self.state()
        cfg = self.cfg

        def gauge(name: str, doc: str, value: float | None = None, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"rwabot_{name}", doc, value=value, labels=labels or None)

        info = gauge(
            "info",
            "the bot's name, mode, quote currency and clock (always 1)",
            labels=("name", "mode", "quote", "clock"),
        )
        info.add_metric([cfg.bot.name, cfg.bot.mode, cfg.bot.quote, cfg.clock.kind], 1.0)
        yield info
        yield gauge("healthy", "1 when /healthz is ok (bot/ops.py health rules), else 0", float(st.ok))
        failing = gauge(
            "venue_failing", "1 for a configured venue failing since the last done cycle", labels=("venue",)
        )
        for v in cfg.venues:
            failing.add_metric([v], float(v in st.failing_venues))
        yield failing

        snap = st.snapshot
        if snap is not None:
            yield gauge("nav", "NAV at the last snapshot, in the quote currency", snap.nav)
            yield gauge("cash", "quote cash at the venues at the last snapshot", snap.cash)
            yield gauge(
                "transit", "quote cash in transfers sent and not credited, at the last snapshot", snap.transit or 0.0
            )
            per = gauge("venue_cash", "quote cash at each venue at the last snapshot", labels=("venue",))
            for v, c in sorted(snap.cash_by_venue.items()):
                per.add_metric([v], c)
            yield per
            yield gauge(
                "snapshot_timestamp_seconds", "time of the last snapshot (Unix seconds)", _t(snap.time).timestamp()
            )  # type: ignore[union-attr]
        if st.mark is not None:
            yield gauge("mark_nav", "equity at the last mark (every monitor tick)", st.mark.nav)
            yield gauge("mark_timestamp_seconds", "time of the last mark (Unix seconds)", _t(st.mark.time).timestamp())  # type: ignore[union-attr]
        sigma = st.sigma_p_annual
        if sigma is not None:
            yield gauge(
                "sigma_p_annual", "forecast portfolio volatility, annualised (last mark, else last cycle)", sigma
            )
        if st.data_age_s is not None:
            yield gauge(
                "data_age_seconds",
                "now minus the as-of time of the freshest price (last mark, else last snapshot)",
                st.data_age_s,
            )

        w = gauge("weight", "weight held at the last snapshot (position x price / NAV)", labels=("asset", "venue"))
        tw = gauge("target_weight", "target weight of the last finished cycle", labels=("asset", "venue"))
        rc = gauge(
            "risk_contribution", "target's share of portfolio risk, last finished cycle", labels=("asset", "venue")
        )
        up = gauge(
            "weight_upper",
            "upper bound of the asset's weight (liquidity cap), last finished cycle",
            labels=("asset", "venue"),
        )
        for row in st.weights(cfg):
            lab = [row["asset"], row["venue"] or ""]
            for fam, key in ((w, "weight"), (tw, "target"), (rc, "risk_contribution"), (up, "upper")):
                if row[key] is not None:
                    fam.add_metric(lab, row[key])
        yield from (w, tw, rc, up)
        disp = gauge(
            "rc_dispersion",
            "risk-contribution dispersion of the last finished cycle: held free/bound/all "
            "assets at the close, the optimizer's target, the traded target",
            labels=("set",),
        )
        for k, v in st.rc_dispersion().items():
            if v is not None:
                disp.add_metric([k], v)
        yield disp

        cost = gauge("cost", "costs to date by kind, quote currency (a gauge: slippage is signed)", labels=("kind",))
        for k in COST_KINDS:
            cost.add_metric([k], st.costs.get(k, 0.0))
        yield cost
        yield CounterMetricFamily("rwabot_traded", "notional traded to date, quote currency", st.costs["traded"])
        yield CounterMetricFamily(
            "rwabot_transferred", "quote cash moved between venues to date", st.costs["transferred"]
        )

        orders = gauge("orders", "orders (legs) in the ledger by venue and status", labels=("venue", "status"))
        for (v, s), n in sorted(st.orders.items()):
            orders.add_metric([v, s], n)
        yield orders
        yield gauge("orders_in_flight", "legs sending or open at a venue", len(st.in_flight))
        fills = CounterMetricFamily("rwabot_fills", "fills booked, by venue", labels=("venue",))
        for v, n in sorted(st.fills.items()):
            fills.add_metric([v], n)
        yield fills
        errs = CounterMetricFamily(
            "rwabot_venue_errors", "venue error events by venue and kind", labels=("venue", "kind")
        )
        for (v, k), n in sorted(st.venue_errors.items()):
            errs.add_metric([v, k], n)
        yield errs
        evs = CounterMetricFamily("rwabot_risk_events", "risk events by kind and severity", labels=("kind", "severity"))
        for (k, sev), n in sorted(st.risk_events.items()):
            evs.add_metric([k, sev], n)
        yield evs
        yield gauge("transfers_open", "transfers sending or in transit", len(st.transfers_open))

        cyc = gauge("cycles", "cycles in the ledger by status", labels=("status",))
        for s, n in sorted(st.cycles.items()):
            cyc.add_metric([s], n)
        yield cyc
        if st.last_finished is not None:
            yield gauge(
                "last_cycle_age_seconds", "now minus the scheduled time of the last finished cycle", st.last_cycle_age_s
            )
            yield gauge(
                "last_cycle_timestamp_seconds",
                "scheduled time of the last finished cycle (Unix seconds)",
                _t(st.last_finished.scheduled_for).timestamp(),
            )  # type: ignore[union-attr]
            yield gauge(
                "last_cycle_failed",
                "1 when the last finished cycle failed (bot.outcome.cycle_failure)",
                float(st.cycle_failure is not None),
            )
            dur = st.cycle_duration_s(cfg)
            if dur is not None:
                yield gauge(
                    "last_cycle_duration_seconds", "wall time of the last finished cycle (real clock only)", dur
                )

        ks = gauge("kill_switch_state", "1 for the kill switch's current state, 0 for the others", labels=("state",))
        for s in KILL_SWITCH_STATES:
            ks.add_metric([s], float(st.kill_switch == s))
        yield ks
        yield gauge("kill_switch_tripped", "1 when the kill switch is not active", float(st.kill_switch != "active"))
        yield from self._alerts()

    def _alerts(self) -> Iterator[Metric]:
        if self.alert_stats is None:
            return
        try:
            stats = dict(self.alert_stats())
        except Exception:  # the daemon's counters must not break a scrape of the ledger
            log.warning("alert_stats failed; scraped without the alert counters", exc_info=True)
            return
        for name, value in sorted(stats.items()):
            metric = f"rwabot_alerts_{_metric_name(str(name))}"
            if isinstance(value, Mapping):
                fam = CounterMetricFamily(metric, f"alerts: {name}", labels=("key",))
                for k, v in sorted(value.items()):
                    fam.add_metric([str(k)], float(v))
            else:
                fam = CounterMetricFamily(metric, f"alerts: {name}", value=float(value))
            yield fam


# -- the HTTP server -------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class OpsServer:
    """``/metrics`` (Prometheus text format), ``/healthz`` (200 or 503, JSON ``{ok, reasons}``) and
    ``/status`` (``ledger_status``) on ``cfg.ops.host:cfg.ops.port`` (port 0: a free one), served from a
    daemon thread. A failure to read the ledger answers 500 with the reason; the server goes on."""

    def __init__(
        self,
        ledger_path: str | Path,
        cfg: Config,
        now: Callable[[], datetime],
        alert_stats: AlertStats | None = None,
    ) -> None:
        self.ledger_path = Path(ledger_path)
        self.cfg = cfg
        self.now = now
        self.collector = LedgerCollector(self.ledger_path, cfg, now, alert_stats)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)  # type: ignore[arg-type]
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.cfg.ops.host

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the ops server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._httpd is not None:
            return
        port = self.cfg.ops.port
        if port is None:
            raise ValueError("ops.port is not set: the ops endpoint is off")
        cls = _Server6 if ":" in self.host else _Server
        self._httpd = cls((self.host, port), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rwabot-ops", daemon=True)
        self._thread.start()
        log.info("ops endpoint on %s (/metrics, /healthz, /status)", self.url)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.collector.close()

    # what each path answers: (status, content type, body)
    def metrics(self, accept: str) -> tuple[int, str, bytes]:
        encoder, ctype = choose_encoder(accept)
        return 200, ctype, encoder(self.registry)

    def healthz(self) -> tuple[int, str, bytes]:
        st = self.collector.state()
        body = {"ok": st.ok, "reasons": st.reasons, "now": _iso(st.now)}
        return (200 if st.ok else 503), "application/json", json.dumps(body).encode()

    def status(self) -> tuple[int, str, bytes]:
        doc = status_doc(self.collector.state(), self.cfg, self.ledger_path)
        return 200, "application/json", json.dumps(doc, indent=2).encode()


def _handler(ops: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rwabot-ops"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = urlsplit(self.path).path
            try:
                if path == "/metrics":
                    code, ctype, body = ops.metrics(self.headers.get("Accept", ""))
                elif path == "/healthz":
                    code, ctype, body = ops.healthz()
                elif path == "/status":
                    code, ctype, body = ops.status()
                else:
                    code, ctype, body = 404, "text/plain; charset=utf-8", b"not found: /metrics, /healthz, /status\n"
            except Exception as exc:  # any failure to read the ledger: a 500, and the server serves on
                log.warning("ops %s failed: %s", path, exc, exc_info=True)
                code, ctype = 500, "text/plain; charset=utf-8"
                body = f"error reading the ledger {ops.ledger_path}: {one_line(str(exc))}\n".encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            log.debug("ops %s: " + format, self.address_string(), *args)

    return Handler
