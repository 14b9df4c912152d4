"""Forecaster streams (what the fast backtest uses) against refitting on the rolling window, ms per hour.

For each forecaster that offers ``stream`` (ewma, ledoit_wolf, dcc) this times, on the same simulated
returns (20 assets, a 720-hour window, as ``risk.history_hours``): ``stream.update`` + ``validate`` per
hour, against ``forecast`` on the rolled window + ``validate`` per hour (what bot/fast.py does without a
stream). DCC refits its parameters every ``refit_every_hours`` (168) either way, so its line also shows
the hour without a refit (the filter alone) and the time of one refit. Printed, not asserted.

    python bench/forecasters_stream.py [--assets 20] [--window 720] [--hours 500] [--dcc-hours 336]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from plugins.forecasters.basic import EwmaConfig, EwmaForecaster
from plugins.forecasters.classic import DccConfig, DccForecaster, LedoitWolfConfig, LedoitWolfForecaster


def returns(t: int, n: int, seed: int = 0) -> np.ndarray:
    """One factor plus noise, GARCH(1,1)-like volatility per asset, Student-t shocks: hourly-sized returns."""
    rng = np.random.default_rng(seed)
    load = rng.uniform(0.3, 0.9, n)
    h = np.full(n, 1e-5)
    out = np.empty((t, n))
    for k in range(t):
        f = rng.standard_t(5)
        z = (load * f + np.sqrt(1 - load**2) * rng.standard_t(5, n)) / np.sqrt(5 / 3)
        out[k] = np.sqrt(h) * z
        h = 5e-7 + 0.05 * out[k] ** 2 + 0.9 * h
    return out


def time_both(make, names, r: np.ndarray, w: int, hours: int) -> tuple[float, float, list[float], list[float]]:
    """(ms/hour streamed, ms/hour refitted, per-hour stream times, per-hour refit times) over ``hours`` hours,
    each path on a fresh forecaster from ``make`` (so both start with a fit and refit on the same hours)."""
    t0 = time.perf_counter()
    s = make().stream(names, r[:w])
    s.forecast().validate()
    ts, tr = [time.perf_counter() - t0], []
    for k in range(w, w + hours):
        t = time.perf_counter()
        s.update(r[k]).validate()
        ts.append(time.perf_counter() - t)
    fc = make()
    for k in range(w - 1, w + hours):
        t = time.perf_counter()
        fc.forecast(names, r[k - w + 1 : k + 1]).validate()
        tr.append(time.perf_counter() - t)
    return 1e3 * sum(ts) / len(ts), 1e3 * sum(tr) / len(tr), ts, tr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=int, default=20)
    ap.add_argument("--window", type=int, default=720)
    ap.add_argument("--hours", type=int, default=500, help="hours timed for ewma and ledoit_wolf")
    ap.add_argument("--dcc-hours", type=int, default=336, help="hours timed for dcc (2 refit periods)")
    a = ap.parse_args()
    n, w = a.assets, a.window
    r = returns(w + max(a.hours, a.dcc_hours) + 1, n)
    names = [f"a{i}" for i in range(n)]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"python {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"{n} assets, window {w} h; ms per hour (update or refit, + Forecast.validate)")
    print(f"  {'forecaster':<34}{'stream':>10}{'refit':>10}{'refit/stream':>14}")
    for label, make, hours in [
        ("ewma (72 h)", lambda: EwmaForecaster(EwmaConfig()), a.hours),
        ("ledoit_wolf", lambda: LedoitWolfForecaster(LedoitWolfConfig()), a.hours),
        ("dcc (refit_every_hours 168)", lambda: DccForecaster(DccConfig()), a.dcc_hours),
    ]:
        make().forecast(names, r[:w])  # imports, warm caches
        ms_s, ms_r, ts, tr = time_both(make, names, r, w, hours)
        print(f"  {label:<34}{ms_s:>10.3f}{ms_r:>10.3f}{ms_r / ms_s:>13.1f}x")
        if label.startswith("dcc"):
            every = DccConfig().refit_every_hours
            fits = [i for i in range(len(ts)) if i % every == 0]
            s_f = 1e3 * np.median([x for i, x in enumerate(ts) if i not in fits])
            r_f = 1e3 * np.median([x for i, x in enumerate(tr) if i not in fits])
            print(f"  {'  dcc, an hour without a refit':<34}{s_f:>10.3f}{r_f:>10.3f}{r_f / s_f:>13.1f}x  (median)")
            fit_s, fit_r = np.mean([ts[i] for i in fits]), np.mean([tr[i] for i in fits])
            print(f"  {'  dcc, one refit (s)':<34}{fit_s:>10.2f}{fit_r:>10.2f}")
            long_s, long_r = 1e3 * fit_s / every + s_f, 1e3 * fit_r / every + r_f
            print(f"  {f'  dcc, long run (refit/{every} + filter)':<34}{long_s:>10.3f}{long_r:>10.3f}"
                  f"{long_r / long_s:>13.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
