"""rp_cost: the cost-aware, return-tilted risk parity of plugins/optimizers/cost_aware.py.

Every claim of its module docstring is checked against something computed here, not by the solver:
KKT residuals of Q, the same problem solved by cvxpy (Clarabel, SOC + exponential cone), the exact
no-trade threshold, and the monotonicity in the cost scale and in λ.
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq, minimize, root

from bot.domain import Forecast, GroupBound
from bot.errors import InfeasibleBoundsError, OptimizerError
from bot.plugins import Registry, make_plugin_manager
from plugins.optimizers import cost_aware, erc
from plugins.optimizers._groups import solve_group_risk_budget
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


# -- venue budgets (groups) ---------------------------------------------------------------------------------------


def grouped_case(n: int, seed: int, **kw: object) -> tuple[dict, list[GroupBound]]:
    """``case`` plus 1–3 disjoint groups (some assets in none) with budgets cut from erc's own group weights
    (so that they bind), one of them with a lower bound above erc's weight when there are three."""
    k = case(n, seed, **kw)
    rng = np.random.default_rng(1000 + seed)
    rp = solve_risk_budget(k["cov"], k["b"], k["hi"], k["lo"]).weights
    while True:
        m = int(rng.integers(1, 4))
        gid = rng.integers(-1, m, n)
        gid[rng.permutation(n)[:m]] = np.arange(m)
        groups = []
        for j in range(m):
            mem = gid == j
            share = float(rp[mem].sum())
            if j == 2:
                groups.append(GroupBound(f"venue:{j}", mem, 1.0, min(share * 1.3, 0.9 * float(k["hi"][mem].sum()))))
            else:
                groups.append(GroupBound(f"venue:{j}", mem, share * rng.uniform(0.5, 0.95)))
        room = sum(min(g.upper, float(k["hi"][g.members].sum())) for g in groups) + float(k["hi"][gid < 0].sum())
        floors = sum(max(g.lower, float(k["lo"][g.members].sum())) for g in groups) + float(k["lo"][gid < 0].sum())
        if room > 1.01 and floors < 0.99:  # feasible with room to spare
            return k, groups


def solve_grouped(k: dict, groups: list[GroupBound], **over: object):
    k = {**k, **over}
    return solve_cost_aware(k["cov"], k["b"], k["hi"], k["lo"], w0=k["w0"], costs=k["c"], mu=k["mu"], lam=k["lam"],
                            groups=groups)


