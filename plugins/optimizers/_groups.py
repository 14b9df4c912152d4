"""Venue budgets: risk budgeting under box bounds *and* linear bounds on disjoint groups of assets.

What it solves
--------------
``solve_group_risk_budget`` is erc's problem (plugins/optimizers/erc.py, module docstring) with extra
constraints L_g ≤ Σ_{i∈g} w_i ≤ U_g on disjoint groups g (``bot.domain.GroupBound``: a venue can only
hold the value it holds now). It is the KKT point of Richard & Roncalli's constrained risk budgeting
problem

    P_G(t):  minimise  ½xᵀΣx − t Σ_i b_i log x_i
             subject to lower ≤ x ≤ upper  and  L_g ≤ Σ_{i∈g} x_i ≤ U_g for every group g,

with t chosen so that Σx = 1. P_G(t) is strictly convex, so its KKT point is its solution. For an asset
at no box bound, stationarity reads (Σx)_i + η_g(i) − t b_i / x_i = 0 with η_g ≥ 0 when group g binds
at U_g, η_g ≤ 0 when it binds at L_g and η_g = 0 when it does not bind (η = 0 for an ungrouped asset).
In risk units, with ρ* = t / σ_p and the multiplier η̃_g = η_g / σ_p:

    RC_i = ρ* b_i − η̃_g w_i        (RC_i = w_i (Σw)_i / σ_p).

So every asset is in one of these states:

* **free** (at no box bound, in no binding group): RC_i / b_i = ρ*, the same for all of them; ``dev`` =
  max over the free assets of |ρ_i / mean(ρ) − 1| ≤ 1e-8 (erc's measure), checked before returning;
* **held by its group** (at no box bound, in a group at U_g): RC_i = ρ* b_i − η̃_g w_i < ρ* b_i, the
  budget holds the whole venue back and its assets share the shortfall in proportion to their weight
  (at L_g, η̃_g < 0: they carry more than their budget);
* **capped / floored**: erc's signs shifted by the group's multiplier, (Σw)_i + η_g ≤ t b_i / w_i at a
  cap, ≥ at a floor.

Degenerate budgets. When the binding groups and the box-bound assets fix Σx on their own (the venue
budgets sum to 1 and every asset is on a venue: the cycle's case when the venues together cannot hold
the book it would invest), Σx(t) = 1 on a whole interval of t and each t splits the groups differently.
The answer is then the smallest such t, the limit of budgets slack by ε → 0: the least constrained group
has η = 0 (its members are free, at ρ*, and its sum sits exactly at its bound, reported not binding)
and every other group binds with η ≥ 0. (With groups binding only at L_g the interval has no smallest
t; then the largest.)

How it is solved
----------------
1. erc without groups (its compiled fast path, warm-started at ``w0``). If that portfolio satisfies
   every group bound (to 1e-12), it is the answer: the group constraints are inactive and the problem is
   convex, so it is returned as is (bit for bit erc's weights) at no extra cost.
2. Otherwise primal-dual active-set rounds, as in erc, now over box bounds *and* groups, started from
   erc's active set with its most violated group bound (and again from the diagonal-Σ start if that
   fails; each start has ``max_iter`` Newton steps of its own): hold capped and floored assets at their
   bounds and the binding groups at their bounds, solve the free block exactly, then bind every free
   asset found beyond a box bound and the one group furthest beyond its bound (relative to it), and
   release every bound asset whose KKT sign is wrong and every binding group whose multiplier has the
   wrong sign (by more than erc's KKT_TOL, relative). Groups are bound one per round: binding every
   violated group at once can leave the other assets a sliver they can only fill by hedging, a block
   with no solution. When a group binds at U_g, its capped members are released (the budget, not their
   caps, may now hold them; they are re-capped if they still reach their caps), and likewise its
   floored members at L_g. A set that reproduces itself is the KKT point of P_G(t*). When a block has no
   solution (Newton fails, or its t collapses below T_COLLAPSE of its start: the free assets could only
   meet the sum by hedging), the box bounds are released once, then the groups bound before the last one
   are released; a set whose bounds overspend the room releases the capped assets outside the binding
   groups first. A group whose bound leaves its members no choice (L_g at the sum of their caps, U_g at
   the sum of their floors) has them fixed there from the start (``_forced``): as free members of a
   binding group they would also sit on a box bound, and rounding would flip them between the states.
3. The free block is a smooth system in (x_F, t, η of the binding groups): (Σ_FF x + c)_i + η_g(i) =
   t b_i / x_i, Σ_{i∈g} x_i = (what the group's bound leaves its free members), Σx = room. Newton on all
   of them jointly: one Cholesky factor of Σ_FF + t·diag(b/x²) per step and a (k+1) × (k+1) bordered
   system for dt and dη, damped by Armijo on the scaled residual (x, t stay > 0). If the binding groups
   alone pin Σx (see "Degenerate budgets"), box-bound assets outside them absorb a mismatch first; with
   the room exactly filled, the group at U_g with the smallest multiplier (at the current t) is treated
   as not binding and the sum fixes t (else the group at L_g with the largest); the release/bind rules
   then correct a wrong choice.
4. Fallback if the rounds cycle or a block's Newton stalls: t by bisection on Σx(t) = 1 (the smallest
   root), each P_G(t) solved by scipy's SLSQP from the previous one, and once Σx(t) is within 1e-3 of 1
   the active set read off SLSQP's point is handed to the rounds again, which then settle in a round or
   two and give the digits. Slow (tens of SLSQP solves) but independent of the rounds' start.
5. The box-bound assets are set exactly at their bounds, the free members of each binding group rescaled
   to meet its bound exactly and the other free assets to Σw = 1 (changes of the order of ``tol``).

Inconsistent groups raise before anything is solved: ``OptimizerError`` for a mask that is not a boolean
array of shape (n,), overlapping groups, duplicate names, NaN or negative bounds; ``InfeasibleBoundsError``
naming the group and its assets for L_g > U_g, L_g above the caps of its members, U_g below the floors of
its members, and naming the groups when Σ_g min(U_g, caps in g) plus the caps of the ungrouped assets is
below 1, or Σ_g max(L_g, floors in g) plus the ungrouped floors above 1 (for disjoint groups these
conditions are exactly feasibility). A member capped at 0 is out of the problem, as in erc; a group whose
members are all capped at 0 is held at 0 (its L_g must then be 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg
from scipy.optimize import minimize

from bot.domain import GroupBound
from bot.errors import InfeasibleBoundsError, OptimizerError
from plugins.optimizers.erc import (
    BOUND_ATOL,
    DEV_LIMIT,
    KKT_TOL,
    MAX_ROUNDS,
    ROUND_TOL,
    RiskBudgetResult,
    _Budget,
    _check_cov,
    _check_inputs,
    _check_start,
    _check_zero_variance,
    _dev,
    _initial,
    _labels,
    _pick,
    solve_risk_budget,
)

GROUP_ATOL = 1e-12
"""A group bound counts as met when the group's weight is within this of it (weights sum to 1)."""
ACTIVE_SET = True
"""Run the active-set rounds (step 2 of the module docstring) before the nested fallback; tests switch it
off to exercise the fallback on its own."""
T_COLLAPSE = 1e-6
"""A block whose t falls below this fraction of its start is abandoned: Newton is heading for t → 0, i.e. the
free assets outside the binding groups can only meet the sum by hedging, and the active set must change."""
NESTED_POLISH_GAP = 1e-3
"""The nested fallback hands its point to the active-set rounds once |Σx(t) − 1| is below this."""


