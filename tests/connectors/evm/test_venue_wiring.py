"""The evm venue with the eligibility layer and asynchronous funds wired in, on anvil with real
contracts (the T-REX suite, the world's allow-listed vaults and pools, an ERC-7540 fund)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.domain import Order, OrderStatus
from bot.ledger import Ledger
from connectors.evm.deploy import SHARE, USD, World, deploy, send
from connectors.evm.eligibility import NotEligible
from connectors.evm.node import AnvilNode
from connectors.evm.rwa_world import buy_shares, deploy_async_vault, deploy_cooldown_vault, set_async_nav
from connectors.evm.trex import deploy_trex, trex_pool
from connectors.evm.venue import EvmVenue, EvmVenueConfig
from tests.connectors.evm.conftest import NOW, evm_config, evm_engine, venue_options


def make_venue(tmp_path: Path, world: World, url: str, events: list[Any], ledger: Ledger, **kw: Any) -> EvmVenue:
    ctx = ComponentContext(
        SimulatedClock(NOW, 0.0), tmp_path / "state", (), events.append, extra={"ledger": ledger}
    )  # fmt: skip
    return EvmVenue("chain", EvmVenueConfig.model_validate(venue_options(world, url, **kw)), ctx)


def order(cid: str, asset: str, side: str, qty: float, price: float) -> Order:
    return Order(cid, "2026-01-02T05:00Z", "chain", asset, side, qty, price)  # type: ignore[arg-type]


def test_trex_pool_not_verified_is_refused_by_the_venue_before_signing(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    suite = deploy_trex(world.w3, world.owner)  # unpaused
    suite.verify(world.trader)
    send(world.w3, suite.token.functions.mint(world.trader, 100 * SHARE), world.owner)
    pool = trex_pool(world, suite, 100.0, 1_000_000.0, verify_pool=False)
    assets = {**world.venue_assets(), "TRX": {"kind": "pool", "address": suite.token.address, "pool": pool.address}}
    elig = {"TRX": {"token": suite.token.address, "checks": ["erc3643"]}}
    events: list[Any] = []
    ledger = Ledger(tmp_path / "l.sqlite")
    v = make_venue(tmp_path, world, anvil.url, events, ledger, assets=assets, eligibility=elig)
    nonce = world.w3.eth.get_transaction_count(world.trader)
    assert v.quote("TRX").bid > 90  # the view quoter quotes all the same
    with pytest.raises(NotEligible) as exc:
        v.place_order(order("w1", "TRX", "sell", 10.0, 100.0))
    assert str(exc.value) == (
        f"venue chain: not eligible: pool {pool.address} is not verified in TRX's identity registry "
        f"{suite.registry.address}; nothing sent"
    )
    assert [e.kind for e in events] == ["not_eligible"] and events[0].data["asset"] == "TRX"
    assert ledger.txs(venue="chain") == [] and world.w3.eth.get_transaction_count(world.trader) == nonce
    # buying out of the pool needs only the wallet verified: it goes through, really swapped
    st = v.place_order(order("w2", "TRX", "buy", 1.0, 100.0))
    assert st.status is OrderStatus.FILLED and st.filled_qty == pytest.approx(1.0)
    assert suite.token.functions.balanceOf(world.trader).call() == pytest.approx(101 * SHARE, rel=1e-9)
    # the wallet frozen: the buy is refused by name, nothing more is signed
    send(world.w3, suite.token.functions.setAddressFrozen(world.trader, True), world.owner)
    n = len(ledger.txs(venue="chain"))
    with pytest.raises(NotEligible, match=f"not eligible: wallet {world.trader} is frozen on TRX"):
        v.place_order(order("w3", "TRX", "buy", 1.0, 100.0))
    assert len(ledger.txs(venue="chain")) == n
    v.close()
    ledger.close()


def test_default_checks_of_permissioned_assets(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    """``permissioned = true`` without an ``eligibility`` entry: allow-list + compliance, and pause for
    vault shares; the old config keeps working and a paused fund is a refusal, not a paid revert."""
    events: list[Any] = []
    ledger = Ledger(tmp_path / "l.sqlite")
    v = make_venue(tmp_path, world, anvil.url, events, ledger)
    assert v.eligibility.tokens["CREDIT"].checks == ("allowlist", "compliance", "pause")
    assert v.eligibility.tokens["REALT"].checks == ("allowlist", "compliance")
    credit, realt, pool = world.vaults["CREDIT"], world.tokens["REALT"], world.pools["REALT"]
    send(world.w3, credit.functions.pause(), world.owner)
    with pytest.raises(NotEligible, match=rf"not eligible: {credit.address} is paused \(paused\(\)\); nothing sent"):
        v.place_order(order("d1", "CREDIT", "buy", 10.0, world.nav("CREDIT")))
    send(world.w3, credit.functions.unpause(), world.owner)
    send(world.w3, realt.functions.setVerified(pool.address, False), world.owner)
    with pytest.raises(NotEligible) as exc:
        v.place_order(order("d2", "REALT", "buy", 1.0, world.mid("REALT")))
    msg = str(exc.value)
    assert f"pool {pool.address} is not on the allow-list (isVerified(address) on {realt.address})" in msg
    assert f"compliance {realt.address} refuses pool {pool.address} -> wallet {world.trader}" in msg
    assert ledger.txs(venue="chain") == [] and [e.kind for e in events] == ["not_eligible", "not_eligible"]
    v.close()
    ledger.close()


def test_eligibility_config_is_strict(world: World, anvil: AnvilNode) -> None:
    with pytest.raises(ValueError, match="eligibility names assets that are not configured"):
        EvmVenueConfig.model_validate(venue_options(world, anvil.url, eligibility={"NOPE": {"token": world.trader}}))
    with pytest.raises(ValueError, match="extra"):
        EvmVenueConfig.model_validate(
            venue_options(world, anvil.url, eligibility={"USTB": {"token": world.trader, "chekcs": ["pause"]}})
        )
    with pytest.raises(ValueError, match="unknown eligibility checks"):
        EvmVenue(
            "chain",
            EvmVenueConfig.model_validate(
                venue_options(world, anvil.url, eligibility={"USTB": {"token": world.trader, "checks": ["nope"]}})
            ),
            ComponentContext(SimulatedClock(NOW, 0.0), Path("/tmp/unused"), (), lambda e: None),
        )


# -- asynchronous funds through whole cycles ----------------------------------------------------------------


def async_config(tmp_path: Path, world: World, url: str, fund: Any) -> dict[str, Any]:
    """USTB, REALT and an ERC-7540 fund PCRED on the chain venue. The fund was deployed after the mined
    history, so the data source prices it from CREDIT's history (same NAV level); its trades and
    quotes are PCRED's own."""
    cfg = evm_config(tmp_path, world, url, upper={"USTB": 0.3, "PCRED": 0.25})
    cfg["venues"]["chain"]["options"]["assets"]["PCRED"] = {
        "kind": "async", "address": fund.address, "decimals": 18, "permissioned": True,
    }  # fmt: skip
    cfg["data"]["options"]["assets"]["PCRED"] = {**world.data_assets()["CREDIT"]}
    cfg["assets"] = {a: cfg["assets"][a] for a in ("USTB", "REALT")} | {"PCRED": {"venue": "chain", "upper": 0.25}}
    return cfg


