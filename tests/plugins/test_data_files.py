"""The ``csv`` data source (plugins/data/files.py) on real files written by each test.

Why these tests: a backtest on a user's file is only as good as the file, and the one thing the source
must never do is repair it silently. Every bad input of issue 17 (NaN, non-positive price, unsorted
or duplicate timestamps, negative volume) is written into a real CSV and a real parquet file and
must come back as a ``DataFileError`` naming the file, the row and the column; the good files must
read back exactly as written (long, wide, CSV and parquet alike), and a backtest must run on one
end to end through ``rwabot backtest --data``.
"""

from __future__ import annotations

import math
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import plugins.data.files as files
import plugins.forecasters.basic as basic
import plugins.optimizers.erc as erc
import plugins.policies.basic as policies
import strategies.risk_parity as risk_parity
from bot.backtest import summarize
from bot.cli import app
from bot.clock import SimulatedClock
from bot.config import parse_config
from bot.cycle import Engine
from bot.errors import ConfigError, DataError
from bot.ledger import Ledger, utc
from bot.plugins import Registry, make_plugin_manager
from bot.riskmath import periods_per_year
from connectors import paper
from plugins.data.files import DataFileError, FileDataConfig, FileDataSource, load_table, parse_bar

T0 = datetime(2024, 1, 1, 1, tzinfo=UTC)  # close of the first bar
ASSETS = {"BTC": (40_000.0, 0.6), "ETH": (2_200.0, 0.8), "GOLD": (2_000.0, 0.15)}


def prices(n: int, step: timedelta = timedelta(hours=1), seed: int = 3) -> pd.DataFrame:
    """A wide frame of ``n`` bars closing ``T0, T0 + step, …``: random-walk closes, positive volumes."""
    rng = np.random.default_rng(seed)
    times = pd.date_range(T0, periods=n, freq=pd.Timedelta(step))
    df = pd.DataFrame({"timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ")})
    for a, (p0, vol) in ASSETS.items():
        df[a] = np.round(p0 * np.exp(np.cumsum(rng.standard_normal(n) * vol / math.sqrt(8760))), 6)
        df[f"{a}_volume"] = np.round(5e6 / p0 * (0.5 + rng.random(n)), 6)
    return df


def long_of(wide: pd.DataFrame) -> pd.DataFrame:
    """The same bars in long format, sorted by time then asset (one row per asset and bar)."""
    rows = [(t, a, r[a], r[f"{a}_volume"]) for t, (_, r) in zip(wide["timestamp"], wide.iterrows()) for a in ASSETS]
    return pd.DataFrame(rows, columns=["timestamp", "asset", "close", "volume"])


def write_lines(path: Path, df: pd.DataFrame) -> list[str]:
    """The CSV text lines of ``df`` (header first), so a test can break exactly one cell."""
    df.to_csv(path, index=False)
    return path.read_text().splitlines()


def load(path: Path, **options: object) -> FileDataSource:
    return FileDataSource(load_table(FileDataConfig(path=str(path), **options)))  # type: ignore[arg-type]


def squash(text: str) -> str:
    """Rich wraps the CLI's error at the terminal width: compare without whitespace."""
    return re.sub(r"\s+", "", text)


# -- bad input: each problem named by file, row and column -------------------------------------------------

LONG_CELLS = [
    # (line of the CSV to break, column, new text, what the error must say)
    (5, "close", "NaN", "NaN (a missing value)"),
    (6, "close", "", "empty (a missing value)"),
    (8, "close", "abc", "'abc' is not a number"),
    (9, "close", "0", "price 0 is not positive"),
    (10, "close", "-3.5", "price -3.5 is not positive"),
    (11, "close", "inf", "not finite"),
    (12, "volume", "-1", "volume -1 is negative"),
    (13, "volume", "nan", "NaN (a missing value)"),
    (14, "timestamp", "yesterday", "'yesterday' is not an ISO-8601 time"),
]


