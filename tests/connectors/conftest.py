"""Fixtures for the ccxt connector: an exchange emulator on 127.0.0.1 that speaks Binance, OKX and Bybit,
venue options pointing at it, engines whose data and venues go through unmodified ccxt, and the "books
agree" check every fault test ends with.

``SETUPS`` are the exchanges a venue test runs against: Binance (create replies with the status and
fills), Binance answering creates with ACK (ids only), OKX v5 (envelopes, string numbers, ``clOrdId``,
a passphrase, ids-only create replies, fees in the asset received), Bybit v5 (ids-only replies; ccxt's
``fetch_order`` refuses the unified account, so orders are found in the open and closed order lists)
and Bybit with ccxt's documented ``fetchOrder.acknowledged`` option (``fetch_order`` by id)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.clock import SimulatedClock
from bot.config import parse_config
from bot.cycle import Engine
from bot.domain import OrderStatus
from bot.plugins import make_plugin_manager
from tests.conftest import paper_dict
from tests.connectors.emulator import DIALECTS, Dialect, ExchangeEmulator, MarketSpec

NOW = datetime(2026, 4, 15, 0, 5, tzinfo=UTC)
KEY_ENV, SECRET_ENV, PASS_ENV = "RWABOT_TEST_CCXT_KEY", "RWABOT_TEST_CCXT_SECRET", "RWABOT_TEST_CCXT_PASSPHRASE"
SECRET = "emu-secret-never-logged-5f1c"
PASSPHRASE = "emu-passphrase-never-logged-9d2e"
INITIAL_USDT = 1_000_000.0

MARKETS = {
    "SPY": MarketSpec("SPY", price=500.0, annual_vol=0.16, hourly_volume=40_000.0, level_qty=400.0),
    "TLT": MarketSpec("TLT", price=90.0, annual_vol=0.12, hourly_volume=150_000.0, level_qty=3000.0),
    "GLD": MarketSpec("GLD", price=200.0, annual_vol=0.14, hourly_volume=60_000.0, level_qty=1000.0),
    "VNQ": MarketSpec("VNQ", price=85.0, annual_vol=0.2, hourly_volume=120_000.0, level_qty=3000.0),
}


def make_emulator(markets: dict[str, MarketSpec] | None = None, **kw: Any) -> ExchangeEmulator:
    kw.setdefault("balances", {"USDT": INITIAL_USDT})
    kw.setdefault("timeout_hold_s", 0.5)
    kw.setdefault("passphrase", PASSPHRASE)
    emu = ExchangeEmulator(markets or MARKETS, api_key="emu-key", secret=SECRET, now=NOW, **kw)
    emu.start()
    return emu


@dataclass(frozen=True)
class Setup:
    """One exchange a venue test runs against: the emulator's dialect, the venue's options for it, and
    switches set on the emulator."""

    id: str
    dialect: str
    options: dict[str, Any] = field(default_factory=dict)
    emulator: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> Dialect:
        return DIALECTS[self.dialect]

    def venue_options(self) -> dict[str, Any]:
        return {"exchange": DIALECTS[self.dialect].exchange, **self.options}

    def apply(self, emu: ExchangeEmulator) -> ExchangeEmulator:
        for k, v in self.emulator.items():
            setattr(emu, k, v)
        return emu


SETUPS = (
    Setup("binance", "binance"),
    Setup("binance-ack", "binance", emulator={"binance_ack": True}),
    Setup("okx", "okx", {"password_env": PASS_ENV}),
    Setup("bybit", "bybit"),
    Setup("bybit-fetch-order", "bybit", {"exchange_options": {"fetchOrder": {"acknowledged": True}}}),
)
BY_ID = {s.id: s for s in SETUPS}
DIALECT_SETUPS = tuple(BY_ID[i] for i in ("binance", "okx", "bybit"))
"""One setup per dialect, for the slower tests (full cycles, faults)."""


@pytest.fixture(params=SETUPS, ids=[s.id for s in SETUPS])
def setup(request: pytest.FixtureRequest) -> Setup:
    return request.param


@pytest.fixture
def emulator() -> Iterator[ExchangeEmulator]:
    emu = make_emulator()
    yield emu
    emu.stop()


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "emu-key")
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(PASS_ENV, PASSPHRASE)


def venue_options(emu: ExchangeEmulator, **kw: Any) -> dict[str, Any]:
    """Fast settings for tests: short timeouts, tiny backoff, the emulator's URL."""
    opts: dict[str, Any] = {
        "api_urls": {"*": emu.base_url},
        "api_key_env": KEY_ENV,
        "secret_env": SECRET_ENV,
        "timeout_ms": 250,
        "poll_interval_s": 0.01,
        "order_timeout_s": 0.2,
        "settle_timeout_s": 0.5,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.03,
        "max_retries": 3,
        "rate_limit_per_s": 5000.0,
    }
    opts.update(kw)
    return opts


