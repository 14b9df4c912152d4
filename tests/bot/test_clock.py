from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from bot.clock import RealClock, SimulatedClock

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_held_simulated_clock_stands_still_and_resumes_where_it_stopped() -> None:
    clock = SimulatedClock(T0, speed=3600.0)
    with clock.hold():
        a = clock.now()
        time.sleep(0.05)  # 180 simulated seconds if the clock were running
        with clock.hold():  # nested holds are one hold
            time.sleep(0.02)
        assert clock.now() == a
    time.sleep(0.05)
    b = clock.now()
    assert b > a
    # only the unheld real time counts: 0.05 s plus overheads, far below the 0.12 s slept in all
    assert b - T0 < timedelta(seconds=0.1 * 3600)


def test_speed_zero_clock_moves_only_by_sleep() -> None:
    clock = SimulatedClock(T0)
    with clock.hold():
        clock.sleep(60, threading.Event())
    assert clock.now() == T0 + timedelta(minutes=1)


def test_real_clock_hold_is_a_no_op() -> None:
    clock = RealClock()
    with clock.hold():
        a = clock.now()
        time.sleep(0.01)
        assert clock.now() > a
