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
capped; one with ``lower == upper`` is held there and reported capped (not floored).

Why this formulation
--------------------
The three states are exactly the KKT conditions of the strictly convex box problem (Spinu 2013;
Richard & Roncalli 2019, "Constrained risk budgeting portfolios")

    P(t):  minimise  f_t(x) = ½ xᵀΣx − t Σ_i b_i log x_i   subject to  lower ≤ x ≤ upper,

whose gradient (Σx)_i − t b_i / x_i vanishes for free assets (x_i (Σx)_i = t b_i: budgets met
exactly), is ≤ 0 at a cap and ≥ 0 at a floor. P(t) has a unique solution x(t) for every t > 0, so the
active set is never guessed: it falls out of the optimisation. The scalar t (the common ρ* up to the
factor σ_p) is then chosen so that Σx(t) = 1. Without binding bounds x(t) = √t · x(1), which is why
the outer iteration works on log Σx against log t: there one Newton step is exact.

Algorithm
---------
* Inner: projected Newton (Bertsekas 1982) on P(t): assets at (or within ε of) a bound whose
  gradient pushes outward are held by a scaled-gradient step, the rest take a Newton step with the
  Cholesky factor of Σ_FF + t·diag(b/x²); the step is projected on the box and backtracked (Armijo)
  so that x stays > 0 and f decreases. Convergence is quadratic once the active set settles.
* Outer: safeguarded Newton on φ(log t) = log Σx(t), with dΣx/dt = 1ᵀ H_FF⁻¹ (b_F / x_F) from the same
  factor; a bracket with Illinois regula falsi takes over when a step leaves it (the active set, and
  so the slope, changes with t). Each inner solve is warm-started on the predicted path
  x_i·exp(Δlog t · d log x_i / d log t).
* Finally the bounded assets are set exactly at their bounds and the free block is rescaled so that
  Σw = 1 to rounding.
* Warm start: ``w0`` (the current weights) is clipped into the bounds and used as the first iterate;
  ``t`` starts at the budget-weighted mean of x_i (Σx)_i over the assets not at a bound.

``iterations`` counts Newton steps (one Cholesky factorisation each); ``max_iter`` bounds their
total. Σ is rescaled by its largest variance first; weights do not depend on the scale of Σ.

Input checks raise ``OptimizerError`` (non-finite, non-square, asymmetric or not positive
semi-definite Σ, zero variance, budgets ≤ 0, NaN bounds, negative floors) and
``InfeasibleBoundsError`` naming the assets when lower > upper, Σupper < 1 or Σlower > 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field
from scipy import linalg

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Forecast, Target
from bot.errors import InfeasibleBoundsError, OptimizerError
from bot.hookspecs import hookimpl
from bot.riskmath import risk_contributions

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
LOG_T_STEP = 20.0
"""Largest change of log t in one outer step (the slope can be tiny when nearly everything binds)."""


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


def _check_cov(cov: Any, names: Sequence[str] | None) -> tuple[np.ndarray, float, list[str]]:
    """Return Σ / scale (symmetrised), the scale (largest variance) and the asset labels."""
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
        raise OptimizerError(f"erc: covariance is not positive semi-definite: negative variance for {_pick(labels, neg)}")
    zero = diag <= ZERO_VAR_RTOL * scale
    if zero.any():
        raise OptimizerError(f"erc: zero variance for {_pick(labels, zero)}; drop the asset or cap it at 0")
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
    return s, scale, labels


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
            f"erc: upper bounds sum to {hi.sum():.6g} < 1, no fully invested portfolio fits under the caps "
            f"of {names}",
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


@dataclass
class _Step:
    """What the last inner Newton step leaves behind for the outer iteration."""

    free: np.ndarray
    chol: tuple[np.ndarray, bool] | None


