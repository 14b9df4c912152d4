"""Training the ``rl`` policy with stable-baselines3, and judging it out of sample against ``full`` and a tuned band.

Training (``train``): PPO on ``RebalanceEnv`` (plugins/policies/rl_env.py), CPU, one torch thread, seeded
(stable-baselines3 seeds torch, numpy and the env; the env draws its scenarios from that seed), so the
same config, options and seed give the same network. The actor's mean is exported to the numpy
checkpoint the policy reads (``plugins.policies.rl``), with everything it was trained under; the
stable-baselines3 model is saved next to it (``.zip``) for inspection or further training.

Evaluation (``evaluate``): docs/rl.md fixes the protocol. In short: the band's width is tuned on the
checkpoint's *training* seeds only; then ``full``, the tuned band and the ``rl`` policy (the plugin
itself, loading the checkpoint, fallback included) run the same held-out scenarios — seeds the training
never drew — and are compared on the hours after the buildup by the reward's objective, with paired
differences and moving-block bootstrap standard errors (the hours of one run are autocorrelated; blocks
of a week keep that).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from bot.components import ComponentConfig, ComponentContext
from bot.config import Config
from bot.domain import RiskEvent
from plugins.policies.basic import BandConfig, BandPolicy, FullPolicy
from plugins.policies.rl import (
    CHECKPOINT_VERSION,
    FEATURE_VERSION,
    Actor,
    RlConfig,
    RlPolicy,
    feature_names,
    save_checkpoint,
)
from plugins.policies.rl_env import BP, EnvOptions, RebalanceEnv, Scenario, hour_outcome, scenario_config

HOURS_PER_YEAR = 8760.0
BUILDUP_HOURS = 24
"""Hours left out of every evaluation metric: the build-up from cash, the same for every policy."""
HELD_OUT_SEEDS: tuple[int, ...] = (101, 102, 103, 104, 105, 106, 107, 108)
HELD_OUT_STRESSED: tuple[bool, ...] = (False, False, False, False, True, True, True, True)
BAND_GRID: tuple[float, ...] = (0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)
BLOCK_HOURS = 168


class TrainOptions(ComponentConfig):
    """PPO's options and the environment's; all of them are stored in the checkpoint."""

    timesteps: int = Field(default=100_000, ge=64)
    seed: int = Field(default=0, ge=0)
    env: EnvOptions = Field(default_factory=EnvOptions)
    n_steps: int = Field(default=2048, ge=16, description="agent steps per PPO rollout")
    batch_size: int = Field(default=256, ge=8)
    n_epochs: int = Field(default=10, ge=1)
    learning_rate: float = Field(default=3e-4, gt=0)
    gamma: float = Field(default=0.99, gt=0, le=1)
    gae_lambda: float = Field(default=0.95, gt=0, le=1)
    clip_range: float = Field(default=0.2, gt=0, lt=1)
    ent_coef: float = Field(default=0.0, ge=0)
    log_std_init: float = Field(default=-1.0, ge=-5, le=2, description="initial log std of the Gaussian actions")
    net_arch: tuple[int, ...] = Field(default=(64, 64), min_length=1, strict=False)
    threads: int = Field(default=1, ge=1, le=64, description="torch CPU threads")


# -- training ------------------------------------------------------------------------------------------------


def export_actor(model: Any) -> Actor:
    """The policy network's mean action of a stable-baselines3 PPO ``MlpPolicy`` as numpy layers."""
    import torch

    linears = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    acts = [m for m in model.policy.mlp_extractor.policy_net if not isinstance(m, torch.nn.Linear)]
    if any(not isinstance(m, torch.nn.Tanh) for m in acts):
        raise ValueError("rl: the exported actor supports tanh hidden layers only")
    linears.append(model.policy.action_net)
    ws = tuple(m.weight.detach().double().numpy().copy() for m in linears)
    bs = tuple(m.bias.detach().double().numpy().copy() for m in linears)
    return Actor(ws, bs)


@dataclass
class TrainResult:
    checkpoint: Path
    model: Path
    seconds: float
    timesteps: int
    episodes: int
    mean_episode_reward_last: float | None  # mean of the last 10 episodes' reward sums (bp)
    log: list[dict[str, float]] = field(default_factory=list)


