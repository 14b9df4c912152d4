"""Venue budgets: ``solve_group_risk_budget`` (plugins/optimizers/_groups.py) against an independent reference.

The reference is built here from the problem's definition only (the module docstring): for a given t, P_G(t)

    minimise ½xᵀSx − t Σ b_i log x_i   s.t.  lower ≤ x ≤ upper,  L_g ≤ Σ_{i∈g} x_i ≤ U_g

is solved by cvxpy (Clarabel, exponential cones), and t is found by a root search on Σx(t) = 1. Where Σx(t) = 1
on a whole interval of t (the binding budgets pin the book, "Degenerate budgets" in the docstring), the answer
is the end of that interval that the budgets slack by ε reach as ε → 0: the reference solves the problem with
every U_g raised by ε (or every L_g lowered by ε) for ε and 2ε, both regular, and extrapolates to ε = 0
(Richardson; the solution is smooth in ε while the active set holds). Nothing of the solver under test is used.

The solver's output is then checked on its own terms, measured here from w and Σ: constraints to 1e-10,
RC_i / b_i equal on the free assets (dev ≤ 1e-8), stationarity of every asset at no box bound with one
multiplier per binding group, and the KKT signs (η_g ≥ 0 at U_g, ≤ 0 at L_g; capped assets' gradient ≤ 0,
floored ≥ 0). Clarabel at a duality gap of 1e-12 gives the weights to ~1e-9 (1e-7 where the slack
extrapolation is needed), so they are compared at 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from bot.domain import GroupBound
from bot.errors import InfeasibleBoundsError, OptimizerError
from plugins.optimizers import _groups
from plugins.optimizers._groups import solve_group_risk_budget
from plugins.optimizers.erc import solve_risk_budget

cp = pytest.importorskip("cvxpy")
pytestmark = pytest.mark.filterwarnings(  # cvxpy on the tries the reference discards
    "ignore:Solution may be inaccurate", "ignore:invalid value encountered in log"
)

WEIGHT_ATOL = 1e-6
"""Our weights against cvxpy's: its accuracy, not ours (measured: median 1e-9, worst 4e-7 over 1,800 draws)."""
AT_BOUND = 1e-11
"""A weight (or a group's sum) this close to a bound is taken to sit on it: the solver puts bound assets
exactly on their bounds and rescales binding groups exactly onto theirs."""


# -- the reference ----------------------------------------------------------------------------------------


@dataclass
class Case:
    cov: np.ndarray
    b: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    groups: list[GroupBound]

    def solve(self, **kw: object) -> _groups.GroupRiskBudgetResult:
        return solve_group_risk_budget(self.cov, self.b, self.hi, self.lo, self.groups, **kw)


