"""Compile the contracts under ``contracts/`` with solc-js and find the anvil binary.

Both come from npm (``package.json`` beside this file, reproduced by ``npm ci``): solc-js compiles
against the OpenZeppelin 5 sources in ``node_modules``; anvil ships as a platform package. The
compiled artifacts are cached by a hash of every source, the compiler and OpenZeppelin versions and
the settings, so a test session compiles once and later sessions not at all. Nothing here is needed
to *trade* on a chain: the venue and data source only need the ABIs in ``abi.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import RwabotError

EVM_DIR = Path(__file__).resolve().parent
CONTRACTS_DIR = EVM_DIR / "contracts"
NODE_MODULES = EVM_DIR / "node_modules"
ABI_FILE = EVM_DIR / "abi.json"
STANDARD_ERRORS = "OpenZeppelin errors"  # the abi.json entry of every custom error of OpenZeppelin 5
NPM_COMMAND = "npm ci --prefix connectors/evm"
CONTRACTS = (
    "Stablecoin",
    "RwaToken",
    "FundVault",
    "ConstantProductPool",
    "PriceFeed",
    "AsyncVault",
    "CooldownVault",
    "FundToken",
    "IssuerManager",
    "FeeOnTransferToken",
    "RebasingToken",
)
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
}


class ToolchainMissing(RwabotError):
    """node, the npm packages or the anvil binary are not installed."""


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def build_dir() -> Path:
    return Path(os.environ.get("RWABOT_EVM_BUILD_DIR") or EVM_DIR / "build")


def require_node_modules() -> None:
    """Fail with the command to run when the npm packages are missing."""
    missing = [p for p in ("solc", "@openzeppelin/contracts", "@foundry-rs/anvil") if not (NODE_MODULES / p).is_dir()]
    if missing:
        raise ToolchainMissing(
            f"npm packages {missing} are not installed under {NODE_MODULES}; "
            f"run `{NPM_COMMAND}` in the repository root (needs node >= 18 and npm)"
        )
    if shutil.which("node") is None:
        raise ToolchainMissing("node is not on PATH; install Node.js >= 18 (the contracts compile with solc-js)")


def _version(package: str) -> str:
    return json.loads((NODE_MODULES / package / "package.json").read_text())["version"]


def source_hash(directory: Path = CONTRACTS_DIR) -> str:
    """Everything the bytecode depends on: sources, compiler, OpenZeppelin, settings."""
    h = hashlib.sha256()
    h.update(f"solc {_version('solc')} oz {_version('@openzeppelin/contracts')}\n".encode())
    h.update(json.dumps(SETTINGS, sort_keys=True).encode())
    for p in sorted(directory.glob("*.sol")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:32]


def compile_contracts(*, force: bool = False) -> dict[str, Artifact]:
    """ABI and creation bytecode of every contract, from the cache when the sources are unchanged."""
    return compile_dir(CONTRACTS_DIR, CONTRACTS, force=force)


def compile_dir(
    directory: Path, names: Sequence[str] | None = None, *, force: bool = False, tag: str = "contracts"
) -> dict[str, Artifact]:
    """Compile every ``*.sol`` of ``directory`` (imports: OpenZeppelin and ``contracts/``) and return the
    contracts each defined in a file of its own name (``names``: only those), cached like the project's
    own (``<tag>-<hash>.json`` under the build folder). Tests compile contracts written for them this way."""
    require_node_modules()
    digest = source_hash(directory)
    cache = build_dir() / f"{tag}-{digest}.json"
    if cache.exists() and not force:
        raw = json.loads(cache.read_text())
    else:
        sources = {p.name: {"content": p.read_text()} for p in sorted(directory.glob("*.sol"))}
        std_in = json.dumps({"language": "Solidity", "sources": sources, "settings": SETTINGS})
        proc = subprocess.run(
            ["node", str(EVM_DIR / "compile.mjs")], input=std_in, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            raise RwabotError(f"solc-js failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        result = json.loads(proc.stdout)
        errors = [e for e in result["output"].get("errors", []) if e.get("severity") == "error"]
        if errors:
            raise RwabotError("solidity compile errors:\n" + "\n".join(e["formattedMessage"] for e in errors))
        raw = {"solc": result["version"], "contracts": {}}
        for file, contracts in result["output"]["contracts"].items():
            for name, c in contracts.items():
                if (names is None or name in names) and file == f"{name}.sol" and c["evm"]["bytecode"]["object"]:
                    raw["contracts"][name] = {"abi": c["abi"], "bytecode": "0x" + c["evm"]["bytecode"]["object"]}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw))
        tmp.replace(cache)
    return {n: Artifact(n, c["abi"], c["bytecode"]) for n, c in raw["contracts"].items()}


def abi_document(artifacts: dict[str, Artifact]) -> str:
    """The text of ``abi.json``: the ABIs the venue and data source load at run time, and under
    ``STANDARD_ERRORS`` every custom error of the OpenZeppelin release in ``node_modules``."""
    doc = {n: artifacts[n].abi for n in CONTRACTS}
    doc[STANDARD_ERRORS] = standard_errors()
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def standard_errors() -> list[dict[str, Any]]:
    """Every custom error of the OpenZeppelin release in ``node_modules`` (its compiled
    ``build/contracts``), one entry per signature: the venue and the data source decode reverts of
    contracts they have no ABI of with these (``ERC20InsufficientBalance``, ``ERC4626ExceededMaxRedeem``,
    ``OwnableUnauthorizedAccount``, ``EnforcedPause`` ...)."""
    require_node_modules()
    oz = NODE_MODULES / "@openzeppelin" / "contracts"
    seen: dict[str, dict[str, Any]] = {}
    for p in sorted((oz / "build" / "contracts").glob("*.json")):
        for item in json.loads(p.read_text()).get("abi", []):
            if item.get("type") != "error":
                continue
            sig = f"{item['name']}({','.join(_type(i) for i in item['inputs'])})"
            seen.setdefault(sig, {k: item[k] for k in ("type", "name", "inputs")})
    return [seen[k] for k in sorted(seen)]


def _type(inp: dict[str, Any]) -> str:
    t = inp["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in inp["components"]) + ")" + t[5:]
    return t


def anvil_binary() -> Path:
    """The anvil executable of the npm platform package (no node wrapper, so it can be stopped cleanly)."""
    require_node_modules()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    system = {"Linux": "linux", "Darwin": "darwin"}.get(platform.system())
    if arch and system:
        exe = NODE_MODULES / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
        if exe.exists():
            return exe
    raise ToolchainMissing(
        f"no anvil binary for {platform.system()} {platform.machine()} under {NODE_MODULES / '@foundry-rs'}; "
        f"run `{NPM_COMMAND}`"
    )


if __name__ == "__main__":  # python -m connectors.evm.build: compile and refresh abi.json
    arts = compile_contracts(force=True)
    ABI_FILE.write_text(abi_document(arts))
    print(f"compiled {sorted(arts)}; wrote {ABI_FILE}")
