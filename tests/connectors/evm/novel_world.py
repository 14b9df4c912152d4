"""A chain of tokenized funds the project has never seen (issue 23), deployed from contracts written
for these tests (``tests/connectors/evm/contracts``, compiled from OpenZeppelin 5 sources with solc-js
like the project's own) and the real Uniswap V2 from its npm artifacts, with an hourly history.

* ``usd``: a 6-decimal dollar (``PlainToken``); ``gold``: an 8-decimal tokenized gold token.
* ``fee_fund``: ``FeeFund``, OpenZeppelin's ERC4626Fees pattern: 10 bps entry, 5 bps exit, paid to
  ``recipient`` in the same transaction; 6-decimal shares (no decimals offset).
* ``hybrid``: ``HybridFund``, synchronous subscriptions with a 20 bps entry fee, ERC-7540 asynchronous
  redemptions with request ids 1, 2, … fulfilled in parts by the manager, 15 bps of exit fee charged at
  each fulfilment (paid to ``recipient`` in the manager's transaction); 18-decimal shares.
* ``queued``: ``QueuedDepositFund``, the mirror: ERC-7540 asynchronous subscriptions (ids from 100)
  with 25 bps of entry fee charged at each fulfilment, and synchronous redemptions.
* ``pair``: the Uniswap V2 pair of gold and usd (Router02), 0.3 % fee.
* ``oracle``: ``IssuerOracle`` (``getPriceData()``, 18 decimals, reverts ``StalePrice`` when old),
  ``feed``: an AggregatorV3 gold feed (8 decimals).

Accounts: anvil's 0 (owner: deployer, manager, liquidity), 1 (market: the hourly flows), 2 (trader),
3 (the fee recipient, which receives nothing else).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from web3 import Web3
from web3.contract import Contract

from connectors.evm.build import Artifact, compile_contracts, compile_dir
from connectors.evm.deploy import MAX, deploy, mine_block, send
from connectors.evm.univ2 import DEADLINE, UniswapV2, create_pool, deploy_uniswap

CONTRACTS = Path(__file__).resolve().parent / "contracts"
T1 = 1772409600  # 2026-03-02T00:00Z: the first mined hour
HOURS = 27
NOW1 = datetime.fromtimestamp(T1 + (HOURS - 1) * 3600 + 300, UTC)  # five minutes into the last hour
USD6, GOLD8, SHARE18 = 10**6, 10**8, 10**18
ENTRY_BPS, EXIT_BPS, HYBRID_ENTRY_BPS = 10, 5, 20
HYBRID_FULFIL_BPS, QUEUED_FULFIL_BPS = 15, 25  # fees charged when the manager fulfils a request
GOLD_USD = 2650.0


def artifacts() -> dict[str, Artifact]:
    return compile_dir(CONTRACTS, tag="test-contracts")


@dataclass
class Novel:
    w3: Web3
    arts: dict[str, Artifact]
    owner: str
    market: str
    trader: str
    recipient: str
    usd: Contract
    gold: Contract
    fee_fund: Contract
    hybrid: Contract
    queued: Contract
    uni: UniswapV2
    pair: Contract
    oracle: Contract
    feed: Contract
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(23))

    def nav(self, vault: Contract) -> float:
        """Price per whole share, from ``convertToAssets`` (the test's own reading)."""
        unit = 10 ** vault.functions.decimals().call()
        return vault.functions.convertToAssets(unit).call() / USD6

    def set_nav(self, vault: Contract, nav: float) -> None:
        supply = vault.functions.totalSupply().call()
        unit = 10 ** vault.functions.decimals().call()
        send(self.w3, vault.functions.setTotalAssets(int(nav * USD6 * supply / unit)), self.owner, tip_gwei=3)

    def gold_mid(self) -> float:
        r0, r1, _ = self.pair.functions.getReserves().call()
        rg, ru = (r0, r1) if self.pair.functions.token0().call() == self.gold.address else (r1, r0)
        return (ru / USD6) / (rg / GOLD8)

    def hour(self) -> None:
        """The market's hour: NAVs drift, both funds see subscriptions and redemptions, gold trades."""
        h = 1.0 / (24 * 365)
        for vault, vol, flow in ((self.fee_fund, 0.02, 300_000.0), (self.hybrid, 0.05, 200_000.0)):
            nav = self.nav(vault) * math.exp(vol * math.sqrt(h) * self.rng.standard_normal())
            self.set_nav(vault, nav)
            amount = int(flow * (0.5 + self.rng.random()) * USD6)
            send(self.w3, vault.functions.deposit(amount, self.market), self.market, tip_gwei=2)
        shares = self.fee_fund.functions.balanceOf(self.market).call()
        send(self.w3, self.fee_fund.functions.redeem(shares // 200, self.market, self.market), self.market, tip_gwei=2)
        usd_in = int(400_000 * (0.5 + self.rng.random()) * USD6)
        r = self.uni.router.functions
        send(self.w3, r.swapExactTokensForTokens(usd_in, 0, [self.usd.address, self.gold.address], self.market,
                                                 DEADLINE), self.market)  # fmt: skip
        gold_in = int(usd_in / GOLD_USD * (0.5 + self.rng.random()) / USD6 * GOLD8)
        send(self.w3, r.swapExactTokensForTokens(gold_in, 0, [self.gold.address, self.usd.address], self.market,
                                                 DEADLINE), self.market)  # fmt: skip
        price = self.gold_mid() * math.exp(0.15 * math.sqrt(h) * self.rng.standard_normal())
        send(self.w3, self.feed.functions.updateAnswer(int(price * 1e8)), self.owner)
        send(self.w3, self.oracle.functions.setPrice(int(self.nav(self.hybrid) * 1e18)), self.owner)

    def mine_history(self, start: int = T1, hours: int = HOURS) -> int:
        t = start
        for k in range(hours):
            t = start + k * 3600 + 60
            mine_block(self.w3, t, self.hour)
        return t

    def write_abis(self, folder: Path) -> dict[str, str]:
        """The funds' ABIs as a user would save them from an explorer: one JSON file each."""
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        for name in ("FeeFund", "HybridFund", "QueuedDepositFund", "IssuerOracle"):
            p = folder / f"{name}.json"
            p.write_text(json.dumps({"contractName": name, "abi": self.arts[name].abi}))
            out[name] = str(p)
        return out


def deploy_novel(w3: Web3) -> Novel:
    arts, own = artifacts(), compile_contracts()
    owner, market, trader, recipient = w3.eth.accounts[:4]
    usd = deploy(w3, arts["PlainToken"], "Novel Dollar", "nUSD", 6, owner, sender=owner)
    gold = deploy(w3, arts["PlainToken"], "Tokenized Gold", "XAU8", 8, owner, sender=owner)
    for who, amount in ((owner, 10**11), (market, 10**10), (trader, 1_000_000)):
        send(w3, usd.functions.mint(who, amount * USD6), owner)
    for who, oz in ((owner, 100_000), (market, 10_000)):
        send(w3, gold.functions.mint(who, oz * GOLD8), owner)
    w3.provider.make_request("anvil_setBalance", [trader, hex(10**18)])  # type: ignore[arg-type]  # 1 ETH of gas
    fee_fund = deploy(w3, arts["FeeFund"], usd.address, "Fee Fund", "FEEF", owner, ENTRY_BPS, EXIT_BPS, recipient,
                      sender=owner)  # fmt: skip
    hybrid = deploy(w3, arts["HybridFund"], usd.address, "Hybrid Credit", "HYB", owner, HYBRID_ENTRY_BPS, recipient,
                    sender=owner)  # fmt: skip
    queued = deploy(w3, arts["QueuedDepositFund"], usd.address, "Queued Fund", "QUE", owner, sender=owner)
    for v, seed in ((fee_fund, 3_000_000), (hybrid, 2_000_000), (queued, 1_000_000)):
        send(w3, usd.functions.approve(v.address, MAX), owner)
        send(w3, usd.functions.approve(v.address, MAX), market)
        send(w3, v.functions.deposit(seed * USD6, owner) if v is not queued else
             v.functions.requestDeposit(seed * USD6, owner, owner), owner)  # fmt: skip
        if v is queued:
            send(w3, v.functions.fulfillDeposit(100, seed * USD6), owner)
            send(w3, v.functions.deposit(seed * USD6, owner, owner), owner)
    send(w3, hybrid.functions.setFulfilmentFee(HYBRID_FULFIL_BPS), owner)  # after the seeds: they pay none
    send(w3, queued.functions.setFulfilmentFee(QUEUED_FULFIL_BPS, recipient), owner)
    uni = deploy_uniswap(w3, owner)
    pair = create_pool(uni, gold, usd, 20_000 * GOLD8, int(20_000 * GOLD_USD * USD6), owner)
    send(w3, usd.functions.approve(uni.router.address, MAX), market)
    send(w3, gold.functions.approve(uni.router.address, MAX), market)
    oracle = deploy(w3, arts["IssuerOracle"], owner, 2 * 86_400, sender=owner)
    feed = deploy(w3, own["PriceFeed"], 8, "XAU / USD", owner, sender=owner)
    n = Novel(w3, arts, owner, market, trader, recipient, usd, gold, fee_fund, hybrid, queued, uni, pair, oracle, feed)
    for v, nav in ((fee_fund, 1.0234), (hybrid, 10.5), (queued, 2.0)):
        n.set_nav(v, nav)
    send(w3, feed.functions.updateAnswer(int(GOLD_USD * 1e8)), owner)
    send(w3, oracle.functions.setPrice(int(10.5 * 1e18)), owner)
    return n


def data_assets(n: Novel, abis: dict[str, str] | None = None) -> dict[str, Any]:
    """The data source's assets, from the addresses alone (decimals are read from the chain)."""
    return {
        "FEE": {"source": "vault", "address": n.fee_fund.address},
        "HYB": {"source": "vault", "address": n.hybrid.address},
        "XAU8": {"source": "univ2", "address": n.gold.address, "pair": n.pair.address},
    }


def venue_assets(n: Novel, abis: dict[str, str] | None = None) -> dict[str, Any]:
    """The venue's assets, from the addresses alone (plus the funds' ABI files, for their errors)."""
    abis = abis or {}
    out: dict[str, Any] = {
        "FEE": {"kind": "vault", "address": n.fee_fund.address},
        "HYB": {"kind": "vault", "address": n.hybrid.address},
        "XAU8": {"kind": "univ2", "address": n.gold.address,
                 "univ2": {"router": n.uni.router.address, "pair": n.pair.address}},
    }  # fmt: skip
    if "FeeFund" in abis:
        out["FEE"]["abi"] = abis["FeeFund"]
    if "HybridFund" in abis:
        out["HYB"]["abi"] = abis["HybridFund"]
    return out
