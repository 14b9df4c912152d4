"""The ccxt connector against the Binance-spot emulator: unmodified ccxt over HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.config import parse_config
from bot.cycle import Engine
from bot.domain import Order, OrderStatus, RiskEvent
from bot.errors import ConfigError, DataError, InvalidOrder
from bot.plugins import make_plugin_manager
from bot.testing import VenueContract
from connectors.ccxt_venue import CcxtDataConfig, CcxtDataSource, CcxtVenue, CcxtVenueConfig
from tests.connectors.conftest import (
    INITIAL_USDT,
    KEY_ENV,
    MARKETS,
    NOW,
    SECRET,
    Setup,
    assert_books_agree,
    ccxt_config,
    ccxt_engine,
    make_emulator,
    venue_options,
)
from tests.connectors.emulator import HOUR_MS, ExchangeEmulator, Fault, MarketSpec

PRIVATE = ("/api/v3/account", "/api/v3/order", "/api/v3/openOrders", "/api/v3/myTrades")


def ctx(tmp_path: Path, events: list[RiskEvent] | None = None, assets: tuple[str, ...] = tuple(MARKETS)):
    sink = events if events is not None else []
    return ComponentContext(SimulatedClock(NOW, 0.0), tmp_path / "state", assets, sink.append)


def make_venue(emu: ExchangeEmulator, tmp_path: Path, name: str = "cex", **kw) -> CcxtVenue:  # noqa: ANN003
    return CcxtVenue(name, CcxtVenueConfig.model_validate(venue_options(emu, **kw)), ctx(tmp_path))


class TestCcxtVenueContract(VenueContract):
    """The venue contract on every exchange the emulator speaks (``SETUPS``), through the real ccxt classes."""

    @pytest.fixture
    def venue(self, emulator: ExchangeEmulator, creds: None, tmp_path: Path, setup: Setup):  # noqa: ANN201
        v = make_venue(setup.apply(emulator), tmp_path, **setup.venue_options())
        yield v
        v.close()
        assert not emulator.open_orders(), "the contract left an order resting at the exchange"

    @pytest.fixture
    def venue_asset(self) -> str:
        return "GLD"


class TestCcxtPaperContract(VenueContract):
    """Paper mode: the same contract with public endpoints only and no credentials at all."""

    @pytest.fixture
    def venue(self, emulator: ExchangeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
        monkeypatch.delenv(KEY_ENV, raising=False)
        v = make_venue(emulator, tmp_path, paper=True, paper_cash=100_000.0)
        yield v
        v.close()
        assert not [r for r in emulator.requests if r[1] in PRIVATE], "paper mode called a private endpoint"

    @pytest.fixture
    def venue_asset(self) -> str:
        return "SPY"


def test_paper_fill_walks_the_book_and_is_partial_when_thin(tmp_path: Path) -> None:
    thin = {"THN": MarketSpec("THN", price=100.0, levels=3, level_qty=10.0, level_step_bps=10.0)}
    emu = make_emulator(thin)
    try:
        v = CcxtVenue(
            "paper", CcxtVenueConfig.model_validate(venue_options(emu, paper=True, limit_offset_bps=100.0)),
            ctx(tmp_path, assets=("THN",)),
        )  # fmt: skip
        bids, asks = emu.book("THNUSDT")
        q = v.quote("THN")
        # 25 units: 10 at the touch, 15 of the 20 at the next level (the third is beyond the 100 bps limit)
        st = v.place_order(Order("rwpaper1", "c", "paper", "THN", "buy", 25.0, q.mid))
        vwap = float(asks[0][0] * 10 + asks[1][0] * 15) / 25
        assert st.status is OrderStatus.FILLED and st.fills[0].price == pytest.approx(vwap)
        assert st.fills[0].fee == pytest.approx(25 * vwap * 0.001)  # the market's fee schedule (ccxt: 0.1%)
        # 100 units: the book within the limit holds 10 + 20 + 30 = 60 → partial fill, the rest cancelled
        st2 = v.place_order(Order("rwpaper2", "c", "paper", "THN", "buy", 100.0, q.mid))
        assert st2.status is OrderStatus.CANCELED and st2.filled_qty == pytest.approx(60.0)
        assert "thin" in st2.message
        assert v.balances().positions["THN"] == pytest.approx(85.0)
        assert v.fetch_order("rwpaper2") == st2  # durable and idempotent
        v.close()
    finally:
        emu.stop()


def test_credentials_come_from_named_env_vars_and_never_show(
    emulator: ExchangeEmulator, creds: None, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:  # noqa: ANN001
    caplog.set_level(logging.DEBUG)
    v = make_venue(emulator, tmp_path)
    emulator.faults.append(Fault("500", "GET", "*", 2))  # retries log their errors: still no secret
    v.place_order(Order("rwcred1", "c", "cex", "GLD", "buy", 1.0, 200.0))
    text = caplog.text + repr(v) + repr(v.client) + str(v.cfg.model_dump())
    assert SECRET not in text and "emu-key" not in text
    v.close()
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=KEY_ENV) as err:
        make_venue(emulator, tmp_path)
    assert SECRET not in str(err.value)


def test_wrong_secret_is_an_authentication_error_not_retried(emulator: ExchangeEmulator, tmp_path: Path, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv(KEY_ENV, "emu-key")
    monkeypatch.setenv("RWABOT_TEST_CCXT_SECRET", "wrong")
    v = make_venue(emulator, tmp_path)
    from bot.errors import VenueError

    with pytest.raises(VenueError, match="AuthenticationError") as err:
        v.balances()
    assert not err.value.retryable and emulator.count("GET", "/api/v3/account") == 1
    v.close()


def test_orders_are_rounded_by_ccxt_and_minimums_enforced(emulator: ExchangeEmulator, creds: None, tmp_path: Path):
    v = make_venue(emulator, tmp_path)
    st = v.place_order(Order("rwround1", "c", "cex", "GLD", "buy", 1.23456789, 200.0))
    sent = emulator.by_client["rwround1"]
    assert sent.qty == Decimal("1.234") and sent.price % Decimal("0.01") == 0  # LOT_SIZE and PRICE_FILTER
    assert st.filled_qty == pytest.approx(1.234)
    posts = emulator.count("POST", "/api/v3/order")
    with pytest.raises(InvalidOrder, match="below the market minimum"):
        v.place_order(Order("rwround2", "c", "cex", "GLD", "buy", 0.01, 200.0))  # ~2 USDT < NOTIONAL 5
    assert emulator.count("POST", "/api/v3/order") == posts  # never sent
    assert v.fetch_order("rwround2") is None
    v.close()


def test_limit_price_is_the_touch_moved_by_the_offset_and_rounded_to_the_tick(
    emulator: ExchangeEmulator, creds: None, tmp_path: Path
) -> None:
    """Buy at ask·(1+offset), sell at bid·(1−offset), rounded by ccxt's price_to_precision."""
    off = 37.0  # bps: far from a whole number of ticks, so the rounding shows
    v = make_venue(emulator, tmp_path, limit_offset_bps=off)
    bids, asks = emulator.book("GLDUSDT")
    bid, ask = float(bids[0][0]), float(asks[0][0])
    tick = Decimal(MARKETS["GLD"].tick_size)
    v.place_order(Order("rwpx1", "c", "cex", "GLD", "buy", 5.0, 200.0))
    v.place_order(Order("rwpx2", "c", "cex", "GLD", "sell", 2.0, 200.0))
    buy, sell = emulator.by_client["rwpx1"].price, emulator.by_client["rwpx2"].price
    ex = v.client.ex
    assert buy == Decimal(ex.price_to_precision("GLD/USDT", ask * (1 + off / 1e4)))
    assert sell == Decimal(ex.price_to_precision("GLD/USDT", bid * (1 - off / 1e4)))
    # on the tick, within half a tick of the exact price, and on the far side of the touch
    for px, exact in ((buy, ask * (1 + off / 1e4)), (sell, bid * (1 - off / 1e4))):
        assert px % tick == 0 and abs(float(px) - exact) <= float(tick) / 2 + 1e-9
    assert float(buy) > ask * 1.003 and float(sell) < bid * 0.997
    v.close()


