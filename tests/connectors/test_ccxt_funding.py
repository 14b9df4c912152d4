"""Withdrawals and deposits of the ccxt venue: unmodified ccxt against the emulator's wallet endpoints.

What matters is that a withdrawal is never doubled (it cannot be cancelled once the chain has it):
every test that loses an answer ends by counting the withdrawals the exchange holds."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.domain import Order, OrderStatus, RiskEvent, Transfer, TransferState, TransferStatus
from bot.errors import TransferRefused, VenueError
from connectors.ccxt_venue import CcxtVenue, CcxtVenueConfig
from tests.connectors.conftest import INITIAL_USDT, MARKETS, NOW, SECRET, make_emulator, venue_options
from tests.connectors.emulator import (
    CAPITAL_CONFIG,
    WITHDRAW,
    WITHDRAW_HISTORY,
    ExchangeEmulator,
    Fault,
    MarketSpec,
)

WALLET = "0x" + "ab" * 20


@pytest.fixture
def emu():  # noqa: ANN201
    e = make_emulator()
    yield e
    e.stop()


def make_venue(
    emu: ExchangeEmulator,
    state: Path,
    name: str = "cex",
    clock: SimulatedClock | None = None,
    events: list[RiskEvent] | None = None,
    **kw: object,
) -> CcxtVenue:
    sink: list[RiskEvent] = [] if events is None else events
    ctx = ComponentContext(clock or SimulatedClock(NOW, 0.0), state, tuple(MARKETS), sink.append)
    return CcxtVenue(name, CcxtVenueConfig.model_validate(venue_options(emu, **kw)), ctx)


def transfer(cid: str = "rwt-1", amount: float = 500.0, address: str = WALLET, source: str = "cex") -> Transfer:
    return Transfer(cid, "cycle-1", source, "wallet", "USDT", amount, "ERC20", address)


def usdt(emu: ExchangeEmulator) -> float:
    return emu.balance("USDT")[0]


def test_deposit_address_is_the_exchanges(emu: ExchangeEmulator, creds: None, tmp_path: Path) -> None:
    v = make_venue(emu, tmp_path)
    a = v.deposit_address("USDT", "ERC20")
    assert (a.venue, a.asset, a.network, a.tag) == ("cex", "USDT", "ERC20", None)
    assert a.address == emu.deposit_address_of("USDT", "ETH")  # ccxt's ERC20 is Binance's ETH network
    with pytest.raises(VenueError, match="deposit address of USDT over TRC20"):
        v.deposit_address("USDT", "TRC20")  # a network the exchange does not offer
    v.close()


def test_withdrawal_goes_pending_then_arrives_with_the_fee(emu: ExchangeEmulator, creds: None, tmp_path: Path) -> None:
    emu.withdraw_polls_to_complete = 2
    v = make_venue(emu, tmp_path)
    st = v.send_transfer(transfer(amount=500.0))
    assert st.status is TransferStatus.PENDING and (st.amount, st.fee) == (500.0, 1.0)
    (w,) = emu.withdrawals.values()
    # the fee is inside the amount: 501 asked for, 501 debited, 500 reach the address
    assert (w.amount, w.fee, w.client_id, w.network, w.status) == (Decimal("501"), Decimal("1"), "rwt-1", "ETH", 2)
    assert st.external_id == w.id and usdt(emu) == INITIAL_USDT - 501.0
    assert emu.count("GET", CAPITAL_CONFIG) == 1
    assert v.fetch_transfer("rwt-1").status is TransferStatus.PENDING and w.status == 4  # awaiting → processing
    done = v.fetch_transfer("rwt-1")
    assert done is not None and done.status is TransferStatus.ARRIVED
    assert (done.amount, done.fee, done.external_id, done.txid) == (500.0, 1.0, w.id, w.tx_id) and w.tx_id
    assert done.time is not None
    again = v.send_transfer(transfer(amount=500.0))  # idempotent: the same withdrawal, never a second
    assert again.status is TransferStatus.ARRIVED and again.external_id == w.id
    assert emu.count("POST", WITHDRAW) == 1 and len(emu.withdrawals) == 1 and usdt(emu) == INITIAL_USDT - 501.0
    assert v.fetch_transfer("never-sent") is None
    v.close()


@pytest.mark.parametrize(("kind", "code"), [("withdraw_fails", 5), ("withdraw_rejected", 3)])
def test_withdrawal_that_fails_after_acceptance_is_failed_and_refunded(
    emu: ExchangeEmulator, creds: None, tmp_path: Path, kind: str, code: int
) -> None:
    emu.faults.append(Fault(kind, "POST", WITHDRAW))
    v = make_venue(emu, tmp_path)
    assert v.send_transfer(transfer()).status is TransferStatus.PENDING
    assert usdt(emu) == INITIAL_USDT - 501.0
    st = v.fetch_transfer("rwt-1")
    assert st is not None and st.status is TransferStatus.FAILED and st.fee == 0.0 and "refunded" in st.message
    assert st.external_id is not None and emu.withdrawals[st.external_id].status == code
    assert usdt(emu) == INITIAL_USDT  # the exchange gave it all back
    assert v.send_transfer(transfer()).status is TransferStatus.FAILED  # followed, not sent again
    assert emu.count("POST", WITHDRAW) == 1
    v.close()


def test_execute_then_drop_then_restart_holds_exactly_one_withdrawal(
    emu: ExchangeEmulator, creds: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Accepted, the reply lost, and every lookup fails too: the first run cannot tell and fails the
    venue; the next run (a new venue on the same state dir) finds it and never sends it again."""
    caplog.set_level(logging.DEBUG)
    emu.faults += [Fault("timeout_after", "POST", WITHDRAW), Fault("500", "GET", WITHDRAW_HISTORY, times=4)]
    v = make_venue(emu, tmp_path)
    with pytest.raises(VenueError, match="withdrawal lookup rwt-1") as err:
        v.send_transfer(transfer())
    assert err.value.retryable and not isinstance(err.value, TransferRefused)
    assert "venue cex" in str(err.value) and "Traceback" not in str(err.value)
    v.close()
    assert [f.hits for f in emu.faults] == [1, 4] and len(emu.withdrawals) == 1
    v2 = make_venue(emu, tmp_path)
    st = v2.send_transfer(transfer())
    assert st.status in (TransferStatus.PENDING, TransferStatus.ARRIVED)
    assert st.external_id == next(iter(emu.withdrawals))
    assert emu.count("POST", WITHDRAW) == 1 and len(emu.withdrawals) == 1 and usdt(emu) == INITIAL_USDT - 501.0
    v2.close()
    assert "rwt-1" in caplog.text  # the log says what happened ...
    assert SECRET not in caplog.text and "emu-key" not in caplog.text  # ... and never shows a credential


