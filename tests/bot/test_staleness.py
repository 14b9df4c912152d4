"""The staleness gate: open-market minutes by exchange calendar, and which assets' inputs are too old."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import exchange_calendars as xc
import numpy as np
import pandas as pd
import pytest

from bot import staleness
from bot.config import parse_config
from bot.errors import ConfigError
from bot.staleness import AgeRule, StaleInput, check_calendar, open_minutes, rules_from_config, stale_assets
from tests.conftest import paper_dict

ET = ZoneInfo("America/New_York")
# exchange-calendars' own deprecation notices under new pandas (the reference calendars built here)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def et(*args: int) -> datetime:
    return datetime(*args, tzinfo=ET)  # type: ignore[misc]


# -- calendar maths, closed forms ------------------------------------------------------------------


def test_a_saturday_read_of_fridays_close_is_zero_open_minutes() -> None:
    assert open_minutes("XNYS", et(2026, 3, 6, 16, 0), et(2026, 3, 7, 12, 0)) == 0.0
    assert open_minutes("XNYS", et(2026, 3, 6, 16, 0), et(2026, 3, 9, 9, 30)) == 0.0  # ... and until Monday's open


def test_an_hour_of_a_monday_session() -> None:
    assert open_minutes("XNYS", et(2026, 3, 9, 9, 30), et(2026, 3, 9, 10, 30)) == 60.0
    assert open_minutes("XNYS", et(2026, 3, 9, 8, 0), et(2026, 3, 9, 10, 30)) == 60.0  # pre-market does not count
    assert open_minutes("XNYS", et(2026, 3, 9, 15, 0), et(2026, 3, 9, 20, 0)) == 60.0  # nor after the close
    assert open_minutes("XNYS", et(2026, 3, 9, 10, 30), et(2026, 3, 9, 9, 30)) == 0.0  # end before start
    assert open_minutes("XNYS", et(2026, 3, 9, 0, 0), et(2026, 3, 10, 0, 0)) == 390.0


def test_a_holiday_is_closed() -> None:
    # Thanksgiving, Thursday 2026-11-26: Wednesday's close to Friday's open is no market at all
    assert open_minutes("XNYS", et(2026, 11, 25, 16, 0), et(2026, 11, 27, 9, 30)) == 0.0
    assert open_minutes("XNYS", et(2026, 11, 25, 15, 0), et(2026, 11, 27, 10, 0)) == 60.0 + 30.0


def test_an_early_close() -> None:
    # the day after Thanksgiving closes at 13:00 ET: 3.5 h
    assert open_minutes("XNYS", et(2026, 11, 27, 0, 0), et(2026, 11, 28, 0, 0)) == 210.0
    assert open_minutes("XNYS", et(2026, 11, 27, 12, 0), et(2026, 11, 27, 16, 0)) == 60.0


def test_the_dst_boundary() -> None:
    # US clocks go forward on Sunday 2026-03-08: Friday's close is 21:00Z, Monday's open 13:30Z
    fri, mon = datetime(2026, 3, 6, 20, 0, tzinfo=UTC), datetime(2026, 3, 9, 14, 30, tzinfo=UTC)
    assert open_minutes("XNYS", fri, mon) == 60.0 + 60.0  # Fri 15:00-16:00 EST, Mon 09:30-10:30 EDT
    # the week across the change is five whole sessions, and so is the week after it
    assert open_minutes("XNYS", et(2026, 3, 2, 0, 0), et(2026, 3, 9, 0, 0)) == 5 * 390.0
    assert open_minutes("XNYS", et(2026, 3, 9, 0, 0), et(2026, 3, 16, 0, 0)) == 5 * 390.0
    # and back in autumn (Sunday 2026-11-01): Friday 15:00 EDT = 19:00Z, Monday 10:30 EST = 15:30Z
    assert open_minutes("XNYS", et(2026, 10, 30, 15, 0), et(2026, 11, 2, 10, 30)) == 120.0


def test_a_lunch_break_is_closed() -> None:
    hk = ZoneInfo("Asia/Hong_Kong")  # 09:30-12:00 and 13:00-16:00
    day = datetime(2026, 3, 9, tzinfo=hk)
    assert open_minutes("XHKG", day, day + timedelta(days=1)) == 150.0 + 180.0
    assert open_minutes("XHKG", day.replace(hour=11), day.replace(hour=14)) == 60.0 + 60.0


def test_no_calendar_counts_wall_minutes() -> None:
    assert open_minutes(None, et(2026, 3, 6, 16, 0), et(2026, 3, 7, 12, 0)) == 20 * 60.0
    assert open_minutes(None, et(2026, 3, 7, 12, 0), et(2026, 3, 6, 16, 0)) == 0.0
    assert open_minutes("24/7", et(2026, 3, 6, 16, 0), et(2026, 3, 7, 12, 0)) == 20 * 60.0


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        open_minutes("XNYS", datetime(2026, 3, 9, 14), datetime(2026, 3, 9, 15, tzinfo=UTC))


def test_unknown_calendar_is_a_config_error_naming_it() -> None:
    for call in (
        lambda: check_calendar("XNOPE"),
        lambda: open_minutes("XNOPE", et(2026, 3, 9, 9, 30), et(2026, 3, 9, 10, 30)),
        lambda: stale_assets(
            et(2026, 3, 9, 12, 0), {"SPY": {"quote": et(2026, 3, 9, 9, 0)}}, {"SPY": AgeRule(90, "XNOPE")}
        ),
    ):
        with pytest.raises(ConfigError, match=r"'XNOPE'.*exchange_calendars\.get_calendar_names\(\)"):
            call()
    check_calendar("XNYS")
    check_calendar("NYSE")  # an alias of XNYS


def session_sum(code: str, start: str, end: str) -> float:
    """Minutes of every whole session labelled in [start, end], from the library's own schedule."""
    cal = xc.get_calendar(code, start=start, end=end)
    return float((cal.closes - cal.opens).sum().total_seconds() / 60.0)


