"""One ccxt exchange, shared by the ccxt venue and data plugins: configuration, retries, rate limit.

Why a wrapper around ccxt at all: ccxt gives one API over many exchanges but leaves the policy to
us. What to retry (only ``OperationFailed``: network errors, timeouts, 5xx, rate limits), how long
to wait (exponential backoff with full jitter, so that many bots do not retry in lockstep, and at
least as long as a 429's ``Retry-After`` says), how fast to go, and how errors reach the cycle
(``VenueError`` with ``retryable`` set, ``InsufficientFunds``, ``InvalidOrder``) is decided here, once.

Rate limit: one thread-safe limiter per (exchange id, API hosts) for the whole process, shared by
every ``CcxtClient`` that talks to that exchange there (the data source and each venue build their
own client, but the exchange counts the requests of the IP / key, not of an object). ccxt's own
throttle is per instance and not thread-safe, so it is switched off. Clients that ask for different
rates share the slowest. A rate limit answer (429/418, or a 503) with ``Retry-After`` pauses the
shared limiter, so every thread and every client of that exchange waits, not only the one that got
the answer.

Credentials are read from the environment variables the config *names*; the values are handed to
ccxt and never logged, stored or echoed in an error message.

Replies are checked before anyone reads them: an answer that is not the exchange's JSON (a proxy's,
CDN's or maintenance page with status 200) is ``ccxt.BadResponse``, a transient fault, whatever ccxt
made of it (an empty order list, an order without an id, "order not found"); so is a reply ccxt
could not parse at all. A create answered that way is therefore an ambiguous outcome, never a result.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt
from pydantic import Field

from bot.components import ComponentConfig
from bot.errors import ConfigError, InsufficientFunds, InvalidOrder, VenueError

log = logging.getLogger("rwabot.ccxt")

T = TypeVar("T")

TRANSIENT = (ccxt.OperationFailed,)
"""NetworkError, RequestTimeout, ExchangeNotAvailable, RateLimitExceeded, DDoSProtection and the
exchange's own "internal error, try again" codes: the request may be sent again (after a lookup
when it created something)."""


class CcxtConnection(ComponentConfig):
    """How to reach one exchange through ccxt; shared by the venue and the data plugin."""

    exchange: str = Field(default="binance", min_length=1, description="ccxt exchange id")
    quote: str = Field(default="USDT", min_length=1, description="quote currency of every symbol")
    symbols: dict[str, str] = Field(
        default_factory=dict, description="asset -> ccxt unified symbol; default '<asset>/<quote>'"
    )
    api_urls: dict[str, str] = Field(
        default_factory=dict,
        description="overrides of ccxt's urls['api'] by key; '*' moves every API URL to this scheme://host[:port] "
        "(self-hosted gateways, testnets, the test emulator)",
    )
    timeout_ms: int = Field(default=10_000, ge=50, le=120_000)
    rate_limit_per_s: float | None = Field(default=None, gt=0, description="default: 1000 / ccxt's rateLimit")
    max_retries: int = Field(default=4, ge=0, le=20, description="retries of a transient fault per request")
    backoff_base_s: float = Field(default=0.25, ge=0, le=60)
    backoff_max_s: float = Field(default=8.0, ge=0, le=600)
    max_retry_after_s: float = Field(
        default=60.0, ge=0, le=3600,
        description="longest Retry-After honoured by waiting; a longer one fails the request at once (a ban)",
    )  # fmt: skip
    max_workers: int = Field(default=8, ge=1, le=64, description="concurrent requests (assets) per plugin")
    exchange_options: dict[str, Any] = Field(default_factory=dict, description="merged into ccxt's options")


class RateLimiter:
    """Spaces requests ``1 / per_second`` apart across every thread that shares it."""

    def __init__(self, per_second: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()
        self._sleep = sleep

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)

    def tighten(self, per_second: float) -> None:
        """Never faster than ``per_second`` from now on (a second client asked for a lower rate)."""
        with self._lock:
            self.interval = max(self.interval, 1.0 / per_second)

    def pause(self, seconds: float) -> None:
        """No request from any thread for ``seconds`` (the exchange said so: ``Retry-After``)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)

    @property
    def paused_until(self) -> float:
        """``time.monotonic()`` of the next free slot."""
        with self._lock:
            return self._next