@dataclass(frozen=True)
class GroupLayout:
    """Checked group bounds over the n assets: ``gid[i]`` is asset i's group (−1: in none)."""

    names: tuple[str, ...]
    gid: np.ndarray
    upper: np.ndarray
    lower: np.ndarray

    def sums(self, w: np.ndarray) -> np.ndarray:
        """Σ_{i∈g} w_i per group."""
        inside = self.gid >= 0
        return np.bincount(self.gid[inside], weights=w[inside], minlength=len(self.names))

    def violated(self, w: np.ndarray, atol: float = GROUP_ATOL) -> np.ndarray:
        """Per group: +1 above its upper bound, −1 below its lower bound, 0 within (to ``atol``)."""
        s = self.sums(w)
        return np.where(s > self.upper + atol, 1, np.where(s < self.lower - atol, -1, 0))


@dataclass(frozen=True)
class GroupRiskBudgetResult(RiskBudgetResult):
    """erc's result plus what the groups did.

    ``free`` marks the assets at no box bound and in no binding group (``dev`` is over these);
    ``groups`` names the binding groups, ``{name: "upper" | "lower"}``; ``multipliers`` is η̃_g = η_g / σ_p
    for every group (0 when it does not bind), in units of σ_p per unit of weight: RC_i = ρ* b_i − η̃_g w_i
    for an asset of group g at no box bound; ``rho`` is ρ* (RC_i / b_i of the free assets, σ_p units);
    ``layout`` the checked groups.
    """

    free: np.ndarray
    groups: dict[str, str]
    multipliers: dict[str, float]
    rho: float
    layout: GroupLayout


# -- input checks -------------------------------------------------------------------------------------


