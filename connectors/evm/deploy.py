"""Deploy an RWA world on a development node and give it an hourly market history.

Plain web3 against anvil's unlocked development accounts: ``owner`` (account 0) deploys and runs
the contracts (fund manager, token agent, oracle, liquidity provider), ``market`` (account 1) is the
rest of the market whose hourly subscriptions, redemptions and swaps give the data source prices and
volumes, ``trader`` (account 2) is the account the bot trades with. Used by the tests and by
``rwabot devnet``; never by the venue itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eth_account import Account
from web3 import Web3
from web3.contract import Contract

from connectors.evm.build import Artifact, compile_contracts
from connectors.evm.node import DEV_MNEMONIC

USD = 10**6
SHARE = 10**18
MAX = 2**256 - 1


def dev_key(index: int) -> str:
    """The private key of anvil's development account ``index`` (public knowledge, devnet only)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key.hex()


def deploy(w3: Web3, art: Artifact, *args: Any, sender: str) -> Contract:
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = factory.constructor(*args).transact({"from": sender})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30, poll_latency=0.002)
    if receipt["status"] != 1:
        raise RuntimeError(f"deploying {art.name} reverted")
    return w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)


_BATCH: dict[int, list[tuple[Any, str]]] = {}


def send(w3: Web3, fn: Any, sender: str, tip_gwei: int = 1) -> Any:
    """Send from an unlocked account; inside ``batch(w3)`` only queue it in the hour's block."""
    tx = {"from": sender, "gas": 1_000_000, "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": tip_gwei * 10**9}
    h = fn.transact(tx)
    if id(w3) in _BATCH:
        _BATCH[id(w3)].append((h, fn.fn_name))
        return None
    receipt = w3.eth.wait_for_transaction_receipt(h, timeout=30, poll_latency=0.002)
    if receipt["status"] != 1:
        raise RuntimeError(f"{fn.fn_name} from {sender} reverted")
    return receipt


def mine_block(w3: Web3, timestamp: int, build: Any) -> None:
    """Queue every transaction ``build()`` sends and mine them in one block at ``timestamp`` (fast)."""
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    _BATCH[id(w3)] = []
    try:
        build()
        w3.provider.make_request("evm_mine", [timestamp])  # type: ignore[arg-type]
        for h, name in _BATCH[id(w3)]:
            if w3.eth.get_transaction_receipt(h)["status"] != 1:
                raise RuntimeError(f"{name} reverted while mining history")
    finally:
        del _BATCH[id(w3)]
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]


@dataclass(frozen=True)
class FundSpec:
    name: str
    nav: float  # price per share in USD at the start
    annual_vol: float
    hourly_flow: float  # USD subscribed and redeemed by the market each hour


@dataclass(frozen=True)
class PoolSpec:
    name: str
    price: float
    annual_vol: float
    depth_usd: float  # quote-side reserve
    hourly_turnover_usd: float
    fee_bps: int = 30


@dataclass(frozen=True)
class WorldSpec:
    funds: tuple[FundSpec, ...] = (
        FundSpec("USTB", 1.0, 0.02, 400_000.0),
        FundSpec("CREDIT", 10.0, 0.08, 300_000.0),
    )
    pools: tuple[PoolSpec, ...] = (PoolSpec("REALT", 50.0, 0.25, 5_000_000.0, 400_000.0),)
    eth_usd: float = 3000.0
    trader_usd: float = 1_000_000.0
    trader_eth: float = 1.0  # a gas reserve: the venue counts it as cash, so keep it small
    seed: int = 11


