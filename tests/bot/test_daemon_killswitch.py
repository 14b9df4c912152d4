"""The kill switch end to end: the daemon in a subprocess on the simulated market, crashed by a scenario
shock into a drawdown of over 30%; it halts within one monitor tick, stays halted through a restart
(while its /metrics and /healthz say so, matching the ledger), and trades again only after
``rwabot resume``."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.ledger import Ledger, utc
from tests.conftest import START, offline_config_text

CRASH_HOURS = 30  # the book is fully invested after a day (the liquidity caps pace the first buys)
DEPTH = 0.35  # every price: NAV falls by about 34%


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    text = offline_config_text(tmp_path / "ledger.sqlite", speed=0.0)
    old = '[data]\nplugin = "simulated"\noptions = { seed = 7 }\n'
    assert old in text
    text = text.replace(
        old,
        f'''[data]
plugin = "scenario"
options = {{ anchor = "{START.isoformat()}", base = {{ plugin = "simulated", options = {{ seed = 7 }} }}, shocks = [
  {{ kind = "drop", start_hour = {CRASH_HOURS}, hours = 1, depth = {DEPTH}, steps = 1 }} ] }}
''',
    )
    assert "max_drawdown = 0.20" in text  # the embedded kill switch, at a limit the crash passes
    text = text.replace("max_drawdown = 0.20", "max_drawdown = 0.25") + f"\n[ops]\nport = {port}\n"
    path = tmp_path / "crash.toml"
    path.write_text(text)
    return path


def rwabot(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)  # fmt: skip


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - 127.0.0.1 only
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.slow
def test_a_crash_halts_the_daemon_which_stays_halted_until_resumed(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port)
    ledger_path = tmp_path / "ledger.sqlite"
    first = rwabot("run", "--config", str(cfg), "--hours", str(CRASH_HOURS + 6))
    assert first.returncode == 0, first.stderr[-3000:]

    led = Ledger(ledger_path)
    state = led.trading_state()
    assert state is not None and state.state == "halt" and state.cause == "drawdown", state
    crash = START + timedelta(hours=CRASH_HOURS)
    tripped = utc(state.time)
    assert tripped is not None and crash <= tripped <= crash + timedelta(minutes=5)  # within one monitor tick
    (ev,) = led.events("kill_switch")
    assert ev.data["drawdown"] > 0.30, ev.data  # the book really lost over 30%
    cycles_before = len(led.cycles())
    orders_before = len(led.all_orders())
    late = [c for c in led.cycles() if utc(c.started_at) >= tripped]  # type: ignore[operator]
    assert not [o for o in led.all_orders() if o.cycle_id in {c.id for c in late} and o.side == "buy"]
    assert led.events("cycle_halted"), "the hours after the trip were refused, each with an event"
    led.close()
    paper_db = next((tmp_path / "ledger.state").glob("paper-exchange.sqlite"))
    paper_orders = sqlite3.connect(paper_db).execute("SELECT COUNT(*) FROM paper_order").fetchone()[0]

    # a restart: still halted; the ops endpoint says so while it runs, and agrees with the ledger
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cfg.write_text(cfg.read_text().replace("speed = 0.0", "speed = 3600.0"))  # one simulated hour per second
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--config", str(cfg), "--hours", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        metrics = health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                code, body = get(f"http://127.0.0.1:{port}/metrics")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
                continue
            metrics = body
            health = get(f"http://127.0.0.1:{port}/healthz")
            break
        assert metrics is not None and health is not None, "the ops endpoint never answered"
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "kill switch:" in err and "halt" in err
    code, body = health
    assert code == 503, body
    assert any("kill switch" in r.lower() and "halt" in r for r in json.loads(body)["reasons"]), body
    led = Ledger(ledger_path)
    assert len(led.cycles()) == cycles_before and len(led.all_orders()) == orders_before  # nothing planned
    assert sqlite3.connect(paper_db).execute("SELECT COUNT(*) FROM paper_order").fetchone()[0] == paper_orders
    got = samples(metrics)
    snap = led.snapshots()[-1]
    assert got[("rwabot_nav", ())] == pytest.approx(snap.nav)
    for a in ("SPY", "USTB"):
        w = snap.positions[a] * snap.prices[a] / snap.nav
        key = next(k for k in got if k[0] == "rwabot_weight" and ("asset", a) in k[1])
        assert got[key] == pytest.approx(w)
    assert got[("rwabot_kill_switch_state", (("state", "halt"),))] == 1.0
    assert got[("rwabot_kill_switch_tripped", ())] == 1.0 and got[("rwabot_healthy", ())] == 0.0
    filled = sum(1 for o in led.all_orders() if o.status == "filled" and o.venue == "exchange")
    assert got[("rwabot_orders", (("status", "filled"), ("venue", "exchange")))] == filled
    assert led.trading_state().state == "halt"  # type: ignore[union-attr]
    led.close()

    res = rwabot("resume", "--config", str(cfg), "--reason", "the crash is the test's scenario")
    assert res.returncode == 0 and "resumed from halt" in res.stdout, res.stdout + res.stderr
    cfg.write_text(cfg.read_text().replace("speed = 3600.0", "speed = 0.0"))
    again = rwabot("run", "--config", str(cfg), "--hours", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    led = Ledger(ledger_path)
    assert len(led.cycles()) > cycles_before, "trading started again after the resume"
    assert led.trading_state().state == "active"  # type: ignore[union-attr]
    led.close()
