"""Whether a cycle (or a backtest's cycles) failed, in one line: what ``rwabot run --once``, ``rwabot
backtest`` and ``rwabot status`` turn into an exit code or a ``failing`` status.

A cycle failed when its status is ``failed`` (it could not be planned: no data, no forecast, every venue
down at planning), or when every configured venue failed during it (``venue_failed`` events of its key:
nothing it meant to trade was traded, though it is ``done``). One venue of several failing is not a
failed cycle: the others traded, and the event says which one did not.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from bot.ledger import Ledger


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cycle_failure(cycle: Any, ledger: Ledger, venues: Collection[str], events: list[Any] | None = None) -> str | None:
    """Why ``cycle`` (a ``CycleReport`` or ``CycleRow``: ``key``, ``status``, ``message``) failed, in one
    line; None if it did not. ``venues``: the names of the configured venues; ``events``: the ledger's
    ``venue_failed`` events, when the caller has them already."""
    if cycle.status == "failed":
        return one_line(f"cycle {cycle.key} failed: {cycle.message or 'no reason recorded'}")
    if cycle.status == "halted":  # the kill switch refused it (a report only: no cycle row is written)
        return one_line(f"cycle {cycle.key} not run: {cycle.message}")
    failed: dict[str, str] = {}
    for e in ledger.events("venue_failed") if events is None else events:
        if e.cycle_key == cycle.key and e.where.startswith("venue:"):
            failed.setdefault(e.where.removeprefix("venue:"), e.message)  # events come newest first
    if venues and set(venues) <= set(failed):
        why = "; ".join(f"{v}: {failed[v]}" for v in sorted(venues))
        return one_line(f"cycle {cycle.key}: every venue failed ({why})")
    return None


def run_failure(ledger: Ledger, venues: Collection[str]) -> str | None:
    """Why a run of many cycles (a backtest) failed, in one line: how many of its cycles failed, and the
    first; None if none did."""
    events = ledger.events("venue_failed")
    cycles = ledger.cycles()
    bad = [why for c in cycles if (why := cycle_failure(c, ledger, venues, events)) is not None]
    if not bad:
        return None
    return one_line(f"{len(bad)} of {len(cycles)} cycles failed; first: {bad[0]}")


def ledger_failure(path: str | Path, venues: Collection[str]) -> str | None:
    """``run_failure`` of the ledger at ``path``; None when there is none (a run that keeps no ledger)."""
    if not Path(path).exists():
        return None
    ledger = Ledger(path)
    try:
        return run_failure(ledger, venues)
    finally:
        ledger.close()
