"""Funding: cash that moves between venues as durable legs of a plan (issue 16).

Real parts: the paper venues' own SQLite books and their shared paper network, the real ledger file,
and a real SIGKILL of a process in the middle of a transfer.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.clock import SimulatedClock
from bot.config import RouteSection, VenueLimitsSection, parse_config
from bot.cycle import Engine
from bot.errors import ConfigError
from bot.funding import VenueCash, plan_transfers, transfer_client_id
from tests.conftest import START, paper_dict

NOW = START + timedelta(days=45)
ROUTES = [RouteSection(source="a", destination="b", network="n"), RouteSection(source="b", destination="a", network="n")]  # noqa: E501
LIMITS = {v: VenueLimitsSection(min_transfer=1000.0, max_transfer=50_000.0, daily_cap=80_000.0) for v in "ab"}


def engine(tmp_path: Path, now=NOW, **overrides: Any) -> Engine:  # noqa: ANN001
    return Engine(parse_config(paper_dict(tmp_path, **overrides), "test"), clock=SimulatedClock(now, 0.0))


# -- the pure decision -----------------------------------------------------------------------------------


def test_the_short_venue_gets_the_surplus_cash_within_the_limits() -> None:
    venues = {
        "a": VenueCash(value=600_000, need=500_000, spendable=120_000, fee=1.0, reserve=5_000),
        "b": VenueCash(value=400_000, need=500_000, spendable=0.0),
    }
    (t,), skips = plan_transfers(venues, ROUTES, LIMITS, {})
    assert (t.source, t.destination) == ("a", "b") and t.amount == 50_000.0 and not skips  # max_transfer binds
    big = {**LIMITS, "a": VenueLimitsSection(min_transfer=1000.0, max_transfer=1e9, daily_cap=1e9)}
    (t,), _ = plan_transfers(venues, ROUTES, big, {})
    assert t.amount == 100_000.0  # the whole gap: the surplus is larger
    poor = {**venues, "a": VenueCash(value=600_000, need=500_000, spendable=30_000, fee=1.0, reserve=5_000)}
    (t,), _ = plan_transfers(poor, ROUTES, big, {})
    assert t.amount == 24_999.0  # only cash can leave, less the fee and the reserve it keeps
    _, (skip,) = plan_transfers(venues, ROUTES, LIMITS, {"a": 79_500.0})
    assert "daily cap" in skip.reason  # 500 left of 80,000 today: under the minimum transfer
    (t,), _ = plan_transfers(venues, ROUTES, LIMITS, {"a": 60_000.0})
    assert t.amount == 20_000.0  # what is left of the daily cap


def test_in_transit_cash_and_small_gaps_send_nothing() -> None:
    venues = {
        "a": VenueCash(value=600_000, need=500_000, spendable=200_000),
        "b": VenueCash(value=400_000, need=500_000, spendable=0.0, incoming=100_000),
    }
    assert plan_transfers(venues, ROUTES, LIMITS, {}) == ([], [])  # already on its way
    drift = {"a": VenueCash(value=503_000, need=500_000, spendable=200_000),
             "b": VenueCash(value=497_000, need=500_000, spendable=0.0)}  # fmt: skip
    assert plan_transfers(drift, ROUTES, LIMITS, {}, min_gap=5_000.0) == ([], [])  # drift is not worth a fee
    (t,), _ = plan_transfers(drift, ROUTES, LIMITS, {}, min_gap=0.0)
    assert t.amount == 3_000.0
    no_route = [ROUTES[1]]
    _, (skip,) = plan_transfers(venues | {"b": VenueCash(400_000, 500_000, 0.0)}, no_route, LIMITS, {})
    assert "no funding route" in skip.reason


def test_transfer_ids_are_per_cycle_and_route() -> None:
    a = transfer_client_id("2026-04-15T00:00Z", "exchange", "wallet")
    assert a == transfer_client_id("2026-04-15T00:00Z", "exchange", "wallet") and len(a) <= 32
    assert a != transfer_client_id("2026-04-15T00:00Z", "wallet", "exchange")
    assert a != transfer_client_id("2026-04-15T01:00Z", "exchange", "wallet")


# -- config ------------------------------------------------------------------------------------------------


def test_funding_config_errors_name_the_key(tmp_path: Path) -> None:
    def bad(**funding: Any) -> str:
        with pytest.raises(ConfigError) as exc:
            parse_config(paper_dict(tmp_path, funding=funding), "f.toml")
        return str(exc.value)

    assert "funding.routes.0.destination: Field required" in bad(routes=[{"source": "exchange", "network": "n"}])
    assert "unknown venue 'vault'" in bad(routes=[{"source": "exchange", "destination": "vault", "network": "n"}])
    msg = bad(routes=[{"source": "exchange", "destination": "wallet", "network": "n", "address": "0xdead"}])
    assert "funding.routes[0].address '0xdead' is not on funding.allow" in msg
    assert "min_transfer" in bad(limits={"exchange": {"min_transfer": 10.0, "max_transfer": 5.0}})
    assert "funding.limits.vault: unknown venue" in bad(limits={"vault": {}})
    assert "Extra inputs" in bad(rutes=[])


def test_a_route_whose_venue_cannot_send_is_refused_at_start(tmp_path: Path, rwabot_plugins: Any) -> None:
    from bot import template_venue

    rwabot_plugins.add(template_venue)  # a venue that trades and moves no cash
    d = paper_dict(tmp_path)
    d["venues"]["exchange"] = {"plugin": "template", "options": {"initial_cash": 250_000.0}}
    with pytest.raises(ConfigError, match=r"funding.routes\[0\]: venue 'exchange' cannot send transfers"):
        Engine(parse_config(d, "t.toml"), pm=rwabot_plugins.pm, clock=SimulatedClock(NOW, 0.0))


# -- the cycle ------------------------------------------------------------------------------------------------


def test_transfers_go_first_and_the_cash_arrives_for_a_later_cycle(tmp_path: Path) -> None:
    e = engine(tmp_path, policy={"plugin": "full", "options": {}})
    r1 = e.run_cycle(NOW)
    row1 = e.ledger.get_cycle(r1.key)
    (t,) = e.ledger.transfers_of(row1.id)
    assert t.status == "pending" and t.address == "paper:wallet" and t.sent_at is not None
    ev = {x.kind for x in e.ledger.events()}
    assert {"transfer_planned"} <= ev and "transfer_refused" not in ev
    # the exchange's buys were sized without the cash that left it
    ex = e.c.venues["exchange"].balances()
    assert ex.cash >= 0 and ex.cash < 0.05 * 250_000
    e.clock.advance_to(NOW + timedelta(hours=1))
    r2 = e.run_cycle(NOW + timedelta(hours=1))
    assert e.ledger.transfers_of(row1.id)[0].status == "arrived"
    assert any(x.kind == "transfer_arrived" for x in e.ledger.events())
    assert e.ledger.snapshots()[-1].transit == 0.0
    # one scheduled hour, one plan: running the hour again sends nothing more
    assert e.run_cycle(NOW + timedelta(hours=1)).status == r2.status
    assert len(e.ledger.transfers()) == len({x.client_id for x in e.ledger.transfers()})
    # the paper network holds each transfer once, and the wallet was credited exactly once
    con = sqlite3.connect(tmp_path / "ledger.state" / "paper-network.sqlite")
    assert con.execute("SELECT COUNT(*) FROM paper_transfer").fetchone()[0] == len(e.ledger.transfers())
    con.close()
    e.close()


def test_a_deposit_address_off_the_allow_list_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    e = engine(tmp_path, funding={"allow": ["paper:exchange"]})  # the wallet's address is not on it
    cash0 = {v: x.balances().cash for v, x in e.c.venues.items()}
    r = e.run_cycle(NOW)
    (t,) = e.ledger.transfers_of(e.ledger.get_cycle(r.key).id)
    assert t.status == "canceled" and "not on funding.allow" in t.message
    (ev,) = e.ledger.events("transfer_refused")
    assert ev.severity == "critical" and "'paper:wallet' is not on funding.allow" in ev.message
    con = sqlite3.connect(tmp_path / "ledger.state" / "paper-network.sqlite")
    assert con.execute("SELECT COUNT(*) FROM paper_transfer").fetchone()[0] == 0
    con.close()
    # the exchange kept its cash for its own buys: what it spent is what its fills say
    spent = sum(f.qty * f.price + f.fee for f in e.ledger.fills() if f.venue == "exchange")
    assert e.c.venues["exchange"].balances().cash == pytest.approx(cash0["exchange"] - spent, rel=1e-12)
    e.close()


def test_a_transfer_over_the_daily_cap_is_refused_at_send(tmp_path: Path) -> None:
    limits = {"exchange": {"min_transfer": 10.0, "max_transfer": 1e6, "daily_cap": 50_000.0}}
    e = engine(tmp_path, funding={"limits": limits})
    r = e.run_cycle(NOW)
    (t,) = e.ledger.transfers_of(e.ledger.get_cycle(r.key).id)
    assert t.amount == pytest.approx(50_000.0) and t.status == "pending"  # planned within the cap
    e.close()


CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime
    from bot.clock import SimulatedClock
    from bot.config import parse_config
    from bot.cycle import Engine
    import connectors.paper_network as pn
    import json
    when, cfg = sys.argv[1], json.loads(open(sys.argv[2]).read())
    cfg["clock"]["start"] = datetime.fromisoformat(cfg["clock"]["start"])
    original = pn.PaperNetwork.send

    def send(self, *a, **k):
        if sys.argv[3] == "before":
            os.kill(os.getpid(), signal.SIGKILL)  # intent committed, nothing sent
        st = original(self, *a, **k)
        os.kill(os.getpid(), signal.SIGKILL)  # accepted by the network, the reply never reaches the ledger
        return st

    pn.PaperNetwork.send = send
    e = Engine(parse_config(cfg, "crash"), clock=SimulatedClock(datetime.fromisoformat(when), 0.0))
    e.run_cycle(datetime.fromisoformat(when))
    """
)