def build_model(env: Any, opts: TrainOptions) -> Any:
    """PPO on ``env`` with ``opts``; torch gets ``opts.threads`` threads (more fight the backtest for the cores)."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(opts.threads)

    return PPO(
        "MlpPolicy", env, seed=opts.seed, n_steps=opts.n_steps, batch_size=opts.batch_size, n_epochs=opts.n_epochs,
        learning_rate=opts.learning_rate, gamma=opts.gamma, gae_lambda=opts.gae_lambda, clip_range=opts.clip_range,
        ent_coef=opts.ent_coef, device="cpu", verbose=0,
        policy_kwargs={"net_arch": list(opts.net_arch), "log_std_init": opts.log_std_init},
    )  # fmt: skip


def train(
    cfg: Config, opts: TrainOptions, out: Path, *, pm: Any = None, on_progress: Callable[[str], None] | None = None
) -> TrainResult:
    """Train on ``cfg``'s market scenarios and write ``out`` (the checkpoint) and ``out.zip`` (the model)."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor

    t0 = time.perf_counter()
    base = RebalanceEnv(cfg, opts.env, pm=pm)
    env = Monitor(base)
    model = build_model(env, opts)
    history: list[dict[str, float]] = []

    class Progress(BaseCallback):
        """Logs each rollout's episode rewards and the elapsed time (the 20-minute budget is watched)."""

        def _on_rollout_end(self) -> None:
            rewards = env.get_episode_rewards()
            last = float(np.mean(rewards[-10:])) if rewards else float("nan")
            row = {"timesteps": float(self.num_timesteps), "episodes": float(len(rewards)),
                   "reward_last10": last, "seconds": time.perf_counter() - t0}  # fmt: skip
            history.append(row)
            if on_progress is not None:
                on_progress(f"{self.num_timesteps:>8} steps  {len(rewards):>4} episodes  mean episode reward "
                            f"(last 10) {last:9.2f} bp  {row['seconds']:7.1f} s")  # fmt: skip

        def _on_step(self) -> bool:
            return True

    model.learn(total_timesteps=opts.timesteps, callback=Progress())
    seconds = time.perf_counter() - t0
    rewards = env.get_episode_rewards()
    actor = export_actor(model)
    assert base.run is not None and base.cost_bps is not None
    meta = {
        "version": CHECKPOINT_VERSION,
        "feature_version": FEATURE_VERSION,
        "action": opts.env.action,
        "assets": list(base.assets),
        "venue_of": dict(base.run.venue_of),
        "features": feature_names(base.assets),
        "cost_bps": base.cost_bps.tolist(),
        "train": opts.model_dump(mode="json"),
        "config": cfg.source or "<config>",
        "trained_at": datetime.now(UTC).isoformat(),
        "seconds": seconds,
        "episodes": len(rewards),
        "torch": torch.__version__,
    }
    save_checkpoint(out, actor, meta)
    model_path = out.with_suffix(".zip")
    model.save(model_path)
    env.close()
    last = float(np.mean(rewards[-10:])) if rewards else None
    return TrainResult(out, model_path, seconds, opts.timesteps, len(rewards), last, history)


# -- running a policy over scenarios -------------------------------------------------------------------------


@dataclass
class Series:
    """Per-hour outcomes of one policy on one scenario, the buildup hours left out."""

    net: np.ndarray
    aim: np.ndarray
    te2: np.ndarray
    costs: np.ndarray
    traded: np.ndarray
    dispersion: np.ndarray  # NaN where the book holds no free asset
    fallbacks: int = 0

    def objective(self, kappa: float) -> np.ndarray:
        """Per hour, in bp: net return minus κ × tracking variance (the verdict's measure)."""
        return BP * (self.net - kappa * self.te2)


