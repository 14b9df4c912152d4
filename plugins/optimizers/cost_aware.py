"""Cost-aware, return-tilted risk parity under caps and floors: the ``rp_cost`` optimizer.

What it solves
--------------
The seed's objective min σ_p(w) − λ·μᵀw + Σ_i c_i |w_i − w0_i| (Σw = 1, lower ≤ w ≤ upper) on its own
has no risk parity in it: with λ = c = 0 it is the minimum-volatility portfolio. Risk parity enters
through the Spinu / Roncalli log barrier of the risk budgets b (Σb = 1), and we solve the one strictly
convex problem

    Q:  minimise  φ(w) = σ_p(w) − λ μᵀw + Σ_i c_i |w_i − w0_i| − ρ Σ_i b_i log w_i
        subject to  Σ_i w_i = 1,  lower ≤ w ≤ upper,

where σ_p(w) = √(wᵀΣw) and the barrier weight ρ is fixed *before* solving: ρ = ρ*, the common risk per
unit of budget RC_i / b_i of the free assets in the plain "risk parity under caps" portfolio w_rp of
``plugins.optimizers.erc`` (see its module docstring; ρ* = σ_p(w_rp) when no bound binds).

Why this formulation
--------------------
* Exact at the origin: with λ = 0 and c = 0, w_rp satisfies the KKT conditions of Q with the budget
  multiplier ν = 0 (its free assets have (Σw)_i/σ_p = ρ* b_i / w_i, capped ones ≤, floored ones ≥), and
  Q has a unique solution, so ``rp_cost`` *is* ``erc`` there, caps included, to solver precision.
* One convex problem, in return units: σ_p, μ and c are all per unit of NAV and per period, so λ and c
  are read on the scale of the portfolio's own volatility; the problem can be checked independently
  (cvxpy: SOC + exponential cone; see tests/plugins/test_cost_aware.py).
* Invariant to a constant added to μ (Σw = 1 absorbs it into ν), which the seed's objective is too.
  A formulation that fixes Σw = 1 by tuning the barrier weight instead (as ``erc`` does for P(t))
  loses that, and for large λμ it has no solution at all.

How close to equal risk it stays
--------------------------------
With RC_i = w_i(Σw)_i/σ_p, stationarity of Q for an asset not at a bound reads

    RC_i = ρ* b_i + w_i (λ μ_i − ν − c_i s_i),   s_i = sign(w_i − w0_i) ∈ [−1, 1] at w_i = w0_i,

so each risk contribution moves off its budget by exactly w_i (λ(μ_i − ν/λ) − c_i s_i): a tilt toward
the assets whose μ_i beats the multiplier ν, and a no-trade band of half-width c_i w_i around the budget.
Hence dev ≤ max_free w_i (λ|μ_i − ν/λ| + c_i) / (ρ* b_i) to first order; measured values are in
docs/optimizer.md. Two monotonicity facts follow from convexity alone (add the two optimality
inequalities of the problems at parameters p < p'):

* scaling all costs by γ, the cost paid Σ c_i |w_i − w0_i| is non-increasing in γ, and once
  γ ≥ γ̄ = min_ν max_i |g_i(w0) + ν| / c_i (g the smooth gradient at w0) the solution is w0 itself: no
  trade when the gain does not pay the cost (w0 must be feasible, Σw0 = 1 and w0 > 0: the barrier
  makes a zero holding infinitely expensive, so every asset with room is bought);
* μᵀw(λ) is non-decreasing in λ: the portfolio tilts toward μ.

Zero holdings: a limit of the barrier, and the option around it
---------------------------------------------------------------
An asset the book holds at 0 (w0_i = 0) that may be held (upper_i > 0) is **always bought**, at any
cost: −ρ b_i log w_i is infinite at 0, so no cost pays for staying there. Stationarity sizes the sliver,
w_i = ρ b_i / (g_i + ν + c_i) with g_i = (Σw)_i/σ_p − λμ̃_i, so w_i ≈ ρ b_i / c_i at a high cost and the
cost paid for it, c_i w_i, tends to ρ b_i, the asset's whole risk budget in σ_p units, however high c_i
(both tested). Two ways out: cap the asset at 0 (then it is out of Q and of erc's stage), or pass
``hold_zero_when_cost_exceeds`` = h: every asset with w0_i = 0 and c_i > h is capped at 0 for the solve,
and the rest is Q without it. Not applied to an empty book (Σw0 = 0: something must be bought) or when
the remaining caps sum to less than 1; ``held_zero`` reports what it kept out. h is a policy threshold,
not derived from Q: Q itself has no finite price for leaving a budgeted asset out.

Algorithm
---------
Lagrangian dual in the one equality: for a multiplier ν, R(ν) = min_{lower ≤ w ≤ upper} φ(w) + ν Σw has a
unique solution w(ν) with Σw(ν) non-increasing in ν (dΣw/dν = −1ᵀH_FF⁻¹1 < 0), and ν is found by
safeguarded Newton (Illinois regula falsi inside a bracket) on Σw(ν) = 1, each R(ν) warm-started on the
predicted path. Σw(ν) is only piecewise smooth (its slope jumps where an asset leaves w0 or a bound), and
Newton inside the bracket can alternate between two pieces for ever (it did, in real cycles); so, as in
rtsafe, a step that is not half the step before last is replaced by bisection of the bracket: steps then
shrink geometrically or the bracket halves, and the iteration converges whatever the pieces.
R(ν) is solved by a projected Newton method on *segments*: the kink of |w_i − w0_i| is a
breakpoint like a bound, so each coordinate lives on [lower_i, w0_i] or [w0_i, upper_i] where φ is
smooth, and an asset sitting at w0_i with |g_i + ν| ≤ c_i is held there (no trade) exactly like an asset
held at its cap. Newton steps use the Cholesky factor of the free block of
∇²φ = Σ/σ_p − (Σw)(Σw)ᵀ/σ_p³ + ρ diag(b/w²); steps are projected on the segments and backtracked
(Armijo) on φ itself, so the iterates stay feasible and φ decreases. Convergence is quadratic once the
active set settles. ``iterations`` counts Cholesky factorisations.

Inputs go through ``solve_risk_budget`` first, so the checks and their errors are erc's (non-finite,
asymmetric or non-PSD Σ, zero variance, bad budgets or bounds; ``InfeasibleBoundsError`` names the
assets). ``nearest_psd`` is the documented repair for a non-PSD Σ, applied only when asked.

Venue budgets
-------------
With ``groups`` (disjoint ``bot.domain.GroupBound``s, L_g ≤ Σ_{i∈g} w_i ≤ U_g: a venue can only hold the value
it holds now) they are constraints of Q itself, not a rescale afterwards, and ρ* is that of erc's solution
under the same groups (``plugins/optimizers/_groups.py``), so that λ = c = 0 still gives erc's portfolio
exactly (its KKT point with ν = 0 and erc's own group multipliers). Stationarity gains one multiplier per
binding group: RC_i = ρ* b_i + w_i (λμ̃_i − ν − c_i s_i − η_g(i)), η_g ≥ 0 at U_g, ≤ 0 at L_g, 0 when the
group does not bind. Solved in the dual of the group constraints: for multipliers η, Q without groups and
the tilt λμ̃ − Eη (the method above, ν included) gives w(η), and D(η) = φ(w) + Σ_g η_g Σ_{i∈g} w_i −
Σ_g (η_g⁺ U_g − η_g⁻ L_g) is concave; it is maximised by Newton on the groups that bind or are beyond a bound
(Jacobian of the group sums from the inner solution's Hessian, regularised; a multiplier stops at 0 before
changing side; a trust radius; Armijo on D), started at erc's multipliers. Where the binding budgets pin
the book (every asset inside its piece is in a binding group) ν and the η_g are determined only up to a
common shift; the one erc makes is taken (the least constrained group at U_g reported not binding) when
the shifted multipliers reproduce the portfolio. ``groups`` in the result names the binding groups,
``group_multipliers`` gives η_g in σ_p units; ``iterations`` then counts the Cholesky factorisations of
every inner solve. No groups: the problem, the method and the answer are the ones above, unchanged.

Where costs and μ come from in the cycle
----------------------------------------
``optimize(forecast, upper=, lower=, current=, groups=())`` is the Optimizer protocol: μ is
``forecast.mu`` (mean hourly log return of the forecaster's window; taken as 0 when the forecaster
gives none), w0 is ``current``, and the costs are this plugin's options: ``cost_bps`` for every asset,
``costs_bps`` per asset, both one-way in bps of the value traded. σ_p and μ are per hour while a cost is
paid once, so the objective is taken over a holding horizon of H = ``horizon_hours``: risk σ_p√H,
return λHμ, cost once; divided by √H that is Q with λ_eff = λ√H and c_eff = c/√H.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import Field
from scipy import linalg

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Forecast, GroupBound, Target
from bot.errors import DataError, InfeasibleBoundsError, OptimizerError
from bot.hookspecs import hookimpl
from bot.riskmath import nearest_psd as _nearest_psd
from bot.riskmath import risk_contributions
from plugins.optimizers.erc import RiskBudgetResult, budget_vector, solve_risk_budget

log = logging.getLogger(__name__)

ARMIJO = 1e-4
EPS_ACTIVE = 1e-4
"""Largest ε of the projected-Newton ε-active set, in weight units (as in erc)."""
DEV_FLOOR = 1e-8
"""When λ = c = 0 the result is erc's and its dev is at most this."""


