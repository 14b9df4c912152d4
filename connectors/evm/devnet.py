"""``rwabot devnet``: a local chain with the RWA world, a config for it, and cycles traded on it."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.evm.chain import connect
from connectors.evm.deploy import deploy_world, dev_key
from connectors.evm.node import AnvilNode

KEY_ENV = "RWABOT_EVM_KEY"


def _toml(value: Any) -> str:
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


def run_devnet(out: Path, mode: str, hours: int, cycles: int, keep: bool, echo: Any) -> dict[str, float]:
    """Start anvil, deploy, mine ``hours`` of history up to now, write the config, run cycles."""
    from bot.config import load_config
    from bot.cycle import Engine

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
