from __future__ import annotations

import numpy as np
import pytest

from bot.errors import ForecastError
from bot.plugins import Registry, make_plugin_manager
from plugins.forecasters.classic import (
    DccConfig,
    DccForecaster,
    LedoitWolfConfig,
    LedoitWolfForecaster,
    dcc_neg_loglik,
    dcc_q_tail,
    fit_dcc,
    fit_dcc_correlation,
)
from plugins.forecasters.seasonal import hour_of_day_scale, hours_of_rows

RBAR = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, -0.3], [0.2, -0.3, 1.0]])
OMEGA = np.array([1e-7, 2e-7, 5e-8])
ALPHA = np.array([0.05, 0.08, 0.03])
BETA = np.array([0.90, 0.88, 0.95])
ASSETS = ("A", "B", "C")


def simulate_dcc(t: int, a: float, b: float, seed: int = 0, rbar: np.ndarray = RBAR) -> np.ndarray:
    """A DCC-GARCH(1,1) path written as the textbook loop (independent of the vectorised filter)."""
    rng = np.random.default_rng(seed)
    n = rbar.shape[0]
    h = OMEGA[:n] / (1 - ALPHA[:n] - BETA[:n])
    q = rbar.copy()
    out = np.empty((t, n))
    for k in range(t):
        d = 1 / np.sqrt(np.diag(q))
        z = np.linalg.cholesky(q * np.outer(d, d)) @ rng.standard_normal(n)
        out[k] = np.sqrt(h) * z
        h = OMEGA[:n] + ALPHA[:n] * out[k] ** 2 + BETA[:n] * h
        q = (1 - a - b) * rbar + a * np.outer(z, z) + b * q
    return out


def test_ledoit_wolf_matches_closed_form() -> None:
    """Ledoit & Wolf (2004), Lemma 3.2-3.4, written out: shrink S toward μI with weight min(b², d²)/d²."""
    rng = np.random.default_rng(3)
    t, n = 60, 10
    x = rng.standard_normal((t, n)) @ rng.standard_normal((n, n)) * 0.01
    f = LedoitWolfForecaster(LedoitWolfConfig()).forecast([f"a{i}" for i in range(n)], x)
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / t
    mu = np.trace(s) / n
    d2 = np.sum((s - mu * np.eye(n)) ** 2) / n
    b2 = sum(np.sum((np.outer(r, r) - s) ** 2) for r in xc) / n / t**2
    shrink = min(b2, d2) / d2
    expected = shrink * mu * np.eye(n) + (1 - shrink) * s
    assert f.diagnostics["shrinkage"] == pytest.approx(shrink, rel=1e-10)
    assert f.cov == pytest.approx(expected, rel=1e-10)
    f.validate()
    assert 0 < shrink < 1


def test_dcc_loglik_matches_loop() -> None:
    r = simulate_dcc(300, 0.05, 0.9, seed=1)
    z = r / r.std(axis=0)
    qbar = z.T @ z / len(z)
    a, b = 0.04, 0.93
    q = qbar.copy()
    total = 0.0
    for zt in z:
        d = 1 / np.sqrt(np.diag(q))
        rt = q * np.outer(d, d)
        total += 0.5 * (np.log(np.linalg.det(rt)) + zt @ np.linalg.solve(rt, zt) - zt @ zt)
        q = (1 - a - b) * qbar + a * np.outer(zt, zt) + b * q
    assert dcc_neg_loglik(z, a, b, qbar) == pytest.approx(total, rel=1e-10)
    assert dcc_neg_loglik(z, 0.5, 0.6, qbar) == np.inf


