from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot import evaluate as ev
from bot.cli import app
from plugins.data.simulated import DEFAULT_UNIVERSE, SimulatedMarketConfig
from plugins.forecasters.basic import EwmaConfig, EwmaForecaster, SampleConfig, SampleForecaster
from plugins.forecasters.classic import DccConfig, DccForecaster, LedoitWolfForecaster

SIGMA = np.array([[4.0, 1.2, -0.4], [1.2, 2.0, 0.3], [-0.4, 0.3, 1.0]]) * 1e-6


def iid_returns(t: int, seed: int = 0, cov: np.ndarray = SIGMA) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(np.zeros(len(cov)), cov, size=t)


def test_qlike_by_hand() -> None:
    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    r = np.array([1.0, -2.0])
    det = 2.0 * 1.0 - 0.25
    inv = np.array([[1.0, -0.5], [-0.5, 2.0]]) / det
    expected = math.log(det) + r @ inv @ r
    assert ev.qlike(cov[None], r[None])[0] == pytest.approx(expected, rel=1e-12)
    bad = np.array([[[1.0, 2.0], [2.0, 1.0]]])  # not positive definite
    assert np.isnan(ev.qlike(bad, r[None])[0])


def test_stein_loss_is_expected_excess_qlike() -> None:
    m = SIGMA
    assert ev.stein_loss(m[None], m[None])[0] == pytest.approx(0.0, abs=1e-9)
    s_hat = np.diag(np.diag(m)) * 1.3
    # 2·KL(N(0,M) || N(0,Ŝ)) written out
    kl2 = np.trace(np.linalg.solve(s_hat, m)) - len(m) + math.log(np.linalg.det(s_hat) / np.linalg.det(m))
    stein = ev.stein_loss(s_hat[None], m[None])[0]
    assert stein == pytest.approx(kl2, rel=1e-10)
    r = iid_returns(200_000, seed=1)
    d = ev.qlike(np.broadcast_to(s_hat, (len(r), 3, 3)), r) - ev.qlike(np.broadcast_to(m, (len(r), 3, 3)), r)
    assert d.mean() == pytest.approx(stein, abs=4 * d.std() / math.sqrt(len(d)))


def test_block_bootstrap_se_needs_two_blocks() -> None:
    """One block is a rotation of the sample: its bootstrap SE would be exactly 0, which reads as certainty."""
    x = np.random.default_rng(0).standard_normal(150)
    assert math.isnan(ev.block_bootstrap_se(x, 168))
    assert math.isnan(ev.block_bootstrap_se(x, 76))
    assert ev.block_bootstrap_se(x, 75) > 0


def test_block_bootstrap_se() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal(20_000)
    assert ev.block_bootstrap_se(x, 1, n_boot=2000) == pytest.approx(1 / math.sqrt(len(x)), rel=0.1)
    # AR(1) with φ = 0.8: long-run variance σ²/(1−φ)² for unit innovations
    phi, t = 0.8, 20_000
    y = np.empty(t)
    y[0] = 0
    e = rng.standard_normal(t)
    for k in range(1, t):
        y[k] = phi * y[k - 1] + e[k]
    lr = 1 / (1 - phi) ** 2 / t
    se = ev.block_bootstrap_se(y, 200, n_boot=2000)
    assert se == pytest.approx(math.sqrt(lr), rel=0.25)
    assert se > 2 * ev.block_bootstrap_se(y, 1, n_boot=2000)


def test_portfolio_weights() -> None:
    w = ev.gmv_weights(SIGMA[None])[0]
    assert w.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = w + rng.normal(scale=0.05, size=3)
        v -= (v.sum() - 1) / 3
        assert v @ SIGMA @ v >= w @ SIGMA @ w
    e = ev.erc_weights(SIGMA[None])[0]
    rc = e * (SIGMA @ e)
    assert rc / rc.mean() == pytest.approx(1.0, abs=1e-6)
    assert (e > 0).all()


def test_stress_phase() -> None:
    reg = np.array([0] * 3 + [1] * 30 + [0] * 2 + [1] * 5)
    ph = ev.stress_phase(reg)
    assert list(ph[:3]) == [0, 0, 0]
    assert (ph[3:27] == 2).all() and (ph[27:33] == 1).all()
    assert (ph[35:] == 2).all()


