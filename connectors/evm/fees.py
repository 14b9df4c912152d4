"""Fees that funds and issuers charge inside the share price, measured from the chain.

Why. An ERC-4626 fund with an entry or exit fee (OpenZeppelin's ``ERC4626Fees`` pattern, most
tokenized money-market funds) shows no fee anywhere: its previews include it, the ``Deposit`` and
``Withdraw`` events give the assets that moved and the shares, and the fee leaves for the manager in
the same transaction. Read off the event, a subscription looks like a purchase at a worse price, so
its cost would hide in the fill price and in slippage. Measured, it is the difference between what
was paid and what the shares are worth at the fund's own valuation:

    deposit:  fee = assets paid − convertToAssets(shares received)
    redeem:   fee = convertToAssets(shares given) − assets received

(at the state of the block of the trade; paper: the state the trade is simulated on; an ERC-7540
claim: at the block of each fulfilment it takes, where the manager fixed its price, see
``AsyncRequests._fulfilment_fee``). The fill then
carries ``fee`` = that amount and a ``price`` of the NAV per share, so ``qty · price + fee`` is still
exactly the cash that moved, and ``product_fee`` says which part of ``fee`` the product charged (an
issuer manager's fee is one too): the ledger books it as a cost kind of its own (``fill.product_fee``,
``Ledger.cost_totals()["product_fees"]``), shown apart in ``rwabot status`` and the backtest summary.
The value is read with six more digits (``convertToAssets(shares · 10⁶) / 10⁶``: ERC-4626 conversions
are linear) and the fee counted in whole units of the token, so the conversions' rounding (less than
a unit) does not show as a fee of one unit on a fee-free fund; a negative measurement (rounding in
the holder's favour) is booked as zero: the price absorbs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain import Fill


@dataclass(frozen=True)
class ProductFill(Fill):
    """A fill whose ``fee`` includes ``product_fee``, the part a fund or an issuer charged."""

    product_fee: float = 0.0


SCALE = 10**6  # the value of the shares is read in millionths of a raw quote unit


def product_fee(side: str, quote_raw: int, nav_value_micro: int) -> int:
    """Raw quote units a fund kept: paid over the shares' value (buy), or their value over the payout,
    in whole units of the token (``nav_value_micro``: the shares' value in millionths of a raw unit).
    What is left below one unit is the conversions' rounding, not a fee: a fee-free fund charges 0."""
    diff = quote_raw * SCALE - nav_value_micro if side == "buy" else nav_value_micro - quote_raw * SCALE
    return max(diff // SCALE, 0)


def fill_dict(f: Fill) -> dict[str, Any]:
    """A fill as JSON-able plain values (``product_fee`` only for a ``ProductFill``)."""
    d = {
        "fill_id": f.fill_id, "client_id": f.client_id, "venue": f.venue, "asset": f.asset, "side": f.side,
        "qty": f.qty, "price": f.price, "fee": f.fee, "slippage": f.slippage, "time": f.time.isoformat(),
        "gas": f.gas,
    }  # fmt: skip
    if isinstance(f, ProductFill):
        d["product_fee"] = f.product_fee
    return d


def fill_from_dict(d: dict[str, Any]) -> Fill:
    args = (d["fill_id"], d["client_id"], d["venue"], d["asset"], d["side"], float(d["qty"]), float(d["price"]),
            float(d["fee"]), float(d["slippage"]), datetime.fromisoformat(d["time"]),
            float(d.get("gas", 0.0)))  # fmt: skip
    if "product_fee" in d:
        return ProductFill(*args, product_fee=float(d["product_fee"]))
    return Fill(*args)
