"""The configuration file: a strict, frozen model of the TOML under ``config/``.

Every section rejects unknown keys and wrong types at start, with the file, the key and the reason,
because a typo in a risk limit must never be silently replaced by a default. Component options are
validated by the component's own model when the plugin is built (``Registry.build``).
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from bot.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PluginSection(Section):
    """``plugin`` names a registered component; ``options`` go to its config model."""

    plugin: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class BotSection(Section):
    name: str = "rwabot"
    mode: Literal["paper", "live"] = "paper"
    ledger: str = Field(default="var/rwabot-paper.sqlite", min_length=1)
    quote: str = "USD"


class ClockSection(Section):
    """``real`` follows the wall clock; ``simulated`` starts at ``start`` and runs ``speed`` times
    faster than real time, or as fast as the cycles allow when ``speed`` is 0."""

    kind: Literal["real", "simulated"] = "real"
    start: datetime | None = None
    speed: float = Field(default=0.0, ge=0)

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("must carry a timezone, e.g. 2026-01-05T00:00:00Z")
        return v.astimezone(UTC) if v is not None else None


class ScheduleSection(Section):
    cycle_minute: int = Field(default=0, ge=0, le=59, description="minute past each hour the cycle runs")
    monitor_minutes: int = Field(default=5, ge=1, le=60)
    plan_ttl_minutes: int = Field(
        default=30, ge=1, le=180, description="unsent legs of an older plan are abandoned, never sent late"
    )


class RiskSection(Section):
    history_hours: int = Field(default=720, ge=24, le=24 * 365 * 5)
    participation: float = Field(default=0.10, gt=0, le=1)
    liquidity_lookback_hours: int = Field(default=24, ge=1, le=24 * 30)
    liquidity_horizon_hours: int | None = Field(
        default=None,
        ge=1,
        le=24 * 30,
        description="L_i = participation × mean hourly traded value × this; unset: the look-back sum",
    )
    max_price_age_minutes: float = Field(default=90.0, gt=0)
    vol_threshold_annual: float = Field(default=0.25, gt=0)
    cash_buffer: float = Field(default=0.01, ge=0, lt=0.5)
    min_trade_weight: float = Field(
        default=0.0005, ge=0, lt=0.1, description="skip trades smaller than this fraction of NAV"
    )
    cap_tolerance: float = Field(
        default=0.10,
        ge=0,
        lt=1,
        description="a holding up to this share above its liquidity cap L_i is kept, not sold (targets stay <= L_i)",
    )


class AssetSection(Section):
    """``calendar`` (an ``exchange-calendars`` code such as ``XNYS``) is the market the asset's price comes
    from: its price may age while that market is closed (a Saturday's SPY is Friday's close), and
    ``max_age_minutes`` (default ``risk.max_price_age_minutes``) then counts open-market minutes only."""

    venue: str = Field(min_length=1)
    lower: float = Field(default=0.0, ge=0, le=1)
    upper: float = Field(default=1.0, ge=0, le=1)
    calendar: str | None = Field(default=None, min_length=2)
    max_age_minutes: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AssetSection:
        if self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) exceeds upper ({self.upper})")
        return self


class RouteSection(Section):
    """One way quote cash can travel: from venue ``source`` to venue ``destination`` over ``network``.

    ``asset`` is the currency code at the venues (USDT, USDC; unset: ``bot.quote``); ``address`` (and
    ``tag``) pin the destination's deposit address, else it is asked of the destination venue, and
    either way it must be on ``funding.allow``. ``expected_minutes`` is how long the route takes: a
    transfer older than ten times that is reported as overdue.
    """

    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)
    network: str = Field(min_length=1)
    asset: str | None = None
    address: str | None = None
    tag: str | None = None
    expected_minutes: float = Field(default=30.0, gt=0, le=7 * 24 * 60)


class VenueLimitsSection(Section):
    """What one source venue may send: per transfer and per rolling 24 hours, in the quote currency."""

    min_transfer: float = Field(default=1_000.0, ge=0)
    max_transfer: float = Field(default=1_000_000.0, gt=0)
    daily_cap: float = Field(default=2_000_000.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> VenueLimitsSection:
        if self.min_transfer > self.max_transfer:
            raise ValueError(f"min_transfer ({self.min_transfer}) exceeds max_transfer ({self.max_transfer})")
        return self


class FundingSection(Section):
    """Cash moves between venues only along ``routes``, to addresses on ``allow``, within ``limits``.

    A venue with no limits entry gets the defaults of ``VenueLimitsSection``. ``allow`` is the
    allow-list of destination addresses (``0x…`` compared without case, ``paper:<venue>`` for the paper
    network): a transfer to any other address is refused before it is sent, with a critical event.
    """

    routes: list[RouteSection] = Field(default_factory=list)
    allow: list[str] = Field(default_factory=list)
    min_gap: float = Field(
        default=0.005, ge=0, lt=0.5, description="a venue short by less than this share of NAV gets no transfer"
    )
    limits: dict[str, VenueLimitsSection] = Field(default_factory=dict)

    def limits_of(self, venue: str) -> VenueLimitsSection:
        return self.limits.get(venue) or VenueLimitsSection()

    def allowed(self, address: str) -> bool:
        norm = address.lower() if address.startswith("0x") else address
        return any((a.lower() if a.startswith("0x") else a) == norm for a in self.allow)


class ReportSection(Section):
    """How a run's performance is judged: against what risk-free rate, and beside which simple books.

    A book that is half a tokenized T-bill fund earns a high Sharpe against 0% and none against the rate
    the fund pays, so the rate is stated, not assumed: ``risk_free_annual``, or the realised return of
    ``risk_free_asset`` on the run's own path (it wins when both are set). ``benchmarks`` are static
    weights (normalised, rebalanced every cycle, gross of costs) printed beside the strategy, with equal
    weight always among them: the answer to "is risk parity worth it here"."""

    risk_free_annual: float = Field(default=0.0, ge=-0.5, le=1.0)
    risk_free_asset: str | None = None
    benchmarks: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("benchmarks")
    @classmethod
    def _weights(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for name, w in v.items():
            if not w or any(x < 0 for x in w.values()) or sum(w.values()) <= 0:
                raise ValueError(f"{name}: weights must be non-negative and not all zero")
        return v


class GuardSection(Section):
    """The kill switch: what trips it and what the bot does then (bot/killswitch.py, docs/ops.md).

    Equity is marked from the venues every monitor tick; ``max_drawdown`` is measured from the high-water
    mark since the last ``rwabot resume`` and ``max_daily_loss`` from the day's first mark (UTC day).
    ``action``: ``halt`` (no new orders, open ones cancelled), ``reduce_only`` (only orders that shrink a
    position), ``flatten`` (sell to cash through the normal plan, within its liquidity limits). The state
    is kept in the ledger and cleared only by ``rwabot resume --reason``. Unset limits do not trip."""

    max_drawdown: float | None = Field(default=None, gt=0, lt=1)
    max_daily_loss: float | None = Field(default=None, gt=0, lt=1)
    action: Literal["halt", "reduce_only", "flatten"] = "halt"
    max_failed_cycles: int | None = Field(default=None, ge=1, le=1000)
    max_reconcile_mismatch: float | None = Field(
        default=None, gt=0, lt=1, description="share of NAV a venue's positions may differ from the ledger's"
    )
    sigma_ceiling_annual: float | None = Field(default=None, gt=0, le=10)


class LimitsSection(Section):
    """Pre-trade limits checked on every order just before it is sent (bot/guards.py); an order that would
    break one is refused with an ``order_denied`` event, never clipped. Shares are of NAV; ``"*"`` in the
    exposure maps is the default for every asset or venue not named. Unset: no limit."""

    max_order_notional: float | None = Field(default=None, gt=0)
    max_asset_exposure: dict[str, float] = Field(default_factory=dict)
    max_venue_exposure: dict[str, float] = Field(default_factory=dict)
    max_daily_turnover: float | None = Field(default=None, gt=0, description="traded value per 24 h / NAV")

    @field_validator("max_asset_exposure", "max_venue_exposure")
    @classmethod
    def _shares(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if not 0 < x <= 1:
                raise ValueError(f"{k}: {x} is not a share of NAV in (0, 1]")
        return v


class OpsSection(Section):
    """The operations endpoint of the daemon: Prometheus ``/metrics`` and ``/healthz`` (bot/ops.py).
    ``port`` unset: not served. Bound to 127.0.0.1 unless ``host`` says otherwise."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    max_cycle_age_hours: float = Field(default=2.0, gt=0, description="/healthz fails when the last cycle is older")


