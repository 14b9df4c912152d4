"""Clocks: the wall clock, and a simulated one the daemon can run many hours a second on."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        wake.wait(max(seconds, 0.0))


class SimulatedClock:
    """Simulated time starting at ``start``.

    With ``speed == 0`` time only moves when ``sleep`` is called, by exactly the time slept, so a
    run is deterministic and as fast as the work allows. With ``speed > 0`` simulated time runs
    ``speed`` times faster than real time, so a test can interrupt a daemon in mid-flight.
    """

    def __init__(self, start: datetime, speed: float = 0.0) -> None:
        if start.tzinfo is None:
            raise ValueError("simulated clock start must be timezone-aware")
        self._now = start.astimezone(UTC)
        self.speed = speed
        self._real0 = time.monotonic()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            if self.speed > 0:
                elapsed = time.monotonic() - self._real0
                return self._now + timedelta(seconds=elapsed * self.speed)
            return self._now

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
