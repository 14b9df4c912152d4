"""``rl``: a rebalancing policy learned by reinforcement learning on the research-mode backtest.

What it decides
---------------
Each cycle the policy gets what every policy gets (``decide(current, target, forecast)``: the weights
held, the target the stages planned, the cycle's covariance forecast). The network's action is, by
default (``band``), **the band width θ for this hour**: when the book's drift from the target in risk
shares (the ``band`` policy's ``risk`` measure, max_i |RC_i(w)/RC_i(t) − 1|, computed by that policy's
own code) exceeds θ, the book moves to the target, else nothing trades. θ ∈ [THETA_MIN, THETA_MAX] on a
log scale, the span the band is tuned over. A constant θ *is* the ``band`` policy, so the learned
policy contains the tuned band and can only add state-dependence to it: a band that widens in calm
hours and tightens when volatility or correlations move (the tracking penalty grows with Σ, the costs
with the hour's volatility and volume).

Two richer actions are kept as options and were tried first (docs/rl.md has the numbers):
``band_fraction`` adds a trade fraction φ ∈ [PHI_MIN, 1] (w = current + φ·(target − current) on a
breach; partial moves are optimal when costs grow faster than linearly, Gârleanu and Pedersen 2013),
and ``gap_fraction`` is one fraction a_i ∈ [0, 1] of each asset's gap. Within the training budget both
learned worse policies than a tuned band: partial moves leave a proportional under-investment that the
risk-share drift does not see, and eight independent fractions learned a deterministic policy that
stopped trading some assets.

Whatever the action, each w_i lies between current_i and target_i, so the policy never buys an asset
above the larger of its holding and its target, which the target stage keeps under the liquidity cap L_i
and the operator's cap (per-asset fractions that would buy more than the book sells are scaled down, so
Σw stays at most what is held or targeted); the cycle (``bot.stages.decide_stage``) clips to those
bounds again anyway, and never trades a held asset. The network cannot trade past a bound whatever it
outputs.

What it sees
------------
``features`` (``FEATURE_VERSION``): per asset the weight gap, the gap in shares of forecast risk, the
target weight and whether the target is at its cap; for the book the forecast σ_p against its level a
day ago and a week's average, the change of the correlation matrix over a day, the tracking error of
the holdings against the target as a share of σ_p, the risk-share drift the band compares, the cash
held (transit included) and targeted, the estimated linear cost of closing the whole gap, the estimated
cost of the policy's recent trades and the hours since it last traded. All of it is computed here from
``decide``'s arguments and the policy's own memory of earlier calls, so the daemon, the backtests and
the training environment (``plugins.policies.rl_env``) feed the network exactly the same quantities.
The per-asset linear cost rates (fee + half spread) are those of the config the checkpoint was trained
on, stored in it.

While the book invests less than ``BUILDUP_SHARE`` of what the target invests (the first cycle from
cash, or after a venue came back) the policy moves to the target in full: the network was trained on
built books, and a buildup is not a rebalancing decision.

Checkpoints and fallback
------------------------
``rwabot rl train`` writes ``<state dir>/rl_policy.npz``: the actor network's weights (the mean of the
PPO policy, run here in numpy: about 20 µs, no torch at decision time) and, in ``meta``, the assets and
venues it was trained for, the feature version, the cost rates, the reward's κ and the training options
and scenarios. The policy refuses a checkpoint made for other assets or features, with a message that
says what differs and how to retrain. On any failure — checkpoint missing, unreadable or refused,
weights for another number of assets, a non-finite observation or action, an exception in the network —
the cycle gets the ``band`` policy's decision (options ``fallback_*``) and a ``policy_fallback`` risk
event, once per reason until a good decision resets it (the LSTM forecaster's rule). A checkpoint file
that changes on disk is reloaded at the next cycle.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Decision, Forecast, RiskEvent, Severity, Target
from bot.errors import PluginError
from bot.hookspecs import hookimpl
from plugins.policies.basic import BandConfig, BandPolicy

log = logging.getLogger(__name__)

FEATURE_VERSION = 1
"""Bumped whenever a feature, its scale or its order changes: a checkpoint of another version is refused."""
CHECKPOINT_VERSION = 1
ACTIONS = ("band", "band_fraction", "gap_fraction")
"""band: θ, a state-dependent band; band_fraction: (θ, φ); gap_fraction: one fraction per asset (module docstring)."""
THETA_MIN, THETA_MAX = 0.02, 0.5
PHI_MIN = 0.1
CLIP = 10.0
"""Every feature is scaled to O(1) and clipped to ±CLIP, the observation space's bounds."""
LAG = 24
"""Calls (hours, on the hourly schedule) over which σ_p and the correlations' change is measured."""
SIGMA_EMA_HALF_LIFE = 168.0
COST_EMA_HALF_LIFE = 24.0
BUILDUP_SHARE = 0.9
"""Below this share of the target's invested weight the book is being built, not rebalanced: full move."""
DEFAULT_CHECKPOINT = "rl_policy.npz"


