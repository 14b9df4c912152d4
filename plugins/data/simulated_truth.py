"""``simulated_truth``: the simulated market that also knows the truth of every hour it generates.

``rwabot evaluate --simulated`` scores covariance forecasters against M_t = E[r_t r_tᵀ | state], the
conditional second moment of each hour's return, which only the simulator can know: it replays each
chunk's random draws to recover the latent state. It lives with the simulator because it reads the
simulator's internals, and a change there must fail here, loudly (the replay is checked against the
prices). Registered as the data source ``simulated_truth`` (same options as ``simulated``); the core
reaches it through the registry, and its two extra methods, ``truth(end, hours)`` and
``regime(end, hours)``, by name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bot.errors import DataError
from plugins.data.simulated import _MAX_VARIANCE_RATIO, CHUNK_HOURS, SimulatedMarket


class TruthMarket(SimulatedMarket):
    """Replays each chunk's random draws (same stream, same order) to recover the latent state.

    Observed return of asset i in hour t (see ``SimulatedMarket._generate_chunk``):
    r_t = κ(n_{t−1} + μ − s_{t−1}) + (φ−1)u_{t−1} + κ·m_t·sd_t·z_t + J_t + w_t, with z_t ~ (0, C(regime_t)),
    J_t a Bernoulli(p)·N(jm, jv²) jump and w_t the premium innovation. Hence
    M_t = m mᵀ + (κ m sd)(κ m sd)ᵀ ∘ C + diag(Var J + Var w), m = the conditional mean.
    The truth conditions on the regime of hour t itself (a finer information set than any
    forecaster's), which keeps the excess non-negative. Every replayed chunk is checked
    against the prices the simulator produced, so a change in the simulator fails loudly.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        n = len(self._names)
        self._truth = np.full((1, n, n), np.nan)
        self._loadings = {}
        for stressed, load in ((0, self._calm_load), (1, self._stress_load)):
            a = np.zeros((n, n + 1))
            a[:, 0] = load
            a[np.arange(n), 1 + np.arange(n)] = np.sqrt(1.0 - load * load)
            for i, g, rho in self._trackers:
                a[i] = rho * a[g]
                a[i, 1 + i] += math.sqrt(1.0 - rho * rho)
            self._loadings[stressed] = a @ a.T

    def _generate_chunk(self, chunk: int) -> tuple[np.ndarray, ...]:
        st = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._state.items()}
        res = super()._generate_chunk(chunk)
        logp, _, regime, _ = res
        cfg = self.cfg
        c, n = CHUNK_HOURS, len(self._names)
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, chunk]))
        rng.random(c)
        f = rng.standard_normal(c)
        e = rng.standard_normal((c, n))
        u_jump = rng.random((c, n))
        z_jump = rng.standard_normal((c, n))
        z_noise = rng.standard_normal((c, n))
        stressed = regime.astype(bool)[:, None]
        b = np.where(stressed, self._stress_load, self._calm_load)
        z = b * f[:, None] + np.sqrt(1.0 - b * b) * e
        for i, g, rho in self._trackers:
            z[:, i] = rho * z[:, g] + math.sqrt(1.0 - rho * rho) * e[:, i]
        h = st["h"]
        h_cap = self._v_calm * _MAX_VARIANCE_RATIO
        sd = np.empty((c, n))
        for t in range(c):
            sd[t] = np.sqrt(h)
            h = np.minimum(self._omega + h * (cfg.garch_alpha * z[t] * z[t] + cfg.garch_beta), h_cap)
        mult = np.where(stressed, cfg.stress_vol_multiplier, 1.0)
        lam = self._jump_rate * np.where(stressed, cfg.stress_jump_multiplier, 1.0)
        pj = -np.expm1(-lam)
        jumps = np.where(u_jump < pj, self._jump_mean + self._jump_vol * z_jump, 0.0)
        latent = st["n"] + np.cumsum(self._mu + mult * sd * z + jumps, axis=0)
        kappa, phi = self._kappa, self._phi
        w = self._noise_sd * np.sqrt(1.0 - phi * phi) * z_noise
        s_prev, u_prev, n_prev = st["s"], st["u"], st["n"]
        mean = np.empty((c, n))
        check = np.empty((c, n))
        for t in range(c):
            mean[t] = kappa * (n_prev + self._mu - s_prev) + (phi - 1.0) * u_prev + pj[t] * self._jump_mean
            s_prev = (1.0 - kappa) * s_prev + kappa * latent[t] + (1.0 - kappa) * jumps[t]
            u_prev = phi * u_prev + w[t]
            n_prev = latent[t]
            check[t] = s_prev + u_prev
        if not np.allclose(check, logp, rtol=0.0, atol=1e-9):
            raise DataError("evaluate: the simulator changed; TruthMarket's replay no longer matches its prices")
        jvar = pj * (self._jump_vol**2 + self._jump_mean**2) - (pj * self._jump_mean) ** 2
        wvar = (self._noise_sd**2) * (1.0 - phi * phi)
        scale = kappa * mult * sd
        corr = np.where(regime.astype(bool)[:, None, None], self._loadings[1], self._loadings[0])
        m = scale[:, :, None] * scale[:, None, :] * corr
        m += mean[:, :, None] * mean[:, None, :]
        idx = np.arange(n)
        m[:, idx, idx] += jvar + wvar
        self._truth = np.concatenate([self._truth, m])
        return res

    def truth(self, end: Any, hours: int) -> np.ndarray:
        """M_t for each bar of ``bars(…, end, hours)``: the second moment of the return *into* that bar."""
        lo, hi = self._window(end, hours, "truth")
        return self._truth[lo : hi + 1].copy()
