"""Tokenized funds the project has never seen, configured from their addresses alone (issue 23).

A chain of its own (``novel_world``): an OpenZeppelin-5 ERC-4626 fund charging entry and exit fees, a
fund with synchronous subscriptions and ERC-7540 asynchronous redemptions (request ids from 1,
partial fulfilment), its mirror (asynchronous subscriptions from id 100, synchronous redemptions), an
8-decimal token on a real Uniswap V2 pair, an AggregatorV3 feed and an issuer oracle. The daemon
trades the fee fund, the hybrid and the pair from a config file the test writes, in live and paper
mode; the fees the ledger books are compared with what the fee recipient received on chain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.logs import DISCARD

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.config import load_config
from bot.cycle import Engine, client_order_id
from bot.domain import Order, OrderStatus
from bot.errors import DataError, VenueError
from bot.ledger import Ledger
from connectors.evm.async_requests import AsyncSides
from connectors.evm.build import compile_contracts
from connectors.evm.chain import RevertDecoder, connect, error_abi, standard_errors
from connectors.evm.data import EvmDataConfig, EvmDataSource
from connectors.evm.deploy import deploy, dev_key, send
from connectors.evm.devnet import _toml
from connectors.evm.node import AnvilNode
from connectors.evm.venue import EvmVenue, EvmVenueConfig
from tests.connectors.evm.novel_world import (
    EXIT_BPS,
    GOLD8,
    HYBRID_ENTRY_BPS,
    HYBRID_FULFIL_BPS,
    NOW1,
    QUEUED_FULFIL_BPS,
    SHARE18,
    T1,
    USD6,
    Novel,
    data_assets,
    deploy_novel,
    venue_assets,
)

KEY_ENV = "RWABOT_TEST_NOVEL_KEY"
KEY = NOW1.strftime("%Y-%m-%dT%H:00Z")


@pytest.fixture(scope="module")
def _novel_session() -> Iterator[dict[str, Any]]:
    node = AnvilNode(timestamp=T1 - 7200).start()
    w3 = connect(node.url, 10.0)
    n = deploy_novel(w3)
    # someone else's redemption request first: the trader's ids are not the first ones
    send(w3, n.hybrid.functions.requestRedeem(10 * SHARE18, n.owner, n.owner), n.owner)
    n.mine_history()
    yield {"node": node, "novel": n, "snapshot": w3.provider.make_request("evm_snapshot", [])["result"]}
    node.stop()


@pytest.fixture
def novel(_novel_session: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Novel]:
    n: Novel = _novel_session["novel"]
    w3 = n.w3
    w3.provider.make_request("evm_setAutomine", [True])
    assert w3.provider.make_request("evm_revert", [_novel_session["snapshot"]])["result"] is True
    _novel_session["snapshot"] = w3.provider.make_request("evm_snapshot", [])["result"]
    base = w3.eth.get_block("latest")["baseFeePerGas"]
    w3.provider.make_request("anvil_setNextBlockBaseFeePerGas", [hex(base)])
    monkeypatch.setenv(KEY_ENV, dev_key(2))
    yield n


@pytest.fixture
def url(_novel_session: dict[str, Any]) -> str:
    return _novel_session["node"].url


def venue_opts(n: Novel, url: str, assets: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Addresses only: no decimals (read from the tokens), the quote token's decimals read too."""
    return {"rpc_url": url, "chain_id": 31337, "quote_token": n.usd.address, "native_price": 3000.0,
            "key_env": KEY_ENV, "receipt_timeout_s": 5.0, "poll_interval_s": 0.01, "rpc_timeout_s": 2.0,
            "assets": assets, **kw}  # fmt: skip


def make_venue(tmp_path: Path, n: Novel, url: str, assets: dict[str, Any], **kw: Any) -> EvmVenue:
    events: list[Any] = []
    ctx = ComponentContext(SimulatedClock(NOW1, 0.0), tmp_path / "state", tuple(assets), events.append,
                           extra={"ledger": Ledger(tmp_path / "ledger.sqlite")})  # fmt: skip
    v = EvmVenue("chain", EvmVenueConfig.model_validate(venue_opts(n, url, assets, **kw)), ctx)
    v.events = events  # type: ignore[attr-defined]
    return v


def order(asset: str, side: str, qty: float, price: float, k: int = 0) -> Order:
    return Order(client_order_id(KEY, asset, k), KEY, "chain", asset, side, qty, price)  # type: ignore[arg-type]


def usd(n: Novel, who: str) -> int:
    return n.usd.functions.balanceOf(who).call()


