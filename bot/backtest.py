"""Backtests: the daemon itself on a simulated clock, then statistics read back from the ledger.

There is no second implementation of the cycle here: ``run_backtest`` builds the same Engine and
Daemon as ``rwabot run`` with a simulated clock that jumps from one job to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pluggy

from bot.clock import SimulatedClock
from bot.config import Config, ReportSection
from bot.cycle import Engine
from bot.daemon import Daemon
from bot.domain import HOURS_PER_YEAR
from bot.ledger import Ledger, utc

BUILDUP_HOURS = 24
"""Hours from the first cycle reported as the build-up from cash. The first cycle buys the whole book, and
the thin tokenized assets take several more (each buy is clipped to a share of the last hour's volume):
counted in turnover, that trading would read as churn a steady book never has."""


@dataclass(frozen=True)
class BacktestSummary:
    """What ``rwabot backtest`` prints; every number is read back from the ledger.

    ``start_nav`` is the NAV before the first cycle traded, so the return includes the cost of building
    the book. Turnover is reported whole, then split into the build-up (the cycles of the first
    ``buildup_hours``, × start NAV) and the steady state after it (× NAV per year). RC dispersion
    (max |RC_i / mean RC − 1| over the free assets: those no cap, floor, venue budget or hold binds) is
    given, after the build-up, for the optimizer's weights, for the stored target the policy trades
    toward (the optimizer under venue budgets), and for the closing holdings; only the last two describe
    the book. The holdings' assets at a bound are measured against the free assets' mean RC apart, and
    ``bounds`` says which assets were at which bound in what share of the cycles. Cash (at the venues)
    and cash in transit are shares of NAV at the hourly snapshots after the build-up.
    """

    hours: int
    cycles: int
    start_nav: float
    end_nav: float
    total_return: float
    annual_return: float
    annual_vol: float
    sharpe: float
    risk_free_annual: float
    max_drawdown: float
    turnover_annual: float
    traded: float
    fees: float
    slippage: float
    gas: float
    buildup_hours: int
    buildup_traded: float
    buildup_costs: float
    steady_traded: float
    steady_turnover_annual: float
    rc_dispersion_target_median: float
    rc_dispersion_traded_median: float
    rc_dispersion_traded_p90: float
    rc_dispersion_held_median: float
    rc_dispersion_held_p90: float
    risk_events: dict[str, int]
    rc_dispersion_held_bound_median: float = float("nan")
    rc_dispersion_held_bound_p90: float = float("nan")
    rc_dispersion_held_all_median: float = float("nan")
    rc_dispersion_held_all_p90: float = float("nan")
    bounds: dict[str, dict[str, float]] | None = None  # asset -> bound -> share of cycles (after the build-up)
    cash_share_median: float = float("nan")  # cash at the venues / NAV, hourly, after the build-up
    transit_share_median: float = float("nan")
    cash_by_venue_end: dict[str, float] | None = None
    transit_end: float = 0.0
    transfers: int = 0
    transferred: float = 0.0
    transfer_fees: float = 0.0
    transfer_gas: float = 0.0
    product_fees: float = 0.0  # the part of ``fees`` funds and issuers charged (ERC-4626 entry/exit, managers)
    excess_return_annual: float = float("nan")  # annual return − the risk-free rate
    sortino: float = float("nan")
    calmar: float = float("nan")  # annual return / max drawdown
    risk_free_source: str = "0 (none given)"
    benchmarks: dict[str, dict[str, float]] | None = None  # name -> annual_return, annual_vol, sharpe, max_drawdown
    equity_times: list[str] | None = None  # ISO times of ``equity``: the start, then each closing snapshot
    equity: list[float] | None = None
    # the kill switch's first trip in the run ([guard]): time, state, cause, reason, nav; None: never tripped
    kill_switch: dict[str, Any] | None = None

    @property
    def costs(self) -> float:
        return self.fees + self.slippage + self.gas

    @property
    def buildup_turnover(self) -> float:
        """Value traded in the build-up as a multiple of the start NAV."""
        return self.buildup_traded / self.start_nav if self.start_nav > 0 else float("nan")


def _median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def _p90(xs: list[float]) -> float:
    return float(np.quantile(xs, 0.9)) if xs else float("nan")


@dataclass
class RunSeries:
    """What a run leaves behind, as plain series: the input of ``summary_of``, built from a ledger
    (``summarize``) or by the fast backtest as it runs (bot/fast.py), so both report by one set of
    formulas. Lists of per-cycle values hold the cycles after the build-up (all of them if none is)."""

    t0: datetime  # the first cycle's scheduled time
    times: list[datetime]  # closing snapshot times, one per hourly cycle
    nav: np.ndarray  # NAV before the first cycle's trades, then at each closing snapshot
    cycles: int
    fill_time: list[datetime]  # per fill: its cycle's scheduled time
    fill_notional: list[float]
    fill_cost: list[float]  # fee + slippage + gas
    costs: dict[str, float]  # Ledger.cost_totals()
    disp_target: list[float]
    disp_traded: list[float]
    disp_held: list[float]
    disp_held_bound: list[float]
    disp_held_all: list[float]
    bounds: dict[str, dict[str, float]]
    cash_share: list[float]
    transit_share: list[float]
    cash_by_venue_end: dict[str, float]
    transit_end: float
    transfers: int
    events: dict[str, int]
    assets: tuple[str, ...] = ()
    prices: np.ndarray | None = None  # (len(times), len(assets)) closing prices at each snapshot
    kill_switch: dict[str, Any] | None = None  # BacktestSummary.kill_switch


def _drawdown(nav: np.ndarray) -> float:
    return float(np.max(1 - nav / np.maximum.accumulate(nav))) if len(nav) else float("nan")


def risk_free_rate(
    r: RunSeries, given: float | None, report: ReportSection | None, hours: float
) -> tuple[float, str]:
    """The rate Sharpe is measured against, and where it came from: ``given`` (the command line) first,
    then the realised return of ``report.risk_free_asset`` on the run's path, then ``report.risk_free_annual``."""
    if given is not None:
        return given, "given"
    if report is not None and report.risk_free_asset and r.prices is not None and report.risk_free_asset in r.assets:
        p = r.prices[:, r.assets.index(report.risk_free_asset)]
        rate = float(np.expm1(np.log(p[-1] / p[0]) / max(hours, 1e-9) * HOURS_PER_YEAR))
        # a crash on a short path annualises to a loss of all but nothing, which rounds to −100%: kept above
        # it, so the excess log return stays finite (and very large) instead of dividing by log(0)
        rate = max(rate, float(np.nextafter(-1.0, 0.0)))
        return rate, f"{report.risk_free_asset}'s return on this path"
    if report is not None:
        return report.risk_free_annual, "report.risk_free_annual"
    return 0.0, "0 (none given)"


def benchmark_stats(
    r: RunSeries, report: ReportSection | None, rf: float, periods_per_year: float
) -> dict[str, dict[str, float]]:
    """Static-weight books on the run's own prices (rebalanced every step, gross of costs): equal weight
    and ``report.benchmarks``; their return, volatility, Sharpe (against the same rate) and drawdown."""
    if r.prices is None or len(r.prices) < 3 or not r.assets:
        return {}
    books = {"equal weight": dict.fromkeys(r.assets, 1.0)}
    books.update(report.benchmarks if report is not None else {})
    simple = r.prices[1:] / r.prices[:-1] - 1.0
    hours = (r.times[-1] - r.times[0]).total_seconds() / 3600.0
    out: dict[str, dict[str, float]] = {}
    for name, weights in books.items():
        w = np.array([weights.get(a, 0.0) for a in r.assets], dtype=float)
        w /= w.sum()
        logr = np.log1p(simple @ w)
        mean_h = float(logr.sum() / max(hours, 1e-9))
        vol = float(logr.std(ddof=1) * np.sqrt(periods_per_year)) if len(logr) > 1 else float("nan")
        excess = mean_h * HOURS_PER_YEAR - float(np.log1p(rf))
        out[name] = {"annual_return": float(np.exp(mean_h * HOURS_PER_YEAR) - 1), "annual_vol": vol,
                     "sharpe": excess / vol if vol > 0 else float("nan"),
                     "max_drawdown": _drawdown(np.exp(np.concatenate([[0.0], np.cumsum(logr)])))}  # fmt: skip
    return out


def summary_of(
    r: RunSeries,
    risk_free_annual: float | None = None,
    buildup_hours: int = BUILDUP_HOURS,
    periods_per_year: float = HOURS_PER_YEAR,
    report: ReportSection | None = None,
) -> BacktestSummary:
    """Performance, costs and risk balance of a run (``BacktestSummary`` says what each number means).

    Returns and turnover are annualised by elapsed time; volatility by ``periods_per_year`` steps (8760
    hourly cycles, 365 daily ones), since it is the spread of one step's returns.

    Sharpe is of the excess log return over ``risk_free_annual``: a book that is half a T-bill token
    earns a high Sharpe against zero and almost none against the rate the token pays.
    """
    t0, times, nav = r.t0, r.times, r.nav
    hours = (times[-1] - t0).total_seconds() / 3600.0
    rets = np.diff(np.log(nav))
    mean_h = float(rets.sum() / max(hours, 1e-9))
    ann_ret = float(np.exp(mean_h * HOURS_PER_YEAR) - 1)
    # volatility of the hourly steps between closing snapshots (a gap, a failed cycle, counts as one
    # longer step); the first step is the first cycle's trading at one instant, not an hour of market
    hourly = rets[1:]
    ann_vol = float(hourly.std(ddof=1) * np.sqrt(periods_per_year)) if len(hourly) > 1 else 0.0
    risk_free_annual, rf_source = risk_free_rate(r, risk_free_annual, report, hours)
    excess = mean_h * HOURS_PER_YEAR - float(np.log1p(risk_free_annual))
    sharpe = float(excess / ann_vol) if ann_vol > 0 else float("nan")
    mdd = _drawdown(nav)
    # Sortino: the same excess over the downside deviation of the steps below the rate's share of a step
    below = np.minimum(hourly - float(np.log1p(risk_free_annual)) / periods_per_year, 0.0)
    downside = float(np.sqrt(np.mean(below**2)) * np.sqrt(periods_per_year)) if len(hourly) else 0.0
    sortino = float(excess / downside) if downside > 0 else float("nan")
    costs = r.costs
    years = max(hours / HOURS_PER_YEAR, 1e-9)
    end_buildup = t0 + timedelta(hours=buildup_hours)
    ft = np.array([(t - t0).total_seconds() for t in r.fill_time]) if r.fill_time else np.zeros(0)
    early = ft < buildup_hours * 3600.0
    notional, cost = np.asarray(r.fill_notional, float), np.asarray(r.fill_cost, float)
    buildup_traded, buildup_costs = float(notional[early].sum()), float(cost[early].sum())
    steady_traded = float(notional[~early].sum())
    steady_hours = hours - buildup_hours
    steady_nav = [v for v, t in zip(nav[1:], times) if t >= end_buildup]
    steady_turnover = (
        float(steady_traded / np.mean(steady_nav) / (steady_hours / HOURS_PER_YEAR))
        if steady_hours > 0 and steady_nav
        else float("nan")
    )
    return BacktestSummary(
        hours=int(round(hours)),
        cycles=r.cycles,
        start_nav=float(nav[0]),
        end_nav=float(nav[-1]),
        total_return=float(nav[-1] / nav[0] - 1),
        annual_return=ann_ret,
        annual_vol=ann_vol,
        sharpe=sharpe,
        risk_free_annual=risk_free_annual,
        max_drawdown=mdd,
        turnover_annual=float(costs["traded"] / nav.mean() / years),
        traded=costs["traded"],
        fees=costs["fees"],
        slippage=costs["slippage"],
        gas=costs["gas"],
        buildup_hours=buildup_hours,
        buildup_traded=buildup_traded,
        buildup_costs=buildup_costs,
        steady_traded=steady_traded,
        steady_turnover_annual=steady_turnover,
        rc_dispersion_target_median=_median(r.disp_target),
        rc_dispersion_traded_median=_median(r.disp_traded),
        rc_dispersion_traded_p90=_p90(r.disp_traded),
        rc_dispersion_held_median=_median(r.disp_held),
        rc_dispersion_held_p90=_p90(r.disp_held),
        risk_events=r.events,
        rc_dispersion_held_bound_median=_median(r.disp_held_bound),
        rc_dispersion_held_bound_p90=_p90(r.disp_held_bound),
        rc_dispersion_held_all_median=_median(r.disp_held_all),
        rc_dispersion_held_all_p90=_p90(r.disp_held_all),
        bounds=r.bounds,
        cash_share_median=_median(r.cash_share),
        transit_share_median=_median(r.transit_share),
        cash_by_venue_end=r.cash_by_venue_end,
        transit_end=r.transit_end,
        transfers=r.transfers,
        transferred=costs["transferred"],
        transfer_fees=costs["transfer_fees"],
        transfer_gas=costs["transfer_gas"],
        product_fees=costs.get("product_fees", 0.0),
        excess_return_annual=ann_ret - risk_free_annual,
        sortino=sortino,
        calmar=ann_ret / mdd if mdd > 0 else float("nan"),
        risk_free_source=rf_source,
        benchmarks=benchmark_stats(r, report, risk_free_annual, periods_per_year),
        equity_times=[t0.isoformat(), *(t.isoformat() for t in times)],
        equity=[float(x) for x in nav],
        kill_switch=r.kill_switch,
    )


def first_trip(ledger: Ledger) -> dict[str, Any] | None:
    """The run's first kill-switch trip, as ``BacktestSummary.kill_switch`` reports it (None: never)."""
    for row in ledger.trading_states():
        if row.cause != "resume":
            return {"time": utc(row.time).isoformat(), "state": row.state, "cause": row.cause,  # type: ignore[union-attr]
                    "reason": row.reason, "nav": row.nav}  # fmt: skip
    return None


def summarize(
    ledger: Ledger,
    risk_free_annual: float | None = None,
    buildup_hours: int = BUILDUP_HOURS,
    report: ReportSection | None = None,
) -> BacktestSummary:
    """``summary_of`` the ledger's closing snapshots (one per hourly cycle), cycles, targets and fills."""
    snaps = [s for s in ledger.snapshots() if s.time.minute == 0 and s.time.second == 0]
    if len(snaps) < 2:
        raise ValueError("need at least two hourly snapshots to summarize a run")
    cycles = ledger.cycles()
    by_id = {c.id: c for c in cycles}
    first = by_id.get(snaps[0].cycle_id)
    if first is None or first.nav_before is None:
        raise ValueError("the first hourly snapshot has no planned cycle: no NAV before its trades")
    t0 = utc(first.scheduled_for)
    assert t0 is not None
    times = [utc(s.time) for s in snaps]
    # the NAV before the first cycle's trades opens the series: the build-up's costs are in the return
    nav = np.array([float(first.nav_before), *(s.nav for s in snaps)])
    # each fill belongs to the cycle of its order: the build-up is the cycles of the first buildup_hours
    cycle_of = {o.client_id: o.cycle_id for o in ledger.all_orders()}
    fill_time, notional, cost = [], [], []
    for f in ledger.fills():
        c = by_id.get(cycle_of.get(f.client_id))
        fill_time.append(utc(c.scheduled_for) if c is not None else utc(f.time))
        notional.append(f.qty * f.price)
        cost.append(f.fee + f.slippage + f.gas)
    end_buildup = t0 + timedelta(hours=buildup_hours)
    # risk balance is judged after the build-up: the first day buys the book from cash (thin assets
    # take many hours), and its dispersion says how fast it was bought, not how balanced it is held
    steady = [c for c in cycles if utc(c.scheduled_for) >= end_buildup] or cycles  # type: ignore[operator]
    steady_ids = {c.id for c in steady}
    bounds: dict[str, dict[str, float]] = {}
    for tr in ledger.all_targets():
        if tr.cycle_id not in steady_ids:
            continue
        label = tr.bound or ("cap" if tr.capped else None)
        if label is not None:
            per = bounds.setdefault(tr.asset, {})
            per[label] = per.get(label, 0.0) + 1.0 / len(steady)
    late = [s for s, t in zip(snaps, times) if t >= end_buildup] or snaps  # type: ignore[operator]
    events: dict[str, int] = {}
    for e in ledger.events():
        events[e.kind] = events.get(e.kind, 0) + 1

    def col(attr: str) -> list[float]:
        return [getattr(c, attr) for c in steady if getattr(c, attr) is not None]

    series = RunSeries(
        t0=t0,
        times=times,  # type: ignore[arg-type]
        nav=nav,
        cycles=len(cycles),
        fill_time=fill_time,  # type: ignore[arg-type]
        fill_notional=notional,
        fill_cost=cost,
        costs=ledger.cost_totals(),
        disp_target=col("rc_dispersion_target"),
        disp_traded=col("rc_dispersion_traded"),
        disp_held=col("rc_dispersion_held"),
        disp_held_bound=col("rc_dispersion_held_bound"),
        disp_held_all=col("rc_dispersion_held_all"),
        bounds=bounds,
        cash_share=[s.cash / s.nav for s in late if s.nav > 0],
        transit_share=[(s.transit or 0.0) / s.nav for s in late if s.nav > 0],
        cash_by_venue_end=dict(snaps[-1].cash_by_venue),
        transit_end=float(snaps[-1].transit or 0.0),
        transfers=len([t for t in ledger.transfers() if t.status in ("pending", "arrived")]),
        events=events,
        assets=tuple(snaps[-1].prices),
        prices=np.array([[float(s.prices.get(a, np.nan)) for a in snaps[-1].prices] for s in snaps]),
        kill_switch=first_trip(ledger),
    )
    # volatility is per step: a ledger of daily cycles (a daily data file) is annualised by its own step
    step = float(np.median(np.diff([t.timestamp() for t in times]))) if len(times) > 2 else 3600.0  # type: ignore[union-attr]
    ppy = HOURS_PER_YEAR * 3600.0 / step
    return summary_of(series, risk_free_annual, buildup_hours, periods_per_year=ppy, report=report)


def run_backtest(
    cfg: Config,
    hours: int,
    *,
    start: datetime | None = None,
    pm: pluggy.PluginManager | None = None,
    on_cycle: Callable[[object], None] | None = None,
    risk_free_annual: float | None = None,
) -> BacktestSummary:
    """Run the daemon for ``hours`` simulated hours on ``cfg`` (whose ledger should be fresh); the rate
    is ``risk_free_annual`` when given, else the config's ``[report]``."""
    begin = start or cfg.clock.start
    if begin is None:
        from bot.cycle import make_clock

        begin = make_clock(cfg.with_overrides(clock={"kind": "simulated"})).now()  # type: ignore[union-attr]
    clock = SimulatedClock(begin, 0.0)
    engine = Engine(cfg, pm=pm, clock=clock)
    Daemon(engine, until=begin + timedelta(hours=hours), on_cycle=on_cycle).run()
    ledger = Ledger(cfg.bot.ledger)
    try:
        return summarize(ledger, risk_free_annual, report=cfg.report)
    finally:
        ledger.close()
