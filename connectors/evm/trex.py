"""Deploy the real ERC-3643 T-REX suite (npm ``@tokenysolutions/t-rex``) with ONCHAINID identities
(npm ``@onchain-id/solidity``) from their published compiled artifacts, with plain web3.

The suite: ClaimTopicsRegistry (the KYC topic), TrustedIssuersRegistry (one ClaimIssuer), an
IdentityRegistryStorage bound to an IdentityRegistry, a ModularCompliance without modules, and the
Token, each an implementation contract initialised directly (``init``; the factory's proxies are
left out: they add upgradeability, not behaviour). ``init`` leaves the token paused, as on mainnet;
``deploy_trex`` unpauses it after minting unless told not to. An investor (or a pool) is verified
when its address is registered with an ONCHAINID Identity holding a KYC claim signed by a key of
the trusted ClaimIssuer (the claim is ``keccak256(abi.encode(identity, topic, data))`` signed as an
Ethereum message). Used by tests and the devnet; never by the venue.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3
from web3.contract import Contract

from connectors.evm.build import NODE_MODULES, Artifact, require_node_modules
from connectors.evm.deploy import MAX, World, deploy, dev_key, send

TREX = NODE_MODULES / "@tokenysolutions" / "t-rex" / "artifacts" / "contracts"
OID = NODE_MODULES / "@onchain-id" / "solidity" / "artifacts" / "contracts"
KYC_TOPIC = 7
COUNTRY = 250

ARTIFACTS = {
    "ClaimTopicsRegistry": TREX / "registry/implementation/ClaimTopicsRegistry.sol/ClaimTopicsRegistry.json",
    "TrustedIssuersRegistry": TREX / "registry/implementation/TrustedIssuersRegistry.sol/TrustedIssuersRegistry.json",
    "IdentityRegistryStorage": TREX
    / "registry/implementation/IdentityRegistryStorage.sol/IdentityRegistryStorage.json",
    "IdentityRegistry": TREX / "registry/implementation/IdentityRegistry.sol/IdentityRegistry.json",
    "ModularCompliance": TREX / "compliance/modular/ModularCompliance.sol/ModularCompliance.json",
    "Token": TREX / "token/Token.sol/Token.json",
    "Identity": OID / "Identity.sol/Identity.json",
    "ClaimIssuer": OID / "ClaimIssuer.sol/ClaimIssuer.json",
}


@functools.cache
def trex_artifacts() -> dict[str, Artifact]:
    """The published (hardhat) artifacts: ABI and creation bytecode, no linking needed."""
    require_node_modules()
    out = {}
    for name, path in ARTIFACTS.items():
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run `npm ci --prefix connectors/evm`")
        raw = json.loads(path.read_text())
        out[name] = Artifact(name, raw["abi"], raw["bytecode"])
    return out


@dataclass
class TrexSuite:
    w3: Web3
    agent: str  # owner of every contract and agent of the token and the registry
    token: Contract
    registry: Contract
    storage: Contract
    compliance: Contract
    issuer: Contract
    identities: dict[str, Contract] = field(default_factory=dict)

    def contract(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=address, abi=trex_artifacts()[name].abi)

    def verify(self, holder: str) -> Contract:
        """Give ``holder`` an ONCHAINID identity with a signed KYC claim and register it."""
        arts = trex_artifacts()
        ident = deploy(self.w3, arts["Identity"], self.agent, False, sender=self.agent)
        data = b"KYC passed"
        digest = Web3.keccak(abi_encode(["address", "uint256", "bytes"], [ident.address, KYC_TOPIC, data]))
        sig = Account.sign_message(encode_defunct(primitive=digest), dev_key(0)).signature
        send(self.w3, ident.functions.addClaim(KYC_TOPIC, 1, self.issuer.address, sig, data, ""), self.agent)
        send(self.w3, self.registry.functions.registerIdentity(holder, ident.address, COUNTRY), self.agent)
        self.identities[holder] = ident
        return ident

    def unverify(self, holder: str) -> None:
        send(self.w3, self.registry.functions.deleteIdentity(holder), self.agent)


def deploy_trex(
    w3: Web3, agent: str, name: str = "T-REX fund", symbol: str = "TRX", *, unpause: bool = True
) -> TrexSuite:
    """The whole suite, owned and operated by ``agent`` (anvil account 0, whose key signs claims)."""
    arts = trex_artifacts()
    if Account.from_key(dev_key(0)).address != Web3.to_checksum_address(agent):
        raise ValueError("the agent must be anvil account 0: its key signs the KYC claims")
    ctr = deploy(w3, arts["ClaimTopicsRegistry"], sender=agent)
    tir = deploy(w3, arts["TrustedIssuersRegistry"], sender=agent)
    irs = deploy(w3, arts["IdentityRegistryStorage"], sender=agent)
    ir = deploy(w3, arts["IdentityRegistry"], sender=agent)
    mc = deploy(w3, arts["ModularCompliance"], sender=agent)
    token = deploy(w3, arts["Token"], sender=agent)
    for c in (ctr, tir, irs, mc):
        send(w3, c.functions.init(), agent)
    send(w3, ir.functions.init(tir.address, ctr.address, irs.address), agent)
    send(w3, irs.functions.bindIdentityRegistry(ir.address), agent)
    send(w3, ctr.functions.addClaimTopic(KYC_TOPIC), agent)
    issuer = deploy(w3, arts["ClaimIssuer"], agent, sender=agent)  # agent's key: management, so it may sign
    send(w3, tir.functions.addTrustedIssuer(issuer.address, [KYC_TOPIC]), agent)
    send(w3, ir.functions.addAgent(agent), agent)
    send(w3, token.functions.init(ir.address, mc.address, name, symbol, 18, "0x" + "00" * 20), agent)
    send(w3, token.functions.addAgent(agent), agent)
    suite = TrexSuite(w3, agent, token, ir, irs, mc, issuer)
    assert token.functions.paused().call(), "T-REX init leaves the token paused"
    if unpause:
        send(w3, token.functions.unpause(), agent)
    return suite


def trex_pool(world: World, suite: TrexSuite, price: float, depth_usd: float, *, verify_pool: bool = True) -> Contract:
    """A constant-product pool of the T-REX token against the world's stablecoin, seeded by the agent
    (the pool must be verified to receive the tokens; ``verify_pool=False`` removes it afterwards)."""
    from connectors.evm.build import compile_contracts
    from connectors.evm.deploy import SHARE, USD

    w3, owner = world.w3, world.owner
    pool = deploy(
        w3, compile_contracts()["ConstantProductPool"], suite.token.address, world.stable.address, 30, owner,
        sender=owner,
    )  # fmt: skip
    if owner not in suite.identities:
        suite.verify(owner)
    suite.verify(pool.address)
    base = int(depth_usd / price * SHARE)
    send(w3, suite.token.functions.mint(owner, base), owner)
    send(w3, suite.token.functions.approve(pool.address, MAX), owner)
    send(w3, world.stable.functions.approve(pool.address, MAX), owner)
    send(w3, pool.functions.addLiquidity(base, int(depth_usd * USD)), owner)
    if not verify_pool:
        suite.unverify(pool.address)
    return pool
