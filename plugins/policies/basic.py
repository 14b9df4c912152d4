"""Rebalancing policies: trade to the target every cycle, or only when drift leaves a band."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from bot.components import ComponentConfig, ComponentContext, NoOptions
from bot.domain import Decision, Forecast, Target
from bot.hookspecs import hookimpl


class FullPolicy:
    """Move all the way to the target each cycle: the reference the cheaper policies are judged by."""

    name = "full"

    def decide(self, current: np.ndarray, target: Target, forecast: Forecast) -> Decision:
        drift = float(np.max(np.abs(current - target.weights))) if len(current) else 0.0
        return Decision(target.weights.copy(), True, f"full rebalance (max drift {drift:.4f})")


class BandConfig(ComponentConfig):
    band: float = Field(default=0.02, gt=0, lt=1, description="absolute weight drift that triggers a trade")
    to: str = Field(default="target", pattern="^(target|edge)$")


class BandPolicy:
    """No-trade band: trade only when some |w_i − target_i| exceeds ``band``.

    ``to = "target"`` then moves every asset to its target; ``to = "edge"`` moves each asset only
    back to the band's edge, the cost-optimal rule for linear costs (Leland 2000; Dybvig 2005).
    """

    name = "band"

    def __init__(self, cfg: BandConfig) -> None:
        self.cfg = cfg

    def decide(self, current: np.ndarray, target: Target, forecast: Forecast) -> Decision:
        gap = current - target.weights
        drift = float(np.max(np.abs(gap))) if len(gap) else 0.0
        if drift <= self.cfg.band:
            return Decision(current.copy(), False, f"inside band (max drift {drift:.4f} <= {self.cfg.band})")
        if self.cfg.to == "target":
            return Decision(target.weights.copy(), True, f"band breached (max drift {drift:.4f})")
        w = target.weights + np.clip(gap, -self.cfg.band, self.cfg.band)
        return Decision(w, True, f"band breached (max drift {drift:.4f}), moved to band edge")


@hookimpl
def rwabot_register_policies(register) -> None:
    def make_full(cfg: NoOptions, ctx: ComponentContext) -> FullPolicy:
        return FullPolicy()

    def make_band(cfg: BandConfig, ctx: ComponentContext) -> BandPolicy:
        return BandPolicy(cfg)

    register("full", make_full, NoOptions)
    register("band", make_band, BandConfig)
