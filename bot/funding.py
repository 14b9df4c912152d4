"""Funding: which transfers of quote cash between venues a cycle plans, as a pure function.

Cash cannot jump between venues: an exchange balance cannot buy a token in an on-chain wallet. A
target that puts more of the book on a venue than the venue holds is reached in two steps: this
cycle sends the cash (a transfer leg, before any order) and trades the best risk-balanced book the
venues can hold *now* (the optimizer under venue budgets); a later cycle, once the cash has arrived,
trades the rest. ``plan_transfers`` decides the first step from numbers only; the cycle resolves
addresses, checks the allow-list and sends.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.config import FundingSection, RouteSection, VenueLimitsSection


def transfer_client_id(cycle_key: str, source: str, destination: str) -> str:
    """Deterministic per (cycle, route): a replanned or restarted cycle finds its own transfer."""
    digest = hashlib.blake2b(f"{cycle_key}|transfer|{source}|{destination}".encode(), digest_size=12).hexdigest()
    return f"rt{digest}"


@dataclass(frozen=True)
class VenueCash:
    """One venue's side of the funding decision, in the quote currency.

    ``value``: cash and positions now (what its budget is made of); ``need``: what the unconstrained
    target needs there, buffer included; ``spendable``: cash that can leave now; ``incoming``: cash
    already in transit to it; ``fee``: the fee it charges per transfer sent (an estimate, so that a
    transfer never asks for cash the venue cannot pay its fee from); ``reserve``: cash it keeps for its
    own trading costs (the cash buffer of what the target holds there), never sent."""

    value: float
    need: float
    spendable: float
    incoming: float = 0.0
    fee: float = 0.0
    reserve: float = 0.0


@dataclass(frozen=True)
class PlannedTransfer:
    source: str
    destination: str
    amount: float
    route: RouteSection


@dataclass(frozen=True)
class FundingSkip:
    source: str
    destination: str
    reason: str


def plan_transfers(
    venues: Mapping[str, VenueCash],
    routes: Sequence[RouteSection],
    limits: Mapping[str, VenueLimitsSection],
    sent_today: Mapping[str, float],
    min_gap: float = 0.0,
) -> tuple[list[PlannedTransfer], list[FundingSkip]]:
    """Transfers that move each venue's surplus cash to the venues short of their target.

    A venue is short by ``need − value − incoming`` and has a surplus of ``value − need`` of which only
    its spendable cash (less the fee) can leave now; the largest shortfalls are served first, each from
    the largest surplus with a route to it. Each amount respects the source's ``max_transfer`` and what
    is left of its ``daily_cap`` (rolling 24 h, ``sent_today``); an amount under ``min_transfer`` is not
    worth its fee and is skipped (and said, unless it is noise under a tenth of the minimum). A venue short
    by less than ``min_gap`` (quote currency) is left alone: the book's drift moves a little value between
    venues every hour, and chasing it would send a transfer, and pay its fee, every hour; the venue
    budget holds the difference meanwhile. Amounts are whole cents, rounded down.
    """
    surplus = {v: max(min(c.value - c.need, c.spendable - c.fee - c.reserve), 0.0) for v, c in venues.items()}
    short = {
        v: c.need - c.value - c.incoming
        for v, c in venues.items()
        if c.need - c.value - c.incoming > max(min_gap, 0.0)
    }
    room = {v: max(limits[v].daily_cap - sent_today.get(v, 0.0), 0.0) if v in limits else 0.0 for v in venues}
    out: list[PlannedTransfer] = []
    skips: list[FundingSkip] = []
    for dest, gap in sorted(short.items(), key=lambda kv: -kv[1]):
        sources = [r for r in routes if r.destination == dest and r.source in venues]
        for r in sorted(sources, key=lambda r: -surplus.get(r.source, 0.0)):
            if gap <= 0:
                break
            src = r.source
            lim = limits[src]
            amount = math.floor(min(gap, surplus[src], lim.max_transfer, room[src]) * 100) / 100
            if amount < lim.min_transfer:
                if gap >= 0.1 * lim.min_transfer and surplus[src] > 0:
                    why = (
                        f"daily cap {lim.daily_cap:,.2f} reached" if room[src] < lim.min_transfer
                        else f"{amount:,.2f} is under the minimum transfer {lim.min_transfer:,.2f}"
                    )
                    skips.append(FundingSkip(src, dest, f"{dest} is short {gap:,.2f}; not sent from {src}: {why}"))
                continue
            out.append(PlannedTransfer(src, dest, amount, r))
            surplus[src] -= amount + venues[src].fee
            room[src] -= amount
            gap -= amount
        if gap > 0 and not sources:
            skips.append(FundingSkip("", dest, f"{dest} is short {gap:,.2f} and no funding route leads to it"))
    return out, skips


def transfer_refusal(
    funding: FundingSection,
    client_id: str,
    source: str,
    destination: str,
    asset: str,
    amount: float,
    address: str,
    sent_today: float,
) -> str:
    """Why a transfer must not be sent (empty: it may): the allow-list, then the source's limits and its
    rolling 24-hour cap. One rule for the daemon (checked before the source is asked) and the fast backtest."""
    if not funding.allowed(address):
        return (f"transfer {client_id} of {amount:,.2f} {asset} from {source} to {destination}: address "
                f"{address!r} is not on funding.allow; nothing sent")  # fmt: skip
    lim = funding.limits_of(source)
    if not lim.min_transfer <= amount <= lim.max_transfer:
        return (f"transfer {client_id}: {amount:,.2f} is outside the limits of {source} "
                f"[{lim.min_transfer:,.2f}, {lim.max_transfer:,.2f}]")  # fmt: skip
    if sent_today + amount > lim.daily_cap * (1 + 1e-9):
        return (f"transfer {client_id}: {source} sent {sent_today:,.2f} in 24 h; {amount:,.2f} more passes "
                f"its daily cap {lim.daily_cap:,.2f}")  # fmt: skip
    return ""