def test_a_resting_order_is_polled_until_filled(emulator: ExchangeEmulator, creds: None, tmp_path: Path) -> None:
    emulator.partial_fill["*"] = 0.25
    emulator.fill_rest_after_polls = 3
    v = make_venue(emulator, tmp_path, order_timeout_s=5.0)
    st = v.place_order(Order("rwpoll1", "c", "cex", "TLT", "buy", 100.0, 90.0))
    assert st.status is OrderStatus.FILLED and st.filled_qty == pytest.approx(100.0) and len(st.fills) == 2
    assert emulator.by_client["rwpoll1"].polls >= 3
    assert sum(f.qty * f.price for f in st.fills) == pytest.approx(float(emulator.by_client["rwpoll1"].quote_qty))
    v.close()


def test_market_orders(emulator: ExchangeEmulator, creds: None, tmp_path: Path) -> None:
    v = make_venue(emulator, tmp_path, order_type="market")
    st = v.place_order(Order("rwmkt1", "c", "cex", "VNQ", "buy", 50.0, 85.0))
    assert st.status is OrderStatus.FILLED and emulator.by_client["rwmkt1"].type == "MARKET"
    f = st.fills[0]
    assert f.slippage == pytest.approx((f.price - 85.0) * f.qty)  # against the price the cycle decided on
    v.close()


