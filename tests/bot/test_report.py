"""Reports (bot/report.py): the HTML's plotly JSON is valid and every figure has data; the PNGs are pictures.

Why these tests: no browser runs here (plotly's static export needs Chromium), so the page is checked the
way a browser would use it: every embedded figure must parse and validate as a plotly figure, and every
trace must carry finite data; the page must load nothing from the network; the PNGs must be real images
with something drawn; and the numbers drawn must be the ledger's own (the equity trace is the snapshots'
NAV), so a report cannot show a curve the run did not have.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import Config, parse_config
from bot.ledger import Ledger
from bot.report import Figure, Panel, Trace, ledger_report, read_figures, stress_report, write_report
from bot.shocks import Scenario
from bot.stress import BOOKS, run_scenario
from tests.conftest import offline_config_text, paper_dict

LEDGER_FIGURES = ["equity", "weights", "risk_contributions", "turnover_costs", "volatility", "events"]


def small(tmp_path: Path) -> Config:
    data = paper_dict(tmp_path)
    data["risk"]["history_hours"] = 200
    return parse_config(data, "test")


@pytest.fixture(scope="module")
def crash_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96-hour fast run with a ledger, the tokenized assets re-marked 20% down at hour 48."""
    d = tmp_path_factory.mktemp("report")
    sc = Scenario.model_validate({"shocks": [{"kind": "drop", "kinds": ["tokenized"], "start_hour": 48, "hours": 1,
                                              "depth": 0.2, "steps": 1}]})  # fmt: skip
    path = d / "crash.sqlite"
    run_scenario(small(d), sc, seed=3, hours=96, research=False, ledger=str(path), name="crash")
    return path


def check_figures(html_path: Path, expect: list[str]) -> list[dict[str, Any]]:
    """Every embedded figure validates as plotly and every trace has finite data; nothing is fetched."""
    import plotly.io as pio

    text = html_path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text), "the page must be self-contained"
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js itself is inlined
    figs = read_figures(html_path)
    assert re.findall(r'data-target="fig-([^"]+)"', text) == [f"fig-{k}".removeprefix("fig-") for k in expect]
    for f in figs:
        pio.from_json(json.dumps(f))  # raises on an invalid property or trace type
        assert f["data"], f["layout"]["title"]
        for t in f["data"]:
            ys = np.array([np.nan if v is None else v for v in t.get("y", [])], dtype=float)
            assert len(t.get("x", [])) == len(ys) > 0 and np.isfinite(ys).any(), (f["layout"]["title"], t["name"])
    return figs


def check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 600
    assert float(img[..., :3].std()) > 0.05  # something is drawn, not a blank canvas


