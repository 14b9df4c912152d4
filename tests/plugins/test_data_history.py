"""``rwabot data fetch`` (plugins/data/history.py) with the real ccxt library against the exchange emulator.

Why against the emulator: the download is only right if ccxt's real request building and kline
parsing, paging over the exchange's page cap and the exchange's clock are, so nothing here is mocked:
ccxt talks HTTP to ``tests/connectors/emulator.py`` (hourly klines) and its ``emulator_klines.py``
extension (daily ones). What must hold: the cache holds exactly the closed bars the exchange served
(never the bar in progress), a second run asks only for the bars after the cache's last one and leaves
the old ones as they were, a bar the exchange lacks is reported and not filled, and the csv source
then runs a backtest on the cache with the exchange gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.ledger import Ledger, utc
from plugins.data.files import DataFileError, FileDataConfig, FileDataSource, load_table
from tests.connectors.emulator import HOUR_MS, MarketSpec
from tests.connectors.emulator_klines import KlinesEmulator

NOW = datetime(2026, 4, 15, 0, 5, tzinfo=UTC)  # five minutes into the bar opening at 00:00: it has no close yet
SINCE = datetime(2026, 4, 10, tzinfo=UTC)
MARKETS = {"SPY": MarketSpec("SPY", price=500.0, annual_vol=0.16), "GLD": MarketSpec("GLD", price=200.0)}


@pytest.fixture
def emu() -> Iterator[KlinesEmulator]:
    e = KlinesEmulator(MARKETS, now=NOW, max_klines=50)  # a page cap below a download: it must page
    e.start()
    yield e
    e.stop()


def fetch(emu: KlinesEmulator, out: Path, *args: str, since: datetime = SINCE) -> tuple[int, str]:
    res = CliRunner().invoke(
        app,
        ["data", "fetch", "--exchange", "binance", "--since", since.isoformat(), "--out", str(out),
         "--api-url", emu.base_url, "--rate-limit", "1000", *args],
    )  # fmt: skip
    return res.exit_code, re.sub(r"\s+", " ", res.output)


def served(
    emu: KlinesEmulator, symbol: str, hours: int, since: datetime, now: datetime
) -> list[tuple[datetime, float, float]]:
    """(close time, close, volume) of every closed bar the emulator serves from ``since``, asked of it directly."""
    start = int(since.timestamp() * 1000)
    # hourly: the emulator's own klines; longer bars: emulator_klines' aggregation of them
    rows = (
        emu.klines(symbol, start, None, 100_000)
        if hours == 1
        else emu.interval_klines(symbol, hours, start, None, 100_000)
    )
    tf = hours * HOUR_MS
    return [
        (datetime.fromtimestamp((k[0] + tf) / 1000, UTC), float(k[4]), float(k[5]))
        for k in rows
        if k[0] + tf <= int(now.timestamp() * 1000)
    ]


def klines_requests(emu: KlinesEmulator, symbol: str, after: int = 0) -> list[dict[str, str]]:
    return [p for _, path, p in emu.requests[after:] if path == "/api/v3/klines" and p.get("symbol") == symbol]


def read(path: Path, **options: object) -> FileDataSource:
    return FileDataSource(load_table(FileDataConfig(path=str(path), **options)))  # type: ignore[arg-type]


def test_fetch_stores_the_closed_bars_the_exchange_served(emu: KlinesEmulator, tmp_path: Path) -> None:
    code, out = fetch(emu, tmp_path, "--symbols", "SPY/USDT,GOLD=GLD/USDT")
    assert code == 0, out
    folder = tmp_path / "binance"
    assert sorted(p.name for p in folder.iterdir()) == ["GLD-USDT-1h.parquet", "SPY-USDT-1h.parquet"]
    assert "SPY (SPY/USDT): 120 new bars" in out and "GOLD (GLD/USDT): 120 new bars" in out
    src = read(folder)
    assert set(src.assets()) == {"SPY", "GOLD"} and src.bar == timedelta(hours=1)
    # the bar opening at 00:00 on the 15th is five minutes old: not a bar yet
    assert src.first == SINCE + timedelta(hours=1) and src.last == datetime(2026, 4, 15, tzinfo=UTC)
    for asset, symbol in (("SPY", "SPYUSDT"), ("GOLD", "GLDUSDT")):
        want = served(emu, symbol, 1, SINCE, NOW)
        b = src.bars([asset], src.last, len(src.times))
        assert list(b.times) == [t for t, _, _ in want]
        np.testing.assert_array_equal(b.close[:, 0], [c for _, c, _ in want])
        np.testing.assert_array_equal(b.volume[:, 0], [v for _, _, v in want])
        assert len(klines_requests(emu, symbol)) >= 3  # 120 bars through pages of 50


def test_a_second_run_fetches_only_the_new_bars(emu: KlinesEmulator, tmp_path: Path) -> None:
    code, out = fetch(emu, tmp_path / "a", "--symbols", "SPY/USDT")
    assert code == 0, out
    path = tmp_path / "a" / "binance" / "SPY-USDT-1h.parquet"
    before = read(path)
    # nothing new: nothing rewritten, one request at most (asking after the last bar)
    mark, stamp = len(emu.requests), path.stat().st_mtime_ns
    code, out = fetch(emu, tmp_path / "a", "--symbols", "SPY/USDT")
    assert code == 0 and "SPY (SPY/USDT): up to date; 120 bars" in out, out
    assert path.stat().st_mtime_ns == stamp
    assert len(klines_requests(emu, "SPYUSDT", mark)) <= 1
    # thirty hours later: the requests start right after the cached last bar, the old bars stay as they were
    later = NOW + timedelta(hours=30)
    emu.set_time(later)
    mark = len(emu.requests)
    code, out = fetch(emu, tmp_path / "a", "--symbols", "SPY/USDT")
    assert code == 0 and "SPY (SPY/USDT): 30 new bars; 150 bars" in out, out
    asked = klines_requests(emu, "SPYUSDT", mark)
    last_open_ms = int((before.last - timedelta(hours=1)).timestamp() * 1000)
    assert asked and int(asked[0]["startTime"]) == last_open_ms + HOUR_MS
    assert all(int(p["startTime"]) > last_open_ms for p in asked)
    after = read(path)
    np.testing.assert_array_equal(after.table.close[:120], before.table.close)
    assert after.times[:120] == before.times
    # ... and the file is what one download of the whole range gives
    code, out = fetch(emu, tmp_path / "b", "--symbols", "SPY/USDT")
    assert code == 0, out
    fresh = read(tmp_path / "b" / "binance" / "SPY-USDT-1h.parquet")
    assert fresh.times == after.times and after.last == datetime(2026, 4, 16, 6, tzinfo=UTC)
    np.testing.assert_array_equal(fresh.table.close, after.table.close)
    np.testing.assert_array_equal(fresh.table.volume, after.table.volume)
    # moving --since earlier adds the bars before the first one, and only those
    mark = len(emu.requests)
    code, out = fetch(emu, tmp_path / "a", "--symbols", "SPY/USDT", since=SINCE - timedelta(hours=10))
    assert code == 0 and "SPY (SPY/USDT): 10 new bars; 160 bars" in out, out
    asked = klines_requests(emu, "SPYUSDT", mark)
    assert int(asked[0]["startTime"]) == int((SINCE - timedelta(hours=10)).timestamp() * 1000)
    np.testing.assert_array_equal(read(path).table.close[10:], after.table.close)


def test_bars_the_exchange_lacks_are_reported_not_filled(emu: KlinesEmulator, tmp_path: Path) -> None:
    lost = [SINCE + timedelta(hours=h) for h in (30, 31)]  # the bars opening then
    emu.kline_gaps["SPYUSDT"] = {int(t.timestamp() * 1000) for t in lost}
    code, out = fetch(emu, tmp_path, "--symbols", "SPY/USDT", "--format", "csv")
    assert code == 0, out
    assert "118 bars in" in out and "2 bars missing at the exchange (first closing 2026-04-11T07:00:00Z)" in out
    path = tmp_path / "binance" / "SPY-USDT-1h.csv"
    with pytest.raises(DataFileError, match="gap in the bars: 2026-04-11T09:00:00Z follows 2026-04-11T06:00:00Z"):
        read(path)
    src = read(path, allow_gaps=True)
    assert len(src.times) == 118 and all(t + timedelta(hours=-1) not in lost for t in src.times)


def test_until_caps_the_last_bar(emu: KlinesEmulator, tmp_path: Path) -> None:
    code, out = fetch(emu, tmp_path, "--symbols", "SPY/USDT", "--until", "2026-04-12T00:30:00Z")
    assert code == 0, out
    src = read(tmp_path / "binance" / "SPY-USDT-1h.parquet")
    assert src.first == SINCE + timedelta(hours=1) and src.last == datetime(2026, 4, 12, tzinfo=UTC)
    assert len(src.times) == 48


def test_daily_bars(emu: KlinesEmulator, tmp_path: Path) -> None:
    since = datetime(2026, 2, 1, tzinfo=UTC)
    code, out = fetch(emu, tmp_path, "--symbols", "SPY/USDT", "--timeframe", "1d", "--format", "csv", since=since)
    assert code == 0, out
    src = read(tmp_path / "binance" / "SPY-USDT-1d.csv")
    want = served(emu, "SPYUSDT", 24, since, NOW)
    assert src.bar == timedelta(days=1) and src.periods_per_year == 365.0
    assert list(src.times) == [t for t, _, _ in want] and src.last == datetime(2026, 4, 15, tzinfo=UTC)
    np.testing.assert_array_equal(src.table.close[:, 0], [c for _, c, _ in want])
    np.testing.assert_array_equal(src.table.volume[:, 0], [v for _, _, v in want])


def test_an_unknown_symbol_or_timeframe_exits_2(emu: KlinesEmulator, tmp_path: Path) -> None:
    code, out = fetch(emu, tmp_path, "--symbols", "XYZ/USDT")
    assert code == 2 and "binance has no market XYZ/USDT" in out, out
    code, out = fetch(emu, tmp_path, "--symbols", "SPY/USDT", "--timeframe", "7m")
    assert code == 2 and "--timeframe 7m: binance offers" in out, out
    code, out = fetch(emu, tmp_path, "--symbols", "SPY")
    assert code == 2 and "not a ccxt symbol" in out, out
    assert not (tmp_path / "binance").exists()


CONFIG = """
[bot]
ledger = "{ledger}"
quote = "USDT"
[clock]
kind = "simulated"
[risk]
history_hours = 48
liquidity_lookback_hours = 24
[strategy]
plugin = "risk_parity"
[data]
plugin = "csv"
options = {{ path = "unused" }}
[venues.exchange]
plugin = "paper"
options = {{ initial_cash = 100000.0, fee_bps = 2.0 }}
[assets.SPY]
venue = "exchange"
[assets.GOLD]
venue = "exchange"
"""


def test_a_backtest_runs_on_the_cache_with_the_exchange_gone(emu: KlinesEmulator, tmp_path: Path) -> None:
    code, out = fetch(emu, tmp_path / "cache", "--symbols", "SPY/USDT,GOLD=GLD/USDT")
    assert code == 0, out
    emu.stop()  # offline from here on
    cfg = tmp_path / "bt.toml"
    cfg.write_text(CONFIG.format(ledger=tmp_path / "unused.sqlite"))
    kept = tmp_path / "bt.sqlite"
    files = str(tmp_path / "cache" / "binance" / "*-1h.parquet")
    res = CliRunner().invoke(
        app, ["backtest", "--config", str(cfg), "--data", files, "--hours", "6", "--ledger", str(kept)]
    )
    assert res.exit_code == 0, res.output
    led = Ledger(str(kept))
    try:
        cycles = [c for c in led.cycles() if c.trigger == "scheduled"]
        last = led.snapshots()[-1]
    finally:
        led.close()
    assert len(cycles) == 7 and all(c.status == "done" for c in cycles), [c.message for c in cycles]
    assert utc(cycles[0].scheduled_for) == SINCE + timedelta(hours=49)
    spy = dict((t, c) for t, c, _ in served(emu, "SPYUSDT", 1, SINCE, NOW))
    assert last.prices["SPY"] == spy[utc(last.time)]