@dataclass(frozen=True)
class CostAwareResult:
    """Solution of Q (module docstring) and what it cost.

    ``rho`` is the barrier weight ρ* and ``nu`` the multiplier of Σw = 1, both in the units of σ_p;
    ``held`` marks assets left exactly at w0 (no trade), ``held_zero`` the assets held at 0 that
    ``hold_zero_when_cost_exceeds`` kept there; ``dev`` is max over the assets not at a bound
    of |ρ_i / mean(ρ) − 1| with ρ_i = RC_i / b_i, the same measure as erc's; ``rp`` is the plain risk
    parity (λ = c = 0) solution it starts from.
    """

    weights: np.ndarray
    iterations: int
    dev: float
    capped: np.ndarray
    floored: np.ndarray
    held: np.ndarray
    turnover: float
    cost: float
    rho: float
    nu: float
    rp: RiskBudgetResult
    held_zero: np.ndarray | None = None
    """Assets kept at 0 by ``hold_zero_when_cost_exceeds`` (solved as if capped at 0); all False without it."""
    groups: dict[str, str] = field(default_factory=dict)
    """The venue budgets that bind, ``{name: "upper" | "lower"}`` (empty without groups)."""
    group_multipliers: dict[str, float] = field(default_factory=dict)
    """η_g per group in σ_p units (0 when it does not bind): RC_i = ρ* b_i + w_i(λμ̃_i − ν − c_i s_i − η_g)."""


def nearest_psd(cov: Any) -> np.ndarray:
    """The core repair (``bot.riskmath.nearest_psd``: eigenvalues below 0 set to 0), raising this
    optimizer's ``OptimizerError`` for unusable input.

    Only for callers that choose to repair (``rwabot optimize --repair-psd``); the solvers themselves
    refuse a non-PSD Σ, because a forecaster that produces one has a bug worth seeing.
    """
    try:
        return _nearest_psd(np.asarray(cov, dtype=float))
    except DataError as exc:
        raise OptimizerError(str(exc)) from None


