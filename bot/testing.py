"""Pytest helpers for plugin authors, shipped with rwabot (registered as a pytest plugin).

``rwabot_plugins`` gives a fresh plugin manager with the installed plugins and a way to register
one more for the duration of a test, like ``pytester`` does for pytest plugins::

    def test_my_venue(rwabot_plugins):
        rwabot_plugins.add(my_plugin_module)
        venue = rwabot_plugins.registry().get("venue", "mine")
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pluggy
import pytest

from bot.domain import MarketInfo, Order, OrderState, OrderStatus, Quote
from bot.plugins import Registry, make_plugin_manager


class PluginHarness:
    def __init__(self, entry_points: bool = True) -> None:
        self.pm: pluggy.PluginManager = make_plugin_manager(entry_points=entry_points)
        self._added: list[object] = []

    def add(self, plugin: object, name: str | None = None) -> None:
        """Register ``plugin`` until the end of the test; misspelled hooks fail here."""
        self.pm.register(plugin, name=name)
        self._added.append(plugin)
        self.pm.check_pending()

    def registry(self) -> Registry:
        return Registry(self.pm)

    def remove_all(self) -> None:
        for plugin in reversed(self._added):
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
        self._added.clear()


@pytest.fixture
def rwabot_plugins() -> Iterator[PluginHarness]:
    harness = PluginHarness()
    yield harness
    harness.remove_all()


def _on_step(qty: float, step: float) -> float:
    """``qty`` floored to the venue's step, as the cycle sends it (``bot.cycle.floor_to_step``)."""
    return math.floor(qty / step * (1 + 1e-12)) * step


def _smallest_order(m: MarketInfo, q: Quote) -> float:
    """The least quantity on the step grid the rules allow, with 5% room on the notional for the price moving
    between the quote and the fill (the cycle plans at the quote, the venue fills a moment later)."""
    need = max(m.min_qty, m.min_notional * 1.05 / q.bid, m.qty_step)
    return math.ceil(need / m.qty_step * (1 - 1e-12)) * m.qty_step


