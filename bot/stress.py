"""Stress runs: a scenario (bot/shocks.py) through the fast backtest's cycle, beside two baselines.

Why here and not in a plugin: the market part of a scenario is a data source (``scenario``, found by its
registered name like any other), but the venue part (an outage, wider spreads, a depegged quote coin) acts
between cycles on the book the fast backtest (bot/fast.py) keeps, through the hooks it offers: ``held``
(assets not traded this cycle), ``cfg`` (read at every cycle: the funding routes an outage closes), the
paper venues' ``half_spread`` arrays and ``cash`` per venue. Nothing of the cycle is re-implemented: every
book runs ``FastBacktest.step``.

The books (``BOOKS``) are the configured strategy and two baselines that differ from it by the optimizer
alone (the ``static`` optimizer: equal weight, and inverse volatility frozen at the first forecast), on the
same paths, venues, costs, caps, hooks and policy. So a difference in the table is what the risk-parity
optimizer and its forecasts add, not a difference in how the books were simulated.

Sharpe is measured against the config's ``[report]`` rate, with the risk-free asset's return read on the
*unshocked* path: a scenario that crashes the T-bill token must not lower the bar the book is judged by.
Each run's Sharpe has a stationary-bootstrap interval (hourly returns, mean block a day); across seeds the
mean has a bootstrap interval over the seeds. Nothing here is tuned: a task runs what the config says.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bot.backtest import BUILDUP_HOURS
from bot.config import Config
from bot.errors import ConfigError
from bot.shocks import (
    CONTROL,
    DATA_KINDS,
    DepegShock,
    OutageShock,
    Scenario,
    SpreadShock,
    StaleShock,
)

HOUR = timedelta(hours=1)
RC_BAND = 0.05
"""The design's promise: risk contributions equal within 5% (max |RC_i / mean − 1| ≤ 0.05)."""
SHARPE_CLAIM = 1.5
BOOTSTRAP_BLOCK_HOURS = 24


@dataclass(frozen=True)
class Book:
    """A book run on every path: the config with ``sections`` replaced (nothing for the strategy)."""

    name: str
    sections: Mapping[str, Any] = field(default_factory=dict)


STRATEGY = Book("strategy")
EQUAL_WEIGHT = Book("equal weight", {"optimizer": {"plugin": "static", "options": {"weights": "equal"}}})
INVERSE_VOL = Book("inverse vol", {"optimizer": {"plugin": "static", "options": {"weights": "inverse_vol"}}})
BOOKS: dict[str, Book] = {b.name: b for b in (STRATEGY, EQUAL_WEIGHT, INVERSE_VOL)}


# -- metrics ----------------------------------------------------------------------------------------------


def sharpe_of(nav: np.ndarray, hours: float, rf_annual: float, ppy: float) -> float:
    """Sharpe as ``bot.backtest.summary_of`` computes it: the excess log return per year over the volatility
    of the steps after the first (the first is the build-up's trading at one instant)."""
    rets = np.diff(np.log(nav))
    vol = float(rets[1:].std(ddof=1) * math.sqrt(ppy)) if len(rets) > 2 else 0.0
    excess = float(rets.sum()) / max(hours, 1e-9) * 8760.0 - math.log1p(rf_annual)
    return excess / vol if vol > 0 else float("nan")


def steady_sharpe(nav: np.ndarray, start: int, step_hours: float, rf_annual: float, ppy: float) -> float:
    """Sharpe of the NAV from index ``start`` on (every step counted in mean and volatility): the book held,
    once the build-up from cash (``bot.backtest.BUILDUP_HOURS``) and its one-off costs are behind it."""
    part = np.asarray(nav[start:], float)
    if len(part) < 3:
        return float("nan")
    rets = np.diff(np.log(part))
    vol = float(rets.std(ddof=1) * math.sqrt(ppy))
    excess = float(rets.sum()) / (len(rets) * step_hours) * 8760.0 - math.log1p(rf_annual)
    return excess / vol if vol > 0 else float("nan")


