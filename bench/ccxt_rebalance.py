"""Wall time of a 50-asset rebalance through unmodified ccxt against the exchange emulator.

    python bench/ccxt_rebalance.py [--assets 50] [--history 720] [--exchange binance|okx|bybit]

One full first cycle per setting (data → forecast → ERC → 50 buy legs → fills → ledger), from an
all-cash account, on 127.0.0.1. Settings: ccxt's own rate limit for Binance (``rateLimit`` = 50 ms,
20 requests/s) and an unthrottled limiter; legs sent one at a time and 8 at once. The emulator runs
in this process on its own threads, so the numbers include its work (JSON, matching, signatures).
``--exchange`` trades through another dialect of the emulator (OKX and Bybit answer a create with the
ids only, so each leg costs at least one lookup more; ccxt's Bybit finds orders in its order lists);
the data always comes from its Binance endpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.clock import SimulatedClock  # noqa: E402
from bot.config import parse_config  # noqa: E402
from bot.cycle import Engine  # noqa: E402
from bot.plugins import make_plugin_manager  # noqa: E402
from tests.conftest import paper_dict  # noqa: E402
from tests.connectors.conftest import NOW, PASSPHRASE, SECRET  # noqa: E402
from tests.connectors.emulator import DIALECTS, ExchangeEmulator, MarketSpec  # noqa: E402


def markets(n: int) -> dict[str, MarketSpec]:
    out = {}
    for i in range(n):
        name = f"A{i:02d}"
        price = 20.0 + 7.5 * i
        out[name] = MarketSpec(
            name,
            price=price,
            annual_vol=0.08 + 0.01 * (i % 25),
            hourly_volume=5e6 / price,
            level_qty=2e5 / price,
        )
    return out


def run(n: int, history: int, rate: float | None, width: int, exchange: str = "binance") -> dict[str, Any]:
    emu = ExchangeEmulator(markets(n), api_key="emu-key", secret=SECRET, now=NOW, balances={"USDT": 1_000_000.0},
                           passphrase=PASSPHRASE)  # fmt: skip
    emu.start()
    os.environ["RWABOT_BENCH_KEY"], os.environ["RWABOT_BENCH_SECRET"] = "emu-key", SECRET
    os.environ["RWABOT_BENCH_PASSPHRASE"] = PASSPHRASE
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = paper_dict(Path(tmp))
            data["bot"]["quote"] = "USDT"
            data["risk"] = {**data["risk"], "history_hours": history}
            common: dict[str, Any] = {"api_urls": {"*": emu.base_url}, "max_workers": 8}
            if rate is not None:
                common["rate_limit_per_s"] = rate
            data["data"] = {"plugin": "ccxt", "options": common}
            data["venues"] = {
                "cex": {
                    "plugin": "ccxt",
                    "options": {
                        **common,
                        "exchange": exchange,
                        **({"password_env": "RWABOT_BENCH_PASSPHRASE"} if exchange == "okx" else {}),
                        "api_key_env": "RWABOT_BENCH_KEY",
                        "secret_env": "RWABOT_BENCH_SECRET",
                        "max_concurrent_orders": width,
                        "poll_interval_s": 0.05,
                    },
                }
            }
            data["assets"] = {a: {"venue": "cex"} for a in emu.symbol_of}
            data.pop("funding", None)  # the paper config's routes name its own venues, which these replace
            e = Engine(parse_config(data, "bench"), pm=make_plugin_manager(), clock=SimulatedClock(NOW, 0.0))
            t0 = time.perf_counter()
            r = e.run_cycle(NOW)
            wall = time.perf_counter() - t0
            statuses = Counter(o.status for o in e.ledger.all_orders())
            e.close()
        return {
            "wall_s": wall,
            "status": r.status,
            "orders": r.orders,
            "fills": r.fills,
            "statuses": dict(statuses),
            "requests": len(emu.requests),
            "posts": emu.count(*DIALECTS[exchange].create),
        }
    finally:
        emu.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=int, default=50)
    ap.add_argument("--history", type=int, default=720)
    ap.add_argument("--exchange", choices=sorted(DIALECTS), default="binance")
    args = ap.parse_args()
    bars = args.history + 1
    print(f"{args.assets}-asset first rebalance (all cash → ERC), {bars} hourly bars/asset, ccxt ↔ emulator "
          f"({args.exchange})")
    print(f"{'rate limit':>22} {'legs at once':>12} {'wall s':>8} {'orders':>6} {'fills':>5} {'HTTP req':>8}  status")
    for rate, label in ((None, "ccxt default (20/s)"), (5000.0, "5000/s")):
        for width in (1, 8):
            r = run(args.assets, args.history, rate, width, args.exchange)
            print(
                f"{label:>22} {width:>12} {r['wall_s']:>8.2f} {r['orders']:>6} {r['fills']:>5} {r['requests']:>8}"
                f"  {r['status']} {r['statuses']}"
            )


if __name__ == "__main__":
    main()