class LastRowForecaster:
    """Σ = diag(last return²) + ε: makes the alignment visible."""

    name = "last"

    def forecast(self, assets, returns):  # noqa: ANN001, ANN201
        from bot.domain import Forecast

        return Forecast.from_cov(assets, np.diag(returns[-1] ** 2 + 1e-12), self.name)


def test_walk_forward_alignment_and_rolling_window() -> None:
    r = iid_returns(300)
    paths = ev.walk_forward(
        {"last": LastRowForecaster(), "sample": SampleForecaster(SampleConfig())}, "ABC", r, warmup=50, window=40
    )
    cov = paths["last"].cov
    assert np.isnan(cov[:50]).all() and cov.shape == (301, 3, 3)
    for t in (50, 120, 300):
        assert np.diag(cov[t]) == pytest.approx(r[t - 1] ** 2 + 1e-12)
        assert paths["sample"].cov[t] == pytest.approx(np.cov(r[t - 40 : t], rowvar=False), rel=1e-12)


def test_no_look_ahead() -> None:
    """Changing the data after t never changes a forecast at or before t (fits included)."""
    r = iid_returns(700, seed=3)
    cut = 520
    r2 = r.copy()
    r2[cut:] = iid_returns(180, seed=99) * 5.0

    hours = np.arange(len(r) + 1) % 24  # close hour of each price row, for the deseasonalised DCC

    def run(x: np.ndarray) -> dict[str, ev.ForecastPath]:
        fcs = {
            "sample": SampleForecaster(SampleConfig()),
            "ewma": EwmaForecaster(EwmaConfig(half_life_hours=24.0)),
            "ledoit_wolf": LedoitWolfForecaster(),
            "dcc": DccForecaster(DccConfig(min_observations=100)),
            "dcc_hod": DccForecaster(DccConfig(min_observations=100, deseasonalise=True)),
        }
        return ev.walk_forward(fcs, "ABC", x, warmup=400, refit_every=50, last_hours=hours)

    a, b = run(r), run(r2)
    for k in a:
        assert np.array_equal(a[k].cov[: cut + 1], b[k].cov[: cut + 1], equal_nan=True), k
        assert not np.allclose(a[k].cov[cut + 2 :], b[k].cov[cut + 2 :]), k
    assert a["dcc"].fits == a["dcc_hod"].fits == 7  # rows 400, 450, …, 700


def test_truth_market_whitens_its_returns() -> None:
    """On a jump-free market the truth M_t must whiten the returns: cov(M_t^{-1/2} r_t) ≈ I."""
    assets = tuple(a.model_copy(update={"jump_rate_per_year": 0.0}) for a in DEFAULT_UNIVERSE)
    market = ev.make_truth_market(SimulatedMarketConfig(seed=3, assets=assets, stress_episodes_per_year=20.0))
    h = 8000
    end = market.start + timedelta(hours=h)
    bars = market.bars(market.assets(), end, h)
    truth = market.truth(end, h)[1:]
    regime = market.regime(end, h)[1:]
    assert regime.mean() > 0.05  # stress is in the sample
    r = np.diff(np.log(bars.close), axis=0)
    w = np.linalg.solve(np.linalg.cholesky(truth), r[:, :, None])[:, :, 0]
    assert w.T @ w / len(w) == pytest.approx(np.eye(8), abs=0.06)
    # correlations really switch with the regime in the truth
    c = ev.cov_to_corr(truth)
    assert c[regime == 1, 0, 3].mean() > c[regime == 0, 0, 3].mean() + 0.3


def test_stein_loss_of_a_sample_covariance_matches_wishart_theory() -> None:
    """E[stein(S, Σ)] for S the ddof=1 sample covariance of T Gaussian draws, from Wishart moments:
    E tr(S⁻¹Σ) = N(T−1)/(T−N−2), E log det(SΣ⁻¹) = Σ_i ψ((T−i)/2) + N log(2/(T−1))."""
    from scipy.special import digamma

    n, t, reps = 3, 60, 3000
    x = np.random.default_rng(4).multivariate_normal(np.zeros(n), SIGMA, size=(reps, t))
    xc = x - x.mean(axis=1, keepdims=True)
    s = np.einsum("rti,rtj->rij", xc, xc) / (t - 1)
    loss = ev.stein_loss(s, np.broadcast_to(SIGMA, s.shape))
    e_logdet = sum(digamma((t - i) / 2) for i in range(1, n + 1)) + n * math.log(2 / (t - 1))
    theory = n * (t - 1) / (t - n - 2) + e_logdet - n  # stein = tr(S⁻¹Σ) + log det(SΣ⁻¹) − N
    assert loss.mean() == pytest.approx(theory, abs=3 * loss.std() / math.sqrt(reps))


