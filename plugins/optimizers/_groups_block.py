"""The venue-budget solver's Newton block (``_groups._block``) compiled with numba.

Why: with venue budgets binding (the embedded two-venue book binds one nearly every hour), the group
solver runs twice a cycle and ~2.6 blocks a solve; at 8 assets each block is a handful of 8 × 8 products
and a Cholesky factor, and numpy/scipy's per-call overhead was ~80% of its 0.6 ms (profile of a 2,000-h
``--research`` run: 5.9 of 16 s in ``_block``). This is the same iteration, operation for operation: one
Cholesky factor of H = S + t·diag(b/x²) per step, the bordered (k+1) × (k+1) system for (dt, dη) solved by
Gaussian elimination with partial pivoting (singular exactly where LAPACK's ``gesv`` says so: a zero
pivot), the Armijo damping on the scaled residual, the same stopping rules and the same Newton-step
budget. It differs from the numpy version only by rounding (tests/plugins/test_group_bounds.py compares
the two on random problems and runs the solver's own tests through it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

EPS = float(np.finfo(float).eps)


@njit(cache=True, nogil=True)
def _noise_floor(abs_s, x, abs_c, t, b):  # type: ignore[no-untyped-def]
    n = x.shape[0]
    top = 1.0
    for i in range(n):
        v = 0.0
        for j in range(n):
            v += abs_s[i, j] * x[j]
        top = max(top, x[i] * (v + abs_c[i]) / (t * b[i]))
    return 8.0 * EPS * (math.sqrt(n) + 1.0) * top


@njit(cache=True, nogil=True)
def _cholesky(h, low):  # type: ignore[no-untyped-def]
    """Lower factor of h into ``low``; False where h is not positive definite (LAPACK's potrf fails)."""
    n = h.shape[0]
    for j in range(n):
        d = h[j, j]
        for k in range(j):
            d -= low[j, k] * low[j, k]
        if not d > 0.0:
            return False
        d = math.sqrt(d)
        low[j, j] = d
        for i in range(j + 1, n):
            v = h[i, j]
            for k in range(j):
                v -= low[i, k] * low[j, k]
            low[i, j] = v / d
        for i in range(j):
            low[i, j] = 0.0
    return True


@njit(cache=True, nogil=True)
def _cho_solve(low, rhs):  # type: ignore[no-untyped-def]
    """L Lᵀ X = rhs, column by column."""
    n, m = rhs.shape
    out = rhs.copy()
    for col in range(m):
        for i in range(n):
            v = out[i, col]
            for k in range(i):
                v -= low[i, k] * out[k, col]
            out[i, col] = v / low[i, i]
        for i in range(n - 1, -1, -1):
            v = out[i, col]
            for k in range(i + 1, n):
                v -= low[k, i] * out[k, col]
            out[i, col] = v / low[i, i]
    return out


@njit(cache=True, nogil=True)
def _solve(a, y):  # type: ignore[no-untyped-def]
    """a z = y by Gaussian elimination with partial pivoting; (False, …) on an exactly zero pivot."""
    n = a.shape[0]
    m = a.copy()
    z = y.copy()
    for c in range(n):
        p = c
        big = abs(m[c, c])
        for i in range(c + 1, n):
            if abs(m[i, c]) > big:
                big = abs(m[i, c])
                p = i
        if big == 0.0 or big != big:
            return False, z
        if p != c:
            for j in range(n):
                tmp = m[c, j]
                m[c, j] = m[p, j]
                m[p, j] = tmp
            tmp = z[c]
            z[c] = z[p]
            z[p] = tmp
        for i in range(c + 1, n):
            f = m[i, c] / m[c, c]
            if f != 0.0:
                for j in range(c, n):
                    m[i, j] -= f * m[c, j]
                z[i] -= f * z[c]
    for i in range(n - 1, -1, -1):
        v = z[i]
        for j in range(i + 1, n):
            v -= m[i, j] * z[j]
        z[i] = v / m[i, i]
    return True, z


@njit(cache=True, nogil=True)
def block(s, c, b, e, r, room, x, t, eta, tol, used, limit, t_collapse):  # type: ignore[no-untyped-def]  # noqa: PLR0913, PLR0915
    """``_groups._block`` (its docstring); returns (ok, x, t, eta, used): ok False where it returns None."""
    n = x.shape[0]
    k = e.shape[1]
    abs_s = np.abs(s)
    abs_c = np.abs(c)
    last = math.inf
    t_start = t
    x = x.copy()
    eta = eta.copy()
    g = np.empty(n)
    scale = np.empty(n)
    h = np.empty((n, n))
    low = np.zeros((n, n))
    cols = np.empty((n, 2 + k))
    m = np.empty((k + 1, k + 1))
    rhs = np.empty(k + 1)
    xn = np.empty(n)
    en = np.empty(k)
    gn = np.empty(n)
    while True:
        if t < t_collapse * t_start:
            return False, x, t, eta, used
        resid = 0.0
        for i in range(n):
            v = c[i]
            for j in range(n):
                v += s[i, j] * x[j]
            for q in range(k):
                v += e[i, q] * eta[q]
            g[i] = v - t * b[i] / x[i]
            scale[i] = x[i] / (t * b[i])
            resid = max(resid, abs(g[i] * scale[i]))
        xs = 0.0
        for i in range(n):
            xs += x[i]
        rel_sum = xs / room - 1.0
        err = abs(rel_sum)
        grp2 = 0.0
        for q in range(k):
            v = 0.0
            for i in range(n):
                v += e[i, q] * x[i]
            rg = v / r[q] - 1.0
            err = max(err, abs(rg))
            grp2 += rg * rg
        if resid <= tol and err <= tol:
            return True, x, t, eta, used
        stalled = max(resid, err) > 1e-3 * last
        if stalled and resid <= _noise_floor(abs_s, x, abs_c, t, b) and err <= 64 * EPS:
            return True, x, t, eta, used
        if used >= limit:
            return False, x, t, eta, used
        last = max(resid, err)
        for i in range(n):
            for j in range(n):
                h[i, j] = s[i, j]
            h[i, i] += t * b[i] / (x[i] * x[i])
        used += 1
        if not _cholesky(h, low):
            return False, x, t, eta, used
        for i in range(n):
            cols[i, 0] = g[i]
            cols[i, 1] = b[i] / x[i]
            for q in range(k):
                cols[i, 2 + q] = e[i, q]
        sol = _cho_solve(low, cols)
        # border = [1, E]: m = [borderᵀ q, −borderᵀ rr], rhs = borderᵀ p − [Σx − room, Eᵀx − r]
        for a in range(k + 1):
            bq = 0.0
            bp = 0.0
            for i in range(n):
                w = 1.0 if a == 0 else e[i, a - 1]
                bq += w * sol[i, 1]
                bp += w * sol[i, 0]
            m[a, 0] = bq
            for q in range(k):
                v = 0.0
                for i in range(n):
                    w = 1.0 if a == 0 else e[i, a - 1]
                    v += w * sol[i, 2 + q]
                m[a, 1 + q] = -v
            if a == 0:
                rhs[a] = bp - (xs - room)
            else:
                v = 0.0
                for i in range(n):
                    v += e[i, a - 1] * x[i]
                rhs[a] = bp - (v - r[a - 1])
        ok, dz = _solve(m, rhs)
        if not ok:
            return False, x, t, eta, used
        for a in range(k + 1):
            if not math.isfinite(dz[a]):
                return False, x, t, eta, used
        dt = dz[0]
        m0 = 0.0
        for i in range(n):
            m0 += (g[i] * scale[i]) ** 2
        m0 = 0.5 * (m0 + rel_sum * rel_sum + grp2)
        alpha = 1.0
        accepted = False
        for _ in range(40):
            tn = t + alpha * dt
            positive = True
            for i in range(n):
                dx = sol[i, 1] * dt - sol[i, 0]
                for q in range(k):
                    dx -= sol[i, 2 + q] * dz[1 + q]
                xn[i] = x[i] + alpha * dx
                positive = positive and xn[i] > 0
            for q in range(k):
                en[q] = eta[q] + alpha * dz[1 + q]
            if tn > 0 and positive:
                mn = 0.0
                for i in range(n):
                    v = c[i]
                    for j in range(n):
                        v += s[i, j] * xn[j]
                    for q in range(k):
                        v += e[i, q] * en[q]
                    gn[i] = (v - tn * b[i] / xn[i]) * scale[i]
                    mn += gn[i] * gn[i]
                xs_n = 0.0
                for i in range(n):
                    xs_n += xn[i]
                sn = xs_n / room - 1.0
                mn += sn * sn
                for q in range(k):
                    v = 0.0
                    for i in range(n):
                        v += e[i, q] * xn[i]
                    rn = v / r[q] - 1.0
                    mn += rn * rn
                mn *= 0.5
                if mn <= (1.0 - 2e-4 * alpha) * m0:
                    accepted = True
                    break
            alpha *= 0.5
        if not accepted:
            done = resid <= _noise_floor(abs_s, x, abs_c, t, b) and err <= 64 * EPS
            return done, x, t, eta, used
        x[:] = xn
        eta[:] = en
        t = tn