class CheckpointError(PluginError):
    """A checkpoint that cannot be used for this config, with the reason in words."""


# -- observation ------------------------------------------------------------------------------------------

GLOBAL_FEATURES = (
    "log_sigma_vs_lag",  # log(σ_p now / σ_p LAG calls ago): volatility rising or falling
    "log_sigma_vs_ema",  # log(σ_p / its week-long EMA): a stressed or calm regime
    "corr_change",  # mean |Δρ_ij| over LAG calls × 10: a correlation shift under way
    "mean_corr",  # mean off-diagonal correlation now
    "te_over_sigma",  # sqrt((c−t)'Σ(c−t)) / σ_p × 10: how far the book's risk is from the target's
    "max_share_gap",  # max_i |risk share held − targeted| × 10: the RC dispersion the promise is about
    "risk_drift",  # max_i |share held / share targeted − 1| × 5: what the band (and θ) is compared with
    "cash_held",  # 1 − Σ current (cash and cash in transit) × 20
    "cash_target",  # 1 − Σ target × 20
    "gap_cost_bp",  # Σ_i c_i |c_i − t_i|: the linear cost of closing the whole gap, bp of NAV
    "recent_cost_bp",  # EMA (24 calls) of the estimated cost of the policy's own trades, bp of NAV × 10
    "hours_since_trade",  # / 24, capped at CLIP
)
PER_ASSET_FEATURES = ("gap", "share_gap", "target", "capped")


def feature_names(assets: Sequence[str]) -> list[str]:
    """The observation's entries in order: per-asset blocks (asset-major within a block), then the globals."""
    return [f"{f}:{a}" for f in PER_ASSET_FEATURES for a in assets] + list(GLOBAL_FEATURES)


def n_features(n: int) -> int:
    return len(PER_ASSET_FEATURES) * n + len(GLOBAL_FEATURES)


