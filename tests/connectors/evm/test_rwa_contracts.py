"""The issuer-manager fund, the fee-on-transfer gold token on a real Uniswap V2 and the rebasing token
(issue 9) against anvil: every amount in closed form, every failure as its custom error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from connectors.evm.build import compile_contracts
from connectors.evm.chain import RevertDecoder
from connectors.evm.deploy import MAX, SHARE, USD, World, send
from connectors.evm.rwa_book import (
    IssuerFund,
    deploy_fot_gold,
    deploy_issuer_fund,
    deploy_rebasing,
    rebase,
    set_issuer_nav,
    units,
)
from connectors.evm.univ2 import (
    DEADLINE,
    PAIR_INIT_CODE_HASH,
    RUNTIME_ABI_FILE,
    UniswapV2,
    create_pool,
    deploy_uniswap,
    pair_init_code_hash,
    runtime_abi_document,
    runtime_abis,
    uniswap_artifacts,
)

SCALE = 10**20  # shares (18) + feed (8) - stablecoin (6) decimals
BPS = 10_000
GAS: dict[str, int] = {}  # filled by the tests, printed by test_gas_report (run with -s to see it)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def reason(fn: Any, sender: str) -> str:
    """The decoded revert of calling ``fn`` from ``sender`` (it must revert)."""
    with pytest.raises(ContractLogicError) as exc:
        fn.call({"from": sender})
    data = exc.value.data
    if isinstance(data, str) and data.startswith(ERROR_STRING):
        return f"reverted: {error_string(data)}"
    return RevertDecoder({n: a.abi for n, a in compile_contracts().items()}).from_exception(exc.value)


ERROR_STRING = "0x08c379a0"


def error_string(data: str) -> str:
    """Error(string) read by its length, ignoring the padding: Uniswap V2's solc 0.5/0.6 leave a dirty
    byte after the string (the router's reverts end in 0x80), which a strict ABI decoder rejects."""
    raw = bytes.fromhex(data[2:])[4:]
    offset = int.from_bytes(raw[:32], "big")
    length = int.from_bytes(raw[offset : offset + 32], "big")
    return raw[offset + 32 : offset + 32 + length].decode()


def advance(world: World, seconds: int) -> None:
    world.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    world.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def nav_raw(fund: IssuerFund) -> int:
    return fund.feed.functions.latestRoundData().call()[1]


def stable_of(world: World, who: str) -> int:
    return world.stable.functions.balanceOf(who).call()


@pytest.fixture
def uni(world: World) -> UniswapV2:
    return deploy_uniswap(world.w3, world.owner)


# -- issuer manager ----------------------------------------------------------------------------------------


def test_subscribe_and_redeem_equal_previews_and_the_fee_closed_form(world: World) -> None:
    fund = deploy_issuer_fund(world, "OUSGX", 105.123456, mint_fee_bps=7, redeem_fee_bps=13)
    m, w3, trader, owner = fund.manager, world.w3, world.trader, world.owner
    assert (m.functions.mintFeeBps().call(), m.functions.redeemFeeBps().call()) == (7, 13)
    assert m.functions.feeRecipient().call() == owner
    send(w3, world.stable.functions.approve(m.address, MAX), trader)
    nav = nav_raw(fund)
    assert nav == 10_512_345_600

    usd_in = 12_345_678_901  # 12,345.678901 USD
    fee = ceil_div(usd_in * 7, BPS)
    shares = (usd_in - fee) * SCALE // nav
    assert m.functions.previewSubscribe(usd_in).call() == shares
    before = {who: stable_of(world, who) for who in (trader, owner, m.address)}
    receipt = send(w3, m.functions.subscribe(usd_in), trader)
    GAS["subscribe (holder's first, mint fee on, no limits)"] = receipt["gasUsed"]
    (ev,) = m.events.Subscribed().process_receipt(receipt, errors=DISCARD)
    assert dict(ev["args"]) == {"account": trader, "usdIn": usd_in, "fee": fee, "shares": shares}
    assert fund.token.functions.balanceOf(trader).call() == shares
    assert stable_of(world, trader) == before[trader] - usd_in
    assert stable_of(world, owner) == before[owner] + fee  # the fee goes to the recipient at once
    assert stable_of(world, m.address) == before[m.address] + usd_in - fee

    sell = shares // 3
    gross = sell * nav // SCALE
    rfee = ceil_div(gross * 13, BPS)
    assert m.functions.previewRedeem(sell).call() == gross - rfee
    before = {who: stable_of(world, who) for who in (trader, owner, m.address)}
    receipt = send(w3, m.functions.redeem(sell), trader)
    GAS["redeem (partial, redeem fee on, no limits)"] = receipt["gasUsed"]
    (ev,) = m.events.Redeemed().process_receipt(receipt, errors=DISCARD)
    assert dict(ev["args"]) == {"account": trader, "shares": sell, "fee": rfee, "usdOut": gross - rfee}
    assert stable_of(world, trader) == before[trader] + gross - rfee
    assert stable_of(world, owner) == before[owner] + rfee
    assert stable_of(world, m.address) == before[m.address] - gross
    assert fund.token.functions.balanceOf(trader).call() == shares - sell

    # a new NAV prices the next trade; a round trip never pays out more than went in
    set_issuer_nav(world, fund, 110.0)
    assert m.functions.previewRedeem(SHARE).call() == 110 * USD - ceil_div(110 * USD * 13, BPS)
    receipt = send(w3, m.functions.subscribe(1_000 * USD), trader)
    GAS["subscribe (again, mint fee on, no limits)"] = receipt["gasUsed"]
    got = m.events.Subscribed().process_receipt(receipt, errors=DISCARD)[0]["args"]["shares"]
    assert m.functions.previewRedeem(got).call() < 1_000 * USD
    receipt = send(w3, m.functions.redeem(fund.token.functions.balanceOf(trader).call()), trader)
    GAS["redeem (all the holder's shares, fee on, no limits)"] = receipt["gasUsed"]


def test_rounding_favours_the_fund(world: World) -> None:
    fund = deploy_issuer_fund(world, "ROUND", 3.0, mint_fee_bps=1, redeem_fee_bps=1)
    m = fund.manager
    # 1 unit of fee on 1 micro-dollar: the fee rounds up, so nothing is left to buy shares with
    assert m.functions.previewSubscribe(1).call() == 0
    assert reason(m.functions.subscribe(1), world.trader) == "ZeroAmount()"
    assert m.functions.previewSubscribe(2).call() == 10**20 // (3 * 10**8)  # (2 - 1) * SCALE // nav
    # a share worth 3 USD less a rounded-up 1 bp fee
    assert m.functions.previewRedeem(SHARE).call() == 3 * USD - 300
    assert m.functions.previewRedeem(SHARE + 1).call() == 3 * USD - 300  # dust of a share pays nothing


def test_minimums_rate_limits_eligibility_pause_and_stale_nav_are_custom_errors(world: World) -> None:
    fund = deploy_issuer_fund(
        world, "USTBX", 10.0, minimum_subscription_usd=1_000, minimum_redemption_usd=500,
        subscription_limit_usd=50_000, redemption_limit_usd=20_000, window_s=3_600,
    )  # fmt: skip
    m, w3, trader, owner = fund.manager, world.w3, world.trader, world.owner
    send(w3, world.stable.functions.approve(m.address, MAX), trader)
    assert m.functions.minimumSubscription().call() == 1_000 * USD
    assert m.functions.minimumRedemption().call() == 500 * USD
    assert m.functions.remainingSubscription().call() == 50_000 * USD
    assert m.functions.remainingRedemption().call() == 20_000 * USD

    assert reason(m.functions.subscribe(999_990_000), trader) == "BelowMinimum(amount=999990000, minimum=1000000000)"
    assert reason(m.functions.subscribe(0), trader) == "ZeroAmount()"
    receipt = send(w3, m.functions.subscribe(40_000 * USD), trader)
    GAS["subscribe (holder's first, no fee, opens a rate-limit window)"] = receipt["gasUsed"]
    assert m.functions.remainingSubscription().call() == 10_000 * USD
    assert reason(m.functions.subscribe(10_000 * USD + 1), trader) == f"RateLimited(remaining={10_000 * USD})"
    receipt = send(w3, m.functions.subscribe(10_000 * USD), trader)
    GAS["subscribe (again, no fee, inside the rate-limit window)"] = receipt["gasUsed"]
    assert m.functions.remainingSubscription().call() == 0
    assert reason(m.functions.subscribe(1_000 * USD), trader) == "RateLimited(remaining=0)"
    limit, window, start, used = m.functions.subscriptionLimit().call()
    assert (limit, window, used) == (50_000 * USD, 3_600, 50_000 * USD)
    advance(world, 3_600)  # a fixed window: a new one opens at the next subscription
    assert m.functions.remainingSubscription().call() == 50_000 * USD
    send(w3, m.functions.subscribe(1_000 * USD), trader)
    assert m.functions.subscriptionLimit().call()[2] > start

    share_usd = 10 * USD  # at NAV 10, no fee
    assert reason(m.functions.redeem(49 * SHARE), trader) == f"BelowMinimum(amount={490 * USD}, minimum={500 * USD})"
    assert reason(m.functions.redeem(0), trader) == "ZeroAmount()"
    assert reason(m.functions.redeem(2_001 * SHARE), trader) == f"RateLimited(remaining={20_000 * USD})"
    receipt = send(w3, m.functions.redeem(1_500 * SHARE), trader)
    GAS["redeem (partial, no fee, opens a rate-limit window)"] = receipt["gasUsed"]
    assert m.functions.remainingRedemption().call() == 20_000 * USD - 1_500 * share_usd

    # eligibility: the caller itself must be verified on the fund token
    stranger = w3.eth.accounts[3]
    send(w3, world.stable.functions.mint(stranger, 10_000 * USD), owner)
    send(w3, world.stable.functions.approve(m.address, MAX), stranger)
    assert reason(m.functions.subscribe(2_000 * USD), stranger) == f"NotEligible(account={stranger})"
    send(w3, fund.token.functions.setVerified(trader, False), owner)
    assert reason(m.functions.redeem(100 * SHARE), trader) == f"NotEligible(account={trader})"
    send(w3, fund.token.functions.setVerified(trader, True), owner)

    send(w3, m.functions.pause(), owner)
    assert reason(m.functions.subscribe(2_000 * USD), trader) == "EnforcedPause()"
    assert reason(m.functions.redeem(100 * SHARE), trader) == "EnforcedPause()"
    send(w3, m.functions.unpause(), owner)

    # a stale NAV: the feed's updatedAt is public (the bot's check); the manager can refuse it too
    updated_at = fund.feed.functions.latestRoundData().call()[3]
    send(w3, m.functions.setMaxNavAge(3_600), owner)
    advance(world, 3_601)
    assert w3.eth.get_block("latest")["timestamp"] - updated_at > 3_600
    assert reason(m.functions.previewSubscribe(2_000 * USD), trader) == f"StaleNav(updatedAt={updated_at}, maxAge=3600)"
    assert reason(m.functions.redeem(100 * SHARE), trader) == f"StaleNav(updatedAt={updated_at}, maxAge=3600)"
    set_issuer_nav(world, fund, 10.0)
    send(w3, m.functions.redeem(100 * SHARE), trader)

    # the owner's settings are guarded too
    assert reason(m.functions.setMintFeeBps(1_001), owner) == "FeeTooHigh(bps=1001)"
    assert reason(m.functions.setRedemptionLimit(1, 0), owner) == "InvalidWindow(window=0)"
    assert reason(m.functions.setMintFeeBps(1), trader) == f"OwnableUnauthorizedAccount(account={trader})"
    assert reason(fund.token.functions.mint(trader, 1), trader) == f"NotMinter(caller={trader})"


def test_redemption_beyond_the_managers_stablecoin_reverts_with_insufficient_liquidity(world: World) -> None:
    fund = deploy_issuer_fund(world, "BUIDLX", 1.0, liquidity_usd=10_000, redeem_fee_bps=5)
    m, w3, market = fund.manager, world.w3, world.market
    assert m.functions.availableLiquidity().call() == 10_000 * USD == stable_of(world, m.address)
    held = fund.token.functions.balanceOf(market).call()
    assert held == 1_000_000 * SHARE  # the seed subscription at NAV 1

    # the whole gross value leaves the contract (the fee goes on to the recipient), so it is what must be there
    assert reason(m.functions.redeem(10_001 * SHARE), market) == (
        f"InsufficientLiquidity(available={10_000 * USD}, needed={10_001 * USD})"
    )
    send(w3, m.functions.redeem(10_000 * SHARE), market)  # exactly what is there
    assert m.functions.availableLiquidity().call() == 0
    assert reason(m.functions.redeem(SHARE), market) == f"InsufficientLiquidity(available=0, needed={USD})"
    # a subscription's net money pays later redemptions; so does the issuer's top-up
    send(w3, world.stable.functions.approve(m.address, MAX), world.trader)
    send(w3, m.functions.subscribe(500 * USD), world.trader)
    assert m.functions.availableLiquidity().call() == 500 * USD
    send(w3, world.stable.functions.transfer(m.address, 100_000 * USD), world.owner)
    send(w3, m.functions.redeem(50_000 * SHARE), market)
    assert m.functions.availableLiquidity().call() == 50_500 * USD


# -- the fee-on-transfer gold token on Uniswap V2 ---------------------------------------------------------


def test_fot_gold_on_uniswap_v2_swaps_net_of_the_fee(world: World, uni: UniswapV2) -> None:
    gold = deploy_fot_gold(world, uni, "PAXGX", 2_650.0, 5_000_000.0, fee_bps=2)
    w3, trader, owner, router = world.w3, world.trader, world.owner, uni.router
    tok = gold.token
    assert tok.functions.feeBps().call() == 2 and not tok.functions.isFeeExempt(gold.pair.address).call()
    assert tok.functions.getFeeFor(10**18).call() == 2 * 10**14
    r0, r1, _ = gold.pair.functions.getReserves().call()
    reserves = {gold.pair.functions.token0().call(): r0, gold.pair.functions.token1().call(): r1}
    assert reserves == {tok.address: 5_000_000 * SHARE // 2_650, world.stable.address: 5_000_000 * USD}
    send(w3, world.stable.functions.approve(router.address, MAX), trader)
    send(w3, tok.functions.approve(router.address, MAX), trader)
    fees_before = tok.functions.balanceOf(owner).call()

    # buying: the pair pays out what getAmountsOut says; the fee on that transfer is the buyer's loss
    buy, usd_in = [world.stable.address, tok.address], 26_500 * USD
    quoted = router.functions.getAmountsOut(usd_in, buy).call()[-1]
    fee = tok.functions.getFeeFor(quoted).call()
    assert fee > 0
    swap = router.functions.swapExactTokensForTokensSupportingFeeOnTransferTokens
    assert reason(swap(usd_in, quoted, buy, trader, DEADLINE), trader) == (
        "reverted: UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"  # it checks what the buyer received
    )
    receipt = send(w3, swap(usd_in, quoted - fee, buy, trader, DEADLINE), trader)
    GAS["FoT router swap, buy (stable -> FoT, supporting; buyer's first FoT)"] = receipt["gasUsed"]
    got = tok.functions.balanceOf(trader).call()
    assert got == quoted - fee  # getAmountsOut overstated the net output by exactly the transfer fee

    # selling with the plain swap: the pair receives less than the router priced, and the K check fails
    sell = got // 2
    plain = router.functions.swapExactTokensForTokens
    assert reason(plain(sell, 0, buy[::-1], trader, DEADLINE), trader) == "reverted: UniswapV2: K"
    # the supporting swap prices what the pair actually received
    sell_fee = tok.functions.getFeeFor(sell).call()
    expected = router.functions.getAmountsOut(sell - sell_fee, buy[::-1]).call()[-1]
    overstated = router.functions.getAmountsOut(sell, buy[::-1]).call()[-1]
    assert overstated > expected
    usd_before = stable_of(world, trader)
    receipt = send(w3, swap(sell, expected, buy[::-1], trader, DEADLINE), trader)
    GAS["FoT router swap, sell (FoT -> stable, supporting)"] = receipt["gasUsed"]
    assert stable_of(world, trader) - usd_before == expected
    assert tok.functions.balanceOf(trader).call() == got - sell
    assert tok.functions.balanceOf(owner).call() - fees_before == fee + sell_fee  # the fee recipient's

    # buying with the plain swap does not revert, and still delivers less than it promised
    quoted = router.functions.getAmountsOut(USD * 1_000, buy).call()[-1]
    before = tok.functions.balanceOf(trader).call()
    receipt = send(w3, plain(USD * 1_000, quoted, buy, trader, DEADLINE), trader)
    GAS["FoT router swap, buy (stable -> FoT, plain)"] = receipt["gasUsed"]
    assert tok.functions.balanceOf(trader).call() - before == quoted - tok.functions.getFeeFor(quoted).call()


def test_fot_fee_exemptions_and_settings(world: World) -> None:
    from connectors.evm.deploy import deploy

    w3, owner, trader, market = world.w3, world.owner, world.trader, world.market
    tok = deploy(w3, compile_contracts()["FeeOnTransferToken"], "g", "G", 2, market, owner, sender=owner)
    send(w3, tok.functions.mint(trader, 10**22), owner)
    receipt = send(w3, tok.functions.transfer(owner, 10**22 // 2), trader)
    assert tok.functions.balanceOf(owner).call() == 10**22 // 2 - 10**18  # 2 bps of 5,000 tokens
    assert tok.functions.balanceOf(market).call() == 10**18
    (fc,) = tok.events.FeeCollected().process_receipt(receipt, errors=DISCARD)
    assert dict(fc["args"]) == {"from": trader, "to": market, "value": 10**18}
    send(w3, tok.functions.setFeeExempt(owner, True), owner)
    send(w3, tok.functions.transfer(owner, 10**21), trader)  # to an exempt address: no fee
    assert tok.functions.balanceOf(market).call() == 10**18
    send(w3, tok.functions.setFeeBps(0), owner)
    assert tok.functions.getFeeFor(10**30).call() == 0
    assert reason(tok.functions.setFeeBps(101), owner) == "FeeTooHigh(bps=101)"


# -- the rebasing token --------------------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [0, 6, 8, 18])
def test_rebasing_balances_follow_the_multiplier(world: World, decimals: int) -> None:
    w3, trader, market = world.w3, world.trader, world.market
    tok = deploy_rebasing(world, f"USDM{decimals}", decimals, trader_amount=1_000.0)
    one = 10**decimals
    assert tok.functions.decimals().call() == decimals
    assert tok.functions.balanceOf(trader).call() == 1_000 * one
    shares = tok.functions.sharesOf(trader).call()
    supply = tok.functions.totalSupply().call()
    assert supply == 1_001_000 * one

    receipt = send(w3, tok.functions.setRewardMultiplier(units(1.05, 18)), world.owner)
    assert tok.events.Transfer().process_receipt(receipt, errors=DISCARD) == ()  # yield arrives with no transfer
    assert tok.events.RewardMultiplier().process_receipt(receipt, errors=DISCARD)[0]["args"]["value"] == 105 * 10**16
    assert tok.functions.sharesOf(trader).call() == shares
    assert tok.functions.balanceOf(trader).call() == 1_050 * one
    assert tok.functions.totalSupply().call() == 1_051_050 * one

    # a transfer moves floor(amount / multiplier) shares: at 0 decimals the recipient sees a unit less
    m = tok.functions.rewardMultiplier().call()
    moved = 10 * one * 10**18 // m
    before = tok.functions.balanceOf(market).call()
    send(w3, tok.functions.transfer(market, 10 * one), trader)
    assert tok.functions.sharesOf(trader).call() == shares - moved
    got = tok.functions.balanceOf(market).call() - before
    assert got == (1_000_000 * one + moved) * m // 10**18 - 1_000_000 * one * m // 10**18
    assert 10 * one - 1 <= got <= 10 * one
    balance = tok.functions.balanceOf(trader).call()
    assert reason(tok.functions.transfer(market, balance + 1), trader) == (
        f"ERC20InsufficientBalance(sender={trader}, balance={balance}, needed={balance + 1})"
    )

    send(w3, tok.functions.addRewardMultiplier(units(0.05, 18)), world.owner)  # 1.10
    assert tok.functions.balanceOf(trader).call() == (shares - moved) * 110 // 100
    rebase(world, tok, 0.98)  # a loss: the balance falls, the shares stay
    assert tok.functions.balanceOf(trader).call() == (shares - moved) * 98 // 100
    assert reason(tok.functions.setRewardMultiplier(0), world.owner) == "InvalidRewardMultiplier(value=0)"


# -- Uniswap V2 artifacts -----------------------------------------------------------------------------------


def test_pair_init_code_hash_matches_the_routers_library(world: World, uni: UniswapV2) -> None:
    arts = uniswap_artifacts()
    assert pair_init_code_hash(arts) == PAIR_INIT_CODE_HASH
    assert PAIR_INIT_CODE_HASH in arts["UniswapV2Router02"].bytecode.lower()  # UniswapV2Library.pairFor's constant
    # on chain: the factory's CREATE2 address is the one the router computes, so the router finds the pair
    tok = deploy_rebasing(world, "T", 18)
    send(world.w3, tok.functions.mint(world.owner, 1_000 * SHARE), world.owner)
    pair = create_pool(uni, tok, world.stable, 1_000 * SHARE, 2_000 * USD, world.owner)
    assert pair.address == uni.pair_address(tok.address, world.stable.address)
    assert uni.factory.functions.feeToSetter().call() == world.owner
    assert uni.router.functions.factory().call() == uni.factory.address
    assert uni.router.functions.WETH().call() == uni.weth.address
    # the run-time ABIs (no node_modules) are enough to quote on the router and read the pair
    rt = runtime_abis()
    router = world.w3.eth.contract(address=uni.router.address, abi=rt["UniswapV2Router02"])
    quoted = router.functions.getAmountsOut(SHARE, [tok.address, world.stable.address]).call()[-1]
    assert quoted == SHARE * 997 * 2_000 * USD // (1_000 * SHARE * 1_000 + SHARE * 997)
    rpair = world.w3.eth.contract(address=pair.address, abi=rt["UniswapV2Pair"])
    assert sorted(rpair.functions.getReserves().call()[:2]) == sorted([1_000 * SHARE, 2_000 * USD])


def test_runtime_abi_file_is_current() -> None:
    assert RUNTIME_ABI_FILE.read_text() == runtime_abi_document()
    doc = json.loads(RUNTIME_ABI_FILE.read_text())
    assert {e["name"] for e in doc["UniswapV2Pair"] if e["type"] == "event"} == {"Swap", "Sync", "Transfer"}


def test_gas_report() -> None:
    """Runs last in this file: the gas of the measured transactions, with loose ceilings."""
    for name, gas in sorted(GAS.items()):
        print(f"gas {name}: {gas}")
    ceilings = {"subscribe": 200_000, "redeem": 200_000, "FoT": 250_000}
    for name, gas in GAS.items():
        assert gas < next(c for k, c in ceilings.items() if name.startswith(k)), name