@pytest.mark.parametrize("keep", [0, 1, 48, 300, 500])
def test_dcc_q_tail_equals_the_recursion_written_as_a_loop(keep: int) -> None:
    """The closed-form start (a weighted Gram matrix) must give the same Q's as stepping from Q̄."""
    r = simulate_dcc(300, 0.05, 0.9, seed=4)
    z = r / r.std(axis=0)
    qbar = z.T @ z / len(z)
    a, b = 0.04, 0.93
    path = [qbar.copy()]
    for zt in z:
        path.append((1 - a - b) * qbar + a * np.outer(zt, zt) + b * path[-1])
    tail = dcc_q_tail(z, a, b, qbar, keep)
    expected = np.array(path[-(min(keep, len(z)) + 1) :])
    assert tail.shape == expected.shape
    assert tail == pytest.approx(expected, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("a,b,seed", [(0.05, 0.90, 11), (0.02, 0.97, 12)])
def test_dcc_recovers_known_parameters(a: float, b: float, seed: int) -> None:
    r = simulate_dcc(4000, a, b, seed=seed)
    p = fit_dcc(r)
    assert abs(p.a - a) < 0.015, (p.a, a)
    assert abs(p.b - b) < 0.03, (p.b, b)
    # GARCH margins come back too (looser: 4000 points pin α+β well, each part less so)
    assert np.abs(p.garch.alpha + p.garch.beta - (ALPHA + BETA)).max() < 0.05
    # the optimiser found at least as good a point as the truth on the same residuals
    from plugins.forecasters.classic import garch_filter

    z = r / np.sqrt(garch_filter(r, p.garch)[:-1])
    assert p.neg_loglik <= dcc_neg_loglik(z, a, b, p.qbar) + 1e-6


def test_dcc_on_constant_correlation_finds_no_dynamics() -> None:
    rng = np.random.default_rng(5)
    z = rng.standard_normal((3000, 3)) @ np.linalg.cholesky(RBAR).T
    a, b, _, _ = fit_dcc_correlation(z)
    assert a < 0.01


def test_dcc_forecast_is_valid_and_follows_the_recursion() -> None:
    r = simulate_dcc(1500, 0.05, 0.9, seed=2)
    fc = DccForecaster(DccConfig(refit_every_hours=10))
    f = fc.forecast(ASSETS, r)
    f.validate()
    assert f.model == "dcc"
    assert np.diag(f.corr) == pytest.approx(1.0)
    assert np.linalg.eigvalsh(f.corr).min() > 0
    p = fc.params
    assert p is not None
    # σ_{T+1}² = ω + α ε_T² + β h_T by hand from the fitted parameters
    h = p.garch.backcast.copy()
    for e in r:
        h = p.garch.omega + p.garch.alpha * e**2 + p.garch.beta * h
    assert f.sigma**2 == pytest.approx(h, rel=1e-8)
    # refit schedule: the next 9 forecasts reuse the parameters, the 11th refits
    for _ in range(9):
        fc.forecast(ASSETS, r)
        assert fc.params is p
    fc.forecast(ASSETS, r)
    assert fc.params is not p


def test_dcc_hours_since_fit_counts_predictions_on_both_paths() -> None:
    """The walk-forward calls fit/predict directly (not forecast): the counter must move there too."""
    r = simulate_dcc(800, 0.05, 0.9, seed=8)
    fc = DccForecaster(DccConfig(refit_every_hours=3))
    fc.fit(ASSETS, r[:700])
    assert [fc.predict(ASSETS, r[: 700 + k]).diagnostics["hours_since_fit"] for k in range(4)] == [0, 1, 2, 3]
    fc2 = DccForecaster(DccConfig(refit_every_hours=3))
    seen = [fc2.forecast(ASSETS, r[: 700 + k]).diagnostics["hours_since_fit"] for k in range(7)]
    assert seen == [0, 1, 2, 0, 1, 2, 0]  # the refit schedule of forecast() is unchanged


def test_dcc_incremental_filter_equals_a_full_refilter() -> None:
    r = simulate_dcc(1200, 0.05, 0.9, seed=6)
    a = DccForecaster(DccConfig(refit_every_hours=1000))
    a.fit(ASSETS, r[:1000])
    for t in range(1000, 1011):
        fa = a.predict(ASSETS, r[:t])  # continues the cached filter row by row
    b = DccForecaster(DccConfig())
    b.params = a.params
    b._assets = ASSETS
    fb = b.predict(ASSETS, r[:1010])  # filters from scratch
    assert fa.cov == pytest.approx(fb.cov, rel=1e-9)
    changed = r[:1010].copy()
    changed[500] *= 3  # the cache must notice an edited past row
    assert not np.allclose(a.predict(ASSETS, changed).cov, b.predict(ASSETS, changed[:1009]).cov)
    assert a.predict(ASSETS, changed).cov == pytest.approx(b.predict(ASSETS, changed).cov, rel=1e-9)


def test_dcc_rejects_short_or_bad_input() -> None:
    fc = DccForecaster(DccConfig(min_observations=100))
    with pytest.raises(ForecastError, match="at least 100"):
        fc.forecast(ASSETS, np.zeros((50, 3)))
    r = simulate_dcc(300, 0.05, 0.9)
    r[10, 1] = np.nan
    with pytest.raises(ForecastError, match="NaN"):
        fc.forecast(ASSETS, r)
    with pytest.raises(ForecastError, match="before fit"):
        DccForecaster().predict(ASSETS, simulate_dcc(300, 0.05, 0.9))


def test_hour_of_day_scale_recovers_a_known_profile() -> None:
    rng = np.random.default_rng(9)
    t = 24 * 400
    hours = hours_of_rows(t, last_hour=23)
    assert hours[-1] == 23 and hours[-24] == 0
    profile = 1 + 0.5 * np.cos(2 * np.pi * np.arange(24) / 24)
    profile /= np.sqrt(np.mean(profile**2))
    r = rng.standard_normal((t, 2)) * 0.01 * profile[hours][:, None]
    s = hour_of_day_scale(r, hours, prior=1.0)
    assert np.mean(s**2, axis=0) == pytest.approx(1.0)
    assert s[:, 0] == pytest.approx(profile, rel=0.12)
    # the prior shrinks toward a flat profile: with a huge prior the scale is ~1 everywhere
    assert hour_of_day_scale(r, hours, prior=1e9) == pytest.approx(1.0, abs=1e-4)


def test_deseasonalised_dcc_scales_the_forecast_hour() -> None:
    t = 24 * 120
    loud = 14
    profile = np.where(np.arange(24) == loud, 3.0, 1.0)
    base = simulate_dcc(t, 0.03, 0.95, seed=4)
    r = base * profile[hours_of_rows(t, last_hour=loud - 1)][:, None]
    fc = DccForecaster(DccConfig(deseasonalise=True))
    before_loud = fc.forecast(ASSETS, r, last_hour=loud - 1)  # the next hour is the loud one
    plain = DccForecaster(DccConfig()).forecast(ASSETS, r)
    assert before_loud.diagnostics["deseasonalised"]
    # the hour-of-day model expects the loud hour; the plain model cannot know it
    assert np.all(before_loud.sigma > 1.8 * plain.sigma)
    with pytest.raises(ForecastError, match="close hour"):
        DccForecaster(DccConfig(deseasonalise=True)).forecast(ASSETS, r)


def test_registered_by_entry_point() -> None:
    reg = Registry(make_plugin_manager())
    names = {(r.family, r.name) for r in reg}
    assert ("forecaster", "ledoit_wolf") in names
    assert ("forecaster", "dcc") in names
