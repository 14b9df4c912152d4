"""Stress runs (bot/stress.py, bot/shocks.py) through the fast backtest's real cycle, and their statistics.

Why these tests: a stress table is a claim about what the book did under a shock, so each venue shock is
checked on the book itself (an outage trades nothing and moves no cash on its venue, a depeg marks that
venue's cash by exactly its price and gives it back, wider spreads are in force only inside their window,
a stale asset is held), the baselines must run on the very same paths, and the statistics (Sharpe, its
bootstrap intervals, the time back to the pre-shock NAV, the verdicts) are checked against cases whose
answer is known. The runs are short (96 hours on a 200-hour window) so the whole file stays fast.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.backtest import summary_of
from bot.config import Config, parse_config
from bot.domain import Forecast, GroupBound
from bot.errors import ConfigError, InfeasibleBoundsError
from bot.shocks import Scenario, load_scenarios, parse_scenarios, pick
from bot.stress import (
    BOOKS,
    EQUAL_WEIGHT,
    INVERSE_VOL,
    mean_ci,
    run_scenario,
    sharpe_ci,
    sharpe_of,
    stress_table,
    table_markdown,
    time_back,
    verdict_rc,
    verdict_sharpe,
)
from plugins.optimizers.static import StaticConfig, StaticOptimizer
from tests.conftest import ROOT, paper_dict

HOURS = 96
NAMED = {"rwa_crash", "vol_swings", "correlation_spike", "liquidity_dryup", "venue_outage", "stale_nav", "depeg"}


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    data = paper_dict(tmp_path)
    data["risk"]["history_hours"] = 200
    data.pop("guard")  # these tests compare the books' allocations: no kill switch stops one of them mid-shock
    return parse_config(data, "test")


def scenario(*shocks: dict[str, Any]) -> Scenario:
    return Scenario.model_validate({"shocks": list(shocks)})


class Recorder:
    """Per cycle: the time, positions, cash per venue, transfers so far, the held mask and the spreads."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, run: Any, step: Any) -> None:
        self.rows.append({"time": step.time, "pos": run.pos.copy(), "cash": dict(run.cash),
                          "nav_before": step.nav_before, "transfers": run.n_transfers, "held": run.held.copy(),
                          "routes": len(run.cfg.funding.routes),
                          "spread": {v: run.venues[v].half_spread.copy() for v in run.venues}})  # fmt: skip


def hour(rec: Recorder, h: int) -> dict[str, Any]:
    return rec.rows[h]


# -- the scenario file --------------------------------------------------------------------------------------


def test_the_embedded_scenario_file_names_every_scenario_of_the_issue() -> None:
    found = load_scenarios(ROOT / "config" / "scenarios.toml")
    assert set(found) == NAMED
    assert all(s.shocks and s.description for s in found.values())
    names = [n for n, _ in pick(found, "all")]
    assert names[0] == "none" and set(names[1:]) == NAMED
    assert [n for n, _ in pick(found, "depeg, none")] == ["depeg", "none"]
    with pytest.raises(ConfigError, match="unknown scenario 'crash'.*rwa_crash"):
        pick(found, "crash")


