"""Whole cycles through the engine against real contracts on anvil: subscriptions, redemptions and
swaps; a compliance rejection; a revert; the gas cap; a node killed mid-cycle; a restart with a
transaction in flight. Every test ends with the ledger and the chain agreeing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import requests

from bot.cycle import Engine
from bot.hookspecs import hookimpl
from connectors.evm.deploy import USD, World, deploy_world, send
from connectors.evm.node import AnvilNode
from tests.connectors.evm.conftest import NOW, evm_config, evm_engine, venue_options

KEY = NOW.strftime("%Y-%m-%dT%H:00Z")
UPPER = {"USTB": 0.3}  # the trader starts with most of its money in USTB: the cycle must redeem


def start_in_ustb(world: World, usd: float = 700_000.0) -> None:
    v = world.vaults["USTB"]
    send(world.w3, world.stable.functions.approve(v.address, int(usd * USD)), world.trader)
    send(world.w3, v.functions.deposit(int(usd * USD), world.trader), world.trader)


def books_agree(e: Engine, world: World, venue: str, before: dict[str, int]) -> None:
    """Chain balances are exactly the start plus the ledger's fills; gas matches the native spent."""
    fills = [f for f in e.ledger.fills() if f.venue == venue]
    txs = e.ledger.txs(venue=venue)
    w3 = world.w3
    stable = world.stable.functions.balanceOf(world.trader).call()
    flow = sum((f.qty * f.price + f.fee) * (-1 if f.side == "buy" else 1) for f in fills)
    assert stable / USD == pytest.approx(before["stable"] / USD + flow, abs=1e-5)
    for asset in world.venue_assets():
        c = world.vaults.get(asset) or world.tokens[asset]
        held = c.functions.balanceOf(world.trader).call() / 1e18
        moved = sum(f.qty * (1 if f.side == "buy" else -1) for f in fills if f.asset == asset)
        assert held == pytest.approx(before[asset] / 1e18 + moved, rel=1e-12, abs=1e-9), asset
    native = (before["native"] - w3.eth.get_balance(world.trader)) / 1e18
    assert native == pytest.approx(sum(t.gas_cost_native for t in txs), rel=1e-12)
    assert sum(f.gas for f in fills) == pytest.approx(sum(t.gas_cost_quote for t in txs), rel=1e-9)
    # every transaction the account ever sent is in the ledger, once
    assert w3.eth.get_transaction_count(world.trader) - before["nonce"] == len({t.nonce for t in txs})
    for o in e.ledger.all_orders():
        if o.venue == venue:
            assert o.status in ("filled", "rejected", "canceled"), (o.client_id, o.status)


def snapshot_before(world: World) -> dict[str, int]:
    out = {a: (world.vaults.get(a) or world.tokens[a]).functions.balanceOf(world.trader).call()
           for a in world.venue_assets()}  # fmt: skip
    out["stable"] = world.stable.functions.balanceOf(world.trader).call()
    out["native"] = world.w3.eth.get_balance(world.trader)
    out["nonce"] = world.w3.eth.get_transaction_count(world.trader)
    return out


