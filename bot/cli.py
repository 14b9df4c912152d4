"""The ``rwabot`` command line: run, backtest, status, plugins, evaluate, optimize, and plugins' commands.

Plugins add commands through the ``rwabot_register_commands`` hook (``rwabot devnet`` is the evm
plugin's); they are loaded only when a command that is not the core's is asked for, so ``rwabot run``
does not import every plugin twice. ``fail``, ``setup_logging`` and ``console`` are for their use.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import numpy as np
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from bot.config import Config, load_config
from bot.errors import PluginError, RwabotError


def plugin_commands(reserved: set[str], pm: Any = None) -> dict[str, Any]:
    """The commands plugins add through ``rwabot_register_commands``, by name.

    Each plugin gets a ``typer.Typer`` of its own, so that a name two plugins (or a plugin and the core)
    both claim is refused naming both, instead of one silently replacing the other.
    """
    from bot.plugins import make_plugin_manager

    pm = pm if pm is not None else make_plugin_manager()
    found: dict[str, tuple[str, Any]] = {}
    for impl in pm.hook.rwabot_register_commands.get_hookimpls():
        owner = pm.get_name(impl.plugin) or repr(impl.plugin)
        sub = typer.Typer(add_completion=False)
        impl.function(cli=sub)
        if not sub.registered_commands and not sub.registered_groups:
            continue
        for name, cmd in typer.main.get_group(sub).commands.items():
            if name in reserved:
                raise PluginError(f"command {name!r} of plugin {owner} is a core rwabot command")
            if name in found:
                raise PluginError(f"command {name!r} registered twice: by {found[name][0]} and by {owner}")
            found[name] = (owner, cmd)
    return {name: cmd for name, (_, cmd) in found.items()}


class CommandGroup(TyperGroup):
    """The core's commands, then the plugins' (``plugin_commands``), loaded the first time one is needed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugin_commands: dict[str, Any] | None = None

    def _plugins(self) -> dict[str, Any]:
        if self._plugin_commands is None:
            self._plugin_commands = plugin_commands(set(self.commands))
        return self._plugin_commands

    def list_commands(self, ctx: Any) -> list[str]:
        core = list(super().list_commands(ctx))
        try:
            return [*core, *sorted(self._plugins())]
        except RwabotError as exc:  # help must still show the core's commands
            err.print(f"[yellow]warning:[/] plugin commands unavailable: {exc}")
            return core

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        try:
            return self._plugins().get(cmd_name)
        except RwabotError as exc:
            fail(exc)


app = typer.Typer(
    cls=CommandGroup, add_completion=False, no_args_is_help=True, help="Dynamic risk parity for real-world assets."
)
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="TOML config file")]
LedgerOpt = Annotated[str | None, typer.Option("--ledger", help="override bot.ledger (SQLite file)")]


