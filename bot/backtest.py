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
from bot.ledger import Ledger


@dataclass(frozen=True)
class BacktestSummary:
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
    rc_dispersion_target_median: float
    rc_dispersion_held_median: float
    rc_dispersion_held_p90: float
    risk_events: dict[str, int]

    @property
    def costs(self) -> float:
        return self.fees + self.slippage + self.gas


def summarize(ledger: Ledger, risk_free_annual: float = 0.0) -> BacktestSummary:
    """Performance from the ledger's snapshots (one per cycle).

    Sharpe is of the excess log return over ``risk_free_annual``: a book that is half a T-bill token
    earns a high Sharpe against zero and almost none against the rate the token pays.
    """
    snaps = [s for s in ledger.snapshots() if s.time.minute == 0 and s.time.second == 0]
    if len(snaps) < 2:
        raise ValueError("need at least two hourly snapshots to summarize a run")
    times = [s.time for s in snaps]
    nav = np.array([s.nav for s in snaps])
    hours = (times[-1] - times[0]).total_seconds() / 3600.0
    # hourly cycles give an hourly NAV series; a gap (a failed cycle) counts as one longer step
    rets = np.diff(np.log(nav))
    mean_h = float(rets.sum() / max(hours, 1e-9))
    ann_ret = float(np.exp(mean_h * HOURS_PER_YEAR) - 1)
    ann_vol = float(rets.std(ddof=1) * np.sqrt(HOURS_PER_YEAR)) if len(rets) > 1 else 0.0
    excess = mean_h * HOURS_PER_YEAR - float(np.log1p(risk_free_annual))
    sharpe = float(excess / ann_vol) if ann_vol > 0 else float("nan")
    peak = np.maximum.accumulate(nav)
    mdd = float(np.max(1 - nav / peak))
    costs = ledger.cost_totals()
    years = max(hours / HOURS_PER_YEAR, 1e-9)
    cycles = ledger.cycles()
    tgt = [c.rc_dispersion_target for c in cycles if c.rc_dispersion_target is not None]
    held = [c.rc_dispersion_held for c in cycles if c.rc_dispersion_held is not None]
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
        rc_dispersion_target_median=float(np.median(tgt)) if tgt else float("nan"),
        rc_dispersion_held_median=float(np.median(held)) if held else float("nan"),
        rc_dispersion_held_p90=float(np.quantile(held, 0.9)) if held else float("nan"),
        risk_events=events,
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
