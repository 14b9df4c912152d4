"""The webhook and telegram notifiers against a real HTTP server on 127.0.0.1 (``Receiver``).

``Receiver`` is also what tests/bot/test_alerts.py sends to: it records every request and answers from a
script (a status and a JSON body, or a hang until released), then 200.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.alerts import Alert
from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.domain import Severity
from bot.errors import ConfigError, NotifierError
from bot.plugins import Registry, make_plugin_manager
from plugins.notifiers import telegram, webhook
from plugins.notifiers._http import redact

HANG = -1  # a scripted "status" that holds the request open until ``Receiver.release``
TOKEN = "123456789:AAHsecretTOKENvalue_xyz-0123456789abcdef"
WHEN = datetime(2026, 3, 1, 7, 15, tzinfo=UTC)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A local HTTP server that records requests and answers ``script``ed replies, then 200 ``{"ok": true}``."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._script: deque[tuple[int, Any]] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.arrived:
                    receiver.seen.append(Seen("POST", self.path, dict(self.headers.items()), body))
                    status, reply = receiver._script.popleft() if receiver._script else (200, {"ok": True})
                    receiver.arrived.notify_all()
                if status == HANG:
                    receiver._released.wait(30)
                    status, reply = 200, {"ok": True}
                data = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timed out) first

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: int | tuple[int, Any]) -> None:
        """Answer the next requests with these statuses (or ``(status, json_body)``), then 200."""
        with self._lock:
            for r in replies:
                self._script.append(r if isinstance(r, tuple) else (r, {"ok": r < 400}))

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Seen]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.seen) >= n, timeout)
            return list(self.seen)

    def release(self) -> None:
        self._released.set()

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def ctx(tmp_path: Path, name: str = "desk") -> ComponentContext:
    return ComponentContext(SimulatedClock(WHEN), tmp_path, (), lambda e: None, None,
                            {"notifier_name": name, "where": f"alerts.notifiers.{name}.options"})  # fmt: skip


def registry() -> Registry:
    return Registry(make_plugin_manager(entry_points=False, plugins=[webhook, telegram]))


def build(plugin: str, options: dict[str, Any], tmp_path: Path, name: str = "desk") -> Any:
    where = f"alerts.notifiers.{name}.options"
    return registry().get("notifier", plugin).build(options, ctx(tmp_path, name), where=where)


def an_alert(severity: Severity = Severity.CRITICAL, **data: Any) -> Alert:
    return Alert("venue_failed", severity, "venue:cex", "cex: quote timed out 3 times", WHEN,
                 data or {"attempts": 3}, "2026-03-01T07:00Z", "rwabot-test")  # fmt: skip


# -- the alert itself -----------------------------------------------------------------------------------------


def test_alert_text_and_payload_are_readable_and_json_ready() -> None:
    a = an_alert(Severity.WARNING, shortfall=np.float64(1234.5), assets=("SPY", "TLT"), at=WHEN)
    assert a.title == "🟠 [rwabot-test] WARNING venue_failed at venue:cex"
    assert a.text().splitlines() == [
        a.title,
        "cex: quote timed out 3 times",
        "2026-03-01 07:15 UTC · cycle 2026-03-01T07:00Z",
    ]
    p = json.loads(json.dumps(a.payload()))  # would raise on a numpy float or a datetime
    assert p["data"] == {"shortfall": 1234.5, "assets": ["SPY", "TLT"], "at": WHEN.isoformat()}
    assert p["severity"] == "warning" and p["time"] == WHEN.isoformat() and p["text"] == a.text()


# -- webhook ----------------------------------------------------------------------------------------------------


def test_webhook_posts_the_alert_as_json_with_its_headers(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RWABOT_TEST_HOOK_AUTH", "Bearer s3cret-value-42")
    n = build("webhook", {"url": f"{receiver.url}/hook", "headers": {"Authorization": "env:RWABOT_TEST_HOOK_AUTH",
                                                                     "X-Desk": "rates"}}, tmp_path)  # fmt: skip
    n.send(an_alert())
    (seen,) = receiver.seen
    assert seen.path == "/hook"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Authorization"] == "Bearer s3cret-value-42"
    assert seen.headers["X-Desk"] == "rates"
    body = seen.json()
    assert body == {**an_alert().payload(), "time": WHEN.isoformat()}
    assert {"kind", "severity", "where", "message", "time", "data", "text"} <= set(body)
    assert body["kind"] == "venue_failed" and body["where"] == "venue:cex" and body["data"] == {"attempts": 3}
    assert "s3cret" not in repr(n)
    assert redact("401 for Bearer s3cret-value-42") == "401 for ***"  # a header from the environment is a secret
    n.close()


def test_webhook_retries_a_5xx_and_then_delivers(receiver: Receiver, tmp_path: Path) -> None:
    receiver.script(500, 502)
    n = build("webhook", {"url": receiver.url, "retries": 2, "backoff_s": 0.0}, tmp_path)
    n.send(an_alert())
    assert len(receiver.seen) == 3
    assert receiver.seen[0].body == receiver.seen[2].body


def test_webhook_gives_up_after_its_retries(receiver: Receiver, tmp_path: Path) -> None:
    receiver.script(503, 503, 503, 503)
    n = build("webhook", {"url": receiver.url, "retries": 2, "backoff_s": 0.0}, tmp_path)
    with pytest.raises(NotifierError, match=r"webhook notifier 'desk' \(127\.0\.0\.1:\d+\): HTTP 503 after 3 attempts"):
        n.send(an_alert())
    assert len(receiver.seen) == 3


def test_webhook_4xx_is_an_error_naming_the_status_and_is_not_retried(receiver: Receiver, tmp_path: Path) -> None:
    receiver.script(400)
    n = build("webhook", {"url": receiver.url, "retries": 3, "backoff_s": 0.0}, tmp_path)
    with pytest.raises(NotifierError, match=r"HTTP 400"):
        n.send(an_alert())
    assert len(receiver.seen) == 1


def test_webhook_timeout_is_retried_then_named(receiver: Receiver, tmp_path: Path) -> None:
    receiver.script(HANG, HANG)
    n = build("webhook", {"url": receiver.url, "timeout_s": 0.2, "retries": 1, "backoff_s": 0.0}, tmp_path)
    with pytest.raises(NotifierError, match=r"timed out after 0\.2 s after 2 attempts"):
        n.send(an_alert())
    assert len(receiver.wait_for(2)) == 2


def test_webhook_url_from_the_environment_never_shows_its_path(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret_path = "/services/T0000/B0000/XXXXsecretXXXX"
    monkeypatch.setenv("RWABOT_TEST_HOOK_URL", receiver.url + secret_path)
    receiver.script(404)
    n = build("webhook", {"url": "env:RWABOT_TEST_HOOK_URL"}, tmp_path)
    with caplog.at_level(logging.DEBUG), pytest.raises(NotifierError, match="HTTP 404") as err:
        n.send(an_alert())
    assert receiver.seen[0].path == secret_path
    assert any("POST" in r.getMessage() for r in caplog.records if r.name.startswith("urllib3"))  # it did log
    assert "XXXXsecret" not in str(err.value) + repr(n) + caplog.text


def test_webhook_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"alerts\.notifiers\.desk\.options\.url: .*http:// or https://"):
        build("webhook", {"url": "ftp://example.com/x"}, tmp_path)
    with pytest.raises(ConfigError, match=r"alerts\.notifiers\.desk\.options\.retry: Extra inputs"):
        build("webhook", {"url": "https://example.com/x", "retry": 2}, tmp_path)
    with pytest.raises(ConfigError, match=r"options\.headers\.Authorization: environment variable "
                                          r"RWABOT_TEST_UNSET_HEADER is not set"):  # fmt: skip
        build("webhook", {"url": "https://example.com/x", "headers": {"Authorization": "env:RWABOT_TEST_UNSET_HEADER"}},
              tmp_path)  # fmt: skip


# -- telegram -------------------------------------------------------------------------------------------------


def test_telegram_sends_the_chat_a_message(receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    n = build("telegram", {"chat_id": -1001234, "api_base": receiver.url + "/"}, tmp_path, "ops")
    n.send(an_alert(Severity.CRITICAL))
    n.send(an_alert(Severity.INFO))
    loud, quiet = receiver.seen
    assert loud.path == f"/bot{TOKEN}/sendMessage"
    body = loud.json()
    assert body["chat_id"] == -1001234
    assert body["text"] == an_alert().text()
    assert body["disable_notification"] is False and quiet.json()["disable_notification"] is True
    assert TOKEN not in repr(n) and "ops" in repr(n)


def test_telegram_error_names_the_description_never_the_token(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RWABOT_TEST_TG", TOKEN)
    receiver.script((401, {"ok": False, "error_code": 401, "description": "Unauthorized"}))
    n = build("telegram", {"chat_id": "@desk", "token_env": "RWABOT_TEST_TG", "api_base": receiver.url}, tmp_path)
    with caplog.at_level(logging.DEBUG), pytest.raises(NotifierError, match="HTTP 401: Unauthorized") as err:
        n.send(an_alert())
    assert receiver.seen[0].path == f"/bot{TOKEN}/sendMessage"  # the token was in the URL ...
    assert any("sendMessage" in r.getMessage() for r in caplog.records if r.name.startswith("urllib3"))
    assert TOKEN not in str(err.value)  # ... and in none of these
    assert err.value.__cause__ is None or TOKEN not in str(err.value.__cause__)
    assert TOKEN not in caplog.text and TOKEN.split(":")[1] not in caplog.text


def test_telegram_unreachable_api_never_shows_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    r = Receiver()  # bound, never served: connecting is refused once it is closed
    url = r.url
    r._server.server_close()
    n = build("telegram", {"chat_id": 1, "api_base": url, "retries": 0}, tmp_path)
    with pytest.raises(NotifierError, match="ConnectionError") as err:
        n.send(an_alert())
    assert "sendMessage" in str(err.value)  # requests names the URL: it is redacted, not dropped
    assert TOKEN not in str(err.value) and "***" in str(err.value)


def test_telegram_429_waits_as_asked_and_retries(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    receiver.script((429, {"ok": False, "description": "Too Many Requests", "parameters": {"retry_after": 0}}))
    n = build("telegram", {"chat_id": 1, "api_base": receiver.url, "retries": 1, "backoff_s": 0.0}, tmp_path)
    n.send(an_alert())
    assert len(receiver.seen) == 2
    receiver.script((429, {"ok": False, "description": "Too Many Requests", "parameters": {"retry_after": 600}}))
    with pytest.raises(NotifierError, match="retry after 600 s"):
        n.send(an_alert())
    assert len(receiver.seen) == 3  # a long wait is not worth blocking every other alert for


def test_telegram_missing_token_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RWABOT_TEST_NO_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"alerts\.notifiers\.desk\.options\.token_env: environment variable "
                                          r"RWABOT_TEST_NO_TOKEN is not set"):  # fmt: skip
        build("telegram", {"chat_id": 1, "token_env": "RWABOT_TEST_NO_TOKEN"}, tmp_path)
    with pytest.raises(ConfigError, match=r"options\.chat_id"):
        build("telegram", {}, tmp_path)


def test_both_notifiers_come_from_entry_points() -> None:
    reg = Registry(make_plugin_manager())
    assert {"webhook", "telegram"} <= set(reg.names("notifier"))
    assert reg.get("notifier", "telegram").plugin == "telegram_notifier"
    assert reg.get("notifier", "webhook").plugin == "webhook_notifier"