class _Counter:
    """A component context's ``emit`` that counts the events the policy raises."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}

    def __call__(self, e: RiskEvent) -> None:
        self.kinds[e.kind] = self.kinds.get(e.kind, 0) + 1


def run_policy(cfg: Config, sc: Scenario, hours: int, policy: Any, pm: Any) -> Series:
    """``policy`` on the scenario for ``hours`` cycles (after the buildup), every stage the engine's."""
    from bot.fast import FastBacktest

    run = FastBacktest(scenario_config(cfg, sc), hours + BUILDUP_HOURS, start=sc.start, research=True, pm=pm,
                       policy=policy)  # fmt: skip
    rows: list[Any] = []
    while not run.done:
        s = run.step()
        o = hour_outcome(run, s)
        if o is not None and s.k >= BUILDUP_HOURS and len(rows) < hours:
            rows.append(o)
    arr = {k: np.array([getattr(o, k) for o in rows], float) for k in ("net", "aim", "te2", "costs", "traded")}
    disp = np.array([np.nan if o.dispersion is None else o.dispersion for o in rows], float)
    return Series(**arr, dispersion=disp, fallbacks=int(getattr(policy, "fallbacks", 0)))


def rl_policy(checkpoint: Path, assets: Sequence[str]) -> tuple[RlPolicy, _Counter]:
    """The ``rl`` plugin as the daemon builds it, on ``checkpoint``; its events are counted."""
    from bot.clock import SimulatedClock

    counter = _Counter()
    ctx = ComponentContext(SimulatedClock(datetime(2026, 1, 1, tzinfo=UTC), 0.0), checkpoint.parent, tuple(assets),
                           counter)  # fmt: skip
    return RlPolicy(RlConfig(checkpoint=str(checkpoint.resolve())), ctx), counter


# -- statistics ---------------------------------------------------------------------------------------------


