"""Deploy the harder RWA products next to a deployed ``World`` (tests and ``rwabot devnet``).

Kept apart from ``deploy.py`` so the basic world stays small: an ERC-7540 fund whose manager
fulfils requests, a cooldown-redemption fund, and (``trex.py``) the T-REX permissioned token suite.
Plain web3 against anvil's unlocked development accounts, like ``deploy.py``.
"""

from __future__ import annotations

from typing import Any

from web3.contract import Contract

from connectors.evm.build import compile_contracts
from connectors.evm.deploy import MAX, SHARE, USD, World, deploy, send


def deploy_async_vault(world: World, name: str, nav: float, seed_usd: float = 1_000_000.0) -> Contract:
    """An ERC-7540 fund over the world's stablecoin with ``seed_usd`` of the market's money in it at
    ``nav`` per share; owner (the fund manager), market and trader verified; owner approves it."""
    w3, arts = world.w3, compile_contracts()
    v = deploy(
        w3, arts["AsyncVault"], world.stable.address, f"{name} async fund", name, world.owner, sender=world.owner
    )
    for who in (world.owner, world.market, world.trader):
        send(w3, v.functions.setVerified(who, True), world.owner)
    send(w3, world.stable.functions.approve(v.address, MAX), world.owner)
    send(w3, world.stable.functions.approve(v.address, MAX), world.market)
    amount = int(seed_usd * USD)
    send(w3, v.functions.requestDeposit(amount, world.market, world.market), world.market)
    send(w3, v.functions.fulfillDeposit(world.market, amount), world.owner)
    send(w3, v.functions.deposit(amount, world.market, world.market), world.market)
    set_async_nav(world, v, nav)
    return v


def set_async_nav(world: World, vault: Contract, nav_per_share: float) -> None:
    supply = vault.functions.totalSupply().call()
    send(world.w3, vault.functions.setTotalAssets(int(nav_per_share * USD * supply / SHARE)), world.owner)


def deploy_cooldown_vault(
    world: World, name: str, nav: float, cooldown_s: int, seed_usd: float = 1_000_000.0
) -> Contract:
    """A fund with instant deposits and redemptions by cooldown (claimable ``cooldown_s`` later)."""
    w3, arts = world.w3, compile_contracts()
    v = deploy(
        w3, arts["CooldownVault"], world.stable.address, f"{name} cooldown fund", name, world.owner, cooldown_s,
        sender=world.owner,
    )  # fmt: skip
    send(w3, world.stable.functions.approve(v.address, MAX), world.owner)
    send(w3, world.stable.functions.approve(v.address, MAX), world.market)
    send(w3, v.functions.deposit(int(seed_usd * USD), world.market), world.market)
    supply = v.functions.totalSupply().call()
    send(w3, v.functions.setTotalAssets(int(nav * USD * supply / SHARE)), world.owner)
    return v


def buy_shares(world: World, vault: Contract, usd: float) -> Any:
    """The trader subscribes synchronously (cooldown fund) so it has shares to redeem."""
    send(world.w3, world.stable.functions.approve(vault.address, int(usd * USD)), world.trader)
    return send(world.w3, vault.functions.deposit(int(usd * USD), world.trader), world.trader)
