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
