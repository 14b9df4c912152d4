"""The cycle end to end on real parts: simulated market, paper venues, ERC, SQLite ledger."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.clock import SimulatedClock
from bot.config import parse_config
from bot.cycle import Engine, PlanInputs, client_order_id, plan_orders
from bot.domain import MarketInfo
from bot.hookspecs import hookimpl
from bot.plugins import make_plugin_manager
from bot.riskmath import rc_dispersion
from tests.conftest import START, paper_dict

NOW = START + timedelta(days=45)


def engine(tmp_path: Path, pm=None, **overrides: Any) -> Engine:  # noqa: ANN001
    cfg = parse_config(paper_dict(tmp_path, **overrides), "test")
    return Engine(cfg, pm=pm, clock=SimulatedClock(NOW, 0.0))


def test_first_cycle_invests_at_erc_and_accounts_for_every_cent(tmp_path: Path) -> None:
    e = engine(tmp_path)
    nav0 = sum(v.balances().cash for v in e.c.venues.values())
    r = e.run_cycle(NOW)
    assert r.status == "done", r.message
    assert r.orders > 0 and r.fills == r.orders
    row = e.ledger.get_cycle(r.key)
    targets = e.ledger.targets_of(row.id)
    w = np.array([t.target_weight for t in targets])
    upper = np.array([t.upper for t in targets])
    capped = np.array([t.capped for t in targets])
    assert np.all(w <= upper + 1e-12) and w.sum() <= 1.0
    # free assets share risk equally under the forecast the cycle used
    assert row.rc_dispersion_target is not None and row.rc_dispersion_target <= 1e-8
    rc = np.array([t.risk_contribution for t in targets])
    assert rc.sum() == pytest.approx(1.0, abs=1e-9)
    assert (~capped).sum() >= 2
    # the default book wants ~83% of NAV on the wallet, which holds 75%: the cycle sends the exchange's
    # spare cash there first, and it is in transit (in NAV, at neither venue) when the cycle closes
    (t,) = e.ledger.transfers_of(row.id)
    assert (t.source, t.destination, t.status) == ("exchange", "wallet", "pending") and t.amount > 50_000
    # accounting identity: cash + Σ q·p + transit = NAV, and NAV fell by exactly fees + slippage + transfer fee
    snap = e.ledger.snapshots()[-1]
    assert snap.transit == pytest.approx(t.amount, rel=1e-12)
    held = snap.cash + sum(snap.positions[a] * snap.prices[a] for a in e.assets) + snap.transit
    assert held == pytest.approx(snap.nav, rel=1e-12)
    costs = e.ledger.cost_totals()
    assert costs["transfer_fees"] == pytest.approx(1.0) and costs["transferred"] == pytest.approx(t.amount)
    assert nav0 == pytest.approx(row.nav_before, rel=1e-12)
    assert snap.nav == pytest.approx(nav0 - costs["fees"] - costs["slippage"] - costs["transfer_fees"], rel=1e-10)
    # each fill's slippage is its price against the decision price
    orders = {o.client_id: o for o in e.ledger.all_orders()}
    for f in e.ledger.fills():
        o = orders[f.client_id]
        sign = 1 if f.side == "buy" else -1
        assert f.slippage == pytest.approx(sign * (f.price - o.decision_price) * f.qty, rel=1e-9)
        assert f.fee == pytest.approx(f.price * f.qty * (2e-4 if o.venue == "exchange" else 1e-3), rel=1e-9)
    # the venues agree with the ledger
    for vname, venue in e.c.venues.items():
        fills = [f for f in e.ledger.fills() if f.venue == vname]
        spent = sum((f.price * f.qty if f.side == "buy" else -f.price * f.qty) + f.fee for f in fills)
        initial = 250000.0 if vname == "exchange" else 750000.0
        sent = t.amount + t.fee if vname == t.source else 0.0  # the wallet is credited only on arrival
        assert venue.balances().cash == pytest.approx(initial - spent - sent, rel=1e-12)
    # half an hour later it has arrived: credited once, out of transit, the NAV unchanged by the move
    e.clock.advance_to(NOW + timedelta(minutes=31))
    h = e._read_venues(np.array([snap.prices[a] for a in e.assets]), quotes=False)  # at the same prices
    assert h.transit == 0.0 and e.ledger.transfers_of(row.id)[0].status == "arrived"
    assert h.cash["wallet"] == pytest.approx(snap.cash_by_venue["wallet"] + t.amount, rel=1e-12)
    assert h.nav == pytest.approx(snap.nav, rel=1e-12)
    e.close()


def test_orders_respect_participation_and_sells_go_first(tmp_path: Path) -> None:
    e = engine(tmp_path)
    e.run_cycle(NOW)
    # move time and change the target mix so that the second cycle both sells and buys
    later = NOW + timedelta(hours=200)
    e.clock.advance_to(later)
    r = e.run_cycle(later)
    row = e.ledger.get_cycle(r.key)
    orders = e.ledger.orders_of(row.id)
    bars = e.c.data.bars(e.assets, later, 1)
    for o in orders:
        assert o.qty <= 0.10 * bars.volume[-1, e.assets.index(o.asset)] + 1e-9
    sides = [o.side for o in orders]
    if "sell" in sides and "buy" in sides:
        assert sides.index("buy") > max(i for i, s in enumerate(sides) if s == "sell")
    e.close()


def test_a_retried_cycle_never_doubles_an_order(tmp_path: Path) -> None:
    e = engine(tmp_path)
    r1 = e.run_cycle(NOW)
    r2 = e.run_cycle(NOW + timedelta(minutes=20))  # same scheduled hour
    assert r2.key == r1.key and "already ran" in r2.message
    assert len(e.ledger.all_orders()) == r1.orders
    e.close()


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in rwabot catches it."""


