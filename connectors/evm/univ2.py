"""Deploy the real Uniswap V2 (npm ``@uniswap/v2-core`` and ``@uniswap/v2-periphery``) from their
published compiled artifacts, with plain web3, and the few ABIs a venue needs to trade on it.

The artifacts are the audited mainnet builds (solc 0.5.16 and 0.6.6), not recompiled here: the
router's ``UniswapV2Library.pairFor`` computes pair addresses from a hard-coded init-code hash,
which only the shipped ``UniswapV2Pair`` bytecode matches (``PAIR_INIT_CODE_HASH``; the tests check
it). Deploying needs ``node_modules``; trading does not: ``univ2_abi.json`` beside this file holds
the router, pair and factory functions and events the venue calls at run time (``runtime_abis``),
extracted from the artifacts by ``python -m connectors.evm.univ2``. Used by tests and the devnet.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.contract import Contract

from connectors.evm.build import EVM_DIR, NODE_MODULES, NPM_COMMAND, Artifact, ToolchainMissing
from connectors.evm.deploy import MAX, deploy, send

UNISWAP = NODE_MODULES / "@uniswap"
ARTIFACTS = {
    "UniswapV2Factory": UNISWAP / "v2-core" / "build" / "UniswapV2Factory.json",
    "UniswapV2Pair": UNISWAP / "v2-core" / "build" / "UniswapV2Pair.json",
    "UniswapV2Router02": UNISWAP / "v2-periphery" / "build" / "UniswapV2Router02.json",
    "WETH9": UNISWAP / "v2-periphery" / "build" / "WETH9.json",
}
# keccak256 of UniswapV2Pair's creation code, as hard-coded in UniswapV2Library.pairFor
PAIR_INIT_CODE_HASH = "96e8ac4277198ff8b6f785478aa9a39f403cb768dd02cbee326c3e7da348845f"
RUNTIME_ABI_FILE = EVM_DIR / "univ2_abi.json"
# what the venue reads and sends at run time; everything else stays in node_modules
RUNTIME_ABI: dict[str, tuple[str, ...]] = {
    "UniswapV2Router02": (
        "factory",
        "getAmountsOut",
        "getAmountsIn",
        "swapExactTokensForTokens",
        "swapTokensForExactTokens",
        "swapExactTokensForTokensSupportingFeeOnTransferTokens",
    ),
    "UniswapV2Pair": ("getReserves", "token0", "token1", "Swap", "Sync", "Transfer"),
    "UniswapV2Factory": ("getPair",),
}
_ABI_KEYS = ("type", "name", "inputs", "outputs", "stateMutability", "anonymous")
DEADLINE = 2**40


@functools.cache
def uniswap_artifacts() -> dict[str, Artifact]:
    """ABI and creation bytecode of the factory, the pair, Router02 and WETH9 (no linking needed)."""
    out = {}
    for name, path in ARTIFACTS.items():
        if not path.exists():
            raise ToolchainMissing(f"{path} is missing: run `{NPM_COMMAND}` in the repository root")
        raw = json.loads(path.read_text())
        code = raw["bytecode"]
        out[name] = Artifact(name, raw["abi"], code if code.startswith("0x") else "0x" + code)
    return out


def pair_init_code_hash(artifacts: dict[str, Artifact] | None = None) -> str:
    """keccak256 of the pair's creation code (hex, no 0x): what CREATE2 in the factory hashes."""
    pair = (artifacts or uniswap_artifacts())["UniswapV2Pair"]
    return Web3.keccak(hexstr=pair.bytecode).hex().removeprefix("0x")


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    """An ABI entry without the artifacts' pre-0.6 ``constant``/``payable`` keys and ``internalType``s."""
    out = {k: item[k] for k in _ABI_KEYS if k in item}
    for key in ("inputs", "outputs"):
        if key in out:
            out[key] = [{k: v for k, v in p.items() if k != "internalType"} for p in out[key]]
    return out


