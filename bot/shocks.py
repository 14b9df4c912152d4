"""Stress scenarios as data: named sets of shocks, read from a TOML scenario file (config/scenarios.toml).

Why a file of shocks and not a flag per scenario: a stress test is only worth believing when the reader can
see exactly what was done to the market, and change it. Each scenario is a list of shocks; each shock is
one small, composable change with a window in hours after the run's first cycle (the *anchor*):

* on the market, applied by the ``scenario`` data source (plugins/data/scenarios.py) on top of any other
  source (the simulated market, a user's CSV): ``drop`` (a repricing, in steps like NAV re-marks or
  smooth), ``swing`` (triangular ±moves), ``vol`` (returns ×k), ``correlation`` (every pair pulled to ρ
  by a common factor), ``volume`` (×factor), ``stale`` (a price that stops updating, then jumps to the
  true one), ``scale`` (prices ×factor while it lasts);
* on the venues, applied by the stress runner (bot/stress.py) between the fast backtest's cycles:
  ``outage`` (a venue errors: its assets are held, no transfer leaves or reaches it), ``spread`` (the
  venues' half-spreads ×factor), ``depeg`` (a venue's quote coin is worth ``price`` while it lasts).
  ``stale`` is both: the data source freezes the price and the runner holds the asset, as the daemon's
  price-age rule would.

Shocks apply in the order written, each to the path the previous ones left; every one is a function of
the path up to the bar it changes, so the shocked value of a bar does not depend on the window a caller
asks for (the same contract as the simulated market's seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from bot.components import ComponentConfig
from bot.config import read_toml
from bot.errors import ConfigError

HOUR = timedelta(hours=1)
MAX_HOURS = 24 * 365 * 5


class _Shock(ComponentConfig):
    """What every shock has: when it starts (hours after the anchor, the run's first cycle) and how long
    it lasts. ``align = "weekend"`` moves the start to the first Saturday 00:00 UTC at or after it
    (an issuer NAV that is not published over a weekend)."""

    start_hour: float = Field(ge=0, le=MAX_HOURS, description="hours after the anchor (the first cycle)")
    hours: float = Field(gt=0, le=MAX_HOURS, description="how long the shock lasts")
    align: Literal["none", "weekend"] = "none"

    def window(self, anchor: datetime) -> tuple[float, float]:
        """(start, end) in hours after ``anchor``."""
        start = self.start_hour
        if self.align == "weekend":
            t = anchor.astimezone(UTC) + timedelta(hours=start)
            midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
            days = (5 - midnight.weekday()) % 7  # Saturday is weekday 5
            sat = midnight + timedelta(days=days)
            if sat < t:
                sat += timedelta(days=7)
            start = (sat - anchor.astimezone(UTC)) / HOUR
        return float(start), float(start + self.hours)


class _Selected(_Shock):
    """A shock on some assets: ``assets`` by name, or ``kinds`` (traditional, tokenized), less ``exclude``;
    neither given: every asset. A name the market does not know is an error, never a no-op."""

    assets: tuple[str, ...] | None = Field(default=None, strict=False, min_length=1)
    kinds: tuple[str, ...] | None = Field(default=None, strict=False, min_length=1)
    exclude: tuple[str, ...] = Field(default=(), strict=False)

    @model_validator(mode="after")
    def _one_selector(self) -> _Selected:
        if self.assets is not None and self.kinds is not None:
            raise ValueError("give assets or kinds, not both")
        return self

    def select(self, names: Sequence[str], kind_of: Callable[[str], str], where: str) -> np.ndarray:
        """The mask of ``names`` this shock applies to; ``where`` prefixes each error."""
        unknown = [a for a in (*(self.assets or ()), *self.exclude) if a not in names]
        if unknown:
            raise ConfigError(f"{where}: unknown asset(s) {unknown} (the market has {list(names)})")
        if self.assets is not None:
            mask = np.array([a in self.assets for a in names], bool)
        elif self.kinds is not None:
            mask = np.array([kind_of(a) in self.kinds for a in names], bool)
        else:
            mask = np.ones(len(names), bool)
        mask &= np.array([a not in self.exclude for a in names], bool)
        if not mask.any():
            raise ConfigError(f"{where}: selects no asset of {list(names)}")
        return mask


class DropShock(_Selected):
    """The selected prices fall by ``depth`` over ``hours``: in ``steps`` equal jumps (a NAV re-marked
    ``steps`` times, the first at the start) or, with ``steps = 0``, smoothly; then they stay down, or
    climb back over ``recover_hours``."""

    kind: Literal["drop"]
    depth: float = Field(gt=0, lt=1)
    steps: int = Field(default=0, ge=0, le=10_000)
    recover_hours: float = Field(default=0.0, ge=0, le=MAX_HOURS)


class SwingShock(_Selected):
    """Triangular swings of ``amplitude`` (0.2: −20% and back, then +20% and back, …), one per
    ``period_hours``, for ``hours``."""

    kind: Literal["swing"]
    amplitude: float = Field(gt=0, lt=1)
    period_hours: float = Field(gt=0, le=MAX_HOURS)


class VolShock(_Selected):
    """Every return in the window ×``factor`` (volatility ×k); the level the window ends at is kept after it."""

    kind: Literal["vol"]
    factor: float = Field(gt=0, le=50)


class CorrelationShock(_Selected):
    """Returns in the window rebuilt as σ_i(√ρ·f + √(1−ρ)·r_i/σ_i) with a seeded common factor f: each
    asset keeps its volatility (σ_i measured over ``lookback_hours`` before the window, so the shock never
    looks ahead) and its own shocks (jumps, clustering), and a pair whose correlation was c becomes
    ρ + (1−ρ)·c: ρ for an uncorrelated pair, more for a positively correlated one."""

    kind: Literal["correlation"]
    rho: float = Field(ge=0, lt=1)
    lookback_hours: int = Field(default=168, ge=2, le=MAX_HOURS)


class VolumeShock(_Selected):
    """Traded volume ×``factor`` (0.05: pools and books thinning to 5%)."""

    kind: Literal["volume"]
    factor: float = Field(ge=0, le=1000)


class StaleShock(_Selected):
    """The price stops updating (the last one before the window is served) and jumps to the true one at
    the end; with ``hold`` the stress runner does not trade the asset meanwhile (the daemon's price-age
    rule)."""

    kind: Literal["stale"]
    hold: bool = True


class ScaleShock(_Selected):
    """Prices ×``factor`` while the shock lasts, back after it."""

    kind: Literal["scale"]
    factor: float = Field(gt=0, le=100)


class DepegShock(_Shock):
    """The quote coin held at ``venue`` is worth ``price`` while the shock lasts: its cash is marked at that
    price (what converting it would fetch) and back at par after. With ``assets_follow`` the venue's assets,
    quoted in that coin, fall with it (a ``scale`` shock on them)."""

    kind: Literal["depeg"]
    venue: str = Field(min_length=1)
    price: float = Field(gt=0, lt=2)
    assets_follow: bool = False


class SpreadShock(_Shock):
    """The half-spreads of ``venues`` (default every venue) ×``factor``."""

    kind: Literal["spread"]
    factor: float = Field(gt=0, le=1000)
    venues: tuple[str, ...] | None = Field(default=None, strict=False, min_length=1)


class OutageShock(_Shock):
    """``venue`` errors: its assets are held where they are and no transfer leaves or reaches it."""

    kind: Literal["outage"]
    venue: str = Field(min_length=1)


DataShock = Annotated[
    DropShock | SwingShock | VolShock | CorrelationShock | VolumeShock | StaleShock | ScaleShock,
    Field(discriminator="kind"),
]
"""The shocks a data source applies (the ``scenario`` source's ``shocks``)."""

AnyShock = Annotated[
    DropShock | SwingShock | VolShock | CorrelationShock | VolumeShock | StaleShock | ScaleShock | DepegShock
    | SpreadShock | OutageShock,
    Field(discriminator="kind"),
]
DATA_KINDS = frozenset({"drop", "swing", "vol", "correlation", "volume", "stale", "scale"})
RUN_KINDS = frozenset({"depeg", "spread", "outage"})


class Scenario(ComponentConfig):
    """A named stress: what it models (``description``) and its shocks, applied in order."""

    description: str = ""
    shocks: tuple[AnyShock, ...] = Field(default=(), strict=False)


class ScenarioFile(ComponentConfig):
    """The scenario file: ``[scenarios.<name>]`` tables, each a ``Scenario``."""

    scenarios: dict[str, Scenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _reserved(self) -> ScenarioFile:
        if CONTROL in self.scenarios:
            raise ValueError(f"scenarios.{CONTROL}: the name is reserved for the unshocked control run")
        return self


CONTROL = "none"
"""The unshocked run on the same paths, always available: the yardstick every scenario is read against."""


def parse_scenarios(data: dict, source: str) -> dict[str, Scenario]:
    """The scenarios of a parsed scenario file; every problem names ``source`` and the key."""
    try:
        return dict(ScenarioFile.model_validate(data).scenarios)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"{source}: {loc}: {err['msg']}")
        raise ConfigError("; ".join(lines)) from None


def load_scenarios(path: str | Path) -> dict[str, Scenario]:
    """Read and validate a scenario file (TOML)."""
    return parse_scenarios(read_toml(path, "scenario file"), str(Path(path)))


def pick(scenarios: dict[str, Scenario], spec: str, *, control: bool = True) -> list[tuple[str, Scenario]]:
    """``all`` (the control, then every scenario in file order) or a comma list of names; ``none`` is the
    control. An unknown name is refused with the known ones."""
    if spec.strip() == "all":
        names = list(scenarios)
        return ([(CONTROL, Scenario(description="no shock: the same paths as they are"))] if control else []) + [
            (n, scenarios[n]) for n in names
        ]
    out: list[tuple[str, Scenario]] = []
    for name in (s.strip() for s in spec.split(",")):
        if not name:
            continue
        if name == CONTROL:
            out.append((CONTROL, Scenario(description="no shock: the same paths as they are")))
        elif name in scenarios:
            out.append((name, scenarios[name]))
        else:
            raise ConfigError(f"--scenarios: unknown scenario {name!r} (known: {', '.join([CONTROL, *scenarios])})")
    if not out:
        raise ConfigError("--scenarios: no scenario named")
    return out


def drop_offset(s: DropShock, h: np.ndarray, a0: float, a1: float) -> np.ndarray:
    """The log-price offset of a drop at hours ``h`` after the anchor (0 before the window)."""
    if s.steps > 0:
        jumps = a0 + np.arange(s.steps) * (a1 - a0) / s.steps
        g = np.searchsorted(jumps, h, side="right") / s.steps
    else:
        g = np.clip((h - a0) / (a1 - a0), 0.0, 1.0)
    if s.recover_hours > 0:
        g = np.where(h > a1, 1.0 - np.clip((h - a1) / s.recover_hours, 0.0, 1.0), g)
    return math.log1p(-s.depth) * g


def swing_offset(s: SwingShock, h: np.ndarray, a0: float, a1: float) -> np.ndarray:
    """The log-price offset of triangular swings: down first, then up, alternating."""
    x = (h - a0) / s.period_hours
    inside = (h >= a0) & (h < a1)
    frac = np.mod(x, 1.0)
    tri = 1.0 - np.abs(2.0 * frac - 1.0)
    sign = np.where(np.mod(np.floor(x), 2) == 0, -1.0, 1.0)
    return np.where(inside, np.log1p(sign * s.amplitude * tri), 0.0)