def test_truth_based_excess_on_a_known_process() -> None:
    """i.i.d. N(0, Σ) with Σ known: the expanding sample covariance has a non-negative excess, lower
    than EWMA's (nothing beats it on constant Σ), and its mean equals the realized QLIKE difference."""
    t_ret, warm = 3000, 500
    r = iid_returns(t_ret, seed=7)
    truth = np.broadcast_to(SIGMA, (t_ret, 3, 3)).copy()
    paths = ev.walk_forward(
        {"sample": SampleForecaster(SampleConfig()), "ewma": EwmaForecaster(EwmaConfig())}, "ABC", r, warmup=warm
    )
    scores = {
        s.name: s
        for s in ev.score(paths, r, baseline="ewma", block=100, periods_per_year=8760, truth=truth, portfolios=False)
    }
    ex = ev.stein_loss(paths["sample"].cov[warm:t_ret], truth[warm:])
    assert (ex >= 0).all()
    assert scores["sample"].excess < scores["ewma"].excess  # constant Σ: nothing beats the sample
    assert scores["sample"].diff < -2 * scores["sample"].diff_se
    assert scores["ewma"].diff == 0.0 and scores["ewma"].diff_se == 0.0
    real = ev.qlike(paths["sample"].cov[warm:t_ret], r[warm:]) - ev.qlike(truth[warm:], r[warm:])
    assert real.mean() == pytest.approx(scores["sample"].excess, abs=4 * ev.block_bootstrap_se(real, 100))


def test_load_prices_reports_missing_and_misaligned(tmp_path: Path) -> None:
    p = tmp_path / "px.csv"
    p.write_text(
        "time,A,B\n"
        "2024-01-01,100,50\n2024-01-02,101,\n2024-01-03,102,51\n2024-01-03,102.5,51.5\n"
        "2024-01-04,-1,52\n2024-01-05,103,53\nnot a date,1,1\n2024-01-08,104,54\n"
    )
    ds = ev.load_prices_csv(str(p), "1d")
    assert ds.prices.shape == (4, 2)
    text = "\n".join(ds.report)
    assert "unparseable" in text and "duplicate" in text
    assert "A: 1 missing" in text and "B: 1 missing" in text
    assert "2 of 6 rows dropped" in text
    assert "span more than one 1d step" in text


def test_cli_evaluate_simulated(tmp_path: Path) -> None:
    out = tmp_path / "f.npz"
    csv = tmp_path / "s.csv"
    png = tmp_path / "q.png"
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--simulated",
            "700",
            "--warmup",
            "500",
            "--forecasters",
            "sample,ewma,lw=ledoit_wolf",
            "--assets",
            "SPY,TLT,GLD",
            "--save-forecasts",
            str(out),
            "--csv",
            str(csv),
            "--plot",
            str(png),
            "--options",
            '{"ewma": {"half_life_hours": 48.0}}',
            "--compare",
            "lw",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "excess over truth" in res.output and "Δ vs ewma" in res.output
    assert "lw − sample" in res.output and "lw − ewma" in res.output and "excess ratio" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    z = np.load(out)
    cov = z["cov_sample"]
    assert cov.shape == (700, 3, 3) and np.isnan(cov[:500]).all()
    # anyone can re-score: index t uses prices up to row t only
    r = np.diff(np.log(z["prices"]), axis=0)
    assert cov[600] == pytest.approx(np.cov(r[:600], rowvar=False), rel=1e-10)
    assert z["truth"].shape == (700, 3, 3)
    assert "lw" in csv.read_text()
    bad = CliRunner().invoke(app, ["evaluate", "--simulated", "700", "--baseline", "nope"])
    assert bad.exit_code == 2
    # the CSV's rows are the printed table's, and its excess equals a re-scoring of the saved forecasts
    import pandas as pd

    table = pd.read_csv(csv).set_index("name")
    assert list(table.index) == ["sample", "ewma", "lw"]
    truth_next = z["truth"][1:]  # truth[t + 1] is the second moment of the return scored at index t
    ok = np.isfinite(cov[:-1]).all(axis=(1, 2))
    assert table.loc["sample", "excess"] == pytest.approx(ev.stein_loss(cov[:-1][ok], truth_next[ok]).mean(), rel=1e-9)


