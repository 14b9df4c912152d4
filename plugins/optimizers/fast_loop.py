"""The fast backtest's whole hourly cycle compiled (numba), for the configurations it implements exactly.

``bot/fast.py`` runs the cycle's stages (bot/stages.py) once per hour in Python: at 20 assets that is
~0.3 ms a cycle, nearly all of it numpy call overhead, for ~15 µs of arithmetic. When the configuration
is one this module implements *exactly*, ``run_fast_backtest`` hands the whole run to ``run_cycles``
instead: one compiled call over arrays that ``FastBacktest`` prepared once (log returns, traded value,
volatilities for the impact, caps, fee and spread parameters). What it implements, operation for
operation in the order the Python stages do them (so that the two paths agree to the last bit wherever
the arithmetic is the same, and to rounding where BLAS is involved):

* **forecast**: ``EwmaStream``'s sliding update S' = λS + r rᵀ − λ^W r_out r_outᵀ, with its re-anchoring
  every ``REANCHOR`` updates (the anchors are computed by ``EwmaStream`` itself, in Python, before the
  loop), ``Forecast.from_cov``'s symmetrisation and ``validate``'s Cholesky test;
* **bounds**: ``bounds_stage`` (L_i from the look-back's traded value, with or without a horizon);
* **target**: ``target_stage`` for one venue: erc's compiled coordinate descent (plugins/optimizers/_ccd.py,
  called directly; where it declines, erc's own ``solve_risk_budget`` is called from the loop in numba's
  object mode, the very call the Python path makes, so its Newton method answers), the box-infeasible
  cases of ``stages.optimize`` (caps that leave cash, floors scaled), the bound check, the dispersions,
  ``bounds_of`` and the re-plan around holdings kept above a moved liquidity cap (``cap_tolerance``);
* **decide**: the ``full`` and ``band`` policies (every ``measure`` and ``to``) and ``decide_stage``;
* **plan**: ``plan_orders`` (min trade weight, participation cap, qty step, min notional, buys scaled to
  the venue's cash);
* **execute / book**: the fill loop of ``FastBacktest.step`` (sells, then buys sized to the cash left,
  ``bot.fills``' half-spread, square-root impact and fee), NAV, held weights and ``held_dispersion``.

Anything the loop meets that the Python path would hand to code not compiled here stops it with a
status (``REASONS``), and the caller runs the Python path from the start: a venue budget that binds (the
group solver), a forecast that fails the Cholesky test (numpy's eigenvalue test decides), an error the
Python path raises (erc's OptimizerError, a NAV at or below zero). The loop never approximates.

Sums whose order numpy fixes are summed in numpy's order (``_psum``: numpy's pairwise summation for a
contiguous 1-D reduction; row after row for a column sum), and matrix products go through the same BLAS
calls (``np.dot``), so that the two paths agree bit for bit in practice (tests/bot/test_fast_kernel.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, objmode
from numba.core.errors import NumbaError  # noqa: F401 - bot.fast catches it: a kernel that fails to compile

from plugins.optimizers._ccd import OK as _CCD_OK
from plugins.optimizers._ccd import _small_cholesky
from plugins.optimizers._ccd import solve as _ccd_solve

# -- statuses of run_cycles -------------------------------------------------------------------------
DONE = 0
NAV_NOT_POSITIVE = 1
FORECAST_NOT_DEFINITE = 2
FORECAST_ZERO_VOL = 3
ERC_ERROR = 4
ERC_BROKE_BOUNDS = 5
VENUE_BUDGET_BINDS = 6
START_INVALID = 7

REASONS = {
    NAV_NOT_POSITIVE: "the portfolio NAV is not positive (the Python path raises DataError)",
    FORECAST_NOT_DEFINITE: "the forecast covariance fails the Cholesky test (numpy's eigenvalue test decides)",
    FORECAST_ZERO_VOL: "a forecast volatility is zero (the Python path raises ForecastError)",
    ERC_ERROR: "erc raises OptimizerError (the Python path raises it, worded)",
    ERC_BROKE_BOUNDS: "the optimizer broke its bounds (the Python path raises OptimizerError)",
    VENUE_BUDGET_BINDS: "a venue budget binds (the group solver, plugins/optimizers/_groups.py, answers)",
    START_INVALID: "the warm start is NaN or negative (erc words the error)",
}

# -- the kill switch ([guard], bot/killswitch.py): states, causes, and the ``trip`` record ----------------
ACTIVE = 0
HALT = 1
REDUCE_ONLY = 2
FLATTEN = 3
STATE_NAMES = {HALT: "halt", REDUCE_ONLY: "reduce_only", FLATTEN: "flatten"}
CAUSE_DRAWDOWN = 1
CAUSE_DAILY_LOSS = 2
CAUSE_SIGMA = 3
T_CYCLE = 0  # the cycle it tripped at (−1: never)
T_CAUSE = 1
T_NAV = 2  # the mark it tripped on
T_HIGH = 3  # the high-water mark before it (NaN: none yet)
T_DAY_OPEN = 4  # the UTC day's first mark
T_SIGMA = 5  # the held book's forecast σ_p, annualised
N_TRIP = 6

# -- per-cycle columns of ``out`` -------------------------------------------------------------------
NAV_BEFORE = 0
NAV_AFTER = 1
NOTIONAL = 2  # notional filled
FILL_COST = 3  # fees + slippage of the fills
D_TARGET = 4  # RC dispersion of the optimizer's weights on its free assets (NaN: none)
D_TRADED = 5  # ... of the stored target on its free assets
D_HELD = 6  # held_dispersion: free, bound, all (NaN: None)
D_HELD_BOUND = 7
D_HELD_ALL = 8
CASH = 9  # cash at the venues after the fills
ERC_DEV = 10  # erc's own dev of its solution (NaN when the bounds left no choice)
ERC_SWEEPS = 11
DRIFT = 12  # the policy's drift (its Decision's reason)
TRADED = 13  # 1.0 when the policy decided to trade
SIGMA_DECIDED = 14  # σ_p (per bar) of the decided weights
INFEASIBLE = 15  # 1.0 when the box bounds admitted no fully invested book (liquidity_cap)
AIM_REPLANNED = 16  # 1.0 when a kept holding made the target re-planned
ERC_NUMPY = 17  # 1.0 when erc's compiled path declined and its numpy method answered (in object mode)
N_COLUMNS = 18

# -- event counters of ``counts`` (count, then the sequence number of the kind's first occurrence) ------
EV_LIQUIDITY_CAP = 0
EV_ORDER_SKIPPED = 1
EV_CASH_SHORTFALL = 2
N_EVENTS = 3

# -- bound labels of ``labels`` ---------------------------------------------------------------------
FREE = 0
CAP = 1
FLOOR = 2
CAPPED_FREE = 3  # erc reports it capped, bounds_of finds it below its cap: no bound, but the book's label is "cap"
BOUND_NAMES = {FREE: None, CAP: "cap", FLOOR: "floor", CAPPED_FREE: None}  # bot.stages.bounds_of
BOOK_NAMES = {CAP: "cap", FLOOR: "floor", CAPPED_FREE: "cap"}  # FastBacktest.step's labels

# -- policies -----------------------------------------------------------------------------------------
FULL = 0
BAND = 1
TO_TARGET = 0
TO_EDGE = 1
MEASURE_WEIGHT = 0
MEASURE_RELATIVE = 1
MEASURE_RISK = 2

# -- orders (``orders_f`` / ``orders_i`` columns, when recording) -------------------------------------
O_QTY = 0  # the planned quantity
O_FILLED = 1  # the quantity filled (0: canceled, the venue lacked cash)
O_PRICE = 2
O_FEE = 3
O_SLIP = 4
O_DECISION = 5  # decision price (mid)
N_ORDER_F = 6
O_CYCLE = 0
O_ASSET = 1
O_SIDE = 2  # +1 buy, −1 sell
O_LEG = 3
N_ORDER_I = 4


@njit(cache=True)
def _pw_block(a, lo, n):  # type: ignore[no-untyped-def]
    """numpy's pairwise sum of a[lo:lo+n] for n <= 128 (numpy/_core/src/umath/loops_utils.h.src)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0 = a[lo]
    r1 = a[lo + 1]
    r2 = a[lo + 2]
    r3 = a[lo + 3]
    r4 = a[lo + 4]
    r5 = a[lo + 5]
    r6 = a[lo + 6]
    r7 = a[lo + 7]
    i = 8
    end = n - (n % 8)
    while i < end:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def _psum(a):  # type: ignore[no-untyped-def]
    """numpy's sum of a contiguous 1-D array, bit for bit: pairwise, halves split at multiples of 8 above
    128 elements (written without recursion: numba's cache does not keep a recursive function's calls)."""
    n = a.shape[0]
    if n <= 128:
        return _pw_block(a, 0, n)
    f_lo = np.empty(64, np.int64)
    f_n = np.empty(64, np.int64)
    f_stage = np.zeros(64, np.int64)
    vals = np.empty(64)
    sp = 1
    vp = 0
    f_lo[0] = 0
    f_n[0] = n
    f_stage[0] = 0
    while sp > 0:
        top = sp - 1
        lo = f_lo[top]
        m = f_n[top]
        if m <= 128:
            vals[vp] = _pw_block(a, lo, m)
            vp += 1
            sp -= 1
            continue
        n2 = m // 2
        n2 -= n2 % 8
        stage = f_stage[top]
        if stage == 2:  # both halves summed: left + right
            vals[vp - 2] = vals[vp - 2] + vals[vp - 1]
            vp -= 1
            sp -= 1
            continue
        f_stage[top] = stage + 1
        f_lo[sp] = lo if stage == 0 else lo + n2
        f_n[sp] = n2 if stage == 0 else m - n2
        f_stage[sp] = 0
        sp += 1
    return vals[0]


