"""Pure risk arithmetic on numpy arrays: returns, risk contributions, liquidity limits.

No I/O and no state here, so every function can be checked against a closed form.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from bot.errors import DataError


def log_returns(close: np.ndarray) -> np.ndarray:
    """Hourly log returns of a (T, N) price array, shape (T-1, N)."""
    close = np.asarray(close, dtype=float)
    if close.ndim != 2 or close.shape[0] < 2:
        raise DataError(f"need at least two bars to form returns, got shape {close.shape}")
    if not np.all(np.isfinite(close)) or np.any(close <= 0):
        raise DataError("prices must be finite and positive to form log returns")
    return np.diff(np.log(close), axis=0)


def portfolio_sigma(w: np.ndarray, cov: np.ndarray) -> float:
    """σ_p = sqrt(wᵀΣw), in the units of Σ (per hour for rwabot forecasts)."""
    w = np.asarray(w, dtype=float)
    return float(np.sqrt(max(float(w @ cov @ w), 0.0)))


def risk_contributions(w: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, float]:
    """Risk contributions RC_i = w_i (Σw)_i / σ_p and σ_p.

    They add up to σ_p (Euler); a zero portfolio has zero contributions.
    """
    w = np.asarray(w, dtype=float)
    sigma = portfolio_sigma(w, cov)
    if sigma == 0.0:
        return np.zeros_like(w), 0.0
    return w * (cov @ w) / sigma, sigma


def rc_dispersion(w: np.ndarray, cov: np.ndarray, mask: np.ndarray | None = None) -> float:
    """max_i |RC_i / mean(RC) − 1| over the assets in ``mask`` (default: those held)."""
    rc, _ = risk_contributions(w, cov)
    m = (np.asarray(w) > 0) if mask is None else np.asarray(mask, dtype=bool)
    if m.sum() == 0:
        return 0.0
    sel = rc[m]
    mean = sel.mean()
    if mean == 0:
        return float("inf")
    return float(np.max(np.abs(sel / mean - 1.0)))


def nearest_psd(cov: np.ndarray) -> np.ndarray:
    """The nearest symmetric PSD matrix in the Frobenius norm: eigenvalues below 0 set to 0.

    Only for callers that choose to repair (``rwabot optimize --repair-psd``); optimizers refuse a
    non-PSD Σ, because a forecaster that produces one has a bug worth seeing.
    """
    c = np.asarray(cov, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or not np.all(np.isfinite(c)):
        raise DataError(f"nearest_psd: need a finite square matrix, got shape {c.shape}")
    s = 0.5 * (c + c.T)
    lam, vec = np.linalg.eigh(s)
    out = (vec * np.clip(lam, 0.0, None)) @ vec.T
    return 0.5 * (out + out.T)


def liquidity_limits(
    traded_value: np.ndarray, participation: float, nav: float, horizon_hours: int | None = None
) -> np.ndarray:
    """L_i = participation × traded value of asset i over ``horizon_hours`` / NAV.

    ``traded_value`` is the (T, N) hourly quote-currency value over the look-back. With no horizon the
    sum over the look-back is used, so a 24 h look-back and a 10% participation allow holding what we
    could build by taking 10% of one day's volume. With a horizon, the look-back's mean hourly value ×
    the horizon is used: the same "10% of a day" cap estimated on a week, which keeps the cap from
    moving a couple of percent every hour with the intraday and weekly volume cycle (a moving cap
    moves every other target with it, and the policy trades on that noise).
    """
    if nav <= 0:
        raise DataError(f"portfolio NAV must be positive to size liquidity limits, got {nav}")
    tv_hourly = np.nan_to_num(np.asarray(traded_value, dtype=float), nan=0.0)
    tv = tv_hourly.sum(axis=0) if horizon_hours is None else tv_hourly.mean(axis=0) * horizon_hours
    return np.clip(participation * tv / nav, 0.0, None)


def annualise_sigma(sigma_hourly: float, hours_per_year: int = 24 * 365) -> float:
    return float(sigma_hourly * np.sqrt(hours_per_year))


def periods_per_year(bar: timedelta) -> float:
    """Bars of length ``bar`` in a 365-day year (8760 for hourly, 365 for daily bars): the factor that
    annualises a per-bar variance or mean log return, so a daily-bar run is not annualised as hours."""
    seconds = bar.total_seconds()
    if seconds <= 0:
        raise DataError(f"a bar interval must be positive, got {bar}")
    return 24 * 365 * 3600 / seconds
