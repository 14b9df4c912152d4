"""Staleness gate: is every input of an asset (its price, its quote, the venue balance) young enough,
counting only the minutes its market was open?

A traditional asset's price ages while its exchange is closed: SPY's Friday 16:00 ET close read on a
Saturday is zero open-market minutes old and perfectly usable; the same price read on Tuesday 11:00 ET
is 90 open minutes old plus a whole Monday session, and stale. An asset with an ``exchange-calendars``
code (``[assets.SPY] calendar = "XNYS"``) is judged in open-market minutes of that calendar (holidays,
early closes and lunch breaks included); an asset without one in wall-clock minutes.

Pure functions; the only state is a cache of calendars' session arrays (building a calendar takes a
fraction of a second, a look-up after that a binary search). See ``docs/staleness.md``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.config import Config

FUTURE_TOLERANCE = timedelta(minutes=1)  # an as-of further ahead of ``now`` than this is clock skew
_NS_PER_MINUTE = 60 * 10**9
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BUCKET_YEARS = 5  # calendars are built for spans of whole 5-year buckets, so a cycle reuses one
_YEARS = (1700, 2250)  # what pandas' ns timestamps can hold, with room: beyond, the market counts as closed


# -- calendars ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sessions:
    """A calendar's open intervals [starts[i], ends[i]) in ns since the epoch, sorted and disjoint,
    with ``cum[i]`` the open time before interval i (``cum[-1]`` the total)."""

    starts: np.ndarray
    ends: np.ndarray
    cum: np.ndarray
    lo: int  # the ns range the intervals are complete for
    hi: int

    def open_until(self, t: int) -> int:
        """Open ns in [lo, t)."""
        i = int(np.searchsorted(self.ends, t, side="right"))  # intervals ending at or before t
        total = int(self.cum[i])
        if i < len(self.starts) and t > self.starts[i]:
            total += t - int(self.starts[i])
        return total


def _ns(t: datetime) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t.isoformat()}: staleness needs timezone-aware times")
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000


def _unknown(code: str) -> ConfigError:
    return ConfigError(
        f"unknown market calendar {code!r}: use an exchange-calendars code such as 'XNYS' "
        "(the list: exchange_calendars.get_calendar_names())"
    )


def _quiet(build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``build(...)`` without the library's own deprecation notices from pandas (not the operator's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return build(*args, **kwargs)


@functools.lru_cache(maxsize=64)
def _sessions(code: str, lo_year: int, hi_year: int) -> _Sessions:
    """Open intervals of calendar ``code`` covering whole years ``lo_year..hi_year`` (clipped to what
    the library can build); a few days of margin either side, as a session may open the day before
    its label in UTC."""
    import exchange_calendars as xc
    import pandas as pd

    if not xc.calendar_utils.global_calendar_dispatcher.has_calendar(code):
        raise _unknown(code)
    name = xc.resolve_alias(code)
    factories = getattr(xc.calendar_utils.global_calendar_dispatcher, "_calendar_factories", {})
    cls = factories.get(name) or type(_quiet(xc.get_calendar, name))
    start, end = pd.Timestamp(date(lo_year, 1, 1)) - pd.Timedelta(days=7), pd.Timestamp(date(hi_year, 12, 31))
    end += pd.Timedelta(days=7)
    bmin, bmax = cls.bound_min(), cls.bound_max()
    if bmin is not None:
        start = max(start, pd.Timestamp(bmin).tz_localize(None).normalize())
    if bmax is not None:
        end = min(end, pd.Timestamp(bmax).tz_localize(None).normalize())
    lo, hi = _ns(start.tz_localize(UTC)), _ns(end.tz_localize(UTC))
    if end <= start:  # the whole span is outside what the library can build: never open
        none = np.zeros(0, dtype=np.int64)
        return _Sessions(none, none, np.zeros(1, dtype=np.int64), lo, hi)
    cal = _quiet(xc.get_calendar, code, start=start, end=end)
    opens, closes = np.asarray(cal.opens_nanos, np.int64), np.asarray(cal.closes_nanos, np.int64)
    b_start, b_end = np.asarray(cal.break_starts_nanos, np.int64), np.asarray(cal.break_ends_nanos, np.int64)
    nat = np.iinfo(np.int64).min  # NaT: a session without a break
    has_break = (b_start != nat) & (b_end != nat)
    if has_break.any():
        # a session with a break is two intervals: [open, break_start) and [break_end, close)
        first_end = np.where(has_break, b_start, closes)
        second_start = np.where(has_break, b_end, closes)
        starts = np.stack([opens, second_start], axis=1).reshape(-1)
        ends = np.stack([first_end, closes], axis=1).reshape(-1)
    else:
        starts, ends = opens, closes
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    cum = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
    return _Sessions(starts, ends, cum, lo, hi)


def _bucket(start_year: int, end_year: int) -> tuple[int, int]:
    start_year, end_year = (min(max(y, _YEARS[0]), _YEARS[1]) for y in (start_year, end_year))
    lo = (start_year - 1) // _BUCKET_YEARS * _BUCKET_YEARS
    hi = (end_year + 1) // _BUCKET_YEARS * _BUCKET_YEARS + _BUCKET_YEARS - 1
    return lo, hi


def check_calendar(code: str) -> None:
    """Start-up validation: ``ConfigError`` naming ``code`` unless exchange-calendars knows it."""
    year = datetime.now(UTC).year
    _sessions(code, *_bucket(year, year))


def open_minutes(calendar: str | None, start: datetime, end: datetime) -> float:
    """Minutes the market of ``calendar`` was open in (start, end] (0 when ``end <= start``); ``None``
    is a market that never closes (wall minutes). Sessions, early closes, holidays and breaks come from
    exchange-calendars; times must be timezone-aware."""
    a, b = _ns(start), _ns(end)
    if b <= a:
        return 0.0
    if calendar is None:
        return (b - a) / _NS_PER_MINUTE
    s = _sessions(calendar, *_bucket(start.astimezone(UTC).year, end.astimezone(UTC).year))
    a, b = min(max(a, s.lo), s.hi), min(max(b, s.lo), s.hi)  # beyond what the library can build: closed
    return (s.open_until(b) - s.open_until(a)) / _NS_PER_MINUTE


# -- the gate ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgeRule:
    """How old an asset's inputs may be: ``max_age_minutes`` of open market by ``calendar`` (an
    exchange-calendars code; None: wall-clock minutes, a market that never closes)."""

    max_age_minutes: float
    calendar: str | None = None


def rules_from_config(cfg: Config) -> dict[str, AgeRule]:
    """Per asset: its ``max_age_minutes`` (else ``risk.max_price_age_minutes``) and its ``calendar``."""
    default = float(cfg.risk.max_price_age_minutes)
    return {
        name: AgeRule(float(a.max_age_minutes) if a.max_age_minutes is not None else default, a.calendar)
        for name, a in cfg.assets.items()
    }


def _stamp(t: datetime) -> str:
    u = t.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%SZ" if u.second or u.microsecond else "%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class StaleInput:
    """One asset's input that is too old (``kind="stale"``) or dated in the future (``kind="future"``:
    clock skew between the bot and the source, an error). ``age_minutes`` is wall-clock (negative in
    the future), ``open_age_minutes`` counts only the calendar's open minutes. ``sources`` lists every
    stale input of the asset, this one (the worst) first."""

    asset: str
    source: str
    as_of: datetime
    age_minutes: float
    open_age_minutes: float
    max_age_minutes: float
    calendar: str | None
    kind: Literal["stale", "future"] = "stale"
    sources: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        head = f"{self.asset}: {self.source} as of {_stamp(self.as_of)}"
        if self.kind == "future":
            return f"{head} is {-self.age_minutes:.0f} minutes in the future (clock skew?)"
        others = [s for s in self.sources if s != self.source]
        tail = f"; also stale: {', '.join(others)}" if others else ""
        if self.calendar is None:
            return f"{head} is {self.age_minutes:.0f} minutes old (max {self.max_age_minutes:g}){tail}"
        return (
            f"{head} is {self.open_age_minutes:.0f} open-market minutes old "
            f"(max {self.max_age_minutes:g}, calendar {self.calendar}){tail}"
        )

    def __str__(self) -> str:
        return self.message


def _badness(s: StaleInput) -> tuple[int, float]:
    return (1, -s.age_minutes) if s.kind == "future" else (0, s.open_age_minutes / s.max_age_minutes)


def stale_assets(
    now: datetime,
    as_of: Mapping[str, Mapping[str, datetime | None]],
    rules: Mapping[str, AgeRule],
) -> dict[str, StaleInput]:
    """The assets with a stale input, each with its worst one. ``as_of[asset][source]`` is the as-of
    time of each input of the asset ("data", "quote", "balance"...; None: as of ``now``). An input is
    stale when its open-market age in (as_of, now] exceeds the asset's rule, or when it is dated more
    than a minute after ``now``. Every asset of ``as_of`` needs a rule (``ValueError`` otherwise)."""
    missing = sorted(set(as_of) - set(rules))
    if missing:
        raise ValueError(f"staleness: no age rule for assets {missing}")
    out: dict[str, StaleInput] = {}
    for asset, inputs in as_of.items():
        rule = rules[asset]
        found: list[StaleInput] = []
        for source, t in inputs.items():
            if t is None:
                continue
            wall = (_ns(now) - _ns(t)) / _NS_PER_MINUTE
            if t - now > FUTURE_TOLERANCE:
                found.append(StaleInput(asset, source, t, wall, 0.0, rule.max_age_minutes, rule.calendar, "future"))
                continue
            opened = open_minutes(rule.calendar, t, now)
            if opened > rule.max_age_minutes:
                found.append(StaleInput(asset, source, t, wall, opened, rule.max_age_minutes, rule.calendar))
        if found:
            found.sort(key=_badness, reverse=True)
            worst = found[0]
            out[asset] = StaleInput(
                worst.asset,
                worst.source,
                worst.as_of,
                worst.age_minutes,
                worst.open_age_minutes,
                worst.max_age_minutes,
                worst.calendar,
                worst.kind,
                tuple(s.source for s in found),
            )
    return out
