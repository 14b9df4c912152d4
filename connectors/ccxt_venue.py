"""CEX venue and market data through ccxt: any exchange ccxt supports, configured by its id.

Registered twice: as the venue ``ccxt`` and as the data source ``ccxt``.

Venue, live. An order is rounded with ccxt's own helpers (``amount_to_precision``,
``price_to_precision``) and checked against the market's minimum amount and cost before anything
is sent. It goes out as a limit at the touch ± ``limit_offset_bps`` (or a market order) with the
cycle's deterministic client order id. Its state comes from lookups, never from the create's reply
alone (OKX and Bybit answer a create with the ids only): ``fetch_order``, or where ccxt lacks or
refuses it (Bybit's unified account) the symbol's open, closed and cancelled orders, then its trades,
by client id or id. It is followed every ``poll_interval_s`` until closed or ``order_timeout_s``, the
rest is cancelled (by the exchange's order id, which every unified ``cancel_order`` takes) and the order
followed ``settle_timeout_s`` more; one still not final then is returned in flight (``OPEN``) and later
cycles follow it (``reconcile``, ``follow_order``). Fills come from the exchange's trades (each fee in
its currency, converted to the quote; a fee in the asset bought moves the position by the net amount;
slippage against ``Order.decision_price``), or, where ccxt has no trade endpoint for the exchange, from
the final order's filled amount and average price. Trades that do not add up to the order's filled
amount yet keep it in flight with the trades seen so far (their ids are the exchange's: none is booked
twice). Only ccxt's unified calls are used; per-exchange behaviour is ccxt's options
(``exchange_options``).

Replies are checked. A create or lookup answered with something that is not an order of this client id
with a string id (no id, another order's, ``None``), or with something that is not the exchange's JSON
at all (an HTML page with status 200, ``CcxtClient.send``), is an ambiguous outcome, as a timeout is: the
order is looked up by client id before anything else, and the id the ledger gets is the exchange's.
Every credential ccxt says the exchange requires needs an option naming its variable
(``check_required_credentials``): a missing passphrase stops the start, not each cycle.

Nothing is doubled. Each order is written to the venue's own journal (SQLite under the state dir)
*before* it is sent (and the exchange's order id once a checked reply gives it), so
``fetch_order(client_id)`` knows the symbol and the decision price after a restart and ``None`` really
means "never sent". A transient fault on creation is ambiguous (the
exchange may have accepted the order before the connection died), so the order is looked up by
client id before any resend, and a resend reuses the client id, which the exchange refuses to
accept twice. Transient faults are retried a bounded number of times with jittered backoff; then
``VenueError(retryable=True)`` marks the venue failed for the cycle. Insufficient funds, invalid
orders and authentication errors are never retried.

Funding. ``send_transfer`` withdraws the funding asset (``funding_asset``, default the quote) with
the transfer's client id as the exchange's withdrawal client id (``withdraw_client_id_param``,
Binance's ``withdrawOrderId``), after journalling it; an unknown outcome (a timeout, a restart) is
looked up in the withdrawal history by that id before any resend, and a resend reuses it (the
exchange refuses a duplicate). Where the exchange takes its fee out of the amount
(``withdraw_fee_inside``, Binance), ``amount + fee`` is withdrawn so that ``amount`` arrives; the fee
is ``withdraw_fee`` or the exchange's for the network. A withdrawal the exchange fails or rejects
after accepting it is FAILED with nothing spent (the exchange refunds it). Refusals (funds, address,
limits, a network closed for withdrawals) are ``TransferRefused``: nothing left the account.
``deposit_status`` finds an incoming transfer by its txid (and amount) in the deposit history. Paper
mode moves the cash over the bot's paper network instead (``paper_transfer_minutes``,
``paper_transfer_fee``), and the paper account's cash is its book's plus what that network moved.

Venue, paper (``paper = true``). Public endpoints only, no credentials: a fill walks the real
order book level by level up to the limit (volume-weighted price; a partial fill when the book is
thin, the rest cancelled), with the market's taker fee. The account lives in the journal file and
survives restarts like a real one.

Data. Hourly OHLCV paged over ``since`` until a page is empty, reaches the last hour or makes no
progress (a page shorter than ``ohlcv_page`` is the exchange's own cap, not the end); a missing
hour is reported as a ``data_gap`` risk event and a ``DataError`` naming the asset, never
forward-filled. Volumes are the exchange's base-asset volumes, which feed the cycle's liquidity
limits.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import ccxt
import numpy as np
from pydantic import Field

from bot.components import ComponentContext
from bot.domain import (
    Balances,
    Bars,
    DepositAddress,
    Fill,
    MarketInfo,
    Order,
    OrderState,
    OrderStatus,
    Quote,
    RiskEvent,
    Severity,
    Snapshot,
    Transfer,
    TransferState,
    TransferStatus,
)
from bot.errors import ConfigError, DataError, InsufficientFunds, InvalidOrder, TransferRefused, VenueError
from bot.hookspecs import hookimpl
from connectors.ccxt_client import TRANSIENT, CcxtClient, CcxtConnection, read_credentials, short
from connectors.paper_network import PaperNetwork

log = logging.getLogger("rwabot.ccxt")

HOUR = timedelta(hours=1)
HOUR_MS = 3_600_000
CASH = "__cash__"


class CcxtVenueConfig(CcxtConnection):
    """Options of the ``ccxt`` venue. Credentials are *names* of environment variables."""

    paper: bool = Field(default=False, description="simulate fills on the real book; public endpoints only")
    api_key_env: str | None = Field(default="RWABOT_CCXT_API_KEY", min_length=1)
    secret_env: str | None = Field(default="RWABOT_CCXT_SECRET", min_length=1)
    password_env: str | None = Field(
        default=None, min_length=1, description="the API key's passphrase (ccxt's password: OKX, KuCoin, Bitget…)"
    )
    uid_env: str | None = Field(default=None, min_length=1, description="ccxt's uid, for exchanges that need one")
    order_type: Literal["limit", "market"] = "limit"
    limit_offset_bps: float = Field(default=5.0, ge=-100, le=1000, description="buy at ask·(1+o), sell at bid·(1−o)")
    order_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="an order not closed by then is cancelled (the rest of it)"
    )
    poll_interval_s: float = Field(default=1.0, ge=0, le=60, description="between two lookups of an order")
    settle_timeout_s: float = Field(
        default=10.0, ge=0, le=3600,
        description="after the cancel, how long the order is followed to a final state; one still open then "
        "stays in flight and is followed by later cycles",
    )  # fmt: skip
    taker_fee: float | None = Field(default=None, ge=0, lt=0.05, description="default: the market's fee schedule")
    max_concurrent_orders: int = Field(default=4, ge=1, le=64, description="legs of one side sent at once")
    client_order_id_param: str = Field(default="clientOrderId", description="ccxt's unified client id parameter")
    paper_cash: float = Field(default=1_000_000.0, ge=0, description="paper mode: initial quote balance")
    paper_book_depth: int = Field(default=100, ge=1, le=5000, description="paper mode: order book levels walked")
    paper_transfer_minutes: float = Field(
        default=30.0, ge=0, le=7 * 24 * 60, description="paper mode: delay of the paper network"
    )
    paper_transfer_fee: float = Field(default=1.0, ge=0, description="paper mode: flat fee per transfer sent")
    funding_asset: str | None = Field(
        default=None, min_length=1,
        description="currency code this venue withdraws (a stablecoin counted 1:1 in the quote); default: quote",
    )  # fmt: skip
    withdraw_fee: float | None = Field(
        default=None, ge=0,
        description="flat withdrawal fee in the funding asset; default: the exchange's for the network",
    )  # fmt: skip
    withdraw_fee_inside: bool = Field(
        default=True, description="the exchange takes the fee out of the amount (Binance): amount + fee is sent"
    )
    withdraw_client_id_param: str = Field(
        default="withdrawOrderId", min_length=1, description="the exchange's client id of a withdrawal (raw info)"
    )


class CcxtDataConfig(CcxtConnection):
    """Options of the ``ccxt`` data source (public endpoints; no credentials)."""

    kinds: dict[str, str] = Field(default_factory=dict, description="asset -> kind; default 'traditional'")
    ohlcv_page: int = Field(default=1000, ge=2, le=5000, description="candles per request")


def _utc_ms(ms: int | float | None, fallback: datetime) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else fallback


def _step(precision: float | None, mode: int) -> float:
    """A ccxt precision as a step (ccxt reports tick sizes, decimal places or significant digits)."""
    if precision is None:
        return 1e-8
    if mode == ccxt.TICK_SIZE:
        return float(precision)
    if mode == ccxt.DECIMAL_PLACES:
        return 10.0 ** -float(precision)
    return 1e-8  # significant digits: no fixed step; ccxt's helpers still round every order


CREDENTIAL_OPTIONS = {"apiKey": "api_key_env", "secret": "secret_env", "password": "password_env", "uid": "uid_env"}
"""ccxt's credential fields -> the venue option naming the environment variable that holds each."""


