"""Sample and EWMA covariance forecasters.

Both are the classical baselines every other forecaster must beat; they are cheap enough to run
inside the risk monitor every few minutes. ``ewma`` (also the ``lstm``'s fallback) takes the same
``deseasonalise`` option as ``dcc`` and ``lstm``: an hour-of-day scale estimated on the window it is
given (``plugins.forecasters.seasonal``), the forecast multiplied back by the next hour's scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import numpy as np
from pydantic import Field

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Forecast
from bot.errors import ForecastError
from bot.hookspecs import hookimpl
from plugins.forecasters.seasonal import Deseasonaliser


def _check_returns(assets: Sequence[str], returns: np.ndarray, model: str, min_obs: int) -> np.ndarray:
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2 or r.shape[1] != len(assets):
        raise ForecastError(f"{model}: returns shape {r.shape} does not match {len(assets)} assets")
    if r.shape[0] < min_obs:
        raise ForecastError(f"{model}: need at least {min_obs} hourly returns, got {r.shape[0]}")
    bad = [a for a, ok in zip(assets, np.isfinite(r).all(axis=0)) if not ok]
    if bad:
        raise ForecastError(f"{model}: returns contain NaN or inf for {bad}")
    return r


def sample_cov(returns: np.ndarray, demean: bool = True) -> np.ndarray:
    """Unbiased sample covariance (ddof=1) of the rows of ``returns``."""
    r = returns - returns.mean(axis=0) if demean else returns
    return r.T @ r / max(r.shape[0] - (1 if demean else 0), 1)


def ewma_cov(returns: np.ndarray, half_life: float, demean: bool = False) -> np.ndarray:
    """Exponentially weighted covariance with weights ∝ 0.5**(age/half_life), normalised to 1.

    RiskMetrics does not demean: at an hourly horizon the mean is noise next to the variance.
    """
    t = returns.shape[0]
    age = np.arange(t - 1, -1, -1, dtype=float)
    w = 0.5 ** (age / half_life)
    w /= w.sum()
    r = returns - (w @ returns) if demean else returns
    return (r * w[:, None]).T @ r


class SampleConfig(ComponentConfig):
    window_hours: int | None = Field(default=None, ge=2, description="use only the last N returns")


class SampleForecaster:
    name = "sample"

    def __init__(self, cfg: SampleConfig) -> None:
        self.cfg = cfg

    def forecast(self, assets: Sequence[str], returns: np.ndarray) -> Forecast:
        r = _check_returns(assets, returns, self.name, 2)
        if self.cfg.window_hours:
            r = r[-self.cfg.window_hours :]
        return Forecast.from_cov(
            assets, sample_cov(r), self.name, mu=r.mean(axis=0), diagnostics={"observations": r.shape[0]}
        )


class EwmaConfig(ComponentConfig):
    half_life_hours: float = Field(default=72.0, gt=0)
    demean: bool = False
    deseasonalise: bool = Field(default=False, description="hour-of-day scale on returns (estimated on the window)")


class EwmaForecaster:
    name = "ewma"

    def __init__(self, cfg: EwmaConfig, ctx: ComponentContext | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx

    def _hour(self, last_hour: int | None) -> int:
        if last_hour is not None:
            return int(last_hour) % 24
        if self.ctx is None:
            raise ForecastError("ewma: deseasonalise needs the close hour of the last return (no clock)")
        return self.ctx.clock.now().astimezone(UTC).hour  # the cycle's bars close on whole hours

    def stream(self, assets: Sequence[str], returns: np.ndarray) -> EwmaStream | None:
        """A forecast updated one return at a time on a window of this length (None when deseasonalised:
        the hour-of-day scale is re-estimated on each window, which has no one-step update)."""
        return None if self.cfg.deseasonalise else EwmaStream(self, assets, returns)

    def forecast(self, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None) -> Forecast:
        r = _check_returns(assets, returns, self.name, 2)
        nxt = None
        if self.cfg.deseasonalise:  # the scale comes from this window only: no look-ahead by construction
            hour = self._hour(last_hour)
            season = Deseasonaliser()
            season.fit(r, hour)
            r = season.transform(r, hour)
            nxt = season.next_scale(hour)
        cov = ewma_cov(r, self.cfg.half_life_hours, self.cfg.demean)
        age = np.arange(r.shape[0] - 1, -1, -1, dtype=float)
        w = 0.5 ** (age / self.cfg.half_life_hours)
        w /= w.sum()
        mu = w @ r
        if nxt is not None:
            cov = cov * np.outer(nxt, nxt)
            mu = mu * nxt
        return Forecast.from_cov(
            assets,
            cov,
            self.name,
            mu=mu,
            diagnostics={
                "observations": r.shape[0],
                "half_life_hours": self.cfg.half_life_hours,
                "deseasonalised": nxt is not None,
            },
        )


class EwmaStream:
    """The ewma forecast of a sliding window of fixed length W, updated by one return at a time.

    With λ = 0.5^(1/half-life) the unnormalised sums S = Σ λ^age r rᵀ and m = Σ λ^age r move by
    S' = λS + r_new r_newᵀ − λ^W r_out r_outᵀ when r_new enters and r_out (then of age W) leaves, so an
    hour costs O(n²) instead of O(W n²) and gives the forecast ``EwmaForecaster.forecast`` gives on the
    same window (to rounding; the sums are recomputed from the window every ``REANCHOR`` updates so
    that rounding cannot accumulate). The fast backtest uses it (``bot.components.ForecastStream``).
    """

    REANCHOR = 1000

    def __init__(self, owner: EwmaForecaster, assets: Sequence[str], returns: np.ndarray) -> None:
        self.owner = owner
        self.assets = tuple(assets)
        r = _check_returns(self.assets, returns, owner.name, 2)
        self.window = np.array(r, dtype=float, copy=True)  # a ring buffer: row ``head`` is the oldest
        self.head = 0
        hl = owner.cfg.half_life_hours
        self.lam = 0.5 ** (1.0 / hl)
        w = self.window.shape[0]
        self.lam_w = self.lam**w
        self.z = float((0.5 ** (np.arange(w, dtype=float) / hl)).sum())
        self._anchor()

    def _ordered(self) -> np.ndarray:
        return np.roll(self.window, -self.head, axis=0)

    def _anchor(self) -> None:
        r = self._ordered()
        age = np.arange(r.shape[0] - 1, -1, -1, dtype=float)
        wt = 0.5 ** (age / self.owner.cfg.half_life_hours)
        self.s = (r * wt[:, None]).T @ r
        self.m = wt @ r
        self.updates = 0

    def update(self, new_return: np.ndarray) -> Forecast:
        r = np.asarray(new_return, dtype=float)
        if r.shape != (len(self.assets),) or not np.isfinite(r).all():
            bad = [a for a, ok in zip(self.assets, np.isfinite(r)) if not ok] if r.shape == (len(self.assets),) else []
            raise ForecastError(f"{self.owner.name}: new return has shape {r.shape} or NaN/inf for {bad}")
        out = self.window[self.head].copy()
        self.window[self.head] = r
        self.head = (self.head + 1) % self.window.shape[0]
        self.updates += 1
        if self.updates >= self.REANCHOR:
            self._anchor()
        else:
            self.s = self.lam * self.s + np.outer(r, r) - self.lam_w * np.outer(out, out)
            self.m = self.lam * self.m + r - self.lam_w * out
        return self.forecast()

    def forecast(self) -> Forecast:
        mu = self.m / self.z
        cov = self.s / self.z
        if self.owner.cfg.demean:
            cov = cov - np.outer(mu, mu)
        return Forecast.from_cov(self.assets, cov, self.owner.name, mu=mu, diagnostics={
            "observations": self.window.shape[0], "half_life_hours": self.owner.cfg.half_life_hours,
            "deseasonalised": False, "incremental": True})  # fmt: skip


@hookimpl
def rwabot_register_forecasters(register) -> None:
    def make_sample(cfg: SampleConfig, ctx: ComponentContext) -> SampleForecaster:
        return SampleForecaster(cfg)

    def make_ewma(cfg: EwmaConfig, ctx: ComponentContext) -> EwmaForecaster:
        return EwmaForecaster(cfg, ctx)

    register("sample", make_sample, SampleConfig)
    register("ewma", make_ewma, EwmaConfig)
