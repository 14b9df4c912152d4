"""Two wallets on two real anvil chains; the second chain's node is killed *before* a cycle plans.

The cycle must fail only that venue (``venue_failed``), hold its fund shares at their last known
value, trade the first chain, and keep the first chain's books exactly equal to the ledger. Also:
the wallet's ETH gas reserve counts in NAV but is never planned as money for tokens.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from connectors.evm.chain import connect
from connectors.evm.deploy import World, deploy_world
from connectors.evm.node import AnvilNode
from tests.connectors.evm.conftest import (  # noqa: F401  (fixtures)
    NOW,
    _world_session,
    anvil,
    evm_config,
    evm_engine,
    venue_options,
    world,
)
from tests.connectors.evm.test_evm_cycle import UPPER, books_agree, snapshot_before, start_in_ustb


def test_a_node_down_before_the_cycle_fails_only_its_venue(
    tmp_path: Path,
    world: World,  # noqa: F811
    anvil: AnvilNode,  # noqa: F811
) -> None:
    start_in_ustb(world)
    before = snapshot_before(world)
    other = AnvilNode().start()
    try:
        w2 = deploy_world(connect(other.url, 5.0))
        cfg = evm_config(tmp_path, world, anvil.url, upper=UPPER)
        cfg["policy"] = {"plugin": "full", "options": {}}
        cfg["venues"]["chain_b"] = {
            "plugin": "evm",
            "options": venue_options(w2, other.url, assets={"CREDIT": w2.venue_assets()["CREDIT"]}),
        }
        cfg["assets"]["CREDIT"]["venue"] = "chain_b"
        cfg["venues"]["chain"]["options"]["assets"].pop("CREDIT")
        e = evm_engine(tmp_path, cfg)
        r1 = e.run_cycle(NOW)
        assert r1.status == "done" and r1.message == ""
        snap1 = e.ledger.snapshots()[-1]
        assert snap1.positions["CREDIT"] > 0
        # the gas reserve: counted in NAV, never planned as money for tokens
        bal = e.c.venues["chain"].balances()
        native_usd = before["native"] / 1e18 * world.feeds["ETH"].functions.latestRoundData().call()[1] / 1e8
        assert bal.reserved == pytest.approx(native_usd, rel=1e-3) and bal.spendable == bal.cash - bal.reserved

        # USTB's NAV jumps 20% (far past its cap): a rebalance is due on chain; chain_b's node dies first
        world.set_nav("USTB", world.nav("USTB") * 1.2)
        other.stop()
        when = NOW + timedelta(minutes=10)
        e.clock.advance_to(when)
        r2 = e.run_cycle(when, trigger="risk")
        assert r2.status == "done"
        assert "venue chain_b failed: at planning: " in r2.message and "node unreachable" in r2.message
        (ev,) = e.ledger.events("venue_failed")
        assert ev.where == "venue:chain_b" and ev.cycle_key == r2.key and "CREDIT" in ev.message
        row2 = e.ledger.get_cycle(r2.key)
        t = {x.asset: x for x in e.ledger.targets_of(row2.id)}
        w_credit = snap1.positions["CREDIT"] * snap1.prices["CREDIT"] / row2.nav_before
        assert t["CREDIT"].price == snap1.prices["CREDIT"]
        assert t["CREDIT"].current_weight == pytest.approx(w_credit, rel=1e-12)
        assert t["CREDIT"].decided_weight == pytest.approx(w_credit, rel=1e-9)
        orders = e.ledger.orders_of(row2.id)
        assert orders and {o.venue for o in orders} == {"chain"} and {o.status for o in orders} == {"filled"}
        assert any(o.asset == "USTB" and o.side == "sell" for o in orders)
        snap2 = e.ledger.snapshots()[-1]
        assert snap2.cycle_id == row2.id and snap2.positions["CREDIT"] == snap1.positions["CREDIT"]
        books_agree(e, world, "chain", before)
        # the next cycle tries to reconcile the venue first, and fails it again while the node is down
        later = when + timedelta(minutes=10)
        e.clock.advance_to(later)
        e.run_cycle(later, trigger="risk")
        assert any("reconcile" in x.message for x in e.ledger.events("venue_failed"))
        e.close()
    finally:
        other.stop()
