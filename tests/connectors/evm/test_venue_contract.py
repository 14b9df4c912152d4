"""The evm venue passes the contract every venue must pass, against real contracts on anvil."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.testing import VenueContract
from connectors.evm.deploy import World
from connectors.evm.node import AnvilNode
from connectors.evm.venue import EvmVenue, EvmVenueConfig
from tests.connectors.evm.conftest import NOW, venue_options


def make_venue(tmp_path: Path, world: World, url: str, **kw) -> EvmVenue:  # noqa: ANN003
    events: list = []
    ctx = ComponentContext(SimulatedClock(NOW, 0.0), tmp_path / "state", tuple(world.venue_assets()), events.append)
    v = EvmVenue("chain", EvmVenueConfig.model_validate(venue_options(world, url, **kw)), ctx)
    v.events = events  # type: ignore[attr-defined]
    return v


class TestEvmVaultVenue(VenueContract):
    @pytest.fixture
    def venue(self, tmp_path: Path, world: World, anvil: AnvilNode):
        v = make_venue(tmp_path, world, anvil.url)
        yield v
        v.close()

    @pytest.fixture
    def venue_asset(self) -> str:
        return "CREDIT"


class TestEvmPoolVenue(TestEvmVaultVenue):
    @pytest.fixture
    def venue_asset(self) -> str:
        return "REALT"


class TestEvmPaperVenue(TestEvmVaultVenue):
    @pytest.fixture
    def venue(self, tmp_path: Path, world: World, anvil: AnvilNode):
        v = make_venue(tmp_path, world, anvil.url, paper=True, account=world.trader, key_env=None)
        yield v
        v.close()


def test_quote_time_is_the_chain_time(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    v = make_venue(tmp_path, world, anvil.url)
    q = v.quote("USTB")
    assert q.time == datetime.fromtimestamp(world.w3.eth.get_block("latest")["timestamp"], UTC)
    assert q.hourly_volume > 0  # the market's subscriptions and redemptions of the last hour
    v.close()
