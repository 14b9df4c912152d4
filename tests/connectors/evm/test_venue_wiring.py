"""The evm venue with the eligibility layer and asynchronous funds wired in, on anvil with real
contracts (the T-REX suite, the world's allow-listed vaults and pools, an ERC-7540 fund)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.domain import Order, OrderStatus
from bot.ledger import Ledger
from connectors.evm.deploy import SHARE, World, send
from connectors.evm.eligibility import NotEligible
from connectors.evm.node import AnvilNode
from connectors.evm.trex import deploy_trex, trex_pool
from connectors.evm.venue import EvmVenue, EvmVenueConfig
from tests.connectors.evm.conftest import NOW, venue_options


def make_venue(tmp_path: Path, world: World, url: str, events: list[Any], ledger: Ledger, **kw: Any) -> EvmVenue:
    ctx = ComponentContext(
        SimulatedClock(NOW, 0.0), tmp_path / "state", (), events.append, extra={"ledger": ledger}
    )  # fmt: skip
    return EvmVenue("chain", EvmVenueConfig.model_validate(venue_options(world, url, **kw)), ctx)


def order(cid: str, asset: str, side: str, qty: float, price: float) -> Order:
    return Order(cid, "2026-01-02T05:00Z", "chain", asset, side, qty, price)  # type: ignore[arg-type]


def test_trex_pool_not_verified_is_refused_by_the_venue_before_signing(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    suite = deploy_trex(world.w3, world.owner)  # unpaused
    suite.verify(world.trader)
    send(world.w3, suite.token.functions.mint(world.trader, 100 * SHARE), world.owner)
    pool = trex_pool(world, suite, 100.0, 1_000_000.0, verify_pool=False)
    assets = {**world.venue_assets(), "TRX": {"kind": "pool", "address": suite.token.address, "pool": pool.address}}
    elig = {"TRX": {"token": suite.token.address, "checks": ["erc3643"]}}
    events: list[Any] = []
    ledger = Ledger(tmp_path / "l.sqlite")
    v = make_venue(tmp_path, world, anvil.url, events, ledger, assets=assets, eligibility=elig)
    nonce = world.w3.eth.get_transaction_count(world.trader)
    assert v.quote("TRX").bid > 90  # the view quoter quotes all the same
    with pytest.raises(NotEligible) as exc:
        v.place_order(order("w1", "TRX", "sell", 10.0, 100.0))
    assert str(exc.value) == (
        f"venue chain: not eligible: pool {pool.address} is not verified in TRX's identity registry "
        f"{suite.registry.address}; nothing sent"
    )
    assert [e.kind for e in events] == ["not_eligible"] and events[0].data["asset"] == "TRX"
    assert ledger.txs(venue="chain") == [] and world.w3.eth.get_transaction_count(world.trader) == nonce
    # buying out of the pool needs only the wallet verified: it goes through, really swapped
    st = v.place_order(order("w2", "TRX", "buy", 1.0, 100.0))
    assert st.status is OrderStatus.FILLED and st.filled_qty == pytest.approx(1.0)
    assert suite.token.functions.balanceOf(world.trader).call() == pytest.approx(101 * SHARE, rel=1e-9)
    # the wallet frozen: the buy is refused by name, nothing more is signed
    send(world.w3, suite.token.functions.setAddressFrozen(world.trader, True), world.owner)
    n = len(ledger.txs(venue="chain"))
    with pytest.raises(NotEligible, match=f"not eligible: wallet {world.trader} is frozen on TRX"):
        v.place_order(order("w3", "TRX", "buy", 1.0, 100.0))
    assert len(ledger.txs(venue="chain")) == n
    v.close()
    ledger.close()


def test_default_checks_of_permissioned_assets(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    """``permissioned = true`` without an ``eligibility`` entry: allow-list + compliance, and pause for
    vault shares; the old config keeps working and a paused fund is a refusal, not a paid revert."""
    events: list[Any] = []
    ledger = Ledger(tmp_path / "l.sqlite")
    v = make_venue(tmp_path, world, anvil.url, events, ledger)
    assert v.eligibility.tokens["CREDIT"].checks == ("allowlist", "compliance", "pause")
    assert v.eligibility.tokens["REALT"].checks == ("allowlist", "compliance")
    credit, realt, pool = world.vaults["CREDIT"], world.tokens["REALT"], world.pools["REALT"]
    send(world.w3, credit.functions.pause(), world.owner)
    with pytest.raises(NotEligible, match=rf"not eligible: {credit.address} is paused \(paused\(\)\); nothing sent"):
        v.place_order(order("d1", "CREDIT", "buy", 10.0, world.nav("CREDIT")))
    send(world.w3, credit.functions.unpause(), world.owner)
    send(world.w3, realt.functions.setVerified(pool.address, False), world.owner)
    with pytest.raises(NotEligible) as exc:
        v.place_order(order("d2", "REALT", "buy", 1.0, world.mid("REALT")))
    msg = str(exc.value)
    assert f"pool {pool.address} is not on the allow-list (isVerified(address) on {realt.address})" in msg
    assert f"compliance {realt.address} refuses pool {pool.address} -> wallet {world.trader}" in msg
    assert ledger.txs(venue="chain") == [] and [e.kind for e in events] == ["not_eligible", "not_eligible"]
    v.close()
    ledger.close()


def test_eligibility_config_is_strict(world: World, anvil: AnvilNode) -> None:
    with pytest.raises(ValueError, match="eligibility names assets that are not configured"):
        EvmVenueConfig.model_validate(venue_options(world, anvil.url, eligibility={"NOPE": {"token": world.trader}}))
    with pytest.raises(ValueError, match="extra"):
        EvmVenueConfig.model_validate(
            venue_options(world, anvil.url, eligibility={"USTB": {"token": world.trader, "chekcs": ["pause"]}})
        )
    with pytest.raises(ValueError, match="unknown eligibility checks"):
        EvmVenue(
            "chain",
            EvmVenueConfig.model_validate(
                venue_options(world, anvil.url, eligibility={"USTB": {"token": world.trader, "checks": ["nope"]}})
            ),
            ComponentContext(SimulatedClock(NOW, 0.0), Path("/tmp/unused"), (), lambda e: None),
        )