def test_execute_then_drop_is_found_by_the_lookup_and_not_resent(
    emu: ExchangeEmulator, creds: None, tmp_path: Path
) -> None:
    emu.faults.append(Fault("timeout_after", "POST", WITHDRAW))
    v = make_venue(emu, tmp_path)
    st = v.send_transfer(transfer())
    assert emu.faults[0].hits == 1 and st.external_id == next(iter(emu.withdrawals))
    assert emu.count("POST", WITHDRAW) == 1 and len(emu.withdrawals) == 1
    v.close()


def test_withdrawal_lost_before_the_exchange_is_sent_once_after_restart(
    emu: ExchangeEmulator, creds: None, tmp_path: Path
) -> None:
    emu.faults += [Fault("timeout_before", "POST", WITHDRAW), Fault("500", "GET", WITHDRAW_HISTORY, times=4)]
    v = make_venue(emu, tmp_path)
    with pytest.raises(VenueError):
        v.send_transfer(transfer())
    v.close()
    assert not emu.withdrawals  # journalled, never accepted
    v2 = make_venue(emu, tmp_path)
    assert v2.fetch_transfer("rwt-1") is None  # journalled but not at the exchange: it may be sent
    with pytest.raises(VenueError, match="differs from the one journalled before: address"):
        v2.send_transfer(transfer(address="0x" + "ef" * 20))  # one client id, another intent: never sent
    assert not emu.withdrawals
    assert v2.send_transfer(transfer()).status is TransferStatus.PENDING
    assert emu.count("POST", WITHDRAW) == 2 and len(emu.withdrawals) == 1
    v2.close()


def test_duplicate_client_id_is_refused_by_the_exchange_and_adopted(
    emu: ExchangeEmulator, creds: None, tmp_path: Path
) -> None:
    """A second venue with an empty journal (another state dir) sends the same client id: the exchange
    refuses it as a duplicate, and the venue adopts the withdrawal it already holds."""
    first = make_venue(emu, tmp_path / "a").send_transfer(transfer())
    v = make_venue(emu, tmp_path / "b")
    st = v.send_transfer(transfer())
    assert st.external_id == first.external_id
    assert emu.count("POST", WITHDRAW) == 2 and len(emu.withdrawals) == 1 and usdt(emu) == INITIAL_USDT - 501.0
    v.close()


