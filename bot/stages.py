"""The cycle's stages, in the order a cycle runs them:

    observe (bars, holdings) → forecast → bounds → target → decide → plan → execute → book

Everything here is a function of typed inputs to typed outputs; ``observe``, ``execute`` and ``book``
(bot/cycle.py for the daemon, bot/fast.py for the fast backtest) are the only stages that talk to data
sources, venues and the ledger. The daemon, paper trading and both backtest paths call these same
functions, so a backtest measures the rules the daemon trades by, not a re-implementation of them.

Plugins are called through their typed protocols (Forecaster, Optimizer, Policy): a stage that takes one
is pure for a pure plugin (a forecaster with state, such as the LSTM's, is its own business).
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from bot.components import Forecaster, Optimizer, Policy, ReturnModel
from bot.config import FundingSection, RiskSection
from bot.domain import Decision, Forecast, GroupBound, MarketInfo, Order, Target, Transfer
from bot.errors import ForecastError, InfeasibleBoundsError, OptimizerError
from bot.funding import FundingSkip, VenueCash, plan_transfers, transfer_client_id
from bot.killswitch import ACTIVE, restrict
from bot.ledger import PlannedLeg
from bot.riskmath import liquidity_limits, rc_dispersion, risk_contributions

# -- observe ----------------------------------------------------------------------------------------


@dataclass
class Holdings:
    """What the venues hold, read at one moment; venues that could not be read are held at the
    ledger's last known values (``failed`` says why, ``held`` lists their assets). Assets with value
    in flight (``Balances.pending``: an asynchronous request) are held too, listed in ``pending``
    with their units, which ``positions`` include."""

    prices: np.ndarray
    positions: np.ndarray
    cash: dict[str, float]  # all cash per venue, reserves included: what NAV counts
    spendable: dict[str, float]  # cash per venue that can buy assets
    failed: dict[str, str] = field(default_factory=dict)
    held: frozenset[str] = frozenset()
    excluded: tuple[str, ...] = ()  # venues with no value known at all: left out of NAV
    pending: Mapping[str, float] = field(default_factory=dict)  # units in flight, held until settled
    transit: float = 0.0  # quote cash sent by one venue and not yet credited by another: in NAV, spendable nowhere
    incoming: Mapping[str, float] = field(default_factory=dict)  # venue -> cash in transit to it
    as_of: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # asset -> {"quote"/"balance": time}

    @property
    def nav(self) -> float:
        return float(sum(self.cash.values()) + self.positions @ self.prices + self.transit)


@dataclass(frozen=True)
class Observation:
    """The observe stage's output: the market up to the last closed bar and the book held now."""

    key: str
    now: datetime
    returns: np.ndarray  # (T, n) log returns of the history window
    close: np.ndarray  # last closed bar's prices (the data source's)
    traded_value: np.ndarray  # (T', n) quote value traded per bar, the liquidity look-back
    last_volume: np.ndarray  # units traded in the last closed bar
    holdings: Holdings

    @property
    def nav(self) -> float:
        return self.holdings.nav

    @property
    def w0(self) -> np.ndarray:
        h = self.holdings
        return h.positions * h.prices / h.nav


@dataclass(frozen=True)
class Layout:
    """Which venue holds which asset, with the masks the budget stages use every cycle."""

    assets: tuple[str, ...]
    venue_of: Mapping[str, str]
    venues: tuple[str, ...]

    def mask(self, venue: str) -> np.ndarray:
        m = self._masks.get(venue)
        if m is None:
            m = np.array([self.venue_of[a] == venue for a in self.assets], dtype=bool)
            self._masks[venue] = m
        return m

    @property
    def _masks(self) -> dict[str, np.ndarray]:
        cache = self.__dict__.get("_mask_cache")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_mask_cache", cache)
        return cache


# -- forecast ---------------------------------------------------------------------------------------


def forecast_stage(
    forecaster: Forecaster, assets: Sequence[str], returns: np.ndarray, return_model: ReturnModel | None = None
) -> Forecast:
    """Σ(t) from the window, μ from the return model when one is configured (else the forecaster's, if
    it gives one); a bad forecast or a non-finite μ raises ForecastError."""
    forecast = forecaster.forecast(tuple(assets), returns)
    forecast.validate()
    return with_expected_returns(forecast, assets, returns, return_model)