@pytest.mark.parametrize("line, column, text, says", LONG_CELLS)
def test_long_csv_bad_cell_names_file_row_and_column(
    tmp_path: Path, line: int, column: str, text: str, says: str
) -> None:
    path = tmp_path / "prices.csv"
    lines = write_lines(path, long_of(prices(10)))
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = text
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError) as err:
        load(path)
    e = err.value
    assert (e.file, e.row, e.column) == (str(path), line - 1, column)
    assert f"{path}: row {line - 1} (line {line}), column {column}: {says}" in str(e)


def test_a_row_with_too_many_cells_is_a_read_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    lines = write_lines(path, long_of(prices(10)))
    lines[6] = lines[6].replace(",", ";", 1) + ",12,5"  # a decimal comma and a stray separator
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=re.escape(f"{path}: cannot read")) as err:
        load(path)
    assert err.value.file == str(path)


def test_several_problems_are_listed_in_row_order_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    df = long_of(prices(10))
    df.loc[[3, 20], "close"] = -1.0
    df.loc[7, "volume"] = -2.0
    df.to_csv(path, index=False)
    with pytest.raises(DataFileError) as err:
        load(path)
    msg = str(err.value)
    assert msg.index("row 4 (line 5), column close") < msg.index("row 8 (line 9), column volume")
    assert msg.index("row 8 (line 9), column volume") < msg.index("row 21 (line 22), column close")
    assert (err.value.row, err.value.column) == (4, "close")


def test_long_csv_unsorted_and_duplicate_timestamps_name_the_later_row(tmp_path: Path) -> None:
    df = long_of(prices(10))
    path = tmp_path / "unsorted.csv"
    swapped = df.copy()
    # rows 7 and 10 (0-based 6 and 9) are BTC at bars 3 and 4: swap their times
    assert swapped.loc[6, "asset"] == swapped.loc[9, "asset"] == "BTC"
    swapped.loc[[6, 9], "timestamp"] = swapped.loc[[9, 6], "timestamp"].to_numpy()
    swapped.to_csv(path, index=False)
    with pytest.raises(DataFileError) as err:
        load(path)
    assert (err.value.row, err.value.column) == (10, "timestamp")
    assert (
        f"{path}: row 10 (line 11), column timestamp: 2024-01-01T03:00:00Z for BTC is before the previous row's "
        "2024-01-01T04:00:00Z: rows must be in time order" in str(err.value)
    )
    dup = df.copy()
    dup.loc[9, "timestamp"] = dup.loc[6, "timestamp"]  # BTC twice at bar 3
    path = tmp_path / "dup.csv"
    dup.to_csv(path, index=False)
    with pytest.raises(DataFileError) as err:
        load(path)
    assert (err.value.row, err.value.column) == (10, "timestamp")
    assert "duplicate timestamp 2024-01-01T03:00:00Z for BTC (also row 7)" in str(err.value)


def test_long_file_sorted_by_asset_then_time_is_in_order(tmp_path: Path) -> None:
    """Time order is per asset: an export grouped by asset is as valid as one sorted by time."""
    wide = prices(12)
    by_asset = long_of(wide).sort_values(["asset", "timestamp"], kind="stable")
    by_asset.to_csv(tmp_path / "by_asset.csv", index=False)
    long_of(wide).to_csv(tmp_path / "by_time.csv", index=False)
    a, b = load(tmp_path / "by_asset.csv"), load(tmp_path / "by_time.csv")
    assert a.assets() == ("BTC", "ETH", "GOLD") == b.assets()
    np.testing.assert_array_equal(a.table.close, b.table.close)


@pytest.mark.parametrize(
    "column, value, says",
    [
        ("ETH", "NaN", "NaN (a missing value)"),
        ("ETH", "", "empty (a missing value)"),
        ("GOLD", "-2000", "price -2000 is not positive"),
        ("BTC_volume", "-0.5", "volume -0.5 is negative"),
    ],
)
def test_wide_csv_bad_cell_names_the_asset_column(tmp_path: Path, column: str, value: str, says: str) -> None:
    path = tmp_path / "wide.csv"
    df = prices(10).astype(str)
    df.loc[4, column] = value
    df.to_csv(path, index=False)
    with pytest.raises(DataFileError) as err:
        load(path)
    assert (err.value.file, err.value.row, err.value.column) == (str(path), 5, column)
    assert f"{path}: row 5 (line 6), column {column}: {says}" in str(err.value)


