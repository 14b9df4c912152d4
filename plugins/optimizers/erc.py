"""Equal-risk-contribution (ERC) and risk-budgeting optimizer, long-only, with caps and floors.

What it solves
--------------
Given a covariance Σ (N × N, per hour), risk budgets b > 0 (normalised to Σb = 1; equal budgets give
ERC) and bounds 0 ≤ lower ≤ w ≤ upper, find fully invested weights (Σw = 1) that are *risk parity
under bounds*. With RC_i = w_i (Σw)_i / σ_p the risk contribution of asset i and
ρ_i = RC_i / b_i its risk per unit of budget, every asset is in exactly one of three states:

* **free** (lower < w_i < upper): ρ_i is the same number ρ* for all free assets, i.e. their risk
  contributions are proportional to their budgets (equal for ERC);
* **capped** (w_i = upper_i): ρ_i ≤ ρ*; the cap binds, released the asset would take more weight;
* **floored** (w_i = lower_i > 0): ρ_i ≥ ρ*; the floor binds, released it would take less.

An asset whose cap (or floor) would not bind is free, whatever it was at the start: a capped asset
with ρ_i > ρ* (it would sit below its cap once free) is released, and so is a floored asset with
ρ_i < ρ*. With no binding bound every asset is free and the result is the exact risk-budgeting
portfolio. ``dev`` = max over free assets of |ρ_i / mean_free(ρ) − 1|; it is at most 1e-8 (≈ ``tol``
in practice) whenever the solver returns. An asset with ``upper == 0`` is held at 0 and reported
capped: it is out of the problem (the budgets are renormalised over the others), so it may have zero
variance, which is an error for any asset that could be held; one with ``lower == upper`` is held
there and reported capped (not floored).

Why this formulation
--------------------
The three states are exactly the KKT conditions of the strictly convex box problem (Spinu 2013;
Richard & Roncalli 2019, "Constrained risk budgeting portfolios")

    P(t):  minimise  f_t(x) = ½ xᵀΣx − t Σ_i b_i log x_i   subject to  lower ≤ x ≤ upper,

whose gradient (Σx)_i − t b_i / x_i vanishes for free assets (x_i (Σx)_i = t b_i: budgets met
exactly), is ≤ 0 at a cap and ≥ 0 at a floor. P(t) has a unique solution x(t) for every t > 0; the
answer is x(t*) with t* chosen so that Σx(t*) = 1 (t* is ρ*·σ_p). So the active set is not a
heuristic: it is the one the convex problem P(t*) picks.

When no such t exists the bounds admit no risk-parity portfolio: floors on assets that others hedge
can force Σx(t) > 1 for every t > 0 (the free assets must hold the hedge however small their risk);
that raises ``OptimizerError`` naming the floored assets.

Algorithm
---------
Two methods, the first compiled and fast, the second the exact safety net:

* **Coordinate descent (plugins/optimizers/_ccd.py, numba)**, tried first. In y = s·w it solves
  min ½yᵀΣy − Σ b log y on s·lower ≤ y ≤ s·upper with Σy = s (P(t) with t = 1/s²): sweeps of closed-form
  coordinate minimisations clipped into the box (n² flops each, Σy kept current by one axpy per
  coordinate, no factorisation), each followed by a closed-form joint rescaling of the free block and
  s that enforces its scale condition y_Fᵀ(Σy)_F = Σ_F b and Σy = s. About a digit per sweep: 12–13
  sweeps from a cold start to a free-asset residual of 1e-12, 1–2 from a previous solution. Its
  answer is accepted only after an exact check on a fresh Σw (dev ≤ 1e-8, KKT signs of the bound
  assets, bounds). It declines (and the method below runs from scratch, with the same ``max_iter``)
  on anything it does not cover: input that needs an error message (a NaN or negative warm start
  included), bounds that leave a single portfolio, a Σ that fails its Cholesky test, hedges that make the rescaling
  impossible, or no convergence within ``max_iter`` sweeps (slowly converging, near-singular Σ).
  numba is imported on the first solve, not with this module; if it is missing or fails to compile, a
  warning is logged once and the method below does all the work.
* **Newton active-set method (numpy/scipy, this module)**:
  primal-dual active-set rounds (the release rule above, applied to all assets at once): hold the
  capped and floored assets at their bounds and solve the free block, Σw = 1 included, then bind
  every free asset found beyond a bound and release every bound asset whose ρ_i is on the wrong side
  of ρ* (by more than KKT_TOL). A set that reproduces itself is the KKT point of P(t*). Rounds solve
  to ROUND_TOL until the set settles, then once more to ``tol``. A warm start at a previous solution
  starts from its active set and usually ends in one round.
* Each free block is a smooth system, (Σ_FF x + c)_i = t b_i / x_i with c = Σ_FB w_B and Σx = room,
  solved by Newton on (x, t) jointly: one Cholesky factor of Σ_FF + t·diag(b/x²) per step, damped by
  Armijo on the scaled residual so that x, t stay > 0.
* Fallback, if the rounds cycle or a block's Newton stalls: P(t) itself by projected Newton
  (Bertsekas 1982, ε-active sets, projected Armijo search), with t found by safeguarded Newton on
  log Σx(t) against log t (exact in one step when nothing binds, since then x(t) = √t·x(1)), a
  growing trust radius, and Illinois regula falsi once Σx = 1 is bracketed. Slower, but it settles
  the active set whatever the start.
* Finally the bound assets are set exactly at their bounds and the free block rescaled so that
  Σw = 1 to rounding. Without ``w0`` the start is the diagonal-Σ solution √b_i/σ_i.

``iterations`` counts coordinate sweeps (O(n²) each) when the compiled method answered, else Newton
steps (one Cholesky factorisation each); ``max_iter`` bounds each method's count. Convergence stops
at ``tol`` or at the rounding floor of the residual (Σx loses digits to cancellation, about
ε·√n·(|Σ|x)_i), whichever is larger. Σ is rescaled by its largest variance first (the compiled method
needs no rescaling: y absorbs the scale); weights do not depend on the scale of Σ.

Input checks raise ``OptimizerError`` (non-finite, non-square, asymmetric or not positive
semi-definite Σ, zero variance of an asset not capped at 0, budgets ≤ 0, NaN bounds, negative floors,
NaN, negative or misshapen current weights ``w0``) and
``InfeasibleBoundsError`` naming the assets when lower > upper, Σupper < 1 or Σlower > 1.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field
from scipy import linalg

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Forecast, GroupBound, Target
from bot.errors import InfeasibleBoundsError, OptimizerError
from bot.hookspecs import hookimpl
from bot.riskmath import risk_contributions

log = logging.getLogger(__name__)

PSD_RTOL = 1e-10
"""Smallest eigenvalue allowed, relative to the largest variance (same rule as Forecast.validate)."""
ZERO_VAR_RTOL = 1e-20
"""A variance below this fraction of the largest one is treated as zero: its inverse-vol weight
would swamp the portfolio and the Newton system would be hopelessly scaled."""
SYM_RTOL = 1e-10
BOUND_ATOL = 1e-12
"""Slack in the feasibility checks Σupper ≥ 1 ≥ Σlower, so that bounds built in floating point that
sum to one up to rounding are accepted (the weights are then exactly those bounds)."""
DEV_LIMIT = 1e-8
"""The solver never returns a portfolio whose free-asset dispersion exceeds this."""
ARMIJO = 1e-4
EPS_ACTIVE = 1e-4
"""Largest ε of the projected-Newton ε-active set, in weight units."""
INNER_TOL_START = 1e-4
INNER_TOL_RATIO = 1e-2
"""Inner tolerance while Σx(t) is still off: INNER_TOL_RATIO · |log Σx|, at most INNER_TOL_START."""
LOG_T_STEP = 20.0
"""Largest change of log t in one outer step (the slope can be tiny when nearly everything binds)."""
MAX_ROUNDS = 50
"""Active-set rounds before the nested projected-Newton method takes over."""
ROUND_TOL = 1e-6
"""Tolerance of the active-set rounds before the set settles (the decisions need signs, not digits)."""
KKT_TOL = 1e-9
"""A bound asset is released only when its ρ_i is off ρ* by more than this (relative), so that rounding
cannot make the active-set rounds flip a degenerate asset back and forth."""


@dataclass(frozen=True)
class RiskBudgetResult:
    """Weights and how they were reached.

    ``dev`` is max over free assets of |ρ_i / mean_free(ρ) − 1| with ρ_i = RC_i / b_i; ``capped``
    marks assets at their upper bound, ``floored`` those at a (positive) lower bound that are not free.
    """

    weights: np.ndarray
    iterations: int
    dev: float
    capped: np.ndarray
    floored: np.ndarray


# -- input checks -------------------------------------------------------------------------------------


def _labels(n: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"asset {i}" for i in range(n)]
    if len(names) != n:
        raise OptimizerError(f"erc: {len(names)} names for a {n} x {n} covariance")
    return [str(a) for a in names]


def _pick(labels: Sequence[str], mask: np.ndarray) -> list[str]:
    return [a for a, m in zip(labels, mask) if m]


def _check_cov(cov: Any, names: Sequence[str] | None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Return Σ / (largest variance), symmetrised, the asset labels and the assets of zero variance.

    A zero variance is an error only for an asset that may be held: the caller raises it once the
    bounds are read (an asset capped at 0 is out of the problem, whatever its variance)."""
    c = np.asarray(cov, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise OptimizerError(f"erc: covariance must be a non-empty square matrix, got shape {c.shape}")
    n = c.shape[0]
    labels = _labels(n, names)
    finite = np.isfinite(c)
    bad = ~(finite.all(axis=1) & finite.all(axis=0))
    if bad.any():
        raise OptimizerError(f"erc: covariance has NaN or inf entries for {_pick(labels, bad)}")
    diag = np.diag(c)
    scale = float(np.max(np.abs(diag)))
    if scale == 0.0:
        raise OptimizerError(f"erc: zero variance for {labels}")
    asym = float(np.max(np.abs(c - c.T)))
    if asym > SYM_RTOL * scale:
        raise OptimizerError(f"erc: covariance is not symmetric (max |Σ - Σᵀ| = {asym:.3e})")
    neg = diag < 0
    if neg.any():
        raise OptimizerError(
            f"erc: covariance is not positive semi-definite: negative variance for {_pick(labels, neg)}"
        )
    zero = diag <= ZERO_VAR_RTOL * scale
    s = 0.5 * (c + c.T) / scale
    # A Cholesky factorisation of Σ + δI succeeds iff λ_min > −δ (up to rounding): O(n³/3) instead of
    # the eigendecomposition, which is computed only to word the error.
    try:
        linalg.cho_factor(s + PSD_RTOL * np.eye(n), lower=True, check_finite=False)
    except linalg.LinAlgError:
        lam = float(np.linalg.eigvalsh(s)[0])
        if lam < -PSD_RTOL:
            raise OptimizerError(
                f"erc: covariance is not positive semi-definite (smallest eigenvalue {lam * scale:.3e})"
            ) from None
    return s, labels, zero


def _check_zero_variance(zero: np.ndarray, hi: np.ndarray, labels: Sequence[str]) -> None:
    """An asset of zero variance can only be held at 0: its inverse-vol weight would swamp the portfolio,
    and its risk contribution is 0 whatever its weight, so no risk budget can be met."""
    bad = zero & (hi > 0)
    if bad.any():
        raise OptimizerError(f"erc: zero variance for {_pick(labels, bad)}; drop the asset or cap it at 0")


def _check_start(w0: Any, n: int, labels: Sequence[str]) -> np.ndarray | None:
    """The warm start (current weights) checked like the other vectors: finite and >= 0."""
    if w0 is None:
        return None
    v = _check_vector(w0, n, "current weights", labels)
    neg = v < 0
    if neg.any():
        raise OptimizerError(f"erc: current weights must be >= 0 (long-only); negative for {_pick(labels, neg)}")
    return v


def _check_vector(v: Any, n: int, what: str, labels: Sequence[str]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if a.shape != (n,):
        raise OptimizerError(f"erc: {what} must have shape ({n},), got {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        raise OptimizerError(f"erc: {what} is NaN or inf for {_pick(labels, bad)}")
    return a


def _check_inputs(
    n: int,
    labels: Sequence[str],
    budgets: Any,
    upper: Any,
    lower: Any,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not (math.isfinite(tol) and tol > 0):
        raise OptimizerError(f"erc: tol must be a positive number, got {tol}")
    if max_iter < 1:
        raise OptimizerError(f"erc: max_iter must be at least 1, got {max_iter}")
    b = np.full(n, 1.0 / n) if budgets is None else _check_vector(budgets, n, "budgets", labels)
    if (b <= 0).any():
        raise OptimizerError(f"erc: risk budgets must be > 0, got <= 0 for {_pick(labels, b <= 0)}")
    b = b / b.sum()
    hi = np.ones(n) if upper is None else _check_vector(upper, n, "upper bounds", labels)
    lo = np.zeros(n) if lower is None else _check_vector(lower, n, "lower bounds", labels)
    if (lo < 0).any():
        raise OptimizerError(f"erc: long-only, lower bounds must be >= 0; negative for {_pick(labels, lo < 0)}")
    hi = np.maximum(hi, 0.0)
    crossed = lo > hi
    if crossed.any():
        names = _pick(labels, crossed)
        raise InfeasibleBoundsError(f"erc: lower bound above upper bound for {names}", tuple(names))
    if hi.sum() < 1.0 - BOUND_ATOL:
        names = _pick(labels, np.ones(n, bool))
        raise InfeasibleBoundsError(
            f"erc: upper bounds sum to {hi.sum():.6g} < 1, no fully invested portfolio fits under the caps of {names}",
            tuple(names),
        )
    if lo.sum() > 1.0 + BOUND_ATOL:
        names = _pick(labels, lo > 0)
        raise InfeasibleBoundsError(
            f"erc: lower bounds sum to {lo.sum():.6g} > 1, the floors of {names} overspend the portfolio",
            tuple(names),
        )
    return b, lo, hi


# -- the solver ---------------------------------------------------------------------------------------


class _NoRoot(OptimizerError):
    """Σx(t) never reaches the target: floors (or fixed assets) force hedges the free assets cannot
    undo. The active-set driver falls back on the nested method; the nested method reports it."""


@dataclass
class _Budget:
    """Newton steps taken so far, shared by every subproblem of one solve."""

    limit: int
    used: int = 0


@dataclass
class _Step:
    """What an inner solve leaves behind for the outer iteration: its free and held sets and the
    Cholesky factor of the last Hessian, with the free set it was built on (for dx/dt)."""

    free: np.ndarray
    held: np.ndarray
    chol: tuple[np.ndarray, bool] | None
    chol_free: np.ndarray | None


class _BoxProblem:
    """P(t) restricted to some assets: min ½xᵀSx + cᵀx − t Σ b log x over lo ≤ x ≤ hi.

    ``c`` is the pull of assets held fixed outside the problem (Σ_FB w_B); it is zero for the full
    problem. With lo = 0 and hi = ∞ no bound can bind and ``solve`` is a damped Newton method.
    """

    def __init__(
        self,
        s: np.ndarray,
        b: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        budget: _Budget,
        c: np.ndarray | None = None,
    ) -> None:
        self.s, self.b, self.lo, self.hi, self.budget = s, b, lo, hi, budget
        self.c = np.zeros(len(b)) if c is None else c
        self.linear = c is not None and bool(np.any(c != 0))
        self.diag = np.diag(s).copy()
        self.movable = lo < hi
        width = float(np.min(hi[self.movable] - lo[self.movable])) if self.movable.any() else 1.0
        self.eps_max = min(EPS_ACTIVE, 0.25 * width)
        self._abs_s: np.ndarray | None = None

    def grad_part(self, x: np.ndarray) -> np.ndarray:
        """Sx + c, the smooth part of the gradient."""
        return self.s @ x + self.c

    def objective(self, x: np.ndarray, sxc: np.ndarray, t: float) -> tuple[float, float]:
        """f_t(x) and the size of its rounding noise (for an Armijo test that cannot stall on it)."""
        quad = 0.5 * float(x @ (sxc + self.c))
        logs = float(self.b @ np.log(x))
        return quad - t * logs, 256.0 * np.finfo(float).eps * (abs(quad) + t * abs(logs) + t)

    def noise_floor(self, x: np.ndarray, t: float, free: np.ndarray) -> float:
        """Rounding floor of the residual x_i g_i / (t b_i): (Sx)_i loses digits to cancellation, by
        about ε·√n·(|S| x + |c|)_i. Asking for less than this would only burn Newton steps."""
        if self._abs_s is None:
            self._abs_s = np.abs(self.s)
        scale = x * (self._abs_s @ x + np.abs(self.c)) / (t * self.b)
        return 8.0 * np.finfo(float).eps * (math.sqrt(len(x)) + 1.0) * float(np.max(scale[free], initial=1.0))

    def held_set(self, x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
        """Bertsekas' ε-active set: at or near a bound, with the gradient pushing outward. A zero
        floor is never held: the barrier keeps x > 0 on its own."""
        lo, hi = self.lo, self.hi
        return self.movable & (((x <= lo + eps) & (g > 0) & (lo > 0)) | ((x >= hi - eps) & (g < 0)))

    def factor(self, x: np.ndarray, t: float, free: np.ndarray) -> tuple[np.ndarray, bool] | None:
        if not free.any():
            return None
        idx = np.flatnonzero(free)
        h = self.s[np.ix_(idx, idx)] if len(idx) < len(x) else self.s.copy()
        h[np.diag_indices_from(h)] += t * self.b[idx] / x[idx] ** 2
        self.budget.used += 1
        try:
            return linalg.cho_factor(h, lower=True, overwrite_a=True, check_finite=False)
        except linalg.LinAlgError:  # S is PSD only to 1e-10; the barrier term makes this all but impossible
            raise OptimizerError("erc: Newton system is not positive definite (covariance near-singular)") from None

    def solve_joint(self, x: np.ndarray, t: float, target: float, tol: float) -> tuple[np.ndarray, float] | None:
        """Newton on x and t together for a problem without bounds: F = (Sx + c − t b/x, Σx − target)
        = 0, from one Cholesky factor per step (the bordered system takes two back-substitutions).

        Damped by Armijo on ½‖D F‖² with the row scaling D = (x/(t b), 1/target) frozen for the step,
        for which the Newton direction is always a descent direction. Returns None when the damping
        stalls or the system loses its slope, and the caller falls back on the nested method.
        """
        b = self.b
        free = np.ones(len(x), bool)
        last = math.inf
        while True:
            g = self.grad_part(x) - t * b / x
            scale = x / (t * b)
            resid = float(np.max(np.abs(g * scale)))
            sum_err = abs(float(x.sum()) / target - 1.0)
            if resid <= tol and sum_err <= tol:
                return x, t
            stalled = max(resid, sum_err) > 1e-3 * last
            if stalled and resid <= self.noise_floor(x, t, free) and sum_err <= 64 * np.finfo(float).eps:
                return x, t
            if self.budget.used >= self.budget.limit:
                return None
            last = max(resid, sum_err)
            chol = self.factor(x, t, free)
            assert chol is not None
            p = linalg.cho_solve(chol, g, check_finite=False)
            q = linalg.cho_solve(chol, b / x, check_finite=False)
            slope = float(q.sum())  # dΣx/dt: positive unless hedges dominate
            if not slope > 0:
                return None
            dt = (target - float(x.sum()) + float(p.sum())) / slope
            dx = q * dt - p

            m0 = 0.5 * (_resid_sq(g, scale) + sum_err**2)
            alpha = 1.0
            for _ in range(40):
                xn, tn = x + alpha * dx, t + alpha * dt
                if tn > 0 and np.all(xn > 0):
                    gn = self.grad_part(xn) - tn * b / xn
                    mn = 0.5 * (_resid_sq(gn, scale) + (float(xn.sum()) / target - 1.0) ** 2)
                    if mn <= (1.0 - 2e-4 * alpha) * m0:
                        break
                alpha *= 0.5
            else:  # no descent left: done if that is rounding, else let the nested method try
                done = resid <= self.noise_floor(x, t, free) and sum_err <= 64 * np.finfo(float).eps
                return (x, t) if done else None
            x, t = xn, tn

    def solve(self, t: float, x: np.ndarray, tol: float) -> tuple[np.ndarray, bool, _Step]:
        """Projected Newton from ``x`` (in the box, > 0) to x(t); returns x, whether it converged
        (False when the Newton budget is spent or no descent is left) and the last step's data."""
        b, lo, hi, mov = self.b, self.lo, self.hi, self.movable
        sx = self.grad_part(x)
        f, noise = self.objective(x, sx, t)
        chol, chol_free = None, None
        last = math.inf
        while True:
            g = sx - t * b / x
            hdiag = self.diag + t * b / x**2
            pg = x - np.clip(x - g / hdiag, lo, hi)
            eps = min(self.eps_max, float(np.max(np.abs(pg[mov]), initial=0.0)))
            held = self.held_set(x, g, eps)
            free = mov & ~held
            resid = float(np.max(np.abs(x[free] * g[free]) / (t * b[free]), initial=0.0))
            at_bound = bool(np.all((x[held] == lo[held]) | (x[held] == hi[held])))
            # Done at tol, or once rounding stops Newton's progress near its floor (see noise_floor).
            stalled = resid > 1e-3 * last
            if at_bound and (resid <= tol or (stalled and resid <= self.noise_floor(x, t, free))):
                return x, True, _Step(free, held, chol, chol_free)
            if self.budget.used >= self.budget.limit:
                return x, False, _Step(free, held, chol, chol_free)
            last = resid
            chol, chol_free = self.factor(x, t, free), free
            d = np.zeros_like(x)
            d[held] = -g[held] / hdiag[held]
            if chol is not None:
                d[free] = -linalg.cho_solve(chol, g[free], check_finite=False)
            alpha = 1.0
            for _ in range(60):
                xn = x.copy()
                xn[mov] = np.clip(x[mov] + alpha * d[mov], lo[mov], hi[mov])
                if np.all(xn > 0):
                    sxn = self.grad_part(xn)
                    fn, noise_n = self.objective(xn, sxn, t)
                    expect = -alpha * float(g[free] @ d[free]) + float(g[held] @ (x[held] - xn[held]))
                    if fn <= f - ARMIJO * expect or fn <= f + noise:
                        break
                alpha *= 0.5
            else:  # no descent left to find: converged to rounding, or hopeless
                converged = at_bound and resid <= self.noise_floor(x, t, free)
                return x, converged, _Step(free, held, chol, chol_free)
            x, sx, f, noise = xn, sxn, fn, noise_n


def _resid_sq(g: np.ndarray, scale: np.ndarray) -> float:
    r = g * scale
    return float(r @ r)


def _solve_sum(sub: _BoxProblem, x: np.ndarray, tol: float, target: float = 1.0) -> tuple[np.ndarray, float]:
    """Find t with Σx(t) = target and return (x(t), t): safeguarded Newton on log Σx against log t.

    Raises _NoRoot when Σx(t) stays above the target as t → 0, OptimizerError when the Newton
    budget runs out.
    """
    b, lo, hi = sub.b, sub.lo, sub.hi
    sx = sub.grad_part(x)
    inside = sub.movable & (x > lo) & (x < hi)
    inside = inside if inside.any() else np.ones(len(x), bool)
    t = float((x * sx)[inside].sum() / b[inside].sum())
    if not t > 0:  # hedges can make that sum negative; any positive t will do as a start
        t = max(float(x @ sx), float(np.min(sub.diag)) / len(x) ** 2, 1e-300)
    u = u_start = math.log(t)
    log_target = math.log(target)
    below: tuple[float, float] | None = None  # (log t, log Σx − log target) with Σx < target
    above: tuple[float, float] | None = None  # the same with Σx > target
    side = prev_side = 0
    radius = 1.0
    # Far from the target the inner solve need not be exact: its tolerance follows |log Σx| down to tol.
    tol_in = max(tol, INNER_TOL_START)
    while True:
        x, ok, step = sub.solve(t, x, tol_in)
        if not ok:
            break
        total = float(x.sum())
        phi = math.log(total) - log_target
        exact = tol_in <= tol
        nothing_binds = not sub.linear and sub.movable.all() and not step.held.any()
        if exact and abs(total - target) <= tol * target:
            return x, t
        if exact and nothing_binds:
            y = x * (target / total)  # nothing binds and no fixed pull: y solves P(t·(target/Σx)²)
            if np.all((y > lo) & (y < hi)):
                return y, t * (target / total) ** 2
        if not exact and (nothing_binds or abs(phi) <= 10.0 * tol_in):  # finish P(t) at this t
            tol_in = tol
            continue
        if phi < 0:
            if side == -1 and above is not None:  # Illinois: halve the stale end
                above = (above[0], 0.5 * above[1])
            below, side = (u, phi), -1
        else:
            if side == 1 and below is not None:
                below = (below[0], 0.5 * below[1])
            above, side = (u, phi), 1
        if below is None and u < u_start - 60.0:
            raise _NoRoot(f"even at vanishing risk the portfolio needs {total:.4g} of NAV")
        reuse = step.chol is not None and np.array_equal(step.chol_free, step.free)
        chol = step.chol if reuse else sub.factor(x, t, step.free)
        dlog = np.zeros(len(x))  # d log x_i / d log t on the free assets, 0 on the held ones
        if chol is not None:
            dlog[step.free] = t * linalg.cho_solve(chol, b[step.free] / x[step.free], check_finite=False)
            dlog[step.free] /= x[step.free]
        slope = float((x * dlog).sum() / total)
        # The slope holds the active set fixed; releases and captures as t moves make Σx(t) steeper,
        # so Newton overshoots when most assets are bound. Until the target is bracketed the step stays
        # within a radius that doubles while log Σx keeps its sign.
        radius = min(LOG_T_STEP, 2.0 * radius) if side == prev_side else 2.0
        prev_side = side
        du = -phi / slope if slope > 1e-12 else math.copysign(LOG_T_STEP, -phi)
        un = u + max(-radius, min(radius, du))
        if below is not None and above is not None:
            a, z = sorted((below[0], above[0]))
            if not a < un < z:  # regula falsi on the bracket, bisection if even that falls outside
                (ua, fa), (uz, fz) = below, above
                un = ua - fa * (uz - ua) / (fz - fa)
                if not a < un < z:
                    un = 0.5 * (a + z)
        du, u = un - u, un
        t = math.exp(u)
        x = np.clip(x * np.exp(np.clip(du * dlog, -50.0, 50.0)), lo, hi)
        x = np.where(x > 0, x, np.minimum(1e-300, hi))
        tol_in = max(tol, min(INNER_TOL_START, INNER_TOL_RATIO * abs(phi)))
        if sub.budget.used >= sub.budget.limit:
            break
    raise OptimizerError(f"erc: no convergence within max_iter={sub.budget.limit} Newton steps")


def _active_set(
    s: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    x: np.ndarray,
    tol: float,
    budget: _Budget,
    at_bound: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Primal-dual active-set rounds; returns (w, free) or None when they cycle or get stuck.

    Each round holds the capped and floored assets at their bounds and solves the free block exactly,
    Σw = 1 included: a smooth problem, min ½x_FᵀΣ_FF x_F + cᵀx_F − t Σ_F b log x_F with c = Σ_FB w_B,
    t chosen by _solve_sum. Then every free asset beyond a bound is bound to it, and every bound asset
    whose KKT sign is wrong (a capped asset with ρ_i > ρ*, a floored one with ρ_i < ρ*) is released, all
    at once. A fixed active set is the solution. Many assets can change sides in one round, which a
    projected method on P(t) would do a few at a time.
    """
    movable = lo < hi
    guessed = np.zeros(len(x), bool) if at_bound is None else at_bound
    capped = (guessed & (x >= hi)) | ~movable
    floored = guessed & (x <= lo) & ~capped
    seen: set[bytes] = set()
    exact = False  # rounds solve loosely until the active set settles, then once more to tol
    for _ in range(MAX_ROUNDS):
        key = capped.tobytes() + floored.tobytes() + bytes([exact])
        if key in seen:
            return None
        seen.add(key)
        tol_r = tol if exact else max(tol, ROUND_TOL)
        free = ~(capped | floored)
        w = np.where(capped, hi, np.where(floored, lo, x))
        room = 1.0 - float(w[~free].sum())
        if not free.any() or room <= 0:
            return None
        idx = np.flatnonzero(free)
        c = s[np.ix_(idx, np.flatnonzero(~free))] @ w[~free] if (~free).any() else None
        block = _BoxProblem(s[np.ix_(idx, idx)], b[idx], np.zeros(len(idx)), np.full(len(idx), np.inf), budget, c)
        start = np.maximum(w[idx], 1e-12)
        start *= room / start.sum()
        sxc = block.grad_part(start)
        t0 = float(start @ sxc) / float(b[idx].sum())
        if not t0 > 0:  # the fixed assets hedge the free ones: any positive start will do
            t0 = float(start @ (block.s @ start)) / float(b[idx].sum())
        joint = block.solve_joint(start, t0, room, tol_r)
        if joint is None:
            try:
                joint = _solve_sum(block, start, tol_r, room)
            except _NoRoot:
                return None
        w[idx], t = joint
        rel = w * (s @ w) / (t * b) - 1.0  # ρ_i / ρ* − 1
        new_capped = (free & (w > hi)) | (capped & movable & (rel <= KKT_TOL)) | ~movable
        new_floored = ((free & (w < lo)) | (floored & (rel >= -KKT_TOL))) & ~new_capped
        if np.array_equal(new_capped, capped) and np.array_equal(new_floored, floored):
            if exact:
                return w, free
            exact = True
        capped, floored = new_capped, new_floored
        x = np.clip(w, lo, hi)
    return None


def _initial(
    s: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w0: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """A positive point in the box (``w0`` when usable, else the diagonal-Σ solution √b_i / σ_i) and,
    from ``w0``, the assets it holds at a bound: a previous solution tells its active set."""
    guess = np.sqrt(b / np.diag(s))
    guess /= guess.sum()
    x, at_bound = guess, None
    if w0 is not None:
        v = np.asarray(w0, dtype=float)
        if v.shape == guess.shape and np.all(np.isfinite(v)) and np.all(v >= 0) and v.sum() > 0:
            v = v / v.sum()
            # Renormalising costs the last digit, hence the relative slack; such assets snap back.
            at_hi = np.abs(v - hi) <= 1e-9 * hi
            at_lo = (np.abs(v - lo) <= 1e-9 * lo) & (lo > 0) & ~at_hi
            at_bound = at_hi | at_lo
            # Assets held at zero get a sliver of the default guess: Newton needs x > 0 everywhere.
            x = np.where(at_hi, hi, np.where(at_lo, lo, np.maximum(v, 1e-3 * guess)))
    x = np.clip(x, lo, hi)
    return np.where(x > 0, x, np.minimum(1e-3 * guess, hi)), at_bound


def _dev(w: np.ndarray, cov: np.ndarray, b: np.ndarray, free: np.ndarray) -> float:
    if not free.any():
        return 0.0
    ratio = (w * (cov @ w) / b)[free]
    mean = float(ratio.mean())
    if not mean > 0:
        return math.inf
    return float(np.max(np.abs(ratio / mean - 1.0)))


def solve_risk_budget(
    cov: Any,
    budgets: Any = None,
    upper: Any = None,
    lower: Any = None,
    *,
    w0: Any = None,
    tol: float = 1e-12,
    max_iter: int = 100,
    names: Sequence[str] | None = None,
) -> RiskBudgetResult:
    """Long-only risk-budgeting weights with Σw = 1 and lower ≤ w ≤ upper (see the module docstring).

    :param cov: N × N covariance (any consistent units; weights do not depend on its scale).
    :param budgets: N positive risk budgets (normalised to sum 1); None gives equal risk (ERC).
    :param upper: caps, default 1 (an asset capped at 0 is held at 0).
    :param lower: floors, default 0.
    :param w0: warm start (e.g. the current weights), N finite values >= 0 (zeros allowed, NaN or
        negative raise); clipped into the bounds.
    :param tol: target of the free-asset residual max |ρ_i / ρ* − 1| (floored at the rounding error of
        Σw) and of |Σw − 1| before the final rescaling.
    :param max_iter: most coordinate sweeps of the compiled method, and most Newton steps (Cholesky
        factorisations) of the numpy method when that one has to answer.
    :param names: asset names for error messages.
    :raises OptimizerError: unusable input, or no convergence within ``max_iter``.
    :raises InfeasibleBoundsError: bounds that admit no fully invested portfolio (names the assets).
    """
    if FAST_PATH:
        fast = _solve_fast(cov, budgets, upper, lower, w0, tol, max_iter)
        if fast is not None:
            return fast
    s, labels, zero = _check_cov(cov, names)
    n = s.shape[0]
    b, lo, hi = _check_inputs(n, labels, budgets, upper, lower, tol, max_iter)
    _check_zero_variance(zero, hi, labels)
    w0 = _check_start(w0, n, labels)
    c = 0.5 * (np.asarray(cov, float) + np.asarray(cov, float).T)

    def done(w: np.ndarray, iterations: int, free: np.ndarray) -> RiskBudgetResult:
        capped = (w >= hi) & ~free
        floored = (w <= lo) & (lo > 0) & ~free & ~capped
        return RiskBudgetResult(w, iterations, _dev(w, c, b, free), capped, floored)

    none = np.zeros(n, bool)
    if hi.sum() <= 1.0 + BOUND_ATOL:  # only the caps themselves fit
        return done(hi.copy(), 0, none)
    if lo.sum() >= 1.0 - BOUND_ATOL:  # only the floors themselves fit
        return done(lo.copy(), 0, none)
    live = hi > 0  # an asset capped at 0 is out of the problem (it would sit on log 0)
    if live.sum() == 1:
        return done(live.astype(float), 0, live & (lo < hi))
    idx = np.flatnonzero(live)
    s, b_live, lo_l, hi_l = s[np.ix_(idx, idx)], b[idx] / b[idx].sum(), lo[idx], hi[idx]
    start = w0[idx] if w0 is not None else None
    x0, at_bound = _initial(s, b_live, lo_l, hi_l, start)
    budget = _Budget(max_iter)
    found = _active_set(s, b_live, lo_l, hi_l, x0, tol, budget, at_bound)
    if found is None and at_bound is not None and at_bound.any():  # the warm start's bounds misled
        found = _active_set(s, b_live, lo_l, hi_l, x0, tol, budget, None)
    if found is not None:
        x, free_sub = found
    else:  # the rounds cycled or stalled: P(t) by projected Newton settles the active set for sure
        sub = _BoxProblem(s, b_live, lo_l, hi_l, budget)
        try:
            x, _ = _solve_sum(sub, x0, tol)
        except _NoRoot as exc:
            floored = [labels[i] for i, at in zip(idx, (lo_l > 0)) if at]
            raise OptimizerError(
                "erc: no risk-budgeting portfolio exists under these bounds: the free assets must "
                f"hedge the floors of {floored}, and {exc}"
            ) from None
        free_sub = ~((x >= hi_l) | ((x <= lo_l) & (lo_l > 0)) | ~sub.movable)
    bound = ~free_sub
    if free_sub.any():  # bounded assets exactly at their bounds, the free block takes the rest
        x[bound] = np.where(x[bound] >= hi_l[bound], hi_l[bound], lo_l[bound])
        room = 1.0 - float(x[bound].sum())
        scaled = x[free_sub] * (room / float(x[free_sub].sum()))
        x[free_sub] = np.clip(scaled, lo_l[free_sub], hi_l[free_sub])
    w = np.zeros(n)
    w[idx] = x
    free = np.zeros(n, bool)
    free[idx] = free_sub
    result = done(w, budget.used, free)
    if not result.dev <= max(DEV_LIMIT, tol):
        raise OptimizerError(f"erc: free-asset risk contributions disperse by {result.dev:.3e} (> 1e-8)")
    return result


# -- the compiled fast path ---------------------------------------------------------------------------

FAST_PATH = True
"""Try the compiled coordinate-descent kernel (plugins/optimizers/_ccd.py) before the Newton method.
Tests switch it off to exercise the numpy method on its own."""
_EMPTY = np.empty(0)
_kernel: Any = None  # None: not loaded yet; False: unavailable (numba missing or failed to compile)


def _load_kernel() -> Any:
    """The numba kernel, imported and compiled (or loaded from numba's cache) on first use, so that
    importing the plugin stays cheap. Any failure leaves the numpy method in charge, said once."""
    global _kernel
    if _kernel is None:
        try:
            _ccd = importlib.import_module("plugins.optimizers._ccd")
            status = _ccd.solve(np.array([[1.0, 0.2], [0.2, 2.0]]), _EMPTY, _EMPTY, _EMPTY, _EMPTY, 1e-12, 100, 1e-8)
            if status[0] != _ccd.OK:
                raise RuntimeError(f"self-test returned status {status[0]}")
            _kernel = _ccd.solve
        except Exception as exc:  # noqa: BLE001 - numba import or compile errors are many; all mean "use numpy"
            log.warning(
                "erc: compiled coordinate-descent path unavailable (%s: %s); using the numpy solver",
                type(exc).__name__,
                exc,
            )
            _kernel = False
    return _kernel


def _array(v: Any) -> np.ndarray:
    """C-contiguous, writeable float64 (a read-only array would make numba compile another version)."""
    a = np.ascontiguousarray(v, dtype=np.float64)
    return a if a.flags.writeable else a.copy()


def _vec(v: Any, n: int) -> np.ndarray | None:
    if v is None:
        return _EMPTY
    a = _array(v)
    return a if a.shape == (n,) else None


def _solve_fast(
    cov: Any, budgets: Any, upper: Any, lower: Any, w0: Any, tol: float, max_iter: int
) -> RiskBudgetResult | None:
    """The kernel's answer, or None when it declines (odd input, a corner case, no convergence within
    ``max_iter`` sweeps): then the Newton method solves, or words the error, from scratch."""
    kernel = _kernel if _kernel is not None else _load_kernel()
    if kernel is False:
        return None
    try:
        c = _array(cov)
        n = c.shape[0]
        if c.ndim != 2 or c.shape[1] != n or n < 2 or not (tol > 0 and max_iter >= 1):
            return None
        b, hi, lo, start = _vec(budgets, n), _vec(upper, n), _vec(lower, n), _vec(w0, n)
    except (TypeError, ValueError):  # not numbers: the numpy method says what is wrong
        return None
    if b is None or hi is None or lo is None or start is None:
        return None
    if start.size and not (np.isfinite(start).all() and (start >= 0).all()):
        return None  # a NaN or negative warm start is an error, worded by the numpy method
    try:
        status, w, capped, floored, sweeps, dev = kernel(
            c, b, hi, lo, start, float(tol), int(max_iter), max(DEV_LIMIT, tol)
        )
    except Exception as exc:  # noqa: BLE001 - e.g. numba cannot type an unusual input; numpy answers
        log.warning("erc: compiled path failed (%s: %s); using the numpy solver", type(exc).__name__, exc)
        return None
    if status != 0:
        return None
    return RiskBudgetResult(w, sweeps, dev, capped, floored)


# -- the plugin ---------------------------------------------------------------------------------------

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ErcConfig(ComponentConfig):
    """Options of the ``erc`` optimizer.

    ``budgets`` maps asset names to risk budgets as shares of total risk. Assets left out share what
    is left (1 − the named shares) equally; naming every asset makes the budgets relative weights
    (normalised to sum 1). Without ``budgets`` every asset gets the same risk (ERC).
    """

    tol: float = Field(default=1e-12, gt=0, description="residual of the risk-budget equations")
    max_iter: int = Field(default=100, ge=1, description="most coordinate sweeps, or Newton steps, per optimisation")
    budgets: dict[str, PositiveFloat] | None = None


def budget_vector(assets: Sequence[str], budgets: Mapping[str, float] | None) -> np.ndarray | None:
    """Risk budgets by asset (see ErcConfig); raises OptimizerError for unknown names or no room left."""
    if not budgets:
        return None
    unknown = sorted(set(budgets) - set(assets))
    if unknown:
        raise OptimizerError(f"erc: budgets name assets outside the universe: {unknown}")
    named = np.array([a in budgets for a in assets])
    b = np.array([float(budgets.get(a, 0.0)) for a in assets])
    if named.all():
        return b / b.sum()
    rest = 1.0 - float(b.sum())
    if rest <= 0:
        raise OptimizerError(
            f"erc: budgets of {sorted(budgets)} sum to {b.sum():.6g} >= 1, nothing left for "
            f"{[a for a, m in zip(assets, named) if not m]}"
        )
    b[~named] = rest / float((~named).sum())
    return b


class ErcOptimizer:
    """Risk parity under bounds (module docstring) on the forecast's covariance, warm-started at the
    current weights so that a quiet hour costs a Newton step or two."""

    name = "erc"

    def compiled_loop(self):  # noqa: ANN201 - a module: plugins/optimizers/fast_loop.py
        """The whole backtest loop compiled, for books this plugin, ewma and band/full make (the fast
        backtest asks the optimizer for it; its ``decline_reason`` says when it does not apply)."""
        from plugins.optimizers import fast_loop

        return fast_loop

    def __init__(self, cfg: ErcConfig | None = None) -> None:
        self.cfg = cfg or ErcConfig()

    def optimize(
        self,
        forecast: Forecast,
        *,
        upper: np.ndarray,
        lower: np.ndarray,
        current: np.ndarray,
        groups: Sequence[GroupBound] = (),
    ) -> Target:
        """``groups``: venue budgets (``plugins/optimizers/_groups.py``); none that binds gives erc's own
        portfolio, bit for bit."""
        assets = tuple(forecast.assets)
        extra: dict[str, Any] = {}
        if groups:
            from plugins.optimizers._groups import solve_group_risk_budget

            res: RiskBudgetResult = solve_group_risk_budget(
                forecast.cov,
                budget_vector(assets, self.cfg.budgets),
                upper,
                lower,
                groups,
                w0=current,
                tol=self.cfg.tol,
                max_iter=self.cfg.max_iter,
                names=assets,
            )
            extra = {"groups": dict(res.groups), "group_multipliers": dict(res.multipliers)}  # type: ignore[attr-defined]
        else:
            res = solve_risk_budget(
                forecast.cov,
                budget_vector(assets, self.cfg.budgets),
                upper,
                lower,
                w0=current,
                tol=self.cfg.tol,
                max_iter=self.cfg.max_iter,
                names=assets,
            )
        rc, sigma_p = risk_contributions(res.weights, forecast.cov)
        fractions = rc / sigma_p if sigma_p > 0 else rc
        diagnostics = {
            "iterations": res.iterations,
            "dev": res.dev,
            "floored": [a for a, f in zip(assets, res.floored) if f],
            **extra,
        }
        return Target(assets, res.weights, fractions, sigma_p, res.capped, diagnostics)


def _make(cfg: ErcConfig, ctx: ComponentContext) -> ErcOptimizer:
    return ErcOptimizer(cfg)


@hookimpl
def rwabot_register_optimizers(register: Callable[..., None]) -> None:
    register("erc", _make, ErcConfig)
