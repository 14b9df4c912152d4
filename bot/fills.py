"""The paper fill model, as a pure function: one definition for the paper venue and the fast backtest.

A buy fills at ``ask × (1 + impact)``, a sell at ``bid × (1 − impact)``, with the square-root law
``impact = coef × σ_h × (qty / hourly_volume) ** exponent`` (Almgren et al. 2005; Tóth et al. 2011) and
σ_h the asset's hourly volatility; the fee is ``fee_bps`` of the notional; slippage is measured against
the decision price, so it includes the half-spread as well as the impact.
"""

from __future__ import annotations


def impact(coef: float, sigma_h: float, qty: float, hourly_volume: float, exponent: float) -> float:
    """Price impact as a fraction of the quote for ``qty`` units."""
    return coef * sigma_h * (qty / max(hourly_volume, 1e-12)) ** exponent


def paper_fill(
    side: str, qty: float, bid: float, ask: float, impact_frac: float, fee_bps: float, decision_price: float
) -> tuple[float, float, float]:
    """(price, fee, slippage) of a market order of ``qty`` units filled whole."""
    if side == "buy":
        price = ask * (1 + impact_frac)
        slip = (price - decision_price) * qty
    else:
        price = bid * (1 - impact_frac)
        slip = (decision_price - price) * qty
    return price, price * qty * fee_bps / 1e4, slip
