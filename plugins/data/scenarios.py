"""The ``scenario`` data source: another configured data source with stress shocks applied on top.

Why a wrapper and not options of the simulated market: a stress test must run on whatever the user
backtests, the simulated market or their own CSV history, and the shocks must be visible and
composable (bot/shocks.py says what each one does). ``base`` is any registered data source with its
options; ``shocks`` are applied in order to its log prices and volumes, their windows counted in hours
after ``anchor`` (the run's first cycle: ``rwabot stress`` sets it; unset, the clock's time when the
source is built, so set it wherever the result must be reproducible). ``seed`` drives the random part
of a shock (the common factor of ``correlation``).

The shocked value of a bar is a function of the base path from the earliest bar a shock looks at up to
that bar, so it does not depend on the window a caller asks for: the window is widened back to what the
shocks need before they are applied, and cut to the one asked for after.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from bot.components import ComponentConfig, ComponentContext, DataSource
from bot.domain import Bars, Snapshot
from bot.errors import ConfigError, DataError
from bot.hookspecs import hookimpl
from bot.shocks import (
    CorrelationShock,
    DataShock,
    DropShock,
    ScaleShock,
    StaleShock,
    SwingShock,
    VolShock,
    VolumeShock,
    drop_offset,
    swing_offset,
)

HOUR = timedelta(hours=1)
_FACTOR_STREAM = 0x5C0E


class BaseSource(ComponentConfig):
    """The wrapped data source: a registered ``plugin`` and its ``options``."""

    plugin: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("plugin")
    @classmethod
    def _not_itself(cls, v: str) -> str:
        if v == "scenario":
            raise ValueError("a scenario source cannot wrap another scenario source (list the shocks in one)")
        return v


class ScenarioDataConfig(ComponentConfig):
    """Options of the ``scenario`` data source."""

    base: BaseSource
    anchor: str | None = Field(default=None, description="ISO UTC time shock windows count from")
    seed: int = Field(default=0, ge=0)
    shocks: tuple[DataShock, ...] = Field(default=(), strict=False)

    @field_validator("anchor")
    @classmethod
    def _iso(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"anchor {v!r} is not an ISO-8601 time") from None
        if t.tzinfo is None:
            raise ValueError(f"anchor {v!r} has no time zone (write e.g. 2026-03-01T00:00:00Z)")
        return v


def _hours_since(times: Sequence[datetime], anchor: datetime) -> np.ndarray:
    return np.array([(t - anchor) / HOUR for t in times], dtype=float)


class ScenarioSource:
    """A ``DataSource`` (bot/components.py): ``base``'s bars with the shocks applied."""

    def __init__(self, base: DataSource, cfg: ScenarioDataConfig, anchor: datetime, where: str = "data.options"):
        self.base = base
        self.cfg = cfg
        self.anchor = anchor.astimezone(UTC)
        bar = getattr(base, "bar", None)
        if bar is not None:  # a daily CSV steps daily: the fast backtest reads this
            self.bar: timedelta = bar
        self._bar_h = (bar or HOUR) / HOUR
        names = tuple(base.assets())
        self._names = names
        self._index = {a: i for i, a in enumerate(names)}
        self._masks = [s.select(names, base.asset_kind, f"{where}.shocks[{k}]") for k, s in enumerate(cfg.shocks)]
        self._windows = [s.window(self.anchor) for s in cfg.shocks]
        self._factor: dict[int, np.ndarray] = {}

    # -- DataSource --------------------------------------------------------------------------------

    def assets(self) -> tuple[str, ...]:
        return self._names

    def asset_kind(self, asset: str) -> str:
        return self.base.asset_kind(asset)

    def bars(self, assets: Sequence[str], end: datetime, hours: int) -> Bars:
        """The base's bars of the window, shocked."""
        want = self.base.bars(assets, end, hours)  # the base checks the window and the names
        cols = [self._index[a] for a in assets]
        if not self.cfg.shocks:
            return want
        times, logp, volume = self._shocked(want.times[-1], want.times[0])
        if want.times[0] not in times:
            raise DataError(f"data scenario: the base source's bars before {want.times[-1].isoformat()} do not "
                            f"reach back to {want.times[0].isoformat()} (a gap in the file?)")  # fmt: skip
        lo = times.index(want.times[0])
        n = len(want.times)
        close = np.exp(logp[lo : lo + n][:, cols])
        return Bars(tuple(assets), tuple(want.times), close, volume[lo : lo + n][:, cols].copy())

    def latest(self, assets: Sequence[str], now: datetime) -> Snapshot:
        """The base's latest price moved by the shocks' offset at the last closed bar; a stale price is the
        frozen one, stamped with the time it froze (so a price-age rule sees it is old)."""
        snap = self.base.latest(assets, now)
        if not self.cfg.shocks:
            return snap
        last = self.base.bars(self._names, now, 1)
        times, logp, _ = self._shocked(last.times[-1], last.times[-1])
        base_last = np.log(last.close[-1])
        shift = logp[-1] - base_last
        cols = [self._index[a] for a in assets]
        prices = np.asarray(snap.prices, float) * np.exp(shift[cols])
        stamps = list(snap.times)
        h = (last.times[-1] - self.anchor) / HOUR
        for s, m, (a0, a1) in zip(self.cfg.shocks, self._masks, self._windows):
            if isinstance(s, StaleShock) and a0 < h < a1:
                for j, c in enumerate(cols):
                    if m[c]:
                        prices[j] = math.exp(logp[-1, c])
                        stamps[j] = self.anchor + timedelta(hours=a0)
        return Snapshot(tuple(assets), prices, tuple(stamps))

    # -- internals ---------------------------------------------------------------------------------

    def _earliest(self) -> datetime | None:
        first = getattr(self.base, "first", None)  # the csv source
        if isinstance(first, datetime):
            return first
        start = getattr(self.base, "start", None)  # the simulated market: its origin has no bar
        if isinstance(start, datetime):
            return start + HOUR
        return None

    def _shocked(self, end: datetime, first: datetime) -> tuple[list[datetime], np.ndarray, np.ndarray]:
        """Every asset's shocked log prices and volumes from the earliest bar a shock needs up to ``end``."""
        need = (first - self.anchor) / HOUR
        end_h = (end - self.anchor) / HOUR
        for s, (a0, _) in zip(self.cfg.shocks, self._windows):
            if a0 >= end_h:
                continue
            back = s.lookback_hours if isinstance(s, CorrelationShock) else self._bar_h
            need = min(need, a0 - back)
        start = self.anchor + timedelta(hours=need)
        earliest = self._earliest()
        if earliest is not None and start < earliest:
            start = earliest
        n = max(int(round((end - start) / HOUR / self._bar_h)) + 1, 1)
        b = self.base.bars(self._names, end, n)
        times = list(b.times)
        logp = np.log(np.asarray(b.close, float))
        volume = np.asarray(b.volume, float).copy()
        h = _hours_since(times, self.anchor)
        for k, (s, m, (a0, a1)) in enumerate(zip(self.cfg.shocks, self._masks, self._windows)):
            self._apply(k, s, m, a0, a1, h, logp, volume)
        return times, logp, volume

    def _apply(self, k: int, s: Any, m: np.ndarray, a0: float, a1: float, h: np.ndarray, logp: np.ndarray,
               volume: np.ndarray) -> None:  # fmt: skip
        """Shock ``k`` on the columns ``m``, in place."""
        cols = np.flatnonzero(m)
        if isinstance(s, DropShock):
            logp[:, cols] += drop_offset(s, h, a0, a1)[:, None]
        elif isinstance(s, SwingShock):
            logp[:, cols] += swing_offset(s, h, a0, a1)[:, None]
        elif isinstance(s, ScaleShock):
            logp[:, cols] += np.where((h >= a0) & (h < a1), math.log(s.factor), 0.0)[:, None]
        elif isinstance(s, VolumeShock):
            inside = (h > a0) & (h <= a1)
            volume[np.ix_(inside, cols)] *= s.factor
        elif isinstance(s, StaleShock):
            i0 = int(np.searchsorted(h, a0, side="right")) - 1
            frozen = (h > a0) & (h < a1)
            if i0 >= 0 and frozen.any():
                logp[np.ix_(frozen, cols)] = logp[i0, cols]
        elif isinstance(s, VolShock | CorrelationShock):
            i0 = int(np.searchsorted(h, a0, side="right")) - 1
            inside = (h > a0) & (h <= a1)
            if i0 < 0 or not inside.any():
                return
            rows = np.flatnonzero(inside)
            before = logp[:, cols].copy()
            r = np.diff(before, axis=0, prepend=before[:1])  # r[t] = L[t] - L[t-1]
            if isinstance(s, VolShock):
                new = r[rows] * s.factor
            else:
                look = (h > a0 - s.lookback_hours) & (h <= a0)
                look[0] = False  # row 0 has no return
                past = r[look]
                sd = past.std(axis=0, ddof=1) if len(past) >= 2 else r[rows].std(axis=0, ddof=1)
                f = self._common_factor(k, s)
                # the bar's position in the window, counted from the window's start: the same draw for the
                # same bar whatever window was asked for
                pos = np.rint((h[rows] - a0) / self._bar_h).astype(int) - 1
                z = np.divide(r[rows], sd, out=np.zeros_like(r[rows]), where=sd > 0)
                new = sd * (math.sqrt(s.rho) * f[np.clip(pos, 0, len(f) - 1)][:, None] + math.sqrt(1 - s.rho) * z)
            path = before[i0] + np.cumsum(new, axis=0)
            # rows between the anchor bar and the window (none on a gapless grid) keep their values
            logp[np.ix_(rows, cols)] = path
            after = h > a1
            if after.any():
                last = rows[-1]
                logp[np.ix_(after, cols)] += path[-1] - before[last]

    def _common_factor(self, k: int, s: CorrelationShock) -> np.ndarray:
        f = self._factor.get(k)
        if f is None:
            n = int(math.ceil(s.hours / self._bar_h)) + 1
            f = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, _FACTOR_STREAM, k])).standard_normal(n)
            self._factor[k] = f
        return f


