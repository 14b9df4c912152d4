"""The daemon: scheduler, monitor, signals and restarts, on the simulated clock."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from bot.backtest import summarize
from bot.clock import SimulatedClock
from bot.config import parse_config
from bot.cycle import Engine
from bot.daemon import Daemon
from bot.ledger import Ledger, utc
from tests.conftest import PAPER, START, install_plugin, offline_config_text, paper_dict, squash


def test_daemon_runs_hourly_cycles_and_the_monitor_in_simulated_time(tmp_path: Path) -> None:
    cfg = parse_config(paper_dict(tmp_path), "test")
    begin = START + timedelta(days=40, minutes=30)
    engine = Engine(cfg, clock=SimulatedClock(begin, 0.0))
    reports = []
    Daemon(engine, until=begin + timedelta(hours=24), on_cycle=reports.append).run()
    keys = [r.key for r in reports]
    # the catch-up cycle at start (empty ledger), then one per hour on the hour
    assert keys[0] == "2026-04-10T00:00Z"
    scheduled = [k for k in keys if not k.endswith("/risk")]
    assert scheduled == [(begin.replace(minute=0) + timedelta(hours=h)).strftime("%Y-%m-%dT%H:00Z") for h in range(25)]
    assert all(r.status == "done" for r in reports)
    lock_file = Path(cfg.bot.ledger + ".lock")
    assert lock_file.exists() and lock_file.read_text() == ""  # the file stays; a released lock names no pid
    from bot.ledger import DaemonLock

    lock = DaemonLock(cfg.bot.ledger)
    lock.acquire()  # released: another daemon may take it
    assert lock_file.read_text() == str(os.getpid())
    lock.release()


def assert_nav_changes_are_explained(ledger_path: str) -> int:
    """Between two closing snapshots NAV moves by the mark-to-market of the positions held at the first,
    plus, for each fill of the second cycle, its value at the closing price against its decision price,
    less the fee, slippage and gas the ledger recorded for it, and less the fee and gas of the cycle's
    transfers (cash in transit is in NAV, so moving it is no change). NAV comes from the venues' own books and
    quotes, the costs from the fills: a cost the venue charged and the ledger missed (or counted twice)
    breaks it. Returns the number of snapshots with fills checked."""
    con = sqlite3.connect(ledger_path)
    try:
        snaps = con.execute("SELECT cycle_id, nav, positions, prices FROM snapshot ORDER BY time, id").fetchall()
        cycle0 = snaps[0][0]
        (start,) = con.execute("SELECT nav_before FROM cycle WHERE id = ?", (cycle0,)).fetchone()
        prev_nav, prev_pos, prev_px = start, {}, {}
        traded = 0
        for cycle_id, nav, positions, prices in snaps:
            pos, px = json.loads(positions), json.loads(prices)
            explained = sum(q * (px[a] - prev_px[a]) for a, q in prev_pos.items())
            fills = con.execute(
                "SELECT f.asset, f.side, f.qty, o.decision_price, f.fee, f.slippage, f.gas FROM fill f "
                "JOIN orders o ON o.client_id = f.client_id WHERE o.cycle_id = ?",
                (cycle_id,),
            ).fetchall()
            for asset, side, qty, decided, fee, slippage, gas in fills:
                sign = 1.0 if side == "buy" else -1.0
                explained += sign * qty * (px[asset] - decided) - fee - slippage - gas
            # a transfer moves cash between venues (and into transit, which NAV counts): only its fee and
            # gas are a change of NAV, paid when the source accepts it
            (moved,) = con.execute(
                "SELECT COALESCE(SUM(fee + gas), 0) FROM transfer WHERE cycle_id = ? AND status IN ('pending', 'arrived')",  # noqa: E501
                (cycle_id,),
            ).fetchone()
            explained -= moved
            traded += bool(fills)
            assert nav - prev_nav == pytest.approx(explained, abs=1e-10 * abs(nav)), (
                f"cycle {cycle_id}: NAV moved {nav - prev_nav:.6f}, positions and fills explain {explained:.6f}"
            )
            prev_nav, prev_pos, prev_px = nav, pos, px
        return traded
    finally:
        con.close()


def test_each_cycles_nav_change_is_market_moves_less_recorded_costs(tmp_path: Path) -> None:
    cfg = parse_config(paper_dict(tmp_path), "test")
    begin = START + timedelta(days=40, minutes=30)
    Daemon(Engine(cfg, clock=SimulatedClock(begin, 0.0)), until=begin + timedelta(hours=30)).run()
    led = Ledger(cfg.bot.ledger)
    try:
        fees = sum(f.fee + f.slippage for f in led.fills())
        assert len(led.snapshots()) >= 30 and fees > 0
    finally:
        led.close()
    assert assert_nav_changes_are_explained(cfg.bot.ledger) >= 2  # the build-up and later trades were checked


def test_a_low_vol_threshold_gives_one_vol_breach_and_one_risk_cycle(tmp_path: Path) -> None:
    cfg = parse_config(paper_dict(tmp_path, risk={"vol_threshold_annual": 0.001}), "test")
    begin = START + timedelta(days=40, minutes=30)
    reports: list = []
    engine = Engine(cfg, clock=SimulatedClock(begin, 0.0))
    Daemon(engine, until=begin + timedelta(hours=3), on_cycle=reports.append).run()
    # the catch-up cycle buys the book, the monitor then sees σ_p above 0.1%/yr and rebalances at once; the
    # trigger re-arms only below 90% of the threshold, which this book never reaches: one breach, one cycle
    assert reports[0].key == "2026-04-10T00:00Z"
    risk = [r for r in reports if r.key.endswith("/risk")]
    assert len(risk) == 1 and risk[0].status == "done"
    led = Ledger(cfg.bot.ledger)
    try:
        (breach,) = led.events("vol_breach")
        cycle = led.get_cycle(risk[0].key)
        assert cycle is not None and cycle.trigger == "risk"
    finally:
        led.close()
    assert breach.where == "monitor" and breach.data["sigma"] > breach.data["threshold"] == 0.001
    when = breach.time.replace(tzinfo=UTC)
    assert begin <= when < begin + timedelta(minutes=cfg.schedule.monitor_minutes)  # the first monitor run
    assert risk[0].key == when.strftime("%Y-%m-%dT%H:%MZ") + "/risk"
    assert_nav_changes_are_explained(cfg.bot.ledger)


@pytest.mark.parametrize(("age", "catch_up"), [(timedelta(hours=2, minutes=40), True), (timedelta(minutes=40), False)])
def test_a_stale_ledger_gets_a_cycle_at_start_and_a_fresh_one_does_not(
    tmp_path: Path, age: timedelta, catch_up: bool
) -> None:
    cfg = parse_config(paper_dict(tmp_path, risk={"vol_threshold_annual": 10.0}), "test")
    last = START + timedelta(days=40)
    engine = Engine(cfg, clock=SimulatedClock(last, 0.0))
    try:
        assert engine.run_cycle(last).status == "done"
    finally:
        engine.close()
    now = last + age
    reports: list = []
    engine = Engine(cfg, clock=SimulatedClock(now, 0.0))
    Daemon(engine, until=now + timedelta(minutes=15), on_cycle=reports.append).run()
    assert [r.key for r in reports] == ([now.replace(minute=0).strftime("%Y-%m-%dT%H:00Z")] if catch_up else [])


def _count_cycles(ledger: Path) -> int:

    try:
        con = sqlite3.connect(ledger, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM cycle WHERE status='done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def _write_config(tmp_path: Path, speed: float) -> Path:
    text = PAPER.read_text()
    text = re.sub(r'(?m)^ledger = ".*"$', f'ledger = "{tmp_path / "daemon.sqlite"}"', text)
    assert str(tmp_path) in text, "the test must never write the config's own ledger"
    text = text.replace("speed = 3600.0", f"speed = {speed}")
    cfg = tmp_path / "paper.toml"
    cfg.write_text(text)
    tomllib.loads(cfg.read_text())
    return cfg


def _rwabot(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot.cli", *args]


@pytest.mark.slow
def test_daemon_subprocess_sigterm_and_restart_without_duplicates(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, speed=3600.0 * 5)  # 5 simulated hours per second: slow enough to never coalesce
    ledger = tmp_path / "daemon.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _rwabot("run", "--config", str(cfg)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while _count_cycles(ledger) < 50:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "daemon too slow"
            time.sleep(0.2)
        # a second daemon on the same ledger is refused with a clear message
        second = subprocess.run(
            _rwabot("run", "--config", str(cfg)), capture_output=True, text=True, env=env, timeout=60
        )
        assert second.returncode == 2
        assert f"another rwabot daemon (pid {proc.pid}) is running" in second.stderr
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out
    con = sqlite3.connect(ledger)
    first_run = con.execute("SELECT key FROM cycle ORDER BY scheduled_for").fetchall()
    assert len(first_run) >= 48
    assert con.execute("SELECT count(*) FROM cycle WHERE status='executing'").fetchone()[0] == 0
    last_key = max(k for (k,) in first_run if not k.endswith("/risk"))
    con.close()

    # restart: the simulated clock resumes after the last cycle; no order is sent twice
    done = subprocess.run(
        _rwabot("run", "--config", str(cfg), "--hours", "6"), capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    con = sqlite3.connect(ledger)
    keys = [k for (k,) in con.execute("SELECT key FROM cycle ORDER BY scheduled_for")]
    new = [k for k in keys if k not in {x for (x,) in first_run}]
    assert len(new) >= 5 and all(k > last_key for k in new if not k.endswith("/risk"))
    scheduled = sorted(k for k in keys if not k.endswith("/risk"))
    hours = [datetime.strptime(k, "%Y-%m-%dT%H:00Z") for k in scheduled]
    assert all(b - a == timedelta(hours=1) for a, b in zip(hours, hours[1:])), "an hour was skipped or repeated"
    ids = [c for (c,) in con.execute("SELECT client_id FROM orders")]
    assert len(ids) == len(set(ids))
    ledger_fills = Counter(c for (c,) in con.execute("SELECT client_id FROM fill"))
    assert all(v == 1 for v in ledger_fills.values())
    con.close()
    book_ids: list[str] = []
    for book in (tmp_path / "daemon.state").glob("paper-*.sqlite"):
        if book.name == "paper-network.sqlite":  # the paper venues' funding network, not an account
            continue
        b = sqlite3.connect(book)
        book_ids += [c for (c,) in b.execute("SELECT client_id FROM paper_order WHERE status='filled'")]
        b.close()
    assert sorted(book_ids) == sorted(ledger_fills)


def test_run_once_then_status_and_plugins_cli(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, speed=3600.0)
    env = {**os.environ, "COLUMNS": "200"}
    once = subprocess.run(
        _rwabot("run", "--config", str(cfg), "--once"), capture_output=True, text=True, env=env, timeout=120
    )
    assert once.returncode == 0, once.stderr
    assert "2026-03-01T00:00Z done" in once.stdout and "USTB" in once.stdout
    st = subprocess.run(_rwabot("status", "--config", str(cfg)), capture_output=True, text=True, env=env, timeout=60)
    assert st.returncode == 0, st.stderr
    for word in ("last cycle", "NAV", "weights vs targets", "risk contrib.", "costs to date", "SPY"):
        assert word in st.stdout
    pl = subprocess.run(_rwabot("plugins"), capture_output=True, text=True, env=env, timeout=60)
    assert pl.returncode == 0 and "risk_parity" in pl.stdout and "rwabot 0.1.0" in pl.stdout


RECORDER = """
from pathlib import Path

