"""The compiled research loop (plugins/optimizers/fast_loop.py) must be the Python stages, not an approximation of them.

Why these tests: the kernel re-implements the cycle (stream update, bounds, erc's target, the policies,
plan_orders, the fills, the book) for the configurations it accepts, so its only licence is to give what
the Python path gives on the same run. Each case runs the same config both ways, cycle by cycle for the
Python path (``FastBacktest.step``), and compares every cycle's target and held weights and NAV, and the
whole summary. They agree to the last bit on this machine (the kernel sums in numpy's order and calls the
same BLAS); the tolerances below are the issue's (NAV 1e-6 relative, weights 1e-8) tightened by orders of
magnitude, so a real divergence (a band decision, a qty step, a skipped order) cannot hide in them. A
configuration the kernel does not implement must be declined, with a reason, and run by the Python path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.config import Config, parse_config
from bot.errors import ConfigError, OptimizerError
from bot.fast import FastBacktest, run_fast_backtest
from plugins.optimizers import fast_loop as fk
from tests.conftest import ROOT, paper_dict

sys.path.insert(0, str(ROOT / "bench"))
import backtest as bench  # noqa: E402  (the benchmark's 20-asset case)


def one_venue(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """The embedded offline book (8 assets, its data, the risk_parity strategy: ewma + erc + a risk band)
    on one paper venue: the kernel implements one venue (two need venue budgets and funding)."""
    venues = {"broker": {"plugin": "paper", "options": {"initial_cash": 1_000_000.0, "fee_bps": 5.0}}}
    data = paper_dict(tmp_path, **overrides)
    data["venues"] = venues  # paper_dict would merge them with the embedded two
    data.pop("funding", None)
    for a in data["assets"].values():
        a["venue"] = "broker"
    return data


def both_ways(cfg: Config, hours: int) -> tuple[FastBacktest, FastBacktest, np.ndarray, np.ndarray]:
    compiled = FastBacktest(cfg, hours, research=True)
    assert compiled.run_compiled() is None, compiled.engine_note
    assert compiled.engine == "compiled" and compiled.done
    python = FastBacktest(cfg, hours, research=True)
    targets, held = [], []
    while not python.done:
        s = python.step()
        targets.append(s.targeted.target.weights)
        held.append(s.w_after)
    return compiled, python, np.array(targets), np.array(held)


def assert_same_run(compiled: FastBacktest, python: FastBacktest, targets: np.ndarray, held: np.ndarray) -> dict:
    c = compiled.compiled
    diffs = {
        "target_w": float(np.abs(c.target_w - targets).max()),
        "held_w": float(np.abs(c.held_w - held).max()),
        "nav_rel": float(np.max(np.abs(compiled.nav_series / python.nav_series - 1.0))),
    }
    assert diffs["target_w"] <= 1e-10 and diffs["held_w"] <= 1e-10, diffs
    assert diffs["nav_rel"] <= 1e-9, diffs
    a, b = compiled.summary(), python.summary()
    assert a.end_nav == pytest.approx(b.end_nav, rel=1e-9)
    for f in ("traded", "fees", "slippage", "steady_turnover_annual", "sharpe", "rc_dispersion_held_median",
              "rc_dispersion_held_p90", "cash_share_median"):  # fmt: skip
        va, vb = getattr(a, f), getattr(b, f)
        assert va == pytest.approx(vb, rel=1e-9, abs=1e-12, nan_ok=True), f
    assert a.risk_events == b.risk_events
    assert list(a.risk_events) == list(b.risk_events)  # same kinds, in the order they first happened
    assert a.bounds == b.bounds and list(a.bounds or {}) == list(b.bounds or {})
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    for k in da:  # and every other field of the summary (rounding only)
        if isinstance(da[k], float) and math.isfinite(da[k]):
            assert da[k] == pytest.approx(db[k], rel=1e-9, abs=1e-12), k
        elif not isinstance(da[k], float):
            ja, jb = json.dumps(da[k], default=float), json.dumps(db[k], default=float)
            assert ja == jb or np.allclose(np.asarray(da[k], float), np.asarray(db[k], float), rtol=1e-9,
                                           atol=1e-12), k  # fmt: skip
    return diffs


def test_the_offline_book_on_one_venue_runs_compiled_as_in_python(tmp_path: Path) -> None:
    # 8 assets (4 traditional, 4 tokenized with their wider spreads and thinner volume), 1,500 hours:
    # the band policy on risk shares decides most hours not to trade, so its decision is tested too
    cfg = parse_config(one_venue(tmp_path), "test")
    compiled, python, targets, held = both_ways(cfg, 1_500)
    diffs = assert_same_run(compiled, python, targets, held)
    out = compiled.compiled.out
    traded = out[:, fk.TRADED] > 0
    assert 0 < traded.sum() < len(traded) / 2  # the band both trades and holds
    print("8 assets, 1,500 h:", diffs)


def test_the_bench_case_runs_compiled_as_in_python(tmp_path: Path) -> None:
    # 20 assets, EWMA + ERC with 15% caps, full rebalance every hour (bench/backtest.py), 1,000 hours
    cfg = bench.config(20, str(tmp_path / "ledger.sqlite"), 0.15)
    compiled, python, targets, held = both_ways(cfg, 1_000)
    diffs = assert_same_run(compiled, python, targets, held)
    c = compiled.compiled
    assert np.nanmax(c.erc_dispersion()) <= 1e-8  # ERC dev at every step
    assert (c.labels == fk.CAP).any()  # the 15% caps bind
    print("20 assets, 1,000 h:", diffs)


@pytest.mark.parametrize(
    "policy",
    [
        {"plugin": "band", "options": {"band": 0.02, "to": "edge", "measure": "weight"}},
        {"plugin": "band", "options": {"band": 0.1, "to": "edge", "measure": "relative"}},
        {"plugin": "band", "options": {"band": 0.05, "measure": "risk"}},
    ],
)
def test_every_band_variant_and_binding_liquidity_caps(tmp_path: Path, policy: dict) -> None:
    # a book large for the tokenized assets' volume: L_i binds (the infeasible branch of optimize, where
    # caps leave cash), holdings above a moved L_i are kept (the re-planned aim), orders are clipped to the
    # participation cap; demeaned ewma, a cash buffer of 5% and a floor
    data = one_venue(tmp_path, policy=policy, forecaster={"plugin": "ewma", "options": {"half_life_hours": 48.0,
                                                                                        "demean": True}},
                     optimizer={"plugin": "erc", "options": {}})  # fmt: skip
    data["venues"]["broker"]["options"]["initial_cash"] = 1e9
    data["risk"]["cash_buffer"] = 0.05
    data["assets"]["SPY"].update(lower=0.05, upper=0.3)
    cfg = parse_config(data, "test")
    compiled, python, targets, held = both_ways(cfg, 400)
    assert_same_run(compiled, python, targets, held)
    out = compiled.compiled.out
    assert (out[:, fk.INFEASIBLE] > 0).any(), "the liquidity caps never left cash"
    assert (out[:, fk.AIM_REPLANNED] > 0).any(), "no holding was ever kept above its moved cap"
    assert python.counted.get("order_skipped", 0) > 0 and python.counted.get("liquidity_cap", 0) > 0


def ledger_tables(path: Path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(path)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: db.execute(f'SELECT * FROM "{t}"').fetchall() for t in names}
    finally:
        db.close()


def lean(d: Path) -> dict[str, Any]:
    """No cash buffer, coarse lots, a large minimum order and a brutal impact on a large book: the sells
    raise less than planned, so buys are cut and some are canceled at execution; VNQ has a floor that binds."""
    data = one_venue(d, policy={"plugin": "full"})
    data["risk"].update(cash_buffer=0.0, min_trade_weight=0.0)
    data["venues"]["broker"]["options"].update(initial_cash=1e8, min_notional=1000.0, qty_step=1.0, fee_bps=30.0,
                                               impact_coef=100.0)  # fmt: skip
    data["assets"]["VNQ"]["lower"] = 0.2
    return data


@pytest.mark.parametrize("case", ["offline-8", "bench-20", "lean-8"])
def test_the_ledger_mode_writes_the_rows_the_python_loop_writes(tmp_path: Path, case: str) -> None:
    # --fast with the kernel: the same rows in every table, byte for byte (cycles with their decisions and
    # dispersions, targets with their bound labels, orders, canceled buys, fills, snapshots), flushed in
    # batches as the Python loop flushes them
    books = {}
    for mode in ("python", "compiled"):
        d = tmp_path / mode
        d.mkdir()
        if case == "offline-8":
            cfg = parse_config(one_venue(d), "test")
        elif case == "lean-8":
            cfg = parse_config(lean(d), "test")
        else:
            cfg = bench.config(20, str(d / "ledger.sqlite"), 0.15)
        s = run_fast_backtest(cfg, 150, compiled=mode == "compiled", flush_every=64)
        books[mode] = (s, ledger_tables(Path(cfg.bot.ledger)))
    (sp, tp), (sc, tc) = books["python"], books["compiled"]
    assert repr(sc) == repr(sp)
    assert tp.keys() == tc.keys()
    for table in tp:
        assert tc[table] == tp[table], table
    assert len(tp["cycle"]) == 151 and len(tp["orders"]) > 0 and len(tp["fill"]) > 0
    if case == "lean-8":
        statuses = {r[9] for r in tp["orders"]}
        bounds = {r[-1] for r in tp["target"]}
        assert "canceled" in statuses and "floor" in bounds, (statuses, bounds)


def crash(d: Path, **guard: Any) -> dict[str, Any]:
    """The one-venue book, every price dropped 35% at hour 30 (tests/bot/test_fast_guard.py's crash)."""
    from tests.conftest import START

    data = one_venue(d)
    data["data"] = {"plugin": "scenario", "options": {
        "anchor": START.isoformat(), "base": {"plugin": "simulated", "options": {"seed": 7}},
        "shocks": [{"kind": "drop", "start_hour": 30, "hours": 1, "depth": 0.35, "steps": 1}]}}  # fmt: skip
    data["guard"] = guard
    return data


@pytest.mark.parametrize("action", ["halt", "reduce_only", "flatten"])
def test_the_kill_switch_trips_in_the_kernel_as_in_python(tmp_path: Path, action: str) -> None:
    # the crash trips the drawdown rule at hour 30; from then on the restricted weights, the trading_state
    # row and its event, and every other row are the Python loop's, byte for byte
    books = {}
    for mode in ("python", "compiled"):
        d = tmp_path / mode
        d.mkdir()
        cfg = parse_config(crash(d, max_drawdown=0.25, action=action), "test")
        run = FastBacktest(cfg, 60, flush_every=16)
        try:
            if mode == "compiled":
                assert run.run_compiled() is None, run.engine_note
            while not run.done:
                run.step()
        finally:
            run.close_ledger()
        books[mode] = (run.summary(), ledger_tables(Path(cfg.bot.ledger)))
    (sp, tp), (sc, tc) = books["python"], books["compiled"]
    assert sc.kill_switch is not None and sc.kill_switch["cause"] == "drawdown" and sc.kill_switch["state"] == action
    assert repr(sc) == repr(sp)
    for table in tp:
        assert tc[table] == tp[table], table
    assert len(tp["trading_state"]) == 1
    cycle_of = {r[0]: r[1] for r in tp["cycle"]}  # id -> key
    after = [r for r in tp["orders"] if cycle_of[r[2]] >= "2026-03-02T06:00Z"]
    assert all(r[6] == "sell" for r in after) and (bool(after) == (action != "halt"))


def test_the_sigma_ceiling_trips_in_the_kernel_as_in_python(tmp_path: Path) -> None:
    # the crash's return enters the EWMA at hour 30: the held book's forecast σ_p jumps past 5%/yr then
    cfg = parse_config(crash(tmp_path, sigma_ceiling_annual=0.05, action="reduce_only"), "test")
    compiled, python, targets, held = both_ways(cfg, 300)
    assert_same_run(compiled, python, targets, held)
    assert python.tripped is not None and python.tripped["cause"] == "sigma"
    assert python.tripped["time"] == "2026-03-02T06:00:00+00:00"
    assert compiled.tripped == python.tripped


def test_research_run_uses_the_kernel_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config(one_venue(tmp_path), "test")
    seen: list[int] = []
    with caplog.at_level(logging.INFO, logger="bot.fast"):
        s = run_fast_backtest(cfg, 48, research=True, on_cycle=seen.append)
    assert "compiled loop" in caplog.text
    assert seen == list(range(49))  # on_cycle still hears of every cycle
    plain = run_fast_backtest(cfg, 48, research=True, compiled=False)
    assert repr(s) == repr(plain)


def test_configurations_the_kernel_does_not_implement_are_declined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the embedded book itself: two venues (venue budgets, funding)
    two = FastBacktest(parse_config(paper_dict(tmp_path / "a"), "test"), 24, research=True)
    assert "2 venues" in (two.run_compiled() or "") and two.engine == "python" and two.k == 0
    # another forecaster
    lw = one_venue(tmp_path / "b", forecaster={"plugin": "ledoit_wolf", "options": {}})
    why = FastBacktest(parse_config(lw, "test"), 24, research=True).run_compiled()
    assert why is not None and "ledoit_wolf" in why
    # ewma deseasonalised (no stream)
    ds = one_venue(tmp_path / "c", forecaster={"plugin": "ewma", "options": {"deseasonalise": True}})
    assert "deseasonalise" in (FastBacktest(parse_config(ds, "test"), 24, research=True).run_compiled() or "")
    # a policy passed in (the RL environment's), and a run already started
    custom = FastBacktest(parse_config(one_venue(tmp_path / "d"), "test"), 24, research=True, policy=object())
    assert "policy" in (custom.run_compiled() or "")
    started = FastBacktest(parse_config(one_venue(tmp_path / "f"), "test"), 24, research=True)
    started.step()
    assert "started" in (started.run_compiled() or "")
    # declined: run_fast_backtest falls back on the Python stages and logs why (``--research -v``) ...
    sample = parse_config(one_venue(tmp_path / "e", forecaster={"plugin": "sample", "options": {}}), "test")
    with caplog.at_level(logging.INFO, logger="bot.fast"):
        s = run_fast_backtest(sample, 30, research=True)
    assert "declines" in caplog.text and "'sample'" in caplog.text
    assert repr(s) == repr(run_fast_backtest(sample, 30, research=True, compiled=False))
    # ... unless the caller insists on the kernel
    with pytest.raises(ConfigError, match="compiled backtest loop declines"):
        run_fast_backtest(sample, 30, research=True, compiled=True)


def test_where_ercs_compiled_path_declines_its_numpy_method_answers_inside_the_loop(tmp_path: Path) -> None:
    # the offline book's exchange account alone (250,000, 2 bps) building up from cash: from a warm start
    # far from the target erc's coordinate descent declines in some hours, and erc's numpy method (called
    # from the loop in object mode) answers them, as it does on the Python path
    data = one_venue(tmp_path)
    data["venues"]["broker"]["options"].update(initial_cash=250_000.0, fee_bps=2.0)
    cfg = parse_config(data, "test")
    compiled, python, targets, held = both_ways(cfg, 300)
    assert_same_run(compiled, python, targets, held)
    assert compiled.compiled.out[:, fk.ERC_NUMPY].sum() >= 1, "erc's compiled path never declined"


def test_a_cycle_the_kernel_cannot_finish_leaves_the_run_to_python(tmp_path: Path) -> None:
    # erc with one iteration allowed: its compiled path declines at the first cycle and its numpy method
    # raises (no convergence), which the Python path raises too: the kernel stops there, says so, and
    # leaves the run untouched for step()
    data = one_venue(tmp_path, optimizer={"plugin": "erc", "options": {"max_iter": 1}})
    run = FastBacktest(parse_config(data, "test"), 24, research=True)
    why = run.run_compiled()
    assert why is not None and why.startswith("cycle 0 ") and "OptimizerError" in why
    assert run.k == 0 and run.engine == "python" and run.compiled is None
    assert float(np.abs(run.pos).sum()) == 0.0 and run.cash == {"broker": 1_000_000.0}
    with pytest.raises(OptimizerError):
        run.step()