_REGISTRY: Any = None


def _default_registry() -> Any:
    """The installed plugins' registry, built once per process (a sweep builds a source per task)."""
    global _REGISTRY
    if _REGISTRY is None:
        from bot.plugins import Registry, make_plugin_manager

        _REGISTRY = Registry(make_plugin_manager())
    return _REGISTRY


def build_scenario_source(cfg: ScenarioDataConfig, ctx: ComponentContext, registry: Any = None) -> ScenarioSource:
    """The base source built through the registry (by its registered name, as the config names it), wrapped."""
    reg = registry if registry is not None else ctx.extra.get("registry") or _default_registry()
    base = reg.get("data", cfg.base.plugin).build(cfg.base.options, ctx, where="data.options.base.options")
    if cfg.anchor is not None:
        anchor = datetime.fromisoformat(cfg.anchor).astimezone(UTC)
    else:
        now = ctx.clock.now().astimezone(UTC)
        anchor = now.replace(minute=0, second=0, microsecond=0)
    try:
        return ScenarioSource(base, cfg, anchor)
    except ConfigError:
        raise
    except DataError as exc:
        raise DataError(f"data scenario: {exc}") from exc


@hookimpl
def rwabot_register_data_sources(register) -> None:  # noqa: ANN001 - pluggy passes bot.components.Register
    def make(cfg: ScenarioDataConfig, ctx: ComponentContext) -> ScenarioSource:
        return build_scenario_source(cfg, ctx)

    register("scenario", make, ScenarioDataConfig)
