"""Cross-checks of erc (and rp_cost at λ = c = 0) against riskparityportfolio, skfolio and riskfolio-lib,
uncapped and (skfolio, riskfolio-lib) with binding caps.

Same inputs for everyone: returns X are built so that their sample covariance (ddof = 1, what skfolio's
and riskfolio's "hist"/empirical estimators compute) is exactly the Σ we hand to our solver and to
riskparityportfolio. One Σ comes from real prices: skfolio's offline daily S&P 500 constituents.
The peers are in the ``dev`` extra, so CI has them; they all install here.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from plugins.optimizers.cost_aware import solve_cost_aware
from plugins.optimizers.erc import solve_risk_budget

rpp = pytest.importorskip("riskparityportfolio")
skfolio = pytest.importorskip("skfolio")
riskfolio = pytest.importorskip("riskfolio")

from riskparityportfolio.vanilla import design  # noqa: E402
from skfolio import RiskMeasure  # noqa: E402
from skfolio.datasets import load_sp500_dataset  # noqa: E402
from skfolio.optimization import RiskBudgeting  # noqa: E402


def returns_with_cov(cov: np.ndarray, t: int, seed: int) -> np.ndarray:
    """T × N returns whose sample covariance (ddof 1) is ``cov`` to rounding."""
    n = len(cov)
    z = np.random.default_rng(seed).standard_normal((t, n))
    z -= z.mean(axis=0)
    lz = np.linalg.cholesky(np.cov(z, rowvar=False))
    return z @ np.linalg.inv(lz).T @ np.linalg.cholesky(cov).T


def synthetic_cov(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.abs(rng.normal(size=(n, max(2, n // 5))))
    c = f @ f.T + np.diag(rng.uniform(0.5, 2.0, n))
    s = np.sqrt(np.diag(c))
    vol = rng.uniform(0.005, 0.03, n)  # daily
    return c / np.outer(s, s) * np.outer(vol, vol)


@pytest.fixture(scope="module")
def sp500() -> tuple[np.ndarray, np.ndarray]:
    prices = load_sp500_dataset()
    r = np.log(prices).diff().dropna().to_numpy()[-1000:]
    return r, np.cov(r, rowvar=False)


def dev_of(w: np.ndarray, cov: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    rho = w * (cov @ w) / b
    rho = rho if mask is None else rho[mask]
    return float(np.max(np.abs(rho / rho.mean() - 1.0)))


def skfolio_weights(x: np.ndarray, b: np.ndarray | None = None, caps: np.ndarray | None = None) -> np.ndarray:
    kw = {} if caps is None else {"max_weights": caps}
    m = RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, risk_budget=b, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(x)
    return np.asarray(m.weights_)


def riskfolio_caps(names: list[str], caps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Caps as riskfolio's linear constraints A w <= B, built by its own ``assets_constraints`` from a
    constraints table (one "Assets" row per asset: w_i <= cap_i); rp_optimization imposes them on the
    normalised weights (A w <= B k with k = Σw)."""
    n = len(names)
    table = pd.DataFrame({
        "Disabled": [False] * n, "Type": ["Assets"] * n, "Set": [""] * n, "Position": names, "Sign": ["<="] * n,
        "Weight": [float(c) for c in caps], "Type Relative": [""] * n, "Relative Set": [""] * n,
        "Relative": [""] * n, "Factor": [""] * n,
    })  # fmt: skip
    return riskfolio.assets_constraints(table, pd.DataFrame({"Assets": names}))


