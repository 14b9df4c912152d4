"""The ``csv`` data source: bars a user provides in CSV or parquet files, validated on load.

Why a file source: a backtest is only worth iterating on when it runs on the prices the user trades,
and those come from a vendor's export, a notebook or the ccxt history cache (``rwabot data fetch``,
``plugins/data/history.py``), not from the simulated market. Nothing here touches the network.

What is read (docs/data.md has the details and examples):

* a file (``.csv``, ``.csv.gz``, ``.parquet``), a directory (every such file in it) or a glob;
* **long** format: columns ``timestamp``, ``asset``, ``close``, ``volume`` (others ignored), one row
  per asset and bar, rows in time order per asset;
* **wide** format: a ``timestamp`` column, one close column per asset named by the asset, and
  ``<asset>_volume`` columns for volumes;
* timestamps in ISO 8601 (``Z`` or an offset; naive ones are in ``timezone``) or epoch seconds or
  milliseconds; by default they are bar *close* times (``label = "open"`` for files stamped with the
  bar's start, e.g. a vendor's daily file where ``2024-01-02`` is that day's bar).

Everything is checked before the first bar is served, and a problem is an error that names the file,
the row and the column (``DataFileError``, a ``DataError``): a missing or NaN value, a value that is
not a number, a non-positive or non-finite price, a negative volume, a timestamp that does not parse,
a timestamp not after the previous one of the same asset (unsorted or duplicate), a gap in the bar
grid (unless ``allow_gaps``), and an asset with no bar at a time another asset has one. Nothing is
filled, dropped or re-sorted silently: a backtest on repaired data would be a backtest on data the
user never saw.

Bars of any fixed interval are served (hourly and daily are the ones the tests cover): ``bar`` is
the interval (given, or the smallest step in the file) and ``periods_per_year`` the observed number
of bars per 365-day year, from which a backtest annualises (``bot.riskmath.periods_per_year`` for a
gapless file). ``bars(assets, end, n)`` returns the last ``n`` bars closing at or before ``end``;
on an hourly file without gaps that is exactly the hookspec's window ``(end - n h, end]``, and on a
daily file every ``*_hours`` length the cycle asks for counts daily bars.
"""

from __future__ import annotations

import glob as globlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from bot.components import ComponentConfig, ComponentContext
from bot.domain import HOURS_PER_YEAR, Bars, Snapshot
from bot.errors import ConfigError, DataError
from bot.hookspecs import hookimpl

if TYPE_CHECKING:
    import typer

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
TIME_COLUMNS = ("timestamp", "time", "datetime", "date")
ASSET_COLUMNS = ("asset", "symbol")
VOLUME_SUFFIX = "_volume"
MAX_LISTED = 5
"""Problems listed in one error; the rest are counted (a broken export can have a million)."""
_BAR_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TZ_RE = r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
_EPOCH_MS_FROM = 1e11
"""An integer epoch at or above this is milliseconds (1e11 s is the year 5138, 1e11 ms is 1973)."""
_YEAR_NS = HOURS_PER_YEAR * 3600 * 10**9
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DataFileError(DataError):
    """A data file is unusable; ``file``, ``row`` and ``column`` locate the first problem.

    ``row`` is the 1-based data row (the header is not a row; in a CSV the row is on line ``row + 1``),
    None for a problem of the whole file or of a missing bar (which has no row).
    """

    def __init__(self, message: str, file: str, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.row = row
        self.column = column


def parse_bar(text: str) -> timedelta:
    """``"1h"`` → one hour; also ``s``, ``m`` and ``d`` units (``"15m"``, ``"4h"``, ``"1d"``)."""
    m = _BAR_RE.match(text)
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"bar {text!r} is not a positive interval like 15m, 1h, 4h or 1d")
    return timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])