def crashing_venue_plugin(after_orders: int, *, before_send: bool) -> object:
    """A paper venue that dies after (or just before) handing the N-th order to the book."""
    from connectors.paper import PaperConfig, PaperVenue

    class CrashingPaper(PaperVenue):
        sent = 0

        def place_order(self, order):  # noqa: ANN001, ANN202
            CrashingPaper.sent += 1
            if before_send and CrashingPaper.sent == after_orders:
                raise Crash()
            state = super().place_order(order)
            if not before_send and CrashingPaper.sent == after_orders:
                raise Crash()
            return state

    class Plugin:
        @hookimpl
        def rwabot_register_venues(self, register):  # noqa: ANN001, ANN202
            register("crashing_paper", lambda cfg, ctx: CrashingPaper(ctx.extra["venue_name"], cfg, ctx), PaperConfig)

    return Plugin()


@pytest.mark.parametrize("before_send", [False, True])
def test_crash_mid_plan_resumes_without_duplicates(tmp_path: Path, before_send: bool) -> None:
    pm = make_plugin_manager(plugins=[crashing_venue_plugin(3, before_send=before_send)])
    overrides = {
        "venues": {
            "exchange": {"plugin": "crashing_paper", "options": {"initial_cash": 600000.0, "fee_bps": 2.0}},
            "wallet": {"plugin": "crashing_paper", "options": {"initial_cash": 400000.0, "fee_bps": 10.0}},
        }
    }
    e = engine(tmp_path, pm=pm, **overrides)
    with pytest.raises(Crash):
        e.run_cycle(NOW)
    statuses = Counter(o.status for o in e.ledger.all_orders())
    assert statuses["sending"] == 1 and statuses["filled"] == 2
    e.close()
    # restart: a new engine on the same ledger and books resumes the plan within its time-to-live
    e2 = engine(
        tmp_path,
        pm=make_plugin_manager(),
        **{
            "venues": {
                "exchange": {"plugin": "paper", "options": {"initial_cash": 600000.0, "fee_bps": 2.0}},
                "wallet": {"plugin": "paper", "options": {"initial_cash": 400000.0, "fee_bps": 10.0}},
            }
        },
    )
    r = e2.run_cycle(NOW + timedelta(minutes=5))
    assert r.status == "done"
    orders = e2.ledger.all_orders()
    assert all(o.status == "filled" for o in orders)
    fills = e2.ledger.fills()
    assert len(fills) == len(orders) == len({f.client_id for f in fills})
    # the books of the venues hold exactly one order per client id, each matching the ledger
    for vname, venue in e2.c.venues.items():
        book = venue._db.execute("SELECT client_id, filled_qty FROM paper_order").fetchall()
        mine = {o.client_id: o.filled_qty for o in orders if o.venue == vname}
        assert dict(book) == pytest.approx(mine)
    e2.close()


def test_an_expired_plan_is_never_sent_late(tmp_path: Path) -> None:
    pm = make_plugin_manager(plugins=[crashing_venue_plugin(2, before_send=True)])
    venues = {
        "exchange": {"plugin": "crashing_paper", "options": {"initial_cash": 600000.0}},
        "wallet": {"plugin": "crashing_paper", "options": {"initial_cash": 400000.0}},
    }
    e = engine(tmp_path, pm=pm, venues=venues)
    with pytest.raises(Crash):
        e.run_cycle(NOW)
    e.close()
    venues = {k: {**v, "plugin": "paper"} for k, v in venues.items()}
    e2 = engine(tmp_path, pm=make_plugin_manager(), venues=venues)
    later = NOW + timedelta(hours=3)
    e2.clock.advance_to(later)
    e2.reconcile()
    first = e2.ledger.get_cycle("2026-04-15T00:00Z")
    assert first.status == "expired"
    orders = e2.ledger.orders_of(first.id)
    assert Counter(o.status for o in orders) == {"filled": 1, "canceled": len(orders) - 1}
    assert all("plan expired" in o.message for o in orders if o.status == "canceled")
    e2.close()


