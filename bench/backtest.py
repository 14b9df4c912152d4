"""Backtest speed: rwabot's fast backtest against bt and vectorbt on the same hourly prices.

The job (issue 17): 20 assets, hourly bars, an EWMA covariance (half-life 72 h) and a long-only equal-risk
(ERC) target with caps, rebalanced every hour (the ``full`` policy), orders planned, filled by the paper
fill model and booked. rwabot runs it: the daemon path (the Engine under the scheduler, ``rwabot
backtest``) on a short prefix; the fast path (``rwabot backtest --fast``: every row written to SQLite in
batches) and the research mode (``--research``: no rows, the summary only), each two ways: the compiled
loop (plugins/optimizers/fast_loop.py, what both use for this configuration) and the Python stages (bot/fast.py's
``step()``, ``compiled=False``: what any configuration the loop declines runs). The peers, in the same
process on the same close prices:

* bt 1.x: ``RunAlways → SelectAll → WeighERC(lookback 720 h) → Rebalance`` (bt's own covariance and ERC);
* vectorbt: ``Portfolio.from_order_func`` with Python callbacks (``use_numba=False``) that keep the same
  recursive EWMA and solve the ERC with rwabot's compiled solver each hour (so the comparison is of the
  frameworks' per-step overhead, not of two ERC solvers).

The peers are slow, so by default they run on a prefix (``--peer-hours``) and are compared per cycle;
``--peer-hours 0`` runs them on the whole horizon. Printed: the machine and its load, ms/cycle and ratios,
the compiled research run split into setup / loop / summary, the RC dispersion of the ERC solution at every
step of the compiled loop (max over the run), the Python path's profile by stage and the compiled fast
path's (loop, row building, SQLite), and the RSS of the Python --fast run at cycles 1,000 and 10,000.

    python bench/backtest.py                      # 20 assets × 43,800 h
    python bench/backtest.py --hours 4380 --peer-hours 720
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import parse_config  # noqa: E402

DATA_START = datetime(2020, 1, 1, tzinfo=UTC)
HIST = 720


def universe(n: int, seed: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append({"name": f"A{i:02d}", "kind": "traditional", "price": float(rng.uniform(20, 400)),
                    "annual_vol": float(rng.uniform(0.05, 0.45)), "annual_drift": float(rng.uniform(-0.02, 0.08)),
                    "mean_hourly_volume": float(rng.uniform(5e4, 5e5))})  # fmt: skip
    return out


def config(n: int, ledger: str, cap: float):
    assets = universe(n)
    data = {
        "bot": {"name": "bench", "mode": "paper", "ledger": ledger, "quote": "USD"},
        "clock": {"kind": "simulated", "start": DATA_START + timedelta(hours=HIST + 24), "speed": 0.0},
        "risk": {
            "history_hours": HIST,
            "participation": 0.10,
            "liquidity_lookback_hours": 168,
            "liquidity_horizon_hours": 24,
            "cash_buffer": 0.01,
            "min_trade_weight": 0.0005,
            "vol_threshold_annual": 5.0,
        },  # fmt: skip
        "forecaster": {"plugin": "ewma", "options": {"half_life_hours": 72.0}},
        "optimizer": {"plugin": "erc"},
        "policy": {"plugin": "full"},
        "data": {"plugin": "simulated", "options": {"seed": 11, "start": DATA_START.isoformat(), "assets": assets}},
        "venues": {"broker": {"plugin": "paper", "options": {"initial_cash": 1_000_000.0, "fee_bps": 2.0}}},
        "assets": {a["name"]: {"venue": "broker", "upper": cap} for a in assets},
    }
    return parse_config(data, "bench/backtest.py")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def prices(cfg, hours: int):
    """The close prices the run sees (warm-up window included), from the same data source."""
    from bot.clock import SimulatedClock
    from bot.components import ComponentContext
    from bot.cycle import resolve_components
    from bot.plugins import Registry, make_plugin_manager

    clock = SimulatedClock(cfg.clock.start, 0.0)
    ctx = ComponentContext(clock, Path(tempfile.mkdtemp()), tuple(cfg.asset_names), lambda e: None)
    r = resolve_components(cfg, Registry(make_plugin_manager()), ctx)
    data = r.sections["data"].build(ctx)
    last = cfg.clock.start + timedelta(hours=hours - 1)
    bars = data.bars(tuple(cfg.asset_names), last, HIST + hours)
    import pandas as pd

    idx = pd.DatetimeIndex([t.replace(tzinfo=None) for t in bars.times])
    return pd.DataFrame(bars.close, index=idx, columns=list(cfg.asset_names))


def run_bt(close, hours: int) -> float:
    import bt
    import pandas as pd

    px = close.iloc[-(hours + HIST) :]
    strat = bt.Strategy("erc", [bt.algos.RunAfterDate(px.index[HIST]), bt.algos.SelectAll(),
                                bt.algos.WeighERC(lookback=pd.DateOffset(hours=HIST), lag=pd.DateOffset(hours=0)),
                                bt.algos.Rebalance()])  # fmt: skip
    # WeighERC needs the warm-up window in its universe: it gets the whole frame
    test = bt.Backtest(strat, px, initial_capital=1_000_000.0, progress_bar=False)
    t = time.perf_counter()
    bt.run(test)
    return time.perf_counter() - t


def run_vbt(close, hours: int) -> float:
    import vectorbt as vbt
    from vectorbt.portfolio.enums import Direction, SizeType
    from vectorbt.portfolio.nb import order_nb

    from plugins.optimizers.erc import solve_risk_budget

    px = close.iloc[-(hours + HIST) :].to_numpy()
    n = px.shape[1]
    r = np.diff(np.log(px), axis=0)
    lam = 0.5 ** (1 / 72.0)
    state = {"s": None, "w": np.full(n, 1.0 / n)}

    def pre_segment(c):
        i = c.i
        if i < HIST:
            return (np.zeros(n),)
        if state["s"] is None:
            age = np.arange(HIST - 1, -1, -1, dtype=float)
            wt = lam**age
            rr = r[i - HIST : i]
            state["s"] = (rr * wt[:, None]).T @ rr / wt.sum()
        else:
            x = r[i - 1]
            state["s"] = lam * state["s"] + (1 - lam) * np.outer(x, x)
        res = solve_risk_budget(state["s"], upper=np.full(n, 0.15), w0=state["w"])
        state["w"] = res.weights
        return (res.weights * 0.99,)

    def order_func(c, w):
        if c.i < HIST:
            return vbt.portfolio.enums.NoOrder
        return order_nb(size=float(w[c.col]), price=c.close[c.i, c.col], size_type=SizeType.TargetPercent,
                        direction=Direction.LongOnly, fees=0.0002)  # fmt: skip

    t = time.perf_counter()
    vbt.Portfolio.from_order_func(px, order_func, pre_segment_func_nb=pre_segment, group_by=np.zeros(n, int),
                                  cash_sharing=True, init_cash=1_000_000.0, use_numba=False)  # fmt: skip
    return time.perf_counter() - t


def _stage_time(st: pstats.Stats, funcs: tuple[str, ...], file_part: str = "", caller: str = "") -> float:
    """Cumulative seconds of the functions named ``funcs`` (in files containing ``file_part``); with ``caller``,
    only the time spent in them when called from a function of that name."""
    total = 0.0
    for k, v in st.stats.items():  # type: ignore[attr-defined]
        if k[2] in funcs and file_part in k[0]:
            total += sum(c[3] for ck, c in v[4].items() if ck[2] == caller) if caller else v[3]
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=int, default=20)
    ap.add_argument("--hours", type=int, default=43_800)
    ap.add_argument("--peer-hours", type=int, default=2_190, help="hours the peers run (0: all)")
    ap.add_argument("--daemon-hours", type=int, default=200, help="hours of the daemon path (0: skip)")
    ap.add_argument("--cap", type=float, default=0.15)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-python", action="store_true", help="skip the Python-stage runs of --research and --fast")
    a = ap.parse_args()
    from bot.backtest import run_backtest
    from bot.fast import FastBacktest, run_fast_backtest
    from plugins.optimizers.fast_loop import D_TARGET, ERC_DEV

    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, {platform.system()} {platform.release()}; load average "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) at the start")  # fmt: skip
    print(f"job: {a.assets} assets × {a.hours:,} hourly cycles, EWMA(72 h) + ERC (caps {a.cap:.0%}), full rebalance")
    tmp = Path(tempfile.mkdtemp(prefix="rwabot-bench-"))
    cfg = config(a.assets, str(tmp / "warm.sqlite"), a.cap)
    run_fast_backtest(cfg, 48, research=True)  # compile (or load) the kernels, import everything
    run_fast_backtest(cfg, 48, research=True, compiled=False)
    results: dict[str, float] = {}

    # research mode, compiled loop (plugins/optimizers/fast_loop.py): setup, the loop, the summary
    cfg = config(a.assets, str(tmp / "research.sqlite"), a.cap)
    t = time.perf_counter()
    run = FastBacktest(cfg, a.hours, research=True)
    t_setup = time.perf_counter()
    why = run.run_compiled()
    t_loop = time.perf_counter()
    if why is not None:
        raise SystemExit(f"the compiled loop declined: {why}")
    s_res = run.summary()
    results["research"] = time.perf_counter() - t
    split = (t_setup - t, t_loop - t_setup, time.perf_counter() - t_loop)
    out = run.compiled.out
    dev_rc, dev_erc = out[:, D_TARGET], out[:, ERC_DEV]

    # research mode, the Python stages
    if not a.no_python:
        cfg = config(a.assets, str(tmp / "research-py.sqlite"), a.cap)
        t = time.perf_counter()
        s_res_py = run_fast_backtest(cfg, a.hours, research=True, compiled=False)
        results["research_py"] = time.perf_counter() - t

    # fast path with the ledger, the Python stages; memory sampled along the way
    mem: dict[int, float] = {}
    if not a.no_python:
        cfg = config(a.assets, str(tmp / "fast-py.sqlite"), a.cap)

        def on_cycle(k: int) -> None:
            if k + 1 in (1_000, 10_000):
                mem[k + 1] = current_rss_mb()

        t = time.perf_counter()
        s_fast_py = run_fast_backtest(cfg, a.hours, on_cycle=on_cycle, compiled=False)
        results["fast_py"] = time.perf_counter() - t

    # fast path with the ledger, compiled loop
    cfg = config(a.assets, str(tmp / "fast.sqlite"), a.cap)
    rss_before = current_rss_mb()
    t = time.perf_counter()
    s_fast = run_fast_backtest(cfg, a.hours, compiled=True)
    results["fast"] = time.perf_counter() - t
    rss_compiled = current_rss_mb()
    from bot.ledger import Ledger

    led = Ledger(cfg.bot.ledger)
    devs = [c.rc_dispersion_target for c in led.cycles() if c.rc_dispersion_target is not None]
    nrows = len(led.cycles())
    led.close()

    if a.daemon_hours:
        cfg = config(a.assets, str(tmp / "daemon.sqlite"), a.cap)
        t = time.perf_counter()
        run_backtest(cfg, a.daemon_hours)
        results["daemon"] = (time.perf_counter() - t) / a.daemon_hours * a.hours

    ph = a.peer_hours or a.hours
    close = prices(config(a.assets, str(tmp / "p.sqlite"), a.cap), a.hours)
    try:
        results["bt"] = run_bt(close, ph) / ph * a.hours
    except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, not fatal
        print(f"bt failed: {type(exc).__name__}: {exc}")
    try:
        results["vectorbt"] = run_vbt(close, ph) / ph * a.hours
    except Exception as exc:  # noqa: BLE001
        print(f"vectorbt failed: {type(exc).__name__}: {exc}")

    per = {k: v / a.hours * 1e3 for k, v in results.items()}
    print(f"\n{'path':<44}{'whole run (s)':>14}{'ms/cycle':>10}{'bt / this':>11}{'vbt / this':>11}")
    label = {"research": "rwabot --research, compiled loop", "research_py": "rwabot --research, Python stages",
             "fast": "rwabot --fast (ledger), compiled loop", "fast_py": "rwabot --fast (ledger), Python stages",
             "daemon": f"rwabot daemon path (from {a.daemon_hours} h)", "bt": f"bt WeighERC (from {ph:,} h)",
             "vectorbt": f"vectorbt from_order_func (from {ph:,} h)"}  # fmt: skip
    for k in ("research", "research_py", "fast", "fast_py", "daemon", "bt", "vectorbt"):
        if k in results:
            rb = results.get("bt", float("nan")) / results[k]
            rv = results.get("vectorbt", float("nan")) / results[k]
            print(f"{label[k]:<44}{results[k]:>14.2f}{per[k]:>10.3f}{rb:>11.1f}{rv:>11.1f}")
    print(f"\ncompiled research run: setup (bars, arrays) {split[0]:.2f} s, loop {split[1]:.2f} s "
          f"({split[1] / a.hours * 1e6:.1f} µs/cycle), summary {split[2]:.2f} s")  # fmt: skip
    print(f"ERC at every step of the compiled loop ({np.isfinite(dev_rc).sum():,} solves): RC dispersion on the free "
          f"assets max {np.nanmax(dev_rc):.2e}, median {np.nanmedian(dev_rc):.2e}; erc's own dev max "
          f"{np.nanmax(dev_erc):.2e}")  # fmt: skip
    print(f"fast path (compiled): {nrows:,} cycles booked; ERC dev (RC dispersion of the optimizer's weights on free "
          f"assets) max {max(devs):.2e}, median {np.median(devs):.2e}; RSS {rss_before:.1f} MB before it, "
          f"{rss_compiled:.1f} MB after")  # fmt: skip
    print(
        f"research vs fast summary: end NAV {s_res.end_nav:,.2f} vs {s_fast.end_nav:,.2f}; "
        f"Sharpe {s_res.sharpe:.3f} vs {s_fast.sharpe:.3f}; traded {s_res.traded:,.0f} vs {s_fast.traded:,.0f}"
    )
    if not a.no_python:
        same = repr(s_res) == repr(s_res_py) and repr(s_fast) == repr(s_fast_py)
        print(f"compiled vs Python stages: end NAV {s_res.end_nav:,.6f} vs {s_res_py.end_nav:,.6f} "
              f"({'identical summaries' if same else 'summaries differ'})")  # fmt: skip
    if mem:
        m1, m2 = mem.get(1_000, float("nan")), mem.get(10_000, float("nan"))
        print(f"RSS of the Python --fast run at cycle 1,000: {m1:.1f} MB; at 10,000: {m2:.1f} MB "
              f"({(m2 / m1 - 1):+.1%}); peak {rss_mb():.1f} MB")  # fmt: skip
    if not a.no_profile:
        hours = min(a.hours, 4_380)
        cfg = config(a.assets, str(tmp / "prof.sqlite"), a.cap)
        pr = cProfile.Profile()
        pr.enable()
        run_fast_backtest(cfg, hours, research=True, compiled=False)
        pr.disable()
        st = pstats.Stats(pr)
        stages = {"forecast (EwmaStream.update + validate)": ("update", "validate"),
                  "bounds_stage": ("bounds_stage",), "target_stage (erc)": ("target_stage",),
                  "decide_stage": ("decide_stage",), "plan_orders": ("plan_orders",),
                  "held_dispersion (book)": ("held_dispersion",)}  # fmt: skip
        total = _stage_time(st, ("run_fast_backtest",))
        print(f"\nprofile of --research, Python stages, on {hours:,} h (cProfile, {total:.2f} s):")
        for name, funcs in stages.items():
            cum = _stage_time(st, funcs)
            print(f"  {name:<42}{cum:>7.2f} s  {cum / total:>6.1%}")
        cfg = config(a.assets, str(tmp / "prof-fast.sqlite"), a.cap)
        pr = cProfile.Profile()
        pr.enable()
        run_fast_backtest(cfg, hours, compiled=True)
        pr.disable()
        st = pstats.Stats(pr)
        total = _stage_time(st, ("run_fast_backtest",))
        setup = _stage_time(st, ("__init__",), "bot/fast.py", "run_fast_backtest")
        loop = _stage_time(st, ("run_cycles",))
        book = _stage_time(st, ("_book_compiled",))
        flush = _stage_time(st, ("flush",), "bot/fast.py")
        flush_in_book = _stage_time(st, ("flush",), "bot/fast.py", "_book_compiled")
        rest = total - setup - loop - book + flush_in_book - flush
        print(f"profile of --fast, compiled loop, on {hours:,} h (cProfile, {total:.2f} s):")
        for name, cum in (("setup (bars, volatilities, components)", setup), ("compiled loop (every stage)", loop),
                          ("rows built from its arrays", book - flush_in_book),
                          ("rows inserted (SQLite executemany)", flush),
                          ("rest (summary, ledger close)", rest)):  # fmt: skip
            print(f"  {name:<42}{cum:>7.2f} s  {cum / total:>6.1%}")


if __name__ == "__main__":
    main()