def stationary_indices(n: int, block: float, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Politis–Romano stationary bootstrap: ``draws`` resamples of ``range(n)`` in blocks of mean length
    ``block`` (wrapping around), so the hourly returns' clustering survives the resampling."""
    new = rng.random((draws, n)) < 1.0 / max(block, 1.0)
    new[:, 0] = True
    jump = rng.integers(0, n, size=(draws, n))
    t = np.arange(n)
    # each position continues the block that started last at or before it: start + steps since, wrapped
    began = np.maximum.accumulate(np.where(new, t, 0), axis=1)
    return (np.take_along_axis(jump, began, axis=1) + (t - began)) % n


def sharpe_ci(
    nav: np.ndarray, hours: float, rf_annual: float, ppy: float, *, draws: int = 1000, level: float = 0.95,
    block: float = BOOTSTRAP_BLOCK_HOURS, seed: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """A bootstrap interval of one run's Sharpe (``sharpe_of``): the hourly returns after the first are
    resampled in blocks; the first (the build-up's costs, one instant) is kept as it is."""
    rets = np.diff(np.log(nav))
    body = rets[1:]
    if len(body) < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A4E]))
    sample = body[stationary_indices(len(body), block, draws, rng)]
    vol = sample.std(axis=1, ddof=1) * math.sqrt(ppy)
    excess = (rets[0] + sample.sum(axis=1)) / max(hours, 1e-9) * 8760.0 - math.log1p(rf_annual)
    s = np.divide(excess, vol, out=np.full(draws, np.nan), where=vol > 0)
    a = (1.0 - level) / 2.0
    return float(np.nanquantile(s, a)), float(np.nanquantile(s, 1.0 - a))