@njit(cache=True)
def _floor_to_step(qty, step):  # type: ignore[no-untyped-def]
    """bot.stages.floor_to_step."""
    if step <= 0:
        return qty
    return math.floor(qty / step * (1 + 1e-12)) * step


@njit(cache=True)
def _risk_contributions(w, cov, rc):  # type: ignore[no-untyped-def]
    """bot.riskmath.risk_contributions into ``rc``; returns σ_p."""
    sw = np.dot(cov, w)
    v = np.dot(np.dot(w, cov), w)
    sigma = math.sqrt(max(v, 0.0))
    if sigma == 0.0:
        rc[:] = 0.0
        return 0.0
    for i in range(w.shape[0]):
        rc[i] = w[i] * sw[i] / sigma
    return sigma


@njit(cache=True)
def _dispersion_of(rc, mask):  # type: ignore[no-untyped-def]
    """bot.riskmath.rc_dispersion given the contributions (``mask`` holds at least one asset)."""
    sel = rc[mask]
    mean = _psum(sel) / sel.shape[0]
    if mean == 0:
        return math.inf
    d = 0.0
    for x in sel:
        d = max(d, abs(x / mean - 1.0))
    return d


def _numpy_method(cov, budgets, hi, lo, start, tol, max_iter):  # type: ignore[no-untyped-def]
    """erc's solve on a box problem its compiled path declined: the very call the Python path makes
    (``solve_risk_budget`` tries the compiled path again, which declines again, then its Newton method
    answers). Called from the loop in object mode. Returns (status, weights, capped, dev, iterations):
    status 0 solved, 1 InfeasibleBoundsError, 2 any other OptimizerError (the Python path raises it)."""
    from bot.errors import InfeasibleBoundsError, OptimizerError
    from plugins.optimizers.erc import solve_risk_budget

    none = (np.zeros(0), np.zeros(0, np.bool_), 0.0, 0)
    try:
        res = solve_risk_budget(cov, budgets if budgets.size else None, hi, lo, w0=start, tol=tol, max_iter=max_iter)
    except InfeasibleBoundsError:
        return (1, *none)
    except OptimizerError:
        return (2, *none)
    w = np.ascontiguousarray(res.weights, dtype=np.float64)
    return 0, w, np.ascontiguousarray(res.capped, dtype=np.bool_), float(res.dev), int(res.iterations)


