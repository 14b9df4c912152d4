"""The kill switch on the real engine: a simulated market crashed by a scenario shock, paper venues, a real
SQLite ledger. What trips it (drawdown, daily loss, failed cycles, σ ceiling), what each action does
(halt, reduce_only, flatten), and that the state outlives the process and is cleared only by a resume."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.clock import SimulatedClock
from bot.config import GuardSection, load_config, parse_config
from bot.cycle import Engine
from bot.killswitch import allows, equity_trip, failed_cycles_trip, mismatch_trip, restrict, sigma_trip
from bot.plugins import make_plugin_manager
from tests.conftest import START, offline_config_text, paper_dict

NOW = START + timedelta(days=40)
CRASH_HOUR = 40 * 24 + 3  # three hours after NOW, counted from START (the anchor)
# three cycles in, about 27% of NAV is invested (the liquidity caps pace the first buys): a 45% drop of
# every price is a loss of about 12%, so the limits below sit under that


def crash_data(depth: float = 0.45, assets: list[str] | None = None) -> dict[str, Any]:
    shock: dict[str, Any] = {"kind": "drop", "start_hour": CRASH_HOUR, "hours": 1, "depth": depth, "steps": 1}
    if assets:
        shock["assets"] = assets
    return {"plugin": "scenario", "options": {"anchor": START.isoformat(), "base": {"plugin": "simulated",
            "options": {"seed": 7}}, "shocks": [shock]}}  # fmt: skip


def crash_engine(tmp_path: Path, guard: dict[str, Any], **over: Any) -> tuple[Engine, SimulatedClock]:
    clock = SimulatedClock(NOW, 0.0)
    data = paper_dict(tmp_path, data=over.pop("data", crash_data()), guard=guard, **over)
    return Engine(parse_config(data, "test"), pm=make_plugin_manager(), clock=clock), clock


def at(e: Engine, clock: SimulatedClock, hours: float, what: str = "cycle") -> Any:
    t = NOW + timedelta(hours=hours)
    clock.advance_to(t)
    return e.run_cycle(t) if what == "cycle" else e.monitor(t)


def buys_after(e: Engine, cycle_ids: set[int]) -> list[Any]:
    return [o for o in e.ledger.all_orders() if o.cycle_id in cycle_ids and o.side == "buy"]


# -- the rules, pure ------------------------------------------------------------------------------------


def test_equity_rules_in_closed_form() -> None:
    g = GuardSection(max_drawdown=0.2, max_daily_loss=0.05)
    assert equity_trip(81.0, 100.0, 81.0, g) is None  # 19% down from the top, flat on the day
    t = equity_trip(80.0, 100.0, 80.0, g)
    assert t is not None and t.cause == "drawdown" and t.data["drawdown"] == pytest.approx(0.2)
    t = equity_trip(95.0, 100.0, 100.0, g)
    assert t is not None and t.cause == "daily_loss" and t.data["loss"] == pytest.approx(0.05)
    assert equity_trip(96.0, 100.0, 100.0, g) is None
    assert equity_trip(50.0, None, None, g) is None  # nothing to compare with yet
    assert equity_trip(50.0, 100.0, 100.0, GuardSection()) is None  # no limits set: never trips
    assert equity_trip(120.0, 100.0, 100.0, g) is None  # a new high is no drawdown


def test_failed_sigma_and_mismatch_rules() -> None:
    g = GuardSection(max_failed_cycles=3, sigma_ceiling_annual=0.3, max_reconcile_mismatch=0.01)
    assert failed_cycles_trip(["failed", "failed"], g) is None
    assert failed_cycles_trip(["failed", "done", "failed", "failed"], g) is None  # not in a row
    assert failed_cycles_trip(["failed"] * 3 + ["done"], g) is not None
    assert sigma_trip(0.29, g, "monitor") is None and sigma_trip(0.31, g, "monitor") is not None
    assert mismatch_trip("cex", 9_999.0, 1_000_000.0, g) is None
    t = mismatch_trip("cex", 10_001.0, 1_000_000.0, g)
    assert t is not None and "cex" in t.message and t.cause == "reconcile"


def test_actions_restrict_the_weights() -> None:
    w0 = np.array([0.3, 0.2, 0.0])
    want = np.array([0.1, 0.4, 0.3])
    assert np.array_equal(restrict("active", w0, want), want)
    assert np.array_equal(restrict("halt", w0, want), w0)
    assert np.array_equal(restrict("reduce_only", w0, want), [0.1, 0.2, 0.0])
    assert np.array_equal(restrict("flatten", w0, want), [0.0, 0.0, 0.0])
    assert allows("active", "buy") and not allows("halt", "sell") and not allows("reduce_only", "buy")
    assert allows("reduce_only", "sell") and allows("flatten", "sell") and not allows("flatten", "buy")


# -- on the engine ---------------------------------------------------------------------------------------


def test_a_crash_halts_at_the_next_monitor_tick_and_survives_a_restart(tmp_path: Path) -> None:
    e, clock = crash_engine(tmp_path, {"max_drawdown": 0.08, "action": "halt"})
    for h in range(3):
        assert at(e, clock, h).status == "done"
        assert at(e, clock, h + 0.25, "monitor") is None
    assert e.kill.state == "active" and e.ledger.last_mark() is not None
    orders_before = len(e.ledger.all_orders())
    at(e, clock, 3 + 5 / 60, "monitor")  # the first tick after the crash
    assert e.kill.state == "halt"
    (ev,) = e.ledger.events("kill_switch")
    assert ev.severity == "critical" and ev.data["cause"] == "drawdown" and ev.data["drawdown"] >= 0.08
    row = e.ledger.trading_state()
    assert row is not None and row.by == "monitor" and row.cause == "drawdown"
    r = at(e, clock, 4)
    assert r.status == "halted" and "rwabot resume" in r.message
    from bot.outcome import cycle_failure

    assert "not run: trading halted by the kill switch" in (cycle_failure(r, e.ledger, e.cfg.venues) or "")
    assert len(e.ledger.all_orders()) == orders_before  # nothing planned, nothing sent
    path = e.cfg.bot.ledger
    e.close()
    e2 = Engine(e.cfg, pm=make_plugin_manager(), clock=clock)  # a restart: the state is the ledger's
    assert e2.kill.state == "halt"
    assert at(e2, clock, 5).status == "halted" and at(e2, clock, 5.5, "monitor") is None
    assert len(e2.ledger.all_orders()) == orders_before
    _, ev = e2.kill.resume("looked at it: the shock is the scenario's", by="test")
    assert e2.kill.state == "active" and ev.kind == "kill_switch_resumed"
    r = at(e2, clock, 6)
    assert r.status == "done"  # trading again; the drawdown is measured from the resume on
    at(e2, clock, 6.25, "monitor")  # (the crash's volatility may trigger a rebalance: it is allowed again)
    assert e2.kill.state == "active"
    states = [(s.state, s.cause) for s in e2.ledger.trading_states()]
    assert states == [("halt", "drawdown"), ("active", "resume")]
    assert Path(path).exists()
    e2.close()


def test_reduce_only_sends_no_buy_and_no_transfer(tmp_path: Path) -> None:
    e, clock = crash_engine(tmp_path, {"max_drawdown": 0.05, "action": "reduce_only"},
                            data=crash_data(0.7, ["SPY", "GLD", "REALT", "CREDIT"]))  # fmt: skip
    for h in range(3):
        at(e, clock, h)
    at(e, clock, 3 + 5 / 60, "monitor")
    assert e.kill.state == "reduce_only"
    after: set[int] = set()
    for h in range(4, 10):
        r = at(e, clock, h)
        assert r.status == "done"
        after.add(e.ledger.get_cycle(r.key).id)  # type: ignore[union-attr]
    assert not buys_after(e, after)
    sells = [o for o in e.ledger.all_orders() if o.cycle_id in after]
    assert sells, "the crash moved the book off its target: a reduce-only cycle sells the overweight assets"
    assert not [t for t in e.ledger.transfers() if t.cycle_id in after]
    assert all("kill switch reduce_only" in e.ledger.get_cycle(k).decision  # type: ignore[union-attr]
               for k in {c.key for c in e.ledger.cycles() if c.id in after})  # fmt: skip
    e.close()


def test_flatten_sells_to_cash_within_the_liquidity_limits(tmp_path: Path) -> None:
    e, clock = crash_engine(tmp_path, {"max_drawdown": 0.08, "action": "flatten"})
    for h in range(3):
        at(e, clock, h)
    invested = sum(e.ledger.snapshots()[-1].positions[a] * e.ledger.snapshots()[-1].prices[a] for a in e.assets)
    r = at(e, clock, 3 + 5 / 60, "monitor")  # the trip starts selling at once
    assert e.kill.state == "flatten" and r is not None and r.key.endswith("/risk")
    cycles = {e.ledger.get_cycle(r.key).id}  # type: ignore[union-attr]
    for h in range(4, 40):
        cycles.add(e.ledger.get_cycle(at(e, clock, h).key).id)  # type: ignore[union-attr]
    assert not buys_after(e, cycles)
    snap = e.ledger.snapshots()[-1]
    left = sum(snap.positions[a] * snap.prices[a] for a in e.assets)
    assert left < 0.01 * invested, f"{left:,.2f} still invested of {invested:,.2f}"
    # each sell stayed within the hour's participation limit: flattening took more than one cycle
    by_cycle = Counter(o.cycle_id for o in e.ledger.all_orders() if o.cycle_id in cycles and o.status == "filled")
    assert len(by_cycle) > 1
    e.close()


def test_daily_loss_trips_on_its_own(tmp_path: Path) -> None:
    e, clock = crash_engine(tmp_path, {"max_daily_loss": 0.05}, data=crash_data(0.3))
    for h in range(3):
        at(e, clock, h)
        at(e, clock, h + 0.5, "monitor")
    at(e, clock, 3 + 5 / 60, "monitor")
    (ev,) = e.ledger.events("kill_switch")
    assert ev.data["cause"] == "daily_loss" and 0.05 <= ev.data["loss"] < 0.15
    e.close()


def test_consecutive_failed_cycles_trip_it(tmp_path: Path) -> None:
    e, clock = crash_engine(tmp_path, {"max_failed_cycles": 2})
    too_early = datetime.fromisoformat("2026-01-01T01:00:00+00:00")  # before the simulated market has history
    assert e.run_cycle(too_early).status == "failed"
    assert at(e, clock, 0).status == "done"
    assert e.run_cycle(too_early + timedelta(hours=1)).status == "failed"
    assert e.kill.state == "active"  # a done cycle between: not two in a row
    assert e.run_cycle(too_early + timedelta(hours=2)).status == "failed"
    assert e.kill.state == "halt" and e.ledger.trading_state().cause == "failed_cycles"  # type: ignore[union-attr]
    e.close()


def test_a_sigma_above_the_ceiling_trips_at_the_monitor_and_at_planning(tmp_path: Path) -> None:
    e, clock = crash_engine(tmp_path, {"sigma_ceiling_annual": 0.002})
    assert at(e, clock, 0).status == "done"  # the book was cash: its σ_p was 0
    at(e, clock, 0.5, "monitor")
    assert e.ledger.trading_state().cause == "sigma"  # type: ignore[union-attr]
    e.close()
    e2, clock2 = crash_engine(tmp_path / "b", {"sigma_ceiling_annual": 0.002})
    assert at(e2, clock2, 0).status == "done"
    r = at(e2, clock2, 1)
    row = e2.ledger.trading_state()
    assert row is not None and row.cause == "sigma" and row.by == "cycle"
    assert r.orders == 0  # the halt applies to the cycle that tripped it
    e2.close()


def test_resume_from_the_command_line_records_who_and_why(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    cfg_path = tmp_path / "bot.toml"
    cfg_path.write_text(offline_config_text(ledger, speed=0.0))  # its kill switch: halt on a 20% drawdown
    runner = CliRunner()
    assert runner.invoke(app, ["resume", "--config", str(cfg_path), "--reason", "x"]).exit_code == 2  # no ledger
    cfg = load_config(cfg_path)
    e = Engine(cfg, pm=make_plugin_manager(), clock=SimulatedClock(START + timedelta(days=40), 0.0))
    e.run_cycle()
    res = runner.invoke(app, ["resume", "--config", str(cfg_path), "--reason", "nothing tripped"])
    assert res.exit_code == 0 and "nothing to resume" in res.output and e.ledger.trading_states() == []
    from bot.killswitch import Trip

    e._trip(Trip("drawdown", "test trip", {}), "test", 1.0)
    e.close()
    assert runner.invoke(app, ["resume", "--config", str(cfg_path), "--reason", "  "]).exit_code == 2
    res = runner.invoke(app, ["resume", "--config", str(cfg_path), "--reason", "checked the venues"])
    assert res.exit_code == 0, res.output
    assert "resumed from halt" in res.output
    st = runner.invoke(app, ["status", "--config", str(cfg_path)])
    assert "kill switch: active (resumed" in st.output and "checked the venues" in st.output
    from bot.ledger import Ledger, utc

    led = Ledger(ledger)
    last = led.trading_state()
    assert last is not None and last.state == "active" and last.reason == "checked the venues"
    assert last.by.startswith("cli:") and led.events("kill_switch_resumed")
    # a simulated ledger's resume is stamped with the ledger's time, not the wall clock's
    assert abs((utc(last.time) - led.latest_time()).total_seconds()) < 1  # type: ignore[operator]
    led.close()
