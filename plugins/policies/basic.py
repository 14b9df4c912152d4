"""Rebalancing policies: trade to the target every cycle, or only when drift leaves a band."""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

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
    band: float = Field(default=0.02, gt=0, lt=1, description="drift that triggers a trade (see ``measure``)")
    to: str = Field(default="target", pattern="^(target|edge)$")
    measure: str = Field(
        default="weight",
        pattern="^(weight|relative|risk)$",
        description="weight: |w_i - t_i|; relative: |w_i/t_i - 1|; risk: |RC_i(w)/RC_i(t) - 1| (risk shares)",
    )

    @model_validator(mode="after")
    def _edge_needs_a_weight_measure(self) -> BandConfig:
        if self.to == "edge" and self.measure == "risk":
            raise ValueError("to = 'edge' needs measure 'weight' or 'relative': a risk band has no per-asset edge")
        return self


class BandPolicy:
    """No-trade band: trade only when some asset's drift from its target exceeds ``band``.

    Drift is measured in weight (|w_i − t_i|), relative to the target (|w_i/t_i − 1|), or in risk
    shares (|RC_i(w)/RC_i(t) − 1|, RC shares of the forecast variance). An absolute weight band is
    loose for small positions and tight for large ones; in a risk-parity book, where a near-cash asset
    can carry half the weight and an equity 5%, the relative and risk measures treat them alike.

    ``to = "target"`` then moves every asset to its target; ``to = "edge"`` moves each asset only
    back to the band's edge, the cost-optimal rule for linear costs (Leland 2000; Dybvig 2005).
    """

    name = "band"

    def __init__(self, cfg: BandConfig) -> None:
        self.cfg = cfg

    def decide(self, current: np.ndarray, target: Target, forecast: Forecast) -> Decision:
        t = target.weights
        drift = self._drift(current, t, forecast) if len(t) else 0.0
        what = f"max {self.cfg.measure} drift {drift:.4f}"
        if drift <= self.cfg.band:
            return Decision(current.copy(), False, f"inside band ({what} <= {self.cfg.band})")
        if self.cfg.to == "target":
            return Decision(t.copy(), True, f"band breached ({what})")
        b = self.cfg.band
        if self.cfg.measure == "weight":
            w = t + np.clip(current - t, -b, b)
        else:  # relative: back to t_i(1 ± band); an asset with no target is sold out
            w = np.where(t > 0, t * (1.0 + np.clip(current / np.where(t > 0, t, 1.0) - 1.0, -b, b)), 0.0)
        return Decision(w, True, f"band breached ({what}), moved to band edge")

    def _drift(self, current: np.ndarray, t: np.ndarray, forecast: Forecast) -> float:
        """The largest drift under the configured measure; a held asset with no target counts as drift 1."""
        if self.cfg.measure == "weight":
            return float(np.max(np.abs(current - t)))
        if self.cfg.measure == "relative":
            rel = np.where(t > 0, np.abs(current / np.where(t > 0, t, 1.0) - 1.0), np.where(current > 0, 1.0, 0.0))
            return float(np.max(rel))
        # risk: compare each asset's share of portfolio variance held vs targeted, so a 1% asset and a
        # 40% asset are judged by the same yardstick, the one risk parity is about
        cov = forecast.cov
        cur_v, tgt_v = current @ cov @ current, t @ cov @ t
        if tgt_v <= 0 or cur_v <= 0:
            return 1.0 if np.any(np.abs(current - t) > 0) else 0.0
        cur_s, tgt_s = current * (cov @ current) / cur_v, t * (cov @ t) / tgt_v
        rel = np.where(tgt_s > 0, np.abs(cur_s / np.where(tgt_s > 0, tgt_s, 1.0) - 1.0), np.where(cur_s > 0, 1.0, 0.0))
        return float(np.max(rel))


@hookimpl
def rwabot_register_policies(register) -> None:
    def make_full(cfg: NoOptions, ctx: ComponentContext) -> FullPolicy:
        return FullPolicy()

    def make_band(cfg: BandConfig, ctx: ComponentContext) -> BandPolicy:
        return BandPolicy(cfg)

    register("full", make_full, NoOptions)
    register("band", make_band, BandConfig)
