"""The alert dispatcher: what alerts, dedup and rate limits on the daemon's clock, sending off the caller's thread.

Alerts go through real webhook notifiers to a real local HTTP server (``Receiver``); time is a plain
callable the tests advance, as the daemon's clock is an input of ``Alerts``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.alerts import SUMMARY_KIND, Alert, Alerts, Notifier, build_alerts
from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.config import AlertsSection, parse_config
from bot.domain import RiskEvent, Severity
from bot.errors import ConfigError
from bot.plugins import Registry, make_plugin_manager
from plugins.notifiers import telegram, webhook
from plugins.notifiers.webhook import WebhookConfig, WebhookNotifier
from tests.conftest import paper_dict
from tests.plugins.test_notifiers import HANG, Receiver, Seen

T0 = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)


class FakeClock:
    """The daemon's "now" as a value the test moves."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    started: list[Receiver] = []

    def make() -> Receiver:
        started.append(Receiver().start())
        return started[-1]

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def receiver(receivers: Callable[[], Receiver]) -> Receiver:
    return receivers()


def hook(r: Receiver, name: str = "desk", **options: Any) -> WebhookNotifier:
    return WebhookNotifier(name, WebhookConfig.model_validate({"url": r.url, "backoff_s": 0.0, **options}))


def event(
    kind: str = "venue_failed", where: str = "venue:cex", sev: Severity = Severity.WARNING, **data: Any
) -> RiskEvent:
    return RiskEvent(kind, sev, where, f"{kind} at {where}", T0, None, data)


def kinds(seen: list[Seen]) -> list[str]:
    return [s.json()["kind"] for s in seen]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def dispatcher(notifiers: dict[str, Notifier], clock: FakeClock, **section: Any) -> Alerts:
    return Alerts(AlertsSection(**section), notifiers, clock)


def test_alert_kinds_are_sent_and_routine_events_are_not(receiver: Receiver, clock: FakeClock) -> None:
    alerts = dispatcher({"desk": hook(receiver)}, clock, max_per_hour=100)
    wanted = ["kill_switch", "kill_switch_resumed", "venue_failed", "stale_price", "cycle_failed", "job_failed"]
    for k in wanted:
        assert alerts.consider(event(k, sev=Severity.INFO)) is True
    assert alerts.consider(event("order_mismatch", sev=Severity.CRITICAL)) is True  # anything critical
    for k in ("order_skipped", "vol_breach", "order_rejected", "policy_fallback"):
        assert alerts.consider(event(k, sev=Severity.WARNING)) is False
    assert alerts.flush(5)
    assert kinds(receiver.seen) == [*wanted, "order_mismatch"]
    assert alerts.snapshot()["desk"]["sent"] == 7
    alerts.close()


def test_a_cash_shortfall_alerts_only_above_its_share_of_nav(receiver: Receiver, clock: FakeClock) -> None:
    alerts = dispatcher({"desk": hook(receiver)}, clock, shortfall_share=0.02, dedup_minutes=0)
    assert alerts.consider(event("cash_shortfall", shortfall=1_999.0), nav=100_000.0) is False
    assert alerts.consider(event("cash_shortfall", shortfall=2_001.0), nav=100_000.0) is True
    assert alerts.consider(event("cash_shortfall", needed=5_000.0), nav=100_000.0) is True  # the planning check's key
    assert alerts.consider(event("cash_shortfall", needed=0.0, sev=Severity.INFO), nav=100_000.0) is False  # resolved
    assert alerts.consider(event("cash_shortfall"), nav=100_000.0) is False  # no amount to judge
    assert alerts.consider(event("cash_shortfall", shortfall=10.0), nav=None) is True  # NAV unknown: say so
    assert alerts.flush(5)
    assert [s.json()["data"] for s in receiver.seen] == [
        {"shortfall": 2_001.0},
        {"needed": 5_000.0},
        {"shortfall": 10.0},
    ]
    alerts.close()


def test_a_repeat_within_the_dedup_window_is_sent_once(receiver: Receiver, clock: FakeClock) -> None:
    alerts = dispatcher({"desk": hook(receiver)}, clock, dedup_minutes=60)
    assert alerts.consider(event()) is True
    clock.advance(minutes=30)
    assert alerts.consider(event()) is False  # same kind, same place
    assert alerts.consider(event(where="venue:chain")) is True  # another place is news
    assert alerts.consider(event(sev=Severity.CRITICAL)) is True  # so is worse
    clock.advance(minutes=29)
    assert alerts.consider(event(sev=Severity.CRITICAL)) is False
    clock.advance(minutes=32)  # 61 minutes after the critical one
    assert alerts.consider(event(sev=Severity.CRITICAL)) is True
    assert alerts.flush(5)
    assert [(s.json()["where"], s.json()["severity"]) for s in receiver.seen] == [
        ("venue:cex", "warning"), ("venue:chain", "warning"), ("venue:cex", "critical"), ("venue:cex", "critical")
    ]  # fmt: skip
    assert alerts.snapshot()["desk"]["deduped"] == 2
    alerts.close()


