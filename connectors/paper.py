"""Paper venue: real quotes from the configured data source, simulated fills, a durable book.

It behaves like an exchange account the bot does not control: its cash, positions and orders live
in their own SQLite file (under the ledger's state directory) and survive restarts, and an order is
looked up by its client id. That way the cycle's crash recovery is exercised in paper mode exactly
as it would be against a real venue.

Fill model: a buy fills at ``ask × (1 + impact)``, a sell at ``bid × (1 − impact)`` with
``impact = impact_coef × σ_h × (qty / hourly_volume) ** impact_exponent``: the square-root law
(Almgren et al. 2005; Tóth et al. 2011, where the coefficient is of order 1) with σ_h the asset's
hourly volatility over the last ``vol_lookback_hours`` bars. The quote's half-spread is configured
per asset kind. The fee is ``fee_bps`` of notional.

Funding: the account sends and receives quote cash over the paper network shared by every paper
account of the bot (``connectors.paper_network``): a transfer leaves at once (with ``transfer_fee``
plus ``transfer_fee_bps`` of the amount) and arrives ``transfer_minutes`` later on the bot's clock.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from pydantic import Field

from bot.components import ComponentConfig, ComponentContext, DataSource
from bot.domain import (
    Balances,
    DepositAddress,
    Fill,
    MarketInfo,
    Order,
    OrderState,
    OrderStatus,
    Quote,
    Transfer,
    TransferState,
    TransferStatus,
    check_prices,
)
from bot.errors import DataError, InsufficientFunds, InvalidOrder, VenueError
from bot.fills import impact, paper_fill
from bot.hookspecs import hookimpl
from connectors.paper_network import PaperNetwork

CASH = "__cash__"


class PaperConfig(ComponentConfig):
    initial_cash: float = Field(default=1_000_000.0, ge=0)
    fee_bps: float = Field(default=5.0, ge=0, le=1000)
    half_spread_bps: dict[str, float] = Field(
        default_factory=lambda: {"traditional": 1.0, "tokenized": 10.0},
        description="by asset kind or asset name (a name wins)",
    )
    impact_coef: float = Field(default=1.0, ge=0)
    vol_lookback_hours: int = Field(default=24, ge=2, le=24 * 30)
    impact_exponent: float = Field(default=0.5, gt=0, le=2)
    qty_step: float = Field(default=1e-6, gt=0)
    min_notional: float = Field(default=10.0, ge=0)
    max_quote_age_minutes: float = Field(default=90.0, gt=0)
    transfer_minutes: float = Field(default=30.0, ge=0, le=7 * 24 * 60, description="paper network delay")
    transfer_fee: float = Field(default=1.0, ge=0, description="flat fee per transfer sent, quote currency")
    transfer_fee_bps: float = Field(default=0.0, ge=0, le=100)


class PaperVenue:
    """A simulated account on top of a data source's prices."""

    def __init__(self, name: str, cfg: PaperConfig, ctx: ComponentContext) -> None:
        if ctx.data is None:
            raise VenueError(name, "the paper venue needs a data source for its quotes")
        self.name = name
        self.cfg = cfg
        self.clock = ctx.clock
        self.data: DataSource = ctx.data
        self.path = Path(ctx.state_dir) / f"paper-{name}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS balance (asset TEXT PRIMARY KEY, qty REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS paper_order (
                client_id TEXT PRIMARY KEY, asset TEXT, side TEXT, qty REAL, status TEXT,
                filled_qty REAL, price REAL, fee REAL, slippage REAL, time TEXT, message TEXT);
            """
        )
        with self._tx():
            if self._db.execute("SELECT 1 FROM balance WHERE asset=?", (CASH,)).fetchone() is None:
                self._db.execute("INSERT INTO balance VALUES (?, ?)", (CASH, cfg.initial_cash))
        self.network = PaperNetwork(Path(ctx.state_dir))

    # -- helpers ------------------------------------------------------------------------------------

    def _tx(self):
        venue = self

        class _Tx:
            def __enter__(self_inner):
                venue._lock.acquire()
                venue._db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    venue._db.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    venue._lock.release()
                return False

        return _Tx()

    def _half_spread(self, asset: str) -> float:
        hs = self.cfg.half_spread_bps
        if asset in hs:
            return hs[asset] / 1e4
        return hs.get(self.data.asset_kind(asset), 0.0) / 1e4

    # -- Venue protocol -------------------------------------------------------------------------------

    def market(self, asset: str) -> MarketInfo:
        return MarketInfo(
            asset, self.cfg.qty_step, self.cfg.qty_step, self.cfg.min_notional, 1e-8, self.cfg.fee_bps / 1e4
        )

    def impact(self, asset: str, qty: float, hourly_volume: float) -> float:
        """Price impact as a fraction of the quote for ``qty`` units."""
        bars = self.data.bars([asset], self.clock.now(), self.cfg.vol_lookback_hours + 1)
        r = np.diff(np.log(bars.close[:, 0]))
        sigma_h = float(r.std(ddof=1)) if len(r) > 1 else 0.0
        return impact(self.cfg.impact_coef, sigma_h, qty, hourly_volume, self.cfg.impact_exponent)

    def quote(self, asset: str) -> Quote:
        now = self.clock.now()
        try:
            snap = self.data.latest([asset], now)
            bars = self.data.bars([asset], now, 1)
        except DataError as exc:
            raise VenueError(self.name, f"no quote for {asset}: {exc}") from exc
        check_prices([asset], snap.prices, f"venue {self.name} quote")
        age = now - snap.times[0]
        if age > timedelta(minutes=self.cfg.max_quote_age_minutes):
            raise VenueError(self.name, f"quote for {asset} is stale ({age} old)")
        mid = float(snap.prices[0])
        hs = self._half_spread(asset)
        return Quote(asset, mid * (1 - hs), mid * (1 + hs), snap.times[0], float(bars.volume[-1, 0]))

    def balances(self) -> Balances:
        rows = self._db.execute("SELECT asset, qty FROM balance").fetchall()
        cash = next((q for a, q in rows if a == CASH), 0.0) + self.network.net_cash(self.name, self.clock.now())
        return Balances(cash, {a: q for a, q in rows if a != CASH and q != 0.0})

    # -- funding (bot.components.FundingVenue) ---------------------------------------------------------

    def deposit_address(self, asset: str, network: str) -> DepositAddress:
        return self.network.deposit_address(self.name, asset, network)

    def send_transfer(self, transfer: Transfer) -> TransferState:
        fee = self.cfg.transfer_fee + transfer.amount * self.cfg.transfer_fee_bps / 1e4
        with self._lock:  # no buy of this account can spend the cash between the check and the send
            return self.network.send(
                self.name,
                transfer,
                available=self.balances().cash,
                fee=fee,
                delay=timedelta(minutes=self.cfg.transfer_minutes),
                now=self.clock.now(),
            )

    def fetch_transfer(self, client_id: str) -> TransferState | None:
        return self.network.state(client_id, self.clock.now())

    def deposit_status(self, transfer: Transfer, state: TransferState) -> TransferStatus | None:
        return self.network.deposit_status(self.name, transfer.client_id, self.clock.now())

    def fetch_order(self, client_id: str) -> OrderState | None:
        row = self._db.execute(
            "SELECT asset, side, qty, status, filled_qty, price, fee, slippage, time, message "
            "FROM paper_order WHERE client_id=?",
            (client_id,),
        ).fetchone()
        if row is None:
            return None
        asset, side, qty, status, filled, price, fee, slip, time, message = row
        fills: tuple[Fill, ...] = ()
        if filled > 0:
            fills = (
                Fill(
                    f"{client_id}-1",
                    client_id,
                    self.name,
                    asset,
                    side,
                    filled,
                    price,
                    fee,
                    slip,
                    datetime.fromisoformat(time),
                ),
            )
        return OrderState(
            client_id, OrderStatus(status), filled, fills, venue_order_id=f"paper-{client_id}", message=message
        )

    def place_order(self, order: Order) -> OrderState:
        existing = self.fetch_order(order.client_id)
        if existing is not None:
            return existing
        if order.qty <= 0 or not math.isfinite(order.qty):
            raise InvalidOrder(self.name, f"order {order.client_id}: quantity {order.qty} is not positive")
        q = self.quote(order.asset)
        frac = self.impact(order.asset, order.qty, q.hourly_volume)
        price, fee, slip = paper_fill(order.side, order.qty, q.bid, q.ask, frac, self.cfg.fee_bps, order.decision_price)
        notional = price * order.qty
        now = self.clock.now().astimezone(UTC).isoformat()
        with self._tx():
            cash = self._db.execute("SELECT qty FROM balance WHERE asset=?", (CASH,)).fetchone()[0]
            cash += self.network.net_cash(self.name, self.clock.now())
            pos_row = self._db.execute("SELECT qty FROM balance WHERE asset=?", (order.asset,)).fetchone()
            pos = pos_row[0] if pos_row else 0.0
            reject = ""
            if order.side == "buy" and cash < notional + fee:
                reject = f"insufficient cash: need {notional + fee:.2f}, have {cash:.2f}"
            elif order.side == "sell" and pos < order.qty * (1 - 1e-12):
                reject = f"insufficient {order.asset}: need {order.qty}, have {pos}"
            if reject:
                self._db.execute(
                    "INSERT INTO paper_order VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (order.client_id, order.asset, order.side, order.qty, "rejected", 0.0, 0.0, 0.0, 0.0, now, reject),
                )
            else:
                sign = 1.0 if order.side == "buy" else -1.0
                self._db.execute("UPDATE balance SET qty = qty - ? WHERE asset=?", (sign * notional + fee, CASH))
                self._db.execute(
                    "INSERT INTO balance VALUES (?, ?) ON CONFLICT(asset) DO UPDATE SET qty = qty + excluded.qty",
                    (order.asset, sign * order.qty),
                )
                # a sell of the whole position (accepted to within 1e-12 of it) leaves zero, never -1e-13: a
                # long-only book's optimizer refuses negative weights, rightly
                self._db.execute("UPDATE balance SET qty = 0 WHERE asset=? AND qty < 0", (order.asset,))
                self._db.execute(
                    "INSERT INTO paper_order VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        order.client_id,
                        order.asset,
                        order.side,
                        order.qty,
                        "filled",
                        order.qty,
                        price,
                        fee,
                        slip,
                        now,
                        "",
                    ),
                )
        state = self.fetch_order(order.client_id)
        assert state is not None
        if state.status is OrderStatus.REJECTED:
            raise InsufficientFunds(self.name, f"order {order.client_id} rejected: {state.message}")
        return state

    def cancel_order(self, client_id: str) -> OrderState:
        state = self.fetch_order(client_id)
        if state is None:
            raise InvalidOrder(self.name, f"cannot cancel unknown order {client_id}")
        return state  # paper orders fill or reject at once; nothing is ever left open

    def close(self) -> None:
        self._db.close()
        self.network.close()


@hookimpl
def rwabot_register_venues(register) -> None:
    def make(cfg: PaperConfig, ctx: ComponentContext) -> PaperVenue:
        return PaperVenue(ctx.extra.get("venue_name", "paper"), cfg, ctx)

    register("paper", make, PaperConfig)
