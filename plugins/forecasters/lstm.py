"""``lstm``: an LSTM that forecasts next hour's correlation matrix; volatilities from GARCH or EWMA.

What it predicts
----------------
Σ_{t+1} = D R D with D = diag(σ̂_{t+1}) a univariate volatility forecast — ``vol_model = "garch"``
(default): the GARCH(1,1) margins of the ``dcc`` forecaster, fitted with ``arch`` at every training;
``"ewma"``: RiskMetrics with half-life ``vol_half_life_hours``. R is the network's correlation
forecast. By default the LSTM does *not* forecast volatilities; ``vol_correction`` (with the DCC
anchor) adds a gated, bounded log-scale on each σ̂. Inputs are the last ``window_hours``
standardised returns z_k = r_k / σ̂_k and their squares (the squares let it see volatility surprises
the volatility model has not absorbed yet); with the DCC anchor also the products z_i z_j and the
DCC correlations (``cross_features``), the quantities DCC itself filters.

What it is anchored to (``anchor``)
-----------------------------------
``"dcc"`` (default): the network learns a gated, bounded residual P on the Cholesky factor L0 of the
DCC correlation forecast (the ``dcc`` forecaster's (a, b, Q̄), fitted on the same returns at every
training): L = rownorm(L0 + P) (``combine``). The residual head starts at zero and its gate nearly
shut, so an untrained network *is* the DCC forecast and training only learns where DCC is wrong —
on the simulated regime market, the first hours of a correlation shift (docs/forecasting.md).
``"constant"``: the first model, measured first and kept as an option: the output layer starts at
zero weights with a bias equal to the Cholesky factor of the training window's correlation, so an
untrained network is the constant-correlation model; it lost to DCC by 3–4% on the regime market.

Why the output is valid by construction
---------------------------------------
The network emits a lower-triangular matrix B (strictly-lower entries free, diagonal positive:
softplus, or L0_ii·exp(P_ii) when anchored). Each row of B is divided by its Euclidean norm, giving L
whose rows have unit length, and R = L Lᵀ. Then R is symmetric, positive semi-definite (a Gram
matrix; positive definite because L is triangular with a diagonal bounded away from 0, see MIN_DIAG)
and R_ii = |row_i|² = 1 exactly: no clipping or eigenvalue repair afterwards (the "normalised rows
of a triangular factor" form of the correlation Cholesky factor, equivalent to the angle
parameterisation). log det R = 2 Σ log L_ii comes for free, and z'R⁻¹z is one triangular solve, so
the Gaussian negative log-likelihood −log p(z_{t+1}) ∝ log det R + z'R⁻¹z is the training loss.

Training
--------
Walk-forward: ``fit`` trains on the window it is given (the last ``train_hours`` returns), the last
``validation_fraction`` of it (chronologically) is held out for early stopping (``patience`` epochs
without improvement; the best weights are restored), and torch is seeded with ``seed`` so two fits
on the same data give the same model. ``retrain`` = fit + an atomic checkpoint write next to the
ledger (``ctx.state_dir / checkpoint``) with the assets, the training end time and the config.

Fallback
--------
``forecast`` (the daemon path) uses the checkpoint. If it is missing, older than
``max_age_hours`` (by the daemon clock), made for other assets or under other model options
(``OPERATIONAL_OPTIONS`` aside), or the network outputs anything that
fails ``Forecast.validate``, the cycle gets the ``ewma`` forecast instead and a ``forecast_fallback``
risk event is emitted (once per reason until a good LSTM forecast resets it, so the 5-minute risk
monitor does not flood the ledger). When the checkpoint is missing or older than
``retrain_every_hours`` and ``auto_retrain`` is on, ``forecast`` starts training in a background
thread on the returns it was given and returns at once: the hourly cycle is never blocked. Under
the daemon, its ``retrain`` job does this instead on ``train_hours`` of bars (``bot/daemon.py``),
and switches the forecaster's own ``auto_retrain`` off so the two never race.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from scipy import signal

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Forecast, RiskEvent, Severity
from bot.errors import ForecastError
from bot.hookspecs import hookimpl
from plugins.forecasters.basic import EwmaConfig, EwmaForecaster, _check_returns
from plugins.forecasters.classic import (
    GarchParams,
    dcc_q_path,
    dcc_q_tail,
    fit_dcc_correlation,
    fit_garch,
    garch_filter,
    q_to_r,
)
from plugins.forecasters.seasonal import Deseasonaliser

log = logging.getLogger(__name__)
CHECKPOINT_VERSION = 2
"""2: the DCC anchor (a, b, Q̄ stored); version-1 checkpoints are unreadable and trigger a retrain."""
# Options that only steer scheduling, fallback or threads: a checkpoint stays usable when they change.
# Any other option shapes the model (anchor, inputs, window, volatilities …), so a checkpoint trained
# under another value of one of them is not this config's model: fall back and retrain.
OPERATIONAL_OPTIONS = frozenset(
    {"checkpoint", "retrain_every_hours", "max_age_hours", "auto_retrain", "fallback_half_life_hours", "threads"}
)
MIN_DIAG = 0.05
"""The diagonal of B gets MIN_DIAG × (norm of its row's off-diagonal part) added, so after row
normalisation L_ii ≥ MIN_DIAG/√(1+MIN_DIAG²): det R = Π L_ii² is bounded below, so R stays strictly
positive definite (no asset becomes an exact combination of the others) whatever the network emits."""


class LstmConfig(ComponentConfig):
    window_hours: int = Field(default=48, ge=2, le=2000, description="input sequence length")
    hidden: int = Field(default=32, ge=2, le=1024)
    vol_model: Literal["garch", "ewma"] = Field(default="garch", description="where the volatilities come from")
    vol_half_life_hours: float = Field(default=72.0, gt=0, description="EWMA volatility half-life (vol_model=ewma)")
    train_hours: int = Field(default=8760, ge=100, description="train on the last N returns")
    min_train_hours: int = Field(default=400, ge=50)
    validation_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    epochs: int = Field(default=40, ge=1, le=1000)
    patience: int = Field(default=4, ge=1)
    batch_size: int = Field(default=256, ge=8)
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    seed: int = Field(default=0, ge=0)
    deseasonalise: bool = Field(default=False, description="hour-of-day scale on returns (fit window)")
    checkpoint: str = Field(default="lstm.pt", min_length=1, description="file under the state dir")
    retrain_every_hours: int = Field(default=24, ge=1, description="daemon retraining schedule (default daily)")
    max_age_hours: float = Field(default=72.0, gt=0, description="older checkpoints are stale: fall back to ewma")
    auto_retrain: bool = Field(default=True, description="start background training from forecast() when due")
    fallback_half_life_hours: float = Field(default=72.0, gt=0)
    threads: int = Field(default=1, ge=1, le=64, description="torch CPU threads for training and inference")
    anchor: Literal["dcc", "constant"] = Field(
        default="dcc",
        description="dcc: gated residual on the DCC correlation (untrained = dcc); constant: the first model",
    )
    cross_features: bool | None = Field(
        default=None, description="add clipped z_i z_j and the DCC correlations to the inputs (None: with anchor=dcc)"
    )
    gate_init: float = Field(default=-3.0, le=0, description="anchor=dcc: initial logit of the residual's gate")
    max_step: float = Field(default=1.0, gt=0, le=5, description="anchor=dcc: bound on each entry of the residual")
    penalty: float = Field(default=0.0, ge=0, description="anchor=dcc: L2 penalty on the gated residual g·Δ")
    min_gain_se: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="keep the start unless the held-out NLL gain is beyond this many weekly-block SEs (0: any gain)",
    )
    vol_correction: bool = Field(
        default=False,
        description="anchor=dcc: the network also forecasts a gated, bounded log-scale on each GARCH volatility",
    )
    max_vol_step: float = Field(
        default=1.0, gt=0, le=3, description="vol_correction: bound on each log-scale (σ̂ × e^s, |s| ≤ this)"
    )

    @model_validator(mode="after")
    def _vol_needs_anchor(self) -> LstmConfig:
        if self.vol_correction and self.anchor != "dcc":
            raise ValueError("vol_correction needs anchor = 'dcc' (the constant-anchor net has no volatility head)")
        return self

    @property
    def crosses(self) -> bool:
        return self.anchor == "dcc" if self.cross_features is None else self.cross_features


# -- pure numerics (numpy side) --------------------------------------------------------------------------


def ewma_vol_path(r: np.ndarray, half_life: float) -> np.ndarray:
    """σ̂²_k for k = 0..T (T+1 rows): σ̂²_{k+1} = λσ̂²_k + (1−λ)r_k², σ̂²_0 = mean of the first rows' r².

    σ̂_k is the forecast for row k made after row k−1; the last row is the forecast for the next hour.
    """
    lam = 0.5 ** (1.0 / half_life)
    init = np.mean(r[: max(10, min(len(r), int(3 * half_life)))] ** 2, axis=0)
    init = np.where(init > 0, init, np.maximum(np.mean(r**2, axis=0), 1e-20))
    v = np.empty((r.shape[0] + 1, r.shape[1]))
    v[0] = init
    for i in range(r.shape[1]):
        v[1:, i], _ = signal.lfilter([1.0 - lam], [1.0, -lam], r[:, i] ** 2, zi=[lam * init[i]])
    return np.maximum(v, 1e-20)


def features(z: np.ndarray, corr_next: np.ndarray | None = None) -> np.ndarray:
    """Per-step inputs, float32: clipped z and z² − 1 (T × 2N); with ``corr_next`` (T × N × N, the DCC
    correlation forecast made after each row) also the clipped products z_i z_j (i < j) and those
    correlations' off-diagonal entries — the quantities DCC filters and what it currently believes."""
    zc = np.clip(z, -8.0, 8.0)
    parts = [zc, zc * zc - 1.0]
    if corr_next is not None:
        i, j = np.triu_indices(z.shape[1], 1)
        parts += [np.clip(zc[:, i] * zc[:, j], -10.0, 10.0), corr_next[:, i, j]]
    return np.concatenate(parts, axis=1).astype(np.float32)


def n_features(n: int, crosses: bool) -> int:
    return 2 * n + (n * (n - 1) if crosses else 0)


def safe_cholesky(c: np.ndarray) -> np.ndarray:
    """Batched Cholesky factor of correlation matrices; the smallest ridge that works where one is not PD."""
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        pass
    out = np.empty_like(c)
    flat_c, flat_o = c.reshape(-1, *c.shape[-2:]), out.reshape(-1, *c.shape[-2:])
    eye = np.eye(c.shape[-1])
    for k, m in enumerate(flat_c):
        for jitter in (0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2):
            try:
                flat_o[k] = np.linalg.cholesky((m + jitter * eye) / (1.0 + jitter))
                break
            except np.linalg.LinAlgError:
                continue
        else:
            flat_o[k] = eye
    return out


# -- the network -------------------------------------------------------------------------------------------


def _torch() -> Any:
    import torch

    return torch


def build_net(n: int, hidden: int, init_chol: np.ndarray) -> Any:
    torch = _torch()
    nn = torch.nn

    class CorrLSTM(nn.Module):
        """LSTM → lower-triangular B → row-normalised L → R = LLᵀ (see the module docstring)."""

        def __init__(self) -> None:
            super().__init__()
            self.n = n
            self.lstm = nn.LSTM(2 * n, hidden, batch_first=True)
            self.tril = torch.tril_indices(n, n)
            self.head = nn.Linear(hidden, self.tril.shape[1])
            nn.init.zeros_(self.head.weight)
            b = torch.as_tensor(init_chol, dtype=torch.float32)
            off = torch.tril(b, -1).norm(dim=1)
            diag = (torch.diagonal(b) - 1e-4 - MIN_DIAG * off).clamp_min(1e-3)  # forward adds these back
            b = b.clone()
            b[range(n), range(n)] = diag + torch.log(-torch.expm1(-diag))  # softplus⁻¹
            with torch.no_grad():
                self.head.bias.copy_(b[self.tril[0], self.tril[1]])

        def forward(self, x: Any) -> Any:
            """Cholesky factor L (batch × N × N) of the correlation forecast."""
            out, _ = self.lstm(x)
            v = self.head(out[:, -1])
            b = x.new_zeros((x.shape[0], self.n, self.n))
            b[:, self.tril[0], self.tril[1]] = v
            low = torch.tril(b, -1)
            d = torch.nn.functional.softplus(torch.diagonal(b, dim1=1, dim2=2)) + 1e-4 + MIN_DIAG * low.norm(dim=2)
            b = low + torch.diag_embed(d)
            return b / b.norm(dim=2, keepdim=True)

    return CorrLSTM()


def combine(l0: Any, p: Any) -> Any:
    """L = rownorm(L0 + P): strictly-lower entries add, the diagonal is L0_ii·exp(P_ii) (> 0 whatever P).

    L0 is the DCC correlation's Cholesky factor (unit rows, positive diagonal), P the network's bounded,
    gated residual. A triangular matrix with a positive diagonal is non-singular, so R = LLᵀ is positive
    definite, and unit rows make R_ii = 1: a correlation matrix by construction. P = 0 gives L0 exactly.
    """
    torch = _torch()
    low = torch.tril(l0, -1) + torch.tril(p, -1)
    d = torch.diagonal(l0, dim1=-2, dim2=-1) * torch.exp(torch.diagonal(p, dim1=-2, dim2=-1))
    b = low + torch.diag_embed(d)
    return b / b.norm(dim=-1, keepdim=True)


def build_dcc_net(
    n: int, hidden: int, n_in: int, gate_init: float, max_step: float, vol_step: float | None = None
) -> Any:
    torch = _torch()
    nn = torch.nn

    class GatedResidualLSTM(nn.Module):
        """LSTM → gate g ∈ (0, 1) and bounded residual Δ = max_step·tanh(·) → P = g·Δ (lower-triangular).

        The residual head starts at zero (Δ = 0) and the gate's bias at ``gate_init`` (strongly negative),
        so the untrained network is exactly the DCC correlation it is added to (``combine``).
        """

        def __init__(self) -> None:
            super().__init__()
            self.n = n
            self.lstm = nn.LSTM(n_in, hidden, batch_first=True)
            self.tril = torch.tril_indices(n, n)
            self.head = nn.Linear(hidden, self.tril.shape[1])
            self.gate = nn.Linear(hidden, 1)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            nn.init.zeros_(self.gate.weight)
            nn.init.constant_(self.gate.bias, gate_init)
            self.vol_step = vol_step
            if vol_step is not None:  # a second head: log-scales s on the GARCH volatilities, own gate
                self.vol_head = nn.Linear(hidden, n)
                self.vol_gate = nn.Linear(hidden, 1)
                nn.init.zeros_(self.vol_head.weight)
                nn.init.zeros_(self.vol_head.bias)
                nn.init.zeros_(self.vol_gate.weight)
                nn.init.constant_(self.vol_gate.bias, gate_init)

        def residual(self, x: Any) -> Any:
            """P = g·Δ (batch × N × N, lower-triangular incl. the diagonal's log-scale)."""
            return self.outputs(x)[0]

        def outputs(self, x: Any) -> tuple[Any, Any | None]:
            """(P, s): the correlation residual and the volatility log-scales (batch × N; None without the
            volatility head). s = g_v·vol_step·tanh(·) starts at 0, so the untrained net keeps GARCH's σ̂."""
            out, _ = self.lstm(x)
            h = out[:, -1]
            g = torch.sigmoid(self.gate(h))
            v = g * max_step * torch.tanh(self.head(h))
            p = x.new_zeros((x.shape[0], self.n, self.n))
            p[:, self.tril[0], self.tril[1]] = v
            if self.vol_step is None:
                return p, None
            s = torch.sigmoid(self.vol_gate(h)) * self.vol_step * torch.tanh(self.vol_head(h))
            return p, s

        def forward(self, x: Any, l0: Any) -> Any:
            return combine(l0, self.residual(x))

    return GatedResidualLSTM()


def nll(chol: Any, z: Any, *, per_sample: bool = False) -> Any:
    """Mean (or, ``per_sample``, each) of log det R + zᵀR⁻¹z with R = LLᵀ (constants dropped)."""
    torch = _torch()
    y = torch.linalg.solve_triangular(chol, z.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(dim=1)
    out = logdet + (y * y).sum(dim=1)
    return out if per_sample else out.mean()


def gain_t(trained: np.ndarray, start: np.ndarray, block: int = 168) -> float:
    """t-statistic of the held-out NLL gain of the trained network over its start (negative: better).

    Samples an hour apart are correlated, so the SE comes from non-overlapping weekly block means;
    with fewer than two blocks there is no SE and the gain is not significant (returns 0).
    """
    d = np.asarray(trained, dtype=float) - np.asarray(start, dtype=float)
    k = len(d) // block
    if k < 2:
        return 0.0
    means = d[: k * block].reshape(k, block).mean(axis=1)
    se = float(means.std(ddof=1)) / math.sqrt(k)
    return float(d.mean()) / se if se > 0 else (-math.inf if d.mean() < 0 else 0.0)


def corr_cholesky(z: np.ndarray) -> np.ndarray:
    """Cholesky factor of the sample correlation of ``z`` — unshrunk; a tiny ridge only if it is not PD.

    This is the constant-correlation start of the network (and the model kept when training never beats
    it), so it must be the window's correlation itself: an earlier version shrank it to 0.9·C + 0.1·I,
    which made the "keep the start" fallback a worse model than the plain sample correlation.
    """
    c = np.corrcoef(z, rowvar=False) if z.shape[1] > 1 else np.ones((1, 1))
    c = 0.5 * (c + c.T)
    for jitter in (0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2):
        try:
            return np.linalg.cholesky((c + jitter * np.eye(len(c))) / (1.0 + jitter))
        except np.linalg.LinAlgError:
            continue
    return np.eye(len(c))


# -- the forecaster ------------------------------------------------------------------------------------------


class LstmForecaster:
    name = "lstm"

    def __init__(self, cfg: LstmConfig | None = None, ctx: ComponentContext | None = None) -> None:
        self.cfg = cfg or LstmConfig()
        self.ctx = ctx
        self.retrain_every_hours = self.cfg.retrain_every_hours
        self.auto_retrain = self.cfg.auto_retrain
        """The daemon, which schedules retraining on a longer window itself, turns this off."""
        self.net: Any = None
        self.meta: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loaded_mtime: float | None = None
        self._fallback_reason: str | None = None
        self._state: tuple[Any, ...] | None = None
        """anchor=dcc: the filter state of the last predict (see ``_dcc_state``)."""
        self._ewma = EwmaForecaster(
            EwmaConfig(half_life_hours=self.cfg.fallback_half_life_hours, deseasonalise=self.cfg.deseasonalise), ctx
        )
        self.last_train: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.ctx is None else Path(self.ctx.state_dir) / self.cfg.checkpoint

    def _hour(self, last_hour: int | None) -> int:
        if last_hour is not None:
            return int(last_hour) % 24
        if self.ctx is None:
            raise ForecastError("lstm: deseasonalise needs the close hour of the last return (no clock)")
        return self.ctx.clock.now().astimezone(UTC).hour

    def _standardise(
        self, r: np.ndarray, last_hour: int | None, scale: np.ndarray | None, garch: GarchParams | None
    ) -> tuple[np.ndarray, ...]:
        """(z rows, σ̂ of the next hour) with the stored hour-of-day scale applied if any."""
        nxt = np.ones(r.shape[1])
        if scale is not None:  # a local object: training may run in another thread meanwhile
            hour = self._hour(last_hour)
            season = Deseasonaliser()
            season.scale = scale
            r = season.transform(r, hour)
            nxt = season.next_scale(hour)
        v = garch_filter(r, garch) if garch is not None else ewma_vol_path(r, self.cfg.vol_half_life_hours)
        z = r / np.sqrt(v[:-1])
        return z, np.sqrt(v[-1]) * nxt

    # -- walk-forward API ----------------------------------------------------------------------------

    def fit(self, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None) -> dict[str, Any]:
        """Train a fresh network on the last ``train_hours`` returns (deterministic for a seed).

        ``anchor = "dcc"``: the GARCH margins and the DCC correlation (a, b, Q̄) are fitted on *all* the
        returns given, exactly as the ``dcc`` forecaster fits them, and the network learns a gated
        residual on DCC's correlation path over the last ``train_hours``. ``anchor = "constant"``: the
        former model, everything on the last ``train_hours``, starting from their constant correlation.
        """
        cfg = self.cfg
        r_all = _check_returns(assets, returns, self.name, cfg.min_train_hours)
        dcc = cfg.anchor == "dcc"
        r = r_all if dcc else r_all[-cfg.train_hours :]
        scale = None
        if cfg.deseasonalise:
            season = Deseasonaliser()
            season.fit(r, self._hour(last_hour))
            scale = season.scale
        garch = None
        if cfg.vol_model == "garch":
            season = Deseasonaliser()
            season.scale = scale
            g_in = season.transform(r, self._hour(last_hour)) if scale is not None else r
            try:
                garch = fit_garch(g_in)
            except (ValueError, np.linalg.LinAlgError) as exc:
                raise ForecastError(f"lstm: GARCH fit failed: {exc}") from exc
        z, _ = self._standardise(r, last_hour, scale, garch)
        w = cfg.window_hours
        extra: dict[str, Any] = {}
        if dcc:
            try:
                a, b, qbar, _ = fit_dcc_correlation(z)
            except (ValueError, np.linalg.LinAlgError) as exc:
                raise ForecastError(f"lstm: DCC fit failed: {exc}") from exc
            corr = q_to_r(dcc_q_path(z, a, b, qbar))  # T+1: corr[t] is the forecast for row t
            keep = min(len(z), cfg.train_hours)
            z = z[-keep:]
            corr = corr[-keep - 1 :]
            l0 = safe_cholesky(corr)
            x = features(z, corr[1:] if cfg.crosses else None)
            extra = {"dcc": {"a": a, "b": b, "qbar": qbar}}
        else:
            x = features(z, None)
        n_samp = len(z) - w
        if n_samp < 20:
            raise ForecastError(f"lstm: {len(z)} returns leave too few training samples for a {w}-hour window")
        xs = np.lib.stride_tricks.sliding_window_view(x, (w, x.shape[1]))[:-1, 0]  # sample k: rows k..k+w−1
        ys = z[w:].astype(np.float32)
        n_val = max(1, int(round(cfg.validation_fraction * n_samp)))
        if dcc:
            l0s = l0[w:-1].astype(np.float32)  # the DCC factor for each sample's target row k+w

            def make() -> Any:
                return build_dcc_net(
                    len(assets),
                    cfg.hidden,
                    x.shape[1],
                    cfg.gate_init,
                    cfg.max_step,
                    cfg.max_vol_step if cfg.vol_correction else None,
                )
        else:
            l0s = None
            start = corr_cholesky(z[: n_samp - n_val + w])

            def make() -> Any:
                return build_net(len(assets), cfg.hidden, start)

        net, info = self._train(make, xs, ys, l0s, n_val)
        info["train_samples"] = n_samp - n_val
        with self._lock:
            self.net = net
            self.meta = {
                "assets": list(assets),
                "scale": scale,
                "garch": garch,
                "config": cfg.model_dump(),
                "crosses": bool(dcc and cfg.crosses),
                **extra,
                **info,
            }
            self._state = None
        self.last_train = info
        return info

    def _train(
        self, make: Any, xs: np.ndarray, ys: np.ndarray, l0s: np.ndarray | None, n_val: int
    ) -> tuple[Any, dict[str, Any]]:
        """Adam with early stopping on the chronologically last ``n_val`` samples; keeps the start unless beaten."""
        torch = _torch()
        cfg = self.cfg
        t0 = time.perf_counter()
        prev_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        try:
            torch.manual_seed(cfg.seed)
            gen = torch.Generator().manual_seed(cfg.seed)
            net = make()
            opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
            xt, yt = torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(ys)
            lt = None if l0s is None else torch.from_numpy(np.ascontiguousarray(l0s))

            def loss_of(idx: Any, penalise: bool, per_sample: bool = False) -> Any:
                if lt is None:
                    return nll(net(xt[idx]), yt[idx], per_sample=per_sample)
                p, sv = net.outputs(xt[idx])
                if sv is None:
                    out = nll(combine(lt[idx], p), yt[idx], per_sample=per_sample)
                else:  # Σ = diag(σ̂e^s) R diag(σ̂e^s): in z = r/σ̂ units, the NLL of z·e^{−s} under R plus 2Σs
                    out = nll(combine(lt[idx], p), yt[idx] * torch.exp(-sv), per_sample=True) + 2.0 * sv.sum(dim=1)
                    out = out if per_sample else out.mean()
                if penalise and cfg.penalty > 0:
                    out = out + cfg.penalty * (p * p).sum(dim=(1, 2)).mean()
                return out

            n_tr = len(xt) - n_val
            val_idx = torch.arange(n_tr, len(xt))
            best, best_state, bad, epochs = math.inf, None, 0, 0
            net.eval()
            with torch.no_grad():
                base_val = float(loss_of(val_idx, False))  # the float32 mean, as ``val`` below
                base_each = loss_of(val_idx, False, True).double().numpy()
            for _ in range(cfg.epochs):
                epochs += 1
                net.train()
                perm = torch.randperm(n_tr, generator=gen)
                for i in range(0, n_tr, cfg.batch_size):
                    opt.zero_grad()
                    loss = loss_of(perm[i : i + cfg.batch_size], True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                net.eval()
                with torch.no_grad():
                    val = float(loss_of(val_idx, False))
                if val < best - 1e-5:
                    best, bad = val, 0
                    best_state = {k: v.clone() for k, v in net.state_dict().items()}
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
            kept_start = not (best_state is not None and best < base_val)
            t_gain = math.nan
            if not kept_start:
                net.load_state_dict(best_state)
                net.eval()
                with torch.no_grad():
                    t_gain = gain_t(loss_of(val_idx, False, True).double().numpy(), base_each)
                # optionally the gain must also be beyond noise: a residual fitted to a held-out stretch
                # by chance would cost in the hours after it (docs/forecasting.md, "min_gain_se")
                kept_start = cfg.min_gain_se > 0 and not t_gain < -cfg.min_gain_se
            if kept_start:  # training never beat the start (DCC, or the constant correlation): keep the start
                net = make()
                best = base_val
            net.eval()
        finally:
            torch.set_num_threads(prev_threads)
        info = {
            "epochs": epochs,
            "val_nll": best,
            "val_nll_start": base_val,
            "val_nll_constant_corr" if l0s is None else "val_nll_dcc": base_val,
            "kept_start": kept_start,
            "val_gain_t": t_gain,
            "seconds": time.perf_counter() - t0,
        }
        return net, info

    def _dcc_state(self, r: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(h_{T+1}, Q_{T+1}, last w rows of z, last w DCC correlation forecasts) after filtering ``r``.

        Continues the previous call's filter when ``r`` only appends rows to the last window (the
        walk-forward), as the ``dcc`` forecaster does; otherwise (the hourly cycle's rolling window)
        filters ``r`` from the start (h_0 = the GARCH backcast, Q_0 = Q̄), exactly as ``dcc`` does, so the
        anchor is its forecast.
        """
        g: GarchParams | None = meta.get("garch")  # None: vol_model = "ewma"
        lam = 0.5 ** (1.0 / self.cfg.vol_half_life_hours)
        d = meta["dcc"]
        a, b, qbar = float(d["a"]), float(d["b"]), np.asarray(d["qbar"], dtype=float)
        w = self.cfg.window_hours
        c = self._state
        if c is not None and c[0] is meta and r.shape[0] >= c[1].shape[0] and np.array_equal(r[: c[1].shape[0]], c[1]):
            _, old, h, q, zs, cs = c
            zs, cs = list(zs), list(cs)
            for e in r[old.shape[0] :]:
                zt = e / np.sqrt(h)
                q = (1.0 - a - b) * qbar + a * np.outer(zt, zt) + b * q
                h = g.omega + g.alpha * e * e + g.beta * h if g is not None else lam * h + (1.0 - lam) * e * e
                h = np.maximum(h, 1e-300 if g is not None else 1e-20)
                zs.append(zt)
                cs.append(q_to_r(q))
            zs, cs = np.asarray(zs[-w:]), np.asarray(cs[-w:])
        else:
            hs = garch_filter(r, g) if g is not None else ewma_vol_path(r, self.cfg.vol_half_life_hours)
            z = r / np.sqrt(hs[:-1])
            qs = dcc_q_tail(z, a, b, qbar, w - 1)  # Q_{T−w+1}..Q_T
            h, q = hs[-1], qs[-1]
            zs, cs = z[-w:], q_to_r(qs)
        self._state = (meta, r.copy(), h, q, zs, cs)
        return h, q, zs, cs

    def predict(self, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None) -> Forecast:
        torch = _torch()
        with self._lock:
            net, meta = self.net, self.meta
        if net is None or list(assets) != meta.get("assets"):
            raise ForecastError("lstm: no trained model for these assets")
        r = _check_returns(assets, returns, self.name, self.cfg.window_hours + 2)
        scale = meta.get("scale")
        anchored = meta.get("dcc") is not None
        if torch.get_num_threads() != self.cfg.threads:
            # torch's intra-op threads fight numpy and the cycle for the cores: 50 assets took 25 ms with
            # 2 threads on a busy 2-core machine and 1.7 ms with one (bench/lstm_inference.py)
            torch.set_num_threads(self.cfg.threads)
        if anchored:
            nxt = np.ones(r.shape[1])
            if scale is not None:
                hour = self._hour(last_hour)
                season = Deseasonaliser()
                season.scale = np.asarray(scale)
                r = season.transform(r, hour)
                nxt = season.next_scale(hour)
            h, q, zs, cs = self._dcc_state(r, meta)
            sd = np.sqrt(h) * nxt
            x = torch.from_numpy(features(zs, cs if meta.get("crosses") else None)[None])
            l0 = safe_cholesky(q_to_r(q))
            with torch.no_grad():
                p, sv = net.outputs(x)
            chol = combine(torch.from_numpy(l0), p[0].double()).numpy()
            if sv is not None:
                sd = sd * np.exp(sv[0].double().numpy())
        else:
            r = r[-(self.cfg.window_hours + 10 * int(self.cfg.vol_half_life_hours) + 1) :]  # EWMA start weight < 0.1%
            z, sd = self._standardise(r, last_hour, None if scale is None else np.asarray(scale), meta.get("garch"))
            x = torch.from_numpy(features(z)[-self.cfg.window_hours :][None])
            with torch.no_grad():
                chol = net(x)[0].double().numpy()
        # the float32 row normalisation leaves |row| = 1 ± 1e-7; the same normalisation in float64 makes the
        # unit diagonal exact to rounding (still the construction, not a repair)
        chol = chol / np.linalg.norm(chol, axis=1, keepdims=True)
        corr = chol @ chol.T
        corr = 0.5 * (corr + corr.T)
        cov = corr * np.outer(sd, sd)
        keys = ("epochs", "val_nll", "val_nll_start", "val_nll_constant_corr", "val_nll_dcc", "kept_start")
        diagnostics = {k: meta.get(k) for k in (*keys, "trained_until") if k in meta}
        diagnostics["anchor"] = "dcc" if anchored else "constant"
        f = Forecast(tuple(assets), cov, sd, corr, self.name, diagnostics=diagnostics)
        f.validate()
        if not np.all(np.isfinite(corr)) or np.abs(np.diag(corr) - 1).max() > 1e-5:
            raise ForecastError("lstm: network produced an invalid correlation matrix")
        return f

    # -- daemon API ------------------------------------------------------------------------------------

    def save(self, path: Path, trained_until: datetime) -> None:
        torch = _torch()
        with self._lock:
            state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            meta = dict(self.meta)
        meta["trained_until"] = trained_until.astimezone(UTC).isoformat()
        live_garch, live_dcc = meta.get("garch"), meta.get("dcc")
        meta["version"] = CHECKPOINT_VERSION
        if live_dcc is not None:
            meta["dcc"] = {
                "a": float(live_dcc["a"]),
                "b": float(live_dcc["b"]),
                "qbar": np.asarray(live_dcc["qbar"]).tolist(),
            }
        meta["scale"] = None if meta.get("scale") is None else np.asarray(meta["scale"]).tolist()
        g = meta.get("garch")
        if g is not None:  # plain lists: the checkpoint loads with weights_only=True
            meta["garch"] = {k: np.asarray(getattr(g, k)).tolist() for k in ("omega", "alpha", "beta", "backcast")}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        torch.save({"state": state, "meta": meta}, tmp)
        os.replace(tmp, path)  # atomic: a reader never sees half a checkpoint
        with self._lock:
            self.meta = {**meta, "garch": live_garch, "dcc": live_dcc}
            self._loaded_mtime = path.stat().st_mtime

    def load(self, path: Path) -> None:
        torch = _torch()
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = blob["meta"]
        if meta.get("version") != CHECKPOINT_VERSION:
            raise ForecastError(f"lstm: checkpoint {path} has version {meta.get('version')}")
        if meta.get("garch") is not None:
            meta["garch"] = GarchParams(**{k: np.asarray(v, dtype=float) for k, v in meta["garch"].items()})
        n, hidden = len(meta["assets"]), int(meta["config"]["hidden"])
        if meta.get("dcc") is not None:
            meta["dcc"] = {**meta["dcc"], "qbar": np.asarray(meta["dcc"]["qbar"], dtype=float)}
            c = meta["config"]
            n_in = n_features(n, bool(meta.get("crosses")))
            vol_step = float(c.get("max_vol_step", 1.0)) if c.get("vol_correction") else None
            net = build_dcc_net(n, hidden, n_in, float(c["gate_init"]), float(c["max_step"]), vol_step)
        else:
            net = build_net(n, hidden, np.eye(n))
        net.load_state_dict(blob["state"])
        net.eval()
        with self._lock:
            self.net, self.meta = net, meta
            self._loaded_mtime = path.stat().st_mtime

    def retrain(
        self, assets: Sequence[str], returns: np.ndarray, now: datetime | None = None, *, last_hour: int | None = None
    ) -> dict[str, Any]:
        """Fit on ``returns`` and write the checkpoint (blocking; ``retrain_async`` for the daemon).

        ``last_hour`` (the UTC close hour of the last return, for ``deseasonalise``) defaults to the hour
        of ``now``, the time the returns were fetched — never the clock inside a training thread, which
        may have moved on by the time the thread runs.
        """
        path = self.checkpoint_path
        if path is None:
            raise ForecastError("lstm: retrain needs a state directory (component context)")
        now = now or (self.ctx.clock.now() if self.ctx else datetime.now(UTC))
        if last_hour is None:  # the bars end on the hour: the last return closes at the hour floor of ``now``
            last_hour = now.astimezone(UTC).hour
        info = self.fit(assets, returns, last_hour=last_hour)
        self.save(path, now)
        log.info("lstm: retrained in %.1f s (%d epochs), checkpoint %s", info["seconds"], info["epochs"], path)
        return info

    def config_change(self) -> str | None:
        """The model options on which the loaded checkpoint differs from the config, or None.

        An upgrade that changes a default (``anchor`` became ``dcc``) or an edited config must not
        keep serving the old model until the next scheduled retraining.
        """
        saved = self.meta.get("config") or {}
        now = self.cfg.model_dump()
        changed = sorted(k for k in now if k not in OPERATIONAL_OPTIONS and saved.get(k, "<absent>") != now[k])
        if not changed:
            return None
        return ", ".join(f"{k}: {saved.get(k, '<absent>')!r} → {now[k]!r}" for k in changed)

    def retrain_due(self, now: datetime) -> bool:
        """Whether the checkpoint is missing, unreadable, for another model config, or at least
        ``retrain_every_hours`` old at ``now``.

        The daemon asks this at start so that a restart within the day does not retrain again.
        """
        path = self.checkpoint_path
        if path is None or not path.exists():
            return True
        try:
            if self._loaded_mtime != path.stat().st_mtime:
                self.load(path)
        except Exception:  # unreadable: a retrain replaces it
            return True
        if self.config_change() is not None:
            return True
        until = self.meta.get("trained_until")
        if not until:
            return True
        return (now - datetime.fromisoformat(until)).total_seconds() / 3600 >= self.retrain_every_hours

    def retrain_async(
        self, assets: Sequence[str], returns: np.ndarray, now: datetime | None = None, *, last_hour: int | None = None
    ) -> bool:
        """Start ``retrain`` in a daemon thread unless one is running; returns whether it started.

        ``now`` (default: the clock, read here, not in the thread) and ``last_hour`` are fixed before the
        thread starts."""
        if self._thread is not None and self._thread.is_alive():
            return False
        assets, returns = tuple(assets), np.array(returns, copy=True)
        now = now or (self.ctx.clock.now() if self.ctx else datetime.now(UTC))

        def job() -> None:
            try:
                self.retrain(assets, returns, now, last_hour=last_hour)
            except Exception as exc:  # the cycle keeps running on the old model or the fallback
                log.exception("lstm: background retraining failed")
                self._emit("forecast_retrain_failed", f"lstm retraining failed: {exc!r}", Severity.WARNING)

        self._thread = threading.Thread(target=job, name="lstm-retrain", daemon=True)
        self._thread.start()
        return True

    def _emit(self, kind: str, message: str, severity: Severity) -> None:
        if self.ctx is None:
            log.warning("%s: %s", kind, message)
            return
        self.ctx.emit(RiskEvent(kind, severity, "forecaster:lstm", message, self.ctx.clock.now()))

    def _fallback(self, assets: Sequence[str], returns: np.ndarray, reason: str, last_hour: int | None) -> Forecast:
        f = self._ewma.forecast(assets, returns, last_hour=last_hour)
        if reason != self._fallback_reason:
            self._emit("forecast_fallback", f"lstm unavailable ({reason}); using ewma", Severity.WARNING)
            self._fallback_reason = reason
        return Forecast(
            f.assets, f.cov, f.sigma, f.corr, "ewma", f.horizon_hours, f.mu,
            {**f.diagnostics, "fallback_from": "lstm", "reason": reason},
        )  # fmt: skip

    def forecast(self, assets: Sequence[str], returns: np.ndarray, *, last_hour: int | None = None) -> Forecast:
        """The daemon path: checkpoint → LSTM forecast, else the ewma fallback (see the module docstring)."""
        path = self.checkpoint_path
        now = self.ctx.clock.now() if self.ctx is not None else datetime.now(UTC)
        reason = None
        if path is None or not path.exists():
            reason = "no checkpoint"
        else:
            try:
                if self._loaded_mtime != path.stat().st_mtime:
                    self.load(path)
            except Exception as exc:  # a corrupt checkpoint must not stop the cycle
                reason = f"unreadable checkpoint: {exc}"
        age_h = math.inf
        if reason is None:
            until = self.meta.get("trained_until")
            age_h = (now - datetime.fromisoformat(until)).total_seconds() / 3600 if until else math.inf
            if age_h > self.cfg.max_age_hours:
                reason = f"stale checkpoint ({age_h:.0f} h old)"
            elif list(assets) != self.meta.get("assets"):
                reason = "checkpoint made for other assets"
            elif (change := self.config_change()) is not None:
                reason = f"checkpoint made for another model config ({change})"
        if self.auto_retrain and self.ctx is not None and (reason is not None or age_h >= self.retrain_every_hours):
            r = np.asarray(returns, dtype=float)
            if r.ndim == 2 and len(r) >= self.cfg.min_train_hours and np.isfinite(r).all():
                self.retrain_async(assets, r, now, last_hour=last_hour)
        if reason is not None:
            return self._fallback(assets, returns, reason, last_hour)
        try:
            f = self.predict(assets, returns, last_hour=last_hour)
        except ForecastError as exc:
            return self._fallback(assets, returns, f"invalid output: {exc}", last_hour)
        except Exception as exc:  # torch RuntimeError, numpy LinAlgError, …: a broken model must not stop the cycle
            log.warning("lstm: predict raised %s: %s; falling back to ewma", type(exc).__name__, exc)
            return self._fallback(assets, returns, f"predict failed: {type(exc).__name__}: {exc}", last_hour)
        self._fallback_reason = None
        return f


@hookimpl
def rwabot_register_forecasters(register) -> None:
    def make(cfg: LstmConfig, ctx: ComponentContext) -> LstmForecaster:
        return LstmForecaster(cfg, ctx)

    make.gives_mu = False  # type: ignore[attr-defined]  # ρ(t) and σ only: λ > 0 needs a [returns] model
    register("lstm", make, LstmConfig)