from bot.errors import PluginError
from bot.hookspecs import hookimpl

MARKER = Path({marker!r})


@hookimpl
def rwabot_register_venues(register):
    def make(cfg, ctx):
        MARKER.write_text(ctx.extra["venue_name"])
        raise PluginError("recorder venue built; the test stops the run here")

    register("recorder", make)
"""


@pytest.mark.parametrize("mode", [["--once"], ["--hours", "1"]], ids=["once", "daemon"])
def test_a_refused_second_run_builds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: list[str]) -> None:
    """The ledger's lock is taken before the engine: a refused run creates no ledger and calls no factory
    (a second local chain, a second exchange session), and once the lock is free the same run builds."""
    from typer.testing import CliRunner

    from bot.cli import app
    from bot.ledger import DaemonLock

    marker = tmp_path / "built"
    install_plugin(tmp_path, monkeypatch, f"rwabot_recorder_{mode[0][2:]}", RECORDER.format(marker=str(marker)))
    ledger = tmp_path / "var" / "ledger.sqlite"
    text, n = re.subn(
        r'(\[venues\.wallet\][^\n]*\n)plugin = "paper"\noptions = \{[^}]*\}',
        r'\1plugin = "recorder"\noptions = {}',
        offline_config_text(ledger, speed=0.0),
    )
    assert n == 1
    cfg = tmp_path / "recorder.toml"
    cfg.write_text(text)
    first = DaemonLock(ledger)  # the daemon already running
    first.acquire()
    try:
        refused = CliRunner().invoke(app, ["run", "--config", str(cfg), *mode])
    finally:
        first.release()
    assert refused.exit_code == 2, refused.output
    assert squash(f"another rwabot daemon (pid {os.getpid()}) is running") in squash(refused.output)
    assert not marker.exists(), "a refused run called a venue factory"
    assert not ledger.exists() and not ledger.with_suffix(".state").exists()
    assert Path(str(ledger) + ".lock").read_text() == ""  # the refused run did not take the lock over
    free = CliRunner().invoke(app, ["run", "--config", str(cfg), *mode])
    assert free.exit_code == 2 and "recorder venue built" in free.output, free.output
    assert marker.read_text() == "wallet"
    assert Path(str(ledger) + ".lock").read_text() == ""  # released on the error path too
    again = DaemonLock(ledger)
    again.acquire()
    again.release()


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, speed=3600.0)
    cfg.write_text(cfg.read_text().replace("monitor_minutes = 5", "monitor_minutes = 0"))
    r = subprocess.run(_rwabot("run", "--config", str(cfg), "--once"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "schedule.monitor_minutes" in r.stderr and str(cfg) in r.stderr


def test_backtest_cli_prints_the_summary(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, speed=3600.0)
    env = {**os.environ, "COLUMNS": "200"}
    kept = tmp_path / "bt.sqlite"
    r = subprocess.run(
        _rwabot("backtest", "--config", str(cfg), "--hours", "48", "--risk-free", "0.04", "--ledger", str(kept)),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    for word in ("annualised volatility", "Sharpe (rf = 4.00%)", "max drawdown", "turnover", "total costs", "RC disp"):
        assert word in r.stdout
    assert not (tmp_path / "daemon.sqlite").exists()  # a backtest never touches the live ledger
    # Sharpe is of the excess log return: against 4% it is lower by exactly log(1.04) / annual vol
    ledger = Ledger(str(kept))
    try:
        zero, rf = summarize(ledger), summarize(ledger, 0.04)
    finally:
        ledger.close()
    assert zero.annual_vol > 0
    assert zero.sharpe - rf.sharpe == pytest.approx(np.log(1.04) / zero.annual_vol, rel=1e-12)

    # every printed number again, recomputed from the ledger's rows with plain SQL
    def printed(label: str) -> str:
        m = re.search(rf"│ {re.escape(label)}\s*│ (.*?)\s*│", r.stdout)
        assert m, f"no row {label!r} in\n{r.stdout}"
        return m.group(1)

    con = sqlite3.connect(kept)
    ts = datetime.fromisoformat
    cur = con.execute("SELECT cycle_id, time, nav FROM snapshot ORDER BY time, id")
    snaps = [(cid, ts(t), nav) for cid, t, nav in cur]
    hourly = [x for x in snaps if x[1].minute == 0 and x[1].second == 0]
    q = "SELECT nav_before, scheduled_for FROM cycle WHERE id = ?"
    start_nav, first = con.execute(q, (hourly[0][0],)).fetchone()
    first = ts(first)
    assert start_nav == pytest.approx(250_000.0 + 750_000.0)  # the two paper venues' cash, nothing held yet
    assert hourly[0][2] < start_nav  # the first cycle's costs are below the start...
    end_nav = hourly[-1][2]
    assert printed("start NAV (before the first cycle's trades)") == f"{start_nav:,.2f}"
    assert printed("total return") == f"{end_nav / start_nav - 1:.3%}"  # ...so they are in the return
    fills = [
        (ts(t), value, cost)
        for t, value, cost in con.execute(
            "SELECT c.scheduled_for, f.qty * f.price, f.fee + f.slippage + f.gas FROM fill f "
            "JOIN orders o ON o.client_id = f.client_id JOIN cycle c ON c.id = o.cycle_id"
        )
    ]
    end_buildup = first + timedelta(hours=24)
    buildup = sum(v for t, v, _ in fills if t < end_buildup)
    buildup_cost = sum(c for t, _, c in fills if t < end_buildup)
    steady = sum(v for t, v, _ in fills if t >= end_buildup)
    assert buildup > 0.5 * start_nav and steady > 0  # the book is bought in the build-up, then rebalanced
    steady_nav = np.mean([nav for _, t, nav in hourly if t >= end_buildup])
    steady_years = ((hourly[-1][1] - first).total_seconds() / 3600 - 24) / 8760
    assert zero.buildup_traded == pytest.approx(buildup, rel=1e-12)
    assert zero.steady_turnover_annual == pytest.approx(steady / steady_nav / steady_years, rel=1e-9)
    assert printed("initial build-up, first 24 h (× start NAV)") == (
        f"{buildup / start_nav:.2f} ({buildup:,.2f} traded, {buildup_cost:,.2f} costs)"
    )
    assert printed("steady-state turnover, after 24 h (× NAV per year)") == f"{steady / steady_nav / steady_years:.2f}"
    # the dispersion of the stored (venue-fitted) targets, from the risk contributions stored with them
    # (after the build-up; free: no cap, floor, hold or venue budget binds)
    per_cycle: dict[int, list[tuple[float, float, int]]] = {}
    for cid, rc, w, capped, bound, when in con.execute(
        "SELECT t.cycle_id, t.risk_contribution, t.target_weight, t.capped, t.bound, c.scheduled_for "
        "FROM target t JOIN cycle c ON c.id = t.cycle_id"
    ):
        if ts(when) >= first + timedelta(hours=24):
            per_cycle.setdefault(cid, []).append((rc, w, bool(capped) or bound is not None))
    disp = []
    for rows in per_cycle.values():
        free = np.array([rc for rc, w, capped in rows if not capped and w > 0])
        if len(free):
            disp.append(float(np.max(np.abs(free / free.mean() - 1))))
    con.close()
    med, p90 = float(np.median(disp)), float(np.quantile(disp, 0.9))
    assert zero.rc_dispersion_traded_median == pytest.approx(med, rel=1e-9, abs=1e-12)
    assert zero.rc_dispersion_traded_p90 == pytest.approx(p90, rel=1e-9, abs=1e-12)
    assert printed("RC dispersion of traded targets (venue-fitted), median / p90") == f"{med:.3f} / {p90:.3f}"
    # what the optimizer returns is balanced, and so is what is traded toward on the assets no bound binds
    assert zero.rc_dispersion_target_median < 1e-6
    held = printed("RC dispersion of holdings, free assets, median / p90")
    assert held == f"{zero.rc_dispersion_held_median:.3f} / {zero.rc_dispersion_held_p90:.3f}"


def test_simulated_clock_start_is_utc() -> None:
    c = SimulatedClock(datetime(2026, 1, 1, tzinfo=UTC), 0.0)
    assert c.now().tzinfo is not None
    with pytest.raises(ValueError):
        SimulatedClock(datetime(2026, 1, 1), 0.0)


def test_the_embedded_default_shows_a_vol_breach_in_its_first_week(tmp_path: Path) -> None:
    """The feature a newcomer reads about must be seen working on the embedded defaults: with the
    threshold as shipped, the monitor's trigger fires and runs a risk cycle within the first week."""
    from bot.backtest import run_backtest
    from bot.config import load_config

    cfg = load_config(PAPER).with_overrides(bot={"ledger": str(tmp_path / "bt.sqlite")},
                                            clock={"kind": "simulated", "start": START, "speed": 0.0})  # fmt: skip
    assert cfg.risk.vol_threshold_annual < 0.02
    run_backtest(cfg, 24 * 7)
    ledger = Ledger(str(tmp_path / "bt.sqlite"))
    try:
        breaches = ledger.events("vol_breach")
        risk_cycles = [c for c in ledger.cycles() if c.trigger == "risk"]
    finally:
        ledger.close()
    assert breaches and risk_cycles
    assert all(c.status == "done" for c in risk_cycles)
    first = min(utc(e.time) for e in breaches)
    assert first < START + timedelta(days=7)