def grouped_kkt(w: np.ndarray, k: dict, groups: list[GroupBound], mu: np.ndarray, rho: float,
                tol: float = 1e-9, zero: tuple[str, ...] = ()) -> tuple[float, np.ndarray]:
    """Largest violation of Q's KKT conditions with the group bounds, relative to ρ b_i / w_i, and the group
    multipliers: ν and η_g (one per group on a bound, except those in ``zero``, held at η = 0: where the
    budgets pin the book only ν + η_g is determined) by least squares from the assets inside a piece, then
    the signs (η_g ≥ 0 at U_g, ≤ 0 at L_g) and the conditions of the assets at w0, caps and floors."""
    cov, b, lo, hi, w0, c, lam = k["cov"], k["b"], k["lo"], k["hi"], k["w0"], k["c"], k["lam"]
    n = len(w)
    sig = math.sqrt(w @ cov @ w)
    g = cov @ w / sig - lam * mu - rho * b / w
    scale = rho * b / w
    gid = np.full(n, -1)
    on = []
    for j, gb in enumerate(groups):
        gid[gb.members] = j
        sj = float(w[gb.members].sum())
        on.append(1 if sj >= gb.upper - 1e-11 else (-1 if gb.lower > 0 and sj <= gb.lower + 1e-11 else 0))
    at_hi = w >= hi - tol
    at_lo = (w <= lo + tol) & (lo > 0)
    at_w0 = (np.abs(w - w0) <= tol) & (c > 0) & ~at_hi & ~at_lo
    s = np.sign(w - w0)
    inside = ~at_hi & ~at_lo & ~at_w0
    cols = [j for j in range(len(groups))
            if on[j] != 0 and (inside & (gid == j)).any() and groups[j].name not in zero]
    a = np.column_stack([np.ones(int(inside.sum()))] + [(gid[inside] == j).astype(float) for j in cols])
    sol = np.linalg.lstsq(a, -(g + c * s)[inside], rcond=None)[0]
    assert np.linalg.matrix_rank(a) == a.shape[1], "ν and the η_g are not identified on this case"
    nu, eta = float(sol[0]), np.zeros(len(groups))
    eta[cols] = sol[1:]
    shift = nu + np.where(gid >= 0, eta[np.maximum(gid, 0)], 0.0)
    r = np.zeros(n)
    r[inside] = np.abs(g + c * s + shift)[inside]
    r[at_w0] = np.maximum(np.abs(g + shift) - c, 0.0)[at_w0]
    s_hi = np.where(np.abs(w - w0) <= tol, -1.0, s)
    r[at_hi] = np.maximum(g + c * s_hi + shift, 0.0)[at_hi]
    s_lo = np.where(np.abs(w - w0) <= tol, 1.0, s)
    r[at_lo] = np.maximum(-(g + c * s_lo + shift), 0.0)[at_lo]
    # a group on a bound with no member inside a piece (all at caps, floors or w0): its η is not identified;
    # some η of the right sign must satisfy all its members' conditions at once
    alone = [j for j in range(len(groups)) if on[j] != 0 and j not in cols and groups[j].name not in zero]
    for j in alone:
        mem = (gid == j) & (hi - lo > tol)  # (a member with lower = upper has no condition to meet)
        if not mem.any():
            continue
        top = np.full(n, np.inf)
        bottom = np.full(n, -np.inf)
        base = g + nu
        top[at_hi] = -(base + c * s_hi)[at_hi]
        bottom[at_lo] = -(base + c * s_lo)[at_lo]
        top[at_w0] = (c - base)[at_w0]
        bottom[at_w0] = (-c - base)[at_w0]
        hi_eta, lo_eta = float(np.min(top[mem])), float(np.max(bottom[mem]))
        hi_eta, lo_eta = (hi_eta, max(lo_eta, 0.0)) if on[j] > 0 else (min(hi_eta, 0.0), lo_eta)
        r[gid == j] = 0.0
        worst_j = (lo_eta - hi_eta) / float(np.mean(scale[mem]))
        r[np.flatnonzero(mem)[0]] = max(worst_j, 0.0) * scale[np.flatnonzero(mem)[0]]
    r[hi - lo <= tol] = 0.0  # lower = upper: no condition to meet
    worst = float(np.max(r / scale))
    for j in range(len(groups)):  # the multiplier's sign, relative to its members' barrier gradient
        if on[j] != 0:
            worst = max(worst, -on[j] * eta[j] / float(np.mean(scale[gid == j])))
    return worst, eta


def cvxpy_grouped(k: dict, groups: list[GroupBound], mu: np.ndarray, rho: float) -> np.ndarray:
    cov, b = k["cov"], k["b"]
    lam_, vec = np.linalg.eigh(cov)
    root = vec * np.sqrt(np.clip(lam_, 0, None))
    w = cp.Variable(len(b))
    obj = cp.norm(root.T @ w) - k["lam"] * mu @ w + k["c"] @ cp.abs(w - k["w0"]) - rho * (b @ cp.log(w))
    cons = [cp.sum(w) == 1, w >= k["lo"], w <= k["hi"]]
    for gb in groups:
        mem = gb.members.astype(float)
        cons.append(mem @ w <= gb.upper)
        if gb.lower > 0:
            cons.append(mem @ w >= gb.lower)
    prob = cp.Problem(cp.Minimize(obj), cons)
    for tol, step in ((1e-11, 0.99), (1e-11, 0.9), (1e-10, 0.8), (1e-9, 0.8)):
        try:  # Clarabel on exponential cones: shorter steps where the default ones stall
            with warnings.catch_warnings():  # ("inaccurate": the next, shorter steps)
                warnings.simplefilter("ignore", UserWarning)
                prob.solve(solver="CLARABEL", tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, max_step_fraction=step)
        except cp.error.SolverError:
            continue
        if prob.status == "optimal":
            return np.asarray(w.value)
    raise AssertionError(f"cvxpy: {prob.status}")