def fee_on_total(assets: int, bps: int) -> int:
    """OpenZeppelin's ERC4626Fees ``_feeOnTotal``, computed here from the contract's formula."""
    return -(-assets * bps // (bps + 10_000))


# -- which side is a request: ERC-165, per side ------------------------------------------------------------


def test_each_side_of_a_fund_is_synchronous_or_a_request_as_erc165_says(tmp_path: Path, novel: Novel, url: str) -> None:
    n = novel
    full = deploy(n.w3, compile_contracts()["AsyncVault"], n.usd.address, "Fully async", "FA", n.owner, sender=n.owner)
    assets = {"HYB": {"kind": "vault", "address": n.hybrid.address},
              "QUE": {"kind": "vault", "address": n.queued.address},
              "FA": {"kind": "async", "address": full.address},
              "FEE": {"kind": "vault", "address": n.fee_fund.address}}  # fmt: skip
    v = make_venue(tmp_path, n, url, assets)
    assert v._sides("HYB") == AsyncSides(True, True, False, True)  # sync in, async out
    assert v._sides("QUE") == AsyncSides(True, True, True, False)  # async in, sync out
    assert v._sides("FA") == AsyncSides(True, True, True, True)  # fully async
    assert v._sides("FEE") == AsyncSides(False, False, False, False)  # a plain ERC-4626 fund
    said = {e.data["asset"]: e.message for e in v.events if e.kind == "vault_sides"}  # type: ignore[attr-defined]
    assert said["HYB"] == "HYB: subscriptions at once (ERC-4626), redemptions request (ERC-7540); operators supported"
    assert set(said) == {"HYB", "QUE", "FA"}
    # quotes: a synchronous side by its preview (fees in), an asynchronous one at NAV (its preview reverts)
    q = v.quote("HYB")
    assert q.ask == pytest.approx(n.hybrid.functions.previewMint(SHARE18).call() / USD6)
    assert q.bid == pytest.approx(n.nav(n.hybrid)) and q.ask > q.bid * (1 + HYBRID_ENTRY_BPS / 1e4 * 0.99)
    q = v.quote("QUE")
    assert q.ask == pytest.approx(n.nav(n.queued)) and q.bid == pytest.approx(
        n.queued.functions.previewRedeem(SHARE18).call() / USD6)  # fmt: skip
    q = v.quote("FEE")  # 6-decimal shares, read from the chain
    assert q.bid == pytest.approx(n.fee_fund.functions.previewRedeem(10**6).call() / USD6)
    assert v.market("FEE").qty_step == 1e-6 and v._unit("FEE") == 10**6 and v._unit("HYB") == SHARE18
    v.close()


def fee_paid(n: Novel, receipt: Any) -> int:
    """Raw dollars a transaction sent to the fee recipient (the funds' fees, and nothing else, go there)."""
    return sum(lg["args"]["value"] for lg in n.usd.events.Transfer().process_receipt(receipt, errors=DISCARD)
               if lg["address"] == n.usd.address and lg["args"]["to"] == n.recipient)  # fmt: skip


def test_sync_in_async_out_request_ids_and_partial_fulfilment(tmp_path: Path, novel: Novel, url: str) -> None:
    n = novel
    v = make_venue(tmp_path, n, url, {"HYB": {"kind": "vault", "address": n.hybrid.address}})
    cash0, fees0 = usd(n, n.trader), usd(n, n.recipient)
    nav = n.nav(n.hybrid)
    buy = v.place_order(order("HYB", "buy", 1000.0, nav))  # a deposit, at once
    assert buy.status is OrderStatus.FILLED and [t.step for t in v.ledger.txs()] == ["approve", "deposit"]
    (f,) = buy.fills
    paid = cash0 - usd(n, n.trader)
    assert f.qty == pytest.approx(n.hybrid.functions.balanceOf(n.trader).call() / SHARE18, abs=1e-18)
    assert f.product_fee == f.fee == pytest.approx((usd(n, n.recipient) - fees0) / USD6, abs=1e-6)
    assert f.fee == pytest.approx(fee_on_total(paid, HYBRID_ENTRY_BPS) / USD6, abs=1e-6) and f.fee > 0
    assert f.qty * f.price + f.fee == pytest.approx(paid / USD6, abs=1e-9)
    assert f.price == pytest.approx(nav, rel=1e-6)  # the NAV: the fee is booked apart, not hidden in the price

    sell = v.place_order(order("HYB", "sell", 600.0, nav, 1))  # a request
    assert sell.status is OrderStatus.OPEN and sell.filled_qty == 0
    req = v.ledger.get_async_request(sell.client_id)
    assert req is not None and req.status == "pending" and req.request_id == "2"  # id 1 is someone else's
    rid = int(req.request_id)
    assert n.hybrid.functions.pendingRedeemRequest(rid, n.trader).call() == 600 * SHARE18
    assert n.hybrid.functions.pendingRedeemRequest(0, n.trader).call() == 0
    bal = v.balances()
    assert bal.pending["HYB"] == pytest.approx(600.0) and bal.positions["HYB"] == pytest.approx(f.qty - 600.0)
    # the manager fulfils 250 shares now, keeping its exit fee (paid to the recipient in its own transaction)
    fee1 = fee_paid(n, send(n.w3, n.hybrid.functions.fulfillRedeem(rid, 250 * SHARE18), n.owner))
    assert fee1 == fee_on_total(n.hybrid.functions.convertToAssets(250 * SHARE18).call(), HYBRID_FULFIL_BPS) > 0
    before = usd(n, n.trader)
    n.set_nav(n.hybrid, nav * 1.02)  # the NAV moves before the claim: the fee is the fulfilment's, not the claim's
    bal = v.balances()  # polls: claims what is claimable
    st = v.fetch_order(sell.client_id)
    assert st is not None and st.status is OrderStatus.OPEN and st.filled_qty == pytest.approx(250.0)
    assert bal.pending["HYB"] == pytest.approx(350.0) and "HYB" in v.async_.held_fixed()  # type: ignore[union-attr]
    first = st.fills[0]
    assert first.product_fee == first.fee == pytest.approx(fee1 / USD6, abs=1e-6)
    assert first.price == pytest.approx(nav, rel=1e-6)  # the NAV of the fulfilment, the fee apart
    assert (usd(n, n.trader) - before) / USD6 == pytest.approx(first.qty * first.price - first.fee, abs=1e-6)
    # two fulfilments at two NAVs before the next poll: one claim takes both, each part at its own NAV
    fee2 = fee_paid(n, send(n.w3, n.hybrid.functions.fulfillRedeem(rid, 100 * SHARE18), n.owner))
    n.set_nav(n.hybrid, nav * 1.01)
    fee3 = fee_paid(n, send(n.w3, n.hybrid.functions.fulfillRedeem(rid, 250 * SHARE18), n.owner))
    mid = usd(n, n.trader)
    v.balances()
    st = v.fetch_order(sell.client_id)
    assert st is not None and st.status is OrderStatus.FILLED and len(st.fills) == 2
    second = st.fills[1]
    assert st.filled_qty == pytest.approx(600.0) and second.qty == pytest.approx(350.0)
    assert second.product_fee == second.fee == pytest.approx((fee2 + fee3) / USD6, abs=1e-6)
    assert second.price == pytest.approx((100 * nav * 1.02 + 250 * nav * 1.01) / 350, rel=1e-6)
    assert (usd(n, n.trader) - mid) / USD6 == pytest.approx(second.qty * second.price - second.fee, abs=1e-6)
    assert usd(n, n.recipient) - fees0 == round(f.fee * USD6) + fee1 + fee2 + fee3
    assert not v.balances().pending and [t.step for t in v.ledger.txs(client_id=sell.client_id)] == [
        "request", "claim", "claim"]  # fmt: skip
    assert "HYB" not in v.async_.held_fixed()  # type: ignore[union-attr]
    assert not [e for e in v.events if e.kind == "product_fee_estimated"]  # type: ignore[attr-defined]
    v.close()


def test_async_in_sync_out(tmp_path: Path, novel: Novel, url: str) -> None:
    n = novel
    v = make_venue(tmp_path, n, url, {"QUE": {"kind": "vault", "address": n.queued.address}})
    nav = n.nav(n.queued)
    cash0 = usd(n, n.trader)
    st = v.place_order(order("QUE", "buy", 500.0, nav))
    assert st.status is OrderStatus.OPEN
    req = v.ledger.get_async_request(st.client_id)
    assert req is not None and req.request_id == "101"  # the seed's request was 100
    paid = int(req.amount_raw)
    assert n.queued.functions.pendingDepositRequest(101, n.trader).call() == paid == cash0 - usd(n, n.trader)
    assert v.balances().pending["QUE"] == pytest.approx(500.0, rel=1e-6)
    part = paid * 2 // 5
    fee1 = fee_paid(n, send(n.w3, n.queued.functions.fulfillDeposit(101, part), n.owner))
    assert fee1 == fee_on_total(part, QUEUED_FULFIL_BPS) > 0
    n.set_nav(n.queued, nav * 1.03)  # moved before the claim: the shares are valued at the fulfilment's NAV
    v.balances()
    mid = v.fetch_order(st.client_id)
    assert mid is not None and mid.status is OrderStatus.OPEN and len(mid.fills) == 1
    assert mid.filled_qty == pytest.approx((part - fee1) / USD6 / nav, rel=1e-6)
    f1 = mid.fills[0]
    assert f1.product_fee == f1.fee == pytest.approx(fee1 / USD6, abs=1e-6) and f1.price == pytest.approx(nav, rel=1e-6)
    assert f1.qty * f1.price + f1.fee == pytest.approx(part / USD6, abs=1e-6)
    assert v.balances().pending["QUE"] == pytest.approx((paid - part) / USD6 / (nav * 1.03), rel=1e-6)
    fee2 = fee_paid(n, send(n.w3, n.queued.functions.fulfillDeposit(101, paid - part), n.owner))
    v.balances()
    done = v.fetch_order(st.client_id)
    assert done is not None and done.status is OrderStatus.FILLED and len(done.fills) == 2
    f2 = done.fills[1]
    assert f2.product_fee == f2.fee == pytest.approx(fee2 / USD6, abs=1e-6)
    assert f2.price == pytest.approx(nav * 1.03, rel=1e-6)
    assert sum(f.qty * f.price + f.fee for f in done.fills) == pytest.approx(paid / USD6, abs=1e-6)
    held = n.queued.functions.balanceOf(n.trader).call() / SHARE18
    assert held == pytest.approx(sum(f.qty for f in done.fills), rel=1e-12)
    cash = usd(n, n.trader)
    sell = v.place_order(order("QUE", "sell", 200.0, nav, 1))  # a redemption at once, without a fee
    assert sell.status is OrderStatus.FILLED and sell.fills[0].fee == 0 and sell.fills[0].product_fee == 0
    assert (usd(n, n.trader) - cash) / USD6 == pytest.approx(sell.fills[0].qty * sell.fills[0].price, abs=1e-9)
    v.close()


def test_a_node_without_history_estimates_the_fee_at_fulfilment_at_the_latest_nav(
    tmp_path: Path, novel: Novel, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an archive node: the fulfilments cannot be found in past blocks; the claim's shares are valued
    at the latest NAV instead, with a warning, and the cash still adds up."""
    from connectors.evm import async_requests as ar

    n = novel
    v = make_venue(tmp_path, n, url, {"HYB": {"kind": "vault", "address": n.hybrid.address}})
    nav = n.nav(n.hybrid)
    v.place_order(order("HYB", "buy", 100.0, nav))
    sell = v.place_order(order("HYB", "sell", 50.0, nav, 1))
    rid = int(v.ledger.get_async_request(sell.client_id).request_id)  # type: ignore[union-attr,arg-type]
    fee = fee_paid(n, send(n.w3, n.hybrid.functions.fulfillRedeem(rid, 50 * SHARE18), n.owner))
    real = ar.AsyncRequests._call_at
    answer = "rate limited"

    class PastBlocks:  # the node's answer to a view at a past block
        def __init__(self, fn: Any) -> None:
            self.fn = fn

        def call(self, block_identifier: Any) -> Any:
            if block_identifier != "latest":
                raise Web3RPCError(answer)
            return self.fn.call(block_identifier=block_identifier)

    monkeypatch.setattr(ar.AsyncRequests, "_call_at", lambda s, what, fn, b: real(s, what, PastBlocks(fn), b))
    before = usd(n, n.trader)
    with pytest.raises(VenueError, match="rate limited") as exc:  # another node error: the mined claim is booked later
        v.balances()
    assert exc.value.retryable
    st = v.fetch_order(sell.client_id)
    assert st is not None and st.status is OrderStatus.OPEN and not st.fills
    answer = "missing trie node 5f2e1c (path ) state 0x9a… is not available"  # a pruned node
    v.balances()
    st = v.fetch_order(sell.client_id)
    assert st is not None and st.status is OrderStatus.FILLED
    (f,) = st.fills
    assert f.product_fee == f.fee == pytest.approx(fee / USD6, abs=1e-6)  # the NAV has not moved since
    assert (usd(n, n.trader) - before) / USD6 == pytest.approx(f.qty * f.price - f.fee, abs=1e-6)
    (w,) = [e for e in v.events if e.kind == "product_fee_estimated"]  # type: ignore[attr-defined]
    assert "the state of past blocks is not available (missing trie node 5f2e1c" in w.message
    assert [t.step for t in v.ledger.txs(client_id=sell.client_id)] == ["request", "claim"]  # claimed once
    v.close()


def test_an_old_paper_journal_gains_the_parts_of_its_requests(tmp_path: Path) -> None:
    import sqlite3

    from connectors.evm.venue import PaperJournal

    con = sqlite3.connect(tmp_path / "j.sqlite")  # a journal from before partial fulfilment, one request open
    con.execute("CREATE TABLE paper_request (client_id TEXT PRIMARY KEY, asset TEXT NOT NULL, side TEXT NOT NULL, "
                "qty REAL NOT NULL, usd REAL NOT NULL, nav REAL NOT NULL, gas REAL NOT NULL, settle_at TEXT NOT NULL, "
                "decision_price REAL NOT NULL)")  # fmt: skip
    con.execute("INSERT INTO paper_request VALUES ('c1', 'HYB', 'sell', 5, 0, 10, 0.1, '2026-03-03T00:00:00', 10)")
    con.commit()
    con.close()
    j = PaperJournal(tmp_path / "j.sqlite", 100.0)
    assert j.requests() == [("c1", "HYB", "sell", 5.0, 0.0, 10.0, 0.1, "2026-03-03T00:00:00", 10.0, 1)]
    assert j.parts("c1") == []
    j.close()


# -- revert decoding --------------------------------------------------------------------------------------


def test_reverts_are_decoded_from_every_abi_the_venue_knows(tmp_path: Path, novel: Novel, url: str) -> None:
    n = novel
    std = RevertDecoder(standard_errors())  # OpenZeppelin 5's errors alone, with their argument names

    def revert(fn: Any, sender: str) -> ContractLogicError:
        with pytest.raises(ContractLogicError) as exc:
            fn.call({"from": sender})
        return exc.value

    e = revert(n.hybrid.functions.redeem(5 * SHARE18, n.trader, n.trader), n.trader)
    assert std.from_exception(e) == f"ERC4626ExceededMaxRedeem(owner={n.trader}, shares={5 * SHARE18}, max=0)"
    e = revert(n.usd.functions.transfer(n.owner, 10**15), n.trader)
    assert std.from_exception(e) == (f"ERC20InsufficientBalance(sender={n.trader}, "
                                     f"balance={usd(n, n.trader)}, needed={10**15})")  # fmt: skip
    e = revert(n.fee_fund.functions.setFees(1, 1), n.trader)
    assert std.from_exception(e) == f"OwnableUnauthorizedAccount(account={n.trader})"
    # the fund's own error: unknown without its ABI (the message says what to configure), decoded with it
    preview = revert(n.hybrid.functions.previewRedeem(SHARE18), n.trader)
    bare = make_venue(tmp_path / "bare", n, url, {"HYB": {"kind": "vault", "address": n.hybrid.address}})
    assert "unknown error data 0xbf29f848" in bare.decoder.from_exception(preview)
    assert "give the contract's ABI file as `abi`" in bare.decoder.from_exception(preview)
    bare.close()
    abis = n.write_abis(tmp_path / "abis")
    v = make_venue(tmp_path, n, url, venue_assets(n, abis), errors=["FeeTooHigh(uint256 bps, uint256 maxBps)"])
    assert v.decoder.from_exception(preview) == "AsyncRedeemOnly()"
    e = revert(n.fee_fund.functions.setFees(900, 1), n.owner)
    assert v.decoder.from_exception(e) == "FeeTooHigh(bps=900, maxBps=500)"
    sig = RevertDecoder({"x": [error_abi("AsyncRedeemOnly()")]})
    assert sig.from_exception(preview) == "AsyncRedeemOnly()"
    # a trade the fund refuses with its own error with arguments: decoded at the free estimate, nothing sent
    held = n.fee_fund.functions.totalAssets().call()
    send(n.w3, n.fee_fund.functions.setDepositCap(held + 100 * USD6), n.owner)
    nonce = n.w3.eth.get_transaction_count(n.trader)
    with pytest.raises(VenueError, match=r"deposit of FEE would revert: CapExceeded\(cap=\d+, wouldHold=\d+\)"):
        v.place_order(order("FEE", "buy", 1000.0, n.nav(n.fee_fund)))
    assert n.w3.eth.get_transaction_count(n.trader) == nonce + 1  # only the exact approval went out
    v.close()


# -- data: every source, decimals from the chain, errors that name the contract and the call -----------------


def source(n: Novel, url: str, **assets: Any) -> EvmDataSource:
    opts = {"rpc_url": url, "chain_id": 31337, "assets": {**data_assets(n), **assets}}
    ctx = ComponentContext(SimulatedClock(NOW1, 0.0), Path("/nonexistent"), tuple(opts["assets"]), lambda e: None)
    return EvmDataSource(EvmDataConfig.model_validate(opts), ctx)


def test_price_and_volume_sources_of_every_kind(tmp_path: Path, novel: Novel, url: str) -> None:
    n = novel
    oracle = {"call": "getPriceData()", "outputs": ["uint256", "uint256"], "index": 0, "decimals": 18}
    xauf = {"source": "feed", "address": n.feed.address, "pair": n.pair.address, "token": n.gold.address}
    hybo = {"source": "oracle", "address": n.oracle.address, "oracle": oracle, "token": n.hybrid.address}
    ds = source(n, url, XAUF=xauf, HYBO=hybo)
    names = ["FEE", "HYB", "XAU8", "XAUF", "HYBO"]
    bars = ds.bars(names, NOW1, 24)
    w3 = n.w3
    close_ts = int(bars.times[-1].timestamp())
    block = max(b for b in range(w3.eth.block_number + 1) if w3.eth.get_block(b)["timestamp"] <= close_ts)
    prev = max(b for b in range(block + 1) if w3.eth.get_block(b)["timestamp"] <= close_ts - 3600)
    at = {"block_identifier": block}
    r0, r1, _ = n.pair.functions.getReserves().call(**at)
    rg, ru = (r0, r1) if n.pair.functions.token0().call() == n.gold.address else (r1, r0)
    want = [n.fee_fund.functions.convertToAssets(10**6).call(**at) / USD6,  # 6-decimal shares
            n.hybrid.functions.convertToAssets(SHARE18).call(**at) / USD6,
            (ru / USD6) / (rg / GOLD8),  # 8-decimal gold against a 6-decimal dollar
            n.feed.functions.latestRoundData().call(**at)[1] / 1e8,
            n.oracle.functions.getPriceData().call(**at)[0] / 1e18]  # fmt: skip
    assert bars.close[-1].tolist() == pytest.approx(want, rel=1e-12)
    assert 2000 < bars.close[-1, 2] < 3500 and 0.9 < bars.close[-1, 0] < 1.2  # not off by powers of ten
    swaps = n.pair.events.Swap.get_logs(from_block=prev + 1, to_block=block)
    k = "0" if n.pair.functions.token0().call() == n.gold.address else "1"
    gold_units = sum(abs(s["args"][f"amount{k}In"] - s["args"][f"amount{k}Out"]) for s in swaps) / GOLD8
    assert bars.volume[-1, 2] == pytest.approx(gold_units) and bars.volume[-1, 3] == pytest.approx(gold_units)
    fee_shares = sum(lg["args"]["shares"] for ev in (n.fee_fund.events.Deposit, n.fee_fund.events.Withdraw)
                     for lg in ev.get_logs(from_block=prev + 1, to_block=block)) / 10**6  # fmt: skip
    assert bars.volume[-1, 0] == pytest.approx(fee_shares) and fee_shares > 0
    minted = sum(lg["args"]["value"] for lg in n.hybrid.events.Transfer.get_logs(from_block=prev + 1, to_block=block)
                 if "0x" + "0" * 40 in (lg["args"]["from"], lg["args"]["to"])) / SHARE18  # fmt: skip
    assert bars.volume[-1, 4] == pytest.approx(minted) and minted > 0  # the issuer's mints and burns


def test_bad_sources_name_the_contract_and_the_call(novel: Novel, url: str) -> None:
    n = novel
    cases = [
        # a Uniswap V2 pair configured as the project's pool: it has no base()
        (
            {"source": "pool", "address": n.gold.address, "pool": n.pair.address},
            rf"{n.pair.address}\.base\(\) .*for a Uniswap V2 pair use source = 'univ2'",
        ),
        (
            {"source": "vault", "address": n.fee_fund.address, "decimals": 18},
            rf"vault {n.fee_fund.address}'s shares has 6 decimals, the config says 18",
        ),
        (
            {"source": "univ2", "address": n.hybrid.address, "pair": n.pair.address},
            rf"pair {n.pair.address} holds .* not the token {n.hybrid.address}",
        ),
        (
            {"source": "vault", "address": n.trader},  # no contract there
            rf"{n.trader}\.decimals\(\) returned no valid answer",
        ),
        (
            {"source": "feed", "address": n.hybrid.address},  # not a feed: its latestRoundData does not exist
            rf"{n.hybrid.address}\.latestRoundData\(\)",
        ),
    ]
    for cfg, why in cases:
        with pytest.raises(DataError, match=why):
            source(n, url, BAD=cfg).bars(["BAD"], NOW1, 3)
    # an issuer oracle that reverts with its own error: decoded with its signature
    oracle = {"call": "getPriceData()", "outputs": ["uint256", "uint256"], "decimals": 18}
    updated = n.oracle.functions.getPriceData().call()[1]
    n.w3.provider.make_request("evm_setNextBlockTimestamp", [updated + 600])  # type: ignore[arg-type]
    send(n.w3, n.oracle.functions.setMaxAge(0), n.owner)  # ten minutes later, and nothing may be older than 0 s
    ds = source(n, url, O={"source": "oracle", "address": n.oracle.address, "oracle": oracle,
                           "errors": ["StalePrice(uint256 updatedAt, uint256 maxAge)"]})  # fmt: skip
    with pytest.raises(DataError, match=rf"O: {n.oracle.address}\.getPriceData\(\) at block \d+ reverted: "
                                        r"StalePrice\(updatedAt=\d+, maxAge=0\)"):  # fmt: skip
        ds.latest(["O"], NOW1)
    with pytest.raises(ValueError, match="source 'univ2' needs pair"):
        EvmDataConfig.model_validate({"rpc_url": url, "chain_id": 31337,
                                      "assets": {"X": {"source": "univ2", "address": n.gold.address}}})  # fmt: skip
    typo = {"source": "vault", "address": n.gold.address, "typo": 1}
    with pytest.raises(ValueError, match="extra"):
        EvmDataConfig.model_validate({"rpc_url": url, "chain_id": 31337, "assets": {"X": typo}})


# -- the daemon, from a config file, live and paper ----------------------------------------------------------


def write_config(path: Path, n: Novel, url: str, mode: str, upper: float, abis: dict[str, str]) -> Path:
    venue = venue_opts(n, url, venue_assets(n, abis))
    if mode == "paper":  # the fund's fee at fulfilment from its terms; fulfilled in two parts, an hour apart
        venue.update(paper=True, account=n.trader, key_env=None, paper_cash=1_000_000.0,
                     paper_async_settlement_hours=2.0, paper_async_parts=2)  # fmt: skip
        venue["assets"]["HYB"]["paper_fulfilment_fee_bps"] = HYBRID_FULFIL_BPS
    lines = [
        "[bot]", 'name = "novel"', f'mode = "{mode}"', f'ledger = "{path.parent / "ledger.sqlite"}"', 'quote = "USD"',
        "[clock]", 'kind = "simulated"', f"start = {_toml(NOW1)}", "speed = 0.0",
        "[risk]", "history_hours = 24", "participation = 0.5", "liquidity_lookback_hours = 12",
        "[strategy]", 'plugin = "risk_parity"', "options = { half_life_hours = 72.0, band = 0.02 }",
        "[data]", 'plugin = "evm"', f"options = {_toml({'rpc_url': url, 'chain_id': 31337, 'assets': data_assets(n)})}",
        "[venues.chain]", 'plugin = "evm"', f"options = {_toml(venue)}",
    ]  # fmt: skip
    for a in ("FEE", "HYB", "XAU8"):
        lines += [f"[assets.{a}]", 'venue = "chain"', f"upper = {upper}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def next_hour(n: Novel, clock: SimulatedClock, t: datetime) -> datetime:
    t = t + timedelta(hours=1)
    n.w3.provider.make_request("evm_mine", [int(t.timestamp()) - 240])  # the chain's clock goes along
    clock.advance_to(t)
    return t


def engine(path: Path, clock: SimulatedClock) -> Engine:
    return Engine(load_config(path), clock=clock)


def run_book(tmp_path: Path, n: Novel, url: str, mode: str) -> dict[str, Any]:
    """Buy the three (upper 0.3), then sell them down (upper 0.001): FEE redeems at once with its exit fee,
    HYB's redemption is a request the manager fulfils in two parts (paper: the venue's two parts), each
    less its fee at fulfilment, the asset held until the whole request settles; XAU8 swaps back."""
    abis = n.write_abis(tmp_path / "abis")
    clock = SimulatedClock(NOW1, 0.0)
    buy_cfg = write_config(tmp_path / "buy.toml", n, url, mode, 0.3, abis)
    e = engine(buy_cfg, clock)
    r = e.run_cycle(NOW1)
    assert r.status == "done", r.message
    bought = {o.asset: o for o in e.ledger.all_orders()}
    assert {a: (o.side, o.status) for a, o in bought.items()} == {
        "FEE": ("buy", "filled"), "HYB": ("buy", "filled"), "XAU8": ("buy", "filled")}, [
        (o.asset, o.status, o.message) for o in bought.values()]  # fmt: skip
    e.close()
    t = next_hour(n, clock, NOW1)
    e = engine(write_config(tmp_path / "sell.toml", n, url, mode, 0.001, abis), clock)  # the caps are cut
    r = e.run_cycle(t)
    assert r.status == "done", r.message
    sells = {o.asset: o for o in e.ledger.all_orders() if o.side == "sell"}
    assert set(sells) == {"FEE", "HYB", "XAU8"}
    assert sells["FEE"].status == "filled" and sells["XAU8"].status == "filled" and sells["HYB"].status == "open"
    hyb = sells["HYB"].client_id
    fulfil: list[Any] = []  # the manager's fulfilment receipts (live): its fee at fulfilment is paid there
    if mode == "live":
        rid = int(e.ledger.get_async_request(hyb).request_id)  # type: ignore[union-attr,arg-type]
        assert rid == 2
        pending = n.hybrid.functions.pendingRedeemRequest(rid, n.trader).call()
        fulfil.append(send(n.w3, n.hybrid.functions.fulfillRedeem(rid, pending // 3), n.owner))
    t = next_hour(n, clock, t)
    r = e.run_cycle(t)  # claims what was fulfilled (paper: the first of two parts); the rest stays in flight
    assert r.status == "done", r.message
    o = next(o for o in e.ledger.all_orders() if o.client_id == hyb)
    assert o.status == "open" and 0 < o.filled_qty < sells["HYB"].qty
    assert len([f for f in e.ledger.fills() if f.client_id == hyb]) == 1
    assert [x.side for x in e.ledger.all_orders() if x.asset == "HYB"] == ["buy", "sell"]  # held: nothing new
    if mode == "live":
        fulfil.append(send(n.w3, n.hybrid.functions.fulfillRedeem(rid, n.hybrid.functions.pendingRedeemRequest(
            rid, n.trader).call()), n.owner))  # fmt: skip
    t = next_hour(n, clock, t)
    r = e.run_cycle(t)
    assert r.status == "done", r.message
    o = next(o for o in e.ledger.all_orders() if o.client_id == hyb)
    assert o.status == "filled" and o.filled_qty == pytest.approx(sells["HYB"].qty, rel=1e-9)
    assert len([f for f in e.ledger.fills() if f.client_id == hyb]) == 2
    out = {"fills": e.ledger.fills(), "costs": e.ledger.cost_totals(), "txs": e.ledger.txs(), "hyb": hyb,
           "fulfil": fulfil, "orders": e.ledger.all_orders(), "config": tmp_path / "sell.toml"}  # fmt: skip
    e.close()
    return out


@pytest.mark.parametrize("mode", ["live", "paper"])
def test_the_daemon_trades_funds_it_has_never_seen_from_a_config_file(
    tmp_path: Path, novel: Novel, url: str, mode: str
) -> None:
    n = novel
    fees0, cash0 = usd(n, n.recipient), usd(n, n.trader)
    nonce0, head0 = n.w3.eth.get_transaction_count(n.trader), n.w3.eth.block_number
    got = run_book(tmp_path, n, url, mode)
    fills, costs = got["fills"], got["costs"]
    by = {(f.asset, f.side): [x for x in fills if (x.asset, x.side) == (f.asset, f.side)] for f in fills}
    claims = sorted(by[("HYB", "sell")], key=lambda f: f.time)  # the async redemption, claimed in two parts
    assert len(claims) == 2
    vault_fills = by[("FEE", "buy")] + by[("FEE", "sell")] + by[("HYB", "buy")] + claims
    assert all(f.product_fee is not None and f.product_fee > 0 for f in vault_fills)
    assert all(f.product_fee == pytest.approx(f.fee, abs=1e-12) for f in vault_fills)  # the funds' only fee
    assert all(f.product_fee is None for f in by[("XAU8", "buy")] + by[("XAU8", "sell")])  # a swap fee is not
    assert costs["product_fees"] == pytest.approx(sum(f.product_fee for f in vault_fills), abs=1e-9)
    if mode == "live":
        # the fees the ledger books are what the fee recipient received on chain, fill by fill
        received = (usd(n, n.recipient) - fees0) / USD6
        assert costs["product_fees"] == pytest.approx(received, abs=1e-6)
        assert received > 0
        for f, receipt in zip(claims, got["fulfil"], strict=True):  # each claim's fee: its fulfilment's
            assert f.product_fee == pytest.approx(fee_paid(n, receipt) / USD6, abs=1e-6)
        for f in by[("FEE", "buy")] + by[("FEE", "sell")] + by[("HYB", "buy")]:
            tx = next(t for t in got["txs"] if f"tx:{t.tx_hash}" == f.fill_id)
            receipt = n.w3.eth.get_transaction_receipt(tx.tx_hash)
            paid = sum(int(lg["data"].hex(), 16) for lg in receipt["logs"] if lg["address"] == n.usd.address
                       and lg["topics"][2].hex()[-40:] == n.recipient[2:].lower())  # fmt: skip
            assert f.product_fee == pytest.approx(paid / USD6, abs=1e-6), (f.asset, f.side)
        # the Uniswap V2 fee: 0.3 % of what went in, valued at the swap's own rate
        for f in by[("XAU8", "buy")] + by[("XAU8", "sell")]:
            tx = next(t for t in got["txs"] if f"tx:{t.tx_hash}" == f.fill_id)
            (sw,) = n.pair.events.Swap().process_receipt(n.w3.eth.get_transaction_receipt(tx.tx_hash), errors=DISCARD)
            a = sw["args"]
            usd_is0 = n.pair.functions.token0().call() == n.usd.address
            u_in, u_out = (a.amount0In, a.amount0Out) if usd_is0 else (a.amount1In, a.amount1Out)
            onchain = u_in * 0.003 / USD6 if f.side == "buy" else u_out * 0.003 / 0.997 / USD6
            assert f.fee == pytest.approx(onchain, abs=1e-6)
        # the chain and the ledger agree on every unit of cash
        flow = sum(-(f.qty * f.price + f.fee) if f.side == "buy" else f.qty * f.price - f.fee for f in fills)
        assert usd(n, n.trader) == pytest.approx(cash0 + flow * USD6, abs=10)
        for c, unit, name in ((n.fee_fund, 10**6, "FEE"), (n.hybrid, SHARE18, "HYB"), (n.gold, GOLD8, "XAU8")):
            moved = sum(f.qty * (1 if f.side == "buy" else -1) for f in fills if f.asset == name)
            held = c.functions.balanceOf(n.trader).call() / unit
            assert held == pytest.approx(moved, rel=1e-12, abs=1.5 / unit), name
        assert len({t.nonce for t in got["txs"]}) == n.w3.eth.get_transaction_count(n.trader) - nonce0
    else:
        assert n.w3.eth.get_transaction_count(n.trader) == nonce0 and not got["txs"]  # nothing signed
        assert usd(n, n.recipient) == fees0
        # each simulated fee is the fund's own formula on the simulated amounts
        for f in by[("FEE", "buy")] + by[("HYB", "buy")]:
            bps = 10 if f.asset == "FEE" else HYBRID_ENTRY_BPS
            paid = round((f.qty * f.price + f.fee) * USD6)
            assert f.product_fee == pytest.approx(fee_on_total(paid, bps) / USD6, abs=1e-6)
        for f in by[("FEE", "sell")]:
            gross = round((f.qty * f.price) * USD6)
            assert f.product_fee == pytest.approx(fee_on_total(gross, EXIT_BPS) / USD6, abs=1e-6)
        for f in claims:  # two equal parts, each less the fund's fee at fulfilment, at the NAV of its hour
            assert f.qty == pytest.approx(claims[0].qty, rel=1e-12) and f.fee == f.product_fee
            assert f.product_fee == pytest.approx(f.qty * f.price * HYBRID_FULFIL_BPS / (1e4 + HYBRID_FULFIL_BPS))
    assert n.w3.eth.block_number > head0
    # `rwabot status` shows the funds' fees as a cost kind of their own
    assert 0 < costs["product_fees"] < costs["fees"]
    from typer.testing import CliRunner

    from bot.cli import app

    res = CliRunner().invoke(app, ["status", "--config", str(got["config"])])
    assert res.exit_code == 0, res.output
    assert f"of the fees, charged by funds and issuers: {costs['product_fees']:,.2f}" in res.output


def test_an_old_ledger_gains_the_product_fee_column(tmp_path: Path) -> None:
    import sqlite3

    from bot.ledger import SCHEMA_VERSION

    led = Ledger(tmp_path / "l.sqlite")
    led.close()
    con = sqlite3.connect(tmp_path / "l.sqlite")  # a version-5 ledger: no fill.product_fee yet
    con.execute("ALTER TABLE fill DROP COLUMN product_fee")
    con.execute("UPDATE meta SET value='5' WHERE key='schema_version'")
    con.commit()
    con.close()
    led = Ledger(tmp_path / "l.sqlite")
    assert led.cost_totals()["product_fees"] == 0.0
    led.close()
    con = sqlite3.connect(tmp_path / "l.sqlite")
    assert "product_fee" in {r[1] for r in con.execute("PRAGMA table_info(fill)")}
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()


def test_abi_json_is_the_compiled_contracts_and_openzeppelins_errors() -> None:
    from connectors.evm.build import ABI_FILE, STANDARD_ERRORS, abi_document

    assert ABI_FILE.read_text() == abi_document(compile_contracts())  # regenerate: python -m connectors.evm.build
    names = {e["name"] for e in standard_errors()[STANDARD_ERRORS]}
    assert {"ERC4626ExceededMaxRedeem", "ERC20InsufficientBalance", "SafeERC20FailedOperation"} <= names
