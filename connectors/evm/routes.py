"""Ways into and out of a tokenized asset besides a vault: an issuer's mint/redeem manager and a
Uniswap V2 pool (fee-on-transfer tokens included), and the choice of the cheapest route for a size.

Why. Real tokenized funds are entered and left through an issuer's manager contract (Ondo's OUSG
InstantManager, Superstate's USTB, BUIDL's redeemer) with fees, minimums, rate limits and a
redemption capped by the stablecoin the manager holds — none of it standard, so the manager is
*described* in config by its function signatures. The same token often also trades on a pool, where
a PAXG-style token takes a fee on every transfer: the router's ``…SupportingFeeOnTransferTokens``
swaps are the only ones that work, the pool's quote overstates what arrives by that fee, and the
fill must be what the wallet's balance actually moved (its ``Transfer`` logs), not the pool's
``Swap``. When one asset has several routes, each is quoted for the order's size and the one with
the lowest all-in cost — fee, price impact, gas, and settlement delay at a carry rate — is taken.

The arithmetic here is pure; the venue does the calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from bot.components import ComponentConfig

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
SIGNATURE = r"^[A-Za-z_][A-Za-z0-9_]*\([A-Za-z0-9_,\[\]]*\)$"

# gas of each kind of trade, measured on anvil (bench/rwa_gas.py, tests/connectors/evm): the route
# choice needs a number before any approval exists, when the node cannot estimate the trade itself
GAS_ESTIMATE = {"vault": 77_200, "pool": 97_200, "manager": 118_000, "univ2": 142_000, "approve": 46_400}


class ManagerSpec(ComponentConfig):
    """An issuer's instant mint/redeem manager, by its function signatures.

    Each fee and minimum is either a number (bps; quote units) or the signature of a view that
    returns it (bps; raw stablecoin units). ``remaining_*`` and ``liquidity`` views are read before
    every leg; None means the manager has no such limit (liquidity: the stablecoin it holds).
    """

    address: str = Field(pattern=ADDRESS)
    subscribe: str = Field(default="subscribe(uint256)", pattern=SIGNATURE, description="takes the stablecoin in")
    redeem: str = Field(default="redeem(uint256)", pattern=SIGNATURE, description="takes the shares in")
    preview_subscribe: str = Field(default="previewSubscribe(uint256)", pattern=SIGNATURE)
    preview_redeem: str = Field(default="previewRedeem(uint256)", pattern=SIGNATURE)
    mint_fee_bps: float | str = "mintFeeBps()"
    redeem_fee_bps: float | str = "redeemFeeBps()"
    minimum_subscription: float | str = "minimumSubscription()"
    minimum_redemption: float | str = "minimumRedemption()"
    remaining_subscription: str | None = Field(default="remainingSubscription()", pattern=SIGNATURE)
    remaining_redemption: str | None = Field(default="remainingRedemption()", pattern=SIGNATURE)
    liquidity: str | None = Field(default="availableLiquidity()", pattern=SIGNATURE)
    redeem_needs_approval: bool = Field(default=False, description="the manager pulls shares with transferFrom")


class UniV2Spec(ComponentConfig):
    """A Uniswap V2 pair of the token against the venue's stablecoin, traded through Router02."""

    router: str = Field(pattern=ADDRESS)
    pair: str = Field(pattern=ADDRESS)
    fee_bps: float = Field(default=30.0, ge=0, lt=10_000, description="the pair's swap fee (V2: 30)")
    transfer_fee_bps: float = Field(default=0.0, ge=0, lt=10_000, description="a fee-on-transfer token's fee")
    transfer_fee_view: str | None = Field(
        default=None, pattern=SIGNATURE, description="e.g. getFeeFor(uint256) (PAXG): read instead of the bps"
    )


class RouteSpec(ComponentConfig):
    """Another way to trade the same token (for the cheapest-route choice)."""

    kind: str = Field(pattern=r"^(pool|manager|univ2)$")
    pool: str | None = Field(default=None, pattern=ADDRESS, description="kind pool: the constant-product pool")
    manager: ManagerSpec | None = None
    univ2: UniV2Spec | None = None
    settlement_hours: float = Field(default=0.0, ge=0, le=24 * 60, description="delay before the asset is usable")


@dataclass(frozen=True)
class RouteCost:
    """All-in cost of one route for one order, in the quote currency."""

    route: int
    kind: str
    units: float  # what the wallet gets (buy) or gives (sell), net of any transfer fee
    quote: float  # what it pays (buy) or gets (sell)
    gas: float
    delay: float

    def score(self, side: str) -> float:
        if self.units <= 0:
            return math.inf
        if side == "buy":
            return (self.quote + self.gas + self.delay) / self.units
        return -(self.quote - self.gas - self.delay) / self.units


def cheapest(costs: Sequence[RouteCost], side: str) -> RouteCost:
    """The route with the lowest all-in cost per unit (ties: the first configured)."""
    if not costs:
        raise ValueError("no route could quote the order")
    return min(costs, key=lambda c: (c.score(side), c.route))


def delay_cost(notional: float, hours: float, carry_bps_per_day: float) -> float:
    """What money tied up for ``hours`` costs at a carry of ``carry_bps_per_day``."""
    return notional * carry_bps_per_day / 1e4 * hours / 24.0


def gross_for_net(net: int, transfer_fee_bps: float) -> int:
    """Units the pool must send so that ``net`` arrive after a fee of ``transfer_fee_bps``
    (the fee rounds down, as PAXG's does, so this never asks for less than needed)."""
    if transfer_fee_bps <= 0:
        return net
    return math.ceil(net * 1e4 / (1e4 - transfer_fee_bps)) + 1


def transfer_sums(logs: Sequence[Any], who: str) -> tuple[int, int]:
    """(units into ``who``, units out of ``who``) from decoded ERC-20 Transfer logs."""
    into = sum(int(x["args"]["value"]) for x in logs if x["args"]["to"] == who)
    out = sum(int(x["args"]["value"]) for x in logs if x["args"]["from"] == who)
    return into, out
