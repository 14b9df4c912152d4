from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from bot.domain import Fill, Order, OrderState, OrderStatus, RiskEvent, Severity
from bot.errors import LedgerError
from bot.ledger import SCHEMA_VERSION, CycleRow, DaemonLock, Ledger, PlannedLeg, TargetRow

T = datetime(2026, 3, 1, 5, tzinfo=UTC)


def cycle(key: str = "2026-03-01T05:00Z") -> CycleRow:
    return CycleRow(key=key, trigger="scheduled", scheduled_for=T, started_at=T, status="executing")


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.close()
    con = sqlite3.connect(tmp_path / "l.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(LedgerError, match="schema version 999 is newer"):
        Ledger(tmp_path / "l.sqlite")


def test_plan_commits_together_or_not_at_all(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    o = Order("c1", "k", "v", "SPY", "buy", 1.0, 100.0)
    bad_target = TargetRow(
        cycle_id=0,
        asset="SPY",
        venue="v",
        price=1,
        upper=1,
        current_weight=0,
        target_weight=0,
        decided_weight=0,
        risk_contribution=0,
    )
    # a duplicate client id makes the whole plan fail: no cycle row may remain
    with pytest.raises(IntegrityError):
        led.create_plan(cycle(), [bad_target], [PlannedLeg(o, 0), PlannedLeg(o, 1)])
    assert led.get_cycle("2026-03-01T05:00Z") is None
    assert led.all_orders() == []
    led.create_plan(cycle(), [], [PlannedLeg(o, 0)])
    assert led.get_cycle("2026-03-01T05:00Z") is not None
    # one scheduled hour never yields two plans
    with pytest.raises(IntegrityError):
        led.create_plan(cycle(), [], [])


def test_fills_are_recorded_once(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    o = Order("c1", "k", "v", "SPY", "buy", 2.0, 100.0)
    led.create_plan(cycle(), [], [PlannedLeg(o, 0)])
    f = Fill("f1", "c1", "v", "SPY", "buy", 2.0, 100.5, 0.2, 1.0, T)
    st = OrderState("c1", OrderStatus.FILLED, 2.0, (f,))
    assert len(led.record_order_state(st)) == 1
    assert led.record_order_state(st) == []
    assert led.cost_totals() == pytest.approx(
        {"fees": 0.2, "slippage": 1.0, "gas": 0.0, "traded": 201.0, "transfer_fees": 0.0, "transfer_gas": 0.0,
         "transferred": 0.0, "product_fees": 0.0}
    )
    assert led.all_orders()[0].status == "filled"


def test_risk_events_round_trip(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.record_event(RiskEvent("vol_breach", Severity.WARNING, "monitor", "high", T, None, {"sigma": 0.3}))
    (e,) = led.events()
    assert e.kind == "vol_breach" and e.data == {"sigma": 0.3} and e.severity == "warning"


def test_second_daemon_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from bot.ledger import DaemonLock; import time; l = DaemonLock({str(path)!r}); l.acquire(); "
            "print('locked', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LedgerError, match=rf"another rwabot daemon \(pid {holder.pid}\) is running"):
            DaemonLock(path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = DaemonLock(path)
    lock.acquire()  # the lock dies with its process
    assert Path(str(path) + ".lock").read_text() == str(os.getpid())
    lock.release()


def test_older_ledger_gains_the_async_request_table_in_place(tmp_path: Path) -> None:
    from bot.ledger import AsyncRequestRow

    led = Ledger(tmp_path / "l.sqlite")
    led.close()
    con = sqlite3.connect(tmp_path / "l.sqlite")  # a version-2 ledger: no async_request table yet
    con.execute("DROP TABLE async_request")
    con.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    con.commit()
    con.close()
    led = Ledger(tmp_path / "l.sqlite")
    row = AsyncRequestRow(
        client_id="c1", venue="v", asset="F", side="deposit", kind="erc7540", vault="0x" + "1" * 40,
        controller="0x" + "2" * 40, amount_raw=str(10**30), qty=1.0, decision_price=1.0, status="requesting",
        created_at=T, updated_at=T,
    )  # fmt: skip
    led.add_async_request(row)
    led.update_async_request("c1", status="pending", claim_txs=["0xab"])
    got = led.get_async_request("c1")
    assert got is not None and got.amount_raw == str(10**30) and got.claim_txs == ["0xab"]
    assert [r.client_id for r in led.async_requests(open_only=True)] == ["c1"]
    led.update_async_request("c1", status="claimed")
    assert led.async_requests(open_only=True) == []
    led.close()
    con = sqlite3.connect(tmp_path / "l.sqlite")
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_older_ledger_gains_the_traded_dispersion_column_in_place(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.create_plan(CycleRow(key="k0", trigger="scheduled", scheduled_for=T, started_at=T, status="done"), [], [])
    led.close()
    con = sqlite3.connect(tmp_path / "l.sqlite")  # a version-3 ledger: no cycle.rc_dispersion_traded yet
    con.execute("ALTER TABLE cycle DROP COLUMN rc_dispersion_traded")
    con.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    con.commit()
    con.close()
    led = Ledger(tmp_path / "l.sqlite")
    try:
        old = led.get_cycle("k0")
        assert old is not None and old.rc_dispersion_traded is None
        row = CycleRow(key="k1", trigger="scheduled", scheduled_for=T, started_at=T, status="done")
        row.rc_dispersion_traded = 0.1
        led.create_plan(row, [], [])
        assert led.get_cycle("k1").rc_dispersion_traded == 0.1  # type: ignore[union-attr]
    finally:
        led.close()
    con = sqlite3.connect(tmp_path / "l.sqlite")
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()


def _indexes(path: Path, table: str) -> set[str]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name=? AND sql IS NOT NULL",
                           (table,)).fetchall()  # fmt: skip
        return {r[0] for r in rows}
    finally:
        con.close()


def test_a_bulk_load_builds_the_indexes_at_its_end(tmp_path: Path) -> None:
    """The fast backtest loads empty tables without their secondary indexes and builds them once at the end;
    a table that already has rows keeps them, and a unique index still refuses a duplicate at its build."""
    from bot.ledger import OrderRow

    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    full, cycles = _indexes(path, "orders"), _indexes(path, "cycle")
    assert "ix_orders_client_id" in full and "ix_cycle_key" in cycles
    order = led.bulk_table(OrderRow, ("client_id", "cycle_id", "leg", "venue", "asset", "side", "qty", "decision_price",
                                      "status", "filled_qty", "message", "created_at", "updated_at"))  # fmt: skip
    row = ("c1", 1, 0, "v", "SPY", "buy", 1.0, 100.0, "filled", 1.0, "", "2026-03-01 05:00:00", "2026-03-01 05:00:00")
    with led.session() as s:
        s.add(cycle())
        s.commit()
    with led.bulk_load([OrderRow, CycleRow]):
        assert _indexes(path, "orders") == set()
        assert _indexes(path, "cycle") == cycles  # it has a row: its indexes stay
        led.bulk_write([(order, [row])])
    assert _indexes(path, "orders") == full
    with pytest.raises(IntegrityError):  # the table has a row: its unique index refuses the duplicate at once
        led.bulk_write([(order, [row])])
    led.close()

    other = Ledger(tmp_path / "m.sqlite")
    with pytest.raises(IntegrityError):  # written while the index is away, refused when it is built
        with other.bulk_load([OrderRow]):
            other.bulk_write([(order, [row, row])])
    other.close()


def test_a_ledger_left_without_its_indexes_gets_them_at_open(tmp_path: Path) -> None:
    """A bulk load cut short (the process killed) leaves its tables without indexes: the next open builds them."""
    path = tmp_path / "l.sqlite"
    Ledger(path).close()
    full = _indexes(path, "orders")
    con = sqlite3.connect(path)
    for name in full:
        con.execute(f"DROP INDEX {name}")
    con.commit()
    con.close()
    assert _indexes(path, "orders") == set()
    Ledger(path).close()
    assert _indexes(path, "orders") == full
