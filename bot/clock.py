"""Clocks: the wall clock, and a simulated one the daemon can run many hours a second on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        wake.wait(max(seconds, 0.0))

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Real time cannot be held: a no-op, so the daemon treats both clocks alike."""
        yield


class SimulatedClock:
    """Simulated time starting at ``start``.

    With ``speed == 0`` time only moves when ``sleep`` is called, by exactly the time slept, so a
    run is deterministic and as fast as the work allows. With ``speed > 0`` simulated time runs
    ``speed`` times faster than real time, so a test can interrupt a daemon in mid-flight; the
    daemon ``hold``s the clock while a job runs, so a cycle takes no simulated time however busy
    the machine is, and a slow cycle never makes the next hour look missed (and coalesced).
    """

    def __init__(self, start: datetime, speed: float = 0.0) -> None:
        if start.tzinfo is None:
            raise ValueError("simulated clock start must be timezone-aware")
        self._now = start.astimezone(UTC)
        self.speed = speed
        self._real0 = time.monotonic()
        self._lock = threading.Lock()
        self._held = 0  # depth of nested holds
        self._held_at = 0.0  # real time the outermost hold began
        self._paused = 0.0  # real seconds spent inside finished holds

    def _elapsed(self) -> float:
        end = self._held_at if self._held else time.monotonic()
        return end - self._real0 - self._paused

    def now(self) -> datetime:
        with self._lock:
            if self.speed > 0:
                return self._now + timedelta(seconds=self._elapsed() * self.speed)
            return self._now

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Stop simulated time while the block runs (only matters with ``speed > 0``)."""
        with self._lock:
            if self._held == 0:
                self._held_at = time.monotonic()
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
                if self._held == 0:
                    self._paused += time.monotonic() - self._held_at

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        seconds = max(seconds, 0.0)
        if self.speed > 0:
            wake.wait(seconds / self.speed)
            return
        if wake.is_set():
            return
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def advance_to(self, when: datetime) -> None:
        with self._lock:
            if self.speed == 0 and when > self._now:
                self._now = when


def floor_hour(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
