"""A local anvil node on 127.0.0.1 for tests and ``rwabot devnet``: started, waited for, stopped."""

from __future__ import annotations

import ctypes
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bot.errors import RwabotError
from connectors.evm.build import anvil_binary

DEV_MNEMONIC = "test test test test test test test test test test test junk"
"""anvil's well-known development mnemonic; its keys are public and worthless outside a devnet."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc(url: str, method: str, params: list | None = None, timeout: float = 2.0) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read())
    if "error" in out:
        raise RwabotError(f"{method}: {out['error']}")
    return out["result"]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the kernel sends the node SIGTERM when the process that started it dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class AnvilNode:
    """One anvil process. ``timestamp`` sets the genesis time (history can then be mined hour by hour);
    ``die_with_parent`` (Linux) ties the node's life to the starting process, so a daemon that is
    killed never leaves a chain running."""

    def __init__(
        self,
        *,
        port: int | None = None,
        chain_id: int = 31337,
        timestamp: int | None = None,
        accounts: int = 10,
        balance_eth: int = 10_000,
        log_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
        die_with_parent: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.chain_id = chain_id
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(chain_id)]
        args += ["--accounts", str(accounts), "--balance", str(balance_eth), "--mnemonic", DEV_MNEMONIC]
        if timestamp is not None:
            args += ["--timestamp", str(timestamp)]
        self.args = [*args, *extra_args]
        self.log_file = log_file
        self.die_with_parent = die_with_parent and sys.platform == "linux"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> AnvilNode:
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RwabotError(f"anvil exited with {self.proc.returncode} at start: {' '.join(self.args)}")
            try:
                if int(str(rpc(self.url, "eth_chainId", timeout=0.5)), 16) == self.chain_id:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RwabotError(f"anvil did not answer on {self.url} within {timeout} s")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
