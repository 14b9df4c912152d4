"""One test per exchange fault: a full cycle through unmodified ccxt and the emulator, then the ledger
and the emulator's books must agree (nothing doubled, nothing lost, nothing left open)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bot.clock import SimulatedClock
from bot.cycle import Engine, client_order_id, cycle_key
from bot.plugins import make_plugin_manager
from tests.connectors.conftest import NOW, assert_books_agree, ccxt_engine, make_emulator
from tests.connectors.emulator import ExchangeEmulator, Fault, MarketSpec

ORDER = "/api/v3/order"
KEY = cycle_key(NOW, "scheduled")


@pytest.fixture
def emu():  # noqa: ANN201
    e = make_emulator()
    yield e
    e.stop()


def run(tmp_path: Path, emu: ExchangeEmulator, **venue: object) -> Engine:
    e = ccxt_engine(tmp_path, {"cex": (emu, dict(venue))})
    e.run_cycle(NOW)
    return e


def kinds(e: Engine) -> Counter[str]:
    return Counter(ev.kind for ev in e.ledger.events())


@pytest.mark.parametrize(
    ("kind", "resends"),
    [
        ("429", 1),
        ("500", 1),
        ("503", 1),
        ("timeout_before", 1),
        ("timeout_after", 0),
        ("reset_before", 1),  # a plain NetworkError: the connection reset, nothing answered
        ("reset_after", 0),  # accepted, then the connection reset before the answer
    ],
)
def test_transient_create_faults_are_retried_without_doubling(
    tmp_path: Path, emu: ExchangeEmulator, creds: None, kind: str, resends: int
) -> None:
    emu.faults.append(Fault(kind, "POST", ORDER, times=1))
    e = run(tmp_path, emu)
    cycle = e.ledger.get_cycle(KEY)
    assert cycle.status == "done" and not cycle.message
    orders = e.ledger.all_orders()
    assert len(orders) == 4 and all(o.status == "filled" for o in orders)
    # after a timeout the order was looked up first: accepted → never resent; not accepted → sent again
    assert emu.count("POST", ORDER) == len(emu.orders) + resends
    assert_books_agree(e, emu, "cex")
    e.close()


def test_timeout_then_lookup_miss_then_the_duplicate_is_adopted(tmp_path: Path, emu: ExchangeEmulator, creds) -> None:  # noqa: ANN001
    """The order is accepted but its answer is lost; the lookup by client id misses, and so do the open and
    closed order lists (the exchange's order index lags); the resend is refused as a duplicate client id:
    that order is ours, adopted."""
    victim = client_order_id(KEY, "GLD")
    emu.faults += [
        Fault("timeout_after", "POST", ORDER, times=1, symbol="GLDUSDT"),
        Fault("not_found", "GET", ORDER, times=1, symbol="GLDUSDT"),
        Fault("not_found", "GET", "/api/v3/openOrders", times=1, symbol="GLDUSDT"),
        Fault("not_found", "GET", "/api/v3/allOrders", times=2, symbol="GLDUSDT"),  # ccxt: closed, cancelled
    ]
    e = run(tmp_path, emu)
    assert [f.hits for f in emu.faults] == [1, 1, 1, 2]
    posts = [q for m, p, q in emu.requests if (m, p) == ("POST", ORDER) and q.get("newClientOrderId") == victim]
    assert len(posts) == 2  # the one whose answer was lost, and the resend the exchange refused
    assert sum(1 for o in emu.orders.values() if o.client_id == victim) == 1  # exactly one order at the exchange
    assert emu.count("POST", ORDER) == len(emu.orders) + 1
    lookups = [q for m, p, q in emu.requests if (m, p) == ("GET", ORDER) and q.get("origClientOrderId") == victim]
    assert len(lookups) >= 2  # the miss, then the lookup after the duplicate refusal
    row = next(o for o in e.ledger.all_orders() if o.client_id == victim)
    assert row.status == "filled" and row.filled_qty == pytest.approx(float(emu.by_client[victim].executed))
    assert not e.ledger.events("order_rejected") and not e.ledger.events("venue_failed")
    assert_books_agree(e, emu, "cex")
    e.close()


READS = ("/api/v3/exchangeInfo", "/api/v3/klines", "/api/v3/ticker/24hr", "/api/v3/account", "/api/v3/openOrders",
         ORDER, "/api/v3/myTrades")  # fmt: skip


@pytest.mark.parametrize(
    "kind", ["429", "500", "503", "timeout_before", "timeout_after", "reset_before", "reset_after"]
)
def test_transient_faults_on_reads_are_retried(tmp_path: Path, emu: ExchangeEmulator, creds: None, kind: str) -> None:
    """One fault on every read the cycle makes: markets, bars, prices, balances, open orders, order
    polls and trades."""
    emu.partial_fill["*"] = 0.5  # every leg rests half filled and is polled, then filled: lookups and trades
    emu.fill_rest_after_polls = 2
    emu.faults += [Fault(kind, "GET", p, 1, retry_after=None) for p in READS]
    e = run(tmp_path, emu, order_timeout_s=10.0)
    assert e.ledger.get_cycle(KEY).status == "done" and all(o.status == "filled" for o in e.ledger.all_orders())
    assert [f.hits for f in emu.faults] == [1] * len(READS)  # every fault was hit, and survived
    assert not e.ledger.events("venue_failed") and emu.count("POST", ORDER) == len(emu.orders) == 4
    assert_books_agree(e, emu, "cex")
    e.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", ORDER), ("GET", ORDER), ("GET", "/api/v3/account")],
    ids=["create", "order-poll", "balances"],
)
def test_persistent_faults_fail_the_venue_and_the_other_venue_goes_on(
    tmp_path: Path, creds: None, method: str, path: str
) -> None:
    a = make_emulator({k: MarketSpec(k, price=p) for k, p in (("SPY", 500.0), ("TLT", 90.0))})
    b = make_emulator({k: MarketSpec(k, price=p) for k, p in (("GLD", 200.0), ("VNQ", 85.0))})
    try:
        # the data source reads `a`; give it `b`'s markets too so both venues' assets have bars
        a.specs.update(b.specs)
        a.symbol_of.update(b.symbol_of)
        e = ccxt_engine(tmp_path, {"cex_a": (a, {"order_timeout_s": 10.0}), "cex_b": (b, {})})
        if (method, path) == ("GET", ORDER):
            a.partial_fill["*"] = 0.5  # accepted, half filled, resting: every poll fails
        a.faults.append(Fault("503", method, path, times=10_000))
        e.run_cycle(NOW)
        cycle = e.ledger.get_cycle(KEY)
        assert cycle.status == "done" and "venue cex_a failed" in cycle.message
        ev = e.ledger.events("venue_failed")
        assert ev and all(x.where == "venue:cex_a" and "ExchangeNotAvailable" in x.message and "4 attempts"
                          in x.message for x in ev)  # fmt: skip
        by_venue = Counter((o.venue, o.status) for o in e.ledger.all_orders())
        assert by_venue[("cex_a", "filled")] == 0
        # the other venue really traded, all of it: its books-agree check below is not an empty one
        assert by_venue[("cex_b", "filled")] == 2 and len(b.by_client) == 2 and len(b.trades) >= 2
        assert all(x.status == "FILLED" for x in b.by_client.values())
        if method == "POST":
            # each leg sent at most 1 + 3 times, each resend after a lookup found nothing; nothing accepted
            sends = Counter(q["newClientOrderId"] for m, p, q in a.requests if m == "POST")
            assert set(sends.values()) == {4} and not a.orders
            assert a.count("GET", ORDER) >= sum(sends.values())
            assert by_venue[("cex_a", "sending")] == len(ev)  # in doubt until the reconcile that follows
        elif path == ORDER:
            # accepted and half filled, then blind: the legs are in doubt and rest at the exchange
            assert len(a.orders) == 2 and len(a.open_orders()) == 2 and by_venue[("cex_a", "sending")] == 2
            a.faults.clear()  # the exchange recovers; the reconcile cancels the rest, books the halves
        else:
            # no balances, no plan for cex_a: nothing sent there
            assert not a.orders and a.count("POST", ORDER) == 0
            a.faults.clear()
        e.reconcile_venues()
        assert not [o for o in e.ledger.all_orders() if o.status == "sending"]
        if path == ORDER and method == "GET":
            legs = [o for o in e.ledger.all_orders() if o.venue == "cex_a"]
            assert len(legs) == 2 and all(o.status == "canceled" and o.filled_qty > 0 for o in legs)
            assert not a.open_orders()
        assert_books_agree(e, b, "cex_b")
        assert_books_agree(e, a, "cex_a")
        e.close()
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize(("kind", "error"), [("insufficient", "InsufficientFunds"), ("invalid", "LOT_SIZE")])
def test_refused_orders_are_not_retried_and_recorded(
    tmp_path: Path, emu: ExchangeEmulator, creds: None, kind: str, error: str
) -> None:
    victim = client_order_id(KEY, "GLD")
    emu.faults.append(Fault(kind, "POST", ORDER, times=1, symbol="GLDUSDT"))
    e = run(tmp_path, emu)
    assert e.ledger.get_cycle(KEY).status == "done"
    rows = {o.client_id: o for o in e.ledger.all_orders()}
    assert rows[victim].status == "rejected" and error in rows[victim].message
    assert sum(1 for m, p, q in emu.requests if m == "POST" and q.get("newClientOrderId") == victim) == 1
    assert [ev.kind for ev in e.ledger.events("order_rejected")] == ["order_rejected"]
    assert sum(o.status == "filled" for o in rows.values()) == 3  # the other legs went on
    assert_books_agree(e, emu, "cex")
    e.close()


def test_authentication_error_fails_the_venue_without_retry(tmp_path: Path, emu: ExchangeEmulator, creds) -> None:  # noqa: ANN001
    e = ccxt_engine(tmp_path, {"cex": (emu, {})})
    emu.faults.append(Fault("auth", "POST", ORDER, times=1))
    e.run_cycle(NOW)
    ev = e.ledger.events("venue_failed")
    assert len(ev) == 1 and "AuthenticationError" in ev[0].message
    failed = ev[0].data["client_id"]
    assert sum(1 for m, p, q in emu.requests if m == "POST" and q.get("newClientOrderId") == failed) == 1
    assert failed not in emu.by_client  # never retried; the legs already in flight concurrently settled
    e.reconcile_venues()  # after a venue failure: the leg in doubt is looked up and closed
    assert_books_agree(e, emu, "cex")
    e.close()


def test_duplicate_client_order_id_is_adopted_not_doubled(tmp_path: Path, emu: ExchangeEmulator, creds: None) -> None:
    """The exchange already holds an order with the leg's client id (sent by a run whose journal was
    lost): it refuses the new one as a duplicate; the venue looks it up and records that one."""
    cid = client_order_id(KEY, "TLT")
    with emu.lock:
        emu.create_order({"symbol": "TLTUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                          "quantity": "100", "price": "200.00", "newClientOrderId": cid})  # fmt: skip
    e = run(tmp_path, emu)
    row = next(o for o in e.ledger.all_orders() if o.client_id == cid)
    assert row.status == "filled" and row.filled_qty == pytest.approx(100.0)  # the exchange's order is the truth
    assert sum(1 for o in emu.orders.values() if o.client_id == cid) == 1
    assert_books_agree(e, emu, "cex")
    e.close()


def test_partial_fills_are_recorded_and_the_rest_cancelled(tmp_path: Path, emu: ExchangeEmulator, creds) -> None:  # noqa: ANN001
    emu.partial_fill["*"] = 0.4
    e = run(tmp_path, emu)
    orders = e.ledger.all_orders()
    assert orders and all(o.status == "canceled" and o.filled_qty == pytest.approx(0.4 * o.qty, rel=1e-3)
                          for o in orders)  # fmt: skip
    assert all("partially filled" in o.message for o in orders)
    assert emu.count("DELETE", ORDER) == len(orders)
    assert_books_agree(e, emu, "cex")
    e.close()


class Crash(BaseException):
    """The process dies: nothing in rwabot catches a BaseException."""


def restart(e: Engine) -> Engine:
    e.close()
    return Engine(e.cfg, pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))


def test_restart_after_the_exchange_filled_but_before_the_ledger_knew(
    tmp_path: Path, emu: ExchangeEmulator, creds: None
) -> None:
    e = ccxt_engine(tmp_path, {"cex": (emu, {})})
    real = e.ledger.record_order_state
    calls = {"n": 0}

    def dies_on_the_second(state):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash()
        return real(state)

    e.ledger.record_order_state = dies_on_the_second  # type: ignore[method-assign]
    with pytest.raises(Crash):
        e.run_cycle(NOW)
    assert Counter(o.status for o in e.ledger.all_orders())["filled"] == 1
    sent_before = len(emu.orders)
    e2 = restart(e)
    r = e2.run_cycle(NOW)
    assert r.status == "done"
    orders = e2.ledger.all_orders()
    assert len(orders) == 4 and all(o.status == "filled" for o in orders)
    assert len(emu.orders) == 4 >= sent_before and emu.count("POST", ORDER) == 4  # no order sent twice
    assert_books_agree(e2, emu, "cex")
    e2.close()


def test_restart_while_an_order_rests_cancels_it_and_never_resends(
    tmp_path: Path, emu: ExchangeEmulator, creds: None
) -> None:
    emu.partial_fill["*"] = 0.5
    e = ccxt_engine(tmp_path, {"cex": (emu, {"order_timeout_s": 30.0, "max_concurrent_orders": 1})})

    def dies(_s: float) -> None:
        raise Crash()

    e.c.venues["cex"].client.sleep = dies  # type: ignore[attr-defined]  # the process dies while polling
    with pytest.raises(Crash):
        e.run_cycle(NOW)
    assert len(emu.open_orders()) == 1
    emu.partial_fill.clear()
    e2 = restart(e)
    r = e2.run_cycle(NOW)
    assert r.status == "done"
    assert [ev.kind for ev in e2.ledger.events("order_reconciled")] == ["order_reconciled"]
    assert not e2.ledger.events("position_mismatch")
    orders = e2.ledger.all_orders()
    assert Counter(o.status for o in orders) == {"canceled": 1, "filled": 3}
    assert emu.count("POST", ORDER) == 4 and not emu.open_orders()
    assert_books_agree(e2, emu, "cex")
    e2.close()


def test_positions_changed_outside_the_bot_are_reported(tmp_path: Path, emu: ExchangeEmulator, creds) -> None:  # noqa: ANN001
    e = run(tmp_path, emu)
    with emu.lock:  # someone withdraws GLD from the account between two runs
        emu.balances["GLD"][0] -= 1
    e2 = restart(e)
    e2.run_cycle(NOW.replace(hour=1))
    ev = e2.ledger.events("position_mismatch")
    assert len(ev) == 1 and ev[0].data["asset"] == "GLD"
    assert ev[0].data["venue_qty"] == pytest.approx(ev[0].data["ledger_qty"] - 1)
    e2.close()