def with_expected_returns(
    forecast: Forecast, assets: Sequence[str], returns: np.ndarray, return_model: ReturnModel | None
) -> Forecast:
    """The forecast with the return model's μ (unchanged without a model)."""
    if return_model is None:
        return forecast
    mu = np.asarray(return_model.expected(tuple(assets), returns), dtype=float)
    if mu.shape != (len(assets),) or not np.isfinite(mu).all():
        raise ForecastError(f"return model {return_model.name}: μ has shape {mu.shape} or is not finite: {mu}")
    return replace(forecast, mu=mu)


# -- bounds -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """Per-asset box bounds of the cycle: the operator's caps (``hard``), L_i from traded volume, the
    configured floors, and the assets held where they are (venue failed, price rule, request open)."""

    upper: np.ndarray
    lower: np.ndarray
    hard: np.ndarray
    held: np.ndarray  # bool
    invest: float  # share of NAV the book invests (the rest is the cash buffer)


def bounds_stage(
    risk: RiskSection, caps: np.ndarray, floors: np.ndarray, traded_value: np.ndarray, nav: float,
    w0: np.ndarray, held: np.ndarray,
) -> Bounds:  # fmt: skip
    """L_i = participation × the look-back's traded value over the horizon / NAV, never above the operator's
    cap; a held asset's bounds pin it at its current weight, so the optimizer plans the rest around it."""
    liq = liquidity_limits(traded_value, risk.participation, nav, risk.liquidity_horizon_hours)
    upper = np.minimum(caps, liq)
    lower = np.minimum(floors, upper)
    upper[held] = lower[held] = w0[held]
    return Bounds(upper, lower, caps, held, 1.0 - risk.cash_buffer)


# -- target -----------------------------------------------------------------------------------------


def optimize(
    optimizer: Optimizer,
    assets: tuple[str, ...],
    forecast: Forecast,
    upper: np.ndarray,
    lower: np.ndarray,
    current: np.ndarray,
    total: float,
    groups: Sequence[GroupBound] = (),
) -> tuple[Target, str]:
    """The optimizer on a book of ``total`` of NAV (its weights sum to 1): the cycle's weights in, out.

    Bounds that leave less than ``total`` investable hold every asset at its cap (the rest in cash);
    floors that ask for more than ``total`` are scaled down together to fit; either way the reason
    is the second value. An infeasible set of group bounds is the caller's to handle (it raises).
    """
    try:
        if groups:  # in the optimizer's frame too
            scaled = [GroupBound(g.name, g.members, g.upper / total, g.lower / total) for g in groups]
            t = optimizer.optimize(
                forecast, upper=upper / total, lower=lower / total, current=current / total, groups=scaled
            )
        else:
            t = optimizer.optimize(forecast, upper=upper / total, lower=lower / total, current=current / total)
    except InfeasibleBoundsError as exc:
        if groups:
            raise
        if upper.sum() < total:  # the caps leave cash: every asset at its cap
            weights = upper.copy()
            why = f"caps allow only {weights.sum():.2%} invested; the rest stays in cash ({exc})"
        else:  # the floors ask for more than the book: they are scaled down together to fit it
            weights = lower * (total / lower.sum())
            why = f"floors sum to {lower.sum():.2%}, over the {total:.2%} investable: scaled to fit ({exc})"
        rc, sp = risk_contributions(weights, forecast.cov)
        frac = rc / sp if sp > 0 else rc
        capped = np.ones(len(weights), bool)
        return Target(assets, weights, frac, sp, capped, {"infeasible": str(exc)}), why
    weights = t.weights * total
    rc, sp = risk_contributions(weights, forecast.cov)
    return Target(t.assets, weights, rc / sp if sp > 0 else rc, sp, t.capped, t.diagnostics), ""


