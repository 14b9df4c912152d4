"""Gas of each tokenized-RWA operation type on anvil (issue 9): ERC-7540 request/fulfil/claim, the
cooldown variant, T-REX transfers against a plain ERC-20, and the T-REX suite's deployment.

    .venv/bin/python bench/rwa_gas.py

Gas is deterministic for a given state (cold/warm storage matters: first-time writes cost more), so
one run is the measurement; the figures are receipts' ``gasUsed``.
"""

from __future__ import annotations

import platform

from connectors.evm.chain import connect
from connectors.evm.deploy import SHARE, USD, WorldSpec, deploy_world, send
from connectors.evm.node import AnvilNode
from connectors.evm.rwa_world import buy_shares, deploy_async_vault, deploy_cooldown_vault
from connectors.evm.trex import deploy_trex, trex_pool


def main() -> None:
    rows: list[tuple[str, int]] = []

    def g(label: str, receipt: object) -> None:
        rows.append((label, int(receipt["gasUsed"])))  # type: ignore[index]

    with AnvilNode() as node:
        w3 = connect(node.url, 10.0)
        world = deploy_world(w3, WorldSpec(pools=()))
        t, o = world.trader, world.owner
        fund = deploy_async_vault(world, "PCRED", 10.0)
        g("erc7540 approve (exact)", send(w3, world.stable.functions.approve(fund.address, 10_000 * USD), t))
        g("erc7540 requestDeposit (first)", send(w3, fund.functions.requestDeposit(5_000 * USD, t, t), t))
        g("erc7540 requestDeposit (again)", send(w3, fund.functions.requestDeposit(5_000 * USD, t, t), t))
        g("erc7540 fulfillDeposit (manager)", send(w3, fund.functions.fulfillDeposit(t, 10_000 * USD), o))
        g("erc7540 claim deposit(assets, receiver, controller)",
          send(w3, fund.functions.deposit(10_000 * USD, t, t), t))  # fmt: skip
        g("erc7540 requestRedeem", send(w3, fund.functions.requestRedeem(500 * SHARE, t, t), t))
        g("erc7540 fulfillRedeem (manager)", send(w3, fund.functions.fulfillRedeem(t, 500 * SHARE), o))
        shares = fund.functions.maxRedeem(t).call()
        g("erc7540 claim redeem(shares, receiver, controller)", send(w3, fund.functions.redeem(shares, t, t), t))
        g("erc4626 deposit, sync (FundVault, for scale)",
          send(w3, world.stable.functions.approve(world.vaults["USTB"].address, 1000 * USD), t)
          and send(w3, world.vaults["USTB"].functions.deposit(1000 * USD, t), t))  # fmt: skip
        cd = deploy_cooldown_vault(world, "sUSD", 1.1, 3600)
        buy_shares(world, cd, 1_100.0)
        g("cooldown cooldownShares (request)", send(w3, cd.functions.cooldownShares(500 * SHARE), t))
        w3.provider.make_request("evm_increaseTime", [3600])  # type: ignore[arg-type]
        g("cooldown unstake (claim)", send(w3, cd.functions.unstake(t), t))

        before = w3.eth.block_number
        suite = deploy_trex(w3, o)
        deploy_gas = sum(
            int(w3.eth.get_transaction_receipt(tx)["gasUsed"])
            for n in range(before + 1, w3.eth.block_number + 1)
            for tx in w3.eth.get_block(n)["transactions"]
        )
        rows.append(("t-rex suite deploy + init (6 contracts, issuer)", deploy_gas))
        before = w3.eth.block_number
        suite.verify(t)
        rows.append((
            "t-rex verify a holder (ONCHAINID identity + claim + register)",
            sum(
                int(w3.eth.get_transaction_receipt(tx)["gasUsed"])
                for n in range(before + 1, w3.eth.block_number + 1)
                for tx in w3.eth.get_block(n)["transactions"]
            ),
        ))  # fmt: skip
        suite.verify(world.market)
        send(w3, suite.token.functions.mint(t, 1000 * SHARE), o)
        g("t-rex transfer (verified, compliance, no modules)",
          send(w3, suite.token.functions.transfer(world.market, 10 * SHARE), t))  # fmt: skip
        g(
            "plain ERC-20 transfer (Stablecoin, for scale)",
            send(w3, world.stable.functions.transfer(world.market, 10 * USD), t),
        )
        pool = trex_pool(world, suite, 100.0, 1_000_000.0)
        send(w3, suite.token.functions.approve(pool.address, 10 * SHARE), t)
        g(
            "pool swap selling the t-rex token",
            send(w3, pool.functions.swap(suite.token.address, 10 * SHARE, 0, t, 2**40), t),
        )

    width = max(len(r[0]) for r in rows)
    print(f"gas per operation on anvil (machine: {platform.machine()}, {platform.python_version()})")
    for label, gas in rows:
        print(f"  {label:<{width}}  {gas:>10,}")


if __name__ == "__main__":
    main()
