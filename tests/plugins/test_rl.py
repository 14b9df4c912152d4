"""The rl policy: its environment on the real engine, a tiny training, the plugin's fallback and bounds."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.config import Config, parse_config
from bot.domain import Forecast, RiskEvent, Target
from plugins.policies.basic import BandConfig, BandPolicy, FullPolicy
from plugins.policies.rl import (
    CHECKPOINT_VERSION,
    FEATURE_VERSION,
    Actor,
    CheckpointError,
    FeatureState,
    RlConfig,
    RlPolicy,
    action_dim,
    apply_action,
    band_action,
    band_params,
    feature_names,
    load_checkpoint,
    n_features,
    save_checkpoint,
)
from tests.conftest import paper_dict

gym = pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from plugins.policies.rl_env import (  # noqa: E402 - after the optional-dependency skips
    EnvOptions,
    RebalanceEnv,
    Scenario,
    hour_outcome,
    reward_of,
    scenario_config,
    scenarios,
)
from plugins.policies.rl_train import (  # noqa: E402
    BUILDUP_HOURS,
    Series,
    TrainOptions,
    build_model,
    evaluate,
    export_actor,
    markdown,
    paired,
    run_policy,
    train,
    verdict_of,
)

START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def pm():  # noqa: ANN201 - a pluggy manager, built once: loading every plugin takes seconds
    from bot.plugins import make_plugin_manager

    return make_plugin_manager()


def toy_config(tmp: Path, fee_bps: float = 40.0) -> Config:
    """Three assets on one expensive venue, a two-day window: a cycle costs ~1 ms."""
    d = paper_dict(tmp)
    d["venues"] = {"exchange": {"plugin": "paper", "options": {"initial_cash": 100_000.0, "fee_bps": fee_bps}}}
    d["assets"] = {a: {"venue": "exchange"} for a in ("SPY", "TLT", "GLD")}
    d.pop("funding")
    d.pop("report", None)  # the default config's report names assets this toy does not hold
    d["risk"] = {**d["risk"], "history_hours": 48, "liquidity_lookback_hours": 24}
    return parse_config(d, "toy")


@pytest.fixture
def default_config(tmp_path: Path) -> Config:
    return parse_config(paper_dict(tmp_path), "paper-offline")


def random_actor(n: int, scale: float, seed: int = 0, hidden: int = 16, action: str = "band") -> Actor:
    rng = np.random.default_rng(seed)
    d, m = n_features(n), action_dim(action, n)
    return Actor((rng.normal(0, scale, (hidden, d)), rng.normal(0, scale, (m, hidden))),
                 (rng.normal(0, scale, hidden), rng.normal(0, scale, m)))  # fmt: skip


def meta_for(assets: tuple[str, ...], action: str = "band", **over: object) -> dict[str, object]:
    meta: dict[str, object] = {"version": CHECKPOINT_VERSION, "feature_version": FEATURE_VERSION, "action": action,
                               "assets": list(assets), "cost_bps": [3.0] * len(assets),
                               "features": feature_names(assets)}  # fmt: skip
    meta.update(over)
    return meta


class Events:
    def __init__(self) -> None:
        self.got: list[RiskEvent] = []

    def __call__(self, e: RiskEvent) -> None:
        self.got.append(e)


def policy_at(path: Path, assets: tuple[str, ...]) -> tuple[RlPolicy, Events]:
    ev = Events()
    ctx = ComponentContext(SimulatedClock(START, 0.0), path.parent, assets, ev)
    return RlPolicy(RlConfig(checkpoint=path.name), ctx), ev


ASSETS = ("a", "b", "c")
F = Forecast.from_cov(ASSETS, np.diag([1e-4, 4e-4, 9e-4]), "t")


def target(w: list[float], capped: list[bool] | None = None) -> Target:
    w_ = np.array(w)
    return Target(ASSETS, w_, w_ / w_.sum(), 0.01, np.array(capped or [False] * len(w)))


# -- the environment ---------------------------------------------------------------------------------------


def test_env_passes_gymnasiums_check_env(default_config: Config, pm) -> None:  # noqa: ANN001
    from gymnasium.utils.env_checker import check_env

    env = RebalanceEnv(default_config, EnvOptions(episode_hours=20), pm=pm)
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (n_features(8),) and env.action_space.shape == (1,)
    obs, _ = env.reset(seed=5)
    again, _ = env.reset(seed=5)
    assert np.array_equal(obs, again)  # a seeded reset is the same scenario, the same first observation
    env.close()


def constant_actor(n: int, x: list[float]) -> Actor:
    """A network that outputs ``x`` whatever it sees."""
    return Actor((np.zeros((len(x), n_features(n))),), (np.array(x, float),))


X_BAND5 = [band_action(0.05)]  # θ = 0.05


def test_env_step_is_one_engine_cycle_and_what_the_plugin_does(
    default_config: Config,
    tmp_path: Path,
    pm,  # noqa: ANN001
) -> None:
    """A constant action through the env is the ``rl`` plugin with a network that outputs that constant, run
    directly on the fast backtest: the same cycles and decisions (what the agent trains on is what the
    daemon runs), and each reward is 1e4·((r − r*) − κ·TE²) of its cycle's hour, r the NAV's growth."""
    from bot.fast import FastBacktest

    opts = EnvOptions(episode_hours=60, kappa=5e4)
    sc = Scenario(3, True, START)
    env = RebalanceEnv(default_config, opts, pm=pm)
    env.reset(options={"scenario": sc})
    got = []
    for _ in range(60):
        _, r, term, trunc, _ = env.step(np.array(X_BAND5, np.float32))
        got.append(r)
        assert not term
    assert trunc
    env.close()
    path = tmp_path / "const.npz"
    save_checkpoint(path, constant_actor(8, X_BAND5), meta_for(default_config.asset_names,
                                                                 cost_bps=[3.0] * 4 + [20.0] * 4))  # fmt: skip
    policy, ev = policy_at(path, default_config.asset_names)
    run = FastBacktest(scenario_config(default_config, sc), 100, start=sc.start, research=True, pm=pm,
                       policy=policy)  # fmt: skip
    steps = [run.step() for _ in range(90)]
    agent = [s for s in steps if not s.decided.decision.reason.startswith("rl: building")]
    want = []
    for s in agent[:60]:
        o = hour_outcome(run, s)
        assert o is not None
        nxt = steps[s.k + 1]
        assert o.net == pytest.approx(nxt.nav_before / s.nav_before - 1.0, rel=1e-9, abs=1e-15)
        want.append(reward_of(o, opts.kappa))
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert not ev.got
    trades = sum(s.decided.decision.trade for s in agent[:60])
    assert 0 < trades < 60  # a 5% band: it held some hours and traded others
    assert any(r < 0 for r in got) and float(np.std(got)) > 0


def test_scenarios_change_the_market_and_stress_it(default_config: Config) -> None:
    base = scenario_config(default_config, Scenario(3, False, START))
    hard = scenario_config(default_config, Scenario(3, True, START))
    assert base.data.options["seed"] == 3 and "stress_vol_multiplier" not in base.data.options
    assert hard.data.options["stress_vol_multiplier"] > 1
    d = paper_dict(Path("/tmp"))
    d["data"] = {"plugin": "csv", "options": {"path": "x.csv"}}
    with pytest.raises(Exception, match="simulated"):
        scenario_config(parse_config(d, "csv"), Scenario(3, False, START))


# -- training --------------------------------------------------------------------------------------------


def episode_rewards(env: RebalanceEnv, act, held: list[Scenario]) -> float:  # noqa: ANN001
    rng = np.random.default_rng(0)
    total = []
    for sc in held:
        obs, _ = env.reset(options={"scenario": sc})
        r, done = 0.0, False
        while not done:
            obs, rr, term, trunc, _ = env.step(act(obs, rng))
            r += rr
            done = term or trunc
        total.append(r)
    return float(np.mean(total))


def test_a_tiny_training_learns_to_beat_a_random_policy(tmp_path: Path, pm) -> None:  # noqa: ANN001
    """The toy case: three assets, no fee, a steep tracking penalty (κ = 10⁶), so every hour off the target
    is a loss paid at once and the best policy is the tightest band. Random actions draw a band from 2%
    to 50% each hour; a few thousand PPO steps must learn to trade whenever the book drifts, on scenarios
    (seeds) it never trained on."""
    from stable_baselines3 import PPO

    cfg = toy_config(tmp_path, fee_bps=0.0)
    opts = EnvOptions(episode_hours=48, kappa=1e6, seeds=(1, 2, 3, 4), stress_share=0.0, start_span_days=60)
    env = RebalanceEnv(cfg, opts, pm=pm)
    held = scenarios(cfg, [11, 12, 13, 14], [False] * 4, 10)
    to = TrainOptions(timesteps=3072, n_steps=256, batch_size=64, learning_rate=3e-3, env=opts, seed=0)
    model = build_model(env, to)
    untrained = export_actor(model)
    model.learn(to.timesteps)
    actor = export_actor(model)
    # the numpy actor the plugin runs is the PPO policy's deterministic action
    obs, _ = env.reset(options={"scenario": held[0]})
    for x in (obs, np.clip(np.random.default_rng(1).normal(0, 3, obs.shape), -10, 10).astype(np.float32)):
        assert actor(x) == pytest.approx(model.predict(x, deterministic=True)[0], abs=1e-5)
    assert isinstance(model, PPO)
    random_score = episode_rewards(env, lambda o, g: g.uniform(-1, 1, 1), held)
    before = episode_rewards(env, lambda o, g: untrained(o), held)
    after = episode_rewards(env, lambda o, g: actor(o), held)
    tight = episode_rewards(env, lambda o, g: -np.ones(1), held)  # the tightest band, 2%
    env.close()
    assert tight > random_score + 50  # the toy has a clearly better policy to find
    gap = tight - random_score
    assert after > random_score + 0.4 * gap, (after, random_score, before, tight)
    assert after > before + 0.2 * gap, (after, before)


def test_training_is_reproducible_and_the_checkpoint_carries_its_options(tmp_path: Path, pm) -> None:  # noqa: ANN001
    cfg = toy_config(tmp_path)
    opts = EnvOptions(episode_hours=24, kappa=1000.0, seeds=(1, 2), stress_share=0.5, start_span_days=30)
    to = TrainOptions(timesteps=128, n_steps=64, batch_size=32, n_epochs=2, env=opts, seed=3)
    a = train(cfg, to, tmp_path / "a.npz", pm=pm)
    b = train(cfg, to, tmp_path / "b.npz", pm=pm)
    c = train(cfg, to.model_copy(update={"seed": 4}), tmp_path / "c.npz", pm=pm)
    wa, ma = load_checkpoint(a.checkpoint, cfg.asset_names)
    wb, _ = load_checkpoint(b.checkpoint, cfg.asset_names)
    wc, _ = load_checkpoint(c.checkpoint, cfg.asset_names)
    assert all(np.array_equal(x, y) for x, y in zip(wa.weights, wb.weights))
    assert not all(np.array_equal(x, y) for x, y in zip(wa.weights, wc.weights))
    assert a.model.exists()
    assert ma["assets"] == ["SPY", "TLT", "GLD"] and ma["train"]["env"]["kappa"] == 1000.0
    assert ma["train"]["seed"] == 3 and ma["cost_bps"] == [41.0, 41.0, 41.0]  # 40 bp fee + 1 bp half spread
    # a checkpoint for these three assets is refused by a config trading eight, saying so
    with pytest.raises(CheckpointError, match="trained for assets"):
        load_checkpoint(a.checkpoint, ("SPY", "TLT", "GLD", "VNQ"))


def test_options_are_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        RlConfig.model_validate({"checkpoint": "x.npz", "bnad": 0.1})
    with pytest.raises(ValidationError):
        EnvOptions.model_validate({"kapa": 1.0})
    with pytest.raises(ValidationError):
        EnvOptions(seeds=(1, 1))
    with pytest.raises(ValidationError):
        TrainOptions.model_validate({"timesteps": 100, "lr": 1e-3})
    cfg = RlConfig()
    with pytest.raises(ValidationError):
        cfg.checkpoint = "other.npz"  # type: ignore[misc]


# -- the plugin: fallback ----------------------------------------------------------------------------------


def test_missing_checkpoint_falls_back_to_band_with_one_event(tmp_path: Path) -> None:
    policy, ev = policy_at(tmp_path / "none.npz", ASSETS)
    band = BandPolicy(BandConfig(band=0.05, measure="risk"))
    cur, t = np.array([0.2, 0.3, 0.49]), target([0.5, 0.3, 0.19])
    for _ in range(3):
        d = policy.decide(cur, t, F)
        assert d.weights == pytest.approx(band.decide(cur, t, F).weights)
        assert d.reason.startswith("rl fallback to band")
    assert [e.kind for e in ev.got] == ["policy_fallback"]  # once per reason, not every cycle
    assert "no checkpoint" in ev.got[0].message and ev.got[0].where == "policy:rl"
    assert policy.fallbacks == 3


def test_checkpoint_for_other_assets_or_features_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "two.npz", random_actor(2, 0.1), meta_for(("a", "b")))
    policy, ev = policy_at(tmp_path / "two.npz", ASSETS)
    policy.decide(np.array([0.2, 0.3, 0.49]), target([0.5, 0.3, 0.19]), F)
    assert "trained for assets ['a', 'b']" in ev.got[0].message and "retrain" in ev.got[0].message
    save_checkpoint(tmp_path / "old.npz", random_actor(3, 0.1), meta_for(ASSETS, feature_version=FEATURE_VERSION + 1))
    with pytest.raises(CheckpointError, match="features"):
        load_checkpoint(tmp_path / "old.npz", ASSETS)
    # a network whose input does not match the features of three assets: a shape mismatch, refused
    bad = Actor((np.zeros((4, 7)), np.zeros((1, 4))), (np.zeros(4), np.zeros(1)))
    save_checkpoint(tmp_path / "shape.npz", bad, meta_for(ASSETS))
    with pytest.raises(CheckpointError, match="inputs"):
        load_checkpoint(tmp_path / "shape.npz", ASSETS)
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path / "junk.npz", ASSETS)


def test_nan_action_falls_back_and_a_good_checkpoint_is_picked_up(tmp_path: Path) -> None:
    nan = random_actor(3, 0.1, action="gap_fraction")
    nan = Actor((nan.weights[0], nan.weights[1] * np.nan), nan.biases)
    path = tmp_path / "rl.npz"
    save_checkpoint(path, nan, meta_for(ASSETS, action="gap_fraction"))
    policy, ev = policy_at(path, ASSETS)
    cur, t = np.array([0.30, 0.30, 0.39]), target([0.33, 0.33, 0.33])
    d = policy.decide(cur, t, F)
    assert d.reason.startswith("rl fallback") and "non-finite action" in ev.got[-1].message
    # the file is replaced by a good network: the next cycle uses it, without a restart
    time.sleep(0.01)
    save_checkpoint(path, constant_actor(3, [0.0, 0.0, 0.0]), meta_for(ASSETS, action="gap_fraction"))
    import os

    os.utime(path, (time.time() + 5, time.time() + 5))
    d = policy.decide(cur, t, F)
    assert d.reason.startswith("rl: closed 0.50")  # x = 0 closes half of each gap
    assert d.weights == pytest.approx(cur + 0.5 * (t.weights - cur))
    assert len(ev.got) == 1


def test_a_shape_mismatch_or_a_non_finite_observation_falls_back(tmp_path: Path) -> None:
    path = tmp_path / "rl.npz"
    save_checkpoint(path, random_actor(3, 0.1), meta_for(ASSETS))
    policy, ev = policy_at(path, ASSETS)
    cur = np.array([0.3, 0.3, 0.39])
    odd = Target(ASSETS, np.full(3, 0.33), np.full(3, 1 / 3), 0.01, np.zeros(2, bool))  # flags for two assets
    d = policy.decide(cur, odd, F)
    assert d.reason.startswith("rl fallback") and "observation has" in ev.got[-1].message
    nan = Forecast(ASSETS, np.full((3, 3), np.nan), np.full(3, np.nan), np.full((3, 3), np.nan), "broken")
    d = policy.decide(cur, target([0.33, 0.33, 0.33]), nan)
    assert d.reason.startswith("rl fallback") and "non-finite observation" in ev.got[-1].message
    assert policy.fallbacks == 2 and len(ev.got) == 2


def test_the_book_is_built_in_full_before_the_network_decides(tmp_path: Path) -> None:
    path = tmp_path / "rl.npz"
    save_checkpoint(path, random_actor(3, 5.0), meta_for(ASSETS))
    policy, _ = policy_at(path, ASSETS)
    d = policy.decide(np.zeros(3), target([0.3, 0.3, 0.39]), F)
    assert d.trade and d.weights == pytest.approx([0.3, 0.3, 0.39]) and "building" in d.reason


# -- the plugin: bounds and speed ------------------------------------------------------------------------------


weight = st.floats(0.0, 1.0).map(lambda v: v if v > 1e-6 else 0.0)  # no subnormal weights: real books have none
simplex = st.lists(weight, min_size=3, max_size=3).map(lambda v: np.array(v) / max(sum(v), 1e-9))


@given(cur=simplex, tgt=simplex, seed=st.integers(0, 10_000), scale=st.sampled_from([0.1, 10.0, 1e6]),
       action=st.sampled_from(["band", "band_fraction", "gap_fraction"]))  # fmt: skip
def test_whatever_the_network_outputs_each_weight_stays_between_holding_and_target(
    cur: np.ndarray, tgt: np.ndarray, seed: int, scale: float, action: str
) -> None:
    actor = random_actor(3, scale, seed, action=action)
    state = FeatureState(np.full(3, 3.0))
    t = Target(ASSETS, tgt * 0.99, tgt, 0.01, np.zeros(3, bool))
    obs = state.observe(cur, t, F)
    assert obs.shape == (n_features(3),) and np.all(np.abs(obs) <= 10)
    w = apply_action(action, cur, t.weights, F, actor(obs)).weights
    lo, hi = np.minimum(cur, t.weights), np.maximum(cur, t.weights)
    assert np.all(w >= lo - 1e-12) and np.all(w <= hi + 1e-12)
    assert w.sum() <= max(cur.sum(), t.weights.sum()) + 1e-12
    with pytest.raises(ValueError, match="non-finite"):
        apply_action(action, cur, t.weights, F, np.full(action_dim(action, 3), np.inf))
    with pytest.raises(ValueError, match="shape"):
        apply_action(action, cur, t.weights, F, np.zeros(4))


@given(cur=simplex, tgt=simplex, band=st.sampled_from([0.02, 0.05, 0.2, 0.5]))
def test_a_constant_width_and_full_moves_are_the_band_policy(cur: np.ndarray, tgt: np.ndarray, band: float) -> None:
    """θ = band (and φ = 1) decides what ``band`` (risk measure, to target) decides: the family the RL extends."""
    x = np.array([band_action(band)])
    assert band_params(x) == pytest.approx((band, 1.0))
    t = Target(ASSETS, tgt * 0.99, tgt, 0.01, np.zeros(3, bool))
    theirs = BandPolicy(BandConfig(band=band, measure="risk")).decide(cur, t, F)
    for kind, xs in (("band", x), ("band_fraction", np.array([x[0], 1.0]))):
        mine = apply_action(kind, cur, t.weights, F, xs)
        assert mine.trade == theirs.trade and mine.weights == pytest.approx(theirs.weights, abs=1e-12)


@pytest.mark.parametrize("action", ["band", "band_fraction", "gap_fraction"])
def test_a_wild_network_never_trades_past_the_caps_on_the_engine(tmp_path: Path, pm, action: str) -> None:  # noqa: ANN001
    """A checkpoint of large random weights (bang-bang, arbitrary actions) runs the default config's cycles:
    every decided weight stays under the cycle's ceiling (liquidity cap L_i, operator cap, a kept
    holding), and never above the larger of the holding and the target."""
    from bot.fast import FastBacktest

    cfg = parse_config(paper_dict(tmp_path), "paper-offline")
    assets = cfg.asset_names
    path = tmp_path / "wild.npz"
    save_checkpoint(path, random_actor(len(assets), 3.0, seed=7, action=action),
                    meta_for(assets, action=action, cost_bps=[3.0] * 4 + [20.0] * 4))  # fmt: skip
    policy, ev = policy_at(path, assets)
    run = FastBacktest(scenario_config(cfg, Scenario(5, True, START)), 150, start=START, research=True, pm=pm,
                       policy=policy)  # fmt: skip
    partial = trades = 0
    while not run.done:
        s = run.step()
        aim, cur = s.targeted.aim.weights, s.w_before
        out = s.decided.decision.weights
        assert np.all(out <= np.maximum(cur, aim) + 1e-12) and np.all(out >= np.minimum(cur, aim) - 1e-12)
        assert np.all(s.decided.weights <= s.targeted.upper_decide + 1e-12)
        assert np.all(s.decided.weights <= s.bounds.hard + 1e-12)
        partial += int(np.any((out > np.minimum(cur, aim) + 1e-6) & (out < np.maximum(cur, aim) - 1e-6)))
        trades += int(s.decided.decision.trade)
    assert not ev.got and policy.fallbacks == 0  # the network decided every cycle
    assert trades > 5 and (action != "band" or trades < run.cycles)  # the band holds some hours
    assert partial > 5 or action == "band"  # the fractions trade partway, not only the corners


def test_decides_well_under_ten_milliseconds(tmp_path: Path) -> None:
    n = 8
    assets = tuple(f"x{i}" for i in range(n))
    path = tmp_path / "rl.npz"
    save_checkpoint(path, Actor((np.zeros((64, n_features(n))), np.zeros((64, 64)), np.zeros((1, 64))),
                                (np.zeros(64), np.zeros(64), np.zeros(1))), meta_for(assets))  # fmt: skip
    policy, _ = policy_at(path, assets)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, n)) * 1e-2
    f = Forecast.from_cov(assets, a @ a.T + np.eye(n) * 1e-5, "t")
    t = Target(assets, np.full(n, 0.99 / n), np.full(n, 1 / n), 0.01, np.zeros(n, bool))
    times = []
    for _ in range(200):
        cur = t.weights * rng.uniform(0.9, 1.1, n)
        t0 = time.perf_counter()
        d = policy.decide(cur, t, f)
        times.append(time.perf_counter() - t0)
        assert not d.reason.startswith("rl fallback")
    assert float(np.median(times)) < 0.002, f"median {np.median(times) * 1e3:.2f} ms"


# -- evaluation --------------------------------------------------------------------------------------------------


def test_paired_differences_and_their_bootstrap_errors() -> None:
    rng = np.random.default_rng(0)

    def series(net: np.ndarray) -> Series:
        z = np.zeros_like(net)
        return Series(net, z, z, z, z, z)

    base = [series(rng.normal(0, 1e-4, 2000)) for _ in range(3)]
    shifted = [series(s.net + 1e-6) for s in base]
    d = paired(shifted, base, 0.0, draws=200)
    assert d["objective"][0] == pytest.approx(1e-6 * 8760 * 1e4) and d["objective"][1] < 1e-6  # no noise in it
    other = [series(rng.normal(0, 1e-4, 2000)) for _ in range(3)]
    x, se = paired(other, base, 0.0, draws=400)["objective"]
    iid_se = np.sqrt(2) * 1e-4 / np.sqrt(6000) * 8760 * 1e4
    assert 0.6 * iid_se < se < 1.5 * iid_se  # independent hours: the block bootstrap's SE is the iid one
    assert "does not beat" in verdict_of((x, se)) and "beats the tuned band by 5.0" in verdict_of((5.0, 1.0))
    assert "worse by 5.0" in verdict_of((-5.0, 1.0))


def test_evaluate_runs_the_protocol_end_to_end(tmp_path: Path, pm) -> None:  # noqa: ANN001
    cfg = toy_config(tmp_path)
    path = tmp_path / "rl.npz"
    opts = EnvOptions(episode_hours=24, kappa=1000.0, seeds=(1, 2), stress_share=0.5, start_span_days=30)
    meta = meta_for(cfg.asset_names, cost_bps=[41.0] * 3, train=TrainOptions(env=opts).model_dump(mode="json"))
    save_checkpoint(path, random_actor(3, 0.5), meta)
    with pytest.raises(ValueError, match="were training seeds"):
        evaluate(cfg, path, meta, seeds=(2, 9), stressed=(False, False), pm=pm)
    ev = evaluate(cfg, path, meta, hours=48, tune_hours=48, seeds=(9, 10), stressed=(False, True),
                  grid=(0.05, 0.3), draws=50, pm=pm)  # fmt: skip
    assert set(ev.metrics) == {"full", "band", "rl"} and ev.band in (0.05, 0.3)
    assert ev.tuning[f"{ev.band:g}"] == max(ev.tuning.values())
    assert ev.fallbacks == 0 and ev.verdict.startswith("rl ")
    assert ev.metrics["full"]["costs"] > 0 and ev.metrics["full"]["turnover"] > ev.metrics["band"]["turnover"] * 0.5
    assert "| objective, bp/yr |" in markdown(ev)
    # the buildup is left out: a run covers exactly the hours asked for
    s = run_policy(cfg, Scenario(9, False, START), 30, FullPolicy(), pm)
    assert len(s.net) == 30 and BUILDUP_HOURS == 24


def test_the_cli_offers_rl_train_and_evaluate() -> None:
    from bot.cli import plugin_commands

    cmds = plugin_commands(set())
    assert "rl" in cmds
    group = cmds["rl"]
    assert set(group.commands) == {"train", "evaluate"}