def test_async_fund_pending_in_nav_held_fixed_and_claimed_once_after_a_restart(
    tmp_path: Path, world: World, anvil: AnvilNode
) -> None:
    fund = deploy_async_vault(world, "PCRED", 10.0)
    cfg = async_config(tmp_path, world, anvil.url, fund)
    e = evm_engine(tmp_path, cfg)
    r1 = e.run_cycle(NOW)
    assert r1.status == "done"
    (o1,) = [o for o in e.ledger.all_orders() if o.asset == "PCRED"]
    assert o1.side == "buy" and o1.status == "open"  # a request, not a fill
    req = e.ledger.get_async_request(o1.client_id)
    assert req is not None and req.status == "pending"
    paid = int(req.amount_raw)
    assert fund.functions.pendingDepositRequest(0, world.trader).call() == paid
    assert fund.functions.balanceOf(world.trader).call() == 0
    # the money in flight is in the closing NAV, as PCRED units at today's NAV per share
    snap = e.ledger.snapshots()[-1]
    assert snap.prices["PCRED"] == pytest.approx(10.0, rel=1e-6)
    assert snap.positions["PCRED"] == pytest.approx(paid / USD / snap.prices["PCRED"], rel=1e-9)
    others = sum(snap.positions[a] * snap.prices[a] for a in ("USTB", "REALT"))
    assert snap.nav - snap.cash - others == pytest.approx(paid / USD, rel=1e-9)
    assert r1.nav == pytest.approx(snap.nav)
    # a risk cycle while pending: PCRED held at its weight, no second request, the pending event says why
    r2 = e.run_cycle(NOW + timedelta(minutes=10), trigger="risk")
    assert r2.status == "done"
    assert [o.client_id for o in e.ledger.all_orders() if o.asset == "PCRED"] == [o1.client_id]
    i = list(r2.assets).index("PCRED")
    assert r2.decided[i] == pytest.approx(r2.current[i], abs=1e-12) and r2.current[i] > 0.05
    assert any(ev.data.get("asset") == "PCRED" for ev in e.ledger.events("async_pending"))
    e.close()
    # the manager fulfils at a higher NAV while the daemon is down; the restarted daemon claims once
    set_async_nav(world, fund, 10.5)
    send(world.w3, fund.functions.fulfillDeposit(world.trader, paid), world.owner)
    e2 = evm_engine(tmp_path, cfg)
    r3 = e2.run_cycle(NOW + timedelta(minutes=20), trigger="risk")
    assert r3.status == "done"
    o1 = next(o for o in e2.ledger.all_orders() if o.client_id == o1.client_id)
    fills = [f for f in e2.ledger.fills() if f.client_id == o1.client_id]
    assert o1.status == "filled" and len(fills) == 1
    assert fills[0].price == pytest.approx(10.5, rel=1e-9) and fills[0].qty == pytest.approx(paid / USD / 10.5)
    steps = [t.step for t in e2.ledger.txs(client_id=o1.client_id)]
    assert steps == ["approve", "request", "claim"]  # one request, one claim, across the restart
    later = [f for f in e2.ledger.fills() if f.asset == "PCRED" and f.client_id != o1.client_id]
    held = fund.functions.balanceOf(world.trader).call() / SHARE
    assert held == pytest.approx(fills[0].qty + sum(f.qty if f.side == "buy" else -f.qty for f in later), rel=1e-12)
    assert fills[0].gas == pytest.approx(sum(t.gas_cost_quote for t in e2.ledger.txs(client_id=o1.client_id)))
    # the snapshot counted the request at NAV 10; the claim at 10.5 is a settlement, not a mismatch
    assert not e2.ledger.events("position_mismatch")
    (st,) = e2.ledger.events("position_settled")
    assert st.data["ledger_qty"] == pytest.approx(paid / USD / 10.0, rel=1e-6)
    assert st.data["venue_qty"] == pytest.approx(held, rel=1e-12)
    e2.close()


