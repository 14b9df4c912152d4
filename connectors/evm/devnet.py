"""``rwabot devnet``: a local chain with a realistic RWA book, a config for it, and cycles traded on it.

The book (``book=True``, the default) is what an RWA desk holds: an instant-mint fund behind an
issuer manager (USTB), an ERC-4626 fund (TBILL), an ERC-7540 fund whose manager fulfils requests
each hour (CREDIT), a real ERC-3643 T-REX token on a verified pool (REALT) and a fee-on-transfer
gold token on a real Uniswap V2 pair (PAXG), next to a simulated exchange (paper venue) for SPY,
TLT, GLD and VNQ, all priced by the simulated market on a simulated clock. ``book=False`` keeps the
older chain-only world: vaults and a pool with a mined history, priced from the chain itself.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.evm.chain import connect
from connectors.evm.deploy import deploy_world, dev_key
from connectors.evm.node import AnvilNode

KEY_ENV = "RWABOT_EVM_KEY"


def _toml(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items() if v is not None) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_config(path: Path, world: Any, url: str, mode: str, ledger: Path) -> None:
    venue: dict[str, Any] = {
        "rpc_url": url, "chain_id": 31337, "quote_token": world.stable.address,
        "native_price_feed": world.feeds["ETH"].address, "receipt_timeout_s": 30.0, "poll_interval_s": 0.05,
    }  # fmt: skip
    if mode == "paper":
        venue.update(paper=True, account=world.trader, key_env=None)
    else:
        venue["key_env"] = KEY_ENV
    lines = [
        "# written by `rwabot devnet`: a local anvil chain with tokenized funds and a permissioned token pool",
        "[bot]", 'name = "rwabot-devnet"', f'mode = "{mode}"', f"ledger = {json.dumps(str(ledger))}", 'quote = "USD"',
        "[clock]", 'kind = "real"',
        "[risk]", "history_hours = 24", "participation = 0.5", "liquidity_lookback_hours = 12",
        "[strategy]", 'plugin = "risk_parity"', "options = { half_life_hours = 72.0, band = 0.02 }",
        "[data]", 'plugin = "evm"',
        f"options = {_toml({'rpc_url': url, 'chain_id': 31337, 'assets': world.data_assets()})}",
        "[venues.chain]", 'plugin = "evm"', f"options = {_toml({**venue, 'assets': world.venue_assets()})}",
    ]  # fmt: skip
    for a in world.venue_assets():
        lines += [f"[assets.{a}]", 'venue = "chain"', "upper = 0.6"]
    path.write_text("\n".join(lines) + "\n")


BOOK = {"managers": ["USTB"], "funds": ["TBILL"], "async_funds": ["CREDIT"], "trex_pools": ["REALT"],
        "fot_pools": ["PAXG"]}
TRADITIONAL = ("SPY", "TLT", "GLD", "VNQ")


def book_universe() -> list[dict[str, Any]]:
    """The simulated market's default assets and TBILL, a second T-bill fund that tracks USTB."""
    from plugins.data.simulated import DEFAULT_UNIVERSE

    out = [a.model_dump(exclude_defaults=True) for a in DEFAULT_UNIVERSE]
    ustb = next(a for a in out if a["name"] == "USTB")
    tbill = {k: v for k, v in ustb.items() if k not in ("factor_loading", "stress_loading")}
    out.append({**tbill, "name": "TBILL", "price": 1.0, "tracks": "USTB", "tracking_corr": 0.98,
                "mean_hourly_volume": ustb["mean_hourly_volume"] * 10})  # fmt: skip
    return out


def write_book_config(path: Path, mode: str, ledger: Path, start: datetime, settle_hours: float = 2.0) -> None:
    """The config of the realistic book: simulated market and clock, a paper exchange, the chain."""
    chain = {**BOOK, "live": mode == "live", "paper_cash": 750_000.0, "async_settlement_hours": settle_hours}
    lines = [
        "# written by `rwabot devnet`: a realistic tokenized-RWA book on a local anvil chain next to a simulated",
        "# exchange; the simulated market prices both, a keeper moves the chain to it every simulated hour",
        # live: the chain venue signs and sends on the local devnet, but the exchange is simulated, and a
        # live bot may not hold a paper venue: the bot runs in paper mode, its chain venue live
        "# mode: " + ("the chain venue signs and sends (live = true); the exchange is simulated" if mode == "live"
                      else "paper: nothing is signed or sent"),
        "[bot]", 'name = "rwabot-devnet"', 'mode = "paper"', f"ledger = {json.dumps(str(ledger))}", 'quote = "USD"',
        "[clock]", 'kind = "simulated"', f"start = {_toml(start)}", "speed = 3600.0",
        "[risk]", "history_hours = 720", "participation = 0.10", "liquidity_lookback_hours = 168",
        "liquidity_horizon_hours = 24", "cap_tolerance = 0.10",
        "[strategy]", 'plugin = "risk_parity"',
        'options = { half_life_hours = 72.0, band = 0.25, measure = "relative" }',
        "[data]", 'plugin = "simulated"', f"options = {{ seed = 7, assets = {_toml(book_universe())} }}",
        "[venues.exchange]", 'plugin = "paper"', "options = { initial_cash = 250000.0, fee_bps = 2.0 }",
        "[venues.chain]", 'plugin = "evm_devnet"', f"options = {_toml(chain)}",
    ]  # fmt: skip
    for a in TRADITIONAL:
        lines += [f"[assets.{a}]", 'venue = "exchange"']
    for a in [n for names in BOOK.values() for n in names]:
        lines += [f"[assets.{a}]", 'venue = "chain"']
    path.write_text("\n".join(lines) + "\n")


