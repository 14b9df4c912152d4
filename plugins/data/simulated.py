"""A seeded, multi-asset hourly market: the data source rwabot runs on when nothing real is wired.

It exists so the whole pipeline (forecast, optimize, rebalance, execute) can be exercised against
data that has the features that make risk parity hard with real-world assets, without a network:

* volatility clustering (GARCH(1,1) per asset), so EWMA/GARCH forecasters have something to find;
* a calm/stressed Markov regime in which volatilities jump and correlations go to ~0.7-0.8, so the
  "diversification disappears when you need it" failure shows up in backtests;
* tokenized assets whose price is a *smoothed* NAV plus a small premium/discount, so hourly returns
  understate their true risk (appraisal smoothing) and rare jumps (defaults, re-appraisals) appear;
* thin, regime- and move-dependent volumes, so liquidity caps and slippage models bite.

Determinism is the contract: for a seed, the value of every hour is fixed no matter how, in what
order or over which window the market is queried. The path is generated lazily, chunk by chunk
from the origin, each chunk with its own RNG stream (``SeedSequence([seed, chunk])``) and the state
(GARCH variance, regime, NAV smoothing, premium) carried across chunks; intra-hour points use a
per-hour stream. Queries only ever read the cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from bot.components import ComponentConfig, ComponentContext
from bot.domain import HOURS_PER_YEAR, Bars, Snapshot
from bot.errors import DataError
from bot.hookspecs import hookimpl

HOUR = timedelta(hours=1)
STEP = timedelta(minutes=5)
STEPS_PER_HOUR = 12
CHUNK_HOURS = 1024
"""Part of the seed contract: changing it changes every path, so it is a constant, not an option."""
MAX_HOURS = 50 * HOURS_PER_YEAR
"""A query 50 years past the origin is a bug (a wrong clock), not a backtest; refuse to allocate it."""
_BRIDGE_STREAM = 0xB81D6E
_MAX_VARIANCE_RATIO = 400.0


class SimAsset(ComponentConfig):
    """One asset of the simulated universe.

    ``annual_vol`` and ``annual_drift`` describe the *latent* value (the diffusion, jumps excluded):
    a tokenized asset's observed hourly price is smoothed and therefore looks less volatile than
    ``annual_vol`` over short horizons, exactly as appraisal-based NAVs do. ``annual_vol`` is the
    long-run level averaged over both regimes, so stress episodes do not inflate it.
    """

    name: str = Field(min_length=1, max_length=32)
    kind: Literal["traditional", "tokenized"]
    price: float = Field(gt=0, description="initial price in the quote currency, at the origin")
    annual_vol: float = Field(ge=0, le=5, description="long-run annual volatility of log returns")
    annual_drift: float = Field(ge=-1, le=1, description="expected annual log return")
    mean_hourly_volume: float = Field(gt=0, description="mean units traded per calm hour")
    jump_rate_per_year: float = Field(default=0.0, ge=0, le=1000, description="Poisson jump intensity")
    jump_mean: float = Field(default=0.0, ge=-1, le=1, description="mean log jump size")
    jump_vol: float = Field(default=0.0, ge=0, le=1, description="std of the log jump size")
    factor_loading: float = Field(
        default=0.0, ge=-0.99, le=0.99, description="loading on the common factor in the calm regime"
    )
    stress_loading: float = Field(
        default=0.0, ge=-0.99, le=0.99, description="loading on the common factor in the stressed regime"
    )
    tracks: str | None = Field(
        default=None, description="name of an asset whose shocks this one copies (a wrapper, e.g. PAXG->GLD)"
    )
    tracking_corr: float = Field(default=0.95, gt=0, le=0.999, description="shock correlation with `tracks`")
    smoothing_hours: float = Field(
        default=0.0, ge=0, le=HOURS_PER_YEAR, description="mean lag of the published NAV (0: no smoothing)"
    )
    noise_bps: float = Field(default=0.0, ge=0, le=1000, description="std of the premium/discount, bps")
    noise_half_life_hours: float = Field(default=1.0, gt=0, le=HOURS_PER_YEAR)

    @model_validator(mode="after")
    def _tracker_has_no_loadings(self) -> SimAsset:
        # A tracker inherits its target's factor exposure; separate loadings would silently be ignored.
        if self.tracks is not None and (self.factor_loading != 0.0 or self.stress_loading != 0.0):
            raise ValueError(
                f"asset {self.name}: factor_loading/stress_loading must be 0 when tracks={self.tracks!r} "
                "(the exposure comes from the tracked asset)"
            )
        if self.tracks == self.name:
            raise ValueError(f"asset {self.name}: cannot track itself")
        return self


DEFAULT_UNIVERSE: tuple[SimAsset, ...] = (
    SimAsset(
        name="SPY", kind="traditional", price=590.0, annual_vol=0.16, annual_drift=0.07,
        mean_hourly_volume=2.5e6, jump_rate_per_year=2.0, jump_mean=-0.015, jump_vol=0.02,
        factor_loading=0.6, stress_loading=0.9,
    ),
    SimAsset(
        name="TLT", kind="traditional", price=88.0, annual_vol=0.14, annual_drift=0.03,
        mean_hourly_volume=1.5e6, jump_rate_per_year=1.0, jump_mean=0.0, jump_vol=0.015,
        factor_loading=-0.2, stress_loading=0.8,
    ),
    SimAsset(
        name="GLD", kind="traditional", price=245.0, annual_vol=0.15, annual_drift=0.05,
        mean_hourly_volume=3.3e5, jump_rate_per_year=1.0, jump_mean=0.0, jump_vol=0.02,
        factor_loading=0.15, stress_loading=0.8,
    ),
    SimAsset(
        name="VNQ", kind="traditional", price=90.0, annual_vol=0.20, annual_drift=0.06,
        mean_hourly_volume=1.7e5, jump_rate_per_year=2.0, jump_mean=-0.015, jump_vol=0.025,
        factor_loading=0.55, stress_loading=0.9,
    ),
    SimAsset(
        name="USTB", kind="tokenized", price=10.6, annual_vol=0.005, annual_drift=0.049,
        mean_hourly_volume=2.0e4, factor_loading=0.0, stress_loading=0.2,
        smoothing_hours=24.0, noise_bps=1.0, noise_half_life_hours=3.0,
    ),
    SimAsset(
        name="REALT", kind="tokenized", price=52.0, annual_vol=0.06, annual_drift=0.07,
        mean_hourly_volume=400.0, jump_rate_per_year=0.5, jump_mean=-0.10, jump_vol=0.05,
        factor_loading=0.2, stress_loading=0.7, smoothing_hours=168.0, noise_bps=10.0,
        noise_half_life_hours=24.0,
    ),
    SimAsset(
        name="CREDIT", kind="tokenized", price=1.0, annual_vol=0.02, annual_drift=0.09,
        mean_hourly_volume=1.0e5, jump_rate_per_year=0.3, jump_mean=-0.05, jump_vol=0.03,
        factor_loading=0.25, stress_loading=0.8, smoothing_hours=72.0, noise_bps=5.0,
        noise_half_life_hours=6.0,
    ),
    SimAsset(
        name="PAXG", kind="tokenized", price=2650.0, annual_vol=0.15, annual_drift=0.05,
        mean_hourly_volume=450.0, jump_rate_per_year=0.2, jump_mean=0.0, jump_vol=0.01,
        tracks="GLD", tracking_corr=0.97, noise_bps=10.0, noise_half_life_hours=4.0,
    ),
)  # fmt: skip


def _parse_start(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"start {value!r} is not an ISO-8601 time") from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"start {value!r} has no time zone (write e.g. 2026-01-01T00:00:00Z)")
    dt = dt.astimezone(UTC)
    if (dt.minute, dt.second, dt.microsecond) != (0, 0, 0):
        raise ValueError(f"start {value!r} is not on the hour; bars close on whole hours after it")
    return dt


class SimulatedMarketConfig(ComponentConfig):
    """Options of the ``simulated`` data source.

    The regime is a 2-state Markov chain on hours: a calm hour turns stressed with probability
    ``stress_episodes_per_year / 8760`` and a stressed hour turns calm with ``1 / stress_mean_hours``.
    """

    seed: int = Field(default=7, ge=0)
    start: str = "2026-01-01T00:00:00Z"
    assets: tuple[SimAsset, ...] = Field(default=DEFAULT_UNIVERSE, min_length=1, strict=False)
    stress_episodes_per_year: float = Field(default=4.0, ge=0, le=1000)
    stress_mean_hours: float = Field(default=72.0, ge=1, le=HOURS_PER_YEAR)
    stress_vol_multiplier: float = Field(default=2.5, ge=1, le=10)
    stress_volume_multiplier: float = Field(default=1.8, ge=1, le=20)
    stress_jump_multiplier: float = Field(default=3.0, ge=1, le=100)
    garch_alpha: float = Field(default=0.05, ge=0, lt=1)
    garch_beta: float = Field(default=0.93, ge=0, lt=1)
    volume_dispersion: float = Field(default=0.45, ge=0, le=3, description="std of log volume noise")
    volume_return_sensitivity: float = Field(
        default=0.4, ge=0, le=3, description="d log volume / d |standardised return|"
    )

    @field_validator("start")
    @classmethod
    def _check_start(cls, value: str) -> str:
        _parse_start(value)
        return value

    @model_validator(mode="after")
    def _check_universe(self) -> SimulatedMarketConfig:
        if self.garch_alpha + self.garch_beta >= 1.0:
            raise ValueError(
                f"garch_alpha + garch_beta = {self.garch_alpha + self.garch_beta:g} must be < 1 "
                "(otherwise the variance has no long-run level to target)"
            )
        names = [a.name for a in self.assets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate asset names {dupes}")
        by_name = {a.name: a for a in self.assets}
        for a in self.assets:
            if a.tracks is None:
                continue
            target = by_name.get(a.tracks)
            if target is None:
                raise ValueError(f"asset {a.name}: tracks unknown asset {a.tracks!r} (known: {names})")
            if target.tracks is not None:
                raise ValueError(f"asset {a.name}: tracks {a.tracks}, which itself tracks {target.tracks}")
        return self


def _check_time(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise DataError(f"simulated: {what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise DataError(f"simulated: {what} {value.isoformat()} is naive; pass a timezone-aware UTC time")
    return value.astimezone(UTC)


class SimulatedMarket:
    """The seeded market; implements ``bot.components.DataSource``.

    Hour index ``k`` is the bar closing at ``start + k h``; index 0 is the origin (initial prices,
    no bar). Thread-unsafe by design: one daemon owns one data source.
    """

    def __init__(self, cfg: SimulatedMarketConfig) -> None:
        self.cfg = cfg
        self.start = _parse_start(cfg.start)
        self._names = tuple(a.name for a in cfg.assets)
        self._index = {n: i for i, n in enumerate(self._names)}
        self._kinds = {a.name: a.kind for a in cfg.assets}
        self._setup_parameters()
        n = len(self._names)
        # Row 0 is the origin; the cache only ever grows by whole chunks.
        self._logp = np.log(np.array([[a.price for a in cfg.assets]], dtype=float))
        self._volume = np.zeros((1, n))
        self._regime = np.zeros(1, dtype=np.int8)
        self._bridge_sd = np.zeros((1, n))
        self._state = {
            "h": self._v_calm.copy(),
            "n": self._logp[0].copy(),
            "s": self._logp[0].copy(),
            "u": np.zeros(n),
            "regime": 0,
        }
        self._chunks = 0

    # -- DataSource ------------------------------------------------------------------------------

    def assets(self) -> tuple[str, ...]:
        return self._names

    def asset_kind(self, asset: str) -> str:
        self._columns([asset], "asset_kind")
        return self._kinds[asset]

    def bars(self, assets: Sequence[str], end: datetime, hours: int) -> Bars:
        """Bars closing in ``(end - hours h, end]``; refuses a window that reaches before the origin."""
        cols = self._columns(assets, "bars")
        lo, hi = self._window(end, hours, "bars")
        times = tuple(self.start + k * HOUR for k in range(lo, hi + 1))
        close = np.exp(self._logp[lo : hi + 1][:, cols])
        volume = self._volume[lo : hi + 1][:, cols].copy()
        return Bars(tuple(assets), times, close, volume)

    def latest(self, assets: Sequence[str], now: datetime) -> Snapshot:
        """The price at ``now`` floored to 5 minutes, on a Brownian bridge between hourly closes."""
        cols = self._columns(assets, "latest")
        now = _check_time(now, "latest: now")
        if now < self.start:
            raise DataError(
                f"simulated: latest: now {now.isoformat()} is before the data origin {self.start.isoformat()}"
            )
        steps = (now - self.start) // STEP
        hour, j = divmod(steps, STEPS_PER_HOUR)
        when = self.start + steps * STEP
        if j == 0:
            self._ensure(hour)
            logp = self._logp[hour]
        else:
            logp = self._bridge(hour + 1)[j - 1]
        return Snapshot(tuple(assets), np.exp(logp[cols]), tuple(when for _ in cols))

    # -- extras for tests and stress reports --------------------------------------------------------

    def regime(self, end: datetime, hours: int) -> np.ndarray:
        """0 (calm) / 1 (stressed) for each bar of the same window ``bars(…, end, hours)`` returns."""
        lo, hi = self._window(end, hours, "regime")
        return self._regime[lo : hi + 1].copy()

    # -- internals -------------------------------------------------------------------------------

    def _columns(self, assets: Sequence[str], what: str) -> list[int]:
        if isinstance(assets, str):
            raise DataError(
                f"simulated: {what}: assets must be a sequence of names, not the string {assets!r}"
            )
        unknown = [a for a in assets if a not in self._index]
        if unknown:
            raise DataError(f"simulated: {what}: unknown asset(s) {unknown} (known: {list(self._names)})")
        return [self._index[a] for a in assets]

    def _window(self, end: datetime, hours: int, what: str) -> tuple[int, int]:
        end = _check_time(end, f"{what}: end")
        if isinstance(hours, bool) or not isinstance(hours, int | np.integer) or hours < 1:
            raise DataError(f"simulated: {what}: hours must be an integer >= 1, got {hours!r}")
        hi = (end - self.start) // HOUR
        lo = hi - int(hours) + 1
        if lo < 1:
            first = self.start + lo * HOUR
            raise DataError(
                f"simulated: {what}: {hours} bars ending {end.isoformat()} would start at "
                f"{first.isoformat()}, "
                f"before the first bar ({(self.start + HOUR).isoformat()}); no data exists before "
                f"{self.start.isoformat()}"
            )
        self._ensure(hi)
        return lo, hi

    def _ensure(self, hour: int) -> None:
        if hour > MAX_HOURS:
            raise DataError(
                f"simulated: {(self.start + hour * HOUR).isoformat()} is more than 50 years after the "
                f"origin {self.start.isoformat()}; check the clock"
            )
        if hour < self._logp.shape[0]:
            return
        parts: list[tuple[np.ndarray, ...]] = []
        while (self._chunks + len(parts)) * CHUNK_HOURS < hour:
            parts.append(self._generate_chunk(self._chunks + len(parts)))
        self._chunks += len(parts)
        self._logp = np.concatenate([self._logp, *(p[0] for p in parts)])
        self._volume = np.concatenate([self._volume, *(p[1] for p in parts)])
        self._regime = np.concatenate([self._regime, *(p[2] for p in parts)])
        self._bridge_sd = np.concatenate([self._bridge_sd, *(p[3] for p in parts)])

    def _setup_parameters(self) -> None:
        cfg = self.cfg
        assets = cfg.assets
        arr = lambda f: np.array([f(a) for a in assets], dtype=float)  # noqa: E731
        m = cfg.stress_vol_multiplier
        self._p_enter = cfg.stress_episodes_per_year / HOURS_PER_YEAR
        self._p_exit = 1.0 / cfg.stress_mean_hours
        stress_share = self._p_enter / (self._p_enter + self._p_exit) if self._p_enter > 0 else 0.0
        # Calm variance is set so the regime mixture averages to annual_vol²: the option stays the
        # asset's long-run vol whatever the regime parameters are.
        self._v_calm = arr(lambda a: a.annual_vol**2) / HOURS_PER_YEAR / (1.0 + stress_share * (m * m - 1.0))
        self._omega = self._v_calm * (1.0 - cfg.garch_alpha - cfg.garch_beta)
        self._mu = arr(lambda a: a.annual_drift) / HOURS_PER_YEAR
        self._calm_load = arr(lambda a: a.factor_loading)
        self._stress_load = arr(lambda a: a.stress_loading)
        self._trackers = [
            (i, self._index[a.tracks], a.tracking_corr) for i, a in enumerate(assets) if a.tracks is not None
        ]
        self._jump_rate = arr(lambda a: a.jump_rate_per_year) / HOURS_PER_YEAR
        self._jump_mean = arr(lambda a: a.jump_mean)
        self._jump_vol = arr(lambda a: a.jump_vol)
        # EWMA smoothing with mean lag L hours: kappa = 1 / (1 + L); L = 0 is no smoothing.
        self._kappa = 1.0 / (1.0 + arr(lambda a: a.smoothing_hours))
        self._phi = 0.5 ** (1.0 / arr(lambda a: a.noise_half_life_hours))
        self._noise_sd = arr(lambda a: a.noise_bps) * 1e-4
        self._log_mean_volume = np.log(arr(lambda a: a.mean_hourly_volume))
        k = cfg.volume_return_sensitivity
        # log E[exp(k|z|)] for z ~ N(0,1): removes the move term's bias so calm volume averages to the mean.
        self._volume_bias = 0.5 * k * k + math.log(2.0 * 0.5 * (1.0 + math.erf(k / math.sqrt(2.0))))

    def _generate_chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.cfg
        st = self._state
        c, n = CHUNK_HOURS, len(self._names)
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, chunk]))
        # Draw order is part of the seed contract.
        u_regime = rng.random(c)
        f = rng.standard_normal(c)
        e = rng.standard_normal((c, n))
        u_jump = rng.random((c, n))
        z_jump = rng.standard_normal((c, n))
        z_noise = rng.standard_normal((c, n))
        z_volume = rng.standard_normal((c, n))

        regime = np.empty(c, dtype=np.int8)
        s_reg = int(st["regime"])
        p_enter, p_exit = self._p_enter, self._p_exit
        for t in range(c):
            if s_reg:
                s_reg = 0 if u_regime[t] < p_exit else 1
            else:
                s_reg = 1 if u_regime[t] < p_enter else 0
            regime[t] = s_reg
        stressed = regime.astype(bool)[:, None]

        # One-factor shocks; a tracker copies its target's standardised shock plus its own noise.
        b = np.where(stressed, self._stress_load, self._calm_load)
        z = b * f[:, None] + np.sqrt(1.0 - b * b) * e
        for i, g, rho in self._trackers:
            z[:, i] = rho * z[:, g] + math.sqrt(1.0 - rho * rho) * e[:, i]

        # GARCH(1,1) on the regime-standardised return, so h tracks the calm level and stress acts
        # as a separate multiplier instead of feeding back into the long-run variance.
        alpha, beta, omega = cfg.garch_alpha, cfg.garch_beta, self._omega
        h_cap = self._v_calm * _MAX_VARIANCE_RATIO
        h = st["h"]
        sd = np.empty((c, n))
        for t in range(c):
            sd[t] = np.sqrt(h)
            h = np.minimum(omega + h * (alpha * z[t] * z[t] + beta), h_cap)
        mult = np.where(stressed, cfg.stress_vol_multiplier, 1.0)
        diffusive = mult * sd * z

        # Poisson jumps (at most one per asset-hour at these rates, via inverse CDF on one uniform).
        lam = self._jump_rate * np.where(stressed, cfg.stress_jump_multiplier, 1.0)
        jumped = u_jump < -np.expm1(-lam)
        jumps = np.where(jumped, self._jump_mean + self._jump_vol * z_jump, 0.0)

        latent = st["n"] + np.cumsum(self._mu + diffusive + jumps, axis=0)
        # Published NAV: EWMA of the latent value, but jumps pass through at once (a default or a
        # re-appraisal is a step, not a slow drift). Premium/discount: AR(1) around it.
        kappa, phi = self._kappa, self._phi
        x = kappa * latent + (1.0 - kappa) * jumps
        w = self._noise_sd * np.sqrt(1.0 - phi * phi) * z_noise
        smooth = np.empty((c, n))
        prem = np.empty((c, n))
        s, u = st["s"], st["u"]
        one_minus_kappa = 1.0 - kappa
        for t in range(c):
            s = one_minus_kappa * s + x[t]
            u = phi * u + w[t]
            smooth[t] = s
            prem[t] = u
        logp = smooth + prem

        hour_sd = mult * sd
        move = np.minimum(np.abs(diffusive + jumps) / hour_sd.clip(min=1e-300), 8.0)
        move = np.where(hour_sd > 0, move, np.abs(z))
        log_volume = (
            self._log_mean_volume
            - 0.5 * cfg.volume_dispersion**2
            + cfg.volume_return_sensitivity * move
            - self._volume_bias
            + math.log(cfg.stress_volume_multiplier) * stressed
            + cfg.volume_dispersion * z_volume
        )
        volume = np.exp(log_volume)

        # Scale of the intra-hour bridge: the std of the *observed* hourly return.
        g = kappa / (2.0 - kappa)
        bridge_sd = np.sqrt(g * hour_sd**2 + 2.0 * (1.0 - phi) * self._noise_sd**2)

        self._state = {"h": h, "n": latent[-1].copy(), "s": s.copy(), "u": u.copy(), "regime": s_reg}
        return logp, volume, regime, bridge_sd

    def _bridge(self, hour: int) -> np.ndarray:
        """Log prices at the 11 interior 5-minute points of the bar closing at ``hour``.

        Seeded per hour so a snapshot never depends on which other snapshots were taken.
        """
        self._ensure(hour)
        rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, _BRIDGE_STREAM, hour]))
        steps = rng.standard_normal((STEPS_PER_HOUR, len(self._names)))
        walk = np.cumsum(steps, axis=0) * (self._bridge_sd[hour] / math.sqrt(STEPS_PER_HOUR))
        frac = (np.arange(1, STEPS_PER_HOUR) / STEPS_PER_HOUR)[:, None]
        prev, close = self._logp[hour - 1], self._logp[hour]
        return prev + frac * (close - prev) + walk[:-1] - frac * walk[-1]


@hookimpl
def rwabot_register_data_sources(register) -> None:
    def make(cfg: SimulatedMarketConfig, ctx: ComponentContext) -> SimulatedMarket:
        return SimulatedMarket(cfg)

    register("simulated", make, SimulatedMarketConfig)

    def make_truth(cfg: SimulatedMarketConfig, ctx: ComponentContext) -> SimulatedMarket:
        from plugins.data.simulated_truth import TruthMarket  # it subclasses SimulatedMarket: imported late

        return TruthMarket(cfg)

    register("simulated_truth", make_truth, SimulatedMarketConfig)  # the same market, and its truth per hour