def test_wide_csv_unsorted_and_duplicate_rows(tmp_path: Path) -> None:
    df = prices(10)
    path = tmp_path / "wide.csv"
    df.iloc[[2, 3]] = df.iloc[[3, 2]].to_numpy()
    df.to_csv(path, index=False)
    with pytest.raises(DataFileError, match=r"row 4 \(line 5\), column timestamp: 2024-01-01T03:00:00Z is before"):
        load(path)
    df = prices(10)
    df.loc[5, "timestamp"] = df.loc[4, "timestamp"]
    df.to_csv(path, index=False)
    with pytest.raises(
        DataFileError, match=r"row 6 \(line 7\), column timestamp: duplicate timestamp .* \(also row 5\)"
    ):
        load(path)


@pytest.mark.parametrize(
    "index, column, value, says",
    [
        (6, "close", np.nan, "NaN"),
        (8, "close", 0.0, "price 0 is not positive"),
        (2, "volume", -4.0, "volume -4 is negative"),
    ],
)
def test_parquet_bad_values_name_the_row(tmp_path: Path, index: int, column: str, value: float, says: str) -> None:
    df = long_of(prices(8))
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)  # a typed timestamp column, as parquet keeps it
    df.loc[index, column] = value
    row = index + 1
    path = tmp_path / "prices.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(DataFileError) as err:
        load(path)
    assert (err.value.file, err.value.row, err.value.column) == (str(path), row, column)
    assert f"{path}: row {row}, column {column}: {says}" in str(err.value)  # no CSV line numbers in parquet


def test_parquet_unsorted_and_duplicate_timestamps(tmp_path: Path) -> None:
    wide = prices(8)
    wide["timestamp"] = pd.to_datetime(wide["timestamp"], utc=True)
    path = tmp_path / "wide.parquet"
    back = wide.copy()
    back.loc[6, "timestamp"] = back.loc[1, "timestamp"]
    back.to_parquet(path, index=False)
    with pytest.raises(DataFileError, match=r"row 7, column timestamp: 2024-01-01T02:00:00Z is before the previous"):
        load(path)
    dup = wide.copy()
    dup.loc[3, "timestamp"] = dup.loc[2, "timestamp"]
    dup.to_parquet(path, index=False)
    with pytest.raises(DataFileError, match=r"row 4, column timestamp: duplicate timestamp 2024-01-01T03:00:00Z"):
        load(path)


def test_an_asset_missing_a_bar_is_refused_not_filled(tmp_path: Path) -> None:
    df = long_of(prices(10))
    df = df[~((df["asset"] == "ETH") & (df["timestamp"] == "2024-01-01T06:00:00Z"))]
    path = tmp_path / "prices.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataFileError) as err:
        load(path)
    assert (err.value.file, err.value.row, err.value.column) == (str(path), None, "ETH")
    assert "asset ETH has no bar at 2024-01-01T06:00:00Z where other assets have one" in str(err.value)
    # an asset that starts later is the same problem, and the start option trims it away
    late = long_of(prices(10))
    late = late[~((late["asset"] == "GOLD") & (late["timestamp"] < "2024-01-01T04:00:00Z"))]
    late.to_csv(path, index=False)
    with pytest.raises(DataFileError, match="asset GOLD has no bar at 2024-01-01T01:00:00Z and 2 more times"):
        load(path)
    src = load(path, start="2024-01-01T04:00:00Z")
    assert src.first == datetime(2024, 1, 1, 4, tzinfo=UTC) and len(src.times) == 7


