"""The ccxt venue on every exchange dialect the emulator speaks (Binance, OKX v5, Bybit v5), through the
real ccxt classes over HTTP: a cycle's fills are in the ledger when it ends whatever the create's reply
says, an order still open after its cancel is reported in flight and booked by a later cycle of the same
engine (or a monitor tick), and an ambiguous create (dropped after it executed, answered by an HTML page
or without an id) leaves exactly one order with its right id."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pytest

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.config import parse_config
from bot.cycle import Engine, client_order_id, cycle_key
from bot.domain import Order, OrderStatus
from bot.errors import ConfigError, VenueError
from bot.inflight import follow_in_flight, in_flight_count, in_flight_legs
from bot.plugins import make_plugin_manager
from connectors.ccxt_venue import CcxtVenue, CcxtVenueConfig
from tests.connectors.conftest import (
    BY_ID,
    DIALECT_SETUPS,
    INITIAL_USDT,
    MARKETS,
    NOW,
    PASS_ENV,
    PASSPHRASE,
    SECRET,
    SETUPS,
    Setup,
    assert_books_agree,
    ccxt_config,
    make_emulator,
    venue_options,
)
from tests.connectors.emulator import ExchangeEmulator, Fault

KEY = cycle_key(NOW, "scheduled")
ids = [s.id for s in DIALECT_SETUPS]


@pytest.fixture
def emu():  # noqa: ANN201
    e = make_emulator()
    yield e
    e.stop()


def engine(tmp_path: Path, emu: ExchangeEmulator, setup: Setup, **venue: Any) -> Engine:
    cfg = parse_config(ccxt_config(tmp_path, {"cex": (setup.apply(emu), {**setup.venue_options(), **venue})}), "t")
    return Engine(cfg, pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))


def sends(emu: ExchangeEmulator, setup: Setup, cid: str) -> int:
    """Creates that reached the exchange with client id ``cid``."""
    method, path = setup.paths.create
    return sum(1 for m, p, q in emu.requests if (m, p) == (method, path) and q.get(setup.paths.client_id) == cid)


@pytest.mark.parametrize("setup", SETUPS, ids=[s.id for s in SETUPS])
def test_a_cycle_books_every_fill_before_it_ends(tmp_path: Path, creds: None, emu: ExchangeEmulator, setup: Setup):
    """OKX and Bybit (and Binance with ACK replies) answer a create with the ids only; the cycle still ends
    with every leg filled, every trade a fill with its fee (in the asset received, on OKX and Bybit), and
    the exchange's order ids in the ledger."""
    e = engine(tmp_path, emu, setup)
    r = e.run_cycle(NOW)
    assert r.status == "done", r.message
    assert r.orders == 4 and r.fills == len(emu.trades) >= 4
    orders = e.ledger.all_orders()
    assert all(o.status == "filled" for o in orders), [(o.client_id, o.status, o.message) for o in orders]
    assert {o.venue_order_id for o in orders} == {str(emu.by_client[o.client_id].order_id) for o in orders}
    assert in_flight_count(e.ledger, KEY) == 0
    assert_books_agree(e, emu, "cex")
    paid_in = {t["commissionAsset"] for t in emu.trades}
    assert paid_in == ({"USDT"} if setup.dialect == "binance" else set(MARKETS))  # buys pay in what they get
    for f in e.ledger.fills():
        assert f.fee == pytest.approx(f.price * f.qty / (1 - 0.001) * 0.001 if paid_in != {"USDT"} else
                                      f.price * f.qty * 0.001, rel=1e-6)  # fmt: skip
    snap = e.ledger.snapshots()[-1]
    assert snap.nav == pytest.approx(INITIAL_USDT - e.ledger.cost_totals()["fees"] - r.slippage, rel=1e-9)
    assert sum(snap.positions[a] * snap.prices[a] for a in e.assets) / snap.nav > 0.9
    if setup.id == "bybit":  # ccxt refuses fetch_order on a unified account: the order lists were asked
        assert not e.c.venues["cex"]._fetch_order  # type: ignore[attr-defined]
        assert not [q for m, p, q in emu.requests if p == "/v5/order/realtime" and "orderId" in q]
        assert emu.count("GET", "/v5/order/history") > 0
    if setup.id == "bybit-fetch-order":  # ccxt's documented option: fetch_order by id
        assert [q for m, p, q in emu.requests if p == "/v5/order/realtime" and "orderId" in q]
    e.close()