class PG:
    """P_G(t) as a cvxpy problem with a parameter for 1/t (the objective divided by t keeps its terms O(1));
    assets capped at 0 are out of it (their log would be −∞), as in the problem's definition."""

    def __init__(self, k: Case, slack: float = 0.0, side: str = "upper") -> None:
        self.n = len(k.b)
        self.idx = np.flatnonzero(k.hi > 0)
        s = k.cov[np.ix_(self.idx, self.idx)]
        s = s / float(np.max(np.diag(s)))
        self.s = s
        lam, vec = np.linalg.eigh(s)
        root = vec * np.sqrt(np.clip(lam, 0.0, None))  # S = root rootᵀ
        self.b = k.b[self.idx] / k.b[self.idx].sum()
        m = len(self.idx)
        self.x = cp.Variable(m)
        self.inv_t = cp.Parameter(nonneg=True)
        obj = 0.5 * self.inv_t * cp.sum_squares(root.T @ self.x) - self.b @ cp.log(self.x)
        lo, hi = k.lo[self.idx].copy(), k.hi[self.idx].copy()
        cons = []
        for g in k.groups:
            inside = np.asarray(g.members)[self.idx]
            mem = inside.astype(float)
            up = g.upper + (slack if side == "upper" else 0.0)
            low = max(g.lower - (slack if side == "lower" else 0.0), 0.0)
            if not inside.any():
                continue
            # a bound that leaves its members no choice (L_g at their caps, U_g at their floors) fixes them:
            # the same set, written as equalities (an interior-point method needs an interior elsewhere)
            if low >= hi[inside].sum() - 1e-12:
                lo[inside] = hi[inside]
            elif up <= lo[inside].sum() + 1e-12:
                hi[inside] = lo[inside]
            else:
                cons.append(mem @ self.x <= up)
                if low > 0:
                    cons.append(mem @ self.x >= low)
        fixed = lo >= hi
        if fixed.any():
            cons.append(self.x[np.flatnonzero(fixed)] == hi[fixed])
        cons.append(self.x[np.flatnonzero(~fixed)] <= hi[~fixed])
        if (lo[~fixed] > 0).any():
            cons.append(self.x[np.flatnonzero(~fixed)] >= lo[~fixed])
        self.prob = cp.Problem(cp.Minimize(obj), cons)
        g0 = np.sqrt(self.b / np.diag(s))
        g0 /= g0.sum()
        self.u0 = math.log(float(g0 @ s @ g0))  # log t of the diagonal-Σ guess: t* is near it
        self.solves = 0

    def x_of(self, t: float, accurate: bool = True) -> np.ndarray:
        """x(t) over all assets; Clarabel is retried with other step and scaling settings on a failure (and t
        nudged by 1e-9 relative, up to 1e-4 where only a sign is needed); ``accurate`` accepts only an
        "optimal" status."""
        tries = [(1e-12, 0.0, 0.9, True), (1e-11, 0.0, 0.9, True), (1e-10, 0.0, 0.8, True),
                 (1e-10, 0.0, 0.9, False), (1e-10, 1e-9, 0.99, True), (1e-9, 1e-9, 0.8, True)]
        if not accurate:
            tries += [(1e-8, 1e-7, 0.8, True), (1e-8, -1e-7, 0.8, False), (1e-8, 1e-4, 0.8, True)]
        for tol, nudge, step, equilibrate in tries:
            self.inv_t.value = 1.0 / (t * (1.0 + nudge))
            self.solves += 1
            try:  # (cvxpy's warm start of Clarabel leaves it inaccurate; shorter steps make it robust)
                self.prob.solve(solver="CLARABEL", tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, max_iter=500,
                                warm_start=False, max_step_fraction=step, equilibrate_enable=equilibrate)
            except cp.error.SolverError:
                continue
            if self.prob.status == "optimal" or (not accurate and self.prob.status == "optimal_inaccurate"):
                w = np.zeros(self.n)
                w[self.idx] = self.x.value
                return w
        raise cp.error.SolverError(f"Clarabel fails on P_G(t) at t = {t:.6g}")

    def gap(self, u: float, accurate: bool = True) -> float:
        """Σx(e^u) − 1."""
        return float(self.x_of(math.exp(u), accurate).sum()) - 1.0

    def root(self, a: float, z: float) -> tuple[np.ndarray, float]:
        """x(t) and log t at the root of Σx(t) = 1 between log t = a and z (widened until bracketed)."""
        while self.gap(a, False) >= 0:
            a -= 1.0
        while self.gap(z, False) <= 0:
            z += 1.0
        u = brentq(self.gap, a, z, xtol=1e-14, rtol=1e-15, maxiter=200)
        return self.x_of(math.exp(u)), u


FLAT = 1e-7
"""|Σx(t) − 1| below this is 'on the plateau' (cvxpy's noise in Σx is ~1e-9)."""


def reference(k: Case, eps: float = 1e-5) -> tuple[np.ndarray | None, str, float]:
    """(weights, kind, log t): kind "regular" (one root), "smallest"/"largest" (Σx(t) = 1 for all t ≥ t0, resp. all
    t ≤ t1: the budgets pin the book; the answer is that end t0 or t1, through slack budgets ε → 0) or "none"
    (Σx(t) > 1 even as t → 0: no risk-budgeting portfolio)."""
    pg = PG(k)
    # Σx(t) is non-decreasing in t. Going down: a t with Σx < 1, a plateau (Σx = 1 at two points three
    # units of log t apart) or, at e^-20 below the guess, Σx(0+) > 1
    a, run = pg.u0 - 1.0, 0
    ga = pg.gap(a, False)
    while ga >= -FLAT and a > pg.u0 - 20.0:
        run = run + 1 if ga <= FLAT else 0
        if run == 2:
            break
        a -= 3.0
        ga = pg.gap(a, False)
    if ga > FLAT:
        assert ga > 1e-5, f"Σx(0+) − 1 = {ga:.3g}: too close to call"
        return None, "none", math.nan
    z, run = pg.u0 + 1.0, 0
    gz = pg.gap(z, False)
    while gz <= FLAT and z < pg.u0 + 20.0:
        run = run + 1 if gz >= -FLAT else 0
        if run == 2:
            break
        z += 3.0
        gz = pg.gap(z, False)
    assert gz >= -FLAT, "Σx(t) < 1 for every t: the bounds admit no fully invested portfolio"
    if ga < -FLAT and gz > FLAT:
        x, u = pg.root(a, z)
        flat = [abs(pg.gap(u + h, False)) < FLAT for h in (-1e-3, 1e-3)]
        assert not any(flat), "a plateau with two ends: not a case these tests generate"
        return x, "regular", u
    assert not (ga >= -FLAT and gz <= FLAT), "Σx(t) = 1 for every t: the budgets leave one choice"
    kind = "smallest" if gz <= FLAT else "largest"
    # the end of the plateau, roughly (bisection on the flat test), then slack budgets on both sides of it
    left, right = a, z
    for _ in range(30):
        mid = 0.5 * (left + right)
        on = abs(pg.gap(mid, False)) <= FLAT
        if on == (kind == "smallest"):
            right = mid
        else:
            left = mid
    end = 0.5 * (left + right)
    ws, us = [], []
    for e in (eps, 2 * eps):
        slack = PG(k, e, "upper" if kind == "smallest" else "lower")
        x, u = slack.root(end - 0.5, end + 0.5)
        ws.append(x)
        us.append(u)
    u_end = 2 * us[0] - us[1]
    assert abs(u_end - end) < 0.05, (u_end, end)  # the slack problems' t tends to the plateau's end
    return 2 * ws[0] - ws[1], kind, u_end


