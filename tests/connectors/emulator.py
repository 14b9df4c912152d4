"""A spot exchange emulator on 127.0.0.1 that unmodified ccxt talks to over real HTTP, in three dialects.

One matching engine, one set of accounts, three APIs on the same port, told apart by path: Binance
spot v3 (``/api/v3``, ``/sapi``), OKX v5 (``/api/v5``: ``{code, msg, data}`` envelopes, every number a
string, ``SPY-USDT`` instruments, ``clOrdId``, HMAC-base64 signatures and the key's passphrase, creates
answered with the ids only, negative fees in the asset received) and Bybit v5 (``/v5``: ``{retCode,
retMsg, result}`` envelopes, ``orderLinkId``, HMAC-hex signatures, ids-only creates, open orders in
``order/realtime`` and closed ones in ``order/history``, fees in the asset received); ``DIALECTS`` says
where each creates, looks up and cancels orders. A Binance venue and an OKX venue can trade the same
market side by side (the data source reads the Binance endpoints). ``binance_ack`` answers Binance
creates with ACK replies (ids only); ``cancel_lag_polls`` makes a cancel take effect only after that
many more lookups of the order (acknowledged at once, the order reported open meanwhile).

What follows describes the Binance dialect; faults and switches apply to every dialect, answered in
its own codes.

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

import base64
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
    (-2013, an order lookup that misses once; on an order list, the list without any order), ``auth``
    (-2015), ``withdraw_fails`` /
    ``withdraw_rejected`` (a withdrawal accepted, then failed, status 5, or rejected, status 3, and
    refunded at the next history query), ``html_before`` / ``html_after`` (a proxy's or maintenance
    page, HTML with status 200, instead of the answer: before the request reaches the exchange, or
    after it was processed), ``strip_id`` (processed, then answered without the order id). Each is
    answered in the dialect of the path (an OKX rate limit is ``{"code": "50011"}``, a Bybit one
    ``{"retCode": 10006}``); ``symbol`` matches the exchange's symbol without separators (``GLDUSDT``).
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
    dialect: str = "binance"
    market_unit: str = ""  # Bybit: what a market order's qty counts (baseCoin)
    cancel_lag: int | None = None  # lookups left before an asked-for cancel takes effect (None: not asked)

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


@dataclass(frozen=True)
class Dialect:
    """Where one exchange API the emulator speaks creates, looks up and cancels orders, and the request
    field that carries the client order id: what a test needs to aim a fault and count what was sent."""

    exchange: str  # the ccxt exchange id that talks it
    create: tuple[str, str]
    lookup: tuple[str, str]
    cancel: tuple[str, str]
    client_id: str
    open_orders: tuple[str, str]
    trades: tuple[str, str]
    balance: tuple[str, str]


DIALECTS = {
    "binance": Dialect("binance", ("POST", "/api/v3/order"), ("GET", "/api/v3/order"), ("DELETE", "/api/v3/order"),
                       "newClientOrderId", ("GET", "/api/v3/openOrders"), ("GET", "/api/v3/myTrades"),
                       ("GET", "/api/v3/account")),
    "okx": Dialect("okx", ("POST", "/api/v5/trade/batch-orders"), ("GET", "/api/v5/trade/order"),
                   ("POST", "/api/v5/trade/cancel-order"), "clOrdId", ("GET", "/api/v5/trade/orders-pending"),
                   ("GET", "/api/v5/trade/fills-history"), ("GET", "/api/v5/account/balance")),
    "bybit": Dialect("bybit", ("POST", "/v5/order/create"), ("GET", "/v5/order/realtime"),
                     ("POST", "/v5/order/cancel"), "orderLinkId", ("GET", "/v5/order/realtime"),
                     ("GET", "/v5/execution/list"), ("GET", "/v5/account/wallet-balance")),
}  # fmt: skip


def dialect_of(path: str) -> str:
    """The API a request path belongs to: OKX v5 (``/api/v5/…``), Bybit v5 (``/v5/…``), else Binance."""
    if path.startswith("/api/v5/"):
        return "okx"
    if path.startswith("/v5/"):
        return "bybit"
    return "binance"


INSUFFICIENT = "Account has insufficient balance for requested action."

OKX_CODES = {
    "insufficient": (200, "51008"), "duplicate": (200, "51016"), "lot_size": (200, "51121"),
    "price_filter": (200, "51006"), "notional": (200, "51020"), "invalid": (200, "51121"),
    "cancel_rejected": (200, "51402"), "not_found": (200, "51603"), "bad_symbol": (200, "51001"),
    "bad_param": (400, "51000"), "auth": (401, "50111"), "passphrase": (401, "50105"), "signature": (401, "50113"),
    "rate_limit": (429, "50011"), "internal": (500, "50026"),
}  # fmt: skip
"""What went wrong -> OKX's (HTTP status, code); order-level ones are a ``sCode`` under ``code`` "1"."""
ORDER_LEVEL = {"insufficient", "duplicate", "lot_size", "price_filter", "notional", "invalid", "cancel_rejected"}
BYBIT_CODES = {
    "insufficient": (200, 170131), "duplicate": (200, 170141), "lot_size": (200, 170137), "price_filter": (200, 170134),
    "notional": (200, 170140), "invalid": (200, 170137), "cancel_rejected": (200, 170213), "not_found": (200, 170213),
    "bad_symbol": (200, 10001), "bad_param": (200, 10001), "auth": (401, 10003), "passphrase": (401, 10003),
    "signature": (401, 10004), "rate_limit": (429, 10006), "internal": (500, 10016),
}  # fmt: skip
"""What went wrong -> Bybit's (HTTP status, retCode)."""

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


