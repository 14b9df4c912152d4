"""``telegram``: each alert as a message to a Telegram chat, through the Bot API's ``sendMessage``.

Create a bot with @BotFather, put its token in the environment (``TELEGRAM_BOT_TOKEN`` unless
``token_env`` names another variable) and give the chat's id in the config (a user's or group's number,
or ``@channel``). The token is in the URL path of every call, so it is registered with ``_http.redact``:
it never appears in an error, a repr or a log line, urllib3's debug log included. Telegram answers
errors as ``{"ok": false, "error_code": …, "description": …}``; the description is what an error names.
"""

from __future__ import annotations

import json

import requests
from pydantic import Field, field_validator

from bot.alerts import Alert
from bot.components import ComponentConfig, ComponentContext, Register
from bot.domain import Severity
from bot.errors import NotifierError
from bot.hookspecs import hookimpl
from plugins.notifiers._http import check_http_url, from_env, json_body, post, redact, register_secret

MAX_TEXT = 4096  # Telegram refuses longer messages


class TelegramConfig(ComponentConfig):
    chat_id: str | int = Field(description="numeric chat id, or @channelusername")
    token_env: str = Field(default="TELEGRAM_BOT_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_base: str = "https://api.telegram.org"
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=2, ge=0, le=5, description="extra attempts on 5xx, 429 and timeouts")
    backoff_s: float = Field(default=0.5, ge=0, le=10)
    silent_below: Severity = Field(
        default=Severity.WARNING, description="alerts less severe than this arrive without a sound"
    )
    message_thread_id: int | None = Field(default=None, description="a forum topic of a group chat")

    @field_validator("chat_id")
    @classmethod
    def _chat(cls, v: str | int) -> str | int:
        if isinstance(v, str) and not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("api_base")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v.split("://", 1)[1].strip("/")) == 0:
            raise ValueError("must be an http:// or https:// URL with a host")
        return v.rstrip("/")

    @field_validator("silent_below", mode="before")
    @classmethod
    def _severity(cls, v: object) -> object:
        return Severity(v) if isinstance(v, str) else v  # strict mode takes no plain string for an enum


_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class TelegramNotifier:
    """Sends alerts to one chat. The token lives only in ``_url``; nothing prints it."""

    def __init__(self, name: str, cfg: TelegramConfig, token: str) -> None:
        self.name = name
        self.cfg = cfg
        register_secret(token)
        self._url = f"{cfg.api_base}/bot{token}/sendMessage"
        self._session = requests.Session()
        self._session.trust_env = False

    def __repr__(self) -> str:
        return f"TelegramNotifier(name={self.name!r}, chat_id={self.cfg.chat_id!r})"

    @property
    def who(self) -> str:
        return f"telegram notifier {self.name!r}"

    def message(self, alert: Alert) -> dict[str, object]:
        """The ``sendMessage`` body: plain text (no parse mode: an event's message needs no escaping)."""
        text = alert.text()
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1] + "…"
        body: dict[str, object] = {
            "chat_id": self.cfg.chat_id,
            "text": text,
            "disable_web_page_preview": True,
            "disable_notification": _ORDER[alert.severity] < _ORDER[self.cfg.silent_below],
        }
        if self.cfg.message_thread_id is not None:
            body["message_thread_id"] = self.cfg.message_thread_id
        return body

    def send(self, alert: Alert) -> None:
        data = json.dumps(self.message(alert), ensure_ascii=False).encode()
        r = post(self._session, self._url, data, who=self.who, headers={"Content-Type": "application/json"},
                 timeout_s=self.cfg.timeout_s, retries=self.cfg.retries, backoff_s=self.cfg.backoff_s)  # fmt: skip
        body = json_body(r)
        if 200 <= r.status_code < 300 and (body is None or body.get("ok", True) is not False):
            return
        description = body.get("description") if body else None
        why = str(description) if description else (r.reason or "no description")
        raise NotifierError(redact(f"{self.who}: HTTP {r.status_code}: {why}"))

    def close(self) -> None:
        self._session.close()


def make_telegram(cfg: TelegramConfig, ctx: ComponentContext) -> TelegramNotifier:
    where = ctx.extra.get("where", "telegram")
    check_http_url(cfg.api_base, f"{where}.api_base")
    token = from_env(cfg.token_env, f"{where}.token_env")
    return TelegramNotifier(ctx.extra.get("notifier_name", "telegram"), cfg, token)


@hookimpl
def rwabot_register_notifiers(register: Register) -> None:
    register("telegram", make_telegram, TelegramConfig)