# -- the checks on the solver's output, from w and Σ alone -----------------------------------------------------


@dataclass
class Kkt:
    dev: float  # max |ρ_i / mean − 1| over the free assets (no box bound, no group on a bound)
    stationarity: float  # max relative residual of (Sw)_i + η_g(i) − t b_i / w_i at no box bound
    sign: float  # worst KKT sign violation, relative to t b_i / w_i
    constraints: float  # worst bound, group or Σw = 1 violation
    identified: bool  # t and the η_g are determined by the off-bound assets (full column rank)
    eta: np.ndarray  # per group, relative to its members' t b_i / w_i (0 when not on a bound)
    on_bound: np.ndarray  # per group: +1 at U_g, −1 at L_g, 0 inside


def kkt(w: np.ndarray, k: Case) -> Kkt:
    """Stationarity with one multiplier per group on a bound, read off w: for an asset at no box bound,
    (Sw)_i + η_g(i) − t b_i / w_i = 0 (η = 0 outside groups on a bound); t and η solved by least squares."""
    live = k.hi > 0
    s = k.cov / float(np.max(np.diag(k.cov)))
    b = np.where(live, k.b, 0.0) / float(k.b[live].sum())
    sw = s @ w
    n, m = len(w), len(k.groups)
    gid = np.full(n, -1)
    on = np.zeros(m, int)
    viol = max(abs(float(w.sum()) - 1.0), float(np.max(w - k.hi)), float(np.max(k.lo - w)))
    for j, g in enumerate(k.groups):
        gid[g.members] = j
        sg = float(w[g.members].sum())
        viol = max(viol, sg - g.upper, g.lower - sg)
        on[j] = 1 if sg >= g.upper - AT_BOUND else (-1 if g.lower > 0 and sg <= g.lower + AT_BOUND else 0)
    capped = live & (w >= k.hi - AT_BOUND)  # (lower = upper counts as capped: the signs skip it below)
    floored = live & (k.lo > 0) & (w <= k.lo + AT_BOUND) & ~capped
    off = live & ~capped & ~floored
    held = np.array([gid[i] >= 0 and on[gid[i]] != 0 for i in range(n)])
    free = off & ~held
    rho = np.where(live, w * sw / np.where(live, b, 1.0), 0.0)
    dev = float(np.max(np.abs(rho[free] / rho[free].mean() - 1.0))) if free.any() else 0.0
    cols = [j for j in range(m) if on[j] != 0 and (off & (gid == j)).any()]
    oi = np.flatnonzero(off)
    a = np.zeros((len(oi), 1 + len(cols)))
    a[:, 0] = -b[oi] / w[oi]
    for c, j in enumerate(cols):
        a[:, 1 + c] = gid[oi] == j
    sol, _, rank, _ = np.linalg.lstsq(a, -sw[oi], rcond=None)
    t = float(sol[0])
    eta = np.zeros(m)
    for c, j in enumerate(cols):
        eta[j] = sol[1 + c]
    barrier = t * b / np.where(w > 0, w, 1.0)
    rel = (sw + np.where(gid >= 0, eta[np.maximum(gid, 0)], 0.0) - barrier) / np.where(live, barrier, 1.0)
    stat = float(np.max(np.abs(rel[off]), initial=0.0))
    eta_rel = np.zeros(m)
    sign = 0.0
    for j in range(m):
        if on[j] != 0 and (gid == j).any():
            eta_rel[j] = eta[j] / float(np.mean(barrier[gid == j]))
            sign = max(sign, -on[j] * eta_rel[j])
    # (members of a group on a bound with none off its box bounds: η is not determined, see below)
    alone = np.array([gid[i] >= 0 and on[gid[i]] != 0 and gid[i] not in cols for i in range(n)], dtype=bool)
    fixed = k.hi - k.lo <= AT_BOUND
    sign = max(sign, float(np.max(rel[capped & ~alone & ~fixed], initial=0.0)),
               float(np.max(-rel[floored & ~alone & ~fixed], initial=0.0)))
    # a group on a bound with no member off its box bound: some η of the right sign must fit between them
    for j in range(m):
        mine = gid == j
        if on[j] != 0 and mine.any() and not (off & mine).any():
            need = sw[mine] - barrier[mine]  # a capped member needs η ≤ −need, a floored one η ≥ −need
            top = float(np.min(-need[(capped & ~fixed)[mine]], initial=math.inf))
            bottom = float(np.max(-need[(floored & ~fixed)[mine]], initial=-math.inf))
            top, bottom = (top, max(bottom, 0.0)) if on[j] > 0 else (min(top, 0.0), bottom)
            sign = max(sign, (bottom - top) / float(np.mean(barrier[mine])))
    return Kkt(dev, stat, sign, viol, rank == a.shape[1], eta_rel, on)