@njit(cache=True)
def _optimize(cov, upper, lower, current, total, budgets, tol, max_iter, dev_limit, w_out, frac_out, capped_out):  # type: ignore[no-untyped-def]
    """bot.stages.optimize with erc, no groups. Returns (status, infeasible, dev, sweeps, numpy method used)."""
    n = upper.shape[0]
    hi = upper / total
    lo = lower / total
    start = current / total
    for i in range(n):
        if not (math.isfinite(start[i]) and start[i] >= 0.0):
            return START_INVALID, False, math.nan, 0, False
    status, w, capped, _floored, sweeps, dev = _ccd_solve(cov, budgets, hi, lo, start, tol, max_iter, dev_limit)
    infeasible = False
    numpy_method = False
    if status == _CCD_OK:
        for i in range(n):
            w_out[i] = w[i] * total
            capped_out[i] = capped[i]
    else:
        # erc's input checks for bounds that admit no fully invested book (InfeasibleBoundsError), done
        # here because the hours the caps leave cash can be every hour; anything else goes to erc itself
        hi_p = np.maximum(hi, 0.0)
        crossed = False
        for i in range(n):
            if lo[i] > hi_p[i]:
                crossed = True
        infeasible = crossed or _psum(hi_p) < 1.0 - 1e-12 or _psum(lo) > 1.0 + 1e-12
        if not infeasible:
            with objmode(st="int64", wn="float64[::1]", cn="boolean[::1]", devn="float64", itn="int64"):
                st, wn, cn, devn, itn = _numpy_method(cov, budgets, hi, lo, start, tol, max_iter)
            if st == 2:
                return ERC_ERROR, False, math.nan, 0, True
            numpy_method = True
            infeasible = st == 1
            if not infeasible:
                for i in range(n):
                    w_out[i] = wn[i] * total
                    capped_out[i] = cn[i]
                dev = devn
                sweeps = itn
        if infeasible:  # stages.optimize: every asset at its cap (the rest in cash), or the floors scaled to fit
            if _psum(upper) < total:
                for i in range(n):
                    w_out[i] = upper[i]
            else:
                if not _psum(lower) > 0:
                    return ERC_ERROR, False, math.nan, 0, numpy_method
                k = total / _psum(lower)
                for i in range(n):
                    w_out[i] = lower[i] * k
            capped_out[:] = True
            dev = math.nan
            sweeps = 0
    sigma = _risk_contributions(w_out, cov, frac_out)
    if sigma > 0:
        for i in range(n):
            frac_out[i] = frac_out[i] / sigma
    return _CCD_OK, infeasible, dev, sweeps, numpy_method


@njit(cache=True)
def _max_abs_diff(a, b):  # type: ignore[no-untyped-def]
    d = 0.0
    for i in range(a.shape[0]):
        d = max(d, abs(a[i] - b[i]))
    return d


@njit(cache=True)
def _decide(policy, band, band_to, measure, current, t, cov, out):  # type: ignore[no-untyped-def]
    """plugins/policies/basic.py: the full and band policies. Returns (trade, drift); weights in ``out``."""
    n = t.shape[0]
    if policy == FULL:
        drift = _max_abs_diff(current, t)
        out[:] = t
        return True, drift
    if measure == MEASURE_WEIGHT:
        drift = _max_abs_diff(current, t)
    elif measure == MEASURE_RELATIVE:
        drift = 0.0
        for i in range(n):
            if t[i] > 0:
                r = abs(current[i] / t[i] - 1.0)
            else:
                r = 1.0 if current[i] > 0 else 0.0
            drift = max(drift, r)
    else:
        cur_v = np.dot(np.dot(current, cov), current)
        tgt_v = np.dot(np.dot(t, cov), t)
        if tgt_v <= 0 or cur_v <= 0:
            drift = 1.0 if _max_abs_diff(current, t) > 0 else 0.0
        else:
            cs = np.dot(cov, current)
            ts = np.dot(cov, t)
            drift = 0.0
            for i in range(n):
                cur_s = current[i] * cs[i] / cur_v
                tgt_s = t[i] * ts[i] / tgt_v
                if tgt_s > 0:
                    r = abs(cur_s / tgt_s - 1.0)
                else:
                    r = 1.0 if cur_s > 0 else 0.0
                drift = max(drift, r)
    if drift <= band:
        out[:] = current
        return False, drift
    if band_to == TO_TARGET:
        out[:] = t
    elif measure == MEASURE_WEIGHT:
        for i in range(n):
            out[i] = t[i] + min(max(current[i] - t[i], -band), band)
    else:
        for i in range(n):
            if t[i] > 0:
                out[i] = t[i] * (1.0 + min(max(current[i] / t[i] - 1.0, -band), band))
            else:
                out[i] = 0.0
    return True, drift


@njit(cache=True)
def _event(counts, kind, seq):  # type: ignore[no-untyped-def]
    if counts[kind, 0] == 0:
        counts[kind, 1] = seq
    counts[kind, 0] += 1
    return seq + 1


