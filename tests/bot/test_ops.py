"""The operations endpoint (bot/ops.py): /metrics, /healthz and /status against a ledger of real cycles."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select
from typer.testing import CliRunner

from bot.clock import SimulatedClock
from bot.config import Config, parse_config
from bot.cycle import Engine
from bot.domain import RiskEvent, Severity
from bot.ledger import CycleRow, Ledger, TradingStateRow, utc
from bot.ops import OpsServer, _read_transaction, health, ledger_status
from tests.conftest import START, offline_config_text, paper_dict

NOW = START + timedelta(days=45)
LAST = NOW + timedelta(hours=1)  # the second (last) cycle of the base ledger


@pytest.fixture(scope="module")
def base_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real hourly cycles of the offline paper book (orders and fills at both venues, a transfer)."""
    tmp = tmp_path_factory.mktemp("base")
    cfg = parse_config(paper_dict(tmp), "test")
    e = Engine(cfg, clock=SimulatedClock(NOW, 0.0))
    try:
        assert e.run_cycle(NOW).status == "done"
        e.clock.advance_to(LAST)
        assert e.run_cycle(LAST).status == "done"
    finally:
        e.close()
    return Path(cfg.bot.ledger)


def setup(tmp_path: Path, base: Path, **overrides: Any) -> tuple[Config, Ledger]:
    """A config on a copy of the base ledger (tests write to it), the endpoint on a free port."""
    cfg = parse_config(paper_dict(tmp_path, ops={"port": 0}, **overrides), "test")
    for suffix in ("", "-wal", "-shm"):
        if Path(str(base) + suffix).exists():
            shutil.copy(str(base) + suffix, cfg.bot.ledger + suffix)
    return cfg, Ledger(cfg.bot.ledger)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.t = now

    def __call__(self) -> datetime:
        return self.t


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    code, ctype, text = get(url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain"), (code, text)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def val(m: dict, name: str, **labels: str) -> float:
    return m[(name, frozenset(labels.items()))]


def test_a_scrape_parses_and_matches_the_ledger(tmp_path: Path, base_ledger: Path) -> None:
    cfg, led = setup(tmp_path, base_ledger)
    now = LAST + timedelta(minutes=25)
    led.record_mark(now - timedelta(minutes=5), 1_000_123.0, 0.0123, data_time=now - timedelta(minutes=12))
    led.set_trading_state(
        TradingStateRow(
            time=now - timedelta(minutes=1), state="reduce_only", cause="drawdown", reason="dd 6%", by="monitor"
        )
    )
    led.record_event(RiskEvent("order_rejected", Severity.CRITICAL, "venue:exchange", "too small", now, None))
    ops = OpsServer(cfg.bot.ledger, cfg, Clock(now), alert_stats=lambda: {"sent": 3, "suppressed": {"webhook": 2}})
    ops.start()
    try:
        m = scrape(ops.url)
    finally:
        ops.stop()

    snaps = led.snapshots()
    snap = snaps[-1]
    assert val(m, "rwabot_nav") == pytest.approx(snap.nav, rel=1e-12)
    assert val(m, "rwabot_cash") == pytest.approx(snap.cash, rel=1e-12)
    assert val(m, "rwabot_transit") == pytest.approx(snap.transit or 0.0, abs=1e-9)
    for v, c in snap.cash_by_venue.items():
        assert val(m, "rwabot_venue_cash", venue=v) == pytest.approx(c, rel=1e-12)
    last = led.last_cycle()
    assert last.scheduled_for.replace(tzinfo=UTC) == LAST
    targets = led.targets_of(last.id)
    assert len(targets) == len(cfg.assets)
    for t in targets:
        lab = {"asset": t.asset, "venue": cfg.assets[t.asset].venue}
        held = snap.positions.get(t.asset, 0.0) * snap.prices[t.asset] / snap.nav
        assert val(m, "rwabot_weight", **lab) == pytest.approx(held, rel=1e-12)
        assert val(m, "rwabot_target_weight", **lab) == pytest.approx(t.target_weight, rel=1e-12)
        assert val(m, "rwabot_risk_contribution", **lab) == pytest.approx(t.risk_contribution, rel=1e-12)
        assert val(m, "rwabot_weight_upper", **lab) == pytest.approx(t.upper, rel=1e-12)
    assert sum(val(m, "rwabot_weight", asset=a, venue=s.venue) for a, s in cfg.assets.items()) > 0.1
    for s, field in (("free", "rc_dispersion_held"), ("bound", "rc_dispersion_held_bound"),
                     ("all", "rc_dispersion_held_all"), ("target", "rc_dispersion_target")):  # fmt: skip
        assert val(m, "rwabot_rc_dispersion", set=s) == pytest.approx(getattr(last, field), abs=1e-15)
    assert val(m, "rwabot_sigma_p_annual") == pytest.approx(0.0123)  # the mark's, not the cycle's
    assert last.sigma_p_annual != pytest.approx(0.0123)
    assert val(m, "rwabot_mark_nav") == 1_000_123.0
    assert val(m, "rwabot_data_age_seconds") == pytest.approx(12 * 60)
    assert val(m, "rwabot_last_cycle_age_seconds") == pytest.approx(25 * 60)
    assert ("rwabot_last_cycle_duration_seconds", frozenset()) not in m  # simulated clock: not measurable

    costs = led.cost_totals()
    assert costs["fees"] > 0 and costs["transfer_fees"] > 0
    for kind in ("fees", "slippage", "gas", "transfer_fees", "transfer_gas", "product_fees"):
        assert val(m, "rwabot_cost", kind=kind) == pytest.approx(costs[kind], rel=1e-12, abs=1e-12)
    assert val(m, "rwabot_traded_total") == pytest.approx(costs["traded"], rel=1e-12)
    orders = Counter((o.venue, o.status) for o in led.all_orders())
    assert {v for v, _ in orders} == {"exchange", "wallet"}
    got = {(dict(k)["venue"], dict(k)["status"]): x for (n, k), x in m.items() if n == "rwabot_orders"}
    assert got == {k: float(n) for k, n in orders.items()}
    fills = Counter(f.venue for f in led.fills())
    assert {dict(k)["venue"]: x for (n, k), x in m.items() if n == "rwabot_fills_total"} == dict(fills)
    assert val(m, "rwabot_venue_errors_total", venue="exchange", kind="order_rejected") == 1
    assert val(m, "rwabot_cycles", status="done") == 2
    assert val(m, "rwabot_orders_in_flight") == 0

    assert val(m, "rwabot_kill_switch_state", state="reduce_only") == 1
    assert [val(m, "rwabot_kill_switch_state", state=s) for s in ("active", "halt", "flatten")] == [0, 0, 0]
    assert val(m, "rwabot_kill_switch_tripped") == 1 and val(m, "rwabot_healthy") == 0
    assert val(m, "rwabot_alerts_sent_total") == 3
    assert val(m, "rwabot_alerts_suppressed_total", key="webhook") == 2
    led.close()


def test_healthz_is_ok_when_fresh_and_fails_two_hours_after_the_last_cycle(tmp_path: Path, base_ledger: Path) -> None:
    cfg, led = setup(tmp_path, base_ledger)
    clock = Clock(LAST + timedelta(minutes=30))
    ops = OpsServer(cfg.bot.ledger, cfg, clock)
    ops.start()
    try:
        code, ctype, body = get(ops.url + "/healthz")
        assert (code, ctype, json.loads(body)["ok"], json.loads(body)["reasons"]) == (200, "application/json", True, [])
        assert val(scrape(ops.url), "rwabot_healthy") == 1
        clock.t = LAST + timedelta(hours=2, minutes=1)
        code, _, body = get(ops.url + "/healthz")
        doc = json.loads(body)
        assert code == 503 and doc["ok"] is False
        assert doc["reasons"] == ["last cycle 2026-04-15T01:00Z (done) is 2.0 h old; limit 2 h"]
        assert val(scrape(ops.url), "rwabot_healthy") == 0
    finally:
        ops.stop()
    led.close()


def test_healthz_fails_while_the_kill_switch_is_tripped(tmp_path: Path, base_ledger: Path) -> None:
    cfg, led = setup(tmp_path, base_ledger)
    now = LAST + timedelta(minutes=10)
    ops = OpsServer(cfg.bot.ledger, cfg, Clock(now))
    ops.start()
    try:
        led.set_trading_state(
            TradingStateRow(time=now, state="halt", cause="daily_loss", reason="-3.1% today", by="monitor")
        )
        code, _, body = get(ops.url + "/healthz")
        assert code == 503
        (reason,) = json.loads(body)["reasons"]
        assert reason.startswith("kill switch halt (daily_loss) since 2026-04-15T01:10:00+00:00 by monitor")
        assert val(scrape(ops.url), "rwabot_kill_switch_state", state="halt") == 1
        led.set_trading_state(TradingStateRow(time=now, state="active", cause="resume", reason="checked", by="cli"))
        assert get(ops.url + "/healthz")[0] == 200  # the last row is the state
        assert val(scrape(ops.url), "rwabot_kill_switch_tripped") == 0
    finally:
        ops.stop()
    led.close()


def test_a_failing_venue_is_unhealthy_until_a_cycle_is_done(tmp_path: Path, base_ledger: Path) -> None:
    cfg, led = setup(tmp_path, base_ledger)
    now = LAST + timedelta(minutes=20)
    older = RiskEvent("venue_failed", Severity.CRITICAL, "venue:exchange", "old outage", LAST - timedelta(minutes=30))
    led.record_event(older)  # before the last done cycle: over
    assert health(led, cfg, now) == (True, [])
    led.record_event(RiskEvent("venue_failed", Severity.CRITICAL, "venue:wallet", "rpc timeout", now, None))
    ok, reasons = health(led, cfg, now)
    assert not ok and reasons == ["venue wallet failing (last failure 2026-04-15T01:20:00+00:00): rpc timeout"]
    ops = OpsServer(cfg.bot.ledger, cfg, Clock(now))
    ops.start()
    try:
        m = scrape(ops.url)
        assert val(m, "rwabot_venue_failing", venue="wallet") == 1
        assert val(m, "rwabot_venue_failing", venue="exchange") == 0
        assert val(m, "rwabot_venue_errors_total", venue="exchange", kind="venue_failed") == 1
        assert get(ops.url + "/healthz")[0] == 503
    finally:
        ops.stop()
    # every venue failed in the last cycle: the cycle itself is failing (bot.outcome.cycle_failure)
    (tmp_path / "all").mkdir()
    cfg2, led2 = setup(tmp_path / "all", base_ledger)
    for v in cfg2.venues:
        led2.record_event(RiskEvent("venue_failed", Severity.CRITICAL, f"venue:{v}", "down", LAST, "2026-04-15T01:00Z"))
    ok, reasons = health(led2, cfg2, now)
    assert not ok and reasons[0].startswith("cycle 2026-04-15T01:00Z: every venue failed (exchange: down; wallet")
    assert ledger_status(led2, cfg2, now)["health"]["failing_venues"] == ["exchange", "wallet"]
    led.close()
    led2.close()


def test_a_daemon_that_never_cycled_is_starting_then_unhealthy(tmp_path: Path) -> None:
    cfg = parse_config(paper_dict(tmp_path), "test")
    led = Ledger(cfg.bot.ledger)
    assert health(led, cfg, NOW) == (True, ["starting: no cycle has finished yet"])
    led.record_event(RiskEvent("data_stale", Severity.WARNING, "data:simulated", "no bar", NOW, None))
    assert health(led, cfg, NOW + timedelta(hours=1))[0] is True
    ok, reasons = health(led, cfg, NOW + timedelta(hours=3))
    assert not ok and reasons[0].startswith("no cycle has finished in the 3.0 h since the ledger's first record")
    led.close()


def test_the_cycle_duration_is_the_ledger_s_on_a_real_clock(tmp_path: Path, base_ledger: Path) -> None:
    cfg, led = setup(tmp_path, base_ledger, clock={"kind": "real"})
    with led.session() as s:
        row = s.exec(select(CycleRow).where(CycleRow.key == "2026-04-15T01:00Z")).one()
        row.finished_at = utc(row.started_at) + timedelta(seconds=42.5)
        s.add(row)
        s.commit()
    ops = OpsServer(cfg.bot.ledger, cfg, Clock(LAST + timedelta(minutes=5)))
    ops.start()
    try:
        assert val(scrape(ops.url), "rwabot_last_cycle_duration_seconds") == pytest.approx(42.5)
        assert json.loads(get(ops.url + "/status")[2])["last_cycle"]["duration_s"] == pytest.approx(42.5)
    finally:
        ops.stop()
    led.close()


def test_binds_localhost_answers_404_elsewhere_and_survives_ledger_errors(tmp_path: Path, base_ledger: Path) -> None:
    cfg = parse_config(paper_dict(tmp_path, ops={"port": 0}), "test")
    assert cfg.ops.host == "127.0.0.1"
    ops = OpsServer(cfg.bot.ledger, cfg, Clock(LAST))  # no ledger there yet
    ops.start()
    try:
        assert ops._httpd.server_address[0] == "127.0.0.1" and ops.url == f"http://127.0.0.1:{ops.port}"
        assert get(ops.url + "/nothing")[0] == 404
        code, _, body = get(ops.url + "/metrics")
        assert code == 500 and "no ledger at" in body
        assert get(ops.url + "/healthz")[0] == 500
        assert not Path(cfg.bot.ledger).exists()  # a scrape never creates the daemon's ledger
        setup(tmp_path, base_ledger)[1].close()
        assert val(scrape(ops.url), "rwabot_cycles", status="done") == 2  # the same thread serves on
        code, ctype, body = get(ops.url + "/status")
        assert code == 200 and json.loads(body)["last_cycle"]["key"] == "2026-04-15T01:00Z"
    finally:
        ops.stop()
    with pytest.raises(ValueError, match="ops.port is not set"):
        OpsServer(cfg.bot.ledger, parse_config(paper_dict(tmp_path), "test"), Clock(LAST)).start()


def test_a_read_sees_one_instant_of_the_ledger(tmp_path: Path, base_ledger: Path) -> None:
    """The daemon's commits between a scrape's queries are not seen by that scrape."""
    _, led = setup(tmp_path, base_ledger)
    writer = Ledger(led.path)
    with _read_transaction(led) as view:
        before = len(view.events())
        writer.record_event(RiskEvent("venue_failed", Severity.CRITICAL, "venue:wallet", "x", LAST, None))
        assert len(view.events()) == before
    assert len(led.events()) == before + 1
    writer.close()
    led.close()


def test_status_json_prints_the_ledger_for_scripts(tmp_path: Path, base_ledger: Path) -> None:
    _, led = setup(tmp_path, base_ledger)
    led.set_trading_state(TradingStateRow(time=LAST, state="flatten", cause="sigma", reason="σ 40%", by="cycle"))
    path = tmp_path / "offline.toml"
    path.write_text(offline_config_text(led.path, speed=0.0))
    res = CliRunner().invoke(app_(), ["status", "--config", str(path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    snap = led.snapshots()[-1]
    assert doc["now"] == "2026-04-15T01:00:00+00:00"  # simulated clock: the ledger's last snapshot time
    assert doc["last_cycle"]["key"] == "2026-04-15T01:00Z" and doc["last_cycle"]["status"] == "done"
    assert doc["snapshot"]["nav"] == snap.nav and doc["snapshot"]["cash_by_venue"] == snap.cash_by_venue
    assert doc["costs"] == led.cost_totals()
    weights = {w["asset"]: w for w in doc["weights"]}
    for t in led.targets_of(led.last_cycle().id):
        assert weights[t.asset]["target"] == t.target_weight
        assert weights[t.asset]["weight"] == pytest.approx(snap.positions[t.asset] * snap.prices[t.asset] / snap.nav)
    assert doc["kill_switch"] == {"state": "flatten", "tripped": True, "cause": "sigma", "reason": "σ 40%",
                                  "since": "2026-04-15T01:00:00+00:00", "by": "cycle"}  # fmt: skip
    assert doc["health"]["ok"] is False and doc["health"]["reasons"][0].startswith("kill switch flatten")
    assert doc["orders"]["by_venue"] == {
        v: dict(Counter(o.status for o in led.all_orders() if o.venue == v)) for v in ("exchange", "wallet")
    }
    assert len(doc["events"]) == min(10, len(led.events()))
    led.close()
    missing = tmp_path / "missing.toml"
    missing.write_text(offline_config_text(tmp_path / "none.sqlite", speed=0.0))
    res = CliRunner().invoke(app_(), ["status", "--config", str(missing), "--json"])
    assert res.exit_code == 2 and "no ledger at" in res.output


def app_() -> Any:
    from bot.cli import app

    return app


def test_scrapes_during_a_daemon_run_parse_and_the_last_matches_the_ledger(tmp_path: Path) -> None:
    """The daemon writes from its thread while /metrics is scraped from another connection: every scrape
    parses and answers 200, and once the run ends a scrape equals the ledger."""
    import threading

    from bot.daemon import Daemon

    cfg = parse_config(paper_dict(tmp_path, ops={"port": 0}), "test")
    begin = NOW + timedelta(minutes=30)
    engine = Engine(cfg, clock=SimulatedClock(begin, 0.0))
    ops = OpsServer(cfg.bot.ledger, cfg, engine.clock.now)
    ops.start()
    reports: list[Any] = []
    run = threading.Thread(target=Daemon(engine, until=begin + timedelta(hours=4), on_cycle=reports.append).run)
    run.start()
    scrapes = 0
    try:
        while run.is_alive():
            code, _, text = get(ops.url + "/metrics")
            if code == 500 and "no ledger at" in text:
                continue  # the engine has not created it yet
            assert code == 200, text
            list(text_string_to_metric_families(text))
            scrapes += 1
        run.join()
        m = scrape(ops.url)
    finally:
        ops.stop()
    assert scrapes > 0 and len(reports) >= 4
    led = engine.ledger
    assert val(m, "rwabot_cycles", status="done") == sum(1 for c in led.cycles() if c.status == "done") >= 4
    assert val(m, "rwabot_nav") == led.snapshots()[-1].nav
    assert val(m, "rwabot_cost", kind="fees") == pytest.approx(led.cost_totals()["fees"], rel=1e-12)
    assert sum(x for (n, _), x in m.items() if n == "rwabot_fills_total") == len(led.fills())
    assert val(m, "rwabot_last_cycle_age_seconds") == pytest.approx(
        (engine.clock.now() - utc(led.last_cycle(statuses=("done", "failed", "expired")).scheduled_for)).total_seconds()
    )
    engine.close()