@pytest.mark.parametrize(
    ("t", "match"),
    [
        # -4026: ccxt reads it as InsufficientFunds at api.binance.com and as BadRequest anywhere else
        # (its spot error table is chosen by host); a refusal either way, the exchange's words kept
        (transfer(amount=2 * INITIAL_USDT), "insufficient balance"),
        (transfer(address="0x12"), "Illegal address"),
        (transfer(amount=5.0), "minimum pick-up quantity"),
        (Transfer("rwt-1", "c", "cex", "wallet", "USDC", 500.0, "ERC20", WALLET), "not this venue's funding asset"),
        (transfer(source="other"), "its source is venue"),
    ],
    ids=["funds", "address", "below-minimum", "asset", "source"],
)
def test_refusals_send_nothing(emu: ExchangeEmulator, creds: None, tmp_path: Path, t: Transfer, match: str) -> None:
    v = make_venue(emu, tmp_path)
    with pytest.raises(TransferRefused, match=match) as err:
        v.send_transfer(t)
    assert "venue cex" in str(err.value) and "emu-secret" not in str(err.value)
    assert not emu.withdrawals and usdt(emu) == INITIAL_USDT
    v.close()


def test_deposit_status_of_an_incoming_deposit(emu: ExchangeEmulator, creds: None, tmp_path: Path) -> None:
    v = make_venue(emu, tmp_path)
    txid = "0x" + "cd" * 32
    t = Transfer("rwt-in", "cycle-1", "wallet", "cex", "USDT", 250.0, "ERC20", emu.deposit_address_of("USDT", "ETH"))
    st = TransferState("rwt-in", TransferStatus.ARRIVED, 250.0, txid=txid.upper().replace("0X", "0x"), time=NOW)
    assert v.deposit_status(t, st) is None  # not seen yet
    emu.add_deposit("USDT", 250.0, txid)
    assert v.deposit_status(t, st) is TransferStatus.PENDING
    assert usdt(emu) == INITIAL_USDT
    emu.credit_deposit(txid)
    assert v.deposit_status(t, st) is TransferStatus.ARRIVED and usdt(emu) == INITIAL_USDT + 250.0
    no_txid = TransferState("rwt-in", TransferStatus.PENDING, 250.0)
    assert v.deposit_status(t, no_txid) is None
    v.close()


def test_a_network_closed_for_withdrawals_is_refused(emu: ExchangeEmulator, creds: None, tmp_path: Path) -> None:
    emu.withdraw_disabled.add(("USDT", "ETH"))
    v = make_venue(emu, tmp_path)
    with pytest.raises(TransferRefused, match="not open for withdrawal"):
        v.send_transfer(transfer())
    assert not emu.withdrawals and usdt(emu) == INITIAL_USDT
    assert v.fetch_transfer("rwt-1") is None  # journalled, never accepted: the cycle may cancel or resend it
    v.close()


def test_deposits_of_one_transaction_are_told_apart_by_amount(
    emu: ExchangeEmulator, creds: None, tmp_path: Path
) -> None:
    """One transaction, two deposits (a batch): the transfer is the one of its amount; a txid seen only
    with other amounts still counts, and is reported once."""
    events: list[RiskEvent] = []
    v = make_venue(emu, tmp_path, events=events)
    txid = "0x" + "ee" * 32
    addr = emu.deposit_address_of("USDT", "ETH")
    emu.add_deposit("USDT", 100.0, txid)
    emu.credit_deposit(txid)  # the first one is credited ...
    emu.add_deposit("USDT", 250.0, txid)  # ... the second one, this transfer's, is not yet
    t = Transfer("rwt-in", "cycle-1", "wallet", "cex", "USDT", 250.0, "ERC20", addr)
    st = TransferState("rwt-in", TransferStatus.ARRIVED, 250.0, txid=txid, time=NOW)
    assert v.deposit_status(t, st) is TransferStatus.PENDING and not events
    odd = TransferState("rwt-odd", TransferStatus.ARRIVED, 300.0, txid=txid, time=NOW)
    t_odd = Transfer("rwt-odd", "cycle-1", "wallet", "cex", "USDT", 300.0, "ERC20", addr)
    assert v.deposit_status(t_odd, odd) is TransferStatus.ARRIVED  # one of them is credited
    assert v.deposit_status(t_odd, odd) is TransferStatus.ARRIVED
    assert [(e.kind, e.where) for e in events] == [("deposit_mismatch", "venue:cex")]
    assert "300" in events[0].message
    v.close()


