"""Expected-return models: the μ that ``rp_cost``'s return tilt λ·wᵀμ weighs.

Hourly mean returns are mostly noise (a 10%/yr drift is 1.1e-5 per hour against hourly volatilities of
1e-3 to 1e-2), so the models differ in how much of the noise they let through:

* ``zero``: μ = 0, the honest default when nothing is known (the tilt then does nothing, openly);
* ``ewma_mean``: the exponentially weighted mean of the window (half-life in hours);
* ``shrunk_mean``: the sample mean shrunk toward the cross-sectional mean by the James–Stein factor
  (Jorion 1986's Bayes–Stein form: shrink more when the assets' means are close relative to their noise);
* ``carry``: a stated yield per asset (a tokenized fund's coupon or NAV drift, in config), converted to
  an hourly log return — no estimation at all, for assets whose return is contractual.

``rwabot evaluate --returns`` scores them out of sample (information coefficient and hit rate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from bot.components import ComponentConfig, ComponentContext, NoOptions
from bot.domain import HOURS_PER_YEAR
from bot.errors import ConfigError, ForecastError
from bot.hookspecs import hookimpl


def _window(assets: Sequence[str], returns: np.ndarray, model: str) -> np.ndarray:
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2 or r.shape[1] != len(assets) or r.shape[0] < 2:
        raise ForecastError(f"{model}: returns shape {r.shape} does not give two hours of {len(assets)} assets")
    bad = [a for a, ok in zip(assets, np.isfinite(r).all(axis=0)) if not ok]
    if bad:
        raise ForecastError(f"{model}: returns contain NaN or inf for {bad}")
    return r


def ewma_mean(returns: np.ndarray, half_life: float) -> np.ndarray:
    t = returns.shape[0]
    w = 0.5 ** (np.arange(t - 1, -1, -1, dtype=float) / half_life)
    return (w / w.sum()) @ returns


def james_stein_mean(returns: np.ndarray) -> np.ndarray:
    """Sample means shrunk toward their cross-sectional average: μ_JS = m̄ + (1 − c)(m − m̄) with
    c = min(1, (N − 3) σ̄²/T / Σ(m_i − m̄)²), σ̄² the average variance (Efron–Morris; N ≥ 4 to shrink)."""
    t, n = returns.shape
    m = returns.mean(axis=0)
    if n < 4:
        return m
    grand = float(m.mean())
    spread = float(((m - grand) ** 2).sum())
    noise = float(returns.var(axis=0, ddof=1).mean()) / t
    c = 1.0 if spread <= 0 else min(1.0, (n - 3) * noise / spread)
    return grand + (1.0 - c) * (m - grand)


class ZeroReturns:
    name = "zero"

    def expected(self, assets: Sequence[str], returns: np.ndarray) -> np.ndarray:
        return np.zeros(_window(assets, returns, self.name).shape[1])


class EwmaMeanConfig(ComponentConfig):
    half_life_hours: float = Field(default=24.0 * 30, gt=0, description="half-life of the weights, hours")


class EwmaMeanReturns:
    name = "ewma_mean"

    def __init__(self, cfg: EwmaMeanConfig) -> None:
        self.cfg = cfg

    def expected(self, assets: Sequence[str], returns: np.ndarray) -> np.ndarray:
        return ewma_mean(_window(assets, returns, self.name), self.cfg.half_life_hours)


class ShrunkMeanReturns:
    name = "shrunk_mean"

    def expected(self, assets: Sequence[str], returns: np.ndarray) -> np.ndarray:
        return james_stein_mean(_window(assets, returns, self.name))


class CarryConfig(ComponentConfig):
    annual_yield: dict[str, float] = Field(
        default_factory=dict, description="stated annual yield per asset (0.05 = 5%/yr); others: `default`"
    )
    default: float = Field(default=0.0, ge=-1, le=1, description="annual yield of the assets not listed")


class CarryReturns:
    """μ_i = log(1 + y_i) / 8760 from a stated yield: a T-bill fund's return is its coupon, not its noise."""

    name = "carry"

    def __init__(self, cfg: CarryConfig) -> None:
        bad = {a: y for a, y in cfg.annual_yield.items() if not (math.isfinite(y) and -1 < y <= 1)}
        if bad:
            raise ForecastError(f"carry: annual_yield must be in (-1, 1], got {bad}")
        self.cfg = cfg

    def expected(self, assets: Sequence[str], returns: np.ndarray) -> np.ndarray:
        _window(assets, returns, self.name)
        y = np.array([self.cfg.annual_yield.get(a, self.cfg.default) for a in assets], dtype=float)
        return np.log1p(y) / HOURS_PER_YEAR

    def unknown(self, assets: Sequence[str]) -> list[str]:
        return sorted(set(self.cfg.annual_yield) - set(assets))


def _carry(cfg: CarryConfig, ctx: ComponentContext) -> CarryReturns:
    model = CarryReturns(cfg)
    extra = model.unknown(ctx.assets) if ctx.assets else []
    if extra:
        raise ConfigError(f"returns carry: annual_yield names assets the config does not trade: {extra}")
    return model


@hookimpl
def rwabot_register_return_models(register) -> None:  # noqa: ANN001 - bot.components.Register
    register("zero", lambda cfg, ctx: ZeroReturns(), NoOptions)
    register("ewma_mean", lambda cfg, ctx: EwmaMeanReturns(cfg), EwmaMeanConfig)
    register("shrunk_mean", lambda cfg, ctx: ShrunkMeanReturns(), NoOptions)
    register("carry", _carry, CarryConfig)