class _BoxProblem:
    """P(t) on the assets that can move: min ½xᵀSx − t Σ b log x over lo ≤ x ≤ hi (see module doc)."""

    def __init__(self, s: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, tol: float) -> None:
        self.s, self.b, self.lo, self.hi, self.tol = s, b, lo, hi, tol
        self.movable = lo < hi
        width = float(np.min(hi[self.movable] - lo[self.movable])) if self.movable.any() else 1.0
        self.eps_max = min(EPS_ACTIVE, 0.25 * width)
        self.iterations = 0

    def objective(self, x: np.ndarray, sx: np.ndarray, t: float) -> tuple[float, float]:
        """f_t(x) and the size of its rounding noise (for an Armijo test that cannot stall on it)."""
        quad = 0.5 * float(x @ sx)
        logs = float(self.b @ np.log(x))
        return quad - t * logs, 256.0 * np.finfo(float).eps * (abs(quad) + t * abs(logs) + t)

    def factor(self, x: np.ndarray, t: float, free: np.ndarray) -> tuple[np.ndarray, bool] | None:
        if not free.any():
            return None
        idx = np.flatnonzero(free)
        h = self.s[np.ix_(idx, idx)] if len(idx) < len(x) else self.s.copy()
        h[np.diag_indices_from(h)] += t * self.b[idx] / x[idx] ** 2
        self.iterations += 1
        return linalg.cho_factor(h, lower=True, overwrite_a=True, check_finite=False)

    def solve(self, t: float, x: np.ndarray, budget: int) -> tuple[np.ndarray, bool, _Step]:
        """Projected Newton from ``x`` (in the box, > 0); returns x(t), whether it converged, last step."""
        s, b, lo, hi = self.s, self.b, self.lo, self.hi
        sx = s @ x
        f, noise = self.objective(x, sx, t)
        step = _Step(np.zeros(len(x), bool), None)
        stalled = 0
        best = math.inf
        while True:
            g = sx - t * b / x
            hdiag = np.diag(s) + t * b / x**2
            pg = x - np.clip(x - g / hdiag, lo, hi)
            eps = min(self.eps_max, float(np.max(np.abs(pg[self.movable]), initial=0.0)))
            held = self.movable & (((x <= lo + eps) & (g > 0)) | ((x >= hi - eps) & (g < 0)))
            free = self.movable & ~held
            resid = float(np.max(np.abs(x[free] * g[free]) / (t * b[free]), initial=0.0))
            at_bound = bool(np.all((x[held] == lo[held]) | (x[held] == hi[held])))
            if at_bound and resid <= self.tol:
                return x, True, step if step.chol is not None else _Step(free, self.factor(x, t, free))
            # Rounding puts a floor under the residual (Σx loses digits to cancellation); stop once it
            # stops improving well inside the accuracy we promise.
            stalled = stalled + 1 if resid > 0.5 * best else 0
            best = min(best, resid)
            if at_bound and resid <= 0.01 * DEV_LIMIT and stalled >= 3:
                return x, True, step if step.chol is not None else _Step(free, self.factor(x, t, free))
            if self.iterations >= budget:
                return x, False, step
            chol = self.factor(x, t, free)
            d = np.zeros_like(x)
            d[held] = -g[held] / hdiag[held]
            if chol is not None:
                d[free] = -linalg.cho_solve(chol, g[free], check_finite=False)
            step = _Step(free, chol)
            mov = self.movable
            alpha = 1.0
            for _ in range(60):
                xn = x.copy()
                xn[mov] = np.clip(x[mov] + alpha * d[mov], lo[mov], hi[mov])
                if np.all(xn > 0):
                    sxn = s @ xn
                    fn, _ = self.objective(xn, sxn, t)
                    expect = -alpha * float(g[free] @ d[free]) + float(g[held] @ (x[held] - xn[held]))
                    if fn <= f - ARMIJO * expect or fn <= f + noise:
                        break
                alpha *= 0.5
            else:
                return x, resid <= DEV_LIMIT and at_bound, step
            x, sx, f = xn, sxn, fn


