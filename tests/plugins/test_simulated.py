"""The simulated market: determinism, time alignment, stylised facts, errors and registration.

The statistical tests use thresholds several standard errors away from what a market *without* the
feature would give (checked by a control run where cheap), so they fail when a feature is missing.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.clock import SimulatedClock
from bot.components import ComponentContext, DataSource
from bot.domain import Bars
from bot.errors import ConfigError, DataError
from bot.plugins import Registry, make_plugin_manager
from plugins.data import simulated
from plugins.data.simulated import (
    DEFAULT_UNIVERSE,
    SimAsset,
    SimulatedMarket,
    SimulatedMarketConfig,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
YEAR = 8760
ALL = tuple(a.name for a in DEFAULT_UNIVERSE)
TRADITIONAL = ("SPY", "TLT", "GLD", "VNQ")
TOKENIZED = ("USTB", "REALT", "CREDIT", "PAXG")


def market(**options: object) -> SimulatedMarket:
    return SimulatedMarket(SimulatedMarketConfig.model_validate(options))


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def log_returns(close: np.ndarray) -> np.ndarray:
    return np.diff(np.log(close), axis=0)


def autocorr(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float(x[lag:] @ x[:-lag] / (x @ x))


def mean_offdiag_corr(r: np.ndarray) -> float:
    c = np.corrcoef(r.T)
    n = c.shape[0]
    return float((c.sum() - n) / (n * (n - 1)))


@pytest.fixture(scope="module")
def two_years() -> tuple[SimulatedMarket, object]:
    m = market()
    return m, m.bars(ALL, at(2 * YEAR), 2 * YEAR)


# -- determinism -------------------------------------------------------------------------------------


def test_same_seed_gives_identical_values() -> None:
    a, b = market(seed=11), market(seed=11)
    ba, bb = a.bars(ALL, at(3000), 3000), b.bars(ALL, at(3000), 3000)
    np.testing.assert_array_equal(ba.close, bb.close)
    np.testing.assert_array_equal(ba.volume, bb.volume)
    np.testing.assert_array_equal(a.regime(at(3000), 3000), b.regime(at(3000), 3000))
    np.testing.assert_array_equal(a.latest(ALL, at(77.6)).prices, b.latest(ALL, at(77.6)).prices)


def test_different_seed_gives_different_values() -> None:
    a, b = market(seed=1), market(seed=2)
    ca, cb = a.bars(ALL, at(200), 200).close, b.bars(ALL, at(200), 200).close
    assert not np.any(ca == cb)
    assert not np.array_equal(a.latest(ALL, at(10.5)).prices, b.latest(ALL, at(10.5)).prices)


def test_values_do_not_depend_on_query_order_or_subset() -> None:
    in_order, far_first = market(), market()
    early = in_order.bars(ALL, at(20), 10)
    late = in_order.bars(ALL, at(5000), 48)
    snap = in_order.latest(ALL, at(4321.75))
    late2 = far_first.bars(ALL, at(5000), 48)
    snap2 = far_first.latest(ALL, at(4321.75))
    early2 = far_first.bars(ALL, at(20), 10)
    np.testing.assert_array_equal(early.close, early2.close)
    np.testing.assert_array_equal(early.volume, early2.volume)
    np.testing.assert_array_equal(late.close, late2.close)
    np.testing.assert_array_equal(snap.prices, snap2.prices)
    # A subset and a reordering of assets read the same columns.
    sub = market().bars(["PAXG", "SPY"], at(5000), 48)
    np.testing.assert_array_equal(sub.close, late.close[:, [ALL.index("PAXG"), ALL.index("SPY")]])
    # Growing the cache one chunk at a time gives the same path as generating it at once.
    edge = simulated.CHUNK_HOURS
    stepwise = market()
    stepwise.bars(ALL, at(edge), 1)
    np.testing.assert_array_equal(
        stepwise.bars(ALL, at(edge + 5), 10).close, in_order.bars(ALL, at(edge + 5), 10).close
    )


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2 * YEAR), st.integers(1, 300)), min_size=1, max_size=5))
def test_random_query_sequences_match_one_reference(queries: list[tuple[int, int]]) -> None:
    ref = _reference()
    m = market()
    for end_hour, hours in queries:
        hours = min(hours, end_hour)
        got = m.bars(ALL, at(end_hour), hours)
        np.testing.assert_array_equal(got.close, ref.close[end_hour - hours : end_hour])
        np.testing.assert_array_equal(got.volume, ref.volume[end_hour - hours : end_hour])


@functools.cache
def _reference() -> Bars:
    return market().bars(ALL, at(2 * YEAR), 2 * YEAR)


# -- shapes and time alignment -----------------------------------------------------------------------


def test_bars_close_on_the_hour_and_not_after_end() -> None:
    m = market()
    end = at(100) + timedelta(minutes=37, seconds=12)
    b = m.bars(("SPY", "USTB"), end, 24)
    assert b.close.shape == b.volume.shape == (24, 2)
    assert b.times[-1] == at(100) and b.times[-1] <= end
    assert b.times[0] == at(77)
    for t0, t1 in itertools.pairwise(b.times):
        assert t1 - t0 == timedelta(hours=1)
    for t in b.times:
        assert t.tzinfo is not None and t.utcoffset() == timedelta(0)
        assert (t.minute, t.second, t.microsecond) == (0, 0, 0)


def test_end_in_another_time_zone_means_the_same_instant() -> None:
    m = market()
    cet = timezone(timedelta(hours=2))
    a = m.bars(ALL, at(50).astimezone(cet), 5)
    b = m.bars(ALL, at(50), 5)
    np.testing.assert_array_equal(a.close, b.close)
    assert a.times == b.times


def test_first_bar_closes_one_hour_after_start() -> None:
    m = market()
    b = m.bars(ALL, at(1), 1)
    assert b.times == (at(1),)
    snap = m.latest(ALL, START)
    np.testing.assert_allclose(snap.prices, [a.price for a in DEFAULT_UNIVERSE], rtol=1e-12)


def test_latest_on_the_hour_equals_the_bar_close_and_moves_inside_the_hour() -> None:
    m = market()
    bars = m.bars(ALL, at(200), 3)
    on_hour = m.latest(ALL, at(199))
    np.testing.assert_array_equal(on_hour.prices, bars.close[1])
    assert on_hour.times == tuple(at(199) for _ in ALL)
    # Floors to 5 minutes: 199h 59m 59s is the 55-minute point of the bar closing at 200h.
    late = m.latest(ALL, at(199) + timedelta(minutes=59, seconds=59))
    assert late.times[0] == at(199) + timedelta(minutes=55)
    path = np.array([m.latest(ALL, at(199) + timedelta(minutes=5 * j)).prices for j in range(13)])
    np.testing.assert_array_equal(path[0], bars.close[1])
    np.testing.assert_array_equal(path[-1], bars.close[2])
    np.testing.assert_array_equal(path[-2], late.prices)
    # Interior points are new prices, not copies of a close, yet stay near the hour's range.
    assert np.all(path[1:-1] != bars.close[1]) and np.all(path[1:-1] != bars.close[2])
    steps = np.abs(np.diff(np.log(path), axis=0))
    assert np.all(steps < 0.02)


def test_intra_hour_bridge_has_the_hourly_variance_and_no_seam() -> None:
    m = market()
    hours = 300
    cols = [ALL.index(a) for a in ("SPY", "GLD", "PAXG")]
    path = np.log([m.latest(ALL, at(0) + timedelta(minutes=5 * j)).prices for j in range(12 * hours + 1)])
    path = path[:, cols]
    five = np.diff(path, axis=0).reshape(hours, 12, len(cols))
    hourly = path[12::12] - path[:-1:12]
    # Realised variance from 5-minute steps matches the hourly one (a bridge, not extra noise) ...
    ratio = (five**2).sum(axis=(0, 1)) / (hourly**2).sum(axis=0)
    assert np.all((ratio > 0.75) & (ratio < 1.35)), ratio
    # ... and the step into the close is no larger than any other (no jump where the bridge ends).
    last = (five[:, -1] ** 2).mean(axis=0) / (five[:, :-1] ** 2).mean(axis=(0, 1))
    assert np.all((last > 0.6) & (last < 1.6)), last


def test_prices_positive_and_everything_finite(two_years) -> None:
    m, b = two_years
    assert np.all(np.isfinite(b.close)) and np.all(b.close > 0)
    assert np.all(np.isfinite(b.volume)) and np.all(b.volume > 0)
    snaps = np.array([m.latest(ALL, at(h / 7.0)).prices for h in range(0, 2000, 37)])
    assert np.all(np.isfinite(snaps)) and np.all(snaps > 0)


def test_is_a_data_source() -> None:
    m = market()
    assert isinstance(m, DataSource)
    assert m.assets() == ALL
    assert m.asset_kind("SPY") == "traditional"
    assert m.asset_kind("USTB") == "tokenized"


# -- stylised facts ----------------------------------------------------------------------------------


def squared_return_acf(m: SimulatedMarket) -> float:
    """Mean autocorrelation of squared SPY returns at lags 1-5 over a year.

    Returns are winsorised at the 99.5th percentile of |r| first: a single 2 % jump is ~100 hourly
    variances and would otherwise own both the numerator and the denominator of the estimate.
    """
    r = log_returns(m.bars(["SPY"], at(YEAR + 1), YEAR + 1).close)[:, 0]
    cap = np.quantile(np.abs(r), 0.995)
    r2 = np.clip(r, -cap, cap) ** 2
    return float(np.mean([autocorr(r2, lag) for lag in range(1, 6)]))


@pytest.mark.parametrize("seed", [7, 1, 8])
def test_spy_volatility_clusters(seed: int) -> None:
    # Under i.i.d. returns the lag-k autocorrelation has std ~ 1/sqrt(8760) ≈ 0.011.
    assert squared_return_acf(market(seed=seed)) > 0.05
    # GARCH alone (no regimes, no jumps) clusters; the same market with alpha = 0 does not, so the
    # measurement can tell the two apart.
    spy_only = [{**DEFAULT_UNIVERSE[0].model_dump(), "jump_rate_per_year": 0.0}]
    assert squared_return_acf(market(seed=seed, stress_episodes_per_year=0.0, assets=spy_only)) > 0.05
    control = market(seed=seed, garch_alpha=0.0, stress_episodes_per_year=0.0, assets=spy_only)
    assert abs(squared_return_acf(control)) < 0.03


def test_stress_raises_correlation_and_volatility() -> None:
    m = market(seed=5, stress_episodes_per_year=10.0)
    hours = 2 * YEAR
    b = m.bars(ALL, at(hours + 1), hours + 1)
    r = log_returns(b.close)
    reg = m.regime(at(hours + 1), hours + 1)[1:]
    assert 200 < reg.sum() < hours / 2
    cols = [ALL.index(a) for a in TRADITIONAL]
    calm, stress = r[reg == 0][:, cols], r[reg == 1][:, cols]
    assert mean_offdiag_corr(calm) < 0.25
    assert mean_offdiag_corr(stress) > 0.55
    assert mean_offdiag_corr(stress) - mean_offdiag_corr(calm) > 0.35
    ratio = stress.std(axis=0) / calm.std(axis=0)
    assert np.all(ratio > 1.8), dict(zip(TRADITIONAL, ratio, strict=True))
    # Volume rises in stress too.
    v = b.volume[1:]
    assert np.all(v[reg == 1].mean(axis=0) > 1.3 * v[reg == 0].mean(axis=0))


def test_default_regime_has_a_few_episodes_a_year_lasting_days(two_years) -> None:
    m, _ = two_years
    reg = m.regime(at(10 * YEAR), 10 * YEAR)
    starts = np.flatnonzero(np.diff(reg.astype(int)) == 1)
    per_year = len(starts) / 10
    assert 1.5 <= per_year <= 8
    mean_length = reg.sum() / max(len(starts), 1)
    assert 24 <= mean_length <= 240


def test_volume_is_higher_on_large_moves(two_years) -> None:
    _, b = two_years
    i = ALL.index("SPY")
    move = np.abs(log_returns(b.close[:, i]))
    vol = b.volume[1:, i]
    big = move > np.quantile(move, 0.9)
    small = move < np.quantile(move, 0.5)
    assert vol[big].mean() > 1.3 * vol[small].mean()


def test_tokenized_assets_trade_far_less_value(two_years) -> None:
    _, b = two_years
    value = b.traded_value.mean(axis=0)
    tok = max(value[ALL.index(a)] for a in TOKENIZED)
    trad = min(value[ALL.index(a)] for a in TRADITIONAL)
    assert tok < trad / 5
    spy, ustb = value[ALL.index("SPY")], value[ALL.index("USTB")]
    assert ustb < spy / 50


def test_ustb_accretes_with_tiny_volatility(two_years) -> None:
    _, b = two_years
    i = ALL.index("USTB")
    r = log_returns(b.close[:, i])
    assert r.std() * math.sqrt(YEAR) < 0.015
    drift = math.log(b.close[-1, i] / b.close[0, i]) / 2
    assert 0.035 < drift < 0.065
    spy = log_returns(b.close[:, ALL.index("SPY")])
    assert r.std() < spy.std() / 10


def test_paxg_tracks_gold_and_annual_vols_match_the_config(two_years) -> None:
    _, b = two_years
    r = log_returns(b.close)
    c = np.corrcoef(r.T)
    assert c[ALL.index("PAXG"), ALL.index("GLD")] > 0.8
    vol = r.std(axis=0) * math.sqrt(YEAR)
    for a in ("SPY", "TLT", "GLD", "VNQ"):
        target = next(x.annual_vol for x in DEFAULT_UNIVERSE if x.name == a)
        assert 0.75 * target < vol[ALL.index(a)] < 1.35 * target, (a, vol[ALL.index(a)])


def test_nav_like_jumps_pass_through_the_smoothing() -> None:
    # A smoothed NAV still shows a default as one step, not spread over the smoothing window.
    asset = SimAsset(
        name="LOAN", kind="tokenized", price=1.0, annual_vol=0.02, annual_drift=0.08,
        mean_hourly_volume=1e4, jump_rate_per_year=40.0, jump_mean=-0.1, jump_vol=0.0,
        smoothing_hours=72.0, noise_bps=2.0, noise_half_life_hours=6.0,
    )  # fmt: skip
    m = market(assets=(asset,), stress_episodes_per_year=0.0)
    r = log_returns(m.bars(["LOAN"], at(YEAR + 1), YEAR + 1).close)[:, 0]
    drops = int((r < -0.09).sum())
    assert 25 <= drops <= 60
    # Away from jumps the smoothed path is very quiet.
    assert np.median(np.abs(r)) < 1e-4


def test_one_year_generates_fast() -> None:
    m = market(seed=99)
    t0 = time.perf_counter()
    m.bars(ALL, at(YEAR), YEAR)
    assert time.perf_counter() - t0 < 1.0


# -- errors ----------------------------------------------------------------------------------------------


def test_bars_before_the_origin_are_refused() -> None:
    m = market()
    with pytest.raises(DataError, match="2026-01-01T00:00:00"):
        m.bars(ALL, at(5), 10)
    with pytest.raises(DataError, match="before"):
        m.bars(ALL, START - timedelta(days=3), 1)
    with pytest.raises(DataError, match="before"):
        m.bars(ALL, at(0.5), 1)
    with pytest.raises(DataError, match="before the data origin"):
        m.latest(ALL, START - timedelta(minutes=1))
    with pytest.raises(DataError, match="before"):
        m.regime(at(3), 4)


@pytest.mark.parametrize("hours", [0, -3, 2.0, True])
def test_bad_hours_are_refused(hours: object) -> None:
    with pytest.raises(DataError, match="hours"):
        market().bars(ALL, at(100), hours)  # type: ignore[arg-type]


def test_unknown_asset_is_named() -> None:
    m = market()
    with pytest.raises(DataError, match="BTC"):
        m.bars(["SPY", "BTC"], at(10), 2)
    with pytest.raises(DataError, match="DOGE"):
        m.latest(["DOGE"], at(10))
    with pytest.raises(DataError, match="NOPE"):
        m.asset_kind("NOPE")
    with pytest.raises(DataError, match="string"):
        m.bars("SPY", at(10), 2)


def test_naive_datetimes_are_refused() -> None:
    m = market()
    naive = datetime(2026, 2, 1, 12)
    with pytest.raises(DataError, match="naive"):
        m.bars(ALL, naive, 5)
    with pytest.raises(DataError, match="2026-02-01T12:00:00"):
        m.latest(ALL, naive)


def test_far_future_is_refused() -> None:
    with pytest.raises(DataError, match="50 years"):
        market().bars(ALL, datetime(2100, 1, 1, tzinfo=UTC), 1)


# -- configuration and registration ----------------------------------------------------------------------


def _ctx(tmp_path: Path) -> ComponentContext:
    return ComponentContext(clock=SimulatedClock(START), state_dir=tmp_path, assets=(), emit=lambda e: None)


def test_registered_through_the_hook(tmp_path: Path) -> None:
    pm = make_plugin_manager(entry_points=False, plugins=[simulated])
    reg = Registry(pm).get("data", "simulated")
    source = reg.build({"seed": 3}, _ctx(tmp_path), where="data.options")
    assert isinstance(source, SimulatedMarket) and isinstance(source, DataSource)
    assert source.cfg.seed == 3
    np.testing.assert_array_equal(
        source.bars(ALL, at(30), 5).close, market(seed=3).bars(ALL, at(30), 5).close
    )
    with pytest.raises(ConfigError, match="data.options.sede"):
        reg.build({"sede": 3}, _ctx(tmp_path), where="data.options")


def test_config_accepts_toml_shaped_assets(tmp_path: Path) -> None:
    pm = make_plugin_manager(entry_points=False, plugins=[simulated])
    reg = Registry(pm).get("data", "simulated")
    assets = [
        {"name": "A", "kind": "traditional", "price": 100, "annual_vol": 0.2, "annual_drift": 0.05,
         "mean_hourly_volume": 1000, "factor_loading": 0.5, "stress_loading": 0.9},
        {"name": "B", "kind": "tokenized", "price": 1.0, "annual_vol": 0.01, "annual_drift": 0.04,
         "mean_hourly_volume": 10.0, "tracks": "A", "tracking_corr": 0.9},
    ]  # fmt: skip
    source = reg.build({"assets": assets, "start": "2026-03-01T00:00:00+00:00"}, _ctx(tmp_path), where="d")
    assert source.assets() == ("A", "B")
    b = source.bars(["A", "B"], datetime(2026, 3, 2, tzinfo=UTC), 24)
    assert b.times[0] == datetime(2026, 3, 1, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="price"):
        reg.build({"assets": [{**assets[0], "price": -1.0}]}, _ctx(tmp_path), where="d")
    with pytest.raises(ConfigError, match="tracks unknown asset"):
        reg.build({"assets": [assets[1]]}, _ctx(tmp_path), where="d")
    with pytest.raises(ConfigError, match="duplicate"):
        reg.build({"assets": [assets[0], assets[0]]}, _ctx(tmp_path), where="d")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"garch_alpha": 0.2, "garch_beta": 0.85}, "must be < 1"),
        ({"start": "2026-01-01T00:30:00Z"}, "not on the hour"),
        ({"start": "2026-01-01T00:00:00"}, "no time zone"),
        ({"start": "yesterday"}, "ISO-8601"),
        ({"seed": "7"}, "seed"),
        ({"stress_vol_multiplier": 0.5}, "stress_vol_multiplier"),
    ],
)
def test_invalid_options_are_rejected(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatedMarketConfig.model_validate(options)


def test_tracker_with_own_loadings_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be 0 when tracks"):
        SimAsset(
            name="X", kind="tokenized", price=1.0, annual_vol=0.1, annual_drift=0.0,
            mean_hourly_volume=1.0, tracks="GLD", factor_loading=0.3,
        )  # fmt: skip
