from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bot.errors import ForecastError
from plugins.forecasters.basic import EwmaConfig, EwmaForecaster, SampleConfig, SampleForecaster

ASSETS = ("A", "B", "C")


def returns(t: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chol = np.array([[0.01, 0, 0], [0.004, 0.008, 0], [-0.002, 0.001, 0.005]])
    return rng.normal(size=(t, 3)) @ chol.T


def test_sample_matches_numpy() -> None:
    r = returns()
    f = SampleForecaster(SampleConfig()).forecast(ASSETS, r)
    assert f.cov == pytest.approx(np.cov(r, rowvar=False), rel=1e-12)
    f.validate()
    assert f.corr.diagonal() == pytest.approx(1.0)
    assert f.sigma == pytest.approx(np.sqrt(np.diag(f.cov)))


def test_sample_window() -> None:
    r = returns()
    f = SampleForecaster(SampleConfig(window_hours=50)).forecast(ASSETS, r)
    assert f.cov == pytest.approx(np.cov(r[-50:], rowvar=False), rel=1e-12)


def test_ewma_matches_pandas_reference() -> None:
    r = returns()
    h = 24.0
    f = EwmaForecaster(EwmaConfig(half_life_hours=h, demean=True)).forecast(ASSETS, r)
    ref = pd.DataFrame(r).ewm(halflife=h, adjust=True).cov(bias=True).iloc[-3:].to_numpy()
    assert f.cov == pytest.approx(ref, rel=1e-10)


def test_ewma_reacts_faster_than_sample_to_a_volatility_jump() -> None:
    r = returns(600)
    r[-48:] *= 4.0
    ew = EwmaForecaster(EwmaConfig(half_life_hours=12)).forecast(ASSETS, r)
    sa = SampleForecaster(SampleConfig()).forecast(ASSETS, r)
    true_var = np.diag(np.cov(r[-48:], rowvar=False))
    assert np.all(np.abs(np.diag(ew.cov) - true_var) < np.abs(np.diag(sa.cov) - true_var))


def test_bad_input_names_the_asset() -> None:
    r = returns()
    r[10, 1] = np.nan
    with pytest.raises(ForecastError, match=r"ewma: returns contain NaN or inf for \['B'\]"):
        EwmaForecaster(EwmaConfig()).forecast(ASSETS, r)
    with pytest.raises(ForecastError, match="at least 2"):
        SampleForecaster(SampleConfig()).forecast(ASSETS, r[:1])


def test_validate_catches_zero_volatility_and_non_psd() -> None:
    from bot.domain import Forecast

    r = returns()
    r[:, 2] = 0.0
    f = SampleForecaster(SampleConfig()).forecast(ASSETS, r)
    with pytest.raises(ForecastError, match=r"zero forecast volatility for assets \['C'\]"):
        f.validate()
    bad = Forecast.from_cov(("x", "y"), np.array([[1.0, 2.0], [2.0, 1.0]]), "t")
    with pytest.raises(ForecastError, match="not positive semi-definite"):
        bad.validate()
