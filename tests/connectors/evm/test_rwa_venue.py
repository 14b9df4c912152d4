"""The evm venue on real tokenized-RWA patterns (issue 9): an issuer's mint/redeem manager described
by its signatures (fees, minimums, rate limits, liquidity read before each leg), a fee-on-transfer
gold token through Uniswap V2's Router02, a rebasing token with few decimals, and the choice of the
cheapest route for a size. Every test checks the wallet's balances against the fills to the unit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.cycle import client_order_id
from bot.domain import Order, OrderStatus
from bot.errors import InvalidOrder
from connectors.evm.chain import RevertDecoder
from connectors.evm.deploy import SHARE, USD, World, send
from connectors.evm.node import AnvilNode
from connectors.evm.rwa_book import IssuerFund, deploy_fot_gold, deploy_issuer_fund, deploy_rebasing, rebase, units
from connectors.evm.univ2 import UniswapV2, create_pool, deploy_uniswap
from tests.connectors.evm.test_venue_contract import make_venue

KEY = "2026-01-02T05:00Z"


def order(asset: str, side: str, qty: float, price: float, n: int = 0) -> Order:
    return Order(client_order_id(KEY, asset, n), KEY, "chain", asset, side, qty, price)  # type: ignore[arg-type]


def manager_asset(fund: IssuerFund, **kw: Any) -> dict[str, Any]:
    return {"kind": "manager", "address": fund.token.address, "permissioned": True,
            "manager": {"address": fund.manager.address}, **kw}  # fmt: skip


def flow(fills: Any) -> float:
    """Cash the fills moved: a buy pays qty·price + fee, a sell brings qty·price − fee."""
    return sum(-(f.qty * f.price + f.fee) if f.side == "buy" else f.qty * f.price - f.fee for f in fills)


class Wallet:
    """The trader's balances before, to compare with the fills after."""

    def __init__(self, world: World, token: Any, decimals: int = 18) -> None:
        self.world, self.token, self.unit = world, token, 10**decimals
        self.stable0, self.held0 = self.stable(), self.held()
        self.nonce0 = world.w3.eth.get_transaction_count(world.trader)

    def stable(self) -> float:
        return self.world.stable.functions.balanceOf(self.world.trader).call() / USD

    def held(self) -> float:
        return self.token.functions.balanceOf(self.world.trader).call() / self.unit

    def agrees(self, fills: list[Any]) -> None:
        cash = flow(fills)
        units_ = sum(f.qty * (1 if f.side == "buy" else -1) for f in fills)
        assert self.stable() == pytest.approx(self.stable0 + cash, abs=2e-6)
        assert self.held() == pytest.approx(self.held0 + units_, abs=max(1.5 / self.unit, 1e-12 * abs(units_)))

    def sent(self) -> int:
        return self.world.w3.eth.get_transaction_count(self.world.trader) - self.nonce0


# -- issuer manager ------------------------------------------------------------------------------------------