@njit(cache=True)
def _over_budget(w, venue, n_venues, pos0, mid, cash0, nav, invest, tol_v):  # type: ignore[no-untyped-def]
    """Does ``w`` put more on some venue than the share of NAV it can hold (its cash and holdings)?"""
    n = w.shape[0]
    for v in range(n_venues):
        n_v = 0
        for i in range(n):
            if venue[i] == v:
                n_v += 1
        if n_v == 0:
            continue
        pv = np.empty(n_v)
        mv = np.empty(n_v)
        wv = np.empty(n_v)
        q = 0
        for i in range(n):
            if venue[i] == v:
                pv[q] = pos0[i]
                mv[q] = mid[i]
                wv[q] = w[i]
                q += 1
        budget = (cash0[v] + np.dot(pv, mv)) / nav * invest
        if _psum(wv) > budget + tol_v:
            return True
    return False


@njit(cache=True)
def run_cycles(  # type: ignore[no-untyped-def]  # noqa: PLR0913, PLR0915 - one loop over the whole cycle
    close, volume, traded_value, logret, sig,
    anchors_s, anchors_m, reanchor, lam, lam_w, z, demean,
    hist, lookback, horizon, participation, invest, min_trade_weight, cap_tolerance, caps, floors,
    budgets, tol, max_iter, dev_limit,
    policy, band, band_to, measure,
    venue, n_venues, venue_order, cash, pos, half_spread, fee_bps, taker_fee, impact_coef, impact_exponent,
    qty_step, min_notional, cost_margin,
    guard_dd, guard_daily, guard_sigma, guard_action, day_of, sqrt_ppy, trip,
    out, target_w, held_w, labels, counts, totals,
    record, rec_w0, rec_upper, rec_decided, rec_frac, rec_capped, rec_cash, rec_pos, orders_f, orders_i,
):  # fmt: skip
    """Every cycle of the run (module docstring); ``cash`` and ``pos`` are the book, moved in place.

    Returns (status, cycle, orders): DONE and the number of cycles, or the status that stopped the loop
    and the cycle it stopped at; ``orders`` is the number of order rows recorded (``record``).

    The kill switch (``FastBacktest._guard``): ``guard_dd``, ``guard_daily``, ``guard_sigma`` (annual) are
    NaN where unset; ``day_of`` numbers each cycle's UTC day; a trip is written to ``trip`` (``T_*``) and
    the state ``guard_action`` (``HALT``…) holds to the end of the run, restricting the decided weights as
    ``bot.stages.restrict_stage`` does.
    """
    n = close.shape[1]
    cycles = out.shape[0]
    s = np.zeros((n, n))
    m = np.zeros(n)
    updates = 0
    cov = np.empty((n, n))
    w0 = np.empty(n)
    upper = np.empty(n)
    lower = np.empty(n)
    w = np.empty(n)
    frac = np.empty(n)
    capped = np.zeros(n, np.bool_)
    aim = np.empty(n)
    aim_frac = np.empty(n)
    aim_capped = np.zeros(n, np.bool_)
    up_k = np.empty(n)
    lo_k = np.empty(n)
    keep = np.zeros(n, np.bool_)
    upper_dec = np.empty(n)
    dw = np.empty(n)
    decided = np.empty(n)
    rc = np.empty(n)
    tv = np.empty(n)
    pos0 = np.empty(n)
    plan_qty = np.zeros(n)
    plan_side = np.zeros(n, np.int64)  # +1 buy, −1 sell, 0 none
    lab = np.zeros(n, np.int64)
    free = np.zeros(n, np.bool_)
    rest = np.zeros(n, np.bool_)
    cash0 = np.empty(n_venues)
    seq = 0
    n_orders = 0
    one_ct = 1.0 + cap_tolerance
    buy_unit = 1.01
    guarded = guard_dd == guard_dd or guard_daily == guard_daily or guard_sigma == guard_sigma
    state = ACTIVE
    high = math.nan  # the high-water mark of the marks so far (NaN: none yet)
    day = -1
    day_open = math.nan
    trip[T_CYCLE] = -1.0
    for k in range(cycles):
        j = hist + k
        mid = close[j]
        # -- forecast: EwmaStream (created at k = 0, updated by one return an hour, re-anchored)
        if k == 0:
            s[:, :] = anchors_s[0]
            m[:] = anchors_m[0]
        else:
            r = logret[j - 1]  # enters the window
            out_r = logret[j - 1 - hist]  # leaves it (the ring buffer's oldest row)
            updates += 1
            if updates >= reanchor:
                a = k // reanchor
                s[:, :] = anchors_s[a]
                m[:] = anchors_m[a]
                updates = 0
            else:
                for a in range(n):
                    for b in range(n):
                        s[a, b] = lam * s[a, b] + r[a] * r[b] - lam_w * (out_r[a] * out_r[b])
                    m[a] = lam * m[a] + r[a] - lam_w * out_r[a]
        for a in range(n):
            for b in range(n):
                c = s[a, b] / z
                if demean:
                    c = c - (m[a] / z) * (m[b] / z)
                cov[a, b] = c
        for a in range(n):
            for b in range(a):
                v = 0.5 * (cov[a, b] + cov[b, a])
                cov[a, b] = v
                cov[b, a] = v
            cov[a, a] = 0.5 * (cov[a, a] + cov[a, a])
        for a in range(n):
            for b in range(n):
                if not math.isfinite(cov[a, b]):
                    return FORECAST_NOT_DEFINITE, k, n_orders
        if not _small_cholesky(cov, 0.0):
            return FORECAST_NOT_DEFINITE, k, n_orders
        for a in range(n):
            if not math.sqrt(max(cov[a, a], 0.0)) > 0.0:
                return FORECAST_ZERO_VOL, k, n_orders

        # -- observe: the book at the bar's close
        tc = 0.0
        for v in range(n_venues):
            tc += cash[v]
            cash0[v] = cash[v]
        nav = tc + np.dot(pos, mid) + 0.0
        if not nav > 0:
            return NAV_NOT_POSITIVE, k, n_orders
        for i in range(n):
            pos0[i] = pos[i]
            w0[i] = pos[i] * mid[i] / nav
        if guarded and state == ACTIVE:  # FastBacktest._guard: bot.killswitch.equity_trip, then sigma_trip
            if day_of[k] != day:
                day = day_of[k]
                day_open = nav
            cause = 0
            if guard_dd == guard_dd and high == high and high > 0:
                if 1.0 - nav / max(high, nav) >= guard_dd - 1e-12:
                    cause = CAUSE_DRAWDOWN
            if cause == 0 and guard_daily == guard_daily and day_open > 0:
                if 1.0 - nav / day_open >= guard_daily - 1e-12:
                    cause = CAUSE_DAILY_LOSS
            sigma_p = math.sqrt(max(np.dot(np.dot(w0, cov), w0), 0.0)) * sqrt_ppy
            if cause == 0 and guard_sigma == guard_sigma and sigma_p > guard_sigma:
                cause = CAUSE_SIGMA
            if cause != 0:
                state = guard_action
                trip[T_CYCLE] = k
                trip[T_CAUSE] = cause
                trip[T_NAV] = nav
                trip[T_HIGH] = high
                trip[T_DAY_OPEN] = day_open
                trip[T_SIGMA] = sigma_p
            high = nav if high != high else max(high, nav)

        # -- bounds: L_i from the look-back's traded value
        lo_row = j - lookback + 1
        tv[:] = traded_value[lo_row]
        for row in range(lo_row + 1, j + 1):
            for i in range(n):
                tv[i] += traded_value[row, i]
        if horizon > 0:
            for i in range(n):
                tv[i] = tv[i] / lookback * horizon
        for i in range(n):
            liq = max(participation * tv[i] / nav, 0.0)
            upper[i] = min(caps[i], liq)
            lower[i] = min(floors[i], upper[i])

        # -- target: erc on the box bounds, checked, measured, kept holdings re-planned
        st, infeasible, dev, sweeps, used_numpy = _optimize(cov, upper, lower, w0, invest, budgets, tol, max_iter,
                                                            dev_limit, w, frac, capped)  # fmt: skip
        if st != _CCD_OK:
            return st, k, n_orders
        if infeasible:
            seq = _event(counts, EV_LIQUIDITY_CAP, seq)
        broke = _psum(w) > 1 + 1e-9
        for i in range(n):
            if w[i] > upper[i] + 1e-9 or w[i] < -1e-12:
                broke = True
        if broke:
            return ERC_BROKE_BOUNDS, k, n_orders
        _risk_contributions(w, cov, rc)
        any_free = False
        for i in range(n):
            free[i] = (not capped[i]) and w[i] > 0
            any_free = any_free or free[i]
        out[k, D_TARGET] = _dispersion_of(rc, free) if any_free else math.nan
        # venue budgets: the share of NAV each venue can hold against the share the target puts there
        tol_v = max(min_trade_weight, 1e-9)
        if _over_budget(w, venue, n_venues, pos0, mid, cash0, nav, invest, tol_v):
            return VENUE_BUDGET_BINDS, k, n_orders
        any_free = False
        for i in range(n):
            if capped[i] and w[i] >= upper[i] - 1e-9:
                lab[i] = CAP
            elif lower[i] > 0 and w[i] <= lower[i] + 1e-9:
                lab[i] = FLOOR
            else:
                lab[i] = FREE
            free[i] = lab[i] == FREE and w[i] > 0
            any_free = any_free or free[i]
        out[k, D_TRADED] = _dispersion_of(rc, free) if any_free else math.nan
        any_keep = False
        for i in range(n):
            keep[i] = w0[i] > upper[i] and w0[i] <= upper[i] * one_ct and w0[i] <= caps[i]
            any_keep = any_keep or keep[i]
            upper_dec[i] = w0[i] if keep[i] else upper[i]
        if any_keep:
            for i in range(n):
                up_k[i] = w0[i] if keep[i] else upper[i]
                lo_k[i] = w0[i] if keep[i] else lower[i]
                lo_k[i] = min(lo_k[i], up_k[i])
            st, _inf, _dev, _sw, aim_numpy = _optimize(cov, up_k, lo_k, w0, invest, budgets, tol, max_iter, dev_limit,
                                            aim, aim_frac, aim_capped)  # fmt: skip
            if st != _CCD_OK:
                return st, k, n_orders
            if _over_budget(aim, venue, n_venues, pos0, mid, cash0, nav, invest, tol_v):  # the re-planned target
                return VENUE_BUDGET_BINDS, k, n_orders
            out[k, AIM_REPLANNED] = 1.0
            used_numpy = used_numpy or aim_numpy
        else:
            aim[:] = w
            out[k, AIM_REPLANNED] = 0.0

        # -- decide
        trade, drift = _decide(policy, band, band_to, measure, w0, aim, cov, dw)
        for i in range(n):
            decided[i] = min(max(dw[i], 0.0), upper_dec[i])
        dsum = _psum(decided)
        if dsum > 1.0:
            for i in range(n):
                decided[i] = decided[i] / dsum
        if state != ACTIVE:  # bot.stages.restrict_stage (bot.killswitch.restrict)
            for i in range(n):
                if state == HALT:
                    decided[i] = w0[i]
                elif state == REDUCE_ONLY:
                    decided[i] = min(decided[i], w0[i])
                else:
                    decided[i] = 0.0
        out[k, DRIFT] = drift
        out[k, TRADED] = 1.0 if trade else 0.0  # the policy's call (its Decision's reason says it)
        if state == FLATTEN:
            trade = True
        out[k, SIGMA_DECIDED] = math.sqrt(max(np.dot(np.dot(decided, cov), decided), 0.0))
        if record:
            for i in range(n):
                rec_w0[k, i] = w0[i]
                rec_upper[k, i] = upper[i]
                rec_decided[k, i] = decided[i]
                rec_frac[k, i] = frac[i]
                rec_capped[k, i] = capped[i]

        # -- plan: sells first, buys scaled to each venue's cash
        traded = 0.0
        fill_costs = 0.0
        if trade:
            n_skips = 0
            n_short = 0
            thr = min_trade_weight * nav
            for i in range(n):
                plan_side[i] = 0
                dv = decided[i] * nav - pos0[i] * mid[i]
                if not abs(dv) >= thr:
                    continue
                price = mid[i]
                if dv == 0.0:
                    continue
                qty = abs(dv) / price
                sell = not dv > 0
                if sell:
                    qty = min(qty, max(pos0[i], 0.0))
                cap = participation * max(volume[j, i], 0.0)
                if qty > cap:
                    n_skips += 1
                    qty = cap
                qty = _floor_to_step(qty, qty_step[i])
                if qty <= 0 or qty < qty_step[i] or qty * price < min_notional[i]:
                    n_skips += 1
                    continue
                plan_side[i] = -1 if sell else 1
                plan_qty[i] = qty
            for vv in range(n_venues):
                v = venue_order[vv]
                any_buy = False
                fee = 0.0
                cost = 0.0
                for i in range(n):
                    if plan_side[i] == 1 and venue[i] == v:
                        if not any_buy:
                            fee = taker_fee[i]
                        else:
                            fee = max(fee, taker_fee[i])
                        any_buy = True
                if not any_buy:
                    continue
                proceeds = 0.0
                for i in range(n):
                    if plan_side[i] == -1 and venue[i] == v:
                        proceeds += plan_qty[i] * mid[i] * (1 - taker_fee[i] - cost_margin)
                available = max(cash0[v] + proceeds, 0.0)
                for i in range(n):
                    if plan_side[i] == 1 and venue[i] == v:
                        cost += plan_qty[i] * mid[i]
                cost = cost * (1 + fee + cost_margin)
                scale = 1.0
                if cost > available:
                    scale = available / cost if cost > 0 else 0.0
                    n_short += 1
                for i in range(n):
                    if plan_side[i] == 1 and venue[i] == v:
                        q2 = _floor_to_step(plan_qty[i] * scale, qty_step[i])
                        if q2 <= 0 or q2 < qty_step[i] or q2 * mid[i] < min_notional[i]:
                            n_skips += 1
                            plan_side[i] = 2  # dropped
                            continue
                        plan_qty[i] = q2
            for _ in range(n_skips):
                seq = _event(counts, EV_ORDER_SKIPPED, seq)
            for _ in range(n_short):
                seq = _event(counts, EV_CASH_SHORTFALL, seq)

            # -- execute: the sells, then the buys venue by venue (names in order), each on the bar's close
            leg = 0
            for phase in range(n_venues + 1):
                for i in range(n):
                    side = plan_side[i]
                    if phase == 0:
                        if side != -1:
                            continue
                    elif side != 1 or venue[i] != venue_order[phase - 1] or state != ACTIVE:
                        continue  # (bot.killswitch.allows: no buy once tripped; the restricted weights plan none)
                    v = venue[i]
                    ask = mid[i] * (1 + half_spread[i])
                    bid = mid[i] * (1 - half_spread[i])
                    qty = plan_qty[i]
                    planned = qty
                    if side == 1:
                        unit = ask * (1 + fee_bps[i] / 1e4) * buy_unit
                        qty = min(qty, _floor_to_step(max(cash[v], 0.0) / unit, qty_step[i]))
                        if qty < qty_step[i] or qty * ask < min_notional[i]:
                            qty = 0.0
                    price = 0.0
                    fee = 0.0
                    slip = 0.0
                    if qty <= 0:
                        qty = 0.0
                        seq = _event(counts, EV_CASH_SHORTFALL, seq)
                    else:
                        frac_i = impact_coef[i] * sig[j - 1, i] * (qty / max(volume[j, i], 1e-12)) ** impact_exponent[i]
                        if side == 1:
                            price = ask * (1 + frac_i)
                            slip = (price - mid[i]) * qty
                        else:
                            price = bid * (1 - frac_i)
                            slip = (mid[i] - price) * qty
                        fee = price * qty * fee_bps[i] / 1e4
                        sign = 1.0 if side == 1 else -1.0
                        cash[v] -= sign * price * qty + fee
                        pos[i] += sign * qty
                        if pos[i] < 0.0:  # a sale of the whole position leaves 0, not -1e-18 (as bot/fast.py)
                            pos[i] = 0.0
                        totals[0] += fee
                        totals[1] += slip
                        totals[2] += price * qty
                        traded += price * qty
                        fill_costs += fee + slip
                    if record:
                        orders_i[n_orders, O_CYCLE] = k
                        orders_i[n_orders, O_ASSET] = i
                        orders_i[n_orders, O_SIDE] = side
                        orders_i[n_orders, O_LEG] = leg
                        orders_f[n_orders, O_QTY] = planned
                        orders_f[n_orders, O_FILLED] = qty
                        orders_f[n_orders, O_PRICE] = price
                        orders_f[n_orders, O_FEE] = fee
                        orders_f[n_orders, O_SLIP] = slip
                        orders_f[n_orders, O_DECISION] = mid[i]
                        n_orders += 1
                    leg += 1
        out[k, NOTIONAL] = traded
        out[k, FILL_COST] = fill_costs

        # -- book: the closing NAV, the held weights and their risk balance
        tc = 0.0
        for v in range(n_venues):
            tc += cash[v]
        nav_after = tc + np.dot(pos, mid) + 0.0
        if guarded:  # the closing snapshot is a mark too
            high = nav_after if high != high else max(high, nav_after)
        for i in range(n):
            held_w[k, i] = pos[i] * mid[i] / nav_after if nav_after > 0 else 0.0
            target_w[k, i] = w[i]
            labels[k, i] = CAPPED_FREE if lab[i] == FREE and capped[i] else lab[i]
        if record:
            for v in range(n_venues):
                rec_cash[k, v] = cash[v]
            for i in range(n):
                rec_pos[k, i] = pos[i]
        hw = held_w[k]
        any_free = False
        any_rest = False
        for i in range(n):
            held = hw[i] > 0
            free[i] = labels[k, i] == FREE and held
            rest[i] = labels[k, i] != FREE and held
            any_free = any_free or free[i]
            any_rest = any_rest or rest[i]
        _risk_contributions(hw, cov, rc)
        d_all = _dispersion_of(rc, free) if any_free else math.nan  # one venue: 'loose' is 'free'
        d_free = math.nan
        d_bound = math.nan
        if any_free:
            sel = rc[free]
            mean = _psum(sel) / sel.shape[0]
            if mean <= 0:
                d_free = math.inf
            else:
                d_free = 0.0
                for x in sel:
                    d_free = max(d_free, abs(x / mean - 1.0))
                if any_rest:
                    d_bound = 0.0
                    for x in rc[rest]:
                        d_bound = max(d_bound, abs(x / mean - 1.0))
        out[k, D_HELD] = d_free
        out[k, D_HELD_BOUND] = d_bound
        out[k, D_HELD_ALL] = d_all
        out[k, NAV_BEFORE] = nav
        out[k, NAV_AFTER] = nav_after
        out[k, CASH] = tc
        out[k, ERC_DEV] = dev
        out[k, ERC_SWEEPS] = sweeps
        out[k, INFEASIBLE] = 1.0 if infeasible else 0.0
        out[k, ERC_NUMPY] = 1.0 if used_numpy else 0.0
    return DONE, cycles, n_orders


