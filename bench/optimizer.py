"""Optimizer speed and accuracy against the peers, in one process on the same inputs (docs/optimizer.md).

    python bench/optimizer.py                   # n = 10 100 500 1000, 1 BLAS thread
    python bench/optimizer.py --sizes 10 100 --reps 5 --threads 2

Scenarios per n: ``none`` (no bounds), ``caps`` (caps at 1.3/n: a good share of assets bind) and
``caps+costs`` (same caps, w0 random, costs 5 bps of weight on a daily-vol scale: rp_cost). Peers:
riskparityportfolio's C++ coordinate descent (tol 1e-12, uncapped only: it has no bounds), skfolio
RiskBudgeting (variance, ``max_weights`` for caps), riskfolio-lib rp_optimization (uncapped; n ≤ 500,
its conic model takes seconds beyond). dev = max over *our* free assets of |RC_i/mean RC − 1|, so a
peer's dev says how far its capped portfolio is from risk parity under caps. Times are medians of
``--reps`` wall-clock runs (fewer for slow peers); ratio = peer ms / our ms. ``iters`` is erc's coordinate
sweeps (Newton steps when its numpy fallback answered; for caps+costs, plus rp_cost's Newton steps).
Our times include input validation, and ``psd ms`` is the part of it that is the O(n³) Cholesky test of
Σ (riskparityportfolio checks nothing). The first solve in the process loads (or, with an empty numba
cache, compiles) the compiled kernel; its time is printed first and kept out of the medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from plugins.optimizers.cost_aware import solve_cost_aware
from plugins.optimizers.erc import solve_risk_budget


def make_cov(n: int, seed: int = 0) -> np.ndarray:
    """Daily-scale factor-model Σ: n/10 positive factors, idiosyncratic noise, vols 0.5–3 %."""
    rng = np.random.default_rng(seed)
    f = np.abs(rng.normal(size=(n, max(3, n // 10))))
    c = f @ f.T + np.diag(rng.uniform(0.5, 2.0, n) * max(3, n // 10))
    s = np.sqrt(np.diag(c))
    vol = rng.uniform(0.005, 0.03, n)
    return c / np.outer(s, s) * np.outer(vol, vol)


def returns_with_cov(cov: np.ndarray, seed: int = 1) -> np.ndarray:
    n = len(cov)
    z = np.random.default_rng(seed).standard_normal((max(2 * n, 300), n))
    z -= z.mean(axis=0)
    lz = np.linalg.cholesky(np.cov(z, rowvar=False))
    return z @ np.linalg.inv(lz).T @ np.linalg.cholesky(cov).T


def timed(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    out, ts = None, []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3, out


def dev(w: np.ndarray, cov: np.ndarray, mask: np.ndarray) -> float:
    rc = (w * (cov @ w))[mask]
    return float(np.max(np.abs(rc / rc.mean() - 1.0)))


def peers() -> dict[str, Callable[..., np.ndarray]]:
    out: dict[str, Callable[..., np.ndarray]] = {}
    try:
        from riskparityportfolio.vanilla import design

        out["rpp"] = lambda cov, x, caps: None if caps is not None else design(cov, np.full(len(cov), 1 / len(cov)),
                                                                                1e-12, 10000)
    except ImportError:
        print("riskparityportfolio not installed: skipped")
    try:
        from skfolio import RiskMeasure
        from skfolio.optimization import RiskBudgeting

        def sk(cov: np.ndarray, x: np.ndarray, caps: np.ndarray | None) -> np.ndarray:
            kw = {} if caps is None else {"max_weights": caps}
            return np.asarray(RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, **kw).fit(x).weights_)

        out["skfolio"] = sk
    except ImportError:
        print("skfolio not installed: skipped")
    try:
        import riskfolio

        def rf(cov: np.ndarray, x: np.ndarray, caps: np.ndarray | None) -> np.ndarray | None:
            if caps is not None or len(cov) > 500:
                return None
            port = riskfolio.Portfolio(returns=pd.DataFrame(x))
            port.assets_stats(method_mu="hist", method_cov="hist")
            return port.rp_optimization(model="Classic", rm="MV", rf=0, b=None, hist=True).to_numpy().ravel()

        out["riskfolio"] = rf
    except ImportError:
        print("riskfolio-lib not installed: skipped")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500, 1000])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads for everyone")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    except OSError:
        pass
    print(f"machine: {platform.platform()}; CPU {cpu}; {os.cpu_count()} cores; python {platform.python_version()}; "
          f"numpy {np.__version__}; BLAS threads {args.threads}")
    others = peers()
    rows = []
    with threadpool_limits(args.threads):
        t0 = time.perf_counter()
        solve_risk_budget(make_cov(3))
        print(f"first solve in this process (numba import + compile or cache load): {time.perf_counter() - t0:.2f} s")
        from plugins.optimizers import erc

        print(f"compiled kernel in use: {bool(erc._kernel)}")
        for n in args.sizes:
            cov = make_cov(n)
            x = returns_with_cov(cov)
            free_w = solve_risk_budget(cov).weights
            caps = np.full(n, max(1.3 / n, float(np.quantile(free_w, 0.6))))
            rng = np.random.default_rng(n)
            w0 = rng.dirichlet(np.full(n, 2.0))
            costs = np.full(n, 5e-4) * float(np.sqrt(np.mean(np.diag(cov))))
            reps = args.reps if n <= 100 else max(3, args.reps // 2)
            for scen in ["none", "caps", "caps+costs"]:
                cap = None if scen == "none" else caps
                if scen == "caps+costs":
                    run = lambda cap=cap, cov=cov, w0=w0, costs=costs: solve_cost_aware(  # noqa: E731
                        cov, None, cap, None, w0=w0, costs=costs
                    )
                    ms, r = timed(run, reps)
                    mask = ~(r.capped | r.floored)
                else:
                    ms, r = timed(lambda cap=cap, cov=cov: solve_risk_budget(cov, None, cap), reps)
                    mask = ~(r.capped | r.floored)
                row = {"n": n, "scenario": scen, "ours ms": ms, "ours dev": dev(r.weights, cov, mask),
                       "iters": r.iterations, "capped": int(r.capped.sum())}
                if scen == "none" and erc._kernel:
                    from plugins.optimizers import _ccd

                    row["psd ms"], _ = timed(lambda cov=cov: _ccd._positive_definite(cov, 0.0), reps)
                if scen != "caps+costs":
                    for name, fn in others.items():
                        slow = name != "rpp"
                        call = lambda fn=fn, cap=cap, cov=cov, x=x: fn(cov, x, cap)  # noqa: E731
                        pm, pw = timed(call, 1 if slow and n >= 500 else reps)
                        if pw is None:
                            continue
                        row[f"{name} ms"] = pm
                        row[f"{name} dev"] = dev(np.asarray(pw), cov, mask)
                        row[f"{name}/ours"] = pm / ms
                else:
                    row["turnover"] = r.turnover
                rows.append(row)
                print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
    df = pd.DataFrame(rows)
    print()
    print(df.to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else df.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
