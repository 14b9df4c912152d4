"""A Binance-spot REST emulator on 127.0.0.1 that unmodified ccxt talks to over real HTTP.

Why an emulator and not mocks: the connector's whole job is to survive what a real exchange does
to it (signed requests, filters, rate limits, 5xx, requests that time out after the order was
accepted). Mocking ccxt would test our idea of ccxt; this tests ccxt's real request building,
signing, parsing and error mapping against the wire format of one real API (Binance spot v3):
``exchangeInfo``, ``ticker/24hr``, ``ticker/bookTicker``, ``depth``, ``klines``, ``account``,
``order`` (POST/GET/DELETE with ``newClientOrderId`` / ``origClientOrderId``), ``openOrders``,
``myTrades``, with the HMAC-SHA256 signature checked on every private call.

Everything is deterministic: prices follow a seeded random walk keyed by the hour, the book is
rebuilt from the mid with fixed levels on every order (liquidity replenishes between orders), an
order walks the levels up to its limit and the rest rests. Fault switches (``Fault``) make the
next matching requests answer 429 (with ``Retry-After``), 500, 503, time out or reset the
connection before or after the order is accepted, report insufficient funds or an invalid order, or
lose an order lookup; ``partial_fill`` caps immediate fills and ``fill_rest_after_polls`` lets a
resting order fill after it was polled; ``latency_s`` holds every answer that long.

Fees are charged in the quote asset by default. ``commission_asset`` switches to Binance's other
ways: ``"received"`` (no BNB: a buy pays in the base asset it receives, a sell in the quote) or a
third asset such as ``"BNB"`` (paid from that balance at its mid; the asset needs a market).

Wallet (Binance's ``/sapi/v1/capital`` endpoints, what ccxt's ``fetch_deposit_address``, ``withdraw``,
``fetch_withdrawals``, ``fetch_deposits`` and ``fetch_deposit_withdraw_fees`` call): ``config/getall``
(one network per coin in ``networks``, fee ``withdraw_fees``), ``deposit/address``, ``withdraw/apply``
(with ``withdrawOrderId``; a second one with the same id is refused, -4001; an amount under the
network's ``withdrawMin`` (10) is refused, -4022, and a network in ``withdraw_disabled`` -4019),
``withdraw/history`` and ``deposit/hisrec`` (filters ``coin``, ``withdrawOrderId`` / ``txId``,
``status``, ``startTime`` / ``endTime``, ``offset`` / ``limit``, newest first). A withdrawal debits
``amount`` from the free balance at once and the fee is taken out of it, as Binance does (its
``transactionFee`` is inside ``amount``): the address receives ``amount − transactionFee``, and the
history reports ``amount`` and ``transactionFee``. It is awaiting approval (2) when accepted and
processing (4) once a history query has seen it, completed (6, with a ``txId``) once
``withdraw_polls_to_complete`` history queries have returned it or it is
``withdraw_seconds_to_complete`` old. ``Fault("withdraw_fails", "POST", WITHDRAW)`` accepts one and
fails it at the next history query (status 5, failure), ``Fault("withdraw_rejected", ...)`` the same
with status 3 (rejected); either way the whole amount, fee included, goes back to the free balance.
``add_deposit`` / ``credit_deposit`` play an incoming deposit (an ERC-20 transfer to the deposit
address): pending (0), then success (1) and credited to the free balance.

Every request is logged (``requests``: method, path, parameters) with its arrival and answer times
on ``time.monotonic()`` (``timeline``), and ``peak_in_flight`` is the most requests it served at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

HOUR_MS = 3_600_000
ORIGIN = datetime(2025, 1, 1, tzinfo=UTC)
ORIGIN_MS = int(ORIGIN.timestamp() * 1000)
PATH_HOURS = 24 * 365 * 4


@dataclass(frozen=True)
class MarketSpec:
    """One spot market: ``base``/``quote`` with its filters and the shape of its simulated book."""

    base: str
    price: float = 100.0
    tick_size: str = "0.01"
    step_size: str = "0.001"
    min_qty: str = "0.001"
    min_notional: str = "5"
    annual_vol: float = 0.2
    hourly_volume: float = 50_000.0
    half_spread_bps: float = 2.0
    levels: int = 10
    level_qty: float = 500.0
    level_step_bps: float = 1.0


@dataclass
class Fault:
    """Answer the next ``times`` requests matching ``method`` and ``path`` with ``kind``.

    kinds: ``429`` (with ``Retry-After: retry_after`` unless None), ``500`` (JSON -1001), ``503``
    (HTML, as a load balancer sends), ``timeout_before`` (hold the request past the client's timeout
    and drop it unprocessed), ``timeout_after`` (process it, then hold the answer past the timeout),
    ``reset_before`` / ``reset_after`` (reset the TCP connection, RST, without an answer, before or
    after processing it), ``insufficient`` (-2010), ``invalid`` (-1013 LOT_SIZE), ``not_found``
    (-2013, an order lookup that misses once), ``auth`` (-2015), ``withdraw_fails`` /
    ``withdraw_rejected`` (a withdrawal accepted, then failed, status 5, or rejected, status 3, and
    refunded at the next history query).
    """

    kind: str
    method: str = "*"
    path: str = "*"
    times: int = 1
    symbol: str | None = None
    hits: int = 0
    retry_after: str | None = "1"


@dataclass
class EmuOrder:
    symbol: str
    order_id: int
    client_id: str
    side: str
    type: str
    price: Decimal
    qty: Decimal
    time_ms: int
    executed: Decimal = Decimal(0)
    quote_qty: Decimal = Decimal(0)
    status: str = "NEW"
    update_ms: int = 0
    polls: int = 0
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.executed


@dataclass
class EmuWithdrawal:
    """One withdrawal: ``amount`` left the balance, ``amount − fee`` goes to ``address``."""

    id: str
    client_id: str
    coin: str
    network: str
    address: str
    tag: str
    amount: Decimal
    fee: Decimal
    apply_ms: int
    applied_at: float  # time.monotonic()
    status: int = 2
    tx_id: str = ""
    polls: int = 0
    fail: int | None = None  # the status it ends in instead of completing (5 failure, 3 rejected)

    def json(self) -> dict[str, Any]:
        applied = datetime.fromtimestamp(self.apply_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        d: dict[str, Any] = {
            "id": self.id, "amount": _s(self.amount), "transactionFee": _s(self.fee), "coin": self.coin,
            "status": self.status, "address": self.address, "applyTime": applied, "network": self.network,
            "transferType": 0, "withdrawOrderId": self.client_id, "info": "", "confirmNo": 0, "walletType": 0,
            "txKey": "",
        }  # fmt: skip
        if self.tag:
            d["addressTag"] = self.tag
        if self.tx_id:
            d["txId"] = self.tx_id
        if self.status == 6:
            d["completeTime"] = applied
        return d


WITHDRAW = "/sapi/v1/capital/withdraw/apply"
WITHDRAW_HISTORY = "/sapi/v1/capital/withdraw/history"
DEPOSIT_HISTORY = "/sapi/v1/capital/deposit/hisrec"
DEPOSIT_ADDRESS = "/sapi/v1/capital/deposit/address"
CAPITAL_CONFIG = "/sapi/v1/capital/config/getall"


def _d(x: float | str | Decimal) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


def _s(x: Decimal | float) -> str:
    return f"{Decimal(str(x)).normalize():f}" if isinstance(x, Decimal) else f"{x:.8f}"


def _floor(x: float, step: Decimal) -> Decimal:
    return (Decimal(repr(x)) / step).to_integral_value(ROUND_FLOOR) * step


def _ceil(x: float, step: Decimal) -> Decimal:
    return (Decimal(repr(x)) / step).to_integral_value(ROUND_CEILING) * step


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class ExchangeEmulator:
    """State and matching engine; ``start()`` serves it on 127.0.0.1 and returns the base URL."""

    def __init__(
        self,
        markets: dict[str, MarketSpec],
        *,
        quote: str = "USDT",
        balances: dict[str, float] | None = None,
        api_key: str = "emu-key",
        secret: str = "emu-secret",
        taker_fee: float = 0.001,
        seed: int = 7,
        now: datetime | None = None,
        timeout_hold_s: float = 1.0,
        max_klines: int = 1000,
        commission_asset: str | None = None,
    ) -> None:
        self.quote = quote
        self.specs = {f"{m.base}{quote}": m for m in markets.values()}
        self.symbol_of = {m.base: f"{m.base}{quote}" for m in markets.values()}
        self.api_key, self.secret = api_key, secret
        self.taker_fee = _d(taker_fee)
        self.seed = seed
        self.now = now or datetime.now(UTC)
        self.timeout_hold_s = timeout_hold_s
        self.max_klines = max_klines
        self.lock = threading.RLock()
        self.balances: dict[str, list[Decimal]] = {}
        for asset, qty in (balances or {quote: 1_000_000.0}).items():
            self.balances[asset] = [_d(qty), Decimal(0)]
        self.orders: dict[int, EmuOrder] = {}
        self.by_client: dict[str, EmuOrder] = {}
        self.trades: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.partial_fill: dict[str, float] = {}
        """symbol (``SPYUSDT``) or ``*`` → the fraction of an order that may fill at once."""
        self.fill_rest_after_polls: int | None = None
        """A resting order's remainder fills at its limit after this many lookups (None: never)."""
        self.kline_gaps: dict[str, set[int]] = {}
        """symbol → bar open times (ms) the exchange has no kline for."""
        self.commission_asset = commission_asset
        """None: fees in the quote asset; "received": the asset the side receives; else that asset."""
        self.networks: dict[str, list[str]] = {quote: ["ETH"]}
        """coin → the network ids it can be deposited and withdrawn over (the first is the default)."""
        self.withdraw_fees: dict[tuple[str, str], Decimal] = {(quote, "ETH"): Decimal("1")}
        """(coin, network) → the flat withdrawal fee, in the coin, taken out of the amount."""
        self.withdraw_polls_to_complete: int | None = 1
        """A withdrawal completes once this many history queries returned it (None: never by polls)."""
        self.withdraw_seconds_to_complete: float | None = None
        """... or once it is this old (seconds, ``time.monotonic()``; None: never by age)."""
        self.withdraw_min: Decimal = Decimal("10")
        """The smallest amount a withdrawal may ask for (Binance's ``withdrawMin``), fee included."""
        self.withdraw_disabled: set[tuple[str, str]] = set()
        """(coin, network) pairs whose withdrawals are suspended (``withdrawEnable: false``)."""
        self.withdrawals: dict[str, EmuWithdrawal] = {}
        self.withdrawal_by_client: dict[str, EmuWithdrawal] = {}
        self.deposits: list[dict[str, Any]] = []
        self._next_withdrawal = 1
        self.latency_s = 0.0
        """Every answer is held this long (outside the lock: requests overlap as on a real server)."""
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.timeline: list[tuple[float, float, str, str]] = []
        """(arrival, answer, method, path) per request, ``time.monotonic()``; in arrival order."""
        self.in_flight = 0
        self.peak_in_flight = 0
        self._next_order = 1000
        self._next_trade: dict[str, int] = {}
        self._paths: dict[str, np.ndarray] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- market data ----------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)

    def set_time(self, now: datetime) -> None:
        with self.lock:
            self.now = now

    def _path(self, symbol: str, hour: int) -> float:
        """Price at hour boundary ``hour`` after ORIGIN: a seeded walk, the same however queried."""
        arr = self._paths.get(symbol)
        if arr is None:
            n = PATH_HOURS  # one fixed draw per symbol: the same path however and whenever it is queried
            spec = self.specs[symbol]
            idx = sorted(self.specs).index(symbol)
            rng = np.random.default_rng([self.seed, idx])
            sigma_h = spec.annual_vol / math.sqrt(24 * 365)
            shocks = rng.standard_normal(n) * sigma_h
            shocks[0] = 0.0
            arr = spec.price * np.exp(np.cumsum(shocks))
            self._paths[symbol] = arr
        if not 0 <= hour < len(arr):
            raise ApiError(400, -1100, f"emulator: hour {hour} outside its {PATH_HOURS}-hour history")
        return float(arr[hour])

    def _volume(self, symbol: str, hour: int) -> float:
        spec = self.specs[symbol]
        digest = hashlib.blake2b(f"{self.seed}|{symbol}|{hour}".encode(), digest_size=4).digest()
        u = int.from_bytes(digest, "big") / 2**32  # deterministic across processes (str hash is salted)
        return spec.hourly_volume * (0.5 + u)

    def mid(self, symbol: str, at_ms: int | None = None) -> float:
        """The mid now, or at ``at_ms`` (a trade's time)."""
        hour = max(((self.now_ms if at_ms is None else at_ms) - ORIGIN_MS) // HOUR_MS, 0)
        return self._path(symbol, hour)

    def book(self, symbol: str) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        spec = self.specs[symbol]
        tick = _d(spec.tick_size)
        step = _d(spec.step_size)
        m = self.mid(symbol)
        bid0 = _floor(m * (1 - spec.half_spread_bps / 1e4), tick)
        ask0 = _ceil(m * (1 + spec.half_spread_bps / 1e4), tick)
        bids, asks = [], []
        for i in range(spec.levels):
            qty = _floor(spec.level_qty * (1 + i), step)
            asks.append((_ceil(float(ask0) * (1 + i * spec.level_step_bps / 1e4), tick), qty))
            bids.append((_floor(float(bid0) * (1 - i * spec.level_step_bps / 1e4), tick), qty))
        return bids, asks

    def klines(self, symbol: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[list[Any]]:
        now_hour = (self.now_ms - ORIGIN_MS) // HOUR_MS
        first = now_hour - limit + 1 if start_ms is None else -(-(start_ms - ORIGIN_MS) // HOUR_MS)
        last = now_hour if end_ms is None else min(now_hour, (end_ms - ORIGIN_MS) // HOUR_MS)
        out: list[list[Any]] = []
        gaps = self.kline_gaps.get(symbol, set())
        h = max(first, 1)
        while h <= last and len(out) < limit:
            open_ms = ORIGIN_MS + h * HOUR_MS
            if open_ms not in gaps:
                o, c = self._path(symbol, h), self._path(symbol, h + 1)
                if h == now_hour:
                    c = o  # the hour in progress: no close yet
                v = self._volume(symbol, h)
                out.append(
                    [open_ms, _s(o), _s(max(o, c) * 1.001), _s(min(o, c) * 0.999), _s(c), _s(v), open_ms + HOUR_MS - 1,
                     _s(v * c), 100, _s(v / 2), _s(v * c / 2), "0"]
                )  # fmt: skip
            h += 1
        return out

    # -- accounts and matching ------------------------------------------------------------------------

    def balance(self, asset: str) -> tuple[float, float]:
        with self.lock:
            free, locked = self.balances.get(asset, [Decimal(0), Decimal(0)])
            return float(free), float(locked)

    def _bal(self, asset: str) -> list[Decimal]:
        return self.balances.setdefault(asset, [Decimal(0), Decimal(0)])

    def _commission(self, o: EmuOrder, notional: Decimal, qty: Decimal) -> tuple[str, Decimal]:
        """The fee of one fill and the asset it is paid in."""
        spec = self.specs[o.symbol]
        rate = self.taker_fee
        asset = self.commission_asset
        if asset is None or (asset == "received" and o.side == "SELL"):
            return self.quote, (notional * rate).quantize(Decimal("1e-8"))
        if asset == "received":  # a buy pays in the base asset it receives
            return spec.base, (qty * rate).quantize(Decimal("1e-8"))
        mid = _d(self.mid(self.symbol_of[asset]))  # a third asset (BNB) at its mid
        return asset, (notional * rate / mid).quantize(Decimal("1e-8"))

    def _fill(self, o: EmuOrder, price: Decimal, qty: Decimal) -> None:
        spec = self.specs[o.symbol]
        notional = price * qty
        fee_asset, fee = self._commission(o, notional, qty)
        in_quote = fee if fee_asset == self.quote else Decimal(0)
        base, quote = self._bal(spec.base), self._bal(self.quote)
        if o.side == "BUY":
            reserved = o.price * qty * (1 + self.taker_fee)  # what create_order locked for this quantity
            quote[1] -= reserved
            quote[0] += reserved - notional - in_quote
            base[0] += qty
        else:
            base[1] -= qty
            quote[0] += notional - in_quote
        if fee_asset != self.quote:
            self._bal(fee_asset)[0] -= fee
        tid = self._next_trade.get(o.symbol, 1)
        self._next_trade[o.symbol] = tid + 1
        trade = {
            "symbol": o.symbol,
            "id": tid,
            "orderId": o.order_id,
            "orderListId": -1,
            "price": _s(price),
            "qty": _s(qty),
            "quoteQty": _s(notional),
            "commission": _s(fee),
            "commissionAsset": fee_asset,
            "time": self.now_ms,
            "isBuyer": o.side == "BUY",
            "isMaker": False,
            "isBestMatch": True,
        }
        self.trades.append(trade)
        o.fills.append(trade)
        o.executed += qty
        o.quote_qty += notional
        o.status = "FILLED" if o.remaining <= 0 else "PARTIALLY_FILLED"
        o.update_ms = self.now_ms

    def _match(self, o: EmuOrder) -> None:
        bids, asks = self.book(o.symbol)
        levels = asks if o.side == "BUY" else bids
        cap = self.partial_fill.get(o.symbol, self.partial_fill.get("*"))
        budget = o.qty if cap is None else _floor(float(o.qty) * cap, _d(self.specs[o.symbol].step_size))
        for price, qty in levels:
            if o.type == "LIMIT" and ((o.side == "BUY" and price > o.price) or (o.side == "SELL" and price < o.price)):
                break
            take = min(qty, o.remaining, budget - o.executed)
            if take <= 0:
                break
            self._fill(o, price, take)
        if o.type == "MARKET" and o.remaining > 0:
            o.status = "EXPIRED"  # the book is exhausted: a market order never rests

    def create_order(self, p: dict[str, str]) -> EmuOrder:
        symbol = p.get("symbol", "")
        if symbol not in self.specs:
            raise ApiError(400, -1121, "Invalid symbol.")
        spec = self.specs[symbol]
        side, otype = p.get("side", ""), p.get("type", "")
        if side not in ("BUY", "SELL") or otype not in ("LIMIT", "MARKET"):
            raise ApiError(400, -1102, "Mandatory parameter was not sent, was empty/null, or malformed.")
        cid = p.get("newClientOrderId") or f"emu{self._next_order}"
        if cid in self.by_client:
            raise ApiError(400, -2010, "Duplicate order sent.")
        qty = _d(p.get("quantity", "0"))
        step, tick = _d(spec.step_size), _d(spec.tick_size)
        if qty < _d(spec.min_qty) or qty % step != 0:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        if otype == "LIMIT":
            price = _d(p.get("price", "0"))
            if price <= 0 or price % tick != 0:
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
            if p.get("timeInForce") not in ("GTC", "IOC", "FOK"):
                raise ApiError(
                    400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."
                )
        else:
            bids, asks = self.book(symbol)
            price = (asks if side == "BUY" else bids)[-1][0]  # worst level: what a market order may cost
        ref = _d(self.mid(symbol))
        if ref * qty < _d(spec.min_notional):
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")
        base, quote = self._bal(spec.base), self._bal(self.quote)
        if side == "BUY":
            need = price * qty * (1 + self.taker_fee)
            if quote[0] < need:
                raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
            quote[0] -= need
            quote[1] += need
        else:
            if base[0] < qty:
                raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
            base[0] -= qty
            base[1] += qty
        self._next_order += 1
        o = EmuOrder(symbol, self._next_order, cid, side, otype, price, qty, self.now_ms, update_ms=self.now_ms)
        self.orders[o.order_id] = o
        self.by_client[cid] = o
        self._match(o)
        if not o.open:
            self._release(o)
        return o

    def _release(self, o: EmuOrder) -> None:
        """Unlock what a closed order still reserves."""
        spec = self.specs[o.symbol]
        if o.remaining <= 0 and o.side == "SELL":
            return
        if o.side == "BUY":
            left = o.price * o.remaining * (1 + self.taker_fee)
            q = self._bal(self.quote)
            q[1] -= left
            q[0] += left
        else:
            b = self._bal(spec.base)
            b[1] -= o.remaining
            b[0] += o.remaining

    def lookup(self, p: dict[str, str]) -> EmuOrder:
        o: EmuOrder | None = None
        if "origClientOrderId" in p:
            o = self.by_client.get(p["origClientOrderId"])
        elif "orderId" in p:
            o = self.orders.get(int(p["orderId"]))
        if o is None or o.symbol != p.get("symbol"):
            raise ApiError(400, -2013, "Order does not exist.")
        return o

    def poll(self, o: EmuOrder) -> None:
        o.polls += 1
        if o.open and self.fill_rest_after_polls is not None and o.polls >= self.fill_rest_after_polls:
            self._fill(o, o.price, o.remaining)
            self._release(o)

    def cancel(self, o: EmuOrder) -> None:
        if not o.open:
            raise ApiError(400, -2011, "Unknown order sent.")
        o.status = "CANCELED"
        o.update_ms = self.now_ms
        self._release(o)

    # -- views ----------------------------------------------------------------------------------------

    def order_json(self, o: EmuOrder, *, full: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "symbol": o.symbol,
            "orderId": o.order_id,
            "orderListId": -1,
            "clientOrderId": o.client_id,
            "price": _s(o.price) if o.type == "LIMIT" else "0.00000000",
            "origQty": _s(o.qty),
            "executedQty": _s(o.executed),
            "cummulativeQuoteQty": _s(o.quote_qty),
            "status": o.status,
            "timeInForce": "GTC",
            "type": o.type,
            "side": o.side,
            "workingTime": o.time_ms,
            "selfTradePreventionMode": "NONE",
        }
        if full:
            d["transactTime"] = o.time_ms
            d["fills"] = [
                {
                    "price": t["price"],
                    "qty": t["qty"],
                    "commission": t["commission"],
                    "commissionAsset": t["commissionAsset"],
                    "tradeId": t["id"],
                }
                for t in o.fills
            ]
        else:
            d.update(stopPrice="0.00000000", icebergQty="0.00000000", time=o.time_ms, updateTime=o.update_ms)
            d.update(isWorking=True, origQuoteOrderQty="0.00000000")
        return d

    def exchange_info(self) -> dict[str, Any]:
        symbols = []
        for sym, m in sorted(self.specs.items()):
            symbols.append(
                {
                    "symbol": sym,
                    "status": "TRADING",
                    "baseAsset": m.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": self.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": False,
                    "cancelReplaceAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": m.tick_size,
                            "maxPrice": "1000000.00",
                            "tickSize": m.tick_size,
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": m.min_qty,
                            "maxQty": "9000000.00",
                            "stepSize": m.step_size,
                        },
                        {
                            "filterType": "NOTIONAL",
                            "minNotional": m.min_notional,
                            "applyMinToMarket": True,
                            "maxNotional": "9000000.00",
                            "applyMaxToMarket": False,
                            "avgPriceMins": 5,
                        },
                    ],  # fmt: skip
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def ticker(self, symbol: str) -> dict[str, Any]:
        bids, asks = self.book(symbol)
        hour = (self.now_ms - ORIGIN_MS) // HOUR_MS
        vol = sum(self._volume(symbol, h) for h in range(hour - 24, hour))
        last = self.mid(symbol)
        prev = self._path(symbol, max(hour - 24, 0))
        return {
            "symbol": symbol,
            "priceChange": _s(last - prev),
            "priceChangePercent": f"{(last / prev - 1) * 100:.3f}",
            "weightedAvgPrice": _s(last),
            "prevClosePrice": _s(prev),
            "lastPrice": _s(last),
            "lastQty": "1.00000000",
            "bidPrice": _s(bids[0][0]),
            "bidQty": _s(bids[0][1]),
            "askPrice": _s(asks[0][0]),
            "askQty": _s(asks[0][1]),
            "openPrice": _s(prev),
            "highPrice": _s(max(last, prev)),
            "lowPrice": _s(min(last, prev)),
            "volume": _s(vol),
            "quoteVolume": _s(vol * last),
            "openTime": self.now_ms - 24 * HOUR_MS,
            "closeTime": self.now_ms,
            "firstId": 1,
            "lastId": 1000,
            "count": 1000,
        }

    # -- wallet ----------------------------------------------------------------------------------------

    def deposit_address_of(self, coin: str, network: str) -> str:
        """A fixed address per (coin, network): what the exchange hands out for deposits to this account."""
        digest = hashlib.blake2b(f"{self.seed}|{coin}|{network}".encode(), digest_size=20).hexdigest()
        return f"0x{digest}"

    def _network(self, coin: str, network: str | None) -> str:
        nets = self.networks.get(coin)
        if not nets:
            raise ApiError(400, -4018, "We don't have this asset.")
        net = network or nets[0]
        if net not in nets:
            raise ApiError(400, -4019, "Current asset is not open for withdrawal.")
        return net

    def capital_config(self) -> list[dict[str, Any]]:
        out = []
        for coin, nets in sorted(self.networks.items()):
            free, locked = self._bal(coin)
            out.append({
                "coin": coin, "name": coin, "free": _s(free), "locked": _s(locked), "freeze": "0", "withdrawing": "0",
                "ipoing": "0", "ipoable": "0", "storage": "0", "isLegalMoney": False, "trading": True,
                "depositAllEnable": True, "withdrawAllEnable": True,
                "networkList": [
                    {"network": n, "coin": coin, "name": n, "isDefault": i == 0, "depositEnable": True,
                     "withdrawEnable": (coin, n) not in self.withdraw_disabled,
                     "withdrawFee": _s(self.withdraw_fees.get((coin, n), Decimal(0))),
                     "withdrawMin": _s(self.withdraw_min), "withdrawMax": "10000000", "withdrawIntegerMultiple": "0.000001",  # noqa: E501
                     "minConfirm": 12, "unLockConfirm": 0, "sameAddress": False, "depositDesc": "", "withdrawDesc": "",
                     "specialTips": "", "busy": False}
                    for i, n in enumerate(nets)
                ],
            })  # fmt: skip
        return out

    def withdraw(self, p: dict[str, str], *, fail: int | None = None) -> EmuWithdrawal:
        """Accept a withdrawal: the free balance pays ``amount`` now; the address gets ``amount − fee``.
        ``fail``: the status (5, 3) it ends in at the next history query instead of completing."""
        coin = p.get("coin", "")
        net = self._network(coin, p.get("network"))
        if (coin, net) in self.withdraw_disabled:
            raise ApiError(400, -4019, "Current asset is not open for withdrawal.")
        address = p.get("address", "")
        if not address.startswith("0x") or len(address) != 42:
            raise ApiError(400, -4033, "Illegal address.")
        cid = p.get("withdrawOrderId", "")
        if cid and cid in self.withdrawal_by_client:
            raise ApiError(400, -4001, f"Invalid operation: duplicate withdrawOrderId {cid}.")
        amount = _d(p.get("amount", "0"))
        fee = self.withdraw_fees.get((coin, net), Decimal(0))
        if amount < self.withdraw_min:
            raise ApiError(400, -4022, f"Not less than the minimum pick-up quantity {_s(self.withdraw_min)}.")
        if amount <= fee:
            raise ApiError(400, -4028, "The amount of withdrawal must be greater than the Commission.")
        bal = self._bal(coin)
        if bal[0] < amount:
            raise ApiError(400, -4026, "You have insufficient balance.")
        bal[0] -= amount
        wid = hashlib.blake2b(f"{self.seed}|w|{self._next_withdrawal}".encode(), digest_size=16).hexdigest()
        self._next_withdrawal += 1
        w = EmuWithdrawal(wid, cid, coin, net, address, p.get("addressTag", ""), amount, fee, self.now_ms,
                          time.monotonic(), fail=fail)  # fmt: skip
        self.withdrawals[wid] = w
        if cid:
            self.withdrawal_by_client[cid] = w
        return w

    def _advance(self, w: EmuWithdrawal) -> None:
        """One history query saw ``w``: approved (processing), then failed (refunded) or completed when
        its time has come."""
        if w.status not in (2, 4):
            return
        w.polls += 1
        w.status = 4
        if w.fail is not None:
            w.status = w.fail
            self._bal(w.coin)[0] += w.amount  # refunded, fee included
            return
        polls, secs = self.withdraw_polls_to_complete, self.withdraw_seconds_to_complete
        if (polls is not None and w.polls >= polls) or (secs is not None and time.monotonic() - w.applied_at >= secs):
            w.status = 6
            w.tx_id = "0x" + hashlib.blake2b(f"{self.seed}|tx|{w.id}".encode(), digest_size=32).hexdigest()

    def withdraw_history(self, p: dict[str, str]) -> list[dict[str, Any]]:
        """Binance's withdraw history: the matching withdrawals advance (each query is a poll), then the
        filters on status and the page (``offset``, ``limit``) apply, newest first."""
        rows = [w for w in self.withdrawals.values()
                if p.get("coin") in (None, w.coin) and p.get("withdrawOrderId") in (None, w.client_id)
                and int(p.get("startTime", 0)) <= w.apply_ms <= int(p.get("endTime", 2**62))]  # fmt: skip
        for w in rows:
            self._advance(w)
        rows = [w for w in rows if p.get("status") in (None, str(w.status))]
        rows.sort(key=lambda w: -w.apply_ms)
        offset = int(p.get("offset", 0))
        return [w.json() for w in rows[offset : offset + int(p.get("limit", 1000))]]

    def add_deposit(self, coin: str, amount: float, tx_id: str, network: str = "ETH") -> dict[str, Any]:
        """An incoming deposit the exchange has seen on chain but not credited yet (status 0)."""
        with self.lock:
            d = {"id": f"dep{len(self.deposits) + 1}", "amount": _s(_d(amount)), "coin": coin, "network": network,
                 "status": 0, "address": self.deposit_address_of(coin, network), "addressTag": "", "txId": tx_id,
                 "insertTime": self.now_ms, "transferType": 0, "confirmTimes": "1/12", "unlockConfirm": 0,
                 "walletType": 0}  # fmt: skip
            self.deposits.append(d)
            return d

    def credit_deposit(self, tx_id: str) -> None:
        """Every deposit of transaction ``tx_id`` has its confirmations: success (1), and the amount is
        in the free balance (once)."""
        with self.lock:
            found = [x for x in self.deposits if x["txId"] == tx_id]
            assert found, f"emulator: no deposit with txId {tx_id}"
            for d in found:
                if d["status"] != 1:
                    d["status"], d["confirmTimes"] = 1, "12/12"
                    self._bal(d["coin"])[0] += _d(d["amount"])

    def deposit_history(self, p: dict[str, str]) -> list[dict[str, Any]]:
        rows = [dict(d) for d in self.deposits
                if p.get("coin") in (None, d["coin"]) and p.get("txId") in (None, d["txId"])
                and p.get("status") in (None, str(d["status"]))
                and int(p.get("startTime", 0)) <= d["insertTime"] <= int(p.get("endTime", 2**62))]  # fmt: skip
        offset = int(p.get("offset", 0))
        return sorted(rows, key=lambda d: -d["insertTime"])[offset : offset + int(p.get("limit", 1000))]

    # -- HTTP ------------------------------------------------------------------------------------------

    def _take_fault(self, method: str, path: str, params: dict[str, str]) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.times <= 0:
                    continue
                if f.method not in ("*", method) or f.path not in ("*", path):
                    continue
                if f.symbol is not None and params.get("symbol") != f.symbol:
                    continue
                f.times -= 1
                f.hits += 1
                return f
        return None

    def _check_signature(self, headers: Any, raw: str) -> dict[str, str]:
        if headers.get("X-MBX-APIKEY") != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        payload, sep, sig = raw.rpartition("&signature=")
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not sep or not hmac.compare_digest(sig, expected):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload, keep_blank_values=True))
        if "timestamp" not in params:
            raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        return params

    def handle(
        self, method: str, path: str, query: str, body: str, headers: Any, fault: Fault | None = None
    ) -> tuple[int, Any]:
        """Route one request; returns (HTTP status, JSON-able body)."""
        private = path in ("/api/v3/account", "/api/v3/order", "/api/v3/openOrders", "/api/v3/myTrades") or (
            path.startswith("/sapi/")
        )
        raw = body if method == "POST" else query
        p = self._check_signature(headers, raw) if private else dict(parse_qsl(query, keep_blank_values=True))
        with self.lock:
            if path == "/api/v3/ping":
                return 200, {}
            if path == "/api/v3/time":
                return 200, {"serverTime": self.now_ms}
            if path == "/api/v3/exchangeInfo":
                return 200, self.exchange_info()
            if path in ("/api/v3/ticker/24hr", "/api/v3/ticker/bookTicker"):
                syms = (
                    [p["symbol"]]
                    if "symbol" in p
                    else json.loads(p.get("symbols", "null") or "null") or sorted(self.specs)
                )
                for s in syms:
                    if s not in self.specs:
                        raise ApiError(400, -1121, "Invalid symbol.")
                out = [self.ticker(s) for s in syms]
                if path.endswith("bookTicker"):
                    keys = ("symbol", "bidPrice", "bidQty", "askPrice", "askQty")
                    out = [{k: t[k] for k in keys} for t in out]
                return 200, out[0] if "symbol" in p else out
            if path == "/api/v3/depth":
                s = p.get("symbol", "")
                if s not in self.specs:
                    raise ApiError(400, -1121, "Invalid symbol.")
                limit = int(p.get("limit", 100))
                bids, asks = self.book(s)
                return 200, {
                    "lastUpdateId": self.now_ms,
                    "bids": [[_s(a), _s(b)] for a, b in bids[:limit]],
                    "asks": [[_s(a), _s(b)] for a, b in asks[:limit]],
                }
            if path == "/api/v3/klines":
                s = p.get("symbol", "")
                if s not in self.specs:
                    raise ApiError(400, -1121, "Invalid symbol.")
                if p.get("interval") != "1h":
                    raise ApiError(400, -1120, "Invalid interval.")
                limit = min(int(p.get("limit", 500)), self.max_klines)
                start = int(p["startTime"]) if "startTime" in p else None
                end = int(p["endTime"]) if "endTime" in p else None
                return 200, self.klines(s, start, end, limit)
            if path == "/api/v3/account":
                bals = [{"asset": a, "free": _s(f), "locked": _s(lk)} for a, (f, lk) in sorted(self.balances.items())]
                return 200, {
                    "makerCommission": 10,
                    "takerCommission": 10,
                    "buyerCommission": 0,
                    "sellerCommission": 0,
                    "canTrade": True,
                    "canWithdraw": True,
                    "canDeposit": True,
                    "updateTime": self.now_ms,
                    "accountType": "SPOT",
                    "balances": bals,
                    "permissions": ["SPOT"],
                    "uid": 1,
                }
            if path == "/api/v3/order":
                if method == "POST":
                    return 200, self.order_json(self.create_order(p), full=True)
                o = self.lookup(p)
                if method == "GET":
                    self.poll(o)
                    return 200, self.order_json(o)
                if method == "DELETE":
                    self.cancel(o)
                    d = self.order_json(o)
                    d["origClientOrderId"] = o.client_id
                    d["transactTime"] = self.now_ms
                    return 200, d
            if path == "/api/v3/openOrders" and method == "GET":
                s = p.get("symbol")
                return 200, [self.order_json(o) for o in self.orders.values() if o.open and s in (None, o.symbol)]
            if path == "/api/v3/myTrades":
                s = p.get("symbol", "")
                oid = p.get("orderId")
                rows = [t for t in self.trades if t["symbol"] == s and (oid is None or str(t["orderId"]) == oid)]
                return 200, rows[: int(p.get("limit", 500))]
            if path == CAPITAL_CONFIG and method == "GET":
                return 200, self.capital_config()
            if path == DEPOSIT_ADDRESS and method == "GET":
                coin = p.get("coin", "")
                net = self._network(coin, p.get("network"))
                return 200, {"coin": coin, "address": self.deposit_address_of(coin, net), "tag": "",
                             "url": f"https://etherscan.io/address/{self.deposit_address_of(coin, net)}"}  # fmt: skip
            if path == WITHDRAW and method == "POST":
                fail = {"withdraw_fails": 5, "withdraw_rejected": 3}.get(fault.kind if fault is not None else "")
                return 200, {"id": self.withdraw(p, fail=fail).id}
            if path == WITHDRAW_HISTORY and method == "GET":
                return 200, self.withdraw_history(p)
            if path == DEPOSIT_HISTORY and method == "GET":
                return 200, self.deposit_history(p)
        raise ApiError(404, -1100, f"emulator: no route {method} {path}")

    def start(self) -> str:
        emu = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
                pass

            def _serve(self) -> None:
                arrived = time.monotonic()
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                params = dict(parse_qsl(parts.query or body, keep_blank_values=True))
                with emu.lock:  # every request is logged, faulted and refused ones too
                    emu.requests.append(
                        (
                            self.command,
                            parts.path,
                            {k: v for k, v in params.items() if k not in ("signature", "timestamp")},
                        )
                    )
                    slot = len(emu.timeline)
                    emu.timeline.append((arrived, arrived, self.command, parts.path))
                    emu.in_flight += 1
                    emu.peak_in_flight = max(emu.peak_in_flight, emu.in_flight)
                try:
                    self._answer(parts, body, params)
                finally:
                    with emu.lock:
                        emu.in_flight -= 1
                        emu.timeline[slot] = (arrived, time.monotonic(), self.command, parts.path)

            def _reset(self) -> None:
                """Drop the connection with a TCP RST and no answer: the client sees 'connection reset'."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _answer(self, parts: Any, body: str, params: dict[str, str]) -> None:
                if emu.latency_s:
                    time.sleep(emu.latency_s)
                fault = emu._take_fault(self.command, parts.path, params)
                status, payload, extra = 200, None, {}
                try:
                    if fault is not None and fault.kind == "timeout_before":
                        time.sleep(emu.timeout_hold_s)
                        self.close_connection = True
                        return
                    if fault is not None and fault.kind == "reset_before":
                        self._reset()
                        return
                    if fault is not None and fault.kind in ("429", "500", "503", "insufficient", "invalid", "auth"):
                        status, code, msg = {
                            "429": (
                                429,
                                -1003,
                                "Too many requests; current limit is 6000 request weight per 1 MINUTE.",
                            ),
                            "500": (500, -1001, "Internal error; unable to process your request. Please try again."),
                            "503": (503, 0, ""),
                            "insufficient": (400, -2010, "Account has insufficient balance for requested action."),
                            "invalid": (400, -1013, "Filter failure: LOT_SIZE"),
                            "auth": (401, -2015, "Invalid API-key, IP, or permissions for action."),
                        }[fault.kind]
                        if fault.kind == "429" and fault.retry_after is not None:
                            extra["Retry-After"] = fault.retry_after
                        if fault.kind == "503":
                            self._send(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", "text/html")
                            return
                        raise ApiError(status, code, msg)
                    if fault is not None and fault.kind == "not_found":
                        raise ApiError(400, -2013, "Order does not exist.")
                    status, payload = emu.handle(self.command, parts.path, parts.query, body, self.headers, fault)
                except ApiError as exc:
                    status, payload = exc.status, {"code": exc.code, "msg": exc.msg}
                if fault is not None and fault.kind == "timeout_after":
                    time.sleep(emu.timeout_hold_s)
                    self.close_connection = True
                    return
                if fault is not None and fault.kind == "reset_after":
                    self._reset()
                    return
                self._send(status, json.dumps(payload).encode(), "application/json", extra)

            def _send(self, status: int, data: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (extra or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test): nothing to tell it
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = do_PUT = _serve  # noqa: N815

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- assertions helpers ---------------------------------------------------------------------------

    def count(self, method: str, path: str) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and p == path)

    def open_orders(self) -> list[EmuOrder]:
        with self.lock:
            return [o for o in self.orders.values() if o.open]
