"""Named strategies: a forecaster, an optimizer and a policy that are meant to be used together."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bot.components import ComponentConfig, ComponentContext
from bot.hookspecs import hookimpl


class RiskParityConfig(ComponentConfig):
    half_life_hours: float = Field(default=72.0, gt=0)
    band: float = Field(default=0.02, gt=0, lt=1)


def risk_parity(cfg: RiskParityConfig, ctx: ComponentContext) -> dict[str, Any]:
    """EWMA covariance, equal risk contributions, and a no-trade band to keep costs down."""
    return {
        "forecaster": {"plugin": "ewma", "options": {"half_life_hours": cfg.half_life_hours}},
        "optimizer": {"plugin": "erc", "options": {}},
        "policy": {"plugin": "band", "options": {"band": cfg.band}},
    }


@hookimpl
def rwabot_register_strategies(register) -> None:
    register("risk_parity", risk_parity, RiskParityConfig)
