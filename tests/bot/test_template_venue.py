"""bot/template_venue.py, the venue a third party copies: it passes the venue contract and trades a cycle."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot import template_venue
from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.domain import Order
from bot.errors import InvalidOrder
from bot.testing import PluginHarness, VenueContract
from tests.conftest import START, paper_dict

NOW = START + timedelta(days=10)


def build(harness: PluginHarness, tmp_path: Path, **options: float) -> template_venue.TemplateVenue:
    """Through the registry, as a config's ``[venues.x] plugin = "template"`` builds it."""
    reg = harness.registry()
    clock = SimulatedClock(NOW, 0.0)
    data = reg.get("data", "simulated").build({"seed": 1}, ComponentContext(clock, tmp_path, (), print), where="data")
    ctx = ComponentContext(clock, tmp_path, (), lambda e: None, data, {"venue_name": "tmpl"})
    return reg.get("venue", "template").build(options, ctx, where="venues.tmpl.options")


@pytest.fixture
def harness(rwabot_plugins: PluginHarness) -> PluginHarness:
    rwabot_plugins.add(template_venue)
    return rwabot_plugins


class TestTemplateVenue(VenueContract):
    @pytest.fixture
    def venue(self, harness: PluginHarness, tmp_path: Path) -> Iterator[template_venue.TemplateVenue]:
        v = build(harness, tmp_path)
        yield v
        v.close()

    @pytest.fixture
    def venue_asset(self) -> str:
        return "SPY"


class TestTemplateVenueOnAThinAsset(TestTemplateVenue):
    @pytest.fixture
    def venue_asset(self) -> str:
        return "REALT"


def test_it_refuses_what_a_real_exchange_refuses(harness: PluginHarness, tmp_path: Path) -> None:
    v = build(harness, tmp_path, qty_step=0.01, min_qty=0.05, min_notional=1e7)
    mid = v.quote("SPY").mid
    before = v.balances()
    for qty, why in ((0.015, "not a multiple of the step"), (0.01, "below the minimum quantity")):
        with pytest.raises(InvalidOrder, match=why):
            v.place_order(Order(f"c{qty}", "k", "tmpl", "SPY", "buy", qty, mid))
    with pytest.raises(InvalidOrder, match="below the minimum notional"):
        v.place_order(Order("cn", "k", "tmpl", "SPY", "buy", 0.05, mid))
    with pytest.raises(InvalidOrder, match="unknown asset"):
        v.place_order(Order("cu", "k", "tmpl", "NOPE", "buy", 1.0, mid))
    assert v.balances() == before and v.fetch_order("c0.015") is None


def test_a_cycle_trades_through_the_template_venue(harness: PluginHarness, tmp_path: Path) -> None:
    from bot.config import parse_config
    from bot.cycle import Engine

    d = paper_dict(tmp_path)
    d["venues"]["exchange"] = {"plugin": "template", "options": {"initial_cash": 250_000.0, "qty_step": 1e-4}}
    d["funding"]["routes"] = []  # the template trades; moving cash is the optional FundingVenue part
    engine = Engine(parse_config(d, "t.toml"), pm=harness.pm, clock=SimulatedClock(START + timedelta(days=40), 0.0))
    try:
        report = engine.run_cycle()
        assert report.status == "done" and report.fills > 0
        held = engine.c.venues["exchange"].balances().positions
        assert set(held) == {"SPY", "TLT", "GLD", "VNQ"}
        assert all(abs(q / 1e-4 - round(q / 1e-4)) < 1e-6 for q in held.values())  # the cycle sent on-step sizes
    finally:
        engine.close()
