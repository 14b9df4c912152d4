"""Price rules against a real AggregatorV3 feed on anvil, with chain time moved to a weekend."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from connectors.evm.deploy import World, send
from connectors.evm.price_rules import FeedRead, PriceRule, TradingCalendar, evaluate, read_feed

FRI_1530_ET = int(datetime(2026, 1, 9, 20, 30, tzinfo=UTC).timestamp())  # Friday, 30 min before the close
SUN_NOON = int(datetime(2026, 1, 11, 12, 0, tzinfo=UTC).timestamp())
MON_1100_ET = int(datetime(2026, 1, 12, 16, 0, tzinfo=UTC).timestamp())  # 1.5 h after Monday's open


def mine_at(world: World, ts: int) -> None:
    world.w3.provider.make_request("evm_mine", [ts])  # type: ignore[arg-type]


def update_at(world: World, ts: int, price: float) -> None:
    world.w3.provider.make_request("evm_setNextBlockTimestamp", [ts])  # type: ignore[arg-type]
    send(world.w3, world.feeds["REALT"].functions.updateAnswer(int(price * 1e8)), world.owner)


def test_calendar_open_seconds_closed_form() -> None:
    nyse = TradingCalendar()
    # Friday 15:30 ET -> Monday 11:00 ET: 30 min Friday + 90 min Monday
    start, end = datetime.fromtimestamp(FRI_1530_ET, UTC), datetime.fromtimestamp(MON_1100_ET, UTC)
    assert nyse.open_seconds(start, end) == 2 * 3600
    assert TradingCalendar(holidays=(date(2026, 1, 12),)).open_seconds(start, end) == 1800
    assert TradingCalendar(always_open=True).open_seconds(start, end) == (MON_1100_ET - FRI_1530_ET)
    # a whole week is 5 sessions of 6.5 h
    assert nyse.open_seconds(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC)) == 5 * 6.5 * 3600


def test_feed_quiet_over_the_weekend_is_not_stale_until_monday(world: World) -> None:
    feed = world.feeds["REALT"]
    update_at(world, FRI_1530_ET, 51.0)
    mine_at(world, SUN_NOON)
    read = read_feed(feed)
    assert read.updated_at == FRI_1530_ET and read.block_time == SUN_NOON and read.answer == 51.0
    rule = PriceRule(max_open_age_s=3600)
    assert evaluate(rule, [read]).ok  # 30 open minutes old, though 40 hours have passed
    naive = evaluate(PriceRule(max_open_age_s=3600, calendar=TradingCalendar(always_open=True)), [read])
    assert not naive.ok and naive.reasons[0].startswith("stale: updated 39.5 open-market hours ago")
    mine_at(world, MON_1100_ET)
    monday = evaluate(rule, [read_feed(feed)])
    assert monday.reasons == ("stale: updated 2.0 open-market hours ago (max 1.0)",)
    holiday = PriceRule(max_open_age_s=3600, calendar=TradingCalendar(holidays=(date(2026, 1, 12),)))
    assert evaluate(holiday, [read_feed(feed)]).ok  # Monday is a holiday: still 30 open minutes


def test_feed_echoing_the_block_time_is_judged_by_its_unchanged_answer(world: World) -> None:
    feed = world.feeds["REALT"]
    reads = []
    t0 = int(datetime(2026, 1, 5, 15, 0, tzinfo=UTC).timestamp())  # Monday 10:00 ET
    for k in range(8):  # the issuer "updates" every 6 h with the same answer: updatedAt == block time
        update_at(world, t0 + k * 6 * 3600, 50.0)
        reads.append(read_feed(feed))
    assert all(r.updated_at == r.block_time for r in reads)
    rule = PriceRule(max_open_age_s=3600, max_unchanged_s=10 * 3600)
    v = evaluate(rule, reads)  # Mon 10:00 ET to Wed 04:00 ET: 42 h, of which 12.5 h open (Mon 6 h, Tue 6.5 h)
    assert v.reasons == (
        "updatedAt always equals the block time and the answer 50.0 has not changed for 12.5 open-market hours "
        "(max 10.0)",
    )
    changed = [*reads[:-1], FeedRead(reads[-1].round_id, 50.5, reads[-1].updated_at, reads[-1].block_time)]
    assert evaluate(rule, changed).ok  # a moving answer is alive, whatever its age says
    assert evaluate(rule, reads[:2]).ok  # two reads do not prove an echo: the ordinary age rule applies


def test_divergence_between_nav_and_market_and_the_premium() -> None:
    read = FeedRead(1, 10.0, 1_767_000_000, 1_767_000_000 + 60)
    rule = PriceRule(max_divergence_bps=200, calendar=TradingCalendar(always_open=True))
    ok = evaluate(rule, [read], nav=10.0, market=10.15)
    assert ok.ok and ok.premium_bps == pytest.approx(150.0)
    bad = evaluate(rule, [read], nav=10.0, market=9.5)
    assert not bad.ok and bad.premium_bps == pytest.approx(-500.0)
    assert bad.reasons == ("market 9.5 is -500 bps from NAV 10 (max 200)",)
    assert not evaluate(rule, [FeedRead(1, 0.0, 1, 2)]).ok