def format_bar(bar: timedelta) -> str:
    """The shortest ``parse_bar`` spelling of ``bar`` (``1d``, ``4h``, ``90s``)."""
    s = int(bar.total_seconds())
    for unit in ("d", "h", "m"):
        if s % _UNIT_S[unit] == 0:
            return f"{s // _UNIT_S[unit]}{unit}"
    return f"{s}s"


def _parse_bound(value: str, what: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an ISO-8601 time") from None
    if dt.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no time zone (write e.g. 2024-01-01T00:00:00Z)")
    return dt.astimezone(UTC)


class FileDataConfig(ComponentConfig):
    """Options of the ``csv`` data source (CSV or parquet; long or wide format)."""

    path: str = Field(min_length=1, description="a .csv/.csv.gz/.parquet file, a directory of them, or a glob")
    format: Literal["auto", "long", "wide"] = Field(
        default="auto", description="auto: long when there is an asset (or symbol) column, else wide"
    )
    label: Literal["close", "open"] = Field(
        default="close", description="what a timestamp marks: the bar's close (rwabot's convention) or its open"
    )
    bar: str | None = Field(default=None, description="bar interval (15m, 1h, 1d); default: the file's smallest step")
    timezone: str = Field(default="UTC", min_length=1, description="zone of timestamps written without an offset")
    allow_gaps: bool = Field(
        default=False, description="accept steps longer than one bar (markets that close: weekends, holidays)"
    )
    volume_if_missing: float | None = Field(
        default=None, gt=0, description="units per bar when the file has no volume at all; default: required"
    )
    start: str | None = Field(default=None, description="serve only bars closing at or after this ISO time")
    end: str | None = Field(default=None, description="serve only bars closing at or before this ISO time")
    kinds: dict[str, str] = Field(default_factory=dict, description="asset -> kind; default 'traditional'")

    @field_validator("bar")
    @classmethod
    def _check_bar(cls, v: str | None) -> str | None:
        if v is not None:
            parse_bar(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as UTC or America/New_York)") from None
        return v

    @field_validator("start", "end")
    @classmethod
    def _check_bounds(cls, v: str | None) -> str | None:
        if v is not None:
            _parse_bound(v, "time")
        return v


# -- loading and validation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceTable:
    """Validated bars on one time grid: ``times`` (int64 ns since the epoch, UTC bar close times,
    strictly increasing), ``close`` and ``volume`` (T × N), and the files they came from."""

    assets: tuple[str, ...]
    times: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    bar: timedelta
    files: tuple[str, ...]


class _Problems:
    """Collects located problems of one file; ``raise_if_any`` reports the first few, sorted by row."""

    def __init__(self, file: str, csv: bool) -> None:
        self.file = file
        self.csv = csv
        self.items: list[tuple[int, str, str]] = []  # (row, column, what)
        self.count = 0

    def where(self, row: int, column: str) -> str:
        line = f" (line {row + 1})" if self.csv else ""
        return f"row {row}{line}, column {column}"

    def add(self, rows: np.ndarray, column: str, what: Any) -> None:
        """``rows``: 1-based data rows; ``what``: a message, or a callable row -> message."""
        rows = np.asarray(rows, dtype=np.int64)
        self.count += len(rows)
        for r in rows[:MAX_LISTED]:
            self.items.append((int(r), column, what(int(r)) if callable(what) else what))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        items = sorted(self.items)[:MAX_LISTED]
        parts = [f"{self.where(r, c)}: {w}" for r, c, w in items]
        more = self.count - len(items)
        tail = f" (and {more} more)" if more > 0 else ""
        r0, c0, _ = items[0]
        raise DataFileError(f"{self.file}: " + "; ".join(parts) + tail, self.file, r0, c0)


def _files(path: str) -> list[Path]:
    if any(ch in path for ch in "*?["):
        found = sorted(Path(p) for p in globlib.glob(path))
        files = [p for p in found if p.is_file() and p.name.lower().endswith(SUFFIXES)]
        if not files:
            raise ConfigError(f"data csv: path {path!r} matches no {'/'.join(SUFFIXES)} file")
        return files
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(SUFFIXES))
        if not files:
            raise ConfigError(f"data csv: directory {p} holds no {'/'.join(SUFFIXES)} file")
        return files
    if not p.exists():
        raise ConfigError(f"data csv: path {p}: no such file or directory")
    if not p.name.lower().endswith(SUFFIXES):
        raise ConfigError(f"data csv: {p}: not a {'/'.join(SUFFIXES)} file")
    return [p]


