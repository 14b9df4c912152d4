"""Ledoit-Wolf shrinkage and DCC-GARCH(1,1) covariance forecasters.

``ledoit_wolf``
    scikit-learn's ``LedoitWolf`` (the 2004 optimal linear shrinkage toward a scaled identity) on a
    window of hourly returns. It is a *static* estimator: useful when there are many assets and few
    observations, never when volatility moves. The tests check it against the closed form.

``dcc``
    Engle's (2002) Dynamic Conditional Correlation with GARCH(1,1) margins, estimated in two steps
    by (quasi) maximum likelihood:

    1. per asset, a zero-mean GARCH(1,1) with the ``arch`` package: h_t = ω + α ε²_{t−1} + β h_{t−1};
       z_t = ε_t / √h_t are the standardised residuals;
    2. correlation targeting: Q̄ = mean(z zᵀ), and
       Q_t = (1 − a − b) Q̄ + a z_{t−1} z_{t−1}ᵀ + b Q_{t−1},   R_t = diag(Q_t)^−½ Q_t diag(Q_t)^−½,
       with (a, b) maximising the correlation part of the Gaussian log-likelihood
       −½ Σ_t (log|R_t| + z_tᵀ R_t⁻¹ z_t − z_tᵀ z_t).

    The likelihood is vectorised: the Q recursion is a first-order linear filter applied to every
    element of z zᵀ at once (``scipy.signal.lfilter``), and the T determinants and solves are one
    batched numpy call, so a year of hourly data on 8 assets fits in a few seconds without numba
    (this is why we do not depend on ``pymgarch``). The one-step forecast is
    Σ_{T+1} = D_{T+1} R_{T+1} D_{T+1} with D the GARCH volatility forecasts.

    Fitting is far more expensive than filtering, so the forecaster refits every
    ``refit_every_hours`` calls and in between only filters the new window with the stored
    parameters (``fit``/``predict`` are public so the evaluation runner can time and schedule them).

Both volatility-model options ``deseasonalise`` (hour-of-day scale, ``plugins.forecasters.seasonal``)
apply to ``dcc``: the scale is estimated on the fit window only.

Streams (``stream(assets, window)``, ``bot.components.ForecastStream``: the fast backtest updates them
by one return an hour instead of calling ``forecast`` on the rolled window):

* ``LedoitWolfStream`` keeps the window's running moments (Σy, Σyyᵀ, Σ‖y‖²y, Σ‖y‖⁴), from which
  sklearn's shrunk Σ and intensity follow exactly (``ledoit_wolf_from_moments``): O(N²) an hour, the
  batch forecast to rounding, re-anchored on the window every 1000 updates;
* ``DccStream`` keeps the recursions' state (h, Q) and steps it (``dcc_step``) with the current
  parameters, refitting them on the window every ``refit_every_hours`` updates as ``forecast`` does
  and then rebuilding the state over the window (``dcc_filter_state``). At a refit it is the batch
  forecast; in between it continues the filter instead of restarting it at the rolled window's first
  row, a difference of order max(b, β)^W (see ``DccStream``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import numpy as np
from pydantic import Field
from scipy import optimize, signal

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Forecast
from bot.errors import ForecastError
from bot.hookspecs import hookimpl
from plugins.forecasters.basic import _check_returns
from plugins.forecasters.seasonal import Deseasonaliser

log = logging.getLogger(__name__)


# -- Ledoit-Wolf ---------------------------------------------------------------------------------------


class LedoitWolfConfig(ComponentConfig):
    window_hours: int | None = Field(default=None, ge=2, description="use only the last N returns")
    demean: bool = Field(default=True, description="subtract the window mean (sklearn's assume_centered=False)")


class LedoitWolfForecaster:
    name = "ledoit_wolf"

    def __init__(self, cfg: LedoitWolfConfig | None = None) -> None:
        self.cfg = cfg or LedoitWolfConfig()

    def forecast(self, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None) -> Forecast:
        from sklearn.covariance import LedoitWolf

        r = _check_returns(assets, returns, self.name, 2)
        if self.cfg.window_hours:
            r = r[-self.cfg.window_hours :]
        est = LedoitWolf(assume_centered=not self.cfg.demean).fit(r)
        return Forecast.from_cov(
            assets,
            est.covariance_,
            self.name,
            mu=est.location_,
            diagnostics={"observations": r.shape[0], "shrinkage": float(est.shrinkage_)},
        )

    def stream(self, assets: Sequence[str], returns: np.ndarray) -> LedoitWolfStream | None:
        """The forecast of a sliding window of this length (the last ``window_hours`` of it), updated one
        return at a time; None when the window is too short for ``forecast`` (which then says why)."""
        if np.ndim(returns) == 2 and np.shape(returns)[0] < 2:
            return None
        return LedoitWolfStream(self, assets, returns)


def ledoit_wolf_from_moments(
    t: int, mean: np.ndarray, gram: np.ndarray, fourth: float, demean: bool
) -> tuple[np.ndarray, float]:
    """scikit-learn's ``ledoit_wolf`` (shrunk Σ, shrinkage) from the window's moments instead of its rows.

    With X the window's rows (centred when ``demean``), S = XᵀX/T and the three sums sklearn takes over
    the rows are, term by term, functions of S and of Σ_t ‖x_t‖⁴ (``fourth``):
    β_ = Σ_ij (X²ᵀX²)_ij = Σ_t ‖x_t‖⁴, δ_ = ‖S‖²_F, tr S, so an update that keeps them costs O(N²).
    ``gram`` is Σ y yᵀ and ``mean`` the mean of the rows y, which may be shifted by any constant when
    ``demean`` (S does not depend on it); ``fourth`` is Σ_t ‖x_t‖⁴ of the rows sklearn uses (centred when
    ``demean``).
    """
    n = gram.shape[0]
    s = gram / t - np.outer(mean, mean) if demean else gram / t
    if n == 1:  # sklearn: one feature, no shrinkage
        return s.copy(), 0.0
    tr = float(np.trace(s))
    mu = tr / n
    delta_ = float(np.sum(s * s))
    beta = 1.0 / (n * t) * (fourth / t - delta_)
    delta = (delta_ - 2.0 * mu * tr + n * mu**2) / n
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 or delta <= 0 else beta / delta  # δ = 0: S = μI, nothing to shrink
    shrunk = (1.0 - shrinkage) * s
    shrunk.flat[:: n + 1] += shrinkage * mu
    return shrunk, float(shrinkage)


class LedoitWolfStream:
    """The ``ledoit_wolf`` forecast of a sliding window of fixed length W, updated by one return at a time.

    It keeps the window's running sums of y = x − c (c: the window mean at the last re-anchoring, 0
    without ``demean``, so the sums stay well conditioned when the mean is not small): Σy, Σyyᵀ,
    Σ‖y‖²y and Σ‖y‖⁴. The centred fourth moment sklearn's shrinkage intensity needs expands in them,
    with m = Σy/W:  Σ‖y − m‖⁴ = Σ‖y‖⁴ − 4 mᵀΣ‖y‖²y + 4 mᵀ(Σyyᵀ)m + 2‖m‖² tr Σyyᵀ − 3W‖m‖⁴,
    so an hour costs O(N²) instead of the O(W N²) refit and gives ``LedoitWolfForecaster.forecast``'s
    Σ on the same window to rounding (~1e-13; the sums are recomputed from the window every
    ``REANCHOR`` updates so that rounding cannot accumulate). The fast backtest uses it.
    """

    REANCHOR = 1000

    def __init__(self, owner: LedoitWolfForecaster, assets: Sequence[str], returns: np.ndarray) -> None:
        self.owner = owner
        self.assets = tuple(assets)
        r = _check_returns(self.assets, returns, owner.name, 2)
        if owner.cfg.window_hours:
            r = r[-owner.cfg.window_hours :]
        self.window = np.array(r, dtype=float, copy=True)  # a ring buffer: row ``head`` is the oldest
        self.head = 0
        self._anchor()

    def _anchor(self) -> None:
        y = self.window
        self.shift = y.mean(axis=0) if self.owner.cfg.demean else np.zeros(y.shape[1])
        y = y - self.shift
        sq = np.einsum("ti,ti->t", y, y)
        self.s1 = y.sum(axis=0)
        self.s2 = y.T @ y
        self.s3 = sq @ y
        self.s4 = float(sq @ sq)
        self.updates = 0

    def update(self, new_return: np.ndarray) -> Forecast:
        r = np.asarray(new_return, dtype=float)
        if r.shape != (len(self.assets),) or not np.isfinite(r).all():
            bad = [a for a, ok in zip(self.assets, np.isfinite(r)) if not ok] if r.shape == (len(self.assets),) else []
            raise ForecastError(f"{self.owner.name}: new return has shape {r.shape} or NaN/inf for {bad}")
        yo = self.window[self.head] - self.shift
        self.window[self.head] = r
        self.head = (self.head + 1) % self.window.shape[0]
        self.updates += 1
        if self.updates >= self.REANCHOR:
            self._anchor()
        else:
            yn = r - self.shift
            qn, qo = float(yn @ yn), float(yo @ yo)
            self.s1 += yn - yo
            self.s2 += np.outer(yn, yn) - np.outer(yo, yo)
            self.s3 += qn * yn - qo * yo
            self.s4 += qn * qn - qo * qo
        return self.forecast()

    def forecast(self) -> Forecast:
        t = self.window.shape[0]
        m = self.s1 / t
        if self.owner.cfg.demean:
            mm = float(m @ m)
            fourth = self.s4 - 4.0 * float(m @ self.s3) + 4.0 * float(m @ self.s2 @ m)
            fourth += 2.0 * mm * float(np.trace(self.s2)) - 3.0 * t * mm * mm
            loc = self.shift + m
        else:
            fourth = self.s4
            loc = np.zeros(len(self.assets))
        cov, shrinkage = ledoit_wolf_from_moments(t, m, self.s2, fourth, self.owner.cfg.demean)
        return Forecast.from_cov(self.assets, cov, self.owner.name, mu=loc, diagnostics={
            "observations": t, "shrinkage": shrinkage, "incremental": True})  # fmt: skip


# -- GARCH(1,1) margins --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GarchParams:
    """Zero-mean GARCH(1,1) per asset, in units of the *raw* returns (already rescaled back)."""

    omega: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    backcast: np.ndarray
    """Initial variance h_0 of the filter (the fit window's mean square)."""


def fit_garch(returns: np.ndarray) -> GarchParams:
    """Fit a zero-mean Gaussian GARCH(1,1) to each column with ``arch``.

    Each column is divided by its RMS before fitting (arch's optimiser is tuned for values of order
    1–1000; hourly returns are ~1e-3) and ω is scaled back afterwards.
    """
    from arch import arch_model

    t, n = returns.shape
    omega, alpha, beta = np.empty(n), np.empty(n), np.empty(n)
    rms = np.sqrt(np.mean(returns**2, axis=0))
    for i in range(n):
        scale = rms[i] if rms[i] > 0 else 1.0
        y = returns[:, i] / scale
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = arch_model(y, mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False).fit(
                disp="off", show_warning=False
            )
        p = res.params
        omega[i] = float(p["omega"]) * scale * scale
        alpha[i] = float(p["alpha[1]"])
        beta[i] = float(p["beta[1]"])
    return GarchParams(omega, alpha, beta, rms**2)


def garch_filter(returns: np.ndarray, g: GarchParams) -> np.ndarray:
    """Conditional variances h_0..h_T (T+1 rows): h_t is the forecast for row t made after row t−1.

    h_t = ω + α ε²_{t−1} + β h_{t−1} is a first-order linear filter of ε², run for all assets at once.
    """
    e2 = returns**2
    x = g.omega[None, :] + g.alpha[None, :] * e2
    h = np.empty((returns.shape[0] + 1, returns.shape[1]))
    h[0] = g.backcast
    for i in range(returns.shape[1]):
        h[1:, i], _ = signal.lfilter([1.0], [1.0, -g.beta[i]], x[:, i], zi=[g.beta[i] * g.backcast[i]])
    return np.maximum(h, 1e-300)


# -- DCC correlation dynamics ----------------------------------------------------------------------------


def dcc_q_path(z: np.ndarray, a: float, b: float, qbar: np.ndarray) -> np.ndarray:
    """Q_0..Q_T (T+1 × N × N) of the DCC recursion started at Q_0 = Q̄; Q_t drives z_t, Q_T the forecast."""
    t, n = z.shape
    s = (z[:, :, None] * z[:, None, :]).reshape(t, n * n)
    x = (1.0 - a - b) * qbar.reshape(1, n * n) + a * s
    q = np.empty((t + 1, n * n))
    q[0] = qbar.reshape(-1)
    q[1:], _ = signal.lfilter([1.0], [1.0, -b], x, axis=0, zi=(b * qbar.reshape(1, n * n)))
    return q.reshape(t + 1, n, n)


def dcc_q_tail(z: np.ndarray, a: float, b: float, qbar: np.ndarray, keep: int) -> np.ndarray:
    """The last ``keep`` + 1 matrices of ``dcc_q_path(z, a, b, qbar)`` (Q_{T−keep}..Q_T) without the rest.

    The recursion is linear, so Q_{T−keep} = b^m Q̄ + Σ_{k<m} b^{m−1−k} ((1−a−b) Q̄ + a z_k z_kᵀ) with
    m = T − keep: one weighted Gram matrix instead of m outer products (a cold forecast of 50 assets
    from a 720-hour window: ~1 ms instead of ~70). The last ``keep`` steps are then rolled forward.
    """
    t, n = z.shape
    keep = min(keep, t)
    m = t - keep
    w = b ** np.arange(m - 1, -1, -1.0)  # b^{m−1−k}, k = 0..m−1 (underflows harmlessly to 0)
    q = (b**m + (1.0 - a - b) * float(np.sum(w))) * qbar + a * (z[:m].T * w) @ z[:m]
    out = np.empty((keep + 1, n, n))
    out[0] = q
    for i, zt in enumerate(z[m:], start=1):
        q = (1.0 - a - b) * qbar + a * np.outer(zt, zt) + b * q
        out[i] = q
    return out


def q_to_r(q: np.ndarray) -> np.ndarray:
    """R = diag(Q)^−½ Q diag(Q)^−½ for a stack of matrices (… × N × N)."""
    d = 1.0 / np.sqrt(np.diagonal(q, axis1=-2, axis2=-1))
    return q * d[..., :, None] * d[..., None, :]


def dcc_neg_loglik(z: np.ndarray, a: float, b: float, qbar: np.ndarray) -> float:
    """Negative correlation log-likelihood ½ Σ_t (log|R_t| + z_tᵀR_t⁻¹z_t − z_tᵀz_t); +inf outside the domain."""
    if a < 0 or b < 0 or a + b >= 1:
        return math.inf
    r = q_to_r(dcc_q_path(z, a, b, qbar)[:-1])
    sign, logdet = np.linalg.slogdet(r)
    if np.any(sign <= 0):
        return math.inf
    quad = np.einsum("ti,ti->t", z, np.linalg.solve(r, z[:, :, None])[:, :, 0])
    return float(0.5 * np.sum(logdet + quad - np.einsum("ti,ti->t", z, z)))


@dataclass(frozen=True)
class DccParams:
    garch: GarchParams
    a: float
    b: float
    qbar: np.ndarray
    neg_loglik: float
    observations: int
    seasonal_scale: np.ndarray | None = None


def fit_dcc_correlation(z: np.ndarray) -> tuple[float, float, np.ndarray, float]:
    """(a, b, Q̄, −loglik) by maximum likelihood with correlation targeting.

    Parameterised as persistence p = a + b and share u = a / p, both in a box, so L-BFGS-B can
    enforce a, b ≥ 0 and a + b < 1 with simple bounds. Started from the best of a few classic
    values so that a flat likelihood (near-constant correlation) does not strand it at a corner.
    """
    qbar = z.T @ z / z.shape[0]

    def f(x: np.ndarray) -> float:
        p, u = x
        return dcc_neg_loglik(z, p * u, p * (1 - u), qbar)

    starts = [(0.97, 0.03), (0.95, 0.05), (0.99, 0.01), (0.9, 0.1), (0.5, 0.1)]
    x0 = min(starts, key=lambda s: f(np.array(s)))
    res = optimize.minimize(
        f, np.array(x0), method="L-BFGS-B", bounds=[(1e-4, 0.9995), (1e-4, 0.9999)], options={"maxiter": 200}
    )
    p, u = res.x
    return float(p * u), float(p * (1 - u)), qbar, float(res.fun)


def fit_dcc(returns: np.ndarray) -> DccParams:
    g = fit_garch(returns)
    h = garch_filter(returns, g)
    z = returns / np.sqrt(h[:-1])
    a, b, qbar, nll = fit_dcc_correlation(z)
    return DccParams(g, a, b, qbar, nll, returns.shape[0])


def dcc_filter_state(returns: np.ndarray, p: DccParams) -> tuple[np.ndarray, np.ndarray]:
    """(h_{T+1}, Q_{T+1}): the GARCH variances and the DCC Q for the row after ``returns``, filtered over
    them from the fit's starting values (h_0 = the backcast, Q_0 = Q̄) with fixed parameters."""
    h = garch_filter(returns, p.garch)
    z = returns / np.sqrt(h[:-1])
    return h[-1].copy(), dcc_q_tail(z, p.a, p.b, p.qbar, 0)[0]


def dcc_step(p: DccParams, h: np.ndarray, q: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of both recursions: the state for row t+1 from the state for row t and its return e_t.

    z_t = e_t/√h_t,  Q_{t+1} = (1 − a − b) Q̄ + a z_t z_tᵀ + b Q_t,  h_{t+1} = ω + α e_t² + β h_t.
    Stepping ``dcc_filter_state``'s state through more rows gives ``dcc_filter_state`` of the longer
    array (to rounding): the filters are the same recursion, one vectorised over the rows.
    """
    z = e / np.sqrt(h)
    q = (1.0 - p.a - p.b) * p.qbar + p.a * np.outer(z, z) + p.b * q
    g = p.garch
    h = np.maximum(g.omega + g.alpha * e * e + g.beta * h, 1e-300)
    return h, q


def dcc_state_cov(h: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ = D R D and R = diag(Q)^−½ Q diag(Q)^−½ from a state (D = diag(√h))."""
    r = q_to_r(q)
    sd = np.sqrt(h)
    return r * np.outer(sd, sd), r


def dcc_forecast_cov(returns: np.ndarray, p: DccParams) -> tuple[np.ndarray, np.ndarray]:
    """One-step Σ_{T+1} and R_{T+1} after filtering ``returns`` with fitted parameters (the batch
    recursion with the parameters held fixed: ``DccForecaster.predict`` and ``DccStream`` give this)."""
    return dcc_state_cov(*dcc_filter_state(returns, p))


class DccConfig(ComponentConfig):
    refit_every_hours: int = Field(
        default=168, ge=1, description="refit the parameters every N forecasts (or stream updates)"
    )
    window_hours: int | None = Field(default=None, ge=50, description="use only the last N returns")
    min_observations: int = Field(default=200, ge=50)
    deseasonalise: bool = Field(default=False, description="divide returns by an hour-of-day scale (fit window)")


class DccForecaster:
    name = "dcc"

    def __init__(self, cfg: DccConfig | None = None, ctx: ComponentContext | None = None) -> None:
        self.cfg = cfg or DccConfig()
        self.ctx = ctx
        self.params: DccParams | None = None
        self._assets: tuple[str, ...] = ()
        self._since_fit = 0
        self._season = Deseasonaliser()
        self._cache: tuple[DccParams, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _hour(self, last_hour: int | None) -> int:
        if last_hour is not None:
            return int(last_hour) % 24
        if self.ctx is None:
            raise ForecastError("dcc: deseasonalise needs the close hour of the last return (no clock)")
        # the cycle's bars close on whole hours up to now: the last row closes at the hour floor of now
        return self.ctx.clock.now().astimezone(UTC).hour

    def _prepare(self, assets: Sequence[str], returns: np.ndarray) -> np.ndarray:
        r = _check_returns(assets, returns, self.name, self.cfg.min_observations)
        return r[-self.cfg.window_hours :] if self.cfg.window_hours else r

    def _fit_params(self, r: np.ndarray, hour: int | None, season: Deseasonaliser) -> DccParams:
        """Parameters fitted on the (prepared) window ``r``; with ``deseasonalise`` the hour-of-day scale
        is fitted into ``season`` first (``hour``: the close hour of the window's last row)."""
        scale = None
        if self.cfg.deseasonalise:
            assert hour is not None
            season.fit(r, hour)
            r = season.transform(r, hour)
            scale = season.scale
        try:
            p = fit_dcc(r)
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise ForecastError(f"dcc: fit failed: {exc}") from exc
        return DccParams(p.garch, p.a, p.b, p.qbar, p.neg_loglik, p.observations, scale)

    def _diagnostics(self, p: DccParams, since_fit: int, deseasonalised: bool) -> dict[str, Any]:
        return {
            "a": p.a,
            "b": p.b,
            "neg_loglik": p.neg_loglik,
            "fit_observations": p.observations,
            "hours_since_fit": since_fit,
            "garch_persistence": (p.garch.alpha + p.garch.beta).tolist(),
            "deseasonalised": deseasonalised,
        }

    def fit(self, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None) -> DccParams:
        r = self._prepare(assets, returns)
        hour = self._hour(last_hour) if self.cfg.deseasonalise else None
        self.params = self._fit_params(r, hour, self._season)
        self._assets = tuple(assets)
        self._since_fit = 0
        return self.params

    def predict(self, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None) -> Forecast:
        if self.params is None or tuple(assets) != self._assets:
            raise ForecastError("dcc: predict before fit (or the assets changed)")
        r = self._prepare(assets, returns)
        p = self.params
        nxt = None
        if p.seasonal_scale is not None:
            hour = self._hour(last_hour)
            r = self._season.transform(r, hour)
            nxt = self._season.next_scale(hour)
        cov, corr = self._filtered(r, p)
        if nxt is not None:
            cov = cov * np.outer(nxt, nxt)
        diag = self._diagnostics(p, self._since_fit, nxt is not None)
        self._since_fit += 1  # counted here, not in forecast(): the walk-forward calls fit/predict directly
        return Forecast.from_cov(assets, cov, self.name, diagnostics=diag)

    def _filtered(self, r: np.ndarray, p: DccParams) -> tuple[np.ndarray, np.ndarray]:
        """Σ_{T+1}, R_{T+1}; continues the previous filter when ``r`` only appends rows to the last window.

        The walk-forward runner calls predict with a window that grows by one row; re-filtering the whole
        history each time would make an evaluation quadratic in its length. (The hourly cycle's window
        rolls — its first row drops — so it refilters: cheap, ``dcc_q_tail``.)
        The cache is used only when the parameters are the same object and the old rows are equal.
        """
        c = self._cache
        if c is not None and c[0] is p and r.shape[0] >= c[1].shape[0] and np.array_equal(r[: c[1].shape[0]], c[1]):
            _, old, h, q = c
            for e in r[old.shape[0] :]:
                h, q = dcc_step(p, h, q, e)
        else:
            h, q = dcc_filter_state(r, p)
        self._cache = (p, r.copy(), h, q)
        return dcc_state_cov(h, q)

    def forecast(self, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None) -> Forecast:
        """Refit when there are no parameters, the assets changed or ``refit_every_hours`` forecasts passed."""
        if self.params is None or tuple(assets) != self._assets or self._since_fit >= self.cfg.refit_every_hours:
            t0 = time.perf_counter()
            self.fit(assets, returns, last_hour=last_hour)
            log.info("dcc: refitted in %.2f s (a=%.4f, b=%.4f)", time.perf_counter() - t0, self.params.a, self.params.b)  # type: ignore[union-attr]
        return self.predict(assets, returns, last_hour=last_hour)

    def stream(self, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None) -> DccStream | None:
        """A forecast kept current one return at a time on a sliding window of this length (its last
        ``window_hours``): the parameters are fitted now and refitted every ``refit_every_hours`` updates,
        as ``forecast`` refits them; None when the window is shorter than ``min_observations`` (``forecast``
        then says why). With ``deseasonalise`` the close hour of the last row is ``last_hour`` (then one
        hour later per update) or, without it, the clock's at each update, as ``forecast`` reads it."""
        if np.ndim(returns) == 2 and np.shape(returns)[0] < self.cfg.min_observations:
            return None
        return DccStream(self, assets, returns, last_hour=last_hour)


class DccStream:
    """The ``dcc`` forecast of a sliding window, kept by its recursions instead of refiltering the window.

    State: the fitted parameters, each asset's next GARCH variance h, DCC's next Q (Q̄ is a parameter)
    and the window's rows (a ring buffer, for the refits). An update with the parameters unchanged is
    one ``dcc_step``, O(N²) (the batch ``predict`` refilters the whole rolled window, O(W N²)); every
    ``refit_every_hours`` updates the parameters are refitted on the current window with the batch's
    ``fit`` and the state is rebuilt over the window with them (``dcc_filter_state``), exactly as
    ``DccForecaster.forecast`` does on the same schedule (fit at the first forecast, refit at the
    ``refit_every_hours``-th after it).

    Exactness: at a refit the forecast *is* the batch one (same fit, same filter). Between refits it
    is the batch recursion with the parameters fixed run over every row since the refit's window began
    (``dcc_forecast_cov(rows, params)``, to ~1e-12), i.e. the filter is continued rather than restarted
    at the rolled window's first row from h_0 = backcast and Q_0 = Q̄ as the batch ``predict`` restarts
    it. The two differ by the start's weight in the window's last state, of order max(b, β_i)^W
    (W = 720, b = 0.95: 1e-16; b = 0.98: 5e-7; b = 0.99: 7e-4, relative), and the gap closes at
    every refit.
    """

    def __init__(
        self, owner: DccForecaster, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None
    ) -> None:
        self.owner = owner
        self.assets = tuple(assets)
        r = owner._prepare(self.assets, returns)
        self.window = np.array(r, dtype=float, copy=True)  # a ring buffer: row ``head`` is the oldest
        self.head = 0
        self._hour_given = last_hour is not None
        self.hour = owner._hour(last_hour) if owner.cfg.deseasonalise else None
        self.season = Deseasonaliser()
        self._refit()

    def _refit(self) -> None:
        r = np.roll(self.window, -self.head, axis=0)
        self.params = self.owner._fit_params(r, self.hour, self.season)
        if self.params.seasonal_scale is not None:
            r = self.season.transform(r, self.hour)  # type: ignore[arg-type]
        self.h, self.q = dcc_filter_state(r, self.params)
        self.since_fit = 0

    def update(self, new_return: np.ndarray) -> Forecast:
        e = np.asarray(new_return, dtype=float)
        if e.shape != (len(self.assets),) or not np.isfinite(e).all():
            bad = [a for a, ok in zip(self.assets, np.isfinite(e)) if not ok] if e.shape == (len(self.assets),) else []
            raise ForecastError(f"{self.owner.name}: new return has shape {e.shape} or NaN/inf for {bad}")
        self.window[self.head] = e
        self.head = (self.head + 1) % self.window.shape[0]
        if self.hour is not None:
            self.hour = (self.hour + 1) % 24 if self._hour_given else self.owner._hour(None)
        self.since_fit += 1
        if self.since_fit >= self.owner.cfg.refit_every_hours:
            self._refit()
        else:
            if self.params.seasonal_scale is not None:
                e = e / self.params.seasonal_scale[self.hour]
            self.h, self.q = dcc_step(self.params, self.h, self.q, e)
        return self.forecast()

    def forecast(self) -> Forecast:
        p = self.params
        cov, _ = dcc_state_cov(self.h, self.q)
        seasonal = p.seasonal_scale is not None
        if seasonal:
            nxt = p.seasonal_scale[(self.hour + 1) % 24]  # type: ignore[index, operator]
            cov = cov * np.outer(nxt, nxt)
        diag = self.owner._diagnostics(p, self.since_fit, seasonal)
        diag["incremental"] = True
        return Forecast.from_cov(self.assets, cov, self.owner.name, diagnostics=diag)


@hookimpl
def rwabot_register_forecasters(register) -> None:
    def make_lw(cfg: LedoitWolfConfig, ctx: ComponentContext) -> LedoitWolfForecaster:
        return LedoitWolfForecaster(cfg)

    def make_dcc(cfg: DccConfig, ctx: ComponentContext) -> DccForecaster:
        return DccForecaster(cfg, ctx)

    make_dcc.gives_mu = False  # type: ignore[attr-defined]  # Σ only: λ > 0 needs a [returns] model
    register("ledoit_wolf", make_lw, LedoitWolfConfig)
    register("dcc", make_dcc, DccConfig)
