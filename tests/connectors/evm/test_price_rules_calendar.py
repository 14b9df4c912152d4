"""A NAV oracle's price rule on an exchange-calendars code: holidays and early closes from the library
(pure: no chain)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot.components import ComponentConfig
from connectors.evm.price_rules import FeedRead, PriceRule, TradingCalendar, evaluate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

ET = ZoneInfo("America/New_York")


def ts(*args: int) -> int:
    return int(datetime(*args, tzinfo=ET).timestamp())  # type: ignore[misc]


def test_exchange_calendar_knows_holidays_and_early_closes() -> None:
    xnys, hand = TradingCalendar(exchange="XNYS"), TradingCalendar()
    # Wednesday 15:00 ET before Thanksgiving (2026-11-26) to Friday 14:00 ET, an early close at 13:00
    start, end = datetime.fromtimestamp(ts(2026, 11, 25, 15, 0), UTC), datetime.fromtimestamp(ts(2026, 11, 27, 14), UTC)
    assert xnys.open_seconds(start, end) == (60 + 210) * 60
    # the hand-written calendar without a holiday list counts Thursday and Friday as whole sessions
    assert hand.open_seconds(start, end) == (60 + 390 + 270) * 60
    # an ordinary week agrees with the hand-written one
    week = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)
    assert xnys.open_seconds(*week) == hand.open_seconds(*week) == 5 * 6.5 * 3600
    assert xnys.open_seconds(end, start) == 0.0


def test_a_rule_on_an_exchange_calendar_forgives_the_holiday() -> None:
    # the oracle updated at Wednesday's close; read Friday 10:00 ET: 30 open minutes (Thursday is closed)
    read = FeedRead(1, 100.0, ts(2026, 11, 25, 16, 0), ts(2026, 11, 27, 10, 0))
    assert evaluate(PriceRule(max_open_age_s=3600, calendar=TradingCalendar(exchange="XNYS")), [read]).ok
    naive = evaluate(PriceRule(max_open_age_s=3600, calendar=TradingCalendar()), [read])
    assert naive.reasons == ("stale: updated 7.0 open-market hours ago (max 1.0)",)


def test_the_exchange_code_is_validated_when_the_config_is_read() -> None:
    with pytest.raises(ValidationError, match=r"'XNOPE'.*get_calendar_names"):
        TradingCalendar(exchange="XNOPE")
    with pytest.raises(ValidationError, match="exclude each other"):
        TradingCalendar(exchange="XNYS", always_open=True)
    # from TOML, inside a price rule: the same check
    rule = PriceRule.model_validate({"calendar": {"exchange": "XLON"}})
    assert isinstance(rule, ComponentConfig) and rule.calendar.exchange == "XLON"
    with pytest.raises(ValidationError, match="XNOPE"):
        PriceRule.model_validate({"calendar": {"exchange": "XNOPE"}})
    assert TradingCalendar().exchange is None  # configs without it keep the hand-written sessions