def test_a_cycle_subscribes_redeems_and_swaps(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    start_in_ustb(world)
    before = snapshot_before(world)
    e = evm_engine(tmp_path, evm_config(tmp_path, world, anvil.url, upper=UPPER))
    report = e.run_cycle(NOW)
    assert report.status == "done", report.message
    orders = {o.asset: o for o in e.ledger.all_orders()}
    assert orders["USTB"].side == "sell" and orders["CREDIT"].side == "buy" and orders["REALT"].side == "buy"
    assert all(o.status == "filled" for o in orders.values()), [(o.asset, o.status, o.message) for o in orders.values()]
    steps = Counter((t.asset, t.step, t.status) for t in e.ledger.txs(venue="chain"))
    assert steps == {("USTB", "redeem", "mined"): 1, ("CREDIT", "approve", "mined"): 1,
                     ("CREDIT", "deposit", "mined"): 1, ("REALT", "approve", "mined"): 1,
                     ("REALT", "swap", "mined"): 1}  # fmt: skip
    fills = {f.asset: f for f in e.ledger.fills()}
    assert all(f.gas > 0 for f in fills.values())
    assert fills["REALT"].fee == pytest.approx(fills["REALT"].qty * fills["REALT"].price * 0.003 / 0.997, rel=1e-6)
    assert fills["USTB"].fee == 0 and fills["CREDIT"].fee == 0
    # exact-amount approvals: nothing left approved after the trades
    assert world.stable.functions.allowance(world.trader, world.vaults["CREDIT"].address).call() == 0
    assert world.stable.functions.allowance(world.trader, world.pools["REALT"].address).call() == 0
    books_agree(e, world, "chain", before)
    assert e.ledger.cost_totals()["gas"] > 0
    e.close()


def test_an_ineligible_account_is_refused_before_anything_is_paid(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    start_in_ustb(world)
    send(world.w3, world.vaults["CREDIT"].functions.setVerified(world.trader, False), world.owner)
    before = snapshot_before(world)
    e = evm_engine(tmp_path, evm_config(tmp_path, world, anvil.url, upper=UPPER))
    report = e.run_cycle(NOW)
    assert report.status == "done"
    credit = next(o for o in e.ledger.all_orders() if o.asset == "CREDIT")
    trader = world.trader
    assert credit.status == "rejected" and f"not eligible: wallet {trader} is not on the allow-list" in credit.message
    assert f"refuses mint -> wallet {trader}" in credit.message and "CREDIT" in credit.message
    assert not [t for t in e.ledger.txs() if t.asset == "CREDIT"]  # no approval, no deposit, no gas
    assert e.ledger.events("not_eligible") and e.ledger.events("order_rejected")
    assert {o.asset: o.status for o in e.ledger.all_orders()} == {"USTB": "filled", "CREDIT": "rejected",
                                                                 "REALT": "filled"}  # fmt: skip
    books_agree(e, world, "chain", before)
    e.close()


def test_a_revert_is_decoded_and_fails_the_venue_for_the_cycle(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    start_in_ustb(world)
    send(world.w3, world.pools["REALT"].functions.pause(), world.owner)
    before = snapshot_before(world)
    e = evm_engine(tmp_path, evm_config(tmp_path, world, anvil.url, upper=UPPER))
    report = e.run_cycle(NOW)
    assert report.status == "done" and "venue chain failed" in report.message
    ev = e.ledger.events("tx_reverted")
    assert ev and "swap of REALT would revert: EnforcedPause()" in ev[0].message
    assert e.ledger.events("venue_failed")
    realt = next(o for o in e.ledger.all_orders() if o.asset == "REALT")
    # the approval went through (exact amount), the swap was never signed: nothing to look up later
    assert [t.step for t in e.ledger.txs() if t.asset == "REALT"] == ["approve"]
    assert realt.status == "sending"
    e.reconcile_venues()
    realt = next(o for o in e.ledger.all_orders() if o.asset == "REALT")
    assert realt.status == "canceled"
    books_agree(e, world, "chain", before)
    e.close()


def test_a_transaction_that_reverts_on_chain_costs_gas_and_is_recorded(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    """The pool is paused in the same block, ahead of the swap (a higher tip): a real mined revert."""
    import threading
    import time

    before = snapshot_before(world)
    e = evm_engine(tmp_path, evm_config(tmp_path, world, anvil.url, upper={"USTB": 0.0, "CREDIT": 0.0}))
    w3 = world.w3
    pool = world.pools["REALT"]
    stop = threading.Event()

    def front_run() -> None:
        while not stop.is_set():
            pending = w3.provider.make_request("txpool_content", [])["result"]["pending"]
            mine = {k.lower(): v for k, v in pending.items()}.get(world.trader.lower(), {})
            if any(tx["to"] and tx["to"].lower() == pool.address.lower() for tx in mine.values()):
                pool.functions.pause().transact({"from": world.owner, "maxPriorityFeePerGas": 10**11,
                                                 "maxFeePerGas": 10**12, "gas": 100_000})  # fmt: skip
                w3.provider.make_request("evm_mine", [])
                return
            if mine:  # the approval: let it through
                w3.provider.make_request("evm_mine", [])
            time.sleep(0.005)

    w3.provider.make_request("evm_setAutomine", [False])
    t = threading.Thread(target=front_run)
    t.start()
    try:
        report = e.run_cycle(NOW)
    finally:
        stop.set()
        t.join()
        w3.provider.make_request("evm_setAutomine", [True])
    assert "venue chain failed" in report.message and "reverted" in report.message
    swap = next(x for x in e.ledger.txs() if x.step == "swap")
    assert swap.status == "reverted" and swap.message == "reverted: EnforcedPause()" and swap.gas_cost_quote > 0
    e.reconcile_venues()
    realt = next(o for o in e.ledger.all_orders() if o.asset == "REALT")
    assert realt.status == "rejected" and realt.filled_qty == 0
    gas_fill = next(f for f in e.ledger.fills() if f.client_id == realt.client_id)
    assert gas_fill.qty == 0 and gas_fill.gas == pytest.approx(swap.gas_cost_quote + next(
        x for x in e.ledger.txs() if x.step == "approve").gas_cost_quote)  # fmt: skip
    books_agree(e, world, "chain", before)
    e.close()


def test_fees_over_the_cap_skip_every_trade(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    start_in_ustb(world)
    before = snapshot_before(world)
    world.w3.provider.make_request("anvil_setNextBlockBaseFeePerGas", [hex(300 * 10**9)])
    world.w3.provider.make_request("evm_mine", [])
    cfg = evm_config(tmp_path, world, anvil.url, upper=UPPER, gas={"max_fee_gwei": 100.0, "priority_fee_gwei": 1.0})
    e = evm_engine(tmp_path, cfg)
    assert e.run_cycle(NOW).status == "done"
    assert {o.status for o in e.ledger.all_orders()} == {"rejected"}
    caps = e.ledger.events("gas_cap")
    assert len(caps) == 3 and "exceeds the cap of 100.000 gwei" in caps[0].message
    assert not e.ledger.txs()
    books_agree(e, world, "chain", before)
    e.close()


class KillOn:
    """A plugin that stops a node when the engine hands the first order of a venue over."""

    def __init__(self, node: AnvilNode, venue: str) -> None:
        self.node, self.venue = node, venue

    @hookimpl
    def rwabot_order_placed(self, order) -> None:  # noqa: ANN001
        if order.venue == self.venue and self.node.running:
            self.node.stop()


def test_a_node_killed_mid_cycle_fails_its_venue_and_the_other_goes_on(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    """Two wallets on two chains; the second chain's node dies as its first order goes out."""
    start_in_ustb(world)
    before = snapshot_before(world)
    other = AnvilNode(timestamp=int(NOW.timestamp()) - 1800).start()  # its chain's clock near the bot's
    try:
        from connectors.evm.chain import connect

        w2 = deploy_world(connect(other.url, 5.0))
        assert w2.vaults["CREDIT"].address == world.vaults["CREDIT"].address  # same deployer, same addresses
        cfg = evm_config(tmp_path, world, anvil.url, upper=UPPER)
        opts_b = venue_options(w2, other.url, assets={"CREDIT": w2.venue_assets()["CREDIT"]})
        opts_b["assets"]["CREDIT"]["permissioned"] = True
        cfg["venues"]["chain_b"] = {"plugin": "evm", "options": opts_b}
        cfg["assets"]["CREDIT"]["venue"] = "chain_b"
        cfg["venues"]["chain"]["options"]["assets"].pop("CREDIT")
        e = evm_engine(tmp_path, cfg, plugins=(KillOn(other, "chain_b"),))
        report = e.run_cycle(NOW)
        assert not other.running
        assert report.status == "done" and "venue chain_b failed" in report.message
        assert "node unreachable" in report.message
        ev = e.ledger.events("venue_failed")
        assert ev and ev[0].where == "venue:chain_b"
        status = {o.asset: o.status for o in e.ledger.all_orders()}
        assert status["USTB"] == "filled" and status["REALT"] == "filled" and status["CREDIT"] == "sending"
        assert not e.ledger.txs(venue="chain_b")  # it died before anything was signed
        books_agree(e, world, "chain", before)
        e.close()
    finally:
        other.stop()


@pytest.mark.parametrize("reached_node", [True, False], ids=["sent-but-answer-lost", "crash-before-send"])
def test_restart_with_a_transaction_in_flight_never_sends_twice(
    tmp_path: Path, world: World, anvil: AnvilNode, reached_node: bool
) -> None:
    start_in_ustb(world)
    before = snapshot_before(world)
    cfg = evm_config(tmp_path, world, anvil.url, upper=UPPER)
    e = evm_engine(tmp_path, cfg)
    venue = e.c.venues["chain"]
    real_send = venue.w3.eth.send_raw_transaction

    def flaky(raw):  # noqa: ANN001, ANN202
        if reached_node:
            real_send(raw)  # the node has it, the answer is lost
        raise requests.ConnectionError("connection reset by peer")

    venue.w3.eth.send_raw_transaction = flaky  # the first transaction of the cycle: the USTB redemption
    report = e.run_cycle(NOW)
    assert "venue chain failed" in report.message and "node unreachable during send" in report.message
    row = e.ledger.txs()[0]
    assert row.step == "redeem" and row.status == "signed"  # written before the send, never confirmed sent
    e.close()  # the daemon dies here

    e2 = evm_engine(tmp_path, cfg)
    e2.reconcile_venues()  # what a restart does first
    ustb = next(o for o in e2.ledger.all_orders() if o.asset == "USTB")
    assert ustb.status == "filled"
    txs = e2.ledger.txs()
    assert [(t.step, t.status) for t in txs] == [("redeem", "mined")]  # one hash, mined once
    fills = [f for f in e2.ledger.fills() if f.asset == "USTB"]
    assert len(fills) == 1
    books_agree(e2, world, "chain", before)
    e2.close()