def check_groups(
    groups: Sequence[GroupBound], n: int, labels: Sequence[str], lo: np.ndarray, hi: np.ndarray
) -> GroupLayout:
    """The groups as a layout, or the error that says which group is wrong (module docstring).

    ``lo`` and ``hi`` are the checked box bounds (hi ≥ 0): feasibility of disjoint groups is decided per
    group and then for the total."""
    names: list[str] = []
    gid = np.full(n, -1, dtype=np.int64)
    ups: list[float] = []
    lows: list[float] = []
    for g in groups:
        name = str(g.name)
        if name in names:
            raise OptimizerError(f"erc: two groups are named {name!r}")
        m = np.asarray(g.members)
        if m.dtype != np.bool_ or m.shape != (n,):
            raise OptimizerError(
                f"erc: group {name!r}: members must be a boolean mask of shape ({n},), got {m.dtype} {m.shape}"
            )
        try:
            up, low = float(g.upper), float(g.lower)
        except (TypeError, ValueError):
            raise OptimizerError(f"erc: group {name!r}: bounds must be numbers, got {g.upper!r}, {g.lower!r}") from None
        if not (math.isfinite(up) and math.isfinite(low)):
            raise OptimizerError(f"erc: group {name!r}: bounds must be finite, got lower {low}, upper {up}")
        if low < 0:
            raise OptimizerError(f"erc: group {name!r}: long-only, its lower bound must be >= 0, got {low}")
        members = _pick(labels, m)
        taken = m & (gid >= 0)
        if taken.any():
            other = names[int(gid[np.flatnonzero(taken)[0]])]
            raise OptimizerError(
                f"erc: groups {other!r} and {name!r} overlap on {_pick(labels, taken)}; venue budgets must be disjoint"
            )
        if low > up:
            raise InfeasibleBoundsError(
                f"erc: group {name!r}: lower bound {low:.6g} above its upper bound {up:.6g}", tuple(members)
            )
        caps, floors = float(hi[m].sum()), float(lo[m].sum())
        if low > caps + BOUND_ATOL:
            raise InfeasibleBoundsError(
                f"erc: group {name!r} needs at least {low:.6g}, but the caps of its members {members} sum to "
                f"{caps:.6g}",
                tuple(members),
            )
        if up < floors - BOUND_ATOL:
            raise InfeasibleBoundsError(
                f"erc: group {name!r} allows at most {up:.6g}, but the floors of its members {members} sum to "
                f"{floors:.6g}",
                tuple(members),
            )
        gid[m] = len(names)
        names.append(name)
        ups.append(up)
        lows.append(low)
    layout = GroupLayout(tuple(names), gid, np.array(ups, dtype=float), np.array(lows, dtype=float))
    out = gid < 0
    caps_g = np.bincount(gid[~out], weights=hi[~out], minlength=len(names))
    floors_g = np.bincount(gid[~out], weights=lo[~out], minlength=len(names))
    most = float(np.minimum(layout.upper, caps_g).sum() + hi[out].sum())
    if most < 1.0 - BOUND_ATOL:
        budgets = {nm: round(float(u), 6) for nm, u in zip(names, layout.upper)}
        raise InfeasibleBoundsError(
            f"erc: the group budgets {budgets} and the caps of the assets in no group {_pick(labels, out)} allow "
            f"only {most:.6g} < 1 invested",
            tuple(labels),
        )
    least = float(np.maximum(layout.lower, floors_g).sum() + lo[out].sum())
    if least > 1.0 + BOUND_ATOL:
        floors = {nm: round(float(v), 6) for nm, v in zip(names, layout.lower)}
        raise InfeasibleBoundsError(
            f"erc: the group lower bounds {floors} and the floors of the assets in no group {_pick(labels, out)} "
            f"need {least:.6g} > 1",
            tuple(labels),
        )
    return layout


# -- the free block: Newton on (x, t, η) ------------------------------------------------------------------


def _noise_floor(abs_s: np.ndarray, x: np.ndarray, abs_c: np.ndarray, t: float, b: np.ndarray) -> float:
    """Rounding floor of the residual x_i g_i / (t b_i), as erc's (``_BoxProblem.noise_floor``)."""
    scale = x * (abs_s @ x + abs_c) / (t * b)
    return 8.0 * np.finfo(float).eps * (math.sqrt(len(x)) + 1.0) * float(np.max(scale, initial=1.0))


FAST_BLOCK = True
"""Run the active-set rounds and their Newton block compiled (plugins/optimizers/_groups_block.py) where numba
is there; tests switch it off to compare them with ``_rounds_numpy`` and ``_block_numpy``."""
_compiled_block: Any = None  # the module; None: not loaded yet; False: unavailable


def _block(
    s: np.ndarray,
    c: np.ndarray,
    b: np.ndarray,
    e: np.ndarray,
    r: np.ndarray,
    room: float,
    x: np.ndarray,
    t: float,
    eta: np.ndarray,
    tol: float,
    budget: _Budget,
) -> tuple[np.ndarray, float, np.ndarray] | None:
    """``_block_numpy``'s iteration, compiled when it can be (the solver's hot spot: ~0.6 ms a call at 8
    assets in numpy, nearly all call overhead)."""
    kernel = _kernel()
    if kernel is None:
        return _block_numpy(s, c, b, e, r, room, x, t, eta, tol, budget)
    f = np.ascontiguousarray
    ok, x2, t2, eta2, used = kernel.block(f(s, dtype=float), f(c, dtype=float), f(b, dtype=float),
                                             f(e, dtype=float), f(r, dtype=float), float(room), f(x, dtype=float),
                                             float(t), f(eta, dtype=float), float(tol), int(budget.used),
                                             int(budget.limit), float(T_COLLAPSE))  # fmt: skip
    budget.used = int(used)
    return (x2, float(t2), eta2) if ok else None