def check(res: _groups.GroupRiskBudgetResult, k: Case, ref: np.ndarray, kind: str) -> float:
    """Every claim, measured; returns the weight difference to the reference."""
    w = res.weights
    q = kkt(w, k)
    assert q.constraints <= 1e-10
    assert q.dev <= 1e-8 and res.dev <= 1e-8
    assert q.stationarity <= 1e-8, q
    if q.identified:  # else t and the η_g trade off (a group with one member off its box bounds)
        assert q.sign <= 1e-7, q
    diff = float(np.max(np.abs(w - ref)))
    assert diff <= WEIGHT_ATOL, (diff, kind)
    # what the solver reports is what w shows: binding groups on their bounds, with the multiplier's sign
    for j, g in enumerate(k.groups):
        if g.name in res.groups:
            assert q.on_bound[j] == (1 if res.groups[g.name] == "upper" else -1)
    if kind == "smallest" and q.identified:  # the smallest t: the least constrained group has η = 0
        assert float(np.min(np.abs(q.eta[q.on_bound != 0]))) <= 1e-7
        assert len(res.groups) < int((q.on_bound != 0).sum())  # and is reported not binding
    return diff


# -- drawn problems ------------------------------------------------------------------------------------------


def _cov(rng: np.random.Generator, n: int) -> np.ndarray:
    """Factor-model covariance, correlations of both signs, vols 5–80 %."""
    k = max(1, n // 3)
    f = rng.normal(size=(n, k))
    c = f @ f.T + np.diag(rng.uniform(0.2, 1.5, n))
    d = np.sqrt(np.diag(c))
    vol = rng.uniform(0.05, 0.8, n)
    return c / np.outer(d, d) * np.outer(vol, vol)


def _feasible(k: Case, slack: float) -> bool:
    """The docstring's feasibility conditions for disjoint groups, with room to spare (no pinned sum)."""
    gid = np.full(len(k.b), -1)
    for j, g in enumerate(k.groups):
        gid[g.members] = j
        caps, floors = float(k.hi[g.members].sum()), float(k.lo[g.members].sum())
        if g.lower > 0 and (g.lower > g.upper - slack or g.lower > caps - slack):
            return False
        if g.upper < floors + slack:
            return False
    out = gid < 0
    most = sum(min(g.upper, float(k.hi[g.members].sum())) for g in k.groups) + float(k.hi[out].sum())
    least = sum(max(g.lower, float(k.lo[g.members].sum())) for g in k.groups) + float(k.lo[out].sum())
    return most > 1 + slack and least < 1 - slack


def make_case(seed: int, family: str = "regular") -> Case:
    """A random problem: 3–12 assets, random caps (and floors), 1–4 disjoint groups with bounds drawn
    around erc's own group weights so that they bind often, some with no lower bound.

    ``family``: "regular" (feasible with room to spare: one root t), "forced" (regular, but group g0's bound
    is the sum of its members' caps or floors: they can only sit there), "pinned" (every asset in a group
    and Σ U_g = 1: the budgets pin the book, the smallest t) or "floored" (Σ L_g = 1: the largest t)."""
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        n = int(rng.integers(3, 13))
        cov = _cov(rng, n)
        b = rng.uniform(0.5, 1.5, n) if rng.random() < 0.7 else np.ones(n)
        b /= b.sum()
        hi, lo = np.ones(n), np.zeros(n)
        if rng.random() < 0.6:
            cap = rng.random(n) < 0.5
            hi[cap] = np.minimum(rng.uniform(1.1 / n, 3.0 / n, cap.sum()), 1.0)
        if family in ("regular", "forced") and rng.random() < 0.4:
            fl = rng.random(n) < 0.3
            lo[fl] = np.minimum(rng.uniform(0.0, 0.8 / n, fl.sum()), hi[fl])
        m = int(rng.integers(1, min(4, n) + 1))
        gid = rng.integers(-1 if family in ("regular", "forced") else 0, m, n)
        gid[rng.permutation(n)[:m]] = np.arange(m)  # no group empty
        try:
            rp = solve_risk_budget(cov, b, hi, lo).weights
        except OptimizerError:  # no risk parity under the floors alone: draw again
            continue
        share = np.array([rp[gid == j].sum() for j in range(m)])
        ups, lows = np.ones(m), np.zeros(m)
        if family in ("regular", "forced"):
            for j in range(m):
                kind = rng.choice(["upper", "lower", "both", "below", "none"])
                if kind == "upper":
                    ups[j] = share[j] * rng.uniform(0.3, 1.05)
                elif kind == "lower":
                    lows[j] = share[j] * rng.uniform(0.95, 1.8)
                elif kind == "both":
                    lows[j], ups[j] = share[j] * rng.uniform(0.5, 1.0), share[j] * rng.uniform(1.0, 1.5)
                elif kind == "below":
                    ups[j] = share[j] * rng.uniform(0.3, 1.0)
                    lows[j] = ups[j] * rng.uniform(0.3, 0.95)
        elif family == "pinned":
            ups = share * rng.uniform(0.4, 1.6, m)
            ups /= ups.sum()
        else:
            lows = share * rng.uniform(0.5, 1.5, m)
            lows /= lows.sum()
        groups = [GroupBound(f"g{j}", gid == j, float(min(ups[j], 1.0)), float(lows[j])) for j in range(m)]
        k = Case(cov, b, lo, hi, groups)
        if family == "forced":  # group 0's bound leaves its members no choice: L_0 at their caps, U_0 at floors
            mem = gid == 0
            lo_f, hi_f = lo.copy(), hi.copy()  # the box with g0's members where g0 holds them
            if rng.random() < 0.5:
                hi[mem] = np.minimum(hi[mem], rng.uniform(0.3, 1.0) / n)
                lo[mem] = np.minimum(lo[mem], hi[mem])
                groups[0] = GroupBound("g0", mem, 1.0, float(hi[mem].sum()))
                lo_f[mem] = hi_f[mem] = hi[mem]
            else:
                lo[mem] = np.minimum(rng.uniform(0.2, 0.9) / n, hi[mem])
                groups[0] = GroupBound("g0", mem, float(lo[mem].sum()), 0.0)
                lo_f[mem] = hi_f[mem] = lo[mem]
            if _feasible(Case(cov, b, lo_f, hi_f, groups[1:]), 1e-3):
                return k
            continue
        if family == "regular" and _feasible(k, 1e-3):
            return k
        caps = np.array([hi[gid == j].sum() for j in range(m)])
        if family in ("pinned", "floored") and np.all(np.maximum(ups * (ups < 1), lows) < caps - 1e-3) and m >= 2:
            return k
    raise AssertionError("no case drawn")  # pragma: no cover


def t_of(res: _groups.GroupRiskBudgetResult, k: Case) -> float:
    """The solver's t in P_G's units (S = Σ / max variance), from its ρ* = t · max variance / σ_p."""
    sigma = math.sqrt(float(res.weights @ k.cov @ res.weights))
    return res.rho * sigma / float(np.max(np.diag(k.cov)))


def run_drawn(seed: int, family: str) -> tuple[str, float]:
    """Solve one drawn problem, check it against the reference; (kind, weight difference)."""
    k = make_case(seed, family)
    ref, kind, u_ref = reference(k)
    if kind == "none":  # Σx(0+) > 1: floors or group lower bounds force hedges
        try:
            res = k.solve()
        except OptimizerError as exc:
            assert "no risk-budgeting portfolio" in str(exc)
            return kind, 0.0
        # Σx(t) is not monotone with hedges: from Σx(0+) > 1 it can come down to 1 (on a plateau of groups
        # at their floors) and rise again. The solver's point must then be P_G(t)'s solution at its own t,
        # the plateau's right end (the largest t, as documented for groups binding at L_g only).
        q = kkt(res.weights, k)
        assert q.constraints <= 1e-10 and q.dev <= 1e-8 and q.stationarity <= 1e-8
        pg, u = PG(k), math.log(t_of(res, k))
        assert float(np.max(np.abs(pg.x_of(math.exp(u)) - res.weights))) <= WEIGHT_ATOL
        assert abs(pg.gap(u - 1e-3, False)) <= FLAT < pg.gap(u + 1e-3, False)
        return "non-monotone", 0.0
    assert kind == {"regular": "regular", "forced": "regular", "pinned": "smallest", "floored": "largest"}[family]
    res = k.solve()
    diff = check(res, k, ref, kind)
    # ρ* as reported is P_G's t; where the budgets pin the book, the plateau's end, on it just inside and
    # off it just outside (the extrapolated end can be far less sharp: Σx leaves 1 with a tiny slope)
    u = math.log(t_of(res, k))
    if kind == "regular":
        assert abs(u - u_ref) <= 3e-6
    else:
        pg, out = PG(k), (-1e-2 if kind == "smallest" else 1e-2)
        assert abs(pg.gap(u - out, False)) <= FLAT < abs(pg.gap(u + out, False))
    # warm-started at its own answer (the cycle's case, an hour later) it stays there
    again = k.solve(w0=res.weights)
    assert float(np.max(np.abs(again.weights - res.weights))) <= 1e-10
    return kind, diff


def drawn(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


SEEDS = st.integers(0, 2**32 - 1)


@drawn(100)
@given(SEEDS)
def test_agrees_with_cvxpy_on_drawn_problems(seed: int) -> None:
    # derandomized by the project's hypothesis profile (tests/conftest.py): the same draws every run
    run_drawn(seed, "regular")


@drawn(30)
@given(SEEDS)
def test_agrees_with_cvxpy_when_a_budget_leaves_its_members_no_choice(seed: int) -> None:
    run_drawn(seed, "forced")


@drawn(25)
@given(SEEDS)
def test_agrees_with_cvxpy_when_the_budgets_pin_the_book(seed: int) -> None:
    """Σ U_g = 1 over groups covering every asset (the cycle's case when the venues together cannot hold
    what it would invest): the smallest t, the least constrained group at its bound with η = 0."""
    run_drawn(seed, "pinned")


@pytest.mark.slow
@drawn(400)
@given(SEEDS, st.sampled_from(["regular", "regular", "forced", "pinned", "floored"]))
def test_agrees_with_cvxpy_on_a_larger_sweep(seed: int, family: str) -> None:
    run_drawn(seed, family)


# -- hand-built cases with an answer derived here ----------------------------------------------------------------


def _diagonal_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four uncorrelated assets, vols 10–40 %, equal budgets: erc holds w ∝ 1/σ, 72 % in assets 0 and 1."""
    vol = np.array([0.1, 0.2, 0.3, 0.4])
    s = (vol / vol.max()) ** 2  # P_G's S (diagonal)
    return np.diag(vol**2), s, np.full(4, 0.25)


def _members(s: np.ndarray, b: np.ndarray, t: float, eta: float) -> np.ndarray:
    """x_i of a diagonal S at no box bound in a group with multiplier η: s_i x² + η x − t b_i = 0, x > 0."""
    return (-eta + np.sqrt(eta**2 + 4 * s * t * b)) / (2 * s)


def _check_identity(res: _groups.GroupRiskBudgetResult, cov: np.ndarray, b: np.ndarray, name_of: list[str]) -> None:
    """RC_i = ρ* b_i − η̃_g w_i for every asset at no box bound (module docstring), with the reported ρ*, η̃."""
    w = res.weights
    sigma = math.sqrt(float(w @ cov @ w))
    rc = w * (cov @ w) / sigma
    pred = res.rho * b - np.array([res.multipliers.get(g, 0.0) for g in name_of]) * w
    np.testing.assert_allclose(rc, pred, rtol=1e-10, atol=0)


def test_pinned_budgets_take_the_smallest_t() -> None:
    """Σ U_g = 1 and every asset on a venue: erc's 72 % in venue A is cut to 30 %, so venue B (erc: 28 %)
    must hold 70 %. At the smallest t, B's members are free (x_i = √(t b_i / s_i)) and fill exactly 0.7,
    which fixes t; A's members solve s_i x² + η x = t b_i with η > 0 and Σ_A x = 0.3."""
    cov, s, b = _diagonal_case()
    a, bm = np.array([True, True, False, False]), np.array([False, False, True, True])
    res = solve_group_risk_budget(cov, b, None, None, [GroupBound("A", a, 0.3), GroupBound("B", bm, 0.7)])
    t = (0.7 / float(np.sqrt(b[bm] / s[bm]).sum())) ** 2
    eta = brentq(lambda e: _members(s[a], b[a], t, e).sum() - 0.3, 0.0, 100.0, xtol=1e-15)
    expect = np.concatenate([_members(s[a], b[a], t, eta), np.sqrt(t * b[bm] / s[bm])])
    np.testing.assert_allclose(res.weights, expect, rtol=0, atol=1e-13)
    assert res.groups == {"A": "upper"} and res.multipliers["B"] == 0.0 and res.multipliers["A"] > 0
    assert res.free.tolist() == [False, False, True, True] and res.dev <= 1e-12
    _check_identity(res, cov, b, ["A", "A", "B", "B"])
    # any larger t is also a KKT point with Σx = 1 (both venues at their budgets, η_B > 0): not this one
    big = 1.5 * t
    eta_b = brentq(lambda e: _members(s[bm], b[bm], big, e).sum() - 0.7, 0.0, 100.0, xtol=1e-15)
    assert eta_b > 0


def test_floored_budgets_take_the_largest_t() -> None:
    """Σ L_g = 1: A must hold at least 60 % (erc: 72 %), B at least 40 % (erc: 28 %). Σx(t) = 1 for every
    t up to the one where A leaves its floor; that largest t has A free at exactly 0.6, B at its floor."""
    cov, s, b = _diagonal_case()
    a, bm = np.array([True, True, False, False]), np.array([False, False, True, True])
    groups = [GroupBound("A", a, lower=0.6), GroupBound("B", bm, lower=0.4)]
    res = solve_group_risk_budget(cov, b, None, None, groups)
    t = (0.6 / float(np.sqrt(b[a] / s[a]).sum())) ** 2
    eta = brentq(lambda e: _members(s[bm], b[bm], t, e).sum() - 0.4, -100.0, 0.0, xtol=1e-15)
    expect = np.concatenate([np.sqrt(t * b[a] / s[a]), _members(s[bm], b[bm], t, eta)])
    np.testing.assert_allclose(res.weights, expect, rtol=0, atol=1e-13)
    assert res.groups == {"B": "lower"} and res.multipliers["B"] < 0 and res.multipliers["A"] == 0.0
    _check_identity(res, cov, b, ["A", "A", "B", "B"])


def test_a_budget_with_a_capped_member_and_a_free_asset_outside() -> None:
    """Venue A = {0, 1} at 30 % with asset 0 also capped at 10 %; asset 3 on no venue. Derived: asset 0 at its
    cap; asset 1 = 0.2 (the budget's rest, held by it: η_A > 0); assets 2, 3 free with x_i = √(t b_i / s_i)
    and Σ = 0.7."""
    cov, s, b = _diagonal_case()
    a = np.array([True, True, False, False])
    res = solve_group_risk_budget(cov, b, [0.1, 1, 1, 1], None, [GroupBound("A", a, 0.3)])
    rest = np.array([False, False, True, True])
    t = (0.7 / float(np.sqrt(b[rest] / s[rest]).sum())) ** 2
    np.testing.assert_allclose(res.weights, [0.1, 0.2, *np.sqrt(t * b[rest] / s[rest])], rtol=0, atol=1e-13)
    assert res.groups == {"A": "upper"} and res.capped.tolist() == [True, False, False, False]
    eta = t * b[1] / 0.2 - s[1] * 0.2  # asset 1's stationarity gives η_A
    assert eta > 0
    # asset 0 at its cap: its gradient with η_A is ≤ 0 (released, the budget would still hold it back)
    assert s[0] * 0.1 + eta - t * b[0] / 0.1 <= 0


def test_no_binding_group_is_erc_bit_for_bit() -> None:
    k = make_case(7, "regular")
    rp = solve_risk_budget(k.cov, k.b, k.hi, k.lo)
    shares = [float(rp.weights[g.members].sum()) for g in k.groups]
    loose = [GroupBound(g.name, g.members, min(1.0, sh + 0.05), max(0.0, sh - 0.05)) for g, sh in zip(k.groups, shares)]
    res = solve_group_risk_budget(k.cov, k.b, k.hi, k.lo, loose)
    assert np.array_equal(res.weights, rp.weights) and res.groups == {}
    assert set(res.multipliers.values()) == {0.0}
    none = solve_group_risk_budget(k.cov, k.b, k.hi, k.lo, [])
    assert np.array_equal(none.weights, rp.weights)


# -- the nested fallback ------------------------------------------------------------------------------------------


@drawn(6)
@given(SEEDS, st.sampled_from(["regular", "pinned"]))
def test_the_nested_fallback_alone_agrees_with_cvxpy(seed: int, family: str) -> None:
    """The rounds switched off: t by bisection, P_G(t) by SLSQP, the rounds from SLSQP's active set."""
    k = make_case(seed, family)
    ref, kind, _ = reference(k)
    if kind == "none":
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_groups, "ACTIVE_SET", False)
        res = k.solve()
    check(res, k, ref, kind)


def test_the_nested_fallback_is_rare() -> None:
    """How often the active-set rounds give up (solver only, no reference: 600 draws in about a second).
    Measured over 1,000 draws per family: regular 2 of 963 solvable, forced 4 of 971, pinned 2 of 1,000,
    floored 1 of 879. (Rounds that bound every violated group at once needed it for 14 of 577 regular
    draws and found no solution for 22 of 200 forced ones.)"""
    calls = []
    nested = _groups._nested

    def counting(*a: object, **kw: object) -> object:
        calls.append(1)
        return nested(*a, **kw)

    solved = used = 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_groups, "_nested", counting)
        for seed in range(200):
            for family in ("regular", "pinned", "forced"):
                k = make_case(seed, family)
                before = len(calls)
                try:
                    k.solve()
                except OptimizerError:
                    continue  # no risk-budgeting portfolio: the fallback is the one that says so
                solved += 1
                used += len(calls) > before
    assert solved > 500
    assert used <= 0.01 * solved, (used, solved)


