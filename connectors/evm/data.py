"""The ``evm`` data source: prices and hourly volumes read from the chain itself.

Sources, one per way a tokenized asset is priced on chain (``source`` of each asset):

* ``vault`` (ERC-4626, ERC-7540): ``convertToAssets(1 share)`` in the vault's ``asset()``; volume: the
  ``Deposit`` and ``Withdraw`` shares.
* ``pool`` (the project's x·y=k pool): quote reserve over base reserve; volume: ``Swap`` base amounts.
* ``univ2`` (a Uniswap V2 pair, ``pair``): the other token's reserve over the token's; volume: the
  token's ``Swap`` amounts.
* ``feed`` (Chainlink AggregatorV3): the ``latestRoundData`` answer over 10^``decimals()``;
* ``oracle`` (an issuer's own view): output ``oracle.index`` of ``oracle.call`` over 10^``oracle.decimals``;
  for both, the volume of the ``pair``/``pool`` swaps of ``token``, or of ``token``'s mints and burns
  (an issuer's subscriptions and redemptions) when only ``token`` is given, else none.

Decimals come from the chain: the shares' and the vault asset's ``decimals()``, both tokens of a
pool or pair, the feed's ``decimals()``; a configured ``decimals`` (the asset's token or shares) is
checked against the chain, and a mismatch is an error, never a price off by powers of ten. A pool or
pair must hold the token the config names (``pool`` pointed at a Uniswap V2 pair says so and names
``univ2``). Every failure is a ``DataError`` that names the asset, the contract and the call
(``0x….convertToAssets(uint256) at block 812 reverted: AsyncPreviewDisabled()``; reverts decoded
with the project's, OpenZeppelin 5's and the configured ``abi``/``errors``), never a traceback.

An hourly bar's close is the price at the last block at or before the hour's end (``eth_call`` at that
block, so the node must keep the state of the look-back: anvil does, a public chain needs an archive
node). Volume is the whole market's flow inside the hour, not only ours, which is what the liquidity
limits need. Closed hours never change, so they are cached; a cycle reads only the newest hour. An
hour before the chain's first block is a ``DataError``, never a guess.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from web3 import Web3
from web3.exceptions import ContractLogicError

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Bars, Snapshot
from bot.errors import DataError, VenueError
from connectors.evm.async_requests import _sig_abi
from connectors.evm.chain import (
    ERROR_SIGNATURE,
    BlockIndex,
    RevertDecoder,
    Unreachable,
    abis,
    connect,
    error_abi,
    known_abis,
    load_abi,
    rpc,
)
from connectors.evm.univ2 import runtime_abis

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
SIGNATURE = r"^[A-Za-z_][A-Za-z0-9_]*\([A-Za-z0-9_,\[\]]*\)$"
HOUR = timedelta(hours=1)
ZERO = "0x0000000000000000000000000000000000000000"


class OracleSpec(ComponentConfig):
    """An issuer's price view that is not an AggregatorV3, by its signature: ``getPriceData()``
    returning ``(uint256 price, uint256 timestamp)`` with 18 decimals is
    ``{ call = "getPriceData()", outputs = ["uint256", "uint256"], index = 0, decimals = 18 }``."""

    call: str = Field(pattern=SIGNATURE, description="the view, e.g. getPrice() or getPrice(address)")
    args: list[str | int] = Field(default_factory=list, description="its arguments (addresses, integers)")
    outputs: tuple[str, ...] = Field(default=("uint256",), min_length=1, strict=False)
    index: int = Field(default=0, ge=0, description="the output holding the price")
    decimals: int | None = Field(default=None, ge=0, le=36, description="decimals of the price")
    decimals_call: str | None = Field(default=None, pattern=SIGNATURE, description="or a view returning them")

    @model_validator(mode="after")
    def _check(self) -> OracleSpec:
        if self.index >= len(self.outputs):
            raise ValueError(f"index {self.index} is not one of the {len(self.outputs)} outputs")
        if (self.decimals is None) == (self.decimals_call is None):
            raise ValueError("give exactly one of decimals and decimals_call (the price's decimals)")
        n = len([t for t in self.call.split("(", 1)[1].rstrip(")").split(",") if t])
        if n != len(self.args):
            raise ValueError(f"call {self.call} takes {n} arguments, args has {len(self.args)}")
        return self


class EvmPriceConfig(ComponentConfig):
    source: Literal["vault", "pool", "univ2", "feed", "oracle"]
    address: str = Field(pattern=ADDRESS, description="the vault, the token (pool, univ2), the feed or the oracle")
    pool: str | None = Field(default=None, pattern=ADDRESS, description="source pool, or the volume of a feed asset")
    pair: str | None = Field(default=None, pattern=ADDRESS, description="source univ2: the Uniswap V2 pair")
    token: str | None = Field(default=None, pattern=ADDRESS, description="feed/oracle: the token traded (volume)")
    oracle: OracleSpec | None = Field(default=None, description="source oracle: the issuer's price view")
    decimals: int | None = Field(default=None, ge=0, le=36, description="the token's or shares'; None: read")
    abi: str | None = Field(default=None, min_length=1, description="JSON file of the contract's ABI (its errors)")
    errors: list[str] = Field(default_factory=list, description="custom error signatures, for revert messages")
    kind: str = "tokenized"

    @model_validator(mode="after")
    def _pool(self) -> EvmPriceConfig:
        if self.source == "pool" and self.pool is None:
            raise ValueError("source 'pool' needs pool")
        if self.source == "univ2" and self.pair is None:
            raise ValueError("source 'univ2' needs pair (the Uniswap V2 pair of the token)")
        if (self.source == "oracle") != (self.oracle is not None):
            raise ValueError("oracle is required for source 'oracle' and only for it")
        if self.source in ("vault", "pool", "univ2") and self.token is not None:
            raise ValueError(f"token is for the volume of a feed or oracle asset, not source '{self.source}'")
        if self.source == "vault" and (self.pool or self.pair):
            raise ValueError("source 'vault': its volume is its own Deposit and Withdraw events (no pool, no pair)")
        if self.source in ("feed", "oracle") and self.pair is not None and self.token is None:
            raise ValueError("the volume of a pair needs token: which of its two tokens the asset is")
        if self.pool is not None and self.pair is not None:
            raise ValueError("give pool or pair, not both")
        bad = [e for e in self.errors if not re.match(ERROR_SIGNATURE, e.strip())]
        if bad:
            raise ValueError(f"errors: {bad} are not error signatures like 'StalePrice(uint256,uint256)'")
        return self


class EvmDataConfig(ComponentConfig):
    rpc_url: str = Field(min_length=1)
    chain_id: int = Field(ge=1)
    quote_decimals: int | None = Field(
        default=None, ge=0, le=36, description="None: read; else every quote-side token must have these decimals"
    )
    assets: dict[str, EvmPriceConfig] = Field(min_length=1)
    rpc_timeout_s: float = Field(default=10.0, gt=0, le=300)


def volume_logs(w3: Web3, kind: str, vault: Any, pool: Any, from_block: int, to_block: int) -> list[tuple[int, int]]:
    """(block number, units traded) of every trade in the blocks: vault shares or pool base tokens (the
    project's pool; the data source reads Uniswap V2 pairs and mints and burns itself)."""
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
    first = rpc(where, "block index", lambda: idx.at(start_ts, latest))
    last = rpc(where, "block index", lambda: idx.at(end_ts, latest))
    if last is None:
        return 0.0
    try:
        logs = rpc(where, "logs", lambda: volume_logs(w3, kind, vault, pool, (first or -1) + 1, last))
    except ContractLogicError as exc:
        who = getattr(pool if pool is not None else vault, "address", "")
        raise VenueError(where, f"volume of {who}: {RevertDecoder().from_exception(exc)}") from None
    return sum(u for _, u in logs) / 10**decimals


@dataclass(frozen=True)
class _Meta:
    """What one asset's price and volume need, read once from the chain."""

    unit: int  # 10 ** decimals of the asset's token or shares
    quote_unit: int  # 10 ** decimals of the price's denominator: vault asset, pool/pair quote, feed/oracle
    volume: str  # vault, pool, univ2, mint_burn, none
    token: str | None = None  # the traded token (univ2, pool, mint_burn)
    token_is_0: bool = False  # univ2: the token is the pair's token0


class EvmDataSource:
    """Hourly bars and latest prices of on-chain assets."""

    def __init__(self, cfg: EvmDataConfig, ctx: ComponentContext) -> None:
        self.cfg = cfg
        self.w3 = connect(cfg.rpc_url, cfg.rpc_timeout_s)
        self.index = BlockIndex(self.w3)
        extra: dict[str, list[dict[str, Any]]] = {}
        for name, p in cfg.assets.items():
            if p.abi is not None:
                extra[f"asset {name}"] = load_abi(p.abi, f"data.options.assets.{name}.abi")
            if p.errors:
                extra[f"asset {name} errors"] = [error_abi(e) for e in p.errors]
        self.decoder = RevertDecoder(known_abis(extra))
        a, uni = abis(), runtime_abis()
        c = self.w3.eth.contract
        self.c: dict[str, Any] = {}
        self.pools: dict[str, Any] = {}
        self.pairs: dict[str, Any] = {}
        for name, p in cfg.assets.items():
            addr = Web3.to_checksum_address(p.address)
            if p.source == "oracle":
                assert p.oracle is not None
                views = [_sig_abi(p.oracle.call, p.oracle.outputs)]
                if p.oracle.decimals_call:
                    views.append(_sig_abi(p.oracle.decimals_call, ("uint8",)))
                self.c[name] = c(address=addr, abi=views)
            else:
                abi = {"vault": a["FundVault"], "pool": a["RwaToken"], "univ2": a["Stablecoin"],
                       "feed": a["PriceFeed"]}[p.source]  # fmt: skip
                self.c[name] = c(address=addr, abi=abi)
            if p.pool:
                self.pools[name] = c(address=Web3.to_checksum_address(p.pool), abi=a["ConstantProductPool"])
            if p.pair:
                self.pairs[name] = c(address=Web3.to_checksum_address(p.pair), abi=uni["UniswapV2Pair"])
        self._erc20 = a["Stablecoin"]
        self._meta: dict[str, _Meta] = {}
        self._cache: dict[tuple[str, int], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._checked = False

    def assets(self) -> tuple[str, ...]:
        return tuple(self.cfg.assets)

    def asset_kind(self, asset: str) -> str:
        return self.cfg.assets[asset].kind

    # -- reading ------------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """One RPC interaction: a transport or node failure is a DataError naming ``what``."""
        try:
            if not self._checked:
                cid = rpc("data:evm", "eth_chainId", lambda: self.w3.eth.chain_id)
                if cid != self.cfg.chain_id:
                    raise DataError(f"data evm: node {self.cfg.rpc_url} is on chain {cid}, not {self.cfg.chain_id}")
                self._checked = True
            return rpc("data:evm", what, fn)
        except Unreachable as exc:
            raise DataError(f"data evm: {exc}") from None
        except VenueError as exc:
            raise DataError(f"data evm: {exc}") from None

    def _read(self, asset: str, contract: Any, call: str, fn: Callable[[], Any], block: int | str = "latest") -> Any:
        """A contract call of ``asset``'s source; every failure names the contract and the call."""
        at = f" at block {block}" if block != "latest" else ""
        what = f"{asset}: {contract.address}.{call}{at}"
        kind = self.cfg.assets[asset].source
        try:
            return self._call(what, fn)
        except ContractLogicError as exc:
            why = self.decoder.from_exception(exc)
            if why in ("execution reverted", "reverted without data", "reverted without a reason"):
                why += f" (no reason: a contract without {call.split('(')[0]}, or not what source '{kind}' needs?)"
            raise DataError(f"data evm: {what} reverted: {why}") from None
        except DataError as exc:
            text = str(exc)
            if "BadFunctionCallOutput" in text or "InsufficientDataBytes" in text:
                raise DataError(f"data evm: {what} returned no valid answer: no contract at {contract.address}, or "
                                f"not the contract source '{kind}' needs") from None  # fmt: skip
            raise
        except (ValueError, TypeError, OverflowError) as exc:  # an answer that does not decode as declared
            raise DataError(f"data evm: {what} answered something unexpected: {type(exc).__name__}: {exc}") from None

    def _token_decimals(self, asset: str, address: str) -> int:
        tok = self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=self._erc20)
        return int(self._read(asset, tok, "decimals()", lambda: tok.functions.decimals().call()))

    def _checked_unit(self, asset: str, dec: int, what: str) -> int:
        want = self.cfg.assets[asset].decimals
        if want is not None and want != dec:
            raise DataError(f"data evm: {asset}: {what} has {dec} decimals, the config says {want}")
        return 10**dec

    def _quote_unit(self, asset: str, dec: int, what: str) -> int:
        if self.cfg.quote_decimals is not None and dec != self.cfg.quote_decimals:
            raise DataError(f"data evm: {asset}: {what} has {dec} decimals, quote_decimals says "
                            f"{self.cfg.quote_decimals}")  # fmt: skip
        return 10**dec

    def meta(self, asset: str) -> _Meta:
        """Decimals and what the volume comes from, read once (and checked against the config)."""
        if asset in self._meta:
            return self._meta[asset]
        p, c = self.cfg.assets[asset], self.c[asset]
        if p.source == "vault":
            unit = self._checked_unit(asset, int(self._read(asset, c, "decimals()", c.functions.decimals().call)),
                                      f"vault {c.address}'s shares")  # fmt: skip
            underlying = self._read(asset, c, "asset()", c.functions.asset().call)
            qu = self._quote_unit(asset, self._token_decimals(asset, underlying), f"the vault's asset {underlying}")
            m = _Meta(unit, qu, "vault")
        elif p.source == "pool":
            pool = self.pools[asset]
            try:
                base = self._read(asset, pool, "base()", pool.functions.base().call)
                quote = self._read(asset, pool, "quote()", pool.functions.quote().call)
            except DataError as exc:
                raise DataError(f"{exc} (source 'pool' is the project's constant-product pool; for a Uniswap V2 "
                                "pair use source = 'univ2' with pair)") from None  # fmt: skip
            if base.lower() != p.address.lower():
                raise DataError(f"data evm: {asset}: pool {pool.address} trades {base}, not the token {p.address}")
            unit = self._checked_unit(asset, self._token_decimals(asset, base), f"token {base}")
            m = _Meta(unit, self._quote_unit(asset, self._token_decimals(asset, quote), f"the pool's quote {quote}"),
                      "pool", base)  # fmt: skip
        elif p.source == "univ2":
            m = self._pair_meta(asset, self.pairs[asset], p.address)
        else:
            if p.source == "feed":
                qu = 10 ** int(self._read(asset, c, "decimals()", c.functions.decimals().call))
            else:
                o = p.oracle
                assert o is not None
                if o.decimals is not None:
                    qu = 10**o.decimals
                else:
                    assert o.decimals_call is not None
                    fn = getattr(c.functions, o.decimals_call.split("(")[0])
                    qu = 10 ** int(self._read(asset, c, o.decimals_call, lambda: fn().call()))
            if p.pair is not None:
                assert p.token is not None
                pm = self._pair_meta(asset, self.pairs[asset], p.token)
                m = _Meta(pm.unit, qu, "univ2", pm.token, pm.token_is_0)
            elif p.pool is not None:
                pool = self.pools[asset]
                base = self._read(asset, pool, "base()", pool.functions.base().call)
                unit = self._checked_unit(asset, self._token_decimals(asset, base), f"token {base}")
                m = _Meta(unit, qu, "pool", base)
            elif p.token is not None:
                unit = self._checked_unit(asset, self._token_decimals(asset, p.token), f"token {p.token}")
                m = _Meta(unit, qu, "mint_burn", Web3.to_checksum_address(p.token))
            else:
                m = _Meta(10 ** (p.decimals or 0), qu, "none")
        self._meta[asset] = m
        return m

    def _pair_meta(self, asset: str, pair: Any, token: str) -> _Meta:
        try:
            t0 = self._read(asset, pair, "token0()", pair.functions.token0().call)
            t1 = self._read(asset, pair, "token1()", pair.functions.token1().call)
        except DataError as exc:
            raise DataError(f"{exc} (source 'univ2' needs a Uniswap V2 pair)") from None
        if token.lower() not in (t0.lower(), t1.lower()):
            raise DataError(f"data evm: {asset}: pair {pair.address} holds {t0} and {t1}, not the token {token}")
        is0 = token.lower() == t0.lower()
        other = t1 if is0 else t0
        unit = self._checked_unit(asset, self._token_decimals(asset, token), f"token {token}")
        qu = self._quote_unit(asset, self._token_decimals(asset, other), f"the pair's other token {other}")
        return _Meta(unit, qu, "univ2", Web3.to_checksum_address(token), is0)

    def price_at(self, asset: str, block: int | str) -> float:
        p, c, m = self.cfg.assets[asset], self.c[asset], self.meta(asset)
        if p.source == "vault":
            fn = c.functions.convertToAssets(m.unit)
            raw = self._read(asset, c, "convertToAssets(uint256)", lambda: fn.call(block_identifier=block), block)
            return int(raw) / m.quote_unit
        if p.source == "pool":
            pool = self.pools[asset]
            rb, rq = self._read(asset, pool, "getReserves()",
                                lambda: pool.functions.getReserves().call(block_identifier=block), block)  # fmt: skip
            if rb == 0:
                raise DataError(f"data evm: {asset}: pool {pool.address} has no liquidity at block {block}")
            return (rq / m.quote_unit) / (rb / m.unit)
        if p.source == "univ2":
            pair = self.pairs[asset]
            fn = pair.functions.getReserves()
            r0, r1, _ = self._read(asset, pair, "getReserves()", lambda: fn.call(block_identifier=block), block)
            rt, rq = (r0, r1) if m.token_is_0 else (r1, r0)
            if rt == 0 or rq == 0:
                raise DataError(f"data evm: {asset}: pair {pair.address} has no liquidity at block {block}")
            return (rq / m.quote_unit) / (rt / m.unit)
        if p.source == "feed":
            fn = c.functions.latestRoundData()
            _, answer, _, _, _ = self._read(asset, c, "latestRoundData()", lambda: fn.call(block_identifier=block),
                                            block)  # fmt: skip
        else:
            o = p.oracle
            assert o is not None
            fn = getattr(c.functions, o.call.split("(")[0])
            args = [Web3.to_checksum_address(x) if isinstance(x, str) and x.startswith("0x") and len(x) == 42 else x
                    for x in o.args]  # fmt: skip
            out = self._read(asset, c, o.call, lambda: fn(*args).call(block_identifier=block), block)
            answer = out[o.index] if isinstance(out, (list, tuple)) else out
        if not isinstance(answer, int) or answer <= 0:
            raise DataError(f"data evm: {asset}: {c.address} ({p.source}) answers {answer!r} at block {block}: "
                            "not a positive price")  # fmt: skip
        return answer / m.quote_unit

    def volume_logs(self, asset: str, from_block: int, to_block: int) -> list[tuple[int, int]]:
        """(block number, raw units traded) of the market's trades of ``asset`` in the blocks."""
        if to_block < from_block:
            return []
        m = self.meta(asset)
        rng = {"from_block": from_block, "to_block": to_block}
        out: list[tuple[int, int]] = []
        if m.volume == "vault":
            c = self.c[asset]
            for name in ("Deposit", "Withdraw"):
                ev = getattr(c.events, name)
                for lg in self._read(asset, c, f"{name} logs", lambda ev=ev: ev.get_logs(**rng)):
                    out.append((int(lg["blockNumber"]), int(lg["args"]["shares"])))
        elif m.volume == "pool":
            pool = self.pools[asset]
            for lg in self._read(asset, pool, "Swap logs", lambda: pool.events.Swap.get_logs(**rng)):
                a = lg["args"]
                out.append((int(lg["blockNumber"]), int(a["amountIn"] if a["tokenIn"] == m.token else a["amountOut"])))
        elif m.volume == "univ2":
            pair = self.pairs[asset]
            k = "0" if m.token_is_0 else "1"
            for lg in self._read(asset, pair, "Swap logs", lambda: pair.events.Swap.get_logs(**rng)):
                a = lg["args"]
                out.append((int(lg["blockNumber"]), abs(int(a[f"amount{k}In"]) - int(a[f"amount{k}Out"]))))
        elif m.volume == "mint_burn":  # an issuer's token: subscriptions mint, redemptions burn
            assert m.token is not None
            tok = self.w3.eth.contract(address=m.token, abi=self._erc20)
            for lg in self._read(asset, tok, "Transfer logs", lambda: tok.events.Transfer.get_logs(**rng)):
                a = lg["args"]
                if ZERO in (a["from"], a["to"]):
                    out.append((int(lg["blockNumber"]), int(a["value"])))
        return out

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
                    start = (lo if lo is not None else -1) + 1
                    logs = self.volume_logs(a, start, int(hi))  # type: ignore[arg-type]
                    unit = self.meta(a).unit
                    for k in missing:
                        b_lo, b_hi = blocks[k], blocks[k + 1]
                        units = sum(u for n, u in logs if (b_lo is None or n > b_lo) and n <= b_hi)
                        value = (self.price_at(a, b_hi), units / unit)  # type: ignore[arg-type]
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
