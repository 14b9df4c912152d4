"""The fast backtest: the cycle's stages (bot/stages.py) on arrays, paper venues filling in process.

The daemon's backtest (bot/backtest.py) runs the Engine under the scheduler: every hour it reads bars
from the data source, refits the forecaster on the whole window, asks each paper venue (its own SQLite
book) for balances and quotes, runs the risk monitor every five minutes and writes each row through the
ORM — about 17 ms an hour for 8 assets. Here the same stage functions run on arrays held in memory:

* **observe**: the bars of the whole run are read once; the book (cash per venue, positions, cash in
  transit) is a pair of arrays that the fills move;
* **forecast**: a forecaster that offers ``stream`` (``bot.components.ForecastStream``, the EWMA's exact
  sliding-window update) is updated by one return per hour; any other is refitted on the window;
* **bounds → target → decide → plan**: ``bounds_stage``, ``target_stage`` (venue budgets and funding
  included), ``decide_stage`` and ``plan_orders``, exactly as the daemon calls them; the optimizer is
  warm-started from the holdings as it is there;
* **execute**: transfers first (allow-list and limits checked, the fee charged, the cash in transit
  until ``transfer_minutes`` later), then sells, then buys sized to the cash left, each checked against
  the kill switch and the pre-trade limits (``[limits]``) as the daemon checks it, and filled by the
  paper venue's own fill model (``bot.fills``) on the bar's close;
* **guard**: the kill switch's drawdown, daily-loss and σ-ceiling rules on each cycle's mark; a trip
  restricts the plan for the rest of the run (``restrict_stage``) and is kept in the ledger;
* **book**: rows collect in memory and are written with ``Ledger.bulk_insert`` every ``flush_every``
  cycles, into the same tables ``rwabot status`` reads. ``research=True`` writes no rows at all and keeps
  only the series the summary needs.

``run_fast_backtest`` runs the whole loop compiled instead (``FastBacktest.run_compiled``: the erc optimizer
offers it, plugins/optimizers/fast_loop.py) when the configuration is one the kernel implements exactly
(ewma, erc, full or band, one paper venue: see ``fast_loop.decline_reason``), to the same results and the
same rows; any other runs the stages above, and the reason is logged at INFO. ``step()`` is always the stages.

What differs from the daemon, by design: venues must be ``paper`` (the chain and exchange venues need the
daemon); there is no five-minute risk monitor (no vol-triggered cycles: the trigger needs intra-hour
prices); a venue never fails; events are counted, not stored one by one (the summary's ``risk_events``
counts the kinds the stages produce: liquidity_cap, transfer_planned, transfer_refused, order_skipped,
cash_shortfall).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from bot.backtest import BacktestSummary, RunSeries, summary_of
from bot.components import ComponentContext
from bot.config import Config
from bot.cycle import held_dispersion, resolve_components
from bot.domain import MarketInfo, Transfer, TransferStatus
from bot.errors import ConfigError, DataError
from bot.fills import impact, paper_fill
from bot.funding import transfer_refusal
from bot.guards import Exposure, order_denial
from bot.guards import active as limits_active
from bot.killswitch import ACTIVE, Trip, allows, equity_trip, sigma_trip, trip_records
from bot.ledger import CycleRow, FillRow, Ledger, OrderRow, SnapshotRow, TargetRow, TransferRow
from bot.plugins import Registry, make_plugin_manager
from bot.riskmath import annualise_sigma, periods_per_year, portfolio_sigma
from bot.stages import (
    FundingInputs,
    Holdings,
    Layout,
    PlanInputs,
    bounds_stage,
    decide_stage,
    floor_to_step,
    forecast_stage,
    plan_orders,
    restrict_stage,
    takes_groups,
    target_stage,
    with_expected_returns,
)

HOUR = timedelta(hours=1)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimVenue:
    """A paper venue's parameters (its validated options), as the fill model needs them."""

    name: str
    initial_cash: float
    fee_bps: float
    half_spread: np.ndarray  # per asset of the run (0 for assets not on this venue)
    impact_coef: float
    impact_exponent: float
    vol_lookback: int
    qty_step: float
    min_notional: float
    transfer_minutes: float
    transfer_fee: float
    transfer_fee_bps: float

    def market(self, asset: str) -> MarketInfo:
        return MarketInfo(asset, self.qty_step, self.qty_step, self.min_notional, 1e-8, self.fee_bps / 1e4)


@dataclass
class _Transit:
    transfer: Transfer
    arrive: datetime
    fee: float
    row: dict[str, Any] | None


CYCLE_COLUMNS = ("id", "key", "trigger", "scheduled_for", "started_at", "finished_at", "status", "nav_before",
                 "nav_after", "sigma_p_annual", "rc_dispersion_target", "rc_dispersion_traded", "rc_dispersion_held",
                 "rc_dispersion_held_bound", "rc_dispersion_held_all", "forecaster", "optimizer", "policy",
                 "decision", "message")  # fmt: skip
TARGET_COLUMNS = ("cycle_id", "asset", "venue", "price", "upper", "current_weight", "target_weight",
                  "decided_weight", "risk_contribution", "capped", "bound")  # fmt: skip
ORDER_COLUMNS = ("id", "client_id", "cycle_id", "leg", "venue", "asset", "side", "qty", "decision_price", "status",
                 "filled_qty", "venue_order_id", "message", "created_at", "updated_at")  # fmt: skip
FILL_COLUMNS = ("fill_id", "venue", "client_id", "asset", "side", "qty", "price", "fee", "slippage", "gas", "time")
SNAPSHOT_COLUMNS = ("cycle_id", "time", "nav", "cash", "cash_by_venue", "positions", "prices", "transit")
TRANSFER_COLUMNS = ("id", "client_id", "cycle_id", "leg", "source", "destination", "asset", "network", "amount",
                    "address", "tag", "status", "external_id", "fee", "gas", "message", "created_at", "updated_at",
                    "sent_at", "arrived_at")  # fmt: skip


