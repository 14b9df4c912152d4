"""Orders in flight: legs a venue accepted and has not finished, followed until they end.

A leg is in flight while the ledger has it ``sending`` or ``open``: the venue accepted it (or may have)
and its final state is not known yet. The ccxt venue leaves an order so when it is still open after
its cancel and ``settle_timeout_s`` (a cancel the exchange acknowledged and has not carried out, an
order its index does not show yet, trades that lag the order); an ERC-7540 request is in flight for
days by design. Nothing about such a leg may wait for a restart: its fills belong in the ledger as soon
as the venue reports them.

Cycles already ask every venue holding open legs of finished cycles at their start
(``Engine.reconcile_venues``). Between cycles the engine calls ``follow_in_flight`` at each monitor
tick, and reports ``in_flight_count`` with each cycle and in ``rwabot status``:

- ``Engine.monitor``: first, ``follow_in_flight(self.ledger, self.c.venues,
  on_fill=lambda f: self._notify("rwabot_fill", fill=f), emit=self.emit, now=now)``;
- ``Engine._report_from_row``: ``in_flight=in_flight_count(self.ledger, row.key)`` (a ``CycleReport``
  field, printed by ``bot.cli.print_report`` as ``in flight N`` when N > 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import select

from bot.domain import Fill, OrderStatus, RiskEvent, Severity
from bot.errors import VenueError
from bot.ledger import CycleRow, Ledger, OrderRow

FINISHED_CYCLE = ("done", "failed", "expired")
"""Cycle statuses after which nobody executes the cycle's legs any more (``bot.cycle.TERMINAL_CYCLE``)."""

IN_FLIGHT = (OrderStatus.SENDING.value, OrderStatus.OPEN.value)


@dataclass(frozen=True)
class InFlightLeg:
    """A leg sent and not closed: where it is, and the cycle that sent it."""

    client_id: str
    venue: str
    asset: str
    status: str
    cycle_key: str
    cycle_status: str


def in_flight_legs(ledger: Ledger, cycle_key: str | None = None) -> list[InFlightLeg]:
    """Every leg the ledger has ``sending`` or ``open`` (of cycle ``cycle_key`` only, when given)."""
    with ledger.session() as s:
        q = (
            select(OrderRow, CycleRow.key, CycleRow.status)
            .join(CycleRow, CycleRow.id == OrderRow.cycle_id)  # type: ignore[arg-type]
            .where(OrderRow.status.in_(IN_FLIGHT))  # type: ignore[attr-defined]
        )
        if cycle_key is not None:
            q = q.where(CycleRow.key == cycle_key)
        rows = s.exec(q.order_by(OrderRow.id)).all()  # type: ignore[arg-type]
    return [InFlightLeg(r.client_id, r.venue, r.asset, r.status, key, status) for r, key, status in rows]


def in_flight_count(ledger: Ledger, cycle_key: str | None = None) -> int:
    """How many legs are still in flight (of cycle ``cycle_key``, when given): what a cycle report says."""
    return len(in_flight_legs(ledger, cycle_key))


def follow_in_flight(
    ledger: Ledger,
    venues: Mapping[str, Any],
    *,
    on_fill: Callable[[Fill], None] | None = None,
    emit: Callable[[RiskEvent], None] | None = None,
    now: datetime | None = None,
) -> list[InFlightLeg]:
    """Ask the venues about the legs of finished cycles still in flight, record what they say, and return
    the legs still in flight afterwards (of every cycle).

    Each leg is asked with the venue's optional ``follow_order(client_id)`` (the ccxt venue: its state now,
    the rest cancelled if it is still open, since nobody waits for it any more), else the contract's
    ``fetch_order``. What the venue says is recorded (``Ledger.record_order_state``: new fills once,
    ``on_fill`` for each). A leg the venue does not know is left as it is: the next cycle's reconcile
    closes it. A venue that fails (``VenueError``) is skipped until the next call, with a ``venue_failed``
    event through ``emit``; legs of cycles still executing are never touched (they belong to the cycle).
    """
    by_venue: dict[str, list[InFlightLeg]] = {}
    for leg in in_flight_legs(ledger):
        if leg.cycle_status in FINISHED_CYCLE and leg.venue in venues:
            by_venue.setdefault(leg.venue, []).append(leg)
    for vname, legs in sorted(by_venue.items()):
        venue = venues[vname]
        ask = getattr(venue, "follow_order", None) or venue.fetch_order
        for leg in legs:
            try:
                state = ask(leg.client_id)
            except VenueError as exc:
                if emit is not None:
                    emit(RiskEvent("venue_failed", Severity.CRITICAL, f"venue:{vname}",
                                   f"following order {leg.client_id} in flight: {exc}", now or datetime.now(UTC),
                                   None, {"client_id": leg.client_id}))  # fmt: skip
                break  # the venue is down: its other legs wait for the next tick too
            if state is None:
                continue
            for f in ledger.record_order_state(state):
                if on_fill is not None:
                    on_fill(f)
    return in_flight_legs(ledger)
