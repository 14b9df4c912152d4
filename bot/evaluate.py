"""Walk-forward evaluation of covariance forecasters: losses, paired differences, portfolios, truth.

Why paired differences: the raw QLIKE levels of any two sensible forecasters differ by far less
than 1% (the level is dominated by log det Σ, common to all), so "model X has 0.3% lower QLIKE"
says nothing. What matters is the mean *per-period difference* d_t = QLIKE_X,t − QLIKE_base,t (in
nats per period) and its standard error. Losses are serially dependent (volatility clusters), so
the error comes from a circular moving-block bootstrap with blocks of a week of hourly data (a
month of daily data) instead of the i.i.d. formula, which would be too small.

Alignment (the no-look-ahead contract): prices have rows 0..T, returns r_k = log p_{k+1}/p_k. The
forecast stored at index t uses prices up to row t only (returns r_0..r_{t−1}) and is scored
against r_t. Every forecaster only ever sees the slice ``returns[lo:t]``; a test changes the data
after t and checks that the forecast at t does not move.

Truth: on the simulated market the conditional second moment M_t = E[r_t r_tᵀ | state] of every
hour is known (the ``simulated_truth`` data source, registered by the simulated market's plugin), and
the excess loss of a forecast Σ̂ over it is the Stein loss tr(Σ̂⁻¹M) − log det(Σ̂⁻¹M) − N =
2·KL(N(0,M) ‖ N(0,Σ̂)) ≥ 0: the *expected* excess QLIKE over the truth, computed without the
sampling noise of r_t. A negative value is impossible (it would mean look-ahead or a wrong truth).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.domain import Forecast
from bot.errors import DataError, ForecastError

# -- pure loss maths ------------------------------------------------------------------------------------


def qlike(cov: np.ndarray, r: np.ndarray) -> np.ndarray:
    """log det Σ_t + r_tᵀ Σ_t⁻¹ r_t for stacks (T × N × N, T × N); NaN where Σ_t is not positive definite."""
    cov = np.asarray(cov, dtype=float)
    r = np.asarray(r, dtype=float)
    out = np.full(cov.shape[0], np.nan)
    ok = np.isfinite(cov).all(axis=(1, 2)) & np.isfinite(r).all(axis=1)
    if not ok.any():
        return out
    c, x = cov[ok], r[ok]
    sign, logdet = np.linalg.slogdet(c)
    quad = np.einsum("ti,ti->t", x, np.linalg.solve(c, x[:, :, None])[:, :, 0])
    out[ok] = np.where(sign > 0, logdet + quad, np.nan)
    return out


def stein_loss(cov: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """tr(Σ̂⁻¹M) − log det(Σ̂⁻¹M) − N per period: the expected excess QLIKE of Σ̂ over the truth M, ≥ 0."""
    cov = np.asarray(cov, dtype=float)
    truth = np.asarray(truth, dtype=float)
    n = cov.shape[-1]
    out = np.full(cov.shape[0], np.nan)
    ok = np.isfinite(cov).all(axis=(1, 2)) & np.isfinite(truth).all(axis=(1, 2))
    if not ok.any():
        return out
    c, m = cov[ok], truth[ok]
    a = np.linalg.solve(c, m)
    s1, ld1 = np.linalg.slogdet(c)
    s2, ld2 = np.linalg.slogdet(m)
    val = np.trace(a, axis1=1, axis2=2) - (ld2 - ld1) - n
    out[ok] = np.where((s1 > 0) & (s2 > 0), val, np.nan)
    return out


def cov_to_corr(cov: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.clip(np.diagonal(cov, axis1=-2, axis2=-1), 1e-300, None))
    return cov / d[..., :, None] / d[..., None, :]


def block_bootstrap_se(d: np.ndarray, block: int, n_boot: int = 1000, seed: int = 0) -> float:
    """Standard error of mean(d) by the circular moving-block bootstrap (Politis & Romano 1992).

    Each replicate concatenates ⌈T/block⌉ blocks of ``block`` consecutive values starting at uniform
    positions (wrapping around), truncated to T. Block sums come from a cumulative sum, so a replicate
    costs O(T/block). Fewer than two blocks of data give NaN: one block wrapped around is a rotation of
    the whole sample, whose mean never varies, so the bootstrap would report an SE of exactly 0 (this
    happened to the first-24-h-of-stress column of short runs: fewer such hours than a week's block).
    """
    x = np.asarray(d, dtype=float)
    x = x[np.isfinite(x)]
    t = x.size
    block = max(1, int(block))
    if t < 2 * block:
        return math.nan
    k = math.ceil(t / block)
    ext = np.concatenate([x, x[: block - 1]]) if block > 1 else x
    csum = np.concatenate([[0.0], np.cumsum(ext)])
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, t, size=(n_boot, k))
    lengths = np.full(k, block)
    lengths[-1] = t - block * (k - 1)
    sums = (csum[starts + lengths] - csum[starts]).sum(axis=1)
    return float(np.std(sums / t, ddof=1))


def gmv_weights(cov: np.ndarray) -> np.ndarray:
    """Global minimum variance weights Σ⁻¹1 / 1ᵀΣ⁻¹1 (shorts allowed), per period."""
    ones = np.ones(cov.shape[:-1])
    x = np.linalg.solve(cov, ones[..., None])[..., 0]
    return x / x.sum(axis=-1, keepdims=True)


def erc_weights(cov: np.ndarray) -> np.ndarray:
    """Long-only equal-risk-contribution weights per period, with the ``erc`` optimizer the daemon uses
    (from the plugin registry), warm-started at the previous period's weights."""
    n = cov.shape[-1]
    names = tuple(f"a{i}" for i in range(n))
    opt = _registry().get("optimizer", "erc").build({"tol": 1e-10}, _context(names), where="evaluate: optimizer erc")
    out = np.empty(cov.shape[:-1])
    w0 = np.full(n, 1.0 / n)
    ones, zeros = np.ones(n), np.zeros(n)
    for t in range(cov.shape[0]):
        c = np.asarray(cov[t], float)
        sd = np.sqrt(np.clip(np.diag(c), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = np.nan_to_num(c / np.outer(sd, sd))
        target = opt.optimize(Forecast(names, c, sd, corr, "evaluate"), upper=ones, lower=zeros, current=w0)
        w0 = np.asarray(target.weights, float)
        out[t] = w0
    return out


def _registry() -> Any:
    """Every installed plugin's components: optimizers, forecasters and the simulated market are reached
    through the ``rwabot`` entry points like the daemon's, never imported by name."""
    from bot.plugins import Registry, make_plugin_manager

    return Registry(make_plugin_manager())


def _context(assets: Sequence[str] = (), state_dir: Any = None) -> Any:
    import tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    from bot.clock import SimulatedClock
    from bot.components import ComponentContext

    where = Path(state_dir) if state_dir is not None else Path(tempfile.gettempdir())
    return ComponentContext(SimulatedClock(datetime(2000, 1, 1, tzinfo=UTC)), where, tuple(assets), lambda e: None)


def stress_phase(regime: np.ndarray, first_hours: int = 24) -> np.ndarray:
    """0 calm, 1 stressed, 2 within the first ``first_hours`` of a stress episode (per period)."""
    regime = np.asarray(regime).astype(int)
    out = regime.copy()
    run = 0
    for i, s in enumerate(regime):
        run = run + 1 if s else 0
        if s and run <= first_hours:
            out[i] = 2
    return out


# -- walk-forward runner ----------------------------------------------------------------------------------


def _accepts(fn: Callable[..., Any], kw: str) -> bool:
    try:
        return kw in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class ForecastPath:
    """Forecasts of one forecaster, indexed by price row (see the module docstring)."""

    name: str
    cov: np.ndarray
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0
    fits: int = 0
    predicts: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)


def walk_forward(
    forecasters: Mapping[str, Any],
    assets: Sequence[str],
    returns: np.ndarray,
    *,
    warmup: int,
    refit_every: int = 168,
    window: int | None = None,
    last_hours: np.ndarray | None = None,
    on_step: Callable[[str, int], None] | None = None,
) -> dict[str, ForecastPath]:
    """Run every forecaster over the returns, one period at a time, without look-ahead.

    :param returns: T × N log returns (r_k from price row k to k+1).
    :param warmup: first price row with a forecast (rows before it stay NaN).
    :param refit_every: forecasters with ``fit``/``predict`` are refitted every N periods on the
        training window and only ``predict`` in between; others get ``forecast`` every period.
    :param window: rolling window length in returns (None: expanding from row 0).
    :param last_hours: for hourly data, the UTC close hour of price row t (passed as ``last_hour``
        to forecasters that accept it, for hour-of-day deseasonalisation).
    :returns: per forecaster a ``ForecastPath`` whose ``cov`` has T+1 rows (index = price row).
    """
    r = np.asarray(returns, dtype=float)
    t_ret, n = r.shape
    if not 2 <= warmup <= t_ret:
        raise DataError(f"evaluate: warm-up {warmup} must be between 2 and the number of returns {t_ret}")
    out: dict[str, ForecastPath] = {}
    for name, fc in forecasters.items():
        path = ForecastPath(name, np.full((t_ret + 1, n, n), np.nan))
        two_step = callable(getattr(fc, "fit", None)) and callable(getattr(fc, "predict", None))
        kw_ok = {m: _accepts(getattr(fc, m), "last_hour") for m in ("fit", "predict", "forecast") if hasattr(fc, m)}
        for t in range(warmup, t_ret + 1):
            lo = 0 if window is None else max(0, t - window)
            x = r[lo:t]

            def kw(method: str, t: int = t, ok: dict[str, bool] = kw_ok) -> dict[str, Any]:
                if last_hours is None or not ok.get(method):
                    return {}
                return {"last_hour": int(last_hours[t])}

            try:
                if two_step and ((t - warmup) % refit_every == 0 or path.fits == 0):
                    t0 = time.perf_counter()
                    fc.fit(assets, x, **kw("fit"))
                    path.fit_seconds += time.perf_counter() - t0
                    path.fits += 1
                t0 = time.perf_counter()
                f = fc.predict(assets, x, **kw("predict")) if two_step else fc.forecast(assets, x, **kw("forecast"))
                path.predict_seconds += time.perf_counter() - t0
                path.predicts += 1
                f.validate()
                path.cov[t] = f.cov
            except ForecastError as exc:
                path.failures.append((t, str(exc)))
            if on_step is not None:
                on_step(name, t)
        out[name] = path
    return out


# -- scoring ------------------------------------------------------------------------------------------------


@dataclass
class Score:
    """One forecaster's row of the evaluation table (losses are means per scored period)."""

    name: str
    periods: int
    qlike: float
    diff: float
    diff_se: float
    frobenius: float
    corr_loss: float
    gmv_vol: float
    erc_vol: float
    fit_seconds: float
    predict_ms: float
    failures: int
    excess: float = math.nan
    excess_se: float = math.nan
    excess_diff_se: float = math.nan
    excess_by_phase: dict[str, float] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k != "excess_by_phase"}
        row.update({f"excess_{k}": v for k, v in self.excess_by_phase.items()})
        return row


def realized_corr_ahead(r: np.ndarray, horizon: int) -> np.ndarray:
    """Correlation of Σ_{k=t}^{t+h−1} r_k r_kᵀ for each t (NaN where fewer than h periods remain).

    A scoring device only (it uses the future by design): with one return per period a realized
    correlation needs several periods.
    """
    t, n = r.shape
    outer = r[:, :, None] * r[:, None, :]
    csum = np.concatenate([np.zeros((1, n, n)), np.cumsum(outer, axis=0)])
    out = np.full((t, n, n), np.nan)
    if t >= horizon:
        out[: t - horizon + 1] = cov_to_corr(csum[horizon:] - csum[: t - horizon + 1])
    return out


def _paired_periods(paths: Mapping[str, Any], t_ret: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The forecasts cut to the returns, and the periods where every forecaster has one (paired scoring)."""
    covs = {k: p.cov[:t_ret] for k, p in paths.items()}
    mask = np.ones(t_ret, dtype=bool)
    for c in covs.values():
        mask &= np.isfinite(c).all(axis=(1, 2))
    if not mask.any():
        raise DataError("evaluate: no period has a forecast from every forecaster")
    return covs, mask


def score(
    paths: Mapping[str, ForecastPath],
    returns: np.ndarray,
    *,
    baseline: str,
    block: int,
    periods_per_year: float,
    truth: np.ndarray | None = None,
    regime: np.ndarray | None = None,
    corr_horizon: int = 24,
    portfolios: bool = True,
    n_boot: int = 1000,
) -> list[Score]:
    """Score every path on the periods where *all* forecasters have a forecast (so differences are paired).

    :param truth: T × N × N true conditional second moments of r_t (simulated data only).
    :param regime: T regime labels of r_t (0 calm / 1 stress) for the excess breakdown.
    """
    r = np.asarray(returns, dtype=float)
    t_ret, n = r.shape
    if baseline not in paths:
        raise DataError(f"evaluate: baseline {baseline!r} is not among the forecasters {list(paths)}")
    covs, mask = _paired_periods(paths, t_ret)
    rr = r[mask]
    losses = {k: qlike(c[mask], rr) for k, c in covs.items()}
    if truth is not None:
        tr = truth[mask]
        excess = {k: stein_loss(c[mask], tr) for k, c in covs.items()}
        ref_corr = cov_to_corr(tr)
    else:
        excess = {}
        ref_corr = realized_corr_ahead(r, corr_horizon)[mask]
    phases = stress_phase(regime)[mask] if regime is not None else None
    out = []
    base = losses[baseline]
    iu = np.triu_indices(n, 1)
    for k, c in covs.items():
        cm = c[mask]
        d = losses[k] - base
        outer = rr[:, :, None] * rr[:, None, :]
        ref = truth[mask] if truth is not None else outer
        frob = float(np.mean(np.linalg.norm(cm - ref, axis=(1, 2))))
        cdiff = (cov_to_corr(cm) - ref_corr)[:, iu[0], iu[1]]
        corr_loss = float(np.nanmean(np.sqrt(np.mean(cdiff**2, axis=1)))) if n > 1 else 0.0
        if portfolios:
            gmv = np.einsum("ti,ti->t", gmv_weights(cm), rr)
            erc = np.einsum("ti,ti->t", erc_weights(cm), rr)
            gmv_vol = float(np.std(gmv, ddof=1) * math.sqrt(periods_per_year))
            erc_vol = float(np.std(erc, ddof=1) * math.sqrt(periods_per_year))
        else:
            gmv_vol = erc_vol = math.nan
        p = paths[k]
        s = Score(
            name=k,
            periods=int(mask.sum()),
            qlike=float(np.mean(losses[k])),
            diff=float(np.mean(d)),
            diff_se=block_bootstrap_se(d, block, n_boot) if k != baseline else 0.0,
            frobenius=frob,
            corr_loss=corr_loss,
            gmv_vol=gmv_vol,
            erc_vol=erc_vol,
            fit_seconds=p.fit_seconds,
            predict_ms=1e3 * p.predict_seconds / max(p.predicts, 1),
            failures=len(p.failures),
        )
        if excess:
            e = excess[k]
            s.excess = float(np.mean(e))
            s.excess_se = block_bootstrap_se(e, block, n_boot)
            s.excess_diff_se = block_bootstrap_se(e - excess[baseline], block, n_boot) if k != baseline else 0.0
            if phases is not None:
                for label, code in (("calm", 0), ("stress", 1), ("stress_first24h", 2)):
                    sel = phases == code if code != 1 else phases >= 1
                    s.excess_by_phase[label] = float(np.mean(e[sel])) if sel.any() else math.nan
        out.append(s)
    return out


@dataclass
class Pair:
    """``name`` against ``other`` on the common scored periods: mean differences (name − other) and errors.

    ``excess_ratio`` = excess(name) / excess(other) is what the issue's "≤ 0.95 × the best classical"
    target reads; the differences and their block-bootstrap errors say whether it is beyond noise.
    """

    name: str
    other: str
    qlike_diff: float
    qlike_se: float
    excess_diff: float = math.nan
    excess_se: float = math.nan
    excess_ratio: float = math.nan
    excess_by_phase: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Mean Δ excess and its block-bootstrap SE over the calm, stress and first-24-h-of-stress hours."""


def paired_differences(
    paths: Mapping[str, ForecastPath],
    returns: np.ndarray,
    name: str,
    *,
    block: int,
    truth: np.ndarray | None = None,
    regime: np.ndarray | None = None,
    n_boot: int = 1000,
) -> list[Pair]:
    """``name`` against every other forecaster, on the periods where all have a forecast (as ``score``).

    ``score`` gives each forecaster against one baseline; to check a claim such as "the LSTM beats the
    best classical model" the difference has to be paired with *that* model, whose identity is only
    known after scoring, so this compares one forecaster with all of them.
    """
    r = np.asarray(returns, dtype=float)
    t_ret = r.shape[0]
    if name not in paths:
        raise DataError(f"evaluate: {name!r} is not among the forecasters {list(paths)}")
    covs, mask = _paired_periods(paths, t_ret)
    losses = {k: qlike(c[mask], r[mask]) for k, c in covs.items()}
    excess = {k: stein_loss(c[mask], truth[mask]) for k, c in covs.items()} if truth is not None else {}
    out = []
    for k in covs:
        if k == name:
            continue
        d = losses[name] - losses[k]
        p = Pair(name, k, float(np.mean(d)), block_bootstrap_se(d, block, n_boot))
        if excess:
            e = excess[name] - excess[k]
            p.excess_diff = float(np.mean(e))
            p.excess_se = block_bootstrap_se(e, block, n_boot)
            p.excess_ratio = float(np.mean(excess[name]) / np.mean(excess[k]))
            if regime is not None:  # the phase's hours, concatenated, resampled in blocks as above
                phases = stress_phase(regime)[mask]
                for label, sel in (("calm", phases == 0), ("stress", phases >= 1), ("stress_first24h", phases == 2)):
                    if sel.any():
                        # an episode's first 24 h are one block (a few hundred such hours would be one or two
                        # weekly blocks, too few to resample); other phases keep the weekly block
                        b = min(block, 24) if label == "stress_first24h" else block
                        p.excess_by_phase[label] = (float(np.mean(e[sel])), block_bootstrap_se(e[sel], b, n_boot))
        out.append(p)
    return out


def format_pairs(pairs: Sequence[Pair], unit: str = "period") -> str:
    """Markdown table of ``paired_differences``; "beyond 2 SE" marks |Δ| > 2·SE."""
    truth = any(math.isfinite(p.excess_diff) for p in pairs)
    phases = [k for k in ("calm", "stress", "stress_first24h") if any(k in p.excess_by_phase for p in pairs)]
    head = ["vs", f"Δ QLIKE (nats/{unit})", "±SE", "t"]
    if truth:
        head += ["Δ excess", "±SE", "t", "excess ratio"]
    head += [f"Δ excess {k.replace('_', ' ')} ±SE" for k in phases]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def t_stat(d: float, se: float) -> str:
        return f"{d / se:+.1f}" if se > 0 and math.isfinite(se) else "n/a"

    for p in pairs:
        row = [f"{p.name} − {p.other}", f"{p.qlike_diff:+.5f}", f"{p.qlike_se:.5f}", t_stat(p.qlike_diff, p.qlike_se)]
        if truth:
            row += [
                f"{p.excess_diff:+.4f}",
                f"{p.excess_se:.4f}",
                t_stat(p.excess_diff, p.excess_se),
                f"{p.excess_ratio:.3f}",
            ]
        for k in phases:
            d, se = p.excess_by_phase.get(k, (math.nan, math.nan))
            row.append(f"{d:+.4f} ± {se:.4f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_table(scores: Sequence[Score], baseline: str, unit: str = "period") -> str:
    """A GitHub-markdown table of the scores (used by the CLI and docs/forecasting.md)."""
    truth = any(math.isfinite(s.excess) for s in scores)
    phases = truth and any(s.excess_by_phase for s in scores)
    head = ["forecaster", "QLIKE", f"Δ vs {baseline} (nats/{unit})", "±SE"]
    if truth:
        head += ["excess over truth", f"Δ excess vs {baseline}", "±SE"]
    if phases:
        head += ["calm", "stress", "stress 1st 24h"]
    head += ["Frobenius", "corr loss", "GMV vol", "ERC vol", "fit s", "predict ms", "failed"]
    base_excess = next((s.excess for s in scores if s.name == baseline), math.nan)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scores:
        row = [s.name, f"{s.qlike:.4f}", f"{s.diff:+.5f}", f"{s.diff_se:.5f}"]
        ph = s.excess_by_phase
        if truth:
            row += [f"{s.excess:.4f}", f"{s.excess - base_excess:+.4f}", f"{s.excess_diff_se:.4f}"]
        if phases:
            row += [
                f"{ph.get('calm', math.nan):.4f}",
                f"{ph.get('stress', math.nan):.4f}",
                f"{ph.get('stress_first24h', math.nan):.4f}",
            ]
        row += [
            f"{s.frobenius:.3e}",
            f"{s.corr_loss:.4f}",
            f"{s.gmv_vol:.2%}",
            f"{s.erc_vol:.2%}",
            f"{s.fit_seconds:.1f}",
            f"{s.predict_ms:.2f}",
            str(s.failures),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# -- simulated truth -----------------------------------------------------------------------------------------

TRUTH_SOURCE = "simulated_truth"
"""The data source (registered by the simulated market's plugin) that also knows, per hour, the conditional
second moment M_t = E[r_t r_tᵀ | state] of its returns (``truth(end, hours)``) and its regime
(``regime(end, hours)``). Only the simulator can replay its own draws, so the truth lives with it."""


def make_truth_market(cfg: Any = None) -> Any:
    """The ``simulated_truth`` source with ``cfg`` (its config model, or a dict of options; default options)."""
    reg = _registry().get("data", TRUTH_SOURCE)
    market = reg.build(cfg if cfg is not None else {}, _context(), where=f"evaluate: data {TRUTH_SOURCE}")
    if not (callable(getattr(market, "truth", None)) and callable(getattr(market, "regime", None))):
        raise DataError(f"data source {TRUTH_SOURCE!r} ({reg.plugin}) has no truth(end, hours) and regime(end, hours)")
    return market


# -- whole evaluation ---------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Aligned prices for an evaluation: rows with any missing price are dropped and reported."""

    assets: tuple[str, ...]
    times: np.ndarray
    prices: np.ndarray
    report: list[str]
    truth: np.ndarray | None = None
    regime: np.ndarray | None = None

    @property
    def returns(self) -> np.ndarray:
        return np.diff(np.log(self.prices), axis=0)


def load_prices_csv(path: str, freq: str) -> Dataset:
    """Read ``time,ASSET1,ASSET2,…`` prices; report and drop incomplete rows, non-positive prices, gaps."""
    import pandas as pd

    df = pd.read_csv(path)
    if df.shape[1] < 2:
        raise DataError(f"{path}: need a time column and at least one price column")
    tcol = df.columns[0]
    df[tcol] = pd.to_datetime(df[tcol], utc=True, errors="coerce")
    report: list[str] = []
    bad_t = int(df[tcol].isna().sum())
    if bad_t:
        report.append(f"{bad_t} rows with an unparseable time dropped")
    df = df.dropna(subset=[tcol]).sort_values(tcol)
    dup = int(df[tcol].duplicated().sum())
    if dup:
        report.append(f"{dup} duplicate times dropped (kept the last)")
        df = df.drop_duplicates(subset=[tcol], keep="last")
    px = df.drop(columns=[tcol]).apply(pd.to_numeric, errors="coerce")
    px = px.where(px > 0)
    missing = px.isna().sum()
    for asset, k in missing.items():
        if k:
            report.append(f"{asset}: {int(k)} missing or non-positive prices")
    complete = px.notna().all(axis=1).to_numpy()
    if (~complete).any():
        report.append(f"{int((~complete).sum())} of {len(px)} rows dropped: not every asset has a price (calendars)")
    times = df[tcol].dt.tz_convert(None).to_numpy().astype("datetime64[s]")[complete]
    prices = px.to_numpy(dtype=float)[complete]
    if prices.shape[0] < 3:
        raise DataError(f"{path}: fewer than 3 complete rows")
    step = np.diff(times).astype("timedelta64[s]").astype(float)
    nominal = 3600.0 if freq == "1h" else 86400.0
    gaps = int(np.sum(step > 1.5 * nominal))
    if gaps:
        report.append(f"{gaps} returns span more than one {freq} step (gaps kept as one period)")
    return Dataset(tuple(str(c) for c in px.columns), times, prices, report)


def simulated_dataset(hours: int, seed: int = 7) -> Dataset:
    """``hours`` of the default simulated market with its truth and regimes (bar 1 onward)."""
    from datetime import timedelta

    market = make_truth_market({"seed": seed})
    end = market.start + timedelta(hours=hours)
    bars = market.bars(market.assets(), end, hours)
    truth = market.truth(end, hours)[1:]
    regime = market.regime(end, hours)[1:]
    times = np.array([np.datetime64(t.replace(tzinfo=None)) for t in bars.times])
    return Dataset(bars.assets, times, bars.close, ["simulated market: no missing values"], truth, regime)


def last_hours_of(times: np.ndarray) -> np.ndarray:
    """UTC hour of each price row (the close hour of the last return a forecast at that row sees)."""
    return (times.astype("datetime64[h]").astype(np.int64) % 24).astype(int)


@dataclass
class Evaluation:
    scores: list[Score]
    paths: dict[str, ForecastPath]
    dataset: Dataset
    baseline: str
    table: str
    block: int = 168
    unit: str = "hour"

    def pairs(self, name: str) -> list[Pair]:
        """``name`` against every other forecaster (see ``paired_differences``)."""
        ds = self.dataset
        return paired_differences(self.paths, ds.returns, name, block=self.block, truth=ds.truth, regime=ds.regime)


def build_forecasters(specs: Sequence[str], options: Mapping[str, Mapping[str, Any]], state_dir: Any) -> dict[str, Any]:
    """``NAME`` or ``LABEL=PLUGIN`` specs built through the plugin registry (options keyed by label)."""
    reg = _registry()
    out: dict[str, Any] = {}
    for spec in specs:
        label, _, plugin = spec.partition("=")
        plugin = plugin or label
        ctx = _context((), state_dir)
        out[label] = reg.get("forecaster", plugin).build(dict(options.get(label, {})), ctx, where=f"forecaster {label}")
    return out


def evaluate_dataset(
    ds: Dataset,
    forecasters: Mapping[str, Any],
    *,
    baseline: str,
    freq: str = "1h",
    warmup: int | None = None,
    refit_every: int | None = None,
    window: int | None = None,
    portfolios: bool = True,
    on_step: Callable[[str, int], None] | None = None,
) -> Evaluation:
    """Walk forward and score; defaults: warm-up 60 days (hourly) / 250 days (daily), refit weekly / monthly."""
    hourly = freq == "1h"
    r = ds.returns
    warmup = warmup if warmup is not None else (24 * 60 if hourly else 250)
    refit_every = refit_every if refit_every is not None else (168 if hourly else 21)
    if warmup >= r.shape[0]:
        raise DataError(f"evaluate: warm-up {warmup} leaves no period to score ({r.shape[0]} returns)")
    paths = walk_forward(
        forecasters,
        ds.assets,
        r,
        warmup=warmup,
        refit_every=refit_every,
        window=window,
        last_hours=last_hours_of(ds.times) if hourly else None,
        on_step=on_step,
    )
    scores = score(
        paths,
        r,
        baseline=baseline,
        block=168 if hourly else 21,
        periods_per_year=8760 if hourly else 252,
        truth=ds.truth,
        regime=ds.regime,
        corr_horizon=24 if hourly else 21,
        portfolios=portfolios,
    )
    unit = "hour" if hourly else "day"
    table = format_table(scores, baseline, unit)
    return Evaluation(scores, paths, ds, baseline, table, 168 if hourly else 21, unit)


def save_forecasts(ev: Evaluation, path: str) -> None:
    """An .npz with ``times``, ``assets``, ``prices`` and one T×N×N array per forecaster (index t: prices ≤ row t)."""
    arrays: dict[str, Any] = {
        "times": ev.dataset.times.astype("datetime64[s]").astype(str),
        "assets": np.array(ev.dataset.assets),
        "prices": ev.dataset.prices,
    }
    for k, p in ev.paths.items():
        arrays[f"cov_{k}"] = p.cov
    if ev.dataset.truth is not None:
        arrays["truth"] = np.concatenate([np.full((1, *ev.dataset.truth.shape[1:]), np.nan), ev.dataset.truth])
    if ev.dataset.regime is not None:  # aligned like truth: index t = the regime of the return into row t
        arrays["regime"] = np.concatenate([[-1], np.asarray(ev.dataset.regime).astype(int)])
    np.savez_compressed(path, **arrays)


def write_csv(ev: Evaluation, path: str) -> None:
    import pandas as pd

    pd.DataFrame([s.as_row() for s in ev.scores]).to_csv(path, index=False)


def write_plot(ev: Evaluation, path: str) -> bool:
    """Cumulative QLIKE difference to the baseline over time; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    r = ev.dataset.returns
    t = r.shape[0]
    base = qlike(ev.paths[ev.baseline].cov[:t], r)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    times = ev.dataset.times[1 : t + 1]
    for k, p in ev.paths.items():
        d = qlike(p.cov[:t], r) - base
        ok = np.isfinite(d)
        ax.plot(times[ok], np.cumsum(d[ok]), label=k)
    ax.set_ylabel(f"cumulative QLIKE − {ev.baseline} (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- expected-return models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReturnScore:
    """Out-of-sample skill of one return model: the cross-sectional rank correlation of its μ_t with the
    returns r_t that followed (the information coefficient, mean and block-bootstrap SE over t) and the
    hit rate of its cross-sectional signs (μ_i above the assets' mean μ vs r_i above their mean r)."""

    name: str
    periods: int
    ic_mean: float
    ic_se: float
    hit_rate: float
    hit_se: float


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def score_return_models(
    models: Mapping[str, Any],
    assets: Sequence[str],
    returns: np.ndarray,
    *,
    warmup: int,
    window: int | None = None,
    step: int = 1,
    block: int = 168,
) -> list[ReturnScore]:
    """Walk forward: μ_t from ``returns[lo:t]`` only (the forecasters' no-look-ahead contract), scored
    against ``returns[t]``. A model whose μ does not vary across assets (``zero``) has no ranking and
    scores NaN, which is the honest value, not 0."""
    t_all = returns.shape[0]
    if warmup < 2 or warmup >= t_all:
        raise DataError(f"return models: warmup {warmup} must be in [2, {t_all})")
    out: list[ReturnScore] = []
    for name, model in models.items():
        ics, hits = [], []
        for t in range(warmup, t_all, step):
            lo = 0 if window is None else max(0, t - window)
            mu = np.asarray(model.expected(tuple(assets), returns[lo:t]), dtype=float)
            r = returns[t]
            if np.ptp(mu) == 0 or np.ptp(r) == 0:
                ics.append(math.nan)
                hits.append(math.nan)
                continue
            ics.append(float(np.corrcoef(_ranks(mu), _ranks(r))[0, 1]))
            hits.append(float(np.mean((mu > mu.mean()) == (r > r.mean()))))
        ic, hit = np.array(ics), np.array(hits)
        blk = max(1, block // step)
        out.append(ReturnScore(name, int(np.isfinite(ic).sum()), float(np.nanmean(ic)) if np.isfinite(ic).any()
                               else math.nan, block_bootstrap_se(ic, blk),
                               float(np.nanmean(hit)) if np.isfinite(hit).any() else math.nan,
                               block_bootstrap_se(hit, blk)))  # fmt: skip
    return out


def format_return_scores(scores: Sequence[ReturnScore]) -> str:
    lines = [f"{'return model':<14}{'periods':>9}{'IC mean':>10}{'± SE':>9}{'hit rate':>10}{'± SE':>9}"]
    for s in scores:
        lines.append(f"{s.name:<14}{s.periods:>9}{s.ic_mean:>10.4f}{s.ic_se:>9.4f}{s.hit_rate:>10.4f}{s.hit_se:>9.4f}")
    return "\n".join(lines)


def build_return_models(specs: Sequence[str], options: Mapping[str, Mapping[str, Any]], assets: Sequence[str]) -> dict:
    """``NAME`` or ``LABEL=PLUGIN`` return models, built through the plugin registry."""
    reg = _registry()
    ctx = _context(assets)
    out: dict[str, Any] = {}
    for spec in specs:
        label, _, plugin = spec.partition("=")
        plugin = plugin or label
        out[label] = reg.get("returns", plugin).build(dict(options.get(label, {})), ctx, where=f"--returns {label}")
    return out
