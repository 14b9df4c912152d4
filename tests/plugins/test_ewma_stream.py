"""The ewma forecaster's sliding-window update must give the forecast a refit on the same window gives."""

from __future__ import annotations

import numpy as np
import pytest

from bot.errors import ForecastError
from plugins.forecasters.basic import EwmaConfig, EwmaForecaster, EwmaStream


@pytest.mark.parametrize("demean", [False, True])
def test_stream_equals_refit_over_many_updates(demean: bool) -> None:
    rng = np.random.default_rng(5)
    r = rng.standard_t(4, size=(2_600, 4)) * np.array([0.002, 0.01, 0.004, 0.02])
    f = EwmaForecaster(EwmaConfig(half_life_hours=24.0, demean=demean))
    w = 240
    s = f.stream("ABCD", r[:w])
    assert s is not None
    worst = 0.0
    for k in range(w, len(r)):  # past EwmaStream.REANCHOR too
        a, b = s.update(r[k]), f.forecast("ABCD", r[k - w + 1 : k + 1])
        worst = max(worst, float(np.abs(a.cov - b.cov).max() / np.abs(b.cov).max()))
        assert np.allclose(a.mu, b.mu, rtol=1e-9, atol=1e-15)
    assert worst < 1e-10
    assert len(r) - w > EwmaStream.REANCHOR


def test_stream_refuses_a_bad_return_and_deseasonalised_has_none() -> None:
    f = EwmaForecaster(EwmaConfig())
    s = f.stream("AB", np.full((50, 2), 0.001))
    with pytest.raises(ForecastError, match="NaN/inf for \\['B'\\]"):
        s.update(np.array([0.0, np.nan]))
    assert EwmaForecaster(EwmaConfig(deseasonalise=True)).stream("AB", np.full((50, 2), 0.001)) is None