# -- the Python side: eligibility, the arrays, the results back into the FastBacktest -----------------


@dataclass
class Compiled:
    """What ``run_cycles`` left: per-cycle columns (``out``, see the column constants), the optimizer's
    target and the held weights of every cycle, the bound labels, the event counts and, when recorded
    (the ledger mode), what the rows need."""

    out: np.ndarray
    target_w: np.ndarray
    held_w: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    totals: np.ndarray
    cash: dict[str, float]  # the book at the end
    pos: np.ndarray
    rec: dict[str, np.ndarray] | None = None
    n_orders: int = 0
    trip: np.ndarray | None = None  # the kill switch's trip (``T_*``; ``T_CYCLE`` −1: never)

    def erc_dispersion(self) -> np.ndarray:
        """RC dispersion of each cycle's erc solution on its free assets (NaN where none is free)."""
        return self.out[:, D_TARGET]


def decline_reason(run: Any) -> str | None:
    """Why ``run`` (a ``bot.fast.FastBacktest`` that has not started) cannot run compiled, or None.

    The loop implements: forecaster ``ewma`` (any half-life, ``demean``; not ``deseasonalise``), no
    ``[returns]`` model, optimizer ``erc`` (``tol``, ``max_iter``, ``budgets``) with its compiled path on,
    policy ``full`` or ``band`` (every ``band``, ``to``, ``measure``), one paper venue (so no venue budget
    and no funding), at least two assets, finite volumes, a liquidity look-back inside the history window,
    no asset held (a stress scenario's), no ``[limits]``, and the configured policy (not one passed in).
    """
    from plugins.forecasters.basic import EwmaForecaster
    from plugins.optimizers import erc
    from plugins.policies.basic import BandPolicy, FullPolicy

    if run.k != 0:
        return "the run has started (the compiled loop runs a whole run)"
    if run.held.any():
        return "assets are held where they are (a stress scenario's venue outage)"
    fc = run.forecaster
    if type(fc) is not EwmaForecaster:
        return f"forecaster {run.names['forecaster']!r}: the compiled loop implements ewma's stream only"
    if fc.cfg.deseasonalise:
        return "forecaster ewma with deseasonalise: refitted on each window, no stream to compile"
    if run.returns_model is not None:
        return f"a [returns] model ({getattr(run.returns_model, 'name', '?')}): μ is computed in Python"
    if type(run.optimizer) is not erc.ErcOptimizer:
        return f"optimizer {run.names['optimizer']!r}: the compiled loop implements erc only"
    if not erc.FAST_PATH or erc._load_kernel() is False:
        return "erc's compiled coordinate descent is off or unavailable"
    if type(run.policy) not in (FullPolicy, BandPolicy):
        return f"policy {run.names['policy']!r}: the compiled loop implements full and band only"
    if len(run.vnames) != 1:
        return (f"{len(run.vnames)} venues: venue budgets and funding need the group solver "
                "(plugins/optimizers/_groups.py) and the transfer rules, which stay in Python")  # fmt: skip
    if run.n < 2:
        return "a single asset (erc's compiled path needs two)"
    if run.limited:
        return "[limits]: the pre-trade limits are checked order by order in Python (bot/guards.py)"
    if run.hist < run.cfg.risk.liquidity_lookback_hours - 1:
        return "risk.liquidity_lookback_hours reaches before the history window"
    if not (np.isfinite(run.traded_value).all() and np.isfinite(run.volume).all()):
        return "volumes that are not finite (bounds_stage maps them to 0 first)"
    try:
        erc.budget_vector(run.assets, run.optimizer.cfg.budgets)
    except Exception as exc:  # noqa: BLE001 - the Python path raises it, worded
        return f"erc budgets: {exc}"
    return None