def _read(file: Path) -> tuple[pd.DataFrame, bool]:
    """The file as a frame of strings (CSV) or typed columns (parquet), index = 1-based data row."""
    name = str(file)
    csv = not file.name.lower().endswith((".parquet", ".pq"))
    try:
        if csv:
            # strings, nothing guessed: an empty or "NaN" cell is reported as such, not read as a number;
            # blank lines are kept so that row k stays on line k + 1, then the empty ones are dropped
            df = pd.read_csv(file, dtype=str, keep_default_na=False, skip_blank_lines=False)
        else:
            df = pd.read_parquet(file)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataFileError(f"{name}: cannot read: {type(exc).__name__}: {exc}", name) from None
    except ImportError as exc:  # parquet without pyarrow
        raise DataFileError(f"{name}: cannot read parquet: {exc}", name) from None
    df.index = pd.RangeIndex(1, len(df) + 1)
    if csv and len(df):
        blank = (df == "").all(axis=1)
        df = df[~blank.to_numpy()]
    return df, csv


def _column(df: pd.DataFrame, names: Sequence[str]) -> str | None:
    by_lower = {str(c).strip().lower(): c for c in df.columns}
    for n in names:
        if n in by_lower:
            return by_lower[n]
    return None


def _numbers(series: pd.Series, column: str, problems: _Problems, *, price: bool) -> np.ndarray:
    """Floats of a column; every cell that is missing, not a number, not finite or out of range is a problem."""
    rows = series.index.to_numpy()
    if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
        text = series.astype(str).str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
        nan = np.isnan(values)
        if nan.any():
            bad_text = text.to_numpy()[nan]
            bad_rows = rows[nan]
            for kind in ("empty", "nan", "text"):
                if kind == "empty":
                    sel = bad_text == ""
                    what: Any = "empty (a missing value)"
                elif kind == "nan":
                    sel = np.char.lower(bad_text.astype(str)) == "nan"
                    what = "NaN (a missing value)"
                else:
                    sel = (bad_text != "") & (np.char.lower(bad_text.astype(str)) != "nan")
                    lookup = dict(zip(bad_rows[sel].tolist(), bad_text[sel].tolist()))

                    def what(r: int, lookup: dict[int, str] = lookup) -> str:
                        return f"{lookup[r]!r} is not a number"

                if sel.any():
                    problems.add(bad_rows[sel], column, what)
    else:
        try:
            values = series.to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            problems.add(rows[:1], column, f"holds {series.dtype} values, not numbers")
            return np.full(len(series), np.nan)
        nan = np.isnan(values)
        if nan.any():
            problems.add(rows[nan], column, "NaN (a missing value)")
    inf = np.isinf(values)
    if inf.any():
        problems.add(rows[inf], column, lambda r: "not finite")
    if price:
        bad = np.isfinite(values) & (values <= 0)
        if bad.any():
            vals = dict(zip(rows[bad].tolist(), values[bad].tolist()))
            problems.add(rows[bad], column, lambda r: f"price {vals[r]:g} is not positive")
    else:
        bad = np.isfinite(values) & (values < 0)
        if bad.any():
            vals = dict(zip(rows[bad].tolist(), values[bad].tolist()))
            problems.add(rows[bad], column, lambda r: f"volume {vals[r]:g} is negative")
    return values


