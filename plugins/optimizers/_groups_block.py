"""The venue-budget solver's active-set rounds and Newton block (``_groups._rounds_numpy``, ``_block_numpy``)
compiled with numba.

Why: with venue budgets binding (the embedded two-venue book binds one nearly every hour), the group
solver runs twice a cycle and ~2.6 blocks a solve; at 8 assets each block is a handful of 8 × 8 products
and a Cholesky factor, and numpy/scipy's per-call overhead was ~80% of its 0.6 ms (profile of a 2,000-h
``--research`` run: 5.9 of 16 s in ``_block``). This is the same iteration, operation for operation: one
Cholesky factor of H = S + t·diag(b/x²) per step, the bordered (k+1) × (k+1) system for (dt, dη) solved by
Gaussian elimination with partial pivoting (singular exactly where LAPACK's ``gesv`` says so: a zero
pivot), the Armijo damping on the scaled residual, the same stopping rules and the same Newton-step
budget. The rounds around it are the numpy version's mask arithmetic written as loops (the same binding,
release and cycling rules, in the same order); once the block was compiled they were most of what was left
(8,760 h of the default book's ``--research``: 34.9 s in numpy, 20.2 s with the block compiled, 14.2 s with
both). Both differ from the numpy versions only by rounding (tests/plugins/test_group_bounds.py compares
the two on drawn problems and runs the solver's own cvxpy-referenced tests through them).
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


# -- the active-set rounds (``_groups._rounds_numpy``) ----------------------------------------------------------

ROUNDS_OK = 0
ROUNDS_FAILED = 1  # ``_rounds`` returns None: the caller moves on (another start, the nested fallback)


@njit(cache=True, nogil=True)
def _group_sums(gid, w, k):  # type: ignore[no-untyped-def]
    out = np.zeros(k)
    for i in range(w.shape[0]):
        if gid[i] >= 0:
            out[gid[i]] += w[i]
    return out


@njit(cache=True, nogil=True)
def _rescale(x, col, targets, rest_room):  # type: ignore[no-untyped-def]
    y = x.copy()
    for j in range(targets.shape[0]):
        tot = 0.0
        for i in range(y.shape[0]):
            if col[i] == j:
                tot += y[i]
        f = targets[j] / tot
        for i in range(y.shape[0]):
            if col[i] == j:
                y[i] *= f
    tot = 0.0
    anyrest = False
    for i in range(y.shape[0]):
        if col[i] < 0:
            tot += y[i]
            anyrest = True
    if anyrest:
        f = rest_room / tot
        for i in range(y.shape[0]):
            if col[i] < 0:
                y[i] *= f
    return y


@njit(cache=True, nogil=True)
def _most_violated(sums, up, low, side, atol):  # type: ignore[no-untyped-def]
    k = up.shape[0]
    over = np.zeros(k, np.bool_)
    under = np.zeros(k, np.bool_)
    best = 0.0
    g_best = -1
    excess = np.zeros(k)
    short = np.zeros(k)
    for g in range(k):
        if side[g] == 0 and sums[g] > up[g] + atol:
            excess[g] = (sums[g] - up[g]) / max(up[g], 1e-300)
        if side[g] == 0 and sums[g] < low[g] - atol:
            short[g] = (low[g] - sums[g]) / max(low[g], 1e-300)
        worst = max(excess[g], short[g])
        if worst > best:  # the first maximum, as numpy's argmax
            best = worst
            g_best = g
    if g_best >= 0:
        if excess[g_best] >= short[g_best]:
            over[g_best] = True
        else:
            under[g_best] = True
    return over, under


@njit(cache=True, nogil=True)
def rounds(s, b, lo, hi, gid, up, low, x, capped, floored, side, t_hint, tol, used, limit,  # type: ignore[no-untyped-def]  # noqa: PLR0912, PLR0913, PLR0915
           max_rounds, round_tol, kkt_tol, group_atol, t_collapse):  # fmt: skip
    """``_groups._rounds_numpy`` (its docstring and the module's step 2), compiled. ``t_hint`` NaN: none.
    Returns (status, w, t, eta, side, capped, floored, used)."""
    n = b.shape[0]
    k = up.shape[0]
    movable = lo < hi
    grouped = gid >= 0
    gsafe = np.where(grouped, gid, 0)
    capped = capped | ~movable
    floored = floored & ~capped
    side = side.astype(np.int64).copy()
    x = x.copy()
    seen = np.zeros((4 * max_rounds + 1, 2 * n + k + 1), np.int64)
    n_seen = 0
    exact = False
    reset = False
    t = t_hint
    order = np.empty(k, np.int64)
    n_order = 0
    for g in range(k):
        if side[g] != 0:
            order[n_order] = g
            n_order += 1
    eta = np.zeros(k)
    w = np.empty(n)
    for _ in range(4 * max_rounds):
        free = ~(capped | floored)
        for i in range(n):
            w[i] = hi[i] if capped[i] else (lo[i] if floored[i] else x[i])
        fixed_sum = np.zeros(k)
        has_free = np.zeros(k, np.bool_)
        for i in range(n):
            if grouped[i]:
                if free[i]:
                    has_free[gid[i]] = True
                else:
                    fixed_sum[gid[i]] += w[i]
        changed = False
        nz = side != 0
        for g in range(k):
            if not nz[g]:
                continue
            if side[g] > 0:
                leaves = up[g] - fixed_sum[g]
                cond = (leaves <= 0) if has_free[g] else (leaves < -group_atol)
                if cond:
                    released = False
                    for i in range(n):
                        if gid[i] == g and capped[i] and movable[i]:
                            capped[i] = False
                            released = True
                    if not released:
                        return (ROUNDS_FAILED, w, t, eta, side, capped, floored, used)
                    changed = True
                    continue
            else:
                leaves = low[g] - fixed_sum[g]
                if has_free[g] and leaves <= 0:
                    side[g] = 0
                    changed = True
                    continue
                if not has_free[g] and leaves > group_atol:
                    released = False
                    for i in range(n):
                        if gid[i] == g and floored[i]:
                            floored[i] = False
                            released = True
                    if not released:
                        return (ROUNDS_FAILED, w, t, eta, side, capped, floored, used)
                    changed = True
                    continue
            if not has_free[g]:
                side[g] = 0
                changed = True
        if changed:
            m = 0
            for q in range(n_order):
                if side[order[q]] != 0:
                    order[m] = order[q]
                    m += 1
            n_order = m
            continue
        # the set seen before: the rounds cycle
        key = np.empty(2 * n + k + 1, np.int64)
        for i in range(n):
            key[i] = 1 if capped[i] else 0
            key[n + i] = 1 if floored[i] else 0
        for g in range(k):
            key[2 * n + g] = side[g]
        key[2 * n + k] = 1 if exact else 0
        for r in range(n_seen):
            same = True
            for q in range(2 * n + k + 1):
                if seen[r, q] != key[q]:
                    same = False
                    break
            if same:
                return (ROUNDS_FAILED, w, t, eta, side, capped, floored, used)
        seen[n_seen] = key
        n_seen += 1
        tol_r = tol if exact else max(tol, round_tol)
        if not free.any():
            return (ROUNDS_FAILED, w, t, eta, side, capped, floored, used)
        bind = np.zeros(n, np.bool_)
        any_rest = False
        for i in range(n):
            bind[i] = free[i] and grouped[i] and side[gsafe[i]] != 0
            any_rest = any_rest or (free[i] and not bind[i])
        nb = 0
        for g in range(k):
            if has_free[g] and side[g] != 0:
                nb += 1
        blist = np.empty(nb, np.int64)
        q = 0
        for g in range(k):
            if has_free[g] and side[g] != 0:
                blist[q] = g
                q += 1
        targets = np.empty(nb)
        for q in range(nb):
            g = blist[q]
            targets[q] = (up[g] if side[g] > 0 else low[g]) - fixed_sum[g]
        wb = 0.0
        for i in range(n):
            if not free[i]:
                wb += w[i]
        room = 1.0 - wb
        rest_room = room - targets.sum()
        outside = np.empty(n, np.bool_)
        for i in range(n):
            outside[i] = (not (grouped[i] and side[gsafe[i]] != 0)) and movable[i]
        if not any_rest:
            if rest_room < -group_atol and (capped & outside).any():
                capped = capped & ~outside
                continue
            if rest_room > group_atol and (floored & outside).any():
                floored = floored & ~outside
                continue
            sw = s @ w
            if t == t and t > 0:
                t_est = t
            else:
                num = 0.0
                den = 0.0
                for i in range(n):
                    if free[i]:
                        num += w[i] * sw[i]
                        den += b[i]
                t_est = num / den
            bf = np.zeros(k)
            xs = np.zeros(k)
            xf = np.zeros(k)
            for i in range(n):
                if free[i]:
                    bf[gid[i]] += b[i]
                    xs[gid[i]] += w[i] * sw[i]
                    xf[gid[i]] += w[i]
            pinned = abs(rest_room) <= group_atol
            g_star = -1
            best = 0.0
            if rest_room < 0 or pinned:
                for g in range(k):
                    if has_free[g] and side[g] > 0:
                        v = (t_est * bf[g] - xs[g]) / xf[g]
                        if g_star < 0 or v < best:
                            g_star, best = g, v
            if g_star < 0 and (rest_room > 0 or pinned):
                for g in range(k):
                    if has_free[g] and side[g] < 0:
                        v = (t_est * bf[g] - xs[g]) / xf[g]
                        if g_star < 0 or v > best:
                            g_star, best = g, v
            if g_star < 0:
                return (ROUNDS_FAILED, w, t, eta, side, capped, floored, used)
            side[g_star] = 0
            m = 0
            for q in range(n_order):
                if order[q] != g_star:
                    order[m] = order[q]
                    m += 1
            n_order = m
            continue
        if room <= 0 or rest_room <= 0 or (nb > 0 and targets.min() <= 0):
            if rest_room <= 0 and (capped & outside).any():
                capped = capped & ~outside
                continue
            if n_order > 1:
                keep = order[n_order - 1]
                for g in range(k):
                    if g != keep:
                        side[g] = 0
                order[0] = keep
                n_order = 1
                continue
            return (ROUNDS_FAILED, w, t, eta, side, capped, floored, used)
        idx = np.flatnonzero(free)
        nf = idx.shape[0]
        pos = np.full(k, -1, np.int64)
        for q in range(nb):
            pos[blist[q]] = q
        col = np.empty(nf, np.int64)
        e = np.zeros((nf, nb))
        for a in range(nf):
            i = idx[a]
            col[a] = pos[gsafe[i]] if bind[i] else -1
            if col[a] >= 0:
                e[a, col[a]] = 1.0
        start = np.empty(nf)
        bi = np.empty(nf)
        for a in range(nf):
            start[a] = max(w[idx[a]], 1e-12)
            bi[a] = b[idx[a]]
        start = _rescale(start, col, targets, rest_room)
        block_s = np.empty((nf, nf))
        c = np.zeros(nf)
        for a in range(nf):
            for a2 in range(nf):
                block_s[a, a2] = s[idx[a], idx[a2]]
            for i in range(n):
                if not free[i]:
                    c[a] += s[idx[a], i] * w[i]
        sxc = block_s @ start + c
        num = 0.0
        den = 0.0
        for a in range(nf):
            if col[a] < 0:
                num += start[a] * sxc[a]
                den += bi[a]
        t0 = num / den if den > 0 else math.nan
        if not t0 > 0:
            t0 = (start @ (block_s @ start)) / bi.sum()
        eta0 = np.zeros(nb)
        for q in range(nb):
            bs = 0.0
            ss = 0.0
            st = 0.0
            for a in range(nf):
                if col[a] == q:
                    bs += bi[a]
                    ss += start[a] * sxc[a]
                    st += start[a]
            eta0[q] = (t0 * bs - ss) / st
        ok, xb, t_new, eta_b, used = block(block_s, c, bi, e, targets, room, start, t0, eta0, tol_r, used, limit,
                                           t_collapse)  # fmt: skip
        if not ok and not reset and ((capped & movable) | floored).any():
            reset = True
            capped = ~movable
            floored = np.zeros(n, np.bool_)
            continue
        if not ok and n_order > 1:
            keep = order[n_order - 1]
            for g in range(k):
                if g != keep:
                    side[g] = 0
            order[0] = keep
            n_order = 1
            continue
        if not ok:
            return (ROUNDS_FAILED, w, t, eta, side, capped, floored, used)
        t = t_new
        xr = _rescale(xb, col, targets, rest_room)
        for a in range(nf):
            w[idx[a]] = xr[a]
        eta = np.zeros(k)
        for q in range(nb):
            eta[blist[q]] = eta_b[q]
        sw = s @ w
        new_capped = np.empty(n, np.bool_)
        new_floored = np.empty(n, np.bool_)
        for i in range(n):
            eta_i = eta[gsafe[i]] if grouped[i] else 0.0
            rel = w[i] * (sw[i] + eta_i) / (t * b[i]) - 1.0
            at_cap = capped[i] and movable[i] and rel <= kkt_tol
            new_capped[i] = (free[i] and w[i] > hi[i]) or at_cap or not movable[i]
            new_floored[i] = ((free[i] and w[i] < lo[i]) or (floored[i] and rel >= -kkt_tol)) and not new_capped[i]
        sums = _group_sums(gid, w, k)
        bsum = np.zeros(k)
        for i in range(n):
            if grouped[i]:
                bsum[gid[i]] += b[i]
        new_side = side.copy()
        for g in range(k):
            eta_rel = eta[g] * sums[g] / (t * bsum[g]) if bsum[g] > 0 else 0.0
            if side[g] > 0 and eta_rel < -kkt_tol:
                new_side[g] = 0
            if side[g] < 0 and eta_rel > kkt_tol:
                new_side[g] = 0
        gtol = group_atol if exact else tol_r
        over, under = _most_violated(sums, up, low, new_side, gtol)
        for g in range(k):
            if over[g]:
                new_side[g] = 1
            if under[g]:
                new_side[g] = -1
        m = 0
        for q in range(n_order):
            if new_side[order[q]] != 0:
                order[m] = order[q]
                m += 1
        for g in range(k):
            if over[g] or under[g]:
                order[m] = g
                m += 1
        n_order = m
        for i in range(n):
            if grouped[i] and over[gid[i]] and movable[i]:
                new_capped[i] = False
            if grouped[i] and under[gid[i]]:
                new_floored[i] = False
        if (new_capped == capped).all() and (new_floored == floored).all() and (new_side == side).all():
            if exact:
                return (ROUNDS_OK, w, t, eta, side, capped, floored, used)
            exact = True
        capped, floored, side = new_capped, new_floored, new_side
        for i in range(n):
            v = min(max(w[i], lo[i]), hi[i])
            x[i] = v if v > 0 else min(1e-12, hi[i])
    return (ROUNDS_FAILED, w, t, eta, side, capped, floored, used)
