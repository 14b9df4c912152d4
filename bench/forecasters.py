"""Measure the covariance forecasters for docs/forecasting.md (not a test: minutes, not seconds).

    python bench/forecasters.py regime          # (a) simulated regime-switching market, hourly, truth known
    python bench/forecasters.py seasonal        # (a) + an intraday volatility cycle: deseasonalisation
    python bench/forecasters.py dcc constant    # (b) a DCC-GARCH process and a constant covariance
    python bench/forecasters.py sp500 --prices sp500_dataset.csv.gz   # (c) real daily prices

Every scenario is a walk-forward with a fixed warm-up (the first year for hourly data), a fixed refit
schedule and *no* tuning on the scored window: all options are the plugins' defaults unless the
scenario says otherwise. Add ``--with-lstm`` to include the LSTM (slow: it trains at every refit).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bot import evaluate as ev

HOURS = 8760


def dcc_process(t: int, n: int, seed: int, a: float = 0.04, b: float = 0.94) -> ev.Dataset:
    """A DCC-GARCH(1,1) path with its exact conditional covariance D_t R_t D_t as the truth."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n))
    c = x @ x.T + n * np.eye(n)
    d = 1 / np.sqrt(np.diag(c))
    rbar = c * np.outer(d, d)
    omega = np.full(n, 2e-6 * 0.03)
    alpha, beta = np.full(n, 0.05), np.full(n, 0.92)
    h = omega / (1 - alpha - beta)
    q = rbar.copy()
    ret = np.empty((t, n))
    truth = np.empty((t, n, n))
    for k in range(t):
        dq = 1 / np.sqrt(np.diag(q))
        r = q * np.outer(dq, dq)
        truth[k] = r * np.outer(np.sqrt(h), np.sqrt(h))
        z = np.linalg.cholesky(r) @ rng.standard_normal(n)
        ret[k] = np.sqrt(h) * z
        h = omega + alpha * ret[k] ** 2 + beta * h
        q = (1 - a - b) * rbar + a * np.outer(z, z) + b * q
    return _dataset(ret, truth, f"DCC process a={a} b={b}")


def constant_process(t: int, n: int, seed: int) -> ev.Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n))
    cov = (x @ x.T + n * np.eye(n)) * 1e-6 / n
    ret = rng.multivariate_normal(np.zeros(n), cov, size=t)
    return _dataset(ret, np.broadcast_to(cov, (t, n, n)).copy(), "constant covariance")


def _dataset(ret: np.ndarray, truth: np.ndarray, what: str) -> ev.Dataset:
    t, n = ret.shape
    start = np.datetime64("2026-01-01T00:00")
    times = start + np.arange(t + 1).astype("timedelta64[h]")
    prices = 100 * np.exp(np.vstack([np.zeros((1, n)), np.cumsum(ret, axis=0)]))
    return ev.Dataset(tuple(f"X{i}" for i in range(n)), times, prices, [what], truth, None)


def seasonal(ds: ev.Dataset, depth: float = 0.6) -> ev.Dataset:
    """Multiply each hour's return by s(h) (peak at 15 UTC, mean s² = 1); the truth scales by s(h)²."""
    hours = ev.last_hours_of(ds.times)[1:]  # close hour of each return
    prof = 1 + depth * np.cos(2 * np.pi * (np.arange(24) - 15) / 24)
    prof /= np.sqrt(np.mean(prof**2))
    s = prof[hours]
    ret = ds.returns * s[:, None]
    prices = ds.prices[0] * np.exp(np.vstack([np.zeros((1, ret.shape[1])), np.cumsum(ret, axis=0)]))
    truth = None if ds.truth is None else ds.truth * (s**2)[:, None, None]
    return ev.Dataset(ds.assets, ds.times, prices, [*ds.report, "intraday cycle added"], truth, ds.regime)


