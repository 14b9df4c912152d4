"""The ``scenario`` data source (plugins/data/scenarios.py): shocks on top of a real base source.

Why these tests: a stress result is only as believable as the shock is exact. Each shock is checked
against the unshocked base path it was applied to (a 30% drop is 30%, a volatility ×2 doubles every
return in its window and nothing outside it, a stale price is the last one before the window and then
the true one), the composition of several shocks must not depend on the window a caller asks for, and
every mistake in the options must stop the build naming what and where.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.errors import ConfigError
from bot.plugins import Registry, make_plugin_manager
from plugins.data.scenarios import ScenarioDataConfig, ScenarioSource, build_scenario_source

ANCHOR = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)


def source(shocks: list[dict[str, Any]], *, seed: int = 0, base: dict[str, Any] | None = None) -> ScenarioSource:
    ctx = ComponentContext(SimulatedClock(ANCHOR), Path("/tmp"), (), lambda e: None)
    opts = {"base": base or {"plugin": "simulated", "options": {"seed": 11}}, "anchor": ANCHOR.isoformat(),
            "seed": seed, "shocks": shocks}  # fmt: skip
    return build_scenario_source(ScenarioDataConfig.model_validate(opts), ctx)


def both(src: ScenarioSource, hours_after: int, n: int) -> tuple[Any, Any]:
    end = ANCHOR + hours_after * H
    names = src.assets()
    return src.bars(names, end, n), src.base.bars(names, end, n)


def at(bars: Any, hours: float) -> int:
    return bars.times.index(ANCHOR + hours * H)


def test_composed_shocks_do_not_depend_on_the_window_asked_for() -> None:
    src = source([
        {"kind": "drop", "kinds": ["tokenized"], "start_hour": 10, "hours": 24, "depth": 0.3, "steps": 3},
        {"kind": "vol", "start_hour": 20, "hours": 30, "factor": 2.0},
        {"kind": "correlation", "start_hour": 5, "hours": 100, "rho": 0.9},
        {"kind": "stale", "assets": ["USTB"], "start_hour": 0, "hours": 48, "align": "weekend"},
        {"kind": "swing", "exclude": ["USTB"], "start_hour": 30, "hours": 96, "amplitude": 0.2, "period_hours": 24},
        {"kind": "volume", "start_hour": 0, "hours": 10, "factor": 0.05},
    ], seed=4)  # fmt: skip
    names = src.assets()
    whole = src.bars(names, ANCHOR + 300 * H, 500)
    for end, n in ((40, 5), (60, 30), (150, 80), (300, 1)):  # windows starting inside the shocks, and after
        part = src.bars(names, ANCHOR + end * H, n)
        i = whole.times.index(part.times[0])
        assert np.array_equal(whole.close[i : i + n], part.close), (end, n)
        assert np.array_equal(whole.volume[i : i + n], part.volume), (end, n)
    base = src.base.bars(names, ANCHOR + 300 * H, 500)
    assert not np.allclose(whole.close, base.close)  # the shocks did something


def test_a_drop_in_steps_reaches_its_depth_and_stays() -> None:
    src = source([{"kind": "drop", "kinds": ["tokenized"], "start_hour": 10, "hours": 72, "depth": 0.3, "steps": 3}])
    s, b = both(src, 200, 300)
    ratio = s.close / b.close
    tok = np.array([src.asset_kind(a) == "tokenized" for a in src.assets()])
    assert np.allclose(ratio[: at(s, 9) + 1], 1.0)  # untouched before the window
    assert np.allclose(ratio[:, ~tok], 1.0)  # and the traditional assets never
    # three equal re-marks: at hours 10, 34 and 58 (the first at the start), each (0.7)^(1/3)
    levels = [ratio[at(s, h), tok][0] for h in (10, 33, 34, 57, 58, 82, 199)]
    step = 0.7 ** (1 / 3)
    assert levels == pytest.approx([step, step, step**2, step**2, 0.7, 0.7, 0.7], rel=1e-12)


def test_a_smooth_drop_recovers_when_asked() -> None:
    src = source([{"kind": "drop", "assets": ["SPY"], "start_hour": 0, "hours": 10, "depth": 0.2, "recover_hours": 20}])
    s, b = both(src, 60, 80)
    r = s.close[:, 0] / b.close[:, 0]
    assert r[at(s, 5)] == pytest.approx(0.8**0.5)  # halfway down in log terms
    assert r[at(s, 10)] == pytest.approx(0.8)
    assert r[at(s, 20)] == pytest.approx(0.8**0.5)  # halfway back
    assert r[at(s, 30)] == pytest.approx(1.0) and r[at(s, 59)] == pytest.approx(1.0)


def test_vol_scales_every_return_in_the_window_and_keeps_the_level_after() -> None:
    src = source([{"kind": "vol", "kinds": ["traditional"], "start_hour": 20, "hours": 30, "factor": 3.0}])
    s, b = both(src, 100, 150)
    rs, rb = np.diff(np.log(s.close), axis=0), np.diff(np.log(b.close), axis=0)
    i0, i1 = at(s, 20), at(s, 50)  # returns ending at hours 21..50 are scaled: rows i0..i1-1 of the diff
    tr = [i for i, a in enumerate(src.assets()) if src.asset_kind(a) == "traditional"]
    assert np.allclose(rs[i0:i1, tr], 3.0 * rb[i0:i1, tr], rtol=1e-10, atol=1e-15)
    assert np.allclose(rs[:i0], rb[:i0]) and np.allclose(rs[i1:], rb[i1:])  # outside: the base's returns
    assert np.allclose(np.delete(rs, tr, axis=1), np.delete(rb, tr, axis=1))


def test_a_correlation_spike_pulls_every_pair_together_seeded() -> None:
    spec = [{"kind": "correlation", "start_hour": 200, "hours": 168, "rho": 0.9}]
    s, b = both(source(spec, seed=1), 500, 600)
    i0 = at(s, 200)
    rs = np.diff(np.log(s.close), axis=0)[i0 : i0 + 168]
    rb = np.diff(np.log(b.close), axis=0)[i0 : i0 + 168]
    off = np.triu_indices(rs.shape[1], 1)
    cs, cb = np.corrcoef(rs.T)[off], np.corrcoef(rb.T)[off]
    # ρ + (1 − ρ)·c: 0.9 for an uncorrelated pair, a little less for a pair that was negatively correlated
    assert cs.min() > 0.8 and cb.min() < 0.3
    assert np.allclose(cs, 0.9 + 0.1 * cb, atol=0.08)
    again = both(source(spec, seed=1), 500, 600)[0]
    other = both(source(spec, seed=2), 500, 600)[0]
    assert np.array_equal(again.close, s.close) and not np.allclose(other.close, s.close)


def test_stale_freezes_then_jumps_to_the_true_price_and_latest_says_how_old() -> None:
    src = source([{"kind": "stale", "assets": ["CREDIT"], "start_hour": 0, "hours": 48, "align": "weekend"}])
    s, b = both(src, 200, 250)
    sat = datetime(2026, 3, 7, tzinfo=UTC)  # the first Saturday after the Monday anchor
    i0 = s.times.index(sat)
    c = src.assets().index("CREDIT")
    assert np.all(s.close[i0 : i0 + 48, c] == b.close[i0, c])  # frozen from Saturday 00:00 ...
    assert s.close[i0 + 48, c] == b.close[i0 + 48, c]  # ... to the true value on Monday 00:00
    assert s.close[i0 - 1, c] == b.close[i0 - 1, c]
    assert np.array_equal(np.delete(s.close, c, axis=1), np.delete(b.close, c, axis=1))
    snap = src.latest(["CREDIT", "SPY"], sat + timedelta(hours=30, minutes=20))
    assert snap.times[0] == sat and snap.prices[0] == pytest.approx(b.close[i0, c])
    assert snap.times[1] == sat + timedelta(hours=30, minutes=20)


def test_volume_swing_and_scale() -> None:
    src = source([
        {"kind": "volume", "kinds": ["tokenized"], "start_hour": 10, "hours": 5, "factor": 0.05},
        {"kind": "swing", "assets": ["SPY"], "start_hour": 0, "hours": 96, "amplitude": 0.2, "period_hours": 48},
        {"kind": "scale", "assets": ["TLT"], "start_hour": 50, "hours": 24, "factor": 0.97},
    ])  # fmt: skip
    s, b = both(src, 120, 150)
    names = src.assets()
    tok = [i for i, a in enumerate(names) if src.asset_kind(a) == "tokenized"]
    v = s.volume / b.volume
    assert np.allclose(v[at(s, 11) : at(s, 15) + 1, tok], 0.05) and np.allclose(v[at(s, 16) :], 1.0)
    assert np.allclose(v[: at(s, 10) + 1], 1.0)
    spy, tlt = names.index("SPY"), names.index("TLT")
    r = s.close / b.close
    assert r[at(s, 24), spy] == pytest.approx(0.8) and r[at(s, 72), spy] == pytest.approx(1.2)
    assert r[at(s, 48), spy] == pytest.approx(1.0) and r[at(s, 100), spy] == pytest.approx(1.0)
    assert np.allclose(r[at(s, 50) : at(s, 74), tlt], 0.97) and r[at(s, 74), tlt] == pytest.approx(1.0)


def test_wraps_a_users_csv_file(tmp_path: Path) -> None:
    t = pd.date_range("2026-03-01T01:00:00Z", periods=400, freq="h")
    rng = np.random.default_rng(0)
    walk = np.exp(np.cumsum(rng.standard_normal((400, 2)) * 0.002, axis=0))
    df = pd.DataFrame({"timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "AAA": 100 * walk[:, 0], "AAA_volume": 1000.0,
                       "BBB": 50 * walk[:, 1], "BBB_volume": 500.0})  # fmt: skip
    path = tmp_path / "bars.csv"
    df.to_csv(path, index=False)
    src = source([{"kind": "drop", "assets": ["BBB"], "start_hour": 24, "hours": 1, "depth": 0.5, "steps": 1}],
                 base={"plugin": "csv", "options": {"path": str(path)}})  # fmt: skip
    s = src.bars(["AAA", "BBB"], ANCHOR + 100 * H, 100)
    b = src.base.bars(["AAA", "BBB"], ANCHOR + 100 * H, 100)
    r = s.close / b.close
    assert np.allclose(r[:, 0], 1.0)
    assert np.allclose(r[: at(s, 23) + 1, 1], 1.0) and np.allclose(r[at(s, 24) :, 1], 0.5)


@pytest.mark.parametrize(
    ("shock", "match"),
    [
        ({"kind": "drop", "assets": ["NOPE"], "start_hour": 0, "hours": 1, "depth": 0.1},
         r"shocks\[0\]: unknown asset"),
        ({"kind": "vol", "kinds": ["cash"], "start_hour": 0, "hours": 1, "factor": 2.0},
         r"shocks\[0\]: selects no asset"),
    ],
)
def test_a_selection_the_market_cannot_meet_is_an_error_naming_the_shock(shock: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        source([shock])


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"shocks": [{"kind": "drop", "start_hour": 0, "hours": 1, "depth": 0.1, "deep": 1}]}, "deep"),
        ({"shocks": [{"kind": "outage", "venue": "wallet", "start_hour": 0, "hours": 1}]}, "outage"),
        ({"shocks": [{"kind": "drop", "start_hour": 0, "hours": 1, "depth": 1.5}]}, "depth"),
        ({"shocks": [{"kind": "drop", "assets": ["SPY"], "kinds": ["tokenized"], "start_hour": 0, "hours": 1,
                      "depth": 0.1}]}, "assets or kinds"),  # fmt: skip
        ({"base": {"plugin": "scenario"}}, "cannot wrap another scenario"),
        ({"anchor": "2026-03-01T00:00:00"}, "no time zone"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], where: str) -> None:
    data = {"base": {"plugin": "simulated"}, **options}
    with pytest.raises(ValidationError, match=where):
        ScenarioDataConfig.model_validate(data)


def test_registered_by_its_entry_point_and_built_through_the_registry() -> None:
    reg = Registry(make_plugin_manager())
    assert "scenario" in reg.names("data")
    ctx = ComponentContext(SimulatedClock(ANCHOR + 5 * H + timedelta(minutes=30)), Path("/tmp"), (), lambda e: None)
    src = reg.get("data", "scenario").build({"base": {"plugin": "simulated"}, "shocks": [
        {"kind": "drop", "assets": ["SPY"], "start_hour": 0, "hours": 1, "depth": 0.1, "steps": 1}]}, ctx,
        where="data.options")  # fmt: skip
    assert src.anchor == ANCHOR + 5 * H  # no anchor given: the clock's hour when it was built
    s = src.bars(["SPY"], ANCHOR + 10 * H, 10)
    b = src.base.bars(["SPY"], ANCHOR + 10 * H, 10)
    assert s.close[-1, 0] / b.close[-1, 0] == pytest.approx(0.9) and math.isclose(s.close[0, 0], b.close[0, 0])
