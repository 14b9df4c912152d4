"""The ledger: every cycle, target, order, fill, snapshot and risk event, in one SQLite file.

SQLite in WAL mode so that ``rwabot status`` can read while the daemon writes. A cycle's plan
(the cycle row, its targets and all its legs) commits in one transaction; each leg's intent is
committed *before* it is sent and its result after, so a crash between the two is resolved on
restart by looking the order up at the venue by its client id, never by sending it again.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint, event
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine, func, select

from bot.domain import Fill, Order, OrderState, OrderStatus, RiskEvent, Transfer, TransferState, TransferStatus
from bot.errors import LedgerError

SCHEMA_VERSION = 7
"""1: the first ledger; 2: adds ``chain_tx``; 3: adds ``async_request``; 4: adds the nullable column
``cycle.rc_dispersion_traded``; 5: adds ``transfer`` (funding legs), ``snapshot.transit``, ``target.bound``
and ``cycle.rc_dispersion_held_bound``/``_all``; 6: adds ``fill.product_fee``; 7: adds ``trading_state``
(the kill switch) and ``mark`` (equity marked every monitor tick). New tables and nullable
columns are created on open: older ledgers upgrade in place."""


def _naive(dt: datetime) -> datetime:
    """Every time in the ledger is UTC; SQLModel stores it with its offset."""
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def utc(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


class MetaRow(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class CycleRow(SQLModel, table=True):
    __tablename__ = "cycle"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, index=True)
    trigger: str
    scheduled_for: datetime
    started_at: datetime
    finished_at: datetime | None = None
    status: str = Field(index=True)
    nav_before: float | None = None
    nav_after: float | None = None
    sigma_p_annual: float | None = None
    rc_dispersion_target: float | None = None  # the optimizer's weights, before they are fitted to venue cash
    rc_dispersion_traded: float | None = None  # the stored target (fitted to each venue's value): what is traded to
    rc_dispersion_held: float | None = None  # the closing holdings, free assets (no bound of any kind binds)
    rc_dispersion_held_bound: float | None = None  # the closing holdings, the assets held at a bound
    rc_dispersion_held_all: float | None = None  # the closing holdings, every asset not at a cap, floor or hold
    forecaster: str = ""
    optimizer: str = ""
    policy: str = ""
    decision: str = ""
    message: str = ""


class TargetRow(SQLModel, table=True):
    __tablename__ = "target"
    id: int | None = Field(default=None, primary_key=True)
    cycle_id: int = Field(foreign_key="cycle.id", index=True)
    asset: str
    venue: str
    price: float
    upper: float
    current_weight: float
    target_weight: float
    decided_weight: float
    risk_contribution: float
    capped: bool = False
    bound: str | None = None  # the bound that binds the target: cap, floor, held, venue:<name>; None: free


class OrderRow(SQLModel, table=True):
    __tablename__ = "orders"
    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(unique=True, index=True)
    cycle_id: int = Field(foreign_key="cycle.id", index=True)
    leg: int
    venue: str
    asset: str
    side: str
    qty: float
    decision_price: float
    status: str = Field(index=True)
    filled_qty: float = 0.0
    venue_order_id: str | None = None
    message: str = ""
    created_at: datetime
    updated_at: datetime

    def to_order(self, cycle_key: str) -> Order:
        return Order(self.client_id, cycle_key, self.venue, self.asset, self.side, self.qty, self.decision_price)  # type: ignore[arg-type]


class FillRow(SQLModel, table=True):
    __tablename__ = "fill"
    __table_args__ = (UniqueConstraint("venue", "fill_id"),)
    id: int | None = Field(default=None, primary_key=True)
    fill_id: str
    venue: str
    client_id: str = Field(index=True)
    asset: str
    side: str
    qty: float
    price: float
    fee: float
    slippage: float
    gas: float = 0.0
    time: datetime
    # the part of ``fee`` a fund or issuer charged (ERC-4626 entry/exit fee, issuer manager fee), measured
    # by the venue (connectors/evm/fees.py): a cost kind of its own; None where the venue reports none
    product_fee: float | None = None


class SnapshotRow(SQLModel, table=True):
    __tablename__ = "snapshot"
    id: int | None = Field(default=None, primary_key=True)
    cycle_id: int | None = Field(default=None, foreign_key="cycle.id", index=True)
    time: datetime = Field(index=True)
    nav: float
    cash: float
    cash_by_venue: dict[str, float] = Field(sa_column=Column(JSON))
    positions: dict[str, float] = Field(sa_column=Column(JSON))
    prices: dict[str, float] = Field(sa_column=Column(JSON))
    transit: float | None = None  # quote cash in transfers the source sent and the destination has not credited


class TransferRow(SQLModel, table=True):
    """One funding leg: quote cash from one venue to another, a durable leg like an order.

    Written with its plan (``planned``); the destination address is fixed and the intent committed
    (``sending``) before the source is asked to send; after a crash the source is asked for it by
    ``client_id`` before anything is sent again. ``pending`` is cash in transit: counted in NAV,
    spendable at neither venue. ``fee`` and ``gas`` are costs of their own kind.
    """

    __tablename__ = "transfer"
    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(unique=True, index=True)
    cycle_id: int = Field(foreign_key="cycle.id", index=True)
    leg: int
    source: str = Field(index=True)
    destination: str = Field(index=True)
    asset: str
    network: str
    amount: float
    address: str | None = None
    tag: str | None = None
    status: str = Field(index=True)
    external_id: str | None = None
    txid: str | None = None
    fee: float = 0.0
    gas: float = 0.0
    message: str = ""
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None = None
    arrived_at: datetime | None = None

    def to_transfer(self, cycle_key: str) -> Transfer:
        return Transfer(self.client_id, cycle_key, self.source, self.destination, self.asset, self.amount,
                        self.network, self.address or "", self.tag)  # fmt: skip


class ChainTxRow(SQLModel, table=True):
    """One signed on-chain transaction of an order, written *before* it is broadcast.

    The signed bytes are kept (never the key): after a crash the same transaction, with the same
    hash and nonce, can be looked up or broadcast again, which can never execute twice.
    """

    __tablename__ = "chain_tx"
    id: int | None = Field(default=None, primary_key=True)
    tx_hash: str = Field(unique=True, index=True)
    venue: str = Field(index=True)
    client_id: str = Field(index=True)
    step: str  # approve, deposit, redeem, swap, cancel
    chain_id: int
    sender: str
    nonce: int
    raw: str
    asset: str
    side: str
    qty: float
    decision_price: float
    status: str = Field(index=True)  # signed, sent, mined, reverted, dropped
    gas_limit: int
    max_fee_per_gas: int
    gas_used: int | None = None
    effective_gas_price: int | None = None
    gas_cost_native: float = 0.0
    gas_cost_quote: float = 0.0
    block_number: int | None = None
    message: str = ""
    created_at: datetime
    updated_at: datetime


class AsyncRequestRow(SQLModel, table=True):
    """An asynchronous subscription or redemption (ERC-7540 request, or a request-then-claim variant).

    Raw token amounts are decimal strings (18-decimal amounts overflow SQLite's 64-bit integers).
    The transactions themselves are ``chain_tx`` rows of the same ``client_id`` (steps ``approve``,
    ``request``, ``claim``), written before broadcast; ``claim_txs`` lists the claims already turned
    into fills, so replaying a poll after a crash never books a claim twice.
    """

    __tablename__ = "async_request"
    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(unique=True, index=True)
    venue: str = Field(index=True)
    asset: str = Field(index=True)
    side: str  # deposit (buys shares) or redeem (sells shares)
    kind: str  # erc7540 or cooldown
    vault: str
    controller: str
    request_id: str | None = None
    amount_raw: str  # assets for a deposit, shares for a redemption
    qty: float  # shares the order asked for
    decision_price: float
    status: str = Field(index=True)  # requesting, pending, claimable, claiming, claimed, failed
    request_tx: str | None = None
    claimable_at: int | None = None
    claim_txs: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    fills: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    filled_qty: float = 0.0
    message: str = ""
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None = None


class RiskEventRow(SQLModel, table=True):
    __tablename__ = "risk_event"
    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(index=True)
    cycle_key: str | None = None
    kind: str = Field(index=True)
    severity: str
    where: str
    message: str
    data: dict[str, Any] = Field(sa_column=Column(JSON))


class TradingStateRow(SQLModel, table=True):
    """One change of the trading state (the kill switch): the last row is the state now; none: active.

    ``state`` is ``active``, ``halt``, ``reduce_only`` or ``flatten``; ``cause`` what tripped it
    (``drawdown``, ``daily_loss``, ``failed_cycles``, ``reconcile``, ``sigma``) or ``resume``; ``by``
    who wrote it (``monitor``, ``cycle``, ``cli``). Rows are never updated: the history is the audit."""

    __tablename__ = "trading_state"
    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(index=True)
    state: str
    cause: str
    reason: str
    by: str
    nav: float | None = None
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class MarkRow(SQLModel, table=True):
    """Equity marked to market from the venues at a monitor tick (or a cycle's closing snapshot is one
    too): what the kill switch's drawdown and daily loss, and the metrics, are measured on.
    ``data_time`` is the as-of time of the freshest price the mark used."""

    __tablename__ = "mark"
    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(index=True)
    nav: float
    sigma_p_annual: float | None = None
    data_time: datetime | None = None


@dataclass(frozen=True)
class PlannedLeg:
    order: Order
    leg: int


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(path: str | Path) -> Engine:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{p}", connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _on_connect)
    return engine


class Ledger:
    """Owns the SQLite file; every method is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.engine = make_engine(self.path)
        tables = [t.__table__ for t in _TABLES]  # type: ignore[attr-defined]
        SQLModel.metadata.create_all(self.engine, tables=tables)
        self._add_missing_columns()
        # create_all skips the indexes of a table that exists: a bulk load cut short (``bulk_load``) left its
        # tables without them; they are built here before anything reads or writes
        with self.engine.begin() as con:
            have = {r[0] for r in con.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
            for table in tables:
                for ix in table.indexes:
                    if ix.name not in have:
                        ix.create(con)
        with Session(self.engine) as s:
            row = s.get(MetaRow, "schema_version")
            if row is None:
                s.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
                s.commit()
            elif int(row.value) < SCHEMA_VERSION:  # older ledgers only lack tables create_all just added
                row.value = str(SCHEMA_VERSION)
                s.add(row)
                s.commit()
            elif int(row.value) > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path}: ledger schema version {row.value} is newer than this rwabot "
                    f"({SCHEMA_VERSION}); upgrade rwabot"
                )

    def _add_missing_columns(self) -> None:
        """``create_all`` creates missing tables but never alters one: a column added to a model since the
        ledger was written is added here (only nullable ones, so existing rows stay valid)."""
        with self.engine.begin() as con:
            for model in _TABLES:
                table = model.__table__  # type: ignore[attr-defined]
                have = {row[1] for row in con.exec_driver_sql(f'PRAGMA table_info("{table.name}")')}
                for col in table.columns:
                    if col.name in have:
                        continue
                    if not col.nullable:
                        raise LedgerError(f"{self.path}: table {table.name} lacks the required column {col.name}")
                    kind = col.type.compile(dialect=self.engine.dialect)
                    con.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{col.name}" {kind}')

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    # -- cycles -----------------------------------------------------------------------------------

    def get_cycle(self, key: str) -> CycleRow | None:
        with self.session() as s:
            return s.exec(select(CycleRow).where(CycleRow.key == key)).first()

    def last_cycle(self, *, statuses: Sequence[str] | None = None) -> CycleRow | None:
        with self.session() as s:
            q = select(CycleRow)
            if statuses:
                q = q.where(CycleRow.status.in_(statuses))  # type: ignore[attr-defined]
            return s.exec(q.order_by(CycleRow.scheduled_for.desc(), CycleRow.id.desc())).first()  # type: ignore[attr-defined, union-attr]

    def recent_cycles(self, n: int) -> list[CycleRow]:
        """The newest ``n`` finished cycles (done, failed, expired), newest first."""
        if n <= 0:
            return []
        with self.session() as s:
            q = select(CycleRow).where(CycleRow.status.in_(("done", "failed", "expired")))  # type: ignore[attr-defined]
            return list(s.exec(q.order_by(CycleRow.id.desc()).limit(n)))  # type: ignore[union-attr]

    def latest_time(self) -> datetime | None:
        """The newest time the ledger holds (a mark, a snapshot, a cycle): "now" for a ledger written on a
        simulated clock, read by a command that has no clock of its own (``rwabot resume``, ``status``)."""
        with self.session() as s:
            times = [s.exec(select(func.max(MarkRow.time))).one(), s.exec(select(func.max(SnapshotRow.time))).one(),
                     s.exec(select(func.max(CycleRow.started_at))).one()]  # fmt: skip
        found = [utc(t) for t in times if t is not None]
        return max(found) if found else None  # type: ignore[type-var]

    def unfinished_cycles(self) -> list[CycleRow]:
        with self.session() as s:
            q = select(CycleRow).where(CycleRow.status == "executing").order_by(CycleRow.id)  # type: ignore[arg-type]
            return list(s.exec(q))

    def create_plan(
        self,
        cycle: CycleRow,
        targets: Sequence[TargetRow],
        legs: Sequence[PlannedLeg],
        events: Sequence[RiskEvent] = (),
        transfers: Sequence[Transfer] = (),
    ) -> CycleRow:
        """Write a cycle, its targets, its legs (transfers, then orders) and its planning events in one
        transaction."""
        now = _naive(datetime.now(UTC))
        with self.session() as s:
            cycle.scheduled_for = _naive(cycle.scheduled_for)
            cycle.started_at = _naive(cycle.started_at)
            s.add(cycle)
            s.flush()
            assert cycle.id is not None
            for t in targets:
                t.cycle_id = cycle.id
                s.add(t)
            for k, t in enumerate(transfers):
                s.add(
                    TransferRow(
                        client_id=t.client_id,
                        cycle_id=cycle.id,
                        leg=k,
                        source=t.source,
                        destination=t.destination,
                        asset=t.asset,
                        network=t.network,
                        amount=t.amount,
                        address=t.address or None,
                        tag=t.tag,
                        status=TransferStatus.PLANNED.value,
                        created_at=now,
                        updated_at=now,
                    )
                )
            for leg in legs:
                o = leg.order
                s.add(
                    OrderRow(
                        client_id=o.client_id,
                        cycle_id=cycle.id,
                        leg=leg.leg,
                        venue=o.venue,
                        asset=o.asset,
                        side=o.side,
                        qty=o.qty,
                        decision_price=o.decision_price,
                        status=OrderStatus.PLANNED.value,
                        created_at=now,
                        updated_at=now,
                    )
                )
            for e in events:
                s.add(_event_row(e))
            s.commit()
        return cycle

    def orders_of(self, cycle_id: int) -> list[OrderRow]:
        with self.session() as s:
            q = select(OrderRow).where(OrderRow.cycle_id == cycle_id).order_by(OrderRow.leg)  # type: ignore[arg-type]
            return list(s.exec(q))

    def mark_sending(self, client_id: str, qty: float) -> None:
        """Commit the intent to send (with the final quantity) before the venue sees the order."""
        with self.session() as s:
            row = s.exec(select(OrderRow).where(OrderRow.client_id == client_id)).one()
            row.status = OrderStatus.SENDING.value
            row.qty = qty
            row.updated_at = _naive(datetime.now(UTC))
            s.add(row)
            s.commit()

    def close_order(self, client_id: str, status: OrderStatus, message: str) -> None:
        with self.session() as s:
            row = s.exec(select(OrderRow).where(OrderRow.client_id == client_id)).one()
            row.status = status.value
            row.message = message[:500]
            row.updated_at = _naive(datetime.now(UTC))
            s.add(row)
            s.commit()

    def record_order_state(self, state: OrderState) -> list[Fill]:
        """Store what the venue says of an order; returns the fills that were new to the ledger."""
        new: list[Fill] = []
        with self.session() as s:
            row = s.exec(select(OrderRow).where(OrderRow.client_id == state.client_id)).one()
            for f in state.fills:
                exists = s.exec(
                    select(FillRow.id).where(FillRow.venue == f.venue, FillRow.fill_id == f.fill_id)
                ).first()
                if exists is None:
                    s.add(
                        FillRow(
                            fill_id=f.fill_id,
                            venue=f.venue,
                            client_id=f.client_id,
                            asset=f.asset,
                            side=f.side,
                            qty=f.qty,
                            price=f.price,
                            fee=f.fee,
                            slippage=f.slippage,
                            gas=f.gas,
                            time=_naive(f.time),
                            product_fee=getattr(f, "product_fee", None),
                        )
                    )
                    new.append(f)
            row.status = state.status.value
            row.filled_qty = state.filled_qty
            row.venue_order_id = state.venue_order_id
            if state.message:
                row.message = state.message[:500]
            row.updated_at = _naive(datetime.now(UTC))
            s.add(row)
            s.commit()
        return new

    # -- transfers --------------------------------------------------------------------------------

    def transfers_of(self, cycle_id: int) -> list[TransferRow]:
        with self.session() as s:
            q = select(TransferRow).where(TransferRow.cycle_id == cycle_id).order_by(TransferRow.leg)  # type: ignore[arg-type]
            return list(s.exec(q))

    def transfers(self, *, open_only: bool = False) -> list[TransferRow]:
        with self.session() as s:
            q = select(TransferRow)
            if open_only:
                q = q.where(
                    TransferRow.status.in_([TransferStatus.SENDING.value, TransferStatus.PENDING.value])  # type: ignore[attr-defined]
                )
            return list(s.exec(q.order_by(TransferRow.id)))  # type: ignore[arg-type]

    def mark_transfer_sending(self, client_id: str, address: str, tag: str | None, when: datetime) -> None:
        """Commit the intent, with the address it goes to, before the source venue sees the transfer."""
        fields = {"status": TransferStatus.SENDING.value, "address": address, "tag": tag, "sent_at": _naive(when)}
        self._touch(TransferRow, TransferRow.client_id == client_id, fields)

    def close_transfer(self, client_id: str, status: TransferStatus, message: str) -> None:
        self._touch(TransferRow, TransferRow.client_id == client_id, {"status": status.value, "message": message[:500]})

    def record_transfer_state(self, state: TransferState, when: datetime) -> TransferRow:
        """What the venues say of a transfer; a failed one costs nothing it did not pay (refunded)."""
        fields: dict[str, Any] = {"status": state.status.value, "fee": state.fee, "gas": state.gas}
        if state.external_id is not None:
            fields["external_id"] = state.external_id
        if state.txid is not None:
            fields["txid"] = state.txid
        if state.message:
            fields["message"] = state.message[:500]
        if state.status is TransferStatus.ARRIVED:
            fields["arrived_at"] = _naive(state.time or when)
        return self._touch(TransferRow, TransferRow.client_id == state.client_id, fields)

    def last_transfer_cost(self, source: str) -> float | None:
        """Fee plus gas of the last transfer ``source`` was charged for (None: none yet)."""
        with self.session() as s:
            row = s.exec(
                select(TransferRow)
                .where(TransferRow.source == source, TransferRow.fee + TransferRow.gas > 0)
                .order_by(TransferRow.id.desc())  # type: ignore[union-attr]
            ).first()
        return None if row is None else float(row.fee + row.gas)

    def sent_since(self, source: str, since: datetime) -> float:
        """Quote cash ``source`` has sent (or is sending) since ``since``: what its daily cap counts."""
        with self.session() as s:
            total = s.exec(
                select(func.coalesce(func.sum(TransferRow.amount), 0.0)).where(
                    TransferRow.source == source,
                    TransferRow.sent_at >= _naive(since),  # type: ignore[operator]
                    TransferRow.status.in_(  # type: ignore[attr-defined]
                        [TransferStatus.SENDING.value, TransferStatus.PENDING.value, TransferStatus.ARRIVED.value]
                    ),
                )
            ).one()
        return float(total)

    def traded_since(self, since: datetime) -> float:
        """Value of every fill since ``since`` (both sides): what a daily turnover limit counts."""
        with self.session() as s:
            total = s.exec(
                select(func.coalesce(func.sum(FillRow.qty * FillRow.price), 0.0)).where(FillRow.time >= _naive(since))
            ).one()
        return float(total)

    def finish_cycle(
        self,
        key: str,
        status: str,
        *,
        snapshot: SnapshotRow | None,
        message: str = "",
        rc_dispersion_held: float | None = None,
        rc_dispersion_held_bound: float | None = None,
        rc_dispersion_held_all: float | None = None,
    ) -> None:
        with self.session() as s:
            row = s.exec(select(CycleRow).where(CycleRow.key == key)).one()
            row.status = status
            row.finished_at = _naive(datetime.now(UTC))
            if message:
                row.message = (row.message + "; " + message if row.message else message)[:2000]
            if snapshot is not None:
                snapshot.cycle_id = row.id
                snapshot.time = _naive(snapshot.time)
                row.nav_after = snapshot.nav
                s.add(snapshot)
            if rc_dispersion_held is not None:
                row.rc_dispersion_held = rc_dispersion_held
            if rc_dispersion_held_bound is not None:
                row.rc_dispersion_held_bound = rc_dispersion_held_bound
            if rc_dispersion_held_all is not None:
                row.rc_dispersion_held_all = rc_dispersion_held_all
            s.add(row)
            s.commit()

    def record_failed_cycle(self, cycle: CycleRow, event: RiskEvent) -> None:
        """A cycle that could not plan: its row and the reason, together."""
        with self.session() as s:
            existing = s.exec(select(CycleRow).where(CycleRow.key == cycle.key)).first()
            if existing is None:
                cycle.scheduled_for = _naive(cycle.scheduled_for)
                cycle.started_at = _naive(cycle.started_at)
                cycle.finished_at = _naive(datetime.now(UTC))
                s.add(cycle)
            s.add(_event_row(event))
            s.commit()

    # -- events and snapshots -----------------------------------------------------------------------

    def record_event(self, e: RiskEvent) -> None:
        with self.session() as s:
            s.add(_event_row(e))
            s.commit()

    def events(self, kind: str | None = None, limit: int | None = None) -> list[RiskEventRow]:
        with self.session() as s:
            q = select(RiskEventRow)
            if kind:
                q = q.where(RiskEventRow.kind == kind)
            q = q.order_by(RiskEventRow.id.desc())  # type: ignore[union-attr]
            if limit:
                q = q.limit(limit)
            return list(s.exec(q))

    def snapshots(self) -> list[SnapshotRow]:
        with self.session() as s:
            return list(s.exec(select(SnapshotRow).order_by(SnapshotRow.time, SnapshotRow.id)))  # type: ignore[arg-type]

    def cycles(self) -> list[CycleRow]:
        with self.session() as s:
            return list(s.exec(select(CycleRow).order_by(CycleRow.scheduled_for, CycleRow.id)))  # type: ignore[arg-type]

    def targets_of(self, cycle_id: int) -> list[TargetRow]:
        with self.session() as s:
            return list(s.exec(select(TargetRow).where(TargetRow.cycle_id == cycle_id).order_by(TargetRow.id)))  # type: ignore[arg-type]

    def all_targets(self) -> list[TargetRow]:
        """Every cycle's targets in one query (a report over a long run must not ask once per cycle)."""
        with self.session() as s:
            return list(s.exec(select(TargetRow).order_by(TargetRow.id)))  # type: ignore[arg-type]

    def fills(self) -> list[FillRow]:
        with self.session() as s:
            return list(s.exec(select(FillRow).order_by(FillRow.id)))  # type: ignore[arg-type]

    def all_orders(self) -> list[OrderRow]:
        with self.session() as s:
            return list(s.exec(select(OrderRow).order_by(OrderRow.id)))  # type: ignore[arg-type]

    def cost_totals(self) -> dict[str, float]:
        with self.session() as s:
            fee, slip, gas, notional, product = s.exec(
                select(
                    func.coalesce(func.sum(FillRow.fee), 0.0),
                    func.coalesce(func.sum(FillRow.slippage), 0.0),
                    func.coalesce(func.sum(FillRow.gas), 0.0),
                    func.coalesce(func.sum(FillRow.qty * FillRow.price), 0.0),
                    func.coalesce(func.sum(FillRow.product_fee), 0.0),
                )
            ).one()
            tfee, tgas, moved = s.exec(
                select(
                    func.coalesce(func.sum(TransferRow.fee), 0.0),
                    func.coalesce(func.sum(TransferRow.gas), 0.0),
                    func.coalesce(func.sum(TransferRow.amount), 0.0),
                ).where(TransferRow.status.in_([TransferStatus.PENDING.value, TransferStatus.ARRIVED.value]))  # type: ignore[attr-defined]
            ).one()
        return {
            "fees": float(fee),
            "product_fees": float(product),  # the part of "fees" funds and issuers charged
            "slippage": float(slip),
            "gas": float(gas),
            "traded": float(notional),
            "transfer_fees": float(tfee),
            "transfer_gas": float(tgas),
            "transferred": float(moved),
        }

    def bulk_table(self, model: type[SQLModel], columns: Sequence[str]) -> BulkTable:
        """An insert of ``columns`` of ``model`` for ``bulk_write``: rows as plain tuples, values bound once."""
        return BulkTable(model, tuple(columns), self.engine.dialect)

    def bulk_write(self, batches: Sequence[tuple[BulkTable, Sequence[tuple[Any, ...]]]]) -> None:
        """Tuples of several tables in one transaction, straight to the driver's executemany (the fast
        backtest books hundreds of thousands of rows: no ORM objects, no per-row parameter compiling).
        Values must already be bound (``BulkTable.bind``) where the column's type converts them.

        The transaction commits with ``synchronous=NORMAL``: in WAL mode it is atomic and survives a crash
        of the process, only a power cut may lose it (a backtest is rerun then); the daemon's own writes keep
        ``FULL``. That saves an fsync of every batch (2 of 18 s on a five-year backtest)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=NORMAL")  # outside a transaction, or SQLite refuses it
            conn.commit()
            try:
                with conn.begin():
                    for table, rows in batches:
                        if rows:
                            conn.exec_driver_sql(table.sql, list(rows))
            finally:
                conn.exec_driver_sql("PRAGMA synchronous=FULL")
                conn.commit()

    @contextmanager
    def bulk_load(self, models: Sequence[type[SQLModel]]) -> Iterator[None]:
        """Rows loaded into the *empty* tables of ``models`` without their secondary indexes, which are built
        once at the end (a sorted build instead of hundreds of thousands of scattered B-tree inserts: a
        unique index still refuses a duplicate then). A table that already has rows keeps its indexes. A
        load cut short leaves tables without indexes: the next ``Ledger`` open builds them."""
        dropped = []
        with self.engine.begin() as con:
            for model in models:
                table = model.__table__  # type: ignore[attr-defined]
                if con.exec_driver_sql(f'SELECT 1 FROM "{table.name}" LIMIT 1').first() is not None:
                    continue
                for ix in table.indexes:
                    ix.drop(con, checkfirst=True)
                    dropped.append(ix)
        try:
            yield
        finally:
            with self.engine.begin() as con:
                for ix in dropped:
                    ix.create(con, checkfirst=True)

    # -- on-chain transactions ------------------------------------------------------------------------

    def record_tx(self, row: ChainTxRow) -> None:
        """Commit a signed transaction before it is broadcast (its hash is known from the signature)."""
        now = _naive(datetime.now(UTC))
        row.created_at = row.updated_at = now
        with self.session() as s:
            s.add(row)
            s.commit()

    def _touch(self, model: Any, where: Any, fields: dict[str, Any]) -> Any:
        """Set ``fields`` and ``updated_at`` on the one row matching ``where``, in one commit."""
        with self.session() as s:
            row = s.exec(select(model).where(where)).one()
            for k, v in fields.items():
                setattr(row, k, v)
            row.updated_at = _naive(datetime.now(UTC))
            s.add(row)
            s.commit()
            return row

    def update_tx(self, tx_hash: str, **fields: Any) -> None:
        self._touch(ChainTxRow, ChainTxRow.tx_hash == tx_hash, fields)

    def txs(self, *, venue: str | None = None, client_id: str | None = None) -> list[ChainTxRow]:
        with self.session() as s:
            q = select(ChainTxRow)
            if venue is not None:
                q = q.where(ChainTxRow.venue == venue)
            if client_id is not None:
                q = q.where(ChainTxRow.client_id == client_id)
            return list(s.exec(q.order_by(ChainTxRow.id)))  # type: ignore[arg-type]

    # -- asynchronous requests ----------------------------------------------------------------------------

    def add_async_request(self, row: AsyncRequestRow) -> AsyncRequestRow:
        """Commit a request before its first transaction is signed (so a crash leaves a trace)."""
        row.created_at = row.updated_at = _naive(datetime.now(UTC))
        with self.session() as s:
            s.add(row)
            s.commit()
        return row

    def update_async_request(self, client_id: str, **fields: Any) -> AsyncRequestRow:
        return self._touch(AsyncRequestRow, AsyncRequestRow.client_id == client_id, fields)

    def async_requests(self, *, venue: str | None = None, open_only: bool = False) -> list[AsyncRequestRow]:
        with self.session() as s:
            q = select(AsyncRequestRow)
            if venue is not None:
                q = q.where(AsyncRequestRow.venue == venue)
            if open_only:
                q = q.where(AsyncRequestRow.status.not_in(["claimed", "failed"]))  # type: ignore[attr-defined]
            return list(s.exec(q.order_by(AsyncRequestRow.id)))  # type: ignore[arg-type]

    def get_async_request(self, client_id: str) -> AsyncRequestRow | None:
        with self.session() as s:
            return s.exec(select(AsyncRequestRow).where(AsyncRequestRow.client_id == client_id)).first()

    # -- the kill switch and equity marks ------------------------------------------------------------

    def trading_state(self) -> TradingStateRow | None:
        """The last change of the trading state; None: never tripped (active)."""
        with self.session() as s:
            return s.exec(select(TradingStateRow).order_by(TradingStateRow.id.desc())).first()  # type: ignore[union-attr]

    def set_trading_state(self, row: TradingStateRow, event: RiskEvent | None = None) -> TradingStateRow:
        """Append a state change (and its risk event) in one transaction."""
        with self.session() as s:
            row.time = _naive(row.time)
            s.add(row)
            if event is not None:
                s.add(_event_row(event))
            s.commit()
        return row

    def trading_states(self) -> list[TradingStateRow]:
        with self.session() as s:
            return list(s.exec(select(TradingStateRow).order_by(TradingStateRow.id)))  # type: ignore[arg-type]

    def record_mark(self, time: datetime, nav: float, sigma_p_annual: float | None = None,
                    data_time: datetime | None = None) -> None:  # fmt: skip
        with self.session() as s:
            s.add(MarkRow(time=_naive(time), nav=nav, sigma_p_annual=sigma_p_annual,
                          data_time=_naive(data_time) if data_time is not None else None))  # fmt: skip
            s.commit()

    def last_nav(self) -> float | None:
        """The newest NAV the ledger knows: the last mark or closing snapshot, whichever is later."""
        with self.session() as s:
            m = s.exec(select(MarkRow).order_by(MarkRow.time.desc(), MarkRow.id.desc())).first()  # type: ignore[attr-defined]
            n = s.exec(
                select(SnapshotRow).where(SnapshotRow.cycle_id.is_not(None))  # type: ignore[union-attr]
                .order_by(SnapshotRow.time.desc(), SnapshotRow.id.desc())  # type: ignore[attr-defined]
            ).first()
        rows = [r for r in (m, n) if r is not None]
        return float(max(rows, key=lambda r: utc(r.time)).nav) if rows else None  # type: ignore[arg-type, return-value]

    def last_mark(self) -> MarkRow | None:
        with self.session() as s:
            return s.exec(select(MarkRow).order_by(MarkRow.id.desc())).first()  # type: ignore[union-attr]

    def equity_extremes(self, since: datetime | None, day_start: datetime) -> tuple[float | None, float | None]:
        """(high-water mark of marks and closing snapshots since ``since``, the first mark or snapshot at
        or after ``max(since, day_start)``): what drawdown and daily loss are measured from."""
        lo = _naive(since) if since is not None else None
        day = _naive(max(since, day_start)) if since is not None else _naive(day_start)
        with self.session() as s:
            hm = select(func.max(MarkRow.nav))
            hs = select(func.max(SnapshotRow.nav)).where(SnapshotRow.cycle_id.is_not(None))  # type: ignore[union-attr]
            if lo is not None:
                hm = hm.where(MarkRow.time >= lo)
                hs = hs.where(SnapshotRow.time >= lo)
            highs = [x for x in (s.exec(hm).one(), s.exec(hs).one()) if x is not None]
            # LIMIT 1: without it the ORM loads every row of the day to hand back the first (a tick late in
            # the day loaded ~280 marks and their snapshots: a third of the daemon-path backtest's time)
            fm = s.exec(
                select(MarkRow).where(MarkRow.time >= day).order_by(MarkRow.time, MarkRow.id).limit(1)  # type: ignore[arg-type]
            ).first()
            fs = s.exec(
                select(SnapshotRow)
                .where(SnapshotRow.cycle_id.is_not(None), SnapshotRow.time >= day)  # type: ignore[union-attr]
                .order_by(SnapshotRow.time, SnapshotRow.id)  # type: ignore[arg-type]
                .limit(1)
            ).first()
        firsts = sorted((utc(r.time), r.nav) for r in (fm, fs) if r is not None)  # type: ignore[type-var]
        return (max(highs) if highs else None), (firsts[0][1] if firsts else None)


_TABLES = (
    MetaRow,
    CycleRow,
    TargetRow,
    OrderRow,
    FillRow,
    SnapshotRow,
    TransferRow,
    ChainTxRow,
    AsyncRequestRow,
    RiskEventRow,
    TradingStateRow,
    MarkRow,
)


class BulkTable:
    """One table's insert for ``Ledger.bulk_write``, with the column types' converters (aware datetimes
    to the stored text, dicts to JSON) for the values that need them."""

    def __init__(self, model: type[SQLModel], columns: tuple[str, ...], dialect: Any) -> None:
        table = model.__table__  # type: ignore[attr-defined]
        unknown = [c for c in columns if c not in table.c]
        if unknown:
            raise ValueError(f"table {table.name} has no columns {unknown}")
        self.columns = columns
        names = ", ".join(f'"{c}"' for c in columns)
        self.sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join("?" for _ in columns)})'
        self._procs = {c: table.c[c].type.bind_processor(dialect) for c in columns}

    def bind(self, column: str, value: Any) -> Any:
        proc = self._procs[column]
        return proc(value) if proc is not None and value is not None else value


def _event_row(e: RiskEvent) -> RiskEventRow:
    return RiskEventRow(
        time=_naive(e.time),
        cycle_key=e.cycle_key,
        kind=e.kind,
        severity=e.severity.value,
        where=e.where,
        message=e.message,
        data=json.loads(json.dumps(dict(e.data), default=str)),
    )


class DaemonLock:
    """One daemon per ledger: an exclusive flock on ``<ledger>.lock`` that dies with the process."""

    def __init__(self, ledger_path: str | Path) -> None:
        self.path = Path(str(ledger_path) + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LedgerError(
                f"another rwabot daemon (pid {holder}) is running on ledger {str(self.path)[:-5]}; "
                "stop it first or use another ledger"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock and forget the pid (the file stays: removing it would race a daemon that just opened it).

        Safe to call when the lock was never acquired, so callers release on every exit path."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a released lock names no process
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
