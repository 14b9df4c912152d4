"""The kill switch: when the bot stops buying, and what it does instead.

A desk leaves the daemon running for months; a book that loses 30% must stop trading at the next monitor
tick, not at the next cycle, and must stay stopped through a restart until a person says otherwise. So
the state is a row in the ledger (``trading_state``, append-only: its history is the audit), written
when a rule trips and cleared only by ``rwabot resume --reason``. Like nautilus_trader's trading state
there are three ways to be stopped: ``halt`` (nothing is sent, open orders are cancelled), ``reduce_only``
(only orders that shrink a position), ``flatten`` (every asset sold to cash through the normal plan,
so within its liquidity limits, over as many cycles as that takes).

The rules are pure functions of numbers the engine measures (equity marks, cycle statuses, forecast
σ_p, reconcile differences); ``KillSwitch`` is the thin edge that reads and writes the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bot.config import GuardSection
from bot.domain import RiskEvent, Severity
from bot.ledger import Ledger, TradingStateRow, utc

ACTIVE = "active"
STATES = (ACTIVE, "halt", "reduce_only", "flatten")


@dataclass(frozen=True)
class Trip:
    """A rule that fired: ``cause`` (drawdown, daily_loss, failed_cycles, reconcile, sigma), why in words,
    and the numbers behind it."""

    cause: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


def equity_trip(nav: float, high: float | None, day_open: float | None, g: GuardSection) -> Trip | None:
    """Drawdown from the high-water mark, then the day's loss from its first mark."""
    if nav <= 0 or not np.isfinite(nav):
        return None  # no value to judge (a NAV without a venue is refused before it gets here)
    if g.max_drawdown is not None and high is not None and high > 0:
        dd = 1.0 - nav / max(high, nav)
        if dd >= g.max_drawdown - 1e-12:  # a limit reached exactly trips (80 of 100 is 20%)
            return Trip("drawdown", f"equity {nav:,.2f} is {dd:.2%} below its high-water mark {high:,.2f} "
                        f"(limit {g.max_drawdown:.2%})", {"nav": nav, "high": high, "drawdown": dd})  # fmt: skip
    if g.max_daily_loss is not None and day_open is not None and day_open > 0:
        loss = 1.0 - nav / day_open
        if loss >= g.max_daily_loss - 1e-12:
            return Trip("daily_loss", f"equity {nav:,.2f} is {loss:.2%} below the day's first mark "
                        f"{day_open:,.2f} (limit {g.max_daily_loss:.2%})",
                        {"nav": nav, "day_open": day_open, "loss": loss})  # fmt: skip
    return None


def failed_cycles_trip(statuses_newest_first: Sequence[str], g: GuardSection) -> Trip | None:
    """N cycles failed in a row (the newest N terminal cycles all ``failed``)."""
    n = g.max_failed_cycles
    if n is None or len(statuses_newest_first) < n:
        return None
    if all(s == "failed" for s in statuses_newest_first[:n]):
        return Trip("failed_cycles", f"the last {n} cycles failed", {"cycles": n})
    return None


def sigma_trip(sigma_annual: float, g: GuardSection, where: str) -> Trip | None:
    c = g.sigma_ceiling_annual
    if c is None or not sigma_annual > c:  # NaN never passes as safe: a forecast that is NaN fails earlier
        return None
    return Trip("sigma", f"forecast σ_p {sigma_annual:.2%}/yr of the book at {where} is above the ceiling {c:.2%}",
                {"sigma": sigma_annual, "ceiling": c})  # fmt: skip


def mismatch_trip(venue: str, value: float, nav: float, g: GuardSection) -> Trip | None:
    """A venue's positions differ from the ledger's by more than a share of NAV (the venue is the truth,
    but a book nobody can explain must not keep trading)."""
    tol = g.max_reconcile_mismatch
    if tol is None or nav <= 0 or value / nav <= tol:
        return None
    return Trip("reconcile", f"venue {venue}: positions differ from the ledger by {value:,.2f} "
                f"({value / nav:.2%} of NAV, limit {tol:.2%})", {"venue": venue, "value": value})  # fmt: skip


