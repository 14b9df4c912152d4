"""``rwabot optimize``: the optimizers on CSV inputs, for quants who want the weights without a daemon.

Pure functions (read CSVs with pandas, call the solvers, format the answer); ``bot.cli.optimize`` is
only the argument parsing around them. CSV layout: the covariance has the asset names as its header
and as its first column; every vector file names the assets either as its header (one row of values)
or as its first column (one column of values). Vectors are aligned to the covariance's order; a
missing or unknown asset is an error that names it.

Units: ``costs`` are c_i of docs/optimizer.md, per unit of weight traded in the units of σ_p
(decimal: 10 bps = 0.001), ``mu`` is in the covariance's period. Without costs and with λμ = 0 the
plain risk-parity optimizer (``erc``) runs; otherwise ``rp_cost``.

Both are reached through the plugin registry, as the cycle reaches them, never imported: the core
names no plugin module. The CSV's covariance becomes a one-period ``Forecast``; ``rp_cost`` gets the
costs as ``costs_bps`` over a one-period horizon, so that its c_eff and λ_eff are the CSV's c and λ.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from bot.domain import Forecast
from bot.errors import RwabotError
from bot.riskmath import nearest_psd


class InputError(RwabotError):
    """A CSV given to ``rwabot optimize`` is unreadable or does not match the covariance's assets."""


