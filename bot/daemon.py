"""The long-lived daemon: APScheduler runs the hourly cycle, the risk monitor and forecaster retraining.

Jobs run on the scheduler's own thread (APScheduler's synchronous ``DebugExecutor``), so a cycle
and a monitor run can never overlap and SIGTERM lets the job in flight finish before the ledger is
closed. The scheduler reads time through the configured clock, so the same daemon runs on the wall
clock live and on a simulated clock for demos, tests and backtests.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers import base as aps_base
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.clock import RealClock, SimulatedClock, floor_hour
from bot.cycle import Engine
from bot.domain import Severity
from bot.ledger import DaemonLock
from bot.riskmath import log_returns

log = logging.getLogger("rwabot.daemon")


@contextmanager
def scheduler_clock(clock: RealClock | SimulatedClock) -> Iterator[None]:
    """Make APScheduler 3 read "now" from our clock.

    APScheduler 3 calls ``datetime.now`` in its scheduler module and offers no clock hook; this
    swaps that module's ``datetime`` name for a subclass whose ``now`` asks our clock, and puts it
    back afterwards. Only the scheduler module is affected.
    """
    if isinstance(clock, RealClock):
        yield
        return
    original = aps_base.datetime

    class _ClockedDatetime(original):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206
            n = clock.now()
            return n.astimezone(tz) if tz is not None else n

    aps_base.datetime = _ClockedDatetime  # type: ignore[misc]
    try:
        yield
    finally:
        aps_base.datetime = original  # type: ignore[misc]


class ClockedScheduler(BaseScheduler):
    """A blocking scheduler whose waits go through the clock (and so can be simulated)."""

    def __init__(self, clock: RealClock | SimulatedClock, until: datetime | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.until = until
        self._event = threading.Event()
        self.stop_requested = False

    def start(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().start(*args, **kwargs)
        self._main_loop()

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        self._event.set()

    def request_stop(self) -> None:
        """Safe from a signal handler: the loop exits after the job in flight."""
        self.stop_requested = True
        self._event.set()

    def wakeup(self) -> None:
        self._event.set()

    def _main_loop(self) -> None:
        while self.state != STATE_STOPPED and not self.stop_requested:
            wait = self._process_jobs()
            if self.stop_requested:
                break
            now = self.clock.now()
            if self.until is not None and now >= self.until:
                break
            if wait is None:
                wait = 3600.0
            if self.until is not None:
                wait = min(wait, max((self.until - now).total_seconds(), 0.0))
            self._event.clear()
            self.clock.sleep(wait, self._event)
        if self.state != STATE_STOPPED:
            super().shutdown(wait=False)


class Daemon:
    """Runs an Engine under the scheduler until stopped (or until ``until`` in simulated time)."""

    def __init__(
        self,
        engine: Engine,
        *,
        until: datetime | None = None,
        on_cycle: Callable[[object], None] | None = None,
        catch_up: bool = True,
        lock: DaemonLock | None = None,
    ) -> None:
        """``lock``: the ledger's lock, already held by a caller that took it before building the engine
        (``rwabot run`` does, so that a refused daemon builds nothing); without one, ``run`` takes it."""
        self.engine = engine
        self.until = until
        self.on_cycle = on_cycle
        self.catch_up = catch_up
        self.lock = lock if lock is not None else DaemonLock(engine.cfg.bot.ledger)
        self.scheduler: ClockedScheduler | None = None

    def _cycle_job(self) -> None:
        report = self.engine.run_cycle(self.engine.clock.now(), "scheduled")
        if self.on_cycle is not None and not report.repeated:  # one line per cycle, not per job that ran it
            self.on_cycle(report)

    def _monitor_job(self) -> None:
        report = self.engine.monitor(self.engine.clock.now())
        if report is not None and self.on_cycle is not None:
            self.on_cycle(report)

    def _retrain_job(self) -> None:
        """Hand the forecaster a long window of returns to retrain on, in its own background thread.

        Only the bars are fetched here, on the scheduler thread, so the data source is never used by
        two threads at once; ``retrain_async`` returns at once and the training runs in a thread, so
        the hourly cycle is never blocked (the job is also placed half an hour away from the cycle).
        """
        fc = self.engine.c.forecaster
        now = self.engine.clock.now()
        hours = int(getattr(getattr(fc, "cfg", None), "train_hours", 0) or self.engine.cfg.risk.history_hours)
        bars = self.engine.c.data.bars(self.engine.assets, now, hours + 1)
        started = fc.retrain_async(self.engine.assets, log_returns(bars.close), now)
        if started:
            self.engine.emit(
                self.engine._event(
                    "forecast_retrain_started", "daemon:retrain", f"retraining {fc.name} on {hours} hourly returns",
                    None, Severity.INFO, hours=hours,
                )
            )  # fmt: skip
        else:
            log.info("retrain: the previous training of %s is still running; skipped", fc.name)

    def _add_retrain_job(self, sched: ClockedScheduler, now: datetime, defaults: dict) -> None:
        """Forecasters with ``retrain_async`` and ``retrain_every_hours`` (the ``lstm``) are retrained on
        that schedule (default daily): at start when ``retrain_due`` says so, then every N hours at half past
        the cycle minute."""
        fc = self.engine.c.forecaster
        every = getattr(fc, "retrain_every_hours", None)
        if not every or not callable(getattr(fc, "retrain_async", None)):
            return
        if hasattr(fc, "auto_retrain"):
            fc.auto_retrain = False  # this job takes over: the forecaster must not start its own training
        job = self._guard(self._retrain_job, "retrain")
        due = getattr(fc, "retrain_due", None)
        if not callable(due) or due(now):
            job()
        minute = (self.engine.cfg.schedule.cycle_minute + 30) % 60
        first = floor_hour(now) + timedelta(hours=int(every), minutes=minute)
        sched.add_job(job, IntervalTrigger(hours=int(every), start_date=first, timezone=UTC), id="retrain", **defaults)

    def _guard(self, job: Callable[[], None], name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                hold = getattr(self.engine.clock, "hold", nullcontext)
                with hold():  # a simulated clock stands still while the job runs
                    job()
            except Exception as exc:  # the daemon outlives one bad hour; the ledger records why
                log.exception("%s job failed", name)
                try:
                    self.engine.emit(self.engine._event("job_failed", f"daemon:{name}", repr(exc), None))
                except Exception:
                    log.exception("could not record the failure of %s", name)

        return run

    def run(self) -> int:
        """Block until SIGINT/SIGTERM (or ``until``); returns the process exit code.

        The engine is closed on every way out, and the lock released if this call took it."""
        own_lock = not self.lock.held
        previous: dict[int, Any] = {}
        in_main = threading.current_thread() is threading.main_thread()
        try:
            if own_lock:
                self.lock.acquire()
            self._schedule_and_block(previous, in_main)
        finally:
            if in_main:
                for s, h in previous.items():
                    signal.signal(s, h)
            self.engine.close()
            if own_lock:
                self.lock.release()
        return 0

    def _schedule_and_block(self, previous: dict[int, Any], in_main: bool) -> None:
        """Add the jobs and run the scheduler until it stops; ``previous`` collects the signal handlers it
        replaced, for ``run`` to put back."""
        cfg = self.engine.cfg
        clock = self.engine.clock
        sched = ClockedScheduler(clock, self.until, timezone=UTC, executors={"default": DebugExecutor()})
        self.scheduler = sched

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing the job in flight, then stopping", signal.Signals(signum).name)
            sched.request_stop()

        if in_main:
            for s in (signal.SIGINT, signal.SIGTERM):
                previous[s] = signal.signal(s, on_signal)
        with scheduler_clock(clock):
            now = clock.now()
            defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
            sched.add_job(
                self._guard(self._cycle_job, "cycle"),
                CronTrigger(minute=cfg.schedule.cycle_minute, timezone=UTC),
                id="cycle",
                **defaults,
            )
            sched.add_job(
                self._guard(self._monitor_job, "monitor"),
                IntervalTrigger(minutes=cfg.schedule.monitor_minutes, start_date=now, timezone=UTC),
                id="monitor",
                **defaults,
            )
            self._add_retrain_job(sched, now, defaults)
            last = self.engine.last_cycle_time()
            if self.catch_up and (last is None or now - last > timedelta(hours=1)):
                log.info("last cycle %s is over an hour old: running one now", last)
                sched.add_job(self._guard(self._cycle_job, "cycle"), "date", run_date=now, id="catch-up", **defaults)
            sched.start()
