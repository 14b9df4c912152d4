from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.domain import Order, OrderStatus
from bot.errors import InsufficientFunds, InvalidOrder, VenueError
from connectors.paper import PaperConfig, PaperVenue
from plugins.data.simulated import SimulatedMarket, SimulatedMarketConfig
from tests.conftest import START

NOW = START + timedelta(days=10)


def venue(tmp_path: Path, **opts) -> PaperVenue:  # noqa: ANN003
    data = SimulatedMarket(SimulatedMarketConfig(seed=1))
    ctx = ComponentContext(SimulatedClock(NOW, 0.0), tmp_path, (), lambda e: None, data)
    return PaperVenue("v", PaperConfig(**opts), ctx)


def test_quote_spread_depends_on_asset_kind(tmp_path: Path) -> None:
    v = venue(tmp_path)
    spy, ustb = v.quote("SPY"), v.quote("USTB")
    assert (spy.ask - spy.bid) / spy.mid == pytest.approx(2e-4)
    assert (ustb.ask - ustb.bid) / ustb.mid == pytest.approx(2e-3)
    snap = v.data.latest(["SPY"], NOW)
    assert spy.mid == pytest.approx(float(snap.prices[0]))


def test_fill_price_fee_and_slippage_follow_the_model(tmp_path: Path) -> None:
    v = venue(tmp_path, fee_bps=10.0, impact_coef=0.2, initial_cash=1e9)
    q = v.quote("SPY")
    qty = 0.01 * q.hourly_volume
    st = v.place_order(Order("c1", "k", "v", "SPY", "buy", qty, q.mid))
    (f,) = st.fills
    bars = v.data.bars(["SPY"], NOW, 25)
    sigma_h = np.diff(np.log(bars.close[:, 0])).std(ddof=1)
    expected = q.ask * (1 + 0.2 * sigma_h * 0.01**0.5)
    assert f.price == pytest.approx(expected, rel=1e-12)
    assert f.fee == pytest.approx(expected * qty * 1e-3, rel=1e-12)
    assert f.slippage == pytest.approx((expected - q.mid) * qty, rel=1e-12)
    bal = v.balances()
    assert bal.positions["SPY"] == pytest.approx(qty)
    assert bal.cash == pytest.approx(1e9 - expected * qty - f.fee, rel=1e-12)
    # bigger orders pay more impact per unit
    st2 = v.place_order(Order("c2", "k", "v", "SPY", "buy", 4 * qty, q.mid))
    assert st2.fills[0].price > f.price


def test_place_is_idempotent_per_client_id_and_survives_restart(tmp_path: Path) -> None:
    v = venue(tmp_path)
    o = Order("same", "k", "v", "GLD", "buy", 10.0, v.quote("GLD").mid)
    a = v.place_order(o)
    b = v.place_order(o)
    assert a == b and v.balances().positions["GLD"] == pytest.approx(10.0)
    v.close()
    v2 = venue(tmp_path)
    assert v2.fetch_order("same") == a
    assert v2.balances().positions["GLD"] == pytest.approx(10.0)
    assert v2.fetch_order("never") is None


def test_rejections_are_recorded_and_raised(tmp_path: Path) -> None:
    v = venue(tmp_path, initial_cash=100.0)
    with pytest.raises(InsufficientFunds, match="insufficient cash"):
        v.place_order(Order("big", "k", "v", "SPY", "buy", 100.0, 500.0))
    st = v.fetch_order("big")
    assert st is not None and st.status is OrderStatus.REJECTED and st.filled_qty == 0
    with pytest.raises(InsufficientFunds, match="insufficient SPY"):
        v.place_order(Order("short", "k", "v", "SPY", "sell", 1.0, 500.0))
    with pytest.raises(InvalidOrder):
        v.place_order(Order("neg", "k", "v", "SPY", "buy", -1.0, 500.0))
    assert v.balances().cash == 100.0


def test_unknown_asset_is_a_venue_error(tmp_path: Path) -> None:
    with pytest.raises(VenueError, match="no quote for NOPE"):
        venue(tmp_path).quote("NOPE")


from bot.testing import VenueContract  # noqa: E402


class TestPaperVenueContract(VenueContract):
    @pytest.fixture
    def venue(self, tmp_path: Path) -> PaperVenue:
        return venue(tmp_path)

    @pytest.fixture
    def venue_asset(self) -> str:
        return "REALT"