def riskfolio_weights(x: np.ndarray, b: np.ndarray | None = None, caps: np.ndarray | None = None) -> np.ndarray:
    names = [f"a{i}" for i in range(x.shape[1])]
    port = riskfolio.Portfolio(returns=pd.DataFrame(x, columns=names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        port.assets_stats(method_mu="hist", method_cov="hist")
        if caps is not None:
            port.ainequality, port.binequality = riskfolio_caps(names, caps)
        bb = None if b is None else b.reshape(-1, 1)
        w = port.rp_optimization(model="Classic", rm="MV", rf=0, b=bb, hist=True)
    return w.to_numpy().ravel()


@pytest.mark.parametrize("source", ["synthetic", "sp500"])
@pytest.mark.parametrize("budgets", ["equal", "random"])
def test_uncapped_agrees_with_all_three_peers(source: str, budgets: str, sp500: tuple) -> None:
    if source == "sp500":
        x, cov = sp500
    else:
        cov = synthetic_cov(25, 1)
        x = returns_with_cov(cov, 500, 2)
    n = len(cov)
    b = np.full(n, 1.0 / n) if budgets == "equal" else np.random.default_rng(3).uniform(0.5, 2.0, n)
    b = b / b.sum()
    ours = solve_risk_budget(cov, b)
    assert ours.dev <= 1e-8
    ref_rpp = design(cov, b, 1e-12, 10000)
    assert dev_of(ref_rpp, cov, b) < 1e-7  # the C++ reference converged
    np.testing.assert_allclose(ours.weights, ref_rpp, rtol=0, atol=1e-8)
    w_sk = skfolio_weights(x, b)
    np.testing.assert_allclose(ours.weights, w_sk, rtol=0, atol=2e-4)
    w_rf = riskfolio_weights(x, b)
    np.testing.assert_allclose(ours.weights, w_rf, rtol=0, atol=2e-4)
    # Ours is at least as balanced as every peer.
    assert ours.dev <= min(dev_of(w_sk, cov, b), dev_of(w_rf, cov, b), dev_of(ref_rpp, cov, b)) + 1e-12
    # rp_cost with no cost and no tilt is the same portfolio.
    assert np.array_equal(solve_cost_aware(cov, b).weights, ours.weights)


def test_caps_that_do_not_bind_change_nothing_for_us_or_skfolio(sp500: tuple) -> None:
    x, cov = sp500
    free = solve_risk_budget(cov).weights
    caps = np.full(len(cov), float(free.max()) + 0.01)
    ours = solve_risk_budget(cov, upper=caps)
    np.testing.assert_allclose(ours.weights, free, atol=1e-12)
    np.testing.assert_allclose(skfolio_weights(x, caps=caps), free, atol=2e-4)


def test_binding_caps_real_prices_against_skfolio(sp500: tuple) -> None:
    """Both respect the caps; ours leaves the free assets at equal risk (dev ≤ 1e-8), which skfolio's
    log-barrier with bounds does not (issue 3's table: 7.5e-4 and worse); σ_p close."""
    x, cov = sp500
    n = len(cov)
    free = solve_risk_budget(cov).weights
    caps = np.full(n, float(np.quantile(free, 0.7)))
    ours = solve_risk_budget(cov, upper=caps)
    assert ours.capped.sum() >= 3 and ours.dev <= 1e-8
    w_sk = skfolio_weights(x, caps=caps)
    assert np.all(w_sk <= caps + 1e-6) and abs(w_sk.sum() - 1) < 1e-6
    b = np.full(n, 1.0 / n)
    assert ours.dev <= dev_of(w_sk, cov, b, ~ours.capped)
    sig = lambda w: float(np.sqrt(w @ cov @ w))  # noqa: E731
    assert abs(sig(ours.weights) / sig(w_sk) - 1) < 0.02
    # The portfolios are close: the definitions differ only in how the free assets share the risk.
    assert np.max(np.abs(ours.weights - w_sk)) < 0.01


def test_binding_caps_real_prices_against_riskfolio(sp500: tuple, capsys: pytest.CaptureFixture) -> None:
    """riskfolio-lib's rp_optimization with the same caps as linear constraints: both respect them;
    ours leaves the uncapped assets at equal risk (dev ≤ 1e-8), riskfolio's log-barrier with bounds on
    the normalised weights does not (its dev is printed: 2e-2 with riskfolio-lib 7.4.0)."""
    x, cov = sp500
    n = len(cov)
    free = solve_risk_budget(cov).weights
    caps = np.full(n, float(np.quantile(free, 0.7)))
    caps[np.argsort(free)[:3]] = 0.9 * free[np.argsort(free)[:3]]  # a few per-asset caps, on small holdings too
    ours = solve_risk_budget(cov, upper=caps)
    assert ours.capped.sum() >= 6 and ours.dev <= 1e-8
    assert np.all(ours.weights <= caps) and abs(ours.weights.sum() - 1) <= 1e-12
    w_rf = riskfolio_weights(x, caps=caps)
    assert np.all(w_rf <= caps + 1e-6) and abs(w_rf.sum() - 1) < 1e-6 and np.all(w_rf > 0)
    assert np.any(w_rf >= caps - 1e-6)  # the caps bind for riskfolio too
    b = np.full(n, 1.0 / n)
    theirs = dev_of(w_rf, cov, b, ~ours.capped)
    assert dev_of(ours.weights, cov, b, ~ours.capped) <= min(1e-8, theirs)
    with capsys.disabled():
        print(f"\n  riskfolio with caps: dev over our uncapped assets {theirs:.2e} (ours {ours.dev:.1e}), "
              f"max |w - ours| {np.max(np.abs(w_rf - ours.weights)):.1e}")
    sig = lambda w: float(np.sqrt(w @ cov @ w))  # noqa: E731
    assert abs(sig(ours.weights) / sig(w_rf) - 1) < 0.02
    assert np.max(np.abs(ours.weights - w_rf)) < 0.01
