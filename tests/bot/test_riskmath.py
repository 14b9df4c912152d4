from __future__ import annotations

import numpy as np
import pytest

from bot.errors import DataError
from bot.riskmath import liquidity_limits, log_returns, portfolio_sigma, rc_dispersion, risk_contributions


def test_two_asset_risk_contributions_by_hand() -> None:
    # σ1 = 0.1, σ2 = 0.2, ρ = 0.5, w = (0.6, 0.4):
    # Σw = (0.01·0.6 + 0.01·0.4, 0.01·0.6 + 0.04·0.4) = (0.010, 0.022)
    # σ_p² = 0.6·0.010 + 0.4·0.022 = 0.0148; RC = (0.006, 0.0088)/sqrt(0.0148)
    cov = np.array([[0.01, 0.01], [0.01, 0.04]])
    w = np.array([0.6, 0.4])
    rc, sp = risk_contributions(w, cov)
    assert sp == pytest.approx(np.sqrt(0.0148), rel=1e-14)
    assert rc == pytest.approx(np.array([0.006, 0.0088]) / np.sqrt(0.0148), rel=1e-14)
    assert rc.sum() == pytest.approx(sp, rel=1e-14)  # Euler
    assert rc_dispersion(w, cov) == pytest.approx(0.0088 / 0.0074 - 1, rel=1e-12)


def test_euler_decomposition_random() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T
    w = rng.dirichlet(np.ones(6))
    rc, sp = risk_contributions(w, cov)
    assert rc.sum() == pytest.approx(sp) and sp == pytest.approx(portfolio_sigma(w, cov))


def test_zero_portfolio() -> None:
    rc, sp = risk_contributions(np.zeros(3), np.eye(3))
    assert sp == 0 and not rc.any()


def test_log_returns_rejects_bad_prices() -> None:
    with pytest.raises(DataError):
        log_returns(np.array([[1.0, 2.0], [np.nan, 2.0]]))
    with pytest.raises(DataError):
        log_returns(np.array([[1.0, 2.0]]))
    r = log_returns(np.array([[1.0], [np.e]]))
    assert r[0, 0] == pytest.approx(1.0)


def test_liquidity_limits() -> None:
    tv = np.array([[100.0, 10.0], [300.0, 30.0]])
    lim = liquidity_limits(tv, 0.1, 1000.0)
    assert lim == pytest.approx([0.04, 0.004])
    with pytest.raises(DataError):
        liquidity_limits(tv, 0.1, 0.0)


def test_liquidity_limits_over_a_horizon_average_the_look_back() -> None:
    # a week of hourly volume with a daily cycle: 24 h of it sized from the week's mean
    rng = np.random.default_rng(0)
    hours = np.arange(168)
    tv = (1000.0 * (1.5 + np.sin(2 * np.pi * hours / 24)))[:, None] * rng.uniform(0.8, 1.2, (168, 1))
    lim = liquidity_limits(tv, 0.1, 1e5, horizon_hours=24)
    assert lim[0] == pytest.approx(0.1 * tv.mean() * 24 / 1e5)
    # equal to the plain 24 h sum when the look-back is exactly the horizon
    day = tv[-24:]
    assert liquidity_limits(day, 0.1, 1e5, horizon_hours=24) == pytest.approx(liquidity_limits(day, 0.1, 1e5))

    # and it moves less from one hour to the next than the 24 h sum does
    def caps(h: int | None, span: int) -> np.ndarray:
        return np.array([liquidity_limits(tv[t - span : t], 0.1, 1e5, h)[0] for t in range(span, 168)])

    week_moves = np.abs(np.diff(np.log(caps(24, 120))))
    day_moves = np.abs(np.diff(np.log(caps(None, 24))))
    assert np.median(week_moves) < np.median(day_moves)
