"""The wallet's nonces: handed out locally, recovered from the ledger and the node, repaired, bumped.

Why a manager of our own. web3 has no nonce manager, and asking the node for every transaction is
wrong twice over: a transaction signed and committed to the ledger but not yet broadcast (a crash
between the two) is invisible to the node, so its nonce would be handed out again, and a nonce the
node lost (a refused transaction) leaves a *gap* that blocks every later transaction forever. The
ledger's ``chain_tx`` rows are the durable record: each signed transaction with its nonce and bytes.

The rules, as pure functions on numbers (``plan``) so that they can be tested without a chain:

* the next nonce is past both the node's pending count and every live (signed or sent) ledger row;
* a nonce between the node's pending count and the next one that no live row holds is a gap: it is
  filled with a 0-value transfer to ourselves, so the queued transactions behind it can be mined;
* a live row the node does not know is broadcast again (same bytes, same hash: it executes once);
* a transaction that waits in the mempool longer than ``stuck_after_s`` is replaced by the same
  call at the same nonce with both fee caps raised by at least ``fee_bump`` (12.5 %, above the 10 %
  that geth, anvil and reth demand of a replacement), never above the gas policy's cap;
* a cancel is the same replacement with a 0-value self-transfer instead of the call;
* when a nonce is consumed, the row of ours that was mined wins; our other rows at that nonce were
  *replaced*; if none of ours was mined, all of them were *dropped* (another signer used the nonce).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from pydantic import Field
from web3 import Web3

from bot.components import ComponentConfig

LIVE = ("signed", "sent")


class NoncePolicy(ComponentConfig):
    """How the venue treats a transaction that does not get mined."""

    stuck_after_s: float = Field(default=60.0, gt=0, le=86_400, description="in the mempool this long: replace")
    fee_bump: float = Field(default=0.125, ge=0.125, le=10.0, description="raise both fee caps by at least this")
    max_replacements: int = Field(default=3, ge=0, le=20)


@dataclass(frozen=True)
class NoncePlan:
    """What the node and the ledger together say about the wallet's nonces."""

    mined: int  # transactions of the wallet in blocks (the node's ``latest`` count)
    pending: int  # the node's ``pending`` count: mined plus the contiguous run in its mempool
    next: int  # the nonce to hand out next
    gaps: tuple[int, ...]  # nonces no transaction holds, below live ones: fill them or nothing mines
    unknown: tuple[int, ...]  # nonces of live ledger rows at or above ``pending``: broadcast them again


def plan(mined: int, pending: int, live: Iterable[int]) -> NoncePlan:
    """The next nonce and the repairs, from the node's counts and the nonces of live ledger rows.

    A live row below ``mined`` is settled by looking at receipts, not here. Rows at or above
    ``pending`` are not in the node's contiguous run: either the node never saw them, or they wait
    behind a gap; broadcasting them again is harmless (same hash) and finds out which.
    """
    if pending < mined:
        pending = mined  # a node that reorged or restarted: its mempool is empty
    ours = sorted({n for n in live if n >= mined})
    nxt = max([pending, *(n + 1 for n in ours)])
    held = set(ours)
    gaps = tuple(n for n in range(pending, nxt) if n not in held)
    unknown = tuple(n for n in ours if n >= pending)
    return NoncePlan(mined, pending, nxt, gaps, unknown)


def bumped(fee: int, bump: float) -> int:
    """A fee cap raised by at least ``bump`` (rounded up, at least 1 wei more)."""
    return max(math.ceil(fee * (1.0 + bump)), fee + 1)


def decode(raw: str) -> dict[str, Any]:
    """The fields of a signed EIP-1559 transaction (what is needed to sign its replacement)."""
    tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    return {
        "type": 2,
        "chainId": int(tx["chainId"]),
        "nonce": int(tx["nonce"]),
        "to": Web3.to_checksum_address(tx["to"]),
        "value": int(tx["value"]),
        "data": bytes(tx["data"]),
        "gas": int(tx["gas"]),
        "maxFeePerGas": int(tx["maxFeePerGas"]),
        "maxPriorityFeePerGas": int(tx["maxPriorityFeePerGas"]),
    }


def replacement(raw: str, *, base_fee: int, priority_fee: int, bump: float, cancel_to: str | None = None) -> dict:
    """The transaction that replaces ``raw``: same nonce, both caps raised by ``bump`` and at least
    enough for the current base fee; ``cancel_to`` makes it a 0-value transfer to that address."""
    old = decode(raw)
    prio = max(bumped(old["maxPriorityFeePerGas"], bump), priority_fee)
    fee = max(bumped(old["maxFeePerGas"], bump), 2 * base_fee + prio)
    new = {**old, "maxPriorityFeePerGas": prio, "maxFeePerGas": fee}
    if cancel_to is not None:
        new.update(to=cancel_to, value=0, data=b"", gas=21_000)
    return new


class NonceManager:
    """Hands out consecutive nonces; seeded, after any doubt, from the node *and* the ledger.

    ``repair`` is called with the plan before the first nonce of a (re)sync is handed out: the
    venue fills the gaps and rebroadcasts what the node lacks, since only it can sign.
    """

    def __init__(
        self,
        mined: Callable[[], int],
        pending: Callable[[], int],
        live: Callable[[], Iterable[int]],
        repair: Callable[[NoncePlan], None] | None = None,
    ) -> None:
        self._mined, self._pending, self._live, self._repair = mined, pending, live, repair
        self._next: int | None = None
        self._lock = threading.RLock()

    def current_plan(self) -> NoncePlan:
        return plan(self._mined(), self._pending(), self._live())

    def reserve(self) -> int:
        with self._lock:
            if self._next is None:
                p = self.current_plan()
                if self._repair is not None and (p.gaps or p.unknown):
                    self._repair(p)
                    p = self.current_plan()
                self._next = p.next
            n = self._next
            self._next += 1
            return n

    def resync(self) -> None:
        with self._lock:
            self._next = None
