"""Expected-return models (plugins/returns/basic.py): their maths, and that λ never meets a silent μ = 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.config import parse_config
from bot.cycle import Engine
from bot.errors import ConfigError, ForecastError
from bot.evaluate import score_return_models
from plugins.returns.basic import (
    CarryConfig,
    CarryReturns,
    EwmaMeanConfig,
    EwmaMeanReturns,
    ShrunkMeanReturns,
    ZeroReturns,
    james_stein_mean,
)
from tests.conftest import paper_dict

A = ("SPY", "TLT", "GLD", "VNQ", "USTB")


def test_james_stein_shrinks_by_the_closed_form_factor() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.01, (400, 5)) + np.array([0.001, -0.0005, 0.0, 0.0008, 0.0002])
    m, t = r.mean(axis=0), r.shape[0]
    grand = m.mean()
    c = min(1.0, 2 * r.var(axis=0, ddof=1).mean() / t / ((m - grand) ** 2).sum())  # (N - 3) = 2
    assert 0 < c < 1
    assert james_stein_mean(r) == pytest.approx(grand + (1 - c) * (m - grand), rel=1e-12)
    # means far apart relative to their noise are hardly shrunk; indistinguishable ones collapse to the average
    far = np.vstack([np.full((50, 5), 0.0) + np.arange(5) * 0.01, np.full((50, 5), 0.0) + np.arange(5) * 0.01 + 1e-9])
    assert james_stein_mean(far) == pytest.approx(far.mean(axis=0), rel=1e-6)
    same = rng.normal(0, 0.01, (100, 5))
    shrunk = james_stein_mean(same)
    assert np.ptp(shrunk) < np.ptp(same.mean(axis=0))


def test_ewma_mean_weights_the_recent_hours_and_carry_states_the_yield() -> None:
    r = np.zeros((100, 5))
    r[-1] = 0.01
    mu = EwmaMeanReturns(EwmaMeanConfig(half_life_hours=1.0)).expected(A, r)
    w = 0.5 ** np.arange(99, -1, -1)
    assert mu == pytest.approx(np.full(5, 0.01 * w[-1] / w.sum()), rel=1e-12)
    carry = CarryReturns(CarryConfig(annual_yield={"USTB": 0.045}, default=0.0)).expected(A, r)
    assert carry[-1] == pytest.approx(np.log1p(0.045) / 8760, rel=1e-15) and not carry[:-1].any()
    assert not ZeroReturns().expected(A, r).any()
    with pytest.raises(ForecastError, match=r"NaN or inf for \['GLD'\]"):
        ShrunkMeanReturns().expected(A, np.where(np.arange(5) == 2, np.nan, r))


def test_a_tilt_with_a_forecaster_that_has_no_mu_and_no_return_model_is_refused(tmp_path: Path) -> None:
    data = paper_dict(tmp_path, forecaster={"plugin": "dcc"},
                      optimizer={"plugin": "rp_cost", "options": {"lam": 0.5}})  # fmt: skip
    data.pop("strategy")
    data["policy"] = {"plugin": "full"}
    with pytest.raises(ConfigError, match=r"lam = 0.5 but forecaster 'dcc' forecasts no expected returns"):
        Engine(parse_config(data, "t.toml"))
    assert not (tmp_path / "ledger.sqlite").exists()  # refused before anything was created
    data["returns"] = {"plugin": "zero"}
    Engine(parse_config(data, "t.toml")).close()  # a stated μ = 0 is allowed: it is said, not silent


def test_the_return_model_is_the_mu_the_optimizer_tilts_by(tmp_path: Path) -> None:
    """With carry giving gold a large stated yield, rp_cost's λ moves weight to it; the
    same config without the tilt does not (the stored targets of the first cycle, one Engine each)."""
    weights = {}
    for lam in (0.0, 2.0):
        data = paper_dict(tmp_path / f"l{lam}", optimizer={"plugin": "rp_cost", "options": {"lam": lam}},
                          returns={"plugin": "carry", "options": {"annual_yield": {"GLD": 0.5}}})  # fmt: skip
        data.pop("strategy")
        data["forecaster"], data["policy"] = {"plugin": "ewma"}, {"plugin": "full"}
        (tmp_path / f"l{lam}").mkdir()
        e = Engine(parse_config(data, "t.toml"))
        try:
            r = e.run_cycle()
            weights[lam] = dict(zip(r.assets, r.target))
        finally:
            e.close()
    assert weights[2.0]["GLD"] > weights[0.0]["GLD"] + 1e-4


def test_return_models_are_scored_out_of_sample_without_look_ahead() -> None:
    rng = np.random.default_rng(4)
    drift = np.array([0.002, -0.002, 0.001, -0.001, 0.0])
    r = rng.normal(0, 0.004, (600, 5)) + drift  # persistent means: a mean model ranks them right
    models = {"zero": ZeroReturns(), "mean": EwmaMeanReturns(EwmaMeanConfig(half_life_hours=200.0))}
    zero, mean = score_return_models(models, A, r, warmup=100, block=24)
    assert zero.periods == 0 and np.isnan(zero.ic_mean)  # no ranking: NaN, not a flattering 0
    assert mean.ic_mean > 3 * mean.ic_se and mean.hit_rate > 0.55
    shuffled = r.copy()
    shuffled[100:] = rng.permutation(shuffled[100:] - drift, axis=0)  # the future has no drift
    assert abs(score_return_models({"m": models["mean"]}, A, shuffled, warmup=100, block=24)[0].ic_mean) < 0.1
