"""Cash transfers of the evm venue on a real anvil node with the real compiled contracts: an ERC-20
transfer of the quote token to an exchange's deposit address (an anvil account stands in for it),
sent once per client id even when the process is SIGKILLed between the ledger and the node, refused
before signing when the wallet is short, a mined revert failed with its reason, an incoming
transfer found on chain; and on paper, cash moving between paper accounts over the paper network."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from bot.clock import SimulatedClock
from bot.components import ComponentContext, FundingVenue
from bot.cycle import client_order_id
from bot.domain import Order, OrderStatus, Transfer, TransferState, TransferStatus
from bot.errors import InsufficientFunds, TransferRefused
from connectors.evm.deploy import USD, World, send
from connectors.evm.node import AnvilNode
from connectors.evm.venue import EvmVenue, EvmVenueConfig
from connectors.paper import PaperConfig, PaperVenue
from plugins.data.simulated import SimulatedMarket, SimulatedMarketConfig
from tests.conftest import ROOT
from tests.connectors.evm.conftest import NOW, venue_options
from tests.connectors.evm.test_venue_contract import make_venue

KEY = "2026-01-02T05:00Z"
SYMBOL = "tUSD"  # the world's stablecoin (6 decimals)
GWEI = 10**9


def exchange(world: World) -> str:
    """An anvil account standing in for an exchange's deposit address (not used by the world)."""
    return Web3.to_checksum_address(world.w3.eth.accounts[7])


def out(client_id: str, amount: float, to: str, **kw: Any) -> Transfer:
    return Transfer(client_id, KEY, kw.pop("source", "chain"), kw.pop("destination", "cex"), SYMBOL, amount,
                    kw.pop("network", "ETH"), to, **kw)  # fmt: skip


def token(world: World, who: str) -> int:
    return int(world.stable.functions.balanceOf(who).call())


def transfers_to(world: World, to: str, from_block: int) -> list[Any]:
    """Every Transfer event of the stablecoin to ``to`` since ``from_block``: what the chain moved."""
    logs = world.stable.events.Transfer.get_logs(from_block=from_block, to_block="latest")
    return [x for x in logs if x["args"]["to"] == to]


def native_price(world: World) -> float:
    feed = world.feeds["ETH"]
    return feed.functions.latestRoundData().call()[1] / 10 ** feed.functions.decimals().call()


# -- live: a real ERC-20 transfer -------------------------------------------------------------------------