def _block_numpy(
    s: np.ndarray,
    c: np.ndarray,
    b: np.ndarray,
    e: np.ndarray,
    r: np.ndarray,
    room: float,
    x: np.ndarray,
    t: float,
    eta: np.ndarray,
    tol: float,
    budget: _Budget,
) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Solve (Sx + c)_i + (Eη)_i = t b_i / x_i, Eᵀx = r, Σx = room for (x > 0, t > 0, η) by damped Newton.

    E (m × k, 0/1) maps the free assets to the binding groups that hold some of them; r is what each
    group's bound leaves its free members, ``room`` what the bound assets leave the free ones. One
    Cholesky factor of H = S + t·diag(b/x²) per step; dt and dη then solve the bordered
    (k+1) × (k+1) system [1, E]ᵀ H⁻¹ [b/x, −E] (dt, dη) = … . Damped by Armijo on ½‖D F‖² with the row
    scaling D = (x/(t b), 1/room, 1/r) frozen for the step (the Newton direction is then always a descent
    direction). Returns None when the damping stalls or the bordered system is singular, and the caller
    falls back (module docstring).
    """
    abs_s, abs_c = np.abs(s), np.abs(c)
    last = math.inf
    eps = np.finfo(float).eps
    t_start = t
    while True:
        if t < T_COLLAPSE * t_start:  # heading for t → 0: this active set has no solution (a hedge)
            return None
        sx = s @ x + c
        g = sx + e @ eta - t * b / x
        scale = x / (t * b)
        resid = float(np.max(np.abs(g * scale)))
        rel_sum = float(x.sum()) / room - 1.0
        rel_grp = (e.T @ x) / r - 1.0
        err = max(abs(rel_sum), float(np.max(np.abs(rel_grp), initial=0.0)))
        if resid <= tol and err <= tol:
            return x, t, eta
        stalled = max(resid, err) > 1e-3 * last
        if stalled and resid <= _noise_floor(abs_s, x, abs_c, t, b) and err <= 64 * eps:
            return x, t, eta
        if budget.used >= budget.limit:
            return None
        last = max(resid, err)
        h = s.copy()
        h[np.diag_indices_from(h)] += t * b / x**2
        budget.used += 1
        try:
            chol = linalg.cho_factor(h, lower=True, overwrite_a=True, check_finite=False)
        except linalg.LinAlgError:
            return None
        cols = np.column_stack([g, b / x, e])
        sol = linalg.cho_solve(chol, cols, check_finite=False)
        p, q, rr = sol[:, 0], sol[:, 1], sol[:, 2:]
        border = np.ones((len(x), 1)) if e.shape[1] == 0 else np.column_stack([np.ones(len(x)), e])
        m = np.column_stack([border.T @ q, -(border.T @ rr)])
        rhs = border.T @ p - np.concatenate([[float(x.sum()) - room], e.T @ x - r])
        try:
            dz = np.linalg.solve(m, rhs)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(dz)):
            return None
        dt, deta = float(dz[0]), dz[1:]
        dx = q * dt - p - rr @ deta

        m0 = 0.5 * (float((g * scale) @ (g * scale)) + rel_sum**2 + float(rel_grp @ rel_grp))
        alpha = 1.0
        for _ in range(40):
            xn, tn, en = x + alpha * dx, t + alpha * dt, eta + alpha * deta
            if tn > 0 and np.all(xn > 0):
                gn = (s @ xn + c + e @ en - tn * b / xn) * scale
                sn = float(xn.sum()) / room - 1.0
                rn = (e.T @ xn) / r - 1.0
                mn = 0.5 * (float(gn @ gn) + sn**2 + float(rn @ rn))
                if mn <= (1.0 - 2e-4 * alpha) * m0:
                    break
            alpha *= 0.5
        else:
            done = resid <= _noise_floor(abs_s, x, abs_c, t, b) and err <= 64 * eps
            return (x, t, eta) if done else None
        x, t, eta = xn, tn, en


# -- the active-set rounds ------------------------------------------------------------------------------------


@dataclass
class _Solution:
    """What the rounds (or the fallback) settle on, in the live, scaled problem."""

    w: np.ndarray
    t: float
    eta: np.ndarray  # per group, in the scaled problem's units; 0 where the group does not bind
    side: np.ndarray  # per group: +1 binding at its upper bound, −1 at its lower, 0 not binding
    capped: np.ndarray
    floored: np.ndarray


def _rounds(
    s: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    lay: GroupLayout,
    x: np.ndarray,
    capped: np.ndarray,
    floored: np.ndarray,
    side: np.ndarray,
    t_hint: float | None,
    tol: float,
    budget: _Budget,
) -> _Solution | None:
    """``_rounds_numpy``, compiled when it can be (plugins/optimizers/_groups_block.py): the rounds' mask
    arithmetic on a handful of assets was most of a venue-budget solve's time in numpy."""
    kernel = _kernel()
    if kernel is None:
        return _rounds_numpy(s, b, lo, hi, lay, x, capped, floored, side, t_hint, tol, budget)
    f = np.ascontiguousarray
    st, w, t, eta, side_, capped_, floored_, used = kernel.rounds(
        f(s, dtype=float), f(b, dtype=float), f(lo, dtype=float), f(hi, dtype=float), f(lay.gid, dtype=np.int64),
        f(lay.upper, dtype=float), f(lay.lower, dtype=float), f(x, dtype=float), f(capped, dtype=bool),
        f(floored, dtype=bool), f(side, dtype=np.int64), math.nan if t_hint is None else float(t_hint), float(tol),
        int(budget.used), int(budget.limit), int(MAX_ROUNDS), float(ROUND_TOL), float(KKT_TOL), float(GROUP_ATOL),
        float(T_COLLAPSE),
    )  # fmt: skip
    budget.used = int(used)
    if st != kernel.ROUNDS_OK:
        return None
    return _Solution(w, float(t), eta, side_, capped_, floored_)


def _kernel() -> Any:
    """plugins/optimizers/_groups_block.py, loaded on first use; None where ``FAST_BLOCK`` is off or numba
    is missing (the numpy versions answer)."""
    global _compiled_block
    if FAST_BLOCK and _compiled_block is None:
        try:
            from plugins.optimizers import _groups_block

            _compiled_block = _groups_block
        except Exception:  # noqa: BLE001 - numba missing or broken: the numpy versions answer
            _compiled_block = False
    return _compiled_block if FAST_BLOCK and _compiled_block is not False else None


