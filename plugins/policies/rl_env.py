"""The RL environment: a gymnasium ``Env`` whose step is one cycle of the research-mode fast backtest.

Why a worker thread
-------------------
``FastBacktest.step`` runs a whole cycle — observe, forecast, bounds, target, *decide*, plan, execute,
book — and the decision needs the cycle's own target and forecast. For the agent to choose its action on
exactly what the ``rl`` policy sees in the daemon, the backtest runs in a worker thread whose policy
stops inside ``decide``, hands the observation to ``step``/``reset`` and waits for the action; the two
threads strictly alternate, so a run is as deterministic as the backtest itself. No stage is
re-implemented: forecaster, optimizer, liquidity caps, venue budgets, funding transfers, the paper fill
model and its costs are the engine's (bot/fast.py, bot/stages.py).

Reward (per agent step, in basis points of NAV)
-----------------------------------------------
The objective every policy is judged by (``rwabot rl evaluate``), per hour, is

    u_t = 1e4 · [ r_t − κ · (w_t − t_t)' Σ_t (w_t − t_t) ]

r_t is the book's net return from this decision to the next one: the hour's costs (fees, spread,
impact, transfer fees) and the market move of the book held after trading, w_t
(``nav_before_{t+1} / nav_before_t − 1``, computed from the next bar's closes). The penalty is the
forecast variance of the active return against the risk-parity target t_t (the tracking variance); κ
prices it (``EnvOptions.kappa``; docs/rl.md on how its default was fixed). Summed over hours: "mean
return net of all costs − κ · tracking variance".

The reward the agent trains on is that objective with the market's noise taken out (``reward``):

* ``"realized"``: 1e4 · [(r_t − r*_t) − κ·TE²_t], r*_t = t_t · R_{t+1} the frictionless return of the
  target, which the action does not change (subtracting it removes ≈ 70× the active part's noise);
* ``"expected"`` (default): 1e4 · [−c_t − κ·TE²_t], c_t the cycle's costs as a share of NAV. This is the
  realized reward's expectation given the cycle's information when the active return (w_t − t_t)·R_{t+1}
  has mean zero, as it has for an optimizer that forecasts no returns: the realized active return is
  noise of standard deviation TE_t, on the default book about six times the penalty it would teach,
  and with it 100k steps learned a band too wide (docs/rl.md).

Episodes
--------
Each episode draws a training scenario (``Scenario``: a simulated-market seed, a base or stressed market
and a start) from ``EnvOptions`` with the env's seeded RNG, starts the book from cash and lets the agent
decide ``episode_hours`` cycles; the buildup cycles (``plugins.policies.rl.building``) are moved in full
without asking the agent, as the ``rl`` policy does. Episodes end by truncation (a time limit), never by
termination.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from pydantic import Field, model_validator

from bot.components import ComponentConfig
from bot.config import Config
from bot.domain import Decision, Forecast, Target
from bot.errors import ConfigError
from plugins.policies.rl import CLIP, FeatureState, action_dim, apply_action, building, n_features

STRESS_MARKET: dict[str, float] = {
    "stress_episodes_per_year": 12.0,
    "stress_vol_multiplier": 3.5,
    "stress_jump_multiplier": 5.0,
    "stress_volume_multiplier": 1.2,
}
"""The simulated market's options for a stressed scenario: three times the stress episodes, each more
violent, with thinner volume (liquidity caps bind more). Applied over the config's own data options."""

BP = 1e4


class EnvOptions(ComponentConfig):
    """What an episode is and what the reward prices; stored in every checkpoint."""

    episode_hours: int = Field(default=720, ge=2, le=24 * 365, description="agent decisions per episode")
    kappa: float = Field(default=20_000.0, ge=0, description="price of the tracking variance in the reward")
    seeds: tuple[int, ...] = Field(default=(1, 2, 3, 4, 5, 6, 7, 8), min_length=1, strict=False)
    stress_share: float = Field(default=0.25, ge=0, le=1, description="share of episodes on a stressed market")
    start_span_days: int = Field(default=300, ge=0, le=3650, description="episode starts drawn over this span")
    reward: Literal["expected", "realized"] = Field(
        default="expected", description="the objective without the active return's noise, or with it"
    )
    action: Literal["band", "band_fraction", "gap_fraction"] = Field(
        default="band", description="θ of a state-dependent band; (θ, φ); or one gap fraction per asset"
    )

    @model_validator(mode="after")
    def _distinct(self) -> EnvOptions:
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds {self.seeds} must be distinct and non-negative")
        return self