def subset(ds: ev.Dataset, names: list[str]) -> ev.Dataset:
    idx = [ds.assets.index(a) for a in names]
    truth = None if ds.truth is None else ds.truth[:, idx][:, :, idx]
    return ev.Dataset(tuple(names), ds.times, ds.prices[:, idx], ds.report, truth, ds.regime)


def run(title: str, ds: ev.Dataset, specs: list[str], opts: dict, *, freq: str, warmup: int, refit: int,
        baseline: str = "ewma") -> str:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as state:
        fcs = ev.build_forecasters(specs, opts, Path(state))
        res = ev.evaluate_dataset(ds, fcs, baseline=baseline, freq=freq, warmup=warmup, refit_every=refit)
    n_scored = res.scores[0].periods
    head = (f"### {title}\n\n{len(ds.assets)} assets, {ds.returns.shape[0]} returns, warm-up {warmup}, "
            f"refit every {refit}, {n_scored} scored periods; {time.perf_counter() - t0:.0f} s wall.\n")
    return head + "\n" + res.table + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scenarios", nargs="+")
    p.add_argument("--years", type=float, default=3.0)
    p.add_argument("--prices", default=None)
    p.add_argument("--with-lstm", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    base = ["sample", "ewma", "ledoit_wolf", "dcc"]
    lstm = ["lstm"] if args.with_lstm else []
    opts: dict = {}
    out: list[str] = []
    done = 0
    h = int(args.years * HOURS)
    for sc in args.scenarios:
        if sc in ("regime", "seasonal"):
            ds = ev.simulated_dataset(h, seed=7)
            if sc == "regime":
                out.append(run("(a) regime-switching market, all 8 assets", ds, base + lstm, opts,
                               freq="1h", warmup=HOURS, refit=720))
                out.append(run("(a) regime-switching market, the 5 unsmoothed assets (SPY TLT GLD VNQ PAXG)",
                               subset(ds, ["SPY", "TLT", "GLD", "VNQ", "PAXG"]), base + lstm, opts,
                               freq="1h", warmup=HOURS, refit=720))
            else:
                ds = seasonal(subset(ds, ["SPY", "TLT", "GLD", "VNQ", "PAXG"]))
                specs = ["ewma", "dcc", "dcc_hod=dcc"] + (["lstm", "lstm_hod=lstm"] if lstm else [])
                o = {"dcc_hod": {"deseasonalise": True}, "lstm_hod": {"deseasonalise": True}}
                out.append(run("(a) regime market × intraday volatility cycle: hour-of-day deseasonalisation",
                               ds, specs, o, freq="1h", warmup=HOURS, refit=720))
        elif sc == "dcc":
            out.append(run("(b) DCC-GARCH process (a=0.04, b=0.94), 6 assets, hourly", dcc_process(h, 6, 1),
                           base + lstm, opts, freq="1h", warmup=HOURS, refit=720))
        elif sc == "constant":
            out.append(run("(b) constant covariance, 6 assets", constant_process(h, 6, 2), base + lstm, opts,
                           freq="1h", warmup=HOURS, refit=720))
        elif sc == "sp500":
            if not args.prices:
                sys.exit("sp500 needs --prices (skfolio's sp500_dataset.csv.gz)")
            ds = ev.load_prices_csv(args.prices, "1d")
            keep = ds.times >= np.datetime64("2010-01-01")
            ds = ev.Dataset(ds.assets, ds.times[keep], ds.prices[keep], ds.report)
            out.append(run("(c) S&P 500 constituents (skfolio), daily 2010-2022", ds, base + lstm,
                           {"dcc": {"min_observations": 200}}, freq="1d", warmup=756, refit=63))
        else:
            sys.exit(f"unknown scenario {sc}")
        print("\n".join(out[done:]), flush=True)
        done = len(out)
        if args.out:
            Path(args.out).write_text("\n".join(out))
    stamp = datetime.now(UTC).isoformat(timespec="minutes")
    text = f"<!-- bench/forecasters.py {' '.join(sys.argv[1:])} at {stamp} -->\n\n" + "\n".join(out)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
