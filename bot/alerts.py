"""Alerts: which risk events reach a human, how often, and through which notifiers.

The ledger records every risk event; an operator's phone must not. ``Alerts.consider`` picks the few
that need someone now (kill switch, venue failure, stale data, a failed cycle or job, a cash shortfall
large against NAV, anything critical), drops repeats of the same kind at the same place within
``alerts.dedup_minutes``, holds each notifier to ``alerts.max_per_hour`` (what it drops is summed up in
one alert when the hour has room again), and hands the rest to a single background thread. A webhook
that hangs or a chat API that is down therefore never delays a cycle that is moving money; failures are
logged (without secrets) and counted in ``Alerts.stats`` for the metrics endpoint.

Time is the daemon's clock (``clock_now``), never the wall clock: on a simulated clock a year of
hourly cycles runs in minutes, and dedup and rate limits must mean the same there as live.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot.components import ComponentContext
from bot.domain import RiskEvent, Severity
from bot.errors import ConfigError, NotifierError, PluginError

if TYPE_CHECKING:
    from bot.components import ComponentConfig
    from bot.config import AlertsSection, Config
    from bot.plugins import Registration, Registry

log = logging.getLogger(__name__)

ALERT_KINDS = frozenset(
    {"kill_switch", "kill_switch_resumed", "venue_failed", "stale_price", "cycle_failed", "job_failed"}
)
"""Kinds that alert whatever their severity; ``cash_shortfall`` alerts by size, anything critical always."""

RESOLVES = {"kill_switch_resumed": "kill_switch"}
"""An alert of the key kind forgets the dedup of the value kind: a switch tripped again right after a
resume is news, not a repeat."""

SUMMARY_KIND = "alerts_suppressed"
HOUR = timedelta(hours=1)
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_MARK = {Severity.INFO: "🔵", Severity.WARNING: "🟠", Severity.CRITICAL: "🔴"}
OUTCOMES = ("sent", "failed", "deduped", "rate_limited", "dropped")


@dataclass(frozen=True)
class Alert:
    """One message for a human: a risk event as a notifier sends it.

    ``bot`` is the configured bot name, so that one chat can serve several bots; ``data`` holds the
    event's numbers for machines (a webhook receiver), ``text()`` the lines a person reads on a phone.
    """

    kind: str
    severity: Severity
    where: str
    message: str
    time: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    cycle_key: str | None = None
    bot: str = ""

    @classmethod
    def from_event(cls, event: RiskEvent, *, bot: str = "") -> Alert:
        return cls(
            event.kind,
            Severity(event.severity),
            event.where,
            event.message,
            event.time,
            dict(event.data),
            event.cycle_key,
            bot,
        )

    @property
    def title(self) -> str:
        """The first line: enough to decide, from a lock screen, whether to get up."""
        who = f"[{self.bot}] " if self.bot else ""
        return f"{_MARK.get(self.severity, '')} {who}{self.severity.value.upper()} {self.kind} at {self.where}".strip()

    def text(self) -> str:
        """Plain text for a chat: title, message, then when (and which cycle)."""
        when = self.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if self.time.tzinfo else str(self.time)
        tail = f"{when} · cycle {self.cycle_key}" if self.cycle_key else when
        return f"{self.title}\n{self.message}\n{tail}"

    def payload(self) -> dict[str, Any]:
        """A JSON-ready dict (times ISO 8601, numpy numbers as Python ones) with the rendered ``text``.

        ``text`` is the field Slack, Mattermost and Rocket.Chat incoming webhooks display, so a generic
        webhook pointed at one of them shows something readable without a template.
        """
        return {
            "kind": self.kind,
            "severity": self.severity.value,
            "where": self.where,
            "message": self.message,
            "time": self.time.isoformat(),
            "data": jsonable(self.data),
            "cycle_key": self.cycle_key,
            "bot": self.bot,
            "text": self.text(),
        }


def jsonable(value: Any) -> Any:
    """``value`` with what ``json.dumps`` refuses made plain: event data may hold numpy scalars or times."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars (and 0-d arrays)
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return jsonable(tolist())
    return str(value)


