"""Sweeps: a grid of research-mode stress runs (seeds × scenarios × parameters × books) on Dask.

Why Dask and not a process pool of our own: a grid of a few hundred independent backtests is exactly what
``dask.distributed`` schedules, and the same code then runs on a laptop (a ``LocalCluster``), on a cluster
(a scheduler address) or with no cluster at all (Dask's threaded scheduler, for a quick look or where
processes cannot be spawned). Each task is one ``bot.stress.run_scenario`` call, independent of every
other: it builds its own data source, backtest and book, and returns one row (and, for the seeds asked
for, the NAV series). Results come back in the grid's order whatever order they finished in, and a task's
result depends only on its inputs, so a sweep gives the same table on 1, 2 or 200 workers.

Parameters are dotted paths into the config (``risk.participation``) or one of the short names in
``ALIASES``; ``forecaster=<name>`` sets the forecaster section (``{"plugin": name}``: its own defaults,
the strategy's other components unchanged).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.errors import ConfigError
from bot.shocks import Scenario
from bot.stress import BOOKS, RunResult, run_scenario

ALIASES: dict[str, str] = {
    "half_life": "strategy.options.half_life_hours",
    "band": "strategy.options.band",
    "measure": "strategy.options.measure",
    "participation": "risk.participation",
    "forecaster": "forecaster",
}


def parse_param(spec: str) -> tuple[str, list[Any]]:
    """``name=v1,v2,…`` → (name, values); each value is read as a TOML literal (24, 0.05, true, "x") and
    as a bare string otherwise (ewma)."""
    name, eq, rest = spec.partition("=")
    name = name.strip()
    if not eq or not name or not rest.strip():
        raise ConfigError(f"--param {spec!r}: write name=value[,value…], e.g. half_life=24,72")
    values: list[Any] = []
    for raw in rest.split(","):
        raw = raw.strip()
        try:
            values.append(tomllib.loads(f"v = {raw}")["v"])
        except tomllib.TOMLDecodeError:
            values.append(raw)
    return name, values


def apply_params(data: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the config ``data`` with each parameter set (dotted paths; ``ALIASES`` resolved)."""
    out = copy.deepcopy(data)
    for name, value in params.items():
        path = ALIASES.get(name, name)
        if path == "forecaster":
            out["forecaster"] = {"plugin": str(value), "options": {}}
            continue
        keys = path.split(".")
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--param {name}: {path} goes through {k!r}, which is not a table")
            node = nxt
        node[keys[-1]] = value
    return out


@dataclass(frozen=True)
class Task:
    """One grid point: everything ``run_task`` needs, as plain data (it travels to a worker by pickle)."""

    config: dict[str, Any]
    source: str | None
    scenario: str
    scenario_data: dict[str, Any]
    seed: int
    book: str
    hours: int
    start: datetime | None = None
    params: dict[str, Any] = field(default_factory=dict)
    mark_hour: float | None = None
    keep_series: bool = False
    bootstrap_draws: int = 1000


def run_task(task: Task) -> RunResult:
    """Run one grid point (in a Dask worker, a thread, or here)."""
    cfg = Config.model_validate(task.config, strict=False)
    cfg._source = task.source
    scenario = Scenario.model_validate(task.scenario_data)
    result = run_scenario(cfg, scenario, seed=task.seed, hours=task.hours, book=BOOKS[task.book], start=task.start,
                          mark_hour=task.mark_hour, keep_series=task.keep_series, name=task.scenario,
                          bootstrap_draws=task.bootstrap_draws)  # fmt: skip
    for k, v in task.params.items():
        result.row[f"param.{k}"] = v
    return result


def make_grid(
    cfg: Config,
    scenarios: Sequence[tuple[str, Scenario]],
    seeds: Sequence[int],
    *,
    hours: int,
    params: Mapping[str, Sequence[Any]] | None = None,
    books: Sequence[str] = ("strategy",),
    start: datetime | None = None,
    mark_hour: float | None = None,
    series_seeds: Sequence[int] = (),
    bootstrap_draws: int = 1000,
) -> list[Task]:
    """The tasks of the grid, each distinct config validated (sections and every component's options)
    before anything runs, so a typo stops the sweep here and not in a worker an hour later."""
    from bot.clock import SimulatedClock
    from bot.components import ComponentContext
    from bot.cycle import resolve_components
    from bot.plugins import Registry
    from bot.stress import plugin_manager

    unknown = [b for b in books if b not in BOOKS]
    if unknown:
        raise ConfigError(f"--books: unknown book(s) {unknown} (known: {', '.join(BOOKS)})")
    if mark_hour is None:  # every scenario, the control too, is read after the same hour: the first shock's
        from bot.stress import anchor_of

        anchor = anchor_of(cfg, start)
        starts = [sh.window(anchor)[0] for _, sc in scenarios for sh in sc.shocks]
        mark_hour = min(starts) if starts else None
    names = list((params or {}).keys())
    points = [dict(zip(names, combo)) for combo in itertools.product(*[(params or {})[n] for n in names])] or [{}]
    base = cfg.model_dump()
    registry = Registry(plugin_manager())
    tasks: list[Task] = []
    for point in points:
        data = apply_params(base, point)
        label = ", ".join(f"{k}={v}" for k, v in point.items())
        try:
            c = Config.model_validate(data, strict=False)
        except Exception as exc:  # pydantic's ValidationError: name the grid point
            raise ConfigError(f"grid point {label or '(none)'}: {exc}") from None
        for b in books:
            cb = c.with_overrides(**dict(BOOKS[b].sections))
            ctx = ComponentContext(SimulatedClock(cb.clock.start or datetime.now().astimezone()),
                                   Path("."), cb.asset_names, lambda e: None)  # fmt: skip
            resolve_components(cb, registry, ctx, source=f"grid point {label or '(none)'}, book {b}")
        for (sname, sc), seed, b in itertools.product(scenarios, seeds, books):
            tasks.append(Task(data, cfg.source, sname, sc.model_dump(), int(seed), b, hours, start, dict(point),
                              mark_hour, seed in series_seeds, bootstrap_draws))  # fmt: skip
    return tasks