def test_scenario_file_errors_name_the_file_and_the_key() -> None:
    bad = {"scenarios": {"x": {"shocks": [{"kind": "outage", "venue": "w", "start_hour": 0, "hours": 1,
                                           "houres": 2}]}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"my.toml: scenarios\.x\.shocks\.0\.outage\.houres: Extra inputs"):
        parse_scenarios(bad, "my.toml")
    with pytest.raises(ConfigError, match="reserved"):
        parse_scenarios({"scenarios": {"none": {}}}, "my.toml")


def test_the_control_run_is_the_plain_fast_backtest(cfg: Config) -> None:
    """No shock: the scenario source serves the base's bars untouched, so the run is ``rwabot backtest --research``."""
    from bot.fast import run_fast_backtest

    plain = run_fast_backtest(cfg, 48, research=True)
    control = run_scenario(cfg, Scenario(), seed=7, hours=48).row  # 7: the seed config/paper-offline.toml sets
    assert control["end_nav"] == plain.end_nav and control["turnover_annual"] == plain.turnover_annual
    assert control["sharpe"] == pytest.approx(plain.sharpe, rel=1e-12)  # the same rate: USTB on this path
    assert control["fees"] == plain.fees and control["rc_held_median"] == plain.rc_dispersion_held_median


# -- venue shocks on the book -------------------------------------------------------------------------------


def test_an_outage_holds_the_venues_assets_and_moves_no_cash_to_or_from_it(cfg: Config) -> None:
    rec = Recorder()
    sc = scenario({"kind": "outage", "venue": "wallet", "start_hour": 30, "hours": 20})
    run_scenario(cfg, sc, seed=3, hours=HOURS, on_step=rec, name="outage")
    wallet = np.array([cfg.assets[a].venue == "wallet" for a in cfg.assets])
    inside = [r for r in rec.rows[30:50]]
    assert all(np.array_equal(r["held"], wallet) and r["routes"] == 0 for r in inside)
    for a, b in zip(inside[:-1], inside[1:]):  # its positions and its cash do not move (nothing is in transit)
        assert np.array_equal(a["pos"][wallet], b["pos"][wallet])
    assert inside[-1]["transfers"] == rec.rows[29]["transfers"]  # no transfer sent while it is down
    assert not rec.rows[50]["held"].any() and rec.rows[50]["routes"] == len(cfg.funding.routes)
    # the other venue still trades, and the wallet trades again after the outage
    moved = [not np.array_equal(a["pos"][~wallet], b["pos"][~wallet]) for a, b in zip(inside[:-1], inside[1:])]
    after = [not np.array_equal(a["pos"][wallet], b["pos"][wallet]) for a, b in zip(rec.rows[50:-1], rec.rows[51:])]
    assert any(moved) and any(after)


def test_a_depeg_marks_the_venues_cash_at_its_price_and_gives_it_back(cfg: Config) -> None:
    control, shocked = Recorder(), Recorder()
    run_scenario(cfg, Scenario(), seed=2, hours=HOURS, on_step=control)
    sc = scenario({"kind": "depeg", "venue": "wallet", "start_hour": 40, "hours": 10, "price": 0.97})
    run_scenario(cfg, sc, seed=2, hours=HOURS, on_step=shocked)
    assert all(a["nav_before"] == b["nav_before"] for a, b in zip(control.rows[:40], shocked.rows[:40]))
    # the same book up to hour 40, where the wallet's cash (what cycle 39 left there) is marked at 0.97
    left = control.rows[39]["cash"]["wallet"]
    assert left > 0 and shocked.rows[39]["cash"] == control.rows[39]["cash"]
    assert shocked.rows[40]["nav_before"] == pytest.approx(control.rows[40]["nav_before"] - 0.03 * left, rel=1e-12)

    # the hooks on a real book: marked on entering the window, given back on leaving it
    from bot.fast import FastBacktest
    from bot.stress import STRATEGY, ScenarioHooks, anchor_of, scenario_config

    anchor = anchor_of(cfg, None)
    run = FastBacktest(scenario_config(cfg, sc, 2, anchor, STRATEGY, cfg.bot.ledger), 60, research=True)
    hooks = ScenarioHooks(run, sc, anchor)
    before = dict(run.cash)
    hooks.apply(anchor + timedelta(hours=39))
    assert run.cash == before
    hooks.apply(anchor + timedelta(hours=40))
    hooks.apply(anchor + timedelta(hours=45))  # marked once, not every cycle
    assert run.cash["wallet"] == pytest.approx(0.97 * before["wallet"]) and run.cash["exchange"] == before["exchange"]
    hooks.apply(anchor + timedelta(hours=50))
    assert run.cash["wallet"] == pytest.approx(before["wallet"], rel=1e-15)


def test_wider_spreads_are_in_force_only_inside_their_window(cfg: Config) -> None:
    rec = Recorder()
    sc = scenario({"kind": "spread", "start_hour": 30, "hours": 10, "factor": 5.0, "venues": ["exchange"]})
    r = run_scenario(cfg, sc, seed=1, hours=HOURS, on_step=rec)
    base = rec.rows[0]["spread"]
    assert np.allclose(rec.rows[35]["spread"]["exchange"], 5 * base["exchange"])
    assert np.array_equal(rec.rows[35]["spread"]["wallet"], base["wallet"])
    assert np.array_equal(rec.rows[40]["spread"]["exchange"], base["exchange"])
    ctl = run_scenario(cfg, Scenario(), seed=1, hours=HOURS)
    assert r.row["slippage"] >= ctl.row["slippage"]


def test_a_stale_nav_holds_the_asset_while_its_price_is_frozen(cfg: Config) -> None:
    rec = Recorder()
    sc = scenario({"kind": "stale", "assets": ["CREDIT"], "start_hour": 30, "hours": 24})
    run_scenario(cfg, sc, seed=5, hours=HOURS, on_step=rec)
    i = list(cfg.assets).index("CREDIT")
    assert all(r["held"][i] and r["held"].sum() == 1 for r in rec.rows[30:54])
    assert all(a["pos"][i] == b["pos"][i] for a, b in zip(rec.rows[30:54], rec.rows[31:55]))
    assert not rec.rows[54]["held"].any()


def test_an_unknown_venue_in_a_scenario_is_an_error_naming_it(cfg: Config) -> None:
    with pytest.raises(ConfigError, match=r"scenario x\.shocks\[0\]\.venue: unknown venue 'bank'"):
        run_scenario(cfg, scenario({"kind": "outage", "venue": "bank", "start_hour": 1, "hours": 1}), seed=0,
                     hours=10, name="x")  # fmt: skip


def test_the_books_run_on_the_same_paths_and_differ_by_the_optimizer(cfg: Config) -> None:
    sc = scenario({"kind": "drop", "kinds": ["tokenized"], "start_hour": 48, "hours": 1, "depth": 0.3, "steps": 1})
    rows = {b: run_scenario(cfg, sc, seed=4, hours=HOURS, book=BOOKS[b], mark_hour=48).row for b in BOOKS}
    assert len({r["rf_annual"] for r in rows.values()}) == 1  # one risk-free rate: the unshocked T-bill path
    assert rows["strategy"]["rf_source"] == "USTB on the unshocked path"
    assert len({r["end_nav"] for r in rows.values()}) == 3
    for r in rows.values():  # the 30% re-mark of the tokenized assets is in every book's return after hour 48
        assert r["return_after_mark"] < -0.01 and not r["recovered"] and math.isnan(r["time_to_recover_h"])
    # the equal-weight book is far from equal risk; the strategy, on its free assets, close to it
    assert rows["equal weight"]["rc_held_median"] > 0.3 > rows["strategy"]["rc_held_median"]


# -- the baselines' optimizer ---------------------------------------------------------------------------------


def forecast(sigmas: list[float]) -> Forecast:
    s = np.array(sigmas)
    return Forecast.from_cov(tuple(f"A{i}" for i in range(len(s))), np.diag(s * s), "test")


def test_static_weights_meet_caps_floors_and_venue_budgets() -> None:
    eq = StaticOptimizer(StaticConfig(weights="equal"))
    f = forecast([0.01, 0.02, 0.04, 0.08])
    n = np.zeros(4)
    t = eq.optimize(f, upper=np.ones(4), lower=n, current=n)
    assert np.allclose(t.weights, 0.25)
    t = eq.optimize(f, upper=np.array([0.1, 1, 1, 1]), lower=n, current=n)
    assert np.allclose(t.weights, [0.1, 0.3, 0.3, 0.3]) and list(t.capped) == [True, False, False, False]
    g = GroupBound("venue:a", np.array([True, True, False, False]), upper=0.3)
    t = eq.optimize(f, upper=np.ones(4), lower=n, current=n, groups=[g])
    assert np.allclose(t.weights, [0.15, 0.15, 0.35, 0.35]) and t.diagnostics["groups"] == {"venue:a": "upper"}
    with pytest.raises(InfeasibleBoundsError):
        eq.optimize(f, upper=np.full(4, 0.2), lower=n, current=n)
    iv = StaticOptimizer(StaticConfig(weights="inverse_vol"))
    w = iv.optimize(f, upper=np.ones(4), lower=n, current=n).weights
    assert np.allclose(w, np.array([8, 4, 2, 1]) / 15)
    later = iv.optimize(forecast([0.08, 0.04, 0.02, 0.01]), upper=np.ones(4), lower=n, current=n).weights
    assert np.allclose(later, w)  # frozen at the first forecast


# -- statistics -----------------------------------------------------------------------------------------------


def test_sharpe_of_is_the_summarys_sharpe(cfg: Config) -> None:
    r = run_scenario(cfg, Scenario(), seed=0, hours=HOURS, keep_series=True)
    assert r.nav is not None
    assert sharpe_of(r.nav, HOURS, r.row["rf_annual"], 8760.0) == pytest.approx(r.row["sharpe"], rel=1e-9)
    assert r.row["sharpe_ci_low"] < r.row["sharpe"] < r.row["sharpe_ci_high"]


def test_the_steady_sharpe_leaves_the_build_up_out() -> None:
    from bot.stress import steady_sharpe

    rng = np.random.default_rng(1)
    r = rng.normal(1e-5, 1e-3, 500)
    nav = np.exp(np.concatenate([[0.0], [-0.01] * 25, -0.01 + np.cumsum(r)]))  # a 1% cost, flat, then r
    direct = (r.mean() * 8760 - math.log1p(0.02)) / (r.std(ddof=1) * math.sqrt(8760))
    assert steady_sharpe(nav, 25, 1.0, 0.02, 8760.0) == pytest.approx(direct, rel=1e-9)
    assert steady_sharpe(nav, 25, 1.0, 0.02, 8760.0) > sharpe_of(nav, 525.0, 0.02, 8760.0)


def test_bootstrap_intervals_cover_a_known_sharpe_and_narrow_with_data() -> None:
    rng = np.random.default_rng(7)
    true, vol = 2.0, 0.10  # annual Sharpe and volatility of iid hourly returns
    hits, widths = 0, {}
    for n, trials in ((2190, 30), (4 * 2190, 6)):
        ws = []
        for k in range(trials):
            r = rng.normal(true * vol / 8760, vol / math.sqrt(8760), n)
            nav = np.exp(np.concatenate([[0.0, 0.0], np.cumsum(r)]))
            lo, hi = sharpe_ci(nav, float(n), 0.0, 8760.0, draws=400, seed=k)
            ws.append(hi - lo)
            hits += lo < true < hi if n == 2190 else 0
        widths[n] = float(np.mean(ws))
    assert hits >= 24  # a 95% interval misses a few of 30, not many
    assert widths[4 * 2190] == pytest.approx(widths[2190] / 2, rel=0.25)  # ∝ 1/√n
    lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert all(math.isnan(x) for x in mean_ci([1.0]))


def test_stationary_bootstrap_resamples_in_wrapped_blocks() -> None:
    from bot.stress import stationary_indices

    idx = stationary_indices(50, 10.0, 200, np.random.default_rng(0))
    assert idx.shape == (200, 50) and idx.min() >= 0 and idx.max() < 50
    steps = np.diff(idx, axis=1)
    cont = (steps == 1) | (steps == -49)  # the next index, wrapping around: inside a block
    assert 0.85 < cont.mean() < 0.95  # a new block starts with probability 1/10 (and may land on the next index)
    assert len(np.unique(idx[:, 0])) > 30  # blocks start anywhere


def test_time_back_counts_the_steps_to_the_pre_shock_level() -> None:
    nav = np.array([1.0, 1.0, 0.9, 0.95, 1.0, 1.1, 0.8])
    assert time_back(nav, 1) == 3  # falls at 2, back at 4
    assert time_back(nav, 4) is None  # 1.1 at 5 is not a fall; 0.8 at 6 is, and it is not made up
    assert time_back(np.array([1.0, 1.2, 0.9, 1.0]), 0) == 3
    assert time_back(np.array([1.0, 1.1, 1.2]), 0) == 0


def test_verdicts_come_from_the_intervals_not_the_points() -> None:
    assert verdict_sharpe(1.6, 3.0) == "holds" and verdict_sharpe(-1.0, 1.4) == "fails"
    assert verdict_sharpe(1.0, 2.0) == "undecided" and verdict_sharpe(float("nan"), 1.0) == "n/a"
    assert verdict_rc(0.01, 0.04) == "holds" and verdict_rc(0.01, 0.2) == "median only"
    assert verdict_rc(0.1, 0.2) == "fails"


def test_the_table_groups_seeds_and_renders(cfg: Config) -> None:
    rows = []
    for seed in (0, 1):
        for b in ("strategy", EQUAL_WEIGHT.name, INVERSE_VOL.name):
            rows.append(run_scenario(cfg, Scenario(), seed=seed, hours=48, book=BOOKS[b], name="none",
                                     mark_hour=24, bootstrap_draws=100).row)  # fmt: skip
    table = stress_table(rows)
    assert [(t["scenario"], t["book"], t["seeds"]) for t in table] == [
        ("none", "strategy", 2), ("none", "equal weight", 2), ("none", "inverse vol", 2)]  # fmt: skip
    strat = [r for r in rows if r["book"] == "strategy"]
    assert table[0]["sharpe_mean"] == pytest.approx(np.mean([r["sharpe"] for r in strat]))
    md = table_markdown(table)
    assert md.count("\n") == 4 and "| none | equal weight | 2 |" in md


def test_summary_formula_of_sharpe_is_the_backtests(cfg: Config) -> None:
    """``sharpe_of`` must stay the formula ``summary_of`` uses, or the table and ``rwabot backtest`` disagree."""
    from datetime import UTC, datetime

    from bot.backtest import RunSeries

    nav = np.array([100.0, 99.5, 99.7, 100.2, 100.1, 100.6])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(hours=k) for k in range(5)]
    r = RunSeries(t0, times, nav, 5, [], [], [], {"traded": 0.0, "fees": 0.0, "slippage": 0.0, "gas": 0.0,
                  "transferred": 0.0, "transfer_fees": 0.0, "transfer_gas": 0.0}, [], [], [], [], [], {}, [], [],
                  {}, 0.0, 0, {})  # fmt: skip
    s = summary_of(r, 0.03)
    assert sharpe_of(nav, 4.0, 0.03, 8760.0) == pytest.approx(s.sharpe, rel=1e-12)