@dataclass(frozen=True)
class Scenario:
    """One market path: the simulated source's seed, whether it is stressed, and the first cycle's time."""

    seed: int
    stressed: bool
    start: datetime

    def label(self) -> str:
        return f"seed {self.seed}{' stress' if self.stressed else ''} from {self.start:%Y-%m-%d}"


def scenario_config(cfg: Config, sc: Scenario) -> Config:
    """``cfg`` on the scenario's market (its data options with the seed, and the stress options)."""
    if cfg.data.plugin != "simulated":
        raise ConfigError(f"rl: training and evaluation scenarios are simulated-market seeds; this config's data "
                          f"plugin is {cfg.data.plugin!r}")  # fmt: skip
    opts = {**cfg.data.options, "seed": sc.seed, **(STRESS_MARKET if sc.stressed else {})}
    return cfg.with_overrides(data={"plugin": "simulated", "options": opts})


def config_start(cfg: Config) -> datetime:
    if cfg.clock.start is None:
        raise ConfigError("rl: the config needs clock.start (the scenarios start from it)")
    return cfg.clock.start


def draw_scenario(cfg: Config, opts: EnvOptions, rng: np.random.Generator) -> Scenario:
    seed = int(opts.seeds[int(rng.integers(len(opts.seeds)))])
    stressed = bool(rng.random() < opts.stress_share)
    day = int(rng.integers(opts.start_span_days + 1))
    return Scenario(seed, stressed, config_start(cfg) + timedelta(days=day))


def cost_rates(run: Any) -> np.ndarray:
    """Per asset of the run, its venue's linear cost rate in bp: taker fee + half spread."""
    out = np.zeros(run.n)
    for i, a in enumerate(run.assets):
        v = run.venues[run.venue_of[a]]
        out[i] = v.fee_bps + float(v.half_spread[i]) * BP
    return out


@dataclass(frozen=True)
class HourOutcome:
    """One cycle's outcome as every policy is judged: the hour after its decision, net of its costs."""

    net: float  # r_t
    aim: float  # r*_t: the target's frictionless return over the same hour
    te2: float  # (w − t)'Σ(w − t), hourly
    costs: float  # share of NAV
    traded: float  # share of NAV
    dispersion: float | None  # RC dispersion of the free holdings after trading


def hour_outcome(run: Any, s: Any) -> HourOutcome | None:
    """The outcome of step ``s`` of ``run``; None for the run's last cycle (no next bar to mark it at)."""
    j = run.hist + s.k
    if j + 1 >= run.close.shape[0] or s.nav_before <= 0:
        return None
    growth = run.close[j + 1] / run.close[j] - 1.0
    aim = np.asarray(s.targeted.aim.weights, float)
    net = s.nav_after / s.nav_before * (1.0 + float(s.w_after @ growth)) - 1.0
    gap = s.w_after - aim
    te2 = float(gap @ s.forecast.cov @ gap)
    return HourOutcome(net, float(aim @ growth), te2, s.costs / s.nav_before, s.traded / s.nav_before,
                       s.rc_dispersion_held)  # fmt: skip


def reward_of(o: HourOutcome, kappa: float, kind: str = "expected") -> float:
    """The per-step reward in bp (module docstring)."""
    if kind == "realized":
        return BP * ((o.net - o.aim) - kappa * o.te2)
    return BP * (-o.costs - kappa * o.te2)


class _Stop(Exception):
    """Raised inside the worker's ``decide`` to abandon its run."""


class _AgentPolicy:
    """The policy the worker's backtest calls: buildup in full, else waits for the agent's action."""

    name = "rl-agent"

    def __init__(
        self, action: str, state: FeatureState, to_env: queue.SimpleQueue[Any], to_run: queue.SimpleQueue[Any]
    ) -> None:
        self.action, self.state, self.to_env, self.to_run = action, state, to_env, to_run

    def decide(self, current: np.ndarray, target: Target, forecast: Forecast) -> Decision:
        c = np.asarray(current, float)
        obs = self.state.observe(c, target, forecast)
        t = np.asarray(target.weights, float)
        if building(c, target):
            self.state.record(c, t)
            return Decision(t.copy(), True, "rl: building the book")
        self.to_env.put(("obs", obs))
        action = self.to_run.get()
        if action is None:
            raise _Stop
        move = apply_action(self.action, c, t, forecast, action)
        self.state.record(c, move.weights)
        return Decision(move.weights, move.trade, f"rl agent: {move.summary}")


