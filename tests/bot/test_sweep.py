"""Sweeps (bot/sweep.py) on Dask: a LocalCluster of two worker processes, and no cluster (threads).

Why these tests: a sweep is only useful if its table does not depend on how it was scheduled, so the same
grid runs on a real ``LocalCluster`` with two workers and on Dask's threaded scheduler and must give the
same rows in the same (grid) order; a grid point whose parameter the config or a component refuses must
stop the sweep before anything is submitted, naming the point; and the commands must write what they say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import Config, parse_config
from bot.errors import ConfigError
from bot.shocks import Scenario
from bot.sweep import apply_params, execute, make_grid, parse_param, write_results
from tests.conftest import offline_config_text, paper_dict

OUTAGE = Scenario.model_validate({"shocks": [{"kind": "outage", "venue": "wallet", "start_hour": 12, "hours": 12}]})


def small(tmp_path: Path) -> Config:
    data = paper_dict(tmp_path)
    data["risk"]["history_hours"] = 200
    return parse_config(data, "test")


def test_params_parse_as_toml_literals_and_land_on_their_paths() -> None:
    assert parse_param("half_life=24,72.5") == ("half_life", [24, 72.5])
    assert parse_param("forecaster=ewma,lstm") == ("forecaster", ["ewma", "lstm"])
    assert parse_param('measure="risk",weight') == ("measure", ["risk", "weight"])
    with pytest.raises(ConfigError, match="name=value"):
        parse_param("band")
    data = {"risk": {"participation": 0.1}, "strategy": {"plugin": "risk_parity", "options": {"band": 0.05}}}
    out = apply_params(data, {"band": 0.1, "participation": 0.2, "forecaster": "ledoit_wolf", "report.x.y": 1})
    assert out["strategy"]["options"]["band"] == 0.1 and out["risk"]["participation"] == 0.2
    assert out["forecaster"] == {"plugin": "ledoit_wolf", "options": {}} and out["report"] == {"x": {"y": 1}}
    assert data["strategy"]["options"]["band"] == 0.05  # a copy


def test_a_grid_point_the_config_refuses_stops_the_sweep_naming_it(tmp_path: Path) -> None:
    cfg = small(tmp_path)
    with pytest.raises(ConfigError, match=r"grid point band=2\.0.*band"):
        make_grid(cfg, [("none", Scenario())], [0], hours=10, params={"band": [0.05, 2.0]})
    with pytest.raises(ConfigError, match=r"grid point participation=0"):
        make_grid(cfg, [("none", Scenario())], [0], hours=10, params={"participation": [0]})
    with pytest.raises(ConfigError, match="unknown book"):
        make_grid(cfg, [("none", Scenario())], [0], hours=10, books=("strategy", "60/40"))


def test_a_local_cluster_of_two_workers_and_threads_give_the_same_table(tmp_path: Path) -> None:
    cfg = small(tmp_path)
    tasks = make_grid(cfg, [("none", Scenario()), ("venue_outage", OUTAGE)], [0, 1], hours=36,
                      params={"half_life": [24.0, 72.0]}, bootstrap_draws=100)  # fmt: skip
    assert len(tasks) == 8 and tasks[0].mark_hour == 12  # the control is read after the outage's hour too
    done: list[int] = []
    cluster = execute(tasks, workers=2, on_done=lambda d, n: done.append(d))
    threads = execute(tasks, workers=2, threads=True)
    assert cluster.mode == "local cluster" and cluster.workers == 2 and threads.mode == "threads"
    assert done == list(range(1, 9))
    def strip(r: Any) -> str:  # the row as text (NaN reads "NaN" on both sides), the run's own timing out
        return json.dumps({k: v for k, v in r.row.items() if k != "wall_s"}, sort_keys=True, default=str)

    assert [strip(r) for r in cluster.results] == [strip(r) for r in threads.results]
    keys = [(r.row["param.half_life"], r.row["scenario"], r.row["seed"]) for r in cluster.results]
    assert keys == [(h, s, k) for h in (24.0, 72.0) for s in ("none", "venue_outage") for k in (0, 1)]
    # the grid's parameter reached the runs: the half-life changes the book
    assert cluster.results[0].row["end_nav"] != cluster.results[4].row["end_nav"]
    paths = write_results(cluster.results, tmp_path / "out")
    df = pd.read_parquet(paths["parquet"])
    assert len(df) == 8 and "param.half_life" in df and "series" not in paths
    assert len(pd.read_csv(paths["csv"])) == 8


def test_a_scheduler_address_runs_the_grid_on_that_cluster(tmp_path: Path) -> None:
    """``--scheduler``: a cluster someone else started (here an in-process one, to keep the test quick)."""
    import logging

    from dask.distributed import LocalCluster

    cfg = small(tmp_path)
    tasks = make_grid(cfg, [("none", Scenario())], [0, 1], hours=12, bootstrap_draws=50)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:  # fmt: skip
        ex = execute(tasks, scheduler=cluster.scheduler_address)
    assert ex.mode == f"cluster at {cluster.scheduler_address}" and ex.workers == 1
    here = execute(tasks, threads=True)
    assert [r.row["end_nav"] for r in ex.results] == [r.row["end_nav"] for r in here.results]
    with pytest.raises(ConfigError, match="not both"):
        execute(tasks, scheduler=cluster.scheduler_address, threads=True)


def test_rwabot_sweep_and_stress_run_from_the_command_line_without_a_cluster(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    text = offline_config_text(tmp_path / "var" / "l.sqlite")
    cfg.write_text(text.replace("history_hours = 720", "history_hours = 200"))
    out = tmp_path / "sw"
    res = CliRunner().invoke(app, ["sweep", "--config", str(cfg), "--threads", "--seeds", "2", "--hours", "24",
                                   "--param", "band=0.05,0.25", "--out", str(out), "--no-png"])  # fmt: skip
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out / "results.parquet")
    assert sorted(df["param.band"].unique()) == [0.05, 0.25] and len(df) == 4
    assert "band=0.05" in (out / "summary.html").read_text()
    assert json.loads((out / "run.json").read_text())["mode"] == "threads"
    st = tmp_path / "st"
    res = CliRunner().invoke(app, ["stress", "--config", str(cfg), "--threads", "--seeds", "1", "--hours", "24",
                                   "--scenarios", "none,depeg", "--out", str(st), "--no-png"])  # fmt: skip
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(st / "results.parquet")
    assert sorted(set(zip(df["scenario"], df["book"]))) == sorted(
        (s, b) for s in ("none", "depeg") for b in ("strategy", "equal weight", "inverse vol"))  # fmt: skip
    assert (st / "series.parquet").exists() and (st / "stress.html").exists()
    assert "| depeg | inverse vol | 1 |" in (st / "table.md").read_text()
    again = CliRunner().invoke(app, ["report", "--stress", str(st), "--no-png"])
    assert again.exit_code == 0, again.output
    bad = CliRunner().invoke(app, ["stress", "--config", str(cfg), "--threads", "--scenarios", "meteor"])
    assert bad.exit_code == 2 and "unknown scenario 'meteor'" in bad.output


def test_rwabot_stress_shocks_a_users_csv_history(tmp_path: Path) -> None:
    """``--data``: the user's bars (here the simulated market's, written as a wide CSV) under the shocks."""
    from datetime import UTC, datetime, timedelta

    from bot.clock import SimulatedClock
    from bot.components import ComponentContext
    from bot.plugins import Registry, make_plugin_manager

    ctx = ComponentContext(SimulatedClock(datetime(2026, 1, 1, tzinfo=UTC)), tmp_path, (), lambda e: None)
    market = Registry(make_plugin_manager()).get("data", "simulated").build({"seed": 5}, ctx, where="test")
    names = market.assets()
    bars = market.bars(names, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=300), 300)
    df = pd.DataFrame({"timestamp": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in bars.times]})
    for i, a in enumerate(names):
        df[a], df[f"{a}_volume"] = bars.close[:, i], bars.volume[:, i]
    path = tmp_path / "bars.csv"
    df.to_csv(path, index=False)
    cfg = tmp_path / "c.toml"
    text = offline_config_text(tmp_path / "var" / "l.sqlite")
    cfg.write_text(text.replace("history_hours = 720", "history_hours = 200"))
    shocks = tmp_path / "s.toml"
    shocks.write_text('[scenarios.spy_gap]\n[[scenarios.spy_gap.shocks]]\nkind = "drop"\nassets = ["SPY"]\n'
                      'start_hour = 10\nhours = 1\ndepth = 0.2\nsteps = 1\n')
    out = tmp_path / "st"
    res = CliRunner().invoke(app, ["stress", "--config", str(cfg), "--data", str(path), "--threads", "--seeds", "1",
                                   "--hours", "48", "--scenarios-file", str(shocks), "--books", "strategy,equal weight",
                                   "--out", str(out), "--no-png"])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(out / "results.parquet").set_index(["scenario", "book"])
    assert got.loc[("none", "strategy"), "mark_hour"] == 10  # the control is read from the same hour
    for b in ("strategy", "equal weight"):  # a 20% gap in SPY on the user's prices costs every book that holds it
        assert got.loc[("spy_gap", b), "return_after_mark"] < got.loc[("none", b), "return_after_mark"] - 0.002
    early = CliRunner().invoke(app, ["stress", "--config", str(cfg), "--data", str(path), "--threads", "--seeds", "1",
                                     "--hours", "48", "--scenarios", "rwa_crash", "--books", "strategy",
                                     "--out", str(tmp_path / "x"), "--no-png"])  # fmt: skip
    # a CSV says nothing of kinds unless the csv source is told: the tokenized selector finds no asset
    assert early.exit_code == 2 and "selects no asset" in early.output
