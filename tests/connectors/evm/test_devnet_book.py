"""``rwabot devnet``'s realistic book traded by the engine in paper and live mode: an instant-mint
fund (issuer manager), an ERC-4626 fund, an ERC-7540 fund fulfilled by its manager each hour, a real
T-REX token on a verified pool and a fee-on-transfer gold token on Uniswap V2, next to a simulated
exchange. Live: the chain's balances equal the ledger's fills and every transaction is in the
ledger once; paper: nothing is ever sent."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.clock import SimulatedClock
from bot.config import load_config
from bot.cycle import Engine
from connectors.evm.deploy import dev_key
from connectors.evm.devnet import BOOK, KEY_ENV, write_book_config

START = datetime(2026, 3, 1, tzinfo=UTC)
CHAIN = [a for names in BOOK.values() for a in names]


def run(tmp_path: Path, mode: str, hours: int) -> tuple[Engine, SimulatedClock]:
    cfg = tmp_path / "devnet.toml"
    write_book_config(cfg, mode, tmp_path / "ledger.sqlite", START, settle_hours=2.0)
    clock = SimulatedClock(START, 0.0)
    e = Engine(load_config(cfg), clock=clock)
    for k in range(hours):
        clock.advance_to(START + timedelta(hours=k, minutes=1))
        assert e.run_cycle(clock.now()).status == "done"
    return e, clock


def net_fills(e: Engine) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for f in e.ledger.fills():
        if f.venue == "chain":
            out[f.asset] += f.qty if f.side == "buy" else -f.qty
    return out


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_the_daemon_trades_the_whole_book(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, dev_key(2))
    e, _ = run(tmp_path, mode, 4)
    try:
        venue = e.c.venues["chain"]
        world = venue.world
        filled = net_fills(e)
        assert sorted(a for a in CHAIN if filled.get(a, 0) > 0) == sorted(CHAIN)  # every product was bought
        kinds = {a: venue.venue.cfg.assets[a].kind for a in CHAIN}
        assert kinds == {"USTB": "manager", "TBILL": "vault", "CREDIT": "async", "REALT": "pool", "PAXG": "univ2"}
        w3 = world.w3
        if mode == "paper":
            assert w3.eth.get_transaction_count(world.trader) == 0  # nothing signed or sent
            return
        # live: what the wallet holds is what the ledger's fills say, asset by asset
        for a in CHAIN:
            held = venue.venue.contracts[a].functions.balanceOf(world.trader).call() / 1e18
            assert held == pytest.approx(filled[a], rel=1e-9, abs=1e-9), a
        txs = e.ledger.txs(venue="chain")
        assert w3.eth.get_transaction_count(world.trader) == len({t.nonce for t in txs})
        assert all(t.status in ("mined", "replaced") for t in txs)
        steps = {(t.asset, t.step) for t in txs}
        assert {("USTB", "subscribe"), ("TBILL", "deposit"), ("CREDIT", "request"), ("CREDIT", "claim"),
                ("REALT", "swap"), ("PAXG", "swap")} <= steps  # fmt: skip
        # the fee-on-transfer token's fee is in the cost ledger: more than the pool's 30 bps alone
        paxg = [f for f in e.ledger.fills() if f.asset == "PAXG" and f.qty > 0]
        assert paxg and all(f.fee > 0.003 * f.qty * f.price for f in paxg)
    finally:
        e.close()