class RebalanceEnv(gym.Env[np.ndarray, np.ndarray]):
    """The environment (module docstring). ``reset(options={"scenario": Scenario})`` pins the scenario."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, cfg: Config, options: EnvOptions | None = None, *, pm: Any = None) -> None:
        from bot.plugins import make_plugin_manager

        super().__init__()
        self.cfg = cfg
        self.opts = options or EnvOptions()
        scenario_config(cfg, Scenario(self.opts.seeds[0], False, config_start(cfg)))  # fails early, with the reason
        self.assets = tuple(cfg.asset_names)
        n = len(self.assets)
        self.observation_space = gym.spaces.Box(-CLIP, CLIP, (n_features(n),), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim(self.opts.action, n),), np.float32)
        self.pm = pm if pm is not None else make_plugin_manager()
        self.run: Any = None
        self.cost_bps: np.ndarray | None = None
        self.scenario: Scenario | None = None
        self._thread: threading.Thread | None = None
        self._to_env: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._to_run: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._decisions = 0
        self._obs: np.ndarray | None = None

    # -- the worker ------------------------------------------------------------------------------------------

    def _work(self, run: Any, to_env: queue.SimpleQueue[Any]) -> None:
        try:
            while not run.done:
                to_env.put(("step", run.step()))
        except _Stop:
            return
        except BaseException as exc:  # the env re-raises it in the caller's thread
            to_env.put(("error", exc))
            return
        to_env.put(("done", None))

    def _stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._to_run.put(None)
            self._thread.join(timeout=30)
        self._thread = None

    def _until_obs(self) -> tuple[np.ndarray | None, float, bool]:
        """Run the worker to the agent's next decision: (obs or None at the end, reward of the steps run)."""
        reward, got = 0.0, False
        while True:
            kind, payload = self._to_env.get()
            if kind == "obs":
                return payload, reward, got
            if kind == "step":
                o = hour_outcome(self.run, payload)
                if o is not None and self._pending:
                    reward += reward_of(o, self.opts.kappa, self.opts.reward)
                    got = True
                self._pending = False
                continue
            if kind == "error":
                raise RuntimeError(f"rl env: the backtest failed in {self.scenario}: {payload!r}") from payload
            return None, reward, got

    # -- gymnasium API ----------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        from bot.fast import FastBacktest

        super().reset(seed=seed)
        self._stop()
        sc = (options or {}).get("scenario") or draw_scenario(self.cfg, self.opts, self.np_random)
        self.scenario = sc
        self._to_env, self._to_run = queue.SimpleQueue(), queue.SimpleQueue()
        # a few cycles more than the agent decides: the buildup and the final cycle, which has no next bar
        hours = self.opts.episode_hours + 48
        state = FeatureState(np.zeros(len(self.assets)))
        policy = _AgentPolicy(self.opts.action, state, self._to_env, self._to_run)
        self.run = FastBacktest(scenario_config(self.cfg, sc), hours, start=sc.start, research=True, pm=self.pm,
                                policy=policy)  # fmt: skip
        self.cost_bps = cost_rates(self.run)
        state.cost_bps = self.cost_bps
        self._decisions = 0
        self._pending = False
        self._thread = threading.Thread(target=self._work, args=(self.run, self._to_env), name="rl-env", daemon=True)
        self._thread.start()
        obs, _, _ = self._until_obs()
        if obs is None:
            raise RuntimeError(f"rl env: {sc.label()} ended before the agent's first decision")
        self._obs = obs
        return obs, {"scenario": sc.label()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._thread is None or self._obs is None:
            raise RuntimeError("rl env: call reset() first")
        a = np.asarray(action, float).reshape(-1)
        if a.shape != self.action_space.shape or not np.all(np.isfinite(a)):
            raise ValueError(f"rl env: action must be {self.action_space.shape[0]} finite numbers, got {action!r}")
        self._pending = True
        self._to_run.put(a)
        obs, reward, got = self._until_obs()
        self._decisions += 1
        truncated = obs is None or self._decisions >= self.opts.episode_hours
        if obs is None:  # the run ended: the last observation stands for the final state
            obs = self._obs
        elif truncated:
            self._stop()
        self._obs = obs
        info: dict[str, Any] = {"k": self.run.k, "marked": got}
        return obs, float(reward), False, bool(truncated), info

    def close(self) -> None:
        self._stop()
        super().close()


def scenarios(cfg: Config, seeds: Sequence[int], stressed: Sequence[bool], offset_days: int = 0) -> list[Scenario]:
    """Fixed scenarios (for tuning and evaluation): one per seed, each from clock.start + ``offset_days``."""
    start = config_start(cfg) + timedelta(days=offset_days)
    return [Scenario(int(s), bool(x), start) for s, x in zip(seeds, stressed, strict=True)]