# -- input errors --------------------------------------------------------------------------------------------------


def test_malformed_and_overlapping_groups_raise() -> None:
    cov, _, b = _diagonal_case()
    names = ["A", "B", "C", "D"]
    m01, m12 = np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool)

    def solve(groups: Sequence[GroupBound]) -> None:
        solve_group_risk_budget(cov, b, None, None, groups, names=names)

    with pytest.raises(OptimizerError, match=r"groups 'v1' and 'v2' overlap on \['B'\]"):
        solve([GroupBound("v1", m01, 0.3), GroupBound("v2", m12, 0.5)])
    with pytest.raises(OptimizerError, match="two groups are named 'v1'"):
        solve([GroupBound("v1", m01, 0.3), GroupBound("v1", ~m01, 0.9)])
    with pytest.raises(OptimizerError, match=r"group 'v1': members must be a boolean mask of shape \(4,\)"):
        solve([GroupBound("v1", np.array([1, 1, 0, 0]), 0.3)])
    with pytest.raises(OptimizerError, match="group 'v1': members must be a boolean mask"):
        solve([GroupBound("v1", m01[:3], 0.3)])
    with pytest.raises(OptimizerError, match="group 'v1': bounds must be finite"):
        solve([GroupBound("v1", m01, math.nan)])
    with pytest.raises(OptimizerError, match="group 'v1': long-only"):
        solve([GroupBound("v1", m01, 0.5, -0.1)])


