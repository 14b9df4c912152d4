"""Pytest helpers for plugin authors, shipped with rwabot (registered as a pytest plugin).

``rwabot_plugins`` gives a fresh plugin manager with the installed plugins and a way to register
one more for the duration of a test, like ``pytester`` does for pytest plugins::

    def test_my_venue(rwabot_plugins):
        rwabot_plugins.add(my_plugin_module)
        venue = rwabot_plugins.registry().get("venue", "mine")
"""

from __future__ import annotations

from collections.abc import Iterator

import pluggy
import pytest

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


class VenueContract:
    """Contract tests every venue must pass. Subclass it in your test module and provide two
    fixtures: ``venue`` (a funded venue, fresh per test) and ``venue_asset`` (an asset it trades)::

        class TestMyVenue(VenueContract):
            @pytest.fixture
            def venue(self, tmp_path): ...
            @pytest.fixture
            def venue_asset(self): return "SPY"
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
        qty = before.cash / q.ask * 10 + 1
        with pytest.raises(InsufficientFunds):
            venue.place_order(Order("rwcontract0002", "contract", venue.name, venue_asset, "buy", qty, q.mid))
        assert venue.balances() == before