def _initial(s: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, w0: Any) -> np.ndarray:
    """A positive point in the box: ``w0`` when usable, else the diagonal-Σ solution √b_i / σ_i."""
    guess = np.sqrt(b / np.diag(s))
    guess /= guess.sum()
    x = guess
    if w0 is not None:
        v = np.asarray(w0, dtype=float)
        if v.shape == guess.shape and np.all(np.isfinite(v)) and np.all(v >= 0) and v.sum() > 0:
            # Assets held at zero get a sliver of the default guess: Newton needs x > 0 everywhere.
            x = np.maximum(v / v.sum(), 1e-3 * guess)
    x = np.clip(x, lo, hi)
    return np.where(x > 0, x, np.minimum(1e-3 * guess, hi))


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
    :param upper: caps, default 1; :param lower: floors, default 0.
    :param w0: warm start (e.g. current weights); clipped into the bounds, zeros allowed.
    :param tol: target of the free-asset residual max |ρ_i / ρ* − 1| and of |Σx − 1| before rescaling.
    :param max_iter: most Newton steps (Cholesky factorisations) in total.
    :param names: asset names for error messages.
    :raises OptimizerError: unusable input, or no convergence within ``max_iter``.
    :raises InfeasibleBoundsError: bounds that admit no fully invested portfolio (names the assets).
    """
    s, _, labels = _check_cov(cov, names)
    n = s.shape[0]
    b, lo, hi = _check_inputs(n, labels, budgets, upper, lower, tol, max_iter)
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
    sub = _BoxProblem(s[np.ix_(idx, idx)], b[idx] / b[idx].sum(), lo[idx], hi[idx], tol)
    start = np.asarray(w0, dtype=float)[idx] if w0 is not None and np.shape(w0) == (n,) else None
    x = _initial(sub.s, sub.b, sub.lo, sub.hi, start)
    x, converged = _solve_sum(sub, x, tol, max_iter, labels=[labels[i] for i in idx])
    if not converged:
        raise OptimizerError(f"erc: no convergence within max_iter={max_iter} Newton steps")
    sb = sub
    bound = ((x >= sb.hi) | ((x <= sb.lo) & (sb.lo > 0))) | ~sb.movable
    free_sub = ~bound
    y = x.copy()
    if free_sub.any():
        room = 1.0 - float(y[bound].sum())
        y[free_sub] = np.clip(y[free_sub] * (room / float(y[free_sub].sum())), sb.lo[free_sub], sb.hi[free_sub])
    w = np.zeros(n)
    w[idx] = y
    free = np.zeros(n, bool)
    free[idx] = free_sub
    result = done(w, sub.iterations, free)
    if not result.dev <= max(DEV_LIMIT, tol):
        raise OptimizerError(f"erc: risk contributions of the free assets disperse by {result.dev:.3e} (> 1e-8)")
    return result


def _solve_sum(sub: _BoxProblem, x: np.ndarray, tol: float, max_iter: int, labels: Sequence[str]) -> tuple[np.ndarray, bool]:
    """Outer iteration: find t with Σx(t) = 1 (safeguarded Newton on log Σx against log t)."""
    b = sub.b
    sx = sub.s @ x
    off = sub.movable & (x > sub.lo) & (x < sub.hi)
    off = off if off.any() else np.ones(len(x), bool)
    t = float((x * sx)[off].sum() / b[off].sum())
    u = math.log(t)
    lo_u: tuple[float, float] | None = None  # (log t, log Σx) with Σx < 1
    hi_u: tuple[float, float] | None = None  # with Σx > 1
    side = 0
    u_start = u
    for _ in range(max_iter + 60):
        x, ok, step = sub.solve(t, x, max_iter)
        total = float(x.sum())
        phi = math.log(total)
        if ok and abs(total - 1.0) <= tol:
            return x, True
        if sub.iterations >= max_iter:
            return x, False
        if phi < 0:
            lo_u = (u, phi)
            if side == -1 and hi_u is not None:
                hi_u = (hi_u[0], 0.5 * hi_u[1])
            side = -1
        else:
            hi_u = (u, phi)
            if side == 1 and lo_u is not None:
                lo_u = (lo_u[0], 0.5 * lo_u[1])
            side = 1
        if hi_u is not None and lo_u is None and u < u_start - 60.0:
            raise OptimizerError(
                "erc: no risk-budgeting portfolio exists under these bounds: even at vanishing risk the "
                f"floors force {total:.4g} of NAV (assets {list(labels)})"
            )
        dlog = np.zeros(len(x))
        if step.chol is not None:
            f = step.free
            p = linalg.cho_solve(step.chol, b[f] / x[f], check_finite=False)
            dlog[f] = t * p / x[f]
        slope = float((x * dlog).sum() / total)  # d log Σx / d log t at the current active set
        du = -phi / slope if slope > 1e-12 else (2.0 if phi < 0 else -2.0)
        du = max(-LOG_T_STEP, min(LOG_T_STEP, du))
        un = u + du
        if lo_u is not None and hi_u is not None:
            a, z = sorted((lo_u[0], hi_u[0]))
            if not (a < un < z):
                # Illinois regula falsi on the bracket (the halved end value keeps it from stalling).
                (ua, fa), (uz, fz) = lo_u, hi_u
                un = ua - fa * (uz - ua) / (fz - fa)
                if not (a < un < z):
                    un = 0.5 * (a + z)
        du = un - u
        u, t = un, math.exp(un)
        x = np.clip(x * np.exp(np.clip(du * dlog, -50.0, 50.0)), sub.lo, sub.hi)
        x = np.where(x > 0, x, 1e-300)
    return x, False


# -- the plugin ---------------------------------------------------------------------------------------

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ErcConfig(ComponentConfig):
    """Options of the ``erc`` optimizer.

    ``budgets`` maps asset names to risk budgets as shares of total risk. Assets left out share what
    is left (1 − the named shares) equally; naming every asset makes the budgets relative weights
    (normalised to sum 1). Without ``budgets`` every asset gets the same risk (ERC).
    """

    tol: float = Field(default=1e-12, gt=0, description="residual of the risk-budget equations")
    max_iter: int = Field(default=100, ge=1, description="most Newton steps per optimisation")
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

    def __init__(self, cfg: ErcConfig | None = None) -> None:
        self.cfg = cfg or ErcConfig()

    def optimize(self, forecast: Forecast, *, upper: np.ndarray, lower: np.ndarray, current: np.ndarray) -> Target:
        assets = tuple(forecast.assets)
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
        }
        return Target(assets, res.weights, fractions, sigma_p, res.capped, diagnostics)


def _make(cfg: ErcConfig, ctx: ComponentContext) -> ErcOptimizer:
    return ErcOptimizer(cfg)


@hookimpl
def rwabot_register_optimizers(register: Callable[..., None]) -> None:
    register("erc", _make, ErcConfig)
