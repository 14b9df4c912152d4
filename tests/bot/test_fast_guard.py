"""The kill switch ([guard]) in the fast backtest (bot/fast.py): the daemon's planning checks on each cycle's
mark, so a stress test or a sweep shows what the switch would have done, and the ledger keeps the state row
``rwabot status`` reads. The crash is the scenario plugin's drop on every price (as in the daemon's test,
tests/bot/test_daemon_killswitch.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.backtest import run_backtest
from bot.config import parse_config
from bot.fast import run_fast_backtest
from bot.ledger import Ledger, utc
from tests.conftest import START, paper_dict

CRASH_HOURS = 30  # the book is fully invested after a day
DEPTH = 0.35  # every price: NAV falls by about 34%
HOURS = 48


def crash_dict(tmp_path: Path, **guard: Any) -> dict[str, Any]:
    data = paper_dict(tmp_path)
    data["data"] = {"plugin": "scenario", "options": {
        "anchor": START.isoformat(), "base": {"plugin": "simulated", "options": {"seed": 7}},
        "shocks": [{"kind": "drop", "start_hour": CRASH_HOURS, "hours": 1, "depth": DEPTH, "steps": 1}]}}  # fmt: skip
    data["guard"] = {"max_drawdown": 0.25, **guard}
    return data


def orders_after(ledger_path: Path, when: Any) -> list[Any]:
    led = Ledger(ledger_path)
    try:
        by_id = {c.id: c for c in led.cycles()}
        return [o for o in led.all_orders() if utc(by_id[o.cycle_id].scheduled_for) >= when]
    finally:
        led.close()


def test_a_crash_halts_the_fast_backtest_at_the_crash_cycle(tmp_path: Path) -> None:
    cfg = parse_config(crash_dict(tmp_path), "test")
    s = run_fast_backtest(cfg, HOURS)
    crash = START + timedelta(hours=CRASH_HOURS)
    ks = s.kill_switch
    assert ks is not None and ks["cause"] == "drawdown" and ks["state"] == "halt"
    assert ks["time"] == crash.isoformat()  # the first cycle whose bar carries the drop
    assert "below its high-water mark" in ks["reason"]
    assert s.risk_events.get("kill_switch") == 1
    # halted: nothing is sent from the trip on, and the book is held through the run's end
    assert orders_after(Path(cfg.bot.ledger), crash) == []
    assert orders_after(Path(cfg.bot.ledger), START)  # it traded before
    led = Ledger(cfg.bot.ledger)
    try:
        row = led.trading_state()
        assert row is not None and row.state == "halt" and row.cause == "drawdown" and row.by == "cycle"
        assert utc(row.time) == crash and row.nav == pytest.approx(ks["nav"])
        assert row.data["drawdown"] >= 0.25
        assert [e.kind for e in led.events()].count("kill_switch") == 1
        late = [t for t in led.transfers() if utc(t.created_at) >= crash]  # type: ignore[arg-type]
        assert late == []
    finally:
        led.close()


def test_without_a_guard_the_same_crash_keeps_trading(tmp_path: Path) -> None:
    data = crash_dict(tmp_path)
    data.pop("guard")
    cfg = parse_config(data, "test")
    s = run_fast_backtest(cfg, HOURS)
    assert s.kill_switch is None and "kill_switch" not in s.risk_events
    assert orders_after(Path(cfg.bot.ledger), START + timedelta(hours=CRASH_HOURS))  # it rebalances the crash


def test_reduce_only_sells_and_never_buys_after_the_trip(tmp_path: Path) -> None:
    cfg = parse_config(crash_dict(tmp_path, action="reduce_only"), "test")
    s = run_fast_backtest(cfg, HOURS)
    assert s.kill_switch is not None and s.kill_switch["state"] == "reduce_only"
    after = orders_after(Path(cfg.bot.ledger), START + timedelta(hours=CRASH_HOURS))
    assert all(o.side == "sell" for o in after)


def test_flatten_sells_the_book_to_cash(tmp_path: Path) -> None:
    cfg = parse_config(crash_dict(tmp_path, action="flatten"), "test")
    s = run_fast_backtest(cfg, HOURS + 24)
    after = orders_after(Path(cfg.bot.ledger), START + timedelta(hours=CRASH_HOURS))
    assert after and all(o.side == "sell" for o in after)
    assert s.kill_switch is not None and s.kill_switch["state"] == "flatten"
    # cash at the end: at least 99% of NAV (the liquidity caps pace the sells over several hours)
    assert s.cash_by_venue_end is not None
    assert sum(s.cash_by_venue_end.values()) + s.transit_end >= 0.99 * s.end_nav


def test_research_mode_reports_the_same_trip(tmp_path: Path) -> None:
    fast = run_fast_backtest(parse_config(crash_dict(tmp_path / "f"), "test"), HOURS)
    research = run_fast_backtest(parse_config(crash_dict(tmp_path / "r"), "test"), HOURS, research=True)
    assert research.kill_switch == fast.kill_switch
    assert research.end_nav == fast.end_nav


def test_the_sigma_ceiling_trips_on_the_held_book(tmp_path: Path) -> None:
    """The held book's forecast σ_p above the ceiling: nothing is held at the first cycle (σ_p 0), so it
    trips at the second, once the first buys are held."""
    data = paper_dict(tmp_path)
    data["guard"] = {"sigma_ceiling_annual": 0.001}
    s = run_fast_backtest(parse_config(data, "test"), 12)
    ks = s.kill_switch
    assert ks is not None and ks["cause"] == "sigma" and ks["time"] == (START + timedelta(hours=1)).isoformat()


def test_the_daemon_path_trips_on_the_same_crash(tmp_path: Path) -> None:
    """The daemon marks every five minutes and trips within a tick of the crash; the fast path marks once an
    hour, at the cycle of the crash's bar: the same trip, the same hour."""
    daemon = run_backtest(parse_config(crash_dict(tmp_path / "d"), "test"), CRASH_HOURS + 3)
    fast = run_fast_backtest(parse_config(crash_dict(tmp_path / "f"), "test"), CRASH_HOURS + 3)
    assert daemon.kill_switch is not None and fast.kill_switch is not None
    assert daemon.kill_switch["cause"] == fast.kill_switch["cause"] == "drawdown"
    dt = datetime.fromisoformat(daemon.kill_switch["time"])
    ft = datetime.fromisoformat(fast.kill_switch["time"])
    assert ft - timedelta(hours=1) < dt <= ft + timedelta(minutes=5)