def check_required_credentials(exchange: str, env: Mapping[str, str | None], where: str) -> None:
    """Every credential ccxt says ``exchange`` requires (its ``requiredCredentials``) has an option naming
    its environment variable: a missing passphrase stops the start, not every cycle at the exchange."""
    cls = getattr(ccxt, exchange, None)
    required = (cls().requiredCredentials if cls is not None else None) or {}  # set by each exchange's describe()
    for field_name, needed in required.items():
        if not needed or env.get(field_name):
            continue
        option = CREDENTIAL_OPTIONS.get(field_name)
        what = {"password": "password (the API key's passphrase)"}.get(field_name, field_name)
        if option is None:
            raise ConfigError(f"{where}: ccxt's {exchange} requires a {what}, which the ccxt venue does not pass")
        raise ConfigError(f"{where}: ccxt's {exchange} requires a {what}: set {option} to the name of the "
                          "environment variable that holds it")  # fmt: skip


def symbol_of(cfg: CcxtConnection, asset: str) -> str:
    return cfg.symbols.get(asset, f"{asset}/{cfg.quote}")


class Journal:
    """The venue's own durable record: orders before they are sent, and the paper account."""

    def __init__(self, path: Path, paper_cash: float | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS sent (
                client_id TEXT PRIMARY KEY, asset TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL,
                qty REAL NOT NULL, decision_price REAL NOT NULL, created REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS transfer_sent (
                client_id TEXT PRIMARY KEY, asset TEXT NOT NULL, network TEXT NOT NULL, address TEXT NOT NULL,
                tag TEXT, amount REAL NOT NULL, gross REAL NOT NULL, fee REAL NOT NULL, created REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS paper_balance (asset TEXT PRIMARY KEY, qty REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS paper_order (
                client_id TEXT PRIMARY KEY, asset TEXT, side TEXT, qty REAL, status TEXT, filled REAL,
                time TEXT, message TEXT);
            CREATE TABLE IF NOT EXISTS paper_fill (
                fill_id TEXT PRIMARY KEY, client_id TEXT, price REAL, qty REAL, fee REAL, slippage REAL);
            """
        )
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(sent)")}
        if "order_id" not in columns:  # journals written before the exchange's order id was kept
            with self.tx() as db:
                db.execute("ALTER TABLE sent ADD COLUMN order_id TEXT")
        if paper_cash is not None:
            with self.tx():
                self.db.execute("INSERT OR IGNORE INTO paper_balance VALUES (?, ?)", (CASH, paper_cash))

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def record(self, order: Order, symbol: str, created: float) -> None:
        """The order's intent, before it is sent; ``created``: the bot clock's POSIX time (where history
        lookups start)."""
        with self.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO sent (client_id, asset, symbol, side, qty, decision_price, created) "
                "VALUES (?,?,?,?,?,?,?)",
                (order.client_id, order.asset, symbol, order.side, order.qty, order.decision_price, created),
            )

    def set_order_id(self, client_id: str, order_id: str) -> None:
        """The exchange's id of the order, once a checked reply says it."""
        with self.tx() as db:
            db.execute("UPDATE sent SET order_id=? WHERE client_id=? AND order_id IS NULL", (order_id, client_id))

    def order_id(self, client_id: str) -> tuple[str | None, float | None]:
        """The exchange's id of the order (None until known) and when it was journalled."""
        with self._lock:
            row = self.db.execute("SELECT order_id, created FROM sent WHERE client_id=?", (client_id,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def get(self, client_id: str, venue: str) -> tuple[Order, str] | None:
        """The order as it was sent, and its symbol; None if it was never sent."""
        with self._lock:
            row = self.db.execute(
                "SELECT asset, symbol, side, qty, decision_price FROM sent WHERE client_id=?", (client_id,)
            ).fetchone()
        if row is None:
            return None
        asset, symbol, side, qty, dp = row
        return Order(client_id, "", venue, asset, side, qty, dp), symbol

    def record_transfer(self, t: Transfer, gross: float, fee: float, created: float) -> None:
        """A withdrawal's intent, before it is sent: ``gross`` leaves the account, ``t.amount`` must arrive."""
        with self.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO transfer_sent VALUES (?,?,?,?,?,?,?,?,?)",
                (t.client_id, t.asset, t.network, t.address, t.tag, t.amount, gross, fee, created),
            )

    def get_transfer(self, client_id: str) -> SentTransfer | None:
        """The withdrawal as it was sent (or was about to be); None if this venue never tried to send it."""
        with self._lock:
            row = self.db.execute(
                "SELECT client_id, asset, network, address, tag, amount, gross, fee, created FROM transfer_sent "
                "WHERE client_id=?",
                (client_id,),
            ).fetchone()
        return None if row is None else SentTransfer(*row)

    def close(self) -> None:
        with self._lock:  # never under a thread still writing (sqlite3 would crash the process, not raise)
            self.db.close()


@dataclass(frozen=True)
class SentTransfer:
    """A journalled withdrawal: ``gross`` is what the exchange was asked to send, ``amount`` what arrives."""

    client_id: str
    asset: str
    network: str
    address: str
    tag: str | None
    amount: float
    gross: float
    fee: float
    created: float  # the bot clock's POSIX time when it was journalled: where history lookups start


WITHDRAWAL_STATUS = {
    "pending": TransferStatus.PENDING,
    "processing": TransferStatus.PENDING,
    "ok": TransferStatus.ARRIVED,
    "completed": TransferStatus.ARRIVED,
    "failed": TransferStatus.FAILED,
    "rejected": TransferStatus.FAILED,
    "canceled": TransferStatus.FAILED,
}
"""ccxt's unified transaction status → the transfer's, as the source sees it."""


STATUS = {
    "open": OrderStatus.OPEN,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.CANCELED,
    "rejected": OrderStatus.REJECTED,
}
"""ccxt's unified order status -> the leg's; any other (None: a reply without one) is in flight."""


OTHER_ORDER = object()
"""A lookup by client id answered with another order: the client id did not reach the exchange."""


def _final(o: Mapping[str, Any]) -> bool:
    return o.get("status") in ("closed", "canceled", "expired", "rejected")


def _pos(x: Any) -> bool:
    try:
        return float(x) > 0 and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _balance_time(b: Mapping[str, Any]) -> datetime | None:
    """As-of of a ccxt balance: its ``timestamp`` (ms) or ``datetime`` (ISO 8601); None when the exchange
    gives neither (most do not: the balance is then as of now)."""
    ts = b.get("timestamp")
    if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts) and ts > 0:
        return datetime.fromtimestamp(ts / 1000, UTC)
    iso = b.get("datetime")
    if isinstance(iso, str) and iso:
        try:
            t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        except ValueError:
            return None
        return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return None


class CcxtVenue:
    """A spot account on a ccxt exchange (or a paper account on its real order book)."""

    def __init__(
        self,
        name: str,
        cfg: CcxtVenueConfig,
        ctx: ComponentContext,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.clock = ctx.clock
        self.emit = ctx.emit
        creds: dict[str, str] = {}
        if not cfg.paper:
            env = {"apiKey": cfg.api_key_env, "secret": cfg.secret_env, "password": cfg.password_env,
                   "uid": cfg.uid_env}  # fmt: skip
            check_required_credentials(cfg.exchange, env, f"venues.{name}.options")
            creds = read_credentials(env, f"venues.{name}.options")
        self.client = CcxtClient(name, cfg, credentials=creds, sleep=sleep)
        self._fetch_order = bool(self.client.has.get("fetchOrder"))  # False once ccxt refuses it (Bybit UTA)
        self.max_concurrent_orders = cfg.max_concurrent_orders
        self.journal = Journal(Path(ctx.state_dir) / f"ccxt-{name}.sqlite", cfg.paper_cash if cfg.paper else None)
        self._assets = {symbol_of(cfg, a): a for a in ctx.assets}
        self.network = PaperNetwork(Path(ctx.state_dir)) if cfg.paper else None
        self.funding_asset = cfg.funding_asset or cfg.quote
        self._reported: dict[str, str] = {}  # client id -> the last deposit mismatch reported (once each)

    def __repr__(self) -> str:
        return f"CcxtVenue({self.name!r}, {self.cfg.exchange!r}, paper={self.cfg.paper})"

    # -- market rules and quotes -----------------------------------------------------------------------

    def _symbol(self, asset: str) -> str:
        return symbol_of(self.cfg, asset)

    def _fee_rate(self, m: Mapping[str, Any]) -> float:
        if self.cfg.taker_fee is not None:
            return self.cfg.taker_fee
        return float(m.get("taker") or 0.0)

    def market(self, asset: str) -> MarketInfo:
        m = self.client.market(self._symbol(asset))
        mode = self.client.ex.precisionMode
        step = _step(m["precision"].get("amount"), mode)
        limits = m.get("limits") or {}
        min_qty = float((limits.get("amount") or {}).get("min") or step)
        min_cost = float((limits.get("cost") or {}).get("min") or 0.0)
        return MarketInfo(
            asset, step, max(min_qty, step), min_cost, _step(m["precision"].get("price"), mode), self._fee_rate(m)
        )

    def quote(self, asset: str) -> Quote:
        symbol = self._symbol(asset)
        self.client.market(symbol)
        t = self.client.call(f"ticker {symbol}", lambda ex: ex.fetch_ticker(symbol))
        bid, ask = t.get("bid"), t.get("ask")
        if not bid or not ask:
            book = self.client.call(f"order book {symbol}", lambda ex: ex.fetch_order_book(symbol, 5))
            if not book["bids"] or not book["asks"]:
                raise VenueError(self.name, f"no two-sided quote for {asset} ({symbol})", retryable=True)
            bid, ask = book["bids"][0][0], book["asks"][0][0]
        bid, ask = float(bid), float(ask)
        if not (0 < bid <= ask) or not math.isfinite(ask):
            raise VenueError(self.name, f"crossed or invalid quote for {asset}: bid {bid}, ask {ask}", retryable=True)
        # the 24-hour base volume spread over 24 hours: the cycle's participation limits use hourly bars
        hourly = float(t.get("baseVolume") or 0.0) / 24.0
        return Quote(asset, bid, ask, _utc_ms(t.get("timestamp"), self.clock.now()), hourly)

    def balances(self) -> Balances:
        if self.cfg.paper:
            with self.journal._lock:
                rows = self.journal.db.execute("SELECT asset, qty FROM paper_balance").fetchall()
            cash = next((q for a, q in rows if a == CASH), 0.0)
            assert self.network is not None
            cash += self.network.net_cash(self.name, self.clock.now())  # what the paper network moved in and out
            return Balances(cash, {a: q for a, q in rows if a != CASH and q != 0.0})
        self.client.markets()
        b = self.client.call("balance", lambda ex: ex.fetch_balance())
        free, total = b.get("free") or {}, b.get("total") or {}
        positions: dict[str, float] = {}
        markets = self.client.markets()
        for symbol, asset in self._assets.items():
            if symbol not in markets:
                continue  # an asset the config gives to another venue
            base = markets[symbol]["base"]
            qty = float(total.get(base) or 0.0)
            if qty:
                positions[asset] = qty
        # free cash: what the next buy can pay with (cash locked in an open order is not spendable)
        return Balances(float(free.get(self.cfg.quote) or 0.0), positions, time=_balance_time(b))

    # -- orders ----------------------------------------------------------------------------------------

    def _prepare(self, order: Order) -> tuple[str, float, float | None]:
        """Symbol, amount and limit price rounded by ccxt, or InvalidOrder before anything is sent."""
        symbol = self._symbol(order.asset)
        m = self.client.market(symbol)
        ex = self.client.ex
        if not (order.qty > 0 and math.isfinite(order.qty)):
            raise InvalidOrder(self.name, f"order {order.client_id}: quantity {order.qty} is not positive")
        try:
            amount = float(ex.amount_to_precision(symbol, order.qty))
        except ccxt.BaseError as exc:
            raise InvalidOrder(self.name, f"order {order.client_id}: {order.qty} {order.asset}: {short(exc)}") from exc
        q = self.quote(order.asset)
        touch = q.ask if order.side == "buy" else q.bid
        off = self.cfg.limit_offset_bps / 1e4
        raw = touch * (1 + off) if order.side == "buy" else touch * (1 - off)
        price = float(ex.price_to_precision(symbol, raw))
        limits = m.get("limits") or {}
        min_amount = float((limits.get("amount") or {}).get("min") or 0.0)
        min_cost = float((limits.get("cost") or {}).get("min") or 0.0)
        if amount <= 0 or amount < min_amount or amount * touch < min_cost:
            msg = (
                f"order {order.client_id}: {order.side} {amount} {order.asset} (~{amount * touch:.2f} "
                f"{self.cfg.quote}) is below the market minimum (amount {min_amount}, cost {min_cost}); not sent"
            )
            log.warning("venue %s: %s", self.name, msg)
            raise InvalidOrder(self.name, msg)
        return symbol, amount, (price if self.cfg.order_type == "limit" else None)

    def place_order(self, order: Order) -> OrderState:
        """Send once per client id, follow the order to a final state (or the timeout), cancel the rest.

        The order's state comes from lookups, never from the create's reply alone (OKX and Bybit answer a
        create with the ids only): it is polled every ``poll_interval_s`` until closed or
        ``order_timeout_s``, then the rest is cancelled and the order followed ``settle_timeout_s`` more.
        One that is still not final then (a cancel the exchange has not carried out, an order its index
        does not show yet) is returned ``OPEN``, in flight: later cycles follow it (``reconcile``,
        ``follow_order``) and book its fills when they are known."""
        if self.cfg.paper:
            return self._paper_place(order)
        self.client.markets()
        known = self.journal.get(order.client_id, self.name)
        if known is not None:
            found = self._lookup(known[1], order.client_id)
            if found is not None:  # sent before (this run or an earlier one): resume, never resend
                return self._settle(known[0], known[1], found)
        symbol, amount, price = self._prepare(order)
        sent = Order(order.client_id, order.cycle_key, self.name, order.asset, order.side, amount, order.decision_price)
        # the intent is durable before the exchange sees anything
        self.journal.record(sent, symbol, self.clock.now().timestamp())
        created = self._create(sent, symbol, amount, price)
        return self._settle(sent, symbol, created)

    def _create(self, order: Order, symbol: str, amount: float, price: float | None) -> dict[str, Any]:
        """The accepted order (as the create answered it, or as a lookup by client id found it).

        A reply that is not an order of this client id with an id (``_checked``), or not the exchange's
        JSON at all (``CcxtClient.send``), is as ambiguous as a timeout: the exchange may hold the order.
        It is looked up by client id before anything else, and a resend reuses the client id, which the
        exchange refuses to accept twice."""
        cid = order.client_id
        params = {self.cfg.client_order_id_param: cid}
        if self.cfg.order_type == "limit":
            params["timeInForce"] = "GTC"
        attempt = 0
        while True:
            try:
                reply = self.client.send(
                    lambda ex: ex.create_order(symbol, self.cfg.order_type, order.side, amount, price, params)
                )
                o = self._checked(reply, cid)
                self.journal.set_order_id(cid, str(o["id"]))
                return o
            except ccxt.InsufficientFunds as exc:
                raise InsufficientFunds(self.name, f"order {cid} refused (InsufficientFunds): {short(exc)}") from exc
            except (ccxt.InvalidOrder, ccxt.BadRequest) as exc:
                # a duplicate client id is an "invalid order" on most exchanges: it may be ours, accepted
                found = self._lookup(symbol, cid)
                if found is not None:
                    log.warning("venue %s: order %s already at the exchange (%s); not resent", self.name, cid,
                                type(exc).__name__)  # fmt: skip
                    return found
                raise InvalidOrder(self.name, f"order {cid} refused ({type(exc).__name__}): {short(exc)}") from exc
            except TRANSIENT as exc:
                # ambiguous: the exchange may have accepted it before the fault, or behind a reply that does
                # not say so. Ask before any resend (after the Retry-After of a rate-limit answer, which the
                # lookup waits for too).
                if isinstance(exc, ccxt.BadResponse):
                    self._report_bad_reply(f"create {cid}", exc)
                self.client.honour_retry_after(f"order {cid}", exc)
                found = self._lookup(symbol, cid)
                if found is not None:
                    log.warning("venue %s: create %s failed with %s but the order exists (id %s); not resent",
                                self.name, cid, type(exc).__name__, found["id"])  # fmt: skip
                    return found
                if attempt >= self.cfg.max_retries:
                    raise VenueError(
                        self.name, f"order {cid} not placed after {attempt + 1} attempts: {type(exc).__name__}: "
                        f"{short(exc)}", retryable=True,
                    ) from exc  # fmt: skip
                delay = self.client.backoff(attempt)
                log.warning("venue %s: create %s: %s, not at the exchange; resend %d/%d in %.2fs", self.name, cid,
                            type(exc).__name__, attempt + 1, self.cfg.max_retries, delay)  # fmt: skip
                self.client.sleep(delay)
                attempt += 1
            except ccxt.BaseError as exc:
                raise self.client.map_error(f"order {cid}", exc) from exc

    def _report_bad_reply(self, what: str, exc: BaseException) -> None:
        msg = f"{what}: {self.cfg.exchange} answered something that is not an order reply ({short(exc, 200)}); " \
              "looking the order up by its client id"  # fmt: skip
        log.warning("venue %s: %s", self.name, msg)
        self.emit(RiskEvent("venue_bad_reply", Severity.WARNING, f"venue:{self.name}", msg, self.clock.now()))

    def _checked(self, o: Any, cid: str, oid: str | None = None) -> dict[str, Any]:
        """``o`` if it is an order of client id ``cid`` (and id ``oid`` when known) with a non-empty string id;
        else ``ccxt.BadResponse``: a reply without an id, or another order's, says nothing about ours."""
        if not isinstance(o, dict):
            raise ccxt.BadResponse(f"order {cid}: the reply is a {type(o).__name__}, not an order")
        got = o.get("id")
        if not isinstance(got, str) or not got.strip() or got in ("None", "null", "undefined"):
            raise ccxt.BadResponse(f"order {cid}: the reply has no order id ({got!r})")
        other = o.get("clientOrderId")
        if other not in (None, "") and other != cid:
            raise ccxt.BadResponse(f"order {cid}: the reply is of client order id {other!r}")
        if oid is not None and got != oid:
            raise ccxt.BadResponse(f"order {cid}: the reply is of order {got!r}, not {oid!r}")
        return o

    def _lookup(self, symbol: str, cid: str, oid: str | None = None) -> dict[str, Any] | None:
        """The exchange's order by client id, or None if it never accepted one (retried on faults).

        ``fetch_order`` (with the order's id too, once known) where the exchange has it; where ccxt lacks it
        or refuses it (``NotSupported``, ``ArgumentsRequired``: Bybit's unified account), or where a lookup
        by client id alone finds nothing or another order (ccxt does not pass every exchange a client id, and
        an order index may lag), the symbol's open orders, then its closed and cancelled ones since the order
        was journalled, by client id or id, and last its trades by order id (an order known only by its
        fills). None only when none of them has it."""
        known, created = self.journal.order_id(cid)
        oid = oid or known
        if self._fetch_order:
            param = self.cfg.client_order_id_param

            def get(ex: ccxt.Exchange) -> dict[str, Any] | None | BaseException | object:
                try:
                    o = ex.fetch_order(oid or "", symbol, {param: cid})
                except ccxt.OrderNotFound:
                    return None
                except (ccxt.NotSupported, ccxt.ArgumentsRequired) as exc:
                    return exc
                if oid is None and isinstance(o, dict) and o.get("clientOrderId") not in (None, "", cid):
                    return OTHER_ORDER  # ccxt did not pass the client id on: the exchange answered another order
                return self._checked(o, cid, oid)

            found = self.client.call(f"lookup {cid}", get)
            if isinstance(found, dict):
                if known is None:
                    self.journal.set_order_id(cid, str(found["id"]))
                return found
            if isinstance(found, BaseException):
                self._fetch_order = False
                log.warning("venue %s: %s refuses fetch_order (%s); orders are looked up in its order lists",
                            self.name, self.cfg.exchange, short(found, 160))  # fmt: skip
            # not found: where ccxt's fetch_order does not pass a client id on (Bybit), or the exchange's order
            # index lags, "not found" is no proof that it never took the order; the order lists have the last word
        since = int((created - 3600) * 1000) if created else None
        has = self.client.has
        for what, method, when in (("open orders", "fetchOpenOrders", None), ("closed orders", "fetchClosedOrders",
                                   since), ("cancelled orders", "fetchCanceledOrders", since)):  # fmt: skip
            if not has.get(method):
                continue

            def listed(ex: ccxt.Exchange, m: str = method, t: int | None = when) -> dict[str, Any] | None:
                try:
                    rows = getattr(ex, _snake(m))(symbol, t)
                except ccxt.OrderNotFound:  # some exchanges answer an empty order list so
                    return None
                mine = [o for o in rows or [] if isinstance(o, dict) and (o.get("clientOrderId") == cid
                        or (oid is not None and str(o.get("id")) == oid))]  # fmt: skip
                return self._checked(mine[0], cid, oid) if mine else None

            o = self.client.call(f"{what} of {symbol} (lookup {cid})", listed)
            if o is not None:
                if known is None:
                    self.journal.set_order_id(cid, str(o["id"]))
                return o
        if oid is not None and has.get("fetchMyTrades"):
            trades = self._order_trades(symbol, oid, since)
            if trades:  # no order list has it, its fills say it exists: an order of unknown state
                return {"id": oid, "clientOrderId": cid, "symbol": symbol, "status": None,
                        "filled": sum(float(t["amount"]) for t in trades), "trades": trades}  # fmt: skip
        return None

    def _cancel(self, symbol: str, cid: str, o: dict[str, Any]) -> dict[str, Any]:
        """Cancel the rest of ``o`` (by the exchange's id: every exchange's unified ``cancel_order`` takes it)
        and follow the order until it is final or ``settle_timeout_s``; the last state seen."""
        oid = str(o["id"])

        def cancel(ex: ccxt.Exchange) -> None:
            try:
                ex.cancel_order(oid, symbol)
            except ccxt.OrderNotFound:
                pass  # filled or cancelled meanwhile: the lookups below tell which

        self.client.call(f"cancel {cid}", cancel)
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        while True:
            o = self._lookup(symbol, cid, oid) or o
            if _final(o) or time.monotonic() >= deadline:
                return o
            self.client.sleep(self.cfg.poll_interval_s)

    def _settle(self, order: Order, symbol: str, o: dict[str, Any]) -> OrderState:
        """Follow an accepted order until it is final or the timeout, cancel the rest, read its fills."""
        cid, oid = order.client_id, str(o["id"])
        deadline = time.monotonic() + self.cfg.order_timeout_s
        first = o.get("status") is None  # a reply without a status (OKX, Bybit): look at once
        while not _final(o) and time.monotonic() < deadline:
            if not first:
                self.client.sleep(self.cfg.poll_interval_s)
            first = False
            o = self._lookup(symbol, cid, oid) or o
        if not _final(o):
            log.info("venue %s: order %s not closed in %.0fs; cancelling the rest", self.name, cid,
                     self.cfg.order_timeout_s)  # fmt: skip
            o = self._cancel(symbol, cid, o)
            if not _final(o):
                log.warning("venue %s: order %s (%s) is still %s %.0fs after its cancel; left in flight", self.name,
                            cid, oid, o.get("status") or "of unknown state", self.cfg.settle_timeout_s)  # fmt: skip
        return self._state(order, symbol, o)

    def _order_trades(self, symbol: str, oid: str, since: int | None = None) -> list[dict[str, Any]]:
        """The exchange's trades of order ``oid`` (each checked: an id, a positive amount and price)."""

        def get(ex: ccxt.Exchange) -> list[dict[str, Any]]:
            if self.client.has.get("fetchOrderTrades"):
                rows = ex.fetch_order_trades(oid, symbol)
            else:
                rows = ex.fetch_my_trades(symbol, since, None)
            mine = [t for t in rows or [] if isinstance(t, dict) and str(t.get("order")) == oid]
            for t in mine:
                if not (isinstance(t.get("id"), str) and t["id"] and _pos(t.get("amount")) and _pos(t.get("price"))):
                    raise ccxt.BadResponse(f"trade of order {oid} without an id, amount or price: {t.get('id')!r}")
            return mine

        return self.client.call(f"trades of {oid}", get)

    def _fee_in_quote(self, fee: Mapping[str, Any] | None, price: float, m: Mapping[str, Any], qty: float) -> float:
        base = m["base"]
        if not fee or not fee.get("cost"):
            return 0.0
        cost, cur = float(fee["cost"]), fee.get("currency")
        if cur == self.cfg.quote:
            return cost
        if cur == base:
            return cost * price
        pair = f"{cur}/{self.cfg.quote}"
        if pair in self.client.markets():
            t = self.client.call(f"ticker {pair}", lambda ex: ex.fetch_ticker(pair))
            return cost * float(t.get("last") or t.get("bid") or 0.0)
        est = qty * price * self._fee_rate(m)
        self.emit(
            RiskEvent(
                "fee_estimated", Severity.WARNING, f"venue:{self.name}",
                f"fee of {cost} {cur} has no {pair} market; booked as {est:.6f} {self.cfg.quote}",
                self.clock.now(),
            )
        )  # fmt: skip
        return est

    def _fill(self, order: Order, symbol: str, fid: str, qty: float, price: float, fees: Sequence[Any],
              when: Any) -> Fill:  # fmt: skip
        """One execution: a fee paid in the asset moves the position by the net quantity; every fee is
        booked in the quote (a third currency at its ticker)."""
        m = self.client.market(symbol)
        net = qty
        for f in fees:
            if f and f.get("currency") == m["base"] and f.get("cost"):
                net = net - float(f["cost"]) if order.side == "buy" else net + float(f["cost"])
        fee = sum(self._fee_in_quote(f, price, m, net) for f in fees)
        sign = 1.0 if order.side == "buy" else -1.0
        return Fill(f"{symbol}:{fid}", order.client_id, self.name, order.asset, order.side, net, price, fee,
                    sign * (price - order.decision_price) * net, _utc_ms(when, self.clock.now()))  # fmt: skip

    def _state(self, order: Order, symbol: str, o: dict[str, Any]) -> OrderState:
        """The order's state for the ledger, with its fills: from its trades where the exchange reports them
        (each with its fee and fee currency), else from the order's filled amount and average price once it
        is final. An order whose trades do not add up to its filled amount yet stays in flight (``OPEN``)
        with the trades seen so far: their ids are the exchange's, so none is booked twice."""
        oid = str(o["id"])
        status = STATUS.get(str(o.get("status")), OrderStatus.OPEN)
        filled = o.get("filled")
        filled = float(filled) if filled is not None else None
        if filled is None and status is OrderStatus.FILLED and _pos(o.get("amount")):
            filled = float(o["amount"])  # closed: all of it
        fills: list[Fill] = []
        message = ""
        has = self.client.has
        if filled is None and not status.terminal:
            pass  # nothing known yet (a reply without a state): in flight
        elif has.get("fetchOrderTrades") or has.get("fetchMyTrades"):
            trades: list[dict[str, Any]] = []
            if (filled or 0) > 0 or (filled is None and status.terminal):
                for attempt in range(3):  # the trade list may lag the order by a moment
                    trades = self._order_trades(symbol, oid)
                    got = sum(float(t["amount"]) for t in trades)
                    if filled is None or math.isclose(got, filled, rel_tol=1e-9, abs_tol=1e-12):
                        break
                    if attempt < 2:
                        self.client.sleep(max(self.cfg.poll_interval_s, 0.05))
                else:
                    message = f"filled {filled} but its trades add up to {got} so far; in flight until they do"
                    log.warning("venue %s: order %s %s", self.name, order.client_id, message)
                    status = OrderStatus.OPEN
            for t in trades:
                fees = [f for f in (t.get("fees") or [t.get("fee")]) if f]
                fills.append(self._fill(order, symbol, str(t["id"]), float(t["amount"]), float(t["price"]), fees,
                                        t.get("timestamp")))  # fmt: skip
        elif status.terminal and filled is None:  # final, but how much filled is not said: not guessed
            message = f"{o.get('status')} at {self.cfg.exchange} without its filled amount; in flight until known"
            status = OrderStatus.OPEN
        elif status.terminal and filled > 0:
            # no trade endpoint at all: one fill for the whole order, at its average price, once it is final
            price = o.get("average") or (float(o["cost"]) / filled if o.get("cost") else None) or o.get("price")
            if not _pos(price):
                raise VenueError(self.name, f"order {order.client_id} filled {filled} at no known price",
                                 retryable=True)  # fmt: skip
            fees = [f for f in (o.get("fees") or [o.get("fee")]) if f]
            fills.append(self._fill(order, symbol, f"order-{oid}", filled, float(price), fees,
                                    o.get("lastTradeTimestamp") or o.get("timestamp")))  # fmt: skip
        if status is OrderStatus.CANCELED and (filled or 0) > 0:
            message = f"partially filled {filled} of {o.get('amount')}; the rest was cancelled"
        elif status is OrderStatus.OPEN and not message:
            message = f"in flight at {self.cfg.exchange} (order {oid}, {o.get('status') or 'state unknown'})"
        return OrderState(
            order.client_id, status, sum(f.qty for f in fills), tuple(fills), venue_order_id=oid, message=message,
        )  # fmt: skip

    def fetch_order(self, client_id: str) -> OrderState | None:
        if self.cfg.paper:
            return self._paper_state(client_id)
        known = self.journal.get(client_id, self.name)
        if known is None:
            return None  # every order is journalled before it is sent: the exchange never saw this one
        self.client.markets()
        o = self._lookup(known[1], client_id)
        return None if o is None else self._state(known[0], known[1], o)

    def follow_order(self, client_id: str) -> OrderState | None:
        """An order left in flight by an earlier cycle (optional venue hook, ``bot.inflight``): its state now,
        the rest cancelled if it is still open (nobody waits for it any more); None if never sent."""
        if self.cfg.paper:
            return self._paper_state(client_id)
        known = self.journal.get(client_id, self.name)
        if known is None:
            return None
        self.client.markets()
        order, symbol = known
        o = self._lookup(symbol, client_id)
        if o is None:
            return None
        if not _final(o):
            o = self._cancel(symbol, client_id, o)
        return self._state(order, symbol, o)

    def cancel_order(self, client_id: str) -> OrderState:
        if self.cfg.paper:
            state = self._paper_state(client_id)
            if state is None:
                raise InvalidOrder(self.name, f"cannot cancel unknown order {client_id}")
            return state  # paper orders never rest
        known = self.journal.get(client_id, self.name)
        if known is None:
            raise InvalidOrder(self.name, f"cannot cancel unknown order {client_id}")
        self.client.markets()
        order, symbol = known
        o = self._lookup(symbol, client_id)
        if o is None:
            raise InvalidOrder(self.name, f"order {client_id} is not at the exchange")
        if not _final(o):
            o = self._cancel(symbol, client_id, o)
        return self._state(order, symbol, o)

    def close(self) -> None:
        self.journal.close()
        if self.network is not None:
            self.network.close()

    # -- funding (bot.components.FundingVenue) ---------------------------------------------------------
    #
    # A withdrawal is journalled before it is sent and sent with the transfer's client id as the
    # exchange's withdrawal client id (``withdraw_client_id_param``). Whenever the outcome of a send is
    # unknown (a timeout, a reset, a restart after the intent was journalled) the exchange's withdrawal
    # history is asked for that id first, and a resend reuses the id, which the exchange refuses to
    # accept twice: a withdrawal, unlike an order, cannot be cancelled once the chain has it.

    def _check_transfer(self, t: Transfer) -> None:
        """What this venue never sends: another venue's transfer, another asset than its funding asset,
        a non-positive amount, no address."""
        what = f"transfer {t.client_id}"
        if t.source != self.name:
            raise TransferRefused(self.name, f"{what}: its source is venue {t.source!r}, not {self.name!r}")
        if t.asset != self.funding_asset:
            raise TransferRefused(
                self.name, f"{what}: asset {t.asset!r} is not this venue's funding asset {self.funding_asset!r}"
            )
        if not (t.amount > 0 and math.isfinite(t.amount)):
            raise TransferRefused(self.name, f"{what}: amount {t.amount} is not positive")
        if not t.address:
            raise TransferRefused(self.name, f"{what}: no destination address")

    def deposit_address(self, asset: str, network: str) -> DepositAddress:
        """Where the exchange account receives ``asset`` over ``network`` (paper: ``paper:<venue>``)."""
        if self.network is not None:
            return self.network.deposit_address(self.name, asset, network)
        self.client.markets()
        a = self.client.call(
            f"deposit address of {asset} over {network}",
            lambda ex: ex.fetch_deposit_address(asset, {"network": network}),
        )
        if not a.get("address"):
            raise VenueError(self.name, f"{self.cfg.exchange} gave no deposit address of {asset} over {network}")
        return DepositAddress(self.name, asset, network, str(a["address"]), a.get("tag") or None)

    def withdraw_fee(self, asset: str, network: str) -> float:
        """The withdrawal fee of ``asset`` over ``network`` in that asset (the quote): the configured one,
        else the exchange's (``fetchDepositWithdrawFees``); a network it does not list is refused."""
        if self.cfg.withdraw_fee is not None:
            return self.cfg.withdraw_fee
        fees = self.client.call(f"withdrawal fees of {asset}", lambda ex: ex.fetch_deposit_withdraw_fees([asset]))
        nets = (fees.get(asset) or {}).get("networks") or {}
        ex = self.client.ex
        for code in dict.fromkeys([network, ex.network_id_to_code(ex.network_code_to_id(network, asset), asset)]):
            fee = ((nets.get(code) or {}).get("withdraw") or {}).get("fee")
            if fee is not None:
                return float(fee)
        raise TransferRefused(
            self.name, f"{self.cfg.exchange} lists no withdrawal fee of {asset} over {network!r} (networks: "
            f"{', '.join(nets) or 'none'}); set withdraw_fee to send anyway; nothing sent",
        )  # fmt: skip

    def send_transfer(self, transfer: Transfer) -> TransferState:
        """Withdraw ``transfer`` once per client id: journalled first, looked up before any (re)send."""
        t = transfer
        if self.network is not None:
            return self._paper_send(t)
        self.client.markets()
        row = self.journal.get_transfer(t.client_id)
        if row is not None:
            found = self._find_withdrawal(row)
            if found is not None:  # sent before (this run or an earlier one): follow it, never resend
                return self._transfer_state(row, found)
            differs = [f"{k} {a!r} (journal {b!r})" for k, a, b in (
                ("asset", t.asset, row.asset), ("network", t.network, row.network), ("address", t.address, row.address),
                ("tag", t.tag or None, row.tag or None), ("amount", t.amount, row.amount)) if a != b]  # fmt: skip
            if differs:  # one client id, two intents: a bug upstream; sending either could be wrong
                raise VenueError(self.name, f"transfer {t.client_id} differs from the one journalled before: "
                                 f"{', '.join(differs)}; nothing sent")  # fmt: skip
            log.warning("venue %s: transfer %s was journalled but the exchange does not have it; sending it",
                        self.name, t.client_id)  # fmt: skip
        else:
            self._check_transfer(t)
            fee = self.withdraw_fee(t.asset, t.network)
            gross = t.amount + fee if self.cfg.withdraw_fee_inside else t.amount
            created = self.clock.now().timestamp()
            self.journal.record_transfer(t, gross, fee, created)  # durable before the exchange sees anything
            row = self.journal.get_transfer(t.client_id)
            assert row is not None
        return self._withdraw(row)

    def _withdraw(self, row: SentTransfer) -> TransferState:
        cid = row.client_id
        what = f"transfer {cid} ({row.gross:,.2f} {row.asset} over {row.network} to {row.address})"
        params: dict[str, Any] = {"network": row.network, self.cfg.withdraw_client_id_param: cid}
        if row.tag:
            params["tag"] = row.tag
        attempt = 0
        while True:
            try:
                r = self.client.send(lambda ex: ex.withdraw(row.asset, row.gross, row.address, params))
                log.info("venue %s: %s accepted as withdrawal %s", self.name, what, r.get("id"))
                return TransferState(cid, TransferStatus.PENDING, self._arriving(row.gross, row.fee), row.fee,
                                     0.0, str(r.get("id") or "") or None, None, "withdrawal accepted",
                                     None)  # fmt: skip
            except (ccxt.InsufficientFunds, ccxt.InvalidAddress, ccxt.PermissionDenied, ccxt.OperationRejected) as exc:
                raise TransferRefused(self.name, f"{what} refused ({type(exc).__name__}): {short(exc)}") from exc
            except ccxt.BadRequest as exc:
                # a duplicate client id is a bad request: the withdrawal may be ours, accepted earlier
                found = self._find_withdrawal(row)
                if found is not None:
                    log.warning("venue %s: %s already at the exchange (%s); not resent", self.name, what,
                                type(exc).__name__)  # fmt: skip
                    return self._transfer_state(row, found)
                raise TransferRefused(self.name, f"{what} refused ({type(exc).__name__}): {short(exc)}") from exc
            except TRANSIENT as exc:
                # ambiguous: the exchange may have accepted it before the fault. Ask before any resend.
                self.client.honour_retry_after(f"transfer {cid}", exc)
                found = self._find_withdrawal(row)
                if found is not None:
                    log.warning("venue %s: %s failed with %s but the withdrawal exists; not resent", self.name,
                                what, type(exc).__name__)  # fmt: skip
                    return self._transfer_state(row, found)
                if attempt >= self.cfg.max_retries:
                    raise VenueError(
                        self.name, f"{what} not sent after {attempt + 1} attempts: {type(exc).__name__}: "
                        f"{short(exc)}", retryable=True,
                    ) from exc  # fmt: skip
                delay = self.client.backoff(attempt)
                log.warning("venue %s: %s: %s, not at the exchange; resend %d/%d in %.2fs", self.name, what,
                            type(exc).__name__, attempt + 1, self.cfg.max_retries, delay)  # fmt: skip
                self.client.sleep(delay)
                attempt += 1
            except ccxt.BaseError as exc:
                raise self.client.map_error(what, exc) from exc

    def _find_withdrawal(self, row: SentTransfer) -> dict[str, Any] | None:
        """The exchange's withdrawal with ``row``'s client id (from a day before it was journalled), or
        None if it never accepted one. Two with one id would be a doubled withdrawal: reported."""
        param = self.cfg.withdraw_client_id_param
        since = int((row.created - 86_400) * 1000)
        rows = self.client.call(
            f"withdrawal lookup {row.client_id}",
            lambda ex: ex.fetch_withdrawals(row.asset, since, None, {param: row.client_id}),
        )
        mine = [w for w in rows if str((w.get("info") or {}).get(param) or "") == row.client_id]
        if len(mine) > 1:
            msg = (f"transfer {row.client_id}: {len(mine)} withdrawals with this client id at {self.cfg.exchange} "
                   f"({', '.join(str(w.get('id')) for w in mine)}); following the first")  # fmt: skip
            log.error("venue %s: %s", self.name, msg)
            self.emit(RiskEvent("transfer_mismatch", Severity.CRITICAL, f"venue:{self.name}", msg, self.clock.now(),
                                None, {"client_id": row.client_id}))  # fmt: skip
        return mine[0] if mine else None

    def _arriving(self, gross: float, fee: float) -> float:
        """What reaches the address of a withdrawal of ``gross``: less the fee where it is taken out."""
        return gross - fee if self.cfg.withdraw_fee_inside else gross

    def _transfer_state(self, row: SentTransfer, w: Mapping[str, Any]) -> TransferState:
        """The exchange's withdrawal as the transfer's state: what arrives, the fee in the quote, its id."""
        status = WITHDRAWAL_STATUS.get(str(w.get("status") or "pending"), TransferStatus.PENDING)
        amount, cost = w.get("amount"), (w.get("fee") or {}).get("cost")
        gross = float(amount) if amount is not None else row.gross
        fee = float(cost) if cost is not None else row.fee  # in the asset withdrawn, counted 1:1 in the quote
        when = w.get("updated") or w.get("timestamp")
        t = datetime.fromtimestamp(when / 1000, UTC) if when else None
        wid = str(w.get("id") or "") or None
        txid = w.get("txid") or None
        if status is TransferStatus.FAILED:  # refunded, fee included: nothing left the account
            return TransferState(row.client_id, status, row.amount, 0.0, 0.0, wid, txid,
                                 f"withdrawal {wid} {w.get('status')} at {self.cfg.exchange}; refunded", t)  # fmt: skip
        msg = f"withdrawal {wid} {w.get('status')}" + (f", txid {txid}" if txid else "")
        return TransferState(row.client_id, status, self._arriving(gross, fee), fee, 0.0, wid, txid, msg,
                             t if status is TransferStatus.ARRIVED else None)  # fmt: skip

    def fetch_transfer(self, client_id: str) -> TransferState | None:
        """The withdrawal of ``client_id``; None if this venue never journalled it or the exchange does
        not have it (then, and only then, it may be sent)."""
        if self.network is not None:
            return self.network.state(client_id, self.clock.now())
        row = self.journal.get_transfer(client_id)
        if row is None:
            return None  # every withdrawal is journalled before it is sent: the exchange never saw this one
        self.client.markets()
        w = self._find_withdrawal(row)
        return None if w is None else self._transfer_state(row, w)

    def deposit_status(self, transfer: Transfer, state: TransferState) -> TransferStatus | None:
        """Whether an incoming transfer is credited (ARRIVED), seen but not credited (PENDING) or not
        seen (None) in the exchange's deposit history: matched by ``state.txid`` (case-insensitive), and
        among several deposits of one transaction by ``state.amount``. A deposit of that txid with
        another amount still counts (the chain moved what it moved) and is reported once."""
        if self.network is not None:
            return self.network.deposit_status(self.name, transfer.client_id, self.clock.now())
        txid = (state.txid or "").lower()
        if not txid:
            return None  # nothing mined yet, nothing the exchange could have seen
        self.client.markets()
        since = int((state.time - timedelta(days=1)).timestamp() * 1000) if state.time else None
        deps = self.client.call(
            f"deposits of {transfer.asset} (transfer {transfer.client_id})",
            lambda ex: ex.fetch_deposits(transfer.asset, since),
        )
        seen = [d for d in deps if str(d.get("txid") or "").lower() == txid]
        if not seen:
            return None
        tol = max(1e-6, 1e-9 * abs(state.amount))
        same = [d for d in seen if d.get("amount") is not None and abs(float(d["amount"]) - state.amount) <= tol]
        if not same:
            got = ", ".join(f"{d.get('amount')}" for d in seen)
            msg = (f"transfer {transfer.client_id}: deposit {txid} at {self.cfg.exchange} is of {got} "
                   f"{transfer.asset}, the source reports {state.amount:,.6f}")  # fmt: skip
            if self._reported.get(transfer.client_id) != msg:
                self._reported[transfer.client_id] = msg
                log.warning("venue %s: %s", self.name, msg)
                self.emit(RiskEvent("deposit_mismatch", Severity.WARNING, f"venue:{self.name}", msg, self.clock.now(),
                                    None, {"client_id": transfer.client_id, "txid": txid}))  # fmt: skip
        statuses = {str(d.get("status")) for d in (same or seen)}
        if "ok" in statuses:
            return TransferStatus.ARRIVED
        if "pending" in statuses:
            return TransferStatus.PENDING
        log.warning("venue %s: deposit %s of transfer %s is %s at %s", self.name, txid, transfer.client_id,
                    ", ".join(sorted(statuses)), self.cfg.exchange)  # fmt: skip
        return None

    def _paper_send(self, t: Transfer) -> TransferState:
        """Over the paper network: refused unless the account's cash pays the amount and the fee."""
        assert self.network is not None
        existing = self.network.state(t.client_id, self.clock.now())
        if existing is not None:
            return existing
        self._check_transfer(t)
        with self.journal._lock:  # no paper buy can spend the cash between the check and the send
            return self.network.send(
                self.name, t, available=self.balances().cash, fee=self.cfg.paper_transfer_fee,
                delay=timedelta(minutes=self.cfg.paper_transfer_minutes), now=self.clock.now(),
            )  # fmt: skip

    # -- reconciliation (optional venue hook, see docs/plugins.md) ------------------------------------

    def reconcile(self, in_flight: Mapping[str, str]) -> tuple[list[OrderState], list[RiskEvent]]:
        """Match the exchange's open orders to the ledger by client id, on start and after a failure.

        ``in_flight`` maps the client ids the ledger sent but has not closed on this venue to their
        assets. Our own orders still open (a crash or a failure left them resting, and nobody polls
        them any more) are cancelled; the state of every in-flight order the exchange has is
        returned for the ledger (one it does not return was never accepted). An open order the
        ledger closed is cancelled too and reported; an order that is not ours is only reported.
        Balances are compared with the ledger by the cycle.
        """
        if self.cfg.paper:
            return [], []
        self.client.markets()
        now = self.clock.now()
        where = f"venue:{self.name}"
        opens = self.client.call("open orders", lambda ex: ex.fetch_open_orders())
        states: list[OrderState] = []
        events: list[RiskEvent] = []
        for o in opens:
            if not isinstance(o, dict) or not isinstance(o.get("id"), str) or not o["id"]:
                log.warning("venue %s: an open order without an id in %s's answer: %r", self.name,
                            self.cfg.exchange, o)  # fmt: skip
                continue
            cid = str(o.get("clientOrderId") or "")
            known = self.journal.get(cid, self.name) if cid else None
            if cid in in_flight or known is not None:
                asset = known[0].asset if known else in_flight[cid]
                order = known[0] if known else Order(cid, "", self.name, asset, o["side"], float(o["amount"]), 0.0)
                final = self._cancel(o["symbol"], cid, o)
                state = self._state(order, o["symbol"], final)
                if cid in in_flight:
                    states.append(state)
                    msg = f"order {cid} ({o['symbol']}) was left open; cancelled with {state.filled_qty} filled"
                    if not state.status.terminal:
                        msg = f"order {cid} ({o['symbol']}) was left open; cancel asked, still in flight"
                    events.append(RiskEvent("order_reconciled", Severity.WARNING, where, msg, now, None,
                                            {"client_id": cid}))  # fmt: skip
                else:
                    msg = f"order {cid} ({o['symbol']}) was open at the exchange but closed in the ledger; cancelled"
                    events.append(RiskEvent("order_mismatch", Severity.CRITICAL, where, msg, now, None,
                                            {"client_id": cid, "filled": state.filled_qty}))  # fmt: skip
            else:
                msg = (
                    f"open order {o.get('id')} ({o['symbol']} {o['side']} {o['amount']}, client id {cid or '-'}) "
                    "is not rwabot's; left alone"
                )
                events.append(RiskEvent("unknown_open_order", Severity.WARNING, where, msg, now, None,
                                        {"order_id": str(o.get("id"))}))  # fmt: skip
        done = {st.client_id for st in states}
        for cid in in_flight:
            if cid not in done:
                st = self.fetch_order(cid)
                if st is not None:
                    states.append(st)
        return states, events

    # -- paper mode -------------------------------------------------------------------------------------

    def _paper_state(self, client_id: str) -> OrderState | None:
        with self.journal._lock:
            row = self.journal.db.execute(
                "SELECT asset, side, status, filled, time, message FROM paper_order WHERE client_id=?", (client_id,)
            ).fetchone()
            fills = self.journal.db.execute(
                "SELECT fill_id, price, qty, fee, slippage FROM paper_fill WHERE client_id=? ORDER BY fill_id",
                (client_id,),
            ).fetchall()
        if row is None:
            return None
        asset, side, status, filled, when, message = row
        t = datetime.fromisoformat(when)
        fs = tuple(Fill(fid, client_id, self.name, asset, side, q, p, fee, s, t) for fid, p, q, fee, s in fills)
        return OrderState(client_id, OrderStatus(status), filled, fs, venue_order_id=f"paper-{client_id}",
                          message=message)  # fmt: skip

    def _paper_place(self, order: Order) -> OrderState:
        existing = self._paper_state(order.client_id)
        if existing is not None:
            return existing
        symbol, amount, limit = self._prepare(order)
        m = self.client.market(symbol)
        book = self.client.call(
            f"order book {symbol}", lambda ex: ex.fetch_order_book(symbol, self.cfg.paper_book_depth)
        )
        levels = book["asks"] if order.side == "buy" else book["bids"]
        walked: list[tuple[float, float]] = []
        left = amount
        for lvl in levels:
            price, size = float(lvl[0]), float(lvl[1])
            if limit is not None and (
                (order.side == "buy" and price > limit) or (order.side == "sell" and price < limit)
            ):
                break
            take = min(size, left)
            if take <= 0:
                break
            walked.append((price, take))
            left -= take
        ex = self.client.ex
        filled = float(ex.amount_to_precision(symbol, sum(q for _, q in walked))) if walked else 0.0
        notional = sum(p * q for p, q in walked)
        vwap = notional / sum(q for _, q in walked) if walked else 0.0
        fee = filled * vwap * self._fee_rate(m)
        sign = 1.0 if order.side == "buy" else -1.0
        now = self.clock.now().astimezone(UTC).isoformat()
        with self.journal.tx() as db:
            cash = db.execute("SELECT qty FROM paper_balance WHERE asset=?", (CASH,)).fetchone()[0]
            assert self.network is not None
            cash += self.network.net_cash(self.name, self.clock.now())
            pos_row = db.execute("SELECT qty FROM paper_balance WHERE asset=?", (order.asset,)).fetchone()
            pos = pos_row[0] if pos_row else 0.0
            reject = ""
            if order.side == "buy" and cash < filled * vwap + fee:
                reject = f"insufficient cash: need {filled * vwap + fee:.2f}, have {cash:.2f}"
            elif order.side == "sell" and pos < amount * (1 - 1e-12):
                reject = f"insufficient {order.asset}: need {amount}, have {pos}"
            if reject:
                row = (order.client_id, order.asset, order.side, amount, "rejected", 0.0, now, reject)
                db.execute("INSERT INTO paper_order VALUES (?,?,?,?,?,?,?,?)", row)
            else:
                status = "filled" if filled >= amount * (1 - 1e-12) else "canceled"
                msg = "" if status == "filled" else f"book too thin within the limit: filled {filled} of {amount}"
                db.execute("INSERT INTO paper_order VALUES (?,?,?,?,?,?,?,?)",
                           (order.client_id, order.asset, order.side, amount, status, filled, now, msg))  # fmt: skip
                if filled > 0:
                    # one fill at the volume-weighted price of the levels walked
                    slip = sign * (vwap - order.decision_price) * filled
                    db.execute("INSERT INTO paper_fill VALUES (?,?,?,?,?,?)",
                               (f"paper:{order.client_id}:1", order.client_id, vwap, filled, fee, slip))  # fmt: skip
                    db.execute(
                        "UPDATE paper_balance SET qty = qty - ? WHERE asset=?", (sign * filled * vwap + fee, CASH)
                    )
                    db.execute(
                        "INSERT INTO paper_balance VALUES (?, ?) "
                        "ON CONFLICT(asset) DO UPDATE SET qty = qty + excluded.qty",
                        (order.asset, sign * filled),
                    )
        state = self._paper_state(order.client_id)
        assert state is not None
        if state.status is OrderStatus.REJECTED:
            raise InsufficientFunds(self.name, f"order {order.client_id} rejected: {state.message}")
        return state


class CcxtDataSource:
    """Hourly bars and latest prices from a ccxt exchange's public endpoints."""

    def __init__(self, cfg: CcxtDataConfig, ctx: ComponentContext) -> None:
        self.cfg = cfg
        self.emit = ctx.emit
        self.clock = ctx.clock
        self.client = CcxtClient("data:ccxt", cfg)
        self._assets = tuple(dict.fromkeys([*ctx.assets, *cfg.symbols]))
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="ccxt-data")
        self._cache: dict[str, dict[int, tuple[float, float]]] = {}  # asset -> bar open (ms) -> (close, volume)

    def assets(self) -> tuple[str, ...]:
        return self._assets

    def asset_kind(self, asset: str) -> str:
        return self.cfg.kinds.get(asset, "traditional")

    def _series(self, asset: str, first_open: int, last_open: int) -> dict[int, tuple[float, float]]:
        """Closed bars opening in [first_open, last_open], from the cache where it has them.

        Every hour the cycle asks for the same window shifted by one bar, and the monitor asks again every
        few minutes: only the bars after the cache's last one (or from the first one it lacks) are
        downloaded, so an hour costs one short page per asset instead of the whole window. Only bars that
        have closed are ever requested (``last_open`` is the open of a bar closed by ``end``), so a cached
        bar is final; the cache keeps one window of slack behind the oldest bar asked for."""
        cached = self._cache.setdefault(asset, {})
        start = first_open
        if cached and min(cached) <= first_open:
            start = next((ts for ts in range(first_open, last_open + HOUR_MS, HOUR_MS) if ts not in cached),
                         last_open + HOUR_MS)  # fmt: skip
        if start <= last_open:
            cached.update(self._download(asset, start, last_open))
        horizon = first_open - (last_open - first_open) - HOUR_MS
        for ts in [t for t in cached if t < horizon]:
            del cached[ts]
        return {ts: cached[ts] for ts in range(first_open, last_open + HOUR_MS, HOUR_MS) if ts in cached}

    def _download(self, asset: str, first_open: int, last_open: int) -> dict[int, tuple[float, float]]:
        symbol = symbol_of(self.cfg, asset)
        try:
            self.client.market(symbol)
        except VenueError as exc:
            raise DataError(f"data ccxt: {asset}: {exc}") from exc
        out: dict[int, tuple[float, float]] = {}
        since = first_open
        while since <= last_open:
            try:
                page = self.client.call(
                    f"ohlcv {symbol}", lambda ex, s=since: ex.fetch_ohlcv(symbol, "1h", s, self.cfg.ohlcv_page)
                )
            except VenueError as exc:
                raise DataError(f"data ccxt: {asset}: {exc}") from exc
            for ts, _o, _h, _l, c, v in page:
                if first_open <= ts <= last_open and c is not None:
                    out[int(ts)] = (float(c), float(v or 0.0))
            # A short page is not the end: exchanges cap a page below what was asked (Binance 1000,
            # others 100-500, some less for old data). Only an empty page, the last hour, or a page
            # that does not move ``since`` forward (which would loop for ever) ends the paging.
            if not page or int(page[-1][0]) >= last_open or int(page[-1][0]) < since:
                break
            since = int(page[-1][0]) + HOUR_MS
        return out

    def bars(self, assets: Sequence[str], end: datetime, hours: int) -> Bars:
        end = end.astimezone(UTC)
        last_close = end.replace(minute=0, second=0, microsecond=0)
        closes = [last_close - HOUR * k for k in range(hours - 1, -1, -1)]
        opens_ms = [int((t - HOUR).timestamp() * 1000) for t in closes]
        series = list(self._pool.map(lambda a: self._series(a, opens_ms[0], opens_ms[-1]), assets))
        close = np.full((len(closes), len(assets)), np.nan)
        volume = np.zeros((len(closes), len(assets)))
        gaps: dict[str, list[datetime]] = {}
        for j, (a, s) in enumerate(zip(assets, series)):
            for k, ms in enumerate(opens_ms):
                if ms in s:
                    close[k, j], volume[k, j] = s[ms]
                else:
                    gaps.setdefault(a, []).append(closes[k])
        if gaps:
            parts = []
            for a, ts in gaps.items():
                first = ", ".join(t.strftime("%Y-%m-%dT%H:%MZ") for t in ts[:5])
                parts.append(f"{a}: {len(ts)} missing hourly bars ({first}{', …' if len(ts) > 5 else ''})")
                self.emit(
                    RiskEvent(
                        "data_gap", Severity.WARNING, "data:ccxt", parts[-1], self.clock.now(), None,
                        {"asset": a, "missing": len(ts)},
                    )
                )  # fmt: skip
            raise DataError(f"data ccxt: gaps in hourly bars, not forward-filled: {'; '.join(parts)}")
        return Bars(tuple(assets), tuple(closes), close, volume)

    def latest(self, assets: Sequence[str], now: datetime) -> Snapshot:
        symbols = [symbol_of(self.cfg, a) for a in assets]
        try:
            for s in symbols:
                self.client.market(s)
            if self.client.has.get("fetchTickers"):
                tickers = self.client.call("tickers", lambda ex: ex.fetch_tickers(symbols))
            else:
                tickers = dict(zip(symbols, self._pool.map(
                    lambda s: self.client.call(f"ticker {s}", lambda ex: ex.fetch_ticker(s)), symbols)))  # fmt: skip
        except VenueError as exc:
            raise DataError(f"data ccxt: latest prices: {exc}") from exc
        prices, times = [], []
        for a, s in zip(assets, symbols):
            t = tickers.get(s)
            price = (t or {}).get("last") or (
                0.5 * (t["bid"] + t["ask"]) if t and t.get("bid") and t.get("ask") else None
            )
            if price is None:
                raise DataError(f"data ccxt: no price for {a} ({s})")
            prices.append(float(price))
            times.append(_utc_ms(t.get("timestamp"), now))
        return Snapshot(tuple(assets), np.array(prices), tuple(times))

    def close(self) -> None:
        self._pool.shutdown(wait=False)


@hookimpl
def rwabot_register_venues(register) -> None:  # noqa: ANN001 - pluggy passes bot.components.Register
    def make(cfg: CcxtVenueConfig, ctx: ComponentContext) -> CcxtVenue:
        return CcxtVenue(ctx.extra.get("venue_name", "ccxt"), cfg, ctx)

    register("ccxt", make, CcxtVenueConfig)


@hookimpl
def rwabot_register_data_sources(register) -> None:  # noqa: ANN001
    register("ccxt", lambda cfg, ctx: CcxtDataSource(cfg, ctx), CcxtDataConfig)