def _timestamps(series: pd.Series, column: str, tz: str, problems: _Problems) -> np.ndarray:
    """int64 ns UTC of each cell (ISO 8601 with or without offset, or epoch s/ms); bad cells are problems."""
    rows = series.index.to_numpy()
    out = np.zeros(len(series), dtype=np.int64)
    ok = np.ones(len(series), dtype=bool)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        s = series
        if getattr(s.dt, "tz", None) is None:
            s = s.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        s = s.dt.tz_convert("UTC").dt.as_unit("ns")
        nat = s.isna().to_numpy()
        out[~nat] = s[~nat].astype("int64").to_numpy()
        ok &= ~nat
        if nat.any():
            problems.add(rows[nat], column, "missing, or not a valid local time")
        return out
    if pd.api.types.is_numeric_dtype(series.dtype):
        text = None
        num = series.to_numpy(dtype=float, na_value=np.nan)
    else:
        text = series.astype(str).str.strip()
        num = pd.to_numeric(text.where(text.str.fullmatch(r"\d{9,}(\.\d*)?")), errors="coerce").to_numpy(dtype=float)
    is_num = np.isfinite(num)
    if is_num.any():
        unit = 10**6 if np.nanmax(num[is_num]) >= _EPOCH_MS_FROM else 10**9
        out[is_num] = np.round(num[is_num] * unit).astype(np.int64)
    rest = ~is_num
    if text is None:
        if rest.any():
            problems.add(rows[rest], column, "missing (NaN)")
        return out
    if rest.any():
        t = text[rest]
        aware = t.str.contains(_TZ_RE, regex=True).to_numpy()
        parsed = np.full(len(t), np.iinfo(np.int64).min, dtype=np.int64)
        valid = np.zeros(len(t), dtype=bool)
        if aware.any():
            p = pd.to_datetime(t[aware], format="ISO8601", utc=True, errors="coerce")
            good = p.notna().to_numpy()
            parsed[np.flatnonzero(aware)[good]] = p[good].dt.as_unit("ns").astype("int64").to_numpy()
            valid[np.flatnonzero(aware)[good]] = True
        if (~aware).any():
            p = pd.to_datetime(t[~aware], format="ISO8601", errors="coerce")
            if getattr(p.dt, "tz", None) is None:
                p = p.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            good = p.notna().to_numpy()
            utc = p[good].dt.tz_convert("UTC").dt.as_unit("ns")
            parsed[np.flatnonzero(~aware)[good]] = utc.astype("int64").to_numpy()
            valid[np.flatnonzero(~aware)[good]] = True
        idx = np.flatnonzero(rest)
        out[idx[valid]] = parsed[valid]
        bad = idx[~valid]
        if len(bad):
            cells = dict(zip(rows[bad].tolist(), text.to_numpy()[bad].tolist()))
            problems.add(
                rows[bad],
                column,
                lambda r: "empty (a missing time)" if cells[r] == "" else
                f"{cells[r]!r} is not an ISO-8601 time or epoch (or not a valid local time in {tz})",
            )  # fmt: skip
    return out


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _order(ts: np.ndarray, rows: np.ndarray, column: str, problems: _Problems, who: str = "") -> None:
    """Each timestamp after the previous one (in file order): duplicates and backwards steps are problems."""
    if len(ts) < 2:
        return
    d = np.diff(ts)
    dup = np.flatnonzero(d == 0) + 1
    back = np.flatnonzero(d < 0) + 1
    if len(dup):
        prev = dict(zip(rows[dup].tolist(), rows[dup - 1].tolist()))
        at = dict(zip(rows[dup].tolist(), ts[dup].tolist()))
        problems.add(rows[dup], column, lambda r: f"duplicate timestamp {_iso(at[r])}{who} (also row {prev[r]})")
    if len(back):
        prev_t = dict(zip(rows[back].tolist(), ts[back - 1].tolist()))
        at = dict(zip(rows[back].tolist(), ts[back].tolist()))
        problems.add(
            rows[back], column,
            lambda r: f"{_iso(at[r])}{who} is before the previous row's {_iso(prev_t[r])}: rows must be in time order",
        )  # fmt: skip