def test_a_ledger_report_is_valid_html_with_data_in_every_figure_and_a_png_each(crash_ledger: Path,
                                                                               tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "r" / "report.html"
    written = ledger_report(crash_ledger, out)
    assert written["figures"] == LEDGER_FIGURES and written["left_out"] == []
    figs = check_figures(out, LEDGER_FIGURES)
    assert [p.name for p in written["pngs"]] == [f"{k}.png" for k in LEDGER_FIGURES]
    for p in written["pngs"]:
        check_png(p)
    # the numbers drawn are the ledger's: the equity trace is the snapshots' NAV
    ledger = Ledger(str(crash_ledger))
    try:
        navs = [s.nav for s in ledger.snapshots()]
    finally:
        ledger.close()
    eq = next(t for t in figs[0]["data"] if t["name"] == "NAV")
    assert np.allclose(eq["y"], navs)
    dd = next(t for t in figs[0]["data"] if t["name"] == "drawdown")
    assert min(dd["y"]) < -0.05  # the re-mark shows
    lo, hi = written["sharpe_ci"]
    assert lo < written["summary"].sharpe < hi


def test_a_figure_without_data_is_left_out_and_said(tmp_path: Path) -> None:
    good = Figure("good", "Good", [Panel([Trace("a", [0, 1, 2], [1.0, 2.0, 1.5])])])
    empty = Figure("empty", "Empty", [Panel([Trace("b", [0, 1], [float("nan"), float("nan")])])])
    written = write_report(tmp_path / "x.html", "t", [good, empty], png_dir=tmp_path / "png")
    assert written["figures"] == ["good"] and written["left_out"] == ["empty"]
    check_figures(tmp_path / "x.html", ["good"])
    assert not (tmp_path / "png" / "empty.png").exists()
    assert "left out, nothing to show: empty" in (tmp_path / "x.html").read_text()


def test_a_stress_report_has_its_table_and_figures(tmp_path: Path) -> None:
    import pandas as pd

    cfg = small(tmp_path)
    sc = Scenario.model_validate({"shocks": [{"kind": "vol", "start_hour": 20, "hours": 20, "factor": 3.0}]})
    rows, series = [], []
    for name, s in (("none", Scenario()), ("vol", sc)):
        for seed in (0, 1):
            for b in ("strategy", "equal weight"):
                r = run_scenario(cfg, s, seed=seed, hours=48, book=BOOKS[b], name=name, mark_hour=20,
                                 keep_series=seed == 0, bootstrap_draws=100)  # fmt: skip
                rows.append(r.row)
                if r.nav is not None:
                    series.append(pd.DataFrame({"scenario": name, "seed": seed, "book": b,
                                                "time": pd.to_datetime(r.times, utc=True), "nav": r.nav}))  # fmt: skip
    out = tmp_path / "s" / "stress.html"
    written = stress_report(rows, out, series=pd.concat(series, ignore_index=True))
    keys = ["stress_sharpe", "stress_sharpe_steady", "stress_return", "stress_drawdown", "stress_rc", "stress_equity"]
    assert written["figures"] == keys
    check_figures(out, keys)
    for p in written["pngs"]:
        check_png(p)
    text = out.read_text()
    assert text.count("<tr>") == 1 + 4  # the header and scenario × book
    assert [(t["scenario"], t["book"]) for t in written["table"]] == [
        ("none", "strategy"), ("none", "equal weight"), ("vol", "strategy"), ("vol", "equal weight")]  # fmt: skip


def test_rwabot_report_with_no_ledger_runs_a_fast_backtest_and_reports_it(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(offline_config_text(tmp_path / "var" / "ledger.sqlite"))
    res = CliRunner().invoke(app, ["report", "--config", str(cfg), "--hours", "30", "--no-png"])
    assert res.exit_code == 0, res.output
    made = list((tmp_path / "var" / "reports").glob("*.sqlite"))
    assert len(made) == 1
    html = next((tmp_path / "var" / "reports").glob("*-report/report.html"))
    check_figures(html, LEDGER_FIGURES)
    again = CliRunner().invoke(app, ["report", "--ledger", str(made[0]), "--out", str(tmp_path / "o.html"),
                                     "--no-png"])  # fmt: skip
    assert again.exit_code == 0, again.output
    missing = CliRunner().invoke(app, ["report", "--stress", str(tmp_path / "nothing")])
    # (the console wraps a long temporary path: compare the words, not the line breaks)
    assert missing.exit_code == 2 and "no results.parquet" in " ".join(missing.output.split())


@pytest.mark.skipif(__import__("shutil").which("node") is None, reason="node is not installed")
def test_the_pages_loader_plots_every_figure_when_run(crash_ledger: Path, tmp_path: Path) -> None:
    """No browser here: the page's own loader script runs in node against a stub DOM and a stub Plotly that
    records each ``newPlot`` call, so a broken loader (or a figure it cannot parse) fails."""
    import subprocess

    out = tmp_path / "r.html"
    ledger_report(crash_ledger, out, png=False)
    text = out.read_text(encoding="utf-8")
    loader = re.findall(r"<script type='text/javascript'>(.*?)</script>", text, flags=re.S)[-1]
    blobs = re.findall(r'<script type="application/json" class="plotly-figure" data-target="([^"]+)">(.*?)</script>',
                       text, flags=re.S)  # fmt: skip
    harness = tmp_path / "h.js"
    harness.write_text(
        "const blobs = " + json.dumps([{"target": t, "text": b} for t, b in blobs]) + ";\n"
        "const calls = [];\n"
        "const document = {querySelectorAll: () => blobs.map(b => ({textContent: b.text,"
        " dataset: {target: b.target}})), getElementById: id => ({id})};\n"
        "const Plotly = {newPlot: (el, data, layout, cfg) => calls.push([el.id, data.length,"
        " data.every(t => (t.y || []).length > 0), layout.title.text])};\n"
        + loader + "\nconsole.log(JSON.stringify(calls));\n"
    )
    res = subprocess.run(["node", str(harness)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    calls = json.loads(res.stdout)
    assert [c[0] for c in calls] == [f"fig-{k}" for k in LEDGER_FIGURES]
    assert all(c[1] > 0 and c[2] for c in calls)