@pytest.mark.parametrize("moment", ["before", "after"])
def test_sigkill_between_transfer_intent_and_confirmation_never_sends_twice(tmp_path: Path, moment: str) -> None:
    data = paper_dict(tmp_path)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(data, default=str))
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.run([sys.executable, str(script), NOW.isoformat(), str(cfg_file), moment], env=env, timeout=120,
                       capture_output=True, text=True)  # fmt: skip
    assert p.returncode == -9, p.stderr
    led = sqlite3.connect(tmp_path / "ledger.sqlite")
    ((status,),) = led.execute("SELECT status FROM transfer").fetchall()
    assert status == "sending"  # the intent was committed before the network saw it
    led.close()
    net = tmp_path / "ledger.state" / "paper-network.sqlite"
    sent_before = sqlite3.connect(net).execute("SELECT COUNT(*) FROM paper_transfer").fetchone()[0]
    assert sent_before == (1 if moment == "after" else 0)

    e = engine(tmp_path, now=NOW)  # the restarted daemon, at the same instant (prices unmoved: NAV comparable)
    r = e.run_cycle(NOW)
    assert r.status == "done"
    (t,) = e.ledger.transfers()
    assert t.status in ("pending", "arrived")
    con = sqlite3.connect(net)
    assert con.execute("SELECT COUNT(*) FROM paper_transfer").fetchone()[0] == 1  # exactly one, either way
    con.close()
    # NAV is continuous: the start, less what the venues charged, with the moved cash counted in transit
    snap = e.ledger.snapshots()[-1]
    c = e.ledger.cost_totals()
    assert snap.nav == pytest.approx(1_000_000.0 - c["fees"] - c["slippage"] - c["transfer_fees"], rel=1e-10)
    assert snap.transit == pytest.approx(t.amount if t.status == "pending" else 0.0)
    held = snap.cash + sum(snap.positions[a] * snap.prices[a] for a in e.assets) + snap.transit
    assert held == pytest.approx(snap.nav, rel=1e-12)
    e.close()


