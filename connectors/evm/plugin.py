"""Registers the ``evm`` venue and the ``evm`` data source (entry point ``evm`` in the ``rwabot`` group)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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


@hookimpl
def rwabot_register_commands(cli) -> None:  # noqa: ANN001 - pluggy passes the typer app
    """``rwabot devnet``: the realistic RWA book on a local chain (or, ``--no-book``, the chain-only world)."""
    @cli.command()
    def devnet(
        out: Annotated[Path, typer.Option(help="folder for the config, ledger and node log")] = Path("var/devnet"),
        mode: Annotated[str, typer.Option(help="paper (simulated by eth_call) or live (transactions sent)")] = "live",
        cycles: Annotated[int, typer.Option(min=0, max=48, help="hourly cycles traded on the simulated clock")] = 4,
        book: Annotated[bool, typer.Option(help="the realistic book next to a simulated exchange")] = True,
        hours: Annotated[
            int, typer.Option(min=26, max=24 * 14, help="--no-book: hours of market history mined first")
        ] = 30,
        keep: Annotated[bool, typer.Option(help="--no-book: keep the node running for `rwabot run`")] = False,
    ) -> None:
        """Deploy a tokenized-RWA book on a local anvil chain, write a config for it and trade cycles on
        it (needs `npm ci --prefix connectors/evm`)."""
        from bot.cli import console, fail, setup_logging
        from bot.errors import RwabotError
        from connectors.evm.devnet import run_devnet

        if mode not in ("paper", "live"):
            fail(ValueError(f"--mode must be paper or live, not {mode!r}"))
        setup_logging(False)
        try:
            run_devnet(out, mode, hours, cycles, keep, lambda m: console.print(m, highlight=False), book=book)
        except RwabotError as exc:
            fail(exc)
