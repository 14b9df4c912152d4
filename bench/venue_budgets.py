"""The default two-venue book's fast backtest, with the venue-budget solver compiled and in numpy.

The embedded book (config/paper-offline.toml: 8 assets on a CEX account and a wallet, cash moving
between them) binds a venue budget nearly every hour, so its ``--research`` run is mostly the group
solver (plugins/optimizers/_groups.py): erc under Σ_{i∈v} w_i ≤ B_v. The solver's active-set rounds
and Newton block run compiled (plugins/optimizers/_groups_block.py) where numba is there, else in numpy
(``_groups.FAST_BLOCK``). This runs the same research backtest both ways in one process on the same
prices and prints wall time, ms/cycle, the group solves and their mean cost, and whether the two runs
end on the same book. No peer library solves risk budgeting under group bounds; the answers are checked
against cvxpy in tests/plugins/test_group_bounds.py.

    python bench/venue_budgets.py                 # 2,000 hourly cycles
    python bench/venue_budgets.py --hours 8760
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import plugins.optimizers._groups as groups  # noqa: E402
from bot.config import parse_config, read_toml  # noqa: E402
from bot.fast import run_fast_backtest  # noqa: E402


def run(hours: int, compiled: bool, d: Path) -> dict[str, Any]:
    groups.FAST_BLOCK = compiled
    calls = {"n": 0, "s": 0.0}
    solve = groups.solve_group_risk_budget

    def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return solve(*a, **k)
        finally:
            calls["n"] += 1
            calls["s"] += time.perf_counter() - t

    groups.solve_group_risk_budget = timed
    try:
        data = read_toml("config/paper-offline.toml")
        data["bot"]["ledger"] = str(d / "l.sqlite")
        cfg = parse_config(data, "config/paper-offline.toml")
        t = time.perf_counter()
        s = run_fast_backtest(cfg, hours, research=True)
        wall = time.perf_counter() - t
    finally:
        groups.solve_group_risk_budget = solve
    return {"wall": wall, "cycles": s.cycles, "end_nav": s.end_nav, "transfers": s.transfers,
            "solves": calls["n"], "solve_s": calls["s"], "rc": s.rc_dispersion_held_median}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=int, default=2000)
    args = ap.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; load average "
          f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())} at the start")  # fmt: skip
    print(f"job: config/paper-offline.toml (8 assets, 2 venues, funding), rwabot backtest --research, {args.hours:,} h")
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        warm.mkdir()
        run(200, True, warm)  # loads the kernels (or compiles them into numba's cache) outside the clock
        res = {}
        for compiled in (True, False):
            d = Path(tmp) / str(compiled)
            d.mkdir()
            res[compiled] = run(args.hours, compiled, d)
    head = f"{'group solver':<26}{'whole run (s)':>14}{'ms/cycle':>10}{'solves':>8}{'ms/solve':>10}{'solver share':>14}"
    print("\n" + head)
    for compiled, r in res.items():
        name = "compiled (numba)" if compiled else "numpy"
        print(f"{name:<26}{r['wall']:>14.2f}{r['wall'] / r['cycles'] * 1e3:>10.3f}{r['solves']:>8}"
              f"{r['solve_s'] / max(r['solves'], 1) * 1e3:>10.3f}{r['solve_s'] / r['wall']:>14.1%}")  # fmt: skip
    a, b = res[True], res[False]
    print(f"\nnumpy / compiled: whole run {b['wall'] / a['wall']:.2f}x, per solve "
          f"{(b['solve_s'] / b['solves']) / (a['solve_s'] / a['solves']):.2f}x")
    print(f"same book: end NAV {a['end_nav']:,.2f} vs {b['end_nav']:,.2f} (rel diff "
          f"{abs(a['end_nav'] / b['end_nav'] - 1):.1e}); transfers {a['transfers']} vs {b['transfers']}; "
          f"held RC dispersion median {a['rc']:.4f} vs {b['rc']:.4f}")


if __name__ == "__main__":
    main()