def test_async_asset_config(world: World, anvil: AnvilNode) -> None:
    base = {"kind": "async", "address": world.trader}
    ok = venue_options(world, anvil.url, assets={"X": {**base, "asynchronous": {"kind": "cooldown"}}})
    ac = EvmVenueConfig.model_validate(ok).assets["X"].async_config()
    assert ac.kind == "cooldown" and ac.vault == world.trader and ac.claim_fn == "unstake(address)"
    for bad, why in (
        ({**base, "asynchronous": {"kind": "cooldown", "claim": "x()"}}, "extra"),
        ({**base, "asynchronous": {"vault": world.trader}}, "come from the asset's address"),
        ({"kind": "vault", "address": world.trader, "asynchronous": {"kind": "cooldown"}}, "only for kind 'async'"),
    ):
        with pytest.raises(ValueError, match=why):
            EvmVenueConfig.model_validate(venue_options(world, anvil.url, assets={"X": bad}))
    paper = venue_options(world, anvil.url, assets={"X": base}, paper=True, account=world.trader)
    assert EvmVenueConfig.model_validate(paper).paper  # ERC-7540 requests are simulated on paper
    cooldown = {**base, "asynchronous": {"kind": "cooldown"}}
    paper = venue_options(world, anvil.url, assets={"X": cooldown}, paper=True, account=world.trader)
    with pytest.raises(ValueError, match="simulates ERC-7540 requests only"):
        EvmVenueConfig.model_validate(paper)


