"""The evm data source against the chain's own history, and the signing key's safety."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from eth_account import Account

from bot.clock import SimulatedClock
from bot.components import ComponentContext
from bot.errors import ConfigError, DataError
from connectors.evm.data import EvmDataConfig, EvmDataSource
from connectors.evm.deploy import SHARE, USD, World, dev_key
from connectors.evm.node import AnvilNode
from connectors.evm.venue import EvmVenue, EvmVenueConfig
from tests.connectors.evm.conftest import (
    HISTORY_HOURS,
    KEY_ENV,
    NOW,
    data_options,
    evm_config,
    evm_engine,
    venue_options,
)


def source(world: World, url: str, **assets) -> EvmDataSource:  # noqa: ANN003
    opts = data_options(world, url)
    opts["assets"].update(assets)
    ctx = ComponentContext(SimulatedClock(NOW, 0.0), Path("/nonexistent"), tuple(opts["assets"]), lambda e: None)
    return EvmDataSource(EvmDataConfig.model_validate(opts), ctx)


def test_bars_are_the_chain_state_at_each_close_and_the_events_inside_each_hour(world: World, anvil: AnvilNode) -> None:
    ds = source(world, anvil.url, ETH={"source": "feed", "address": world.feeds["ETH"].address})
    bars = ds.bars(["USTB", "REALT", "ETH"], NOW, 24)
    assert bars.times[-1] == NOW.replace(minute=0) and len(bars.times) == 24
    w3 = world.w3
    # independent reference: the raw contract calls at the block of the last close, and the raw logs
    close_ts = int(bars.times[-1].timestamp())
    block = max(n for n in range(w3.eth.block_number + 1) if w3.eth.get_block(n)["timestamp"] <= close_ts)
    prev = max(n for n in range(block + 1) if w3.eth.get_block(n)["timestamp"] <= close_ts - 3600)
    nav = world.vaults["USTB"].functions.convertToAssets(SHARE).call(block_identifier=block) / USD
    rb, rq = world.pools["REALT"].functions.getReserves().call(block_identifier=block)
    eth = world.feeds["ETH"].functions.latestRoundData().call(block_identifier=block)[1] / 1e8
    assert bars.close[-1].tolist() == pytest.approx([nav, (rq / USD) / (rb / SHARE), eth], rel=1e-12)
    v = world.vaults["USTB"]
    shares = sum(lg["args"]["shares"] for ev in (v.events.Deposit, v.events.Withdraw)
                 for lg in ev.get_logs(from_block=prev + 1, to_block=block))  # fmt: skip
    assert bars.volume[-1, 0] == pytest.approx(shares / SHARE) and shares > 0
    assert (bars.volume[:, 1] > 0).all() and (bars.volume[:, 2] == 0).all()  # a feed has no volume
    # cached hours come back identical; an hour before the chain existed is an error, not a guess
    again = ds.bars(["USTB", "REALT", "ETH"], NOW, 24)
    assert (again.close == bars.close).all() and (again.volume == bars.volume).all()
    with pytest.raises(DataError, match="the chain starts at"):
        ds.bars(["USTB"], NOW, HISTORY_HOURS + 5)
    snap = ds.latest(["USTB"], NOW)
    assert snap.prices[0] == pytest.approx(world.nav("USTB"))


def test_the_node_down_is_a_data_error(world: World) -> None:
    opts = data_options(world, "http://127.0.0.1:9")
    ctx = ComponentContext(SimulatedClock(NOW, 0.0), Path("/nonexistent"), ("USTB",), lambda e: None)
    ds = EvmDataSource(EvmDataConfig.model_validate({**opts, "rpc_timeout_s": 0.5}), ctx)
    with pytest.raises(DataError, match="node unreachable"):
        ds.latest(["USTB"], NOW)


def test_the_key_is_never_logged_printed_or_stored(
    tmp_path: Path, world: World, anvil: AnvilNode, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    key = dev_key(2)
    caplog.set_level(logging.DEBUG)
    e = evm_engine(tmp_path, evm_config(tmp_path, world, anvil.url))
    e.run_cycle(NOW)
    venue = e.c.venues["chain"]
    assert key[2:] not in repr(venue) and key[2:] not in str(vars(venue))
    e.close()
    out = capsys.readouterr()
    texts = [caplog.text, out.out, out.err]
    texts += [p.read_bytes().hex() + p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file()]
    assert e.ledger.txs(), "the cycle traded: there were signed transactions to store"
    for t in texts:
        assert key[2:].lower() not in t.lower()


def test_keys_come_from_a_keystore_with_its_password_in_the_environment(
    tmp_path: Path, world: World, anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = tmp_path / "key.json"
    ks.write_text(json.dumps(Account.encrypt(dev_key(2), "correct horse", iterations=2)))
    ctx = ComponentContext(SimulatedClock(NOW, 0.0), tmp_path, ("USTB",), lambda e: None)
    opts = venue_options(world, anvil.url, key_env=None, keystore=str(ks), keystore_password_env="RWABOT_TEST_KS_PW")
    with pytest.raises(ConfigError, match="environment variable RWABOT_TEST_KS_PW is not set"):
        EvmVenue("chain", EvmVenueConfig.model_validate(opts), ctx)
    monkeypatch.setenv("RWABOT_TEST_KS_PW", "wrong")
    with pytest.raises(ConfigError, match="wrong password") as info:
        EvmVenue("chain", EvmVenueConfig.model_validate(opts), ctx)
    assert "wrong" not in str(info.value).replace("wrong password", "")
    monkeypatch.setenv("RWABOT_TEST_KS_PW", "correct horse")
    v = EvmVenue("chain", EvmVenueConfig.model_validate(opts), ctx)
    assert v.address == world.trader
    v.close()
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=f"environment variable {KEY_ENV} is not set"):
        EvmVenue("chain", EvmVenueConfig.model_validate(venue_options(world, anvil.url)), ctx)
    monkeypatch.setenv(KEY_ENV, "0xnot-a-key")
    with pytest.raises(ConfigError, match="not a valid") as info:
        EvmVenue("chain", EvmVenueConfig.model_validate(venue_options(world, anvil.url)), ctx)
    assert "not-a-key" not in str(info.value)


def test_paper_mode_sends_nothing_and_costs_gas(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    cfg = evm_config(tmp_path, world, anvil.url)
    cfg["venues"]["chain"]["options"].update(paper=True, account=world.trader, key_env=None, paper_cash=1_000_000.0)
    nonce = world.w3.eth.get_transaction_count(world.trader)
    head = world.w3.eth.block_number
    e = evm_engine(tmp_path, cfg)
    assert e.run_cycle(NOW).status == "done"
    fills = e.ledger.fills()
    assert len(fills) == 3 and all(f.gas > 0 for f in fills)
    assert world.w3.eth.get_transaction_count(world.trader) == nonce and world.w3.eth.block_number == head
    assert not e.ledger.txs()
    bal = e.c.venues["chain"].balances()
    spent = sum(f.qty * f.price + f.fee + f.gas for f in fills)
    assert bal.cash == pytest.approx(1_000_000.0 - spent, rel=1e-12)
    e.close()


def test_the_devnet_config_loads_and_trades(tmp_path: Path, world: World, anvil: AnvilNode) -> None:
    from bot.config import load_config
    from bot.cycle import Engine
    from connectors.evm.devnet import write_config

    for mode in ("paper", "live"):
        write_config(tmp_path / f"{mode}.toml", world, anvil.url, mode, tmp_path / f"{mode}.sqlite")
    cfg = load_config(tmp_path / "paper.toml").with_overrides(clock={"kind": "simulated", "start": NOW, "speed": 0.0})
    e = Engine(cfg)
    assert e.run_cycle(NOW).status == "done" and len(e.ledger.fills()) == 3
    e.close()
    assert load_config(tmp_path / "live.toml").venues["chain"].options["key_env"] == "RWABOT_EVM_KEY"