class AlertsSection(Section):
    """Notifiers (plugin family ``rwabot_register_notifiers``) and how often they may speak (bot/alerts.py).

    ``notifiers`` maps a name to a plugin (``webhook``, ``telegram``) and its options; the same alert (kind
    and place) is sent once per ``dedup_minutes``, and at most ``max_per_hour`` alerts per notifier."""

    notifiers: dict[str, PluginSection] = Field(default_factory=dict)
    dedup_minutes: float = Field(default=60.0, ge=0)
    max_per_hour: int = Field(default=20, ge=1)
    shortfall_share: float = Field(default=0.02, gt=0, lt=1, description="a cash shortfall above this share of NAV")


class Config(Section):
    bot: BotSection = Field(default_factory=BotSection)
    clock: ClockSection = Field(default_factory=ClockSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    risk: RiskSection = Field(default_factory=RiskSection)
    strategy: PluginSection | None = None
    data: PluginSection
    forecaster: PluginSection | None = None
    returns: PluginSection | None = None  # an expected-return model for μ (plugins/returns); none: the forecaster's
    optimizer: PluginSection | None = None
    policy: PluginSection | None = None
    venues: dict[str, PluginSection]
    assets: dict[str, AssetSection]
    funding: FundingSection = Field(default_factory=FundingSection)
    report: ReportSection = Field(default_factory=ReportSection)
    guard: GuardSection = Field(default_factory=GuardSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    ops: OpsSection = Field(default_factory=OpsSection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _cross(self) -> Config:
        if not self.assets:
            raise ValueError("assets: at least one asset is required")
        if not self.venues:
            raise ValueError("venues: at least one venue is required")
        for name, a in self.assets.items():
            if a.venue not in self.venues:
                raise ValueError(f"assets.{name}.venue: unknown venue {a.venue!r} (known: {sorted(self.venues)})")
        seen: set[tuple[str, str]] = set()
        for k, r in enumerate(self.funding.routes):
            for end in (r.source, r.destination):
                if end not in self.venues:
                    raise ValueError(f"funding.routes[{k}]: unknown venue {end!r} (known: {sorted(self.venues)})")
            if r.source == r.destination:
                raise ValueError(f"funding.routes[{k}]: source and destination are both {r.source!r}")
            if (r.source, r.destination) in seen:
                raise ValueError(f"funding.routes[{k}]: a second route from {r.source!r} to {r.destination!r}")
            seen.add((r.source, r.destination))
            if r.address is not None and not self.funding.allowed(r.address):
                raise ValueError(f"funding.routes[{k}].address {r.address!r} is not on funding.allow")
        for v in self.funding.limits:
            if v not in self.venues:
                raise ValueError(f"funding.limits.{v}: unknown venue (known: {sorted(self.venues)})")
        if self.bot.mode == "live":
            paper = [v for v, s in self.venues.items() if s.plugin == "paper"]
            if paper:
                raise ValueError(f"bot.mode is live but venues {paper} use the paper plugin")
        known = set(self.assets)
        if self.report.risk_free_asset is not None and self.report.risk_free_asset not in known:
            raise ValueError(f"report.risk_free_asset: unknown asset {self.report.risk_free_asset!r}")
        for name, w in self.report.benchmarks.items():
            bad = sorted(set(w) - known)
            if bad:
                raise ValueError(f"report.benchmarks.{name}: unknown assets {bad}")
        for k in self.limits.max_asset_exposure:
            if k != "*" and k not in known:
                raise ValueError(f"limits.max_asset_exposure: unknown asset {k!r}")
        for k in self.limits.max_venue_exposure:
            if k != "*" and k not in self.venues:
                raise ValueError(f"limits.max_venue_exposure: unknown venue {k!r}")
        if sum(a.lower for a in self.assets.values()) > 1:
            raise ValueError("assets: the lower bounds add up to more than 1")
        return self

    @property
    def asset_names(self) -> tuple[str, ...]:
        return tuple(self.assets)

    @property
    def source(self) -> str | None:
        """The file (or label) the config was read from, so that errors found later, in a plugin's
        options, name it as the section errors found at load do; None for a config built in code."""
        return self._source

    def with_overrides(self, **sections: Any) -> Config:
        """A copy with whole sections replaced (used by the CLI's --ledger and by backtests)."""
        data = self.model_dump()
        for k, v in sections.items():
            data[k] = {**data[k], **v} if isinstance(data.get(k), dict) else v
        out = Config.model_validate(data, strict=False)
        out._source = self._source
        return out


def _format(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{source}: {loc}: {err['msg']}")
    return "\n".join(parts)


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None
    cfg._source = source
    return cfg


def read_toml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A TOML file as a dict; an unreadable or invalid file is a ConfigError naming it."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what} ({exc.strerror})") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config; every problem names the file and the key."""
    return parse_config(read_toml(path), str(Path(path)))