def test_infeasible_groups_name_the_group_and_its_assets() -> None:
    cov, _, b = _diagonal_case()
    names = ["A", "B", "C", "D"]
    m01 = np.array([1, 1, 0, 0], bool)
    caps = np.array([0.2, 0.1, 1.0, 1.0])
    floors = np.array([0.2, 0.2, 0.0, 0.0])
    cases = [
        (dict(groups=[GroupBound("v1", m01, 0.3, 0.4)]), r"group 'v1': lower bound 0.4 above its upper bound 0.3",
         ("A", "B")),
        (dict(groups=[GroupBound("v1", m01, 1.0, 0.5)], upper=caps),
         r"group 'v1' needs at least 0.5, but the caps of its members \['A', 'B'\] sum to 0.3", ("A", "B")),
        (dict(groups=[GroupBound("v1", m01, 0.3)], lower=floors),
         r"group 'v1' allows at most 0.3, but the floors of its members \['A', 'B'\] sum to 0.4", ("A", "B")),
        (dict(groups=[GroupBound("v1", m01, 0.3), GroupBound("v2", ~m01, 0.6)]),
         r"group budgets \{'v1': 0.3, 'v2': 0.6\} .* allow only 0.9 < 1 invested", tuple(names)),
        (dict(groups=[GroupBound("v1", m01, 1.0, 0.7), GroupBound("v2", ~m01, 1.0, 0.4)]),
         r"group lower bounds \{'v1': 0.7, 'v2': 0.4\} .* need 1.1 > 1", tuple(names)),
    ]
    for kw, match, assets in cases:
        with pytest.raises(InfeasibleBoundsError, match=match) as info:
            solve_group_risk_budget(cov, b, kw.get("upper"), kw.get("lower"), kw["groups"], names=names)
        assert info.value.assets == assets


