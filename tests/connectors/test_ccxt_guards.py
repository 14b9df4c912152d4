"""The kill switch and the pre-trade limits against the real ccxt library and the exchange emulator on
127.0.0.1: a denied order never reaches the exchange, a halt cancels what rests there, and positions that
changed outside the bot by more than the tolerance stop trading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.clock import SimulatedClock
from bot.config import parse_config
from bot.cycle import Engine
from bot.killswitch import Trip
from bot.plugins import make_plugin_manager
from tests.connectors.conftest import NOW, ccxt_config, make_emulator
from tests.connectors.emulator import ExchangeEmulator


class Crash(BaseException):
    """The process dies: nothing in rwabot catches a BaseException."""


@pytest.fixture
def emu():  # noqa: ANN201
    e = make_emulator()
    yield e
    e.stop()


def guarded(tmp_path: Path, emu: ExchangeEmulator, venue: dict[str, Any] | None = None, **sections: Any) -> Engine:
    data = ccxt_config(tmp_path, {"cex": (emu, venue or {})})
    data.update(sections)
    return Engine(parse_config(data, "test"), pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))


def test_a_denied_order_never_reaches_the_exchange(tmp_path: Path, emu: ExchangeEmulator, creds: None) -> None:
    e = guarded(tmp_path, emu, limits={"max_order_notional": 30_000.0})
    assert e.run_cycle(NOW).status == "done"
    orders = e.ledger.all_orders()
    denied = [o for o in orders if o.status == "rejected"]
    assert denied and all("max_order_notional" in o.message for o in denied)
    sent = {o.client_id for o in orders if o.status == "filled"}
    assert {x.client_id for x in emu.by_client.values()} == sent  # the exchange saw exactly the allowed ones
    assert len(e.ledger.events("order_denied")) == len(denied)
    e.close()


def test_a_halt_cancels_the_order_resting_at_the_exchange(tmp_path: Path, emu: ExchangeEmulator, creds: None) -> None:
    emu.partial_fill["*"] = 0.5
    e = guarded(tmp_path, emu, {"order_timeout_s": 30.0, "max_concurrent_orders": 1})

    def dies(_s: float) -> None:
        raise Crash()

    e.c.venues["cex"].client.sleep = dies  # type: ignore[attr-defined]  # the process dies while polling
    with pytest.raises(Crash):
        e.run_cycle(NOW)
    assert len(emu.open_orders()) == 1
    e.close()
    e2 = Engine(e.cfg, pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))
    assert e2._trip(Trip("drawdown", "test", {}), "monitor", None)
    assert not emu.open_orders()  # cancelled at the exchange, not only in the ledger
    rested = [o for o in e2.ledger.all_orders() if o.status not in ("planned",)]
    assert [o.status for o in rested] == ["canceled"]
    r = e2.run_cycle(NOW)  # the crashed plan is resumed: its legs not sent yet are cancelled, not sent
    assert all(o.status == "canceled" for o in e2.ledger.all_orders()), [o.status for o in e2.ledger.all_orders()]
    # the one fill is the half the resting order got before its cancel; nothing else reached the exchange
    assert {f.client_id for f in e2.ledger.fills()} == {rested[0].client_id} and len(emu.by_client) == 1
    assert r.status == "done"
    assert e2.run_cycle(NOW.replace(hour=1)).status == "halted"
    e2.close()


def test_positions_changed_outside_the_bot_trip_the_switch(tmp_path: Path, emu: ExchangeEmulator, creds) -> None:  # noqa: ANN001
    e = guarded(tmp_path, emu, guard={"max_reconcile_mismatch": 0.001})
    assert e.run_cycle(NOW).status == "done"
    gld = e.ledger.snapshots()[-1]
    with emu.lock:  # someone withdraws GLD from the account between two runs
        moved = emu.balances["GLD"][0] / 2
        emu.balances["GLD"][0] -= moved
    assert float(moved) * gld.prices["GLD"] > 0.001 * gld.nav
    e.close()
    e2 = Engine(e.cfg, pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))
    e2.run_cycle(NOW.replace(hour=1))
    row = e2.ledger.trading_state()
    assert row is not None and row.state == "halt" and row.cause == "reconcile" and "cex" in row.reason
    assert e2.ledger.events("position_mismatch")
    e2.close()