@pytest.mark.parametrize("setup", DIALECT_SETUPS, ids=ids)
def test_a_resting_order_is_followed_until_it_fills(tmp_path: Path, creds: None, emu: ExchangeEmulator, setup: Setup):
    emu.partial_fill["*"] = 0.25
    emu.fill_rest_after_polls = 3
    e = engine(tmp_path, emu, setup, order_timeout_s=10.0)
    assert e.run_cycle(NOW).status == "done"
    assert all(o.status == "filled" for o in e.ledger.all_orders())
    assert all(x.polls >= 3 and len(x.fills) == 2 for x in emu.by_client.values())
    assert emu.count(*setup.paths.cancel) == 0
    assert_books_agree(e, emu, "cex")
    e.close()


@pytest.mark.parametrize("setup", DIALECT_SETUPS, ids=ids)
def test_partial_fills_are_booked_and_the_rest_cancelled(tmp_path: Path, creds: None, emu: ExchangeEmulator,
                                                         setup: Setup) -> None:  # fmt: skip
    emu.partial_fill["*"] = 0.4
    e = engine(tmp_path, emu, setup)
    e.run_cycle(NOW)
    orders = e.ledger.all_orders()
    assert len(orders) == 4 and all(o.status == "canceled" and "partially filled" in o.message for o in orders)
    assert all(o.filled_qty == pytest.approx(float(emu.by_client[o.client_id].executed) * (
        1 if setup.dialect == "binance" else (1 - 0.001))) for o in orders)  # fmt: skip
    assert emu.count(*setup.paths.cancel) == 4
    assert_books_agree(e, emu, "cex")
    e.close()


@pytest.mark.parametrize("setup", DIALECT_SETUPS, ids=ids)
def test_an_order_open_after_its_cancel_is_in_flight_and_a_later_cycle_books_it(
    tmp_path: Path, creds: None, emu: ExchangeEmulator, setup: Setup
) -> None:
    """The exchange acknowledges the cancels and carries them out only later: the cycle ends with the legs
    in flight (their half fills booked), and the next cycle of the same engine books how they ended."""
    emu.partial_fill["*"] = 0.5
    emu.cancel_lag_polls = 10**6
    e = engine(tmp_path, emu, setup, settle_timeout_s=0.05)
    r = e.run_cycle(NOW)
    assert r.status == "done"
    first = {o.client_id: o for o in e.ledger.all_orders()}
    assert len(first) == 4 and all(o.status == "open" and "in flight" in o.message for o in first.values())
    assert in_flight_count(e.ledger, KEY) == 4 and {leg.status for leg in in_flight_legs(e.ledger)} == {"open"}
    # the fills so far are booked already: the exchange's trades of the half that filled
    assert r.fills == len(emu.trades) == 4 and all(o.filled_qty > 0 for o in first.values())
    assert {o.venue_order_id for o in first.values()} == {str(emu.by_client[c].order_id) for c in first}
    assert len(emu.open_orders()) == 4
    # the exchange carries the cancels out; the next hour's cycle (same engine, no restart) books them
    emu.cancel_lag_polls = 0
    with emu.lock:
        for x in emu.orders.values():
            x.cancel_lag = 1
    emu.partial_fill.clear()
    later = NOW + timedelta(hours=1)
    emu.set_time(later)
    e.clock = SimulatedClock(later, 0.0)
    r2 = e.run_cycle(later)
    assert r2.status == "done", r2.message
    rows = {o.client_id: o for o in e.ledger.all_orders()}
    assert all(rows[c].status == "canceled" and rows[c].filled_qty == pytest.approx(first[c].filled_qty)
               for c in first)  # fmt: skip
    assert in_flight_count(e.ledger) == 0 and not emu.open_orders()
    assert_books_agree(e, emu, "cex")
    e.close()


