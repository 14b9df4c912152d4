"""Backtests: the daemon itself on a simulated clock, then statistics read back from the ledger.

There is no second implementation of the cycle here: ``run_backtest`` builds the same Engine and
Daemon as ``rwabot run`` with a simulated clock that jumps from one job to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pluggy

from bot.clock import SimulatedClock
from bot.config import Config
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


def summarize(ledger: Ledger, risk_free_annual: float = 0.0, buildup_hours: int = BUILDUP_HOURS) -> BacktestSummary:
    """Performance from the ledger's closing snapshots (one per hourly cycle) and its fills.

    Sharpe is of the excess log return over ``risk_free_annual``: a book that is half a T-bill token
    earns a high Sharpe against zero and almost none against the rate the token pays.
    """
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
    hours = (times[-1] - t0).total_seconds() / 3600.0  # type: ignore[operator]
    rets = np.diff(np.log(nav))
    mean_h = float(rets.sum() / max(hours, 1e-9))
    ann_ret = float(np.exp(mean_h * HOURS_PER_YEAR) - 1)
    # volatility of the hourly steps between closing snapshots (a gap, a failed cycle, counts as one
    # longer step); the first step is the first cycle's trading at one instant, not an hour of market
    hourly = rets[1:]
    ann_vol = float(hourly.std(ddof=1) * np.sqrt(HOURS_PER_YEAR)) if len(hourly) > 1 else 0.0
    excess = mean_h * HOURS_PER_YEAR - float(np.log1p(risk_free_annual))
    sharpe = float(excess / ann_vol) if ann_vol > 0 else float("nan")
    peak = np.maximum.accumulate(nav)
    mdd = float(np.max(1 - nav / peak))
    costs = ledger.cost_totals()
    years = max(hours / HOURS_PER_YEAR, 1e-9)
    # each fill belongs to the cycle of its order: the build-up is the cycles of the first buildup_hours
    cycle_of = {o.client_id: o.cycle_id for o in ledger.all_orders()}
    end_buildup = t0 + timedelta(hours=buildup_hours)
    buildup_traded = buildup_costs = steady_traded = 0.0
    for f in ledger.fills():
        c = by_id.get(cycle_of.get(f.client_id))
        when = utc(c.scheduled_for) if c is not None else utc(f.time)
        if when < end_buildup:  # type: ignore[operator]
            buildup_traded += f.qty * f.price
            buildup_costs += f.fee + f.slippage + f.gas
        else:
            steady_traded += f.qty * f.price
    steady_hours = hours - buildup_hours
    steady_nav = [s.nav for s, t in zip(snaps, times) if t >= end_buildup]  # type: ignore[operator]
    steady_turnover = (
        float(steady_traded / np.mean(steady_nav) / (steady_hours / HOURS_PER_YEAR))
        if steady_hours > 0 and steady_nav
        else float("nan")
    )
    # risk balance is judged after the build-up: the first day buys the book from cash (thin assets
    # take many hours), and its dispersion says how fast it was bought, not how balanced it is held
    steady = [c for c in cycles if utc(c.scheduled_for) >= end_buildup] or cycles  # type: ignore[operator]
    tgt = [c.rc_dispersion_target for c in steady if c.rc_dispersion_target is not None]
    traded = [c.rc_dispersion_traded for c in steady if c.rc_dispersion_traded is not None]
    held = [c.rc_dispersion_held for c in steady if c.rc_dispersion_held is not None]
    held_b = [c.rc_dispersion_held_bound for c in steady if c.rc_dispersion_held_bound is not None]
    held_all = [c.rc_dispersion_held_all for c in steady if c.rc_dispersion_held_all is not None]
    bounds: dict[str, dict[str, float]] = {}
    for c in steady:
        for tr in ledger.targets_of(c.id) if c.id is not None else []:
            label = tr.bound or ("cap" if tr.capped else None)
            if label is not None:
                per = bounds.setdefault(tr.asset, {})
                per[label] = per.get(label, 0.0) + 1.0 / len(steady)
    late = [s for s, t in zip(snaps, times) if t >= end_buildup] or snaps  # type: ignore[operator]
    cash_share = [s.cash / s.nav for s in late if s.nav > 0]
    transit_share = [(s.transit or 0.0) / s.nav for s in late if s.nav > 0]
    moved = [t for t in ledger.transfers() if t.status in ("pending", "arrived")]
    events: dict[str, int] = {}
    for e in ledger.events():
        events[e.kind] = events.get(e.kind, 0) + 1
    return BacktestSummary(
        hours=int(round(hours)),
        cycles=len(cycles),
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
        rc_dispersion_target_median=_median(tgt),
        rc_dispersion_traded_median=_median(traded),
        rc_dispersion_traded_p90=_p90(traded),
        rc_dispersion_held_median=_median(held),
        rc_dispersion_held_p90=_p90(held),
        risk_events=events,
        rc_dispersion_held_bound_median=_median(held_b),
        rc_dispersion_held_bound_p90=_p90(held_b),
        rc_dispersion_held_all_median=_median(held_all),
        rc_dispersion_held_all_p90=_p90(held_all),
        bounds=bounds,
        cash_share_median=_median(cash_share),
        transit_share_median=_median(transit_share),
        cash_by_venue_end=dict(snaps[-1].cash_by_venue),
        transit_end=float(snaps[-1].transit or 0.0),
        transfers=len(moved),
        transferred=costs["transferred"],
        transfer_fees=costs["transfer_fees"],
        transfer_gas=costs["transfer_gas"],
    )


def run_backtest(
    cfg: Config,
    hours: int,
    *,
    start: datetime | None = None,
    pm: pluggy.PluginManager | None = None,
    on_cycle: Callable[[object], None] | None = None,
    risk_free_annual: float = 0.0,
) -> BacktestSummary:
    """Run the daemon for ``hours`` simulated hours on ``cfg`` (whose ledger should be fresh)."""
    begin = start or cfg.clock.start
    if begin is None:
        from bot.cycle import make_clock

        begin = make_clock(cfg.with_overrides(clock={"kind": "simulated"})).now()  # type: ignore[union-attr]
    clock = SimulatedClock(begin, 0.0)
    engine = Engine(cfg, pm=pm, clock=clock)
    Daemon(engine, until=begin + timedelta(hours=hours), on_cycle=on_cycle).run()
    ledger = Ledger(cfg.bot.ledger)
    try:
        return summarize(ledger, risk_free_annual)
    finally:
        ledger.close()
