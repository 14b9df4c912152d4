"""What both HTTP notifiers share: POST with retries, and keeping secrets out of errors and logs.

A Telegram token sits in the URL path (``/bot<token>/sendMessage``) and a Slack or Discord webhook URL is
itself the credential, so any text that may hold a URL (a ``requests`` exception, urllib3's debug line
``"POST /bot123:ABC/sendMessage HTTP/1.1" 401``) is redacted before it is raised or logged.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from bot.errors import ConfigError, NotifierError

MASK = "***"
_secrets: set[str] = set()
_lock = threading.Lock()
# the loggers that write request lines or URLs; a logger's filter sees only the records logged on it
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager", "urllib3.util.retry")


def register_secret(value: str) -> None:
    """Redact ``value`` from every error this package raises and every urllib3 log line from now on."""
    if len(value) < 8:  # a short "secret" would mask ordinary words all over the log
        return
    with _lock:
        _secrets.add(value)
    _install_filter()


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, MASK)
    return text


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = _RedactFilter()


def _install_filter() -> None:
    for name in _URLLIB3_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def from_env(name: str, where: str) -> str:
    """The value of environment variable ``name``; a ConfigError naming the variable (never a value)."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{where}: environment variable {name} is not set (or empty)")
    return value


def check_http_url(url: str, where: str) -> str:
    """``url`` if it is an absolute http(s) URL; the error names the scheme, never the (secret) rest."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        scheme = parts.scheme or "none"
        raise ConfigError(f"{where}: must be an http:// or https:// URL with a host (scheme: {scheme})")
    return url


def host_of(url: str) -> str:
    """The part of a URL an error may name: its host (and port), never the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return host if parts.port is None else f"{host}:{parts.port}"


def retry_after(response: requests.Response, body: Mapping[str, Any] | None = None) -> float | None:
    """Seconds a 429/503 asks to wait: Telegram's ``parameters.retry_after`` or the Retry-After header."""
    if body is not None:
        params = body.get("parameters")
        if isinstance(params, Mapping) and isinstance(params.get("retry_after"), int | float):
            return float(params["retry_after"])
    header = response.headers.get("Retry-After")
    if not header:
        return None
    try:
        return max(float(header), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def json_body(response: requests.Response) -> Mapping[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, Mapping) else None


def post(
    session: requests.Session,
    url: str,
    data: bytes,
    *,
    who: str,
    headers: Mapping[str, str],
    timeout_s: float,
    retries: int,
    backoff_s: float,
    max_wait_s: float = 10.0,
) -> requests.Response:
    """POST ``data`` until an answer that is neither 5xx nor 429, retrying ``retries`` times.

    Retries timeouts, connection errors, 5xx and 429 with a backoff of ``backoff_s`` doubled each time (or
    the server's Retry-After, when it asks for at most ``max_wait_s``); any other answer, a 4xx included,
    is returned for the caller to judge. Raises ``NotifierError`` (prefixed ``who``, redacted) when the
    attempts run out. Redirects are not followed: a notifier's receiver answers where it was configured.
    """
    why = "no attempt made"
    attempts = retries + 1
    for attempt in range(attempts):
        wait = backoff_s * 2**attempt
        try:
            r = session.post(url, data=data, headers=dict(headers), timeout=timeout_s, allow_redirects=False)
        except requests.Timeout:
            why = f"timed out after {timeout_s:g} s"
        except requests.RequestException as exc:
            why = f"{type(exc).__name__}: {redact(str(exc))}"
        else:
            if r.status_code < 500 and r.status_code != 429:
                return r
            why = f"HTTP {r.status_code}"
            asked = retry_after(r, json_body(r))
            if asked is not None:
                if asked > max_wait_s:
                    raise NotifierError(f"{who}: HTTP {r.status_code}, asked to retry after {asked:g} s; not waiting")
                wait = max(wait, asked)
        if attempt < attempts - 1:
            time.sleep(wait)
    raise NotifierError(redact(f"{who}: {why} after {attempts} attempt{'s' if attempts > 1 else ''}"))