@pytest.mark.parametrize("setup", DIALECT_SETUPS, ids=ids)
def test_a_monitor_tick_books_what_an_order_in_flight_did(tmp_path: Path, creds: None, emu: ExchangeEmulator,
                                                          setup: Setup) -> None:  # fmt: skip
    """``bot.inflight.follow_in_flight`` (called at each monitor tick) asks the venue about the legs of a
    finished cycle: a leg whose cancel was carried out since is booked without waiting for a cycle."""
    emu.partial_fill["*"] = 0.5
    emu.cancel_lag_polls = 10**6
    e = engine(tmp_path, emu, setup, settle_timeout_s=0.05)
    e.run_cycle(NOW)
    assert in_flight_count(e.ledger) == 4
    with emu.lock:
        for x in emu.orders.values():
            x.cancel_lag = 1
    booked: list[Any] = []
    left = follow_in_flight(e.ledger, e.c.venues, on_fill=booked.append, emit=e.emit, now=NOW)
    assert left == [] and booked == []  # the half fills were booked by the cycle; nothing filled since
    assert all(o.status == "canceled" for o in e.ledger.all_orders()) and not emu.open_orders()
    assert_books_agree(e, emu, "cex")
    e.close()


def test_a_monitor_tick_books_a_fill_that_came_after_the_cycle(tmp_path: Path, creds: None,
                                                               emu: ExchangeEmulator) -> None:  # fmt: skip
    setup = BY_ID["okx"]
    emu.partial_fill["*"] = 0.5
    emu.cancel_lag_polls = 10**6
    e = engine(tmp_path, emu, setup, settle_timeout_s=0.05)
    e.run_cycle(NOW)
    with emu.lock:  # the rest of every order fills at its limit before the cancel is carried out
        for x in emu.orders.values():
            emu._fill(x, x.price, x.remaining)
            emu._release(x)
    booked: list[Any] = []
    assert follow_in_flight(e.ledger, e.c.venues, on_fill=booked.append) == []
    assert len(booked) == 4 and all(o.status == "filled" for o in e.ledger.all_orders())
    assert_books_agree(e, emu, "cex")
    e.close()


def test_follow_in_flight_leaves_the_legs_of_a_venue_that_is_down(tmp_path: Path, creds: None,
                                                                  emu: ExchangeEmulator) -> None:  # fmt: skip
    setup = BY_ID["okx"]
    emu.partial_fill["*"] = 0.5
    emu.cancel_lag_polls = 10**6
    e = engine(tmp_path, emu, setup, settle_timeout_s=0.05)
    e.run_cycle(NOW)
    emu.faults.append(Fault("503", "*", "*", times=10**6))
    left = follow_in_flight(e.ledger, e.c.venues, emit=e.emit, now=NOW)
    assert len(left) == 4 and e.ledger.events("venue_failed")[0].message.startswith("following order")
    e.close()


CREATE_FAULTS = [
    ("timeout_after", 1),  # executed, then the answer dropped
    ("reset_after", 1),  # executed, then the connection reset
    ("html_after", 1),  # accepted, answered by a maintenance page with status 200
    ("strip_id", 1),  # accepted, answered without the order id
    ("html_before", 2),  # a page with status 200, never reached the exchange: sent again
    ("timeout_before", 2),
]