class VenueContract:
    """Contract tests every venue must pass. Subclass it in your test module and provide two
    fixtures: ``venue`` (a funded venue, fresh per test) and ``venue_asset`` (an asset it trades)::

        class TestMyVenue(VenueContract):
            @pytest.fixture
            def venue(self, tmp_path): ...
            @pytest.fixture
            def venue_asset(self): return "SPY"

    ``bot/template_venue.py`` is a venue that passes it, to copy. Quantities are sent as the cycle sends
    them: floored to ``qty_step``, at least ``min_qty`` and ``min_notional``.
    """

    def test_market_rules_are_sane(self, venue, venue_asset) -> None:  # noqa: ANN001
        m = venue.market(venue_asset)
        assert m.asset == venue_asset
        assert m.qty_step > 0 and m.min_qty >= 0 and m.min_notional >= 0 and 0 <= m.taker_fee < 0.05

    def test_quote_is_two_sided_and_timezone_aware(self, venue, venue_asset) -> None:  # noqa: ANN001
        q = venue.quote(venue_asset)
        assert 0 < q.bid <= q.ask and q.time.tzinfo is not None and q.hourly_volume >= 0

    def test_reserved_cash_is_part_of_cash(self, venue) -> None:  # noqa: ANN001
        b = venue.balances()
        assert 0.0 <= b.reserved <= b.cash and b.spendable == pytest.approx(b.cash - b.reserved)

    def test_unknown_order_is_none(self, venue) -> None:  # noqa: ANN001
        assert venue.fetch_order("rw-never-sent") is None

    def test_buy_fills_moves_balances_and_is_idempotent(self, venue, venue_asset) -> None:  # noqa: ANN001
        from bot.domain import Order

        m = venue.market(venue_asset)
        q = venue.quote(venue_asset)
        before = venue.balances()
        qty = max(m.min_qty, m.min_notional / q.ask * 2, m.qty_step)
        qty = round(qty / m.qty_step) * m.qty_step
        order = Order("rwcontract0001", "contract", venue.name, venue_asset, "buy", qty, q.mid)
        st = venue.place_order(order)
        assert st.client_id == order.client_id and st.filled_qty > 0
        assert sum(f.qty for f in st.fills) == pytest.approx(st.filled_qty)
        after = venue.balances()
        spent = sum(f.qty * f.price + f.fee + f.gas for f in st.fills)
        assert after.cash == pytest.approx(before.cash - spent, rel=1e-9, abs=1e-9)
        assert after.positions.get(venue_asset, 0.0) == pytest.approx(
            before.positions.get(venue_asset, 0.0) + st.filled_qty
        )
        again = venue.place_order(order)  # the same client id never trades twice
        assert again.filled_qty == st.filled_qty and venue.balances() == after
        assert venue.fetch_order(order.client_id).filled_qty == st.filled_qty

    def test_unaffordable_order_is_refused_not_half_done(self, venue, venue_asset) -> None:  # noqa: ANN001
        from bot.domain import Order
        from bot.errors import InsufficientFunds

        before = venue.balances()
        q = venue.quote(venue_asset)
        qty = _on_step(before.cash / q.ask * 10 + 1, venue.market(venue_asset).qty_step)  # on the grid, as sent
        with pytest.raises(InsufficientFunds):
            venue.place_order(Order("rwcontract0002", "contract", venue.name, venue_asset, "buy", qty, q.mid))
        assert venue.balances() == before

    def _buy(self, venue, asset: str, qty: float, cid: str) -> OrderState:  # noqa: ANN001
        q = venue.quote(asset)
        return venue.place_order(Order(cid, "contract", venue.name, asset, "buy", qty, q.mid))

    def test_sell_lowers_the_position_credits_cash_and_is_idempotent(self, venue, venue_asset) -> None:  # noqa: ANN001
        m = venue.market(venue_asset)
        bought = self._buy(venue, venue_asset, 3 * _smallest_order(m, venue.quote(venue_asset)), "rwcontract0101")
        assert bought.filled_qty > 0
        before = venue.balances()
        q = venue.quote(venue_asset)
        qty = min(_on_step(bought.filled_qty / 2, m.qty_step), before.positions.get(venue_asset, 0.0))
        qty = max(qty, _smallest_order(m, q))
        order = Order("rwcontract0102", "contract", venue.name, venue_asset, "sell", qty, q.mid)
        st = venue.place_order(order)
        assert st.client_id == order.client_id and 0 < st.filled_qty <= qty * (1 + 1e-12)
        assert all(f.side == "sell" and f.asset == venue_asset for f in st.fills)
        assert sum(f.qty for f in st.fills) == pytest.approx(st.filled_qty)
        after = venue.balances()
        received = sum(f.qty * f.price - f.fee - f.gas for f in st.fills)
        assert received > 0
        assert after.cash == pytest.approx(before.cash + received, rel=1e-9, abs=1e-9)
        assert after.positions.get(venue_asset, 0.0) == pytest.approx(
            before.positions.get(venue_asset, 0.0) - st.filled_qty, rel=1e-9, abs=1e-12
        )
        again = venue.place_order(order)  # a resent sell never sells twice
        assert again.filled_qty == st.filled_qty and venue.balances() == after

    def test_selling_more_than_is_held_is_refused_not_half_done(self, venue, venue_asset) -> None:  # noqa: ANN001
        from bot.errors import InsufficientFunds

        m = venue.market(venue_asset)
        before = venue.balances()
        q = venue.quote(venue_asset)
        qty = _on_step(before.positions.get(venue_asset, 0.0), m.qty_step) + 2 * _smallest_order(m, q)
        with pytest.raises(InsufficientFunds):
            venue.place_order(Order("rwcontract0103", "contract", venue.name, venue_asset, "sell", qty, q.mid))
        assert venue.balances() == before

    def test_cancelling_a_finished_order_changes_nothing(self, venue, venue_asset) -> None:  # noqa: ANN001
        m = venue.market(venue_asset)
        st = self._buy(venue, venue_asset, _smallest_order(m, venue.quote(venue_asset)), "rwcontract0104")
        if not st.status.terminal:  # a resting order: cancelling it ends it, keeping what filled
            st = venue.cancel_order(st.client_id)
        before = venue.balances()
        done = venue.cancel_order(st.client_id)
        assert done.client_id == st.client_id and done.status.terminal
        assert done.filled_qty == pytest.approx(st.filled_qty) and len(done.fills) == len(st.fills)
        assert venue.balances() == before
        assert venue.fetch_order(st.client_id).status is done.status

    def test_cancelling_an_unknown_order_is_invalid(self, venue) -> None:  # noqa: ANN001
        from bot.errors import InvalidOrder

        with pytest.raises(InvalidOrder):
            venue.cancel_order("rw-never-sent")

    def test_an_order_on_the_step_grid_fills_its_quantity(self, venue, venue_asset) -> None:  # noqa: ANN001
        """The cycle floors quantities to ``qty_step``; the venue must take them as they are: neither refuse nor
        round them to a coarser grid. What it fills may differ by less than one step (a vault paid in a token
        with fewer decimals mints what the rounded payment buys), or be partial, never more than a step over."""
        m = venue.market(venue_asset)
        q = venue.quote(venue_asset)
        least = _smallest_order(m, q)
        qty = _on_step(least * 2.37 + 0.618 * m.qty_step, m.qty_step)  # an awkward multiple of the step
        assert qty >= least
        st = self._buy(venue, venue_asset, qty, "rwcontract0105")
        assert 0 < st.filled_qty < qty + m.qty_step, f"filled {st.filled_qty} of {qty} (step {m.qty_step})"
        if st.status is OrderStatus.FILLED:
            assert st.filled_qty > qty - m.qty_step, f"filled {st.filled_qty} of {qty}: re-rounded to a coarser step"

    def test_the_smallest_order_the_rules_allow_is_accepted(self, venue, venue_asset) -> None:  # noqa: ANN001
        m = venue.market(venue_asset)
        assert m.min_qty <= _smallest_order(m, venue.quote(venue_asset))
        st = self._buy(venue, venue_asset, _smallest_order(m, venue.quote(venue_asset)), "rwcontract0106")
        assert st.filled_qty > 0 and st.filled_qty * st.fills[0].price >= m.min_notional * (1 - 1e-9)

    def test_dust_below_the_minimums_is_refused_or_filled_whole(self, venue, venue_asset) -> None:  # noqa: ANN001
        """Below the venue's minimums an order is refused with ``InvalidOrder`` and changes nothing (what a real
        exchange does), or, on a venue without minimums of its own, fills whole; it is never half done."""
        from bot.errors import InvalidOrder

        m = venue.market(venue_asset)
        q = venue.quote(venue_asset)
        dust = max(_on_step(min(m.min_notional / q.ask / 2, m.min_qty / 2), m.qty_step), m.qty_step)
        if dust >= m.min_qty and dust * q.ask >= m.min_notional:
            pytest.skip("the venue's minimums are its step: nothing on the grid is below them")
        before = venue.balances()
        try:
            st = self._buy(venue, venue_asset, dust, "rwcontract0107")
        except InvalidOrder:
            assert venue.balances() == before
            return
        assert abs(st.filled_qty - dust) < m.qty_step, f"filled {st.filled_qty} of {dust}"