@dataclass(frozen=True)
class Executed:
    results: list[RunResult]
    mode: str  # "local cluster", "cluster at <address>", "threads"
    workers: int
    wall_s: float  # the tasks, from the first submitted to the last gathered (no cluster start-up)
    startup_s: float  # starting (or connecting to) the cluster


def execute(
    tasks: Sequence[Task],
    *,
    workers: int = 2,
    scheduler: str | None = None,
    threads: bool = False,
    on_done: Callable[[int, int], None] | None = None,
    fn: Callable[[Task], RunResult] = run_task,
) -> Executed:
    """Run ``tasks`` on Dask: a ``LocalCluster`` of ``workers`` single-threaded worker processes (default),
    the cluster at ``scheduler`` (an address such as tcp://10.0.0.5:8786), or, with ``threads``, Dask's
    threaded scheduler in this process. ``on_done(done, total)`` is called as tasks finish."""
    total = len(tasks)
    if threads and scheduler:
        raise ConfigError("--threads runs without a cluster: give it or --scheduler, not both")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if threads:
        import threading

        import dask

        lock = threading.Lock()
        done = [0]

        def counted(t: Task) -> RunResult:
            r = fn(t)
            with lock:
                done[0] += 1
                if on_done is not None:
                    on_done(done[0], total)
            return r

        t0 = time.perf_counter()
        out = dask.compute(*[dask.delayed(counted, pure=False)(t) for t in tasks], scheduler="threads",
                           num_workers=workers)  # fmt: skip
        return Executed(list(out), "threads", workers, time.perf_counter() - t0, 0.0)

    from dask.distributed import Client, LocalCluster, as_completed

    # the scheduler and nannies log every worker's start and stop at INFO: a sweep's output is its table
    logging.getLogger("distributed").setLevel(logging.WARNING)
    s0 = time.perf_counter()
    cluster = None
    if scheduler:
        client = Client(scheduler)
        mode = f"cluster at {scheduler}"
        n = len(client.scheduler_info().get("workers", {}))
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)  # fmt: skip
        client = Client(cluster)
        mode, n = "local cluster", workers
    try:
        client.wait_for_workers(1 if scheduler else workers, timeout=120)
        startup = time.perf_counter() - s0
        t0 = time.perf_counter()
        futures = client.map(fn, list(tasks), pure=False)
        done = 0
        for _ in as_completed(futures):
            done += 1
            if on_done is not None:
                on_done(done, total)
        results = client.gather(futures)
        wall = time.perf_counter() - t0
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return Executed(list(results), mode, n, wall, startup)


def write_results(results: Sequence[RunResult], out: Path) -> dict[str, Path]:
    """``results.parquet`` and ``results.csv`` (one row per task), and ``series.parquet`` (long: one row per
    kept run and time) when some run kept its NAV series."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([r.row for r in results])
    paths = {"parquet": out / "results.parquet", "csv": out / "results.csv"}
    df.to_parquet(paths["parquet"], index=False)
    df.to_csv(paths["csv"], index=False)
    kept = [r for r in results if r.nav is not None and r.times is not None]
    if kept:
        parts = []
        for r in kept:
            params = {k[6:]: v for k, v in r.row.items() if k.startswith("param.")}
            parts.append(pd.DataFrame({"scenario": r.row["scenario"], "seed": r.row["seed"], "book": r.row["book"],
                                       "params": json.dumps(params, sort_keys=True, default=str),
                                       "time": pd.to_datetime(r.times, utc=True), "nav": r.nav}))  # fmt: skip
        paths["series"] = out / "series.parquet"
        pd.concat(parts, ignore_index=True).to_parquet(paths["series"], index=False)
    return paths


def param_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The grid's parameter columns (``param.<name>``), in the order they appear."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k.startswith("param."):
                seen[k] = None
    return list(seen)


__all__ = ["ALIASES", "Executed", "Task", "apply_params", "execute", "make_grid", "param_columns", "parse_param",
           "run_task", "write_results"]  # fmt: skip
