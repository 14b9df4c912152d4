"""``rwabot data fetch``: exchange OHLCV history through ccxt into a local cache the csv source reads.

Why a cache: a backtest must run offline and give the same answer twice, so the bars are downloaded
once into plain files (``<out>/<exchange>/<BASE>-<QUOTE>-<timeframe>.parquet`` or ``.csv``, long
format: timestamp (bar close, UTC), asset, close, volume) and read from there by the ``csv`` data
source (``plugins/data/files.py``); the exchange is never asked during the backtest.

Only closed bars are stored: a bar whose close is after the exchange's clock (its ``fetchTime``, the
wall clock where it has none) is still moving and would be a different bar tomorrow. A second run
fetches only what the cache lacks, the bars after its last one (and before its first when ``since``
moves earlier); the bars already there are kept as they are, never re-downloaded. The merged file is
written to a temporary name and renamed over the old one, so an interrupted run leaves the previous
cache whole. Bars the exchange does not have (maintenance, a halt) are reported, never filled.

The requests go through ``connectors.ccxt_client.CcxtClient``: the same retries of transient faults,
shared rate limit and error mapping as the ccxt venue and data source.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import ccxt
import numpy as np
import pandas as pd
import typer
from pydantic import ValidationError

from bot.errors import ConfigError, DataError, RwabotError, VenueError
from connectors.ccxt_client import CcxtClient, CcxtConnection
from plugins.data.files import FileDataConfig, format_bar, load_table

Format = Literal["parquet", "csv"]


@dataclass(frozen=True)
class FetchResult:
    """What one symbol's download did: ``added`` new bars, ``total`` in ``path`` from ``first`` to
    ``last`` (close times), and the ``missing`` bars between them the exchange had no kline for."""

    asset: str
    symbol: str
    path: Path
    added: int
    total: int
    first: datetime | None
    last: datetime | None
    missing: int
    first_missing: datetime | None

    def describe(self) -> str:
        if self.total == 0:
            return f"{self.asset} ({self.symbol}): no closed bar in the range; nothing written"
        span = f"{_iso(self.first)} to {_iso(self.last)}"
        news = f"{self.added} new bars" if self.added else "up to date"
        line = f"{self.asset} ({self.symbol}): {news}; {self.total} bars in {self.path}, {span}"
        if self.missing:
            line += (
                f"; {self.missing} bars missing at the exchange (first closing {_iso(self.first_missing)}), "
                "not filled: read them with allow_gaps = true"
            )
        return line


def _iso(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else "-"


def parse_time(value: str, what: str) -> datetime:
    """An ISO time or date; one without an offset is UTC (the exchanges' own clock)."""
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"{what} {value!r} is not an ISO-8601 time or date (e.g. 2024-01-01)") from None
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).astimezone(UTC)


def parse_symbols(text: str | Sequence[str]) -> dict[str, str]:
    """``"BTC/USDT,ETH=ETH/USDT"`` → ``{"BTC": "BTC/USDT", "ETH": "ETH/USDT"}``; a bare symbol is
    named by its base currency. The asset names are what a config's ``[assets]`` section uses."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not items:
        raise ConfigError("--symbols: no symbol given (e.g. BTC/USDT,ETH/USDT)")
    out: dict[str, str] = {}
    for item in items:
        name, _, symbol = item.rpartition("=") if "=" in item else ("", "", item)
        symbol = symbol.strip()
        if "/" not in symbol:
            raise ConfigError(f"--symbols: {symbol!r} is not a ccxt symbol BASE/QUOTE (e.g. BTC/USDT)")
        name = name.strip() or symbol.split("/")[0]
        if name in out:
            raise ConfigError(f"--symbols: asset name {name} is given twice ({out[name]} and {symbol}); "
                              "name one of them: NAME=SYMBOL")  # fmt: skip
        out[name] = symbol
    return out


def cache_path(root: Path, exchange: str, symbol: str, timeframe: str, fmt: Format) -> Path:
    """``<root>/<exchange>/BTC-USDT-1h.parquet`` for ``BTC/USDT`` (``:`` of derivatives too becomes ``-``)."""
    safe = symbol.replace("/", "-").replace(":", "-")
    return Path(root) / exchange / f"{safe}-{timeframe}.{fmt}"


def read_cache(path: Path, bar: timedelta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(close times ns, close, volume) of a cache file, validated as the csv source validates it."""
    table = load_table(FileDataConfig(path=str(path), bar=format_bar(bar), allow_gaps=True))
    if len(table.assets) != 1:
        raise DataError(f"{path}: a cache file holds one asset, this one {list(table.assets)}")
    return table.times, table.close[:, 0], table.volume[:, 0]


