"""The paper venues' simulated funding network: quote cash moving between paper accounts.

Every paper account of one bot (the paper exchange, the ccxt and evm venues in paper mode) shares one
SQLite file under the state directory. A transfer is one row, written in one commit when the source
accepts it: from then on the source's cash is short of ``amount + fee`` and, once ``arrive_at`` has
passed on the bot's clock, the destination's cash is long of ``amount``. Nothing else is written on
arrival, so there is no second step that a crash could lose or repeat: a paper account's cash is its
own book's cash plus ``PaperNetwork.net_cash`` of its name. A transfer marked to fail (``fail_after``)
refunds the source at that time and never arrives, as a withdrawal an exchange rejects after accepting.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.domain import DepositAddress, Transfer, TransferState, TransferStatus
from bot.errors import TransferRefused

PREFIX = "paper:"


def paper_address(venue: str) -> str:
    """The deposit address of a paper account: ``paper:<venue name>``."""
    return f"{PREFIX}{venue}"


class PaperNetwork:
    """One file per state directory; safe to open from every paper venue of the same bot."""

    def __init__(self, state_dir: Path) -> None:
        path = Path(state_dir) / "paper-network.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            """CREATE TABLE IF NOT EXISTS paper_transfer (
                client_id TEXT PRIMARY KEY, source TEXT NOT NULL, address TEXT NOT NULL, asset TEXT NOT NULL,
                network TEXT NOT NULL, amount REAL NOT NULL, fee REAL NOT NULL, created_at TEXT NOT NULL,
                arrive_at TEXT NOT NULL, fail_after TEXT)"""
        )

    def deposit_address(self, venue: str, asset: str, network: str) -> DepositAddress:
        return DepositAddress(venue, asset, network, paper_address(venue))

    def send(
        self,
        venue: str,
        t: Transfer,
        *,
        available: float,
        fee: float,
        delay: timedelta,
        now: datetime,
        fail_after: timedelta | None = None,
    ) -> TransferState:
        """Accept ``t`` from paper account ``venue`` (idempotent per client id). ``available`` is the
        source's spendable cash before it; a transfer it cannot pay for is refused, nothing written."""
        existing = self.state(t.client_id, now)
        if existing is not None:
            return existing
        if not t.address.startswith(PREFIX):
            raise TransferRefused(venue, f"transfer {t.client_id}: {t.address!r} is not a paper account's address")
        if not t.amount > 0:
            raise TransferRefused(venue, f"transfer {t.client_id}: amount {t.amount} is not positive")
        if available < t.amount + fee:
            raise TransferRefused(
                venue, f"transfer {t.client_id}: needs {t.amount + fee:,.2f} (fee {fee:,.2f}), has {available:,.2f}"
            )
        now = now.astimezone(UTC)
        fail = (now + fail_after).isoformat() if fail_after is not None else None
        with self._lock:
            self.db.execute(
                "INSERT OR IGNORE INTO paper_transfer VALUES (?,?,?,?,?,?,?,?,?,?)",
                (t.client_id, venue, t.address, t.asset, t.network, t.amount, fee, now.isoformat(),
                 (now + delay).isoformat(), fail),
            )  # fmt: skip
        state = self.state(t.client_id, now)
        assert state is not None
        return state

    def state(self, client_id: str, now: datetime) -> TransferState | None:
        with self._lock:
            row = self.db.execute(
                "SELECT amount, fee, created_at, arrive_at, fail_after FROM paper_transfer WHERE client_id=?",
                (client_id,),
            ).fetchone()
        if row is None:
            return None
        amount, fee, created, arrive, fail = row
        now = now.astimezone(UTC)
        if fail is not None and now >= datetime.fromisoformat(fail):
            return TransferState(client_id, TransferStatus.FAILED, amount, 0.0, 0.0, f"paper-{client_id}", None,
                                 "paper withdrawal failed after it was accepted; refunded", datetime.fromisoformat(fail))  # fmt: skip  # noqa: E501
        if now >= datetime.fromisoformat(arrive) and fail is None:
            return TransferState(client_id, TransferStatus.ARRIVED, amount, fee, 0.0, f"paper-{client_id}",
                                 f"paper-{client_id}", "", datetime.fromisoformat(arrive))  # fmt: skip
        return TransferState(client_id, TransferStatus.PENDING, amount, fee, 0.0, f"paper-{client_id}",
                             f"paper-{client_id}", f"in transit until {arrive}", datetime.fromisoformat(created))  # fmt: skip  # noqa: E501

    def net_cash(self, venue: str, now: datetime) -> float:
        """What the network has moved into (+) and out of (−) paper account ``venue`` by ``now``."""
        now_s = now.astimezone(UTC).isoformat()
        with self._lock:
            out = self.db.execute(
                "SELECT COALESCE(SUM(amount + fee), 0) FROM paper_transfer WHERE source=? "
                "AND (fail_after IS NULL OR fail_after > ?)",
                (venue, now_s),
            ).fetchone()[0]
            into = self.db.execute(
                "SELECT COALESCE(SUM(amount), 0) FROM paper_transfer WHERE address=? AND arrive_at <= ? "
                "AND fail_after IS NULL",
                (paper_address(venue), now_s),
            ).fetchone()[0]
        return float(into) - float(out)

    def deposit_status(self, venue: str, client_id: str, now: datetime) -> TransferStatus | None:
        """Whether paper account ``venue`` has been credited with transfer ``client_id``."""
        st = self.state(client_id, now)
        if st is None:
            return None
        with self._lock:
            row = self.db.execute("SELECT address FROM paper_transfer WHERE client_id=?", (client_id,)).fetchone()
        if row is None or row[0] != paper_address(venue):
            return None
        return st.status if st.status is not TransferStatus.FAILED else None

    def close(self) -> None:
        self.db.close()
