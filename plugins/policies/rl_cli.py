"""``rwabot rl train`` and ``rwabot rl evaluate`` (registered by plugins/policies/rl.py's command hook).

The checkpoint goes where the ``rl`` policy looks for it by default: ``<ledger without suffix>.state/
rl_policy.npz``, the state directory the daemon and the backtests hand their components.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from plugins.policies.rl import DEFAULT_CHECKPOINT


def default_checkpoint(ledger: str) -> Path:
    return Path(str(Path(ledger).with_suffix("")) + ".state") / DEFAULT_CHECKPOINT


def _seeds(text: str) -> tuple[int, ...]:
    """``1-8`` or ``1,2,5`` (or a mix) as a tuple of seeds."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise ValueError(f"no seeds in {text!r}")
    return tuple(out)


def add_commands(cli: typer.Typer) -> None:
    rl = typer.Typer(help="The reinforcement-learning rebalancing policy: train it, judge it out of sample.")

    @rl.command("train")
    def train_cmd(
        config: Annotated[Path, typer.Option("--config", "-c", help="TOML config file (its market is simulated)")],
        timesteps: Annotated[int, typer.Option(min=64, help="agent decisions (hourly cycles) to train on")] = 100_000,
        seed: Annotated[int, typer.Option(min=0, help="seeds PPO, torch and the scenario draws")] = 0,
        seeds: Annotated[str, typer.Option(help="training market seeds, e.g. 1-8")] = "1-8",
        kappa: Annotated[float, typer.Option(min=0, help="price of the tracking variance in the reward")] = 20_000.0,
        episode_hours: Annotated[int, typer.Option(min=2, help="decisions per episode")] = 720,
        stress_share: Annotated[float, typer.Option(min=0, max=1, help="share of stressed-market episodes")] = 0.25,
        action: Annotated[
            str, typer.Option(help="band (θ), band_fraction (θ, φ) or gap_fraction (one per asset)")
        ] = "band",
        out: Annotated[Path | None, typer.Option(help="checkpoint path (default: the config's state dir)")] = None,
    ) -> None:
        """Train the rl policy with PPO on the config's research-mode backtest and write its checkpoint."""
        from bot.cli import console, fail, setup_logging
        from bot.config import load_config
        from bot.errors import RwabotError
        from plugins.policies.rl_env import EnvOptions
        from plugins.policies.rl_train import TrainOptions, train

        setup_logging(False)
        try:
            cfg = load_config(config)
            env = EnvOptions(
                episode_hours=episode_hours, kappa=kappa, seeds=_seeds(seeds), stress_share=stress_share, action=action
            )  # type: ignore[arg-type]
            opts = TrainOptions(timesteps=timesteps, seed=seed, env=env)
            path = out or default_checkpoint(cfg.bot.ledger)
            console.print(f"training rl on {config} for {timesteps} steps (seeds {list(env.seeds)}, κ {kappa:g})")
            res = train(cfg, opts, path, on_progress=lambda m: console.print(m, highlight=False))
        except (RwabotError, ValueError, ValidationError) as exc:
            fail(exc)
        console.print(f"trained in {res.seconds:.0f} s ({res.timesteps} steps, {res.episodes} episodes); "
                      f"checkpoint {res.checkpoint}, model {res.model}")  # fmt: skip

    @rl.command("evaluate")
    def evaluate_cmd(
        config: Annotated[Path, typer.Option("--config", "-c", help="TOML config file")],
        checkpoint: Annotated[Path | None, typer.Option(help="default: the config's state dir")] = None,
        hours: Annotated[int, typer.Option(min=48, help="hours per held-out scenario, after the buildup")] = 1440,
        tune_hours: Annotated[int, typer.Option(min=48, help="hours per training scenario for the band")] = 720,
        seeds: Annotated[str, typer.Option(help="held-out seeds (never trained on)")] = "101-108",
        stressed: Annotated[str, typer.Option(help="of the held-out seeds, the stressed ones")] = "105-108",
        draws: Annotated[int, typer.Option(min=50, help="bootstrap draws")] = 1000,
        report: Annotated[Path | None, typer.Option(help="also write the table (markdown) and a .json here")] = None,
    ) -> None:
        """Tune the band on the training seeds, then compare rl, full and the band on held-out seeds."""
        from bot.cli import console, fail, setup_logging
        from bot.config import load_config
        from bot.errors import RwabotError
        from plugins.policies.rl import load_checkpoint
        from plugins.policies.rl_train import evaluate, markdown

        setup_logging(False)
        try:
            cfg = load_config(config)
            path = checkpoint or default_checkpoint(cfg.bot.ledger)
            _, meta = load_checkpoint(path, cfg.asset_names)
            held = _seeds(seeds)
            stress = set(_seeds(stressed)) if stressed else set()
            if not stress <= set(held):
                raise ValueError(f"--stressed {sorted(stress)} are not all among --seeds {list(held)}")
            ev = evaluate(cfg, path, meta, hours=hours, tune_hours=tune_hours, seeds=held,
                          stressed=[s in stress for s in held], draws=draws,
                          on_progress=lambda m: console.print(m, highlight=False))  # fmt: skip
        except (RwabotError, ValueError) as exc:
            fail(exc)
        text = markdown(ev)
        console.print(text, highlight=False, markup=False)
        if report is not None:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(text + "\n")
            report.with_suffix(".json").write_text(ev.to_json() + "\n")
            console.print(f"written {report} and {report.with_suffix('.json')}")

    cli.add_typer(rl, name="rl")