@pytest.mark.parametrize("seed", range(8))
def test_group_budgets_hold_inside_q_and_agree_with_cvxpy(seed: int) -> None:
    """Venue budgets are constraints of Q, not a rescale: Q with the groups solved by cvxpy (ρ* of erc's
    solution under the same groups, which tests/plugins/test_group_bounds.py checks against its own cvxpy
    reference) gives our weights; Q's KKT conditions with one multiplier per binding group hold."""
    n = [5, 7, 8, 10, 12, 15, 20, 9][seed]
    k, groups = grouped_case(n, 50 + seed, cost=[0.0, 0.005, 0.01, 0.02, 0.05, 0.01, 0.003, 0.03][seed],
                             lam=[0.3, 0.0, 0.5, 1.0, 0.2, 2.0, 0.0, 0.7][seed], floor=seed % 2 == 0)
    rp = solve_group_risk_budget(k["cov"], k["b"], k["hi"], k["lo"], groups)
    res = solve_grouped(k, groups)
    assert res.rho == pytest.approx(rp.rho, rel=1e-12)
    w = res.weights
    assert abs(w.sum() - 1.0) <= 1e-12 and np.all(w <= k["hi"] + 1e-15) and np.all(w >= k["lo"] - 1e-15)
    for gb in groups:
        assert gb.lower - 1e-12 <= w[gb.members].sum() <= gb.upper + 1e-12
        if gb.name in res.groups:
            assert w[gb.members].sum() == pytest.approx(gb.upper if res.groups[gb.name] == "upper" else gb.lower,
                                                        abs=1e-14)
    assert rp.groups  # the budgets bind erc's portfolio (they were cut below its own weights)
    mu_c = k["mu"] - k["mu"].mean()
    worst, eta = grouped_kkt(w, k, groups, mu_c, res.rho)
    assert worst <= 1e-8
    for j, gb in enumerate(groups):  # the reported multipliers are the ones the KKT conditions need
        assert res.group_multipliers[gb.name] == pytest.approx(eta[j], rel=1e-6, abs=1e-9 * res.rho)
    ref = cvxpy_grouped(k, groups, mu_c, res.rho)
    assert np.max(np.abs(w - ref)) <= 1e-6
    # a rescale after optimising (the cycle's fallback) is not what this is: it would break Q's KKT conditions
    plain = solve(k).weights.copy()
    for gb in groups:
        over = plain[gb.members].sum() - gb.upper
        if over > 1e-9:
            plain[gb.members] *= gb.upper / plain[gb.members].sum()
    assert np.max(np.abs(plain - w)) > 1e-4


def test_group_budgets_with_zero_costs_and_tilt_are_ercs_group_solution() -> None:
    k, groups = grouped_case(12, 3)
    rp = solve_group_risk_budget(k["cov"], k["b"], k["hi"], k["lo"], groups, w0=k["w0"])
    res = solve_grouped(k, groups, c=np.zeros(12), lam=0.0)
    assert rp.groups and np.array_equal(res.weights, rp.weights) and res.groups == rp.groups
    # through the dual iteration (a tiny cost) it lands next to it, with erc's binding groups and multipliers
    res2 = solve_grouped(k, groups, c=np.full(12, 1e-10), lam=1e-10)
    assert res2.iterations > rp.iterations
    assert np.max(np.abs(res2.weights - rp.weights)) < 1e-8
    assert res2.groups == rp.groups
    for name, m in rp.multipliers.items():
        assert res2.group_multipliers[name] == pytest.approx(m, rel=1e-5, abs=1e-12)


