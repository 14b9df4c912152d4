"""Named strategies: a forecaster, an optimizer and a policy that are meant to be used together."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bot.components import ComponentConfig, ComponentContext
from bot.hookspecs import hookimpl


class RiskParityConfig(ComponentConfig):
    half_life_hours: float = Field(default=72.0, gt=0)
    band: float = Field(default=0.25, gt=0, lt=1, description="no-trade band, in the units of ``measure``")
    measure: str = Field(default="relative", pattern="^(weight|relative|risk)$")


def risk_parity(cfg: RiskParityConfig, ctx: ComponentContext) -> dict[str, Any]:
    """EWMA covariance, equal risk contributions, and a no-trade band to keep costs down.

    The band is relative by default: rebalance when some holding is 25% off its target, the
    "25" of the practitioners' 5/25 rule. An absolute band sized for a 5% equity position never
    fires for a 45% near-cash position, and one sized for the latter churns the former.
    """
    return {
        "forecaster": {"plugin": "ewma", "options": {"half_life_hours": cfg.half_life_hours}},
        "optimizer": {"plugin": "erc", "options": {}},
        "policy": {"plugin": "band", "options": {"band": cfg.band, "measure": cfg.measure}},
    }


@hookimpl
def rwabot_register_strategies(register) -> None:
    register("risk_parity", risk_parity, RiskParityConfig)
