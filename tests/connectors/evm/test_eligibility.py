"""Eligibility against the real T-REX suite (npm @tokenysolutions/t-rex, identities from
@onchain-id/solidity) and the world's allow-listed tokens on anvil: every refusal is found by views
before anything is signed, and the real transfer shows it would have reverted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from web3.exceptions import ContractLogicError

from bot.domain import Order
from connectors.evm.async_requests import AsyncAssetConfig, AsyncRequests, VenueSender
from connectors.evm.deploy import SHARE, USD, World, send
from connectors.evm.eligibility import Eligibility, NotEligible, TokenEligibility, Transfer, trade_transfers
from connectors.evm.node import AnvilNode
from connectors.evm.rwa_world import deploy_async_vault
from connectors.evm.trex import TrexSuite, deploy_trex, trex_pool
from tests.connectors.evm.test_async_requests import Desk

DEADLINE = 2**40


@pytest.fixture
def suite(world: World) -> TrexSuite:
    s = deploy_trex(world.w3, world.owner, unpause=False)
    for who in (world.trader, world.market):
        s.verify(who)
    send(world.w3, s.token.functions.mint(world.trader, 1_000 * SHARE), world.owner)
    return s


def elig(world: World, suite: TrexSuite, events: list[Any] | None = None, **cfg: Any) -> Eligibility:
    tokens = {"TRX": TokenEligibility(token=suite.token.address, **cfg)}
    return Eligibility(world.w3, "chain", tokens, emit=(events if events is not None else []).append)


def sell_to(world: World, pool: Any, qty: float = 10.0) -> list[Transfer]:
    return trade_transfers("pool", "sell", world.trader, pool.address, int(qty * SHARE))


def test_token_starts_paused_and_the_refusal_costs_nothing(world: World, suite: TrexSuite) -> None:
    assert suite.token.functions.paused().call()  # T-REX init leaves it paused
    events: list[Any] = []
    e = elig(world, suite, events)
    nonce = world.w3.eth.get_transaction_count(world.trader)
    move = trade_transfers("pool", "sell", world.trader, world.market, 10 * SHARE)
    with pytest.raises(NotEligible, match=r"^venue chain: not eligible: token TRX \(0x[0-9a-fA-F]{40}\) is paused"):
        e.check("TRX", move)
    assert [ev.kind for ev in events] == ["not_eligible"] and events[0].data["asset"] == "TRX"
    assert world.w3.eth.get_transaction_count(world.trader) == nonce  # nothing signed, nothing paid
    with pytest.raises(ContractLogicError, match="Pausable: paused"):  # what sending would have done
        suite.token.functions.transfer(world.market, 10 * SHARE).estimate_gas({"from": world.trader})
    send(world.w3, suite.token.functions.unpause(), world.owner)
    assert e.reasons("TRX", move) == []


def test_frozen_wallet_and_frozen_tokens(world: World, suite: TrexSuite) -> None:
    send(world.w3, suite.token.functions.unpause(), world.owner)
    e = elig(world, suite)
    move = trade_transfers("pool", "sell", world.trader, world.market, 600 * SHARE)
    send(world.w3, suite.token.functions.setAddressFrozen(world.trader, True), world.owner)
    assert e.reasons("TRX", move) == [f"wallet {world.trader} is frozen on TRX"]
    with pytest.raises(ContractLogicError, match="wallet is frozen"):
        suite.token.functions.transfer(world.market, 600 * SHARE).estimate_gas({"from": world.trader})
    send(world.w3, suite.token.functions.setAddressFrozen(world.trader, False), world.owner)
    send(world.w3, suite.token.functions.freezePartialTokens(world.trader, 500 * SHARE), world.owner)
    half, full, need = 500 * SHARE, 1000 * SHARE, 600 * SHARE
    assert e.reasons("TRX", move) == [
        f"wallet {world.trader} has {half} unfrozen of {full} ({half} frozen), needs {need}"
    ]
    with pytest.raises(ContractLogicError, match="Insufficient Balance"):
        suite.token.functions.transfer(world.market, 600 * SHARE).estimate_gas({"from": world.trader})
    assert e.reasons("TRX", trade_transfers("pool", "sell", world.trader, world.market, 500 * SHARE)) == []


def test_unverified_pool_quotes_but_is_not_eligible(world: World, suite: TrexSuite) -> None:
    send(world.w3, suite.token.functions.unpause(), world.owner)
    pool = trex_pool(world, suite, 100.0, 1_000_000.0, verify_pool=False)
    assert not suite.registry.functions.isVerified(pool.address).call()
    quote = pool.functions.getAmountOut(10 * SHARE, suite.token.address).call()
    assert quote > 900 * USD  # the view quoter still quotes ~1000 USD
    e = elig(world, suite)
    with pytest.raises(NotEligible) as exc:
        e.check("TRX", sell_to(world, pool))
    assert str(exc.value) == (
        f"venue chain: not eligible: pool {pool.address} is not verified in TRX's identity registry "
        f"{suite.registry.address}; nothing sent"
    )
    assert f"pool {pool.address} is not verified in TRX's identity registry" in str(exc.value)
    send(world.w3, suite.token.functions.approve(pool.address, 10 * SHARE), world.trader)
    swap = pool.functions.swap(suite.token.address, 10 * SHARE, 0, world.trader, DEADLINE)
    with pytest.raises(ContractLogicError, match="Transfer not possible"):  # the paid revert avoided
        swap.estimate_gas({"from": world.trader})
    # buying from the pool only needs the wallet verified: eligible
    buy = trade_transfers("pool", "buy", world.trader, pool.address, 10 * SHARE)
    assert e.reasons("TRX", buy) == []


def test_verified_path_passes_and_the_real_swap_succeeds(world: World, suite: TrexSuite) -> None:
    send(world.w3, suite.token.functions.unpause(), world.owner)
    pool = trex_pool(world, suite, 100.0, 1_000_000.0)
    e = elig(world, suite)
    e.check("TRX", sell_to(world, pool))  # no exception
    usd0 = world.stable.functions.balanceOf(world.trader).call()
    out = pool.functions.getAmountOut(10 * SHARE, suite.token.address).call()
    send(world.w3, suite.token.functions.approve(pool.address, 10 * SHARE), world.trader)
    r = send(world.w3, pool.functions.swap(suite.token.address, 10 * SHARE, out, world.trader, DEADLINE), world.trader)
    assert r["status"] == 1
    assert suite.token.functions.balanceOf(world.trader).call() == 990 * SHARE
    assert world.stable.functions.balanceOf(world.trader).call() - usd0 == out


def test_allowlist_pause_and_unreadable_views(world: World) -> None:
    token, pool = world.tokens["REALT"], world.pools["REALT"]
    cfg = TokenEligibility(token=token.address, checks=("allowlist", "pause"), pause_targets=(pool.address,))
    e = Eligibility(world.w3, "chain", {"REALT": cfg})
    move = sell_to(world, pool)
    # the world's RwaToken has no paused(): the pause check cannot read it and fails closed
    why = e.reasons("REALT", move)
    assert len(why) == 1 and why[0].startswith("pause check cannot be read (paused() on " + token.address)
    e = Eligibility(
        world.w3, "chain", {"REALT": cfg.model_copy(update={"pause_targets": (), "checks": ("allowlist",)})}
    )
    assert e.reasons("REALT", move) == []
    send(world.w3, token.functions.setVerified(pool.address, False), world.owner)
    assert e.reasons("REALT", move) == [
        f"pool {pool.address} is not on the allow-list (isVerified(address) on {token.address})"
    ]
    pcfg = TokenEligibility(token=pool.address, checks=("pause",))  # the pool's own pause
    e2 = Eligibility(world.w3, "chain", {"REALT": pcfg})
    assert e2.reasons("REALT", move) == []
    send(world.w3, pool.functions.pause(), world.owner)
    assert e2.reasons("REALT", move) == [f"{pool.address} is paused (paused())"]
    with pytest.raises(ValueError, match="unknown eligibility checks"):
        Eligibility(world.w3, "chain", {"X": TokenEligibility(token=token.address, checks=("kyc-magic",))})


def test_async_request_refused_before_the_approval(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    fund = deploy_async_vault(world, "PCRED", 10.0)
    desk = Desk(tmp_path, world, anvil.url, {"PCRED": AsyncAssetConfig(vault=fund.address)})
    e = Eligibility(world.w3, "chain", {"PCRED": TokenEligibility(token=fund.address, checks=("allowlist",))},
                    emit=desk.events.append)  # fmt: skip
    book = AsyncRequests(VenueSender(desk.venue), desk.ledger, desk.assets, quote_token=world.stable.address,
                         eligible=e.for_async({"PCRED": fund.address}, world.trader))  # fmt: skip
    send(world.w3, fund.functions.setVerified(world.trader, False), world.owner)
    nonce = world.w3.eth.get_transaction_count(world.trader)
    with pytest.raises(NotEligible) as exc:
        book.request(Order("rwel1", "k", "chain", "PCRED", "buy", 10.0, 10.0))
    assert str(exc.value) == (
        f"venue chain: not eligible: wallet {world.trader} is not on the allow-list (isVerified(address) on "
        f"{fund.address}); nothing sent"
    )
    assert world.w3.eth.get_transaction_count(world.trader) == nonce
    assert desk.ledger.get_async_request("rwel1") is None and desk.ledger.txs() == []
    assert "not_eligible" in desk.kinds()
    desk.venue.close()
    desk.ledger.close()