def write_cache(path: Path, asset: str, times_ns: np.ndarray, close: np.ndarray, volume: np.ndarray) -> None:
    """Write the long-format file atomically (a temporary file renamed over ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = pd.to_datetime(times_ns, unit="ns", utc=True)
    df = pd.DataFrame({"timestamp": stamps, "asset": asset, "close": close, "volume": volume})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df["timestamp"] = stamps.strftime("%Y-%m-%dT%H:%M:%SZ")
            df.to_csv(tmp, index=False)  # floats as repr: the shortest text that reads back exact
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _download(
    client: CcxtClient, symbol: str, timeframe: str, tf_ms: int, lo_open: int, hi_open: int, page: int
) -> dict[int, tuple[float, float]]:
    """Bars opening in ``[lo_open, hi_open]`` (ms), paged forward from ``lo_open``.

    A page shorter than asked is not the end (exchanges cap pages below the limit); only an empty page,
    a page reaching ``hi_open`` or one that does not move forward (which would loop for ever) ends it.
    """
    out: dict[int, tuple[float, float]] = {}
    since = lo_open
    while since <= hi_open:
        rows = client.call(
            f"ohlcv {symbol} {timeframe}", lambda ex, s=since: ex.fetch_ohlcv(symbol, timeframe, s, page)
        )
        for ts, _o, _h, _l, c, v in rows:
            if lo_open <= int(ts) <= hi_open and c is not None:
                out[int(ts)] = (float(c), float(v or 0.0))
        if not rows or int(rows[-1][0]) >= hi_open or int(rows[-1][0]) < since:
            break
        since = int(rows[-1][0]) + tf_ms
    return out


def fetch_history(
    conn: CcxtConnection,
    assets: Mapping[str, str],
    since: datetime,
    *,
    timeframe: str = "1h",
    root: Path = Path("var/data"),
    until: datetime | None = None,
    fmt: Format = "parquet",
    page: int = 1000,
    client: CcxtClient | None = None,
    on_result: Callable[[FetchResult], None] | None = None,
) -> list[FetchResult]:
    """Download the closed bars of each ``assets`` symbol closing in ``(since, until]`` into the cache,
    fetching only what the cache does not hold yet."""
    client = client or CcxtClient("data:fetch", conn)
    tf_ms = int(ccxt.Exchange.parse_timeframe(timeframe)) * 1000
    if tf_ms <= 0:
        raise ConfigError(f"--timeframe {timeframe!r} is not a bar interval (1h, 4h, 1d)")
    offered = client.ex.timeframes or {}
    if offered and timeframe not in offered:
        raise ConfigError(f"--timeframe {timeframe}: {conn.exchange} offers {sorted(offered)}")
    try:
        now_ms = int(client.call("time", lambda ex: ex.fetch_time())) if client.has.get("fetchTime") else None
    except VenueError:
        now_ms = None
    now_ms = now_ms or int(time.time() * 1000)
    cut_ms = min(now_ms, int(until.timestamp() * 1000)) if until is not None else now_ms
    since_ms = int(since.timestamp() * 1000)
    hi_open = cut_ms - tf_ms  # the last bar that has closed by the cut
    tf = timedelta(milliseconds=tf_ms)
    tf_ns = tf_ms * 10**6
    results = []
    for asset, symbol in assets.items():
        try:
            client.market(symbol)
        except VenueError as exc:
            raise DataError(f"data fetch: {asset}: {exc}") from exc
        path = cache_path(root, conn.exchange, symbol, timeframe, fmt)
        if path.exists():
            times, close, volume = read_cache(path, tf)
        else:
            times, close, volume = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
        opens_ms = (times - tf_ns) // 10**6
        ranges = []
        if len(times) == 0:
            ranges.append((since_ms, hi_open))
        else:
            if since_ms < int(opens_ms[0]):
                ranges.append((since_ms, int(opens_ms[0]) - tf_ms))
            ranges.append((int(opens_ms[-1]) + tf_ms, hi_open))
        new: dict[int, tuple[float, float]] = {}
        for lo, hi in ranges:
            if lo <= hi:
                new.update(_download(client, symbol, timeframe, tf_ms, lo, hi, page))
        have = set(opens_ms.tolist())
        new = {k: v for k, v in new.items() if k not in have}
        if new:
            add_open = np.array(sorted(new), dtype=np.int64)
            times = np.concatenate([times, (add_open + tf_ms) * 10**6])
            close = np.concatenate([close, [new[int(k)][0] for k in add_open]])
            volume = np.concatenate([volume, [new[int(k)][1] for k in add_open]])
            order = np.argsort(times, kind="stable")
            times, close, volume = times[order], close[order], volume[order]
            write_cache(path, asset, times, close, volume)
        elif len(times) and _asset_of(path) != asset:
            write_cache(path, asset, times, close, volume)  # nothing new, but the asset is named as asked now
        steps = np.diff(times)
        gaps = np.flatnonzero(steps > tf_ns)
        missing = int(((steps[gaps] // tf_ns) - 1).sum()) if len(gaps) else 0
        first_missing = _dt(times[gaps[0]] + tf_ns) if len(gaps) else None
        res = FetchResult(
            asset, symbol, path, len(new), len(times), _dt(times[0]) if len(times) else None,
            _dt(times[-1]) if len(times) else None, missing, first_missing,
        )  # fmt: skip
        results.append(res)
        if on_result is not None:
            on_result(res)
    return results


def _dt(ns: Any) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(ns) // 1000)


def _asset_of(path: Path) -> str | None:
    df = pd.read_parquet(path, columns=["asset"]) if path.suffix == ".parquet" else pd.read_csv(path, usecols=["asset"])
    return str(df["asset"].iloc[0]) if len(df) else None


def fetch_command(
    *,
    exchange: str,
    symbols: str,
    since: str,
    until: str | None,
    timeframe: str,
    out: Path,
    fmt: str,
    api_url: str | None,
    rate_limit: float | None,
    on_line: Callable[[str], None] | None = None,
) -> list[str]:
    """The ``rwabot data fetch`` command without its printing: parse the options, fetch, describe."""
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"--format must be parquet or csv, not {fmt!r}")
    opts: dict[str, Any] = {"exchange": exchange}
    if api_url:
        opts["api_urls"] = {"*": api_url}
    if rate_limit:
        opts["rate_limit_per_s"] = float(rate_limit)
    try:
        conn = CcxtConnection.model_validate(opts)
    except ValidationError as exc:
        raise ConfigError(f"data fetch: {exc}") from None
    start = parse_time(since, "--since")
    end = parse_time(until, "--until") if until else None
    if end is not None and end <= start:
        raise ConfigError(f"--until {until} is not after --since {since}")
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    def report(r: FetchResult) -> None:
        say(r.describe())

    fetch_history(
        conn, parse_symbols(symbols), start, timeframe=timeframe, root=out, until=end, fmt=fmt,  # type: ignore[arg-type]
        on_result=report,
    )  # fmt: skip
    files = Path(out) / exchange / f"*-{timeframe}.{fmt}"
    say(f'read offline by the csv data source: options.path = "{files}" (or `rwabot backtest --data "{files}"`)')
    return lines


def add_commands(cli: typer.Typer) -> None:
    """Add ``rwabot data fetch`` to ``cli`` (called from the csv plugin's ``rwabot_register_commands``)."""
    data = typer.Typer(help="Market data for backtests: download exchange history into a local cache.")

    @data.command("fetch")
    def fetch(
        exchange: Annotated[str, typer.Option(help="ccxt exchange id, e.g. binance")],
        symbols: Annotated[
            str, typer.Option(help="comma-separated ccxt symbols (BTC/USDT), each optionally NAME=SYMBOL")
        ],
        since: Annotated[str, typer.Option(help="ISO time or date the first bar opens at (UTC without an offset)")],
        until: Annotated[
            str | None, typer.Option(help="ISO time the last bar closes by (default: the exchange's now)")
        ] = None,
        timeframe: Annotated[str, typer.Option(help="bar interval, ccxt's spelling: 1h, 4h, 1d")] = "1h",
        out: Annotated[Path, typer.Option(help="cache root; files go to <out>/<exchange>/")] = Path("var/data"),
        fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
        api_url: Annotated[
            str | None, typer.Option(help="re-host every API URL (a gateway, a testnet, the test emulator)")
        ] = None,
        rate_limit: Annotated[float | None, typer.Option(min=0.01, help="requests per second")] = None,
    ) -> None:
        """Download (or extend) OHLCV bars into the cache; a second run fetches only the bars it lacks."""
        from bot.cli import console, fail, setup_logging

        setup_logging(False)
        try:
            fetch_command(
                exchange=exchange, symbols=symbols, since=since, until=until, timeframe=timeframe, out=out,
                fmt=fmt, api_url=api_url, rate_limit=rate_limit, on_line=lambda m: console.print(m, highlight=False),
            )  # fmt: skip
        except (RwabotError, ValueError) as exc:
            fail(exc)

    cli.add_typer(data, name="data")