def test_a_gap_is_an_error_unless_allowed(tmp_path: Path) -> None:
    df = prices(24 * 3)
    df = df.drop(index=[30, 31])  # two hours the whole market has no bar for
    path = tmp_path / "gappy.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataFileError, match="gap in the bars: 2024-01-02T09:00:00Z follows 2024-01-02T06:00:00Z"):
        load(path)
    src = load(path, allow_gaps=True)
    assert src.bar == timedelta(hours=1) and len(src.times) == 70
    assert src.periods_per_year == pytest.approx(8760 * 70 / 72)
    with pytest.raises(DataFileError, match="less than the bar interval 1d"):
        load(path, bar="1d", allow_gaps=True)


def test_missing_files_and_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        load(tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no .csv"):
        load(tmp_path / "empty")
    path = tmp_path / "novol.csv"
    long_of(prices(4)).drop(columns="volume").to_csv(path, index=False)
    with pytest.raises(DataFileError, match=r"missing \['volume'\]"):
        load(path)
    assert (load(path, volume_if_missing=1e6).table.volume == 1e6).all()
    wide = tmp_path / "wide.csv"
    prices(4).drop(columns="ETH").to_csv(wide, index=False)
    with pytest.raises(DataFileError, match=r"volume columns \['ETH_volume'\] have no close column"):
        load(wide)


def test_options_are_strict(tmp_path: Path) -> None:
    csv = Registry(make_plugin_manager(entry_points=False, plugins=[files])).get("data", "csv")
    with pytest.raises(ConfigError, match="data.options.*pth"):
        csv.validate({"pth": "x.csv"}, where="test: data.options")
    with pytest.raises(ConfigError, match="bar"):
        csv.validate({"path": "x.csv", "bar": "hourly"}, where="test: data.options")
    with pytest.raises(ConfigError, match="unknown time zone"):
        csv.validate({"path": "x.csv", "timezone": "Mars/Olympus"}, where="test: data.options")


# -- good input: read back exactly -----------------------------------------------------------------------


def test_long_wide_csv_and_parquet_read_back_the_same_bars(tmp_path: Path) -> None:
    wide = prices(50)
    wide.to_csv(tmp_path / "wide.csv", index=False)
    long_of(wide).to_csv(tmp_path / "long.csv.gz", index=False)
    typed = long_of(wide)
    typed["timestamp"] = pd.to_datetime(typed["timestamp"], utc=True)
    typed.to_parquet(tmp_path / "long.parquet", index=False)
    wide.to_parquet(tmp_path / "wide.parquet", index=False)  # string timestamps in parquet
    srcs = [load(tmp_path / n) for n in ("wide.csv", "long.csv.gz", "long.parquet", "wide.parquet")]
    for s in srcs:
        assert s.assets() == ("BTC", "ETH", "GOLD") and s.bar == timedelta(hours=1)
        np.testing.assert_array_equal(s.table.close, wide[["BTC", "ETH", "GOLD"]].to_numpy())
        np.testing.assert_array_equal(s.table.volume, wide[["BTC_volume", "ETH_volume", "GOLD_volume"]].to_numpy())
        assert s.times == srcs[0].times
    assert srcs[0].first == T0 and srcs[0].last == T0 + timedelta(hours=49)
    assert srcs[0].periods_per_year == 8760.0 == periods_per_year(timedelta(hours=1))


def test_bars_and_latest_serve_the_file_and_refuse_outside_it(tmp_path: Path) -> None:
    wide = prices(30)
    wide.to_csv(tmp_path / "p.csv", index=False)
    src = load(tmp_path / "p.csv")
    end = T0 + timedelta(hours=20, minutes=30)  # inside the hour: the bar closing at T0 + 20 h is the last
    b = src.bars(["GOLD", "BTC"], end, 5)
    assert b.times == tuple(T0 + timedelta(hours=h) for h in range(16, 21))
    np.testing.assert_array_equal(b.close, wide.loc[16:20, ["GOLD", "BTC"]].to_numpy())
    np.testing.assert_array_equal(b.volume, wide.loc[16:20, ["GOLD_volume", "BTC_volume"]].to_numpy())
    snap = src.latest(["ETH"], end)
    assert snap.prices[0] == wide.loc[20, "ETH"] and snap.times == (T0 + timedelta(hours=20),)
    assert src.bars(["BTC"], T0 + timedelta(hours=29), 30).times[0] == T0  # the whole file
    with pytest.raises(DataError, match="31 bars ending .* are asked for, the file has 30"):
        src.bars(["BTC"], T0 + timedelta(hours=29), 31)
    with pytest.raises(DataError, match="before the first bar"):
        src.latest(["BTC"], T0 - timedelta(minutes=1))
    with pytest.raises(DataError, match="past the data: the last bar .* closed at 2024-01-02T06:00:00"):
        src.bars(["BTC"], T0 + timedelta(hours=31), 2)
    with pytest.raises(DataError, match="unknown asset"):
        src.bars(["SPY"], end, 2)
    with pytest.raises(DataError, match="naive"):
        src.latest(["BTC"], datetime(2024, 1, 1, 5))


def test_open_labels_local_times_and_epochs(tmp_path: Path) -> None:
    wide = prices(10)
    ny = wide.copy()  # the same bars, stamped with their *open* in New York local time, no offset
    ny["timestamp"] = (
        (pd.to_datetime(wide["timestamp"], utc=True) - pd.Timedelta(hours=1))
        .dt.tz_convert("America/New_York")
        .dt.strftime("%Y-%m-%d %H:%M")
    )
    ny.to_csv(tmp_path / "ny.csv", index=False)
    ms = wide.copy()  # ... and as epoch milliseconds of the close
    ms["timestamp"] = (pd.to_datetime(wide["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
        milliseconds=1
    )
    ms.to_csv(tmp_path / "ms.csv", index=False)
    ref = load(tmp_path / "ms.csv")
    assert ref.first == T0
    local = load(tmp_path / "ny.csv", label="open", timezone="America/New_York")
    assert local.times == ref.times
    np.testing.assert_array_equal(local.table.close, ref.table.close)
    # read as close times in UTC, the same file is five hours early and one bar early: never the same bars
    assert load(tmp_path / "ny.csv").first == T0 - timedelta(hours=6)


def test_daily_bars_annualise_by_the_file(tmp_path: Path) -> None:
    daily = prices(400, timedelta(days=1))
    daily.to_csv(tmp_path / "daily.csv", index=False)
    src = load(tmp_path / "daily.csv")
    assert src.bar == timedelta(days=1) == parse_bar("1d")
    assert src.periods_per_year == 365.0 == periods_per_year(src.bar)
    with pytest.raises(DataError, match="must be positive"):
        periods_per_year(timedelta(0))
    b = src.bars(["BTC"], src.last, 30)
    assert b.times[-1] - b.times[0] == timedelta(days=29)  # 30 bars are 30 days, not 30 hours
    # a market that closes at weekends: weekdays only, bars counted as they are, 5/7 of 365 a year
    weekdays = daily[pd.to_datetime(daily["timestamp"]).dt.day_of_week < 5]
    weekdays.to_csv(tmp_path / "weekdays.csv", index=False)
    with pytest.raises(DataFileError, match="gap in the bars"):
        load(tmp_path / "weekdays.csv")
    wk = load(tmp_path / "weekdays.csv", allow_gaps=True)
    assert wk.bar == timedelta(days=1)
    assert wk.periods_per_year == pytest.approx(365 * 5 / 7, rel=0.01)


def test_a_directory_or_glob_merges_one_asset_per_file(tmp_path: Path) -> None:
    wide = prices(20)
    folder = tmp_path / "cache"
    folder.mkdir()
    for a in ASSETS:
        part = long_of(wide)
        part[part["asset"] == a].to_csv(folder / f"{a}-1h.csv", index=False)
    src = load(folder)
    assert set(src.assets()) == set(ASSETS)
    np.testing.assert_array_equal(src.bars(["ETH"], src.last, 20).close[:, 0], wide["ETH"].to_numpy())
    assert load(tmp_path / "cache" / "B*-1h.csv").assets() == ("BTC",)
    long_of(wide).to_csv(folder / "all.csv", index=False)  # BTC a second time, in another file
    with pytest.raises(
        DataFileError, match=r"asset BTC is in .*all.csv and .*BTC-1h.csv: each asset must come from one file"
    ):
        load(folder)


# -- through the engine and the CLI ----------------------------------------------------------------------------

CONFIG = """
[bot]
ledger = "{ledger}"
quote = "USD"
[clock]
kind = "simulated"
[risk]
history_hours = {history}
liquidity_lookback_hours = 24
max_price_age_minutes = {age}
[strategy]
plugin = "risk_parity"
[data]
plugin = "{plugin}"
options = {{ {options} }}
[venues.exchange]
plugin = "paper"
options = {{ initial_cash = 100000.0, fee_bps = 2.0, max_quote_age_minutes = {age} }}
[assets.BTC]
venue = "exchange"
[assets.ETH]
venue = "exchange"
[assets.GOLD]
venue = "exchange"
"""


def test_backtest_cli_runs_on_a_user_csv(tmp_path: Path) -> None:
    """``rwabot backtest --data prices.csv``: every cycle trades at the file's prices, from the first
    bar with a full history window; the config's own data section (simulated) is replaced."""
    wide = prices(48 + 1 + 30)
    csv = tmp_path / "prices.csv"
    wide.to_csv(csv, index=False)
    cfg = tmp_path / "bt.toml"
    cfg.write_text(
        CONFIG.format(ledger=tmp_path / "unused.sqlite", history=48, age=90, plugin="simulated", options="seed = 7")
    )
    kept = tmp_path / "bt.sqlite"
    res = CliRunner().invoke(
        app, ["backtest", "--config", str(cfg), "--data", str(csv), "--hours", "30", "--ledger", str(kept)]
    )
    assert res.exit_code == 0, res.output
    assert "annualised volatility" in res.output and "end NAV" in res.output
    led = Ledger(str(kept))
    try:
        cycles = led.cycles()
        snaps = [s for s in led.snapshots() if s.time.minute == 0]
    finally:
        led.close()
    scheduled = [c for c in cycles if c.trigger == "scheduled"]  # a cycle at each end: 30 h, 31 cycles
    assert len(scheduled) == 31 and all(c.status == "done" for c in scheduled), [c.message for c in scheduled]
    assert utc(scheduled[0].scheduled_for) == T0 + timedelta(hours=48)  # the first full window: 49 bars
    by_time = wide.assign(t=pd.to_datetime(wide["timestamp"], utc=True)).set_index("t")
    assert len(snaps) >= 30
    for s in snaps:
        row = by_time.loc[pd.Timestamp(utc(s.time))]
        assert s.prices == pytest.approx({a: row[a] for a in ASSETS}, rel=1e-12)
    assert all(snaps[-1].positions[a] > 0 for a in ASSETS)  # it bought and held the file's assets


def test_backtest_cli_reports_a_bad_file_and_a_run_past_its_end(tmp_path: Path) -> None:
    cfg = tmp_path / "bt.toml"
    cfg.write_text(CONFIG.format(ledger=tmp_path / "l.sqlite", history=24, age=90, plugin="simulated", options=""))
    df = prices(60)
    df.loc[40, "ETH"] = -1.0
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    res = CliRunner().invoke(app, ["backtest", "--config", str(cfg), "--data", str(bad), "--hours", "5"])
    assert res.exit_code == 2
    assert squash(f"{bad}: row 41 (line 42), column ETH: price -1 is not positive") in squash(res.output)
    good = tmp_path / "good.csv"
    prices(60).to_csv(good, index=False)
    res = CliRunner().invoke(app, ["backtest", "--config", str(cfg), "--data", str(good), "--hours", "40"])
    assert res.exit_code == 2
    assert squash("after the last bar (2024-01-03T12:00:00+00:00); at most 35 h fit") in squash(res.output)


def test_engine_cycles_on_daily_bars(tmp_path: Path) -> None:
    """A cycle per daily close runs the whole pipeline on a daily file: the history and liquidity
    windows count daily bars, fills happen at the day's close. (The daemon's hourly schedule and the
    hourly annualisation are bot/backtest.py's and bot/cycle.py's to adapt: ``source.bar``,
    ``source.times``, ``periods_per_year``.)"""
    daily = prices(60, timedelta(days=1))
    path = tmp_path / "daily.csv"
    daily.to_csv(path, index=False)
    text = CONFIG.format(ledger=tmp_path / "d.sqlite", history=30, age=90, plugin="csv", options=f'path = "{path}"')
    cfg = parse_config(tomllib.loads(text), "daily")
    src = load(path)
    start = src.start_for(31)
    assert start == T0 + timedelta(days=30)
    clock = SimulatedClock(start, 0.0)
    pm = make_plugin_manager(entry_points=False, plugins=[files, paper, risk_parity, basic, erc, policies])
    engine = Engine(cfg, pm=pm, clock=clock)
    try:
        assert engine.c.data.bar == timedelta(days=1)
        for k in range(3):
            now = start + timedelta(days=k)
            clock.advance_to(now)
            report = engine.run_cycle(now)
            assert report.status == "done", report.message
        snaps = [s for s in engine.ledger.snapshots() if utc(s.time) in set(src.times)]
    finally:
        engine.close()
    assert [utc(s.time) for s in snaps[-3:]] == [start + timedelta(days=k) for k in range(3)]
    by_time = daily.assign(t=pd.to_datetime(daily["timestamp"], utc=True)).set_index("t")
    for s in snaps[-3:]:
        row = by_time.loc[pd.Timestamp(utc(s.time))]
        assert s.prices == pytest.approx({a: row[a] for a in ASSETS}, rel=1e-12)
        assert s.positions and all(q > 0 for q in s.positions.values())


def test_backtest_cli_runs_daily_bars_with_fast_and_refuses_them_hourly(tmp_path: Path) -> None:
    """A daily file backtests one cycle per daily close through ``--fast`` (the daemon path steps hourly,
    so it refuses such a file rather than trade 24 times on each bar), annualised by 365 bars a year."""
    daily = prices(30 + 1 + 40, timedelta(days=1))
    csv = tmp_path / "daily.csv"
    daily.to_csv(csv, index=False)
    cfg = tmp_path / "bt.toml"
    cfg.write_text(CONFIG.format(ledger=tmp_path / "unused.sqlite", history=30, age=60 * 24 * 2, plugin="simulated",
                                 options="seed = 7"))  # fmt: skip
    hourly = CliRunner().invoke(app, ["backtest", "--config", str(cfg), "--data", str(csv), "--hours", str(24 * 40)])
    assert hourly.exit_code == 2 and "24-hourbars" in squash(hourly.output), hourly.output
    assert "add--fast" in squash(hourly.output)
    kept = tmp_path / "bt.sqlite"
    res = CliRunner().invoke(app, ["backtest", "--config", str(cfg), "--data", str(csv), "--hours", str(24 * 40),
                                   "--fast", "--ledger", str(kept)])  # fmt: skip
    assert res.exit_code == 0, res.output
    led = Ledger(str(kept))
    try:
        cycles, snaps = led.cycles(), led.snapshots()
        summary = summarize(led)
    finally:
        led.close()
    assert len(cycles) == 41 and all(c.status == "done" for c in cycles)
    assert [utc(c.scheduled_for) for c in cycles] == [T0 + timedelta(days=30 + k) for k in range(41)]
    nav = np.array([cycles[0].nav_before, *(s.nav for s in snaps)])
    steps = np.diff(np.log(nav))[1:]
    # volatility is per step: 365 daily steps a year, in the printed summary and read back from the ledger
    assert summary.annual_vol == pytest.approx(steps.std(ddof=1) * np.sqrt(365), rel=1e-9)
    printed = float(next(line for line in res.output.splitlines() if "annualised volatility" in line)
                    .split("│")[2].strip().rstrip("%")) / 100  # fmt: skip
    assert printed == pytest.approx(steps.std(ddof=1) * np.sqrt(365), abs=5e-5)
    assert summary.cycles == 41
