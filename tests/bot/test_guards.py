"""Pre-trade limits on the real engine (paper venues, SQLite ledger), the staleness gate with market
calendars, alerts reaching a local webhook, and the two keys of live mode."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.clock import SimulatedClock
from bot.config import LimitsSection, parse_config
from bot.cycle import Engine
from bot.guards import Exposure, order_denial
from bot.hookspecs import hookimpl
from bot.killswitch import Trip
from bot.plugins import make_plugin_manager
from tests.conftest import START, offline_config_text, paper_dict
from tests.plugins.test_notifiers import Receiver, receiver  # noqa: F401 - the fixture

NOW = START + timedelta(days=40)


def engine(tmp_path: Path, pm: Any = None, **over: Any) -> Engine:
    return Engine(parse_config(paper_dict(tmp_path, **over), "test"), pm=pm or make_plugin_manager(),
                  clock=SimulatedClock(NOW, 0.0))  # fmt: skip


def notional(e: Engine, o: Any) -> float:
    return o.qty * o.decision_price


# -- pure ------------------------------------------------------------------------------------------------


def test_order_denial_rules() -> None:
    e = Exposure(1_000_000.0, {"SPY": 40_000.0}, {"cex": 90_000.0}, 150_000.0)
    lim = LimitsSection(max_order_notional=20_000.0)
    assert order_denial(lim, "SPY", "cex", "sell", 20_000.0, e) is None
    assert "max_order_notional" in (order_denial(lim, "SPY", "cex", "sell", 20_001.0, e) or "")
    lim = LimitsSection(max_asset_exposure={"*": 0.05})
    assert order_denial(lim, "SPY", "cex", "buy", 10_000.0, e) is None
    assert "max_asset_exposure 5.00%" in (order_denial(lim, "SPY", "cex", "buy", 10_001.0, e) or "")
    assert order_denial(lim, "SPY", "cex", "sell", 900_000.0, e) is None  # a sell never breaks an exposure cap
    lim = LimitsSection(max_venue_exposure={"cex": 0.1})
    assert order_denial(lim, "TLT", "cex", "buy", 10_000.0, e) is None
    assert "venue cex" in (order_denial(lim, "TLT", "cex", "buy", 10_001.0, e) or "")
    lim = LimitsSection(max_daily_turnover=0.2)
    assert order_denial(lim, "SPY", "cex", "sell", 50_000.0, e) is None
    assert "turnover" in (order_denial(lim, "SPY", "cex", "sell", 50_001.0, e) or "")
    assert order_denial(lim, "SPY", "cex", "sell", 50_001.0, e, exiting=True) is None  # the kill switch's exit


# -- on the engine -----------------------------------------------------------------------------------------


def test_an_order_above_the_notional_cap_is_refused_whole_with_an_event(tmp_path: Path) -> None:
    e = engine(tmp_path, limits={"max_order_notional": 20_000.0})
    r = e.run_cycle(NOW)
    assert r.status == "done"
    orders = e.ledger.all_orders()
    big = [o for o in orders if notional(e, o) > 20_000.0 * 1.01]
    assert big, "the first cycle invests ~27% of 1,000,000 in 8 assets: some legs are above 20,000"
    assert all(o.status == "rejected" and "max_order_notional" in o.message for o in big)
    fills = e.ledger.fills()
    assert fills and all(f.qty * f.price <= 20_000.0 for f in fills)  # the rest traded, none clipped to fit
    denied = e.ledger.events("order_denied")
    assert {ev.data["client_id"] for ev in denied} == {o.client_id for o in big}
    assert all(ev.severity == "critical" for ev in denied)
    e.close()


def test_exposure_caps_per_asset_and_per_venue(tmp_path: Path) -> None:
    e = engine(tmp_path, limits={"max_asset_exposure": {"PAXG": 0.01}, "max_venue_exposure": {"exchange": 0.05}})
    e.run_cycle(NOW)
    snap = e.ledger.snapshots()[-1]
    value = {a: snap.positions[a] * snap.prices[a] for a in e.assets}
    assert value["PAXG"] == 0  # unlimited, it gets 2.6% in this cycle: the buy is refused whole, not clipped to 1%
    on_exchange = sum(value[a] for a in e.assets if e.venue_of[a] == "exchange")
    assert on_exchange <= 0.05 * snap.nav * 1.001
    kinds = {("PAXG" in ev.message, "venue exchange" in ev.message) for ev in e.ledger.events("order_denied")}
    assert (True, False) in kinds and (False, True) in kinds
    e.close()


def test_daily_turnover_cap_counts_the_last_24_hours(tmp_path: Path) -> None:
    e = engine(tmp_path, limits={"max_daily_turnover": 0.1})
    e.run_cycle(NOW)
    traded = sum(f.qty * f.price for f in e.ledger.fills())
    assert 0 < traded <= 0.1 * 1_000_000 * 1.001
    assert any("turnover" in ev.message for ev in e.ledger.events("order_denied"))
    e.close()


def test_a_tripped_switch_cancels_unsent_legs_of_a_plan_in_flight(tmp_path: Path) -> None:
    """A plan made before the trip is resumed after it (a crash between): its buys are never sent."""
    from bot.domain import CycleInfo

    e = engine(tmp_path)
    info = CycleInfo("2026-04-10T00:00Z", "scheduled", NOW)
    row, _ = e._plan(info, NOW)  # the plan is durable; the process dies before it is sent
    assert e.ledger.orders_of(row.id)  # type: ignore[arg-type]
    e.kill.trip(Trip("drawdown", "test", {}), "test", None)  # tripped meanwhile (the monitor, another process)
    e._execute(row, info, None)
    orders = e.ledger.orders_of(row.id)  # type: ignore[arg-type]
    assert orders and all(o.status == "canceled" and "kill switch halt" in o.message for o in orders)
    assert e.ledger.fills() == []
    e.close()


# -- the staleness gate, with market calendars ---------------------------------------------------------------


class Capped:
    """The simulated market with its feed stopped at ``cap`` (a weekend, an outage)."""

    def __init__(self) -> None:
        self.cap: datetime | None = None

    @hookimpl
    def rwabot_register_data_sources(self, register):  # noqa: ANN001, ANN201
        from plugins.data.simulated import SimulatedMarket, SimulatedMarketConfig

        plugin = self

        class Feed(SimulatedMarket):
            def bars(self, assets, end, hours):  # noqa: ANN001, ANN202
                return super().bars(assets, min(end, plugin.cap or end), hours)

            def latest(self, assets, now):  # noqa: ANN001, ANN202
                return super().latest(assets, min(now, plugin.cap or now))

        register("capped", lambda cfg, ctx: Feed(cfg), SimulatedMarketConfig)


def test_a_weekend_price_is_fresh_for_a_calendar_asset_and_a_tuesday_one_is_not(tmp_path: Path) -> None:
    feed = Capped()
    assets: dict[str, Any] = {a: {"venue": "exchange", "calendar": "XNYS"} for a in ("SPY", "TLT", "GLD", "VNQ")}
    assets |= {a: {"venue": "wallet", "max_age_minutes": 100_000.0} for a in ("USTB", "REALT", "CREDIT")}
    assets["PAXG"] = {"venue": "wallet"}  # trades around the clock: 90 minutes, wall time
    slow = {"max_quote_age_minutes": 100_000.0}
    venues = {"exchange": {"plugin": "paper", "options": {"initial_cash": 250_000.0, **slow}},
              "wallet": {"plugin": "paper", "options": {"initial_cash": 750_000.0, **slow}}}  # fmt: skip
    e = engine(tmp_path, pm=make_plugin_manager(plugins=[feed]), data={"plugin": "capped", "options": {"seed": 7}},
               assets=assets, venues=venues)  # fmt: skip
    friday_close = datetime(2026, 4, 10, 20, tzinfo=UTC)  # 16:00 in New York
    feed.cap = friday_close
    saturday = datetime(2026, 4, 11, 12, tzinfo=UTC)
    e.clock.advance_to(saturday)  # type: ignore[union-attr]  # the venues quote on the engine's clock
    r = e.run_cycle(saturday)
    assert r.status == "done"
    stale = e.ledger.events("stale_price")
    assert [ev.data["asset"] for ev in stale] == ["PAXG"]  # 16 hours old around the clock: held
    assert "16" in stale[0].message or "960" in stale[0].message
    assert {o.asset for o in e.ledger.all_orders()} >= {"SPY", "USTB"} and "PAXG" not in {
        o.asset for o in e.ledger.all_orders()
    }
    tuesday = datetime(2026, 4, 14, 17, tzinfo=UTC)  # 13:00 in New York; the feed stopped at 10:00
    feed.cap = datetime(2026, 4, 14, 14, tzinfo=UTC)
    e.clock.advance_to(tuesday)  # type: ignore[union-attr]
    r = e.run_cycle(tuesday)
    assert r.status == "done"
    now_stale = {ev.data["asset"] for ev in e.ledger.events("stale_price")} - {"PAXG"}
    assert now_stale == {"SPY", "TLT", "GLD", "VNQ"}
    msg = next(ev.message for ev in e.ledger.events("stale_price") if ev.data["asset"] == "SPY")
    assert "180 open-market minutes" in msg and "XNYS" in msg
    cyc = e.ledger.get_cycle(r.key)
    assert not [o for o in e.ledger.orders_of(cyc.id) if o.asset in now_stale]  # type: ignore[union-attr, arg-type]
    # every asset stale: the source itself is; the cycle fails, naming it
    later = feed.cap + timedelta(days=80)  # past even the 100,000-minute rule
    e.clock.advance_to(later)  # type: ignore[union-attr]
    r = e.run_cycle(later)
    assert r.status == "failed" and "stale" in r.message
    e.close()


def test_an_unknown_calendar_is_refused_at_start(tmp_path: Path) -> None:
    from bot.errors import ConfigError

    assets = {"SPY": {"venue": "exchange", "calendar": "XNOPE"}, "USTB": {"venue": "wallet"}}
    with pytest.raises(ConfigError, match="XNOPE"):
        engine(tmp_path, assets=assets)


# -- alerts ---------------------------------------------------------------------------------------------------


def test_a_trip_reaches_the_webhook(tmp_path: Path, receiver: Receiver) -> None:  # noqa: F811
    alerts = {"notifiers": {"desk": {"plugin": "webhook", "options": {"url": receiver.url}}}}
    e = engine(tmp_path, alerts=alerts)
    e.run_cycle(NOW)
    e._trip(Trip("drawdown", "equity fell 31%", {"drawdown": 0.31}), "monitor", 690_000.0)
    assert e.alerts is not None and e.alerts.flush(10)
    kinds = [json.loads(s.body)["kind"] for s in receiver.wait_for(1)]
    assert "kill_switch" in kinds
    body = next(json.loads(s.body) for s in receiver.seen if json.loads(s.body)["kind"] == "kill_switch")
    assert "equity fell 31%" in body["message"] and body["data"]["drawdown"] == 0.31
    e.close()


# -- live mode needs two keys ---------------------------------------------------------------------------------


def test_live_needs_the_flag_and_the_flag_needs_live(tmp_path: Path) -> None:
    runner = CliRunner()
    paper = tmp_path / "paper.toml"
    paper.write_text(offline_config_text(tmp_path / "p.sqlite", speed=0.0))
    res = runner.invoke(app, ["run", "--once", "--live", "--config", str(paper)])
    assert res.exit_code == 2 and "--live given but" in " ".join(res.output.split())
    assert not (tmp_path / "p.sqlite").exists()  # refused before anything was built
    live = tmp_path / "live.toml"
    text = offline_config_text(tmp_path / "l.sqlite", speed=0.0).replace('mode = "paper"', 'mode = "live"')
    live.write_text(text.replace('plugin = "paper"', 'plugin = "ccxt"'))
    res = runner.invoke(app, ["run", "--once", "--config", str(live)])
    assert res.exit_code == 2 and "pass --live as well" in " ".join(res.output.split()), res.output


def test_a_taken_ops_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "ops.toml"
        cfg.write_text(offline_config_text(tmp_path / "o.sqlite", speed=0.0) + f"\n[ops]\nport = {port}\n")
        res = CliRunner().invoke(app, ["run", "--config", str(cfg), "--hours", "1"])
    assert res.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in " ".join(res.output.split())
