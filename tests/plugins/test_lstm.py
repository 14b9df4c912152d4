from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.components import ComponentContext
from bot.domain import RiskEvent
from bot.evaluate import walk_forward
from plugins.forecasters.lstm import (
    LstmConfig,
    LstmForecaster,
    build_dcc_net,
    build_net,
    combine,
    corr_cholesky,
    ewma_vol_path,
    gain_t,
    n_features,
    nll,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SMALL = dict(window_hours=12, hidden=8, epochs=12, patience=3, batch_size=64, min_train_hours=200, threads=1)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t


def switching_corr(t: int, seed: int = 0) -> np.ndarray:
    """Two assets whose correlation flips between +0.8 and −0.8 in persistent regimes (mean 60 h)."""
    rng = np.random.default_rng(seed)
    state, out = 0, np.empty((t, 2))
    for k in range(t):
        if rng.random() < 1 / 60:
            state = 1 - state
        rho = 0.8 if state else -0.8
        z1, z2 = rng.standard_normal(2)
        out[k] = [z1, rho * z1 + math.sqrt(1 - rho * rho) * z2]
    return out * 1e-3


def test_output_is_a_correlation_matrix_by_construction() -> None:
    torch.manual_seed(0)
    n = 6
    net = build_net(n, 16, np.eye(n))
    for p in net.parameters():  # far from the zero-initialised head: arbitrary weights
        torch.nn.init.normal_(p, std=3.0)
    x = torch.randn(64, 10, 2 * n) * 10
    with torch.no_grad():
        chol = net(x).double()
    r = chol @ chol.transpose(1, 2)
    assert torch.allclose(r, r.transpose(1, 2))
    assert torch.allclose(torch.diagonal(r, dim1=1, dim2=2), torch.ones(64, n, dtype=torch.float64), atol=1e-6)
    assert torch.linalg.eigvalsh(r).min() > 0
    floor = 0.05 / math.sqrt(1 + 0.05**2) - 1e-6
    assert torch.diagonal(chol, dim1=1, dim2=2).min() >= floor
    assert torch.logdet(r).min() >= 2 * (n - 1) * math.log(floor)


def test_constant_correlation_start_is_the_unshrunk_sample_correlation() -> None:
    z = np.random.default_rng(3).standard_normal((400, 3)) @ np.array([[1, 0, 0], [0.9, 0.3, 0], [0.2, -0.5, 0.7]]).T
    l0 = corr_cholesky(z)
    assert l0 @ l0.T == pytest.approx(np.corrcoef(z, rowvar=False), abs=1e-12)
    # a singular correlation (a duplicated asset) gets the smallest jitter that makes it PD, no more
    dup = np.column_stack([z[:, 0], z[:, 0], z[:, 1]])
    l1 = corr_cholesky(dup)
    c1 = l1 @ l1.T
    assert np.all(np.isfinite(l1)) and np.linalg.eigvalsh(c1).min() > 0
    assert np.diag(c1) == pytest.approx(1.0, abs=1e-12)
    assert c1 == pytest.approx(np.corrcoef(dup, rowvar=False), abs=1e-5)


def test_untrained_network_is_the_constant_correlation_and_nll_is_gaussian() -> None:
    z = switching_corr(500) / 1e-3
    l0 = corr_cholesky(z)
    net = build_net(2, 8, l0)
    with torch.no_grad():
        chol = net(torch.randn(3, 5, 4))[0].double().numpy()
    assert chol @ chol.T == pytest.approx(l0 @ l0.T, abs=1e-5)
    # nll = log det R + zᵀR⁻¹z, checked against numpy
    r = np.array([[1.0, 0.3], [0.3, 1.0]])
    zz = np.array([[0.5, -1.0], [2.0, 0.1]])
    expected = np.mean([math.log(np.linalg.det(r)) + v @ np.linalg.solve(r, v) for v in zz])
    lt = torch.as_tensor(np.linalg.cholesky(r))[None].repeat(2, 1, 1)
    assert float(nll(lt, torch.as_tensor(zz))) == pytest.approx(expected, rel=1e-10)


def test_gated_residual_is_a_correlation_matrix_by_construction() -> None:
    """Arbitrary weights and inputs, an arbitrary DCC factor: R = LLᵀ is symmetric, unit-diagonal and PD."""
    torch.manual_seed(1)
    n = 5
    net = build_dcc_net(n, 16, n_features(n, True), -3.0, 1.0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=3.0)
    x = torch.randn(64, 10, n_features(n, True)) * 10
    rng = np.random.default_rng(0)
    c = []
    for _ in range(64):
        m = rng.standard_normal((n, n + 1))
        m = m @ m.T
        d = 1 / np.sqrt(np.diag(m))
        c.append(m * np.outer(d, d))
    l0 = torch.as_tensor(np.linalg.cholesky(np.array(c)))
    with torch.no_grad():
        p = net.residual(x).double()
        chol = combine(l0, p)
    assert float(p.abs().max()) <= 1.0 + 1e-6 and float(p.abs().max()) > 0.1  # bounded, and not trivially 0
    assert torch.equal(chol, torch.tril(chol))
    assert torch.diagonal(chol, dim1=1, dim2=2).min() > 0
    r = chol @ chol.transpose(1, 2)
    assert torch.allclose(torch.diagonal(r, dim1=1, dim2=2), torch.ones(64, n, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.eigvalsh(r).min() > 0
    assert not torch.allclose(r, l0 @ l0.transpose(1, 2), atol=1e-2)  # the residual did move R
    # and an untrained network adds exactly nothing
    fresh = build_dcc_net(n, 16, n_features(n, True), -3.0, 1.0)
    with torch.no_grad():
        assert float(fresh.residual(x).abs().max()) == 0.0
        assert torch.equal(combine(l0, fresh.residual(x).double()), l0 / l0.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("deseasonalise", [False, True])
def test_untrained_anchored_lstm_is_the_dcc_forecast(deseasonalise: bool) -> None:
    from plugins.forecasters.classic import DccConfig, DccForecaster
    from tests.plugins.test_forecasters_classic import simulate_dcc

    r = simulate_dcc(900, 0.05, 0.9, seed=31)
    assets = ("A", "B", "C")
    hour = 17
    fc = LstmForecaster(LstmConfig(**{**SMALL, "epochs": 2, "deseasonalise": deseasonalise, "anchor": "dcc"}))
    fc.fit(assets, r[:800], last_hour=hour)
    cfg = fc.cfg
    fc.net = build_dcc_net(3, cfg.hidden, n_features(3, True), cfg.gate_init, cfg.max_step).eval()  # untrained
    dcc = DccForecaster(DccConfig(min_observations=100, deseasonalise=deseasonalise))
    dcc.fit(assets, r[:800], last_hour=hour)
    assert (fc.meta["dcc"]["a"], fc.meta["dcc"]["b"]) == pytest.approx((dcc.params.a, dcc.params.b), rel=1e-9)
    for t in (800, 801, 850):  # the first call filters from the start, the next ones continue the state
        f = fc.predict(assets, r[:t], last_hour=(hour + t - 800) % 24)
        g = dcc.predict(assets, r[:t], last_hour=(hour + t - 800) % 24)
        assert f.corr == pytest.approx(g.corr, abs=1e-6)
        assert f.cov == pytest.approx(g.cov, rel=1e-6)
    assert f.diagnostics["anchor"] == "dcc"


@pytest.mark.parametrize("vol_model", ["garch", "ewma"])
def test_anchored_lstm_state_continues_like_a_full_refilter(vol_model: str) -> None:
    r = switching_corr(900, seed=8)
    fc = LstmForecaster(LstmConfig(**{**SMALL, "epochs": 3, "vol_model": vol_model, "anchor": "dcc"}))
    fc.fit(("A", "B"), r[:700])
    for t in range(700, 712):
        inc = fc.predict(("A", "B"), r[:t])  # continues the filter row by row
    fc._state = None
    full = fc.predict(("A", "B"), r[:711])  # filters from scratch
    assert inc.cov == pytest.approx(full.cov, rel=1e-9)
    changed = r[:711].copy()
    changed[-20] *= 5  # an edited past row (before the input window) must not be continued from the cached state
    assert not np.allclose(fc.predict(("A", "B"), changed).cov, full.cov)
    fc._state = None
    assert fc.predict(("A", "B"), r[:711]).cov == pytest.approx(full.cov, rel=1e-12)


def test_ewma_vol_path_recursion() -> None:
    r = np.random.default_rng(1).standard_normal((50, 2))
    v = ewma_vol_path(r, 10.0)
    lam = 0.5 ** (1 / 10)
    assert v[5] == pytest.approx(lam * v[4] + (1 - lam) * r[4] ** 2)
    assert v.shape == (51, 2)


@pytest.mark.parametrize("anchor", ["dcc", "constant"])
def test_learns_switching_correlation_deterministically(anchor: str) -> None:
    r = switching_corr(1400, seed=2)
    a = LstmForecaster(LstmConfig(**SMALL, anchor=anchor))
    info = a.fit(("A", "B"), r)
    if anchor == "constant":
        assert info["val_nll"] < info["val_nll_constant_corr"] - 0.1  # it found the regimes
    else:  # DCC tracks the regimes itself (a + b < 1, a ≫ 0); the residual may only improve on it
        assert a.meta["dcc"]["a"] > 0.1
        assert info["val_nll"] <= info["val_nll_dcc"] < 1.3
    b = LstmForecaster(LstmConfig(**SMALL, anchor=anchor))
    b.fit(("A", "B"), r)
    fa, fb = a.predict(("A", "B"), r), b.predict(("A", "B"), r)
    assert fa.cov == pytest.approx(fb.cov, rel=1e-6)  # fixed seed: same model
    fa.validate()
    # recent returns decide the sign of the forecast correlation
    up = r.copy()
    up[-12:, 1] = up[-12:, 0]
    down = r.copy()
    down[-12:, 1] = -down[-12:, 0]
    c_up, c_down = a.predict(("A", "B"), up).corr[0, 1], a.predict(("A", "B"), down).corr[0, 1]
    assert c_up > 0.3 > -0.3 > c_down
    # the process is symmetric in the sign of ρ (±0.8 regimes), so mirrored inputs give mirrored forecasts;
    # a model that only tracked the (≈ 0) average correlation would not pass the line above, one that kept a
    # sign bias would not pass this one
    assert abs(c_up + c_down) < 0.3


def test_gain_t_uses_weekly_block_means() -> None:
    rng = np.random.default_rng(0)
    start = rng.standard_normal(168 * 20)
    noise = rng.standard_normal(168 * 20)
    t = gain_t(start - 0.1 + noise, start)
    blocks = (noise - 0.1).reshape(20, 168).mean(axis=1)
    assert t == pytest.approx(blocks.mean() / (blocks.std(ddof=1) / math.sqrt(20)))
    assert t < -2
    assert gain_t(start[:300] - 1.0, start[:300]) == 0.0  # one block: no SE, not significant


def test_min_gain_se_keeps_the_start_unless_the_gain_is_beyond_noise() -> None:
    """With the rule on, a network is kept only if its held-out gain over its start is significant."""
    r = switching_corr(2400, seed=2)  # held out: 480 h, two weekly blocks
    loose = LstmForecaster(LstmConfig(**SMALL, anchor="constant"))
    info = loose.fit(("A", "B"), r)
    assert not info["kept_start"] and info["val_gain_t"] < -2  # the regimes are a large, clear gain
    strict = LstmForecaster(LstmConfig(**SMALL, anchor="constant", min_gain_se=2.0))
    assert not strict.fit(("A", "B"), r)["kept_start"]
    assert strict.predict(("A", "B"), r).cov == pytest.approx(loose.predict(("A", "B"), r).cov, rel=1e-6)
    # on i.i.d. returns the anchored network has nothing to learn: the "gain" it finds is noise (seed 5:
    # without the rule it is kept at t ≈ −0.8), and with the rule the start — the DCC forecast — is kept
    from plugins.forecasters.classic import DccConfig, DccForecaster

    x = np.random.default_rng(5).standard_normal((2400, 2)) @ np.array([[1.0, 0.0], [0.5, 0.8]]) * 1e-3
    info = LstmForecaster(LstmConfig(**SMALL)).fit(("A", "B"), x)
    assert not info["kept_start"] and -2 < info["val_gain_t"] < 0
    noisy = LstmForecaster(LstmConfig(**SMALL, min_gain_se=2.0))
    info = noisy.fit(("A", "B"), x)
    assert info["kept_start"] and info["val_nll"] == info["val_nll_dcc"]
    dcc = DccForecaster(DccConfig(min_observations=100))
    dcc.fit(("A", "B"), x)
    assert noisy.predict(("A", "B"), x).cov == pytest.approx(dcc.predict(("A", "B"), x).cov, rel=1e-6)


@pytest.mark.parametrize("deseasonalise,anchor", [(False, "dcc"), (True, "dcc"), (False, "constant")])
def test_lstm_walk_forward_has_no_look_ahead(deseasonalise: bool, anchor: str) -> None:
    r = switching_corr(560, seed=3)
    r2 = r.copy()
    r2[500:] *= -3.0
    hours = (np.arange(len(r) + 1) + 5) % 24  # close hour of each price row, for the hour-of-day scale

    def run(x: np.ndarray) -> dict:
        cfg = LstmConfig(**{**SMALL, "epochs": 3, "deseasonalise": deseasonalise, "anchor": anchor})
        fcs = {"lstm": LstmForecaster(cfg)}
        return walk_forward(fcs, ("A", "B"), x, warmup=450, refit_every=40, last_hours=hours)["lstm"]

    pa, pb = run(r), run(r2)
    a, b = pa.cov, pb.cov
    assert pa.failures == [] and pa.fits == 3  # rows 450, 490, 530: a refit after the change is covered
    assert np.array_equal(a[:501], b[:501], equal_nan=True)
    assert not np.allclose(a[502:], b[502:])


def make(tmp_path: Path, **kw: object) -> tuple[LstmForecaster, list[RiskEvent], FakeClock]:
    events: list[RiskEvent] = []
    clock = FakeClock(T0)
    ctx = ComponentContext(clock, tmp_path, ("A", "B"), events.append)
    return LstmForecaster(LstmConfig(**{**SMALL, **kw}), ctx), events, clock


def test_fallback_then_background_training_then_lstm(tmp_path: Path) -> None:
    fc, events, clock = make(tmp_path)
    r = switching_corr(600, seed=4)
    f = fc.forecast(("A", "B"), r)
    assert f.model == "ewma" and f.diagnostics["fallback_from"] == "lstm"
    from plugins.forecasters.basic import EwmaConfig, EwmaForecaster

    assert f.cov == pytest.approx(EwmaForecaster(EwmaConfig(half_life_hours=72.0)).forecast(("A", "B"), r).cov)
    assert [e.kind for e in events] == ["forecast_fallback"] and "no checkpoint" in events[0].message
    f.validate()
    fc._thread.join(timeout=60)  # the forecast returned before training finished
    assert (tmp_path / "lstm.pt").exists()
    fc.forecast(("A", "B"), r)
    assert len(events) == 1  # one event per reason, not per call
    g = fc.forecast(("A", "B"), r)
    assert g.model == "lstm"
    g.validate()
    # a fresh forecaster (daemon restart) loads the checkpoint
    fc2, events2, _ = make(tmp_path, auto_retrain=False)
    assert fc2.forecast(("A", "B"), r).cov == pytest.approx(g.cov, rel=1e-6)
    assert events2 == []


def test_fallback_when_stale_invalid_or_corrupt(tmp_path: Path) -> None:
    fc, events, clock = make(tmp_path, auto_retrain=False, max_age_hours=48.0)
    r = switching_corr(600, seed=5)
    fc.retrain(("A", "B"), r, T0)
    assert fc.forecast(("A", "B"), r).model == "lstm"
    clock.t = T0 + timedelta(hours=49)
    f = fc.forecast(("A", "B"), r)
    assert f.model == "ewma" and "stale" in f.diagnostics["reason"]
    assert events[-1].kind == "forecast_fallback" and events[-1].where == "forecaster:lstm"
    clock.t = T0 + timedelta(hours=1)
    assert fc.forecast(("A", "B"), r).model == "lstm"
    assert fc.forecast(("C", "D"), r).diagnostics["reason"] == "checkpoint made for other assets"
    with torch.no_grad():
        next(fc.net.head.parameters()).fill_(float("nan"))
    f = fc.forecast(("A", "B"), r)
    assert f.model == "ewma" and f.diagnostics["reason"].startswith("invalid output")
    f.validate()
    (tmp_path / "lstm.pt").write_bytes(b"not a checkpoint")
    f = fc.forecast(("A", "B"), r)
    assert f.model == "ewma" and "unreadable" in f.diagnostics["reason"]
    assert len(events) == 4


def test_checkpoint_of_another_model_config_falls_back_and_is_due(tmp_path: Path) -> None:
    """After an upgrade that changed a default (anchor constant → dcc), the old model must not be served."""
    old, _, _ = make(tmp_path, auto_retrain=False, anchor="constant")
    r = switching_corr(600, seed=5)
    old.retrain(("A", "B"), r, T0)
    fc, events, _ = make(tmp_path, auto_retrain=False)  # today's default: anchor = "dcc"
    f = fc.forecast(("A", "B"), r)
    assert f.model == "ewma" and "anchor: 'constant' → 'dcc'" in f.diagnostics["reason"]
    assert [e.kind for e in events] == ["forecast_fallback"]
    assert fc.retrain_due(T0 + timedelta(hours=1))
    # options that only steer scheduling or threads keep the checkpoint
    same, events2, _ = make(tmp_path, auto_retrain=False, anchor="constant", max_age_hours=100.0, retrain_every_hours=6)
    assert same.forecast(("A", "B"), r).model == "lstm" and events2 == []
    assert not same.retrain_due(T0 + timedelta(hours=1))
    # with auto_retrain on, the mismatch starts a retraining under the new config, which is then served
    fresh, _, _ = make(tmp_path)
    assert fresh.forecast(("A", "B"), r).model == "ewma"
    fresh._thread.join(timeout=120)
    g = fresh.forecast(("A", "B"), r)
    assert g.model == "lstm" and g.diagnostics["anchor"] == "dcc"


def test_fallback_when_predict_raises_anything(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Not only ForecastError: a torch RuntimeError or a numpy error in predict must not fail the cycle."""
    fc, events, clock = make(tmp_path, auto_retrain=False)
    r = switching_corr(600, seed=5)
    fc.retrain(("A", "B"), r, T0)
    assert fc.forecast(("A", "B"), r).model == "lstm"
    good = fc.net.head.weight.data
    fc.net.head.weight.data = torch.zeros(good.shape[0], good.shape[1] + 3)  # a tensor of the wrong shape
    with pytest.raises(RuntimeError):
        fc.predict(("A", "B"), r)
    with caplog.at_level("WARNING", logger="plugins.forecasters.lstm"):
        f = fc.forecast(("A", "B"), r)
    assert f.model == "ewma" and f.diagnostics["reason"].startswith("predict failed: RuntimeError")
    f.validate()
    assert events[-1].kind == "forecast_fallback" and "RuntimeError" in events[-1].message
    assert any("RuntimeError" in rec.getMessage() for rec in caplog.records)
    # a checkpoint whose GARCH margins are for the wrong number of assets: numpy raises IndexError, not ForecastError
    blob = torch.load(tmp_path / "lstm.pt", weights_only=True)
    blob["meta"]["garch"] = {k: v[:1] for k, v in blob["meta"]["garch"].items()}
    torch.save(blob, tmp_path / "lstm.pt")
    f = fc.forecast(("A", "B"), r)
    assert f.model == "ewma" and f.diagnostics["reason"].startswith("predict failed: IndexError")
    assert len([e for e in events if e.kind == "forecast_fallback"]) == 2


def test_retrain_deseasonalises_with_the_hour_of_its_data_not_the_clock(tmp_path: Path) -> None:
    from plugins.forecasters.seasonal import hour_of_day_scale, hours_of_rows

    fc, events, clock = make(tmp_path, auto_retrain=False, deseasonalise=True, epochs=1)
    r = switching_corr(600, seed=7) * (1 + 2.0 * (np.arange(600) % 24 == 3))[:, None]
    clock.t = T0 + timedelta(hours=11)  # the clock says 11 UTC; the returns were fetched at 05 UTC

    def expected(last: int) -> np.ndarray:
        return hour_of_day_scale(r, hours_of_rows(len(r), last))

    fc.retrain(("A", "B"), r, T0 + timedelta(hours=5))
    assert fc.meta["scale"] == pytest.approx(expected(5), rel=1e-12)
    assert not np.allclose(expected(5), expected(11))  # the test can tell the two hours apart
    fc.retrain(("A", "B"), r, T0 + timedelta(hours=5), last_hour=8)  # an explicit hour wins
    assert fc.meta["scale"] == pytest.approx(expected(8), rel=1e-12)
    assert fc.retrain_async(("A", "B"), r, T0 + timedelta(hours=2))
    clock.t = T0 + timedelta(hours=20)  # the clock moves while the thread runs: it must not matter
    fc._thread.join(timeout=60)
    assert fc.meta["scale"] == pytest.approx(expected(2), rel=1e-12)


def test_inference_for_50_assets_gives_a_valid_forecast(tmp_path: Path) -> None:
    """Validity at the size the issue names; its speed is measured by bench/lstm_inference.py, not here."""
    n = 50
    fc = LstmForecaster(LstmConfig(min_train_hours=50))
    net = build_net(n, fc.cfg.hidden, np.eye(n))
    fc.net, fc.meta = net.eval(), {"assets": [f"a{i}" for i in range(n)], "scale": None}
    r = np.random.default_rng(0).standard_normal((800, n)) * 1e-3
    torch.set_num_threads(2)
    f = fc.predict(fc.meta["assets"], r)
    f.validate()
    assert f.cov.shape == (n, n)
    assert fc.cfg.threads == 1 and torch.get_num_threads() == 1  # inference on the configured threads
    assert np.linalg.eigvalsh(f.corr).min() > 0


def test_registered() -> None:
    from bot.plugins import Registry, make_plugin_manager

    assert ("forecaster", "lstm") in {(x.family, x.name) for x in Registry(make_plugin_manager())}


def test_deseasonalised_lstm_scales_the_forecast_hour() -> None:
    from plugins.forecasters.seasonal import hours_of_rows

    t, loud = 24 * 40, 14
    profile = np.where(np.arange(24) == loud, 3.0, 1.0)
    r = switching_corr(t, seed=6) * profile[hours_of_rows(t, last_hour=loud - 1)][:, None]
    fc = LstmForecaster(LstmConfig(**{**SMALL, "epochs": 2, "deseasonalise": True}))
    fc.fit(("A", "B"), r, last_hour=loud - 1)
    before_loud = fc.predict(("A", "B"), r, last_hour=loud - 1)
    plain = LstmForecaster(LstmConfig(**{**SMALL, "epochs": 2}))
    plain.fit(("A", "B"), r)
    assert np.all(before_loud.sigma > 1.8 * plain.predict(("A", "B"), r).sigma)


def vol_switching(t: int, seed: int = 0) -> np.ndarray:
    """Two assets whose volatility jumps ×4 in persistent regimes (mean 40 h calm, 20 h stress): GARCH(1,1)
    reacts to a jump over tens of hours, a model that recognises the regime can do better at once."""
    rng = np.random.default_rng(seed)
    state, out = 0, np.empty((t, 2))
    for k in range(t):
        if rng.random() < (1 / 20 if state else 1 / 40):
            state = 1 - state
        z1, z2 = rng.standard_normal(2)
        out[k] = np.array([z1, 0.3 * z1 + math.sqrt(1 - 0.09) * z2]) * (4.0 if state else 1.0)
    return out * 1e-3


def test_volatility_head_nll_is_the_gaussian_nll_of_the_scaled_covariance() -> None:
    """Σ = diag(e^s) R diag(e^s) in z units: nll(L, z·e^{−s}) + 2Σs = log det Σ + zᵀΣ⁻¹z."""
    r = np.array([[1.0, 0.3], [0.3, 1.0]])
    s = np.array([[0.4, -0.2], [-0.1, 0.7]])
    zz = np.array([[0.5, -1.0], [2.0, 0.1]])
    expected = []
    for v, si in zip(zz, s, strict=True):
        sig = np.diag(np.exp(si)) @ r @ np.diag(np.exp(si))
        expected.append(math.log(np.linalg.det(sig)) + v @ np.linalg.solve(sig, v))
    lt = torch.as_tensor(np.linalg.cholesky(r))[None].repeat(2, 1, 1)
    st = torch.as_tensor(s)
    got = nll(lt, torch.as_tensor(zz) * torch.exp(-st)) + 2.0 * st.sum(dim=1).mean()
    assert float(got) == pytest.approx(float(np.mean(expected)), rel=1e-10)


def test_untrained_volatility_head_keeps_the_dcc_forecast_and_is_bounded() -> None:
    from plugins.forecasters.classic import DccConfig, DccForecaster
    from tests.plugins.test_forecasters_classic import simulate_dcc

    r = simulate_dcc(900, 0.05, 0.9, seed=31)
    assets = ("A", "B", "C")
    fc = LstmForecaster(LstmConfig(**{**SMALL, "epochs": 2, "anchor": "dcc", "vol_correction": True}))
    fc.fit(assets, r[:800])
    cfg = fc.cfg
    fc.net = build_dcc_net(3, cfg.hidden, n_features(3, True), cfg.gate_init, cfg.max_step, cfg.max_vol_step).eval()
    dcc = DccForecaster(DccConfig(min_observations=100))
    dcc.fit(assets, r[:800])
    assert fc.predict(assets, r[:850]).cov == pytest.approx(dcc.predict(assets, r[:850]).cov, rel=1e-6)
    # arbitrary weights: the log-scales stay within ±max_vol_step
    net = build_dcc_net(3, 8, n_features(3, True), -3.0, 1.0, 0.5)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=3.0)
    with torch.no_grad():
        _, s = net.outputs(torch.randn(64, 10, n_features(3, True)) * 10)
    assert 0.1 < float(s.abs().max()) <= 0.5 + 1e-6


def test_volatility_head_learns_a_volatility_regime_and_survives_a_checkpoint(tmp_path: Path) -> None:
    r = vol_switching(3000, seed=4)
    kw = {**SMALL, "anchor": "dcc", "epochs": 25, "patience": 5}
    with_vol = LstmForecaster(LstmConfig(**kw, vol_correction=True))
    info = with_vol.fit(("A", "B"), r)
    without = LstmForecaster(LstmConfig(**kw))
    info0 = without.fit(("A", "B"), r)
    # the correlation is constant here, so only the volatility head can beat DCC by much
    assert info["val_nll"] < info["val_nll_dcc"] - 0.05
    assert info["val_nll"] < info0["val_nll"] - 0.05
    # out of sample, on a fresh path of the same process, it forecasts better than the same net without it
    # (2000 hours, ~65 regime switches: −0.08 nats/h, and lower in each quarter of them)
    fresh = vol_switching(4000, seed=5)

    def qlike(fc: LstmForecaster) -> np.ndarray:
        out = []
        for t in range(2000, 3999):
            c = fc.predict(("A", "B"), fresh[:t]).cov
            out.append(np.linalg.slogdet(c)[1] + fresh[t] @ np.linalg.solve(c, fresh[t]))
        return np.array(out)

    d = qlike(with_vol) - qlike(without)
    assert d.mean() < -0.03 and all(d[i : i + 500].mean() < 0 for i in range(0, 2000, 500))
    f = with_vol.predict(("A", "B"), fresh)
    f.validate()
    with_vol.save(tmp_path / "v.pt", T0)
    back = LstmForecaster(LstmConfig(**kw, vol_correction=True))
    back.load(tmp_path / "v.pt")
    assert back.predict(("A", "B"), fresh).cov == pytest.approx(f.cov, rel=1e-6)