_LIMITERS: weakref.WeakValueDictionary[tuple[str, str], RateLimiter] = weakref.WeakValueDictionary()
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(exchange: str, hosts: str, per_second: float) -> RateLimiter:
    """The process's limiter for one exchange at one set of API hosts (created on first use; it
    lives as long as a client holds it). A later, slower rate tightens it for every holder."""
    key = (exchange, hosts)
    with _LIMITERS_LOCK:
        lim = _LIMITERS.get(key)
        if lim is None:
            lim = RateLimiter(per_second)
            _LIMITERS[key] = lim
        else:
            lim.tighten(per_second)
        return lim


def _strings(v: Any) -> Iterator[str]:
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from _strings(x)


def api_hosts(api: Any) -> str:
    """The hosts ccxt's ``urls['api']`` points at, sorted and joined: what a shared limit is keyed by
    (a testnet, a gateway or the emulator on its own port is another exchange as far as limits go)."""
    return ",".join(sorted({urlsplit(u).netloc for u in _strings(api) if "://" in u}))


def retry_after_s(headers: Mapping[str, str] | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not headers:
        return None
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw is None:
        return None
    raw = str(raw).strip()
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def override_urls(api: Any, overrides: Mapping[str, str]) -> Any:
    """ccxt's ``urls['api']`` with ``overrides`` applied ('*' re-hosts every URL, keeping its path)."""
    star = overrides.get("*")

    def rehost(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: rehost(x) for k, x in v.items()}
        if isinstance(v, str) and star and "://" in v:
            parts = urlsplit(v)
            return star.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
        return v

    out = rehost(api) if not isinstance(api, str) else (rehost(api) if star else api)
    if isinstance(out, dict):
        out = {**out, **{k: v for k, v in overrides.items() if k != "*"}}
    return out


class _Redact(logging.Filter):
    """ccxt logs every request's headers at DEBUG, API key included: blank out every credential."""

    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.values:
            msg = record.getMessage()
            for v in self.values:
                msg = msg.replace(v, "***")
            record.msg, record.args = msg, None
        return True


_REDACT = _Redact()
logging.getLogger("ccxt").addFilter(_REDACT)
logging.getLogger("ccxt.base.exchange").addFilter(_REDACT)


def read_credentials(env: Mapping[str, str | None], where: str) -> dict[str, str]:
    """{ccxt field: value} from the named environment variables; a missing one is a config error
    that names the variable, never its value."""
    creds: dict[str, str] = {}
    for field_name, var in env.items():
        if var is None:
            continue
        value = os.environ.get(var)
        if not value:
            raise ConfigError(f"{where}: environment variable {var} (the {field_name}) is not set")
        creds[field_name] = value
    return creds


class CcxtClient:
    """A ccxt exchange per thread (same markets, the process's limiter for it) and the retry policy.

    ``call`` runs a function of the exchange with bounded retries of transient faults and maps
    ccxt's errors onto rwabot's. Callers that *create* something must not use ``call``'s retry
    blindly: see ``CcxtVenue._create``, which looks an order up by client id before any resend.
    """

    def __init__(
        self,
        name: str,
        cfg: CcxtConnection,
        *,
        credentials: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if cfg.exchange not in ccxt.exchanges:
            raise ConfigError(f"venue {name}: ccxt has no exchange {cfg.exchange!r}")
        self.name = name
        self.cfg = cfg
        self._credentials = dict(credentials or {})
        _REDACT.values.update(v for v in self._credentials.values() if len(v) >= 4)
        self.sleep = sleep
        self._rng = rng or random.Random()
        self._local = threading.local()
        self._markets_lock = threading.Lock()
        self._markets: dict[str, Any] | None = None
        self._currencies: dict[str, Any] | None = None
        proto = self._new()
        per_s = cfg.rate_limit_per_s or 1000.0 / max(float(proto.rateLimit or 50), 1.0)
        self.limiter = shared_limiter(cfg.exchange, api_hosts(proto.urls.get("api")), per_s)
        self._local.ex = proto
        self.has = dict(proto.has)

    def __repr__(self) -> str:  # never show the exchange object: it carries the credentials
        return f"CcxtClient({self.name!r}, {self.cfg.exchange!r})"

    # -- exchange instances --------------------------------------------------------------------------

    def _new(self) -> ccxt.Exchange:
        cls = getattr(ccxt, self.cfg.exchange)
        options: dict[str, Any] = {
            # spot only: do not load futures/options markets we never trade (and never need to reach), and
            # calls without a symbol (open orders at reconcile, the balance) mean the spot account
            "fetchMarkets": {"types": ["spot"]},
            "defaultType": "spot",
            "fetchCurrencies": False,
            "fetchMargins": False,
            "warnOnFetchOpenOrdersWithoutSymbol": False,
            "fetchOpenOrders": {"warnWithoutSymbol": False},
            **self.cfg.exchange_options,
        }
        ex: ccxt.Exchange = cls(
            {"enableRateLimit": False, "timeout": self.cfg.timeout_ms, "options": options, **self._credentials}
        )
        ex.enableLastJsonResponse = True  # what ``send`` checks: was the answer the exchange's JSON?
        if self.cfg.api_urls:
            ex.urls["api"] = override_urls(ex.urls["api"], self.cfg.api_urls)
        if self._markets is not None:
            ex.set_markets(self._markets, self._currencies)
        return ex

    @property
    def ex(self) -> ccxt.Exchange:
        """This thread's exchange (ccxt's sync instances keep per-request state; one per thread)."""
        ex = getattr(self._local, "ex", None)
        if ex is None:
            ex = self._new()
            self._local.ex = ex
        if ex.markets is None and self._markets is not None:
            ex.set_markets(self._markets, self._currencies)
        return ex

    def markets(self) -> dict[str, Any]:
        """Load markets once per process (retried like any read)."""
        if self._markets is None:
            with self._markets_lock:
                if self._markets is None:
                    markets = self.call("load markets", lambda ex: ex.load_markets())
                    self._currencies = self.ex.currencies
                    self._markets = markets
        return self._markets

    def market(self, symbol: str) -> dict[str, Any]:
        m = self.markets().get(symbol)
        if m is None:
            raise VenueError(self.name, f"{self.cfg.exchange} has no market {symbol}", retryable=False)
        return m

    # -- retries ---------------------------------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base·2^attempt)] (AWS architecture blog, 2015)."""
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2**attempt))
        return self._rng.uniform(0.0, cap)

    def send(self, fn: Callable[[ccxt.Exchange], T]) -> T:
        """One request: wait for the shared limiter's slot, then ``fn(exchange)`` (no retry).

        An answer that is not JSON (an HTML page with status 200), or that ccxt could not parse, raises
        ``ccxt.BadResponse`` (transient): nothing ccxt made of it is returned, not even its "not found"."""
        self.limiter.acquire()
        ex = self.ex
        ex.last_response_headers = None  # so a Retry-After read after a fault is this request's
        ex.last_http_response = ex.last_json_response = None  # and a reply checked below is this call's
        try:
            out = fn(ex)
        except TRANSIENT:
            raise
        except ccxt.BaseError as exc:
            if not _json_reply(ex):
                raise ccxt.BadResponse(f"{self.cfg.exchange}: {type(exc).__name__} from an answer that is not "
                                       f"its JSON: {_snippet(ex)}") from exc  # fmt: skip
            raise
        except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
            if ex.last_http_response is None:
                raise  # no answer was read: not the exchange's doing
            raise ccxt.BadResponse(f"{self.cfg.exchange}: unparseable answer ({type(exc).__name__}: {exc}): "
                                   f"{_snippet(ex)}") from exc  # fmt: skip
        if not _json_reply(ex):
            raise ccxt.BadResponse(f"{self.cfg.exchange}: the answer is not its JSON: {_snippet(ex)}")
        return out

    def honour_retry_after(self, what: str, exc: BaseException) -> None:
        """After a transient fault: if the answer carried ``Retry-After``, pause the shared limiter
        (every thread, every client of this exchange) that long; longer than ``max_retry_after_s``
        (a ban, typically a 418) fails the request now rather than holding the cycle for it."""
        if not isinstance(exc, ccxt.DDoSProtection | ccxt.ExchangeNotAvailable):
            return
        wait = retry_after_s(getattr(self.ex, "last_response_headers", None))
        if wait is None:
            return
        if wait > self.cfg.max_retry_after_s:
            self.limiter.pause(self.cfg.max_retry_after_s)
            raise VenueError(
                self.name, f"{what}: {type(exc).__name__} with Retry-After {wait:.0f}s (more than "
                f"max_retry_after_s {self.cfg.max_retry_after_s:.0f}s): {short(exc)}", retryable=True,
            ) from exc  # fmt: skip
        log.warning("venue %s: %s: %s, Retry-After %.2fs: every request to %s waits", self.name, what,
                    type(exc).__name__, wait, self.cfg.exchange)  # fmt: skip
        self.limiter.pause(wait)

    def call(self, what: str, fn: Callable[[ccxt.Exchange], T], *, retries: int | None = None) -> T:
        """``fn(exchange)`` with retries of transient faults; ccxt errors become rwabot errors."""
        n = self.cfg.max_retries if retries is None else retries
        attempt = 0
        while True:
            try:
                return self.send(fn)
            except TRANSIENT as exc:
                self.honour_retry_after(what, exc)
                if attempt >= n:
                    raise VenueError(
                        self.name, f"{what}: {type(exc).__name__} after {attempt + 1} attempts: {short(exc)}",
                        retryable=True,
                    ) from exc  # fmt: skip
                delay = self.backoff(attempt)
                log.warning("venue %s: %s: %s; retry %d/%d in %.2fs", self.name, what, type(exc).__name__,
                            attempt + 1, n, delay)  # fmt: skip
                self.sleep(delay)
                attempt += 1
            except ccxt.BaseError as exc:
                raise self.map_error(what, exc) from exc

    def map_error(self, what: str, exc: BaseException) -> VenueError:
        """Non-transient ccxt errors: never retried."""
        msg = f"{what}: {type(exc).__name__}: {short(exc)}"
        if isinstance(exc, ccxt.InsufficientFunds):
            return InsufficientFunds(self.name, msg)
        if isinstance(exc, ccxt.InvalidOrder | ccxt.BadRequest | ccxt.BadSymbol):
            return InvalidOrder(self.name, msg)
        if isinstance(exc, ccxt.AuthenticationError):
            return VenueError(self.name, f"{msg} (check the API key, its permissions and the clock)", retryable=False)
        if isinstance(exc, TRANSIENT):
            return VenueError(self.name, msg, retryable=True)
        return VenueError(self.name, msg, retryable=False)


def _json_reply(ex: ccxt.Exchange) -> bool:
    """The last answer was JSON, or empty, or none was read (the request failed before an answer)."""
    body = ex.last_http_response
    if body is None or (isinstance(body, str) and not body.strip()):
        return True
    return ex.last_json_response is not None


def _snippet(ex: ccxt.Exchange, limit: int = 80) -> str:
    body = " ".join(str(ex.last_http_response or "").split())
    return repr(body if len(body) <= limit else body[:limit] + "…")


def short(exc: BaseException, limit: int = 300) -> str:
    s = str(exc)
    return s if len(s) <= limit else s[:limit] + "…"
