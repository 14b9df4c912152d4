"""``rwabot devnet``, registered for the evm connector until its own plugin module registers it.

The command belongs to ``connectors/evm/plugin.py``; until that module implements
``rwabot_register_commands`` this one adds it (entry point ``evm_commands``), and it steps aside by
itself as soon as the evm plugin does, so the two never clash. Then delete this file and its entry
point in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bot.hookspecs import hookimpl


@hookimpl
def rwabot_register_commands(cli: typer.Typer) -> None:
    import connectors.evm.plugin as evm

    if hasattr(evm, "rwabot_register_commands"):
        return  # the evm plugin adds the command itself
    add_devnet(cli)


def add_devnet(cli: typer.Typer) -> None:
    """What ``connectors/evm/plugin.py``'s own ``rwabot_register_commands`` should do."""

    @cli.command()
    def devnet(
        out: Annotated[Path, typer.Option(help="folder for the config, ledger and node log")] = Path("var/devnet"),
        mode: Annotated[str, typer.Option(help="paper (simulated by eth_call) or live (transactions sent)")] = "live",
        hours: Annotated[int, typer.Option(min=26, max=24 * 14, help="hours of market history mined first")] = 30,
        cycles: Annotated[int, typer.Option(min=0, max=10)] = 1,
        keep: Annotated[bool, typer.Option(help="keep the node running afterwards for `rwabot run`")] = False,
    ) -> None:
        """Start a local anvil chain with tokenized funds and a permissioned token pool, write a config
        for it and trade a cycle on it (needs `npm ci --prefix connectors/evm`)."""
        from bot.cli import console, fail, setup_logging
        from bot.errors import RwabotError
        from connectors.evm.devnet import run_devnet

        if mode not in ("paper", "live"):
            fail(ValueError(f"--mode must be paper or live, not {mode!r}"))
        setup_logging(False)
        try:
            run_devnet(out, mode, hours, cycles, keep, lambda m: console.print(m, highlight=False))
        except RwabotError as exc:
            fail(exc)
