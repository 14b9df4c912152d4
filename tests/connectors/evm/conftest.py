"""A real anvil node for the session, a deployed RWA world with 30 hours of market history on it,
and a snapshot per test so that every test starts from the same chain state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.clock import SimulatedClock
from bot.config import parse_config
from bot.cycle import Engine
from bot.plugins import make_plugin_manager
from connectors.evm.build import ToolchainMissing, require_node_modules
from connectors.evm.chain import connect
from connectors.evm.deploy import World, deploy_world, dev_key
from connectors.evm.node import AnvilNode
from tests.conftest import paper_dict

T0 = 1767225600  # 2026-01-01T00:00Z: the first hour of mined history
HISTORY_HOURS = 30
NOW = datetime.fromtimestamp(T0 + (HISTORY_HOURS - 1) * 3600 + 300, UTC)  # five minutes into the last hour
KEY_ENV = "RWABOT_TEST_EVM_KEY"


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    try:
        require_node_modules()
    except ToolchainMissing as exc:
        pytest.fail(f"the chain tests need the npm tools: {exc}", pytrace=False)
    node = AnvilNode(timestamp=T0 - 7200).start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def _world_session(anvil: AnvilNode) -> dict[str, Any]:
    w3 = connect(anvil.url, 10.0)
    world = deploy_world(w3)
    world.mine_history(T0, HISTORY_HOURS)
    return {"world": world, "snapshot": w3.provider.make_request("evm_snapshot", [])["result"]}


@pytest.fixture
def world(_world_session: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The session's world, reverted to its state after the history; the trader's key in KEY_ENV."""
    world: World = _world_session["world"]
    w3 = world.w3
    w3.provider.make_request("evm_setAutomine", [True])
    assert w3.provider.make_request("evm_revert", [_world_session["snapshot"]])["result"] is True
    _world_session["snapshot"] = w3.provider.make_request("evm_snapshot", [])["result"]
    # anvil keeps the next base fee across a revert: take it from the reverted head again
    base = w3.eth.get_block("latest")["baseFeePerGas"]
    w3.provider.make_request("anvil_setNextBlockBaseFeePerGas", [hex(base)])
    world.rng = np.random.default_rng(5)
    monkeypatch.setenv(KEY_ENV, dev_key(2))
    yield world


def venue_options(world: World, url: str, **kw: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "rpc_url": url,
        "chain_id": 31337,
        "quote_token": world.stable.address,
        "assets": world.venue_assets(),
        "native_price_feed": world.feeds["ETH"].address,
        "key_env": KEY_ENV,
        "receipt_timeout_s": 5.0,
        "poll_interval_s": 0.01,
        "rpc_timeout_s": 2.0,
    }
    opts.update(kw)
    return opts


def data_options(world: World, url: str) -> dict[str, Any]:
    return {"rpc_url": url, "chain_id": 31337, "assets": world.data_assets()}


def evm_config(tmp_path: Path, world: World, url: str, *, upper: dict[str, float] | None = None, **kw: Any) -> dict:
    data = paper_dict(tmp_path)
    data["clock"] = {"kind": "simulated", "start": NOW, "speed": 0.0}
    data["risk"] = {**data["risk"], "history_hours": 24, "participation": 0.5, "liquidity_lookback_hours": 12}
    data["data"] = {"plugin": "evm", "options": data_options(world, url)}
    data["venues"] = {"chain": {"plugin": "evm", "options": venue_options(world, url, **kw)}}
    data.pop("funding", None)  # the paper config's routes name its venues; this book has the chain only
    data["assets"] = {a: {"venue": "chain", "upper": (upper or {}).get(a, 1.0)} for a in world.venue_assets()}
    data.pop("report", None)  # the embedded [report] names the embedded book's assets
    if not data["venues"]["chain"]["options"].get("paper"):
        data["bot"]["mode"] = "live"  # mode is law: a paper bot's venues are all paper
    return data


def evm_engine(tmp_path: Path, cfg: dict, plugins: tuple[object, ...] = ()) -> Engine:
    pm = make_plugin_manager(plugins=plugins)
    return Engine(parse_config(cfg, "test"), pm=pm, clock=SimulatedClock(NOW, 0.0))