def test_bars_are_paged_over_since_and_match_the_exchange(emulator: ExchangeEmulator, tmp_path: Path) -> None:
    emulator.max_klines = 100  # the exchange caps a page: 300 hours need 3 requests per asset
    d = CcxtDataSource(
        CcxtDataConfig.model_validate({"api_urls": {"*": emulator.base_url}, "ohlcv_page": 100}), ctx(tmp_path)
    )
    bars = d.bars(["SPY", "GLD"], NOW, 300)
    assert len(bars.times) == 300 and bars.times[-1] == NOW.replace(minute=0)
    assert all((b - a).total_seconds() == 3600 for a, b in zip(bars.times, bars.times[1:]))
    assert emulator.count("GET", "/api/v3/klines") == 2 * 3
    raw = emulator.klines("SPYUSDT", None, None, 2)  # the closed hour and the one in progress
    assert bars.close[-1, 0] == pytest.approx(float(raw[0][4])) and bars.volume[-1, 0] == pytest.approx(
        float(raw[0][5])
    )
    assert np.isfinite(bars.close).all() and (bars.volume > 0).all()
    snap = d.latest(["SPY", "GLD"], NOW)
    assert snap.prices[0] == pytest.approx(emulator.mid("SPYUSDT")) and snap.times[0].tzinfo is not None
    d.close()