KINDS = {-2013: "not_found", -2011: "cancel_rejected", -1121: "bad_symbol", -2015: "auth", -1022: "signature",
         -1013: "invalid", -1102: "bad_param", -1100: "bad_param", -1120: "bad_param", -1003: "rate_limit",
         -1001: "internal"}  # fmt: skip
"""Binance error code -> what went wrong, for the other dialects' own codes (``-2010`` is said explicitly)."""


MAINTENANCE_PAGE = b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body><h1>Back soon</h1></body></html>"
"""What a proxy, a CDN or a maintenance switch sends with status 200 instead of the exchange's answer."""

FAULT_ERRORS: dict[str, tuple[int, int, str, str]] = {
    "429": (429, -1003, "Too many requests; current limit is 6000 request weight per 1 MINUTE.", "rate_limit"),
    "500": (500, -1001, "Internal error; unable to process your request. Please try again.", "internal"),
    "insufficient": (400, -2010, "Account has insufficient balance for requested action.", "insufficient"),
    "invalid": (400, -1013, "Filter failure: LOT_SIZE", "lot_size"),
    "not_found": (400, -2013, "Order does not exist.", "not_found"),
    "auth": (401, -2015, "Invalid API-key, IP, or permissions for action.", "auth"),
}
"""Fault kinds answered with an error, in Binance's terms (``error_answer`` speaks the other dialects)."""


ORDER_LISTS = {
    "/api/v3/openOrders", "/api/v3/allOrders", "/api/v5/trade/orders-pending", "/api/v5/trade/orders-history"
}  # fmt: skip
"""Where a ``not_found`` fault answers a list without the order (an order index that lags), not an error."""


def request_params(query: str, body: str) -> dict[str, str]:
    """A request's parameters for the log and the faults: the query, then the body (form-encoded, or JSON:
    an object, or the first of a list of them, as OKX's batch orders)."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    if body[:1] in ("{", "["):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        item = data[0] if isinstance(data, list) and data else data
        if isinstance(item, dict):
            params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in item.items()})
    elif body:
        params.update(parse_qsl(body, keep_blank_values=True))
    return params


def strip_order_ids(dialect: str, payload: Any) -> Any:
    """``payload`` with the exchange's order ids taken out (a gateway that drops fields it does not know)."""
    key = {"binance": "orderId", "okx": "ordId", "bybit": "orderId"}[dialect]

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != key}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(payload)