def test_a_plan_that_expired_before_its_transfer_was_sent_never_sends_it_late(tmp_path: Path) -> None:
    data = paper_dict(tmp_path)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(data, default=str))
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, str(script), NOW.isoformat(), str(cfg_file), "before"], env=env, timeout=120)
    e = engine(tmp_path, now=NOW + timedelta(hours=2))  # long past plan_ttl_minutes
    e.reconcile()
    (t,) = e.ledger.transfers()
    assert t.status == "canceled" and "expired" in t.message
    con = sqlite3.connect(tmp_path / "ledger.state" / "paper-network.sqlite")
    assert con.execute("SELECT COUNT(*) FROM paper_transfer").fetchone()[0] == 0
    con.close()
    e.close()


def test_status_shows_cash_per_venue_transit_and_transfer_costs(tmp_path: Path) -> None:
    from tests.conftest import offline_config_text

    cfg = tmp_path / "c.toml"
    cfg.write_text(offline_config_text(tmp_path / "ledger.sqlite", speed=0.0).replace(
        "start = 2026-03-01T00:00:00Z", f"start = {NOW.strftime('%Y-%m-%dT%H:%M:%SZ')}"))  # fmt: skip
    from bot.config import load_config

    e = Engine(load_config(cfg), clock=SimulatedClock(NOW, 0.0))
    e.run_cycle(NOW)
    (t,) = e.ledger.transfers()
    e.close()
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "bot.cli", "status", "--config", str(cfg)], capture_output=True,
                         text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert f"in transit {t.amount:,.2f}" in text and "(exchange " in text and "wallet " in text
    assert f"{t.client_id} pending: {t.amount:,.2f} USD exchange → wallet over paper" in text
    assert "transfers: fees 1.00, gas 0.00" in text