def test_long_gaps_use_session_arrays() -> None:
    # a year, a decade and a century all come from the same few binary searches over session arrays
    year = open_minutes("XNYS", et(2025, 1, 1, 0, 0), et(2026, 1, 1, 0, 0))
    assert year == session_sum("XNYS", "2025-01-01", "2025-12-31")
    assert 240 * 390 < year < 255 * 390
    decade = open_minutes("XNYS", et(2016, 1, 1, 0, 0), et(2026, 1, 1, 0, 0))
    assert decade == session_sum("XNYS", "2016-01-01", "2025-12-31")
    century = open_minutes("XNYS", datetime(1926, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    assert 90 * 240 * 330 < century < 100 * 260 * 390
    # ranges far beyond the default calendar's twenty years back and one ahead are built, not refused
    assert open_minutes("XNYS", et(2031, 6, 2, 9, 30), et(2031, 6, 2, 10, 0)) == 30.0  # a Monday in 2031
    assert staleness._sessions.cache_info().currsize < 20  # cached per 5-year span, not per call


@pytest.mark.parametrize("code", ["XNYS", "XLON", "XHKG", "XTKS"])
def test_open_minutes_agrees_with_the_librarys_minutes_in_range(code: str) -> None:
    cal = xc.get_calendar(code, start="2022-01-01", end="2026-06-30")
    rng = np.random.default_rng(20)
    lo = datetime(2023, 1, 1, tzinfo=UTC).timestamp() // 60
    hi = datetime(2025, 12, 1, tzinfo=UTC).timestamp() // 60
    for _ in range(25):
        a = int(rng.integers(lo, hi))
        b = a + int(rng.integers(1, 12 * 24 * 60))  # up to twelve days
        start, end = datetime.fromtimestamp(a * 60, UTC), datetime.fromtimestamp(b * 60, UTC)
        # trading minutes label [m, m + 1 min) ("left" side): those in (start, end] are m in [start, end)
        ref = len(cal.minutes_in_range(pd.Timestamp(start), pd.Timestamp(end - timedelta(minutes=1))))
        assert open_minutes(code, start, end) == ref, (code, start, end)


# -- the gate --------------------------------------------------------------------------------------

SPY = {"SPY": AgeRule(90.0, "XNYS")}
FRI_CLOSE = et(2026, 2, 27, 16, 0)


def test_spy_on_a_saturday_is_fresh_and_on_a_tuesday_stale() -> None:
    assert stale_assets(et(2026, 2, 28, 11, 0), {"SPY": {"quote": FRI_CLOSE}}, SPY) == {}
    tue = stale_assets(et(2026, 3, 3, 11, 0), {"SPY": {"quote": FRI_CLOSE}}, SPY)
    s = tue["SPY"]
    assert (s.source, s.kind, s.open_age_minutes, s.as_of) == ("quote", "stale", 390.0 + 90.0, FRI_CLOSE)
    assert s.age_minutes == (4 * 24 - 5) * 60.0  # Friday 16:00 to Tuesday 11:00 on the wall
    assert s.message == "SPY: quote as of 2026-02-27T21:00Z is 480 open-market minutes old (max 90, calendar XNYS)"


def test_the_message() -> None:
    as_of = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)  # 09:00 ET, before the open
    out = stale_assets(datetime(2026, 3, 3, 17, 30, tzinfo=UTC), {"SPY": {"quote": as_of}}, SPY)
    assert (
        str(out["SPY"]) == "SPY: quote as of 2026-03-03T14:00Z is 180 open-market minutes old (max 90, calendar XNYS)"
    )


def test_no_calendar_is_wall_clock_age() -> None:
    rules = {"PAXG": AgeRule(90.0, None)}
    now = datetime(2026, 2, 28, 12, 0, tzinfo=UTC)  # a Saturday: a 24/7 asset's price still ages
    assert stale_assets(now, {"PAXG": {"data": now - timedelta(minutes=90)}}, rules) == {}
    out = stale_assets(now, {"PAXG": {"data": now - timedelta(minutes=91, seconds=30)}}, rules)
    assert out["PAXG"].open_age_minutes == out["PAXG"].age_minutes == 91.5
    assert out["PAXG"].message == "PAXG: data as of 2026-02-28T10:28:30Z is 92 minutes old (max 90)"


def test_an_input_from_the_future_is_clock_skew() -> None:
    now = et(2026, 3, 3, 11, 0)
    assert stale_assets(now, {"SPY": {"quote": now + timedelta(seconds=50)}}, SPY) == {}  # within a minute
    out = stale_assets(now, {"SPY": {"quote": now + timedelta(minutes=5)}, "BTC": {}}, {**SPY, "BTC": AgeRule(5)})
    s = out["SPY"]
    assert (s.kind, s.age_minutes, set(out)) == ("future", -5.0, {"SPY"})
    assert s.message == "SPY: quote as of 2026-03-03T16:05Z is 5 minutes in the future (clock skew?)"
    # on a Saturday too: skew is not forgiven by a closed market
    sat = et(2026, 2, 28, 11, 0)
    assert stale_assets(sat, {"SPY": {"balance": sat + timedelta(hours=1)}}, SPY)["SPY"].kind == "future"


def test_only_the_stale_source_of_an_asset_is_named() -> None:
    now = et(2026, 3, 3, 11, 0)
    rules = {**SPY, "TLT": AgeRule(90.0, "XNYS"), "PAXG": AgeRule(60.0, None)}
    as_of = {
        "SPY": {"data": now - timedelta(minutes=10), "quote": FRI_CLOSE, "balance": None},
        "TLT": {"data": now - timedelta(minutes=10), "quote": now, "balance": None},
        "PAXG": {"data": now - timedelta(minutes=120), "quote": now - timedelta(minutes=61), "balance": now},
    }
    out = stale_assets(now, as_of, rules)
    assert set(out) == {"SPY", "PAXG"}
    assert (out["SPY"].source, out["SPY"].sources) == ("quote", ("quote",))
    assert (out["PAXG"].source, out["PAXG"].sources) == ("data", ("data", "quote"))  # the worst first
    assert out["PAXG"].message.endswith("(max 60); also stale: quote")
    assert isinstance(out["SPY"], StaleInput)


def test_an_asset_without_a_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no age rule for assets \['GLD'\]"):
        stale_assets(et(2026, 3, 3, 11, 0), {"GLD": {"data": None}}, SPY)


def test_rules_from_config(tmp_path: Path) -> None:
    data = paper_dict(tmp_path)
    data["assets"]["SPY"] |= {"calendar": "XNYS", "max_age_minutes": 30}
    data["assets"]["TLT"] |= {"calendar": "XNYS"}
    data["risk"]["max_price_age_minutes"] = 120
    rules = rules_from_config(parse_config(data, "test"))
    assert set(rules) == set(data["assets"])
    assert rules["SPY"] == AgeRule(30.0, "XNYS")
    assert rules["TLT"] == AgeRule(120.0, "XNYS")
    assert rules["PAXG"] == AgeRule(120.0, None)


def test_a_ccxt_balance_carries_the_exchanges_as_of_when_it_gives_one() -> None:
    from connectors.ccxt_venue import _balance_time

    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert _balance_time({"timestamp": 1767225600000, "datetime": "2026-01-01T00:00:00.000Z"}) == t
    assert _balance_time({"timestamp": None, "datetime": "2026-01-01T00:00:00.000Z"}) == t
    assert _balance_time({"timestamp": None, "datetime": None}) is None  # most exchanges: as of now
    assert _balance_time({"datetime": "yesterday"}) is None