def _shares(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Each asset's share of the portfolio's forecast variance (zeros for an empty book)."""
    cw = cov @ w
    var = float(w @ cw)
    return w * cw / var if var > 0 else np.zeros_like(w)


@dataclass
class FeatureState:
    """The policy's memory between calls and the observation it builds from ``decide``'s arguments.

    The same object runs in the daemon (inside ``RlPolicy``) and in the training environment, so what the
    network was trained on is what it is fed. ``cost_bps`` is each asset's linear cost rate (fee + half
    spread, bp) of the training config.
    """

    cost_bps: np.ndarray
    sigmas: deque[float] = field(default_factory=lambda: deque(maxlen=LAG + 1))
    corrs: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=LAG + 1))
    sigma_ema: float | None = None
    cost_ema: float = 0.0
    since_trade: int = 0

    def observe(self, current: np.ndarray, target: Target, forecast: Forecast) -> np.ndarray:
        """The observation (float32, clipped to ±CLIP) for this call; remembers σ_p and ρ for later calls."""
        c = np.asarray(current, float)
        t = np.asarray(target.weights, float)
        cov = np.asarray(forecast.cov, float)
        n = len(t)
        if c.shape != (n,) or cov.shape != (n, n) or self.cost_bps.shape != (n,):
            raise ValueError(f"shapes: current {c.shape}, target {t.shape}, cov {cov.shape}, costs "
                             f"{self.cost_bps.shape}")  # fmt: skip
        sig = max(float(np.sqrt(max(t @ cov @ t, 0.0))), 1e-12)
        corr = np.asarray(forecast.corr, float)
        self.sigmas.append(sig)
        self.corrs.append(corr)
        lam = 0.5 ** (1.0 / SIGMA_EMA_HALF_LIFE)
        self.sigma_ema = sig if self.sigma_ema is None else lam * self.sigma_ema + (1 - lam) * sig
        iu = np.triu_indices(n, 1)
        d = c - t
        te = float(np.sqrt(max(d @ cov @ d, 0.0)))
        share_gap = _shares(c, cov) - _shares(t, cov)
        per_asset = np.concatenate([d * 20.0, share_gap * 10.0, t * 4.0, np.asarray(target.capped, float)])
        g = np.array([
            np.log(sig / self.sigmas[0]),
            np.log(sig / self.sigma_ema),
            float(np.mean(np.abs(corr[iu] - self.corrs[0][iu]))) * 10.0 if n > 1 else 0.0,
            float(np.mean(corr[iu])) if n > 1 else 0.0,
            te / sig * 10.0,
            float(np.max(np.abs(share_gap))) * 10.0 if n else 0.0,
            risk_drift(c, t, forecast) * 5.0,
            (1.0 - float(c.sum())) * 20.0,
            (1.0 - float(t.sum())) * 20.0,
            float(self.cost_bps @ np.abs(d)),
            self.cost_ema * 10.0,
            self.since_trade / 24.0,
        ])  # fmt: skip
        x = np.concatenate([per_asset, g])
        return np.clip(x, -CLIP, CLIP).astype(np.float32)

    def record(self, current: np.ndarray, decided: np.ndarray) -> None:
        """What the policy decided this call: the recent-cost and hours-since-trade memory."""
        moved = np.abs(np.asarray(decided, float) - np.asarray(current, float))
        cost = float(self.cost_bps @ moved) if self.cost_bps.shape == moved.shape else 0.0
        lam = 0.5 ** (1.0 / COST_EMA_HALF_LIFE)
        self.cost_ema = lam * self.cost_ema + (1 - lam) * cost
        self.since_trade = 0 if float(moved.max(initial=0.0)) > 1e-9 else min(self.since_trade + 1, 10_000)


def building(current: np.ndarray, target: Target) -> bool:
    """Whether the book is still being built (invested well below what the target invests)."""
    want = float(np.sum(target.weights))
    return want > 0 and float(np.sum(current)) < BUILDUP_SHARE * want


_RISK_BAND = BandPolicy(BandConfig(band=0.5, measure="risk"))


def risk_drift(current: np.ndarray, target: np.ndarray, forecast: Forecast) -> float:
    """The ``band`` policy's risk measure (max relative drift of the risk shares), by the band's own code."""
    return _RISK_BAND._drift(np.asarray(current, float), np.asarray(target, float), forecast)


def action_dim(action: str, n: int) -> int:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (known: {ACTIONS})")
    return {"band": 1, "band_fraction": 2}.get(action, n)


def band_params(x: np.ndarray) -> tuple[float, float]:
    """(θ, φ) of a band action x ∈ [−1, 1] (φ = 1) or band_fraction action x ∈ [−1, 1]²: θ log-uniform over
    [THETA_MIN, THETA_MAX], φ uniform over [PHI_MIN, 1]."""
    u = (np.clip(x, -1.0, 1.0) + 1.0) / 2.0
    theta = float(np.exp(np.log(THETA_MIN) + u[0] * (np.log(THETA_MAX) - np.log(THETA_MIN))))
    return theta, float(PHI_MIN + (1.0 - PHI_MIN) * u[1]) if len(u) > 1 else 1.0


def band_action(theta: float) -> float:
    """The action x whose θ is ``theta`` (the inverse of ``band_params``)."""
    return float(2 * np.log(theta / THETA_MIN) / np.log(THETA_MAX / THETA_MIN) - 1)


@dataclass(frozen=True)
class Move:
    """What an action does to the book this cycle."""

    weights: np.ndarray
    trade: bool
    summary: str


def apply_action(action: str, current: np.ndarray, target: np.ndarray, forecast: Forecast, x: np.ndarray) -> Move:
    """The weights an action leads to (module docstring): every w_i between current_i and target_i.

    Raises ValueError for an action of the wrong shape or with a non-finite entry: the caller falls back.
    """
    c, t = np.asarray(current, float), np.asarray(target, float)
    x = np.asarray(x, float)
    if x.shape != (action_dim(action, len(c)),):
        raise ValueError(f"action has shape {x.shape}, {action} for {len(c)} assets takes {action_dim(action, len(c))}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"non-finite action {x}")
    if action in ("band", "band_fraction"):
        theta, phi = band_params(x)
        drift = risk_drift(c, t, forecast)
        if drift <= theta:
            return Move(c.copy(), False, f"inside band (risk drift {drift:.4f} <= θ {theta:.4f})")
        if phi >= 1.0:
            return Move(t.copy(), True, f"band breached (risk drift {drift:.4f} > θ {theta:.4f})")
        return Move(
            c + phi * (t - c), True, f"band breached (risk drift {drift:.4f} > θ {theta:.4f}), moved φ {phi:.2f}"
        )
    a = (np.clip(x, -1.0, 1.0) + 1.0) / 2.0
    w = c + a * (t - c)
    # fractions per asset can buy more than they sell: the buys are scaled down so that the book never
    # invests more than the larger of what it holds and what the target invests (Σw ≤ 1 stays true)
    excess = float(w.sum()) - max(float(c.sum()), float(t.sum()))
    if excess > 0:
        buys = np.maximum(w - c, 0.0)
        w = c + np.minimum(w - c, 0.0) + buys * (1.0 - excess / float(buys.sum()))
    return Move(w, bool(np.abs(w - c).max(initial=0.0) > 0), f"closed {a.mean():.2f} of the gap on average")


# -- the network ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """The PPO policy's mean action as numpy: tanh hidden layers, a linear output clipped to [−1, 1]
    (what stable-baselines3's ``predict(deterministic=True)`` returns for this network)."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @property
    def n_in(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weights[-1].shape[0])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, np.float64)
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = w @ h + b
            if k < last:
                h = np.tanh(h)
        return np.clip(h, -1.0, 1.0)