def run_book(out: Path, mode: str, cycles: int, echo: Any) -> dict[str, Any]:
    """Write the book's config and trade ``cycles`` hourly cycles on its simulated clock."""
    from bot.clock import SimulatedClock
    from bot.config import load_config
    from bot.cycle import Engine

    out.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    cfg_path, ledger = out / "devnet.toml", out / "ledger.sqlite"
    for p in out.glob("ledger.sqlite*"):
        p.unlink()
    write_book_config(cfg_path, mode, ledger, start)
    echo(f"config written to {cfg_path} ({mode}); starting the chain and deploying the book")
    os.environ.setdefault(KEY_ENV, dev_key(2))  # anvil's public development key #2, this process only
    clock = SimulatedClock(start, 0.0)
    t = time.perf_counter()
    e = Engine(load_config(cfg_path), clock=clock)
    echo(f"chain up, book deployed in {time.perf_counter() - t:.1f} s")
    figures: dict[str, Any] = {"cycles": []}
    try:
        for k in range(cycles):
            clock.advance_to(start + timedelta(hours=k, minutes=1))
            before = sum(f.venue == "chain" for f in e.ledger.fills())
            t = time.perf_counter()
            r = e.run_cycle(clock.now())
            wall = time.perf_counter() - t
            chain_fills = [f for f in e.ledger.fills() if f.venue == "chain"][before:]
            figures["cycles"].append({"key": r.key, "wall_s": wall, "orders": r.orders, "fills": r.fills})
            echo(f"cycle {r.key} {r.status} in {wall:.2f} s: NAV {r.nav:,.2f}, {r.orders} orders, {r.fills} fills "
                 f"({len(chain_fills)} on chain) {r.message[:160]}")  # fmt: skip
        txs = e.ledger.txs(venue="chain")
        by_step: dict[str, list[int]] = {}
        for x in txs:
            if x.gas_used:
                by_step.setdefault(f"{x.asset} {x.step}", []).append(int(x.gas_used))
        figures["gas_by_operation"] = {k: sum(v) / len(v) for k, v in sorted(by_step.items())}
        held = {f.asset for f in e.ledger.fills() if f.venue == "chain" and f.qty > 0}
        figures["chain_assets_filled"] = sorted(held)
        for k, g in figures["gas_by_operation"].items():
            echo(f"  gas {k}: {g:,.0f}")
        gas_usd = sum(f.gas for f in e.ledger.fills() if f.venue == "chain")
        echo(f"chain assets filled: {', '.join(sorted(held))}; gas paid {gas_usd:.4f} USD over {len(txs)} transactions")
    finally:
        e.close()
    return figures


def run_devnet(
    out: Path, mode: str, hours: int, cycles: int, keep: bool, echo: Any, *, book: bool = True
) -> dict[str, Any]:
    """The realistic book (default); or, ``book=False``: start anvil, deploy the chain-only world, mine
    ``hours`` of history up to now, write the config, run cycles."""
    from bot.config import load_config
    from bot.cycle import Engine

    if book:
        figures = run_book(out, mode, max(cycles, 1), echo)
        if keep:
            echo(f"trade the book under the daemon with: rwabot run --config {out / 'devnet.toml'} "
                 f"(it starts its own chain; live mode reads the key from {KEY_ENV})")  # fmt: skip
        return figures
    out.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    hour = now - now % 3600
    node = AnvilNode(timestamp=hour - (hours + 1) * 3600, log_file=out / "anvil.log").start()
    try:
        t = time.perf_counter()
        w3 = connect(node.url, 10.0)
        world = deploy_world(w3)
        world.mine_history(hour - hours * 3600, hours)
        w3.provider.make_request("evm_mine", [int(time.time())])  # type: ignore[arg-type]
        echo(f"anvil on {node.url}: contracts deployed, {hours} h of market mined in {time.perf_counter() - t:.1f} s")
        cfg_path, ledger = out / "devnet.toml", out / "ledger.sqlite"
        write_config(cfg_path, world, node.url, mode, ledger)
        echo(f"config written to {cfg_path}")
        os.environ.setdefault(KEY_ENV, dev_key(2))  # anvil's public development key #2, this process only
        figures: dict[str, float] = {}
        e = Engine(load_config(cfg_path))
        try:
            for _ in range(cycles):
                t = time.perf_counter()
                r = e.run_cycle(datetime.now(UTC))
                wall = time.perf_counter() - t
                txs = e.ledger.txs(venue="chain")
                gas_used = sum(x.gas_used or 0 for x in txs)
                fills = e.ledger.fills()
                figures = {
                    "cycle_wall_s": wall, "orders": r.orders, "fills": r.fills, "txs": len(txs),
                    "gas_used": gas_used, "gas_quote": sum(f.gas for f in fills), "nav": r.nav,
                }  # fmt: skip
                echo(
                    f"cycle {r.key} {r.status} in {wall:.2f} s: NAV {r.nav:,.2f}, {r.orders} orders, {r.fills} fills, "
                    f"{len(txs)} transactions, {gas_used:,} gas ({figures['gas_quote']:.4f} USD) {r.message[:200]}"
                )
        finally:
            e.close()
        if keep:
            echo(
                f"node kept running; trade on it with: rwabot run --config {cfg_path} (live mode reads the "
                f"key from {KEY_ENV}: anvil's development account #2). Ctrl-C stops it."
            )
            try:
                while node.running:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return figures
    finally:
        node.stop()
