"""ERC-7540 and cooldown requests against real contracts on anvil: ERC-165 detection, the request
state machine through the evm venue's own signing and ledger, restarts at every point, exposure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from web3.exceptions import ContractLogicError

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.domain import Order, OrderStatus
from bot.errors import InsufficientFunds, InvalidOrder, VenueError
from bot.ledger import Ledger
from connectors.evm import async_requests as ar
from connectors.evm.async_requests import AsyncAssetConfig, AsyncRequests, VenueSender, erc165_id
from connectors.evm.chain import Unreachable
from connectors.evm.deploy import SHARE, USD, World, send
from connectors.evm.node import AnvilNode
from connectors.evm.rwa_world import buy_shares, deploy_async_vault, deploy_cooldown_vault, set_async_nav
from connectors.evm.venue import EvmVenue, EvmVenueConfig
from tests.connectors.evm.conftest import NOW, venue_options

DAY = 86_400


class Desk:
    """A live evm venue and the async book on one ledger, rebuilt from scratch by ``restart()``."""

    def __init__(self, tmp_path: Path, world: World, url: str, assets: dict[str, AsyncAssetConfig]) -> None:
        self.tmp_path, self.world, self.url, self.assets = tmp_path, world, url, assets
        self.events: list[Any] = []
        self.ledger = Ledger(tmp_path / "ledger.sqlite")
        self.start()

    def start(self) -> None:
        ctx = ComponentContext(
            SimulatedClock(NOW, 0.0), self.tmp_path / "state", tuple(self.world.venue_assets()), self.events.append,
            extra={"ledger": self.ledger},
        )  # fmt: skip
        self.venue = EvmVenue("chain", EvmVenueConfig.model_validate(venue_options(self.world, self.url)), ctx)
        self.book = AsyncRequests(
            VenueSender(self.venue), self.ledger, self.assets, quote_token=self.world.stable.address,
            emit=self.events.append,
        )  # fmt: skip

    def restart(self) -> None:
        self.venue.close()
        self.ledger.close()
        self.ledger = Ledger(self.tmp_path / "ledger.sqlite")
        self.start()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@pytest.fixture
def fund(world: World) -> Any:
    return deploy_async_vault(world, "PCRED", 10.0)


@pytest.fixture
def desk(tmp_path: Path, world: World, anvil: AnvilNode, fund: Any) -> Any:
    d = Desk(tmp_path, world, anvil.url, {"PCRED": AsyncAssetConfig(vault=fund.address)})
    yield d
    d.venue.close()
    d.ledger.close()


def order(client_id: str, side: str, qty: float, price: float = 10.0, asset: str = "PCRED") -> Order:
    return Order(client_id, "2026-01-02T05:00Z", "chain", asset, side, qty, price)  # type: ignore[arg-type]


def stable(world: World) -> int:
    return world.stable.functions.balanceOf(world.trader).call()


def test_erc165_ids_are_the_eip_ones_and_detection(world: World, fund: Any, desk: Desk) -> None:
    # the ids are the XOR of the selectors, computed here independently of the contract
    assert erc165_id("setOperator(address,bool)", "isOperator(address,address)") == ar.IID_OPERATOR
    dep = ("requestDeposit(uint256,address,address)", "pendingDepositRequest(uint256,address)",
           "claimableDepositRequest(uint256,address)", "deposit(uint256,address,address)",
           "mint(uint256,address,address)")  # fmt: skip
    assert erc165_id(*dep) == ar.IID_ASYNC_DEPOSIT == bytes.fromhex("ce3bbe50")
    red = ("requestRedeem(uint256,address,address)", "pendingRedeemRequest(uint256,address)",
           "claimableRedeemRequest(uint256,address)")  # fmt: skip
    assert erc165_id(*red) == ar.IID_ASYNC_REDEEM == bytes.fromhex("620ee8e4")
    assert desk.book.detect("PCRED") == ar.AsyncSides(True, True, True, True)
    # a plain ERC-4626 fund has no ERC-165 at all: nothing is asynchronous
    plain = AsyncRequests(
        VenueSender(desk.venue), desk.ledger, {"USTB": AsyncAssetConfig(vault=world.vaults["USTB"].address)},
        quote_token=world.stable.address,
    )  # fmt: skip
    assert plain.detect("USTB") == ar.AsyncSides(False, False, False, False)
    with pytest.raises(InvalidOrder, match="does not declare asynchronous deposits"):
        plain.request(order("rwplain", "buy", 10.0, asset="USTB"))
    # previews revert on both async sides, for any input
    for fn in ("previewDeposit", "previewMint", "previewRedeem", "previewWithdraw"):
        with pytest.raises(ContractLogicError) as exc:
            getattr(fund.functions, fn)(SHARE).call()
        assert desk.book.decoder.from_exception(exc.value) == "AsyncPreviewDisabled()"
    assert fund.functions.maxDeposit(world.trader).call() == 0  # nothing claimable


def test_deposit_request_survives_a_restart_and_is_claimed_once(world: World, fund: Any, desk: Desk) -> None:
    w3, before = world.w3, stable(world)
    st = desk.book.request(order("rwdep1", "buy", 1000.0))
    assert st.status is OrderStatus.OPEN and st.filled_qty == 0
    row = desk.ledger.get_async_request("rwdep1")
    assert row is not None and row.status == "pending" and row.request_id == "0"
    assert int(row.amount_raw) == pytest.approx(10_000 * USD, abs=2)  # 1000 shares at NAV 10 (convertToAssets)
    assert stable(world) == before - int(row.amount_raw)
    assert [t.step for t in desk.ledger.txs(client_id="rwdep1")] == ["approve", "request"]
    # pending: its value counts, the asset is held fixed, a second request is refused
    exp = desk.book.exposure()["PCRED"]
    assert exp.value == pytest.approx(10_000.0) and exp.units == pytest.approx(1000.0)
    assert desk.book.held_fixed() == frozenset({"PCRED"})
    with pytest.raises(InvalidOrder, match="still pending; asset held fixed"):
        desk.book.request(order("rwdep2", "buy", 5.0))
    assert desk.book.poll() == []  # nothing to do while pending: no transaction
    assert len(desk.ledger.txs(client_id="rwdep1")) == 2

    desk.restart()  # the daemon restarts while the request is open
    set_async_nav(world, fund, 10.5)  # the NAV moves before the manager fulfils
    receipt = send(w3, fund.functions.fulfillDeposit(world.trader, int(row.amount_raw)), world.owner)
    me = bytes.fromhex(world.trader[2:].lower()).rjust(32, b"\0")
    assert not any(me in [bytes(t) for t in lg["topics"]] for lg in receipt["logs"])  # no event for the investor
    assert fund.functions.claimableDepositRequest(0, world.trader).call() == int(row.amount_raw)

    changed = desk.book.poll()  # notices it (the vault said nothing), claims, books the fill
    assert [s.status for s in changed] == [OrderStatus.FILLED]
    fill = changed[0].fills[0]
    shares = fund.functions.balanceOf(world.trader).call()
    assert fill.qty == pytest.approx(shares / SHARE) and shares / SHARE == pytest.approx(10_000 / 10.5, rel=1e-6)
    assert fill.price == pytest.approx(10.5) and fill.slippage == pytest.approx(0.5 * fill.qty)
    gas = sum(t.gas_cost_quote for t in desk.ledger.txs(client_id="rwdep1"))
    assert fill.gas == pytest.approx(gas) and gas > 0
    assert [t.step for t in desk.ledger.txs(client_id="rwdep1")] == ["approve", "request", "claim"]
    assert desk.book.poll() == [] and desk.book.exposure() == {} and desk.book.held_fixed() == frozenset()
    assert desk.book.request(order("rwdep1", "buy", 1000.0)).status is OrderStatus.FILLED  # idempotent
    assert {"async_requested", "async_claimable", "async_claimed", "async_settled"} <= set(desk.kinds())


def test_redeem_claim_lost_in_flight_is_rebroadcast_not_resent(
    world: World, fund: Any, desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    w3 = world.w3
    send(w3, world.stable.functions.approve(fund.address, 2_000 * USD), world.trader)
    send(w3, fund.functions.requestDeposit(2_000 * USD, world.trader, world.trader), world.trader)
    send(w3, fund.functions.fulfillDeposit(world.trader, 2_000 * USD), world.owner)
    send(w3, fund.functions.deposit(2_000 * USD, world.trader, world.trader), world.trader)
    held = fund.functions.balanceOf(world.trader).call()
    assert held == pytest.approx(200 * SHARE, rel=1e-9)

    st = desk.book.request(order("rwred1", "sell", 150.0))
    assert st.status is OrderStatus.OPEN
    assert fund.functions.pendingRedeemRequest(0, world.trader).call() == 150 * SHARE
    assert fund.functions.balanceOf(world.trader).call() == held - 150 * SHARE  # escrowed in the vault
    exp = desk.book.exposure()["PCRED"]
    assert exp.pending_redeem_units == pytest.approx(150.0) and exp.value == pytest.approx(1500.0)
    set_async_nav(world, fund, 9.0)
    send(w3, fund.functions.fulfillRedeem(world.trader, 150 * SHARE), world.owner)
    assert desk.book.exposure()["PCRED"].claimable_redeem == pytest.approx(1350.0)  # fixed at fulfilment

    # the claim is signed and in the ledger, then the node "drops the connection" before it gets it
    real = desk.venue.w3.eth.send_raw_transaction

    def lost(raw: Any) -> Any:
        raise ConnectionError("connection reset")

    monkeypatch.setattr(desk.venue.w3.eth, "send_raw_transaction", lost)
    before = stable(world)
    with pytest.raises(Unreachable):
        desk.book.poll()
    claims = [t for t in desk.ledger.txs(client_id="rwred1") if t.step == "claim"]
    assert len(claims) == 1 and claims[0].status == "signed"
    assert desk.ledger.get_async_request("rwred1").status == "claiming"  # type: ignore[union-attr]
    monkeypatch.setattr(desk.venue.w3.eth, "send_raw_transaction", real)

    desk.restart()
    changed = desk.book.poll()  # the same signed bytes go out again: one claim, one fill
    assert [s.status for s in changed] == [OrderStatus.FILLED]
    claims = [t for t in desk.ledger.txs(client_id="rwred1") if t.step == "claim"]
    assert len(claims) == 1 and claims[0].status == "mined"
    fill = changed[0].fills[0]
    assert fill.side == "sell" and fill.qty == pytest.approx(150.0) and fill.price == pytest.approx(9.0)
    assert stable(world) - before == pytest.approx(1350 * USD, abs=2)
    assert stable(world) - before == pytest.approx(fill.qty * fill.price * USD, abs=1)
    assert desk.book.poll() == [] and desk.book.exposure() == {}


def test_partial_fulfilment_books_two_fills(world: World, fund: Any, desk: Desk) -> None:
    desk.book.request(order("rwpart", "buy", 100.0))  # 1000 USD
    send(world.w3, fund.functions.fulfillDeposit(world.trader, 400 * USD), world.owner)
    st = desk.book.poll()[0]
    assert st.status is OrderStatus.OPEN and st.filled_qty == pytest.approx(40.0)
    assert desk.book.held_fixed() == frozenset({"PCRED"})  # 600 USD still pending
    assert desk.book.exposure()["PCRED"].pending_deposit == pytest.approx(600.0)
    rest = fund.functions.pendingDepositRequest(0, world.trader).call()
    assert rest == pytest.approx(600 * USD, abs=2)
    send(world.w3, fund.functions.fulfillDeposit(world.trader, rest), world.owner)
    st = desk.book.poll()[0]
    assert st.status is OrderStatus.FILLED and len(st.fills) == 2 and st.filled_qty == pytest.approx(100.0)
    assert fund.functions.balanceOf(world.trader).call() == pytest.approx(100 * SHARE, rel=1e-9)


def test_refusals_cost_nothing(world: World, fund: Any, desk: Desk) -> None:
    nonce = world.w3.eth.get_transaction_count(world.trader)
    with pytest.raises(InsufficientFunds, match="redeem request needs"):
        desk.book.request(order("rwno1", "sell", 5.0))  # no shares
    with pytest.raises(InsufficientFunds, match="deposit request needs"):
        desk.book.request(order("rwno2", "buy", 1e7))  # 100 M USD
    send(world.w3, fund.functions.setVerified(world.trader, False), world.owner)
    with pytest.raises(VenueError, match=r"would revert: NotVerified\(account=0x"):
        desk.book.request(order("rwno3", "buy", 10.0))  # estimated: nothing mined, nothing paid
    assert world.w3.eth.get_transaction_count(world.trader) == nonce + 1  # only the exact approval went out


def test_cooldown_variant_claims_after_its_timestamp(
    tmp_path: Path, world: World, anvil: AnvilNode, desk: Desk
) -> None:
    vault = deploy_cooldown_vault(world, "sUSD", 1.10, cooldown_s=7 * DAY)
    buy_shares(world, vault, 1_100.0)  # 1000 shares at 1.10
    d = Desk(tmp_path / "cd", world, anvil.url, {"sUSD": AsyncAssetConfig(kind="cooldown", vault=vault.address)})
    with pytest.raises(InvalidOrder, match="only redeems asynchronously"):
        d.book.request(order("rwcd0", "buy", 10.0, asset="sUSD"))
    st = d.book.request(order("rwcd1", "sell", 1000.0, 1.10, asset="sUSD"))
    row = d.ledger.get_async_request("rwcd1")
    assert st.status is OrderStatus.OPEN and row is not None and row.status == "pending"
    now = world.w3.eth.get_block("latest")["timestamp"]
    assert row.claimable_at == now + 7 * DAY
    assert d.book.exposure()["sUSD"].value == pytest.approx(1_100.0, rel=1e-6)
    world.w3.provider.make_request("evm_increaseTime", [6 * DAY])  # type: ignore[arg-type]
    world.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert d.book.poll() == []  # not yet: no claim sent, none paid
    assert [t.step for t in d.ledger.txs(client_id="rwcd1")] == ["request"]
    d.restart()
    world.w3.provider.make_request("evm_increaseTime", [DAY])  # type: ignore[arg-type]
    world.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    before = stable(world)
    st = d.book.poll()[0]
    assert st.status is OrderStatus.FILLED and st.fills[0].price == pytest.approx(1.10, rel=1e-6)
    assert (stable(world) - before) / USD == pytest.approx(1_100.0, rel=1e-6)
    assert d.book.exposure() == {}
    d.venue.close()
    d.ledger.close()