def setup_logging(verbose: bool, quiet_level: int = logging.WARNING) -> None:
    """Log to stderr through rich: INFO with ``--verbose``, else ``quiet_level`` and above."""
    logging.basicConfig(
        level=logging.INFO if verbose else quiet_level,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _load(path: Path, ledger: str | None, **overrides: Any) -> Config:
    cfg = load_config(path)
    bot: dict[str, Any] = {}
    if ledger:
        bot["ledger"] = ledger
    sections = {k: v for k, v in overrides.items() if v}
    if bot:
        sections["bot"] = bot
    return cfg.with_overrides(**sections) if sections else cfg


def fail(exc: Exception) -> NoReturn:
    """Print ``error: …`` on stderr and exit 2: how every command, plugin commands too, reports a failure."""
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


def exit_failing(reason: str) -> NoReturn:
    """Print ``error: …`` on one line on stderr and exit 1: the cycle ran and failed (``bot.outcome``)."""
    err.print(f"[bold red]error:[/] {escape(reason)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _pct(x: float) -> str:
    return f"{x:7.2%}"


def print_report(report: Any, detail: bool = False) -> None:
    line = (
        f"[bold]{report.key}[/] {report.status:8} NAV {report.nav:,.2f}  σ_p {report.sigma_p_annual:.2%}/yr  "
        f"orders {report.orders} fills {report.fills}  fees {report.fees:,.2f}  slippage {report.slippage:,.2f}"
    )
    if getattr(report, "in_flight", 0):
        line += f"  [yellow]in flight {report.in_flight}[/]"
    if report.message:
        line += f"  [dim]{report.message[:160]}[/]"
    console.print(line, highlight=False)
    if detail and len(report.assets):
        t = Table("asset", "current", "target", "decided", title=f"cycle {report.key}")
        for a, c, tg, d in zip(report.assets, report.current, report.target, report.decided):
            t.add_row(a, _pct(c), _pct(tg), _pct(d))
        t.add_row(
            "cash",
            _pct(1 - float(np.sum(report.current))),
            _pct(1 - float(np.sum(report.target))),
            _pct(1 - float(np.sum(report.decided))),
        )
        console.print(t)


@app.command()
def run(
    config: ConfigOpt = Path("config/paper.toml"),
    once: Annotated[bool, typer.Option(help="run one cycle now and exit")] = False,
    ledger: LedgerOpt = None,
    hours: Annotated[
        float | None, typer.Option(help="simulated clock only: stop after this many simulated hours")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(help="simulated clock only: simulated seconds per real second (0 = as fast as possible)"),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help='trade real money: needed, with bot.mode = "live", for a live config')
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the daemon: a cycle every hour, the risk monitor every few minutes, until SIGINT/SIGTERM."""
    from bot.cycle import Engine
    from bot.daemon import Daemon
    from bot.ledger import DaemonLock
    from bot.outcome import cycle_failure

    setup_logging(verbose)
    try:
        clock_over: dict[str, Any] = {}
        if speed is not None:
            clock_over["speed"] = speed
        cfg = _load(config, ledger, clock=clock_over)
        if hours is not None and cfg.clock.kind != "simulated":
            raise RwabotError('--hours needs a simulated clock (clock.kind = "simulated")')
        check_live_flag(cfg, config, live)
        # the lock comes before the engine: a refused second daemon must build nothing (no second
        # local chain, no venue session), and it is released on every way out
        lock = DaemonLock(cfg.bot.ledger)
        try:
            lock.acquire()
            engine = Engine(cfg)
            if once:
                try:
                    with engine.clock.hold():  # on a simulated clock the cycle takes no simulated time
                        report = engine.run_cycle()
                    print_report(report, detail=True)
                    failure = cycle_failure(report, engine.ledger, engine.c.venues)
                finally:
                    engine.close()
                if failure:  # the cycle failed, or every venue did: scripts and cron must not see success
                    exit_failing(failure)
                return
            until = engine.clock.now() + timedelta(hours=hours) if hours is not None else None
            console.print(
                f"rwabot {cfg.bot.mode} daemon on {cfg.clock.kind} clock, ledger {cfg.bot.ledger}; "
                f"cycles at minute {cfg.schedule.cycle_minute}, monitor every {cfg.schedule.monitor_minutes} min"
                + ("" if until else "; Ctrl-C to stop"),
                highlight=False,
            )
            shown = {"n": 0}

            def on_cycle(report: Any) -> None:
                print_report(report, detail=shown["n"] == 0)
                shown["n"] += 1

            if engine.kill.state != "active":
                row = engine.kill.row
                assert row is not None
                err.print(f"[bold red]kill switch:[/] {row.state} since {row.time.isoformat()} ({row.cause}: "
                          f"{escape(row.reason)}); no orders until `rwabot resume --reason ...`",
                          highlight=False)  # fmt: skip
            ops = None
            if cfg.ops.port is not None:
                from bot.ops import OpsServer

                alerts = engine.alerts
                ops = OpsServer(cfg.bot.ledger, cfg, engine.clock.now, alerts.snapshot if alerts else None)
                try:
                    ops.start()
                except OSError as exc:  # the port is taken, or the host is not this machine's
                    engine.close()
                    raise RwabotError(f"ops endpoint: cannot listen on {cfg.ops.host}:{cfg.ops.port}: "
                                      f"{exc.strerror or exc}") from None  # fmt: skip
                console.print(f"ops endpoint: {ops.url}/metrics, {ops.url}/healthz, {ops.url}/status",
                              highlight=False)  # fmt: skip
            try:
                code = Daemon(engine, until=until, on_cycle=on_cycle, lock=lock).run()  # closes the engine
            finally:
                if ops is not None:
                    ops.stop()
        finally:
            lock.release()
    except RwabotError as exc:
        fail(exc)
    console.print("stopped cleanly")
    raise typer.Exit(code)


def check_live_flag(cfg: Config, path: Path, live: bool) -> None:
    """Real money needs two keys turned: ``mode = "live"`` in the config and ``--live`` on the command line,
    so that neither a copied config nor a recalled command line trades on its own."""
    if cfg.bot.mode == "live" and not live:
        raise RwabotError(f'{path}: bot.mode is "live": pass --live as well to trade real money')
    if live and cfg.bot.mode != "live":
        raise RwabotError(f'--live given but {path} has bot.mode = "{cfg.bot.mode}"; set mode = "live" too')


@app.command()
def resume(
    reason: Annotated[str, typer.Option("--reason", help="why trading may start again (recorded in the ledger)")],
    config: ConfigOpt = Path("config/paper.toml"),
    ledger: LedgerOpt = None,
) -> None:
    """Clear a tripped kill switch: trading starts again at the daemon's next cycle (it need not restart).

    The reason, who resumed and when are written to the ledger beside the trip they clear; the drawdown
    is measured afresh from the NAV at the resume (the loss that tripped it was looked at and accepted)."""
    import getpass

    from bot.killswitch import ACTIVE, KillSwitch
    from bot.ledger import Ledger

    try:
        cfg = _load(config, ledger)
        if not Path(cfg.bot.ledger).exists():
            raise RwabotError(f"no ledger at {cfg.bot.ledger}: nothing to resume")
        if not reason.strip():
            raise RwabotError("--reason must say why trading may start again")
        led = Ledger(cfg.bot.ledger)
    except RwabotError as exc:
        fail(exc)
    try:
        # a simulated daemon's "now" is its ledger's; the wall clock would put the resume years away
        at = (led.latest_time() if cfg.clock.kind == "simulated" else None) or datetime.now(UTC)
        ks = KillSwitch(led, cfg.guard, lambda: at)
        row = ks.row
        if ks.state == ACTIVE:
            console.print("trading is active: nothing to resume", highlight=False)
            return
        before, _ = ks.resume(reason, by=f"cli:{getpass.getuser()}", nav=led.last_nav())
        assert row is not None
        console.print(f"resumed from {before} (tripped {row.time.isoformat()} by {row.cause}: {row.reason}); "
                      f"reason recorded: {reason}", highlight=False, markup=False)  # fmt: skip
    finally:
        led.close()


@app.command()
def backtest(
    config: ConfigOpt = Path("config/paper.toml"),
    hours: Annotated[int, typer.Option(min=2, help="simulated hours to run")] = 24 * 30,
    ledger: Annotated[str | None, typer.Option(help="keep the backtest's ledger here (default: a temp file)")] = None,
    start: Annotated[str | None, typer.Option(help="ISO UTC start time (default: the config's clock.start)")] = None,
    risk_free: Annotated[
        float | None,
        typer.Option(
            min=-0.5, max=1.0,
            help="annual risk-free rate for Sharpe, e.g. 0.045 (default: the config's [report] risk_free_*)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON (for scripts)")] = False,
    equity_csv: Annotated[
        Path | None, typer.Option("--csv", help="write the equity curve (time, NAV) to this CSV file")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="CSV/parquet bars (file, folder or glob) for the csv data source; start: first full window"
        ),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option("--fast", help="the cycle's stages on arrays, paper venues in process, rows written in batches"),
    ] = False,
    research: Annotated[
        bool, typer.Option("--research", help="--fast without any ledger rows: the summary only")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Replay the same cycle on simulated time and print performance, costs and risk balance.

    By default the daemon itself runs on a simulated clock (its monitor, venues and ledger as live);
    ``--fast`` runs the same stage functions on arrays (bot/fast.py: paper venues only, no 5-minute
    monitor), ``--research`` also skips the ledger."""
    from bot.backtest import run_backtest
    from bot.outcome import ledger_failure

    setup_logging(verbose, logging.ERROR)
    tmp = None
    kept: str | None = None
    try:
        if ledger is None and research:  # research mode writes no ledger at all
            tmp = tempfile.TemporaryDirectory(prefix="rwabot-bt-")
            ledger = str(Path(tmp.name) / "unused.sqlite")
        elif ledger is None:  # results are kept: var/backtests/<name>-<time>.sqlite beside the config's ledger
            base = load_config(config)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            folder = Path(base.bot.ledger).parent / "backtests"
            n, path = 1, folder / f"{base.bot.name}-{stamp}.sqlite"
            while path.exists() or Path(str(path) + ".lock").exists():  # two runs in one second never share one
                n += 1
                path = folder / f"{base.bot.name}-{stamp}-{n}.sqlite"
            ledger = kept = str(path)
        elif Path(ledger).exists():
            raise RwabotError(f"{ledger} exists: a backtest needs a fresh ledger")
        cfg = _load(config, ledger, clock={"kind": "simulated", "speed": 0.0})
        begin = datetime.fromisoformat(start).astimezone(UTC) if start else None
        bar = None
        if data is not None:  # the user's bars through the csv data source (docs/data.md)
            cfg, begin, bar = _with_data_file(cfg, data, hours, begin)
        with Progress(
            TextColumn("[bold]backtest"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} h"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task("hours", total=hours)
            plain = _PlainProgress(hours) if not err.is_terminal else None  # a log or a pipe gets a line per 10%

            def advance(k: int = 1) -> None:
                progress.update(task, advance=k)
                if plain is not None:
                    plain.advance(k)

            def on_cycle(report: Any) -> None:
                advance(1 if not report.key.endswith("/risk") else 0)

            if bar is not None and bar != timedelta(hours=1) and not (fast or research):
                hrs = bar.total_seconds() / 3600
                raise RwabotError(f"--data has {hrs:g}-hour bars: the daemon's backtest steps hourly; add --fast")
            if fast or research:
                from bot.fast import run_fast_backtest

                s = run_fast_backtest(cfg, hours, start=begin, research=research, risk_free_annual=risk_free,
                                      on_cycle=lambda k: advance())  # fmt: skip
            else:
                s = run_backtest(cfg, hours, start=begin, on_cycle=on_cycle, risk_free_annual=risk_free)
        failure = ledger_failure(cfg.bot.ledger, cfg.venues)  # read before the temporary ledger goes
    except (RwabotError, ValueError) as exc:
        fail(exc)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if equity_csv is not None:
        _write_equity(equity_csv, s)
    if as_json:
        out = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("equity", "equity_times")}
        out["ledger"] = kept or (None if research or tmp is not None else cfg.bot.ledger)
        typer.echo(json.dumps(out, default=float, allow_nan=True))
        if failure:
            exit_failing(failure)
        return
    t = Table("metric", "value", title=f"backtest: {s.hours} h, {s.cycles} cycles")
    b = s.buildup_hours
    rows = [
        ("start NAV (before the first cycle's trades)", f"{s.start_nav:,.2f}"),
        ("end NAV", f"{s.end_nav:,.2f}"),
        ("total return", f"{s.total_return:.3%}"),
        ("annualised return", f"{s.annual_return:.2%}"),
        ("annualised volatility", f"{s.annual_vol:.2%}"),
        (f"risk-free rate ({s.risk_free_source})", f"{s.risk_free_annual:.2%}"),
        ("excess return over it (annual)", f"{s.excess_return_annual:.2%}"),
        (f"Sharpe (rf = {s.risk_free_annual:.2%})", f"{s.sharpe:.2f}"),
        ("Sortino / Calmar", f"{s.sortino:.2f} / {s.calmar:.2f}"),
        ("max drawdown", f"{s.max_drawdown:.2%}"),
        *(
            (f"benchmark {name} (static, gross): return / vol / Sharpe / max DD",
             f"{b['annual_return']:.2%} / {b['annual_vol']:.2%} / {b['sharpe']:.2f} / {b['max_drawdown']:.2%}")
            for name, b in (s.benchmarks or {}).items()
        ),  # fmt: skip
        ("turnover, whole run (× NAV per year)", f"{s.turnover_annual:.2f}"),
        (
            f"initial build-up, first {b} h (× start NAV)",
            f"{s.buildup_turnover:.2f} ({s.buildup_traded:,.2f} traded, {s.buildup_costs:,.2f} costs)",
        ),
        (f"steady-state turnover, after {b} h (× NAV per year)", f"{s.steady_turnover_annual:.2f}"),
        ("traded", f"{s.traded:,.2f}"),
        ("total costs (fees + slippage + gas)", f"{s.costs:,.2f} ({s.fees:,.2f} + {s.slippage:,.2f} + {s.gas:,.2f})"),
        ("  of the fees: charged by funds and issuers (entry/exit)", f"{s.product_fees:,.2f}"),
        ("RC dispersion of optimizer weights, median (free assets)", f"{s.rc_dispersion_target_median:.2e}"),
        (
            "RC dispersion of traded targets (venue-fitted), median / p90",
            f"{s.rc_dispersion_traded_median:.3f} / {s.rc_dispersion_traded_p90:.3f}",
        ),
        (
            "RC dispersion of holdings, free assets, median / p90",
            f"{s.rc_dispersion_held_median:.3f} / {s.rc_dispersion_held_p90:.3f}",
        ),
        (
            "RC dispersion of holdings, assets at a bound (vs the free mean), median / p90",
            f"{s.rc_dispersion_held_bound_median:.3f} / {s.rc_dispersion_held_bound_p90:.3f}",
        ),
        (
            "RC dispersion of holdings, all but capped/floored/held (venue budgets in), median / p90",
            f"{s.rc_dispersion_held_all_median:.3f} / {s.rc_dispersion_held_all_p90:.3f}",
        ),
        ("assets at a bound (share of cycles)", _bounds_text(s.bounds or {})),
        ("cash at the venues, median (× NAV)", f"{s.cash_share_median:.2%}"),
        ("cash in transit, median (× NAV)", f"{s.transit_share_median:.2%}"),
        (
            "cash per venue at the end",
            ", ".join(f"{v} {c:,.2f}" for v, c in sorted((s.cash_by_venue_end or {}).items()))
            + f"; in transit {s.transit_end:,.2f}",
        ),
        (
            "transfers (fees + gas)",
            f"{s.transfers} moving {s.transferred:,.2f} ({s.transfer_fees:,.2f} + {s.transfer_gas:,.2f})",
        ),
        ("risk events", ", ".join(f"{k} {v}" for k, v in sorted(s.risk_events.items())) or "none"),
        ("kill switch", _kill_switch_text(s.kill_switch)),
    ]
    for r in rows:
        t.add_row(*r)
    console.print(t)
    if kept:
        console.print(f"ledger kept at {kept} (rwabot status --ledger {kept})", highlight=False)
    if failure:
        exit_failing(failure)


def _kill_switch_text(ks: dict[str, Any] | None) -> str:
    if not ks:
        return "not tripped"
    return f"{ks['state']} from {ks['time']} ({ks['cause']}: {ks['reason']})"


class _PlainProgress:
    """Progress for a log or a pipe (Rich draws nothing there): one plain line at every 10%."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.next = max(total, 1), 0, 10
        self.t0 = time.monotonic()

    def advance(self, k: int) -> None:
        self.done += k
        pct = 100 * self.done // self.total
        if pct >= self.next:
            err.print(f"backtest {pct}% ({self.done}/{self.total} h, {time.monotonic() - self.t0:.1f} s)",
                      highlight=False)  # fmt: skip
            self.next = (pct // 10 + 1) * 10


def _write_equity(path: Path, s: Any) -> None:
    """The equity curve, one row per closing snapshot (the first row is the NAV before any trade)."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "nav"])
        for t, v in zip(s.equity_times or [], s.equity or []):
            w.writerow([t, f"{v:.6f}"])


def _with_data_file(
    cfg: Config, path: Path, hours: int, start: datetime | None
) -> tuple[Config, datetime, timedelta | None]:
    """``backtest --data``: ``cfg`` reading ``path`` with the ``csv`` source (csv options the config sets are
    kept), the start (``start``, or the file's first bar with a full history window; a run that would go
    past the file's last bar is refused here, not as a failed cycle every hour after it) and the file's bar."""
    from bot.clock import SimulatedClock
    from bot.components import ComponentContext
    from bot.plugins import Registry, make_plugin_manager

    options = {**(cfg.data.options if cfg.data.plugin == "csv" else {}), "path": str(path)}
    cfg = cfg.with_overrides(data={"plugin": "csv", "options": options})
    ctx = ComponentContext(
        SimulatedClock(start or datetime.now(UTC)), Path(tempfile.gettempdir()), cfg.asset_names, lambda e: None
    )
    src = Registry(make_plugin_manager()).get("data", "csv").build(options, ctx, where="--data")
    return cfg, src.backtest_start(cfg.risk.history_hours + 1, hours, start), getattr(src, "bar", None)


def _bounds_text(bounds: dict[str, dict[str, float]]) -> str:
    parts = [
        f"{a} " + "/".join(f"{k} {v:.0%}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
        for a, per in sorted(bounds.items())
    ]
    return ", ".join(parts) or "none"


@app.command()
def status(
    config: ConfigOpt = Path("config/paper.toml"),
    ledger: LedgerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document (bot.ops.ledger_status)")] = False,
) -> None:
    """Print the last cycle, NAV, weights against targets, risk contributions and costs to date.

    ``--json`` prints ``bot.ops.ledger_status`` (what the daemon's ``/status`` serves) and nothing else,
    exit code 0 whatever the health (it is in the document). Health is judged at the config clock's now:
    the wall clock on a real clock; on a simulated one the ledger's last mark or snapshot time, since
    simulated time exists only while the daemon runs (``bot.ops.ledger_now``)."""
    from bot.inflight import in_flight_count
    from bot.ledger import Ledger
    from bot.outcome import cycle_failure

    try:
        cfg = _load(config, ledger)
        if not Path(cfg.bot.ledger).exists():
            raise RwabotError(f"no ledger at {cfg.bot.ledger}: run `rwabot run` first")
        led = Ledger(cfg.bot.ledger)
    except RwabotError as exc:
        fail(exc)
    try:
        if as_json:
            from bot.ops import ledger_now, ledger_status

            typer.echo(json.dumps(ledger_status(led, cfg, ledger_now(led, cfg)), indent=2))
            return
        last = led.last_cycle()
        if last is None:
            console.print("no cycle has run yet")
            return
        snaps = led.snapshots()
        snap = snaps[-1] if snaps else None
        console.print(
            f"last cycle [bold]{last.key}[/] ({last.trigger}) {last.status}; decision: {last.decision or '-'}"
            + (f"; {last.message}" if last.message else ""),
            highlight=False,
        )
        failure = cycle_failure(last, led, cfg.venues)
        console.print(f"health: {'failing: ' + failure if failure else 'ok'}; orders in flight: "
                      f"{in_flight_count(led)}", highlight=False, markup=False)  # fmt: skip
        ks = led.trading_state()
        if ks is not None and ks.state != "active":
            console.print(f"kill switch: {ks.state} since {ks.time.isoformat()} by {ks.by} ({ks.cause}: {ks.reason}); "
                          "no orders until `rwabot resume --reason ...`", highlight=False, markup=False)  # fmt: skip
        elif ks is not None:
            console.print(f"kill switch: active (resumed {ks.time.isoformat()}: {ks.reason})", highlight=False,
                          markup=False)  # fmt: skip
        if snap is not None:
            per_venue = ", ".join(f"{v} {c:,.2f}" for v, c in sorted(snap.cash_by_venue.items()))
            console.print(
                f"NAV {snap.nav:,.2f} {cfg.bot.quote} at {snap.time.isoformat()}; cash {snap.cash:,.2f} "
                f"({per_venue}); in transit {snap.transit or 0.0:,.2f}",
                highlight=False,
            )
        open_t = led.transfers(open_only=True)
        if open_t:
            console.print("transfers in flight:")
            for tr in open_t:
                console.print(
                    f"  {tr.client_id} {tr.status}: {tr.amount:,.2f} {tr.asset} {tr.source} → {tr.destination} "
                    f"over {tr.network}" + (f" (id {tr.external_id})" if tr.external_id else ""),
                    highlight=False,
                )
        targets = led.targets_of(last.id) if last.id is not None else []
        if targets:
            t = Table(
                "asset", "venue", "weight", "target", "risk contrib.", "cap", "bound", title="weights vs targets"
            )
            for tr in targets:
                w = (
                    (snap.positions.get(tr.asset, 0.0) * snap.prices.get(tr.asset, 0.0) / snap.nav)
                    if snap and snap.nav
                    else 0.0
                )
                t.add_row(
                    tr.asset,
                    tr.venue,
                    _pct(w),
                    _pct(tr.target_weight),
                    _pct(tr.risk_contribution),
                    _pct(tr.upper) + (" *" if tr.capped else ""),
                    tr.bound or ("cap" if tr.capped else "-"),
                )
            console.print(t)
        c = led.cost_totals()
        console.print(
            f"costs to date: fees {c['fees']:,.2f}, slippage {c['slippage']:,.2f}, gas {c['gas']:,.2f} "
            f"on {c['traded']:,.2f} traded; transfers: fees {c['transfer_fees']:,.2f}, gas {c['transfer_gas']:,.2f} "
            f"on {c['transferred']:,.2f} moved; "
            f"{len(led.cycles())} cycles",
            highlight=False,
        )
        console.print(f"  of the fees, charged by funds and issuers: {c.get('product_fees', 0.0):,.2f}",
                      highlight=False)  # fmt: skip
        events = led.events(limit=5)
        if events:
            console.print("recent risk events:")
            for e in events:
                console.print(
                    f"  {e.time.isoformat()} {e.severity:8} {e.kind} at {e.where}: {e.message[:140]}", highlight=False
                )
    finally:
        led.close()


@app.command()
def plugins() -> None:
    """List every plugin: the components it registers, the hooks it implements and its distribution."""
    from bot.plugins import Registry, loaded_plugins, make_plugin_manager

    try:
        pm = make_plugin_manager()
        reg = Registry(pm)
    except RwabotError as exc:
        fail(exc)
    t = Table("family", "name", "plugin", "distribution", title="components")
    for r in reg:
        t.add_row(r.family, r.name, r.plugin, r.distribution)
    console.print(t)
    p = Table("plugin", "distribution", "hooks", title="plugins and the hooks they implement")
    for lp in loaded_plugins(pm):
        p.add_row(lp.name, lp.distribution, ", ".join(lp.hooks))
    console.print(p)


@app.command()
def evaluate(
    prices: Annotated[
        Path | None, typer.Option(help="CSV: a time column, then one price column per asset")
    ] = None,
    simulated: Annotated[
        int | None, typer.Option(help="instead of --prices: this many hours of the simulated market (truth known)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of --simulated")] = 7,
    freq: Annotated[str, typer.Option(help="1h or 1d")] = "1h",
    forecasters: Annotated[
        str, typer.Option(help="comma-separated NAME or LABEL=PLUGIN")
    ] = "sample,ewma,ledoit_wolf,dcc",
    baseline: Annotated[str, typer.Option(help="forecaster the paired differences are taken against")] = "ewma",
    options: Annotated[
        str, typer.Option(help='JSON options per label, e.g. \'{"dcc": {"deseasonalise": true}}\'')
    ] = "{}",
    assets: Annotated[str | None, typer.Option(help="comma-separated subset of the assets")] = None,
    warmup: Annotated[int | None, typer.Option(help="periods before the first forecast (default 60 d / 250 d)")] = None,
    refit_every: Annotated[int | None, typer.Option(help="refit period (default 168 h / 21 d)")] = None,
    window: Annotated[int | None, typer.Option(help="rolling window in periods (default: expanding)")] = None,
    save_forecasts: Annotated[Path | None, typer.Option(help="write every period's forecast Σ to this .npz")] = None,
    csv: Annotated[Path | None, typer.Option(help="write the score table to this CSV")] = None,
    plot: Annotated[Path | None, typer.Option(help="write a PNG of cumulative QLIKE differences")] = None,
    no_portfolios: Annotated[bool, typer.Option("--no-portfolios", help="skip GMV/ERC portfolio vols")] = False,
    compare: Annotated[
        str | None, typer.Option(help="also print this forecaster's paired differences to every other one")
    ] = None,
    returns: Annotated[
        str | None,
        typer.Option("--returns", help="also score return models (zero,ewma_mean,shrunk_mean,...): IC, hit rate"),
    ] = None,
) -> None:
    """Walk-forward evaluation of covariance forecasters: QLIKE differences with block-bootstrap errors."""
    import json

    from bot import evaluate as ev

    setup_logging(False, logging.ERROR)
    try:
        if freq not in ("1h", "1d"):
            raise RwabotError(f"--freq must be 1h or 1d, got {freq!r}")
        if (prices is None) == (simulated is None):
            raise RwabotError("give exactly one of --prices FILE.csv or --simulated HOURS")
        if simulated is not None:
            if freq != "1h":
                raise RwabotError("--simulated is hourly: use --freq 1h")
            ds = ev.simulated_dataset(simulated, seed)
        else:
            ds = ev.load_prices_csv(str(prices), freq)
        if assets:
            keep = [a.strip() for a in assets.split(",") if a.strip()]
            unknown = [a for a in keep if a not in ds.assets]
            if unknown:
                raise RwabotError(f"--assets: unknown {unknown} (known: {list(ds.assets)})")
            idx = [ds.assets.index(a) for a in keep]
            ds = ev.Dataset(
                tuple(keep),
                ds.times,
                ds.prices[:, idx],
                ds.report,
                None if ds.truth is None else ds.truth[:, idx][:, :, idx],
                ds.regime,
            )
        for line in ds.report:
            err.print(f"data: {line}", highlight=False)
        specs = [s.strip() for s in forecasters.split(",") if s.strip()]
        opts = json.loads(options)
        with tempfile.TemporaryDirectory(prefix="rwabot-eval-") as state:
            built = ev.build_forecasters(specs, opts, Path(state))
            if baseline not in built:
                raise RwabotError(f"--baseline {baseline!r} must be one of --forecasters {list(built)}")
            if compare is not None and compare not in built:
                raise RwabotError(f"--compare {compare!r} must be one of --forecasters {list(built)}")
            n_ret = ds.prices.shape[0] - 1
            with Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), console=err, transient=True
            ) as progress:
                tasks = {k: progress.add_task(k, total=n_ret + 1) for k in built}

                def on_step(name: str, t: int) -> None:
                    progress.update(tasks[name], completed=t + 1)

                result = ev.evaluate_dataset(
                    ds,
                    built,
                    baseline=baseline,
                    freq=freq,
                    warmup=warmup,
                    refit_every=refit_every,
                    window=window,
                    portfolios=not no_portfolios,
                    on_step=on_step,
                )
    except (RwabotError, ValueError) as exc:
        fail(exc)
    console.print(result.table, highlight=False, soft_wrap=True)
    if compare is not None:
        console.print(f"\n{compare} against each forecaster (paired, block-bootstrap SE):", highlight=False)
        console.print(ev.format_pairs(result.pairs(compare), result.unit), highlight=False, soft_wrap=True)
    for s in result.scores:
        for t, msg in result.paths[s.name].failures[:3]:
            err.print(f"{s.name}: no forecast at row {t}: {msg}", highlight=False)
    if save_forecasts:
        ev.save_forecasts(result, str(save_forecasts))
        console.print(f"forecasts written to {save_forecasts}")
    if csv:
        ev.write_csv(result, str(csv))
        console.print(f"scores written to {csv}")
    if plot:
        console.print(f"plot written to {plot}" if ev.write_plot(result, str(plot)) else "plot skipped: no matplotlib")
    if returns:
        try:
            models = ev.build_return_models([x.strip() for x in returns.split(",") if x.strip()], opts, ds.assets)
            first = warmup if warmup is not None else (24 * 60 if freq == "1h" else 250)
            scores = ev.score_return_models(models, ds.assets, ds.returns, warmup=first, window=window,
                                            block=168 if freq == "1h" else 21)  # fmt: skip
        except (RwabotError, ValueError) as exc:
            fail(exc)
        console.print("\nreturn models, out of sample (cross-sectional rank IC and hit rate, block-bootstrap SE):",
                      highlight=False)  # fmt: skip
        console.print(ev.format_return_scores(scores), highlight=False, soft_wrap=True)


@app.command()
def optimize(
    cov: Annotated[Path, typer.Option("--cov", help="CSV covariance, asset names as header and first column")],
    caps: Annotated[Path | None, typer.Option("--caps", help="CSV upper bounds per asset")] = None,
    floors: Annotated[Path | None, typer.Option("--floors", help="CSV lower bounds per asset")] = None,
    budgets: Annotated[Path | None, typer.Option("--budgets", help="CSV risk budgets (default: equal risk)")] = None,
    current: Annotated[Path | None, typer.Option("--current", help="CSV current weights w0")] = None,
    costs: Annotated[Path | None, typer.Option("--costs", help="CSV cost per unit traded (decimal)")] = None,
    mu: Annotated[Path | None, typer.Option("--mu", help="CSV expected returns, the covariance's period")] = None,
    lam: Annotated[float, typer.Option("--lambda", help="weight of mu in the objective")] = 0.0,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    repair_psd: Annotated[bool, typer.Option("--repair-psd", help="clip negative eigenvalues of Σ")] = False,
    tol: Annotated[float, typer.Option(help="solver tolerance")] = 1e-12,
    max_iter: Annotated[int, typer.Option(help="most Newton steps")] = 200,
) -> None:
    """Risk parity under caps (erc), or with costs and a return tilt (rp_cost), on CSV inputs."""
    from bot import optimize_cli as oc

    try:
        report = oc.optimize_files(
            cov, caps=caps, floors=floors, budgets=budgets, current=current, costs=costs, mu=mu, lam=lam,
            repair_psd=repair_psd, tol=tol, max_iter=max_iter,
        )
    except RwabotError as exc:
        fail(exc)
    if json_out:
        typer.echo(oc.to_json(report))
        return
    console.print(oc.to_table(report))
    for line in oc.summary_lines(report):
        console.print(line, highlight=False)


# -- stress, sweep, report (bot/stress.py, bot/sweep.py, bot/report.py; docs/stress.md, docs/report.md) ----------

OFFLINE = Path("config/paper-offline.toml")  # the embedded defaults the fast backtest can simulate (paper venues)
SCENARIOS = Path("config/scenarios.toml")


def _grid_run(
    *, config: Path, scenarios_file: Path, scenarios: str, seeds: int, first_seed: int, hours: int, books: str,
    params: list[str], workers: int, scheduler: str | None, threads: bool, data: Path | None, start: str | None,
    series_seeds: int, what: str,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """The grid of a stress run or a sweep, run on Dask with a progress bar: (config, tasks, Executed)."""
    from bot.shocks import load_scenarios, pick
    from bot.sweep import execute, make_grid, parse_param

    cfg = load_config(config)
    begin = datetime.fromisoformat(start).astimezone(UTC) if start else None
    if data is not None:  # the user's bars under the shocks: the csv source, started at its first full window
        cfg, begin, _ = _with_data_file(cfg, data, hours, begin)
    chosen = pick(load_scenarios(scenarios_file), scenarios)
    grid = dict(parse_param(p) for p in params)
    seed_list = list(range(first_seed, first_seed + seeds))
    book_list = [b.strip() for b in books.split(",") if b.strip()]
    tasks = make_grid(cfg, chosen, seed_list, hours=hours, params=grid, books=book_list, start=begin,
                      series_seeds=seed_list[:series_seeds])  # fmt: skip
    where = "threads" if threads else (f"the cluster at {scheduler}" if scheduler else f"a LocalCluster of {workers}")
    err.print(f"{what}: {len(tasks)} runs ({len(chosen)} scenarios × {len(seed_list)} seeds × {len(book_list)} "
              f"books × {max(1, len(tasks) // max(1, len(chosen) * len(seed_list) * len(book_list)))} grid points) "
              f"of {hours} h on {where}", highlight=False)  # fmt: skip
    with Progress(TextColumn(f"[bold]{what}"), BarColumn(), TextColumn("{task.completed}/{task.total} runs"),
                  TimeElapsedColumn(), console=err, transient=True) as progress:  # fmt: skip
        bar = progress.add_task("runs", total=len(tasks))
        t0, shown = time.monotonic(), [0]

        def on_done(done: int, total: int) -> None:
            progress.update(bar, completed=done)
            if not err.is_terminal and 10 * done // total > shown[0]:  # a log or a pipe: a line per 10%
                shown[0] = 10 * done // total
                err.print(f"{what} {done}/{total} runs, {time.monotonic() - t0:.0f} s", highlight=False)

        ex = execute(tasks, workers=workers, scheduler=scheduler, threads=threads, on_done=on_done)
    return cfg, tasks, ex


def _out_dir(out: Path | None, cfg: Config, kind: str) -> Path:
    if out is not None:
        return out
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return Path(cfg.bot.ledger).parent / kind / f"{cfg.bot.name}-{stamp}"


ScenariosFileOpt = Annotated[Path, typer.Option("--scenarios-file", help="TOML scenario file (bot/shocks.py)")]
ScenariosOpt = Annotated[
    str, typer.Option("--scenarios", help="'all' (the control 'none' and every scenario) or a comma list")
]
SeedsOpt = Annotated[
    int, typer.Option("--seeds", min=1, help="number of market paths (seeds first-seed, first-seed+1, …)")
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", min=1, help="LocalCluster worker processes (or threads with --threads)")
]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", help="a Dask scheduler address: run on that cluster")]
ThreadsOpt = Annotated[bool, typer.Option("--threads", help="no cluster: Dask's threaded scheduler in this process")]
StressDataOpt = Annotated[
    Path | None, typer.Option("--data", help="CSV/parquet bars to shock instead of the configured source")
]


@app.command()
def stress(
    config: ConfigOpt = OFFLINE,
    scenarios_file: ScenariosFileOpt = SCENARIOS,
    scenarios: ScenariosOpt = "all",
    seeds: SeedsOpt = 20,
    first_seed: Annotated[int, typer.Option(min=0, help="the first seed")] = 0,
    hours: Annotated[int, typer.Option(min=2, help="hours per run")] = 720,
    books: Annotated[str, typer.Option(help="books run on every path")] = "strategy,equal weight,inverse vol",
    workers: WorkersOpt = 2,
    scheduler: SchedulerOpt = None,
    threads: ThreadsOpt = False,
    data: StressDataOpt = None,
    start: Annotated[str | None, typer.Option(help="ISO UTC first cycle (default: the config's clock.start)")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default var/stress/<name>-<time>)")] = None,
    series_seeds: Annotated[int, typer.Option(min=0, help="seeds whose NAV series are kept for the report")] = 1,
    png: Annotated[bool, typer.Option("--png/--no-png", help="a PNG per figure beside the HTML")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the table as JSON")] = False,
) -> None:
    """Named stress scenarios through the fast backtest's cycle, beside equal-weight and inverse-vol books on the
    same paths: results.parquet/.csv, stress.html (+ png/), table.md (docs/stress.md)."""
    import pandas as pd

    from bot.report import stress_report
    from bot.stress import stress_table, table_markdown
    from bot.sweep import write_results

    setup_logging(False, logging.ERROR)
    try:
        cfg, tasks, ex = _grid_run(config=config, scenarios_file=scenarios_file, scenarios=scenarios, seeds=seeds,
                                   first_seed=first_seed, hours=hours, books=books, params=[], workers=workers,
                                   scheduler=scheduler, threads=threads, data=data, start=start,
                                   series_seeds=series_seeds, what="stress")  # fmt: skip
        folder = _out_dir(out, cfg, "stress")
        paths = write_results(ex.results, folder)
        rows = [r.row for r in ex.results]
        table = stress_table(rows)
        md = table_markdown(table)
        (folder / "table.md").write_text(md + "\n", encoding="utf-8")
        series = pd.read_parquet(paths["series"]) if "series" in paths else None
        intro = (f"{config}, {hours} h per run, seeds {first_seed}–{first_seed + seeds - 1}, {ex.mode} of "
                 f"{ex.workers}: {len(tasks)} runs in {ex.wall_s:.1f} s.")  # fmt: skip
        written = stress_report(rows, folder / "stress.html", series=series, png=png, intro=intro)
        (folder / "run.json").write_text(json.dumps({"config": str(config), "hours": hours, "seeds": seeds,
                                                     "first_seed": first_seed, "mode": ex.mode, "workers": ex.workers,
                                                     "wall_s": ex.wall_s, "startup_s": ex.startup_s,
                                                     "runs": len(tasks)}, indent=1))  # fmt: skip
    except (RwabotError, ValueError) as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(table, default=float, allow_nan=True))
        return
    console.print(md, highlight=False, soft_wrap=True)
    console.print(f"{len(tasks)} runs on {ex.mode} ({ex.workers}) in {ex.wall_s:.1f} s "
                  f"(start-up {ex.startup_s:.1f} s); "
                  f"{written['html']} and {len(written['pngs'])} PNGs, results in {paths['parquet']}",
                  highlight=False)  # fmt: skip


@app.command()
def sweep(
    config: ConfigOpt = OFFLINE,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="name=v1,v2 (repeatable): half_life, band, participation, forecaster, measure, "
                     "or a dotted config path"),
    ] = None,
    scenarios_file: ScenariosFileOpt = SCENARIOS,
    scenarios: ScenariosOpt = "none",
    seeds: SeedsOpt = 4,
    first_seed: Annotated[int, typer.Option(min=0, help="the first seed")] = 0,
    hours: Annotated[int, typer.Option(min=2, help="hours per run")] = 720,
    books: Annotated[str, typer.Option(help="books run on every path")] = "strategy",
    workers: WorkersOpt = 2,
    scheduler: SchedulerOpt = None,
    threads: ThreadsOpt = False,
    data: StressDataOpt = None,
    start: Annotated[str | None, typer.Option(help="ISO UTC first cycle (default: the config's clock.start)")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default var/sweeps/<name>-<time>)")] = None,
    png: Annotated[bool, typer.Option("--png/--no-png", help="a PNG per figure beside the HTML")] = True,
) -> None:
    """A grid (seeds × scenarios × parameters) of research-mode backtests on Dask (a LocalCluster by default, a
    scheduler address, or threads): results.parquet/.csv and summary.html."""
    from bot.report import sweep_report
    from bot.sweep import write_results

    setup_logging(False, logging.ERROR)
    try:
        cfg, tasks, ex = _grid_run(config=config, scenarios_file=scenarios_file, scenarios=scenarios, seeds=seeds,
                                   first_seed=first_seed, hours=hours, books=books, params=list(param or []),
                                   workers=workers, scheduler=scheduler, threads=threads, data=data, start=start,
                                   series_seeds=0, what="sweep")  # fmt: skip
        folder = _out_dir(out, cfg, "sweeps")
        paths = write_results(ex.results, folder)
        rows = [r.row for r in ex.results]
        intro = (f"{config}, {hours} h per run, {len(tasks)} runs on {ex.mode} of {ex.workers} in "
                 f"{ex.wall_s:.1f} s.")  # fmt: skip
        written = sweep_report(rows, folder / "summary.html", png=png, intro=intro)
        meta = {"config": str(config), "hours": hours, "params": param or [], "mode": ex.mode, "workers": ex.workers,
                "wall_s": ex.wall_s, "startup_s": ex.startup_s, "runs": len(tasks)}
        (folder / "run.json").write_text(json.dumps(meta, indent=1))
    except (RwabotError, ValueError) as exc:
        fail(exc)
    t = Table("scenario", "book", "grid point", "seeds", "Sharpe [95% CI]", "return", "RC held p90", title="sweep")
    for r in written["table"]:
        t.add_row(str(r["scenario"]), str(r["book"]), str(r["point"]), str(r["seeds"]),
                  f"{r['sharpe_mean']:.2f} [{r['sharpe_ci_low']:.2f}, {r['sharpe_ci_high']:.2f}]",
                  f"{r['total_return_mean']:.2%}", f"{r['rc_held_p90']:.3f}")  # fmt: skip
    console.print(t)
    console.print(f"{len(tasks)} runs on {ex.mode} ({ex.workers}) in {ex.wall_s:.1f} s "
                  f"(start-up {ex.startup_s:.1f} s); "
                  f"{written['html']}, results in {paths['parquet']}", highlight=False)  # fmt: skip


@app.command()
def report(
    config: ConfigOpt = OFFLINE,
    ledger: Annotated[Path | None, typer.Option(help="the ledger to report (default: the config's bot.ledger)")] = None,
    stress_dir: Annotated[
        Path | None, typer.Option("--stress", help="a stress or sweep output folder to re-render")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="the HTML file (PNGs go to png/ beside it)")] = None,
    hours: Annotated[
        int, typer.Option(min=2, help="no ledger yet: run a fast backtest of this many hours first")
    ] = 720,
    risk_free: Annotated[float | None, typer.Option(min=-0.5, max=1.0, help="annual rate for Sharpe")] = None,
    png: Annotated[bool, typer.Option("--png/--no-png", help="a PNG per figure beside the HTML")] = True,
) -> None:
    """A self-contained HTML report (plotly) and a PNG per figure: of a ledger (the daemon's, a backtest's) or of a
    stress/sweep folder. With no ledger at the path, a fast backtest of the config writes one first."""
    from bot.report import ledger_report, stress_report, sweep_report

    setup_logging(False, logging.ERROR)
    try:
        if stress_dir is not None:
            import pandas as pd

            res = stress_dir / "results.parquet"
            if not res.exists():
                raise RwabotError(f"{stress_dir}: no results.parquet (write one with rwabot stress or rwabot sweep)")
            rows = pd.read_parquet(res).to_dict("records")
            kept = stress_dir / "series.parquet"
            series = pd.read_parquet(kept) if kept.exists() else None
            if any(k.startswith("param.") for k in rows[0]):
                written = sweep_report(rows, out or stress_dir / "summary.html", png=png)
            else:
                written = stress_report(rows, out or stress_dir / "stress.html", series=series, png=png)
        else:
            cfg = load_config(config)
            path = ledger or Path(cfg.bot.ledger)
            if not path.exists():
                from bot.fast import run_fast_backtest

                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                path = Path(cfg.bot.ledger).parent / "reports" / f"{cfg.bot.name}-{stamp}.sqlite"
                err.print(f"no ledger at {ledger or cfg.bot.ledger}: a fast backtest of {hours} h writes {path}",
                          highlight=False)  # fmt: skip
                path.parent.mkdir(parents=True, exist_ok=True)
                run_fast_backtest(_load(config, str(path), clock={"kind": "simulated", "speed": 0.0}), hours)
            written = ledger_report(path, out or path.with_suffix("").parent / f"{path.stem}-report" / "report.html",
                                    png=png, risk_free_annual=risk_free, report_cfg=cfg.report)  # fmt: skip
    except (RwabotError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    console.print(f"{written['html']}: {len(written['figures'])} figures"
                  + (f", {len(written['pngs'])} PNGs in {written['pngs'][0].parent}" if written["pngs"] else "")
                  + (f"; left out (no data): {', '.join(written['left_out'])}" if written["left_out"] else ""),
                  highlight=False)  # fmt: skip


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