def test_a_manager_fund_is_subscribed_and_redeemed_with_its_fees(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    fund = deploy_issuer_fund(world, "OUSG", 110.0, mint_fee_bps=10, redeem_fee_bps=5, minimum_subscription_usd=1_000)
    v = make_venue(tmp_path, world, anvil.url, assets={"OUSG": manager_asset(fund)})
    w = Wallet(world, fund.token)
    q = v.quote("OUSG")
    assert q.bid == pytest.approx(110.0 * (1 - 5e-4), rel=1e-6) and q.ask == pytest.approx(110.0 / (1 - 1e-3), rel=1e-6)
    assert v.market("OUSG").taker_fee == pytest.approx(1e-3)
    buy = v.place_order(order("OUSG", "buy", 1000.0, 110.0))
    assert buy.status is OrderStatus.FILLED
    (f,) = buy.fills
    assert f.qty == pytest.approx(1000.0, rel=1e-8) and f.qty >= 1000.0 - 1e-12  # never fewer than asked
    assert f.fee == pytest.approx(f.qty * 110.0 * 1e-3 / (1 - 1e-3), rel=1e-5)  # 10 bps of the USD paid in
    assert f.price == pytest.approx(110.0, rel=1e-6)
    sell = v.place_order(order("OUSG", "sell", 400.0, 110.0, 1))
    (g,) = sell.fills
    assert g.qty == pytest.approx(400.0) and g.fee == pytest.approx(400 * 110.0 * 5e-4, rel=1e-4)
    w.agrees([f, g])
    assert w.sent() == 3  # approve, subscribe, redeem (burnt by the manager: no approval)
    v.close()


def test_a_redemption_larger_than_the_managers_stablecoin_is_cut_never_reverted(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    fund = deploy_issuer_fund(world, "USTB", 10.0, liquidity_usd=2_000_000)
    v = make_venue(tmp_path, world, anvil.url, assets={"USTB": manager_asset(fund)})
    assert v.place_order(order("USTB", "buy", 50_000.0, 10.0)).status is OrderStatus.FILLED
    # the fund deploys its cash: 120k left against the 500k the trader holds
    left = world.stable.functions.balanceOf(fund.manager.address).call()
    send(world.w3, fund.manager.functions.withdrawLiquidity(world.owner, left - 120_000 * USD), world.owner)
    w = Wallet(world, fund.token)
    st = v.place_order(order("USTB", "sell", 50_000.0, 10.0, 1))
    (f,) = st.fills
    assert f.qty * f.price == pytest.approx(120_000, rel=1e-6) and f.qty < 12_000.01
    assert any(e.kind == "manager_limit" and "liquidity 120000.00" in e.message for e in v.events)
    w.agrees([f])
    # nothing left to pay out: refused before anything is signed
    w2 = Wallet(world, fund.token)
    with pytest.raises(InvalidOrder, match="can pay out 0.00 now"):
        v.place_order(order("USTB", "sell", 1000.0, 10.0, 2))
    assert w2.sent() == 0
    v.close()


def test_minimums_rate_limits_and_eligibility_are_read_before_signing(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    fund = deploy_issuer_fund(world, "BUIDL", 1.0, minimum_subscription_usd=250_000, subscription_limit_usd=400_000)
    v = make_venue(tmp_path, world, anvil.url, assets={"BUIDL": manager_asset(fund)})
    w = Wallet(world, fund.token)
    with pytest.raises(InvalidOrder, match="below the manager's minimum subscription of 250000.00"):
        v.place_order(order("BUIDL", "buy", 100_000.0, 1.0))
    assert w.sent() == 0
    st = v.place_order(order("BUIDL", "buy", 600_000.0, 1.0, 1))  # over the window's limit: cut to it
    assert st.filled_qty == pytest.approx(400_000.0, rel=1e-6)
    assert any(e.kind == "manager_limit" and "remaining limit 400000.00" in e.message for e in v.events)
    with pytest.raises(InvalidOrder, match="subscription limit leaves 0.00"):
        v.place_order(order("BUIDL", "buy", 300_000.0, 1.0, 2))
    send(world.w3, fund.token.functions.setVerified(world.trader, False), world.owner)
    n = w.sent()
    with pytest.raises(InvalidOrder, match="not eligible: wallet"):
        v.place_order(order("BUIDL", "sell", 1_000.0, 1.0, 3))
    assert w.sent() == n  # no revert paid in gas
    v.close()


# -- fee-on-transfer gold on Uniswap V2 ------------------------------------------------------------------------


@pytest.fixture
def uni(world: World) -> UniswapV2:
    return deploy_uniswap(world.w3, world.owner)


def univ2_asset(token: Any, pair: Any, uni: UniswapV2, **kw: Any) -> dict[str, Any]:
    return {"kind": "univ2", "address": token.address,
            "univ2": {"router": uni.router.address, "pair": pair.address, **kw}}  # fmt: skip


def test_fee_on_transfer_gold_trades_net_of_its_fee(tmp_path: Path, world: World, anvil: AnvilNode, uni) -> None:
    gold = deploy_fot_gold(world, uni, "PAXG", 2000.0, 4_000_000.0, fee_bps=2)
    v = make_venue(tmp_path, world, anvil.url,
                   assets={"PAXG": univ2_asset(gold.token, gold.pair, uni, transfer_fee_view="getFeeFor(uint256)")})
    w = Wallet(world, gold.token)
    assert v.market("PAXG").taker_fee == pytest.approx(0.0032)
    fee_recipient = gold.token.functions.feeRecipient().call()
    kept0 = gold.token.functions.balanceOf(fee_recipient).call()
    buy = v.place_order(order("PAXG", "buy", 10.0, 2000.0))
    (f,) = buy.fills
    assert f.qty >= 10.0 - 1e-12 and f.qty == pytest.approx(10.0, rel=1e-9)  # net of the fee, as asked
    kept = (gold.token.functions.balanceOf(fee_recipient).call() - kept0) / SHARE
    assert kept == pytest.approx(f.qty * 2 / (1e4 - 2), rel=1e-6)  # the token's 2 bps, on the gross
    # the cost ledger carries the pool's 30 bps and the transfer fee, valued at the trade's price
    assert f.fee == pytest.approx(f.qty * f.price * (0.003 / 0.997 + 2e-4 / 0.9998), rel=2e-3)
    sell = v.place_order(order("PAXG", "sell", 5.0, 2000.0, 1))
    (g,) = sell.fills
    assert g.qty == pytest.approx(5.0)
    assert g.fee == pytest.approx(g.qty * g.price * (0.003 + 2e-4), rel=2e-3)
    w.agrees([f, g])
    v.close()


def test_a_paper_fill_of_the_fee_on_transfer_swap_is_its_eth_call(
    tmp_path: Path, world: World, anvil: AnvilNode, uni
) -> None:
    gold = deploy_fot_gold(world, uni, "PAXG", 2000.0, 4_000_000.0, fee_bps=2)
    asset = univ2_asset(gold.token, gold.pair, uni, transfer_fee_view="getFeeFor(uint256)")
    v = make_venue(tmp_path, world, anvil.url, assets={"PAXG": asset}, paper=True, account=world.trader, key_env=None)
    n = world.w3.eth.get_transaction_count(world.trader)
    st = v.place_order(order("PAXG", "buy", 10.0, 2000.0))
    assert st.status is OrderStatus.FILLED and st.fills[0].qty == pytest.approx(10.0)
    assert st.fills[0].fee > 10 * 2000 * 0.0031 and st.fills[0].gas > 0
    # a buy that would not deliver its minimum (slippage 0 on a size the quote understates) reverts in the call
    assert world.w3.eth.get_transaction_count(world.trader) == n  # nothing signed or sent
    v.close()


# -- rebasing tokens, few decimals ---------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [0, 6])
def test_a_rebasing_token_with_few_decimals(tmp_path: Path, world: World, anvil: AnvilNode, uni, decimals) -> None:
    token = deploy_rebasing(world, "USDM", decimals, market_amount=0)
    send(world.w3, token.functions.mint(world.owner, units(2_000_000, decimals)), world.owner)
    pair = create_pool(uni, token, world.stable, units(1_000_000, decimals), 1_000_000 * USD, world.owner)
    step = 10.0**-decimals
    v = make_venue(tmp_path, world, anvil.url, assets={
        "USDM": {**univ2_asset(token, pair, uni), "decimals": decimals, "qty_step": step}})  # fmt: skip
    w = Wallet(world, token, decimals)
    buy = v.place_order(order("USDM", "buy", 1000.0, 1.0))
    assert buy.filled_qty == 1000.0
    rebase(world, token, 1.01)  # a month of yield
    bal = v.balances()
    held = bal.positions["USDM"]
    assert held == pytest.approx(1010.0, abs=step)  # the balance is read, never derived from fills
    # ... as of the head block it was read at: what the staleness gate judges a balance's age by
    head = world.w3.eth.get_block("latest")["timestamp"]
    assert bal.time is not None and bal.time.timestamp() == head
    sell = v.place_order(order("USDM", "sell", held, 1.0, 1))
    assert sell.filled_qty == pytest.approx(held)
    assert v.balances().positions.get("USDM", 0.0) <= step
    assert w.stable() == pytest.approx(w.stable0 + flow((*buy.fills, *sell.fills)), abs=2e-6)
    v.close()


# -- route choice -------------------------------------------------------------------------------------------------


def test_the_cheapest_route_for_the_size_is_taken(tmp_path: Path, world: World, anvil: AnvilNode, uni) -> None:
    """A fund with a 50 bps mint fee whose token also trades on a 30 bps pool of 400k depth: the pool
    wins small orders, the manager large ones (price impact), and a settlement delay is priced in."""
    fund = deploy_issuer_fund(world, "OUSG", 100.0, mint_fee_bps=50, redeem_fee_bps=50)
    pair_at = uni.pair_address(fund.token.address, world.stable.address)
    send(world.w3, fund.token.functions.setVerified(pair_at, True), world.owner)
    send(world.w3, fund.token.functions.mint(world.owner, units(4_000, 18)), world.owner)
    pair = create_pool(uni, fund.token, world.stable, units(4_000, 18), 400_000 * USD, world.owner)
    asset = manager_asset(fund, routes=[{"kind": "univ2", "univ2": {"router": uni.router.address,
                                                                     "pair": pair.address}}])  # fmt: skip
    v = make_venue(tmp_path, world, anvil.url, assets={"OUSG": asset})
    w = Wallet(world, fund.token)

    def took(st: Any) -> str:
        rx = world.w3.eth.get_transaction_receipt(st.venue_order_id)
        return {fund.manager.address: "manager", uni.router.address: "univ2"}[rx["to"]]

    small = v.place_order(order("OUSG", "buy", 2.0, 100.0))  # pool: 30 bps + 0.05 % impact < 50 bps
    mid = v.place_order(order("OUSG", "buy", 10.0, 100.0, 1))  # pool: 30 bps + 0.25 % impact > 50 bps
    large = v.place_order(order("OUSG", "buy", 1_000.0, 100.0, 2))
    assert (took(small), took(mid), took(large)) == ("univ2", "manager", "manager")
    choices = [e for e in v.events if e.kind == "route_choice"]
    assert [e.data["route"] for e in choices] == ["univ2", "manager", "manager"]
    w.agrees([*small.fills, *mid.fills, *large.fills])
    v.close()
    # a manager that settles in two days pays for the wait (48 h at 50 bps a day): the pool takes the mid size
    slow = manager_asset(fund, settlement_hours=48.0, routes=asset["routes"])
    v2 = make_venue(tmp_path / "b", world, anvil.url, assets={"OUSG": slow}, carry_bps_per_day=50.0)
    assert took(v2.place_order(order("OUSG", "buy", 10.0, 100.0, 3))) == "univ2"
    v2.close()


def test_old_compiler_revert_strings_are_decoded() -> None:
    msg = b"UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"
    body = (32).to_bytes(32, "big") + len(msg).to_bytes(32, "big") + msg + b"\x80" + b"\0" * (64 - len(msg) - 1)
    assert RevertDecoder({}).decode("0x08c379a0" + body.hex()) == f"reverted: {msg.decode()}"