@pytest.mark.parametrize("setup", SETUPS, ids=[s.id for s in SETUPS])
@pytest.mark.parametrize(("kind", "creates"), CREATE_FAULTS, ids=[k for k, _ in CREATE_FAULTS])
def test_an_ambiguous_create_leaves_exactly_one_order_with_its_id(
    tmp_path: Path, creds: None, emu: ExchangeEmulator, setup: Setup, kind: str, creates: int
) -> None:
    victim = client_order_id(KEY, "GLD")
    fault = Fault(kind, *setup.paths.create, times=1, symbol="GLDUSDT")
    emu.faults.append(fault)
    e = engine(tmp_path, emu, setup)
    r = e.run_cycle(NOW)
    assert fault.hits == 1 and r.status == "done" and not e.ledger.events("venue_failed")
    assert sum(1 for x in emu.orders.values() if x.client_id == victim) == 1  # exactly one order
    assert sends(emu, setup, victim) == creates
    row = next(o for o in e.ledger.all_orders() if o.client_id == victim)
    assert row.status == "filled" and row.venue_order_id == str(emu.by_client[victim].order_id) != "None"
    bad = e.ledger.events("venue_bad_reply")
    assert len(bad) == (1 if kind in ("html_after", "strip_id", "html_before") else 0)
    if setup.id == "bybit-fetch-order":  # ccxt's fetch_order drops a client id: the lists found the order
        assert emu.count("GET", "/v5/order/history") > 0
    assert_books_agree(e, emu, "cex")
    e.close()


@pytest.mark.parametrize("setup", DIALECT_SETUPS, ids=ids)
def test_an_html_page_on_a_lookup_is_a_fault_not_a_missing_order(
    tmp_path: Path, creds: None, emu: ExchangeEmulator, setup: Setup
) -> None:
    """ccxt turns an HTML page into an empty order list (OKX), "order not found" (Bybit) or an order without
    an id (Binance): each lookup that gets one is retried, none is taken for the exchange's answer."""
    emu.partial_fill["*"] = 0.5
    emu.fill_rest_after_polls = 2
    path = "/v5/order/history" if setup.id == "bybit" else setup.paths.lookup[1]
    fault = Fault("html_after", "GET", path, times=2)
    emu.faults.append(fault)
    e = engine(tmp_path, emu, setup, order_timeout_s=10.0)
    assert e.run_cycle(NOW).status == "done"
    assert fault.hits == 2 and all(o.status == "filled" for o in e.ledger.all_orders())
    assert len(emu.orders) == 4 and not e.ledger.events("venue_failed")
    assert_books_agree(e, emu, "cex")
    e.close()