def _vector(v: Any, n: int, what: str, labels: Sequence[str], default: float) -> np.ndarray:
    if v is None:
        return np.full(n, default)
    a = np.asarray(v, dtype=float)
    if a.shape != (n,):
        raise OptimizerError(f"rp_cost: {what} must have shape ({n},), got {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        raise OptimizerError(f"rp_cost: {what} is NaN or inf for {[x for x, m in zip(labels, bad) if m]}")
    return a


class _Segments:
    """Q on the movable assets for a fixed ν: projected Newton over the pieces where φ is smooth."""

    def __init__(
        self,
        s: np.ndarray,
        b: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        w0: np.ndarray,
        c: np.ndarray,
        a: np.ndarray,
        rho: float,
        fixed: np.ndarray,
        tol: float,
    ) -> None:
        self.s, self.b, self.lo, self.hi, self.w0, self.c, self.a, self.rho = s, b, lo, hi, w0, c, a, rho
        self.tol = tol
        self.movable = (lo < hi) & ~fixed
        self.kink = self.movable & (c > 0) & (w0 > lo) & (w0 < hi)
        width = np.minimum(hi - lo, np.where(self.kink, np.minimum(w0 - lo, hi - w0), np.inf))
        self.eps_max = min(EPS_ACTIVE, 0.25 * float(np.min(width[self.movable], initial=1.0)))
        self.iterations = 0

    def value(self, x: np.ndarray, sx: np.ndarray, nu: float) -> tuple[float, float]:
        """φ(x) + νΣx and the size of its rounding noise (so that Armijo cannot stall on it)."""
        sig = math.sqrt(max(float(x @ sx), 0.0))
        lin = float((nu - self.a) @ x)
        cost = float(self.c @ np.abs(x - self.w0))
        logs = float(self.b @ np.log(x))
        val = sig + lin + cost - self.rho * logs
        mag = sig + float(np.abs(nu - self.a) @ x) + cost + self.rho * (abs(logs) + 1.0)
        return val, 256.0 * np.finfo(float).eps * mag

    def segments(self, x: np.ndarray, gs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per asset the piece [A, Z] it moves on and the sign of its cost term there."""
        lo, hi, w0, c = self.lo, self.hi, self.w0, self.c
        sign = np.where(x > w0, 1.0, -1.0)
        sign = np.where(c > 0, sign, 0.0)
        a_, z_ = lo.copy(), hi.copy()
        k = self.kink
        at = k & (x == w0)
        up = at & (gs + c < 0)
        down = at & (gs - c > 0)
        stuck = at & ~up & ~down
        above = k & (x > w0)
        below = k & (x < w0)
        a_[above | up] = w0[above | up]
        z_[below | down] = w0[below | down]
        a_[stuck] = z_[stuck] = w0[stuck]
        sign[up] = 1.0
        sign[down] = -1.0
        sign[stuck] = 0.0
        # Outside the kinked assets the cost is linear on the whole box: its sign is that of x − w0,
        # which cannot change there (w0 is at or beyond a bound).
        edge = (c > 0) & ~k
        sign[edge & (w0 <= lo)] = 1.0
        sign[edge & (w0 >= hi)] = -1.0
        return a_, z_, sign

    def hessian(self, x: np.ndarray, sx: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, bool] | None:
        if not free.any():
            return None
        idx = np.flatnonzero(free)
        sig = math.sqrt(float(x @ sx))
        u = sx[idx]
        h = self.s[np.ix_(idx, idx)] / sig if len(idx) < len(x) else self.s / sig
        h -= np.outer(u, u) / sig**3
        h[np.diag_indices_from(h)] += self.rho * self.b[idx] / x[idx] ** 2
        self.iterations += 1
        return linalg.cho_factor(h, lower=True, overwrite_a=True, check_finite=False)

    def grad(self, x: np.ndarray, sx: np.ndarray, nu: float) -> np.ndarray:
        sig = math.sqrt(float(x @ sx))
        return sx / sig - self.a + nu - self.rho * self.b / x

    def solve(
        self, nu: float, x: np.ndarray, budget: int
    ) -> tuple[np.ndarray, bool, np.ndarray, tuple[np.ndarray, bool] | None]:
        """Minimise φ + νΣx from ``x`` (in the box, > 0): x(ν), converged?, free set, its Cholesky factor."""
        mov = self.movable
        sx = self.s @ x
        f, noise = self.value(x, sx, nu)
        chol: tuple[np.ndarray, bool] | None = None
        chol_free = np.zeros(len(x), bool)
        best, stalled = math.inf, 0
        while True:
            gs = self.grad(x, sx, nu)
            a_, z_, sign = self.segments(x, gs)
            g = gs + self.c * sign
            hdiag = np.diag(self.s) / math.sqrt(float(x @ sx)) + self.rho * self.b / x**2
            pg = x - np.clip(x - g / hdiag, a_, z_)
            eps = min(self.eps_max, float(np.max(np.abs(pg[mov]), initial=0.0)))
            held = mov & (((x <= a_ + eps) & (g > 0)) | ((x >= z_ - eps) & (g < 0)) | (a_ == z_))
            free = mov & ~held
            resid = float(np.max(np.abs(x[free] * g[free]) / (self.rho * self.b[free]), initial=0.0))
            at_piece = bool(np.all((x[held] == a_[held]) | (x[held] == z_[held])))
            stalled = stalled + 1 if resid > 0.5 * best else 0
            best = min(best, resid)
            if at_piece and (resid <= self.tol or (resid <= 1e-3 * DEV_FLOOR and stalled >= 3)):
                if chol is None or not np.array_equal(chol_free, free):
                    chol, chol_free = self.hessian(x, sx, free), free
                return x, True, free, chol
            if self.iterations >= budget:
                return x, False, free, chol
            chol, chol_free = self.hessian(x, sx, free), free
            d = np.zeros_like(x)
            d[held] = -g[held] / hdiag[held]
            if chol is not None:
                d[free] = -linalg.cho_solve(chol, g[free], check_finite=False)
            alpha = 1.0
            for _ in range(60):
                xn = x.copy()
                xn[mov] = np.clip(x[mov] + alpha * d[mov], a_[mov], z_[mov])
                if np.all(xn[mov] > 0):
                    sxn = self.s @ xn
                    fn, _ = self.value(xn, sxn, nu)
                    expect = -alpha * float(g[free] @ d[free]) + float(g[held] @ (x[held] - xn[held]))
                    if fn <= f - ARMIJO * expect or fn <= f + noise:
                        break
                alpha *= 0.5
            else:
                return x, at_piece and resid <= DEV_FLOOR, free, chol
            x, sx, f = xn, sxn, fn


def _dev(w: np.ndarray, cov: np.ndarray, b: np.ndarray, free: np.ndarray) -> float:
    if not free.any():
        return 0.0
    ratio = (w * (cov @ w) / b)[free]
    mean = float(ratio.mean())
    return float(np.max(np.abs(ratio / mean - 1.0))) if mean > 0 else math.inf


def solve_cost_aware(
    cov: Any,
    budgets: Any = None,
    upper: Any = None,
    lower: Any = None,
    *,
    w0: Any = None,
    costs: Any = None,
    mu: Any = None,
    lam: float = 0.0,
    tol: float = 1e-12,
    max_iter: int = 200,
    names: Sequence[str] | None = None,
    hold_zero_when_cost_exceeds: float | None = None,
    groups: Sequence[GroupBound] = (),
) -> CostAwareResult:
    """Solve Q (module docstring): risk parity under bounds, tilted by λμ, with costs c to move from w0.

    An asset held at 0 (w0_i = 0) is always bought, however high its cost: the barrier makes zero risk in
    it infinitely expensive (module docstring, "Zero holdings"). ``hold_zero_when_cost_exceeds`` = h
    keeps such an asset at 0 when c_i > h: Q is solved with it capped at 0, erc's stage included.

    :param cov: N × N covariance; :param budgets: risk budgets (None: equal); :param upper:/:param lower:
        caps and floors (defaults 1 and 0), as in ``solve_risk_budget``.
    :param w0: current weights (the cost is paid on |w − w0|); None means no position and no cost.
    :param costs: c_i ≥ 0 per unit of weight traded, in the units of σ_p (√cov); None: 0.
    :param mu: expected returns in the units of the covariance's period; None: 0.
    :param lam: λ ≥ 0, the weight of μ.
    :param tol: target of the stationarity residual max |w_i ∂φ_i| / (ρ b_i) and of |Σw − 1|.
    :param max_iter: most Newton steps (Cholesky factorisations) of this stage; erc's stage before it
        has the same limit on its own sweeps or Newton steps.
    :param hold_zero_when_cost_exceeds: h ≥ 0 in the units of ``costs``, or None (off): an asset with
        w0_i = 0 and c_i > h is held at 0 (capped at 0 for this solve). Not applied to an empty book
        (Σw0 = 0: the portfolio has to be bought), nor when the other caps would leave less than a fully
        invested portfolio or could not meet the group budgets; ``held_zero`` in the result says which
        assets it kept out.
    :param groups: venue budgets, L_g ≤ Σ_{i∈g} w_i ≤ U_g on disjoint groups (``bot.domain.GroupBound``),
        constraints of Q itself (module docstring, "Venue budgets"); ρ* is then that of erc's solution under
        the same groups (``plugins/optimizers/_groups.py``). None given: exactly the problem without them.
    :raises OptimizerError: unusable input or no convergence; ``InfeasibleBoundsError`` (from erc) for
        bounds or group budgets that admit no fully invested portfolio.
    """
    held_zero = None
    groups = tuple(groups)
    if hold_zero_when_cost_exceeds is not None:
        upper_kept = upper
        upper, held_zero = _hold_zero(cov, upper, w0, costs, hold_zero_when_cost_exceeds, names)
    if groups:
        from plugins.optimizers._groups import solve_group_risk_budget

        try:
            rp = solve_group_risk_budget(
                cov, budgets, upper, lower, groups, w0=w0, tol=tol, max_iter=max_iter, names=names
            )
        except InfeasibleBoundsError:
            if held_zero is None:
                raise
            upper, held_zero = upper_kept, None  # the budgets need what hold_zero kept out: not applied
            rp = solve_group_risk_budget(
                cov, budgets, upper, lower, groups, w0=w0, tol=tol, max_iter=max_iter, names=names
            )
    else:
        rp = solve_risk_budget(cov, budgets, upper, lower, w0=w0, tol=tol, max_iter=max_iter, names=names)
    c_full = 0.5 * (np.asarray(cov, float) + np.asarray(cov, float).T)
    n = c_full.shape[0]
    labels = [f"asset {i}" for i in range(n)] if names is None else [str(x) for x in names]
    if held_zero is None:
        held_zero = np.zeros(n, bool)
    if not (math.isfinite(lam) and lam >= 0):
        raise OptimizerError(f"rp_cost: lambda must be a finite number >= 0, got {lam}")
    cost = _costs(costs, n, labels)
    mu_v = _vector(mu, n, "mu", labels, 0.0)
    start = _vector(w0, n, "current weights", labels, 0.0)
    if w0 is None:
        cost = np.zeros(n)
    b = np.full(n, 1.0 / n) if budgets is None else np.asarray(budgets, float) / float(np.sum(budgets))
    hi = np.maximum(np.ones(n) if upper is None else np.asarray(upper, float), 0.0)
    lo = np.zeros(n) if lower is None else np.asarray(lower, float)
    # A constant in μ does nothing under Σw = 1 (module doc): centre it, exactly zero when μ is flat.
    tilt = lam * (mu_v - mu_v.mean()) if np.ptp(mu_v) > 0 else np.zeros(n)

    def finish(
        w: np.ndarray,
        iterations: int,
        free: np.ndarray,
        held: np.ndarray,
        rho: float,
        nu: float,
        binding: Mapping[str, str] | None = None,
        mult: Mapping[str, float] | None = None,
    ) -> Any:
        capped = (w >= hi) & ~free
        floored = (w <= lo) & (lo > 0) & ~free & ~capped
        moved = np.abs(w - start)
        return CostAwareResult(
            w,
            iterations,
            _dev(w, c_full, b, free),
            capped,
            floored,
            held & ~capped & ~floored,
            float(moved.sum()),
            float(cost @ moved),
            rho,
            nu,
            rp,
            held_zero,
            dict(binding or {}),
            dict(mult or {}),
        )

    sig_rp = math.sqrt(max(float(rp.weights @ c_full @ rp.weights), 0.0))
    rp_free = ~(rp.capped | rp.floored) & (rp.weights > 0)
    live = hi > 0
    # ρ* from erc's solution, with budgets renormalised over the live assets as erc does.
    idx = np.flatnonzero(live)
    bl = b[idx] / b[idx].sum()
    wl = rp.weights[idx]
    rc = wl * (c_full[np.ix_(idx, idx)] @ wl) / sig_rp
    fr = rp_free[idx]
    rho = float(rc[fr].sum() / bl[fr].sum()) if fr.any() else sig_rp
    lay = getattr(rp, "layout", None)  # the checked groups (a GroupRiskBudgetResult), or None
    if lay is not None:
        rp_free = rp.free  # type: ignore[attr-defined]
        rho = rp.rho if rp.groups else rho  # type: ignore[attr-defined]
        rp_groups, rp_mult = dict(rp.groups), dict(rp.multipliers)  # type: ignore[attr-defined]
    else:
        rp_groups, rp_mult = {}, {}
    if not (cost.any() or tilt.any()) or rp.iterations == 0 or live.sum() <= 1:
        # λ = c = 0 (Q's solution is erc's, ν = 0), or the bounds leave a single portfolio.
        return finish(rp.weights.copy(), rp.iterations, rp_free, np.zeros(n, bool), rho, 0.0, rp_groups, rp_mult)
    scale = float(np.max(np.diag(c_full)))
    root = math.sqrt(scale)
    prob = _Segments(
        c_full[np.ix_(idx, idx)] / scale,
        bl,
        lo[idx],
        hi[idx],
        start[idx],
        cost[idx] / root,
        tilt[idx] / root,
        rho / root,
        np.zeros(len(idx), bool),
        tol,
    )
    x = np.clip(wl, np.minimum(lo[idx], hi[idx]), hi[idx])
    x = np.where(x > 0, x, np.minimum(1e-6, hi[idx]))
    if lay is not None:
        return _finish_grouped(
            _solve_grouped(prob, x, lay, idx, rp_mult, root, tol, max_iter), prob, lay, idx, n, root, finish, rho,
            rp.iterations,
        )
    x, nu_s, free, ok = _solve_budget_fast(prob, x, tol, max_iter) or _solve_budget(prob, x, tol, max_iter)
    if not ok:
        raise OptimizerError(f"rp_cost: no convergence within max_iter={max_iter} Newton steps")
    # An asset within tol of w0 is not traded (rounding of the last Newton step would leave 1e-16
    # trades); then put Σw = 1 to rounding on the assets inside their piece (the change is ≤ tol).
    snap = prob.kink & (np.abs(x - prob.w0) <= tol)
    x[snap] = prob.w0[snap]
    inside = free & (x > prob.lo) & (x < prob.hi) & ~(prob.kink & (x == prob.w0))
    if inside.any():
        room = 1.0 - float(x[~inside].sum())
        x[inside] = np.clip(x[inside] * room / float(x[inside].sum()), prob.lo[inside], prob.hi[inside])
    w = np.zeros(n)
    w[idx] = x
    free_all = np.zeros(n, bool)
    bound = (x >= prob.hi) | ((x <= prob.lo) & (prob.lo > 0)) | ~prob.movable
    free_all[idx] = ~bound
    held = np.zeros(n, bool)
    held[idx] = prob.kink & (x == prob.w0)
    return finish(w, rp.iterations + prob.iterations, free_all, held, rho, nu_s * root)


# -- venue budgets: the group multipliers by a dual Newton iteration ------------------------------------------

GROUP_TOL = 1e-11
"""|Σ_{i∈g} w_i − bound| at which a binding group counts as met (weights sum to 1)."""
MAX_GROUP_STEPS = 60


@dataclass
class _Grouped:
    """What the group iteration settles on, in the scaled live problem."""

    x: np.ndarray
    nu: float
    free: np.ndarray
    eta: np.ndarray  # per group; 0 where it does not bind
    side: np.ndarray  # per group: +1 held at U_g, −1 at L_g, 0 not binding
    iterations: int


def _inner(prob: _Segments, a0: np.ndarray, e: np.ndarray, eta: np.ndarray, x: np.ndarray, tol: float,
           max_iter: int) -> tuple[np.ndarray, float, np.ndarray, int]:  # fmt: skip
    """Q without the groups for the tilt shifted by the group multipliers (a − Eη): x, ν, free set, steps."""
    prob.a = a0 - e @ eta
    prob.iterations = 0
    x = x.copy()
    xn, nu, free, ok = _solve_budget_fast(prob, x, tol, max_iter) or _solve_budget(prob, x, tol, max_iter)
    if not ok:
        raise OptimizerError(f"rp_cost: no convergence within max_iter={max_iter} Newton steps under group budgets")
    return xn, nu, free, prob.iterations


def _dual(prob: _Segments, x: np.ndarray, eta: np.ndarray, up: np.ndarray, low: np.ndarray) -> tuple[float, float]:
    """D(η) = min_w φ + Σ_g η_g Σ_{i∈g} w_i − Σ_g (η_g⁺ U_g − η_g⁻ L_g) at the inner solution x (Σx = 1),
    and its rounding noise: concave in η, maximised by the group multipliers."""
    val, noise = prob.value(x, prob.s @ x, 0.0)
    pen = float(np.maximum(eta, 0.0) @ up - np.maximum(-eta, 0.0) @ low)
    return val - pen, noise + 256.0 * np.finfo(float).eps * float(np.abs(eta) @ np.maximum(up, low))


def _jacobian(prob: _Segments, x: np.ndarray, free: np.ndarray, e: np.ndarray) -> np.ndarray:
    """d(Eᵀx)/dη at the inner solution with Σx = 1 held: −E_Fᵀ (M − M11ᵀM / 1ᵀM1) E_F, M = H_FF⁻¹."""
    k = e.shape[1]
    sx = prob.s @ x
    chol = prob.hessian(x, sx, free)
    if chol is None:
        return np.zeros((k, k))
    ef = e[free]
    m1 = linalg.cho_solve(chol, np.ones(int(free.sum())), check_finite=False)
    me = linalg.cho_solve(chol, ef, check_finite=False)
    u = ef.T @ m1
    return -(ef.T @ me - np.outer(u, u) / float(m1.sum()))


def _solve_grouped(
    prob: _Segments, x: np.ndarray, lay: Any, idx: np.ndarray, mult: Mapping[str, float], root: float, tol: float,
    max_iter: int,
) -> _Grouped:  # fmt: skip
    """Q with the group bounds (module docstring, "Venue budgets"): maximise the concave dual D(η) over the
    group multipliers, each D(η) one solve of Q without groups (tilt a − Eη, ν by its own iteration).

    Newton on the groups that bind or are beyond a bound, J_AA dη_A = bound_A − s_A with J = ds/dη from the
    inner solution's Hessian (regularised: J is singular where the budgets pin the book, or where a shift
    of the multipliers moves only assets held at w0), a multiplier that would change side stopped at 0,
    the step cut to a trust radius, damped by Armijo on D. Started at erc's own group multipliers
    (exact when λ = c = 0)."""
    gid = lay.gid[idx]
    k = len(lay.names)
    e = np.zeros((len(idx), k))
    e[gid >= 0, gid[gid >= 0]] = 1.0
    up, low = lay.upper.astype(float), lay.lower.astype(float)
    a0 = prob.a.copy()
    eta = np.array([mult.get(nm, 0.0) for nm in lay.names]) / root
    total = 0
    x, nu, free, its = _inner(prob, a0, e, eta, x, tol, max_iter)
    total += its
    d_val, noise = _dual(prob, x, eta, up, low)
    best, stalled = math.inf, 0
    radius = float(np.max(prob.rho * prob.b / x))  # the barrier's gradient: the scale of a multiplier
    for _ in range(MAX_GROUP_STEPS):
        s = e.T @ x
        over, under = (eta == 0) & (s > up + GROUP_TOL), (eta == 0) & (s < low - GROUP_TOL)
        target = np.where((eta > 0) | over, up, np.where((eta < 0) | under, low, s))
        resid = s - target
        err = float(np.max(np.abs(resid), initial=0.0))
        stalled = stalled + 1 if err > 0.5 * best else 0
        best = min(best, err)
        if err <= GROUP_TOL or (err <= 1e-9 and stalled >= 3):
            break
        act = (eta != 0) | over | under
        sign = np.where((eta > 0) | over, 1.0, -1.0)  # the side of each active multiplier: ≥ 0 at U_g, ≤ 0 at L_g
        jac = _jacobian(prob, x, free, e)
        total += 1
        while True:  # a multiplier at 0 that the coupled step would push to the wrong side stays at 0
            step = np.zeros(k)
            # Levenberg-Marquardt: (−J + μI) dη = s − bound; in a direction J cannot see (a shift of the
            # multipliers that ν absorbs while the assets outside sit at w0 or a bound) it is the ascent
            # direction of D, cut to the trust radius below
            neg = -jac[np.ix_(act, act)]
            mu = 1e-10 * max(float(np.trace(neg)) / neg.shape[0], 1e-300)
            with np.errstate(all="ignore"):
                step[act] = np.linalg.solve(neg + mu * np.eye(neg.shape[0]), resid[act])
            if not np.all(np.isfinite(step)):  # J = 0 (no member free to move): the ascent direction itself
                step = np.where(act, resid, 0.0) * (radius / float(np.max(np.abs(resid[act]))))
            wrong = act & (eta == 0) & (sign * step < 0)
            if not wrong.any():
                break
            act &= ~wrong
        if not act.any():
            raise OptimizerError(f"rp_cost: no convergence under the group budgets {list(lay.names)}")
        size = float(np.max(np.abs(step)))
        if size > radius:  # a group whose members barely move (held at w0, at bounds): J ≈ 0 there
            step *= radius / size
        alpha = 1.0
        for _ in range(40):
            cand = eta + alpha * step
            cand = np.where(act & (sign * cand < 0), 0.0, cand)  # a multiplier stops at 0 before changing side
            xn, nun, freen, its = _inner(prob, a0, e, cand, x, tol, max_iter)
            total += its
            dn, noise_n = _dual(prob, xn, cand, up, low)
            gain = float(resid @ (cand - eta))  # ∇D · Δη (∇D = s − bound on the groups moved)
            if dn >= d_val + ARMIJO * gain - noise - noise_n:
                break
            alpha *= 0.5
        else:
            raise OptimizerError(f"rp_cost: no convergence under the group budgets {list(lay.names)}")
        # the trust radius on η grows after a full step that it cut, and shrinks to what a damped one took
        radius = 2.0 * radius if alpha == 1.0 and size > radius else max(radius if alpha == 1.0 else alpha * min(
            size, radius), 1e-300)
        eta, x, nu, free, d_val, noise = cand, xn, nun, freen, dn, noise_n
    else:
        raise OptimizerError(f"rp_cost: no convergence under the group budgets {list(lay.names)}")
    s = e.T @ x
    side = np.where((eta > 0) & (np.abs(s - up) <= 1e-9), 1, np.where((eta < 0) & (np.abs(s - low) <= 1e-9), -1, 0))
    eta, x, nu, free, side, total = _normalise(prob, a0, e, eta, x, nu, free, side, tol, max_iter, total)
    # a multiplier too small to matter (relative to the barrier of its members) does not make a group bind
    bsum = e.T @ prob.b
    with np.errstate(divide="ignore", invalid="ignore"):
        weak = np.abs(eta) * s <= 1e-9 * prob.rho * np.maximum(bsum, 1e-300)
    side = np.where(weak, 0, side)
    return _Grouped(x, nu, free, np.where(side != 0, eta, 0.0), side, total)


def _normalise(
    prob: _Segments, a0: np.ndarray, e: np.ndarray, eta: np.ndarray, x: np.ndarray, nu: float, free: np.ndarray,
    side: np.ndarray, tol: float, max_iter: int, total: int,
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray, int]:  # fmt: skip
    """Where the binding budgets pin the book (every asset inside its piece is in a binding group), ν and the
    η_g are determined only up to η_g − δ, ν + δ: pick erc's choice (``_groups``, "Degenerate budgets"), the
    least constrained group at U_g with η = 0 (else the group at L_g with the largest η), if the shifted
    multipliers reproduce the same portfolio (the bound assets outside the groups accept the shifted ν)."""
    bind = side != 0
    inside = free & ~(prob.kink & (x == prob.w0))
    gid = np.where(e.any(axis=1), e.argmax(axis=1), -1)
    if not bind.any() or not inside.any() or not np.all(np.isin(gid[inside], np.flatnonzero(bind))):
        return eta, x, nu, free, side, total
    ups = np.flatnonzero(side > 0)
    delta = float(np.min(eta[ups])) if ups.size else float(np.max(eta[side < 0]))
    shifted = np.where(bind, eta - delta, eta)
    try:
        xs, nus, frees, its = _inner(prob, a0, e, shifted, x, tol, max_iter)
    except OptimizerError:
        return eta, x, nu, free, side, total
    total += its
    if float(np.max(np.abs(xs - x))) > 1e-10:
        return eta, x, nu, free, side, total
    return shifted, xs, nus, frees, np.where(np.abs(shifted) > 0, side, 0), total


def _finish_grouped(
    g: _Grouped, prob: _Segments, lay: Any, idx: np.ndarray, n: int, root: float, finish: Callable[..., Any],
    rho: float, rp_iterations: int,
) -> CostAwareResult:  # fmt: skip
    """As the plain path ends: assets within tol of w0 not traded, bound assets on their bounds; then the
    members inside their piece of each binding group rescaled onto its bound and the rest onto Σw = 1."""
    x = g.x.copy()
    tol = prob.tol
    snap = prob.kink & (np.abs(x - prob.w0) <= tol)
    x[snap] = prob.w0[snap]
    inside = g.free & (x > prob.lo) & (x < prob.hi) & ~(prob.kink & (x == prob.w0))
    gid = lay.gid[idx]
    bound_of = np.where(g.side > 0, lay.upper, lay.lower)
    held_by = np.isin(gid, np.flatnonzero(g.side != 0)) & (gid >= 0)
    for j in np.flatnonzero(g.side != 0):
        mem = inside & (gid == j)
        if mem.any():
            rest = float(x[(gid == j) & ~mem].sum())
            x[mem] = np.clip(x[mem] * (bound_of[j] - rest) / float(x[mem].sum()), prob.lo[mem], prob.hi[mem])
    others = inside & ~held_by
    if others.any():
        room = 1.0 - float(x[~others].sum())
        x[others] = np.clip(x[others] * room / float(x[others].sum()), prob.lo[others], prob.hi[others])
    w = np.zeros(n)
    w[idx] = x
    bound = (x >= prob.hi) | ((x <= prob.lo) & (prob.lo > 0)) | ~prob.movable
    free_all = np.zeros(n, bool)
    free_all[idx] = ~bound & ~held_by
    held = np.zeros(n, bool)
    held[idx] = prob.kink & (x == prob.w0)
    binding = {nm: ("upper" if sd > 0 else "lower") for nm, sd in zip(lay.names, g.side) if sd != 0}
    mult = {nm: float(v * root) for nm, v in zip(lay.names, g.eta)}
    return finish(w, rp_iterations + g.iterations, free_all, held, rho, g.nu * root, binding, mult)  # type: ignore[no-any-return]


def _costs(costs: Any, n: int, labels: Sequence[str]) -> np.ndarray:
    cost = _vector(costs, n, "costs", labels, 0.0)
    if (cost < 0).any():
        raise OptimizerError(f"rp_cost: costs must be >= 0; negative for {[x for x, m in zip(labels, cost < 0) if m]}")
    return cost


def _hold_zero(
    cov: Any, upper: Any, w0: Any, costs: Any, threshold: float, names: Sequence[str] | None
) -> tuple[Any, np.ndarray | None]:
    """``upper`` with a cap of 0 on every asset held at 0 whose cost exceeds ``threshold``, and which
    assets those are; ``upper`` unchanged (and None) when the rule does not apply. Input that is not
    usable here is left for erc's checks to word, except the threshold and the costs themselves."""
    if not (isinstance(threshold, (int, float, np.floating)) and math.isfinite(threshold) and threshold >= 0):
        raise OptimizerError(f"rp_cost: hold_zero_when_cost_exceeds must be a finite number >= 0, got {threshold}")
    shape = np.shape(cov)
    if w0 is None or costs is None or len(shape) != 2 or np.shape(w0) != shape[:1]:
        return upper, None
    n = shape[0]
    labels = [f"asset {i}" for i in range(n)] if names is None else [str(x) for x in names]
    cost = _costs(costs, n, labels)
    start = np.asarray(w0, dtype=float)
    hi = np.ones(n) if upper is None else np.asarray(upper, dtype=float)
    if hi.shape != (n,) or not np.isfinite(start).all() or not start.sum() > 0:
        return upper, None  # erc words a bad vector; an empty book has to be bought
    out = (start == 0) & (cost > threshold) & (hi > 0)
    if not out.any() or not float(np.maximum(hi[~out], 0.0).sum()) >= 1.0 - 1e-12:
        return upper, None  # nothing to keep out, or the rest could not hold the portfolio
    return np.where(out, 0.0, hi), out


def _solve_budget(
    prob: _Segments, x: np.ndarray, tol: float, budget: int
) -> tuple[np.ndarray, float, np.ndarray, bool]:
    """Outer iteration: ν with Σx(ν) = 1, safeguarded Newton (dΣx/dν = −1ᵀH_FF⁻¹1), Illinois, and
    bisection when the steps stop shrinking (module docstring, "Algorithm")."""
    nu = 0.0
    lo_b: tuple[float, float] | None = None  # (ν, Σx − 1) with Σx > 1: ν must grow
    hi_b: tuple[float, float] | None = None  # with Σx < 1: ν must shrink
    side = 0
    step = 1.0
    last = before = math.inf  # |Δν| of the last two outer steps (the bisection safeguard)
    for _ in range(budget + 200):
        x, ok, free, chol = prob.solve(nu, x, budget)
        excess = float(x.sum()) - 1.0
        if ok and abs(excess) <= tol:
            return x, nu, free, True
        if prob.iterations >= budget:
            return x, nu, free, False
        if excess > 0:
            lo_b = (nu, excess)
            if side == 1 and hi_b is not None:
                hi_b = (hi_b[0], 0.5 * hi_b[1])
            side = 1
        else:
            hi_b = (nu, excess)
            if side == -1 and lo_b is not None:
                lo_b = (lo_b[0], 0.5 * lo_b[1])
            side = -1
        p = np.zeros(len(x))
        if chol is not None:
            p[free] = linalg.cho_solve(chol, np.ones(int(free.sum())), check_finite=False)
        q = float(p.sum())
        if q > 1e-14:
            dnu = excess / q
        else:  # nothing free to move: expand until the sign of the excess flips
            dnu = math.copysign(step, excess)
            step *= 2.0
        nn = nu + dnu
        if lo_b is not None and hi_b is not None:
            a, z = sorted((lo_b[0], hi_b[0]))
            if not (a < nn < z):
                (ua, fa), (uz, fz) = lo_b, hi_b
                nn = ua - fa * (uz - ua) / (fz - fa)
                if not (a < nn < z):
                    nn = 0.5 * (a + z)
            # Σx(ν) is only piecewise smooth (an asset leaving w0 or a bound changes its slope), so
            # Newton can land inside the bracket yet jump between two pieces for ever: a step that is
            # not half the one before last is replaced by bisection (rtsafe's rule), which makes the
            # steps shrink geometrically and the iteration converge.
            if abs(nn - nu) > 0.5 * before:
                nn = 0.5 * (a + z)
        dnu = nn - nu
        before, last = last, abs(dnu)
        nu = nn
        # Warm start on the predicted path dx = −dν H_FF⁻¹1, kept positive and in the box.
        x = np.clip(x - dnu * p, np.maximum(prob.lo, 0.1 * x), prob.hi)
    return x, nu, free, False


# -- the compiled inner solver --------------------------------------------------------------------------

FAST_PATH = True
"""Run _solve_budget's compiled twin (plugins/optimizers/_cost_kernel.py) first; tests switch it off."""
_kernel: Any = None  # None: not loaded yet; False: unavailable


def _load_kernel() -> Any:
    """The numba kernel, compiled or loaded from numba's cache on first use (importing this module
    stays cheap); any failure leaves the numpy implementation in charge, said once."""
    global _kernel
    if _kernel is None:
        try:
            mod = importlib.import_module("plugins.optimizers._cost_kernel")
            one = np.ones(2)
            out = mod.solve_budget(
                np.eye(2), 0.5 * one, 0.0 * one, one, 0.5 * one, 1e-3 * one, 0.0 * one, 1.0, 1e-4, 0.5 * one, 1e-12, 50
            )
            if out[0] != 0:
                raise RuntimeError(f"self-test returned status {out[0]}")
            _kernel = mod.solve_budget
        except Exception as exc:  # noqa: BLE001 - numba import or compile errors are many; all mean "use numpy"
            log.warning(
                "rp_cost: compiled solver unavailable (%s: %s); using the numpy solver", type(exc).__name__, exc
            )
            _kernel = False
    return _kernel


def _solve_budget_fast(
    prob: _Segments, x: np.ndarray, tol: float, budget: int
) -> tuple[np.ndarray, float, np.ndarray, bool] | None:
    """_solve_budget by the compiled kernel; None when it is unavailable or meets a Newton system that
    is not positive definite (the numpy implementation then runs from the same start)."""
    kernel = (_kernel if _kernel is not None else _load_kernel()) if FAST_PATH else False
    if not kernel:
        return None
    try:
        status, xk, nu, free, iterations = kernel(
            prob.s, prob.b, prob.lo, prob.hi, prob.w0, prob.c, prob.a, float(prob.rho), float(prob.eps_max),
            x.copy(), float(tol), int(budget),
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - numba cannot type an unusual input: numpy answers
        log.warning("rp_cost: compiled solver failed (%s: %s); using the numpy solver", type(exc).__name__, exc)
        return None
    if status == 2:
        return None
    prob.iterations = iterations
    return xk, nu, free, status == 0


# -- the plugin ---------------------------------------------------------------------------------------

NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class CostAwareConfig(ComponentConfig):
    """Options of the ``rp_cost`` optimizer (module docstring, "Where costs and μ come from").

    ``lam`` weights ``forecast.mu`` (per hour); ``cost_bps`` is the one-way cost of trading any asset
    and ``costs_bps`` overrides it per asset, both in bps of the value traded; ``horizon_hours`` is the
    holding horizon over which a trade must pay for itself (λ_eff = λ√H, c_eff = c/√H). ``budgets`` are
    risk budgets as in ``erc``. ``hold_zero_when_cost_exceeds_bps`` (off by default) keeps an asset the
    book holds at 0 at 0 while its cost is above it, instead of buying the sliver the barrier buys
    (``solve_cost_aware``'s ``hold_zero_when_cost_exceeds``).
    """

    lam: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="weight of forecast.mu")
    cost_bps: float = Field(default=10.0, ge=0, allow_inf_nan=False, description="one-way cost, bps of value")
    costs_bps: dict[str, NonNegFloat] | None = None
    horizon_hours: float = Field(default=720.0, gt=0, allow_inf_nan=False)
    hold_zero_when_cost_exceeds_bps: NonNegFloat | None = Field(
        default=None, description="keep an asset held at 0 out while its one-way cost (bps) exceeds this"
    )
    budgets: dict[str, PositiveFloat] | None = None
    tol: float = Field(default=1e-12, gt=0)
    max_iter: int = Field(default=200, ge=1)


def cost_vector(assets: Sequence[str], cost_bps: float, costs_bps: Mapping[str, float] | None) -> np.ndarray:
    """One-way cost per unit of weight traded (decimal), by asset; unknown names are an error."""
    per = dict(costs_bps or {})
    unknown = sorted(set(per) - set(assets))
    if unknown:
        raise OptimizerError(f"rp_cost: costs_bps names assets outside the universe: {unknown}")
    return np.array([per.get(a, cost_bps) for a in assets], dtype=float) / 1e4


class CostAwareOptimizer:
    """``rp_cost``: Q on the forecast's Σ and μ, moving from the current weights (module docstring)."""

    name = "rp_cost"

    def __init__(self, cfg: CostAwareConfig | None = None) -> None:
        self.cfg = cfg or CostAwareConfig()

    def optimize(
        self,
        forecast: Forecast,
        *,
        upper: np.ndarray,
        lower: np.ndarray,
        current: np.ndarray,
        groups: Sequence[GroupBound] = (),
    ) -> Target:
        """``groups``: venue budgets, constraints of Q (module docstring, "Venue budgets"); the binding ones
        are named in ``diagnostics["groups"]``. Without groups the problem (and the answer) is unchanged."""
        cfg = self.cfg
        assets = tuple(forecast.assets)
        h = math.sqrt(cfg.horizon_hours)
        mu = forecast.mu if forecast.mu is not None else None
        res = solve_cost_aware(
            forecast.cov,
            budget_vector(assets, cfg.budgets),
            upper,
            lower,
            w0=current,
            costs=cost_vector(assets, cfg.cost_bps, cfg.costs_bps) / h,
            mu=mu,
            lam=cfg.lam * h if mu is not None else 0.0,
            tol=cfg.tol,
            max_iter=cfg.max_iter,
            names=assets,
            hold_zero_when_cost_exceeds=(
                None if cfg.hold_zero_when_cost_exceeds_bps is None else cfg.hold_zero_when_cost_exceeds_bps / 1e4 / h
            ),
            groups=groups,
        )
        rc, sigma_p = risk_contributions(res.weights, forecast.cov)
        fractions = rc / sigma_p if sigma_p > 0 else rc
        diagnostics = {
            "iterations": res.iterations,
            "dev": res.dev,
            "dev_rp": res.rp.dev,
            "turnover": res.turnover,
            "cost": res.cost,
            "held": [a for a, f in zip(assets, res.held) if f],
            "held_at_zero": [a for a, f in zip(assets, res.held_zero) if f],
            "floored": [a for a, f in zip(assets, res.floored) if f],
        }
        if groups:
            diagnostics["groups"] = dict(res.groups)
            diagnostics["group_multipliers"] = dict(res.group_multipliers)
        return Target(assets, res.weights, fractions, sigma_p, res.capped, diagnostics)


def _make(cfg: CostAwareConfig, ctx: ComponentContext) -> CostAwareOptimizer:
    return CostAwareOptimizer(cfg)


@hookimpl
def rwabot_register_optimizers(register: Callable[..., None]) -> None:
    register("rp_cost", _make, CostAwareConfig)
