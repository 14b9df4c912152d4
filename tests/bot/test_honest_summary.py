"""The summary's judgement of a run: the risk-free rate it states, Sortino/Calmar, the static benchmarks
on the same path, and the results a backtest keeps (JSON, equity CSV, its ledger)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import ConfigError, parse_config
from bot.fast import FastBacktest
from tests.conftest import offline_config_text, paper_dict

HOURS = 96


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("honest")
    cfg = parse_config(paper_dict(d), "test")
    r = FastBacktest(cfg, HOURS, research=True)
    while not r.done:
        r.step()
    return r


def test_the_rate_is_the_t_bill_funds_own_return_on_the_path(run) -> None:
    s = run.summary()
    p = run.close[run.hist : run.hist + run.k, run.assets.index("USTB")]
    hours = (run.snap_times[run.k - 1] - run.first).total_seconds() / 3600
    assert s.risk_free_source == "USTB's return on this path"
    assert s.risk_free_annual == pytest.approx(np.exp(np.log(p[-1] / p[0]) / hours * 8760) - 1, rel=1e-12)
    assert s.excess_return_annual == pytest.approx(s.annual_return - s.risk_free_annual, rel=1e-12)
    given = run.summary(0.045)  # the command line wins
    assert given.risk_free_source == "given" and given.risk_free_annual == 0.045
    assert given.sharpe < s.sharpe if s.risk_free_annual < 0.045 else given.sharpe >= s.sharpe


def test_sortino_calmar_and_benchmarks_recomputed_independently(run) -> None:
    s = run.summary()
    nav = np.concatenate([[run.nav_before_first], run.nav_series[: run.k]])
    steps = np.diff(np.log(nav))[1:]
    per = np.log1p(s.risk_free_annual) / 8760
    downside = np.sqrt(np.mean(np.minimum(steps - per, 0) ** 2)) * np.sqrt(8760)
    hours = (run.snap_times[run.k - 1] - run.first).total_seconds() / 3600
    excess = np.log(nav[-1] / nav[0]) / hours * 8760 - np.log1p(s.risk_free_annual)
    assert s.sortino == pytest.approx(excess / downside, rel=1e-9)
    assert s.calmar == pytest.approx(s.annual_return / s.max_drawdown, rel=1e-12)
    px = run.close[run.hist : run.hist + run.k]
    assert set(s.benchmarks) == {"equal weight", "60/40 SPY/TLT"}
    for name, w in (("equal weight", np.full(8, 1 / 8)),
                    ("60/40 SPY/TLT", np.array([0.6 if a == "SPY" else 0.4 if a == "TLT" else 0.0
                                                for a in run.assets]))):  # fmt: skip
        r = np.log1p((px[1:] / px[:-1] - 1) @ w)
        b = s.benchmarks[name]
        assert b["annual_vol"] == pytest.approx(r.std(ddof=1) * np.sqrt(8760), rel=1e-9)
        assert b["annual_return"] == pytest.approx(np.exp(r.sum() / hours * 8760) - 1, rel=1e-9)


def test_report_section_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="report.risk_free_asset: unknown asset 'TBILL'"):
        parse_config(paper_dict(tmp_path, report={"risk_free_asset": "TBILL"}), "t.toml")
    with pytest.raises(ConfigError, match=r"report.benchmarks.x: unknown assets \['BTC'\]"):
        parse_config(paper_dict(tmp_path, report={"benchmarks": {"x": {"BTC": 1.0}}}), "t.toml")


def test_a_backtest_keeps_its_ledger_and_writes_json_and_an_equity_csv(tmp_path: Path) -> None:
    cfg = tmp_path / "offline.toml"
    cfg.write_text(offline_config_text(tmp_path / "live.sqlite", speed=0.0))
    curve = tmp_path / "equity.csv"
    res = CliRunner().invoke(app, ["backtest", "--config", str(cfg), "--hours", "30", "--fast", "--json",
                                   "--csv", str(curve)])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    kept = Path(out["ledger"])
    assert kept.parent == tmp_path / "backtests" and kept.name.startswith("rwabot-paper-offline-") and kept.exists()
    assert not (tmp_path / "live.sqlite").exists()  # never the daemon's own ledger
    assert out["cycles"] == 31 and out["risk_free_source"] == "USTB's return on this path"
    rows = list(csv.DictReader(curve.open()))
    assert len(rows) == 32 and float(rows[-1]["nav"]) == pytest.approx(out["end_nav"], rel=1e-9)
    status = CliRunner().invoke(app, ["status", "--config", str(cfg), "--ledger", str(kept)])
    assert status.exit_code == 0 and "NAV" in status.output


def test_progress_is_a_plain_line_per_tenth_when_not_on_a_terminal(tmp_path: Path) -> None:
    cfg = tmp_path / "offline.toml"
    cfg.write_text(offline_config_text(tmp_path / "live.sqlite", speed=0.0))
    res = CliRunner().invoke(app, ["backtest", "--config", str(cfg), "--hours", "20", "--research"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("backtest ") and "% (" in line]
    assert [line.split("%")[0] for line in lines] == [f"backtest {p}" for p in range(10, 101, 10)]
    assert not (tmp_path / "backtests").exists()  # research mode keeps no ledger


def test_two_backtests_in_the_same_second_keep_two_ledgers(tmp_path: Path) -> None:
    """A kept ledger is named by the second it started: a second run in that second must not resume the
    first one's ledger (it would find every cycle done and report nothing new)."""
    cfg = tmp_path / "offline.toml"
    cfg.write_text(offline_config_text(tmp_path / "live.sqlite", speed=0.0))
    args = ["backtest", "--config", str(cfg), "--hours", "3", "--fast", "--json"]
    outs = [json.loads(CliRunner().invoke(app, args).stdout.strip().splitlines()[-1]) for _ in range(2)]
    assert outs[0]["ledger"] != outs[1]["ledger"] and outs[0]["cycles"] == outs[1]["cycles"] == 4


def test_the_summary_shows_the_fees_funds_and_issuers_charged(tmp_path: Path) -> None:
    """What an evm venue books as ``fill.product_fee`` (an ERC-4626 entry fee, a fee at an ERC-7540
    fulfilment; tests/connectors/evm/test_novel_funds.py measures them on chain) is a cost kind of the
    backtest summary, read from the ledger like status reads it."""
    from sqlmodel import select

    from bot.backtest import summarize
    from bot.ledger import FillRow, Ledger

    cfg = tmp_path / "offline.toml"
    cfg.write_text(offline_config_text(tmp_path / "live.sqlite", speed=0.0))
    res = CliRunner().invoke(app, ["backtest", "--config", str(cfg), "--hours", "6", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["product_fees"] == 0.0  # paper venues charge none
    led = Ledger(out["ledger"])
    with led.session() as s:
        rows = [f for f in s.exec(select(FillRow)) if f.asset == "USTB"]
        assert rows
        for f in rows:  # as if USTB were a fee-charging fund: 10 bp of each fill's notional, inside its fee
            f.product_fee = min(f.fee, 0.001 * f.qty * f.price)
            s.add(f)
        s.commit()
        want = sum(f.product_fee for f in rows)
    s2 = summarize(led)
    assert want > 0 and s2.product_fees == pytest.approx(want) and s2.product_fees < s2.fees
    led.close()
