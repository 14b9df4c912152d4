"""Registers the ``evm`` venue and the ``evm`` data source (entry point ``evm`` in the ``rwabot`` group)."""

from __future__ import annotations

from bot.components import ComponentContext
from bot.hookspecs import hookimpl
from connectors.evm.data import EvmDataConfig, EvmDataSource
from connectors.evm.venue import EvmVenue, EvmVenueConfig


@hookimpl
def rwabot_register_venues(register) -> None:  # noqa: ANN001 - pluggy passes bot.components.Register
    def make(cfg: EvmVenueConfig, ctx: ComponentContext) -> EvmVenue:
        return EvmVenue(ctx.extra.get("venue_name", "evm"), cfg, ctx)

    register("evm", make, EvmVenueConfig)

    from connectors.evm.localnet import EvmDevnetConfig, make_devnet_venue

    register("evm_devnet", make_devnet_venue, EvmDevnetConfig)  # paper on a local anvil it starts itself


@hookimpl
def rwabot_register_data_sources(register) -> None:  # noqa: ANN001
    register("evm", lambda cfg, ctx: EvmDataSource(cfg, ctx), EvmDataConfig)