def takes_groups(optimizer: Optimizer) -> bool:
    """Whether an optimizer's ``optimize`` accepts venue budgets (the optional ``groups`` keyword)."""
    params = inspect.signature(optimizer.optimize).parameters
    return "groups" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def venue_budgets(
    layout: Layout, weights: np.ndarray, h: Holdings, nav: float, invest: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Per venue that can trade: the share of NAV it can hold (its assets and spendable cash, less the
    cash buffer) and the share ``weights`` put on it. A failed venue's assets are fixed and not listed."""
    budgets: dict[str, float] = {}
    want: dict[str, float] = {}
    for vname in layout.venues:
        m = layout.mask(vname)
        if not m.any() or vname in h.failed:
            continue
        budgets[vname] = (h.spendable.get(vname, 0.0) + float(h.positions[m] @ h.prices[m])) / nav * invest
        want[vname] = float(weights[m].sum())
    return budgets, want


def funded_budgets(
    budgets: Mapping[str, float], want: Mapping[str, float], funding: FundingSection
) -> dict[str, float]:
    """Venue budgets for the target traded now. A short venue holds at most what it has; a venue with
    more than its share, and a route to a short one, holds at most its share: the excess is sold into
    cash that the next cycle's transfer carries over (only cash can travel, and transfers go before
    the sells). Without a route the excess could never leave, and is better invested where it is."""
    # only a gap worth a transfer is funded (funding.min_gap): a smaller one stays where it is, and
    # making the other venue sell into cash for it would leave that cash idle
    short = {v for v, b in budgets.items() if want[v] > b + funding.min_gap}
    out = dict(budgets)
    for v, b in budgets.items():
        if v not in short and any(r.source == v and r.destination in short for r in funding.routes):
            out[v] = min(b, want[v])
    return out


@dataclass(frozen=True)
class Fitted:
    target: Target
    note: str  # why the venue budgets were met by scaling instead of inside the optimizer ("" when they were not)
    scale: dict[str, float]  # venue -> factor its weights were scaled by (empty when the optimizer took the budgets)


def fit_to_venues(
    optimizer: Optimizer,
    groups_ok: bool,
    layout: Layout,
    target: Target,
    budgets: Mapping[str, float],
    forecast: Forecast,
    upper: np.ndarray,
    lower: np.ndarray,
    current: np.ndarray,
    invest: float,
    min_trade_weight: float,
) -> Fitted:
    """The best risk-balanced book the venues can hold now: the optimizer again, under venue budgets.

    Cash does not jump between venues, so a target that needs more value on a venue than it holds
    is unreachable this cycle (the funding legs bring the cash for a later one). Scaling that
    venue's assets down after optimising breaks the risk balance of the whole book (RC dispersion
    0.16 on the default config); instead the optimizer solves again with Σ_{i∈v} w_i ≤ B_v for
    every venue, so the assets no bound binds keep equal risk contributions and only the short
    venue's assets sit at its budget. The book invests what the venues hold (cash in transit is
    in none of them). An optimizer without ``groups`` gets the old proportional scaling, said in
    the note (so is a set of budgets the optimizer finds infeasible).
    """
    w = target.weights
    # a venue short by less than a trade worth making is not refitted: its buys are scaled to its cash
    # at planning anyway, and a budget that binds by rounding would mark its assets bound for nothing
    tol = max(min_trade_weight, 1e-9)
    over = [v for v, b in budgets.items() if float(w[layout.mask(v)].sum()) > b + tol]
    if not over:
        return Fitted(target, "", {})
    note = ""
    if groups_ok:
        masks = {v: layout.mask(v) for v in budgets}
        outside = ~np.any(np.array(list(masks.values())), axis=0) if masks else np.ones(len(w), bool)
        room = sum(min(b, float(upper[masks[v]].sum())) for v, b in budgets.items())
        total = min(invest, room + float(upper[outside].sum()))
        groups = [GroupBound(f"venue:{v}", masks[v], upper=min(b, total)) for v, b in budgets.items()]
        try:
            fitted, _ = optimize(optimizer, layout.assets, forecast, upper, lower, current, total, groups)
            return Fitted(fitted, "", {})
        except OptimizerError as exc:
            note = f"venue budgets {dict((v, round(b, 6)) for v, b in budgets.items())} refused ({exc}); "
    scale: dict[str, float] = {}
    w = w.copy()
    for vname, budget in budgets.items():
        mine = layout.mask(vname)
        want = float(w[mine].sum())
        if want > budget + 1e-12:
            scale[vname] = budget / want
            w[mine] *= scale[vname]
    rc, sp = risk_contributions(w, forecast.cov)
    diag = {**target.diagnostics, "venue_scaled": scale,
            "groups": {f"venue:{v}": "upper" for v in scale}}  # fmt: skip
    why = "the optimizer takes no venue budgets" if not groups_ok else ""
    note = (note + why + f"; venues {sorted(scale)} scaled to the value they hold").lstrip("; ")
    return Fitted(Target(target.assets, w, rc / sp if sp > 0 else rc, sp, target.capped, diag), note, scale)


def bounds_of(
    layout: Layout, target: Target, upper: np.ndarray, lower: np.ndarray, held: np.ndarray
) -> list[str | None]:
    """Per asset, the bound that binds its target (None: free, the assets risk parity is promised on)."""
    groups = target.diagnostics.get("groups") or {}
    out: list[str | None] = []
    for i, a in enumerate(layout.assets):
        wi = float(target.weights[i])
        if held[i]:
            out.append("held")
        elif bool(target.capped[i]) and wi >= float(upper[i]) - 1e-9:
            out.append("cap")
        elif float(lower[i]) > 0 and wi <= float(lower[i]) + 1e-9:
            out.append("floor")
        elif f"venue:{layout.venue_of[a]}" in groups:
            out.append(f"venue:{layout.venue_of[a]}")
        else:
            out.append(None)
    return out


def in_optimizer_frame(
    layout: Layout, w0: np.ndarray, upper: np.ndarray, venue_scale: Mapping[str, float]
) -> np.ndarray:
    """The holdings as the optimizer's unscaled book: a venue scaled by s last cycle holds w0/s of it.

    Without this the optimizer is told that a venue held at its reachable target is underweight (and
    that the other venue's idle cash must be invested), so a cost-aware optimizer, which trades only
    when the gain pays the cost, trades every hour to chase a target the venue scaling then undoes.
    """
    w = w0.copy()
    for vname, s in venue_scale.items():
        mine = layout.mask(vname)
        w[mine] = np.minimum(w0[mine] / s, np.maximum(upper[mine], w0[mine]))
    return w


@dataclass(frozen=True)
class FundingInputs:
    """What the funding step needs from outside the pure stages: each source's fee per transfer (its
    last charged one) and what each venue sent in the last 24 hours (the daily cap)."""

    fees: Mapping[str, float]
    sent_today: Mapping[str, float]
    quote: str


@dataclass(frozen=True)
class PlannedFunding:
    transfers: list[Transfer]
    skips: list[FundingSkip]
    outgoing: dict[str, float]  # venue -> cash it gives up now (amount and fee)
    planned: list[tuple[Transfer, float]]  # each transfer with its route's expected minutes


def plan_funding(
    key: str,
    funding: FundingSection,
    budgets: Mapping[str, float],
    want: Mapping[str, float],
    h: Holdings,
    nav: float,
    invest: float,
    inputs: FundingInputs,
) -> PlannedFunding:
    """The transfers this cycle sends and the cash each source gives up (amount and fee), which neither
    its budget nor its buys can count on any more."""
    if not funding.routes:
        return PlannedFunding([], [], {}, [])
    cash_buffer = 1.0 - invest
    venues = {
        v: VenueCash(
            value=budgets[v] / invest * nav,
            need=want[v] / invest * nav,
            spendable=float(h.spendable.get(v, 0.0)),
            incoming=float(h.incoming.get(v, 0.0)),
            fee=float(inputs.fees.get(v, 0.0)),
            reserve=cash_buffer * want[v] / invest * nav,
        )
        for v in budgets
    }
    limits = {v: funding.limits_of(v) for v in venues}
    sent = {v: float(inputs.sent_today.get(v, 0.0)) for v in venues}
    found, skips = plan_transfers(venues, funding.routes, limits, sent, funding.min_gap * nav)
    out: list[Transfer] = []
    planned: list[tuple[Transfer, float]] = []
    outgoing: dict[str, float] = {}
    for p in found:
        r = p.route
        asset = r.asset or inputs.quote
        cid = transfer_client_id(key, p.source, p.destination)
        t = Transfer(cid, key, p.source, p.destination, asset, p.amount, r.network, r.address or "", r.tag)
        out.append(t)
        planned.append((t, float(r.expected_minutes)))
        outgoing[p.source] = outgoing.get(p.source, 0.0) + p.amount + venues[p.source].fee
    return PlannedFunding(out, skips, outgoing, planned)


@dataclass(frozen=True)
class Targeted:
    """The target stage's output. ``target`` is what is stored (the optimizer under the venue budgets);
    ``aim`` is what the policy trades toward (the same, re-planned around holdings kept above a moved cap)."""

    target: Target
    aim: Target
    infeasible: str  # why the book cannot be fully invested ("" when it can)
    invested: float  # the share of NAV the optimizer could invest under the box bounds
    optimizer_dispersion: float | None  # RC dispersion of the optimizer's unconstrained-by-venues weights
    traded_dispersion: float | None  # ... of the stored target, on its free assets
    bound: list[str | None]
    upper_decide: np.ndarray  # the policy's ceiling: a kept holding may stay above its moved cap
    funding: PlannedFunding
    budgets: dict[str, float]  # what each venue can hold now (after what it sends)
    want: dict[str, float]  # what the optimizer put on each venue
    covered: dict[str, float]  # cash already travelling to each venue, share of the invested book
    spendable: dict[str, float]  # what each venue can spend on buys this cycle
    fit_note: str
    venue_scale: dict[str, float]


def target_stage(
    optimizer: Optimizer,
    groups_ok: bool,
    layout: Layout,
    risk: RiskSection,
    funding: FundingSection,
    key: str,
    forecast: Forecast,
    b: Bounds,
    h: Holdings,
    venue_scale: Mapping[str, float],
    funding_inputs: FundingInputs,
) -> Targeted:
    """Target weights the venues can hold now, and the transfers that let them hold the rest later.

    The optimizer solves the box-bounded problem first (what the book should be), the venue budgets and
    the funding legs follow from it, and the optimizer solves again under the budgets the funding leaves
    (what the book can be this cycle). Raises OptimizerError when the optimizer breaks its bounds.
    """
    lam = float(getattr(getattr(optimizer, "cfg", None), "lam", 0.0) or 0.0)
    if lam > 0 and forecast.mu is None:
        raise ForecastError(f"optimizer {getattr(optimizer, 'name', '?')} has lam = {lam:g} but forecast "
                            f"{forecast.model} carries no μ: configure a [returns] model (or set lam = 0)")  # fmt: skip
    nav = h.nav
    w0 = h.positions * h.prices / nav
    invest = b.invest
    w_frame = in_optimizer_frame(layout, w0, b.upper, venue_scale)
    target, infeasible = optimize(optimizer, layout.assets, forecast, b.upper, b.lower, w_frame, invest)
    w = target.weights
    if np.any(w > b.upper + 1e-9) or np.any(w < -1e-12) or w.sum() > 1 + 1e-9:
        raise OptimizerError(f"optimizer {getattr(optimizer, 'name', '?')} broke its bounds: {w}")
    budgets, want = venue_budgets(layout, w, h, nav, invest)
    fund = plan_funding(key, funding, budgets, want, h, nav, invest, funding_inputs)
    spendable = dict(h.spendable)
    covered = {v: h.incoming.get(v, 0.0) / nav * invest for v in budgets}
    for t in fund.transfers:
        covered[t.destination] = covered.get(t.destination, 0.0) + t.amount / nav * invest
    for v, gone in fund.outgoing.items():  # what leaves now can neither be held nor spent there this cycle
        spendable[v] = max(spendable.get(v, 0.0) - gone, 0.0)
        budgets[v] = max(budgets[v] - gone / nav * invest, 0.0)
    invested = float(w.sum())
    free = ~np.asarray(target.capped, bool) & (w > 0)
    opt_dispersion = rc_dispersion(w, forecast.cov, free) if free.any() else None
    fit = funded_budgets(budgets, want, funding)
    fitted = fit_to_venues(
        optimizer, groups_ok, layout, target, fit, forecast, b.upper, b.lower, w_frame, invest, risk.min_trade_weight
    )
    target, scale = fitted.target, fitted.scale
    bound = bounds_of(layout, target, b.upper, b.lower, b.held)
    # the stored target is what the policy trades toward: its balance, not the optimizer's, is the honest
    # one (a venue that cannot hold its share of the book binds its assets at their venue budget)
    free = np.array([x is None for x in bound]) & (target.weights > 0)
    traded_dispersion = rc_dispersion(target.weights, forecast.cov, free) if free.any() else None
    # A holding a little above a liquidity cap that moved with the hour's volume is kept, not sold (a
    # configured ``upper`` is the operator's limit and always binds): the target stays under L_i (issue 2),
    # but the policy is handed the target re-planned around the kept holding, so the rest of the book
    # does not move to make room for a sale nobody needs.
    keep = ~b.held & (w0 > b.upper) & (w0 <= b.upper * (1.0 + risk.cap_tolerance)) & (w0 <= b.hard)
    aim = target
    if keep.any():
        pin = w0.copy()  # the kept holdings in the optimizer's frame, so that the venue scaling returns w0
        for vname, sv in scale.items():
            mine = layout.mask(vname)
            pin[mine] = w0[mine] / sv
        up_k, lo_k = b.upper.copy(), b.lower.copy()
        up_k[keep] = lo_k[keep] = pin[keep]
        lo_k = np.minimum(lo_k, up_k)
        aim, _ = optimize(optimizer, layout.assets, forecast, up_k, lo_k, w_frame, invest)
        aim = fit_to_venues(
            optimizer, groups_ok, layout, aim, fit, forecast, up_k, lo_k, w_frame, invest, risk.min_trade_weight
        ).target
    upper_dec = np.where(keep, w0, b.upper)
    return Targeted(target, aim, infeasible, invested, opt_dispersion, traded_dispersion, bound, upper_dec, fund,
                    budgets, want, covered, spendable, fitted.note, scale)  # fmt: skip


# -- decide -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decided:
    decision: Decision
    weights: np.ndarray  # the policy's weights, within the bounds, held assets where they are


def decide_stage(policy: Policy, w0: np.ndarray, t: Targeted, forecast: Forecast, held: np.ndarray) -> Decided:
    """How far to move toward the target this cycle (the policy's call), clipped to the bounds."""
    decision = policy.decide(w0, t.aim, forecast)
    decided = np.clip(decision.weights, 0.0, t.upper_decide)
    decided[held] = w0[held]
    if decided.sum() > 1.0:
        decided = decided / decided.sum()
    return Decided(decision, decided)


def restrict_stage(state: str, w0: np.ndarray, t: Targeted, d: Decided, held: np.ndarray) -> tuple[Targeted, Decided]:
    """Under a tripped kill switch the plan only shrinks the book (``reduce_only``), sells it (``flatten``)
    or stays (``halt``): no buys and no transfers; held assets stay where they are."""
    if state == ACTIVE:
        return t, d
    w = restrict(state, w0, d.weights)
    w[held] = w0[held]
    trade = d.decision.trade or state == "flatten"
    decision = replace(d.decision, weights=w, trade=trade, reason=f"kill switch {state}: {d.decision.reason}")
    return replace(t, funding=replace(t.funding, transfers=[], planned=[])), Decided(decision, w)


# -- plan -------------------------------------------------------------------------------------------


def client_order_id(cycle_key: str, asset: str, attempt: int = 0) -> str:
    """Deterministic per (cycle, asset, attempt), short enough for every exchange's limit (≤ 32)."""
    digest = hashlib.blake2b(f"{cycle_key}|{asset}|{attempt}".encode(), digest_size=12).hexdigest()
    return f"rw{digest}"


def floor_to_step(qty: float, step: float) -> float:
    if step <= 0:
        return qty
    return math.floor(qty / step * (1 + 1e-12)) * step


@dataclass(frozen=True)
class Skip:
    asset: str
    reason: str


@dataclass(frozen=True)
class PlanInputs:
    """Everything ``plan_orders`` needs, as plain numbers."""

    cycle_key: str
    assets: tuple[str, ...]
    venue_of: Mapping[str, str]
    prices: np.ndarray  # decision prices (mid), quote currency
    positions: np.ndarray  # units held
    cash_by_venue: Mapping[str, float]
    nav: float
    decided: np.ndarray  # weights of NAV to move to
    markets: Mapping[str, MarketInfo]
    last_hour_volume: np.ndarray  # units traded in the last closed hour
    participation: float
    cost_margin: float = 0.01  # extra cash kept aside per buy for spread and impact
    min_trade_weight: float = 0.0  # trades smaller than this fraction of NAV are not worth their fixed costs
    hold: frozenset[str] = frozenset()  # assets not traded this cycle (their venue failed)


@dataclass
class Plan:
    legs: list[PlannedLeg] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    shortfalls: dict[str, float] = field(default_factory=dict)


def plan_orders(p: PlanInputs) -> Plan:
    """Turn decided weights into venue legs: sells first, buys scaled to each venue's cash.

    Rules: no order exceeds ``participation ×`` the last hour's traded volume; quantities are
    floored to the venue's step; dust below the venue's minimum quantity or notional is skipped;
    a sell never exceeds the position; buys on a venue are scaled down together when that venue's
    cash plus its sells' proceeds cannot pay for them (cash does not move between venues);
    ``cash_by_venue`` is the cash that can buy assets (a gas reserve is not); assets in ``hold``
    are not traded.
    """
    plan = Plan()
    sells: list[tuple[str, float]] = []
    buys: dict[str, list[tuple[str, float]]] = {}
    delta = np.asarray(p.decided, float) * p.nav - np.asarray(p.positions, float) * np.asarray(p.prices, float)
    # most hours most assets are inside the band: only the ones worth a trade are looked at
    for i in np.flatnonzero(np.abs(delta) >= p.min_trade_weight * p.nav):
        a = p.assets[i]
        if a in p.hold:
            continue
        price = float(p.prices[i])
        delta_value = float(delta[i])
        if delta_value == 0.0:
            continue
        qty = abs(delta_value) / price
        side = "buy" if delta_value > 0 else "sell"
        if side == "sell":
            qty = min(qty, max(float(p.positions[i]), 0.0))
        cap = p.participation * max(float(p.last_hour_volume[i]), 0.0)
        if qty > cap:
            plan.skips.append(Skip(a, f"{side} {qty:.6g} clipped to {cap:.6g} (participation of last hour's volume)"))
            qty = cap
        m = p.markets[a]
        qty = floor_to_step(qty, m.qty_step)
        if qty <= 0 or qty < m.min_qty or qty * price < m.min_notional:
            plan.skips.append(Skip(a, f"dust: {side} {qty:.6g} ({qty * price:.2f}) below venue minimum"))
            continue
        if side == "sell":
            sells.append((a, qty))
        else:
            buys.setdefault(p.venue_of[a], []).append((a, qty))
    idx = {a: i for i, a in enumerate(p.assets)}
    leg = 0
    for a, qty in sells:
        order = Order(
            client_order_id(p.cycle_key, a), p.cycle_key, p.venue_of[a], a, "sell", qty, float(p.prices[idx[a]])
        )
        plan.legs.append(PlannedLeg(order, leg))
        leg += 1
    for venue, items in sorted(buys.items()):
        fee = max((p.markets[a].taker_fee for a, _ in items), default=0.0)
        proceeds = sum(
            q * float(p.prices[idx[a]]) * (1 - p.markets[a].taker_fee - p.cost_margin)
            for a, q in sells
            if p.venue_of[a] == venue
        )
        available = max(p.cash_by_venue.get(venue, 0.0) + proceeds, 0.0)
        cost = sum(q * float(p.prices[idx[a]]) for a, q in items) * (1 + fee + p.cost_margin)
        scale = 1.0
        if cost > available:
            scale = available / cost if cost > 0 else 0.0
            plan.shortfalls[venue] = cost - available
        for a, q in items:
            m = p.markets[a]
            q2 = floor_to_step(q * scale, m.qty_step)
            price = float(p.prices[idx[a]])
            if q2 <= 0 or q2 < m.min_qty or q2 * price < m.min_notional:
                plan.skips.append(Skip(a, f"buy {q:.6g} dropped: venue {venue} lacks cash"))
                continue
            order = Order(client_order_id(p.cycle_key, a), p.cycle_key, venue, a, "buy", q2, price)
            plan.legs.append(PlannedLeg(order, leg))
            leg += 1
    return plan


def planned_transfer_message(t: Transfer, expected_minutes: float, want: float, holds: float) -> str:
    return (f"move {t.amount:,.2f} {t.asset} from {t.source} to {t.destination} over {t.network} (expected "
            f"{expected_minutes:g} min): the target needs {want:.2%} of NAV there, it holds {holds:.2%}")  # fmt: skip


__all__ = [
    "Bounds",
    "Decided",
    "Fitted",
    "FundingInputs",
    "Holdings",
    "Layout",
    "Observation",
    "Plan",
    "PlanInputs",
    "PlannedFunding",
    "Skip",
    "Targeted",
    "bounds_of",
    "bounds_stage",
    "client_order_id",
    "decide_stage",
    "fit_to_venues",
    "floor_to_step",
    "forecast_stage",
    "funded_budgets",
    "in_optimizer_frame",
    "optimize",
    "plan_funding",
    "plan_orders",
    "planned_transfer_message",
    "takes_groups",
    "target_stage",
    "venue_budgets",
    "with_expected_returns",
]