def _rounds_numpy(
    s: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    lay: GroupLayout,
    x: np.ndarray,
    capped: np.ndarray,
    floored: np.ndarray,
    side: np.ndarray,
    t_hint: float | None,
    tol: float,
    budget: _Budget,
) -> _Solution | None:
    """Primal-dual active-set rounds over box bounds and groups (module docstring, step 2); None when
    they cycle, get stuck or a block's Newton fails."""
    gid, up, low = lay.gid, lay.upper, lay.lower
    k = len(up)
    movable = lo < hi
    grouped = gid >= 0
    gsafe = np.where(grouped, gid, 0)
    capped = capped | ~movable
    floored = floored & ~capped
    side = side.astype(np.int64).copy()
    seen: set[bytes] = set()
    exact = reset = False
    t = t_hint
    order = [int(g) for g in np.flatnonzero(side)]  # binding groups in the order they were bound
    for _ in range(4 * MAX_ROUNDS):
        free = ~(capped | floored)
        w = np.where(capped, hi, np.where(floored, lo, x))
        # A binding group must be able to meet its bound through free members; fix the state otherwise.
        fixed_sum = lay.sums(np.where(free, 0.0, w))
        has_free = np.bincount(gid[free & grouped], minlength=k) > 0
        changed = False
        for g in np.flatnonzero(side != 0):
            mine = gid == g
            if side[g] > 0:
                leaves = up[g] - fixed_sum[g]
                # the capped members alone reach the budget: it is the budget that binds them, not their caps
                if (leaves <= 0) if has_free[g] else (leaves < -GROUP_ATOL):
                    release = mine & capped & movable
                    if not release.any():
                        return None
                    capped = capped & ~release
                    changed = True
                    continue
            else:
                leaves = low[g] - fixed_sum[g]
                if has_free[g] and leaves <= 0:  # the members at their bounds already hold the group's floor
                    side[g] = 0
                    changed = True
                    continue
                if not has_free[g] and leaves > GROUP_ATOL:
                    release = mine & floored
                    if not release.any():
                        return None
                    floored = floored & ~release
                    changed = True
                    continue
            if not has_free[g]:  # its bound members meet the bound: nothing left for a multiplier to do
                side[g] = 0
                changed = True
        if changed:
            order = [g for g in order if side[g] != 0]
            continue
        key = capped.tobytes() + floored.tobytes() + side.tobytes() + bytes([exact])
        if key in seen:
            return None
        seen.add(key)
        tol_r = tol if exact else max(tol, ROUND_TOL)
        if not free.any():
            return None
        bind = free & grouped & (side[gsafe] != 0)
        rest = free & ~bind
        blist = np.flatnonzero(has_free & (side != 0))
        targets = np.array([(up[g] if side[g] > 0 else low[g]) - fixed_sum[g] for g in blist])
        room = 1.0 - float(w[~free].sum())
        rest_room = room - float(targets.sum())
        if not rest.any():
            # The binding groups hold every free asset, so their bounds alone fix Σx and one of them must not
            # bind. Assets at a box bound outside them absorb a mismatch first (capped ones give up overspent
            # room, floored ones take room left over); then room left over goes to the group at its lower
            # bound closest to release, overspent room comes from the group at its upper bound with the
            # smallest multiplier, and exactly filled room (pinned, module docstring) releases the latter,
            # else the group at its lower bound with the largest multiplier.
            outside = ~(grouped & (side[gsafe] != 0)) & movable
            if rest_room < -GROUP_ATOL and (capped & outside).any():
                capped = capped & ~outside
                continue
            if rest_room > GROUP_ATOL and (floored & outside).any():
                floored = floored & ~outside
                continue
            sw = s @ w
            t_est = t if t is not None and t > 0 else float(w[free] @ sw[free]) / float(b[free].sum())
            bf = np.bincount(gid[free], weights=b[free], minlength=k)
            xs = np.bincount(gid[free], weights=(w * sw)[free], minlength=k)
            xf = np.bincount(gid[free], weights=w[free], minlength=k)
            with np.errstate(divide="ignore", invalid="ignore"):
                eta_est = (t_est * bf - xs) / xf
            ups, lows = np.flatnonzero(has_free & (side > 0)), np.flatnonzero(has_free & (side < 0))
            pinned = abs(rest_room) <= GROUP_ATOL
            if (rest_room < 0 or pinned) and ups.size:
                g_star = int(ups[np.argmin(eta_est[ups])])
            elif (rest_room > 0 or pinned) and lows.size:
                g_star = int(lows[np.argmax(eta_est[lows])])
            else:
                return None
            side[g_star] = 0
            order = [g for g in order if g != g_star]
            continue
        if room <= 0 or rest_room <= 0 or np.any(targets <= 0):
            # the bounds overspend the room: capped assets outside the binding groups give it up first,
            # then the group bound last is kept alone (as when a block has no solution, below)
            outside = ~(grouped & (side[gsafe] != 0)) & movable
            if rest_room <= 0 and (capped & outside).any():
                capped = capped & ~outside
                continue
            if len(order) > 1:
                keep = order[-1]
                side = np.where(np.arange(k) == keep, side, 0)
                order = [keep]
                continue
            return None
        idx = np.flatnonzero(free)
        pos = np.full(k, -1)
        pos[blist] = np.arange(len(blist))
        col = np.where(bind[idx], pos[gsafe[idx]], -1)
        e = np.zeros((len(idx), len(blist)))
        e[col >= 0, col[col >= 0]] = 1.0
        start = np.maximum(w[idx], 1e-12)
        start = _rescale(start, col, targets, rest_room)
        block_s = s[np.ix_(idx, idx)]
        c = s[np.ix_(idx, np.flatnonzero(~free))] @ w[~free] if (~free).any() else np.zeros(len(idx))
        sxc = block_s @ start + c
        rmask = col < 0
        t0 = float(start[rmask] @ sxc[rmask]) / float(b[idx][rmask].sum())
        if not t0 > 0:  # the bound assets hedge the free ones: any positive start will do
            t0 = float(start @ (block_s @ start)) / float(b[idx].sum())
        eta0 = np.zeros(len(blist))
        for j in range(len(blist)):
            mem = col == j
            eta0[j] = (t0 * float(b[idx][mem].sum()) - float(start[mem] @ sxc[mem])) / float(start[mem].sum())
        out = _block(block_s, c, b[idx], e, targets, room, start, t0, eta0, tol_r, budget)
        if out is None and not reset and ((capped & movable) | floored).any():
            # no solution with these box bounds (or Newton lost its way from this start): once, release them all
            reset = True
            capped, floored = ~movable, np.zeros(len(b), bool)
            continue
        if out is None and len(order) > 1:
            # no solution with these groups bound: the group bound last was found beyond its bound with the
            # earlier ones in place, and binding it can take from them what made them bind; keep it alone
            keep = order[-1]
            side = np.where(np.arange(k) == keep, side, 0)
            order = [keep]
            continue
        if out is None:
            return None
        xb, t, eta_b = out
        w[idx] = _rescale(xb, col, targets, rest_room)
        eta = np.zeros(k)
        eta[blist] = eta_b
        sw = s @ w
        eta_i = np.where(grouped, eta[gsafe], 0.0)
        rel = w * (sw + eta_i) / (t * b) - 1.0  # x_i (∇f_i + η_g) / (t b_i): 0 for a free asset
        new_capped = (free & (w > hi)) | (capped & movable & (rel <= KKT_TOL)) | ~movable
        new_floored = ((free & (w < lo)) | (floored & (rel >= -KKT_TOL))) & ~new_capped
        sums = lay.sums(w)
        bsum = np.bincount(gid[grouped], weights=b[grouped], minlength=k)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta_rel = np.where(bsum > 0, eta * sums / (t * bsum), 0.0)
        new_side = side.copy()
        new_side[(side > 0) & (eta_rel < -KKT_TOL)] = 0
        new_side[(side < 0) & (eta_rel > KKT_TOL)] = 0
        gtol = GROUP_ATOL if exact else tol_r
        over, under = _most_violated(sums, up, low, new_side, gtol)
        new_side[over] = 1
        new_side[under] = -1
        order = [g for g in order if new_side[g] != 0] + [int(g) for g in np.flatnonzero(over | under)]
        # a group that starts to bind at its budget releases its capped members (and at its floor the floored)
        new_capped &= ~(np.isin(gid, np.flatnonzero(over)) & movable)
        new_floored &= ~np.isin(gid, np.flatnonzero(under))
        if (
            np.array_equal(new_capped, capped)
            and np.array_equal(new_floored, floored)
            and np.array_equal(new_side, side)
        ):
            if exact:
                return _Solution(w, t, eta, side, capped, floored)
            exact = True
        capped, floored, side = new_capped, new_floored, new_side
        x = np.clip(w, lo, hi)
        x = np.where(x > 0, x, np.minimum(1e-12, hi))
    return None


