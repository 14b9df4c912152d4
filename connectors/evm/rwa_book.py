"""Deploy the issuer-desk funds and the awkward tokens of issue 9 next to a deployed ``World`` (tests
and ``rwabot devnet``): a fund sold through an ``IssuerManager`` (instant subscribe and redeem at a
NAV feed, with fees, minimums, rate limits and a liquidity cap), a PAXG-style fee-on-transfer gold
token on a real Uniswap V2 pair, and a USDM-style rebasing token.

Kept apart from ``deploy.py`` and ``rwa_world.py`` so the basic world stays small. Nothing here is
registered in the world's ``vaults``/``pools``/``tokens``/``feeds``: those drive the basic world's
market history and its venue configuration, whose shapes these products do not share; the caller
gets the contracts back and wires them where it needs them. Plain web3 against anvil's unlocked
development accounts, like ``deploy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from web3.contract import Contract

from connectors.evm.build import compile_contracts
from connectors.evm.deploy import MAX, SHARE, World, deploy, send
from connectors.evm.univ2 import UniswapV2, create_pool

FEED_DECIMALS = 8


def units(amount: float, decimals: int) -> int:
    """``amount`` whole tokens in base units, exactly for the decimal text of the float."""
    return int(Decimal(repr(amount)).scaleb(decimals))


@dataclass(frozen=True)
class IssuerFund:
    name: str
    token: Contract  # FundToken: 18 decimals, permissioned, minted and burnt by the manager
    manager: Contract  # IssuerManager
    feed: Contract  # PriceFeed: NAV per share in USD, 8 decimals


def deploy_issuer_fund(
    world: World,
    name: str,
    nav: float,
    *,
    liquidity_usd: float = 1_000_000.0,
    seed_usd: float = 1_000_000.0,
    mint_fee_bps: int = 0,
    redeem_fee_bps: int = 0,
    minimum_subscription_usd: float = 0.0,
    minimum_redemption_usd: float = 0.0,
    subscription_limit_usd: float | None = None,
    redemption_limit_usd: float | None = None,
    window_s: int = 86_400,
    max_nav_age_s: int = 0,
    fee_recipient: str | None = None,
) -> IssuerFund:
    """A fund token, its NAV feed at ``nav`` and an issuer manager that mints and burns it.

    The market subscribes ``seed_usd`` first (before fees and limits are set, so the fund has
    holders and the window is untouched), then the owner tops up or withdraws so that the manager
    holds exactly ``liquidity_usd`` of stablecoin for redemptions. Owner, market, trader and the
    manager are verified; the market approves the manager (the trader's approvals are the bot's
    business). Fees go to ``fee_recipient`` (the owner by default). A limit of None is unlimited."""
    w3, arts, owner = world.w3, compile_contracts(), world.owner
    token = deploy(w3, arts["FundToken"], f"{name} fund shares", name, owner, sender=owner)
    feed = deploy(w3, arts["PriceFeed"], FEED_DECIMALS, f"{name} NAV / USD", owner, sender=owner)
    send(w3, feed.functions.updateAnswer(round(nav * 10**FEED_DECIMALS)), owner)
    manager = deploy(
        w3, arts["IssuerManager"], world.stable.address, token.address, feed.address, fee_recipient or owner, owner,
        sender=owner,
    )  # fmt: skip
    send(w3, token.functions.setMinter(manager.address), owner)
    for who in (owner, world.market, world.trader, manager.address):
        send(w3, token.functions.setVerified(who, True), owner)
    send(w3, world.stable.functions.approve(manager.address, MAX), world.market)
    if seed_usd > 0:
        send(w3, manager.functions.subscribe(units(seed_usd, 6)), world.market)
    held, target = manager.functions.availableLiquidity().call(), units(liquidity_usd, 6)
    if target > held:
        send(w3, world.stable.functions.transfer(manager.address, target - held), owner)
    elif target < held:
        send(w3, manager.functions.withdrawLiquidity(owner, held - target), owner)
    m = manager.functions
    for fn in (
        m.setMintFeeBps(mint_fee_bps),
        m.setRedeemFeeBps(redeem_fee_bps),
        m.setMinimumSubscription(units(minimum_subscription_usd, 6)),
        m.setMinimumRedemption(units(minimum_redemption_usd, 6)),
        m.setMaxNavAge(max_nav_age_s),
    ):
        send(w3, fn, owner)
    if subscription_limit_usd is not None:
        send(w3, m.setSubscriptionLimit(units(subscription_limit_usd, 6), window_s), owner)
    if redemption_limit_usd is not None:
        send(w3, m.setRedemptionLimit(units(redemption_limit_usd, 6), window_s), owner)
    return IssuerFund(name, token, manager, feed)


def set_issuer_nav(world: World, fund: IssuerFund, nav: float) -> None:
    """The fund administrator publishes a NAV per share (a new round of the feed, stamped now)."""
    send(world.w3, fund.feed.functions.updateAnswer(round(nav * 10**FEED_DECIMALS)), world.owner)


@dataclass(frozen=True)
class FotMarket:
    name: str
    token: Contract  # FeeOnTransferToken: 18 decimals
    pair: Contract  # UniswapV2Pair of the token and world.stable
    feed: Contract  # PriceFeed of the token's reference price (XAU / USD for a gold token), 8 decimals


def deploy_fot_gold(
    world: World, uni: UniswapV2, name: str, price: float, depth_usd: float, fee_bps: int = 2
) -> FotMarket:
    """A PAXG-style gold token taking ``fee_bps`` on every transfer, on a Uniswap V2 pair against the
    world's stablecoin with ``depth_usd`` on the quote side at ``price``, and a reference feed.

    The owner is the issuer: fee recipient and fee-exempt, so its seeding of the pair is exact. The
    pair, the market and the trader are not exempt, so every swap pays the fee once (the pair's
    transfer out when buying, the seller's transfer in when selling). The market holds as much gold
    as the pair and approves the router for both tokens."""
    w3, arts, owner = world.w3, compile_contracts(), world.owner
    token = deploy(w3, arts["FeeOnTransferToken"], f"{name} gold", name, fee_bps, owner, owner, sender=owner)
    send(w3, token.functions.setFeeExempt(owner, True), owner)
    base = int(Decimal(repr(depth_usd)) / Decimal(repr(price)) * SHARE)
    send(w3, token.functions.mint(owner, base), owner)
    send(w3, token.functions.mint(world.market, base), owner)
    pair = create_pool(uni, token, world.stable, base, units(depth_usd, 6), owner)
    send(w3, token.functions.approve(uni.router.address, MAX), world.market)
    send(w3, world.stable.functions.approve(uni.router.address, MAX), world.market)
    feed = deploy(w3, arts["PriceFeed"], FEED_DECIMALS, f"{name} / USD", owner, sender=owner)
    send(w3, feed.functions.updateAnswer(round(price * 10**FEED_DECIMALS)), owner)
    return FotMarket(name, token, pair, feed)


def deploy_rebasing(
    world: World, name: str, decimals: int, *, market_amount: float = 1_000_000.0, trader_amount: float = 0.0
) -> Contract:
    """A USDM-style rebasing token with ``decimals`` decimals (multiplier 1.0), ``market_amount``
    whole tokens minted to the market and ``trader_amount`` to the trader."""
    w3, owner = world.w3, world.owner
    token = deploy(w3, compile_contracts()["RebasingToken"], f"{name} rebasing", name, decimals, owner, sender=owner)
    for who, amount in ((world.market, market_amount), (world.trader, trader_amount)):
        if amount > 0:
            send(w3, token.functions.mint(who, units(amount, decimals)), owner)
    return token


def rebase(world: World, token: Contract, multiplier: float) -> None:
    """Set the reward multiplier: every balance becomes shares × ``multiplier``."""
    send(world.w3, token.functions.setRewardMultiplier(units(multiplier, 18)), world.owner)