def mean_ci(values: Sequence[float], *, draws: int = 5000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean over independent runs (the seeds)."""
    x = np.asarray([v for v in values if np.isfinite(v)], float)
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x3EA4]))
    means = x[rng.integers(0, len(x), size=(draws, len(x)))].mean(axis=1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def time_back(nav: np.ndarray, i: int) -> int | None:
    """Steps after ``i`` until the NAV is back at ``nav[i]`` (its level when the shock began): 0 when it never
    falls below it, None when it has not come back by the end."""
    level = nav[i]
    tail = nav[i:]
    below = np.flatnonzero(tail < level)
    if not len(below):
        return 0
    back = np.flatnonzero(tail[below[0] :] >= level)
    return int(below[0] + back[0]) if len(back) else None


# -- the venue part of a scenario ---------------------------------------------------------------------------


class ScenarioHooks:
    """The shocks a data source cannot apply, applied to a ``FastBacktest`` before each of its cycles.

    Windows are [start, end) in cycles: a cycle at ``start`` is the first affected, the one at ``end`` the
    first free again. ``apply(now)`` sets ``run.held`` (outage: the venue's assets; stale with ``hold``: the
    frozen ones), ``run.cfg`` (the config without the routes an outage closes), the venues' half-spreads, and
    marks a depegged venue's cash at the depeg price (back at par when it ends).
    """

    def __init__(self, run: Any, scenario: Scenario, anchor: datetime, where: str = "scenario") -> None:
        self.run = run
        self.anchor = anchor
        self.cfg = run.cfg
        self.items: list[tuple[int, Any, float, float, np.ndarray | None]] = []
        venues = tuple(run.venues)
        for k, s in enumerate(scenario.shocks):
            here = f"{where}.shocks[{k}]"
            mask = None
            if isinstance(s, OutageShock | DepegShock):
                if s.venue not in venues:
                    raise ConfigError(f"{here}.venue: unknown venue {s.venue!r} (the config has {list(venues)})")
                mask = np.array([run.venue_of[a] == s.venue for a in run.assets], bool)
            elif isinstance(s, SpreadShock):
                bad = [v for v in (s.venues or ()) if v not in venues]
                if bad:
                    raise ConfigError(f"{here}.venues: unknown venue(s) {bad} (the config has {list(venues)})")
            elif isinstance(s, StaleShock) and s.hold:
                mask = s.select(run.assets, run.data.asset_kind, here)
            else:
                continue
            a0, a1 = s.window(anchor)
            self.items.append((k, s, a0, a1, mask))
        self.spread0 = {v: run.venues[v].half_spread.copy() for v in venues}
        self.marked: dict[int, bool] = {}
        self._closed: dict[frozenset[str], Config] = {frozenset(): self.cfg}

    def restore(self) -> None:
        """Undo what is still applied (a depeg's mark, spreads, holds, closed routes): the run's book as the
        cycle left it, at par."""
        run = self.run
        for k, s, *_ in self.items:
            if isinstance(s, DepegShock) and self.marked.get(k):
                run.cash[s.venue] /= s.price
                self.marked[k] = False
        run.held = np.zeros(run.n, bool)
        run.cfg = self.cfg
        for v, hs in self.spread0.items():
            run.venues[v].half_spread[:] = hs

    def _without(self, out: frozenset[str]) -> Config:
        cfg = self._closed.get(out)
        if cfg is None:
            f = self.cfg.funding
            routes = [r.model_dump() for r in f.routes if r.source not in out and r.destination not in out]
            cfg = self.cfg.with_overrides(funding={"routes": routes})
            self._closed[out] = cfg
        return cfg

    def apply(self, now: datetime) -> None:
        run = self.run
        h = (now - self.anchor) / HOUR
        held = np.zeros(run.n, bool)
        out: set[str] = set()
        spread = dict.fromkeys(self.spread0, 1.0)
        for k, s, a0, a1, mask in self.items:
            active = a0 <= h < a1
            if isinstance(s, DepegShock):
                if active and not self.marked.get(k):
                    run.cash[s.venue] *= s.price
                    self.marked[k] = True
                elif not active and self.marked.get(k):
                    run.cash[s.venue] /= s.price
                    self.marked[k] = False
                continue
            if not active:
                continue
            if isinstance(s, OutageShock):
                out.add(s.venue)
                held |= mask  # type: ignore[arg-type]
            elif isinstance(s, StaleShock):
                held |= mask  # type: ignore[arg-type]
            elif isinstance(s, SpreadShock):
                for v in s.venues or tuple(spread):
                    spread[v] *= s.factor
        run.held = held
        run.cfg = self._without(frozenset(out))
        for v, f in spread.items():
            run.venues[v].half_spread[:] = self.spread0[v] * f


def data_shocks(scenario: Scenario, cfg: Config) -> list[dict[str, Any]]:
    """The scenario's shocks for the ``scenario`` data source: the market kinds as they are, and a depeg
    whose venue's assets follow it as a ``scale`` shock on that venue's assets."""
    out: list[dict[str, Any]] = []
    for s in scenario.shocks:
        if s.kind in DATA_KINDS:
            d = s.model_dump()
            if isinstance(s, StaleShock):
                d.pop("hold")
            out.append(d)
        elif isinstance(s, DepegShock) and s.assets_follow:
            names = [a for a, sec in cfg.assets.items() if sec.venue == s.venue]
            if names:
                out.append({"kind": "scale", "start_hour": s.start_hour, "hours": s.hours, "align": s.align,
                            "assets": tuple(names), "factor": s.price})  # fmt: skip
    return out


# -- one run ----------------------------------------------------------------------------------------------


_PM: Any = None


def plugin_manager() -> Any:
    """The installed plugins, loaded once per process (a sweep worker runs many tasks)."""
    global _PM
    if _PM is None:
        from bot.plugins import make_plugin_manager

        _PM = make_plugin_manager()
    return _PM


def anchor_of(cfg: Config, start: datetime | None) -> datetime:
    """The first cycle's time, as ``FastBacktest`` picks it (the next whole hour): shock windows count from it."""
    begin = start or cfg.clock.start
    if begin is None:
        raise ConfigError("a stress run needs clock.start in the config (or a start time) to place its shocks")
    first = begin.astimezone(UTC)
    if first.minute or first.second or first.microsecond:
        first = first.replace(minute=0, second=0, microsecond=0) + HOUR
    return first


def scenario_config(cfg: Config, scenario: Scenario, seed: int, anchor: datetime, book: Book,
                    ledger: str) -> Config:  # fmt: skip
    """``cfg`` for one book of one scenario on one seed: its data source wrapped by the ``scenario`` source
    (the base source's ``seed`` set when it takes one), the book's sections, the ledger at ``ledger``."""
    from bot.plugins import Registry

    if cfg.data.plugin == "scenario":  # a config that already stresses its market: its shocks first
        inner = dict(cfg.data.options)
        base = dict(inner.get("base", {}))
        before = list(inner.get("shocks", ()))
    else:
        base = {"plugin": cfg.data.plugin, "options": dict(cfg.data.options)}
        before = []
    reg = Registry(plugin_manager())
    if "seed" in reg.get("data", base["plugin"]).config_model.model_fields:
        base = {**base, "options": {**base.get("options", {}), "seed": seed}}
    options = {"base": base, "anchor": anchor.isoformat(), "seed": seed, "shocks": before + data_shocks(scenario, cfg)}
    return cfg.with_overrides(**dict(book.sections), data={"plugin": "scenario", "options": options},
                              bot={"ledger": ledger}, clock={"kind": "simulated", "speed": 0.0})  # fmt: skip


@dataclass
class RunResult:
    """One book on one path: the table's row and, when asked for, the NAV series."""

    row: dict[str, Any]
    nav: np.ndarray | None = None
    times: list[datetime] | None = None


def risk_free_on_base(run: Any, cfg: Config) -> tuple[float, str]:
    """The rate Sharpe is judged against: the config's ``report.risk_free_asset`` return on the unshocked
    path over the run (the base source under the scenario), else ``report.risk_free_annual``."""
    asset = cfg.report.risk_free_asset
    if asset is None or asset not in run.assets:
        return cfg.report.risk_free_annual, "report.risk_free_annual"
    src = getattr(run.data, "base", run.data)
    last = run.first + (run.cycles - 1) * run.step_length
    p = np.asarray(src.bars([asset], last, run.cycles).close, float)[:, 0]
    hours = (last - run.first) / HOUR
    rate = float(np.exp(math.log(p[-1] / p[0]) / max(hours, 1e-9) * 8760.0) - 1.0)
    return rate, f"{asset} on the unshocked path"


def run_scenario(
    cfg: Config,
    scenario: Scenario,
    *,
    seed: int,
    hours: int,
    book: Book = STRATEGY,
    start: datetime | None = None,
    research: bool = True,
    ledger: str | None = None,
    mark_hour: float | None = None,
    keep_series: bool = False,
    name: str = "",
    on_step: Callable[[Any, Any], None] | None = None,
    bootstrap_draws: int = 1000,
) -> RunResult:
    """Run one book of ``cfg`` under ``scenario`` for ``hours`` on the path of ``seed``.

    ``mark_hour`` (hours after the first cycle; default the scenario's first shock) is where the
    "after the shock" return and drawdown start, so that the control run can be read over the same hours.
    ``research=False`` writes the run's ledger to ``ledger`` (for ``rwabot report``).
    """
    from bot.fast import FastBacktest

    t0 = time.perf_counter()
    if ledger is not None and Path(ledger).exists():
        raise ConfigError(f"{ledger} exists: a stress run writes a fresh ledger")
    if ledger is not None and research:
        raise ConfigError("a research-mode run writes no ledger: pass research=False with a ledger")
    anchor = anchor_of(cfg, start)
    with tempfile.TemporaryDirectory(prefix="rwabot-stress-") as tmp:
        path = ledger or str(Path(tmp) / "ledger.sqlite")
        c = scenario_config(cfg, scenario, seed, anchor, book, path)
        run = FastBacktest(c, hours, start=anchor, pm=plugin_manager(), research=research,
                           state_dir=Path(tmp) / "state")  # fmt: skip
        hooks = ScenarioHooks(run, scenario, anchor, where=f"scenario {name or '?'}")
        free: list[int] = []
        try:
            while not run.done:
                hooks.apply(run.first + run.k * run.step_length)
                step = run.step()
                capped = np.asarray(step.targeted.target.capped, bool)
                labels = [x if x or not capped[i] else "cap" for i, x in enumerate(step.targeted.bound)]
                free.append(sum(1 for i, x in enumerate(labels) if x is None and step.w_after[i] > 0))
                if on_step is not None:
                    on_step(run, step)
        finally:
            hooks.restore()
            run.close_ledger()
        rf, rf_source = risk_free_on_base(run, c)
        s = run.summary(rf)
    nav = np.asarray(s.equity, float)
    run_hours = float(s.hours)
    step_h = run.step_length / HOUR
    windows = [sh.window(anchor)[0] for sh in scenario.shocks]
    mark = mark_hour if mark_hour is not None else (min(windows) if windows else float("nan"))
    if np.isfinite(mark) and mark / step_h <= len(nav) - 2:  # a mark past the run's end reads nothing
        i = max(int(math.floor(mark / step_h)), 0)  # nav[i]: the close of cycle i - 1, before cycle i trades
        tail = nav[i:]
        after_return = float(tail[-1] / tail[0] - 1.0)
        after_dd = float(np.max(1.0 - tail / np.maximum.accumulate(tail)))
        back = time_back(nav, i)
        ttr = back * step_h if back is not None else float("nan")
    else:
        after_return = after_dd = ttr = float("nan")
        back = None
    lo, hi = sharpe_ci(nav, run_hours, rf, run.ppy, draws=bootstrap_draws, seed=seed)
    held = np.asarray(run.disp["held"], float)
    held_all = np.asarray(run.disp["held_all"], float)
    costs = s.fees + s.slippage + s.gas + s.transfer_fees + s.transfer_gas
    ks = s.kill_switch
    ks_hour = ((datetime.fromisoformat(ks["time"]) - run.first).total_seconds() / 3600.0 if ks else float("nan"))
    row: dict[str, Any] = {
        "scenario": name,
        "seed": seed,
        "book": book.name,
        "hours": s.hours,
        "cycles": s.cycles,
        "start_nav": s.start_nav,
        "end_nav": s.end_nav,
        "total_return": s.total_return,
        "annual_return": s.annual_return,
        "annual_vol": s.annual_vol,
        "rf_annual": rf,
        "rf_source": rf_source,
        "sharpe": s.sharpe,
        "sharpe_ci_low": lo,
        "sharpe_ci_high": hi,
        "sharpe_zero": sharpe_of(nav, run_hours, 0.0, run.ppy),
        # nav[0] is the start, nav[k + 1] the close of cycle k: the steady book from the close of the build-up
        "sharpe_steady": steady_sharpe(nav, int(round(BUILDUP_HOURS / step_h)), step_h, rf, run.ppy),
        "max_drawdown": s.max_drawdown,
        "recovered": back is not None,
        "time_to_recover_h": ttr,
        "mark_hour": mark,
        "return_after_mark": after_return,
        "drawdown_after_mark": after_dd,
        "costs": costs,
        "costs_bps": costs / s.start_nav * 1e4,
        "fees": s.fees,
        "slippage": s.slippage,
        "transfer_fees": s.transfer_fees,
        "turnover_annual": s.turnover_annual,
        "rc_held_median": s.rc_dispersion_held_median,
        "rc_held_p90": s.rc_dispersion_held_p90,
        "rc_held_within_band": float(np.mean(held <= RC_BAND)) if len(held) else float("nan"),
        "rc_all_median": s.rc_dispersion_held_all_median,
        "rc_all_p90": s.rc_dispersion_held_all_p90,
        "rc_all_within_band": float(np.mean(held_all <= RC_BAND)) if len(held_all) else float("nan"),
        "free_assets_mean": float(np.mean(free)) if free else float("nan"),
        # the kill switch ([guard]) as the daemon would have tripped it: the run's hour, cause and action
        "kill_switch_hour": ks_hour,
        "kill_switch": f"{ks['cause']} ({ks['state']})" if ks else "",
        "events": json.dumps(dict(sorted(s.risk_events.items()))),
        "wall_s": time.perf_counter() - t0,
    }
    if keep_series:
        return RunResult(row, nav, [datetime.fromisoformat(t) for t in (s.equity_times or [])])
    return RunResult(row)


# -- the table --------------------------------------------------------------------------------------------


def verdict_sharpe(lo: float, hi: float, claim: float = SHARPE_CLAIM) -> str:
    """Whether the seeds' mean Sharpe is above ``claim``: by its interval, not by its point."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a"
    if lo > claim:
        return "holds"
    if hi < claim:
        return "fails"
    return "undecided"


def verdict_rc(median: float, p90: float, band: float = RC_BAND) -> str:
    """"holds" when 90% of a typical run's cycles are within the band, "median only" when half are."""
    if not np.isfinite(median):
        return "n/a"
    if np.isfinite(p90) and p90 <= band:
        return "holds"
    if median <= band:
        return "median only"
    return "fails"


def stress_table(rows: Sequence[Mapping[str, Any]], by: Sequence[str] = ("scenario", "book")) -> list[dict[str, Any]]:
    """One line per group (scenario × book by default) over the seeds: means with bootstrap intervals,
    medians of the per-run RC statistics, and the claims' verdicts."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():

        def col(name: str, rs: list[Mapping[str, Any]] = rs) -> np.ndarray:
            return np.array([float(r[name]) for r in rs], float)

        def nanmean(x: np.ndarray) -> float:
            return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")

        def nanmedian(x: np.ndarray) -> float:
            return float(np.median(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")

        sh = col("sharpe")
        lo, hi = mean_ci(sh)
        st = col("sharpe_steady") if all("sharpe_steady" in r for r in rs) else np.full(len(rs), np.nan)
        slo, shi = mean_ci(st)
        rec = np.array([bool(r["recovered"]) for r in rs])
        ttr = col("time_to_recover_h")
        line: dict[str, Any] = dict(zip(by, key))
        line.update(
            seeds=len(rs),
            total_return_mean=float(np.mean(col("total_return"))),
            return_after_mark_mean=nanmean(col("return_after_mark")),
            annual_vol_mean=float(np.mean(col("annual_vol"))),
            sharpe_mean=nanmean(sh),
            sharpe_ci_low=lo,
            sharpe_ci_high=hi,
            sharpe_above_claim=float(np.mean(sh > SHARPE_CLAIM)),
            sharpe_zero_mean=nanmean(col("sharpe_zero")),
            sharpe_steady_mean=nanmean(st),
            sharpe_steady_ci_low=slo,
            sharpe_steady_ci_high=shi,
            rf_mean=float(np.mean(col("rf_annual"))),
            max_drawdown_median=float(np.median(col("max_drawdown"))),
            drawdown_after_mark_median=nanmedian(col("drawdown_after_mark")),
            recovered=int(rec.sum()),
            time_to_recover_median_h=float(np.median(ttr[rec])) if rec.any() else float("nan"),
            rc_held_median=nanmedian(col("rc_held_median")),
            rc_held_p90=nanmedian(col("rc_held_p90")),
            rc_held_within_band=nanmean(col("rc_held_within_band")),
            rc_all_median=nanmedian(col("rc_all_median")),
            rc_all_p90=nanmedian(col("rc_all_p90")),
            free_assets_mean=nanmean(col("free_assets_mean")),
            costs_bps_mean=float(np.mean(col("costs_bps"))),
            kill_switch_runs=sum(1 for r in rs if r.get("kill_switch")),
        )
        line["sharpe_verdict"] = verdict_sharpe(lo, hi)
        line["sharpe_steady_verdict"] = verdict_sharpe(slo, shi)
        line["rc_verdict"] = verdict_rc(line["rc_held_median"], line["rc_held_p90"])
        out.append(line)
    return out


def _f(x: float, spec: str) -> str:
    return format(x, spec) if isinstance(x, int | float) and np.isfinite(x) else "–"


def table_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """The stress table as Markdown (docs/stress.md, the command's output)."""
    head = ("| scenario | book | seeds | return | after shock | Sharpe mean [95% CI] | Sharpe > 1.5 | "
            "Sharpe after build-up [95% CI] | Sharpe vs 0 | max DD (median) | recovered | time to recover (median) | "
            "RC held median / p90 | cycles RC ≤ 5% | RC all median / p90 | free assets | costs (bps) | "
            "kill switch tripped |")  # fmt: skip
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for r in table:
        lines.append(
            f"| {r['scenario']} | {r['book']} | {r['seeds']} | {_f(r['total_return_mean'], '.2%')} | "
            f"{_f(r['return_after_mark_mean'], '.2%')} | {_f(r['sharpe_mean'], '.2f')} "
            f"[{_f(r['sharpe_ci_low'], '.2f')}, {_f(r['sharpe_ci_high'], '.2f')}] | "
            f"{r['sharpe_verdict']} ({_f(r['sharpe_above_claim'], '.0%')} of seeds) | "
            f"{_f(r['sharpe_steady_mean'], '.2f')} [{_f(r['sharpe_steady_ci_low'], '.2f')}, "
            f"{_f(r['sharpe_steady_ci_high'], '.2f')}] {r['sharpe_steady_verdict']} | "
            f"{_f(r['sharpe_zero_mean'], '.2f')} | "
            f"{_f(r['max_drawdown_median'], '.2%')} | {r['recovered']}/{r['seeds']} | "
            f"{_f(r['time_to_recover_median_h'], '.0f')} h | {_f(r['rc_held_median'], '.3f')} / "
            f"{_f(r['rc_held_p90'], '.3f')} ({r['rc_verdict']}) | {_f(r['rc_held_within_band'], '.0%')} | "
            f"{_f(r['rc_all_median'], '.3f')} / {_f(r['rc_all_p90'], '.3f')} | {_f(r['free_assets_mean'], '.1f')} | "
            f"{_f(r['costs_bps_mean'], '.1f')} | {r.get('kill_switch_runs', 0)}/{r['seeds']} |"
        )
    return "\n".join(lines)


__all__ = [
    "BOOKS",
    "CONTROL",
    "EQUAL_WEIGHT",
    "INVERSE_VOL",
    "STRATEGY",
    "Book",
    "RunResult",
    "ScenarioHooks",
    "anchor_of",
    "data_shocks",
    "mean_ci",
    "time_back",
    "run_scenario",
    "scenario_config",
    "sharpe_ci",
    "sharpe_of",
    "stress_table",
    "table_markdown",
]