def _most_violated(
    sums: np.ndarray, up: np.ndarray, low: np.ndarray, side: np.ndarray, atol: float
) -> tuple[np.ndarray, np.ndarray]:
    """The one non-binding group furthest beyond a bound (relative to the bound), as (over, under) masks.

    Groups are bound one per round: binding every violated group at once can ask the rest of the
    portfolio for a state with no solution (the ungrouped assets squeezed into a sliver they can only
    hedge with), while the most violated group binds in the answer whenever any does."""
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where((side == 0) & (sums > up + atol), (sums - up) / np.maximum(up, 1e-300), 0.0)
        short = np.where((side == 0) & (sums < low - atol), (low - sums) / np.maximum(low, 1e-300), 0.0)
    over, under = np.zeros(len(up), bool), np.zeros(len(up), bool)
    worst = np.maximum(excess, short)
    if worst.size and worst.max() > 0:
        g = int(np.argmax(worst))
        (over if excess[g] >= short[g] else under)[g] = True
    return over, under


def _rescale(x: np.ndarray, col: np.ndarray, targets: np.ndarray, rest_room: float) -> np.ndarray:
    """x with each binding group's free members scaled to their target and the others to ``rest_room``."""
    y = x.copy()
    for j, target in enumerate(targets):
        mem = col == j
        y[mem] *= target / float(y[mem].sum())
    mem = col < 0
    if mem.any():
        y[mem] *= rest_room / float(y[mem].sum())
    return y


# -- the nested fallback ------------------------------------------------------------------------------------