def test_a_resume_makes_the_next_kill_switch_news(receiver: Receiver, clock: FakeClock) -> None:
    alerts = dispatcher({"desk": hook(receiver)}, clock, dedup_minutes=60)
    assert alerts.consider(event("kill_switch", "guard", Severity.CRITICAL))
    clock.advance(minutes=5)
    assert alerts.consider(event("kill_switch_resumed", "guard", Severity.INFO))
    clock.advance(minutes=5)
    assert alerts.consider(event("kill_switch", "guard", Severity.CRITICAL))
    assert not alerts.consider(event("kill_switch", "guard", Severity.CRITICAL))
    assert alerts.flush(5)
    assert kinds(receiver.seen) == ["kill_switch", "kill_switch_resumed", "kill_switch"]
    alerts.close()


def test_the_rate_limit_drops_counts_and_then_sums_up(receiver: Receiver, clock: FakeClock) -> None:
    alerts = dispatcher({"desk": hook(receiver)}, clock, max_per_hour=2)
    for i in range(5):
        assert alerts.consider(event(where=f"venue:v{i}", sev=Severity.CRITICAL if i == 4 else Severity.WARNING))
        clock.advance(minutes=1)
    assert alerts.flush(5)
    assert [s.json()["where"] for s in receiver.seen] == ["venue:v0", "venue:v1"]
    assert alerts.snapshot()["desk"]["rate_limited"] == 3
    clock.advance(minutes=54)  # 59 minutes after the first: the hour is still full
    assert alerts.consider(event("stale_price", "data:files")) is True
    assert alerts.flush(5) and len(receiver.seen) == 2
    clock.advance(minutes=1)  # an hour after the first send, which has left the window: one slot
    alerts.consider(event("cycle_failed", "cycle"))
    assert alerts.flush(5)
    summary = receiver.seen[2].json()
    assert summary["kind"] == SUMMARY_KIND and summary["severity"] == "critical"  # the worst it held back
    assert summary["message"].startswith("4 alerts suppressed")
    assert summary["data"]["kinds"] == {"venue_failed": 3, "stale_price": 1}
    assert len(receiver.seen) == 3  # the summary took the slot; cycle_failed waits in the next summary
    clock.advance(minutes=61)
    alerts.consider(event("job_failed", "scheduler"))
    assert alerts.flush(5)
    assert kinds(receiver.seen)[3:] == [SUMMARY_KIND, "job_failed"]
    assert receiver.seen[3].json()["data"]["suppressed"] == 1
    assert alerts.snapshot()["desk"] == {"sent": 5, "failed": 0, "deduped": 0, "rate_limited": 5, "dropped": 0}
    alerts.close()


def test_the_summary_goes_out_without_waiting_for_the_next_incident(receiver: Receiver, clock: FakeClock) -> None:
    alerts = Alerts(AlertsSection(max_per_hour=1), {"desk": hook(receiver)}, clock, idle_check_s=0.05)
    alerts.consider(event(where="venue:a"))
    alerts.consider(event(where="venue:b"))
    assert alerts.flush(5) and kinds(receiver.seen) == ["venue_failed"]
    clock.advance(minutes=61)
    assert kinds(receiver.wait_for(2)) == ["venue_failed", SUMMARY_KIND]  # the idle thread noticed the room
    alerts.close()


def test_a_hanging_receiver_never_delays_the_caller(receiver: Receiver, clock: FakeClock) -> None:
    receiver.script(HANG)
    alerts = dispatcher({"desk": hook(receiver, timeout_s=5.0, retries=0)}, clock)
    t = time.perf_counter()
    for i in range(5):
        assert alerts.consider(event(where=f"venue:v{i}"))
    took = time.perf_counter() - t
    assert took < 0.5, f"consider blocked for {took:.2f} s"
    receiver.wait_for(1)
    assert alerts.flush(0.2) is False  # still hanging
    receiver.release()
    assert alerts.flush(5) is True
    assert len(receiver.seen) == 5 and alerts.snapshot()["desk"]["sent"] == 5
    alerts.close()