def test_the_deposit_address_is_the_wallet_for_the_quote_token_only(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    v = make_venue(tmp_path, world, anvil.url, transfer_networks=["ETH", "ERC20"])
    assert isinstance(v, FundingVenue)
    a = v.deposit_address(SYMBOL, "ERC20")
    assert (a.venue, a.asset, a.network, a.address, a.tag) == ("chain", SYMBOL, "ERC20", world.trader, None)
    with pytest.raises(TransferRefused, match=r"'USDT' is not this venue's quote token 'tUSD'"):
        v.deposit_address("USDT", "ETH")
    with pytest.raises(TransferRefused, match=r"network 'BSC' is not this chain \(transfer_networks: ETH, ERC20\)"):
        v.deposit_address(SYMBOL, "BSC")
    v.close()


def test_a_transfer_moves_exactly_its_amount_once_and_costs_its_gas(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    w3, ex = world.w3, exchange(world)
    v = make_venue(tmp_path, world, anvil.url)
    head, nonce = w3.eth.block_number, w3.eth.get_transaction_count(world.trader)
    mine0, theirs0, wei0 = token(world, world.trader), token(world, ex), w3.eth.get_balance(world.trader)
    t = out("rt-1", 12_345.678901, ex.lower())  # an address as an exchange gives it: lower case
    assert v.fetch_transfer(t.client_id) is None  # nothing signed yet: it may be sent

    st = v.send_transfer(t)
    assert st.status is TransferStatus.ARRIVED and st.amount == 12_345.678901
    rows = v.ledger.txs(venue="chain")
    assert [(r.step, r.client_id, r.status) for r in rows] == [("transfer", "rt-1", "mined")]
    assert st.txid == st.external_id == rows[0].tx_hash
    # the chain moved exactly the amount, in the token's 6 decimals
    assert token(world, world.trader) == mine0 - 12_345_678_901
    assert token(world, ex) == theirs0 + 12_345_678_901
    receipt = w3.eth.get_transaction_receipt(st.txid)
    paid = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert paid > 0 and w3.eth.get_balance(world.trader) == wei0 - paid
    assert st.gas == pytest.approx(paid / 1e18 * native_price(world), rel=1e-12)
    assert st.time is not None and st.time.timestamp() == w3.eth.get_block(receipt["blockNumber"])["timestamp"]

    # idempotent: the same client id is the same transfer, never a second one
    assert v.send_transfer(t) == st
    assert v.fetch_transfer(t.client_id) == st
    assert w3.eth.get_transaction_count(world.trader) == nonce + 1
    assert len(transfers_to(world, ex, head + 1)) == 1 and len(v.ledger.txs(venue="chain")) == 1
    v.close()


CHILD = r"""
import json, sys, time
from pathlib import Path
from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.domain import Transfer
from connectors.evm.venue import EvmVenue, EvmVenueConfig
from tests.connectors.evm.conftest import NOW

opts, state, t, when = json.loads(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
ctx = ComponentContext(SimulatedClock(NOW, 0.0), state, (), lambda e: None)
v = EvmVenue("chain", EvmVenueConfig.model_validate(opts), ctx)
node_send = v.w3.eth.send_raw_transaction

def broadcast(row):  # the chain_tx row is committed; the process is killed here
    if when == "after-broadcast":
        node_send(row.raw)  # the node has it; the ledger never hears back
    print("SIGNED", row.tx_hash, flush=True)
    time.sleep(600)

v._broadcast = broadcast
v.send_transfer(Transfer(**t))
"""


@pytest.mark.parametrize("when", ["before-broadcast", "after-broadcast"])
def test_a_process_killed_mid_transfer_sends_it_once_after_the_restart(
    tmp_path: Path, world: World, anvil: AnvilNode, when: str
) -> None:
    """A real SIGKILL of a process that signed the transfer and committed it to chain_tx, before (or
    just after) the node got it; a new venue on the same ledger and state dir finds it, never sends
    a second one."""
    w3, ex = world.w3, exchange(world)
    head, nonce = w3.eth.block_number, w3.eth.get_transaction_count(world.trader)
    mine0, theirs0 = token(world, world.trader), token(world, ex)
    t = out("rt-crash", 2_500.0, ex)
    opts = venue_options(world, anvil.url)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(opts), str(tmp_path / "state"), json.dumps(asdict(t)), when],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=os.environ.copy(),
    )  # fmt: skip
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line.startswith("SIGNED 0x"), f"the child died before signing: {line!r}"
        child.send_signal(signal.SIGKILL)  # no finally, no close: only what was committed survives
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        if child.stdout:
            child.stdout.close()
    tx_hash = line.split()[1]
    sent_before = w3.eth.get_transaction_count(world.trader) - nonce
    assert sent_before == (1 if when == "after-broadcast" else 0)

    v = make_venue(tmp_path, world, anvil.url)  # the restart: same ledger (state dir), new process state
    assert [(r.step, r.status, r.tx_hash) for r in v.ledger.txs(venue="chain")] == [("transfer", "signed", tx_hash)]
    st = v.fetch_transfer(t.client_id)
    assert st is not None and st.external_id == tx_hash
    # the lost one is broadcast again byte for byte (anvil mines it at once; this look said PENDING)
    assert st.status is (TransferStatus.ARRIVED if when == "after-broadcast" else TransferStatus.PENDING)
    again = v.send_transfer(t)  # the cycle's retry after the restart: the same transaction, followed
    assert again.status is TransferStatus.ARRIVED and again.txid == tx_hash and again.gas > 0
    assert w3.eth.get_transaction_count(world.trader) == nonce + 1
    assert len(transfers_to(world, ex, head + 1)) == 1
    assert token(world, ex) == theirs0 + 2_500 * USD and token(world, world.trader) == mine0 - 2_500 * USD
    assert [r.status for r in v.ledger.txs(venue="chain")] == ["mined"]
    v.close()


