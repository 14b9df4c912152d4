"""Hour-of-day deseasonalisation of hourly returns, for the volatility models.

Why: hourly returns of exchange-traded assets have an intraday volatility cycle (the open and the
close are loud, the night is quiet). A GARCH or EWMA model fed raw hourly returns mistakes that
deterministic cycle for volatility clustering: after a loud opening hour it forecasts a loud next
hour. Dividing each return by a per-(asset, hour) scale ``s[h, i]`` removes the cycle; the model is
fitted on the scaled returns and its forecast is multiplied back by the scale of the hour being
forecast: Σ = diag(s[h+1]) Σ̃ diag(s[h+1]).

The scale is estimated on the *training window only* (the rows a forecaster is given), so it can
never look ahead. It is the root mean square of the returns of each hour of day relative to the
overall root mean square, shrunk toward 1 with ``prior`` pseudo-observations per hour so that a
window with few days does not produce wild scales, and normalised so that the mean of s² over the
24 hours is 1 (the overall level stays the model's job).

The hour of a return row is the UTC hour of its bar's *close* time. A forecaster only receives an
array of returns, so it has to be told the hour of the *last* row (``last_hour``); the evaluation
runner passes it from the price timestamps and the daemon can derive it from its clock.
"""

from __future__ import annotations

import numpy as np

HOURS_PER_DAY = 24


def hours_of_rows(n_rows: int, last_hour: int) -> np.ndarray:
    """Close hour (0–23) of each of ``n_rows`` consecutive hourly rows whose last row closes at ``last_hour``."""
    return (last_hour - np.arange(n_rows - 1, -1, -1)) % HOURS_PER_DAY


def hour_of_day_scale(returns: np.ndarray, hours: np.ndarray, prior: float = 20.0) -> np.ndarray:
    """Per-hour, per-asset volatility scale s (24 × N), mean of s² over hours = 1.

    ``prior`` pseudo-observations at the overall level are added to each hour's sum of squares
    (a conjugate-style shrinkage): with a few weeks of data an hour's scale is mostly data, with a
    few days it stays close to 1.
    """
    r = np.asarray(returns, dtype=float)
    hours = np.asarray(hours, dtype=int)
    overall = np.mean(r * r, axis=0)
    overall = np.where(overall > 0, overall, 1.0)
    sumsq = np.zeros((HOURS_PER_DAY, r.shape[1]))
    np.add.at(sumsq, hours, r * r)
    counts = np.bincount(hours, minlength=HOURS_PER_DAY).astype(float)[:, None]
    var_h = (sumsq + prior * overall) / (counts + prior)
    ratio = var_h / overall
    ratio /= ratio.mean(axis=0, keepdims=True)
    return np.sqrt(ratio)


class Deseasonaliser:
    """Fits the hour-of-day scale on a training window and applies it to later windows."""

    def __init__(self, prior: float = 20.0) -> None:
        self.prior = prior
        self.scale: np.ndarray | None = None

    def fit(self, returns: np.ndarray, last_hour: int) -> None:
        self.scale = hour_of_day_scale(returns, hours_of_rows(returns.shape[0], last_hour), self.prior)

    def transform(self, returns: np.ndarray, last_hour: int) -> np.ndarray:
        """Returns divided by the scale of their hour (the fit must have run)."""
        assert self.scale is not None, "fit before transform"
        return returns / self.scale[hours_of_rows(returns.shape[0], last_hour)]

    def next_scale(self, last_hour: int) -> np.ndarray:
        """Scale of the hour after ``last_hour``: the one a one-step forecast is for."""
        assert self.scale is not None, "fit before next_scale"
        return self.scale[(last_hour + 1) % HOURS_PER_DAY]