def test_a_failing_notifier_never_stops_the_others(
    receivers: Callable[[], Receiver], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    bad, good = receivers(), receivers()
    bad.script(400, 500, 500, 500)

    class Broken:
        name = "broken"

        def send(self, alert: Alert) -> None:
            raise RuntimeError("a plugin bug")

        def close(self) -> None:
            raise RuntimeError("and another")

    notifiers: dict[str, Notifier] = {
        "bad": hook(bad, "bad", retries=2),
        "broken": Broken(),
        "good": hook(good, "good"),
    }
    alerts = dispatcher(notifiers, clock, dedup_minutes=0)
    with caplog.at_level(logging.WARNING, logger="bot.alerts"):
        alerts.consider(event())
        alerts.consider(event())
        assert alerts.flush(5)
        alerts.close()
    assert len(good.seen) == 2
    stats = alerts.snapshot()
    assert (stats["bad"]["failed"], stats["broken"]["failed"], stats["good"]["sent"]) == (2, 2, 2)
    assert "not delivered by bad" in caplog.text and "HTTP 400" in caplog.text and "HTTP 500 after 3" in caplog.text
    assert "notifier broken raised RuntimeError" in caplog.text


def test_after_close_nothing_is_sent_and_nothing_raises(receiver: Receiver, clock: FakeClock) -> None:
    alerts = dispatcher({"desk": hook(receiver)}, clock)
    alerts.close()
    assert alerts.consider(event()) is True
    assert alerts.flush(1) and receiver.seen == []


# -- building from the config -------------------------------------------------------------------------------


def context(tmp_path: Path) -> ComponentContext:
    return ComponentContext(SimulatedClock(T0), tmp_path, (), lambda e: None)


def registry() -> Registry:
    return Registry(make_plugin_manager(entry_points=False, plugins=[webhook, telegram]))


def config(tmp_path: Path, notifiers: dict[str, Any], **alerts: Any) -> Any:
    return parse_config(paper_dict(tmp_path, alerts={"notifiers": notifiers, **alerts}), "alerts.toml")


def test_build_alerts_builds_every_notifier_and_sends_through_them(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RWABOT_TEST_TG_TOKEN", "42:TOKEN-for-the-build-test")
    cfg = config(tmp_path, {
        "desk": {"plugin": "webhook", "options": {"url": f"{receiver.url}/desk"}},
        "phone": {"plugin": "telegram", "options": {"chat_id": 7, "token_env": "RWABOT_TEST_TG_TOKEN",
                                                     "api_base": receiver.url}},
    }, max_per_hour=5)  # fmt: skip
    alerts = build_alerts(cfg, registry(), context(tmp_path))
    assert sorted(alerts.notifiers) == ["desk", "phone"] and alerts.notifiers["phone"].name == "phone"
    assert alerts.section.max_per_hour == 5
    alerts.consider(event("kill_switch", "guard", Severity.CRITICAL))
    assert alerts.flush(5)
    assert sorted(s.path for s in receiver.seen) == ["/bot42:TOKEN-for-the-build-test/sendMessage", "/desk"]
    assert all(f"[{cfg.bot.name}]" in s.json()["text"] for s in receiver.seen)
    alerts.close()


def test_build_alerts_names_the_notifier_in_its_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"alerts\.toml: alerts\.notifiers\.desk\.plugin: unknown notifier plugin "
                                          r"'pager' \(known: telegram, webhook\)"):  # fmt: skip
        build_alerts(config(tmp_path, {"desk": {"plugin": "pager"}}), registry(), context(tmp_path))
    with pytest.raises(ConfigError, match=r"alerts\.toml: alerts\.notifiers\.desk\.options\.timeout_s: "):
        bad = {"desk": {"plugin": "webhook", "options": {"url": "https://example.com", "timeout_s": "5"}}}
        build_alerts(config(tmp_path, bad), registry(), context(tmp_path))
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"alerts\.toml: alerts\.notifiers\.phone\.options\.token_env: environment "
                                          r"variable TELEGRAM_BOT_TOKEN is not set"):  # fmt: skip
        both = {"desk": {"plugin": "webhook", "options": {"url": "https://example.com"}},
                "phone": {"plugin": "telegram", "options": {"chat_id": 1}}}  # fmt: skip
        build_alerts(config(tmp_path, both), registry(), context(tmp_path))


def test_no_notifiers_means_no_thread_and_no_sends(tmp_path: Path) -> None:
    alerts = build_alerts(config(tmp_path, {}), registry(), context(tmp_path))
    assert alerts.notifiers == {} and alerts._thread is None
    assert alerts.consider(event("kill_switch", "guard", Severity.CRITICAL)) is True
    assert alerts.flush(0.1)
    alerts.close()
