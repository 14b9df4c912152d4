"""rp_cost: the cost-aware, return-tilted risk parity of plugins/optimizers/cost_aware.py.

Every claim of its module docstring is checked against something computed here, not by the solver:
KKT residuals of Q, the same problem solved by cvxpy (Clarabel, SOC + exponential cone), the exact
no-trade threshold, and the monotonicity in the cost scale and in λ.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq, minimize, root

from bot.domain import Forecast
from bot.errors import InfeasibleBoundsError, OptimizerError
from bot.plugins import Registry, make_plugin_manager
from plugins.optimizers import cost_aware, erc
from plugins.optimizers.cost_aware import (
    CostAwareConfig,
    CostAwareOptimizer,
    nearest_psd,
    solve_cost_aware,
)
from plugins.optimizers.erc import solve_risk_budget

cp = pytest.importorskip("cvxpy")


def make_cov(n: int, seed: int) -> np.ndarray:
    """Factor-model covariance with vols 5–40 % (annual-like scale keeps cvxpy's tolerances meaningful)."""
    rng = np.random.default_rng(seed)
    k = max(2, n // 4)
    f = rng.normal(size=(n, k)) * 0.4
    c = f @ f.T + np.diag(rng.uniform(0.3, 1.5, n))
    s = np.sqrt(np.diag(c))
    vol = rng.uniform(0.05, 0.4, n)
    return c / np.outer(s, s) * np.outer(vol, vol)


def objective(w: np.ndarray, cov: np.ndarray, b: np.ndarray, w0: np.ndarray, c: np.ndarray, mu: np.ndarray,
              lam: float, rho: float) -> float:
    return float(np.sqrt(w @ cov @ w) - lam * mu @ w + c @ np.abs(w - w0) - rho * b @ np.log(w))


def kkt_residual(w: np.ndarray, cov: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w0: np.ndarray,
                 c: np.ndarray, mu: np.ndarray, lam: float, rho: float, tol: float = 1e-9) -> float:
    """Largest violation of Q's KKT conditions, relative to the barrier gradient ρ b_i / w_i.

    ν is recovered from the assets strictly inside a piece (off bounds and off w0); then an asset at w0
    needs |g_i + ν| ≤ c_i, one at its cap g_i + c_i s_i + ν ≤ 0, one at a positive floor ≥ 0.
    """
    sig = math.sqrt(w @ cov @ w)
    g = cov @ w / sig - lam * mu - rho * b / w
    scale = rho * b / w
    at_hi = w >= hi - tol
    at_lo = (w <= lo + tol) & (lo > 0)
    at_w0 = (np.abs(w - w0) <= tol) & (c > 0) & ~at_hi & ~at_lo
    s = np.sign(w - w0)
    inside = ~at_hi & ~at_lo & ~at_w0
    assert inside.any(), "no asset inside a piece: ν is not identified"
    nu = float(np.mean(-(g + c * s)[inside]))
    r = np.zeros_like(w)
    r[inside] = np.abs(g + c * s + nu)[inside]
    r[at_w0] = np.maximum(np.abs(g + nu) - c, 0.0)[at_w0]
    s_hi = np.where(np.abs(w - w0) <= tol, -1.0, s)  # at a cap that equals w0 the subgradient may be −1
    r[at_hi] = np.maximum(g + c * s_hi + nu, 0.0)[at_hi]
    s_lo = np.where(np.abs(w - w0) <= tol, 1.0, s)
    r[at_lo] = np.maximum(-(g + c * s_lo + nu), 0.0)[at_lo]
    return float(np.max(r / scale))


def independent_rho(cov: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float | None:
    """ρ* as docs/optimizer.md defines it, computed here without erc or rp_cost: the common RC_i / b_i of
    the free assets of risk parity under bounds. That portfolio is x(t*) of P(t): min ½xᵀSx − t Σ b log x
    on lo ≤ x ≤ hi with Σx(t*) = 1 (S = Σ / max variance). L-BFGS-B solves P(t), brentq finds t* (Σx(t)
    increases in t) closely enough to read the active set, and a root solve of the free block's
    equations x_i (Sx)_i = t b_i, Σx = 1 (bound assets at their bounds) gives the digits. Returns None
    when Σx(t) > 1 even as t → 0 (no risk-parity portfolio: floors force hedges)."""
    s = cov / float(np.max(np.diag(cov)))
    box = list(zip(np.maximum(lo, 1e-14), hi))
    x0 = np.clip(np.full(len(b), 1.0 / len(b)), lo, hi)

    def x_of(t: float) -> np.ndarray:
        return minimize(lambda x: 0.5 * x @ s @ x - t * b @ np.log(x), x0, jac=lambda x: s @ x - t * b / x,
                        bounds=box, method="L-BFGS-B", options={"ftol": 1e-13, "gtol": 1e-11, "maxiter": 20000}).x

    def excess(u: float) -> float:
        return float(x_of(math.exp(u)).sum()) - 1.0

    g = np.sqrt(b / np.diag(s))
    g /= g.sum()
    u0 = math.log(float(g @ s @ g))  # t of the diagonal-Σ guess: t* is within a few factors of it
    a, z = u0 - 2.0, u0 + 2.0
    while excess(a) > 0:
        a -= 4.0
        if a < u0 - 60.0:
            return None
    while excess(z) < 0:
        z += 4.0
    u = brentq(excess, a, z, xtol=1e-6)
    x = x_of(math.exp(u))
    at_hi = x >= hi - 1e-9
    at_lo = (x <= lo + 1e-9) & (lo > 0) & ~at_hi
    free = ~at_hi & ~at_lo
    fixed = np.where(at_hi, hi, lo)

    def equations(v: np.ndarray) -> np.ndarray:
        w = fixed.copy()
        w[free] = v[:-1]
        return np.append(w[free] * (s @ w)[free] - v[-1] * b[free], w.sum() - 1.0)

    sol = root(equations, np.append(x[free], math.exp(u)), method="hybr", tol=1e-15)
    assert np.max(np.abs(equations(sol.x))) <= 1e-13  # ("success" is False when tol is below what rounding allows)
    w = fixed.copy()
    w[free] = sol.x[:-1]
    sigma = math.sqrt(w @ cov @ w)
    rho = w * (cov @ w) / (sigma * b)
    star = float(rho[free].mean())
    # the active set read off L-BFGS-B must be the right one: the three states of erc's definition
    assert np.all(w[free] > lo[free]) and np.all(w[free] < hi[free])
    assert np.max(np.abs(rho[free] / star - 1.0)) <= 1e-12
    assert np.all(rho[at_hi] <= star * (1 + 1e-9)) and np.all(rho[at_lo] >= star * (1 - 1e-9))
    return star


def cvxpy_solution(cov: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w0: np.ndarray, c: np.ndarray,
                   mu: np.ndarray, lam: float, rho: float) -> np.ndarray:
    n = len(b)
    lam_, vec = np.linalg.eigh(cov)
    root = vec * np.sqrt(np.clip(lam_, 0, None))  # cov = root rootᵀ
    w = cp.Variable(n)
    obj = cp.norm(root.T @ w) - lam * mu @ w + c @ cp.abs(w - w0) - rho * (b @ cp.log(w))
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(w) == 1, w >= lo, w <= hi])
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert prob.status in ("optimal", "optimal_inaccurate")
    return np.asarray(w.value)


def case(n: int, seed: int, *, cost: float = 0.01, lam: float = 0.5, cap: float | None = 1.4,
         floor: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    cov = make_cov(n, seed)
    b = rng.uniform(0.5, 1.5, n)
    b /= b.sum()
    hi = np.full(n, cap / n) if cap is not None else np.ones(n)
    lo = np.zeros(n)
    if floor:
        lo[0] = 0.5 / n
    w0 = rng.dirichlet(np.full(n, 3.0))
    return dict(cov=cov, b=b, hi=hi, lo=lo, w0=w0, c=rng.uniform(0, 1, n) * cost, mu=rng.normal(0, 0.05, n), lam=lam)


def solve(k: dict, **over: object):
    k = {**k, **over}
    return solve_cost_aware(k["cov"], k["b"], k["hi"], k["lo"], w0=k["w0"], costs=k["c"], mu=k["mu"], lam=k["lam"])


def check_against_cvxpy(k: dict) -> None:
    """Our solution of Q against Q solved by cvxpy, with the barrier weight ρ* computed independently
    (``independent_rho``), not taken from the solver under test."""
    rho = independent_rho(k["cov"], k["b"], k["lo"], k["hi"])
    if rho is None:  # no risk parity under these bounds: Q's ρ* is undefined, and rp_cost says so
        with pytest.raises(OptimizerError, match="no risk-budgeting portfolio exists"):
            solve(k)
        return
    res = solve(k)
    assert res.rho == pytest.approx(rho, rel=1e-9)  # rp_cost's ρ* is the one the docs define
    w = res.weights
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(w <= k["hi"] + 1e-15) and np.all(w >= k["lo"] - 1e-15)
    mu_c = k["mu"] - k["mu"].mean()
    assert kkt_residual(w, k["cov"], k["b"], k["lo"], k["hi"], k["w0"], k["c"], mu_c, k["lam"], rho) < 1e-8
    ref = cvxpy_solution(k["cov"], k["b"], k["lo"], k["hi"], k["w0"], k["c"], mu_c, k["lam"], rho)
    assert np.max(np.abs(w - ref)) < 1e-5
    f = objective(w, k["cov"], k["b"], k["w0"], k["c"], mu_c, k["lam"], rho)
    f_ref = objective(np.clip(ref, 1e-300, None), k["cov"], k["b"], k["w0"], k["c"], mu_c, k["lam"], rho)
    assert f <= f_ref + 1e-9  # ours is at least as good as the conic solver's


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_cvxpy_and_satisfies_kkt(seed: int) -> None:
    n = [5, 8, 12, 20, 30, 40][seed]
    check_against_cvxpy(
        case(n, seed, cost=[0.0, 0.005, 0.01, 0.02, 0.05, 0.01][seed], lam=[0.3, 0.0, 0.5, 1.0, 0.2, 2.0][seed])
    )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(3, 9),
    st.integers(0, 2**31 - 1),
    st.sampled_from([0.0, 0.002, 0.01, 0.05]),
    st.floats(0.0, 2.0),
    st.sampled_from([None, 1.15, 1.5, 3.0]),
    st.booleans(),
)
def test_agrees_with_cvxpy_on_drawn_problems(n: int, seed: int, cost: float, lam: float, cap: float | None,
                                             floor: bool) -> None:
    # derandomized by the project's hypothesis profile (tests/conftest.py): the same draws every run
    check_against_cvxpy(case(n, seed, cost=cost, lam=lam, cap=cap, floor=floor))


def test_zero_costs_and_tilt_give_erc_exactly_caps_included() -> None:
    k = case(15, 3)
    rp = solve_risk_budget(k["cov"], k["b"], k["hi"], k["lo"], w0=k["w0"])  # same warm start: same rounding
    res = solve(k, c=np.zeros(15), lam=0.0)
    assert np.array_equal(res.weights, rp.weights)
    # ρ* is reported as the docs define it on this shortcut too (it was σ_p, which differs once caps bind)
    assert rp.capped.any() and res.rho == pytest.approx(independent_rho(k["cov"], k["b"], k["lo"], k["hi"]), rel=1e-9)
    assert abs(res.rho / math.sqrt(res.weights @ k["cov"] @ res.weights) - 1) > 1e-3
    # A tiny cost/tilt goes through the full solver and lands next to erc (the solution is continuous).
    res2 = solve(k, c=np.full(15, 1e-9), lam=1e-9)
    assert res2.iterations > rp.iterations
    assert np.max(np.abs(res2.weights - rp.weights)) < 1e-7
    # A constant μ is absorbed by Σw = 1.
    res3 = solve(k, c=np.zeros(15), mu=np.full(15, 0.3), lam=5.0)
    assert np.array_equal(res3.weights, rp.weights)


def test_mu_shift_invariance() -> None:
    k = case(10, 4)
    a = solve(k)
    b = solve(k, mu=k["mu"] + 0.7)
    assert np.max(np.abs(a.weights - b.weights)) < 1e-12


def test_costs_shrink_trading_and_stop_it_past_the_exact_threshold() -> None:
    """Monotone cost paid, and the no-trade threshold γ̄ computed from the KKT conditions at w0."""
    n = 8
    k = case(n, 11, cap=None, floor=False, lam=0.0)
    w0 = solve_risk_budget(k["cov"], k["b"]).weights * 0.6 + 0.4 / n  # a feasible, positive, unbalanced w0
    base = np.random.default_rng(1).uniform(0.5, 1.5, n)
    paid = []
    for gamma in [0.0, 0.001, 0.003, 0.01, 0.03, 0.1]:
        r = solve(k, w0=w0, c=gamma * base)
        paid.append(float(base @ np.abs(r.weights - w0)))
    assert all(b <= a + 1e-10 for a, b in zip(paid, paid[1:])), paid
    assert paid[0] > 0.01
    # γ̄ = min_ν max_i |g_i(w0) + ν| / base_i, with ρ from the plain solution (the barrier weight of Q).
    rho = solve(k, w0=w0, c=0.001 * base).rho
    g = k["cov"] @ w0 / math.sqrt(w0 @ k["cov"] @ w0) - rho * k["b"] / w0
    nus = np.linspace(-(g.max()), -(g.min()), 200001)
    gamma_bar = float(np.min(np.max(np.abs(g[None, :] + nus[:, None]) / base[None, :], axis=1)))
    above = solve(k, w0=w0, c=gamma_bar * 1.001 * base)
    assert np.array_equal(above.weights, w0) and above.held.all() and above.turnover == 0.0
    below = solve(k, w0=w0, c=gamma_bar * 0.98 * base)
    assert below.turnover > 1e-6 and not below.held.all()


def test_lambda_tilts_toward_mu() -> None:
    k = case(12, 5, cost=0.005)
    tilts = [float(k["mu"] @ solve(k, lam=lam).weights) for lam in [0.0, 0.1, 0.3, 1.0, 3.0]]
    assert all(b >= a - 1e-12 for a, b in zip(tilts, tilts[1:])), tilts
    assert tilts[-1] > tilts[0] + 1e-3


def test_risk_contributions_follow_the_documented_identity() -> None:
    """RC_i = ρ b_i + w_i(λμ̃_i − ν − c_i s_i) for traded assets inside their box (module docstring)."""
    k = case(10, 6, cap=None, floor=False)
    r = solve(k)
    w, cov = r.weights, k["cov"]
    rc = w * (cov @ w) / math.sqrt(w @ cov @ w)
    inside = ~r.held & ~r.capped & ~r.floored
    s = np.sign(w - k["w0"])
    mu_c = k["mu"] - k["mu"].mean()
    pred = r.rho * k["b"] + w * (k["lam"] * mu_c - r.nu - k["c"] * s)
    assert inside.sum() >= 3
    np.testing.assert_allclose(rc[inside], pred[inside], rtol=1e-8, atol=0)


def test_dev_grows_with_cost_and_lambda() -> None:
    k = case(10, 7, cap=None, floor=False)
    devs_c = [solve(k, c=np.full(10, c), lam=0.0).dev for c in [0.0, 0.001, 0.01]]
    devs_l = [solve(k, c=np.zeros(10), lam=lam).dev for lam in [0.0, 0.05, 0.5]]
    assert devs_c[0] < 1e-8 and devs_l[0] < 1e-8
    assert devs_c[0] < devs_c[1] < devs_c[2]
    assert devs_l[0] < devs_l[1] < devs_l[2]


def test_input_errors_name_the_assets() -> None:
    k = case(4, 8)
    names = ["A", "B", "C", "D"]
    with pytest.raises(OptimizerError, match=r"costs must be >= 0; negative for \['C'\]"):
        solve_cost_aware(k["cov"], w0=k["w0"], costs=[0, 0, -1, 0], names=names)
    with pytest.raises(OptimizerError, match=r"mu is NaN or inf for \['B'\]"):
        solve_cost_aware(k["cov"], w0=k["w0"], mu=[0, np.nan, 0, 0], lam=1.0, names=names)
    with pytest.raises(OptimizerError, match=r"current weights is NaN or inf for \['D'\]"):
        solve_cost_aware(k["cov"], w0=[0.3, 0.3, 0.4, np.inf], costs=[0.01] * 4, names=names)
    with pytest.raises(OptimizerError, match="lambda"):
        solve_cost_aware(k["cov"], w0=k["w0"], mu=k["mu"], lam=-1.0)
    with pytest.raises(InfeasibleBoundsError) as info:
        solve_cost_aware(k["cov"], upper=[0.2] * 4, w0=k["w0"], costs=[0.01] * 4, names=names)
    assert info.value.assets == tuple(names)
    bad = k["cov"].copy()
    bad[0, 1] = bad[1, 0] = 2 * math.sqrt(bad[0, 0] * bad[1, 1])
    with pytest.raises(OptimizerError, match="positive semi-definite"):
        solve_cost_aware(bad, w0=k["w0"], costs=[0.01] * 4)
    fixed = nearest_psd(bad)
    assert np.linalg.eigvalsh(fixed).min() > -1e-15
    assert solve_cost_aware(fixed, w0=k["w0"], costs=[0.01] * 4).weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("fast", [True, False])
def test_zero_variance_asset_capped_at_zero_is_sold_and_held_at_zero(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """erc's advice for a zero-variance asset, "cap it at 0", works in rp_cost too (compiled and numpy
    paths): the asset is sold to 0 (paying its cost) and the others solve Q without it."""
    monkeypatch.setattr(cost_aware, "FAST_PATH", fast)
    monkeypatch.setattr(erc, "FAST_PATH", fast)
    if fast:  # the compiled kernels must answer: the numpy methods would fail the test

        def numpy_method(*args: object, **kw: object) -> None:
            raise AssertionError("the numpy method ran")

        monkeypatch.setattr(cost_aware, "_solve_budget", numpy_method)
        monkeypatch.setattr(erc, "_active_set", numpy_method)
    n = 8
    k = case(n, 21, cost=0.02, lam=0.5, cap=2.0, floor=True)
    z = k["cov"].copy()
    z[3, :] = z[:, 3] = 0.0
    hi = k["hi"].copy()
    hi[3] = 0.0
    r = solve(k, cov=z, hi=hi)
    assert r.weights[3] == 0.0 and r.capped[3]
    assert r.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert r.cost >= k["c"][3] * k["w0"][3]  # selling it is paid for
    keep = np.flatnonzero(np.arange(n) != 3)
    sub = {**k, "cov": k["cov"][np.ix_(keep, keep)], "b": k["b"][keep], "hi": k["hi"][keep], "lo": k["lo"][keep],
           "w0": k["w0"][keep], "c": k["c"][keep], "mu": k["mu"][keep]}
    alone = solve(sub)
    assert np.max(np.abs(r.weights[keep] - alone.weights)) <= 1e-10
    assert r.held[keep].tolist() == alone.held.tolist()
    with pytest.raises(OptimizerError, match=r"zero variance for \['asset 3'\]; drop the asset or cap it at 0"):
        solve(k, cov=z)


def zero_holding_case() -> dict:
    """Six assets, no caps, λ = 0; the book holds nothing of asset 2 (w0_2 = 0)."""
    k = case(6, 31, cost=0.01, lam=0.0, cap=None, floor=False)
    w0 = k["w0"].copy()
    w0[2] = 0.0
    return {**k, "w0": w0 / w0.sum()}


def with_cost(k: dict, i: int, c_i: float) -> np.ndarray:
    c = k["c"].copy()
    c[i] = c_i
    return c


def test_a_zero_holding_is_bought_a_sliver_at_any_cost() -> None:
    """The documented limit: the barrier buys an asset held at 0 whatever its cost, a sliver of size
    w_i = ρ b_i / (g_i + ν + c_i), whose cost c_i w_i tends to ρ b_i as c_i grows."""
    k = zero_holding_case()
    prev = 1.0
    for c2 in [0.01, 0.1, 1.0, 10.0, 1e3]:
        r = solve(k, c=with_cost(k, 2, c2))
        w, cov = r.weights, k["cov"]
        assert 0 < w[2] < prev  # bought, less as the cost grows
        prev = w[2]
        g = (cov @ w)[2] / math.sqrt(w @ cov @ w) - k["lam"] * (k["mu"][2] - k["mu"].mean())
        assert w[2] == pytest.approx(r.rho * k["b"][2] / (g + r.nu + c2), rel=1e-8)
    assert c2 * w[2] == pytest.approx(r.rho * k["b"][2], rel=1e-2)  # it pays about its whole budget


def test_hold_zero_when_cost_exceeds_keeps_an_expensive_zero_holding_at_zero() -> None:
    k = zero_holding_case()
    args = (k["cov"], k["b"], k["hi"], k["lo"])
    kw = dict(w0=k["w0"], mu=k["mu"], lam=k["lam"])
    threshold = 0.05
    # at a prohibitive cost it stays at 0 exactly, and the rest is rp_cost with the asset capped at 0
    r = solve_cost_aware(*args, **kw, costs=with_cost(k, 2, 1.0), hold_zero_when_cost_exceeds=threshold)
    assert r.weights[2] == 0.0 and r.held_zero.tolist() == [False, False, True, False, False, False]
    capped = k["hi"].copy()
    capped[2] = 0.0
    ref = solve_cost_aware(k["cov"], k["b"], capped, k["lo"], **kw, costs=with_cost(k, 2, 1.0))
    np.testing.assert_allclose(r.weights, ref.weights, rtol=0, atol=1e-14)
    assert r.weights.sum() == pytest.approx(1.0, abs=1e-12) and np.all(r.weights[[0, 1, 3, 4, 5]] > 0)
    assert solve(k, c=with_cost(k, 2, 1.0)).weights[2] > 0.01  # without the option: the sliver
    # at cost 0 (and at the threshold itself) it is bought, and the option changes nothing
    for c2 in (0.0, threshold):
        on = solve_cost_aware(*args, **kw, costs=with_cost(k, 2, c2), hold_zero_when_cost_exceeds=threshold)
        off = solve_cost_aware(*args, **kw, costs=with_cost(k, 2, c2))
        assert on.weights[2] > 0.5 * solve_risk_budget(k["cov"], k["b"]).weights[2]
        assert np.array_equal(on.weights, off.weights) and not on.held_zero.any()
    # an asset the book holds is not affected, however expensive (it may keep or sell its holding)
    c = with_cost(k, 0, 1.0)
    on = solve_cost_aware(*args, **kw, costs=c, hold_zero_when_cost_exceeds=threshold)
    assert not on.held_zero.any() and np.array_equal(on.weights, solve_cost_aware(*args, **kw, costs=c).weights)


def test_hold_zero_is_not_applied_where_it_cannot_be() -> None:
    k = zero_holding_case()
    n = 6
    expensive = np.full(n, 1.0)
    # an empty book: the portfolio has to be bought, at any cost
    empty = solve_cost_aware(k["cov"], k["b"], w0=np.zeros(n), costs=expensive, hold_zero_when_cost_exceeds=0.05)
    plain = solve_cost_aware(k["cov"], k["b"], w0=np.zeros(n), costs=expensive)
    assert not empty.held_zero.any() and np.array_equal(empty.weights, plain.weights) and np.all(empty.weights > 0)
    # two zero holdings kept out would leave caps summing to 4 × 0.22 < 1: the rule stands down
    w0 = k["w0"].copy()
    w0[3] = 0.0
    caps = np.full(n, 0.22)
    r = solve_cost_aware(k["cov"], k["b"], caps, w0=w0 / w0.sum(), costs=expensive, hold_zero_when_cost_exceeds=0.05)
    assert not r.held_zero.any() and r.weights[2] > 0 and r.weights[3] > 0
    with pytest.raises(OptimizerError, match="hold_zero_when_cost_exceeds must be a finite number >= 0"):
        solve_cost_aware(k["cov"], w0=k["w0"], costs=expensive, hold_zero_when_cost_exceeds=-1.0)


def test_hold_zero_option_of_the_plugin() -> None:
    k = zero_holding_case()
    assets = ("A", "B", "C", "D", "E", "F")
    fc = Forecast.from_cov(assets, k["cov"] / 8760.0, "test")
    up, lo = np.ones(6), np.zeros(6)
    base = dict(cost_bps=10.0, costs_bps={"C": 500.0}, horizon_hours=24.0)
    bought = CostAwareOptimizer(CostAwareConfig(**base)).optimize(fc, upper=up, lower=lo, current=k["w0"])
    assert bought.weights[2] > 0 and bought.diagnostics["held_at_zero"] == []
    held = CostAwareOptimizer(CostAwareConfig(**base, hold_zero_when_cost_exceeds_bps=100.0)).optimize(
        fc, upper=up, lower=lo, current=k["w0"]
    )
    assert held.weights[2] == 0.0 and held.diagnostics["held_at_zero"] == ["C"]
    assert held.weights.sum() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(pydantic.ValidationError):
        CostAwareConfig(hold_zero_when_cost_exceeds_bps=-1.0)


def test_plugin_is_registered_strict_and_uses_forecast_mu() -> None:
    reg = Registry(make_plugin_manager())
    entry = next(r for r in reg if r.family == "optimizer" and r.name == "rp_cost")
    assert entry.config_model is CostAwareConfig
    with pytest.raises(pydantic.ValidationError):
        CostAwareConfig.model_validate({"lam": 1.0, "oops": 1})
    with pytest.raises(pydantic.ValidationError):
        CostAwareConfig.model_validate({"cost_bps": "10"})  # strict: no string coercion
    with pytest.raises(pydantic.ValidationError):
        CostAwareConfig.model_validate({"cost_bps": -1.0})
    cfg = CostAwareConfig(lam=0.05, cost_bps=5.0, costs_bps={"B": 50.0}, horizon_hours=24.0)
    with pytest.raises(pydantic.ValidationError):
        cfg.lam = 2.0  # type: ignore[misc]
    k = case(4, 9)
    assets = ("A", "B", "C", "D")
    cov_h = k["cov"] / 8760.0
    mu_h = k["mu"] / 8760.0
    fc = Forecast.from_cov(assets, cov_h, "test", mu=mu_h)
    up, lo = np.ones(4), np.zeros(4)
    t = CostAwareOptimizer(cfg).optimize(fc, upper=up, lower=lo, current=k["w0"])
    h = math.sqrt(24.0)
    c = np.array([5.0, 50.0, 5.0, 5.0]) / 1e4 / h
    direct = solve_cost_aware(cov_h, None, up, lo, w0=k["w0"], costs=c, mu=mu_h, lam=0.05 * h)
    np.testing.assert_array_equal(t.weights, direct.weights)
    assert t.risk_contributions.sum() == pytest.approx(1.0)
    assert t.diagnostics["turnover"] == pytest.approx(direct.turnover)
    # Without μ in the forecast, the tilt is off; without costs it is erc.
    fc0 = Forecast.from_cov(assets, cov_h, "test")
    t0 = CostAwareOptimizer(CostAwareConfig(lam=1.0, cost_bps=0.0)).optimize(fc0, upper=up, lower=lo, current=k["w0"])
    np.testing.assert_array_equal(t0.weights, solve_risk_budget(cov_h, None, up, lo, w0=k["w0"]).weights)
    with pytest.raises(OptimizerError, match="outside the universe"):
        CostAwareOptimizer(CostAwareConfig(costs_bps={"ZZZ": 1.0})).optimize(fc, upper=up, lower=lo, current=k["w0"])


@pytest.mark.parametrize("seed", range(8))
def test_compiled_solver_is_the_numpy_method(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # _cost_kernel.solve_budget is a line-by-line twin of _solve_budget: same iterates, same answer.
    k = case(6 + 3 * seed, 40 + seed, cost=0.02 * (seed % 3), lam=0.5 * (seed % 2), floor=seed % 2 == 0)
    compiled = solve(k)
    monkeypatch.setattr(cost_aware, "FAST_PATH", False)
    monkeypatch.setattr(erc, "FAST_PATH", False)
    reference = solve(k)
    assert np.max(np.abs(compiled.weights - reference.weights)) <= 1e-12
    assert compiled.held.tolist() == reference.held.tolist()
    assert compiled.nu == pytest.approx(reference.nu, rel=1e-9, abs=1e-15)


def test_without_the_compiled_solver_numpy_answers_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    k = case(10, 7)
    compiled = solve(k)
    monkeypatch.setattr(cost_aware, "_kernel", None)
    monkeypatch.setitem(sys.modules, "plugins.optimizers._cost_kernel", None)
    with caplog.at_level("WARNING", logger=cost_aware.__name__):
        plain = solve(k)
    assert "compiled solver unavailable" in caplog.text and cost_aware._kernel is False
    assert np.max(np.abs(compiled.weights - plain.weights)) <= 1e-12


# A cycle of `rwabot backtest` (rp_cost, cost_bps 12, horizon 720 h, policy full, simulated data seed 11)
# that failed with "no convergence within max_iter=200": the ewma Σ of the default universe, volume caps
# (1/0.99 = uncapped under the cash buffer), the holdings w0; costs 12 bps / √720.
CYCLE_COV = np.array([
    [2.5160889217553546e-06, 1.1536195319596941e-07, 1.0528033984440656e-06, 1.8559732005253784e-06,
     -1.0633600332349866e-09, 1.7398855502989121e-08, 7.9025096818442282e-09, 7.9882474449381751e-07],
    [1.1536195319596941e-07, 2.7144246713342981e-06, 1.5619987439139283e-07, 2.9462968668676596e-07,
     4.0315935819393836e-09, 8.0152769366554863e-09, -4.2596123028435441e-08, 8.4225794668760831e-08],
    [1.0528033984440656e-06, 1.5619987439139283e-07, 3.8272506122612002e-06, 8.5007992485015293e-07,
     1.0769919590243453e-08, 3.2687884121705609e-08, 2.4035545580934891e-08, 3.2313975355671692e-06],
    [1.8559732005253784e-06, 2.9462968668676596e-07, 8.5007992485015293e-07, 5.6094093701885283e-06,
     1.9170223394216936e-08, 7.9846335586957632e-08, -1.2750656466199833e-08, 5.0305278333582022e-07],
    [-1.0633600332349866e-09, 4.0315935819393836e-09, 1.0769919590243453e-08, 1.9170223394216936e-08,
     3.9008759189823126e-09, 1.0336806335099021e-09, 4.4096404154097503e-10, 6.5568956022178203e-09],
    [1.7398855502989121e-08, 8.0152769366554863e-09, 3.2687884121705609e-08, 7.9846335586957632e-08,
     1.0336806335099021e-09, 4.7977839401239388e-08, 2.9618658194292282e-09, 5.4407314629819464e-10],
    [7.9025096818442282e-09, -4.2596123028435441e-08, 2.4035545580934891e-08, -1.2750656466199833e-08,
     4.4096404154097503e-10, 2.9618658194292282e-09, 6.0687770073847489e-08, 1.0044195383611618e-08],
    [7.9882474449381751e-07, 8.4225794668760831e-08, 3.2313975355671692e-06, 5.0305278333582022e-07,
     6.5568956022178203e-09, 5.4407314629819464e-10, 1.0044195383611618e-08, 3.1734591019854978e-06],
])
CYCLE_UPPER = np.array([1.0101010101010102, 1.0101010101010102, 1.0101010101010102, 1.0101010101010102,
                        0.7492412971705564, 0.06084437244890222, 0.3075389119018119, 1.0101010101010102])
CYCLE_W0 = np.array([0.022996905260482977, 0.03201041791087913, 0.015547351238492029, 0.015419016331970636,
                     0.6371566622824654, 0.059990200366892135, 0.19832631301888742, 0.019696601768434754])


@pytest.mark.parametrize("fast", [True, False])
def test_a_cycle_that_did_not_converge_now_does(fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Newton on ν alternated inside its bracket between two pieces of Σx(ν) (assets leaving w0) until
    max_iter; the bisection safeguard (a step not half the one before last) makes it converge."""
    monkeypatch.setattr(cost_aware, "FAST_PATH", fast)
    n = len(CYCLE_W0)
    c = np.full(n, 12e-4 / math.sqrt(720.0))
    lo = np.zeros(n)
    r = solve_cost_aware(CYCLE_COV, None, CYCLE_UPPER, lo, w0=CYCLE_W0, costs=c)
    w = r.weights
    assert abs(w.sum() - 1.0) <= 1e-12 and np.all(w <= CYCLE_UPPER) and np.all(w > 0)
    zero = np.zeros(n)
    assert kkt_residual(w, CYCLE_COV, np.full(n, 1 / n), lo, CYCLE_UPPER, CYCLE_W0, c, zero, 0.0, r.rho) <= 1e-8
    assert r.iterations - r.rp.iterations <= 100
    assert r.turnover > 0 and r.held.any()  # it trades, and leaves some assets alone