def test_pairwise_differences_against_every_other_forecaster() -> None:
    t_ret, warm = 2000, 400
    r = iid_returns(t_ret, seed=8)
    truth = np.broadcast_to(SIGMA, (t_ret, 3, 3)).copy()
    paths = ev.walk_forward(
        {"sample": SampleForecaster(SampleConfig()), "ewma": EwmaForecaster(EwmaConfig())}, "ABC", r, warmup=warm
    )
    (p,) = ev.paired_differences(paths, r, "ewma", block=100, truth=truth)
    d = ev.qlike(paths["ewma"].cov[warm:t_ret], r[warm:]) - ev.qlike(paths["sample"].cov[warm:t_ret], r[warm:])
    assert (p.name, p.other) == ("ewma", "sample") and p.qlike_diff == pytest.approx(d.mean(), rel=1e-12)
    e_ew = ev.stein_loss(paths["ewma"].cov[warm:t_ret], truth[warm:])
    e_sa = ev.stein_loss(paths["sample"].cov[warm:t_ret], truth[warm:])
    assert p.excess_ratio == pytest.approx(e_ew.mean() / e_sa.mean(), rel=1e-12)
    assert p.excess_diff > 2 * p.excess_se > 0  # constant Σ: EWMA is worse than the sample, beyond noise
    assert "ewma − sample" in ev.format_pairs([p])
    # by regime: the phase means are the means of the paired excess over those hours
    regime = (np.arange(t_ret) // 100) % 3 == 2  # stress episodes of 100 hours
    (q,) = ev.paired_differences(paths, r, "ewma", block=100, truth=truth, regime=regime)
    d_ex = e_ew - e_sa
    calm, first = ~regime[warm:], ev.stress_phase(regime)[warm:] == 2
    assert q.excess_by_phase["calm"][0] == pytest.approx(d_ex[calm].mean(), rel=1e-12)
    assert q.excess_by_phase["stress"][0] == pytest.approx(d_ex[~calm].mean(), rel=1e-12)
    assert q.excess_by_phase["stress_first24h"][0] == pytest.approx(d_ex[first].mean(), rel=1e-12)
    assert "Δ excess stress first24h ±SE" in ev.format_pairs([q])


def test_cli_evaluate_prices_reports_missing_values_and_calendars(tmp_path: Path) -> None:
    """A crypto asset trading every day next to two weekday-only assets, with a gap and a bad price."""
    import pandas as pd

    days = pd.date_range("2023-01-02", periods=400, freq="D")
    rng = np.random.default_rng(11)
    px = pd.DataFrame(
        100 * np.exp(np.cumsum(rng.normal(0, 0.01, (400, 3)), axis=0)), index=days, columns=["STOCK", "BOND", "COIN"]
    )
    px.loc[px.index.day_of_week >= 5, ["STOCK", "BOND"]] = np.nan  # weekday calendar vs every day
    px.iloc[100, 0] = np.nan  # a missing print
    px.iloc[150, 1] = -1.0  # a bad price
    path = tmp_path / "px.csv"
    px.rename_axis("time").to_csv(path)
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--prices",
            str(path),
            "--freq",
            "1d",
            "--warmup",
            "150",
            "--forecasters",
            "sample,ewma",
            "--no-portfolios",
        ],
    )
    assert res.exit_code == 0, res.output
    weekends = int((days.day_of_week >= 5).sum())
    assert f"STOCK: {weekends + 1} missing or non-positive prices" in res.output
    assert f"BOND: {weekends + 1} missing or non-positive prices" in res.output
    assert f"{weekends + 2} of 400 rows dropped: not every asset has a price (calendars)" in res.output
    assert "returns span more than one 1d step" in res.output
    assert "| sample |" in res.output
