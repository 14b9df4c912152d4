"""The ``evm`` data source: prices and hourly volumes read from the chain itself.

Prices: a fund's NAV per share (``convertToAssets`` of one share), a pool's mid (quote reserve over
base reserve), or a Chainlink AggregatorV3 feed (``latestRoundData``). An hourly bar's close is the
price at the last block at or before the hour's end (``eth_call`` at that block, so the node must
keep the state of the look-back: anvil does, a public chain needs an archive node). Volume: the
units traded inside the hour, from the pool's ``Swap`` events (base side) or the vault's
``Deposit`` and ``Withdraw`` events (shares): the whole market's flow, not only ours, which is what
the liquidity limits need. Closed hours never change, so they are cached; a cycle reads only the
newest hour. An hour before the chain's first block is a ``DataError``, never a guess.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from web3 import Web3
from web3.exceptions import ContractLogicError

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Bars, Snapshot
from bot.errors import DataError, VenueError
from connectors.evm.chain import BlockIndex, RevertDecoder, abis, connect, rpc

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
HOUR = timedelta(hours=1)


class EvmPriceConfig(ComponentConfig):
    source: Literal["vault", "pool", "feed"]
    address: str = Field(pattern=ADDRESS, description="the vault, the token (source pool) or the feed")
    pool: str | None = Field(default=None, pattern=ADDRESS, description="source pool, or the volume of a feed asset")
    decimals: int = Field(default=18, ge=0, le=36)
    kind: str = "tokenized"

    @model_validator(mode="after")
    def _pool(self) -> EvmPriceConfig:
        if self.source == "pool" and self.pool is None:
            raise ValueError("source 'pool' needs pool")
        return self


class EvmDataConfig(ComponentConfig):
    rpc_url: str = Field(min_length=1)
    chain_id: int = Field(ge=1)
    quote_decimals: int = Field(default=6, ge=0, le=36)
    assets: dict[str, EvmPriceConfig] = Field(min_length=1)
    rpc_timeout_s: float = Field(default=10.0, gt=0, le=300)


def volume_logs(w3: Web3, kind: str, vault: Any, pool: Any, from_block: int, to_block: int) -> list[tuple[int, int]]:
    """(block number, units traded) of every trade in the blocks: vault shares or pool base tokens."""
    if to_block < from_block:
        return []
    out: list[tuple[int, int]] = []
    if kind == "vault":
        for ev in (vault.events.Deposit, vault.events.Withdraw):
            for lg in ev.get_logs(from_block=from_block, to_block=to_block):
                out.append((int(lg["blockNumber"]), int(lg["args"]["shares"])))
    elif pool is not None:
        base = pool.functions.base().call()
        for lg in pool.events.Swap.get_logs(from_block=from_block, to_block=to_block):
            a = lg["args"]
            out.append((int(lg["blockNumber"]), int(a["amountIn"] if a["tokenIn"] == base else a["amountOut"])))
    return out


def traded_units(
    w3: Web3,
    where: str,
    kind: str,
    vault: Any,
    pool: Any,
    decimals: int,
    start_ts: int,
    end_ts: int,
    latest: int,
    index: BlockIndex | None = None,
) -> float:
    """Units traded in blocks with timestamps in (start_ts, end_ts]."""
    idx = index or BlockIndex(w3)
    try:
        first = rpc(where, "block index", lambda: idx.at(start_ts, latest))
        last = rpc(where, "block index", lambda: idx.at(end_ts, latest))
        if last is None:
            return 0.0
        logs = rpc(where, "logs", lambda: volume_logs(w3, kind, vault, pool, (first or -1) + 1, last))
    except VenueError:
        raise
    return sum(u for _, u in logs) / 10**decimals


class EvmDataSource:
    """Hourly bars and latest prices of on-chain assets."""

    def __init__(self, cfg: EvmDataConfig, ctx: ComponentContext) -> None:
        self.cfg = cfg
        self.w3 = connect(cfg.rpc_url, cfg.rpc_timeout_s)
        self.index = BlockIndex(self.w3)
        self.decoder = RevertDecoder()
        a = abis()
        self.c: dict[str, Any] = {}
        self.pools: dict[str, Any] = {}
        for name, p in cfg.assets.items():
            abi = {"vault": a["FundVault"], "pool": a["RwaToken"], "feed": a["PriceFeed"]}[p.source]
            self.c[name] = self.w3.eth.contract(address=Web3.to_checksum_address(p.address), abi=abi)
            if p.pool:
                self.pools[name] = self.w3.eth.contract(
                    address=Web3.to_checksum_address(p.pool), abi=a["ConstantProductPool"]
                )
        self._cache: dict[tuple[str, int], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._checked = False

    def assets(self) -> tuple[str, ...]:
        return tuple(self.cfg.assets)

    def asset_kind(self, asset: str) -> str:
        return self.cfg.assets[asset].kind

    def _call(self, what: str, fn: Any) -> Any:
        try:
            if not self._checked:
                cid = rpc("data:evm", "eth_chainId", lambda: self.w3.eth.chain_id)
                if cid != self.cfg.chain_id:
                    raise DataError(f"data evm: node {self.cfg.rpc_url} is on chain {cid}, not {self.cfg.chain_id}")
                self._checked = True
            return rpc("data:evm", what, fn)
        except VenueError as exc:
            raise DataError(f"data evm: {exc}") from None

    def price_at(self, asset: str, block: int | str) -> float:
        p = self.cfg.assets[asset]
        c = self.c[asset]
        try:
            if p.source == "vault":
                raw = self._call("convertToAssets", lambda: c.functions.convertToAssets(10**p.decimals).call(
                    block_identifier=block))  # fmt: skip
                return raw / 10**self.cfg.quote_decimals
            if p.source == "pool":
                pool = self.pools[asset]
                rb, rq = self._call("getReserves", lambda: pool.functions.getReserves().call(block_identifier=block))
                if rb == 0:
                    raise DataError(f"data evm: {asset}: pool {pool.address} has no liquidity at block {block}")
                return (rq / 10**self.cfg.quote_decimals) / (rb / 10**p.decimals)
            _, answer, _, _, _ = self._call("latestRoundData", lambda: c.functions.latestRoundData().call(
                block_identifier=block))  # fmt: skip
            dec = self._call("decimals", lambda: c.functions.decimals().call())
            return answer / 10**dec
        except ContractLogicError as exc:
            raise DataError(f"data evm: {asset} at block {block}: {self.decoder.from_exception(exc)}") from None

    def bars(self, assets: Sequence[str], end: datetime, hours: int) -> Bars:
        end = end.astimezone(UTC)
        last_close = end.replace(minute=0, second=0, microsecond=0)
        closes = [last_close - HOUR * k for k in range(hours - 1, -1, -1)]
        with self._lock:
            head = self._call("latest block", lambda: self.w3.eth.get_block("latest"))
            latest, head_ts = int(head["number"]), int(head["timestamp"])
            ts = [int(t.timestamp()) for t in [closes[0] - HOUR, *closes]]
            blocks = [self._call("block index", lambda t=t: self.index.at(t, latest)) for t in ts]
            if blocks[1] is None:
                genesis = datetime.fromtimestamp(self.index.timestamp(0), UTC)
                raise DataError(
                    f"data evm: the chain starts at {genesis.isoformat()}, after the first bar's close "
                    f"{closes[0].isoformat()}; {hours} hourly bars are not there yet"
                )
            close = np.zeros((len(closes), len(assets)))
            volume = np.zeros((len(closes), len(assets)))
            for j, a in enumerate(assets):
                if a not in self.cfg.assets:
                    raise DataError(f"data evm: unknown asset {a} (known: {sorted(self.cfg.assets)})")
                missing = [k for k, t in enumerate(ts[1:]) if (a, t) not in self._cache]
                if missing:
                    lo, hi = blocks[missing[0]], blocks[missing[-1] + 1]
                    p = self.cfg.assets[a]
                    start = (lo if lo is not None else -1) + 1
                    logs = self._call(
                        "logs",
                        lambda p=p, a=a, s=start, hi=hi: volume_logs(
                            self.w3, p.source, self.c[a], self.pools.get(a), s, hi
                        ),
                    )
                    for k in missing:
                        b_lo, b_hi = blocks[k], blocks[k + 1]
                        units = sum(u for n, u in logs if (b_lo is None or n > b_lo) and n <= b_hi)
                        value = (self.price_at(a, b_hi), units / 10**p.decimals)
                        if head_ts > ts[k + 1]:  # a later block exists: this hour is closed for good
                            self._cache[(a, ts[k + 1])] = value
                        close[k, j], volume[k, j] = value
                for k, t in enumerate(ts[1:]):
                    if (a, t) in self._cache:
                        close[k, j], volume[k, j] = self._cache[(a, t)]
        return Bars(tuple(assets), tuple(closes), close, volume)

    def latest(self, assets: Sequence[str], now: datetime) -> Snapshot:
        head = self._call("latest block", lambda: self.w3.eth.get_block("latest"))
        prices = np.array([self.price_at(a, int(head["number"])) for a in assets])
        t = datetime.fromtimestamp(int(head["timestamp"]), UTC)
        return Snapshot(tuple(assets), prices, tuple(t for _ in assets))
