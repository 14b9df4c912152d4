"""On-chain venue and data source on EVM chains (web3), with the contracts and tools to test them.

``venue`` and ``data`` are the plugins (registered as ``evm``); ``chain`` holds what both need
(connection, nonce manager, revert decoding); ``build``, ``node`` and ``deploy`` compile the
Solidity sources under ``contracts/`` with solc-js, run a local anvil node and deploy an RWA world
on it (tests and ``rwabot devnet``). See docs/onchain.md.
"""