def save_checkpoint(path: Path, actor: Actor, meta: Mapping[str, Any]) -> None:
    """Write the actor and its meta atomically (a reader never sees half a checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(dict(meta), sort_keys=True))}
    for k, (w, b) in enumerate(zip(actor.weights, actor.biases)):
        arrays[f"w{k}"], arrays[f"b{k}"] = np.asarray(w, np.float64), np.asarray(b, np.float64)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path: Path, assets: Sequence[str]) -> tuple[Actor, dict[str, Any]]:
    """The actor and meta of ``path``, checked against ``assets``; raises CheckpointError saying why not."""
    if not path.exists():
        raise CheckpointError(f"rl: no checkpoint at {path} (train one: rwabot rl train --config <this config>)")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            layers = sorted(int(k[1:]) for k in z.files if k.startswith("w"))
            weights = tuple(np.asarray(z[f"w{k}"], np.float64) for k in layers)
            biases = tuple(np.asarray(z[f"b{k}"], np.float64) for k in layers)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"rl: checkpoint {path} is unreadable ({exc})") from None
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"rl: checkpoint {path} has version {meta.get('version')}, this rwabot reads "
                              f"{CHECKPOINT_VERSION}: retrain with rwabot rl train")  # fmt: skip
    trained = tuple(meta.get("assets", ()))
    if trained != tuple(assets):
        raise CheckpointError(f"rl: checkpoint {path} was trained for assets {list(trained)}, this config trades "
                              f"{list(assets)}: retrain with rwabot rl train --config <this config>")  # fmt: skip
    if meta.get("feature_version") != FEATURE_VERSION or meta.get("action") not in ACTIONS:
        raise CheckpointError(f"rl: checkpoint {path} was trained on features v{meta.get('feature_version')} / "
                              f"action {meta.get('action')!r}, this policy computes v{FEATURE_VERSION} / "
                              f"{' or '.join(ACTIONS)}: retrain with rwabot rl train")  # fmt: skip
    n = len(trained)
    if not weights or len(weights) != len(biases):
        raise CheckpointError(f"rl: checkpoint {path} holds no network")
    actor = Actor(weights, biases)
    shapes_ok = all(w.ndim == 2 and b.shape == (w.shape[0],) for w, b in zip(weights, biases)) and all(
        weights[k + 1].shape[1] == weights[k].shape[0] for k in range(len(weights) - 1)
    )
    n_out = action_dim(meta["action"], n)
    if not shapes_ok or actor.n_in != n_features(n) or actor.n_out != n_out:
        raise CheckpointError(f"rl: checkpoint {path} has a network for {actor.n_in} inputs and {actor.n_out} "
                              f"outputs; {n} assets and the {meta['action']} action need {n_features(n)} and "
                              f"{n_out}")  # fmt: skip
    cost = np.asarray(meta.get("cost_bps", []), float)
    if cost.shape != (n,):
        raise CheckpointError(f"rl: checkpoint {path} stores no per-asset cost rates")
    return actor, meta


# -- the policy ---------------------------------------------------------------------------------------------


class RlConfig(ComponentConfig):
    checkpoint: str = Field(
        default=DEFAULT_CHECKPOINT, min_length=1, description="file under the state dir (or an absolute path)"
    )
    fallback_band: float = Field(default=0.05, gt=0, lt=1, description="the band policy used on any failure")
    fallback_measure: Literal["weight", "relative", "risk"] = "risk"
    fallback_to: Literal["target", "edge"] = "target"


class RlPolicy:
    """The learned policy (see the module docstring); ``band`` whenever it cannot decide."""

    name = "rl"

    def __init__(self, cfg: RlConfig, ctx: ComponentContext | None = None, *, path: Path | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx
        p = Path(cfg.checkpoint)
        if path is not None:
            self.path = path
        elif p.is_absolute() or ctx is None:
            self.path = p
        else:
            self.path = Path(ctx.state_dir) / p
        self.fallback = BandPolicy(BandConfig(band=cfg.fallback_band, measure=cfg.fallback_measure, to=cfg.fallback_to))
        self.actor: Actor | None = None
        self.meta: dict[str, Any] = {}
        self.state: FeatureState | None = None
        self._mtime: float | None = None
        self._load_error: str | None = None
        self._fallback_reason: str | None = None
        self.fallbacks = 0  # decisions the band made (the evaluation reports them)

    # -- checkpoint ---------------------------------------------------------------------------------------

    def _refresh(self, assets: Sequence[str]) -> None:
        """(Re)load the checkpoint when its file appeared or changed; remember why it cannot be used."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._mtime and (self.actor is not None or self._load_error is not None):
            return
        self._mtime = mtime
        try:
            self.actor, self.meta = load_checkpoint(self.path, assets)
            self._load_error = None
            cost = np.asarray(self.meta["cost_bps"], float)
            if self.state is None or self.state.cost_bps.shape != cost.shape:
                self.state = FeatureState(cost)
            else:
                self.state.cost_bps = cost
        except CheckpointError as exc:
            self.actor, self.meta, self._load_error = None, {}, str(exc)

    # -- decide ---------------------------------------------------------------------------------------------

    def decide(self, current: np.ndarray, target: Target, forecast: Forecast) -> Decision:
        assets = tuple(target.assets)
        self._refresh(assets)
        c = np.asarray(current, float)
        if self.state is None:  # no usable checkpoint yet: keep the memory warm anyway
            self.state = FeatureState(np.zeros(len(c)))
        try:
            obs = self.state.observe(c, target, forecast)
            if self.actor is None:
                raise CheckpointError(self._load_error or "rl: no checkpoint loaded")
            if building(c, target):
                w = np.asarray(target.weights, float).copy()
                self.state.record(c, w)
                self._ok()
                return Decision(w, True, "rl: building the book (full move to the target)")
            if obs.shape != (self.actor.n_in,):
                raise ValueError(f"observation has {obs.shape[0]} entries, the network takes {self.actor.n_in}")
            if not np.all(np.isfinite(obs)):
                raise ValueError("non-finite observation")
            move = apply_action(self.meta["action"], c, np.asarray(target.weights, float), forecast, self.actor(obs))
        except Exception as exc:  # any failure: the band decides, and a human hears about it once
            return self._fall_back(c, target, forecast, exc)
        self.state.record(c, move.weights)
        self._ok()
        return Decision(move.weights, move.trade, f"rl: {move.summary}")

    def _ok(self) -> None:
        self._fallback_reason = None

    def _fall_back(self, current: np.ndarray, target: Target, forecast: Forecast, exc: Exception) -> Decision:
        reason = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
        d = self.fallback.decide(current, target, forecast)
        if self.state is not None:
            try:
                self.state.record(current, d.weights)
            except Exception:  # the memory is best effort; the band's decision stands
                pass
        self.fallbacks += 1
        if reason != self._fallback_reason:
            self._fallback_reason = reason
            msg = f"rl policy unavailable ({reason}); the band policy decides"
            if self.ctx is not None:
                now = self.ctx.clock.now() if self.ctx.clock is not None else datetime.now(UTC)
                self.ctx.emit(RiskEvent("policy_fallback", Severity.WARNING, "policy:rl", msg, now))
            else:
                log.warning("policy_fallback: %s", msg)
        return Decision(d.weights, d.trade, f"rl fallback to band: {d.reason}")


# -- registration ---------------------------------------------------------------------------------------------


@hookimpl
def rwabot_register_policies(register) -> None:  # noqa: ANN001 - pluggy passes bot.components.Register
    def make(cfg: RlConfig, ctx: ComponentContext) -> RlPolicy:
        return RlPolicy(cfg, ctx)

    register("rl", make, RlConfig)


@hookimpl
def rwabot_register_commands(cli) -> None:  # noqa: ANN001 - pluggy passes the typer app
    """``rwabot rl train`` and ``rwabot rl evaluate`` (gymnasium and stable-baselines3 load only when asked for)."""
    from plugins.policies.rl_cli import add_commands

    add_commands(cli)
