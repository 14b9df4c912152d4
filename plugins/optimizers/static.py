"""The ``static`` optimizer: fixed weights (equal, or inverse volatility frozen at the first forecast).

Why it exists: a claim about risk parity ("Sharpe above 1.5 under correlated shocks") means little
without the books it is meant to beat, run on the same paths through the same cycle: the same venues,
costs, liquidity caps, venue budgets, outages and policy. Swapping the optimizer for this one is the
only change, so what differs in the results is what the risk-parity optimizer (and its forecasts) adds.

``weights = "equal"``: 1/N each. ``weights = "inverse_vol"``: ∝ 1/σ_i, σ_i from the first forecast the
optimizer sees (the history window before the run's first cycle) and then frozen (``freeze = false``
re-estimates it every cycle: naive risk parity, correlations ignored).

Bounds are met the way a static allocator meets them: the weights are w_i = clip(s·b_i, lower_i,
upper_i) with s such that the book is fully invested, so a capped asset's excess is spread over the
others in proportion to their base weights; a venue budget (``groups``) over its upper bound scales
its members the same way, and the rest of the book takes up what it gives back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from bot.components import ComponentConfig, ComponentContext
from bot.domain import Forecast, GroupBound, Target
from bot.errors import InfeasibleBoundsError, OptimizerError
from bot.hookspecs import hookimpl
from bot.riskmath import risk_contributions


class StaticConfig(ComponentConfig):
    weights: Literal["equal", "inverse_vol"] = "equal"
    freeze: bool = True


def _fill(base: np.ndarray, lower: np.ndarray, upper: np.ndarray, total: float) -> np.ndarray:
    """clip(s·base, lower, upper) summing to ``total``, exactly: the sum is piecewise linear and
    non-decreasing in s, with breakpoints where an asset leaves its floor (l_i/b_i) or reaches its cap
    (u_i/b_i), so s is found on the segment that crosses ``total``."""
    if total <= float(lower.sum()) + 1e-15:
        return lower.copy()
    if total >= float(upper.sum()) - 1e-15:
        return upper.copy()
    pos = base > 0
    if not pos.any():
        raise OptimizerError("static: no asset with a base weight has room under its cap")
    knots = np.unique(np.concatenate([[0.0], lower[pos] / base[pos], upper[pos] / base[pos]]))
    sums = np.clip(knots[:, None] * base[None, :], lower, upper).sum(axis=1)
    if sums[-1] < total - 1e-12:  # the room left is on assets with no base weight
        raise OptimizerError("static: the assets with room under their caps have no base weight")
    j = int(np.searchsorted(sums, total, side="left"))
    if j == 0:
        s = knots[0]
    else:
        s0, s1, f0, f1 = knots[j - 1], knots[j], sums[j - 1], sums[j]
        s = s0 + (total - f0) * (s1 - s0) / (f1 - f0) if f1 > f0 else s1
    return np.clip(s * base, lower, upper)


class StaticOptimizer:
    """Fixed proportions under the cycle's bounds (``bot.components.Optimizer``, venue budgets included)."""

    def __init__(self, cfg: StaticConfig) -> None:
        self.cfg = cfg
        self.name = f"static:{cfg.weights}"
        self._base: np.ndarray | None = None

    def base(self, forecast: Forecast) -> np.ndarray:
        n = len(forecast.assets)
        if self.cfg.weights == "equal":
            return np.full(n, 1.0 / n)
        if self._base is None or not self.cfg.freeze:
            sd = np.sqrt(np.clip(np.diag(forecast.cov), 0.0, None))
            inv = 1.0 / np.maximum(sd, 1e-12 * max(float(sd.max()), 1e-300))
            self._base = inv / inv.sum()
        return self._base

    def optimize(
        self,
        forecast: Forecast,
        *,
        upper: np.ndarray,
        lower: np.ndarray,
        current: np.ndarray,
        groups: Sequence[GroupBound] = (),
    ) -> Target:
        upper, lower = np.asarray(upper, float), np.asarray(lower, float)
        if float(upper.sum()) < 1.0 - 1e-12:
            raise InfeasibleBoundsError(f"static: caps sum to {upper.sum():.6f} < 1")
        if float(lower.sum()) > 1.0 + 1e-12:
            raise InfeasibleBoundsError(f"static: floors sum to {lower.sum():.6f} > 1")
        b = self.base(forecast)
        fixed = np.zeros(len(b), bool)
        w = _fill(b, lower, upper, 1.0)
        binding: dict[str, str] = {}
        for _ in range(len(groups) + 1):
            over = [g for g in groups if g.name not in binding and float(w[g.members].sum()) > g.upper + 1e-12]
            if not over:
                break
            for g in over:
                m = np.asarray(g.members, bool)
                if float(lower[m].sum()) > g.upper + 1e-12:
                    raise OptimizerError(f"static: the floors of group {g.name} exceed its budget {g.upper:.6f}")
                w[m] = _fill(b[m], lower[m], upper[m], g.upper)
                fixed |= m
                binding[g.name] = "upper"
            rest = ~fixed
            left = 1.0 - float(w[fixed].sum())
            if float(upper[rest].sum()) < left - 1e-12:
                raise OptimizerError(f"static: venue budgets {sorted(binding)} leave {left:.6f} the other assets "
                                     f"cannot hold under their caps")  # fmt: skip
            w[rest] = _fill(b[rest], lower[rest], upper[rest], left)
        rc, sp = risk_contributions(w, forecast.cov)
        capped = w >= upper - 1e-12
        return Target(forecast.assets, w, rc / sp if sp > 0 else rc, sp, capped,
                      {"groups": binding} if binding else {})  # fmt: skip


@hookimpl
def rwabot_register_optimizers(register) -> None:  # noqa: ANN001 - pluggy passes bot.components.Register
    def make(cfg: StaticConfig, ctx: ComponentContext) -> StaticOptimizer:
        return StaticOptimizer(cfg)

    register("static", make, StaticConfig)