@runtime_checkable
class Notifier(Protocol):
    """Where alerts go. ``send`` delivers one alert or raises ``NotifierError`` saying why (never a secret);
    it runs on the alert thread only, so it may block up to its own timeout. ``close`` frees connections."""

    name: str

    def send(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Window:
    """One notifier's sliding hour: when it was last sent to, and what the limit held back since."""

    sent: deque[datetime] = field(default_factory=deque)
    suppressed: Counter[str] = field(default_factory=Counter)
    worst: Severity = Severity.INFO
    since: datetime | None = None


class Alerts:
    """Filters, deduplicates and rate-limits risk events, and sends the alerts off the caller's thread.

    ``consider`` is what ``Engine.emit`` calls for every event; it never raises and never waits on a
    notifier. ``flush`` waits for the queue to drain (tests, shutdown); ``close`` flushes and closes the
    notifiers. ``stats[notifier]`` counts ``sent``, ``failed``, ``deduped``, ``rate_limited`` and
    ``dropped`` (the queue was full: a notifier is hanging); read it through ``snapshot()`` from another
    thread.
    """

    def __init__(
        self,
        section: AlertsSection,
        notifiers: Mapping[str, Notifier],
        clock_now: Callable[[], datetime],
        *,
        bot: str = "",
        queue_size: int = 256,
        idle_check_s: float = 30.0,
    ) -> None:
        self.section = section
        self.notifiers = dict(notifiers)
        self.clock_now = clock_now
        self.bot = bot
        self.stats: dict[str, Counter[str]] = {name: Counter({k: 0 for k in OUTCOMES}) for name in self.notifiers}
        self._dedup_window = timedelta(minutes=section.dedup_minutes)
        self._last: dict[tuple[str, str], tuple[datetime, Severity]] = {}
        self._windows = {name: _Window() for name in self.notifiers}
        self._cv = threading.Condition()
        self._queue: deque[tuple[str, Alert]] = deque()
        self._queue_size = queue_size
        self._busy = 0
        self._closing = False
        self._idle_check_s = idle_check_s
        self._thread: threading.Thread | None = None
        if self.notifiers:
            self._thread = threading.Thread(target=self._run, name="rwabot-alerts", daemon=True)
            self._thread.start()

    # -- deciding ---------------------------------------------------------------------------------------

    def is_alert(self, event: RiskEvent, nav: float | None = None) -> bool:
        """Whether ``event`` needs a human. A cash shortfall does when it exceeds ``shortfall_share`` of NAV
        (``data["shortfall"]``, or ``data["needed"]`` of the planning check); with NAV unknown, any
        positive shortfall does: a false alarm costs less than a silent one."""
        if event.severity == Severity.CRITICAL or event.kind in ALERT_KINDS:
            return True
        if event.kind == "cash_shortfall":
            amount = _number(event.data.get("shortfall", event.data.get("needed")))
            if amount is None or amount <= 0:
                return False
            if nav is None or nav <= 0:
                return True
            return amount / nav > self.section.shortfall_share
        return False

    def consider(self, event: RiskEvent, nav: float | None = None) -> bool:
        """Send ``event`` as an alert if it is one and not a repeat; True when it went to the rate limiters.

        Never raises (a bug here must not fail the cycle that emitted the event) and never blocks on a
        notifier: sending happens on the alert thread.
        """
        try:
            if not self.is_alert(event, nav):
                return False
            return self.notify(Alert.from_event(event, bot=self.bot))
        except Exception:
            log.exception("alerts: could not consider risk event %s at %s", event.kind, event.where)
            return False

    def notify(self, alert: Alert, *, dedup: bool = True) -> bool:
        """Queue ``alert`` for every notifier, past dedup (unless ``dedup=False``: a test message) and the
        rate limits; False when it was a repeat. ``consider`` is this after the alert-worthiness filter."""
        now = self.clock_now()
        with self._cv:
            key = (alert.kind, alert.where)
            if dedup and self._is_repeat(key, alert.severity, now):
                for name in self.notifiers:
                    self.stats[name]["deduped"] += 1
                log.debug("alerts: %s at %s is a repeat within %s", alert.kind, alert.where, self._dedup_window)
                return False
            self._last[key] = (now, alert.severity)
            resolved = RESOLVES.get(alert.kind)
            if resolved is not None:
                for k in [k for k in self._last if k[0] == resolved]:
                    del self._last[k]
            self._prune(now)
            for name in self.notifiers:
                self._release_summary(name, now)
                if self._has_room(name, now):
                    self._windows[name].sent.append(now)
                    self._enqueue(name, alert)
                else:
                    self._suppress(name, alert, now)
        return True

    def tick(self) -> None:
        """Send the summary of what the rate limit held back for every notifier whose hour has room again.

        ``notify`` does this before each alert; the alert thread also calls it when idle, so a summary is
        not held until the next incident."""
        now = self.clock_now()
        with self._cv:
            for name in self.notifiers:
                self._release_summary(name, now)

    def _is_repeat(self, key: tuple[str, str], severity: Severity, now: datetime) -> bool:
        last = self._last.get(key)
        if last is None:
            return False
        at, sev = last
        if _RANK[severity] > _RANK[sev]:
            return False  # worse than what was sent: news
        return timedelta(0) <= now - at < self._dedup_window

    def _prune(self, now: datetime) -> None:
        """Forget dedup entries older than the window (and any from a clock that went back)."""
        stale = [k for k, (at, _) in self._last.items() if not timedelta(0) <= now - at < self._dedup_window]
        for k in stale:
            del self._last[k]

    def _has_room(self, name: str, now: datetime) -> bool:
        sent = self._windows[name].sent
        while sent and not (now - HOUR < sent[0] <= now):
            sent.popleft()
        return len(sent) < self.section.max_per_hour

    def _suppress(self, name: str, alert: Alert, now: datetime) -> None:
        w = self._windows[name]
        w.suppressed[alert.kind] += 1
        if _RANK[alert.severity] > _RANK[w.worst]:
            w.worst = alert.severity
        if w.since is None:
            w.since = now
        self.stats[name]["rate_limited"] += 1
        log.info("alerts: %s at %s not sent to %s: over %d per hour", alert.kind, alert.where, name,
                 self.section.max_per_hour)  # fmt: skip

    def _release_summary(self, name: str, now: datetime) -> None:
        w = self._windows[name]
        if not w.suppressed or not self._has_room(name, now):
            return
        n = sum(w.suppressed.values())
        kinds = ", ".join(f"{k} ×{c}" for k, c in w.suppressed.most_common())
        since = w.since or now
        summary = Alert(
            SUMMARY_KIND,
            w.worst,
            "alerts",
            f"{n} alerts suppressed by the limit of {self.section.max_per_hour} per hour since "
            f"{since.astimezone(UTC):%Y-%m-%d %H:%M} UTC: {kinds}; the ledger has them all",
            now,
            {"suppressed": n, "kinds": dict(w.suppressed), "since": since.isoformat()},
            None,
            self.bot,
        )
        self._windows[name] = _Window(sent=w.sent)
        w.sent.append(now)
        self._enqueue(name, summary)

    # -- sending ------------------------------------------------------------------------------------------

    def _enqueue(self, name: str, alert: Alert) -> None:
        """Put one send on the queue (the lock is held); a full queue drops it rather than grow or block."""
        if self._closing:
            return
        if len(self._queue) >= self._queue_size:
            self.stats[name]["dropped"] += 1
            log.warning("alerts: queue full (%d), %s at %s not sent to %s; is a notifier hanging?",
                        self._queue_size, alert.kind, alert.where, name)  # fmt: skip
            return
        self._queue.append((name, alert))
        self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._queue and not self._closing:
                    self._cv.wait(self._idle_check_s)
                if not self._queue:
                    if self._closing:
                        return
                    idle = True
                else:
                    name, alert = self._queue.popleft()
                    self._busy += 1
                    idle = False
            if idle:
                try:
                    self.tick()
                except Exception:
                    log.exception("alerts: idle check failed")
                continue
            try:
                self._deliver(name, alert)
            finally:
                with self._cv:
                    self._busy -= 1
                    self._cv.notify_all()

    def _deliver(self, name: str, alert: Alert) -> None:
        notifier = self.notifiers[name]
        try:
            notifier.send(alert)
        except NotifierError as exc:
            outcome = "failed"
            log.warning("alerts: %s at %s not delivered by %s: %s", alert.kind, alert.where, name, exc)
        except Exception as exc:  # a plugin's bug: its traceback helps, and it is the plugin's to keep clean
            outcome = "failed"
            log.error("alerts: notifier %s raised %s sending %s", name, type(exc).__name__, alert.kind, exc_info=True)
        else:
            outcome = "sent"
            log.debug("alerts: %s at %s sent by %s", alert.kind, alert.where, name)
        with self._cv:
            self.stats[name][outcome] += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert was sent or failed; False when ``timeout`` (seconds) ran out first."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush (up to ``timeout``), stop the thread and close every notifier; later alerts are dropped."""
        drained = self.flush(timeout)
        with self._cv:
            self._closing = True
            left = len(self._queue)
            self._queue.clear()
            self._cv.notify_all()
        if not drained:
            log.warning("alerts: closing with %d alerts unsent after %.0f s (a notifier is hanging)", left, timeout)
        if self._thread is not None:
            self._thread.join(timeout=1.0 if drained else 0.1)
        for name, notifier in self.notifiers.items():
            try:
                notifier.close()
            except Exception as exc:
                log.warning("alerts: closing notifier %s failed: %s", name, type(exc).__name__)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of ``stats`` taken under the lock, for a metrics endpoint on another thread."""
        with self._cv:
            return {name: dict(c) for name, c in self.stats.items()}


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# -- building -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedNotifier:
    """One configured notifier with its options validated, not built yet."""

    name: str
    registration: Registration
    options: ComponentConfig
    where: str


def resolve_notifiers(cfg: Config, registry: Registry, *, source: str | None = None) -> list[ResolvedNotifier]:
    """Find every configured notifier and validate its options, building none.

    Like ``bot.cycle.resolve_components``, so a misspelled option stops the program before anything has a
    side effect; errors name ``source`` (default: the config's file) and ``alerts.notifiers.<name>``.
    """
    src = source if source is not None else cfg.source
    prefix = f"{src}: " if src else ""
    out = []
    for name, sec in cfg.alerts.notifiers.items():
        where = f"{prefix}alerts.notifiers.{name}.options"
        try:
            reg = registry.get("notifier", sec.plugin)
        except PluginError as exc:
            raise ConfigError(f"{prefix}alerts.notifiers.{name}.plugin: {exc}") from None
        out.append(ResolvedNotifier(name, reg, reg.validate(sec.options, where=where), where))
    return out


def build_alerts(
    cfg: Config,
    registry: Registry,
    ctx: ComponentContext,
    *,
    resolved: list[ResolvedNotifier] | None = None,
    source: str | None = None,
) -> Alerts:
    """Build every configured notifier (all validated before any is built) and the dispatcher over them.

    Each factory gets ``ctx.extra["notifier_name"]`` (its name in the config, which it reports as its
    ``name``) and ``ctx.extra["where"]`` (the prefix for its own ``ConfigError``, such as a token missing
    from the environment). If one factory fails, those already built are closed.
    """
    items = resolved if resolved is not None else resolve_notifiers(cfg, registry, source=source)
    built: dict[str, Notifier] = {}
    try:
        for r in items:
            nctx = ComponentContext(
                ctx.clock, ctx.state_dir, ctx.assets, ctx.emit, ctx.data,
                {**ctx.extra, "notifier_name": r.name, "where": r.where},
            )  # fmt: skip
            notifier = r.registration.factory(r.options, nctx)
            if not isinstance(notifier, Notifier):
                raise PluginError(
                    f"notifier {r.registration.name!r} from {r.registration.plugin} built a "
                    f"{type(notifier).__name__}, which lacks name, send or close"
                )
            built[r.name] = notifier
    except BaseException:
        for notifier in built.values():
            try:
                notifier.close()
            except Exception:
                log.debug("alerts: closing %s after a failed build failed", notifier.name, exc_info=True)
        raise
    return Alerts(cfg.alerts, built, ctx.clock.now, bot=cfg.bot.name)