def block_indices(lengths: Sequence[int], block: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One moving-block bootstrap draw per series: indices of blocks of ``block`` hours, cut to its length."""
    out = []
    for n in lengths:
        b = min(block, n)
        starts = rng.integers(0, n - b + 1, size=math.ceil(n / b))
        out.append((starts[:, None] + np.arange(b)[None, :]).reshape(-1)[:n])
    return out


def sharpe(x: np.ndarray) -> float:
    sd = float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
    return float(np.mean(x)) / sd * math.sqrt(HOURS_PER_YEAR) if sd > 0 else float("nan")


METRICS: dict[str, tuple[str, Callable[[Series, float], float]]] = {
    "objective": ("objective, bp/yr", lambda s, k: float(np.mean(s.objective(k))) * HOURS_PER_YEAR),
    "return": ("net return, %/yr", lambda s, k: float(np.mean(s.net)) * HOURS_PER_YEAR * 100),
    "vol": ("volatility, %/yr", lambda s, k: float(np.std(s.net, ddof=1)) * math.sqrt(HOURS_PER_YEAR) * 100),
    "sharpe": ("Sharpe", lambda s, k: sharpe(s.net)),
    "costs": ("costs, bp/yr", lambda s, k: float(np.mean(s.costs)) * HOURS_PER_YEAR * BP),
    "turnover": ("turnover, x/yr", lambda s, k: float(np.mean(s.traded)) * HOURS_PER_YEAR),
    "te": ("tracking error, bp/yr", lambda s, k: math.sqrt(float(np.mean(s.te2)) * HOURS_PER_YEAR) * BP),
    "dispersion": ("RC dispersion held, mean", lambda s, k: float(np.nanmean(s.dispersion))),
}
PAIRED = ("objective", "return", "sharpe", "costs", "te", "dispersion")


def pooled(series: Sequence[Series]) -> Series:
    cat = {k: np.concatenate([getattr(s, k) for s in series]) for k in
           ("net", "aim", "te2", "costs", "traded", "dispersion")}  # fmt: skip
    return Series(**cat, fallbacks=sum(s.fallbacks for s in series))


def take(s: Series, idx: np.ndarray) -> Series:
    return Series(s.net[idx], s.aim[idx], s.te2[idx], s.costs[idx], s.traded[idx], s.dispersion[idx], s.fallbacks)


def paired(
    a: Sequence[Series],
    b: Sequence[Series],
    kappa: float,
    *,
    draws: int = 1000,
    block: int = BLOCK_HOURS,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """metric(a) − metric(b) on the pooled scenarios, with its moving-block bootstrap SE (same blocks for both)."""
    rng = np.random.default_rng(seed)
    lengths = [len(s.net) for s in a]
    if lengths != [len(s.net) for s in b]:
        raise ValueError("paired series must cover the same hours")
    point = {m: METRICS[m][1](pooled(a), kappa) - METRICS[m][1](pooled(b), kappa) for m in PAIRED}
    boot: dict[str, list[float]] = {m: [] for m in PAIRED}
    for _ in range(draws):
        idx = block_indices(lengths, block, rng)
        pa = pooled([take(s, i) for s, i in zip(a, idx)])
        pb = pooled([take(s, i) for s, i in zip(b, idx)])
        for m in PAIRED:
            boot[m].append(METRICS[m][1](pa, kappa) - METRICS[m][1](pb, kappa))
    return {m: (point[m], float(np.nanstd(boot[m], ddof=1))) for m in PAIRED}


# -- tuning and evaluation -------------------------------------------------------------------------------------


def training_scenarios(cfg: Config, env: EnvOptions) -> list[Scenario]:
    """The band's tuning scenarios: each training seed once, spread over the training start span, the last
    ``stress_share`` of them stressed — drawn only from what the agent trained on."""
    from datetime import timedelta

    from plugins.policies.rl_env import config_start

    k = len(env.seeds)
    n_stress = round(env.stress_share * k)
    start = config_start(cfg)
    span = max(env.start_span_days, 1)
    return [Scenario(s, i >= k - n_stress, start + timedelta(days=(i * 37) % span)) for i, s in enumerate(env.seeds)]


def band_family(cfg: Config, pm: Any) -> tuple[str, str]:
    """The measure and ``to`` of the config's own band policy (risk / target when it uses another policy)."""
    from bot.cycle import resolve_components
    from bot.plugins import Registry

    ctx = ComponentContext(None, Path("."), tuple(cfg.asset_names), lambda e: None)  # type: ignore[arg-type]
    res = resolve_components(cfg, Registry(pm), ctx).sections["policy"]
    if res.registration.name == "band":
        o: Any = res.options
        return str(o.measure), str(o.to)
    return "risk", "target"


@dataclass
class Evaluation:
    kappa: float
    band: float
    band_measure: str
    band_to: str
    tuning: dict[str, float]  # width -> training-set objective, bp/yr
    hours: int
    scenarios: list[str]
    metrics: dict[str, dict[str, float]]
    diffs: dict[str, dict[str, tuple[float, float]]]
    fallbacks: int
    rl_events: dict[str, int]
    seconds: float
    verdict: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def verdict_of(diff: tuple[float, float], what: str = "the tuned band") -> str:
    x, se = diff
    if x > 2 * se:
        return f"rl beats {what} by {x:.1f} ± {se:.1f} bp/yr on the objective (paired, block-bootstrap SE)"
    if x < -2 * se:
        return f"rl does not beat {what}: it is worse by {-x:.1f} ± {se:.1f} bp/yr on the objective"
    return f"rl does not beat {what}: the difference is {x:+.1f} ± {se:.1f} bp/yr, within two standard errors"


def evaluate(
    cfg: Config,
    checkpoint: Path,
    meta: dict[str, Any],
    *,
    hours: int = 1440,
    tune_hours: int = 720,
    seeds: Sequence[int] = HELD_OUT_SEEDS,
    stressed: Sequence[bool] = HELD_OUT_STRESSED,
    grid: Sequence[float] = BAND_GRID,
    draws: int = 1000,
    pm: Any = None,
    on_progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Tune the band on the training seeds, then run full, band and rl on the held-out seeds (docs/rl.md)."""
    from bot.plugins import make_plugin_manager
    from plugins.policies.rl_env import scenarios

    say = on_progress or (lambda m: None)
    t0 = time.perf_counter()
    pm = pm if pm is not None else make_plugin_manager()
    env = EnvOptions.model_validate(meta["train"]["env"])
    kappa = env.kappa
    overlap = sorted(set(seeds) & set(env.seeds))
    if overlap:
        raise ValueError(f"rl evaluate: held-out seeds {overlap} were training seeds of {checkpoint}")
    measure, to = band_family(cfg, pm)
    # -- 1. the band's width, tuned on the training scenarios only
    tuning: dict[str, float] = {}
    train_sc = training_scenarios(cfg, env)
    for width in grid:
        runs = [run_policy(cfg, sc, tune_hours, BandPolicy(BandConfig(band=width, measure=measure, to=to)), pm)
                for sc in train_sc]  # fmt: skip
        tuning[f"{width:g}"] = METRICS["objective"][1](pooled(runs), kappa)
        say(f"tuning band {width:g} ({measure}, to {to}): {tuning[f'{width:g}']:.1f} bp/yr on the training seeds")
    best = float(max(tuning, key=lambda w: tuning[w]))
    say(f"tuned band: {best:g}")
    # -- 2. the held-out scenarios, each policy on the same market
    held = scenarios(cfg, seeds, stressed)
    out: dict[str, list[Series]] = {"full": [], "band": [], "rl": []}
    events: dict[str, int] = {}
    for sc in held:
        out["full"].append(run_policy(cfg, sc, hours, FullPolicy(), pm))
        out["band"].append(run_policy(cfg, sc, hours, BandPolicy(BandConfig(band=best, measure=measure, to=to)), pm))
        pol, counter = rl_policy(checkpoint, cfg.asset_names)
        out["rl"].append(run_policy(cfg, sc, hours, pol, pm))
        for k, v in counter.kinds.items():
            events[k] = events.get(k, 0) + v
        say(f"held out {sc.label()}: done ({time.perf_counter() - t0:.0f} s)")
    metrics = {name: {m: METRICS[m][1](pooled(runs), kappa) for m in METRICS} for name, runs in out.items()}
    diffs = {
        "rl - band": paired(out["rl"], out["band"], kappa, draws=draws),
        "rl - full": paired(out["rl"], out["full"], kappa, draws=draws, seed=1),
        "band - full": paired(out["band"], out["full"], kappa, draws=draws, seed=2),
    }
    fallbacks = sum(s.fallbacks for s in out["rl"])
    return Evaluation(kappa, best, measure, to, tuning, hours, [sc.label() for sc in held], metrics, diffs, fallbacks,
                      events, time.perf_counter() - t0, verdict_of(diffs["rl - band"]["objective"]))  # fmt: skip


def markdown(ev: Evaluation) -> str:
    """The evaluation table and the paired differences, as docs/rl.md shows them."""
    lines = [f"Held out: {len(ev.scenarios)} scenarios × {ev.hours} h ({'; '.join(ev.scenarios)}); "
             f"κ = {ev.kappa:g}; band tuned on the training seeds: {ev.band:g} ({ev.band_measure}, to "
             f"{ev.band_to}).", ""]  # fmt: skip
    names = list(ev.metrics)
    lines.append("| metric | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for m, (label, _) in METRICS.items():
        fmt = "{:.3f}" if m in ("sharpe", "dispersion", "turnover", "return", "vol") else "{:.1f}"
        lines.append(f"| {label} | " + " | ".join(fmt.format(ev.metrics[n][m]) for n in names) + " |")
    lines += ["", "| paired difference (± block-bootstrap SE) | " + " | ".join(ev.diffs) + " |",
              "|---|" + "---:|" * len(ev.diffs)]  # fmt: skip
    for m in PAIRED:
        nd = 3 if m in ("sharpe", "dispersion", "return") else 1
        cells = [f"{ev.diffs[d][m][0]:+.{nd}f} ± {ev.diffs[d][m][1]:.{nd}f}" for d in ev.diffs]
        lines.append(f"| {METRICS[m][0]} | " + " | ".join(cells) + " |")
    lines += ["", f"rl fell back to the band in {ev.fallbacks} decisions (events: {ev.rl_events or 'none'}).",
              "Tuning (training seeds, objective bp/yr): " + ", ".join(f"{w}: {v:.1f}" for w, v in ev.tuning.items()),
              "", f"**Verdict: {ev.verdict}.**"]  # fmt: skip
    return "\n".join(lines)
