"""Property-based tests of both optimizers (erc's solve_risk_budget and rp_cost's solve_cost_aware).

Random covariances (factor models, some nearly singular), random budgets, caps and floors: bounds
hold, Σw = 1, free-asset dev ≤ 1e-8, the KKT conditions hold (checked here from the weights alone),
and costs never increase what is traded. Then the robust-input cases of issue 3 for both solvers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from bot.errors import InfeasibleBoundsError, OptimizerError
from plugins.optimizers import cost_aware
from plugins.optimizers.cost_aware import nearest_psd, solve_cost_aware
from plugins.optimizers.erc import solve_risk_budget

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_cov(n: int, seed: int, rank_gap: bool, hedges: bool = False) -> np.ndarray:
    """Factor-model Σ; without ``hedges`` the loadings are ≥ 0 (no negative correlations)."""
    rng = np.random.default_rng(seed)
    k = max(1, n // 3)
    f = rng.normal(size=(n, k))
    if not hedges:
        f = np.abs(f)
    idio = rng.uniform(1e-6 if rank_gap else 0.2, 1.0, n)
    c = f @ f.T + np.diag(idio)
    s = np.sqrt(np.diag(c))
    vol = np.exp(rng.uniform(np.log(0.002), np.log(0.5), n))  # 250× spread of volatilities
    return c / np.outer(s, s) * np.outer(vol, vol)


@st.composite
def problems(draw: st.DrawFn) -> dict:
    n = draw(st.integers(2, 14))
    seed = draw(st.integers(0, 2**31 - 1))
    rank_gap, hedges, spread = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    slack = draw(st.floats(1.02, 3.0))  # Σ caps = slack: caps bind more as slack → 1
    return problem(n, seed, rank_gap, hedges, spread, slack, draw(st.booleans()))


def problem(n: int, seed: int, rank_gap: bool, hedges: bool, spread: bool, slack: float, floors: bool) -> dict:
    """The problem ``problems`` draws, from its choices (so that a falsifying example can be replayed)."""
    rng = np.random.default_rng(seed + 1)
    cov = random_cov(n, seed, rank_gap, hedges=hedges)
    b = rng.uniform(0.2, 1.0, n) if spread else np.full(n, 1.0 / n)
    b = b / b.sum()
    hi = rng.uniform(0.3, 1.0, n)
    hi = np.minimum(hi / hi.sum() * slack, 1.0)
    if hi.sum() < 1.01:
        hi = np.full(n, min(1.0, 1.5 / n))
    lo = np.zeros(n)
    if floors:
        lo = np.minimum(rng.uniform(0, 0.6, n) / n, hi * 0.9)
    w0 = rng.dirichlet(np.ones(n))
    return dict(cov=cov, b=b, hi=hi, lo=lo, w0=w0, n=n)


def erc_kkt(w: np.ndarray, cov: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Violation of erc's three states (its module docstring): equal ρ_i = RC_i/b_i among free assets,
    ρ_i ≤ ρ* at a cap, ρ_i ≥ ρ* at a floor. Relative to ρ*."""
    rho = w * (cov @ w) / b
    at_hi = w >= hi - 1e-13
    at_lo = (w <= lo + 1e-13) & (lo > 0) & ~at_hi
    free = ~at_hi & ~at_lo
    if not free.any():
        return 0.0
    star = float(rho[free].mean())
    v = np.abs(rho[free] / star - 1.0).max()
    if at_hi.any():
        v = max(v, float(np.max(rho[at_hi] / star - 1.0, initial=0.0)))
    if at_lo.any():
        v = max(v, float(np.max(1.0 - rho[at_lo] / star, initial=0.0)))
    return float(v)