def ccxt_config(tmp_path: Path, venues: dict[str, tuple[ExchangeEmulator, dict[str, Any]]], **risk: Any) -> dict:
    """An engine config with ccxt data (from the first venue's emulator) and ccxt venues."""
    data = paper_dict(tmp_path)
    first = next(iter(venues.values()))[0]
    data["bot"]["quote"] = "USDT"
    data["risk"] = {**data["risk"], "history_hours": 240, **risk}
    data["data"] = {"plugin": "ccxt", "options": {"api_urls": {"*": first.base_url}, "rate_limit_per_s": 5000.0}}
    data["venues"] = {
        name: {"plugin": "ccxt", "options": venue_options(emu, **kw)} for name, (emu, kw) in venues.items()
    }
    data["assets"] = {a: {"venue": name} for name, (emu, _) in venues.items() for a in emu.symbol_of}
    data.pop("report", None)  # the embedded [report] names the embedded book's assets
    data.pop("funding", None)  # the paper config's routes name its own venues, which these replace
    if any(not v["options"].get("paper") for v in data["venues"].values()):
        data["bot"]["mode"] = "live"  # mode is law: a paper bot's venues are all paper
    return data


def ccxt_engine(tmp_path: Path, venues: dict[str, tuple[ExchangeEmulator, dict[str, Any]]], **risk: Any) -> Engine:
    cfg = parse_config(ccxt_config(tmp_path, venues, **risk), "test")
    return Engine(cfg, pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))


def assert_books_agree(
    e: Engine,
    emu: ExchangeEmulator,
    venue: str,
    initial_usdt: float = INITIAL_USDT,
    initial_other: dict[str, float] | None = None,
) -> None:
    """Ledger and exchange agree: every order once, every trade a fill, every balance explained.

    A fee paid in the base asset moves the position by the net quantity (the fill's quantity) and is
    booked at the trade's price; a fee in a third asset (BNB) is booked at that asset's mid then and comes
    out of that balance, not the cash (``initial_other``: its balance before the run)."""
    orders = {o.client_id: o for o in e.ledger.all_orders() if o.venue == venue}
    fills = [f for f in e.ledger.fills() if f.venue == venue]
    with emu.lock:
        emu_orders = dict(emu.by_client)
        trades = list(emu.trades)
        balances = {a: float(f + lk) for a, (f, lk) in emu.balances.items()}
    base_of = {sym: spec.base for sym, spec in emu.specs.items()}
    side_of = {x.order_id: x.side for x in emu_orders.values()}

    def base_fee(t: dict) -> float:  # signed change of the fill's quantity against the trade's
        if t["commissionAsset"] != base_of[t["symbol"]]:
            return 0.0
        return -float(t["commission"]) if side_of[t["orderId"]] == "BUY" else float(t["commission"])

    # no order at the exchange that the ledger does not know, none doubled, none left open
    assert set(emu_orders) <= set(orders), f"orders unknown to the ledger: {set(emu_orders) - set(orders)}"
    assert not [o for o in emu_orders.values() if o.open], "orders left open at the exchange"
    for cid, o in orders.items():
        st = OrderStatus(o.status)
        assert st.terminal, f"{cid} left {st.value} in the ledger"
        x = emu_orders.get(cid)
        if x is None:
            assert o.filled_qty == 0 and st in (OrderStatus.CANCELED, OrderStatus.REJECTED), (cid, o.status)
            continue
        net = float(x.executed) + sum(base_fee(t) for t in x.fills)
        assert net == pytest.approx(o.filled_qty, abs=1e-12), cid
        assert (x.status == "FILLED") == (st is OrderStatus.FILLED), (cid, x.status, st)
    # every exchange trade is exactly one ledger fill with the same price, quantity and fee
    by_id = {f.fill_id: f for f in fills}
    assert len(by_id) == len(fills) == len(trades)
    third: dict[str, float] = {}  # fees paid in a third asset: in that asset, and as booked in USDT
    third_usdt = 0.0
    for t in trades:
        f = by_id[f"{t['symbol'][:-4]}/USDT:{t['id']}"]
        c, cur, price = float(t["commission"]), t["commissionAsset"], float(t["price"])
        if cur == "USDT":
            fee = c
        elif cur == base_of[t["symbol"]]:
            fee = c * price
        else:
            fee = c * emu.mid(emu.symbol_of[cur], t["time"])  # at its mid when it was charged
            third[cur] = third.get(cur, 0.0) + c
            third_usdt += f.fee
        assert (f.qty, f.price, f.fee) == pytest.approx((float(t["qty"]) + base_fee(t), price, fee), rel=1e-9), t
    # balances are explained by the fills to the last fraction of a cent
    cash = initial_usdt - sum((f.qty * f.price if f.side == "buy" else -f.qty * f.price) + f.fee for f in fills)
    assert balances.get("USDT", 0.0) == pytest.approx(cash + third_usdt, abs=1e-6)
    for base in {f.asset for f in fills}:
        held = sum(f.qty if f.side == "buy" else -f.qty for f in fills if f.asset == base)
        assert balances.get(base, 0.0) == pytest.approx(held, abs=1e-9), base
    for cur, paid in third.items():
        assert balances.get(cur, 0.0) == pytest.approx((initial_other or {}).get(cur, 0.0) - paid, abs=1e-9), cur


BooksAgree = Callable[[Engine, ExchangeEmulator, str], None]
