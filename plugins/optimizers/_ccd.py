"""Compiled fast path of ``erc``: cyclical coordinate descent for risk parity under bounds (numba).

Imported lazily by ``plugins.optimizers.erc`` on the first solve (numba's import costs ~0.3 s and its
first compile a few seconds; ``cache=True`` keeps the machine code in ``__pycache__`` so a later process
only loads it). Anything this kernel does not handle returns a status other than OK and erc's numpy
method takes over, so every error message and every corner case stays in one place.

The problem (erc's module docstring): weights w with Σw = 1, lower ≤ w ≤ upper, ρ_i = w_i(Σw)_i/b_i
equal among free assets, ≤ at caps, ≥ at floors. In the homogeneous variables y = s·w it is

    P'(s):  minimise  ½ yᵀΣy − Σ_i b_i log y_i   subject to  s·lower ≤ y ≤ s·upper,   with Σy = s,

(erc's P(t) with t = 1/s², y = x/√t): the KKT conditions of P'(s) are the three states, and Σy = s
makes w = y/s fully invested. Each sweep

1. minimises over one y_i at a time in closed form, y_i = (−c_i + √(c_i² + 4Σ_ii b_i)) / (2Σ_ii) with
   c_i = (Σy)_i − Σ_ii y_i (Griveau-Billion et al. 2013; written 2b_i/(c_i + √·) when c_i > 0 so that
   it loses no digits), clipped into [s·lower_i, s·upper_i], keeping Σy current by one axpy per
   coordinate (n² flops a sweep, no factorisation);
2. rescales jointly, in closed form, the free block by α and s so that the free block is optimally
   scaled (y_Fᵀ(Σy)_F = Σ_F b_i, the condition Choi & Chen 2022 enforce without bounds) *and* Σy = s:
   α² (q_FF + Y_F q_FB / (1 − β)) = b_F with q_FF = y_FᵀΣ_FF y_F, q_FB = y_FᵀΣ_FB β_B, Y_F = Σ y_F,
   β = Σ_B β_i the weight held at bounds; s ← αY_F / (1 − β) and the bound assets follow s.

A fixed point is exactly the KKT point of P'(s) with Σy = s. The sweeps converge linearly, about a
digit per sweep on the bench's factor-model covariances (12–13 sweeps from the diagonal start to a
residual of 1e-12, 1–2 from a previous solution). The result is accepted only after an exact check
on a fresh Σw: free-asset dev ≤ ``dev_limit``, capped assets ρ_i ≤ ρ*(1 + KKT_TOL) and floored ones
ρ_i ≥ ρ*(1 − KKT_TOL); otherwise the caller falls back on the Newton method.

An asset capped at 0 is held there (state capped, y_i = 0) and skipped by the sweeps, so it may have
zero variance. The input checks here are the cheap half of erc's (finite, symmetric, positive variances
except at a cap of 0, positive budgets, ordered finite bounds with room, Σ + 1e-10·max var·I positive
definite by Cholesky); any failure returns BAD without a word and erc's checks word the error.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

OK = 0
BAD = 1
"""Input the kernel leaves to the numpy method: an error to word, or a corner it does not take."""
NO_CONVERGENCE = 2
KKT_TOL = 1e-9
PSD_RTOL = 1e-10
SYM_RTOL = 1e-10
ZERO_VAR_RTOL = 1e-20
SMALL_CHOLESKY = 100
"""Up to this size the positive-definiteness test is an inline loop (no LAPACK call, no copies)."""


@njit(cache=True, nogil=True)
def _positive_definite(cov: np.ndarray, shift: float) -> bool:
    """Whether Σ + shift·I has a Cholesky factor (up to rounding: λ_min > −shift). LAPACK on Σ itself
    first (one copy fewer), with the shift only when that fails (PSD but singular)."""
    n = cov.shape[0]
    if n <= SMALL_CHOLESKY:
        return _small_cholesky(cov, shift)
    try:
        np.linalg.cholesky(cov)
        return True
    except Exception:  # noqa: BLE001 - numba raises LinAlgError for a non-definite matrix
        pass
    m = cov.copy()
    for i in range(n):
        m[i, i] += shift
    try:
        np.linalg.cholesky(m)
    except Exception:  # noqa: BLE001
        return False
    return True


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _small_cholesky(cov: np.ndarray, shift: float) -> bool:
    """Row-oriented Cholesky, dot products reassociated so that they vectorise (a definiteness test
    needs no bit-reproducible factor); as fast as LAPACK up to n ≈ 100 and no call overhead."""
    n = cov.shape[0]
    low = np.zeros((n, n))
    for j in range(n):
        lj = low[j]
        d = cov[j, j] + shift
        for k in range(j):
            d -= lj[k] * lj[k]
        if not d > 0.0:
            return False
        d = math.sqrt(d)
        lj[j] = d
        inv = 1.0 / d
        for i in range(j + 1, n):
            li = low[i]
            v = cov[i, j]
            for k in range(j):
                v -= li[k] * lj[k]
            li[j] = v * inv
    return True


@njit(cache=True, nogil=True)
def _fail(status: int, n: int, sweeps: int):  # type: ignore[no-untyped-def]
    none = np.zeros(n, np.bool_)
    return status, np.zeros(n), none, none, sweeps, math.inf


@njit(cache=True, nogil=True)
def solve(cov, budgets, upper, lower, w0, tol, max_sweeps, dev_limit):  # type: ignore[no-untyped-def]
    """Risk parity under bounds by coordinate sweeps (module docstring).

    Empty ``budgets`` / ``upper`` / ``lower`` / ``w0`` mean equal budgets, caps 1, floors 0, no warm
    start. Returns (status, weights, capped, floored, sweeps, dev).
    """
    n = cov.shape[0]
    # -- the cheap input checks; anything odd goes to the numpy method
    b = np.full(n, 1.0 / n) if budgets.shape[0] == 0 else budgets.copy()
    up = np.ones(n) if upper.shape[0] == 0 else np.minimum(upper, 1.0)
    lo = np.zeros(n) if lower.shape[0] == 0 else lower
    if b.shape[0] != n or up.shape[0] != n or lo.shape[0] != n:
        return _fail(BAD, n, 0)
    scale = 0.0
    for i in range(n):
        d = cov[i, i]
        if not (d >= 0.0 and d < math.inf):
            return _fail(BAD, n, 0)
        if up[i] < 0.0:
            up[i] = 0.0  # a negative cap is a cap at 0 (as in the numpy method); NaN stays NaN
        scale = max(scale, d)
    if not scale > 0.0:
        return _fail(BAD, n, 0)
    bsum = 0.0
    hsum = 0.0
    lsum = 0.0
    for i in range(n):
        if not (b[i] > 0.0 and b[i] < math.inf and lo[i] >= 0.0 and lo[i] <= up[i]):
            return _fail(BAD, n, 0)  # also NaN
        # Zero variance is allowed only for an asset capped at 0: it is held there and never swept.
        if not (cov[i, i] > ZERO_VAR_RTOL * scale or up[i] == 0.0):
            return _fail(BAD, n, 0)
        bsum += b[i]
        hsum += up[i]
        lsum += lo[i]
    if not (hsum > 1.0 + 1e-12 and lsum < 1.0 - 1e-12 and bsum < math.inf):
        return _fail(BAD, n, 0)  # infeasible, or only the bounds themselves fit
    symmetric = True
    for i in range(n):
        for j in range(i):
            v = cov[i, j]
            gap = abs(v - cov[j, i])
            if not gap <= SYM_RTOL * scale:  # also NaN / inf
                return _fail(BAD, n, 0)
            if gap > 0.0:
                symmetric = False
    s_mat = cov if symmetric else 0.5 * (cov + cov.T)
    if not _positive_definite(s_mat, PSD_RTOL * scale):
        return _fail(BAD, n, 0)
    b /= bsum

    # -- start: w0 when usable (assets at zero get a sliver), else the diagonal solution √b_i/σ_i
    x = np.empty(n)
    tot = 0.0
    for i in range(n):
        x[i] = math.sqrt(b[i] / s_mat[i, i]) if up[i] > 0.0 else 0.0
        tot += x[i]
    x /= tot
    if w0.shape[0] == n:
        usable = True
        tw = 0.0
        for i in range(n):
            if not (w0[i] >= 0.0 and w0[i] < math.inf):
                usable = False
            tw += w0[i]
        if usable and tw > 0.0:
            for i in range(n):
                v = w0[i] / tw
                # a previous solution tells its active set; renormalising costs the last digits
                if abs(v - up[i]) <= 1e-9 * up[i]:
                    v = up[i]
                elif lo[i] > 0.0 and abs(v - lo[i]) <= 1e-9 * lo[i]:
                    v = lo[i]
                x[i] = max(v, 1e-3 * x[i])
    state = np.zeros(n, np.int8)  # 1 capped, −1 floored, 0 free
    for i in range(n):
        x[i] = min(max(x[i], lo[i]), up[i])
        if x[i] >= up[i]:
            state[i] = 1
        elif x[i] <= lo[i] and lo[i] > 0.0:
            state[i] = -1
    if not (state == 0).any():  # everything at a bound: start from all free (assets capped at 0 stay out)
        for i in range(n):
            if up[i] > 0.0:
                state[i] = 0
    # y = s·x with s = 1 to start; the rescaling puts the free block and s where they belong
    y = x
    sy = s_mat @ y
    v = np.zeros(n)  # Σ_B β_B: the bound assets' pull per unit of s, updated as assets bind or free
    for i in range(n):
        if state[i] != 0:
            _axpy(up[i] if state[i] > 0 else lo[i], s_mat[i], v)
    s = _rescale(b, up, lo, y, sy, v, state, 1.0)
    if not s > 0.0:
        return _fail(NO_CONVERGENCE, n, 0)

    sweeps = 0
    best = math.inf
    stalled = 0
    resid = math.inf
    converged = False
    while sweeps < max_sweeps:
        sweeps += 1
        # 1. coordinate minimisation, clipped into the box
        for i in range(n):
            if up[i] == 0.0:  # capped at 0: out of the problem (state 1, y_i = 0 from the start)
                continue
            d = s_mat[i, i]
            c = sy[i] - d * y[i]
            root = math.sqrt(c * c + 4.0 * d * b[i])
            z = 2.0 * b[i] / (c + root) if c > 0.0 else (root - c) / (2.0 * d)
            st = 0
            if z >= s * up[i]:
                z = s * up[i]
                st = 1
            elif z <= s * lo[i]:
                z = s * lo[i]
                st = -1
            old = state[i]
            if st != old:  # the bound block changed: keep v = Σ_B β_B current
                if old != 0:
                    _axpy(-(up[i] if old > 0 else lo[i]), s_mat[i], v)
                if st != 0:
                    _axpy(up[i] if st > 0 else lo[i], s_mat[i], v)
                state[i] = st
            dz = z - y[i]
            if dz != 0.0:
                y[i] = z
                _axpy(dz, s_mat[i], sy)
        # 2. joint rescaling of the free block and s (module docstring)
        s = _rescale(b, up, lo, y, sy, v, state, s)
        if not s > 0.0:  # bounds take everything, or hedges dominate: the numpy method decides
            return _fail(NO_CONVERGENCE, n, sweeps)
        # 3. residual of the free budgets, y_i (Σy)_i = b_i; confirmed on an exact product
        resid = _residual(y, sy, b, state, s, up, lo)
        if resid <= tol:
            sy = s_mat @ y
            resid = _residual(y, sy, b, state, s, up, lo)
            if resid <= tol:
                converged = True
                break
        if resid < 0.5 * best:
            best = resid
            stalled = 0
        else:
            stalled += 1
            if stalled >= 4 and best <= 1e-3 * dev_limit:  # at the rounding floor of large n
                converged = True
                break
    if not converged:
        return _fail(NO_CONVERGENCE, n, sweeps)

    # -- weights: bounds exactly, the free block takes the rest; then the exact check
    w = np.empty(n)
    free_sum = 0.0
    held = 0.0
    for i in range(n):
        if state[i] > 0:
            w[i] = up[i]
            held += up[i]
        elif state[i] < 0:
            w[i] = lo[i]
            held += lo[i]
        else:
            w[i] = y[i] / s
            free_sum += w[i]
    if not free_sum > 0.0:
        return _fail(NO_CONVERGENCE, n, sweeps)
    k = (1.0 - held) / free_sum
    for i in range(n):
        if state[i] == 0:
            v = w[i] * k
            if v > up[i] * (1.0 + 1e-12) or v < lo[i] * (1.0 - 1e-12):
                return _fail(NO_CONVERGENCE, n, sweeps)
            w[i] = min(max(v, lo[i]), up[i])
    sw = s_mat @ w
    mean = 0.0
    nf = 0
    for i in range(n):
        if state[i] == 0:
            mean += w[i] * sw[i] / b[i]
            nf += 1
    dev = 0.0
    if nf > 0:
        mean /= nf
        if not mean > 0.0:
            return _fail(NO_CONVERGENCE, n, sweeps)
        for i in range(n):
            r = w[i] * sw[i] / b[i] / mean - 1.0
            if state[i] == 0:
                dev = max(dev, abs(r))
            elif (state[i] > 0 and up[i] > lo[i] and r > KKT_TOL) or (state[i] < 0 and r < -KKT_TOL):
                return _fail(NO_CONVERGENCE, n, sweeps)
    if not dev <= dev_limit:
        return _fail(NO_CONVERGENCE, n, sweeps)
    capped = state > 0
    floored = state < 0
    return OK, w, capped, floored, sweeps, dev


@njit(cache=True, nogil=True)
def _rescale(b, up, lo, y, sy, v, state, s):  # type: ignore[no-untyped-def]
    """Scale the free block by α and s (the bound assets follow s) so that y_Fᵀ(Σy)_F = Σ_F b_i and
    Σy = s, in place, keeping Σy exact in exact arithmetic; returns the new s, or −1 when no positive
    α exists (the bounds hold all the weight, or the bound assets hedge the free ones). The bound
    block's part of Σy is s·v."""
    n = y.shape[0]
    beta = 0.0
    for i in range(n):
        if state[i] != 0:
            beta += up[i] if state[i] > 0 else lo[i]
    room = 1.0 - beta
    yf = 0.0
    qf = 0.0
    uf = 0.0
    bf = 0.0
    for i in range(n):
        if state[i] == 0:
            yf += y[i]
            qf += y[i] * sy[i]
            uf += y[i] * v[i]
            bf += b[i]
    uf *= s
    den = (qf - uf) + yf * (uf / s) / room if room > 0.0 else -1.0
    if not (den > 0.0 and yf > 0.0):
        return -1.0
    alpha = math.sqrt(bf / den)
    s_new = alpha * yf / room
    ratio = s_new / s
    for i in range(n):
        if state[i] == 0:
            y[i] *= alpha
        else:
            y[i] = s_new * (up[i] if state[i] > 0 else lo[i])
        u = s * v[i]
        sy[i] = alpha * (sy[i] - u) + ratio * u
    return s_new


@njit(cache=True, nogil=True)
def _axpy(a, x, y):  # type: ignore[no-untyped-def]
    for j in range(y.shape[0]):
        y[j] += a * x[j]


@njit(cache=True, nogil=True)
def _residual(y, sy, b, state, s, up, lo):  # type: ignore[no-untyped-def]
    """max over free assets of |y_i(Σy)_i / b_i − 1|; infinite while the rescaling has pushed a free
    asset out of its box (the next sweep binds it)."""
    r = 0.0
    for i in range(y.shape[0]):
        if state[i] == 0:
            if y[i] > s * up[i] or y[i] < s * lo[i]:
                return math.inf
            r = max(r, abs(y[i] * sy[i] / b[i] - 1.0))
    return r