class _Rows:
    """Rows waiting for the next flush, as tuples in each table's column order, parents first. A transfer
    still in transit waits (its row changes when it arrives) and is written once it has arrived."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.cycle = ledger.bulk_table(CycleRow, CYCLE_COLUMNS)
        self.target = ledger.bulk_table(TargetRow, TARGET_COLUMNS)
        self.order = ledger.bulk_table(OrderRow, ORDER_COLUMNS)
        self.fill = ledger.bulk_table(FillRow, FILL_COLUMNS)
        self.snapshot = ledger.bulk_table(SnapshotRow, SNAPSHOT_COLUMNS)
        self.transfer = ledger.bulk_table(TransferRow, TRANSFER_COLUMNS)
        self.cycles: list[tuple[Any, ...]] = []
        self.targets: list[tuple[Any, ...]] = []
        self.orders: list[tuple[Any, ...]] = []
        self.fills: list[tuple[Any, ...]] = []
        self.snapshots: list[tuple[Any, ...]] = []
        self.transfers: list[dict[str, Any]] = []

    def time(self, t: datetime) -> Any:
        return self.cycle.bind("scheduled_for", t)

    def json(self, value: Any) -> Any:
        return self.snapshot.bind("positions", value)

    def flush(self, final: bool = False) -> None:
        done = [r for r in self.transfers if final or r["status"] != TransferStatus.PENDING.value]
        self.transfers = [r for r in self.transfers if not (final or r["status"] != TransferStatus.PENDING.value)]
        tr = self.transfer
        moved = [tuple(tr.bind(c, r[c]) for c in TRANSFER_COLUMNS) for r in done]
        self.ledger.bulk_write([(self.cycle, self.cycles), (self.target, self.targets), (self.transfer, moved),
                                (self.order, self.orders), (self.fill, self.fills),
                                (self.snapshot, self.snapshots)])  # fmt: skip
        for batch in (self.cycles, self.targets, self.orders, self.fills, self.snapshots):
            batch.clear()


def _naive(t: datetime) -> datetime:
    """The ledger's columns take aware UTC times (the ORM path normalises them the same way)."""
    return t.astimezone(UTC)


def _rolling_std(r: np.ndarray, k: int) -> np.ndarray:
    """std (ddof=1) of the k returns ending at each row (rows before the k-th: of what there is)."""
    t = r.shape[0]
    c1 = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(r, axis=0)])
    c2 = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(r * r, axis=0)])
    end = np.arange(1, t + 1)
    start = np.maximum(end - k, 0)
    m = (end - start)[:, None].astype(float)
    s1 = c1[end] - c1[start]
    s2 = c2[end] - c2[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s1 * s1 / m) / np.maximum(m - 1, 1)
    out = np.sqrt(np.clip(var, 0.0, None))
    out[m[:, 0] < 2] = 0.0
    return out


@dataclass(frozen=True)
class Step:
    """What one cycle of a ``FastBacktest`` did: enough for a caller that steers it (the RL environment,
    plugins/policies/rl_env.py) to compute its reward and its next observation."""

    k: int
    time: datetime
    nav_before: float
    nav_after: float
    costs: float  # fees + slippage of the cycle's fills and the fees of its transfers
    traded: float  # notional filled
    w_before: np.ndarray
    w_after: np.ndarray
    forecast: Any  # bot.domain.Forecast
    bounds: Any  # bot.stages.Bounds
    targeted: Any  # bot.stages.Targeted
    decided: Any  # bot.stages.Decided
    rc_dispersion_held: float | None