def test_pinned_group_budgets_with_costs_report_the_least_constrained_group_free() -> None:
    """Every asset on a venue and Σ U_g = 1: the book is pinned, ν and the η_g are determined only up to a
    common shift; rp_cost picks erc's choice (the least constrained budget reported not binding)."""
    k = case(8, 21, cap=None, floor=False)
    rp0 = solve_risk_budget(k["cov"], k["b"]).weights
    a = np.arange(8) < 4
    ups = np.array([rp0[a].sum() * 0.7, 0.0])
    ups[1] = 1.0 - ups[0]
    groups = [GroupBound("venue:a", a, float(ups[0])), GroupBound("venue:b", ~a, float(ups[1]))]
    res = solve_grouped(k, groups)
    assert res.weights[a].sum() == pytest.approx(ups[0], abs=1e-14)
    assert res.groups == {"venue:a": "upper"} and res.group_multipliers["venue:b"] == 0.0
    mu_c = k["mu"] - k["mu"].mean()
    worst, eta = grouped_kkt(res.weights, k, groups, mu_c, res.rho, zero=("venue:b",))
    assert worst <= 1e-8  # with venue:b's η = 0 every sign holds: the reported split is a valid one
    assert res.group_multipliers["venue:a"] == pytest.approx(eta[0], rel=1e-6)
    ref = cvxpy_grouped(k, groups, mu_c, res.rho)
    assert np.max(np.abs(res.weights - ref)) <= 1e-6


def test_no_groups_is_todays_rp_cost_bit_for_bit() -> None:
    k = case(10, 4)
    assert np.array_equal(solve(k).weights, solve_cost_aware(
        k["cov"], k["b"], k["hi"], k["lo"], w0=k["w0"], costs=k["c"], mu=k["mu"], lam=k["lam"], groups=()).weights)
    # groups that do not bind anywhere on the way change nothing either (to solver precision)
    loose = [GroupBound("venue:all", np.ones(10, bool), 1.0)]
    assert np.max(np.abs(solve(k).weights - solve_grouped(k, loose).weights)) <= 1e-12


def test_plugin_takes_venue_budgets_and_names_the_binding_ones() -> None:
    import inspect

    assert "groups" in inspect.signature(CostAwareOptimizer.optimize).parameters  # the cycle's test
    k, groups = grouped_case(6, 7)
    fc = Forecast.from_cov(tuple("ABCDEF"), k["cov"] / 8760.0, "test")
    t = CostAwareOptimizer(CostAwareConfig(cost_bps=10.0)).optimize(
        fc, upper=k["hi"], lower=k["lo"], current=k["w0"], groups=groups)
    assert t.diagnostics["groups"] and set(t.diagnostics["groups"]) <= {g.name for g in groups}
    for name, side in t.diagnostics["groups"].items():
        gb = next(g for g in groups if g.name == name)
        assert t.weights[gb.members].sum() == pytest.approx(gb.upper if side == "upper" else gb.lower, abs=1e-12)
    plain = CostAwareOptimizer(CostAwareConfig(cost_bps=10.0)).optimize(fc, upper=k["hi"], lower=k["lo"],
                                                                        current=k["w0"])
    assert "groups" not in plain.diagnostics
    with pytest.raises(InfeasibleBoundsError, match="venue:0"):
        CostAwareOptimizer().optimize(fc, upper=k["hi"], lower=k["lo"], current=k["w0"],
                                      groups=[GroupBound("venue:0", np.ones(6, bool), 0.5)])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(4, 20), st.integers(0, 2**31 - 1), st.sampled_from([0.001, 0.005, 0.02, 0.05]), st.floats(0.0, 2.0),
       st.sampled_from([None, 1.4, 2.0]), st.booleans())
def test_group_budgets_satisfy_q_kkt_on_drawn_problems(n: int, seed: int, cost: float, lam: float, cap: float | None,
                                                        floor: bool) -> None:
    k, groups = grouped_case(n, seed % 100_000, cost=cost, lam=lam, cap=cap, floor=floor)
    try:
        res = solve_grouped(k, groups)
    except OptimizerError as exc:  # floors that force hedges: no risk parity even before the costs
        assert "no risk-budgeting portfolio" in str(exc)
        return
    w = res.weights
    assert abs(w.sum() - 1.0) <= 1e-12 and np.all(w <= k["hi"]) and np.all(w >= k["lo"])
    for gb in groups:
        assert gb.lower - 1e-12 <= w[gb.members].sum() <= gb.upper + 1e-12
    worst, _ = grouped_kkt(w, k, groups, k["mu"] - k["mu"].mean(), res.rho)
    assert worst <= 1e-8