def _load_file(file: Path, cfg: FileDataConfig, tz: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """One file as (assets, times ns as stamped, close T × N with NaN where an asset has no row, volume)."""
    df, csv = _read(file)
    name = str(file)
    problems = _Problems(name, csv)
    tcol = _column(df, TIME_COLUMNS)
    if tcol is None:
        raise DataFileError(
            f"{name}: no timestamp column (one of {', '.join(TIME_COLUMNS)}); columns are {list(df.columns)}",
            name, None, None,
        )  # fmt: skip
    acol = _column(df, ASSET_COLUMNS)
    fmt = cfg.format if cfg.format != "auto" else ("long" if acol is not None else "wide")
    if len(df) == 0:
        raise DataFileError(f"{name}: no data rows", name)
    ts = _timestamps(df[tcol], str(tcol), tz, problems)
    rows = df.index.to_numpy()
    if fmt == "long":
        ccol = _column(df, ("close",))
        vcol = _column(df, ("volume",))
        missing = [n for n, c in (("asset", acol), ("close", ccol)) if c is None]
        if vcol is None and cfg.volume_if_missing is None:
            missing.append("volume")
        if missing:
            raise DataFileError(
                f"{name}: long format needs columns timestamp, asset, close and volume; missing {missing} "
                f"(columns are {list(df.columns)}; set volume_if_missing for a file without volumes)",
                name,
            )
        assert acol is not None and ccol is not None
        asset_text = df[acol].astype(str).str.strip()
        empty = (asset_text == "").to_numpy()
        if empty.any():
            problems.add(rows[empty], str(acol), "empty asset name")
        close = _numbers(df[ccol], str(ccol), problems, price=True)
        volume = (
            _numbers(df[vcol], str(vcol), problems, price=False)
            if vcol is not None
            else np.full(len(df), float(cfg.volume_if_missing or 0.0))
        )
        codes, uniques = pd.factorize(asset_text, sort=False)
        # time order per asset, in file order (a file sorted by time or by asset then time are both fine)
        order = np.lexsort((np.arange(len(df)), codes))
        cs, tss, rs = codes[order], ts[order], rows[order]
        for k, a in enumerate(uniques):
            sel = cs == k
            if a != "":
                _order(tss[sel], rs[sel], str(tcol), problems, f" for {a}")
        problems.raise_if_any()
        grid, inv = np.unique(ts, return_inverse=True)
        n = len(uniques)
        c = np.full((len(grid), n), np.nan)
        v = np.full((len(grid), n), np.nan)
        c[inv, codes] = close
        v[inv, codes] = volume
        return [str(u) for u in uniques], grid, c, v
    # wide
    others = [col for col in df.columns if col != tcol and col != acol]
    vol_cols = {str(col)[: -len(VOLUME_SUFFIX)]: col for col in others if str(col).lower().endswith(VOLUME_SUFFIX)}
    price_cols = [col for col in others if col not in vol_cols.values()]
    if not price_cols:
        raise DataFileError(f"{name}: wide format needs one close column per asset; columns are {list(df.columns)}",
                            name)  # fmt: skip
    orphans = [str(col) for a, col in vol_cols.items() if a not in {str(p) for p in price_cols}]
    if orphans:
        raise DataFileError(f"{name}: volume columns {orphans} have no close column of their asset", name,
                            None, orphans[0])  # fmt: skip
    no_vol = [str(p) for p in price_cols if str(p) not in vol_cols]
    if no_vol and cfg.volume_if_missing is None:
        raise DataFileError(
            f"{name}: no volume column for {no_vol} (name it <asset>{VOLUME_SUFFIX}, or set volume_if_missing)",
            name, None, no_vol[0],
        )  # fmt: skip
    _order(ts, rows, str(tcol), problems)
    close = np.column_stack([_numbers(df[p], str(p), problems, price=True) for p in price_cols])
    volume = np.column_stack([
        _numbers(df[vol_cols[str(p)]], str(vol_cols[str(p)]), problems, price=False)
        if str(p) in vol_cols else np.full(len(df), float(cfg.volume_if_missing or 0.0))
        for p in price_cols
    ])  # fmt: skip
    problems.raise_if_any()
    return [str(p).strip() for p in price_cols], ts, close, volume


def _check_grid(times: np.ndarray, bar: timedelta, allow_gaps: bool, where: str) -> None:
    """Every step is one bar (``allow_gaps``: at least one bar): a finer step or a gap is an error."""
    if len(times) < 2:
        return
    bar_ns = int(bar.total_seconds() * 10**9)
    d = np.diff(times)
    short = np.flatnonzero(d < bar_ns)
    if len(short):
        k = int(short[0]) + 1
        raise DataFileError(
            f"{where}: the bar at {_iso(times[k])} is {pd.Timedelta(int(d[k - 1]))} after the previous one, "
            f"less than the bar interval {format_bar(bar)}",
            where,
        )
    if not allow_gaps:
        gaps = np.flatnonzero(d != bar_ns)
        if len(gaps):
            k = int(gaps[0]) + 1
            more = "" if len(gaps) == 1 else f" and {len(gaps) - 1} more gaps"
            raise DataFileError(
                f"{where}: gap in the bars: {_iso(times[k])} follows {_iso(times[k - 1])} "
                f"({pd.Timedelta(int(d[k - 1]))}; bars are {format_bar(bar)} apart){more}; "
                "nothing is filled: set allow_gaps = true for a market that closes (weekends, holidays)",
                where,
            )


def load_table(cfg: FileDataConfig) -> PriceTable:
    """Read and validate every file of ``cfg.path``, then align them on one grid (``DataFileError``)."""
    files = _files(cfg.path)
    label = ", ".join(str(f) for f in files) if len(files) <= 3 else f"{cfg.path} ({len(files)} files)"
    parts = [(str(f), *_load_file(f, cfg, cfg.timezone)) for f in files]
    owner: dict[str, str] = {}
    for fname, assets, *_ in parts:
        for a in assets:
            if a in owner:
                where = f"in {fname} and {owner[a]}" if owner[a] != fname else f"twice in {fname}"
                raise DataFileError(f"asset {a} is {where}: each asset must come from one file", fname, None, a)
            owner[a] = fname
    grid = np.unique(np.concatenate([p[2] for p in parts]))
    assets = [a for p in parts for a in p[1]]
    close = np.full((len(grid), len(assets)), np.nan)
    volume = np.full((len(grid), len(assets)), np.nan)
    col = 0
    for _, names, ts, c, v in parts:
        at = np.searchsorted(grid, ts)
        close[at, col : col + len(names)] = c
        volume[at, col : col + len(names)] = v
        col += len(names)
    steps = np.diff(grid)
    if cfg.bar is not None:
        bar = parse_bar(cfg.bar)
    elif len(steps):
        bar = timedelta(microseconds=int(steps.min()) // 1000)
    else:
        raise DataFileError(f'{label}: one bar only: set the bar option (e.g. bar = "1d") to use it', label)
    if cfg.label == "open":
        grid = grid + int(bar.total_seconds() * 10**9)
    lo = _parse_bound(cfg.start, "start") if cfg.start else None
    hi = _parse_bound(cfg.end, "end") if cfg.end else None
    keep = np.ones(len(grid), dtype=bool)
    if lo is not None:
        keep &= grid >= int(lo.timestamp() * 10**9)
    if hi is not None:
        keep &= grid <= int(hi.timestamp() * 10**9)
    if not keep.any():
        raise DataFileError(f"{label}: no bar closes between start {cfg.start} and end {cfg.end}", label)
    grid, close, volume = grid[keep], close[keep], volume[keep]
    holes = np.isnan(close)
    if holes.any():
        j = int(np.flatnonzero(holes.any(axis=0))[0])
        k = np.flatnonzero(holes[:, j])
        have = np.flatnonzero(~holes[:, j])
        span = f"it has bars from {_iso(grid[have[0]])} to {_iso(grid[have[-1]])}" if len(have) else "it has none"
        a = assets[j]
        raise DataFileError(
            f"{owner[a]}: asset {a} has no bar at {_iso(grid[k[0]])}"
            + (f" and {len(k) - 1} more times" if len(k) > 1 else "")
            + f" where other assets have one ({span}); nothing is filled: trim with the start/end options "
            "or fix the file",
            owner[a], None, a,
        )  # fmt: skip
    _check_grid(grid, bar, cfg.allow_gaps, label)
    return PriceTable(tuple(assets), grid, close, volume, bar, tuple(str(f) for f in files))


_CACHE: dict[tuple[Any, ...], PriceTable] = {}
_CACHE_SIZE = 2


def cached_table(cfg: FileDataConfig) -> PriceTable:
    """``load_table``, remembered for the same options and unchanged files (the CLI reads the file to
    pick a backtest's start, then the engine builds the source: one read, not two)."""
    try:
        stats = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in _files(cfg.path))
    except OSError:
        stats = ()
    key = (cfg.model_dump_json(), stats)
    table = _CACHE.get(key)
    if table is None:
        table = load_table(cfg)
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = table
    return table


# -- the data source ---------------------------------------------------------------------------------------


def _utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise DataError(f"data csv: {what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise DataError(f"data csv: {what} {value.isoformat()} is naive; pass a timezone-aware UTC time")
    return value.astimezone(UTC)


class FileDataSource:
    """Bars from a validated ``PriceTable``; implements ``bot.components.DataSource``.

    ``bar`` is the bar interval and ``periods_per_year`` the bars per 365-day year the file actually
    has (``8760 h / bar`` without gaps; fewer on a daily file of a market that closes at weekends), so
    a backtest annualises by the data, never by an assumed hour.
    """

    def __init__(self, table: PriceTable, kinds: dict[str, str] | None = None) -> None:
        self.table = table
        self.bar: timedelta = table.bar
        self._index = {a: i for i, a in enumerate(table.assets)}
        self._kinds = dict(kinds or {})
        self._ns = table.times
        self._times: tuple[datetime, ...] = tuple(pd.to_datetime(table.times, unit="ns", utc=True).to_pydatetime())
        self._bar_ns = int(self.bar.total_seconds() * 10**9)
        span = int(self._ns[-1] - self._ns[0]) + self._bar_ns
        self.periods_per_year: float = len(self._ns) * _YEAR_NS / span

    @property
    def first(self) -> datetime:
        """Close time of the first bar."""
        return self._times[0]

    @property
    def last(self) -> datetime:
        """Close time of the last bar."""
        return self._times[-1]

    @property
    def times(self) -> tuple[datetime, ...]:
        """Every bar's close time, oldest first (what a backtest steps through on a daily file)."""
        return self._times

    def assets(self) -> tuple[str, ...]:
        return self.table.assets

    def asset_kind(self, asset: str) -> str:
        self._columns([asset], "asset_kind")
        return self._kinds.get(asset, "traditional")

    def _columns(self, assets: Sequence[str], what: str) -> list[int]:
        if isinstance(assets, str):
            raise DataError(f"data csv: {what}: assets must be a sequence of names, not the string {assets!r}")
        unknown = [a for a in assets if a not in self._index]
        if unknown:
            raise DataError(f"data csv: {what}: unknown asset(s) {unknown} (the file has {list(self.table.assets)})")
        return [self._index[a] for a in assets]

    def _at(self, end: datetime, what: str) -> int:
        """Index one past the last bar closing at or before ``end``; refuses a time outside the file."""
        end = _utc(end, f"{what}: end")
        ns = (end - _EPOCH) // timedelta(microseconds=1) * 1000
        hi = int(np.searchsorted(self._ns, ns, side="right"))
        if hi == 0:
            raise DataError(
                f"data csv: {what}: {end.isoformat()} is before the first bar ({self.first.isoformat()}) of "
                f"{', '.join(self.table.files)}"
            )
        if ns - int(self._ns[-1]) > self._bar_ns:
            raise DataError(
                f"data csv: {what}: {end.isoformat()} is past the data: the last bar of "
                f"{', '.join(self.table.files)} closed at {self.last.isoformat()}"
            )
        return hi

    def bars(self, assets: Sequence[str], end: datetime, hours: int) -> Bars:
        """The last ``hours`` bars closing at or before ``end`` (a count of bars of the file's interval)."""
        cols = self._columns(assets, "bars")
        if isinstance(hours, bool) or not isinstance(hours, int | np.integer) or hours < 1:
            raise DataError(f"data csv: bars: the number of bars must be an integer >= 1, got {hours!r}")
        hi = self._at(end, "bars")
        lo = hi - int(hours)
        if lo < 0:
            raise DataError(
                f"data csv: bars: {hours} bars ending {end.isoformat()} are asked for, the file has {hi} "
                f"(its first bar closes at {self.first.isoformat()})"
            )
        t = self.table
        return Bars(tuple(assets), self._times[lo:hi], t.close[lo:hi, cols].copy(), t.volume[lo:hi, cols].copy())

    def latest(self, assets: Sequence[str], now: datetime) -> Snapshot:
        """The close of the last bar at or before ``now``, stamped with that bar's close time."""
        cols = self._columns(assets, "latest")
        k = self._at(now, "latest") - 1
        return Snapshot(tuple(assets), self.table.close[k, cols].copy(), tuple(self._times[k] for _ in cols))

    def backtest_start(self, history: int, hours: int, start: datetime | None = None) -> datetime:
        """Where a backtest of ``hours`` hours with ``history`` bars per window begins: ``start``, or the
        first bar close with a full window. Refuses a run that would leave the file, before the first
        cycle rather than as a failed cycle every hour after the data ends (``rwabot backtest --data``)."""
        begin = _utc(start, "start") if start is not None else self.start_for(history)
        end = begin + timedelta(hours=hours)
        if end > self.last:
            raise DataError(
                f"data csv: a backtest of {hours} h from {begin.isoformat()} ends at {end.isoformat()}, after the "
                f"last bar ({self.last.isoformat()}); at most {int((self.last - begin) / timedelta(hours=1))} h fit"
            )
        return begin

    def start_for(self, history: int) -> datetime:
        """The first bar close with ``history`` bars before it and itself (``bars(…, t, history)`` works)."""
        if history > len(self._times):
            raise DataError(
                f"data csv: {', '.join(self.table.files)} has {len(self._times)} bars, fewer than the "
                f"{history} a cycle needs (risk.history_hours + 1 bars)"
            )
        return self._times[history - 1]


def open_source(cfg: FileDataConfig) -> FileDataSource:
    """The source for ``cfg`` (the file read once per process while it is unchanged)."""
    return FileDataSource(cached_table(cfg), cfg.kinds)


# -- registration ------------------------------------------------------------------------------------------


@hookimpl
def rwabot_register_data_sources(register) -> None:  # noqa: ANN001 - pluggy passes bot.components.Register
    def make(cfg: FileDataConfig, ctx: ComponentContext) -> FileDataSource:
        return open_source(cfg)

    register("csv", make, FileDataConfig)


@hookimpl
def rwabot_register_commands(cli: typer.Typer) -> None:
    """``rwabot data fetch``: download ccxt OHLCV history into the local cache this source reads."""
    from plugins.data.history import add_commands  # ccxt and typer only when a plugin command is asked for

    add_commands(cli)
