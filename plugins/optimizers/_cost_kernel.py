"""Compiled inner solver of ``rp_cost`` (numba): the dual Newton iteration on ν and the projected Newton
method on segments, exactly as ``_solve_budget`` and ``_Segments.solve`` in cost_aware.py (whose
docstrings explain the method), without the Python overhead that dominated below n ≈ 500.

Imported lazily by ``plugins.optimizers.cost_aware``; any failure to import or compile, or a Newton
system that is not positive definite, leaves the numpy implementation in charge.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ARMIJO = 1e-4
DEV_FLOOR = 1e-8
EPS = np.finfo(np.float64).eps
SMALL = 100
"""Free blocks up to this size are factorised by an inline loop; larger ones by LAPACK."""


@njit(cache=True, nogil=True)
def _cholesky(h):  # type: ignore[no-untyped-def]
    """Lower Cholesky factor of h (k × k), or a 0 × 0 array when h is not positive definite."""
    k = h.shape[0]
    if k > SMALL:
        try:
            return np.linalg.cholesky(h)
        except Exception:  # noqa: BLE001 - LinAlgError in numba
            return np.zeros((0, 0))
    low = np.zeros((k, k))
    for j in range(k):
        d = h[j, j]
        for m in range(j):
            d -= low[j, m] * low[j, m]
        if not d > 0.0:
            return np.zeros((0, 0))
        d = math.sqrt(d)
        low[j, j] = d
        for i in range(j + 1, k):
            v = h[i, j]
            for m in range(j):
                v -= low[i, m] * low[j, m]
            low[i, j] = v / d
    return low


@njit(cache=True, nogil=True)
def _cho_solve(low, r):  # type: ignore[no-untyped-def]
    k = low.shape[0]
    z = r.copy()
    for i in range(k):
        v = z[i]
        for m in range(i):
            v -= low[i, m] * z[m]
        z[i] = v / low[i, i]
    for i in range(k - 1, -1, -1):
        v = z[i]
        for m in range(i + 1, k):
            v -= low[m, i] * z[m]
        z[i] = v / low[i, i]
    return z


@njit(cache=True, nogil=True)
def _value(s_x, x, a, c, w0, b, rho, nu):  # type: ignore[no-untyped-def]
    """φ(x) + νΣx and the size of its rounding noise."""
    q = 0.0
    lin = 0.0
    alin = 0.0
    cost = 0.0
    logs = 0.0
    for i in range(x.shape[0]):
        q += x[i] * s_x[i]
        lin += (nu - a[i]) * x[i]
        alin += abs(nu - a[i]) * x[i]
        cost += c[i] * abs(x[i] - w0[i])
        logs += b[i] * math.log(x[i])
    sig = math.sqrt(max(q, 0.0))
    val = sig + lin + cost - rho * logs
    mag = sig + alin + cost + rho * (abs(logs) + 1.0)
    return val, 256.0 * EPS * mag


@njit(cache=True, nogil=True)
def _hessian(s_mat, x, sx, b, rho, idx):  # type: ignore[no-untyped-def]
    q = 0.0
    for i in range(x.shape[0]):
        q += x[i] * sx[i]
    sig = math.sqrt(q)
    k = idx.shape[0]
    h = np.empty((k, k))
    sig3 = sig**3
    for p in range(k):
        i = idx[p]
        ui = sx[i]
        for r in range(k):
            j = idx[r]
            h[p, r] = s_mat[i, j] / sig - ui * sx[j] / sig3
        h[p, p] += rho * b[i] / (x[i] * x[i])
    return _cholesky(h)


@njit(cache=True, nogil=True)
def _segments_solve(s_mat, b, lo, hi, w0, c, a, rho, mov, kink, eps_max, tol, nu, x, budget, iters):  # type: ignore[no-untyped-def]
    """Minimise φ + νΣx from x; returns (x, converged, free, chol, chol_ok, iterations, failed)."""
    n = x.shape[0]
    sx = s_mat @ x
    f, noise = _value(sx, x, a, c, w0, b, rho, nu)
    chol = np.zeros((0, 0))
    have_chol = False
    chol_free = np.zeros(n, np.bool_)
    best = math.inf
    stalled = 0
    lo_p = np.empty(n)
    hi_p = np.empty(n)
    g = np.empty(n)
    hdiag = np.empty(n)
    held = np.zeros(n, np.bool_)
    free = np.zeros(n, np.bool_)
    while True:
        q = 0.0
        for i in range(n):
            q += x[i] * sx[i]
        sig = math.sqrt(q)
        eps = 0.0
        for i in range(n):
            gs = sx[i] / sig - a[i] + nu - rho * b[i] / x[i]
            # the piece [lo_p, hi_p] asset i moves on, and the sign of its cost term there
            sign = 0.0
            if c[i] > 0.0:
                sign = 1.0 if x[i] > w0[i] else -1.0
            lo_p[i] = lo[i]
            hi_p[i] = hi[i]
            if kink[i]:
                if x[i] == w0[i]:
                    if gs + c[i] < 0.0:
                        lo_p[i] = w0[i]
                        sign = 1.0
                    elif gs - c[i] > 0.0:
                        hi_p[i] = w0[i]
                        sign = -1.0
                    else:
                        lo_p[i] = w0[i]
                        hi_p[i] = w0[i]
                        sign = 0.0
                elif x[i] > w0[i]:
                    lo_p[i] = w0[i]
                else:
                    hi_p[i] = w0[i]
            elif c[i] > 0.0:
                if w0[i] <= lo[i]:
                    sign = 1.0
                elif w0[i] >= hi[i]:
                    sign = -1.0
            g[i] = gs + c[i] * sign
            hdiag[i] = s_mat[i, i] / sig + rho * b[i] / (x[i] * x[i])
            if mov[i]:
                pg = abs(x[i] - min(max(x[i] - g[i] / hdiag[i], lo_p[i]), hi_p[i]))
                eps = max(eps, pg)
        eps = min(eps_max, eps)
        resid = 0.0
        at_piece = True
        nfree = 0
        for i in range(n):
            hl = mov[i] and (
                (x[i] <= lo_p[i] + eps and g[i] > 0.0) or (x[i] >= hi_p[i] - eps and g[i] < 0.0) or lo_p[i] == hi_p[i]
            )
            held[i] = hl
            free[i] = mov[i] and not hl
            if free[i]:
                nfree += 1
                resid = max(resid, abs(x[i] * g[i]) / (rho * b[i]))
            if hl and not (x[i] == lo_p[i] or x[i] == hi_p[i]):
                at_piece = False
        stalled = stalled + 1 if resid > 0.5 * best else 0
        best = min(best, resid)
        idx = np.flatnonzero(free)
        if at_piece and (resid <= tol or (resid <= 1e-3 * DEV_FLOOR and stalled >= 3)):
            if not have_chol or not np.array_equal(chol_free, free):
                iters += 1
                chol = _hessian(s_mat, x, sx, b, rho, idx)
                if chol.shape[0] != nfree:
                    return x, False, free.copy(), chol, iters, True
                have_chol = True
            return x, True, free.copy(), chol, iters, False
        if iters >= budget:
            return x, False, free.copy(), chol, iters, False
        iters += 1
        chol = _hessian(s_mat, x, sx, b, rho, idx)
        if chol.shape[0] != nfree:
            return x, False, free.copy(), chol, iters, True
        have_chol = True
        chol_free[:] = free
        d = np.zeros(n)
        gf = np.empty(nfree)
        for p in range(nfree):
            gf[p] = g[idx[p]]
        df = _cho_solve(chol, gf)
        for p in range(nfree):
            d[idx[p]] = -df[p]
        gd = 0.0
        for i in range(n):
            if held[i]:
                d[i] = -g[i] / hdiag[i]
            elif free[i]:
                gd += g[i] * d[i]
        alpha = 1.0
        accepted = False
        xn = x.copy()
        sxn = sx
        fn = f
        for _ in range(60):
            positive = True
            for i in range(n):
                if mov[i]:
                    xn[i] = min(max(x[i] + alpha * d[i], lo_p[i]), hi_p[i])
                    if not xn[i] > 0.0:
                        positive = False
            if positive:
                sxn = s_mat @ xn
                fn, _ = _value(sxn, xn, a, c, w0, b, rho, nu)
                expect = -alpha * gd
                for i in range(n):
                    if held[i]:
                        expect += g[i] * (x[i] - xn[i])
                if fn <= f - ARMIJO * expect or fn <= f + noise:
                    accepted = True
                    break
            alpha *= 0.5
        if not accepted:
            return x, at_piece and resid <= DEV_FLOOR, free.copy(), chol, iters, False
        x = xn
        sx = sxn
        f = fn


@njit(cache=True, nogil=True)
def solve_budget(s_mat, b, lo, hi, w0, c, a, rho, eps_max, x, tol, budget):  # type: ignore[no-untyped-def]
    """ν with Σx(ν) = 1 (cost_aware._solve_budget). Returns (status, x, ν, free, iterations): status 0
    converged, 1 out of budget or stalled, 2 a Newton system not positive definite (numpy decides)."""
    n = x.shape[0]
    mov = lo < hi
    kink = mov & (c > 0.0) & (w0 > lo) & (w0 < hi)
    nu = 0.0
    lo_set = False
    hi_set = False
    lo_nu = lo_ex = hi_nu = hi_ex = 0.0
    side = 0
    step = 1.0
    last = math.inf
    before = math.inf
    iters = 0
    free = np.zeros(n, np.bool_)
    for _ in range(budget + 200):
        x, ok, free, chol, iters, failed = _segments_solve(
            s_mat, b, lo, hi, w0, c, a, rho, mov, kink, eps_max, tol, nu, x, budget, iters
        )
        if failed:
            return 2, x, nu, free, iters
        excess = x.sum() - 1.0
        if ok and abs(excess) <= tol:
            return 0, x, nu, free, iters
        if iters >= budget:
            return 1, x, nu, free, iters
        if excess > 0.0:
            lo_nu, lo_ex, lo_set = nu, excess, True
            if side == 1 and hi_set:
                hi_ex *= 0.5
            side = 1
        else:
            hi_nu, hi_ex, hi_set = nu, excess, True
            if side == -1 and lo_set:
                lo_ex *= 0.5
            side = -1
        p = np.zeros(n)
        idx = np.flatnonzero(free)
        if chol.shape[0] == idx.shape[0] and idx.shape[0] > 0:
            pf = _cho_solve(chol, np.ones(idx.shape[0]))
            for r in range(idx.shape[0]):
                p[idx[r]] = pf[r]
        q = p.sum()
        if q > 1e-14:
            dnu = excess / q
        else:  # nothing free to move: expand until the sign of the excess flips
            dnu = math.copysign(step, excess)
            step *= 2.0
        nn = nu + dnu
        if lo_set and hi_set:
            lft = min(lo_nu, hi_nu)
            rgt = max(lo_nu, hi_nu)
            if not (lft < nn < rgt):
                nn = lo_nu - lo_ex * (hi_nu - lo_nu) / (hi_ex - lo_ex)
                if not (lft < nn < rgt):
                    nn = 0.5 * (lft + rgt)
            # bisect when the step is not half the one before last (piecewise-smooth Σx(ν), as in numpy)
            if abs(nn - nu) > 0.5 * before:
                nn = 0.5 * (lft + rgt)
        dnu = nn - nu
        before = last
        last = abs(dnu)
        nu = nn
        for i in range(n):
            x[i] = min(max(x[i] - dnu * p[i], max(lo[i], 0.1 * x[i])), hi[i])
    return 1, x, nu, free, iters