class FastBacktest:
    """The fast backtest as an object: ``step()`` runs one cycle, ``summary()`` reports the run.

    ``run_fast_backtest`` drives it to the end; a caller that must act between cycles (an RL agent
    choosing each hour's trade, a stress scenario switching a venue off) steps it itself, and may pass
    ``policy`` (anything with the Policy protocol's ``decide``) instead of the configured one.
    """

    def __init__(
        self,
        cfg: Config,
        hours: int,
        *,
        start: datetime | None = None,
        pm: pluggy.PluginManager | None = None,
        research: bool = False,
        flush_every: int = 2000,
        state_dir: Path | None = None,
        policy: Any = None,
    ) -> None:
        from bot.clock import SimulatedClock
        from bot.cycle import make_clock

        hours = hours + 1  # both ends, as the daemon's backtest runs them
        begin = start or cfg.clock.start
        if begin is None:
            begin = make_clock(cfg.with_overrides(clock={"kind": "simulated"})).now()  # type: ignore[union-attr]
        first = begin.astimezone(UTC)
        if first.minute or first.second or first.microsecond:  # cycles on whole hours (daily bars: their closes)
            first = first.replace(minute=0, second=0, microsecond=0) + HOUR
        self.cfg = cfg
        self.first = first
        self.clock = SimulatedClock(first, 0.0)
        registry = Registry(pm if pm is not None else make_plugin_manager())
        self.assets = assets = tuple(cfg.asset_names)
        self.n = n = len(assets)
        self.counted: dict[str, int] = {}
        sd = state_dir or Path(str(Path(cfg.bot.ledger).with_suffix("")) + ".state")
        ctx = ComponentContext(self.clock, sd, assets, self._emit)
        resolved = resolve_components(cfg, registry, ctx)
        data = resolved.sections["data"].build(ctx)
        unknown = [a for a in assets if a not in set(data.assets())]
        if unknown:
            raise ConfigError(f"assets {unknown}: data source {cfg.data.plugin!r} does not know them")
        self.data = data
        self.forecaster = resolved.sections["forecaster"].build(ctx)
        self.optimizer = resolved.sections["optimizer"].build(ctx)
        self.policy = policy if policy is not None else resolved.sections["policy"].build(ctx)
        self.returns_model = resolved.sections["returns"].build(ctx) if "returns" in resolved.sections else None
        self.names = {k: resolved.sections[k].registration.name for k in ("forecaster", "optimizer", "policy")}
        if policy is not None:
            self.names["policy"] = str(getattr(policy, "name", "custom"))
        self.venue_of = venue_of = {a: s.venue for a, s in cfg.assets.items()}
        self.venues: dict[str, SimVenue] = {}
        for vname, res in resolved.venues.items():
            if res.registration.name != "paper":
                raise ConfigError(
                    f"venues.{vname}: the fast backtest simulates paper venues only, and this one is "
                    f"{res.registration.name!r}; run the daemon's backtest (without --fast) for it"
                )
            o: Any = res.options
            hs = np.zeros(n)
            for i, a in enumerate(assets):
                if venue_of[a] == vname:
                    per = o.half_spread_bps
                    hs[i] = (per[a] if a in per else per.get(data.asset_kind(a), 0.0)) / 1e4
            self.venues[vname] = SimVenue(vname, float(o.initial_cash), float(o.fee_bps), hs, float(o.impact_coef),
                                          float(o.impact_exponent), int(o.vol_lookback_hours), float(o.qty_step),
                                          float(o.min_notional), float(o.transfer_minutes), float(o.transfer_fee),
                                          float(o.transfer_fee_bps))  # fmt: skip
        self.vnames = tuple(cfg.venues)
        self.layout = Layout(assets, venue_of, self.vnames)
        self.caps = np.array([cfg.assets[a].upper for a in assets])
        self.floors = np.array([cfg.assets[a].lower for a in assets])
        self.groups_ok = takes_groups(self.optimizer)
        self.markets = {a: self.venues[venue_of[a]].market(a) for a in assets}
        self.asset_index = {a: i for i, a in enumerate(assets)}

        # -- observe, once: the whole run's bars ------------------------------------------------------------
        # one cycle per bar: hourly, or the source's own bar (a daily CSV: history_hours and the look-backs
        # then count bars, as the source counts them)
        self.step_length: timedelta = getattr(data, "bar", None) or HOUR
        self.ppy = periods_per_year(self.step_length)
        self.cycles = hours = (hours - 1) * 3600 // int(self.step_length.total_seconds()) + 1
        self.hist = hist = cfg.risk.history_hours
        last = first + (hours - 1) * self.step_length
        bars = data.bars(assets, last, hist + hours)
        if len(bars.times) != hist + hours or bars.times[-1] != last:
            raise DataError(f"data {cfg.data.plugin}: {len(bars.times)} bars up to {bars.times[-1]}, expected "
                            f"{hist + hours} up to {last}")  # fmt: skip
        self.close = np.ascontiguousarray(bars.close, dtype=float)
        self.volume = np.ascontiguousarray(bars.volume, dtype=float)
        if not (np.isfinite(self.close).all() and (self.close > 0).all()):
            raise DataError(f"data {cfg.data.plugin}: NaN or non-positive prices in the run's bars")
        self.logret = np.diff(np.log(self.close), axis=0)  # logret[k] = log(close[k+1] / close[k])
        self.traded_value = self.close * self.volume
        self.sig = {k: _rolling_std(self.logret, k) for k in {v.vol_lookback for v in self.venues.values()}}

        # -- the book ----------------------------------------------------------------------------------------
        self.cash = {v: self.venues[v].initial_cash for v in self.vnames}
        self.pos = np.zeros(n)
        self.transit: list[_Transit] = []
        self.sent: deque[tuple[datetime, str, float]] = deque()  # (time, source, amount): the daily caps
        self.ledger = None if research else Ledger(cfg.bot.ledger)
        self.rows = _Rows(self.ledger) if self.ledger is not None else None
        self._load: Any = None  # the ledger's bulk load: the big tables' indexes are built at close_ledger
        if self.ledger is not None:
            self._load = self.ledger.bulk_load([CycleRow, TargetRow, OrderRow, FillRow, SnapshotRow])
            self._load.__enter__()
        self.flush_every = flush_every
        # per cycle, preallocated: memory does not grow with the number of fills
        self.nav_series = np.zeros(hours)
        self.snap_times: list[datetime] = [first + k * self.step_length for k in range(hours)]
        self.cycle_notional = np.zeros(hours)
        self.cycle_cost = np.zeros(hours)
        self.totals = {"fees": 0.0, "slippage": 0.0, "gas": 0.0, "traded": 0.0, "transfer_fees": 0.0,
                       "transfer_gas": 0.0, "transferred": 0.0, "product_fees": 0.0}  # fmt: skip
        self.disp: dict[str, list[float]] = {k: [] for k in ("target", "traded", "held", "held_bound", "held_all")}
        self.bounds_count: dict[str, dict[str, float]] = {}
        self.cash_share: list[float] = []
        self.transit_share: list[float] = []
        self.steady_cycles = 0
        self.buildup_end = first + timedelta(hours=24)  # bot.backtest.BUILDUP_HOURS
        self.n_transfers = 0
        self.venue_scale: dict[str, float] = {}
        self.stream: Any = None
        self.streamable = callable(getattr(self.forecaster, "stream", None))
        self.nav_before_first = float("nan")
        self.fee_of = {v: self.venues[v].transfer_fee for v in self.vnames}
        self.order_id = self.transfer_id = 0
        self.k = 0
        self.held = np.zeros(n, bool)  # assets not traded this cycle (a stress scenario may set it)
        self.engine = "python"  # or "compiled": run_compiled ran every cycle (plugins/optimizers/fast_loop.py)
        self.engine_note = ""  # why the compiled loop declined
        self.compiled: Any = None  # its per-cycle arrays (plugins.optimizers.fast_loop.Compiled)
        # -- the kill switch ([guard]): the equity and σ rules, judged at each cycle's marks -----------------
        g = cfg.guard
        self.guarded = any(x is not None for x in (g.max_drawdown, g.max_daily_loss, g.sigma_ceiling_annual))
        self.state = ACTIVE  # a backtest is never resumed: a trip holds to the end of the run
        self.tripped: dict[str, Any] | None = None  # BacktestSummary.kill_switch
        self.high: float | None = None  # the high-water mark of the marks so far
        self.day_open: tuple[Any, float] | None = None  # (UTC day, its first mark)
        self.limited = limits_active(cfg.limits)  # the pre-trade limits ([limits]), checked on every order
        self.fills_24h: deque[tuple[datetime, float]] = deque()  # (time, notional): the daily turnover limit

    def run_compiled(self) -> str | None:
        """Every cycle at once in compiled code (plugins/optimizers/fast_loop.py), when the configuration is one the
        kernel implements exactly; returns why it did not (None: the run is done, ``summary()`` reports it).
        A run it declines, up front or at the cycle that needs Python, is left untouched for ``step()``."""
        why: str | None
        offer = getattr(self.optimizer, "compiled_loop", None)  # the erc plugin's (plugins/optimizers/fast_loop.py)
        try:
            fast_kernel = offer() if callable(offer) else None
        except Exception as exc:  # noqa: BLE001 - numba missing or broken: the Python stages answer
            fast_kernel, why = None, f"the compiled loop is unavailable ({type(exc).__name__}: {exc})"
        else:
            why = None if fast_kernel is not None else f"optimizer {self.names['optimizer']!r} offers no compiled loop"
        if fast_kernel is not None:
            why = fast_kernel.decline_reason(self)
            if why is None:
                try:
                    res = fast_kernel.run_compiled(self, record=self.rows is not None)
                except (fast_kernel.NumbaError, ArithmeticError) as exc:  # a bug of the kernel: Python answers
                    res = f"the compiled loop failed ({type(exc).__name__}: {exc})"
                if isinstance(res, str):
                    why = res
                else:
                    self._take_compiled(res)
                    if self.rows is not None:
                        self._book_compiled(res)
        self.engine_note = why or ""
        return why

    def _reasons(self, out: np.ndarray) -> list[str]:
        """Each cycle's ``Decision.reason``, as the configured policy words it (plugins/policies/basic.py)."""
        fk = self.optimizer.compiled_loop()

        drift, traded = out[:, fk.DRIFT].tolist(), (out[:, fk.TRADED] > 0).tolist()
        c = getattr(self.policy, "cfg", None)
        if c is None:  # full
            reasons = [f"full rebalance (max drift {d:.4f})" for d in drift]
        else:
            edge = ", moved to band edge" if c.to == "edge" else ""
            reasons = [f"band breached (max {c.measure} drift {d:.4f}){edge}" if x
                       else f"inside band (max {c.measure} drift {d:.4f} <= {c.band})"
                       for d, x in zip(drift, traded)]  # fmt: skip
        if self.tripped is not None:  # bot.stages.restrict_stage's words, from the trip's cycle on
            trip = self.compiled.trip
            k0, state = int(trip[fk.T_CYCLE]), self.state
            reasons[k0:] = [f"kill switch {state}: {r}" for r in reasons[k0:]]
        return reasons

    def _book_compiled(self, res: Any) -> None:
        """The rows ``step()`` would have written for the compiled run, flushed every ``flush_every`` cycles."""
        from itertools import repeat

        fk = self.optimizer.compiled_loop()
        from bot.stages import client_order_id

        rows, out, rec, assets = self.rows, res.out, res.rec, self.assets
        assert rows is not None and rec is not None
        (vname,) = self.vnames
        venues = [self.venue_of[a] for a in assets]
        fc, op, po = self.names["forecaster"], self.names["optimizer"], self.names["policy"]

        def opt(x: float) -> float | None:
            return None if x != x else x

        sigma = (out[:, fk.SIGMA_DECIDED] * np.sqrt(self.ppy)).tolist()
        reasons = self._reasons(out)
        cols = {c: out[:, c].tolist() for c in (fk.NAV_BEFORE, fk.NAV_AFTER, fk.D_TARGET, fk.D_TRADED, fk.D_HELD,
                                                fk.D_HELD_BOUND, fk.D_HELD_ALL, fk.CASH)}  # fmt: skip
        oi, of = rec["orders_i"][: res.n_orders], rec["orders_f"][: res.n_orders]
        starts = np.searchsorted(oi[:, fk.O_CYCLE], np.arange(self.cycles + 1)).tolist()
        oi_l, of_l = oi.tolist(), of.tolist()
        bound_names = [fk.BOUND_NAMES[c] for c in range(len(fk.BOUND_NAMES))]
        lacks = "not sent: venue lacks cash at execution"
        # the JSON columns as json.dumps writes them (the column type's serializer), keys escaped once
        keys = [json.dumps(a) + ": " for a in assets]
        probe = {a: 0.5 for a in assets}
        fast_json = rows.json(probe) == "{" + ", ".join(f"{k}{0.5!r}" for k in keys) + "}"

        template = "{" + ", ".join(k.replace("%", "%%") + "%r" for k in keys) + "}"

        def floats(values: list[float], finite: bool) -> Any:
            if fast_json and finite:
                return template % tuple(values)
            return rows.json(dict(zip(assets, values)))

        chunk: dict[str, list[Any]] = {}
        names = {"px": self.close[self.hist : self.hist + self.cycles], "up": rec["upper"], "w0": rec["w0"],
                 "tw": res.target_w, "dec": rec["decided"], "frac": rec["frac"], "capped": rec["capped"].astype(int),
                 "labels": res.labels, "cash": rec["cash"], "pos": rec["pos"],
                 "pos_ok": np.isfinite(rec["pos"]).all(axis=1)}  # fmt: skip
        base = at = 0
        for k in range(self.cycles):
            if k == at:  # arrays to lists a flush's worth of cycles at a time (not a row at a time)
                base, at = k, min(k + self.flush_every, self.cycles)
                chunk = {name: a[base:at].tolist() for name, a in names.items()}
            c = k - base
            now = self.first + k * self.step_length
            cid, key, ts = k + 1, now.strftime("%Y-%m-%dT%H:00Z"), rows.time(now)
            if isinstance(ts, datetime):  # the text sqlite3's adapter stores, made once per cycle, not per row
                ts = ts.isoformat(" ")
            rows.cycles.append((cid, key, "scheduled", ts, ts, ts, "done", cols[fk.NAV_BEFORE][k],
                                cols[fk.NAV_AFTER][k], sigma[k], opt(cols[fk.D_TARGET][k]), opt(cols[fk.D_TRADED][k]),
                                opt(cols[fk.D_HELD][k]), opt(cols[fk.D_HELD_BOUND][k]), opt(cols[fk.D_HELD_ALL][k]),
                                fc, op, po, reasons[k], "fast backtest"))  # fmt: skip
            px = chunk["px"][c]
            bound = [bound_names[x] for x in chunk["labels"][c]]
            rows.targets.extend(zip(repeat(cid), assets, venues, px, chunk["up"][c], chunk["w0"][c], chunk["tw"][c],
                                    chunk["dec"][c], chunk["frac"][c], chunk["capped"][c], bound))  # fmt: skip
            for (_, i, side, leg), (qty, filled, price, fee, slip, decision) in zip(
                oi_l[starts[k] : starts[k + 1]], of_l[starts[k] : starts[k + 1]]
            ):
                a = assets[i]
                client = client_order_id(key, a)
                s = "buy" if side > 0 else "sell"
                if filled > 0:
                    rows.fills.append((f"{client}-1", vname, client, a, s, filled, price, fee, slip, 0.0, ts))
                self.order_id += 1
                rows.orders.append((self.order_id, client, cid, leg, vname, a, s, filled or qty, decision,
                                    "filled" if filled > 0 else "canceled", filled, f"paper-{client}",
                                    "" if filled > 0 else lacks, ts, ts))  # fmt: skip
            cash = chunk["cash"][c]
            rows.snapshots.append((cid, ts, cols[fk.NAV_AFTER][k], cols[fk.CASH][k], rows.json({vname: cash[0]}),
                                   floats(chunk["pos"][c], chunk["pos_ok"][c]), floats(px, True), 0.0))  # fmt: skip
            if len(rows.cycles) >= self.flush_every:
                rows.flush()

    def _take_compiled(self, res: Any) -> None:
        """The compiled run's results, into the fields ``summary()`` reads, as ``step()`` would have left them."""
        fk = self.optimizer.compiled_loop()

        out, m = res.out, self.cycles
        self.nav_before_first = float(out[0, fk.NAV_BEFORE])
        self.nav_series[:] = out[:, fk.NAV_AFTER]
        self.cycle_notional[:] = out[:, fk.NOTIONAL]
        self.cycle_cost[:] = out[:, fk.FILL_COST]
        filled = bool(res.totals[2] > 0)  # the Python loop's sums turn numpy scalars with the first fill
        for name, x in zip(("fees", "slippage", "traded"), res.totals):
            self.totals[name] += x if filled else float(x)
        steady = np.array([t >= self.buildup_end for t in self.snap_times[:m]], bool)
        if not steady.any():
            steady[-1] = True
        self.steady_cycles += int(steady.sum())
        for key_, col in (("target", fk.D_TARGET), ("traded", fk.D_TRADED), ("held", fk.D_HELD),
                          ("held_bound", fk.D_HELD_BOUND), ("held_all", fk.D_HELD_ALL)):  # fmt: skip
            vals = out[steady, col]
            self.disp[key_].extend(vals[~np.isnan(vals)].tolist())
        lab = res.labels[steady]
        first: list[tuple[int, str, str, int]] = []  # (first seen, asset, label, count)
        for i, a in enumerate(self.assets):
            for name in ("cap", "floor"):
                hit = np.isin(lab[:, i], [c for c, x in fk.BOOK_NAMES.items() if x == name])
                if hit.any():
                    first.append((int(np.argmax(hit)) * self.n + i, a, name, int(hit.sum())))
        for _, a, name, c in sorted(first, key=lambda x: (min(f[0] for f in first if f[1] == x[1]), x[0])):
            per = self.bounds_count.setdefault(a, {})
            per[name] = per.get(name, 0) + c
        nav_after, cash = out[steady, fk.NAV_AFTER], out[steady, fk.CASH]
        ok = nav_after > 0
        self.cash_share.extend((cash[ok] / nav_after[ok]).tolist())
        self.transit_share.extend([0.0] * int(ok.sum()))
        for e in np.argsort(res.counts[:, 1], kind="stable"):
            if res.counts[e, 0]:
                kind = ("liquidity_cap", "order_skipped", "cash_shortfall")[e]
                self.counted[kind] = self.counted.get(kind, 0) + int(res.counts[e, 0])
        trip = res.trip
        if trip is not None and trip[fk.T_CYCLE] >= 0:  # the kernel's trip, worded by the same rules
            k = int(trip[fk.T_CYCLE])
            g, nav, high = self.cfg.guard, float(trip[fk.T_NAV]), float(trip[fk.T_HIGH])
            why = (equity_trip(nav, None if high != high else high, float(trip[fk.T_DAY_OPEN]), g)
                   or sigma_trip(float(trip[fk.T_SIGMA]), g, "planning"))  # fmt: skip
            assert why is not None, "the compiled loop tripped on a rule bot.killswitch does not trip"
            now = self.first + k * self.step_length
            self._trip(now, now.strftime("%Y-%m-%dT%H:00Z"), nav, why)
        self.cash.update({v: (np.float64(c) if filled else c) for v, c in res.cash.items()})
        self.pos[:] = res.pos
        self.compiled = res
        self.engine = "compiled"
        self.k = m
        self.clock.advance_to(self.first + (m - 1) * self.step_length)

    def _emit(self, e: Any) -> None:
        self._count(e.kind)

    def _count(self, kind: str) -> None:
        self.counted[kind] = self.counted.get(kind, 0) + 1

    @property
    def done(self) -> bool:
        return self.k >= self.cycles

    def close_ledger(self) -> None:
        if self.ledger is not None:
            try:
                if self.rows is not None:
                    self.rows.flush(final=True)
            finally:
                if self._load is not None:
                    self._load.__exit__(None, None, None)
                    self._load = None
            self.ledger.close()
            self.ledger = None

    def _forecast(self, j: int) -> Any:
        window = self.logret[j - self.hist : j]
        return with_expected_returns(self._covariance(j, window), self.assets, window, self.returns_model)

    def _covariance(self, j: int, window: np.ndarray) -> Any:
        if self.stream is None and self.streamable:
            self.stream = self.forecaster.stream(self.assets, window)
            self.streamable = self.stream is not None
            if self.stream is None:
                return forecast_stage(self.forecaster, self.assets, window)
            forecast = self.stream.forecast()
        elif self.stream is not None:
            forecast = self.stream.update(self.logret[j - 1])
        else:
            return forecast_stage(self.forecaster, self.assets, window)
        forecast.validate()
        return forecast

    def step(self) -> Step:
        """One cycle: credit arrived transfers, observe, forecast, bounds, target, decide, plan, execute, book."""
        if self.done:
            raise ValueError("the backtest has run all its cycles")
        k, cfg, n = self.k, self.cfg, self.n
        risk, funding, assets, venue_of = cfg.risk, cfg.funding, self.assets, self.venue_of
        cash, pos, rows = self.cash, self.pos, self.rows
        now = self.first + k * self.step_length
        self.clock.advance_to(now)  # a plugin that reads the clock sees the cycle's hour
        j = self.hist + k  # the bar closing at ``now``
        # transfers whose delay has passed are credited before anything is read
        if self.transit:
            keep: list[_Transit] = []
            for tr in self.transit:
                if tr.arrive <= now:
                    cash[tr.transfer.destination] += tr.transfer.amount
                    if tr.row is not None:
                        tr.row["status"] = TransferStatus.ARRIVED.value
                        tr.row["arrived_at"] = _naive(tr.arrive)
                        tr.row["updated_at"] = _naive(tr.arrive)
                else:
                    keep.append(tr)
            self.transit = keep
        sent = self.sent
        while sent and sent[0][0] <= now - timedelta(hours=24):
            sent.popleft()
        mid = self.close[j]
        in_transit = float(sum(t.transfer.amount for t in self.transit))
        incoming: dict[str, float] = {}
        for t in self.transit:
            incoming[t.transfer.destination] = incoming.get(t.transfer.destination, 0.0) + t.transfer.amount
        held_names = frozenset(a for a, x in zip(assets, self.held) if x)
        h = Holdings(mid.copy(), pos.copy(), dict(cash), dict(cash), held=held_names, transit=in_transit,
                     incoming=incoming)  # fmt: skip
        nav = h.nav
        if nav <= 0:
            raise DataError(f"portfolio NAV is {nav:.2f} at {now.isoformat()}: nothing to allocate")
        if k == 0:
            self.nav_before_first = nav
        key = now.strftime("%Y-%m-%dT%H:00Z")
        ts = rows.time(now) if rows is not None else None  # the ledger's stored form of the cycle's time
        forecast = self._forecast(j)
        # -- bounds, target, decide, plan: the daemon's stages
        w0 = h.positions * h.prices / nav
        if self.guarded and self.state == ACTIVE:
            self._guard(now, key, nav, w0, forecast)
        lb = risk.liquidity_lookback_hours
        b = bounds_stage(risk, self.caps, self.floors, self.traded_value[j - lb + 1 : j + 1], nav, w0,
                         self.held.copy())  # fmt: skip
        inputs = FundingInputs(
            self.fee_of,
            {v: sum(a for _, s, a in sent if s == v) for v in self.vnames} if funding.routes else {},
            cfg.bot.quote,
        )
        t = target_stage(self.optimizer, self.groups_ok, self.layout, risk, funding, key, forecast, b, h,
                         self.venue_scale, inputs)  # fmt: skip
        self.venue_scale = t.venue_scale
        if t.infeasible:
            self._count("liquidity_cap")
        d = decide_stage(self.policy, w0, t, forecast, b.held)
        t, d = restrict_stage(self.state, w0, t, d, b.held)
        plan = None
        if d.decision.trade:
            plan = plan_orders(PlanInputs(key, assets, venue_of, h.prices, h.positions, t.spendable, nav, d.weights,
                                          self.markets, self.volume[j], risk.participation,
                                          min_trade_weight=risk.min_trade_weight, hold=held_names))  # fmt: skip
            for _ in plan.skips:
                self._count("order_skipped")
            for _ in plan.shortfalls:
                self._count("cash_shortfall")
        cid = k + 1
        costs = traded = fill_costs = 0.0
        # -- execute: transfers, then sells, then buys
        for leg, tr in enumerate(t.funding.transfers):
            self._count("transfer_planned")
            src = self.venues[tr.source]
            address = tr.address or f"paper:{tr.destination}"  # connectors.paper_network's addresses
            fee = src.transfer_fee + tr.amount * src.transfer_fee_bps / 1e4
            day = sum(a for _, s, a in sent if s == tr.source)
            why = transfer_refusal(funding, tr.client_id, tr.source, tr.destination, tr.asset, tr.amount, address, day)
            refused = bool(why) or cash[tr.source] < tr.amount + fee  # the paper network refuses what it lacks
            row = None
            if rows is not None:
                self.transfer_id += 1
                row = {"id": self.transfer_id, "client_id": tr.client_id, "cycle_id": cid, "leg": leg,
                       "source": tr.source, "destination": tr.destination, "asset": tr.asset,
                       "network": tr.network, "amount": tr.amount, "address": address, "tag": tr.tag,
                       "status": (TransferStatus.CANCELED if refused else TransferStatus.PENDING).value,
                       "external_id": f"paper-{tr.client_id}", "fee": 0.0 if refused else fee, "gas": 0.0,
                       "message": "refused" if refused else "", "created_at": _naive(now),
                       "updated_at": _naive(now), "sent_at": None if refused else _naive(now),
                       "arrived_at": None}  # fmt: skip
                rows.transfers.append(row)  # written once it has arrived (or at the end)
            if refused:
                self._count("transfer_refused")
                continue
            cash[tr.source] -= tr.amount + fee
            sent.append((now, tr.source, tr.amount))
            self.transit.append(_Transit(tr, now + timedelta(minutes=src.transfer_minutes), fee, row))
            self.n_transfers += 1
            self.totals["transfer_fees"] += fee
            self.totals["transferred"] += tr.amount
            costs += fee
        if plan is not None:
            for leg in plan.legs:
                o = leg.order
                i = self.asset_index[o.asset]
                v = self.venues[o.venue]
                ask, bid = mid[i] * (1 + v.half_spread[i]), mid[i] * (1 - v.half_spread[i])
                qty = o.qty
                status, filled, why, ext = "filled", qty, "", f"paper-{o.client_id}"
                if o.side == "buy":  # sized to the cash left after the sells, as the daemon does
                    unit = ask * (1 + v.fee_bps / 1e4) * 1.01
                    qty = min(qty, floor_to_step(max(cash[o.venue], 0.0) / unit, v.qty_step))
                    if qty < v.qty_step or qty * ask < v.min_notional:
                        qty = 0.0
                denied = self._denial(o, qty, ask if o.side == "buy" else bid, nav, now) if qty > 0 else None
                if denied is not None:  # never sent (Engine._execute): the switch cancels, a limit rejects
                    by_switch = denied.startswith("kill switch")
                    status, filled, ext = ("canceled" if by_switch else "rejected"), 0.0, None
                    why = f"not sent: {denied}"
                    if not by_switch:
                        self._count("order_denied")
                elif qty <= 0:
                    status, filled, why = "canceled", 0.0, "not sent: venue lacks cash at execution"
                    self._count("cash_shortfall")
                else:
                    frac = impact(v.impact_coef, float(self.sig[v.vol_lookback][j - 1, i]), qty,
                                  float(self.volume[j, i]), v.impact_exponent)  # fmt: skip
                    price, fee, slip = paper_fill(o.side, qty, bid, ask, frac, v.fee_bps, o.decision_price)
                    sign = 1.0 if o.side == "buy" else -1.0
                    cash[o.venue] -= sign * price * qty + fee
                    pos[i] += sign * qty
                    if pos[i] < 0.0:  # a sale of the whole position leaves 0, never -1e-18 (connectors/paper.py):
                        pos[i] = 0.0  # a long-only optimizer rightly refuses a negative weight
                    filled = qty
                    self.totals["fees"] += fee
                    self.totals["slippage"] += slip
                    self.totals["traded"] += price * qty
                    traded += price * qty
                    fill_costs += fee + slip
                    if self.limited:
                        self.fills_24h.append((now, price * qty))
                    if rows is not None:
                        rows.fills.append((f"{o.client_id}-1", o.venue, o.client_id, o.asset, o.side, qty, price,
                                           fee, slip, 0.0, ts))  # fmt: skip
                if rows is not None:
                    self.order_id += 1
                    rows.orders.append((self.order_id, o.client_id, cid, leg.leg, o.venue, o.asset, o.side,
                                        qty or o.qty, o.decision_price, status, filled, ext, why, ts, ts))  # fmt: skip
        self.cycle_notional[k] = traded
        self.cycle_cost[k] = fill_costs  # as the ledger's summary counts build-up costs: fills only
        costs += fill_costs
        # -- book: the closing snapshot and the balance of the book held
        transit_now = float(sum(tr.transfer.amount for tr in self.transit))
        total_cash = float(sum(cash.values()))
        nav_after = total_cash + float(pos @ mid) + transit_now
        w = pos * mid / nav_after if nav_after > 0 else np.zeros(n)
        labels = [x if x or not bool(t.target.capped[i]) else "cap" for i, x in enumerate(t.bound)]
        d_free, d_bound, d_all = held_dispersion(w, forecast.cov, labels)
        self.nav_series[k] = nav_after
        if self.guarded:  # the closing snapshot is a mark too
            self.high = nav_after if self.high is None else max(self.high, nav_after)
        if now >= self.buildup_end or (k == self.cycles - 1 and self.steady_cycles == 0):
            self.steady_cycles += 1
            for key_, val in (("target", t.optimizer_dispersion), ("traded", t.traded_dispersion),
                              ("held", d_free), ("held_bound", d_bound), ("held_all", d_all)):  # fmt: skip
                if val is not None:
                    self.disp[key_].append(val)
            for i, lab in enumerate(labels):
                if lab is not None:
                    per = self.bounds_count.setdefault(assets[i], {})
                    per[lab] = per.get(lab, 0) + 1
            if nav_after > 0:
                self.cash_share.append(total_cash / nav_after)
                self.transit_share.append(transit_now / nav_after)
        if rows is not None:
            sigma_ann = annualise_sigma(portfolio_sigma(d.weights, forecast.cov), self.ppy)
            rows.cycles.append((cid, key, "scheduled", ts, ts, ts, "done", nav, nav_after, sigma_ann,
                                t.optimizer_dispersion, t.traded_dispersion, d_free, d_bound, d_all,
                                self.names["forecaster"], self.names["optimizer"], self.names["policy"],
                                d.decision.reason, "fast backtest"))  # fmt: skip
            tw, dw, up = t.target.weights.tolist(), d.weights.tolist(), b.upper.tolist()
            rc, px, cur = np.asarray(t.target.risk_contributions, float).tolist(), mid.tolist(), w0.tolist()
            capped_l = [int(x) for x in np.asarray(t.target.capped, bool)]
            rows.targets.extend((cid, a, venue_of[a], px[i], up[i], cur[i], tw[i], dw[i], rc[i], capped_l[i],
                                 t.bound[i]) for i, a in enumerate(assets))  # fmt: skip
            rows.snapshots.append((cid, ts, nav_after, total_cash, rows.json(dict(cash)),
                                   rows.json(dict(zip(assets, pos.tolist()))), rows.json(dict(zip(assets, px))),
                                   transit_now))  # fmt: skip
            if len(rows.cycles) >= self.flush_every:
                rows.flush()
        self.k += 1
        return Step(k, now, nav, nav_after, costs, traded, w0, w, forecast, b, t, d, d_free)

    def _denial(self, o: Any, qty: float, price: float, nav: float, now: datetime) -> str | None:
        """``Engine._denial`` on the in-process book: the kill switch's state, then the pre-trade limits
        ([limits], bot/guards.py) at the fill's side of the quote, against the cycle's NAV, the value held
        and the fills of the last 24 hours."""
        if not allows(self.state, o.side):
            return f"kill switch {self.state}: no {o.side} orders"
        if not self.limited:
            return None
        fills = self.fills_24h
        while fills and fills[0][0] < now - timedelta(hours=24):
            fills.popleft()
        i = self.asset_index[o.asset]
        on_venue = 0.0
        if self.cfg.limits.max_venue_exposure:
            on_venue = sum(float(self.pos[a]) * (price if a == i else float(self.close[self.hist + self.k, a]))
                           for a in range(self.n) if self.venue_of[self.assets[a]] == o.venue)  # fmt: skip
        e = Exposure(nav, {o.asset: float(self.pos[i]) * price}, {o.venue: on_venue}, sum(x for _, x in fills))
        return order_denial(self.cfg.limits, o.asset, o.venue, o.side, qty * price, e,
                            exiting=self.state != ACTIVE)  # fmt: skip

    def _guard(self, now: datetime, key: str, nav: float, w0: np.ndarray, forecast: Any) -> None:
        """The daemon's checks at planning (``Engine._guard_plan``) on the cycle's mark: drawdown from the
        high-water mark, the UTC day's loss from its first mark, the held book's forecast σ_p against the
        ceiling. The daemon also marks every five minutes; here the marks are the cycles' (hourly, or one a
        bar: on daily bars the day's loss is always measured from the bar's own mark and never trips)."""
        g = self.cfg.guard
        day = now.astimezone(UTC).date()
        if self.day_open is None or self.day_open[0] != day:
            self.day_open = (day, nav)
        sigma = annualise_sigma(portfolio_sigma(w0, forecast.cov), self.ppy)
        trip = equity_trip(nav, self.high, self.day_open[1], g) or sigma_trip(sigma, g, "planning")
        self.high = nav if self.high is None else max(self.high, nav)
        if trip is not None:
            self._trip(now, key, nav, trip)

    def _trip(self, now: datetime, key: str, nav: float, trip: Trip) -> None:
        """Trip for the rest of the run (nobody resumes a backtest); the ledger keeps the state row and its
        event, so ``rwabot status --ledger`` shows the switch as the daemon would have left it."""
        action = self.cfg.guard.action
        self.state = action
        self.tripped = {"time": now.isoformat(), "state": action, "cause": trip.cause, "reason": trip.message,
                        "nav": nav}  # fmt: skip
        self._count("kill_switch")
        if self.ledger is not None:
            self.ledger.set_trading_state(*trip_records(trip, action, now, "cycle", nav, key))

    def summary(self, risk_free_annual: float | None = None) -> BacktestSummary:
        """The run so far (every cycle when it is done), by the same formulas as ``bot.backtest.summarize``."""
        m = self.k
        if m < 2:
            raise ValueError("need at least two cycles to summarize a run")
        bounds = {a: {lab: c / max(self.steady_cycles, 1) for lab, c in per.items()}
                  for a, per in self.bounds_count.items()}  # fmt: skip
        series = RunSeries(
            t0=self.first,
            times=self.snap_times[:m],
            nav=np.concatenate([[self.nav_before_first], self.nav_series[:m]]),
            cycles=m,
            fill_time=self.snap_times[:m],  # per cycle: the summary splits traded value by cycle time
            fill_notional=self.cycle_notional[:m].tolist(),
            fill_cost=self.cycle_cost[:m].tolist(),
            costs=self.totals,
            disp_target=self.disp["target"],
            disp_traded=self.disp["traded"],
            disp_held=self.disp["held"],
            disp_held_bound=self.disp["held_bound"],
            disp_held_all=self.disp["held_all"],
            bounds=bounds,
            cash_share=self.cash_share,
            transit_share=self.transit_share,
            cash_by_venue_end=dict(self.cash),
            transit_end=float(sum(tr.transfer.amount for tr in self.transit)),
            transfers=self.n_transfers,
            events=self.counted,
            assets=self.assets,
            prices=self.close[self.hist : self.hist + m],
            kill_switch=self.tripped,
        )
        return summary_of(series, risk_free_annual, periods_per_year=self.ppy, report=self.cfg.report)


