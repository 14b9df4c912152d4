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


def test_ewma_deseasonalised_scales_the_forecast_hour() -> None:
    from plugins.forecasters.seasonal import hour_of_day_scale, hours_of_rows

    t, loud = 24 * 60, 14
    profile = np.where(np.arange(24) == loud, 3.0, 1.0)
    r = returns(t, seed=4) * profile[hours_of_rows(t, last_hour=loud - 1)][:, None]
    cfg = EwmaConfig(half_life_hours=48.0, deseasonalise=True)
    before_loud = EwmaForecaster(cfg).forecast(ASSETS, r, last_hour=loud - 1)
    plain = EwmaForecaster(EwmaConfig(half_life_hours=48.0)).forecast(ASSETS, r)
    assert before_loud.diagnostics["deseasonalised"] and not plain.diagnostics["deseasonalised"]
    assert np.all(before_loud.sigma > 1.8 * plain.sigma)  # the next hour is the loud one
    # by hand: the scale of this window, the EWMA of the scaled returns, times the next hour's scale
    s = hour_of_day_scale(r, hours_of_rows(t, loud - 1))
    hand = EwmaForecaster(EwmaConfig(half_life_hours=48.0)).forecast(ASSETS, r / s[hours_of_rows(t, loud - 1)])
    assert before_loud.cov == pytest.approx(hand.cov * np.outer(s[loud], s[loud]), rel=1e-12)
    with pytest.raises(ForecastError, match="close hour"):
        EwmaForecaster(cfg).forecast(ASSETS, r)


def test_ewma_deseasonalised_has_no_look_ahead() -> None:
    """The hour-of-day scale comes from the window given: data after t cannot move a forecast at t."""
    from bot.evaluate import walk_forward

    r = returns(24 * 30, seed=5)
    cut = 600
    r2 = r.copy()
    r2[cut:] *= np.where(np.arange(len(r) - cut) % 24 == 7, 6.0, 0.5)[:, None]  # a new intraday cycle
    hours = np.arange(len(r) + 1) % 24

    def run(x: np.ndarray) -> np.ndarray:
        fc = EwmaForecaster(EwmaConfig(half_life_hours=24.0, deseasonalise=True))
        return walk_forward({"ewma": fc}, ASSETS, x, warmup=300, last_hours=hours)["ewma"].cov

    a, b = run(r), run(r2)
    assert np.array_equal(a[: cut + 1], b[: cut + 1], equal_nan=True)
    assert not np.allclose(a[cut + 2 :], b[cut + 2 :])