@dataclass(frozen=True)
class OptimizeReport:
    """Everything ``rwabot optimize`` prints, in plain Python types (JSON-ready via ``as_dict``)."""

    solver: str
    assets: list[str]
    weights: list[float]
    current: list[float] | None
    risk_contributions: list[float]
    budgets: list[float]
    capped: list[bool]
    floored: list[bool]
    held: list[bool]
    sigma_p: float
    turnover: float
    cost: float
    iterations: int
    dev: float
    dev_rp: float
    expected_return: float | None
    repaired_psd: bool
    condition_number: float = float("nan")  # of the correlation matrix: scale-free
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def read_cov(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read an N × N covariance with asset names as header and first column (same names, any order)."""
    try:
        df = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read covariance CSV: {exc}") from exc
    cols = [str(c).strip() for c in df.columns]
    rows = [str(r).strip() for r in df.index]
    if len(cols) == 0 or sorted(cols) != sorted(rows) or len(set(cols)) != len(cols):
        raise InputError(
            f"{path}: covariance needs the same asset names as header and first column, got {cols} and {rows}"
        )
    df.columns, df.index = cols, rows
    df = df.loc[cols, cols]
    try:
        values = df.to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: covariance has non-numeric entries: {exc}") from exc
    return cols, values


def read_vector(path: str | Path, assets: list[str], what: str) -> np.ndarray:
    """Read a per-asset vector (names as header, or as first column) in the order of ``assets``."""
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read {what} CSV: {exc}") from exc
    header = [str(c).strip() for c in df.columns]
    if len(df) == 1 and any(h in assets for h in header):
        series = pd.Series(df.iloc[0].to_numpy(), index=header)
    elif df.shape[1] == 2:
        names = [str(x).strip() for x in df.iloc[:, 0]]
        values = list(df.iloc[:, 1].to_numpy())
        if header[0] in assets:  # no header line: the first row was taken as one
            names, values = [header[0], *names], [header[1], *values]
        series = pd.Series(values, index=names)
    else:
        raise InputError(f"{path}: {what} must name the assets as header (one row) or first column (one value each)")
    if series.index.duplicated().any():
        raise InputError(f"{path}: {what} names {sorted(set(series.index[series.index.duplicated()]))} twice")
    missing = [a for a in assets if a not in series.index]
    unknown = [a for a in series.index if a not in assets]
    if missing or unknown:
        raise InputError(f"{path}: {what} does not match the covariance: missing {missing}, unknown {unknown}")
    try:
        return series.loc[assets].to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {what} has non-numeric entries: {exc}") from exc


ILL_CONDITIONED = 1e8
"""A correlation matrix whose condition number passes this is near-singular: some combination of the
assets has almost no variance, so the weights among them are barely identified by Σ."""


def conditioning(assets: list[str], cov: np.ndarray) -> tuple[float, list[str]]:
    """The correlation matrix's condition number and, when it is singular or near it, a warning naming
    the pairs that move as one (|ρ| > 1 − 1e-9), which is the usual cause (a duplicated column)."""
    c = np.asarray(cov, float)
    sd = np.sqrt(np.clip(np.diag(c), 0.0, None))
    if not np.all(sd > 0) or not np.all(np.isfinite(c)):
        return float("inf"), []
    corr = 0.5 * (c + c.T) / np.outer(sd, sd)
    eig = np.linalg.eigvalsh(corr)
    cond = float(eig[-1] / eig[0]) if eig[0] > 0 else float("inf")
    if cond <= ILL_CONDITIONED:
        return cond, []
    n = len(assets)
    pairs = [f"{assets[i]}/{assets[j]} (ρ = {corr[i, j]:+.9f})" for i in range(n) for j in range(i + 1, n)
             if abs(corr[i, j]) > 1 - 1e-9]  # fmt: skip
    why = f"; assets moving as one: {', '.join(pairs)}" if pairs else ""
    return cond, [f"covariance is {'singular' if not math.isfinite(cond) else 'near-singular'} (condition number "
                  f"{cond:.3g} of the correlation matrix): the weights among collinear assets are not identified"
                  f"{why}"]  # fmt: skip


def optimize_arrays(
    assets: list[str],
    cov: np.ndarray,
    *,
    caps: np.ndarray | None = None,
    floors: np.ndarray | None = None,
    budgets: np.ndarray | None = None,
    current: np.ndarray | None = None,
    costs: np.ndarray | None = None,
    mu: np.ndarray | None = None,
    lam: float = 0.0,
    repair_psd: bool = False,
    tol: float = 1e-12,
    max_iter: int = 200,
) -> OptimizeReport:
    """Run ``erc`` (no costs, no tilt) or ``rp_cost`` and collect the report."""
    repaired = False
    if repair_psd:
        fixed = nearest_psd(cov)
        repaired = not np.allclose(fixed, cov, rtol=0, atol=1e-15 * float(np.max(np.abs(np.diag(cov)), initial=1.0)))
        cov = fixed
    n = len(assets)
    b = np.full(n, 1.0 / n) if budgets is None else np.asarray(budgets, float) / float(np.sum(budgets))
    tilted = mu is not None and lam != 0.0
    costly = costs is not None and current is not None and bool(np.any(np.asarray(costs) != 0))
    options: dict[str, Any] = {"tol": float(tol), "max_iter": int(max_iter)}
    if budgets is not None:
        options["budgets"] = {a: float(x) for a, x in zip(assets, budgets)}
    solver = "rp_cost" if tilted or costly else "erc"
    if solver == "rp_cost":
        # a one-period horizon makes rp_cost's c_eff = c and λ_eff = λ; without current weights nothing is paid
        options |= {"lam": float(lam) if tilted else 0.0, "cost_bps": 0.0, "horizon_hours": 1.0}
        if costly:
            options["costs_bps"] = {a: float(c) * 1e4 for a, c in zip(assets, np.asarray(costs, float))}
    optimizer = _optimizer(solver, options, assets)
    c_arr = np.asarray(cov, float)
    sd = np.sqrt(np.clip(np.diag(c_arr), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.nan_to_num(c_arr / np.outer(sd, sd))
    # the covariance as read (not symmetrised here): the optimizer checks and words what is wrong with it
    forecast = Forecast(tuple(assets), c_arr, sd, corr, "csv", mu=None if mu is None else np.asarray(mu, float))
    target = optimizer.optimize(
        forecast,
        upper=np.ones(n) if caps is None else np.asarray(caps, float),
        lower=np.zeros(n) if floors is None else np.asarray(floors, float),
        # no --current: a start from cash (rp_cost is then given no costs, so nothing is paid for it)
        current=np.zeros(n) if current is None else np.asarray(current, float),
    )
    cond, warns = conditioning(assets, c_arr)
    w = np.asarray(target.weights, float)
    diag = target.diagnostics
    capped = np.asarray(target.capped, bool)
    floored = np.array([a in set(diag.get("floored", ())) for a in assets])
    held = np.array([a in set(diag.get("held", ())) for a in assets])
    it, dev = int(diag.get("iterations", 0)), float(diag.get("dev", math.nan))
    dev_rp = float(diag.get("dev_rp", dev))
    cov = np.asarray(cov, float)
    sigma = math.sqrt(max(float(w @ cov @ w), 0.0))
    rc = w * (cov @ w) / sigma / sigma if sigma > 0 else np.zeros(n)
    moved = np.abs(w - current) if current is not None else np.abs(w)
    c = np.zeros(n) if costs is None or current is None else np.asarray(costs, float)
    return OptimizeReport(
        solver=solver,
        assets=list(assets),
        weights=[float(x) for x in w],
        current=None if current is None else [float(x) for x in current],
        risk_contributions=[float(x) for x in rc],
        budgets=[float(x) for x in b],
        capped=[bool(x) for x in capped],
        floored=[bool(x) for x in floored],
        held=[bool(x) for x in held],
        sigma_p=sigma,
        turnover=float(moved.sum()),
        cost=float(c @ moved),
        iterations=int(it),
        dev=float(dev),
        dev_rp=float(dev_rp),
        expected_return=None if mu is None else float(np.asarray(mu, float) @ w),
        repaired_psd=repaired,
        condition_number=cond,
        warnings=warns,
    )


def _optimizer(name: str, options: dict[str, Any], assets: list[str]) -> Any:
    """The ``name`` optimizer built from the registry with ``options``, as a config's section would be."""
    import tempfile
    from datetime import UTC, datetime

    from bot.clock import SimulatedClock
    from bot.components import ComponentContext
    from bot.plugins import Registry, make_plugin_manager

    reg = Registry(make_plugin_manager()).get("optimizer", name)
    ctx = ComponentContext(
        SimulatedClock(datetime(2000, 1, 1, tzinfo=UTC)), Path(tempfile.gettempdir()), tuple(assets), lambda e: None
    )
    return reg.build(options, ctx, where=f"rwabot optimize: optimizer {name}")


def optimize_files(
    cov: str | Path,
    *,
    caps: str | Path | None = None,
    floors: str | Path | None = None,
    budgets: str | Path | None = None,
    current: str | Path | None = None,
    costs: str | Path | None = None,
    mu: str | Path | None = None,
    lam: float = 0.0,
    repair_psd: bool = False,
    tol: float = 1e-12,
    max_iter: int = 200,
) -> OptimizeReport:
    """Read the CSVs (module docstring) and run ``optimize_arrays``."""
    assets, c = read_cov(cov)

    def vec(p: str | Path | None, what: str) -> np.ndarray | None:
        return None if p is None else read_vector(p, assets, what)

    return optimize_arrays(
        assets,
        c,
        caps=vec(caps, "caps"),
        floors=vec(floors, "floors"),
        budgets=vec(budgets, "budgets"),
        current=vec(current, "current weights"),
        costs=vec(costs, "costs"),
        mu=vec(mu, "mu"),
        lam=lam,
        repair_psd=repair_psd,
        tol=tol,
        max_iter=max_iter,
    )


def to_json(report: OptimizeReport) -> str:
    return json.dumps(report.as_dict(), indent=2)


def to_table(report: OptimizeReport) -> Table:
    """Weights, risk contributions (fractions of σ_p) and state per asset, then the totals."""
    t = Table("asset", "current", "weight", "trade", "risk contrib.", "budget", "state", title=f"{report.solver}")
    cur = report.current or [0.0] * len(report.assets)
    for i, a in enumerate(report.assets):
        state = "capped" if report.capped[i] else "floored" if report.floored[i] else "held" if report.held[i] else ""
        t.add_row(
            a,
            f"{cur[i]:.6f}" if report.current is not None else "-",
            f"{report.weights[i]:.6f}",
            f"{report.weights[i] - cur[i]:+.6f}",
            f"{report.risk_contributions[i]:.6f}",
            f"{report.budgets[i]:.6f}",
            state,
        )
    return t


def summary_lines(report: OptimizeReport) -> list[str]:
    lines = [
        f"sigma_p {report.sigma_p:.6g}  turnover {report.turnover:.6g}  cost {report.cost:.6g}",
        f"iterations {report.iterations}  dev {report.dev:.3e}  (plain risk parity dev {report.dev_rp:.3e})",
    ]
    if report.expected_return is not None:
        lines.append(f"expected return muᵀw {report.expected_return:.6g}")
    if report.repaired_psd:
        lines.append("covariance was not PSD: repaired to the nearest PSD matrix (eigenvalues clipped at 0)")
    lines.extend(f"warning: {w}" for w in report.warnings)
    return lines
