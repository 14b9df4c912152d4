"""The fast backtest (bot/fast.py) runs the daemon's stages on arrays: it must reach the daemon's results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.backtest import run_backtest, summarize
from bot.config import parse_config
from bot.errors import ConfigError
from bot.fast import run_fast_backtest
from bot.ledger import Ledger
from bot.stages import bounds_stage
from tests.conftest import paper_dict

HOURS = 60


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """The default offline book for 60 hours three ways: the daemon, --fast and --research."""
    d = tmp_path_factory.mktemp("fast")
    out = {}
    for name in ("daemon", "fast", "research"):
        (d / name).mkdir()
        cfg = parse_config(paper_dict(d / name), "test")
        if name == "daemon":
            out[name] = run_backtest(cfg, HOURS)
        else:
            out[name] = run_fast_backtest(cfg, HOURS, research=name == "research")
        out[name + "_ledger"] = Path(cfg.bot.ledger)
    return out


def test_fast_path_reaches_the_daemons_book(runs) -> None:
    daemon, fast = runs["daemon"], runs["fast"]
    assert fast.cycles == daemon.cycles == HOURS + 1  # both ends of the run
    # same stages, same fill model, same prices: the books could differ only by the daemon's monitor ticks
    # (no vol trigger fires on this book) and its forecast refitted from the window (the fast path's
    # sliding update agrees to ~1e-14), so they agree to rounding
    assert fast.end_nav == pytest.approx(daemon.end_nav, rel=1e-9)
    assert fast.traded == pytest.approx(daemon.traded, rel=1e-6)
    assert fast.fees == pytest.approx(daemon.fees, rel=1e-6)
    assert fast.transfers == daemon.transfers > 0
    assert fast.transferred == pytest.approx(daemon.transferred, rel=1e-9)
    assert fast.rc_dispersion_held_median == pytest.approx(daemon.rc_dispersion_held_median, rel=1e-6)
    assert fast.cash_share_median == pytest.approx(daemon.cash_share_median, rel=1e-6)


def test_research_mode_gives_the_same_summary_and_writes_nothing(runs) -> None:
    fast, research = runs["fast"], runs["research"]
    for f in ("end_nav", "traded", "fees", "slippage", "sharpe", "rc_dispersion_held_median", "transfers"):
        assert getattr(research, f) == getattr(fast, f), f
    assert not runs["research_ledger"].exists()


def test_the_fast_ledger_holds_what_the_summary_says(runs) -> None:
    ledger = Ledger(runs["fast_ledger"])
    try:
        again = summarize(ledger)
        cycles, fills = ledger.cycles(), ledger.fills()
        targets = ledger.targets_of(cycles[-1].id)
    finally:
        ledger.close()
    fast = runs["fast"]
    assert len(cycles) == HOURS + 1 and all(c.status == "done" for c in cycles)
    assert len(targets) == 8
    assert sum(f.qty * f.price for f in fills) == pytest.approx(fast.traded, rel=1e-12)
    for f in ("end_nav", "traded", "fees", "transfers", "rc_dispersion_held_median", "rc_dispersion_held_p90",
              "cash_share_median", "steady_turnover_annual"):  # fmt: skip
        assert getattr(again, f) == pytest.approx(getattr(fast, f), rel=1e-9), f


def test_fast_path_refuses_a_venue_it_cannot_simulate(tmp_path: Path) -> None:
    data = paper_dict(tmp_path, venues={
        "exchange": {"plugin": "ccxt", "options": {"exchange": "binance", "paper": True}},
        "wallet": {"plugin": "paper", "options": {"initial_cash": 1000.0}},
    })  # fmt: skip
    cfg = parse_config(data, "test")
    with pytest.raises(ConfigError, match="venues.exchange: the fast backtest simulates paper venues only"):
        run_fast_backtest(cfg, 10)
    assert not Path(cfg.bot.ledger).exists()


def test_bounds_stage_pins_held_assets_and_caps_by_volume(paper_config) -> None:
    risk = paper_config.risk
    n = 3
    caps = np.array([0.5, 0.5, 0.05])
    floors = np.array([0.0, 0.2, 0.0])
    traded = np.full((risk.liquidity_lookback_hours, n), 1_000.0)
    traded[:, 0] = 1e9
    w0 = np.array([0.1, 0.3, 0.02])
    held = np.array([False, False, True])
    b = bounds_stage(risk, caps, floors, traded, 1e6, w0, held)
    liq = risk.participation * 1_000.0 * risk.liquidity_horizon_hours / 1e6
    assert b.upper[0] == 0.5  # the operator's cap binds where volume is deep
    assert b.upper[1] == pytest.approx(liq) and b.lower[1] == pytest.approx(liq)  # a floor never above the cap
    assert b.upper[2] == b.lower[2] == 0.02  # a held asset stays where it is
    assert b.invest == pytest.approx(1 - risk.cash_buffer)
