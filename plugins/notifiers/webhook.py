"""``webhook``: each alert POSTed as JSON to a URL.

The body is ``{kind, severity, where, message, time, data, cycle_key, bot, text}`` (``bot.alerts.Alert.payload``);
``text`` makes it readable as is in a Slack, Mattermost or Rocket.Chat incoming webhook. ``url`` and any header
value may be written ``env:NAME`` to come from the environment at start: a Slack webhook URL or an
``Authorization`` header is a credential and belongs in neither the config file nor a log. Errors name the
host only.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import requests
from pydantic import Field, field_validator

from bot.alerts import Alert
from bot.components import ComponentConfig, ComponentContext, Register
from bot.errors import NotifierError
from bot.hookspecs import hookimpl
from plugins.notifiers._http import check_http_url, from_env, host_of, post, redact, register_secret

ENV_PREFIX = "env:"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token


class WebhookConfig(ComponentConfig):
    url: str = Field(min_length=1, description="http(s) URL, or env:NAME to read it from the environment")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    headers: dict[str, str] = Field(default_factory=dict, description="values may be env:NAME")
    retries: int = Field(default=2, ge=0, le=5, description="extra attempts on 5xx, 429 and timeouts")
    backoff_s: float = Field(default=0.5, ge=0, le=10, description="first wait between attempts, doubled each time")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(ENV_PREFIX):
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"must be an http:// or https:// URL with a host, or env:NAME (scheme: {parts.scheme or 'none'})"
                )
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if "\n" in value or "\r" in value:
                raise ValueError(f"{name}: a header value cannot hold a line break")
        return v


def _resolve(value: str, where: str) -> tuple[str, bool]:
    """``value``, or the environment variable an ``env:NAME`` value names; True when it came from there."""
    if value.startswith(ENV_PREFIX):
        return from_env(value[len(ENV_PREFIX) :].strip(), where), True
    return value, False


class WebhookNotifier:
    """POSTs alerts to one URL over a kept-alive session."""

    def __init__(self, name: str, cfg: WebhookConfig, where: str = "webhook") -> None:
        self.name = name
        self.cfg = cfg
        self._url, _ = _resolve(cfg.url, f"{where}.url")
        check_http_url(self._url, f"{where}.url")
        # a Slack or Discord webhook URL is its own credential: its path (and any password) never shows
        parts = urlsplit(self._url)
        register_secret(parts.path + (f"?{parts.query}" if parts.query else ""))
        if parts.password:
            register_secret(parts.password)
        self._headers = {"Content-Type": "application/json", "User-Agent": "rwabot-webhook"}
        for key, value in cfg.headers.items():
            resolved, secret = _resolve(value, f"{where}.headers.{key}")
            if secret:
                register_secret(resolved)
            self._headers[key] = resolved
        self._host = host_of(self._url)
        self._session = requests.Session()
        self._session.trust_env = False  # no ~/.netrc credentials or proxies the operator did not configure

    def __repr__(self) -> str:
        return f"WebhookNotifier(name={self.name!r}, host={self._host!r})"

    @property
    def who(self) -> str:
        return f"webhook notifier {self.name!r} ({self._host})"

    def send(self, alert: Alert) -> None:
        body = json.dumps(alert.payload(), ensure_ascii=False).encode()
        r = post(self._session, self._url, body, who=self.who, headers=self._headers, timeout_s=self.cfg.timeout_s,
                 retries=self.cfg.retries, backoff_s=self.cfg.backoff_s)  # fmt: skip
        if 200 <= r.status_code < 300:
            return
        reason = redact(r.reason or "")
        raise NotifierError(f"{self.who}: HTTP {r.status_code}{' ' + reason if reason else ''}")

    def close(self) -> None:
        self._session.close()


def make_webhook(cfg: WebhookConfig, ctx: ComponentContext) -> WebhookNotifier:
    return WebhookNotifier(ctx.extra.get("notifier_name", "webhook"), cfg, ctx.extra.get("where", "webhook"))


@hookimpl
def rwabot_register_notifiers(register: Register) -> None:
    register("webhook", make_webhook, WebhookConfig)