def test_an_html_page_is_never_taken_for_an_order_the_exchange_does_not_have(
    emu: ExchangeEmulator, creds: None, tmp_path: Path
) -> None:
    """After a crash between the send and its answer the journal knows the order but not its id. On Bybit
    the order is found in the closed orders; ccxt reads an HTML page there as an empty list, which would
    say "never sent" (and the order would be sent twice, or closed in the ledger with its fills lost)."""
    setup = BY_ID["bybit"]
    v = make_venue(emu, tmp_path, setup)
    order = Order("rwcrash1", "c", "cex", "GLD", "buy", 5.0, 200.0)
    v.journal.record(order, "GLD/USDT", NOW.timestamp())
    with emu.lock:  # the exchange accepted and filled it; the answer never arrived
        emu.create_order({"symbol": "GLDUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                          "quantity": "5", "price": "300.00", "newClientOrderId": "rwcrash1"}, "bybit")  # fmt: skip
    fault = Fault("html_after", "GET", "/v5/order/history", times=2)
    emu.faults.append(fault)
    st = v.fetch_order("rwcrash1")
    assert fault.hits == 2 and st is not None and st.status is OrderStatus.FILLED
    assert st.venue_order_id == str(emu.by_client["rwcrash1"].order_id) == v.journal.order_id("rwcrash1")[0]
    again = v.place_order(order)  # a resend after the restart adopts it
    assert again.filled_qty == st.filled_qty and len(emu.orders) == 1
    v.close()


@pytest.mark.parametrize("setup", DIALECT_SETUPS, ids=ids)
def test_restart_after_the_exchange_filled_but_before_the_ledger_knew(
    tmp_path: Path, creds: None, emu: ExchangeEmulator, setup: Setup
) -> None:
    class Crash(BaseException):
        pass

    e = engine(tmp_path, emu, setup)
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
    e.close()
    e2 = Engine(e.cfg, pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))
    assert e2.run_cycle(NOW).status == "done"
    orders = e2.ledger.all_orders()
    assert len(orders) == 4 and all(o.status == "filled" for o in orders)
    assert len(emu.orders) == 4 and all(sends(emu, setup, o.client_id) == 1 for o in orders)  # none sent twice
    assert_books_agree(e2, emu, "cex")
    e2.close()


@pytest.mark.parametrize("setup", DIALECT_SETUPS, ids=ids)
@pytest.mark.parametrize("kind", ["429", "500", "503", "reset_before"])
def test_transient_faults_on_every_order_call_are_retried(tmp_path: Path, creds: None, emu: ExchangeEmulator,
                                                          setup: Setup, kind: str) -> None:  # fmt: skip
    emu.partial_fill["*"] = 0.5
    emu.fill_rest_after_polls = 2
    calls = {setup.paths.create, setup.paths.lookup, setup.paths.trades, setup.paths.balance}
    if setup.id == "bybit":
        calls.add(("GET", "/v5/order/history"))
    emu.faults += [Fault(kind, m, p, 1, retry_after=None) for m, p in sorted(calls)]
    e = engine(tmp_path, emu, setup, order_timeout_s=10.0)
    assert e.run_cycle(NOW).status == "done"
    assert [f.hits for f in emu.faults] == [1] * len(calls)
    assert all(o.status == "filled" for o in e.ledger.all_orders()) and not e.ledger.events("venue_failed")
    assert len(emu.orders) == 4
    assert_books_agree(e, emu, "cex")
    e.close()


@pytest.mark.parametrize("setup", DIALECT_SETUPS, ids=ids)
@pytest.mark.parametrize(("kind", "error"), [("insufficient", "InsufficientFunds"), ("invalid", "InvalidOrder")])
def test_refusals_are_rejections_not_retried(tmp_path: Path, creds: None, emu: ExchangeEmulator, setup: Setup,
                                             kind: str, error: str) -> None:  # fmt: skip
    victim = client_order_id(KEY, "GLD")
    emu.faults.append(Fault(kind, *setup.paths.create, times=1, symbol="GLDUSDT"))
    e = engine(tmp_path, emu, setup)
    e.run_cycle(NOW)
    rows = {o.client_id: o for o in e.ledger.all_orders()}
    assert rows[victim].status == "rejected" and error in rows[victim].message
    assert sends(emu, setup, victim) == 1 and victim not in emu.by_client
    assert Counter(o.status for o in rows.values()) == {"filled": 3, "rejected": 1}
    assert_books_agree(e, emu, "cex")
    e.close()


# -- replies, credentials -------------------------------------------------------------------------------


def ctx(tmp_path: Path) -> ComponentContext:
    return ComponentContext(SimulatedClock(NOW, 0.0), tmp_path / "state", tuple(MARKETS), lambda e: None)


def make_venue(emu: ExchangeEmulator, tmp_path: Path, setup: Setup, **kw: Any) -> CcxtVenue:
    opts = venue_options(setup.apply(emu), **{**setup.venue_options(), **kw})
    return CcxtVenue("cex", CcxtVenueConfig.model_validate(opts), ctx(tmp_path))


@pytest.mark.parametrize("reply", [None, {}, {"id": None}, {"id": 1001}, {"id": ""}, {"id": "None"}, "<html>",
                                   {"id": "7", "clientOrderId": "someone-else"}])  # fmt: skip
def test_a_reply_that_is_not_an_order_of_ours_is_refused(emu: ExchangeEmulator, creds: None, tmp_path: Path,
                                                         reply: Any) -> None:  # fmt: skip
    v = make_venue(emu, tmp_path, BY_ID["binance"])
    with pytest.raises(ccxt.BadResponse):
        v._checked(reply, "rwmine")
    assert v._checked({"id": "7", "clientOrderId": "rwmine"}, "rwmine")["id"] == "7"
    assert v._checked({"id": "7", "clientOrderId": None}, "rwmine", "7")["id"] == "7"
    with pytest.raises(ccxt.BadResponse):
        v._checked({"id": "8"}, "rwmine", "7")
    v.close()


def test_an_order_is_never_stored_with_the_id_none(emu: ExchangeEmulator, creds: None, tmp_path: Path) -> None:
    """Every create answered by an HTML page: the order exists (accepted each time it got through once), the
    lookup finds it, and its id is the exchange's."""
    v = make_venue(emu, tmp_path, BY_ID["okx"])
    emu.faults.append(Fault("html_after", *BY_ID["okx"].paths.create, times=1))
    st = v.place_order(Order("rwhtml1", "c", "cex", "GLD", "buy", 5.0, 200.0))
    assert st.venue_order_id == str(emu.by_client["rwhtml1"].order_id) and st.status is OrderStatus.FILLED
    assert v.journal.order_id("rwhtml1")[0] == st.venue_order_id
    v.close()


def test_a_create_no_reply_ever_confirms_fails_the_venue_without_doubling(emu: ExchangeEmulator, creds: None,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    setup = BY_ID["okx"]
    emu.faults.append(Fault("html_before", *setup.paths.create, times=100))
    v = make_venue(emu, tmp_path, setup)
    with pytest.raises(VenueError, match="not placed after 4 attempts: BadResponse") as err:
        v.place_order(Order("rwhtml2", "c", "cex", "GLD", "buy", 5.0, 200.0))
    assert err.value.retryable and not emu.orders and sends(emu, setup, "rwhtml2") == 4
    assert v.fetch_order("rwhtml2") is None  # journalled, never accepted: safe to send later
    v.close()


def test_okx_needs_its_passphrase_named_before_anything_starts(emu: ExchangeEmulator, creds: None,
                                                               tmp_path: Path) -> None:  # fmt: skip
    opts = venue_options(emu, exchange="okx")
    with pytest.raises(ConfigError, match="okx requires a password .*set password_env"):
        CcxtVenue("cex", CcxtVenueConfig.model_validate(opts), ctx(tmp_path))
    assert not emu.requests  # refused before any request


def test_a_wrong_passphrase_is_an_authentication_error_never_retried(
    emu: ExchangeEmulator, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PASS_ENV, "not-the-passphrase")
    v = make_venue(emu, tmp_path, BY_ID["okx"])
    with pytest.raises(VenueError, match="AuthenticationError") as err:
        v.balances()
    # the first private request (the currencies, as markets load) is refused, once: never retried
    assert not err.value.retryable and "50105" in str(err.value)
    assert [p for m, p, q in emu.requests] == ["/api/v5/asset/currencies"]
    assert SECRET not in caplog.text and "not-the-passphrase" not in caplog.text
    v.close()


def test_the_passphrase_never_shows(emu: ExchangeEmulator, creds: None, tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    v = make_venue(emu, tmp_path, BY_ID["okx"])
    emu.faults.append(Fault("500", "GET", "*", 2))
    v.place_order(Order("rwpass1", "c", "cex", "GLD", "buy", 1.0, 200.0))
    text = caplog.text + repr(v) + repr(v.client) + str(v.cfg.model_dump())
    assert PASSPHRASE not in text and SECRET not in text
    v.close()


def test_an_exchange_without_trade_endpoints_books_the_order_from_its_fill_and_average(
    emu: ExchangeEmulator, creds: None, tmp_path: Path
) -> None:
    """Where ccxt has neither ``fetchMyTrades`` nor ``fetchOrderTrades`` for an exchange, the fill is the
    order's own: its filled amount at its average price, its fee in its currency, once it is final."""
    v = make_venue(emu, tmp_path, BY_ID["okx"])
    v.client.has = {**v.client.has, "fetchMyTrades": False, "fetchOrderTrades": False}
    emu.partial_fill["*"] = 0.5
    st = v.place_order(Order("rwnotrades", "c", "cex", "GLD", "buy", 10.0, 200.0))
    x = emu.by_client["rwnotrades"]
    assert st.status is OrderStatus.CANCELED and len(st.fills) == 1
    f = st.fills[0]
    fee = sum(float(t["commission"]) for t in x.fills)  # paid in GLD
    assert f.fill_id == f"GLD/USDT:order-{x.order_id}" and f.qty == pytest.approx(float(x.executed) - fee)
    assert f.price == pytest.approx(float(x.quote_qty / x.executed)) and f.fee == pytest.approx(fee * f.price)
    assert not emu.count("GET", "/api/v5/trade/fills-history")
    assert v.balances().positions["GLD"] == pytest.approx(f.qty)
    v.close()


def test_trades_that_lag_the_order_keep_it_in_flight_until_they_add_up(emu: ExchangeEmulator, creds: None,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    """The order says filled, its trades are not all listed yet: the fills seen are booked, the order is
    in flight, and a later lookup books the rest; no trade is ever booked twice."""
    v = make_venue(emu, tmp_path, BY_ID["bybit"])
    emu.partial_fill["*"] = 0.5
    emu.fill_rest_after_polls = 1
    hidden: set[int] = set()  # trade ids the execution list does not show yet
    orig = emu._bybit

    def bybit(method: str, path: str, query: str, body: str, headers: Any) -> tuple[int, Any]:
        status, payload = orig(method, path, query, body, headers)
        if path == "/v5/execution/list":
            payload["result"]["list"] = [x for x in payload["result"]["list"] if int(x["execId"]) not in hidden]
        return status, payload

    emu._bybit = bybit  # type: ignore[method-assign]
    real_fill = emu._fill

    def fill(o, price, qty):  # noqa: ANN001, ANN202 - the second fill is not listed at first
        real_fill(o, price, qty)
        if len(o.fills) == 2:
            hidden.add(o.fills[-1]["id"])

    emu._fill = fill  # type: ignore[method-assign]
    st = v.place_order(Order("rwlag1", "c", "cex", "GLD", "buy", 10.0, 200.0))
    assert st.status is OrderStatus.OPEN and "trades add up" in st.message and len(st.fills) == 1
    hidden.clear()
    again = v.fetch_order("rwlag1")
    assert again.status is OrderStatus.FILLED and len(again.fills) == 2
    assert {f.fill_id for f in st.fills} < {f.fill_id for f in again.fills}
    assert again.filled_qty == pytest.approx(float(emu.by_client["rwlag1"].executed) * (1 - 0.001))
    v.close()


def test_the_config_rejects_unknown_keys_and_is_frozen() -> None:
    cfg = CcxtVenueConfig.model_validate({"settle_timeout_s": 2.0, "poll_interval_s": 0.5})
    assert cfg.settle_timeout_s == 2.0
    with pytest.raises(Exception, match="settle_timeout"):
        CcxtVenueConfig.model_validate({"settle_timeout": 2.0})
    with pytest.raises(Exception, match="frozen"):
        cfg.settle_timeout_s = 3.0  # type: ignore[misc]
    with pytest.raises(Exception, match="greater than or equal to 0"):
        CcxtVenueConfig.model_validate({"settle_timeout_s": -1})


def test_nav_is_unchanged_by_the_dialect(tmp_path: Path, creds: None) -> None:
    """The same cycle on Binance (fees in USDT) and OKX (fees in the asset received) ends at the same NAV
    up to the fees' form: the books of either dialect are the same market's."""
    navs = {}
    for setup in (BY_ID["binance"], BY_ID["okx"]):
        emu = make_emulator()
        try:
            e = engine(tmp_path / setup.id, emu, setup)
            e.run_cycle(NOW)
            navs[setup.id] = e.ledger.snapshots()[-1].nav
            e.close()
        finally:
            emu.stop()
    assert np.isclose(navs["binance"], navs["okx"], rtol=1e-4)