def test_each_cycle_is_reported_once_even_when_the_catch_up_shares_its_hour(tmp_path: Path) -> None:
    """``rwabot run --hours 3`` from a fresh ledger: the catch-up cycle and the hour's own job run the same
    key; the second finds it done and must not be printed as another cycle."""
    cfg = parse_config(paper_dict(tmp_path), "test")
    engine = Engine(cfg, clock=SimulatedClock(START, 0.0))
    seen: list[str] = []
    Daemon(engine, until=START + timedelta(hours=3), on_cycle=lambda r: seen.append(r.key)).run()
    assert seen and len(seen) == len(set(seen)), seen
    assert seen[0] == START.strftime("%Y-%m-%dT%H:00Z")


def test_the_monitor_reads_the_hourly_window_once_per_hour(tmp_path: Path) -> None:
    cfg = parse_config(paper_dict(tmp_path), "test")
    clock = SimulatedClock(START, 0.0)
    engine = Engine(cfg, clock=clock)
    try:
        engine.run_cycle(START)
        real, windows = engine.c.data.bars, []

        def counting(assets, end, hours):  # noqa: ANN001, ANN202
            if hours == cfg.risk.history_hours + 1:
                windows.append(end)
            return real(assets, end, hours)

        engine.c.data.bars = counting  # type: ignore[method-assign]
        for k in range(1, 24):  # two hours of 5-minute ticks
            clock.advance_to(START + timedelta(minutes=5 * k))
            engine.monitor(clock.now())
    finally:
        engine.close()
    assert len(windows) == 2, windows  # one per hour, not one per tick
