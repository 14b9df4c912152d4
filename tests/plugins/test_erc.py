"""Tests of the ERC / risk-budgeting optimizer: closed forms, properties under bounds, an independent
solver, input errors and registration through the plugin hook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from bot.components import ComponentContext
from bot.domain import Forecast, Target
from bot.errors import ConfigError, InfeasibleBoundsError, OptimizerError
from bot.plugins import Registry, make_plugin_manager
from plugins.optimizers import _ccd, erc
from plugins.optimizers.erc import ErcConfig, ErcOptimizer, budget_vector, solve_risk_budget


def random_cov(n: int, seed: int, rank: int | None = None) -> np.ndarray:
    """A Aᵀ + diag with hourly-return magnitudes; ``rank`` factors (default n) give mixed-sign
    correlations, few factors give strongly correlated assets."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, rank or n)) * rng.uniform(0.2, 3.0, size=(n, 1))
    return (a @ a.T + np.diag(rng.uniform(0.05, 1.0, n))) * 1e-5


def ratios(w: np.ndarray, cov: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ρ_i = RC_i / b_i, up to the common factor 1/σ_p."""
    return w * (cov @ w) / b


def dispersion(w: np.ndarray, cov: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    r = ratios(w, cov, b)[mask]
    return float(np.max(np.abs(r / r.mean() - 1.0)))


# -- closed forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [-0.95, -0.3, 0.0, 0.4, 0.99])
@pytest.mark.parametrize(("s1", "s2"), [(0.01, 0.02), (0.003, 0.05), (0.2, 0.2)])
def test_two_assets_closed_form(rho: float, s1: float, s2: float) -> None:
    # w1 (Σw)_1 = w2 (Σw)_2 ⇔ w1² s1² = w2² s2² (the cross terms ρ s1 s2 w1 w2 are equal), so w ∝ 1/σ.
    cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
    res = solve_risk_budget(cov)
    assert res.weights == pytest.approx([s2 / (s1 + s2), s1 / (s1 + s2)], abs=1e-12)
    rc = ratios(res.weights, cov, np.ones(2))
    assert rc[0] == pytest.approx(rc[1], rel=1e-12)
    assert res.dev <= 1e-12 and not res.capped.any() and not res.floored.any()


@pytest.mark.parametrize("rho", [-0.15, 0.0, 0.35, 0.9])
def test_constant_correlation_gives_inverse_volatility(rho: float) -> None:
    # With ρ_ij = ρ, w_i ∝ 1/σ_i makes σ_i w_i equal, hence every (Σw)_i w_i equal.
    sigma = np.array([0.004, 0.011, 0.02, 0.007, 0.05, 0.013, 0.009])
    n = len(sigma)
    corr = np.full((n, n), rho) + (1 - rho) * np.eye(n)
    res = solve_risk_budget(corr * np.outer(sigma, sigma))
    expected = (1 / sigma) / (1 / sigma).sum()
    assert res.weights == pytest.approx(expected, abs=1e-12)
    assert res.dev <= 1e-10


def test_budgets_on_a_diagonal_covariance() -> None:
    # Uncorrelated assets: w_i² σ_i² ∝ b_i, so w_i ∝ √b_i / σ_i.
    sigma = np.array([0.01, 0.02, 0.03, 0.05])
    b = np.array([0.1, 0.2, 0.3, 0.4])
    res = solve_risk_budget(np.diag(sigma**2), b)
    expected = np.sqrt(b) / sigma
    assert res.weights == pytest.approx(expected / expected.sum(), abs=1e-12)
    rc = ratios(res.weights, np.diag(sigma**2), np.ones(4))
    assert rc / rc.sum() == pytest.approx(b, abs=1e-12)


def test_weights_do_not_depend_on_the_scale_of_the_covariance() -> None:
    cov = random_cov(12, 3)
    a = solve_risk_budget(cov).weights
    assert solve_risk_budget(cov * 1e-6).weights == pytest.approx(a, abs=1e-12)
    assert solve_risk_budget(cov * 1e6).weights == pytest.approx(a, abs=1e-12)


# -- bounds ------------------------------------------------------------------------------------------


def test_caps_bind_and_the_rest_keeps_equal_risk() -> None:
    cov = random_cov(8, 11)
    free_w = solve_risk_budget(cov).weights
    upper = np.full(8, 1.0)
    top = np.argsort(free_w)[-2:]
    upper[top] = free_w[top] * 0.8
    res = solve_risk_budget(cov, upper=upper)
    assert res.capped[top].all() and res.capped.sum() == 2
    assert res.weights[top] == pytest.approx(upper[top], abs=0)
    assert res.weights.sum() == pytest.approx(1.0, abs=1e-12)
    free = ~res.capped
    assert dispersion(res.weights, cov, np.ones(8), free) <= 1e-10
    # KKT: a capped asset carries less risk than the free ones (it would take more if allowed).
    r = ratios(res.weights, cov, np.ones(8))
    assert r[top].max() < r[free].min()


def test_a_capped_asset_is_released_when_floors_make_its_cap_slack() -> None:
    # Unbounded ERC on a diagonal Σ is ∝ 1/σ = (0.615, 0.308, 0.077), above A's cap of 0.55. But C's
    # floor of 0.35 leaves 0.65 for A and B, split 2:1 by equal risk: A = 0.433 sits below its cap, so
    # A must be free. A solver that caps A first and never releases it would return A = 0.55.
    cov = np.diag([0.05, 0.1, 0.4]) ** 2
    upper, lower = np.array([0.55, 1.0, 1.0]), np.array([0.0, 0.0, 0.35])
    assert solve_risk_budget(cov).weights[0] > upper[0]
    expected = np.array([0.65 * 2 / 3, 0.65 / 3, 0.35])
    for w0 in (None, np.array([0.55, 0.10, 0.35])):  # cold, and warm-started with A at its cap
        res = solve_risk_budget(cov, upper=upper, lower=lower, w0=w0)
        assert res.weights == pytest.approx(expected, abs=1e-12)
        assert res.capped.tolist() == [False, False, False]
        assert res.floored.tolist() == [False, False, True]
        assert res.dev <= 1e-12


def test_releasing_a_binding_cap_gives_the_asset_more_than_its_cap() -> None:
    cov = random_cov(10, 5, rank=3)
    base = solve_risk_budget(cov).weights
    upper = np.minimum(1.0, 0.9 * base.max() * np.ones(10))
    res = solve_risk_budget(cov, upper=upper)
    for i in np.flatnonzero(res.capped):
        lifted = upper.copy()
        lifted[i] = 1.0
        assert solve_risk_budget(cov, upper=lifted).weights[i] > upper[i]


def test_floors_bind_on_the_riskiest_assets() -> None:
    sigma = np.array([0.01, 0.012, 0.02, 0.08, 0.1])
    cov = np.diag(sigma**2)
    lower = np.full(5, 0.1)
    res = solve_risk_budget(cov, lower=lower)
    assert res.floored.tolist() == [False, False, False, True, True]
    assert res.weights[3:] == pytest.approx([0.1, 0.1], abs=0)
    assert res.dev <= 1e-12
    r = ratios(res.weights, cov, np.ones(5))
    assert r[3:].min() > r[:3].max()  # floored assets carry more risk than they would choose


def test_asset_capped_at_zero_is_held_at_zero() -> None:
    cov = random_cov(5, 2)
    res = solve_risk_budget(cov, upper=np.array([1.0, 0.0, 1.0, 1.0, 1.0]))
    assert res.weights[1] == 0.0 and res.capped[1]
    assert res.weights.sum() == pytest.approx(1.0, abs=1e-12)
    keep = np.array([0, 2, 3, 4])
    alone = solve_risk_budget(cov[np.ix_(keep, keep)]).weights
    assert res.weights[keep] == pytest.approx(alone, abs=1e-12)


def test_bounds_that_only_just_fit_give_the_bounds() -> None:
    cov = random_cov(4, 1)
    upper = np.array([0.25, 0.25, 0.25, 0.25])
    assert solve_risk_budget(cov, upper=upper).weights.tolist() == upper.tolist()
    lower = np.array([0.1, 0.2, 0.3, 0.4])
    res = solve_risk_budget(cov, lower=lower)
    assert res.weights.tolist() == lower.tolist() and res.floored.all()


def test_fixed_asset_with_equal_bounds() -> None:
    cov = random_cov(4, 8)
    res = solve_risk_budget(cov, upper=np.array([0.3, 1, 1, 1]), lower=np.array([0.3, 0, 0, 0]))
    assert res.weights[0] == 0.3 and res.capped[0] and not res.floored[0]
    assert dispersion(res.weights, cov, np.ones(4), ~res.capped) <= 1e-10


# -- properties ----------------------------------------------------------------------------------------


def min_variance_in_box(cov: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    s = cov / np.diag(cov).max()
    res = minimize(
        lambda x: 0.5 * x @ s @ x,
        np.clip(np.full(len(s), 1 / len(s)), lower, upper),
        jac=lambda x: s @ x,
        bounds=list(zip(lower, upper)),
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12},
    )
    return res.x


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 30))
    seed = draw(st.integers(0, 2**32 - 1))
    rank = draw(st.sampled_from([None, 1, 2, 5]))
    rng = np.random.default_rng(seed)
    cov = random_cov(n, seed, rank)
    b = rng.uniform(0.1, 1.0, n) if draw(st.booleans()) else np.ones(n)
    upper = np.ones(n)
    lower = np.zeros(n)
    if draw(st.booleans()):  # caps around 1/n, some binding, always room for a full portfolio
        upper = rng.uniform(0.6, 3.0, n) / n
        upper *= max(1.0, 1.05 / upper.sum())
    if draw(st.booleans()):  # floors on some assets (they may force hedges: see the test)
        lower = np.where(rng.random(n) < 0.6, rng.uniform(0.0, 0.95, n) / n, 0.0)
        lower = np.minimum(lower, 0.9 * upper)
    return cov, b / b.sum(), upper, lower


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_risk_parity_under_bounds(problem: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    cov, b, upper, lower = problem
    try:
        res = solve_risk_budget(cov, b, upper, lower)
    except OptimizerError as exc:
        # Floors on assets that others hedge can leave no risk-parity portfolio at all: then even the
        # minimum-variance point of the box, the t → 0 end of P(t), must already hold more than 1.
        assert "no risk-budgeting portfolio exists" in str(exc)
        assert min_variance_in_box(cov, lower, upper).sum() > 1.0
        return
    w = res.weights
    assert np.all(w <= upper + 1e-12) and np.all(w >= lower - 1e-12)
    assert abs(w.sum() - 1.0) <= 1e-12
    at_cap = w >= upper - 1e-12
    assert res.capped.tolist() == at_cap.tolist()
    assert not (res.floored & res.capped).any()
    assert np.all(w[res.floored] == lower[res.floored])
    free = ~(res.capped | res.floored)
    assert np.all(w[free] > lower[free]) and np.all(w[free] < upper[free])
    r = ratios(w, cov, b)
    if free.any():
        assert dispersion(w, cov, b, free) <= 1e-8
        assert res.dev == pytest.approx(dispersion(w, cov, b, free), abs=1e-12)
        # KKT of the box problem: a capped asset would take more risk if released, a floored one less.
        level = r[free].mean()
        assert np.all(r[res.capped] <= level * (1 + 1e-8))
        assert np.all(r[res.floored] >= level * (1 - 1e-8))
    if not (res.capped | res.floored).any():
        assert res.dev <= 1e-8


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.integers(0, 2**32 - 1))
def test_warm_start_reaches_the_same_weights(n: int, seed: int) -> None:
    cov = random_cov(n, seed)
    upper = np.random.default_rng(seed).uniform(0.8, 3.0, n) / n
    upper *= max(1.0, 1.05 / upper.sum())
    cold = solve_risk_budget(cov, upper=upper)
    warm = solve_risk_budget(cov, upper=upper, w0=cold.weights)
    assert warm.weights == pytest.approx(cold.weights, abs=1e-10)
    assert warm.iterations <= 2
    shifted = solve_risk_budget(cov * 1.1 + np.diag(np.diag(cov)) * 0.2, upper=upper, w0=cold.weights)
    assert shifted.dev <= 1e-8


@pytest.mark.parametrize("seed", range(4))
def test_matches_an_independent_slsqp_solution(seed: int) -> None:
    n = 3 + 2 * seed
    cov = random_cov(n, 100 + seed, rank=2 if seed % 2 else None)
    b = np.random.default_rng(seed).uniform(0.2, 1.0, n)
    b /= b.sum()
    s = cov / np.diag(cov).max()

    # Spinu's convex objective, minimised by SLSQP on x > 0 and normalised: x_i (Σx)_i = b_i at its optimum.
    def f(x: np.ndarray) -> float:
        return 0.5 * x @ s @ x - b @ np.log(x)

    def grad(x: np.ndarray) -> np.ndarray:
        return s @ x - b / x

    ref = minimize(
        f,
        np.full(n, 1.0),
        jac=grad,
        method="SLSQP",
        bounds=[(1e-9, None)] * n,
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    assert ref.success
    expected = ref.x / ref.x.sum()
    assert solve_risk_budget(cov, b).weights == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("n", [500])
def test_large_random_problem(n: int) -> None:
    cov = random_cov(n, 7, rank=20)
    res = solve_risk_budget(cov)
    assert res.dev <= 1e-8 and abs(res.weights.sum() - 1) <= 1e-12
    capped = solve_risk_budget(cov, upper=np.full(n, 1.5 / n), lower=np.full(n, 0.5 / n))
    assert capped.dev <= 1e-8 and capped.capped.any() and capped.floored.any()


def test_one_asset() -> None:
    res = solve_risk_budget(np.array([[4e-6]]))
    assert res.weights.tolist() == [1.0] and res.dev == 0.0


# -- errors ----------------------------------------------------------------------------------------------


def test_nan_covariance_names_the_asset() -> None:
    cov = random_cov(3, 0)
    cov[1, 2] = cov[2, 1] = np.nan
    with pytest.raises(OptimizerError, match=r"NaN or inf entries for \['B', 'C'\]"):
        solve_risk_budget(cov, names=["A", "B", "C"])
    cov[1, 2] = cov[2, 1] = np.inf
    with pytest.raises(OptimizerError, match="NaN or inf"):
        solve_risk_budget(cov)


def test_bad_matrices() -> None:
    with pytest.raises(OptimizerError, match="square"):
        solve_risk_budget(np.ones((2, 3)))
    with pytest.raises(OptimizerError, match="not positive semi-definite"):
        solve_risk_budget(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(OptimizerError, match="not symmetric"):
        solve_risk_budget(np.array([[1.0, 0.5], [0.1, 1.0]]))
    with pytest.raises(OptimizerError, match=r"negative variance for \['y'\]"):
        solve_risk_budget(np.diag([1.0, -1.0]), names=["x", "y"])


def test_zero_variance_names_the_asset() -> None:
    cov = random_cov(3, 1)
    cov[1, :] = cov[:, 1] = 0.0
    with pytest.raises(OptimizerError, match=r"zero variance for \['TLT'\]"):
        solve_risk_budget(cov, names=["SPY", "TLT", "GLD"])
    with pytest.raises(OptimizerError, match=r"zero variance for \['asset 1'\]"):
        solve_risk_budget(cov)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("n", [6, 120])  # the compiled PSD test is an inline loop up to n = 100, LAPACK above
def test_zero_variance_asset_capped_at_zero_is_held_at_zero(
    fast: bool, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The error's advice, "drop it or cap it at 0", must work: capped at 0 the asset is out of the
    # problem (weight 0, reported capped) and the others get the portfolio they get without it.
    monkeypatch.setattr(erc, "FAST_PATH", fast)
    if fast:  # the compiled path must answer: the Newton method would fail the test
        monkeypatch.setattr(erc, "_active_set", lambda *a: pytest.fail("the Newton method ran"))
    cov = random_cov(n, 12, rank=4 if n < 100 else None)
    z = cov.copy()
    z[2, :] = z[:, 2] = 0.0
    upper = np.full(n, 1.0)
    upper[2] = 0.0
    keep = np.flatnonzero(np.arange(n) != 2)
    alone = solve_risk_budget(cov[np.ix_(keep, keep)])
    for w0 in (None, np.full(n, 1.0 / n)):  # cold, and warm from a book that holds it
        res = solve_risk_budget(z, upper=upper, w0=w0)
        assert res.weights[2] == 0.0 and res.capped[2] and not res.capped[keep].any()
        assert res.weights[keep] == pytest.approx(alone.weights, abs=1e-12)
        assert res.dev <= 1e-8 and abs(res.weights.sum() - 1.0) <= 1e-12
    # A negative cap is a cap at 0 too; with caps that bind on the others as well.
    caps = np.full(n, 1.5 / (n - 1))
    caps[2] = -1.0
    capped = solve_risk_budget(z, upper=caps)
    assert capped.weights[2] == 0.0 and capped.capped.sum() >= 2
    assert dispersion(capped.weights, z, np.ones(n), ~capped.capped) <= 1e-8
    # Held anywhere above 0 it is still an error, naming it.
    names = [f"A{i}" for i in range(n)]
    with pytest.raises(OptimizerError, match=r"zero variance for \['A2'\]; drop the asset or cap it at 0"):
        solve_risk_budget(z, upper=np.where(np.arange(n) == 2, 1e-3, 1.0), names=names)


@pytest.mark.parametrize("n", [6, 120])
def test_the_kernel_answers_a_zero_variance_asset_capped_at_zero(n: int) -> None:
    # The compiled path itself answers (not a fallback), and agrees with the Newton method. (Full-rank
    # factors: with few factors at n = 120 the sweeps converge too slowly, with or without the asset.)
    z = random_cov(n, 12, rank=None if n > 100 else 4)
    z[2, :] = z[:, 2] = 0.0
    upper = np.full(n, 1.0)
    upper[2] = 0.0
    e = np.empty(0)
    status, w, capped, floored, sweeps, dev = _ccd.solve(z, e, upper, e, e, 1e-12, 100, 1e-8)
    assert status == _ccd.OK and w[2] == 0.0 and capped[2] and dev <= 1e-8
    erc_off = erc.FAST_PATH
    try:
        erc.FAST_PATH = False
        ref = solve_risk_budget(z, upper=upper)
    finally:
        erc.FAST_PATH = erc_off
    assert np.max(np.abs(w - ref.weights)) <= 1e-10
    assert capped.tolist() == ref.capped.tolist()
    # held at a positive cap the kernel declines, and the numpy method words the error
    assert _ccd.solve(z, e, np.full(n, 1.0), e, e, 1e-12, 100, 1e-8)[0] == _ccd.BAD


@pytest.mark.parametrize("fast", [True, False])
def test_bad_warm_start_names_the_asset(fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # A NaN or negative current weight used to be ignored silently (the solve started cold).
    monkeypatch.setattr(erc, "FAST_PATH", fast)
    cov = random_cov(3, 1)
    names = ["a", "b", "c"]
    with pytest.raises(OptimizerError, match=r"current weights is NaN or inf for \['b'\]"):
        solve_risk_budget(cov, w0=[0.5, np.nan, 0.5], names=names)
    with pytest.raises(OptimizerError, match=r"current weights is NaN or inf for \['asset 2'\]"):
        solve_risk_budget(cov, w0=[0.5, 0.5, np.inf])
    with pytest.raises(OptimizerError, match=r"current weights must be >= 0 \(long-only\); negative for \['c'\]"):
        solve_risk_budget(cov, w0=[0.6, 0.5, -0.1], names=names)
    with pytest.raises(OptimizerError, match=r"current weights must have shape \(3,\)"):
        solve_risk_budget(cov, w0=[0.5, 0.5])
    # zeros (an empty book) and a partly held book are fine
    ref = solve_risk_budget(cov)
    for w0 in ([0.0, 0.0, 0.0], [0.0, 0.3, 0.2]):
        assert solve_risk_budget(cov, w0=w0).weights == pytest.approx(ref.weights, abs=1e-12)
    # through the plugin: the cycle's current weights
    forecast = Forecast.from_cov(("x", "y", "z"), cov, "test")
    with pytest.raises(OptimizerError, match=r"negative for \['y'\]"):
        ErcOptimizer().optimize(forecast, upper=np.ones(3), lower=np.zeros(3), current=np.array([0.5, -1e-3, 0.5]))


def test_bad_budgets() -> None:
    cov = random_cov(3, 1)
    with pytest.raises(OptimizerError, match=r"budgets must be > 0, got <= 0 for \['b'\]"):
        solve_risk_budget(cov, [0.5, 0.0, 0.5], names=["a", "b", "c"])
    with pytest.raises(OptimizerError, match="NaN"):
        solve_risk_budget(cov, [0.5, np.nan, 0.5])


def test_infeasible_bounds_name_the_assets() -> None:
    cov = random_cov(3, 2)
    names = ["a", "b", "c"]
    with pytest.raises(InfeasibleBoundsError, match="upper bounds sum to 0.9") as caps:
        solve_risk_budget(cov, upper=[0.3, 0.3, 0.3], names=names)
    assert caps.value.assets == ("a", "b", "c")
    with pytest.raises(InfeasibleBoundsError, match="lower bounds sum to 1.2") as floors:
        solve_risk_budget(cov, lower=[0.7, 0.0, 0.5], names=names)
    assert floors.value.assets == ("a", "c")
    with pytest.raises(InfeasibleBoundsError, match=r"lower bound above upper bound for \['b'\]") as cross:
        solve_risk_budget(cov, upper=[1, 0.1, 1], lower=[0, 0.2, 0], names=names)
    assert cross.value.assets == ("b",)


def test_nested_fallback_agrees_with_the_active_set_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    # The projected-Newton method on P(t) only runs when the active-set rounds cycle; force it.
    cov = random_cov(25, 21, rank=5)
    rng = np.random.default_rng(3)
    b = rng.uniform(0.2, 1.0, 25)
    upper = rng.uniform(0.6, 3.0, 25) / 25
    upper *= 1.1 / upper.sum()
    lower = np.where(rng.random(25) < 0.5, 0.8 / 25, 0.0)
    lower = np.minimum(lower, 0.9 * upper)
    primary = solve_risk_budget(cov, b, upper, lower)
    assert primary.capped.any() and primary.floored.any()
    monkeypatch.setattr(erc, "FAST_PATH", False)  # the compiled path would answer first
    monkeypatch.setattr(erc, "_active_set", lambda *args: None)
    fallback = solve_risk_budget(cov, b, upper, lower)
    assert fallback.weights == pytest.approx(primary.weights, abs=1e-9)
    assert fallback.capped.tolist() == primary.capped.tolist()
    assert fallback.floored.tolist() == primary.floored.tolist()
    assert fallback.dev <= 1e-8


def test_floors_that_force_a_hedge_have_no_risk_parity_portfolio() -> None:
    # B hedges A almost perfectly: with A floored at 0.6, any B that keeps RC_B > 0 needs w_B > 0.594.
    cov = np.array([[1.0, -0.99], [-0.99, 1.0]]) * 1e-4
    with pytest.raises(OptimizerError, match=r"no risk-budgeting portfolio exists.*\['A'\]"):
        solve_risk_budget(cov, lower=[0.6, 0.0], names=["A", "B"])


def test_iteration_limit() -> None:
    with pytest.raises(OptimizerError, match="max_iter=1"):
        solve_risk_budget(random_cov(20, 4, rank=2), max_iter=1)


# -- the compiled fast path (plugins/optimizers/_ccd.py) ------------------------------------------------


def test_import_leaves_numba_for_the_first_solve() -> None:
    code = "import sys, plugins.optimizers.erc, plugins.optimizers.cost_aware; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.booleans())
def test_coordinate_descent_agrees_with_the_newton_method(
    problem: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], warm: bool
) -> None:
    # The kernel either answers (and then agrees with the independent Newton method, bounds' states
    # included) or declines; it never returns something else.
    cov, b, upper, lower = problem
    w0 = np.random.default_rng(len(b)).dirichlet(np.ones(len(b))) if warm else np.empty(0)
    status, w, capped, floored, sweeps, dev = _ccd.solve(cov, b, upper, lower, w0, 1e-12, 100, 1e-8)
    assume(status == _ccd.OK)
    erc_off = erc.FAST_PATH
    try:
        erc.FAST_PATH = False
        ref = solve_risk_budget(cov, b, upper, lower)
    finally:
        erc.FAST_PATH = erc_off
    assert np.max(np.abs(w - ref.weights)) <= 1e-9
    assert capped.tolist() == ref.capped.tolist() and floored.tolist() == ref.floored.tolist()
    free = ~(capped | floored)
    assert dev == pytest.approx(dispersion(w, cov, b, free), abs=1e-12) and dev <= 1e-8
    assert abs(w.sum() - 1.0) <= 1e-12 and 1 <= sweeps <= 100


def test_the_kernel_answers_the_common_case_and_declines_the_rest() -> None:
    cov = random_cov(40, 5, rank=4)
    upper = np.full(40, 1.3 / 40)
    e = np.empty(0)
    assert _ccd.solve(cov, e, upper, e, e, 1e-12, 100, 1e-8)[0] == _ccd.OK
    not_psd = cov.copy()
    not_psd[0, 1] = not_psd[1, 0] = 2 * np.sqrt(cov[0, 0] * cov[1, 1])
    nan = cov.copy()
    nan[3, 4] = np.nan
    zero_cap = upper.copy()
    zero_cap[0] = 0.0
    for args in ((not_psd, e), (nan, e), (cov, np.full(40, 1 / 40))):
        assert _ccd.solve(args[0], e, args[1], e, e, 1e-12, 100, 1e-8)[0] == _ccd.BAD
    assert _ccd.solve(cov, e, upper, e, e, 1e-12, 2, 1e-8)[0] == _ccd.NO_CONVERGENCE
    # an asset capped at 0 it answers (held at 0), and so does the Newton method
    status, w, capped, *_ = _ccd.solve(cov, e, zero_cap, e, e, 1e-12, 100, 1e-8)
    assert status == _ccd.OK and w[0] == 0.0 and capped[0]
    res = solve_risk_budget(cov, upper=zero_cap)
    assert res.weights[0] == 0.0 and res.capped[0] and res.dev <= 1e-8
    assert np.max(np.abs(res.weights - w)) <= 1e-12
    # read-only input (numba would need another compiled version): copied, same answer
    frozen = cov.copy()
    frozen.setflags(write=False)
    assert np.array_equal(solve_risk_budget(frozen, upper=upper).weights, solve_risk_budget(cov, upper=upper).weights)


def test_without_numba_the_numpy_method_answers_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cov = random_cov(12, 3, rank=3)
    upper = np.full(12, 1.2 / 12)
    fast = solve_risk_budget(cov, upper=upper)
    monkeypatch.setattr(erc, "_kernel", None)
    monkeypatch.setitem(sys.modules, "plugins.optimizers._ccd", None)  # import fails as without numba
    with caplog.at_level("WARNING", logger=erc.__name__):
        slow = solve_risk_budget(cov, upper=upper)
    assert "compiled coordinate-descent path unavailable" in caplog.text
    assert erc._kernel is False
    assert slow.weights == pytest.approx(fast.weights, abs=1e-10) and slow.dev <= 1e-8
    assert slow.capped.tolist() == fast.capped.tolist()


# -- the plugin --------------------------------------------------------------------------------------------


ASSETS = ("SPY", "TLT", "GLD", "USTB")


def registry_build(options: dict, tmp_path: Path) -> ErcOptimizer:
    pm = make_plugin_manager(entry_points=False, plugins=[erc])
    ctx = ComponentContext(clock=None, state_dir=tmp_path, assets=(), emit=lambda e: None)  # type: ignore[arg-type]
    return Registry(pm).get("optimizer", "erc").build(options, ctx, where="optimizer.options")


def test_registered_through_the_hook(tmp_path: Path) -> None:
    opt = registry_build({}, tmp_path)
    assert isinstance(opt, ErcOptimizer) and opt.name == "erc"
    cov = random_cov(4, 9)
    forecast = Forecast.from_cov(ASSETS, cov, "test")
    upper = np.array([1.0, 0.2, 1.0, 1.0])
    target = opt.optimize(forecast, upper=upper, lower=np.zeros(4), current=np.zeros(4))
    assert isinstance(target, Target) and target.assets == ASSETS
    ref = solve_risk_budget(cov, upper=upper)
    assert target.weights == pytest.approx(ref.weights, abs=1e-12)
    assert target.risk_contributions.sum() == pytest.approx(1.0, abs=1e-12)
    assert target.sigma_p == pytest.approx(np.sqrt(ref.weights @ cov @ ref.weights), rel=1e-12)
    assert target.capped.tolist() == ref.capped.tolist()
    assert set(target.diagnostics) == {"iterations", "dev", "floored"}
    assert target.diagnostics["dev"] <= 1e-8 and target.diagnostics["floored"] == []
    warm = opt.optimize(forecast, upper=upper, lower=np.zeros(4), current=target.weights)
    assert warm.diagnostics["iterations"] <= 1
    assert warm.weights == pytest.approx(target.weights, abs=1e-12)


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="optimizer.options.bogus"):
        registry_build({"bogus": 1}, tmp_path)
    with pytest.raises(ConfigError, match="optimizer.options.tol"):
        registry_build({"tol": 0.0}, tmp_path)
    with pytest.raises(ConfigError, match="optimizer.options.max_iter"):
        registry_build({"max_iter": 0}, tmp_path)
    with pytest.raises(ConfigError, match="optimizer.options.budgets.SPY"):
        registry_build({"budgets": {"SPY": -1.0}}, tmp_path)
    opt = registry_build({"tol": 1e-10, "max_iter": 50, "budgets": {"SPY": 0.4}}, tmp_path)
    assert opt.cfg == ErcConfig(tol=1e-10, max_iter=50, budgets={"SPY": 0.4})


def test_budget_option_shares_the_rest_equally() -> None:
    assert budget_vector(ASSETS, None) is None
    assert budget_vector(ASSETS, {"SPY": 0.4}) == pytest.approx([0.4, 0.2, 0.2, 0.2])
    assert budget_vector(ASSETS, {"SPY": 2, "TLT": 1, "GLD": 1, "USTB": 4}) == pytest.approx([0.25, 0.125, 0.125, 0.5])
    with pytest.raises(OptimizerError, match=r"outside the universe: \['BTC'\]"):
        budget_vector(ASSETS, {"BTC": 0.1})
    with pytest.raises(OptimizerError, match="nothing left"):
        budget_vector(ASSETS, {"SPY": 0.6, "TLT": 0.5})


def test_optimizer_applies_budgets_and_reports_floors() -> None:
    sigma = np.array([0.01, 0.02, 0.03, 0.05])
    forecast = Forecast.from_cov(ASSETS, np.diag(sigma**2), "test")
    opt = ErcOptimizer(ErcConfig(budgets={"SPY": 0.4}))
    target = opt.optimize(forecast, upper=np.ones(4), lower=np.zeros(4), current=np.full(4, 0.25))
    assert target.risk_contributions == pytest.approx([0.4, 0.2, 0.2, 0.2], abs=1e-12)
    floored = ErcOptimizer().optimize(forecast, upper=np.ones(4), lower=np.array([0, 0, 0, 0.3]), current=np.zeros(4))
    assert floored.diagnostics["floored"] == ["USTB"] and floored.weights[3] == 0.3