def test_bars_keep_paging_when_the_exchange_caps_pages_below_ohlcv_page(
    emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    """A page shorter than asked for is the exchange's cap, not the end of the history."""
    emulator.max_klines = 100  # the exchange's cap; the data source asks for its default 1000 per page
    d = CcxtDataSource(CcxtDataConfig.model_validate({"api_urls": {"*": emulator.base_url}}), ctx(tmp_path))
    assert d.cfg.ohlcv_page == 1000
    bars = d.bars(["SPY", "GLD"], NOW, 300)
    assert len(bars.times) == 300 and np.isfinite(bars.close).all()
    pages = [q for m, p, q in emulator.requests if p == "/api/v3/klines"]
    assert len(pages) == 2 * 3 and {q["limit"] for q in pages} == {"1000"}
    # the same bars as an exchange that sends everything at once
    emulator.max_klines = 1000
    d2 = CcxtDataSource(CcxtDataConfig.model_validate({"api_urls": {"*": emulator.base_url}}), ctx(tmp_path))
    assert np.array_equal(d2.bars(["SPY", "GLD"], NOW, 300).close, bars.close)
    d.close()
    d2.close()


def test_paging_ends_on_an_empty_page_or_no_progress(emulator: ExchangeEmulator, tmp_path: Path) -> None:
    events: list[RiskEvent] = []
    emulator.max_klines = 100
    last_open = int(NOW.replace(minute=0).timestamp() * 1000) - HOUR_MS
    # the last 20 closed hours and the one in progress are missing: the page that should reach them
    # is short, the next one empty
    emulator.kline_gaps["SPYUSDT"] = {last_open - k * HOUR_MS for k in range(-1, 20)}
    d = CcxtDataSource(CcxtDataConfig.model_validate({"api_urls": {"*": emulator.base_url}}), ctx(tmp_path, events))
    with pytest.raises(DataError, match=r"SPY: 20 missing hourly bars"):
        d.bars(["SPY"], NOW, 150)
    assert emulator.count("GET", "/api/v3/klines") == 3  # 100, 30 (short: keep going), 0 (the end)
    # an exchange that ignores ``since`` and sends the same first page again: stop, report the rest
    real = emulator.klines
    calls = {"n": 0}

    def stuck(symbol: str, start: int | None, end: int | None, limit: int) -> list:
        calls["n"] += 1
        assert calls["n"] <= 5, "paging does not stop on a page that makes no progress"
        return real(symbol, first, end, limit)

    first = last_open - 149 * HOUR_MS
    emulator.kline_gaps.clear()
    emulator.klines = stuck  # type: ignore[method-assign]
    fresh = CcxtDataSource(CcxtDataConfig.model_validate({"api_urls": {"*": emulator.base_url}}), ctx(tmp_path))
    with pytest.raises(DataError, match=r"SPY: 50 missing hourly bars"):
        fresh.bars(["SPY"], NOW, 150)
    assert calls["n"] == 2
    d.close()
    fresh.close()


def test_later_windows_download_only_the_new_bars(emulator: ExchangeEmulator, tmp_path: Path) -> None:
    """The cycle asks for a 721-bar window every hour and the monitor every few minutes: after the first
    download only the bars after the cached ones go over the wire, and the bars are the same as a fresh
    source's."""
    emulator.max_klines = 100
    d = CcxtDataSource(CcxtDataConfig.model_validate({"api_urls": {"*": emulator.base_url}}), ctx(tmp_path))
    first = d.bars(["SPY", "GLD"], NOW - timedelta(hours=2), 300)
    assert emulator.count("GET", "/api/v3/klines") == 2 * 3
    again = d.bars(["SPY", "GLD"], NOW - timedelta(hours=2), 300)  # a monitor tick in the same hour
    assert emulator.count("GET", "/api/v3/klines") == 2 * 3 and np.array_equal(again.close, first.close)
    later = d.bars(["SPY", "GLD"], NOW, 300)  # two hours on: one short page per asset
    pages = [q for m, p, q in emulator.requests if p == "/api/v3/klines"][6:]
    assert len(pages) == 2
    new_open = int((NOW.replace(minute=0) - timedelta(hours=2)).timestamp() * 1000)
    assert {int(q["startTime"]) for q in pages} == {new_open}
    fresh = CcxtDataSource(CcxtDataConfig.model_validate({"api_urls": {"*": emulator.base_url}}), ctx(tmp_path))
    assert np.array_equal(fresh.bars(["SPY", "GLD"], NOW, 300).close, later.close)
    assert np.array_equal(later.close[:-2], first.close[2:])
    d.close()
    fresh.close()


def test_gaps_are_reported_never_filled(emulator: ExchangeEmulator, tmp_path: Path) -> None:
    events: list[RiskEvent] = []
    hole = int(NOW.replace(minute=0).timestamp() * 1000) - 5 * HOUR_MS
    emulator.kline_gaps["GLDUSDT"] = {hole, hole - HOUR_MS}
    d = CcxtDataSource(CcxtDataConfig.model_validate({"api_urls": {"*": emulator.base_url}}), ctx(tmp_path, events))
    with pytest.raises(DataError, match=r"GLD: 2 missing hourly bars"):
        d.bars(["SPY", "GLD"], NOW, 48)
    assert [e.kind for e in events] == ["data_gap"] and events[0].data["asset"] == "GLD"
    d.close()


def test_full_cycle_through_the_emulator(tmp_path: Path, creds: None) -> None:
    emu = make_emulator()
    try:
        e = ccxt_engine(tmp_path, {"cex": (emu, {})})
        r = e.run_cycle(NOW)
        assert r.status == "done", r.message
        assert r.orders == 4 and r.fills >= 4
        orders = e.ledger.all_orders()
        assert all(o.status == "filled" for o in orders)
        assert_books_agree(e, emu, "cex")
        # data → orders → fills → ledger: decision prices are the mids, fees the market's 0.1% taker fee
        for f in e.ledger.fills():
            o = next(o for o in orders if o.client_id == f.client_id)
            assert f.slippage == pytest.approx((f.price - o.decision_price) * f.qty)
            assert f.fee == pytest.approx(f.price * f.qty * 0.001, rel=1e-6)
        snap = e.ledger.snapshots()[-1]
        assert snap.nav == pytest.approx(INITIAL_USDT - e.ledger.cost_totals()["fees"] - r.slippage, rel=1e-9)
        w = np.array([snap.positions[a] * snap.prices[a] for a in e.assets]) / snap.nav
        assert w.sum() == pytest.approx(0.99, abs=0.01) and (w > 0.05).all()
        # an hour later: the exchange still matches, a second cycle trades only what the band asks
        e.close()
        emu.set_time(NOW.replace(hour=1))
        e2 = Engine(e.cfg, pm=make_plugin_manager(), clock=SimulatedClock(NOW.replace(hour=1), 0.0))
        r2 = e2.run_cycle(NOW.replace(hour=1))
        assert r2.status == "done" and not e2.ledger.events("position_mismatch")
        assert_books_agree(e2, emu, "cex")
        e2.close()
    finally:
        emu.stop()


@pytest.mark.parametrize("where", ["received", "BNB"])
def test_fees_in_the_base_asset_or_a_third_currency_keep_the_books(tmp_path: Path, creds: None, where: str) -> None:
    """Binance charges the received asset (a buy pays in the base asset) or, with BNB discounts on,
    BNB: the position moves by the net quantity, a BNB fee is valued through the BNB/USDT ticker."""
    markets = {**MARKETS, "BNB": MarketSpec("BNB", price=600.0)}
    bnb0 = 50.0
    emu = make_emulator(markets, commission_asset=where, balances={"USDT": INITIAL_USDT, "BNB": bnb0})
    try:
        data = ccxt_config(tmp_path, {"cex": (emu, {})})
        del data["assets"]["BNB"]  # BNB pays the fees; the bot does not trade it
        e = Engine(parse_config(data, "test"), pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))
        r = e.run_cycle(NOW)
        assert r.status == "done" and r.orders == 4 and all(o.status == "filled" for o in e.ledger.all_orders())
        assert {t["commissionAsset"] for t in emu.trades} == ({"BNB"} if where == "BNB" else set(MARKETS))
        for f in e.ledger.fills():
            t = next(t for t in emu.trades if f.fill_id.endswith(f":{t['id']}") and t["symbol"] == f"{f.asset}USDT")
            # the fee is the 0.1% taker fee in USDT either way; the fill's quantity is what the position got
            assert f.fee == pytest.approx(float(t["price"]) * float(t["qty"]) * 0.001, rel=1e-5)
            gross = float(t["qty"])
            assert f.qty == pytest.approx(gross * (1 - 0.001) if where == "received" else gross, rel=1e-9)
        bnb = emu.balance("BNB")[0]
        assert (bnb < bnb0) if where == "BNB" else (bnb == bnb0)
        assert_books_agree(e, emu, "cex", initial_other={"BNB": bnb0})
        # the next cycle's reconcile finds the venue's positions where the ledger expects them
        e.close()
        emu.set_time(NOW.replace(hour=1))
        e2 = Engine(e.cfg, pm=make_plugin_manager(), clock=SimulatedClock(NOW.replace(hour=1), 0.0))
        assert e2.run_cycle(NOW.replace(hour=1)).status == "done"
        assert not e2.ledger.events("position_mismatch") and not e2.ledger.events("fee_estimated")
        assert_books_agree(e2, emu, "cex", initial_other={"BNB": bnb0})
        e2.close()
    finally:
        emu.stop()


