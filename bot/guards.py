"""Pre-trade limits: the last check on every order, just before it is sent.

Why a separate check and not only optimizer bounds: the optimizer, the policy or a plugin may be wrong,
and a limit an operator sets for real money (a fat-finger cap per order, an exposure ceiling, a day's
turnover) must hold whatever they say. An order that would break one is refused whole with an
``order_denied`` risk event naming the limit, never clipped to fit: a silently smaller order hides the
disagreement between the plan and the limits (nautilus_trader's RiskEngine denies orders the same way).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.config import LimitsSection


@dataclass(frozen=True)
class Exposure:
    """What an order is judged against: NAV, the value held now of each asset and of each venue's
    assets (cash excluded), and the value traded over the last 24 hours."""

    nav: float
    asset_value: Mapping[str, float]
    venue_value: Mapping[str, float]
    traded_24h: float


def active(limits: LimitsSection) -> bool:
    return bool(
        limits.max_order_notional is not None
        or limits.max_asset_exposure
        or limits.max_venue_exposure
        or limits.max_daily_turnover is not None
    )


def _share(table: Mapping[str, float], key: str) -> float | None:
    return table.get(key, table.get("*"))


def order_denial(
    limits: LimitsSection, asset: str, venue: str, side: str, notional: float, e: Exposure, *, exiting: bool = False
) -> str | None:
    """Why the order may not be sent, or None. ``exiting``: the kill switch is reducing the book; its sells
    are not held to the turnover limit (a limit meant to stop churn must not keep a losing book open)."""
    cap = limits.max_order_notional
    if cap is not None and notional > cap:
        return f"{side} {asset} of {notional:,.2f} is above limits.max_order_notional {cap:,.2f}"
    if side == "buy" and e.nav > 0:
        share = _share(limits.max_asset_exposure, asset)
        after = e.asset_value.get(asset, 0.0) + notional
        if share is not None and after > share * e.nav:
            return (f"buy {asset} of {notional:,.2f} would hold {after:,.2f} ({after / e.nav:.2%} of NAV), above "
                    f"limits.max_asset_exposure {share:.2%}")  # fmt: skip
        share = _share(limits.max_venue_exposure, venue)
        after = e.venue_value.get(venue, 0.0) + notional
        if share is not None and after > share * e.nav:
            return (f"buy {asset} of {notional:,.2f} would put {after:,.2f} ({after / e.nav:.2%} of NAV) on venue "
                    f"{venue}, above limits.max_venue_exposure {share:.2%}")  # fmt: skip
    turn = limits.max_daily_turnover
    if turn is not None and not (exiting and side == "sell") and e.nav > 0:
        after = e.traded_24h + notional
        if after > turn * e.nav:
            return (f"{side} {asset} of {notional:,.2f} would bring 24 h turnover to {after:,.2f} "
                    f"({after / e.nav:.2%} of NAV), above limits.max_daily_turnover {turn:.2%}")  # fmt: skip
    return None