def run_fast_backtest(
    cfg: Config,
    hours: int,
    *,
    start: datetime | None = None,
    pm: pluggy.PluginManager | None = None,
    research: bool = False,
    risk_free_annual: float | None = None,
    flush_every: int = 2000,
    on_cycle: Callable[[int], None] | None = None,
    state_dir: Path | None = None,
    compiled: bool | None = None,
) -> BacktestSummary:
    """The cycles of ``cfg`` from ``start`` (default: the config's clock start) to ``hours`` later, both
    ends included as the daemon's backtest runs them. The ledger at ``cfg.bot.ledger`` must be fresh,
    and is not touched in research mode.

    ``compiled``: None runs the whole loop compiled (plugins/optimizers/fast_loop.py) when the configuration is one
    it implements exactly, else the Python stages (the reason is logged at INFO: ``-v``); False always
    runs the Python stages; True raises ``ConfigError`` with the reason instead of falling back."""
    run = FastBacktest(cfg, hours, start=start, pm=pm, research=research, flush_every=flush_every,
                       state_dir=state_dir)  # fmt: skip
    try:
        if compiled is not False:
            why = run.run_compiled()
            if why is None:
                log.info("fast backtest: %d cycles in the compiled loop (plugins/optimizers/fast_loop.py)", run.cycles)
                if on_cycle is not None:
                    for k in range(run.cycles):
                        on_cycle(k)
            elif compiled:
                raise ConfigError(f"the compiled backtest loop declines: {why}")
            else:
                log.info("fast backtest: the compiled loop declines (%s); the stages run in Python", why)
        while not run.done:
            run.step()
            if on_cycle is not None:
                on_cycle(run.k - 1)
    finally:
        run.close_ledger()
    return run.summary(risk_free_annual)
