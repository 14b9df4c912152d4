"""A realistic tokenized-RWA book on a development chain, and the keeper that moves it each hour.

Why one place. ``rwabot devnet`` and the embedded defaults trade the same shapes that real products
have: an instant mint/redeem fund behind an issuer manager (Superstate USTB, Ondo OUSG), an ERC-4626
fund, an ERC-7540 fund whose manager fulfils requests later (Centrifuge), a real ERC-3643 T-REX
token on a pool that had to be verified itself, and a PAXG-style fee-on-transfer gold token on a
real Uniswap V2 pair. Each asset's venue configuration is written here next to its deployment, so
the two cannot disagree; ``move`` is the rest of the market (NAVs published, requests fulfilled,
pools arbitraged to the data source's prices) in the keeper's hourly block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3

from connectors.evm.deploy import MAX, SHARE, USD, World, send
from connectors.evm.rwa_book import IssuerFund, deploy_fot_gold, deploy_issuer_fund, set_issuer_nav, units
from connectors.evm.rwa_world import deploy_async_vault, set_async_nav
from connectors.evm.trex import TrexSuite, deploy_trex, trex_pool
from connectors.evm.univ2 import DEADLINE, UniswapV2, deploy_uniswap


def _slot(key: str, slot: int) -> bytes:
    return Web3.keccak(bytes.fromhex(key[2:].rjust(64, "0")) + slot.to_bytes(32, "big"))


def find_slots(w3: Web3, token: Any, holder: str, spender: str, *, limit: int = 256) -> tuple[int, int]:
    """The storage slots of an ERC-20's balance and allowance mappings, found by overriding a
    candidate slot in an ``eth_call`` until ``balanceOf``/``allowance`` answer the planted value.
    Paper fills need them to give the simulated account what a trade takes; a token with another
    layout than OpenZeppelin's (T-REX's upgradeable storage) is found the same way."""
    probe = 123456789
    word = "0x" + probe.to_bytes(32, "big").hex()
    balance = allowance = None
    for i in range(limit):
        if balance is None:
            diff = {"0x" + _slot(holder, i).hex(): word}
            if token.functions.balanceOf(holder).call(state_override={token.address: {"stateDiff": diff}}) == probe:
                balance = i
        if allowance is None:
            inner = int.from_bytes(_slot(holder, i), "big")
            diff = {"0x" + _slot(spender, inner).hex(): word}
            got = token.functions.allowance(holder, spender).call(state_override={token.address: {"stateDiff": diff}})
            if got == probe:
                allowance = i
        if balance is not None and allowance is not None:
            return balance, allowance
    raise RuntimeError(f"no ERC-20 balance/allowance slots below {limit} for token {token.address}")


@dataclass
class Book:
    """What was deployed beyond the basic world, by asset, with the venue's config for each."""

    world: World
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)  # evm venue asset options
    managers: dict[str, IssuerFund] = field(default_factory=dict)
    asyncs: dict[str, Any] = field(default_factory=dict)
    trex: dict[str, TrexSuite] = field(default_factory=dict)
    fot: dict[str, Any] = field(default_factory=dict)
    uni: UniswapV2 | None = None

    def move(self, prices: dict[str, float]) -> None:
        """One hour of the rest of the market, inside the keeper's block."""
        w = self.world
        for a, fund in self.managers.items():
            set_issuer_nav(w, fund, prices[a])
        for a, v in self.asyncs.items():
            set_async_nav(w, v, prices[a])
            # the fund manager works the queue once an hour: every request of the account is fulfilled
            for who in (w.trader,):
                pending = v.functions.pendingDepositRequest(0, who).call()
                if pending:
                    send(w.w3, v.functions.fulfillDeposit(who, pending), w.owner)
                shares = v.functions.pendingRedeemRequest(0, who).call()
                if shares:
                    send(w.w3, v.functions.fulfillRedeem(who, shares), w.owner)
        for a in self.trex:
            w.move_pool(a, prices[a])
        for a, gold in self.fot.items():
            move_univ2(w, self.uni, gold.token, gold.pair, prices[a])  # type: ignore[arg-type]


