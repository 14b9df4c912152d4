"""The ``evm_devnet`` venue and the embedded defaults (config/paper.toml) on a real local anvil chain:
contracts deployed at the simulated market's prices, an hourly keeper that moves them with the market,
paper fills by eth_call, nothing sent, the node stopped on close or when its process dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.config import load_config
from bot.cycle import Engine
from bot.errors import ConfigError, VenueError
from bot.testing import VenueContract
from connectors.evm.localnet import DevnetVenue, EvmDevnetConfig, make_devnet_venue
from plugins.data.simulated import SimulatedMarket, SimulatedMarketConfig
from tests.conftest import DEFAULT, ROOT, START

FUNDS, POOLS = ("USTB", "CREDIT"), ("REALT", "PAXG")


def devnet(tmp_path: Path, clock: SimulatedClock, **options: object) -> DevnetVenue:
    data = SimulatedMarket(SimulatedMarketConfig(seed=7))
    ctx = ComponentContext(clock, tmp_path / "state", data.assets(), lambda e: None, data, {"venue_name": "chain"})
    cfg = EvmDevnetConfig.model_validate({"funds": list(FUNDS), "pools": list(POOLS), **options})
    return make_devnet_venue(cfg, ctx)


def assert_tracks_market(venue: DevnetVenue, data: object, clock: SimulatedClock) -> None:
    prices = dict(zip(FUNDS + POOLS, data.latest(FUNDS + POOLS, clock.now()).prices))  # type: ignore[attr-defined]
    for a in FUNDS:  # the vault's NAV is set exactly (to the stablecoin's 6 decimals)
        assert venue.quote(a).mid == pytest.approx(prices[a], abs=2e-6)
    for a in POOLS:  # arbitraged to the reserves' mid; the quote's mid carries the fee's second order
        assert venue.quote(a).mid == pytest.approx(prices[a], rel=1e-4)


class TestDevnetVenue(VenueContract):
    @pytest.fixture
    def venue(self, tmp_path: Path):  # noqa: ANN201
        v = devnet(tmp_path, SimulatedClock(START + timedelta(days=3), 0.0))
        yield v
        v.close()

    @pytest.fixture
    def venue_asset(self) -> str:
        return "PAXG"


def test_the_keeper_moves_the_chain_with_the_market_each_hour(tmp_path: Path) -> None:
    clock = SimulatedClock(START + timedelta(days=3), 0.0)
    v = devnet(tmp_path, clock)
    try:
        assert_tracks_market(v, v.data, clock)
        first = v.quote("PAXG").mid
        clock.advance_to(clock.now() + timedelta(hours=5))
        assert_tracks_market(v, v.data, clock)
        assert v.quote("PAXG").mid != first
        # paper mode: the development account never sent a transaction
        assert v.world.w3.eth.get_transaction_count(v.world.trader) == 0
        # the node gone: the keeper's next hour fails this venue with a VenueError, nothing else
        v.node.stop()
        clock.advance_to(clock.now() + timedelta(hours=1))
        with pytest.raises(VenueError, match="keeper could not move the local chain"):
            v.balances()
    finally:
        v.close()


def test_the_default_config_trades_the_tokenized_assets_on_a_local_chain(tmp_path: Path) -> None:
    cfg = load_config(DEFAULT).with_overrides(
        bot={"ledger": str(tmp_path / "ledger.sqlite")}, clock={"kind": "simulated", "start": START, "speed": 0.0}
    )
    clock = SimulatedClock(START + timedelta(days=3), 0.0)
    e = Engine(cfg, clock=clock)
    chain = e.c.venues["chain"]
    assert isinstance(chain, DevnetVenue) and chain.node.running
    try:
        for h in range(2):
            now = START + timedelta(days=3, hours=h)
            clock.advance_to(now)
            r = e.run_cycle(now)
            assert r.status == "done" and r.message == "", r.message
            assert_tracks_market(chain, e.c.data, clock)
        fills = [f for f in e.ledger.fills() if f.venue == "chain"]
        assert {f.asset for f in fills} == set(FUNDS + POOLS)
        assert all(f.gas > 0 for f in fills)  # gas estimated on the chain and costed
        # the paper account is exactly its starting cash less what the fills say, plus the transfers the
        # exchange sent it that have arrived, less those it sent (amount, fee and gas)
        spent = sum((f.qty * f.price if f.side == "buy" else -f.qty * f.price) + f.fee + f.gas for f in fills)
        moved = e.ledger.transfers()
        assert any(t.destination == "chain" for t in moved)  # the default book needs more on chain than it has
        came = sum(t.amount for t in moved if t.destination == "chain" and t.status == "arrived")
        sent = [t for t in moved if t.source == "chain" and t.status in ("pending", "arrived")]
        went = sum(t.amount + t.fee + t.gas for t in sent)
        assert chain.balances().cash == pytest.approx(750000.0 - spent + came - went, rel=1e-12)
        assert chain.world.w3.eth.get_transaction_count(chain.world.trader) == 0
    finally:
        e.close()
    assert not chain.node.running


def test_missing_npm_tools_name_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.evm.build as build

    monkeypatch.setattr(build, "NODE_MODULES", tmp_path / "node_modules")
    cfg = load_config(DEFAULT).with_overrides(bot={"ledger": str(tmp_path / "ledger.sqlite")})
    with pytest.raises(ConfigError, match=r"venues\.chain\.options: .*run `npm ci --prefix connectors/evm`"):
        Engine(cfg, clock=SimulatedClock(START, 0.0))


CHILD = """
import sys, time
from datetime import timedelta
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from bot.clock import SimulatedClock
from tests.conftest import START
from tests.connectors.evm.test_devnet_venue import devnet
v = devnet(Path(sys.argv[1]), SimulatedClock(START + timedelta(days=3), 0.0))
print(v.node.proc.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the node dies with its parent through Linux's PR_SET_PDEATHSIG")
def test_a_killed_daemon_leaves_no_chain_running(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(ROOT)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        pid = int(child.stdout.readline())  # type: ignore[union-attr]
        os.kill(pid, 0)  # the node is up
        child.send_signal(signal.SIGKILL)  # no close(), no atexit: only the kernel can clean up
        child.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            # the node is our grandchild; once it exits the init process reaps it
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("anvil outlived the process that started it")
    finally:
        if child.poll() is None:
            child.kill()
