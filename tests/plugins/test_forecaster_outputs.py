"""Every registered forecaster returns the same, valid Forecast (Σ = ρ ∘ σσᵀ, PSD, unit-diagonal ρ, horizon 1 h)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.domain import Forecast
from bot.plugins import Registry, make_plugin_manager
from tests.plugins.test_forecasters_classic import simulate_dcc

ASSETS = ("A", "B", "C")
OPTIONS = {
    "sample": {},
    "ewma": {"half_life_hours": 24.0},
    "ledoit_wolf": {},
    "dcc": {"min_observations": 100},
    "lstm": {"window_hours": 12, "hidden": 8, "epochs": 3, "min_train_hours": 200},
}


def build(name: str, tmp_path) -> object:  # noqa: ANN001
    from datetime import UTC, datetime

    ctx = ComponentContext(SimulatedClock(datetime(2026, 1, 1, tzinfo=UTC)), tmp_path, ASSETS, lambda e: None)
    return Registry(make_plugin_manager()).get("forecaster", name).build(OPTIONS[name], ctx, where=name)


def forecast(fc: object, name: str, r: np.ndarray) -> Forecast:
    if name == "lstm":  # the walk-forward path; the daemon path (checkpoint, fallback) is in test_lstm.py
        fc.fit(ASSETS, r)  # type: ignore[attr-defined]
        return fc.predict(ASSETS, r)  # type: ignore[attr-defined]
    return fc.forecast(ASSETS, r)  # type: ignore[attr-defined]


def check(f: Forecast, name: str) -> None:
    f.validate()
    n = len(ASSETS)
    assert f.assets == ASSETS and f.model == name and f.horizon_hours == 1
    assert f.cov.shape == f.corr.shape == (n, n) and f.sigma.shape == (n,)
    assert np.isfinite(f.cov).all() and np.array_equal(f.cov, f.cov.T)
    assert np.linalg.eigvalsh(f.cov).min() > 0
    assert f.sigma == pytest.approx(np.sqrt(np.diag(f.cov)), rel=1e-12)
    assert np.diag(f.corr) == pytest.approx(1.0, abs=1e-9)
    assert np.abs(f.corr).max() <= 1 + 1e-12
    assert f.corr * np.outer(f.sigma, f.sigma) == pytest.approx(f.cov, rel=1e-9, abs=1e-30)
    d = f.diagnostics
    for key in DIAGNOSTICS[name]:
        assert key in d, (name, key)
    if name == "ledoit_wolf":
        assert 0.0 <= d["shrinkage"] <= 1.0
    if name == "dcc":
        assert d["a"] >= 0 and d["b"] >= 0 and d["a"] + d["b"] < 1 and d["hours_since_fit"] == 0
    if name == "lstm":
        assert d["epochs"] >= 1 and math.isfinite(d["val_nll"]) and d["val_nll"] <= d["val_nll_start"]
    if "observations" in d:
        assert d["observations"] == 600


DIAGNOSTICS = {  # what each model reports about itself
    "sample": ("observations",),
    "ewma": ("observations", "half_life_hours", "deseasonalised"),
    "ledoit_wolf": ("observations", "shrinkage"),
    "dcc": ("a", "b", "neg_loglik", "fit_observations", "hours_since_fit", "garch_persistence"),
    "lstm": ("epochs", "val_nll", "val_nll_start", "kept_start", "anchor"),
}


def test_every_registered_forecaster_is_covered() -> None:
    names = {r.name for r in Registry(make_plugin_manager()) if r.family == "forecaster"}
    assert names <= set(OPTIONS), f"add {names - set(OPTIONS)} to the output checks"


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_output_is_a_valid_forecast(name: str, tmp_path) -> None:  # noqa: ANN001
    r = simulate_dcc(600, 0.05, 0.9, seed=21)
    check(forecast(build(name, tmp_path), name, r), name)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_output_stays_valid_on_nearly_collinear_and_tiny_returns(name: str, tmp_path) -> None:  # noqa: ANN001
    """Two almost identical assets and returns of 1e-6: the forecast must still be positive definite."""
    r = simulate_dcc(600, 0.05, 0.9, seed=22)
    r[:, 1] = r[:, 0] + 1e-4 * r[:, 1]
    check(forecast(build(name, tmp_path), name, r * 1e-3), name)