def test_funding_asset_other_than_the_quote(creds: None, tmp_path: Path) -> None:
    """A USDT-quoted account that moves USDC (``funding_asset``), completed by age rather than polls."""
    emu = make_emulator({**MARKETS, "USDC": MarketSpec("USDC", price=1.0, annual_vol=0.01)},
                        balances={"USDT": INITIAL_USDT, "USDC": 10_000.0})  # fmt: skip
    try:
        emu.networks["USDC"] = ["ETH"]
        emu.withdraw_fees[("USDC", "ETH")] = Decimal("0.5")
        emu.withdraw_polls_to_complete, emu.withdraw_seconds_to_complete = None, 0.0
        v = make_venue(emu, tmp_path, funding_asset="USDC")
        with pytest.raises(TransferRefused, match="funding asset 'USDC'"):
            v.send_transfer(transfer())  # USDT is this account's quote, not what it moves
        t = Transfer("rwt-c", "cycle-1", "cex", "wallet", "USDC", 1_000.0, "ERC20", WALLET)
        st = v.send_transfer(t)
        assert (st.status, st.amount, st.fee) == (TransferStatus.PENDING, 1_000.0, 0.5)
        assert emu.balance("USDC")[0] == 10_000.0 - 1_000.5 and usdt(emu) == INITIAL_USDT
        done = v.fetch_transfer("rwt-c")
        assert done is not None and done.status is TransferStatus.ARRIVED and done.txid
        v.close()
    finally:
        emu.stop()


def test_paper_transfer_goes_over_the_paper_network(emu: ExchangeEmulator, tmp_path: Path) -> None:
    """Two paper accounts of one bot: the source is debited at once (amount and fee), the destination
    credited after the delay and can spend it; a second send is the first one."""
    clock = SimulatedClock(NOW, 0.0)
    a = make_venue(emu, tmp_path, "cexa", clock, paper=True, paper_cash=10_000.0, paper_transfer_fee=2.0)
    b = make_venue(emu, tmp_path, "cexb", clock, paper=True, paper_cash=0.0)
    dest = b.deposit_address("USDT", "ERC20")
    assert dest.address == "paper:cexb"
    t = Transfer("rwt-p", "cycle-1", "cexa", "cexb", "USDT", 6_000.0, "ERC20", dest.address)
    st = a.send_transfer(t)
    assert st.status is TransferStatus.PENDING and st.fee == 2.0
    assert a.balances().cash == 10_000.0 - 6_002.0 and b.balances().cash == 0.0
    assert b.deposit_status(t, st) is TransferStatus.PENDING
    with pytest.raises(TransferRefused, match="needs"):
        a.send_transfer(Transfer("rwt-p2", "cycle-1", "cexa", "cexb", "USDT", 5_000.0, "ERC20", dest.address))
    q = b.quote("TLT")
    with pytest.raises(VenueError, match="insufficient cash"):  # nothing has arrived yet
        b.place_order(Order("rwpb1", "c", "cexb", "TLT", "buy", 10.0, q.mid))
    clock.advance_to(NOW + timedelta(minutes=30))
    assert b.deposit_status(t, st) is TransferStatus.ARRIVED and b.balances().cash == 6_000.0
    assert a.fetch_transfer("rwt-p").status is TransferStatus.ARRIVED
    assert a.send_transfer(t).status is TransferStatus.ARRIVED and a.balances().cash == 10_000.0 - 6_002.0
    filled = b.place_order(Order("rwpb2", "c", "cexb", "TLT", "buy", 10.0, q.mid))  # paid with what arrived
    assert filled.status is OrderStatus.FILLED and 0 < b.balances().cash < 6_000.0
    assert not [r for r in emu.requests if r[1].startswith("/sapi/")]  # paper mode: no wallet endpoint
    a.close()
    b.close()
    again = make_venue(emu, tmp_path, "cexa", clock, paper=True, paper_cash=10_000.0, paper_transfer_fee=2.0)
    assert again.balances().cash == 10_000.0 - 6_002.0  # after a restart: the same account, the same network
    assert again.send_transfer(t).external_id == st.external_id and again.balances().cash == 10_000.0 - 6_002.0
    again.close()