def move_univ2(world: World, uni: UniswapV2, token: Any, pair: Any, price: float) -> None:
    """Swap as the market until the pair's mid is ``price`` (the swap fee and a transfer fee aside)."""
    r0, r1, _ = pair.functions.getReserves().call()
    token_is_0 = pair.functions.token0().call() == token.address
    rt, rs = (r0, r1) if token_is_0 else (r1, r0)
    target = math.sqrt(rt * rs * SHARE / USD / price)
    fn = uni.router.functions.swapExactTokensForTokensSupportingFeeOnTransferTokens
    if target > rt:  # too dear: the market sells gold into the pair
        amount = int(target - rt)
        if amount > 0:
            send(world.w3, fn(amount, 0, [token.address, world.stable.address], world.market, DEADLINE), world.market)
    elif rt - target > 1:
        out = int(rt - target)
        amount_in = uni.router.functions.getAmountsIn(out, [world.stable.address, token.address]).call()[0]
        send(world.w3, fn(amount_in, 0, [world.stable.address, token.address], world.market, DEADLINE),
             world.market)  # fmt: skip


def deploy_book(
    world: World,
    prices: dict[str, float],
    *,
    managers: list[str],
    async_funds: list[str],
    trex_pools: list[str],
    fot_pools: list[str],
    fund_size_usd: float,
    pool_depth_usd: float,
    manager_fee_bps: int = 10,
    gold_fee_bps: int = 2,
) -> Book:
    """Deploy each product at its price; every holder the market needs is verified and approved."""
    w3 = world.w3
    book = Book(world)
    for a in managers:
        fund = deploy_issuer_fund(world, a, prices[a], liquidity_usd=fund_size_usd / 4, seed_usd=fund_size_usd,
                                  mint_fee_bps=manager_fee_bps, redeem_fee_bps=manager_fee_bps)  # fmt: skip
        book.managers[a] = fund
        bslot, aslot = find_slots(w3, fund.token, world.trader, fund.manager.address)
        book.assets[a] = {"kind": "manager", "address": fund.token.address, "permissioned": True,
                          "manager": {"address": fund.manager.address}, "balance_slot": bslot,
                          "allowance_slot": aslot}  # fmt: skip
    for a in async_funds:
        v = deploy_async_vault(world, a, prices[a], seed_usd=fund_size_usd)
        book.asyncs[a] = v
        book.assets[a] = {"kind": "async", "address": v.address, "permissioned": True}
    for a in trex_pools:
        suite = deploy_trex(w3, world.owner, f"{a} T-REX token", a)
        for who in (world.market, world.trader):
            suite.verify(who)
        pool = trex_pool(world, suite, prices[a], pool_depth_usd)  # verifies the pool itself
        send(w3, suite.token.functions.mint(world.market, int(pool_depth_usd / prices[a] * SHARE)), world.owner)
        send(w3, suite.token.functions.approve(pool.address, MAX), world.market)
        send(w3, world.stable.functions.approve(pool.address, MAX), world.market)
        world.tokens[a], world.pools[a] = suite.token, pool  # the keeper's move_pool arbitrages it
        book.trex[a] = suite
        bslot, aslot = find_slots(w3, suite.token, world.trader, pool.address)
        book.assets[a] = {"kind": "pool", "address": suite.token.address, "pool": pool.address,
                          "permissioned": True, "balance_slot": bslot, "allowance_slot": aslot}  # fmt: skip
    if fot_pools:
        book.uni = deploy_uniswap(w3, world.owner)
    for a in fot_pools:
        assert book.uni is not None
        gold = deploy_fot_gold(world, book.uni, a, prices[a], pool_depth_usd, fee_bps=gold_fee_bps)
        book.fot[a] = gold
        bslot, aslot = find_slots(w3, gold.token, world.trader, book.uni.router.address)
        book.assets[a] = {"kind": "univ2", "address": gold.token.address, "balance_slot": bslot,
                          "allowance_slot": aslot,
                          "univ2": {"router": book.uni.router.address, "pair": gold.pair.address,
                                    "transfer_fee_view": "getFeeFor(uint256)"}}  # fmt: skip
    return book


def eligibility(book: Book) -> dict[str, dict[str, Any]]:
    """The venue's eligibility option for the book: T-REX tokens are checked the ERC-3643 way."""
    return {a: {"token": s.token.address, "checks": ["erc3643"]} for a, s in book.trex.items()}


__all__ = ["Book", "deploy_book", "eligibility", "find_slots", "move_univ2", "units"]