# -- the pre-trade limits ([limits], bot/guards.py) ---------------------------------------------------------------


def ledger_rows(path: Path) -> tuple[list[Any], list[Any], dict[int, Any]]:
    led = Ledger(path)
    try:
        return led.all_orders(), led.fills(), {c.id: c for c in led.cycles()}
    finally:
        led.close()


def test_limits_refuse_orders_whole_in_the_fast_backtest_as_in_the_daemon(tmp_path: Path) -> None:
    """PAXG capped at 1% of NAV (unlimited, the book gives it ~2.6%), no order above 100,000: refused whole
    (``rejected``, the limit named, an ``order_denied`` count), never clipped; the daemon's backtest of the
    same hours refuses the same orders."""
    limits = {"max_asset_exposure": {"PAXG": 0.01}, "max_order_notional": 100_000.0}
    books = {}
    for name in ("fast", "daemon"):
        data = paper_dict(tmp_path / name)
        data["limits"] = limits
        cfg = parse_config(data, "test")
        s = run_fast_backtest(cfg, 12) if name == "fast" else run_backtest(cfg, 12)
        books[name] = (s, *ledger_rows(Path(cfg.bot.ledger)))
    s, orders, fills, _ = books["fast"]
    rejected = [o for o in orders if o.status == "rejected"]
    assert rejected and s.risk_events["order_denied"] == len(rejected)
    assert all(o.message.startswith("not sent: ") and "limits." in o.message for o in rejected)
    assert {o.asset for o in rejected if "max_asset_exposure" in o.message} == {"PAXG"}
    assert not [f for f in fills if f.asset == "PAXG"]  # 2.6% asked, 1% allowed: nothing, not 1%
    assert max(f.qty * f.price for f in fills) <= 100_000.0
    daemon_rejected = [o for o in books["daemon"][1] if o.status == "rejected"]
    assert sorted((o.client_id, o.message) for o in daemon_rejected) == sorted((o.client_id, o.message)
                                                                                 for o in rejected)  # fmt: skip


def test_the_daily_turnover_limit_counts_the_last_24_hours(tmp_path: Path) -> None:
    data = paper_dict(tmp_path)
    data["limits"] = {"max_daily_turnover": 0.3}
    cfg = parse_config(data, "test")
    s = run_fast_backtest(cfg, 72)
    orders, fills, cycles = ledger_rows(Path(cfg.bot.ledger))
    assert s.risk_events.get("order_denied", 0) > 0
    assert any("max_daily_turnover 30.00%" in o.message for o in orders if o.status == "rejected")
    times = sorted((utc(cycles[o.cycle_id].scheduled_for), f.qty * f.price)
                   for f in fills for o in orders if o.client_id == f.client_id)  # fmt: skip
    for t0, _ in times:  # every 24-hour window holds at most 30% of the start NAV (NAV moves by < 1% here)
        window = sum(v for t, v in times if t0 <= t < t0 + timedelta(hours=24))
        assert window <= 0.3 * s.start_nav * 1.01


def test_limits_keep_the_compiled_loop_out(tmp_path: Path) -> None:
    from bot.fast import FastBacktest
    from tests.bot.test_fast_kernel import one_venue

    data = one_venue(tmp_path)
    data["limits"] = {"max_order_notional": 1e9}
    run = FastBacktest(parse_config(data, "test"), 10, research=True)
    assert "[limits]" in (run.run_compiled() or "")