def test_a_wallet_short_of_the_amount_or_the_gas_is_refused_before_signing(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    w3, ex = world.w3, exchange(world)
    nonce = w3.eth.get_transaction_count(world.trader)
    v = make_venue(tmp_path, world, anvil.url)
    have = token(world, world.trader) / USD
    with pytest.raises(TransferRefused) as info:
        v.send_transfer(out("rt-big", have + 1.0, ex))
    msg = str(info.value)
    assert f"short of {SYMBOL}:" in msg and f"needs {have + 1:,.6f} {SYMBOL}" in msg
    assert f"the wallet has {have:,.6f} {SYMBOL}" in msg and "of the native token for gas" in msg
    w3.provider.make_request("anvil_setBalance", [world.trader, hex(10**9)])  # 1 gwei of ETH: no gas money
    with pytest.raises(TransferRefused, match=r"short of gas: needs 10\.000000 tUSD .* has .* and 0\.000000 native"):
        v.send_transfer(out("rt-gas", 10.0, ex))
    with pytest.raises(TransferRefused, match="not an address on this chain"):
        v.send_transfer(out("rt-paper", 10.0, "paper:cex"))
    with pytest.raises(TransferRefused, match="carries no memo"):
        v.send_transfer(out("rt-tag", 10.0, ex, tag="12345"))
    assert not v.ledger.txs() and w3.eth.get_transaction_count(world.trader) == nonce
    assert all(v.fetch_transfer(c) is None for c in ("rt-big", "rt-gas", "rt-paper", "rt-tag"))
    v.close()
    capped = make_venue(tmp_path, world, anvil.url, gas={"max_fee_gwei": 1e-6})
    with pytest.raises(TransferRefused, match=r"^venue chain: transfer rt-cap: gas fee .* exceeds the cap") as info:
        capped.send_transfer(out("rt-cap", 10.0, ex))
    assert info.value.retryable and not capped.ledger.txs()  # over the cap now, maybe not next cycle
    capped.close()


def test_a_transfer_reverted_when_mined_is_failed_with_its_reason(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    """The estimate passes, then a transferFrom with a higher tip empties the wallet in the same block."""
    w3, ex, spender = world.w3, exchange(world), Web3.to_checksum_address(world.w3.eth.accounts[8])
    send(w3, world.stable.functions.approve(spender, 2**256 - 1), world.trader)
    v = make_venue(tmp_path, world, anvil.url, receipt_timeout_s=0.3, nonces={"stuck_after_s": 3600})
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        st = v.send_transfer(out("rt-rev", 1_000.0, ex))
        assert st.status is TransferStatus.PENDING and st.txid is None  # in the mempool, not mined
        drain = world.stable.functions.transferFrom(world.trader, spender, token(world, world.trader))
        drain.transact({"from": spender, "gas": 100_000, "maxFeePerGas": 100 * GWEI,
                        "maxPriorityFeePerGas": 50 * GWEI})  # fmt: skip
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    st = v.fetch_transfer("rt-rev")
    assert st is not None and st.status is TransferStatus.FAILED
    assert "ERC20InsufficientBalance" in st.message and st.gas > 0
    assert w3.eth.get_transaction_receipt(st.external_id)["status"] == 0
    assert any(e.kind == "tx_reverted" for e in v.events)  # type: ignore[attr-defined]
    assert v.send_transfer(out("rt-rev", 1_000.0, ex)) == st  # spent client id: no second try
    v.close()


def test_deposit_status_of_an_incoming_transfer(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    """An exchange's withdrawal to the wallet, found by its on-chain hash: PENDING in the mempool,
    ARRIVED once confirmed; an unknown hash, or one that paid somebody else, is not seen."""
    w3, ex = world.w3, exchange(world)
    send(w3, world.stable.functions.mint(ex, 10_000 * USD), world.owner)
    v = make_venue(tmp_path, world, anvil.url, confirmations=2)
    address = v.deposit_address(SYMBOL, "ETH").address
    t = Transfer("rt-in", KEY, "cex", "chain", SYMBOL, 2_500.0, "ETH", address)
    fees = {"from": ex, "gas": 100_000, "maxFeePerGas": 100 * GWEI, "maxPriorityFeePerGas": GWEI}
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        h = Web3.to_hex(world.stable.functions.transfer(address, 2_500 * USD).transact(fees))
        state = TransferState("rt-in", TransferStatus.PENDING, 2_500.0, external_id="wd-1", txid=h)
        assert v.deposit_status(t, state) is TransferStatus.PENDING  # known to the node, not mined
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    assert v.deposit_status(t, state) is TransferStatus.PENDING  # 1 of 2 confirmations
    w3.provider.make_request("evm_mine", [])
    assert v.deposit_status(t, state) is TransferStatus.ARRIVED
    assert v.deposit_status(t, TransferState("rt-in", TransferStatus.PENDING, 2_500.0, txid="0x" + "ab" * 32)) is None
    assert v.deposit_status(t, TransferState("rt-in", TransferStatus.PENDING, 2_500.0)) is None  # no hash yet
    other = send(w3, world.stable.functions.transfer(w3.eth.accounts[8], 100 * USD), ex)
    w3.provider.make_request("evm_mine", [])
    miss = TransferState("rt-in", TransferStatus.PENDING, 100.0, txid=Web3.to_hex(other["transactionHash"]))
    assert v.deposit_status(t, miss) is None
    assert [e.kind for e in v.events] == ["deposit_mismatch"]  # type: ignore[attr-defined]
    v.close()


# -- paper: the paper network ----------------------------------------------------------------------------


def test_paper_cash_moves_over_the_paper_network(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    """The evm paper account and the paper exchange share the network under one state dir and clock: a
    transfer leaves at once (amount, fee and gas), arrives after the delay, and a paper buy can spend
    cash that arrived and not cash in transit."""
    clock = SimulatedClock(NOW, 0.0)
    state = tmp_path / "state"
    nonce, head = world.w3.eth.get_transaction_count(world.trader), world.w3.eth.block_number

    def chain_venue() -> EvmVenue:
        opts = venue_options(world, anvil.url, paper=True, account=world.trader, key_env=None, paper_cash=10_000.0,
                             paper_transfer_minutes=30.0, paper_transfer_fee=1.0, paper_transfer_gas=0.5)  # fmt: skip
        ctx = ComponentContext(clock, state, tuple(world.venue_assets()), lambda e: None)
        return EvmVenue("chain", EvmVenueConfig.model_validate(opts), ctx)

    data = SimulatedMarket(SimulatedMarketConfig(seed=7))
    cex = PaperVenue("cex", PaperConfig(initial_cash=100_000.0, transfer_minutes=10.0, transfer_fee=0.0),
                     ComponentContext(clock, state, data.assets(), lambda e: None, data))  # fmt: skip
    chain = chain_venue()
    assert chain.deposit_address(SYMBOL, "ETH").address == "paper:chain"
    to_cex = out("rt-p1", 4_000.0, cex.deposit_address(SYMBOL, "ETH").address)
    st = chain.send_transfer(to_cex)
    assert (st.status, st.amount, st.fee, st.gas) == (TransferStatus.PENDING, 4_000.0, 1.0, 0.5)
    assert chain.balances().cash == pytest.approx(10_000.0 - 4_001.5, abs=1e-9)  # debited at once
    assert cex.balances().cash == 100_000.0 and cex.deposit_status(to_cex, st) is TransferStatus.PENDING
    assert chain.send_transfer(to_cex) == st and chain.balances().cash == pytest.approx(5_998.5, abs=1e-9)
    with pytest.raises(TransferRefused, match=r"needs 6,001\.50 tUSD \(6,000\.00 \+ fee 1\.00 \+ gas 0\.50\), "
                       r"the account has 5,998\.50"):  # fmt: skip
        chain.send_transfer(out("rt-p2", 6_000.0, "paper:cex"))
    assert chain.fetch_transfer("rt-p2") is None

    clock.advance_to(NOW + timedelta(minutes=30))
    assert cex.balances().cash == pytest.approx(104_000.0, abs=1e-9)
    assert cex.deposit_status(to_cex, st) is TransferStatus.ARRIVED
    arrived = chain.fetch_transfer("rt-p1")
    assert arrived is not None and (arrived.status, arrived.gas) == (TransferStatus.ARRIVED, 0.5)

    # incoming: cash in transit buys nothing; once arrived, a paper buy spends it
    into = Transfer("rt-p3", KEY, "cex", "chain", SYMBOL, 50_000.0, "ETH", "paper:chain")
    incoming = cex.send_transfer(into)
    usd = 20_000.0
    buy = Order(client_order_id(KEY, "USTB"), KEY, "chain", "USTB", "buy", usd / chain.quote("USTB").ask, 1.0)
    with pytest.raises(InsufficientFunds, match=r"has 5998\.500000"):
        chain.place_order(buy)
    assert chain.deposit_status(into, incoming) is TransferStatus.PENDING
    clock.advance_to(NOW + timedelta(minutes=41))
    assert chain.deposit_status(into, incoming) is TransferStatus.ARRIVED
    assert chain.balances().cash == pytest.approx(55_998.5, abs=1e-9)
    filled = chain.place_order(buy)
    assert filled.status is OrderStatus.FILLED
    f = filled.fills[0]
    assert chain.balances().cash == pytest.approx(55_998.5 - f.qty * f.price - f.fee - f.gas, abs=1e-6)
    cash = chain.balances().cash
    chain.close()
    chain = chain_venue()  # a restart: the journal and the network are durable
    assert chain.balances().cash == pytest.approx(cash, abs=1e-9) and chain.fetch_transfer("rt-p1") == arrived
    assert chain.fetch_transfer("rt-p3") is None  # the exchange's transfer, not this account's
    # a crash between the network's commit and the journal's (simulated: the network's send alone):
    # the gas is booked when the transfer is next seen, once
    t4 = out("rt-p4", 1_000.0, "paper:cex")
    assert chain.network is not None
    chain.network.send("chain", t4, available=cash, fee=1.0, delay=timedelta(minutes=30), now=clock.now())
    assert chain.balances().cash == pytest.approx(cash - 1_001.0, abs=1e-9)  # no gas yet
    seen = chain.fetch_transfer("rt-p4")
    assert seen is not None and seen.gas == 0.5 and chain.fetch_transfer("rt-p4") == seen
    assert chain.send_transfer(t4) == seen and chain.balances().cash == pytest.approx(cash - 1_001.5, abs=1e-9)
    chain.close()
    cex.close()
    assert world.w3.eth.get_transaction_count(world.trader) == nonce and world.w3.eth.block_number == head


def test_the_devnet_venue_of_the_paper_config_funds_over_the_paper_network(tmp_path: Path) -> None:
    """``evm_devnet`` (config/paper.toml's chain) is a funding venue in paper mode with its own options."""
    from tests.conftest import START
    from tests.connectors.evm.test_devnet_venue import devnet

    clock = SimulatedClock(START + timedelta(days=3), 0.0)
    v = devnet(tmp_path, clock, paper_cash=10_000.0, paper_transfer_minutes=5.0, paper_transfer_gas=0.25)
    try:
        assert isinstance(v, FundingVenue) and v.deposit_address(SYMBOL, "paper").address == "paper:chain"
        t = Transfer("rt-d1", KEY, "chain", "exchange", SYMBOL, 2_000.0, "paper", "paper:exchange")
        st = v.send_transfer(t)
        assert (st.status, st.gas) == (TransferStatus.PENDING, 0.25)
        assert v.balances().cash == pytest.approx(10_000.0 - 2_000.25, abs=1e-9)
        clock.advance_to(clock.now() + timedelta(minutes=5))
        assert v.fetch_transfer("rt-d1").status is TransferStatus.ARRIVED  # type: ignore[union-attr]
    finally:
        v.close()