@dataclass
class World:
    """Deployed contracts and the development accounts around them."""

    w3: Web3
    spec: WorldSpec
    artifacts: dict[str, Artifact]
    owner: str
    market: str
    trader: str
    stable: Contract
    vaults: dict[str, Contract] = field(default_factory=dict)
    tokens: dict[str, Contract] = field(default_factory=dict)
    pools: dict[str, Contract] = field(default_factory=dict)
    feeds: dict[str, Contract] = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    _move_later: list[tuple[str, float]] = field(default_factory=list)

    # -- configuration the plugins read --------------------------------------------------------------

    def venue_assets(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for n, v in self.vaults.items():
            out[n] = {"kind": "vault", "address": v.address, "decimals": 18, "permissioned": True}
        for n, p in self.pools.items():
            t = self.tokens[n]
            out[n] = {"kind": "pool", "address": t.address, "pool": p.address, "decimals": 18, "permissioned": True}
        return out

    def data_assets(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for n, v in self.vaults.items():
            out[n] = {"source": "vault", "address": v.address, "decimals": 18}
        for n, p in self.pools.items():
            out[n] = {"source": "pool", "address": self.tokens[n].address, "pool": p.address, "decimals": 18}
        return out

    # -- moving the market ----------------------------------------------------------------------------

    def nav(self, name: str) -> float:
        v = self.vaults[name]
        return v.functions.convertToAssets(SHARE).call() / USD

    def set_nav(self, name: str, nav_per_share: float) -> None:
        v = self.vaults[name]
        supply = v.functions.totalSupply().call()
        send(self.w3, v.functions.setTotalAssets(int(nav_per_share * USD * supply / SHARE)), self.owner, tip_gwei=3)

    def mid(self, name: str) -> float:
        rb, rq = self.pools[name].functions.getReserves().call()
        return (rq / USD) / (rb / SHARE)

    def move_pool(self, name: str, price: float) -> None:
        """Swap as the market until the pool's mid is ``price`` (ignoring the fee)."""
        pool, token = self.pools[name], self.tokens[name]
        rb, rq = pool.functions.getReserves().call()
        target_base = math.sqrt(rb * rq * SHARE / USD / price)
        deadline = 2**40
        if target_base > rb:  # sell base into the pool
            amount = int(target_base - rb)
            if amount > 0:
                send(self.w3, pool.functions.swap(token.address, amount, 0, self.market, deadline), self.market)
        else:
            amount_out = int(rb - target_base)
            if amount_out > 0:
                amount_in = pool.functions.getAmountIn(amount_out, token.address).call()
                send(
                    self.w3, pool.functions.swap(self.stable.address, amount_in, 0, self.market, deadline), self.market
                )

    def market_hour(self) -> None:
        """One hour of the rest of the market: NAVs and prices move, funds see flows, the pool trades."""
        h = 1.0 / (24 * 365)
        for f in self.spec.funds:
            nav = self.nav(f.name) * math.exp(f.annual_vol * math.sqrt(h) * self.rng.standard_normal())
            self.set_nav(f.name, nav)
            v = self.vaults[f.name]
            flow = int(f.hourly_flow * (0.5 + self.rng.random()) * USD)
            send(self.w3, v.functions.deposit(flow, self.market), self.market, tip_gwei=2)
            shares = v.functions.convertToShares(
                int(flow * (0.5 + 0.5 * self.rng.random()) * nav / self.nav(f.name))
            ).call()
            send(self.w3, v.functions.redeem(shares, self.market, self.market), self.market, tip_gwei=2)
        for p in self.spec.pools:
            price = self.mid(p.name) * math.exp(p.annual_vol * math.sqrt(h) * self.rng.standard_normal())
            pool, token = self.pools[p.name], self.tokens[p.name]
            # turnover both ways around the move, so volume does not depend on the direction
            usd = int(p.hourly_turnover_usd * (0.5 + self.rng.random()) / 2 * USD)
            out = pool.functions.getAmountOut(usd, self.stable.address).call()
            send(self.w3, pool.functions.swap(self.stable.address, usd, 0, self.market, 2**40), self.market)
            send(self.w3, pool.functions.swap(token.address, out, 0, self.market, 2**40), self.market)
            if id(self.w3) not in _BATCH:
                self.move_pool(p.name, price)
            else:  # in a batched block the reserves read now are before the turnover swaps: move by the
                self._move_later.append((p.name, price))  # price change only, after those swaps are mined
            if p.name in self.feeds:
                send(self.w3, self.feeds[p.name].functions.updateAnswer(int(price * 1e8)), self.owner)
        eth = self.feeds["ETH"]
        last = eth.functions.latestRoundData().call()[1] / 1e8
        new = last * math.exp(0.6 * math.sqrt(h) * self.rng.standard_normal())
        send(self.w3, eth.functions.updateAnswer(int(new * 1e8)), self.owner)

    def mine_history(self, start: int, hours: int) -> int:
        """Mine ``hours`` market hours, the k-th in blocks one and two minutes after ``start + k·3600``;
        returns the timestamp of the last block."""
        t = start
        for k in range(hours):
            t = start + k * 3600 + 60
            self._move_later = []
            mine_block(self.w3, t, self.market_hour)
            t += 60
            mine_block(self.w3, t, lambda: [self.move_pool(n, p) for n, p in self._move_later])
        return t


def deploy_world(w3: Web3, spec: WorldSpec | None = None, *, trader: str | None = None) -> World:
    """Deploy the stablecoin, the funds, the permissioned tokens and their pools, and the feeds;
    give the market and the trader stablecoin and verify them (and the pools) as holders."""
    spec = spec or WorldSpec()
    arts = compile_contracts()
    accounts = w3.eth.accounts
    owner, market = accounts[0], accounts[1]
    trader = trader or accounts[2]
    stable = deploy(w3, arts["Stablecoin"], "Test USD", "tUSD", owner, sender=owner)
    world = World(w3, spec, arts, owner, market, trader, stable, rng=np.random.default_rng(spec.seed))
    send(w3, stable.functions.mint(owner, 10**12 * USD), owner)
    send(w3, stable.functions.mint(market, 10**11 * USD), owner)
    send(w3, stable.functions.mint(trader, int(spec.trader_usd * USD)), owner)
    w3.provider.make_request("anvil_setBalance", [trader, hex(int(spec.trader_eth * 10**18))])  # type: ignore[arg-type]
    for f in spec.funds:
        v = deploy(w3, arts["FundVault"], stable.address, f"{f.name} fund shares", f.name, owner, sender=owner)
        world.vaults[f.name] = v
        for who in (owner, market, trader):
            send(w3, v.functions.setVerified(who, True), owner)
        send(w3, stable.functions.approve(v.address, MAX), owner)
        send(w3, stable.functions.approve(v.address, MAX), market)
        # seed the fund: the market holds shares worth 20 hours of flows at the starting NAV
        send(w3, v.functions.deposit(int(f.hourly_flow * 20 * USD), market), market)
        world.set_nav(f.name, f.nav)
    for p in spec.pools:
        t = deploy(w3, arts["RwaToken"], f"{p.name} token", p.name, owner, sender=owner)
        pool = deploy(w3, arts["ConstantProductPool"], t.address, stable.address, p.fee_bps, owner, sender=owner)
        world.tokens[p.name], world.pools[p.name] = t, pool
        for who in (owner, market, trader, pool.address):
            send(w3, t.functions.setVerified(who, True), owner)
        base = int(p.depth_usd / p.price * SHARE)
        send(w3, t.functions.mint(owner, base), owner)
        send(w3, t.functions.mint(market, base), owner)
        send(w3, t.functions.approve(pool.address, MAX), owner)
        send(w3, stable.functions.approve(pool.address, MAX), owner)
        send(w3, pool.functions.addLiquidity(base, int(p.depth_usd * USD)), owner)
        send(w3, t.functions.approve(pool.address, MAX), market)
        send(w3, stable.functions.approve(pool.address, MAX), market)
        feed = deploy(w3, arts["PriceFeed"], 8, f"{p.name} / USD", owner, sender=owner)
        send(w3, feed.functions.updateAnswer(int(p.price * 1e8)), owner)
        world.feeds[p.name] = feed
    eth = deploy(w3, arts["PriceFeed"], 8, "ETH / USD", owner, sender=owner)
    send(w3, eth.functions.updateAnswer(int(spec.eth_usd * 1e8)), owner)
    world.feeds["ETH"] = eth
    return world