class ApiError(Exception):
    """An error answer, in Binance's codes; ``kind`` says what it is for the other dialects."""

    def __init__(self, status: int, code: int, msg: str, kind: str | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg
        self.kind = kind or KINDS.get(code, "bad_param")


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
        passphrase: str = "emu-passphrase",
    ) -> None:
        self.quote = quote
        self.passphrase = passphrase
        """OKX: the API key's passphrase (``OK-ACCESS-PASSPHRASE``)."""
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
        """Binance orders: None: fees in the quote asset; "received": the asset the side receives; else that
        asset. OKX and Bybit spot orders always pay in the asset received, as those exchanges charge."""
        self.binance_ack = False
        """Binance answers a create with ``newOrderRespType=ACK``'s reply: the ids, no status, no fills."""
        self.cancel_lag_polls = 0
        """A cancel takes effect only after this many more lookups of the order (the exchange acknowledges
        it at once and reports the order open meanwhile, as OKX and Bybit do under load)."""
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
        asset = self.commission_asset if o.dialect == "binance" else "received"
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

    def create_order(self, p: dict[str, str], dialect: str = "binance") -> EmuOrder:
        """A new order from Binance-style parameters (the other dialects' creates are translated to them)."""
        symbol = p.get("symbol", "")
        if symbol not in self.specs:
            raise ApiError(400, -1121, "Invalid symbol.")
        spec = self.specs[symbol]
        side, otype = p.get("side", ""), p.get("type", "")
        if side not in ("BUY", "SELL") or otype not in ("LIMIT", "MARKET"):
            raise ApiError(400, -1102, "Mandatory parameter was not sent, was empty/null, or malformed.")
        cid = p.get("newClientOrderId") or f"emu{self._next_order}"
        if cid in self.by_client:
            raise ApiError(400, -2010, "Duplicate order sent.", "duplicate")
        qty = _d(p.get("quantity", "0"))
        step, tick = _d(spec.step_size), _d(spec.tick_size)
        if qty < _d(spec.min_qty) or qty % step != 0:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE", "lot_size")
        if otype == "LIMIT":
            price = _d(p.get("price", "0"))
            if price <= 0 or price % tick != 0:
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER", "price_filter")
            if p.get("timeInForce") not in ("GTC", "IOC", "FOK"):
                raise ApiError(
                    400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."
                )
        else:
            bids, asks = self.book(symbol)
            price = (asks if side == "BUY" else bids)[-1][0]  # worst level: what a market order may cost
        ref = _d(self.mid(symbol))
        if dialect != "okx" and ref * qty < _d(spec.min_notional):  # OKX has no minimum order value
            raise ApiError(400, -1013, "Filter failure: NOTIONAL", "notional")
        base, quote = self._bal(spec.base), self._bal(self.quote)
        if side == "BUY":
            need = price * qty * (1 + self.taker_fee)
            if quote[0] < need:
                raise ApiError(400, -2010, INSUFFICIENT, "insufficient")
            quote[0] -= need
            quote[1] += need
        else:
            if base[0] < qty:
                raise ApiError(400, -2010, INSUFFICIENT, "insufficient")
            base[0] -= qty
            base[1] += qty
        self._next_order += 1
        o = EmuOrder(symbol, self._next_order, cid, side, otype, price, qty, self.now_ms, update_ms=self.now_ms,
                     dialect=dialect, market_unit=p.get("marketUnit", ""))  # fmt: skip
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
        """One lookup of ``o``: an asked-for cancel comes closer, or a resting order may fill its rest."""
        o.polls += 1
        if o.open and o.cancel_lag is not None:
            o.cancel_lag -= 1
            if o.cancel_lag <= 0:
                self._cancel_now(o)
            return
        if o.open and self.fill_rest_after_polls is not None and o.polls >= self.fill_rest_after_polls:
            self._fill(o, o.price, o.remaining)
            self._release(o)

    def cancel(self, o: EmuOrder) -> None:
        if not o.open:
            raise ApiError(400, -2011, "Unknown order sent.")
        if self.cancel_lag_polls > 0:
            if o.cancel_lag is None:
                o.cancel_lag = self.cancel_lag_polls
            return
        self._cancel_now(o)

    def _cancel_now(self, o: EmuOrder) -> None:
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
        symbol = (params.get("symbol") or params.get("instId") or "").replace("-", "")
        with self.lock:
            for f in self.faults:
                if f.times <= 0:
                    continue
                if f.method not in ("*", method) or f.path not in ("*", path):
                    continue
                if f.symbol is not None and symbol != f.symbol:
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
        """Route one request to its dialect; returns (HTTP status, JSON-able body)."""
        dialect = dialect_of(path)
        if dialect == "okx":
            return self._okx(method, path, query, body, headers)
        if dialect == "bybit":
            return self._bybit(method, path, query, body, headers)
        return self._binance(method, path, query, body, headers, fault)

    def _binance(
        self, method: str, path: str, query: str, body: str, headers: Any, fault: Fault | None = None
    ) -> tuple[int, Any]:
        private = path in ("/api/v3/account", "/api/v3/order", "/api/v3/openOrders", "/api/v3/allOrders",
                           "/api/v3/myTrades") or (
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
                    o = self.create_order(p)
                    if self.binance_ack:
                        return 200, {"symbol": o.symbol, "orderId": o.order_id, "orderListId": -1,
                                     "clientOrderId": o.client_id, "transactTime": o.time_ms}  # fmt: skip
                    return 200, self.order_json(o, full=True)
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
            if path == "/api/v3/allOrders" and method == "GET":  # what ccxt's fetch_closed_orders reads
                s = p.get("symbol", "")
                if s not in self.specs:
                    raise ApiError(400, -1121, "Invalid symbol.")
                rows = [o for o in self.orders.values() if o.symbol == s and o.order_id >= int(p.get("orderId", 0))
                        and int(p.get("startTime", 0)) <= o.time_ms <= int(p.get("endTime", 2**62))]  # fmt: skip
                return 200, [self.order_json(o) for o in rows[: int(p.get("limit", 500))]]
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

    # -- OKX v5 ------------------------------------------------------------------------------------------
    #
    # Envelopes ``{"code": "0", "msg": "", "data": [...]}``, every number a string, instruments ``SPY-USDT``,
    # the client order id ``clOrdId``, requests signed with HMAC-SHA256 (base64) of timestamp + method +
    # path + body and the key's passphrase in ``OK-ACCESS-PASSPHRASE``. A create (``batch-orders``, what
    # ccxt sends) answers only the ids: no status, no fills. Fees are negative numbers in the asset received.

    def _okx_auth(self, method: str, path: str, query: str, body: str, headers: Any) -> None:
        if headers.get("OK-ACCESS-KEY") != self.api_key:
            raise ApiError(401, -2015, "Invalid OK-ACCESS-KEY", "auth")
        if headers.get("OK-ACCESS-PASSPHRASE") != self.passphrase:
            raise ApiError(401, -2015, "OK-ACCESS-PASSPHRASE incorrect", "passphrase")
        ts = headers.get("OK-ACCESS-TIMESTAMP") or ""
        payload = ts + method + path + (f"?{query}" if query else "") + (body if method != "GET" else "")
        digest = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).digest()
        if not ts or not hmac.compare_digest(headers.get("OK-ACCESS-SIGN") or "", base64.b64encode(digest).decode()):
            raise ApiError(401, -1022, "Invalid Sign", "signature")

    def okx_id(self, symbol: str) -> str:
        return f"{self.specs[symbol].base}-{self.quote}"

    def _okx_symbol(self, inst_id: str | None) -> str:
        symbol = (inst_id or "").replace("-", "")
        if symbol not in self.specs or inst_id != self.okx_id(symbol):
            raise ApiError(400, -1121, f"Instrument ID {inst_id} does not exist.", "bad_symbol")
        return symbol

    @staticmethod
    def _ok(data: list[Any]) -> dict[str, Any]:
        return {"code": "0", "msg": "", "data": data}

    def _okx(self, method: str, path: str, query: str, body: str, headers: Any) -> tuple[int, Any]:
        if path.startswith(("/api/v5/account/", "/api/v5/trade/", "/api/v5/asset/")):
            self._okx_auth(method, path, query, body, headers)
        p = dict(parse_qsl(query, keep_blank_values=True))
        req: Any = json.loads(body) if body else {}
        with self.lock:
            if path == "/api/v5/public/time":
                return 200, self._ok([{"ts": str(self.now_ms)}])
            if path == "/api/v5/public/instruments":
                if p.get("instType") != "SPOT":
                    return 200, self._ok([])
                return 200, self._ok([self.okx_instrument(s) for s in sorted(self.specs)])
            if path == "/api/v5/market/ticker":
                return 200, self._ok([self.okx_ticker(self._okx_symbol(p.get("instId")))])
            if path == "/api/v5/market/tickers":
                return 200, self._ok([self.okx_ticker(s) for s in sorted(self.specs)])
            if path == "/api/v5/market/books":
                bids, asks = self.book(self._okx_symbol(p.get("instId")))
                n = int(p.get("sz", 1))
                return 200, self._ok([{"asks": [[_s(a), _s(b), "0", "1"] for a, b in asks[:n]],
                                       "bids": [[_s(a), _s(b), "0", "1"] for a, b in bids[:n]],
                                       "ts": str(self.now_ms)}])  # fmt: skip
            if path == "/api/v5/asset/currencies":
                return 200, self._ok([{"ccy": c, "name": c, "chain": f"{c}-{n}", "canDep": True, "canWd": True,
                                       "canInternal": False, "minFee": _s(self.withdraw_fees.get((c, n), Decimal(0))),
                                       "maxFee": _s(self.withdraw_fees.get((c, n), Decimal(0))),
                                       "minWd": _s(self.withdraw_min), "mainNet": False, "wdTickSz": "6"}
                                      for c, nets in sorted(self.networks.items()) for n in nets])  # fmt: skip
            if path == "/api/v5/account/balance":
                details = [{"ccy": a, "eq": _s(f + lk), "cashBal": _s(f + lk), "availBal": _s(f), "frozenBal": _s(lk),
                            "ordFrozen": _s(lk), "availEq": "", "uTime": str(self.now_ms)}
                           for a, (f, lk) in sorted(self.balances.items())]  # fmt: skip
                return 200, self._ok([{"uTime": str(self.now_ms), "totalEq": "", "details": details}])
            if path in ("/api/v5/trade/batch-orders", "/api/v5/trade/order") and method == "POST":
                items = req if isinstance(req, list) else [req]
                out = [self._okx_place(r) for r in items]
                failed = sum(1 for x in out if x["sCode"] != "0")
                code = "0" if not failed else ("1" if failed == len(out) else "2")
                msg = {"0": "", "1": "All operations failed", "2": "Bulk operation partially succeeded"}[code]
                return 200, {"code": code, "msg": msg, "data": out, "inTime": str(self.now_ms * 1000),
                             "outTime": str(self.now_ms * 1000)}  # fmt: skip
            if path == "/api/v5/trade/order" and method == "GET":
                o = self._okx_find(p)
                self.poll(o)
                return 200, self._ok([self.okx_order(o)])
            if path == "/api/v5/trade/cancel-order" and method == "POST":
                try:
                    o = self._okx_find(req)
                    if not o.open:
                        code = "51401" if o.status in ("CANCELED", "EXPIRED") else "51402"
                        return 200, {"code": "1", "msg": "All operations failed", "data": [
                            {"ordId": str(o.order_id), "clOrdId": o.client_id, "sCode": code,
                             "sMsg": "Cancellation failed as the order has been canceled or completed."}]}  # fmt: skip
                    self.cancel(o)
                except ApiError as exc:
                    return 200, {"code": "1", "msg": "All operations failed", "data": [
                        {"ordId": req.get("ordId", ""), "clOrdId": req.get("clOrdId", ""), "sCode": "51400",
                         "sMsg": exc.msg}]}  # fmt: skip
                return 200, self._ok([{"ordId": str(o.order_id), "clOrdId": o.client_id, "sCode": "0", "sMsg": ""}])
            if path == "/api/v5/trade/orders-pending":
                s = self._okx_symbol(p["instId"]) if p.get("instId") else None
                return 200, self._ok([self.okx_order(o) for o in self._newest(self.orders.values())
                                      if o.open and s in (None, o.symbol)][: int(p.get("limit", 100))])  # fmt: skip
            if path == "/api/v5/trade/orders-history":
                s = self._okx_symbol(p["instId"]) if p.get("instId") else None
                state = p.get("state")
                rows = [o for o in self._newest(self.orders.values()) if not o.open and s in (None, o.symbol)
                        and state in (None, self._okx_state(o))
                        and int(p.get("begin", 0)) <= o.time_ms <= int(p.get("end", 2**62))]  # fmt: skip
                return 200, self._ok([self.okx_order(o) for o in rows[: int(p.get("limit", 100))]])
            if path in ("/api/v5/trade/fills-history", "/api/v5/trade/fills"):
                s = self._okx_symbol(p["instId"]) if p.get("instId") else None
                rows = [t for t in reversed(self.trades) if s in (None, t["symbol"])
                        and p.get("ordId") in (None, str(t["orderId"]))
                        and int(p.get("begin", 0)) <= t["time"] <= int(p.get("end", 2**62))]  # fmt: skip
                return 200, self._ok([self.okx_fill(t) for t in rows[: int(p.get("limit", 100))]])
        raise ApiError(404, -1100, f"emulator: no OKX route {method} {path}")

    def _okx_find(self, p: dict[str, Any]) -> EmuOrder:
        symbol = self._okx_symbol(p.get("instId"))
        o = self.by_client.get(p["clOrdId"]) if p.get("clOrdId") else self.orders.get(int(p.get("ordId") or 0))
        if o is None or o.symbol != symbol:
            raise ApiError(200, -2013, "Order does not exist", "not_found")
        return o

    def _okx_place(self, r: dict[str, Any]) -> dict[str, Any]:
        """One order of a create request; an order-level refusal is its ``sCode``, as OKX answers it."""
        try:
            symbol = self._okx_symbol(r.get("instId"))
            kind, side = r.get("ordType"), str(r.get("side", ""))
            if kind not in ("limit", "market") or side not in ("buy", "sell") or r.get("tdMode") != "cash":
                raise ApiError(400, -1102, "Parameter ordType, side or tdMode error")
            if kind == "market" and side == "buy" and r.get("tgtCcy") != "base_ccy":
                raise ApiError(400, -1102, "emulator: a market buy is sized in the base currency (tgtCcy base_ccy)")
            q = {"symbol": symbol, "side": side.upper(), "type": kind.upper(), "quantity": str(r.get("sz", "0"))}
            if r.get("clOrdId"):
                q["newClientOrderId"] = str(r["clOrdId"])
            if kind == "limit":
                q["price"], q["timeInForce"] = str(r.get("px", "0")), "GTC"
            o = self.create_order(q, "okx")
            return {"clOrdId": o.client_id, "ordId": str(o.order_id), "tag": str(r.get("tag", "")),
                    "ts": str(self.now_ms), "sCode": "0", "sMsg": "Order placed"}  # fmt: skip
        except ApiError as exc:
            return {"clOrdId": str(r.get("clOrdId", "")), "ordId": "", "tag": "", "ts": str(self.now_ms),
                    "sCode": OKX_CODES[exc.kind][1], "sMsg": exc.msg}  # fmt: skip

    @staticmethod
    def _okx_state(o: EmuOrder) -> str:
        return {"NEW": "live", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled"}.get(o.status, "canceled")

    @staticmethod
    def _newest(orders: Any) -> list[EmuOrder]:
        return sorted(orders, key=lambda o: -o.order_id)

    def okx_instrument(self, symbol: str) -> dict[str, Any]:
        m = self.specs[symbol]
        return {"instType": "SPOT", "instId": self.okx_id(symbol), "uly": "", "instFamily": "", "baseCcy": m.base,
                "quoteCcy": self.quote, "settleCcy": "", "ctVal": "", "ctMult": "", "ctValCcy": "", "optType": "",
                "stk": "", "listTime": str(ORIGIN_MS), "expTime": "", "lever": "", "tickSz": m.tick_size,
                "lotSz": m.step_size, "minSz": m.min_qty, "ctType": "", "alias": "", "state": "live",
                "maxLmtSz": "9999999999", "maxMktSz": "1000000", "ruleType": "normal"}  # fmt: skip

    def okx_ticker(self, symbol: str) -> dict[str, Any]:
        t = self.ticker(symbol)
        return {"instType": "SPOT", "instId": self.okx_id(symbol), "last": t["lastPrice"], "lastSz": "1",
                "askPx": t["askPrice"], "askSz": t["askQty"], "bidPx": t["bidPrice"], "bidSz": t["bidQty"],
                "open24h": t["openPrice"], "high24h": t["highPrice"], "low24h": t["lowPrice"],
                "volCcy24h": t["quoteVolume"], "vol24h": t["volume"], "ts": str(self.now_ms),
                "sodUtc0": t["openPrice"], "sodUtc8": t["openPrice"]}  # fmt: skip

    def _fees(self, o: EmuOrder) -> tuple[str, Decimal]:
        """The asset an order's fees are paid in and their sum."""
        if not o.fills:
            return "", Decimal(0)
        return o.fills[-1]["commissionAsset"], sum((_d(t["commission"]) for t in o.fills), Decimal(0))

    def okx_order(self, o: EmuOrder) -> dict[str, Any]:
        fee_ccy, fee = self._fees(o)
        last = o.fills[-1] if o.fills else None
        return {"instType": "SPOT", "instId": self.okx_id(o.symbol), "ccy": "", "ordId": str(o.order_id),
                "clOrdId": o.client_id, "tag": "", "px": _s(o.price) if o.type == "LIMIT" else "", "pxUsd": "",
                "pxVol": "", "pxType": "", "sz": _s(o.qty), "pnl": "0", "ordType": o.type.lower(),
                "side": o.side.lower(), "posSide": "net", "tdMode": "cash", "accFillSz": _s(o.executed),
                "fillPx": last["price"] if last else "", "tradeId": str(last["id"]) if last else "",
                "fillSz": last["qty"] if last else "0", "fillTime": str(last["time"]) if last else "",
                "avgPx": _s(o.quote_qty / o.executed) if o.executed else "", "state": self._okx_state(o),
                "lever": "", "tpTriggerPx": "", "tpOrdPx": "", "slTriggerPx": "", "slOrdPx": "",
                "feeCcy": fee_ccy, "fee": _s(-fee) if o.fills else "0", "rebateCcy": self.quote, "rebate": "0",
                "tgtCcy": "", "category": "normal", "reduceOnly": "false", "cancelSource": "", "algoClOrdId": "",
                "algoId": "", "uTime": str(o.update_ms), "cTime": str(o.time_ms)}  # fmt: skip

    def okx_fill(self, t: dict[str, Any]) -> dict[str, Any]:
        o = self.orders[t["orderId"]]
        return {"instType": "SPOT", "instId": self.okx_id(t["symbol"]), "tradeId": str(t["id"]),
                "ordId": str(o.order_id), "clOrdId": o.client_id, "billId": f"b{t['id']}", "tag": "",
                "fillPx": t["price"], "fillSz": t["qty"], "fillIdxPx": "", "fillPnl": "0", "side": o.side.lower(),
                "posSide": "net", "execType": "T", "feeCcy": t["commissionAsset"], "fee": _s(-_d(t["commission"])),
                "ts": str(t["time"])}  # fmt: skip

    # -- Bybit v5 ----------------------------------------------------------------------------------------
    #
    # Envelopes ``{"retCode": 0, "retMsg": "OK", "result": {...}, "time": ms}``, strings, the client order
    # id ``orderLinkId``, requests signed with HMAC-SHA256 (hex) of timestamp + key + recv window + the
    # query (GET) or the JSON body (POST). A create answers the ids only. ``order/realtime`` lists the open
    # orders (or the one asked for by id), ``order/history`` the closed ones; fees are in the asset received.

    def _bybit_auth(self, method: str, query: str, body: str, headers: Any) -> None:
        key, ts = headers.get("X-BAPI-API-KEY"), headers.get("X-BAPI-TIMESTAMP") or ""
        if key != self.api_key:
            raise ApiError(401, -2015, "API key is invalid.", "auth")
        payload = ts + key + (headers.get("X-BAPI-RECV-WINDOW") or "") + (body if method == "POST" else query)
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not ts or not hmac.compare_digest(headers.get("X-BAPI-SIGN") or "", expected):
            raise ApiError(401, -1022, "error sign! origin_string[…]", "signature")

    def _by(self, result: Any) -> dict[str, Any]:
        return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": self.now_ms}

    def _bybit_symbol(self, symbol: str | None) -> str:
        if symbol not in self.specs:
            raise ApiError(400, -1121, "Not supported symbols", "bad_symbol")
        return symbol

    def _bybit(self, method: str, path: str, query: str, body: str, headers: Any) -> tuple[int, Any]:
        if path.startswith(("/v5/order/", "/v5/execution/", "/v5/account/", "/v5/user/", "/v5/asset/")):
            self._bybit_auth(method, query, body, headers)
        p: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        if method == "POST":
            p = json.loads(body) if body else {}
        if path.startswith(("/v5/market/instruments-info", "/v5/market/tickers", "/v5/market/orderbook",
                            "/v5/order/", "/v5/execution/")) and p.get("category") != "spot":  # fmt: skip
            raise ApiError(400, -1102, f"emulator: category {p.get('category')!r}: spot only")
        with self.lock:
            if path == "/v5/market/time":
                return 200, self._by({"timeSecond": str(self.now_ms // 1000), "timeNano": str(self.now_ms * 10**6)})
            if path == "/v5/market/instruments-info":
                rows = [self.bybit_instrument(s) for s in sorted(self.specs)]
                return 200, self._by({"category": "spot", "list": rows, "nextPageCursor": ""})
            if path == "/v5/market/tickers":
                syms = [self._bybit_symbol(p["symbol"])] if "symbol" in p else sorted(self.specs)
                return 200, self._by({"category": "spot", "list": [self.bybit_ticker(s) for s in syms]})
            if path == "/v5/market/orderbook":
                s = self._bybit_symbol(p.get("symbol"))
                bids, asks = self.book(s)
                n = int(p.get("limit", 1))
                return 200, self._by({"s": s, "b": [[_s(a), _s(b)] for a, b in bids[:n]],
                                      "a": [[_s(a), _s(b)] for a, b in asks[:n]], "ts": self.now_ms, "u": 1,
                                      "seq": 1, "cts": self.now_ms})  # fmt: skip
            if path == "/v5/user/query-api":
                return 200, self._by({"id": "1", "note": "emulator", "apiKey": self.api_key, "readOnly": 0,
                                      "permissions": {"Spot": ["SpotTrade"], "Wallet": ["AccountTransfer"]},
                                      "ips": ["*"], "type": 1, "unified": 0, "uta": 1, "userID": 1})  # fmt: skip
            if path == "/v5/account/info":
                return 200, self._by({"unifiedMarginStatus": 6, "marginMode": "REGULAR_MARGIN",
                                      "isMasterTrader": False, "spotHedgingStatus": "OFF",
                                      "updatedTime": str(self.now_ms)})  # fmt: skip
            if path == "/v5/asset/coin/query-info":
                return 200, self._by({"rows": [
                    {"name": c, "coin": c, "remainAmount": "10000000", "chains": [
                        {"chainType": n, "confirmation": "12", "withdrawFee": _s(self.withdraw_fees.get((c, n),
                         Decimal(0))), "depositMin": "0", "withdrawMin": _s(self.withdraw_min), "chain": n,
                         "chainDeposit": "1", "chainWithdraw": "1", "minAccuracy": "6", "withdrawPercentageFee": "0"}
                        for n in nets]}
                    for c, nets in sorted(self.networks.items())]})  # fmt: skip
            if path == "/v5/account/wallet-balance":
                coins = [{"coin": a, "equity": _s(f + lk), "walletBalance": _s(f + lk), "locked": _s(lk),
                          "availableToWithdraw": "", "totalOrderIM": "0", "totalPositionIM": "0",
                          "borrowAmount": "0", "accruedInterest": "0", "usdValue": ""}
                         for a, (f, lk) in sorted(self.balances.items())]  # fmt: skip
                return 200, self._by({"list": [{"accountType": "UNIFIED", "coin": coins}]})
            if path == "/v5/order/create" and method == "POST":
                o = self._bybit_place(p)
                return 200, self._by({"orderId": str(o.order_id), "orderLinkId": o.client_id})
            if path == "/v5/order/cancel" and method == "POST":
                o = self._bybit_find(p)
                if o is None or not o.open:
                    raise ApiError(200, -2011, "Order does not exist.", "cancel_rejected")
                self.cancel(o)
                return 200, self._by({"orderId": str(o.order_id), "orderLinkId": o.client_id})
            if path == "/v5/order/realtime":
                if p.get("orderId") or p.get("orderLinkId"):
                    one = self._bybit_find(p)
                    rows = [one] if one is not None else []
                else:
                    s = self._bybit_symbol(p["symbol"]) if p.get("symbol") else None
                    rows = [o for o in self._newest(self.orders.values()) if o.open and s in (None, o.symbol)]
                for o in rows:
                    self.poll(o)  # each sighting is a lookup: a resting order may fill, a cancel take effect
                if not (p.get("orderId") or p.get("orderLinkId")):
                    rows = [o for o in rows if o.open]
                return 200, self._by({"category": "spot", "nextPageCursor": "",
                                      "list": [self.bybit_order(o) for o in rows[: int(p.get("limit", 20))]]})
            if path == "/v5/order/history":
                s = self._bybit_symbol(p["symbol"]) if p.get("symbol") else None
                start = int(p.get("startTime", self.now_ms - 7 * 24 * HOUR_MS))
                end = int(p.get("endTime", start + 7 * 24 * HOUR_MS))
                rows = [o for o in self._newest(self.orders.values()) if not o.open and s in (None, o.symbol)
                        and p.get("orderStatus") in (None, self._bybit_status(o))
                        and p.get("orderId") in (None, str(o.order_id))
                        and p.get("orderLinkId") in (None, o.client_id) and start <= o.time_ms <= end]  # fmt: skip
                return 200, self._by({"category": "spot", "nextPageCursor": "",
                                      "list": [self.bybit_order(o) for o in rows[: int(p.get("limit", 20))]]})
            if path == "/v5/execution/list":
                s = self._bybit_symbol(p["symbol"]) if p.get("symbol") else None
                oid = p.get("orderId")
                if p.get("orderLinkId"):
                    o = self.by_client.get(p["orderLinkId"])
                    oid = str(o.order_id) if o is not None else "none"
                start = int(p.get("startTime", self.now_ms - 7 * 24 * HOUR_MS))
                rows = [t for t in reversed(self.trades) if s in (None, t["symbol"])
                        and oid in (None, str(t["orderId"])) and start <= t["time"]]  # fmt: skip
                return 200, self._by({"category": "spot", "nextPageCursor": "",
                                      "list": [self.bybit_execution(t) for t in rows[: int(p.get("limit", 50))]]})
        raise ApiError(404, -1100, f"emulator: no Bybit route {method} {path}")

    def _bybit_find(self, p: dict[str, Any]) -> EmuOrder | None:
        symbol = self._bybit_symbol(p.get("symbol"))
        cid = p.get("orderLinkId")
        o = self.by_client.get(cid) if cid else self.orders.get(int(p.get("orderId") or 0))
        return o if o is not None and o.symbol == symbol else None

    def _bybit_place(self, r: dict[str, Any]) -> EmuOrder:
        symbol = self._bybit_symbol(r.get("symbol"))
        kind, side = str(r.get("orderType", "")), str(r.get("side", ""))
        if kind not in ("Limit", "Market") or side not in ("Buy", "Sell"):
            raise ApiError(400, -1102, "params error: side or orderType invalid")
        if kind == "Market" and r.get("marketUnit", "baseCoin" if side == "Sell" else "quoteCoin") != "baseCoin":
            raise ApiError(400, -1102, "emulator: a market order is sized in the base coin (marketUnit baseCoin)")
        q = {"symbol": symbol, "side": side.upper(), "type": kind.upper(), "quantity": str(r.get("qty", "0")),
             "marketUnit": str(r.get("marketUnit", ""))}  # fmt: skip
        if r.get("orderLinkId"):
            q["newClientOrderId"] = str(r["orderLinkId"])
        if kind == "Limit":
            q["price"], q["timeInForce"] = str(r.get("price", "0")), str(r.get("timeInForce") or "GTC")
        return self.create_order(q, "bybit")

    @staticmethod
    def _bybit_status(o: EmuOrder) -> str:
        return {"NEW": "New", "PARTIALLY_FILLED": "PartiallyFilled", "FILLED": "Filled"}.get(o.status, "Cancelled")

    def bybit_instrument(self, symbol: str) -> dict[str, Any]:
        m = self.specs[symbol]
        return {"symbol": symbol, "baseCoin": m.base, "quoteCoin": self.quote, "innovation": "0", "status": "Trading",
                "marginTrading": "none", "stTag": "0",
                "lotSizeFilter": {"basePrecision": m.step_size, "quotePrecision": "0.00000001",
                                  "minOrderQty": m.min_qty, "maxOrderQty": "9000000", "minOrderAmt": m.min_notional,
                                  "maxOrderAmt": "9000000"},
                "priceFilter": {"tickSize": m.tick_size}}  # fmt: skip

    def bybit_ticker(self, symbol: str) -> dict[str, Any]:
        t = self.ticker(symbol)
        return {"symbol": symbol, "bid1Price": t["bidPrice"], "bid1Size": t["bidQty"], "ask1Price": t["askPrice"],
                "ask1Size": t["askQty"], "lastPrice": t["lastPrice"], "prevPrice24h": t["prevClosePrice"],
                "price24hPcnt": "0", "highPrice24h": t["highPrice"], "lowPrice24h": t["lowPrice"],
                "turnover24h": t["quoteVolume"], "volume24h": t["volume"], "usdIndexPrice": ""}  # fmt: skip

    def bybit_order(self, o: EmuOrder) -> dict[str, Any]:
        fee_ccy, fee = self._fees(o)
        return {"orderId": str(o.order_id), "orderLinkId": o.client_id, "blockTradeId": "", "symbol": o.symbol,
                "price": _s(o.price) if o.type == "LIMIT" else "0", "qty": _s(o.qty), "side": o.side.title(),
                "isLeverage": "0", "positionIdx": 0, "orderStatus": self._bybit_status(o),
                "cancelType": "CancelByUser" if o.status == "CANCELED" else "UNKNOWN", "rejectReason": "EC_NoError",
                "avgPrice": _s(o.quote_qty / o.executed) if o.executed else "", "leavesQty": _s(o.remaining),
                "leavesValue": _s(o.remaining * o.price), "cumExecQty": _s(o.executed),
                "cumExecValue": _s(o.quote_qty), "cumExecFee": _s(fee), "timeInForce": "GTC",
                "orderType": o.type.title(), "stopOrderType": "", "orderIv": "", "marketUnit": o.market_unit,
                "triggerPrice": "0.00", "takeProfit": "0.00", "stopLoss": "0.00", "tpTriggerBy": "",
                "slTriggerBy": "", "triggerDirection": 0, "triggerBy": "", "lastPriceOnCreated": "",
                "reduceOnly": False, "closeOnTrigger": False, "placeType": "", "smpType": "None", "smpGroup": 0,
                "smpOrderId": "", "createdTime": str(o.time_ms), "updatedTime": str(o.update_ms),
                "cumFeeDetail": {fee_ccy: _s(fee)} if o.fills else {}}  # fmt: skip

    def bybit_execution(self, t: dict[str, Any]) -> dict[str, Any]:
        o = self.orders[t["orderId"]]
        return {"symbol": t["symbol"], "orderId": str(o.order_id), "orderLinkId": o.client_id,
                "side": o.side.title(), "orderPrice": _s(o.price), "orderQty": _s(o.qty), "leavesQty": _s(o.remaining),
                "orderType": o.type.title(), "stopOrderType": "", "execFee": t["commission"], "execId": str(t["id"]),
                "execPrice": t["price"], "execQty": t["qty"], "execType": "Trade", "execValue": t["quoteQty"],
                "execTime": str(t["time"]), "isMaker": False, "feeRate": _s(self.taker_fee), "tradeIv": "",
                "markIv": "", "markPrice": "", "indexPrice": "", "underlyingPrice": "", "blockTradeId": "",
                "closedSize": "", "seq": t["id"]}  # fmt: skip

    # -- error answers, per dialect -----------------------------------------------------------------------

    def empty_list(self, dialect: str) -> Any:
        """An order list without any order, as ``dialect`` answers it (a ``not_found`` fault on a list)."""
        if dialect == "okx":
            return self._ok([])
        if dialect == "bybit":
            return self._by({"category": "spot", "list": [], "nextPageCursor": ""})
        return []

    def error_answer(self, dialect: str, exc: ApiError, cid: str = "") -> tuple[int, Any]:
        """``exc`` as the exchange of ``dialect`` answers it: (HTTP status, body)."""
        if dialect == "okx":
            status, code = OKX_CODES.get(exc.kind, OKX_CODES["bad_param"])
            if exc.kind in ORDER_LEVEL:
                return 200, {"code": "1", "msg": "All operations failed", "data": [
                    {"ordId": "", "clOrdId": cid, "tag": "", "sCode": code, "sMsg": exc.msg}]}  # fmt: skip
            return status, {"code": code, "msg": exc.msg, "data": []}
        if dialect == "bybit":
            status, code = BYBIT_CODES.get(exc.kind, BYBIT_CODES["bad_param"])
            msg = "Request timeout, please try again later" if exc.kind == "internal" else exc.msg  # Bybit's 10016
            return status, {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": self.now_ms}
        return exc.status, {"code": exc.code, "msg": exc.msg}

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
                params = request_params(parts.query, body)
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
                dialect = dialect_of(parts.path)
                fault = emu._take_fault(self.command, parts.path, params)
                kind = fault.kind if fault is not None else ""
                status, payload, extra = 200, None, {}
                try:
                    if kind == "timeout_before":
                        time.sleep(emu.timeout_hold_s)
                        self.close_connection = True
                        return
                    if kind == "reset_before":
                        self._reset()
                        return
                    if kind == "html_before":
                        self._send(200, MAINTENANCE_PAGE, "text/html")
                        return
                    if kind == "503":
                        self._send(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", "text/html")
                        return
                    if kind == "not_found" and (dialect == "bybit" or parts.path in ORDER_LISTS):
                        status, payload = 200, emu.empty_list(dialect)  # a list without the order
                    elif kind in FAULT_ERRORS:
                        if kind == "429" and fault.retry_after is not None:  # type: ignore[union-attr]
                            extra["Retry-After"] = fault.retry_after  # type: ignore[union-attr]
                        raise ApiError(*FAULT_ERRORS[kind])
                    else:
                        status, payload = emu.handle(self.command, parts.path, parts.query, body, self.headers, fault)
                except ApiError as exc:
                    status, payload = emu.error_answer(dialect, exc, params.get(DIALECTS[dialect].client_id, ""))
                if kind == "timeout_after":
                    time.sleep(emu.timeout_hold_s)
                    self.close_connection = True
                    return
                if kind == "reset_after":
                    self._reset()
                    return
                if kind == "html_after":
                    self._send(200, MAINTENANCE_PAGE, "text/html")
                    return
                if kind == "strip_id":
                    payload = strip_order_ids(dialect, payload)
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