def test_erc_plugin_reports_the_binding_groups() -> None:
    from bot.domain import Forecast
    from plugins.optimizers.erc import ErcOptimizer

    cov, _, _ = _diagonal_case()
    fc = Forecast.from_cov(("A", "B", "C", "D"), cov / 8760.0, "test")
    a = np.array([True, True, False, False])
    t = ErcOptimizer().optimize(fc, upper=np.ones(4), lower=np.zeros(4), current=np.full(4, 0.25),
                                groups=[GroupBound("venue:x", a, 0.3)])
    assert t.diagnostics["groups"] == {"venue:x": "upper"}
    assert t.weights[a].sum() == pytest.approx(0.3, abs=1e-12)
    assert t.diagnostics["group_multipliers"]["venue:x"] > 0


def test_the_compiled_newton_block_is_the_numpy_block() -> None:
    """plugins/optimizers/_groups_block.py is ``_rounds_numpy`` and ``_block_numpy`` compiled: over 150 drawn problems
    of every family the solver gives the same weights (to 1e-9) and the same answer to solvable or not
    with either block."""
    compared = 0
    for seed in range(50):
        for family in ("regular", "pinned", "forced"):
            k = make_case(seed, family)
            out = {}
            for fast in (True, False):
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(_groups, "FAST_BLOCK", fast)
                    try:
                        out[fast] = k.solve().weights
                    except OptimizerError as exc:
                        out[fast] = str(exc)
            if isinstance(out[True], str) or isinstance(out[False], str):
                assert type(out[True]) is type(out[False]), (seed, family, out)
                continue
            assert float(np.max(np.abs(out[True] - out[False]))) <= 1e-9, (seed, family)
            compared += 1
    assert compared > 120
    assert _groups._compiled_block not in (None, False)  # the compiled block did run
