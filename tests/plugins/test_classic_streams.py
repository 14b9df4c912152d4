"""The ledoit_wolf and dcc streams (``Forecaster.stream``, used by the fast backtest) against their batch forecasts.

Ledoit-Wolf: an exact sliding-window update, so every streamed forecast must equal a refit on the same
window. DCC: the parameters are refitted on the batch's schedule; between refits the stream continues the
recursions, so it must equal the batch recursion with the parameters held fixed over the rows since the
refit's window began, and the batch rolling-window forecast to within the restart's weight (~max(b, β)^W).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from bot.config import parse_config
from bot.errors import ForecastError
from bot.fast import run_fast_backtest
from plugins.forecasters.classic import (
    DccConfig,
    DccForecaster,
    DccStream,
    LedoitWolfConfig,
    LedoitWolfForecaster,
    LedoitWolfStream,
    dcc_forecast_cov,
)
from plugins.forecasters.seasonal import hours_of_rows
from tests.conftest import paper_dict
from tests.plugins.test_forecasters_classic import ASSETS, simulate_dcc


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def correlated(t: int, n: int, seed: int, drift: float = 0.0) -> np.ndarray:
    """Heavy-tailed correlated returns with unequal volatilities (so the shrinkage is strictly inside (0, 1))."""
    rng = np.random.default_rng(seed)
    mix = np.eye(n) + 0.4 * rng.standard_normal((n, n))
    vol = np.geomspace(0.002, 0.02, n)
    return (rng.standard_t(4, size=(t, n)) @ mix.T) * vol + drift * vol


# -- Ledoit-Wolf ---------------------------------------------------------------------------------------------


def test_ledoit_wolf_stream_equals_refit_over_10k_updates() -> None:
    """Past ten re-anchorings, on heavy tails with a drift: the sums must not drift off the refit."""
    r = correlated(10_300, 6, seed=1, drift=0.3)
    r[4_000, 2] = 0.5  # a crash enters the window and leaves it again
    names = [f"a{i}" for i in range(6)]
    f = LedoitWolfForecaster(LedoitWolfConfig())
    w = 240
    s = f.stream(names, r[:w])
    assert isinstance(s, LedoitWolfStream)
    worst = rel(s.forecast().cov, f.forecast(names, r[:w]).cov)
    shrinks = []
    for k in range(w, len(r)):
        a, b = s.update(r[k]), f.forecast(names, r[k - w + 1 : k + 1])
        worst = max(worst, rel(a.cov, b.cov))
        assert a.diagnostics["shrinkage"] == pytest.approx(b.diagnostics["shrinkage"], rel=1e-9, abs=1e-12)
        assert a.mu == pytest.approx(b.mu, rel=1e-9, abs=1e-15)
        shrinks.append(b.diagnostics["shrinkage"])
    assert worst < 1e-9, worst
    assert len(r) - w > 10 * LedoitWolfStream.REANCHOR
    assert 0.0 < np.median(shrinks) < 1.0  # the intensity formula is exercised, not clipped


@pytest.mark.parametrize("demean,window_hours", [(False, None), (True, 100), (False, 100)])
def test_ledoit_wolf_stream_options(demean: bool, window_hours: int | None) -> None:
    """Not demeaned (sklearn's assume_centered: μ = 0) and ``window_hours`` (the stream keeps the last N)."""
    r = correlated(1_500, 4, seed=2, drift=0.2)
    f = LedoitWolfForecaster(LedoitWolfConfig(demean=demean, window_hours=window_hours))
    w = 300
    s = f.stream("ABCD", r[:w])
    assert s is not None
    worst = 0.0
    for k in range(w, len(r)):  # past LedoitWolfStream.REANCHOR too
        a, b = s.update(r[k]), f.forecast("ABCD", r[k - w + 1 : k + 1])  # the batch trims to window_hours
        worst = max(worst, rel(a.cov, b.cov))
        assert a.mu == pytest.approx(b.mu, rel=1e-9, abs=1e-15)
        assert a.diagnostics["observations"] == b.diagnostics["observations"] == (window_hours or w)
    assert worst < 1e-9, worst


def test_ledoit_wolf_stream_one_asset_short_window_and_bad_return() -> None:
    f = LedoitWolfForecaster()
    r = correlated(400, 1, seed=3)
    s = f.stream("A", r[:50])
    assert s is not None
    for k in range(50, 400):
        a, b = s.update(r[k]), f.forecast("A", r[k - 49 : k + 1])
        assert a.cov == pytest.approx(b.cov, rel=1e-9)
        assert a.diagnostics["shrinkage"] == b.diagnostics["shrinkage"] == 0.0
    assert f.stream("AB", np.zeros((1, 2))) is None  # too short for forecast, which then says why
    with pytest.raises(ForecastError, match="at least 2"):
        f.forecast("AB", np.zeros((1, 2)))
    s = f.stream("AB", correlated(20, 2, seed=4))
    with pytest.raises(ForecastError, match="NaN/inf for \\['B'\\]"):
        s.update(np.array([0.0, np.inf]))


# -- DCC -----------------------------------------------------------------------------------------------------


def test_dcc_stream_with_a_refit_every_step_is_the_batch_forecast() -> None:
    """refit_every_hours = 1: each update refits on the rolled window, as forecast() does each call."""
    r = simulate_dcc(320, 0.05, 0.9, seed=21)
    cfg = DccConfig(refit_every_hours=1, min_observations=100)
    w = 120
    batch, s = DccForecaster(cfg), DccForecaster(cfg).stream(ASSETS, r[:w])
    assert isinstance(s, DccStream)
    a, b = s.forecast(), batch.forecast(ASSETS, r[:w])
    assert a.cov == pytest.approx(b.cov, rel=1e-8)
    for k in range(w, len(r)):
        a, b = s.update(r[k]), batch.forecast(ASSETS, r[k - w + 1 : k + 1])
        assert rel(a.cov, b.cov) < 1e-8
        assert a.diagnostics["hours_since_fit"] == b.diagnostics["hours_since_fit"] == 0
        assert a.diagnostics["a"] == b.diagnostics["a"] and a.diagnostics["b"] == b.diagnostics["b"]


def test_dcc_stream_between_refits_is_the_fixed_parameter_recursion() -> None:
    """Between refits: the batch filter with the parameters fixed, over the rows since the refit's window began
    (the walk-forward's growing-window ``predict``, and ``dcc_forecast_cov``)."""
    r = simulate_dcc(900, 0.04, 0.93, seed=22)
    cfg = DccConfig(refit_every_hours=10_000)
    w = 600
    s = DccForecaster(cfg).stream(ASSETS, r[:w])
    assert s is not None
    grow = DccForecaster(cfg)
    grow.fit(ASSETS, r[:w])
    assert grow.params is not None
    assert (grow.params.a, grow.params.b) == (s.params.a, s.params.b)  # the same fit on the same window
    for k in range(w, len(r)):
        a = s.update(r[k])
        assert a.diagnostics["hours_since_fit"] == k - w + 1
        assert rel(a.cov, grow.predict(ASSETS, r[: k + 1]).cov) < 1e-12
        if k % 50 == 0:
            assert rel(a.cov, dcc_forecast_cov(r[: k + 1], s.params)[0]) < 1e-10


def test_dcc_stream_follows_forecasts_refit_schedule_and_the_rolling_window() -> None:
    """On forecast()'s schedule (refit every R calls) the stream is the batch at every refit; in between it
    differs from the batch's rolling-window refilter by the restart's weight, about max(b, β_i)^W."""
    r = simulate_dcc(700, 0.05, 0.9, seed=23)
    cfg = DccConfig(refit_every_hours=40, min_observations=100)
    w = 300
    batch, s = DccForecaster(cfg), DccForecaster(cfg).stream(ASSETS, r[:w])
    assert s is not None
    assert s.forecast().cov == pytest.approx(batch.forecast(ASSETS, r[:w]).cov, rel=1e-12)
    refits = 0
    for k in range(w, len(r)):
        a, b = s.update(r[k]), batch.forecast(ASSETS, r[k - w + 1 : k + 1])
        assert a.diagnostics["hours_since_fit"] == b.diagnostics["hours_since_fit"]
        assert a.diagnostics["a"] == b.diagnostics["a"]
        if a.diagnostics["hours_since_fit"] == 0:
            refits += 1
            assert rel(a.cov, b.cov) < 1e-12
        else:
            rho = max(s.params.b, float(s.params.garch.beta.max()))
            assert rel(a.cov, b.cov) < 50 * rho**w + 1e-10, (rho, rel(a.cov, b.cov))
    assert refits == (len(r) - w) // 40


def test_dcc_stream_stays_finite_symmetric_psd_over_10k_steps() -> None:
    rng = np.random.default_rng(24)
    base = simulate_dcc(10_400, 0.04, 0.94, seed=24)
    calm_loud = np.where((np.arange(len(base)) // 2_000) % 2 == 0, 1.0, 4.0)  # volatility regimes
    r = base * calm_loud[:, None] * (1 + 0.1 * rng.standard_t(3, size=base.shape))
    s = DccForecaster(DccConfig(refit_every_hours=1_000)).stream(ASSETS, r[:400])
    assert s is not None
    for k in range(400, len(r)):
        f = s.update(r[k])
        f.validate()  # finite, symmetric, PSD, positive volatilities
        if k % 97 == 0 or f.diagnostics["hours_since_fit"] == 0:
            assert np.linalg.eigvalsh(f.corr).min() > 0
            assert np.diag(f.corr) == pytest.approx(1.0)
    assert np.isfinite(s.h).all() and np.isfinite(s.q).all()
    assert np.abs(s.q - s.q.T).max() <= 1e-14 * np.abs(s.q).max()


def test_dcc_stream_of_a_short_window_is_none_and_bad_input_raises() -> None:
    f = DccForecaster(DccConfig(min_observations=100))
    r = simulate_dcc(300, 0.05, 0.9, seed=25)
    assert f.stream(ASSETS, r[:99]) is None  # the fast path then calls forecast(), which says why
    with pytest.raises(ForecastError, match="at least 100"):
        f.forecast(ASSETS, r[:99])
    s = f.stream(ASSETS, r[:100])
    assert s is not None
    with pytest.raises(ForecastError, match="NaN/inf for \\['C'\\]"):
        s.update(np.array([0.0, 0.0, np.nan]))
    bad = r.copy()
    bad[5, 0] = np.nan
    with pytest.raises(ForecastError, match="NaN"):
        f.stream(ASSETS, bad)


def test_dcc_stream_window_hours_keeps_the_last_rows() -> None:
    r = simulate_dcc(500, 0.05, 0.9, seed=26)
    cfg = DccConfig(window_hours=150, min_observations=100, refit_every_hours=5)
    batch, s = DccForecaster(cfg), DccForecaster(cfg).stream(ASSETS, r[:400])
    assert s is not None and s.window.shape == (150, 3)
    batch.forecast(ASSETS, r[:400])
    for k in range(400, 420):
        a, b = s.update(r[k]), batch.forecast(ASSETS, r[: k + 1])  # the batch trims to the last 150 itself
        if a.diagnostics["hours_since_fit"] == 0:
            assert rel(a.cov, b.cov) < 1e-12
            assert a.diagnostics["fit_observations"] == 150


class _Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t


@pytest.mark.parametrize("by_clock", [False, True])
def test_deseasonalised_dcc_stream_is_the_batch_at_refits(by_clock: bool) -> None:
    """The hour-of-day scale is fitted with the parameters and fixed until the next refit, as in the batch;
    the hour comes from ``last_hour`` (+1 per update) or from the clock at each update."""
    from bot.components import ComponentContext

    t, loud, w = 24 * 30, 14, 24 * 20
    profile = np.where(np.arange(24) == loud, 3.0, 1.0)
    r = simulate_dcc(t, 0.03, 0.95, seed=27) * profile[hours_of_rows(t, last_hour=23)][:, None]
    clock = _Clock(datetime(2026, 3, 1, 23, tzinfo=UTC) - timedelta(hours=t - w))  # close of row w − 1
    ctx = ComponentContext(clock=clock, state_dir=None, assets=ASSETS, emit=lambda e: None)  # type: ignore[arg-type]
    cfg = DccConfig(deseasonalise=True, refit_every_hours=24, min_observations=100)
    batch, owner = DccForecaster(cfg), DccForecaster(cfg, ctx if by_clock else None)
    hour = clock.t.hour
    s = owner.stream(ASSETS, r[:w], last_hour=None if by_clock else hour)
    assert s is not None
    assert s.forecast().cov == pytest.approx(batch.forecast(ASSETS, r[:w], last_hour=hour).cov, rel=1e-12)
    for k in range(w, t):
        clock.t += timedelta(hours=1)
        hour = clock.t.hour
        a, b = s.update(r[k]), batch.forecast(ASSETS, r[k - w + 1 : k + 1], last_hour=hour)
        assert a.diagnostics["deseasonalised"] and b.diagnostics["deseasonalised"]
        assert a.diagnostics["hours_since_fit"] == b.diagnostics["hours_since_fit"]
        if a.diagnostics["hours_since_fit"] == 0:
            assert rel(a.cov, b.cov) < 1e-12
        else:
            rho = max(s.params.b, float(s.params.garch.beta.max()))
            assert rel(a.cov, b.cov) < 50 * rho**w + 1e-10
    with pytest.raises(ForecastError, match="close hour"):
        DccForecaster(cfg).stream(ASSETS, r[:w])  # no last_hour and no clock


# -- the fast backtest picks them up ---------------------------------------------------------------------------


@pytest.mark.parametrize("plugin,cls,stream_cls", [
    ("ledoit_wolf", LedoitWolfForecaster, LedoitWolfStream), ("dcc", DccForecaster, DccStream)])  # fmt: skip
def test_fast_backtest_streams_and_reaches_the_refitted_run(
    plugin: str, cls: type, stream_cls: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bot/fast.py calls ``stream`` when the forecaster has it; the run equals the one that refits every hour."""
    hours = 48
    updates = []
    update = stream_cls.update

    def counted(self, new_return):  # noqa: ANN001, ANN202
        updates.append(1)
        return update(self, new_return)

    monkeypatch.setattr(stream_cls, "update", counted)
    (tmp_path / "s").mkdir()
    streamed = run_fast_backtest(
        parse_config(paper_dict(tmp_path / "s", forecaster={"plugin": plugin}), "test"), hours, research=True
    )
    assert len(updates) == hours  # one update per cycle after the first
    monkeypatch.delattr(cls, "stream")
    (tmp_path / "r").mkdir()
    refitted = run_fast_backtest(
        parse_config(paper_dict(tmp_path / "r", forecaster={"plugin": plugin}), "test"), hours, research=True
    )
    assert streamed.end_nav == pytest.approx(refitted.end_nav, rel=1e-9)
    assert streamed.traded == pytest.approx(refitted.traded, rel=1e-6)