def test_config_example_is_valid() -> None:
    from bot.config import load_config
    from bot.plugins import Registry

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "config" / "ccxt-paper.toml")
    reg = Registry(make_plugin_manager())
    for _vname, vsec in cfg.venues.items():
        assert reg.get("venue", vsec.plugin).config_model.model_validate(vsec.options).paper
    reg.get("data", cfg.data.plugin).config_model.model_validate(cfg.data.options)


def test_reconcile_reports_foreign_orders_and_cancels_our_leftovers(
    emulator: ExchangeEmulator, creds: None, tmp_path: Path
) -> None:
    emulator.partial_fill["*"] = 0.5
    v = make_venue(emulator, tmp_path, order_timeout_s=5.0)
    # an order of ours left resting by a crash during polling
    v.client.sleep = lambda s: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        v.place_order(Order("rwleft1", "c", "cex", "GLD", "buy", 10.0, 200.0))
    v.client.sleep = lambda s: None
    with emulator.lock:  # and someone else's order on the same account
        emulator.create_order(
            {"symbol": "TLTUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "10",
             "price": "1.00", "newClientOrderId": "manual-1"}
        )  # fmt: skip
    states, events = v.reconcile({"rwleft1": "GLD"})
    assert [s.client_id for s in states] == ["rwleft1"] and states[0].status is OrderStatus.CANCELED
    assert states[0].filled_qty == pytest.approx(5.0)
    assert sorted(e.kind for e in events) == ["order_reconciled", "unknown_open_order"]
    assert [o.client_id for o in emulator.open_orders()] == ["manual-1"]
    v.close()


def test_cycle_config_rejects_unknown_options(tmp_path: Path, emulator: ExchangeEmulator) -> None:
    data = ccxt_config(tmp_path, {"cex": (emulator, {"api_secret": "inline"})})
    with pytest.raises(ConfigError, match="api_secret"):
        Engine(parse_config(data, "test"), pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))
