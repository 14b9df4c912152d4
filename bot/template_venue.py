"""A venue to copy: the smallest complete implementation of the ``Venue`` contract.

Copy this file into your package, rename ``TemplateVenue``, and replace the in-memory ``_Exchange``
below with calls to your exchange's API; keep every rule the comments marked *contract* state,
because ``bot.testing.VenueContract`` (run it against your venue, see ``tests/bot/test_template_venue.py``)
and the cycle rely on them. Then point an entry point at your module::

    [project.entry-points.rwabot]
    my_venue = "my_package.my_venue"

and use it in a config: ``[venues.main] plugin = "template"`` (your registered name), ``options = {...}``.

As shipped it is a working paper venue: quotes are the configured data source's latest price ± a
half-spread, orders fill at once at the quote (no impact), a fee is charged in bps, and it enforces
its own step and minimums the way a real exchange does (``InvalidOrder``). Its book lives in memory
and is lost when the process exits, which a real venue never allows itself: an exchange keeps the
orders, and ``fetch_order`` after a restart must find them (see ``connectors/paper.py`` for a paper
venue whose book survives restarts).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import Field

from bot.components import ComponentConfig, ComponentContext, DataSource
from bot.domain import Balances, Fill, MarketInfo, Order, OrderState, OrderStatus, Quote
from bot.errors import DataError, InsufficientFunds, InvalidOrder, VenueError
from bot.hookspecs import hookimpl


class TemplateVenueConfig(ComponentConfig):
    """Options, validated strictly before anything is built (a typo stops rwabot naming file and key).

    A real venue names the environment variables that hold its credentials here (``api_key_env``),
    never the secrets themselves.
    """

    initial_cash: float = Field(default=100_000.0, ge=0, description="paper cash in the quote currency")
    fee_bps: float = Field(default=10.0, ge=0, le=1000)
    half_spread_bps: float = Field(default=5.0, ge=0, le=1000)
    qty_step: float = Field(default=1e-4, gt=0, description="quantities must be whole multiples of this")
    min_qty: float = Field(default=1e-4, ge=0)
    min_notional: float = Field(default=10.0, ge=0, description="least order value in the quote currency")
    max_quote_age_minutes: float = Field(default=90.0, gt=0)


@dataclass
class _Exchange:
    """Stands for the exchange: its cash, positions and orders by client id. Replace it with API calls."""

    cash: float
    positions: dict[str, float] = field(default_factory=dict)
    orders: dict[str, OrderState] = field(default_factory=dict)


class TemplateVenue:
    """A venue: trading rules, quotes, balances, idempotent orders, cancel, close."""

    def __init__(self, name: str, cfg: TemplateVenueConfig, ctx: ComponentContext) -> None:
        # contract: ``name`` is the config's name for the venue (``ctx.extra["venue_name"]``); fills carry it
        if ctx.data is None:
            raise VenueError(name, "the template venue prices from a data source and the config has none")
        self.name = name
        self.cfg = cfg
        self.clock = ctx.clock  # contract: time comes from the context's clock (simulated in backtests)
        self.data: DataSource = ctx.data
        self._ex = _Exchange(cfg.initial_cash)
        # contract: ``place_order`` is called from one thread unless the venue sets ``max_concurrent_orders``;
        # the lock makes the book safe anyway
        self._lock = threading.Lock()

    # -- trading rules and prices --------------------------------------------------------------------

    def market(self, asset: str) -> MarketInfo:
        """The exchange's rules for ``asset``; the cycle floors every quantity to ``qty_step`` and skips
        orders below ``min_qty`` or ``min_notional`` before sending them."""
        self._check_asset(asset)
        c = self.cfg
        return MarketInfo(asset, c.qty_step, c.min_qty, c.min_notional, 1e-8, c.fee_bps / 1e4)

    def quote(self, asset: str) -> Quote:
        """Best bid and ask now, with the last hour's traded volume (in asset units) for the liquidity caps.

        contract: a price that cannot be had, or is stale, is a ``VenueError`` (the cycle holds this venue
        for the hour), never an old number."""
        self._check_asset(asset)
        now = self.clock.now()
        try:
            snap = self.data.latest([asset], now)
            bars = self.data.bars([asset], now, 1)
        except DataError as exc:
            raise VenueError(self.name, f"no quote for {asset}: {exc}", retryable=True) from exc
        mid = float(snap.prices[0])
        if not (math.isfinite(mid) and mid > 0):
            raise VenueError(self.name, f"quote for {asset} is {mid}")
        if now - snap.times[0] > timedelta(minutes=self.cfg.max_quote_age_minutes):
            raise VenueError(self.name, f"quote for {asset} is stale ({now - snap.times[0]} old)", retryable=True)
        hs = self.cfg.half_spread_bps / 1e4
        return Quote(asset, mid * (1 - hs), mid * (1 + hs), snap.times[0], float(bars.volume[-1, 0]))

    def balances(self) -> Balances:
        """Cash and positions as the exchange reports them: the truth the cycle reconciles against.
        ``reserved`` is cash that counts in NAV but cannot buy (a gas reserve); none here."""
        with self._lock:
            return Balances(self._ex.cash, {a: q for a, q in self._ex.positions.items() if q != 0.0})

    # -- orders ---------------------------------------------------------------------------------------

    def place_order(self, order: Order) -> OrderState:
        """Send ``order``; return its state with every fill.

        contract: idempotent per ``client_id`` (a resend after a crash returns the first result and trades
        nothing; a real exchange is asked by client order id first); a refusal for funds is
        ``InsufficientFunds`` (remembered as a rejected order: the cycle asks ``fetch_order`` about it) and
        one for size, step or asset ``InvalidOrder``, both leaving balances as they were. Never a silent
        partial result: a partial fill is reported with its filled quantity.
        """
        with self._lock:
            known = self._ex.orders.get(order.client_id)
        if known is not None:
            return known
        self._validate(order)
        q = self.quote(order.asset)
        price = q.ask if order.side == "buy" else q.bid
        notional = order.qty * price
        fee = notional * self.cfg.fee_bps / 1e4
        now = self.clock.now()
        with self._lock:
            if order.client_id in self._ex.orders:  # sent twice at once: the first one won
                return self._ex.orders[order.client_id]
            held = self._ex.positions.get(order.asset, 0.0)
            if order.side == "buy" and self._ex.cash < notional + fee:
                why = f"insufficient cash: need {notional + fee:.2f}, have {self._ex.cash:.2f}"
            elif order.side == "sell" and held < order.qty * (1 - 1e-12):
                why = f"insufficient {order.asset}: need {order.qty}, have {held}"
            else:
                why = ""
            if why:
                self._ex.orders[order.client_id] = OrderState(order.client_id, OrderStatus.REJECTED, 0.0, (), None, why)
                raise InsufficientFunds(self.name, f"order {order.client_id} rejected: {why}")
            sign = 1.0 if order.side == "buy" else -1.0
            self._ex.cash -= sign * notional + fee
            self._ex.positions[order.asset] = held + sign * order.qty
            # contract: slippage is the cost against the decision price, positive when worse, in the quote
            slippage = (price - order.decision_price) * order.qty * sign
            fill = Fill(f"{order.client_id}-1", order.client_id, self.name, order.asset, order.side, order.qty,
                        price, fee, slippage, now)  # fmt: skip
            state = OrderState(order.client_id, OrderStatus.FILLED, order.qty, (fill,), f"tmpl-{order.client_id}")
            self._ex.orders[order.client_id] = state
            return state

    def fetch_order(self, client_id: str) -> OrderState | None:
        """contract: the order's state by client id, None when the exchange never saw it (the cycle then
        knows it is safe to send); this is what makes a restart after a crash safe."""
        with self._lock:
            return self._ex.orders.get(client_id)

    def cancel_order(self, client_id: str) -> OrderState:
        """contract: ends a resting order (keeping what filled) and returns its final state; a finished one
        is returned as it is; an unknown one is ``InvalidOrder``. Orders here never rest."""
        state = self.fetch_order(client_id)
        if state is None:
            raise InvalidOrder(self.name, f"cannot cancel unknown order {client_id}")
        return state

    def close(self) -> None:
        """Release connections and files; called once when the daemon stops, also after an error."""

    # -- rules ----------------------------------------------------------------------------------------

    def _check_asset(self, asset: str) -> None:
        if asset not in self.data.assets():
            raise InvalidOrder(self.name, f"unknown asset {asset!r}")

    def _validate(self, order: Order) -> None:
        """What a real exchange checks before it accepts an order, refused the same way."""
        self._check_asset(order.asset)
        c, cid = self.cfg, order.client_id
        if order.side not in ("buy", "sell"):
            raise InvalidOrder(self.name, f"order {cid}: side {order.side!r}")
        if not (math.isfinite(order.qty) and order.qty > 0):
            raise InvalidOrder(self.name, f"order {cid}: quantity {order.qty} is not positive")
        steps = order.qty / c.qty_step
        if abs(steps - round(steps)) > 1e-6:
            raise InvalidOrder(self.name, f"order {cid}: {order.qty} is not a multiple of the step {c.qty_step}")
        if order.qty < c.min_qty * (1 - 1e-12):
            raise InvalidOrder(self.name, f"order {cid}: {order.qty} is below the minimum quantity {c.min_qty}")
        value = order.qty * float(self.data.latest([order.asset], self.clock.now()).prices[0])
        if value < c.min_notional:
            raise InvalidOrder(self.name, f"order {cid}: {value:.2f} is below the minimum notional {c.min_notional}")


@hookimpl
def rwabot_register_venues(register) -> None:  # noqa: ANN001 - bot.components.Register
    """Register the venue under the name configs use (``plugin = "template"``) with its options model."""

    def make(cfg: TemplateVenueConfig, ctx: ComponentContext) -> TemplateVenue:
        return TemplateVenue(ctx.extra.get("venue_name", "template"), cfg, ctx)

    register("template", make, TemplateVenueConfig)