def runtime_abi_document(artifacts: dict[str, Artifact] | None = None) -> str:
    """The text of ``univ2_abi.json``: the entries of ``RUNTIME_ABI``, taken from the artifacts."""
    arts = artifacts or uniswap_artifacts()
    doc: dict[str, list[dict[str, Any]]] = {}
    for contract, names in RUNTIME_ABI.items():
        entries = [_clean(i) for i in arts[contract].abi if i.get("name") in names]
        missing = set(names) - {e["name"] for e in entries}
        if missing:
            raise ValueError(f"{contract} artifact lacks {sorted(missing)}")
        doc[contract] = sorted(entries, key=lambda e: (e["type"], e["name"]))
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


@functools.cache
def runtime_abis(path: Path = RUNTIME_ABI_FILE) -> dict[str, list[dict[str, Any]]]:
    """The router, pair and factory ABIs the venue uses, without node_modules."""
    return json.loads(path.read_text())


@dataclass(frozen=True)
class UniswapV2:
    w3: Web3
    weth: Contract
    factory: Contract
    router: Contract

    def pair(self, token_a: str, token_b: str) -> Contract | None:
        """The pair of two tokens, or None when the factory has none."""
        address = self.factory.functions.getPair(token_a, token_b).call()
        if int(address, 16) == 0:
            return None
        return self.w3.eth.contract(address=address, abi=uniswap_artifacts()["UniswapV2Pair"].abi)

    def pair_address(self, token_a: str, token_b: str) -> str:
        """The pair's CREATE2 address as the router's library computes it (whether deployed or not)."""
        t0, t1 = sorted((Web3.to_checksum_address(token_a), Web3.to_checksum_address(token_b)), key=str.lower)
        salt = Web3.keccak(bytes.fromhex(t0[2:]) + bytes.fromhex(t1[2:]))
        raw = b"\xff" + bytes.fromhex(self.factory.address[2:]) + salt + bytes.fromhex(PAIR_INIT_CODE_HASH)
        return Web3.to_checksum_address(Web3.keccak(raw)[12:])


def deploy_uniswap(w3: Web3, owner: str) -> UniswapV2:
    """WETH9, the factory (``owner`` is its feeToSetter; the protocol fee stays off) and Router02."""
    arts = uniswap_artifacts()
    weth = deploy(w3, arts["WETH9"], sender=owner)
    factory = deploy(w3, arts["UniswapV2Factory"], owner, sender=owner)
    router = deploy(w3, arts["UniswapV2Router02"], factory.address, weth.address, sender=owner)
    return UniswapV2(w3, weth, factory, router)


def create_pool(
    uni: UniswapV2, token: Contract, stable: Contract, base_amount: int, quote_amount: int, sender: str
) -> Contract:
    """The pair of ``token`` and ``stable``, created by the router's ``addLiquidity`` with ``base_amount``
    and ``quote_amount`` from ``sender`` (who approves the router and receives the LP tokens)."""
    w3 = uni.w3
    send(w3, token.functions.approve(uni.router.address, MAX), sender)
    send(w3, stable.functions.approve(uni.router.address, MAX), sender)
    fn = uni.router.functions.addLiquidity(
        token.address, stable.address, base_amount, quote_amount, 0, 0, sender, DEADLINE
    )
    # the first addLiquidity deploys the pair (about 2.5M gas), above send()'s default gas limit
    h = fn.transact({"from": sender, "gas": 5_000_000})
    if w3.eth.wait_for_transaction_receipt(h, timeout=30, poll_latency=0.002)["status"] != 1:
        raise RuntimeError("addLiquidity reverted")
    pair = uni.pair(token.address, stable.address)
    assert pair is not None
    return pair


if __name__ == "__main__":  # python -m connectors.evm.univ2: refresh univ2_abi.json from the artifacts
    RUNTIME_ABI_FILE.write_text(runtime_abi_document())
    print(f"wrote {RUNTIME_ABI_FILE}")