def test_a_stress_run_reports_the_kill_switch_the_daemon_would_have_tripped(tmp_path: Path) -> None:
    """The embedded [guard] (20% drawdown, 10% daily loss) on the 30% re-mark of the tokenized assets (most of
    the book): the strategy trips at the shock's hour and holds its book from then on; the row and the table
    say so."""
    data = paper_dict(tmp_path)
    data["risk"]["history_hours"] = 200
    sc = scenario({"kind": "drop", "kinds": ["tokenized"], "start_hour": 48, "hours": 1, "depth": 0.3, "steps": 1})
    row = run_scenario(parse_config(data, "test"), sc, seed=4, hours=HOURS, mark_hour=48).row
    assert row["kill_switch"] == "drawdown (halt)" and row["kill_switch_hour"] == 48.0
    assert '"kill_switch": 1' in row["events"]
    table = stress_table([row])
    assert table[0]["kill_switch_runs"] == 1
    assert table_markdown(table).splitlines()[2].endswith("| 1/1 |")
    data.pop("guard")
    calm = run_scenario(parse_config(data, "test"), sc, seed=4, hours=HOURS, mark_hour=48).row
    assert calm["kill_switch"] == "" and math.isnan(calm["kill_switch_hour"])
    assert calm["turnover_annual"] > row["turnover_annual"]  # the halted book stopped trading