class Corrupt:
    """A data plugin over the simulated market that can poison one asset or go stale."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    @hookimpl
    def rwabot_register_data_sources(self, register):  # noqa: ANN001, ANN201
        from plugins.data.simulated import SimulatedMarket, SimulatedMarketConfig

        mode = self.mode

        class Bad(SimulatedMarket):
            def bars(self, assets, end, hours):  # noqa: ANN001, ANN202
                if mode == "stale":
                    end = end - timedelta(hours=5)
                b = super().bars(assets, end, hours)
                if mode == "nan":
                    b.close[-1, list(assets).index("GLD")] = np.nan
                return b

        register("corrupt", lambda cfg, ctx: Bad(cfg), SimulatedMarketConfig)


@pytest.mark.parametrize(
    ("mode", "message"), [("nan", r"NaN or non-positive prices for \['GLD'\]"), ("stale", "last bar closed at")]
)
def test_bad_data_fails_the_cycle_cleanly(tmp_path: Path, mode: str, message: str) -> None:
    e = engine(
        tmp_path, pm=make_plugin_manager(plugins=[Corrupt(mode)]), data={"plugin": "corrupt", "options": {"seed": 7}}
    )
    r = e.run_cycle(NOW)
    assert r.status == "failed"
    import re

    assert re.search(message, r.message)
    assert e.ledger.all_orders() == [] and e.ledger.fills() == []
    (ev,) = e.ledger.events("cycle_failed")
    assert ev.severity == "critical" and re.search(message, ev.message)
    # nothing moved at the venues
    assert all(not v.balances().positions for v in e.c.venues.values())
    e.close()


def test_liquidity_caps_bind_and_leave_cash(tmp_path: Path) -> None:
    e = engine(tmp_path, risk={"participation": 1e-6})
    r = e.run_cycle(NOW)
    row = e.ledger.get_cycle(r.key)
    targets = e.ledger.targets_of(row.id)
    assert all(t.target_weight <= t.upper + 1e-12 for t in targets)
    assert sum(t.target_weight for t in targets) < 0.99
    assert e.ledger.events("liquidity_cap")
    e.close()


def test_floors_over_the_investable_share_are_scaled_to_fit(tmp_path: Path) -> None:
    """Floors summing to 100 % leave no room for the cash buffer: the cycle scales them down together
    (it used to put every asset at its cap, a book of several times NAV, and fail)."""
    data = paper_dict(tmp_path, risk={"participation": 1.0})  # caps far above the floors
    n = len(data["assets"])
    for a in data["assets"].values():
        a["lower"] = 1.0 / n
    e = Engine(parse_config(data, "test"), pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))
    r = e.run_cycle(NOW)
    assert r.status == "done"
    targets = e.ledger.targets_of(e.ledger.get_cycle(r.key).id)
    invest = 1.0 - data["risk"]["cash_buffer"]
    assert sum(t.target_weight for t in targets) <= invest + 1e-9
    assert all(t.target_weight <= t.upper + 1e-12 for t in targets)
    (ev,) = e.ledger.events("liquidity_cap")
    assert "floors sum to 100.00%" in ev.message and "scaled to fit" in ev.message
    e.close()


def test_dust_is_skipped_and_logged(tmp_path: Path) -> None:
    venues = {
        "exchange": {"plugin": "paper", "options": {"initial_cash": 600000.0, "min_notional": 1e9}},
        "wallet": {"plugin": "paper", "options": {"initial_cash": 400000.0}},
    }
    e = engine(tmp_path, venues=venues)
    r = e.run_cycle(NOW)
    assert all(o.venue == "wallet" for o in e.ledger.all_orders())
    skipped = e.ledger.events("order_skipped")
    assert {ev.where for ev in skipped if "dust" in ev.message} == {"venue:exchange"}
    assert r.status == "done"
    e.close()


def test_lifecycle_hooks_are_called(tmp_path: Path) -> None:
    seen: Counter[str] = Counter()

    class Recorder:
        @hookimpl
        def rwabot_cycle_started(self, cycle):  # noqa: ANN001, ANN201
            seen["started"] += 1

        @hookimpl
        def rwabot_cycle_finished(self, cycle, report):  # noqa: ANN001, ANN201
            seen["finished"] += 1
            seen[f"status:{report.status}"] += 1

        @hookimpl
        def rwabot_order_placed(self, order):  # noqa: ANN001, ANN201
            seen["placed"] += 1

        @hookimpl
        def rwabot_fill(self, fill):  # noqa: ANN001, ANN201
            seen["fill"] += 1

        @hookimpl
        def rwabot_risk_event(self, event):  # noqa: ANN001, ANN201
            seen[f"event:{event.kind}"] += 1

    e = engine(tmp_path, pm=make_plugin_manager(plugins=[Recorder()]), risk={"participation": 1e-6})
    r = e.run_cycle(NOW)
    assert seen["started"] == 1 and seen["finished"] == 1 and seen["status:done"] == 1
    assert seen["placed"] == r.orders and seen["fill"] == r.fills > 0
    assert seen["event:liquidity_cap"] == 1
    e.close()


def test_a_failing_listener_never_stops_a_cycle(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def rwabot_fill(self, fill):  # noqa: ANN001, ANN201
            raise RuntimeError("listener bug")

    e = engine(tmp_path, pm=make_plugin_manager(plugins=[Broken()]))
    r = e.run_cycle(NOW)
    assert r.status == "done" and r.fills > 0
    assert len(e.ledger.events("plugin_error")) == r.fills
    e.close()


def test_risk_monitor_triggers_once_per_crossing(tmp_path: Path) -> None:
    e = engine(tmp_path, risk={"vol_threshold_annual": 0.0001})
    e.run_cycle(NOW)
    t = NOW + timedelta(minutes=15)
    e.clock.advance_to(t)
    r = e.monitor(t)
    assert r is not None and r.key.endswith("/risk") and r.status == "done"
    assert len(e.ledger.events("vol_breach")) == 1
    assert e.monitor(t + timedelta(minutes=5)) is None  # still above: no second trigger
    e.close()


def test_plan_orders_pure_rules() -> None:
    assets = ("A", "B")
    m = {a: MarketInfo(a, 0.01, 0.01, 5.0, 0.01, 0.001) for a in assets}
    p = PlanInputs(
        cycle_key="k",
        assets=assets,
        venue_of={"A": "v", "B": "v"},
        prices=np.array([10.0, 20.0]),
        positions=np.array([100.0, 0.0]),
        cash_by_venue={"v": 0.0},
        nav=1000.0,
        decided=np.array([0.5, 0.5]),
        markets=m,
        last_hour_volume=np.array([1e6, 1e6]),
        participation=0.1,
    )
    plan = plan_orders(p)
    sides = [(leg.order.asset, leg.order.side) for leg in plan.legs]
    assert sides == [("A", "sell"), ("B", "buy")]
    sell, buy = plan.legs[0].order, plan.legs[1].order
    assert sell.qty == pytest.approx(50.0)
    # the buy is scaled to the sell's proceeds net of fee and margin: 500·(1 − .001 − .01) / (1.011)
    assert buy.qty * 20.0 * 1.011 <= 500.0 * (1 - 0.011) + 1e-9
    assert plan.shortfalls["v"] > 0
    assert sell.client_id == client_order_id("k", "A") != client_order_id("k", "B")
    # participation clip
    p2 = PlanInputs(**{**p.__dict__, "last_hour_volume": np.array([30.0, 30.0])})
    assert plan_orders(p2).legs[0].order.qty == pytest.approx(3.0)


def test_rc_dispersion_of_holdings_is_recorded(tmp_path: Path) -> None:
    e = engine(tmp_path)
    e.run_cycle(NOW)  # every asset is at a venue budget while the first transfer travels
    r = e.run_cycle(NOW + timedelta(hours=1))
    row = e.ledger.get_cycle(r.key)
    assert row.rc_dispersion_held is not None and np.isfinite(row.rc_dispersion_held)
    assert rc_dispersion(np.array([0.5, 0.5]), np.eye(2)) == 0.0
    e.close()


def test_targets_are_fitted_to_each_venues_own_cash(tmp_path: Path) -> None:
    venues = {
        "exchange": {"plugin": "paper", "options": {"initial_cash": 900000.0}},
        "wallet": {"plugin": "paper", "options": {"initial_cash": 100000.0}},
    }
    e = engine(tmp_path, venues=venues)
    r = e.run_cycle(NOW)
    row = e.ledger.get_cycle(r.key)
    targets = e.ledger.targets_of(row.id)
    on_wallet = sum(t.target_weight for t in targets if t.venue == "wallet")
    assert on_wallet <= 0.1 * 0.99 + 1e-12
    (ev,) = e.ledger.events("cash_shortfall")
    assert ev.where == "venue:wallet" and ev.data["needed"] > 0
    # the optimizer's own target stayed exact even though the venue could not hold it
    assert row.rc_dispersion_target <= 1e-8
    e.close()