def allows(state: str, side: str) -> bool:
    """May an order of this side be sent in this state? Sells shrink a long-only book: they are the only
    orders ``reduce_only`` and ``flatten`` send."""
    if state == ACTIVE:
        return True
    if state == "halt":
        return False
    return side == "sell"


def restrict(state: str, w0: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """The weights the plan may move to in this state: unchanged when active; the current ones when halted;
    no weight above its current one under ``reduce_only``; all cash under ``flatten``."""
    if state == ACTIVE:
        return decided
    if state == "halt":
        return np.array(w0, dtype=float, copy=True)
    if state == "reduce_only":
        return np.minimum(decided, w0)
    return np.zeros_like(decided)


def trip_records(trip: Trip, action: str, when: datetime, by: str, nav: float | None,
                 cycle_key: str | None = None) -> tuple[TradingStateRow, RiskEvent]:  # fmt: skip
    """The state row and the ``kill_switch`` event a trip writes (the daemon's and the fast backtest's)."""
    ev = RiskEvent("kill_switch", Severity.CRITICAL, "guard",
                   f"kill switch tripped ({trip.cause}): {trip.message}; {action} until `rwabot resume`",
                   when, cycle_key, {"cause": trip.cause, "action": action, **trip.data})  # fmt: skip
    row = TradingStateRow(time=when, state=action, cause=trip.cause, reason=trip.message, by=by, nav=nav,
                          data=dict(trip.data))  # fmt: skip
    return row, ev


class KillSwitch:
    """The trading state in the ledger, and the one way to change it (a trip or a resume)."""

    def __init__(self, ledger: Ledger, guard: GuardSection, now: Callable[[], datetime]) -> None:
        self.ledger = ledger
        self.guard = guard
        self.now = now
        self._row: TradingStateRow | None = ledger.trading_state()

    @property
    def state(self) -> str:
        return self._row.state if self._row is not None else ACTIVE

    @property
    def row(self) -> TradingStateRow | None:
        return self._row

    def refresh(self) -> str:
        """Re-read the state: ``rwabot resume`` writes it from another process."""
        self._row = self.ledger.trading_state()
        return self.state

    def since(self) -> datetime | None:
        """When the state last changed (a resume resets the high-water mark: the loss was accepted)."""
        return utc(self._row.time) if self._row is not None else None

    def equity_baselines(self, now: datetime) -> tuple[float | None, float | None]:
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return self.ledger.equity_extremes(self.since(), day)

    def trip(self, trip: Trip, by: str, nav: float | None, cycle_key: str | None = None) -> RiskEvent | None:
        """Stop trading for ``trip``; a switch already tripped stays as it is (the first cause is the one
        a person must look at). Returns the ``kill_switch`` event written with the state, or None."""
        if self.refresh() != ACTIVE:
            return None
        row, ev = trip_records(trip, self.guard.action, self.now(), by, nav, cycle_key)
        self._row = self.ledger.set_trading_state(row, ev)
        return ev

    def resume(self, reason: str, by: str = "cli", nav: float | None = None) -> tuple[str, RiskEvent]:
        """Back to active, with the reason recorded; returns the state it left and the event written."""
        if not reason.strip():
            raise ValueError("a resume needs a reason")
        before = self.refresh()
        when = self.now()
        ev = RiskEvent("kill_switch_resumed", Severity.WARNING, "guard", f"trading resumed from {before} by {by}: "
                       f"{reason}", when, None, {"from": before, "reason": reason})  # fmt: skip
        self._row = self.ledger.set_trading_state(
            TradingStateRow(time=when, state=ACTIVE, cause="resume", reason=reason, by=by, nav=nav), ev
        )
        return before, ev