def min_variance_on_box(cov: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """argmin ½xᵀΣx on lo ≤ x ≤ hi (no budget): the t → 0 end of erc's path x(t)."""
    res = minimize(lambda x: 0.5 * x @ cov @ x, lo.copy(), jac=lambda x: cov @ x, bounds=list(zip(lo, hi)),
                   method="L-BFGS-B", options={"ftol": 1e-16, "gtol": 1e-14, "maxiter": 10000})
    return res.x


def rp_exists(p: dict) -> bool | None:
    """Risk parity under bounds exists iff Σx(t) crosses 1 on erc's path; Σx(t) → Σhi ≥ 1 as t → ∞, and
    as t → 0 it tends to the sum of the minimum-variance point on the box. With floors and a hedging
    asset (negative covariances) that point can sum to more than 1: then no portfolio has the three
    states of erc's docstring. None when too close to call."""
    s = float(min_variance_on_box(p["cov"], p["lo"], p["hi"]).sum())
    return True if s < 1 - 1e-6 else False if s > 1 + 1e-6 else None


@SETTINGS
@given(problems())
def test_erc_bounds_dev_and_kkt(p: dict) -> None:
    exists = rp_exists(p)
    assume(exists is not None)
    if not exists:
        with pytest.raises(OptimizerError):
            solve_risk_budget(p["cov"], p["b"], p["hi"], p["lo"])
        return
    r = solve_risk_budget(p["cov"], p["b"], p["hi"], p["lo"], w0=p["w0"])
    w = r.weights
    assert abs(w.sum() - 1.0) <= 1e-12
    assert np.all(w <= p["hi"]) and np.all(w >= p["lo"]) and np.all(w > 0)
    assert r.dev <= 1e-8
    assert erc_kkt(w, p["cov"], p["b"], p["lo"], p["hi"]) <= 1e-8
    # Warm start at the answer: the same portfolio in a couple of Newton steps.
    again = solve_risk_budget(p["cov"], p["b"], p["hi"], p["lo"], w0=w)
    assert np.max(np.abs(again.weights - w)) <= 1e-9


def q_kkt(w: np.ndarray, cov: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w0: np.ndarray,
          c: np.ndarray, rho: float, nu: float) -> float:
    """Violation of Q's KKT conditions (cost_aware docstring) at multiplier ν, relative to ρ b_i / w_i."""
    g = cov @ w / math.sqrt(w @ cov @ w) - rho * b / w + nu
    at_hi, at_lo = w >= hi, (w <= lo) & (lo > 0)
    at_w0 = (w == w0) & (c > 0) & ~at_hi & ~at_lo
    s = np.sign(w - w0)
    r = np.abs(g + c * s)
    r[at_w0] = np.maximum(np.abs(g) - c, 0)[at_w0]
    r[at_hi] = np.maximum(g + c * np.where(w == w0, -1.0, s), 0)[at_hi]
    r[at_lo] = np.maximum(-(g + c * np.where(w == w0, 1.0, s)), 0)[at_lo]
    return float(np.max(r * w / (rho * b)))


@SETTINGS
@given(problems(), st.floats(0.0, 1.0), st.floats(1.5, 4.0))
def test_rp_cost_bounds_kkt_and_costs_never_increase_turnover(p: dict, level: float, factor: float) -> None:
    cov = p["cov"]
    sig = math.sqrt(float(np.max(np.diag(cov))))
    c = np.full(p["n"], level * sig * 0.05)  # uniform costs on the scale of the volatilities
    assume(rp_exists(p))  # ρ* comes from erc's solution (cost_aware docstring)
    r = solve_cost_aware(cov, p["b"], p["hi"], p["lo"], w0=p["w0"], costs=c)
    w = r.weights
    assert abs(w.sum() - 1.0) <= 1e-12
    assert np.all(w <= p["hi"]) and np.all(w >= p["lo"]) and np.all(w > 0)
    if c.any():
        assert q_kkt(w, cov, p["b"], p["lo"], p["hi"], p["w0"], c, r.rho, r.nu) <= 1e-8
    else:
        assert r.dev <= 1e-8
    more = solve_cost_aware(cov, p["b"], p["hi"], p["lo"], w0=p["w0"], costs=c * factor + 1e-4 * sig)
    assert more.turnover <= r.turnover + 1e-10
    assert r.turnover <= r.rp.weights.__sub__(p["w0"]).__abs__().sum() + 1e-10  # no more than erc trades


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_rp_cost_converges_where_newton_on_nu_jumped_between_pieces(fast: bool, factor: float,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis' falsifying example (12 assets, hedges, variances 5e-5 next to 0.23, floors, level 0.75,
    factor 2): Σx(ν) changes slope where an asset leaves w0, and Newton on ν, always inside its bracket,
    alternated between two pieces until max_iter (both solvers). Bisection on stalled steps ends it."""
    monkeypatch.setattr(cost_aware, "FAST_PATH", fast)
    p = problem(12, 154364340, True, True, True, 2.0, True)
    cov = p["cov"]
    assert float(cov[4, 4]) == pytest.approx(4.936056e-5, rel=1e-6)  # the example as hypothesis printed it
    assert float(cov[3, 3]) == pytest.approx(0.2286, rel=1e-3)
    sig = math.sqrt(float(np.max(np.diag(cov))))
    c = np.full(12, 0.75 * sig * 0.05) * factor + (1e-4 * sig if factor > 1 else 0.0)
    r = solve_cost_aware(cov, p["b"], p["hi"], p["lo"], w0=p["w0"], costs=c)
    w = r.weights
    assert abs(w.sum() - 1.0) <= 1e-12 and np.all(w <= p["hi"]) and np.all(w >= p["lo"])
    assert q_kkt(w, cov, p["b"], p["lo"], p["hi"], p["w0"], c, r.rho, r.nu) <= 1e-8
    assert r.iterations - r.rp.iterations <= 100  # rp_cost's own Newton steps, well inside max_iter = 200


# -- robust input, both solvers ------------------------------------------------------------------------

SOLVERS = {
    "erc": lambda cov, **kw: solve_risk_budget(cov, **kw),
    "rp_cost": lambda cov, **kw: solve_cost_aware(cov, costs=np.full(len(cov), 1e-3), mu=np.linspace(0, 1e-3, len(cov)),
                                                  lam=1.0, w0=kw.pop("w0", np.full(len(cov), 1 / len(cov))), **kw),
}


@pytest.mark.parametrize("name", SOLVERS)
def test_non_psd_fails_clearly_and_nearest_psd_repairs(name: str) -> None:
    cov = random_cov(6, 1, False)
    lam, vec = np.linalg.eigh(cov)
    lam[0] = -0.2 * lam[-1]
    bad = (vec * lam) @ vec.T
    bad = 0.5 * (bad + bad.T)
    with pytest.raises(OptimizerError, match="not positive semi-definite"):
        SOLVERS[name](bad)
    r = SOLVERS[name](nearest_psd(bad))
    assert abs(r.weights.sum() - 1) < 1e-12 and np.all(r.weights > 0)


@pytest.mark.parametrize("name", SOLVERS)
def test_singular_cov(name: str) -> None:
    """A duplicated asset makes Σ singular and is solved; a riskless long-only mix (a positive vector in
    the null space of Σ) leaves no risk-parity portfolio, and that is an OptimizerError, not a hang."""
    base = random_cov(5, 2, False)
    dup = np.empty((6, 6))
    dup[:5, :5] = base
    dup[5, :5] = dup[:5, 5] = base[0]
    dup[5, 5] = base[0, 0]
    assert np.linalg.matrix_rank(dup) == 5
    r = SOLVERS[name](dup)
    assert abs(r.weights.sum() - 1) < 1e-12 and np.all(r.weights > 0)
    if name == "erc":
        assert r.dev <= 1e-8
        assert r.weights[0] == pytest.approx(r.weights[5], rel=1e-8)
    f = np.random.default_rng(2).normal(size=(8, 3)) * 0.1
    with pytest.raises(OptimizerError):
        SOLVERS[name](f @ f.T)


def test_erc_warm_start_with_negative_correlation() -> None:
    """Regression (found by the property test): a warm start leaning on a hedge made erc's first barrier
    weight Σ x(Σx) negative (math domain error in log t)."""
    cov = np.array([[0.03179849, -0.0038202], [-0.0038202, 0.09539513]])
    r = solve_risk_budget(cov, None, [0.60816265, 0.89183735], None, w0=[0.01347218, 0.98652782])
    assert r.dev <= 1e-8 and abs(r.weights.sum() - 1) < 1e-12


def test_erc_floors_with_a_low_variance_asset() -> None:
    """Regression (found by the property test): a free set emptied between two Newton steps left erc
    solving with a stale Cholesky factor (incompatible dimensions)."""
    cov = np.array([[5.23512412e-02, 1.98733992e-04], [1.98733992e-04, 1.01763815e-05]])
    p = dict(cov=cov, b=np.array([0.27908002, 0.72091998]), hi=np.array([0.96256712, 0.78743288]),
             lo=np.array([0.28251696, 0.17835046]))
    if rp_exists(p):
        r = solve_risk_budget(cov, p["b"], p["hi"], p["lo"], w0=[0.78999293, 0.21000707])
        assert erc_kkt(r.weights, cov, p["b"], p["lo"], p["hi"]) <= 1e-8
    else:
        with pytest.raises(OptimizerError):
            solve_risk_budget(cov, p["b"], p["hi"], p["lo"], w0=[0.78999293, 0.21000707])


def test_rp_cost_survives_that_warm_start() -> None:
    cov = np.array([[0.03179849, -0.0038202], [-0.0038202, 0.09539513]])
    r = solve_cost_aware(cov, None, [0.60816265, 0.89183735], None, w0=[0.01347218, 0.98652782], costs=[1e-3, 1e-3])
    assert r.weights.sum() == pytest.approx(1.0, abs=1e-12) and r.turnover > 0


@pytest.mark.parametrize("name", SOLVERS)
def test_zero_vol_and_nan_name_the_asset(name: str) -> None:
    cov = random_cov(4, 3, False)
    z = cov.copy()
    z[2, :] = z[:, 2] = 0.0
    with pytest.raises(OptimizerError, match=r"zero variance for \['C'\]"):
        SOLVERS[name](z, names=["A", "B", "C", "D"])
    nan = cov.copy()
    nan[1, 3] = nan[3, 1] = np.nan
    with pytest.raises(OptimizerError, match=r"NaN or inf entries for \['B', 'D'\]"):
        SOLVERS[name](nan, names=["A", "B", "C", "D"])
    with pytest.raises(OptimizerError, match=r"upper bounds is NaN or inf for \['A'\]"):
        SOLVERS[name](cov, upper=[np.nan, 1, 1, 1], names=["A", "B", "C", "D"])
    with pytest.raises(InfeasibleBoundsError):
        SOLVERS[name](cov, upper=[0.2, 0.2, 0.2, 0.2], names=["A", "B", "C", "D"])


@pytest.mark.parametrize("name", SOLVERS)
def test_single_asset(name: str) -> None:
    r = SOLVERS[name](np.array([[0.04]]), w0=np.array([1.0]))
    assert r.weights.tolist() == [1.0]


@pytest.mark.parametrize("name", SOLVERS)
def test_n_1000_with_caps_and_warm_start(name: str) -> None:
    n = 1000
    cov = random_cov(n, 4, False)
    hi = np.full(n, 1.6 / n)
    with threadpool_limits(1):  # a 2-core CI box oversubscribed by threaded BLAS runs 10× slower
        r = SOLVERS[name](cov, upper=hi)
        w = r.weights
        assert abs(w.sum() - 1) < 1e-12 and np.all(w <= hi) and np.all(w > 0)
        if name == "erc":
            assert r.dev <= 1e-8 and r.capped.any()
            warm = solve_risk_budget(cov, upper=hi, w0=w)
            assert warm.iterations < r.iterations and np.max(np.abs(warm.weights - w)) < 1e-9
