"""A venue that cannot be read at planning time fails only itself; gas reserves count but buy nothing.

Real parts: the simulated market, paper venues with their own books, ERC, a SQLite ledger. The
venue that "goes down" is a paper venue whose reads raise ``VenueError``, as an unreachable node
or exchange does (the chain version, with a real anvil node killed, is in
``test_venue_failure_chain.py``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from bot.clock import SimulatedClock
from bot.config import parse_config
from bot.cycle import Engine
from bot.domain import Balances
from bot.errors import VenueError
from bot.hookspecs import hookimpl
from bot.plugins import make_plugin_manager
from tests.conftest import START, paper_dict

NOW = START + timedelta(days=45)
WALLET = ("USTB", "REALT", "CREDIT", "PAXG")


class Flaky:
    """Paper venues (``flaky_paper``) that can be switched off by name, and given a gas reserve."""

    down: ClassVar[set[str]] = set()
    reserve: ClassVar[dict[str, float]] = {}

    @hookimpl
    def rwabot_register_venues(self, register):  # noqa: ANN001, ANN201
        from connectors.paper import PaperConfig, PaperVenue

        class FlakyPaper(PaperVenue):
            def _check(self) -> None:
                if self.name in Flaky.down:
                    raise VenueError(self.name, "node unreachable: connection refused")

            def balances(self) -> Balances:
                self._check()
                b = super().balances()
                return Balances(b.cash, b.positions, min(Flaky.reserve.get(self.name, 0.0), b.cash))

            def quote(self, asset):  # noqa: ANN001, ANN202
                self._check()
                return super().quote(asset)

            def market(self, asset):  # noqa: ANN001, ANN202
                self._check()
                return super().market(asset)

        register("flaky_paper", lambda cfg, ctx: FlakyPaper(ctx.extra["venue_name"], cfg, ctx), PaperConfig)


@pytest.fixture
def flaky() -> type[Flaky]:
    Flaky.down, Flaky.reserve = set(), {}
    yield Flaky
    Flaky.down, Flaky.reserve = set(), {}


def engine(tmp_path: Path, **overrides: Any) -> Engine:
    venues = {
        "exchange": {"plugin": "flaky_paper", "options": {"initial_cash": 250000.0, "fee_bps": 2.0}},
        "wallet": {"plugin": "flaky_paper", "options": {"initial_cash": 750000.0, "fee_bps": 10.0}},
    }
    cfg = parse_config(paper_dict(tmp_path, venues=venues, **overrides), "test")
    return Engine(cfg, pm=make_plugin_manager(plugins=[Flaky()]), clock=SimulatedClock(NOW, 0.0))


def value_of(e: Engine, vname: str) -> float:
    """What a venue holds, valued at its own quotes now (read straight from the venue)."""
    v = e.c.venues[vname]
    b = v.balances()
    return b.cash + sum(q * v.quote(a).mid for a, q in b.positions.items())


def targets(e: Engine, key: str) -> dict[str, Any]:
    return {t.asset: t for t in e.ledger.targets_of(e.ledger.get_cycle(key).id)}


def test_a_venue_down_at_planning_is_held_and_the_others_trade(tmp_path: Path, flaky: type[Flaky]) -> None:
    e = engine(tmp_path, policy={"plugin": "full", "options": {}})
    r1 = e.run_cycle(NOW)
    assert r1.status == "done" and r1.message == ""
    snap1 = e.ledger.snapshots()[-1]
    wallet_book = e.c.venues["wallet"].balances()
    assert set(wallet_book.positions) == set(WALLET)

    later = NOW + timedelta(hours=200)
    e.clock.advance_to(later)
    exchange_before = value_of(e, "exchange")
    flaky.down.add("wallet")
    r2 = e.run_cycle(later)
    assert r2.status == "done"
    assert "venue wallet failed: at planning: " in r2.message and "node unreachable" in r2.message
    (ev,) = e.ledger.events("venue_failed")
    assert ev.where == "venue:wallet" and ev.cycle_key == r2.key and ev.severity == "critical"
    assert "held at its last known value" in ev.message and all(a in ev.message for a in WALLET)
    assert not e.ledger.events("cycle_failed")

    # NAV: the exchange as it is now plus the wallet at the ledger's last snapshot, plus the cash the first
    # cycle sent it (in transit at that snapshot, credited since: counted once, whether or not the wallet
    # can confirm it now)
    wallet_known = snap1.cash_by_venue["wallet"] + sum(snap1.positions[a] * snap1.prices[a] for a in WALLET)
    (sent,) = e.ledger.transfers_of(e.ledger.get_cycle(r1.key).id)
    assert sent.destination == "wallet" and snap1.transit == pytest.approx(sent.amount)
    row2 = e.ledger.get_cycle(r2.key)
    assert row2.nav_before == pytest.approx(exchange_before + wallet_known + sent.amount, rel=1e-12)
    t2 = targets(e, r2.key)
    for a in WALLET:  # held where they were, priced as last known, never traded
        w = snap1.positions[a] * snap1.prices[a] / row2.nav_before
        assert t2[a].price == snap1.prices[a]
        assert t2[a].current_weight == pytest.approx(w, rel=1e-12)
        assert t2[a].target_weight == pytest.approx(w, rel=1e-9)
        assert t2[a].decided_weight == pytest.approx(w, rel=1e-9)
    # the rest of the portfolio was planned around them and traded
    orders2 = e.ledger.orders_of(row2.id)
    assert orders2 and {o.venue for o in orders2} == {"exchange"}
    assert {o.status for o in orders2} == {"filled"}
    ex = [a for a in e.assets if a not in WALLET]
    w_ex = np.array([t2[a].target_weight for a in ex])
    assert w_ex.sum() + sum(t2[a].target_weight for a in WALLET) <= 1.0 + 1e-12 and (w_ex > 0).all()
    # the closing snapshot holds the wallet at its last known positions
    snap2 = e.ledger.snapshots()[-1]
    assert snap2.cycle_id == row2.id and "closing snapshot holds wallet at last known values" in r2.message
    assert {a: snap2.positions[a] for a in WALLET} == {a: snap1.positions[a] for a in WALLET}
    arrived = e.ledger.transfers_of(sent.cycle_id)[0].status == "arrived"  # the paper network says so
    assert snap2.cash_by_venue["wallet"] == pytest.approx(snap1.cash_by_venue["wallet"] + sent.amount * arrived)
    assert snap2.transit == pytest.approx(0.0 if arrived else sent.amount)
    # the risk monitor still sees the whole portfolio (the wallet at its last known holdings)
    assert 0.0 < e.forecast_sigma(later) < 1.0

    # the wallet comes back: the next cycle trades it again, and its book is what the ledger expects
    flaky.down.clear()
    back = e.c.venues["wallet"].balances()
    assert back.positions == wallet_book.positions and back.cash == pytest.approx(wallet_book.cash + sent.amount)
    e.clock.advance_to(later + timedelta(hours=100))
    r3 = e.run_cycle(later + timedelta(hours=100))
    assert r3.status == "done" and "failed" not in r3.message
    assert "wallet" in {o.venue for o in e.ledger.orders_of(e.ledger.get_cycle(r3.key).id)}
    assert not e.ledger.events("position_mismatch")
    e.close()


def test_a_venue_down_on_the_first_cycle_is_left_out(tmp_path: Path, flaky: type[Flaky]) -> None:
    flaky.down.add("wallet")
    e = engine(tmp_path)
    r = e.run_cycle(NOW)
    assert r.status == "done"
    (ev,) = e.ledger.events("venue_failed")
    assert ev.where == "venue:wallet" and "left out of NAV" in ev.message
    row = e.ledger.get_cycle(r.key)
    assert row.nav_before == pytest.approx(250000.0)  # the exchange's cash only
    t = targets(e, r.key)
    assert all(t[a].target_weight == 0.0 and t[a].decided_weight == 0.0 for a in WALLET)
    orders = e.ledger.orders_of(row.id)
    assert orders and {o.venue for o in orders} == {"exchange"} and {o.status for o in orders} == {"filled"}
    # a NAV without the whole wallet would read as a loss: no closing snapshot is written
    assert "no closing snapshot: no value known for venues ['wallet']" in r.message
    assert not e.ledger.snapshots()
    e.close()


def test_every_venue_down_fails_the_cycle(tmp_path: Path, flaky: type[Flaky]) -> None:
    flaky.down.update({"wallet", "exchange"})
    e = engine(tmp_path)
    r = e.run_cycle(NOW)
    assert r.status == "failed" and "every venue failed" in r.message
    assert e.ledger.events("cycle_failed") and not e.ledger.all_orders()
    e.close()


@pytest.mark.parametrize("reserve", [0.0, 740000.0])
def test_a_gas_reserve_counts_in_nav_but_buys_nothing(tmp_path: Path, flaky: type[Flaky], reserve: float) -> None:
    flaky.reserve["wallet"] = reserve
    e = engine(tmp_path)
    r = e.run_cycle(NOW)
    assert r.status == "done"
    row = e.ledger.get_cycle(r.key)
    assert row.nav_before == pytest.approx(1_000_000.0)  # the reserve is part of NAV
    wallet_fills = [f for f in e.ledger.fills() if f.venue == "wallet"]
    spent = sum(f.qty * f.price + f.fee for f in wallet_fills)
    assert not [o for o in e.ledger.all_orders() if o.status == "rejected"]
    if reserve:
        assert 0 < spent <= 750000.0 - reserve  # only the spendable 10,000 bought tokens
        short = [ev for ev in e.ledger.events("cash_shortfall") if ev.where == "venue:wallet"]
        assert short and "which holds" in short[0].message
        t = targets(e, r.key)
        assert sum(t[a].target_weight for a in WALLET) <= 0.99 * 10000.0 / 1_000_000.0 + 1e-12
    else:
        assert spent > 30000.0  # without a reserve the same wallet invests far more (up to its liquidity caps)
    assert e.ledger.snapshots()[-1].cash_by_venue["wallet"] == pytest.approx(750000.0 - spent, rel=1e-12)
    e.close()