def _stream_anchor(run: Any, k: int) -> Any:
    """The EwmaStream the Python path would hold right after re-anchoring at cycle ``k`` (its sums
    computed by EwmaStream itself, from the same window)."""
    j = run.hist + k
    return run.forecaster.stream(run.assets, run.logret[j - run.hist : j])


def run_compiled(run: Any, record: bool = False) -> Compiled | str:
    """Run every cycle of ``run`` compiled; the results, or why the loop stopped (nothing of ``run`` is
    changed then: the Python path runs from the start)."""
    from bot.stages import PlanInputs
    from plugins.forecasters.basic import EwmaStream
    from plugins.optimizers import erc
    from plugins.policies.basic import BandPolicy

    n, cycles, hist = run.n, run.cycles, run.hist
    risk = run.cfg.risk
    first = _stream_anchor(run, 0)
    if type(first) is not EwmaStream:
        return "forecaster ewma gave no EwmaStream"
    reanchor = int(EwmaStream.REANCHOR)
    n_anchor = (cycles - 1) // reanchor + 1
    anchors_s = np.empty((n_anchor, n, n))
    anchors_m = np.empty((n_anchor, n))
    anchors_s[0], anchors_m[0] = first.s, first.m
    for a in range(1, n_anchor):
        st = _stream_anchor(run, a * reanchor)
        anchors_s[a], anchors_m[a] = st.s, st.m
    (vname,) = run.vnames
    v = run.venues[vname]
    sig = np.ascontiguousarray(run.sig[v.vol_lookback])
    o = run.optimizer.cfg
    b = erc.budget_vector(run.assets, o.budgets)
    budgets = np.empty(0) if b is None else np.ascontiguousarray(b, dtype=float)
    pol = run.policy
    if isinstance(pol, BandPolicy):
        policy, band = BAND, float(pol.cfg.band)
        band_to = TO_EDGE if pol.cfg.to == "edge" else TO_TARGET
        measure = {"weight": MEASURE_WEIGHT, "relative": MEASURE_RELATIVE, "risk": MEASURE_RISK}[pol.cfg.measure]
    else:
        policy, band, band_to, measure = FULL, 0.0, TO_TARGET, MEASURE_WEIGHT
    full = np.full(n, 1.0)
    demean = bool(run.forecaster.cfg.demean)
    cash = np.array([run.cash[vname]], dtype=float)
    pos = run.pos.astype(float).copy()
    out = np.full((cycles, N_COLUMNS), np.nan)
    target_w = np.empty((cycles, n))
    held_w = np.empty((cycles, n))
    labels = np.zeros((cycles, n), np.int8)
    counts = np.zeros((N_EVENTS, 2), np.int64)
    totals = np.zeros(3)
    rc = cycles if record else 0
    rec = {
        "w0": np.empty((rc, n)), "upper": np.empty((rc, n)), "decided": np.empty((rc, n)),
        "frac": np.empty((rc, n)), "capped": np.zeros((rc, n), np.bool_), "cash": np.empty((rc, 1)),
        "pos": np.empty((rc, n)), "orders_f": np.empty((rc * n, N_ORDER_F)),
        "orders_i": np.empty((rc * n, N_ORDER_I), np.int64),
    }  # fmt: skip
    g = run.cfg.guard

    def limit(x: float | None) -> float:
        return math.nan if x is None else float(x)

    action = {name: code for code, name in STATE_NAMES.items()}[g.action]
    t0, step = int(run.first.timestamp()), int(run.step_length.total_seconds())
    day_of = (t0 + np.arange(cycles, dtype=np.int64) * step) // 86400  # the UTC day of each cycle
    trip = np.full(N_TRIP, np.nan)
    status, k, n_orders = run_cycles(
        run.close, run.volume, run.traded_value, run.logret, sig,
        anchors_s, anchors_m, reanchor, float(first.lam), float(first.lam_w), float(first.z), demean,
        hist, int(risk.liquidity_lookback_hours), int(risk.liquidity_horizon_hours or 0), float(risk.participation),
        1.0 - risk.cash_buffer, float(risk.min_trade_weight), float(risk.cap_tolerance), run.caps.astype(float),
        run.floors.astype(float), budgets, float(o.tol), int(o.max_iter), max(erc.DEV_LIMIT, float(o.tol)),
        policy, band, band_to, measure,
        np.zeros(n, np.int64), 1, np.zeros(1, np.int64), cash, pos, np.ascontiguousarray(v.half_spread, dtype=float),
        full * v.fee_bps, full * (v.fee_bps / 1e4), full * v.impact_coef, full * v.impact_exponent, full * v.qty_step,
        full * v.min_notional, float(PlanInputs.__dataclass_fields__["cost_margin"].default),
        limit(g.max_drawdown), limit(g.max_daily_loss), limit(g.sigma_ceiling_annual), action, day_of,
        float(np.sqrt(run.ppy)), trip,
        out, target_w, held_w, labels, counts, totals,
        record, rec["w0"], rec["upper"], rec["decided"], rec["frac"], rec["capped"], rec["cash"], rec["pos"],
        rec["orders_f"], rec["orders_i"],
    )  # fmt: skip
    if status != DONE:
        when = run.first + k * run.step_length
        return f"cycle {k} ({when:%Y-%m-%dT%H:%MZ}): {REASONS.get(int(status), f'status {status}')}"
    return Compiled(out, target_w, held_w, labels, counts, totals, {vname: float(cash[0])}, pos,
                    rec if record else None, int(n_orders), trip)  # fmt: skip
