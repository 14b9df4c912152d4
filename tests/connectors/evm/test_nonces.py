"""The nonce manager: the rules as numbers, then on anvil — a stuck transaction replaced with a fee
bump (automine off), a cancel by self-transfer, a gap filled, a signed transaction recovered after a
crash before anything new is sent, confirmations before a fill is final, and a nonce taken by
another signer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from bot.cycle import client_order_id
from bot.domain import Order, OrderStatus
from bot.errors import VenueError
from bot.ledger import ChainTxRow
from connectors.evm.deploy import SHARE, USD, World, dev_key, send
from connectors.evm.node import AnvilNode
from connectors.evm.nonces import bumped, decode, plan, replacement
from tests.connectors.evm.test_venue_contract import make_venue

GWEI = 10**9
NOW_ = datetime(2026, 1, 2, 5, tzinfo=UTC)

# -- the rules, without a chain -------------------------------------------------------------------------


def test_plan_hands_out_past_the_node_and_the_ledger() -> None:
    p = plan(mined=5, pending=7, live=[])
    assert (p.next, p.gaps, p.unknown) == (7, (), ())
    # a signed row the node never saw (crash before the send): never handed out again
    p = plan(mined=5, pending=5, live=[5])
    assert (p.next, p.gaps, p.unknown) == (6, (), (5,))
    # nonce 5 was refused, 6 is queued behind it: 5 is a gap to fill
    p = plan(mined=5, pending=5, live=[6])
    assert (p.next, p.gaps, p.unknown) == (7, (5,), (6,))
    # rows below the mined count are settled by receipts, not by the plan
    assert plan(mined=9, pending=9, live=[3, 4]).next == 9


@given(
    st.integers(0, 50), st.integers(0, 10), st.lists(st.integers(0, 70), max_size=8)
)
def test_plan_never_reuses_a_live_nonce_and_covers_every_nonce(mined: int, extra: int, live: list[int]) -> None:
    p = plan(mined, mined + extra, live)
    assert p.next not in live and all(n < p.next for n in live if n >= mined)
    covered = set(range(mined, p.pending)) | set(live) | set(p.gaps)
    assert set(range(mined, p.next)) <= covered  # nothing below next is left without a transaction


def test_a_replacement_bumps_both_caps_by_at_least_an_eighth() -> None:
    acct = Account.from_key(dev_key(2))
    tx = {"type": 2, "chainId": 31337, "nonce": 7, "to": acct.address, "value": 0, "data": b"\x01\x02",
          "gas": 50_000, "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI}  # fmt: skip
    raw = "0x" + bytes(acct.sign_transaction(tx).raw_transaction).hex()
    assert decode(raw) == tx
    new = replacement(raw, base_fee=1, priority_fee=1, bump=0.125)
    assert new["nonce"] == 7 and new["data"] == b"\x01\x02" and new["gas"] == 50_000
    assert new["maxFeePerGas"] >= 1.125 * 3 * GWEI and new["maxPriorityFeePerGas"] >= 1.125 * GWEI
    # the base fee rose meanwhile: the replacement pays for it
    assert replacement(raw, base_fee=10 * GWEI, priority_fee=1, bump=0.125)["maxFeePerGas"] >= 20 * GWEI
    cancel = replacement(raw, base_fee=1, priority_fee=1, bump=0.125, cancel_to=acct.address)
    assert (cancel["to"], cancel["value"], cancel["data"], cancel["gas"]) == (acct.address, 0, b"", 21_000)
    assert bumped(0, 0.125) == 1 and bumped(8, 0.125) == 9


# -- on anvil ---------------------------------------------------------------------------------------------


def hold_ustb(world: World, usd: float = 100_000.0) -> float:
    v = world.vaults["USTB"]
    send(world.w3, world.stable.functions.approve(v.address, int(usd * USD)), world.trader)
    send(world.w3, v.functions.deposit(int(usd * USD), world.trader), world.trader)
    return v.functions.balanceOf(world.trader).call() / SHARE


def ustb_sell(qty: float, key: str = "2026-01-02T05:00Z") -> Order:
    return Order(client_order_id(key, "USTB"), key, "chain", "USTB", "sell", qty, 1.0)


@contextmanager
def congested(world: World, base_fee: int) -> Iterator[None]:
    """Automine off; once the trader has a transaction in the mempool, blocks are mined every 50 ms
    at ``base_fee``, so a transaction priced for the old base fee is stuck until it is replaced."""
    w3 = world.w3
    stop = threading.Event()

    def miner() -> None:
        while not stop.is_set():
            if w3.eth.get_transaction_count(world.trader, "pending") > w3.eth.get_transaction_count(world.trader):
                w3.provider.make_request("anvil_setNextBlockBaseFeePerGas", [hex(base_fee)])
                w3.provider.make_request("evm_mine", [])
            stop.wait(0.05)

    w3.provider.make_request("evm_setAutomine", [False])
    t = threading.Thread(target=miner, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        w3.provider.make_request("evm_setAutomine", [True])


def test_a_stuck_transaction_is_replaced_with_a_fee_bump(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    shares = hold_ustb(world)
    nonce0 = world.w3.eth.get_transaction_count(world.trader)
    v = make_venue(tmp_path, world, anvil.url, receipt_timeout_s=30.0, nonces={"stuck_after_s": 0.3})
    order = ustb_sell(shares / 2)
    with congested(world, base_fee=20 * GWEI):  # far above what the first signature offers
        state = v.place_order(order)
    assert state.status is OrderStatus.FILLED and state.filled_qty == pytest.approx(shares / 2)
    rows = v.ledger.txs(venue="chain", client_id=order.client_id)
    assert {r.nonce for r in rows} == {nonce0} and len(rows) >= 2
    assert [r.status for r in rows] == ["replaced"] * (len(rows) - 1) + ["mined"]
    first, last = decode(rows[0].raw), decode(rows[-1].raw)
    assert last["maxFeePerGas"] >= 1.125 * first["maxFeePerGas"]
    assert last["maxPriorityFeePerGas"] >= 1.125 * first["maxPriorityFeePerGas"]
    assert (last["to"], last["data"]) == (first["to"], first["data"])  # the same redemption, dearer
    # the redemption executed once, and only one nonce was used
    assert world.vaults["USTB"].functions.balanceOf(world.trader).call() / SHARE == pytest.approx(shares / 2)
    assert world.w3.eth.get_transaction_count(world.trader) == nonce0 + 1
    assert any(e.kind == "tx_replaced" for e in v.events)
    assert v.fetch_order(order.client_id).filled_qty == pytest.approx(shares / 2)  # the ledger agrees later
    v.close()


def test_no_replacement_over_the_gas_cap(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    shares = hold_ustb(world)
    v = make_venue(tmp_path, world, anvil.url, receipt_timeout_s=1.5, nonces={"stuck_after_s": 0.2},
                   gas={"max_fee_gwei": 5.0})  # fmt: skip
    with congested(world, base_fee=20 * GWEI), pytest.raises(VenueError, match="stays in flight") as info:
        v.place_order(ustb_sell(shares / 2))
    assert info.value.retryable
    assert any(e.kind == "gas_cap" and "replacement needs" in e.message for e in v.events)
    assert len(v.ledger.txs(venue="chain")) == 1  # nothing re-signed over the cap
    v.close()


def test_a_stuck_order_is_cancelled_by_a_self_transfer(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    shares = hold_ustb(world)
    native0 = world.w3.eth.get_balance(world.trader)
    v = make_venue(tmp_path, world, anvil.url, receipt_timeout_s=1.0,
                   nonces={"stuck_after_s": 3600, "max_replacements": 0})  # fmt: skip
    order = ustb_sell(shares / 2)
    with congested(world, base_fee=20 * GWEI):
        with pytest.raises(VenueError, match="stays in flight"):
            v.place_order(order)
        assert v.fetch_order(order.client_id).status is OrderStatus.OPEN
        v.cfg = v.cfg.model_copy(update={"receipt_timeout_s": 30.0})
        state = v.cancel_order(order.client_id)
    assert state.status is OrderStatus.CANCELED
    rows = v.ledger.txs(venue="chain", client_id=order.client_id)
    assert [(r.step, r.status) for r in rows] == [("redeem", "replaced"), ("cancel", "mined")]
    assert world.vaults["USTB"].functions.balanceOf(world.trader).call() / SHARE == pytest.approx(shares)
    assert state.fills and state.fills[0].qty == 0 and state.fills[0].gas > 0  # the cancel's gas is a cost
    spent = (native0 - world.w3.eth.get_balance(world.trader)) / 1e18
    assert spent == pytest.approx(sum(r.gas_cost_native for r in rows), rel=1e-12)
    v.close()


def test_a_gap_is_filled_so_later_transactions_are_mined(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    shares = hold_ustb(world)
    w3 = world.w3
    n = w3.eth.get_transaction_count(world.trader)
    v = make_venue(tmp_path, world, anvil.url)
    # the ledger holds our transaction at n + 1, but the one at n never reached the node: n + 1 is queued
    acct = Account.from_key(dev_key(2))
    base = w3.eth.get_block("latest")["baseFeePerGas"]
    tx = {"type": 2, "chainId": 31337, "nonce": n + 1, "to": acct.address, "value": 0, "data": b"", "gas": 21_000,
          "maxFeePerGas": 2 * base + GWEI, "maxPriorityFeePerGas": GWEI}  # fmt: skip
    signed = acct.sign_transaction(tx)
    row = ChainTxRow(tx_hash="0x" + bytes(signed.hash).hex(), venue="chain", client_id="earlier", step="swap",
                     chain_id=31337, sender=acct.address, nonce=n + 1, raw="0x" + bytes(signed.raw_transaction).hex(),
                     asset="REALT", side="buy", qty=0.0, decision_price=1.0, status="sent", gas_limit=21_000,
                     max_fee_per_gas=tx["maxFeePerGas"], created_at=NOW_, updated_at=NOW_)  # fmt: skip
    v.ledger.record_tx(row)
    w3.eth.send_raw_transaction(signed.raw_transaction)
    assert w3.eth.get_transaction_count(world.trader, "pending") == n  # stuck behind the gap
    state = v.place_order(ustb_sell(shares / 2))
    assert state.status is OrderStatus.FILLED
    gap = [r for r in v.ledger.txs(venue="chain") if r.step == "gap"]
    assert [(g.nonce, g.status) for g in gap] == [(n, "mined")]
    assert w3.eth.get_transaction_count(world.trader) == n + 3  # gap, the queued one, the order
    assert w3.eth.get_transaction_receipt(row.tx_hash)["status"] == 1
    assert any(e.kind == "nonce_gap" for e in v.events)
    v.close()


def test_a_restart_never_hands_out_the_nonce_of_a_signed_transaction(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    shares = hold_ustb(world)
    w3 = world.w3
    n = w3.eth.get_transaction_count(world.trader)
    v = make_venue(tmp_path, world, anvil.url)

    def crash(row: ChainTxRow) -> None:
        raise KeyboardInterrupt  # the process dies after the ledger commit, before the broadcast

    v._broadcast = crash  # type: ignore[method-assign]
    first = ustb_sell(shares / 4, "2026-01-02T05:00Z")
    with pytest.raises(KeyboardInterrupt):
        v.place_order(first)
    v.close()
    v2 = make_venue(tmp_path, world, anvil.url)  # restart on the same ledger; a *different* order goes first
    second = ustb_sell(shares / 4, "2026-01-02T06:00Z")
    assert v2.place_order(second).status is OrderStatus.FILLED
    assert v2.fetch_order(first.client_id).status is OrderStatus.FILLED  # the signed one went out, once
    nonces = {r.client_id: r.nonce for r in v2.ledger.txs(venue="chain")}
    assert nonces == {first.client_id: n, second.client_id: n + 1}
    assert w3.eth.get_transaction_count(world.trader) == n + 2
    assert world.vaults["USTB"].functions.balanceOf(world.trader).call() / SHARE == pytest.approx(shares / 2)
    v2.close()


def test_a_fill_is_final_only_after_the_confirmations(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    shares = hold_ustb(world)
    w3 = world.w3
    v = make_venue(tmp_path, world, anvil.url, confirmations=3, receipt_timeout_s=0.5)
    order = ustb_sell(shares / 2)
    with pytest.raises(VenueError, match="stays in flight"):
        v.place_order(order)  # mined in one block, no block after it
    assert v.fetch_order(order.client_id).status is OrderStatus.OPEN
    assert [r.status for r in v.ledger.txs(venue="chain")] == ["sent"]
    w3.provider.make_request("evm_mine", [])
    assert v.fetch_order(order.client_id).status is OrderStatus.OPEN  # 2 of 3
    w3.provider.make_request("evm_mine", [])
    state = v.fetch_order(order.client_id)
    assert state.status is OrderStatus.FILLED and state.filled_qty == pytest.approx(shares / 2)
    v.close()


def test_a_nonce_taken_by_another_signer_drops_the_order(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    shares = hold_ustb(world)
    w3 = world.w3
    v = make_venue(tmp_path, world, anvil.url, receipt_timeout_s=0.5, nonces={"stuck_after_s": 3600})
    order = ustb_sell(shares / 2)
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        with pytest.raises(VenueError, match="stays in flight"):
            v.place_order(order)
        ours = v.ledger.txs(venue="chain")[0]
        # the same key used elsewhere (another wallet app) replaces it at the same nonce
        acct = Account.from_key(dev_key(2))
        other = replacement(ours.raw, base_fee=w3.eth.get_block("latest")["baseFeePerGas"], priority_fee=2 * GWEI,
                            bump=0.5, cancel_to=world.owner)  # fmt: skip
        w3.eth.send_raw_transaction(acct.sign_transaction(other).raw_transaction)
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    state = v.fetch_order(order.client_id)
    assert state.status is OrderStatus.CANCELED and "used by another transaction" in state.message
    assert [r.status for r in v.ledger.txs(venue="chain")] == ["dropped"]
    assert world.vaults["USTB"].functions.balanceOf(world.trader).call() / SHARE == pytest.approx(shares)
    v.close()


