"""Per-asset price rules for tokenized RWAs: staleness that knows the underlying's trading calendar,
feeds whose ``updatedAt`` only echoes the block time, and NAV-versus-market divergence.

Why. An issuer's NAV oracle or a Chainlink-style feed of a tokenized treasury or equity updates
only while the underlying trades: a plain "max age 24 h" rule flags every Monday morning as stale
and misses a feed that stopped during market hours. Some issuer oracles report ``updatedAt`` as the
current block time on every read, so their age is always zero: their staleness shows only as an
answer that has not changed for too long. And a pool price far from NAV is either an opportunity
or a broken oracle; the rule says which trades to skip and reports the premium/discount either way.

Pure functions over plain numbers (``read_feed`` is the only edge): the cycle evaluates them per
asset before planning and skips the asset's trade with a ``price_rule`` risk event on a violation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from bot.components import ComponentConfig
from bot.errors import ConfigError
from bot.staleness import check_calendar, open_minutes


class TradingCalendar(ComponentConfig):
    """Sessions of the underlying market in its own time zone; ``always_open`` for 24/7 assets.

    ``exchange`` (an exchange-calendars code such as ``XNYS``) takes the sessions, holidays and early
    closes from that library instead: ``tz``, ``open``, ``close``, ``weekdays`` and ``holidays`` are
    then unused. Without it, the hand-written sessions below apply."""

    tz: str = "America/New_York"
    open: time = time(9, 30)
    close: time = time(16, 0)
    weekdays: tuple[int, ...] = Field(default=(0, 1, 2, 3, 4), strict=False)  # Monday = 0; TOML gives lists
    holidays: tuple[date, ...] = Field(default=(), strict=False)
    always_open: bool = False
    exchange: str | None = Field(default=None, min_length=2, description="exchange-calendars code, e.g. XNYS")

    @model_validator(mode="after")
    def _known_exchange(self) -> TradingCalendar:
        if self.exchange is not None:
            if self.always_open:
                raise ValueError(f"calendar: exchange {self.exchange!r} and always_open exclude each other")
            try:
                check_calendar(self.exchange)
            except ConfigError as exc:
                raise ValueError(f"calendar.exchange: {exc}") from None
        return self

    def open_seconds(self, start: datetime, end: datetime) -> float:
        """Seconds of open market between two instants (0 when ``end <= start``)."""
        if end <= start:
            return 0.0
        if self.exchange is not None:
            return open_minutes(self.exchange, start, end) * 60.0
        if self.always_open:
            return (end - start).total_seconds()
        tz = ZoneInfo(self.tz)
        s, e = start.astimezone(tz), end.astimezone(tz)
        total, day = 0.0, s.date()
        while day <= e.date():
            if day.weekday() in self.weekdays and day not in self.holidays:
                o = datetime.combine(day, self.open, tz)
                c = datetime.combine(day, self.close, tz)
                lo, hi = max(o, s), min(c, e)
                if hi > lo:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total


class PriceRule(ComponentConfig):
    """Limits for one asset's price source."""

    calendar: TradingCalendar = Field(default_factory=TradingCalendar)
    max_open_age_s: float = Field(default=3 * 3600, gt=0, description="age counted in open-market seconds")
    max_unchanged_s: float = Field(default=2 * 86_400, gt=0, description="open seconds with the same answer")
    max_divergence_bps: float = Field(default=200, gt=0, description="|market / NAV - 1| allowed")


class FeedRule(PriceRule):
    """A rule on an asset's NAV oracle (AggregatorV3 ``feed``): its age and its divergence from the
    venue's market price (pool mid, or the vault's own price)."""

    feed: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="AggregatorV3 NAV oracle of the asset")
    max_reads: int = Field(default=500, ge=3, le=100_000, description="reads kept for the block-time-echo check")


@dataclass(frozen=True)
class FeedRead:
    """One ``latestRoundData`` read and the block it was read at."""

    round_id: int
    answer: float
    updated_at: int
    block_time: int


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...]
    premium_bps: float | None = None  # market price over NAV, in basis points (negative: a discount)


def echoes_block_time(reads: Sequence[FeedRead], min_reads: int = 3) -> bool:
    """A feed whose ``updatedAt`` equals the block time on every one of several reads at different
    blocks: its age says nothing."""
    distinct = {r.block_time for r in reads}
    return len(distinct) >= min_reads and all(r.updated_at == r.block_time for r in reads)


def unchanged_since(reads: Sequence[FeedRead]) -> int | None:
    """Block time of the first read of the latest answer's unbroken run (None without reads)."""
    if not reads:
        return None
    ordered = sorted(reads, key=lambda r: r.block_time)
    last, since = ordered[-1].answer, ordered[-1].block_time
    for r in reversed(ordered):
        if r.answer != last:
            break
        since = r.block_time
    return since


def evaluate(
    rule: PriceRule, reads: Sequence[FeedRead], *, nav: float | None = None, market: float | None = None
) -> Verdict:
    """Is the latest read usable? ``reads`` is this feed's history of reads, oldest first (the cycle
    keeps it); ``nav``/``market`` give the divergence check and the premium report."""
    if not reads:
        return Verdict(False, ("no reads of the feed",))
    latest = max(reads, key=lambda r: r.block_time)
    now = datetime.fromtimestamp(latest.block_time, UTC)
    why: list[str] = []
    if latest.answer <= 0:
        why.append(f"answer {latest.answer} is not positive")
    if latest.updated_at > latest.block_time:
        why.append(f"updatedAt {latest.updated_at} is after the block time {latest.block_time}")
    if echoes_block_time(reads):
        since = unchanged_since(reads)
        assert since is not None
        open_s = rule.calendar.open_seconds(datetime.fromtimestamp(since, UTC), now)
        if open_s > rule.max_unchanged_s:
            why.append(
                f"updatedAt always equals the block time and the answer {latest.answer} has not changed for "
                f"{open_s / 3600:.1f} open-market hours (max {rule.max_unchanged_s / 3600:.1f})"
            )
    else:
        open_s = rule.calendar.open_seconds(datetime.fromtimestamp(latest.updated_at, UTC), now)
        if open_s > rule.max_open_age_s:
            why.append(
                f"stale: updated {open_s / 3600:.1f} open-market hours ago (max {rule.max_open_age_s / 3600:.1f})"
            )
    premium = None
    if nav is not None and market is not None and nav > 0:
        premium = (market / nav - 1.0) * 1e4
        if abs(premium) > rule.max_divergence_bps:
            why.append(
                f"market {market:.6g} is {premium:+.0f} bps from NAV {nav:.6g} (max {rule.max_divergence_bps:.0f})"
            )
    return Verdict(not why, tuple(why), premium)


def read_feed(feed: Any, block: int | str = "latest") -> FeedRead:
    """``latestRoundData`` of an AggregatorV3 feed contract (web3) at a block, scaled by ``decimals``."""
    w3 = feed.w3
    b = w3.eth.get_block(block)
    rid, answer, _, updated, _ = feed.functions.latestRoundData().call(block_identifier=b["number"])
    dec = feed.functions.decimals().call(block_identifier=b["number"])
    return FeedRead(int(rid), answer / 10**dec, int(updated), int(b["timestamp"]))