def test_cooldown_asset_through_the_venue(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    """A cooldown fund configured as ``kind = "async"``: a sell is a request that ``reconcile`` reports
    as open (never cancels), ``balances`` shows it as pending until its time, then claims it."""
    vault = deploy_cooldown_vault(world, "sUSD", 1.10, cooldown_s=7 * 86_400)
    buy_shares(world, vault, 1_100.0)  # 1000 shares
    asset = {"kind": "async", "address": vault.address, "asynchronous": {"kind": "cooldown"}}
    events: list[Any] = []
    ledger = Ledger(tmp_path / "l.sqlite")
    v = make_venue(tmp_path, world, anvil.url, events, ledger, assets={**world.venue_assets(), "sUSD": asset})
    q = v.quote("sUSD")
    # the redemption is the request (bid: convertToAssets); a subscription is an ERC-4626 deposit at once
    # (ask: previewMint, rounded up), which the cooldown variant takes synchronously
    assert q.bid == pytest.approx(1.10, rel=1e-6) and q.ask == pytest.approx(1.10, rel=1e-6)
    assert q.bid <= q.ask and v.market("sUSD").taker_fee == 0.0
    assert v.balances().positions["sUSD"] == pytest.approx(1000.0) and not v.balances().pending
    st = v.place_order(order("cd1", "sUSD", "sell", 1000.0, 1.10))
    assert st.status is OrderStatus.OPEN
    assert v.place_order(order("cd1", "sUSD", "sell", 1000.0, 1.10)).status is OrderStatus.OPEN  # idempotent
    bal = v.balances()
    assert bal.positions.get("sUSD", 0.0) < 1e-9 and bal.pending["sUSD"] == pytest.approx(1000.0, rel=1e-6)
    assert v.cancel_order("cd1").status is OrderStatus.OPEN  # a request cannot be withdrawn
    states, _ = v.reconcile({"cd1": "sUSD"})
    assert [s.status for s in states] == [OrderStatus.OPEN]
    world.w3.provider.make_request("evm_increaseTime", [7 * 86_400])  # type: ignore[arg-type]
    world.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    before = world.stable.functions.balanceOf(world.trader).call()
    bal = v.balances()  # polls first: the claim is sent and booked
    assert not bal.pending and bal.positions.get("sUSD", 0.0) < 1e-9
    assert (world.stable.functions.balanceOf(world.trader).call() - before) / USD == pytest.approx(1_100.0, rel=1e-6)
    st = v.fetch_order("cd1")
    assert st is not None and st.status is OrderStatus.FILLED and st.filled_qty == pytest.approx(1000.0)
    assert [t.step for t in ledger.txs(client_id="cd1")] == ["request", "claim"]
    v.close()
    ledger.close()


# -- price rules before planning ------------------------------------------------------------------------------


def test_price_rule_violation_holds_the_asset_with_an_event(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    """REALT's NAV oracle says 5% above the pool: REALT is not traded (price_rule event with the
    premium); USTB, whose oracle agrees with the vault, is traded as usual."""
    feed = world.feeds["REALT"]
    mid = world.mid("REALT")
    send(world.w3, feed.functions.updateAnswer(int(mid * 1.05 * 1e8)), world.owner)
    ustb_feed = deploy(world.w3, world.artifacts["PriceFeed"], 8, "USTB NAV", world.owner, sender=world.owner)
    send(world.w3, ustb_feed.functions.updateAnswer(int(world.nav("USTB") * 1e8)), world.owner)
    cfg = evm_config(tmp_path, world, anvil.url)
    always = {"calendar": {"always_open": True}, "max_open_age_s": 7200.0}
    assets = cfg["venues"]["chain"]["options"]["assets"]
    assets["REALT"]["price_rule"] = {"feed": feed.address, **always}
    assets["USTB"]["price_rule"] = {"feed": ustb_feed.address, "max_divergence_bps": 10.0, **always}
    e = evm_engine(tmp_path, cfg)
    assert e.run_cycle(NOW).status == "done"
    traded = {o.asset for o in e.ledger.all_orders()}
    assert "REALT" not in traded and {"USTB", "CREDIT"} <= traded
    (ev,) = e.ledger.events("price_rule")
    assert ev.data["asset"] == "REALT" and ev.data["premium_bps"] == pytest.approx(-1e4 / 21, rel=1e-3)
    assert "bps from NAV" in ev.message and "not traded this cycle" in ev.message
    premium = {x.data["asset"]: x.data["premium_bps"] for x in e.ledger.events("nav_premium")}
    assert premium["REALT"] == pytest.approx(-1e4 / 21, rel=1e-3) and abs(premium["USTB"]) < 10  # reported too
    e.close()
    # the oracle back in line: REALT is planned again
    send(world.w3, feed.functions.updateAnswer(int(world.mid("REALT") * 1e8)), world.owner)
    e2 = evm_engine(tmp_path, cfg)
    e2.run_cycle(NOW + timedelta(minutes=10), trigger="risk")
    assert len(e2.ledger.events("price_rule")) == 1
    later = [x.data["premium_bps"] for x in e2.ledger.events("nav_premium") if x.data["asset"] == "REALT"]
    assert abs(later[0]) < 50  # back in line, and reported because it moved (events come newest first)
    e2.close()


def test_price_rule_stale_and_unreadable_oracles(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    feed = world.feeds["REALT"]
    rule = {"feed": feed.address, "calendar": {"always_open": True}, "max_open_age_s": 600.0}
    events: list[Any] = []
    ledger = Ledger(tmp_path / "l.sqlite")
    assets = {**world.venue_assets()}
    assets["REALT"] = {**assets["REALT"], "price_rule": rule}
    assets["USTB"] = {**assets["USTB"], "price_rule": {**rule, "feed": world.stable.address}}  # not a feed
    v = make_venue(tmp_path, world, anvil.url, events, ledger, assets=assets)
    holds = v.price_holds()
    assert set(holds) == {"USTB"} and "cannot be read" in holds["USTB"][0]
    world.w3.provider.make_request("evm_increaseTime", [3600])  # type: ignore[arg-type]
    world.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    holds = v.price_holds()
    assert "stale: updated 1.0 open-market hours ago (max 0.2)" in holds["REALT"][0]
    v.close()
    ledger.close()
