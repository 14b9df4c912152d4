from __future__ import annotations

import numpy as np
import pytest

from bot.domain import Forecast, Target
from plugins.policies.basic import BandConfig, BandPolicy, FullPolicy

F = Forecast.from_cov(("a", "b", "c"), np.eye(3) * 1e-4, "t")


def target(w: list[float]) -> Target:
    w_ = np.array(w)
    return Target(F.assets, w_, w_ / w_.sum(), 0.01, np.zeros(3, bool))


def test_full_always_moves_to_target() -> None:
    d = FullPolicy().decide(np.array([0.3, 0.3, 0.4]), target([0.3, 0.3, 0.39]), F)
    assert d.trade and d.weights == pytest.approx([0.3, 0.3, 0.39])


def test_band_holds_inside_and_trades_outside() -> None:
    p = BandPolicy(BandConfig(band=0.02))
    cur = np.array([0.33, 0.33, 0.34])
    inside = p.decide(cur, target([0.34, 0.32, 0.34]), F)
    assert not inside.trade and inside.weights == pytest.approx(cur)
    outside = p.decide(cur, target([0.36, 0.30, 0.34]), F)
    assert outside.trade and outside.weights == pytest.approx([0.36, 0.30, 0.34])


def test_band_edge_moves_only_to_the_band() -> None:
    p = BandPolicy(BandConfig(band=0.02, to="edge"))
    d = p.decide(np.array([0.40, 0.30, 0.30]), target([0.30, 0.35, 0.35]), F)
    assert d.trade and d.weights == pytest.approx([0.32, 0.33, 0.33])


def test_band_config_is_strict() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        BandConfig(band=0.0)
    with pytest.raises(ValidationError):
        BandConfig.model_validate({"band": 0.02, "extra": 1})
    with pytest.raises(ValidationError, match="edge"):
        BandConfig(band=0.2, to="edge", measure="risk")


def test_relative_band_judges_small_and_large_positions_alike() -> None:
    p = BandPolicy(BandConfig(band=0.25, measure="relative"))
    # 0.05 -> 0.065 is a 1.5-point drift (inside any 2-point absolute band) but 30% relative: trade
    small = p.decide(np.array([0.065, 0.435, 0.50]), target([0.05, 0.45, 0.50]), F)
    assert small.trade and small.weights == pytest.approx([0.05, 0.45, 0.50])
    # 0.45 -> 0.50 is a 5-point drift but only 11% relative: hold
    large = p.decide(np.array([0.05, 0.50, 0.45]), target([0.05, 0.45, 0.50]), F)
    assert not large.trade
    # a holding with no target at all is always a breach
    assert p.decide(np.array([0.01, 0.49, 0.50]), target([0.0, 0.50, 0.50]), F).trade


def test_relative_band_edge_stops_at_the_relative_edge() -> None:
    p = BandPolicy(BandConfig(band=0.25, to="edge", measure="relative"))
    d = p.decide(np.array([0.10, 0.40, 0.30]), target([0.05, 0.45, 0.40]), F)
    assert d.trade and d.weights == pytest.approx([0.0625, 0.40, 0.30])


def test_risk_band_measures_risk_shares() -> None:
    # with a diagonal Σ of variances 1:4:9·1e-4, the target below has equal risk shares;
    # holding equal weights leaves the third asset with 9/14 of the risk instead of 1/3
    cov = np.diag([1.0, 4.0, 9.0]) * 1e-4
    f = Forecast.from_cov(("a", "b", "c"), cov, "t")
    inv = 1 / np.sqrt(np.diag(cov))
    t = Target(f.assets, inv / inv.sum(), np.full(3, 1 / 3), 0.01, np.zeros(3, bool))
    p = BandPolicy(BandConfig(band=0.5, measure="risk"))
    assert p.decide(np.full(3, 1 / 3), t, f).trade  # 9/14 vs 1/3: +93%
    near = t.weights * np.array([1.05, 1.0, 0.97])
    assert not p.decide(near / near.sum(), t, f).trade