def _read_state(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, lay: GroupLayout, atol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The active set of a point: capped, floored, and per group the side it sits on (to ``atol``)."""
    capped = x >= hi - atol
    floored = (x <= lo + atol) & (lo > 0) & ~capped
    sums = lay.sums(x)
    side = np.where(sums >= lay.upper - atol, 1, np.where(sums <= lay.lower + atol, -1, 0))
    return capped, floored, side


def _nested(
    s: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    lay: GroupLayout,
    x: np.ndarray,
    tol: float,
    budget: _Budget,
) -> _Solution | None:
    """t by bisection in log t on Σx(t) = 1 (smallest root), P_G(t) by SLSQP, the rounds for the digits.

    At most 200 SLSQP solves; each hand-over to the rounds gets ``budget.limit`` Newton steps of its own
    (all counted in ``budget.used``). Raises OptimizerError when Σx(t) stays above 1 as t → 0 (no
    risk-budgeting portfolio: floors or group lower bounds force hedges the free assets cannot undo)."""
    box = list(zip(np.maximum(lo, 1e-12), hi))
    cons = []
    for g in range(len(lay.names)):
        mem = (lay.gid == g).astype(float)
        u, lw = float(lay.upper[g]), float(lay.lower[g])
        if u < float(hi[mem > 0].sum()):
            cons.append({"type": "ineq", "fun": lambda v, m=mem, u=u: u - m @ v, "jac": lambda v, m=mem: -m})
        if lw > float(lo[mem > 0].sum()):
            cons.append({"type": "ineq", "fun": lambda v, m=mem, lw=lw: m @ v - lw, "jac": lambda v, m=mem: m})
    point = np.clip(x, np.maximum(lo, 1e-12), hi)

    def solve_t(t: float, start: np.ndarray) -> np.ndarray:
        def f(v: np.ndarray) -> float:
            return float(0.5 * v @ s @ v - t * b @ np.log(v))

        def jac(v: np.ndarray) -> np.ndarray:
            return s @ v - t * b / v

        res = minimize(f, start, jac=jac, bounds=box, constraints=cons, method="SLSQP",
                       options={"ftol": 1e-15, "maxiter": 500})  # fmt: skip
        return np.clip(res.x, np.maximum(lo, 1e-12), hi)

    def polish(v: np.ndarray, t: float) -> _Solution | None:
        capped, floored, side = _read_state(v, lo, hi, lay, 1e-7)
        own = _Budget(budget.limit)
        found = _rounds(s, b, lo, hi, lay, v, capped, floored, side, t, tol, own)
        budget.used += own.used
        return found

    t = float(point @ (s @ point)) / float(b.sum())
    u = math.log(max(t, 1e-300))
    below: float | None = None  # log t with Σx < 1
    above: float | None = None  # log t with Σx ≥ 1
    step = 2.0
    for _ in range(200):
        point = solve_t(math.exp(u), point)
        gap = float(point.sum()) - 1.0
        if abs(gap) < NESTED_POLISH_GAP:
            found = polish(point, math.exp(u))
            if found is not None:
                return found
        if gap < -1e-10:
            below = u
        else:
            above = u
        if below is not None and above is not None:
            if abs(above - below) < 1e-12:
                return None
            u = 0.5 * (below + above)
        elif below is None:
            if u < math.log(max(t, 1e-300)) - 60.0:
                raise OptimizerError(
                    "erc: no risk-budgeting portfolio exists under these bounds and group budgets: even at "
                    f"vanishing risk the portfolio needs {point.sum():.4g} of NAV"
                )
            u -= step
            step *= 1.5
        else:
            u += step
            step *= 1.5
    return None


# -- the solver -------------------------------------------------------------------------------------------


def solve_group_risk_budget(
    cov: Any,
    budgets: Any = None,
    upper: Any = None,
    lower: Any = None,
    groups: Sequence[GroupBound] = (),
    *,
    w0: Any = None,
    tol: float = 1e-12,
    max_iter: int = 100,
    names: Sequence[str] | None = None,
) -> GroupRiskBudgetResult:
    """Risk budgeting with Σw = 1, lower ≤ w ≤ upper and L_g ≤ Σ_{i∈g} w_i ≤ U_g (module docstring).

    The arguments are ``solve_risk_budget``'s plus ``groups`` (disjoint ``GroupBound``s in the frame of
    the weights, which sum to 1). With no group, or none that erc's own portfolio violates, the weights
    are erc's, bit for bit.

    :raises OptimizerError: unusable input (erc's checks, and malformed or overlapping groups), no
        convergence within ``max_iter`` Newton steps (per method), or no risk-budgeting portfolio.
    :raises InfeasibleBoundsError: box bounds or group bounds that admit no fully invested portfolio
        (names the groups and assets).
    """
    groups = tuple(groups)
    base: RiskBudgetResult | None
    try:
        base = solve_risk_budget(cov, budgets, upper, lower, w0=w0, tol=tol, max_iter=max_iter, names=names)
        base_error: OptimizerError | None = None
    except InfeasibleBoundsError:
        raise
    except OptimizerError as exc:  # e.g. no risk parity without the groups: the groups may still allow one
        base, base_error = None, exc
    c_full = 0.5 * (np.asarray(cov, float) + np.asarray(cov, float).T)
    n = c_full.shape[0]
    labels = _labels(n, names)
    b, lo, hi = _check_inputs(n, labels, budgets, upper, lower, tol, max_iter)
    lay = check_groups(groups, n, labels, lo, hi)
    if base is not None and not lay.violated(base.weights).any():
        return _wrap_base(base, c_full, b, hi, lay)
    s, labels, zero = _check_cov(cov, names)  # raises what erc raised, if the input was the problem
    _check_zero_variance(zero, hi, labels)
    start = _check_start(w0, n, labels)
    lo_s, hi_s = _forced(lay, lo, hi)
    live = hi_s > 0
    idx = np.flatnonzero(live)
    sub = GroupLayout(lay.names, lay.gid[idx], lay.upper, lay.lower)
    s_l, b_l, lo_l, hi_l = s[np.ix_(idx, idx)], b[idx] / b[idx].sum(), lo_s[idx], hi_s[idx]
    budget = _Budget(0)  # Newton steps of every method, counted; each start gets max_iter of its own
    found: _Solution | None = None
    if ACTIVE_SET:
        starts = []
        if base is not None:
            starts.append((base.weights[idx], base.capped[idx], base.floored[idx]))
        x0, at_bound = _initial(s_l, b_l, lo_l, hi_l, start[idx] if start is not None else None)
        cold = np.zeros(len(idx), bool)
        starts.append((x0, cold if at_bound is None else at_bound & (x0 >= hi_l), cold))
        for x_s, cap_s, flo_s in starts:
            over, under = _most_violated(sub.sums(x_s), sub.upper, sub.lower, np.zeros(len(sub.names)), GROUP_ATOL)
            side = over.astype(np.int64) - under.astype(np.int64)
            cap_s = cap_s & ~(np.isin(sub.gid, np.flatnonzero(side > 0)) & (lo_l < hi_l))
            flo_s = flo_s & ~np.isin(sub.gid, np.flatnonzero(side < 0))
            x_s = np.where(x_s > 0, x_s, np.minimum(1e-12, hi_l))
            own = _Budget(max_iter)
            found = _rounds(s_l, b_l, lo_l, hi_l, sub, x_s, cap_s, flo_s, side, None, tol, own)
            budget.used += own.used
            if found is not None:
                break
    if found is None:
        x0, _ = _initial(s_l, b_l, lo_l, hi_l, None)
        nested = _Budget(max_iter)
        found = _nested(s_l, b_l, lo_l, hi_l, sub, x0, tol, nested)
        budget.used += nested.used
    if found is None:
        why = f" (without the groups: {base_error})" if base_error is not None else ""
        raise OptimizerError(f"erc: no convergence under the group budgets {list(lay.names)}{why}")
    return _finish(found, idx, n, c_full, b, lo, hi, lay, tol, float(np.max(np.diag(c_full))), budget.used)


def _forced(lay: GroupLayout, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box bounds with the members of a group whose bound leaves them no choice fixed there: L_g at the
    sum of their caps holds them at their caps, U_g at the sum of their floors at their floors. Solved as
    free members of a binding group they would sit on a box bound too, and rounding would flip them
    between the two states for ever."""
    lo, hi = lo.copy(), hi.copy()
    grouped = lay.gid >= 0
    caps = np.bincount(lay.gid[grouped], weights=hi[grouped], minlength=len(lay.names))
    floors = np.bincount(lay.gid[grouped], weights=lo[grouped], minlength=len(lay.names))
    at_caps = np.isin(lay.gid, np.flatnonzero(lay.lower >= caps - BOUND_ATOL))
    at_floors = np.isin(lay.gid, np.flatnonzero(lay.upper <= floors + BOUND_ATOL)) & ~at_caps
    lo[at_caps] = hi[at_caps]
    hi[at_floors] = lo[at_floors]
    return lo, hi


def _wrap_base(
    base: RiskBudgetResult, c_full: np.ndarray, b: np.ndarray, hi: np.ndarray, lay: GroupLayout
) -> GroupRiskBudgetResult:
    """erc's own result when no group binds, with ρ* as rp_cost defines it (free assets' RC_i / b_i)."""
    w = base.weights
    free = ~(base.capped | base.floored) & (w > 0)
    sig = math.sqrt(max(float(w @ c_full @ w), 0.0))
    live = hi > 0
    bl = np.where(live, b, 0.0) / float(b[live].sum())
    rc = w * (c_full @ w) / sig if sig > 0 else np.zeros_like(w)
    rho = float(rc[free].sum() / bl[free].sum()) if free.any() else sig
    return GroupRiskBudgetResult(
        w, base.iterations, base.dev, base.capped, base.floored, free, {}, {nm: 0.0 for nm in lay.names}, rho, lay
    )


def _finish(
    sol: _Solution,
    idx: np.ndarray,
    n: int,
    c_full: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    lay: GroupLayout,
    tol: float,
    scale: float,
    iterations: int,
) -> GroupRiskBudgetResult:
    """Full-length result from the live problem's solution, checked: bounds, groups, Σw = 1, dev."""
    w = np.zeros(n)
    w[idx] = np.clip(sol.w, lo[idx], hi[idx])
    gsafe = np.where(lay.gid >= 0, lay.gid, 0)
    binding = (lay.gid >= 0) & (sol.side[gsafe] != 0)
    bound = np.ones(n, bool)
    bound[idx] = sol.capped | sol.floored
    free = ~bound & ~binding
    capped = (w >= hi) & ~free  # erc's rule: at its cap and not free (a member of a binding group may be both)
    floored = (w <= lo) & (lo > 0) & ~free & ~capped
    bad = lay.violated(w, 1e-10)
    if bad.any() or abs(float(w.sum()) - 1.0) > 1e-10:
        raise OptimizerError(
            f"erc: group solve ended outside its bounds (groups {[nm for nm, v in zip(lay.names, bad) if v]}, "
            f"Σw = {w.sum():.12g})"
        )
    dev = _dev(w, c_full, b, free)
    if not dev <= max(DEV_LIMIT, tol):
        raise OptimizerError(f"erc: free-asset risk contributions disperse by {dev:.3e} (> 1e-8) under group budgets")
    sig = math.sqrt(max(float(w @ c_full @ w), 0.0))
    to_sigma = scale / sig if sig > 0 else 0.0
    mult = {nm: float(e * to_sigma) for nm, e in zip(lay.names, sol.eta)}
    binding_names = {nm: ("upper" if sd > 0 else "lower") for nm, sd in zip(lay.names, sol.side) if sd != 0}
    return GroupRiskBudgetResult(
        w, iterations, dev, capped, floored, free, binding_names, mult, float(sol.t * to_sigma), lay
    )
