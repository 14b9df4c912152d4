"""The ``evm`` venue: tokenized funds (ERC-4626 vaults) and tokens on constant-product pools.

Trading. A buy of fund shares deposits the stablecoin (``previewMint`` of the shares wanted), a
sell redeems shares; a buy or sell of a pool token swaps against the stablecoin with a minimum
output of the quote less ``max_slippage_bps``. Approvals are for the exact amount of the trade.
Before anything is signed: the pluggable ``Eligibility`` checks of ``connectors.evm.eligibility``
run for every transfer of the traded token the leg implies, for the wallet and the counterparty
(pool, vault): per asset from the ``eligibility`` option, or for a ``permissioned`` asset by default
the token's allow-list (``isVerified``) and ``compliance().canTransfer``, plus ``paused()`` for a vault.
An ineligible trade is a ``NotEligible`` (an ``InvalidOrder``: "not eligible: <who>, <why>", a
``not_eligible`` risk event) instead of a paid revert; balances
are checked (``InsufficientFunds``); the base fee plus the priority fee is checked against the
gas policy's cap (over it: skipped, ``gas_cap`` risk event); the gas is estimated, which also
reveals a revert for free (decoded: ``Error(string)``, panics, every custom error of the ABIs).

Never lost, never doubled. Every transaction is signed locally, so its hash is known before it is
broadcast; the hash, the nonce and the signed bytes go to the ledger's ``chain_tx`` table *before*
the node sees anything. After a crash, ``fetch_order`` and ``reconcile`` look the hashes up:
mined ones give the fills (from the receipt's Deposit/Withdraw/Swap events), pending ones are
waited for, a signed transaction the node never saw is broadcast again byte for byte (same nonce,
same hash: it can execute once at most), and one whose nonce another transaction consumed is
dropped for good. Only an order with no main transaction in the ledger is ever sent anew. Gas is
costed in the quote currency (receipt gas × effective price × the native token's price) and goes
with the fill; a reverted transaction's gas is a fill of quantity 0. An unreachable node, a
revert, a transaction dropped or not mined in time raise ``VenueError``: the cycle fails this
venue (risk event) and goes on with the others.

Cash. The stablecoin balance plus, by default, the native balance valued in the quote currency
(``count_native_as_cash``): gas is paid from it, so every fill's ``qty·price + fee + gas`` is
exactly what the wallet lost. The native part is reported as ``Balances.reserved``: it counts in
NAV, but the cycle never plans buys with it.

Keys. From an encrypted keystore file whose password is in an environment variable, or a hex key
in an environment variable; the options hold only the *names*. The key is never logged, printed
or stored; only signed transactions are.

Funds, side by side (``kind = "vault"`` or ``"async"``). Each side of a fund is synchronous (an
ERC-4626 ``deposit``/``redeem`` at once) or asynchronous (an ERC-7540 request, claimed later) as the
vault declares through ERC-165 (async deposit ``0xce3bbe50``, async redeem ``0x620ee8e4``, operators
``0xe3bc4e65``; read once, a ``vault_sides`` info event says what was found), so one config covers
plain ERC-4626 funds, sync-in/async-out, async-in/sync-out and fully asynchronous ones; the cooldown
variant (``asynchronous = { kind = "cooldown", … }``) redeems by request. An order on an asynchronous
side becomes a request (``connectors.evm.async_requests``: request ids from the request's event, any
id; partial fulfilments claimed as they come, one fill each); it stays OPEN across cycles and restarts
(never cancelled by ``reconcile``) until claimed. ``balances`` polls the requests first (claims what
is claimable) and reports what is still in flight as ``Balances.pending`` (asset units at today's
NAV): the cycle counts it in NAV and holds the asset fixed until it settles. A side's quote is its
preview (fees included) when synchronous, the NAV per share (``convertToAssets``) when asynchronous
(its previews revert). A fee the fund keeps at fulfilment is measured on each claim against the NAV
of the fulfilments it takes (``AsyncRequests._fulfilment_fee``) and booked as ``product_fee``. Paper
mode simulates requests: fulfilled in ``paper_async_parts`` equal parts (default: whole) at equal
steps until ``paper_async_settlement_hours``, each a fill at the NAV of its moment less the asset's
``paper_fulfilment_fee_bps``.

Fund fees (``connectors.evm.fees``). A fund's entry or exit fee hides in the share price; each
ERC-4626 fill measures it as assets paid − ``convertToAssets(shares)`` (redeem: the mirror) at the
trade's block (paper: the simulated state), books it in ``fee`` at a price of the NAV per share, and
marks it as ``product_fee`` (so is an issuer manager's fee): a cost kind of its own in the ledger.

Decimals and ABIs. The quote token's and every asset's decimals are read from the chain at first
use (``quote_decimals``/``decimals`` given are checked: a mismatch stops trading with an error).
Reverts are decoded with the project's ABIs, every OpenZeppelin 5 error, and the ABIs (``abi``,
``quote_abi``: JSON files) and error signatures (``errors``) of the config.

Funding (``bot.components.FundingVenue``). The wallet receives the quote token at its own address
(``deposit_address``; ``quote_asset`` is the code routes use for the token, its ``symbol()`` by
default, and ``transfer_networks`` the network names this chain answers to). ``send_transfer`` is an
ERC-20 ``transfer`` of the quote token, signed, written to ``chain_tx`` (step ``transfer``, the
transfer's client id) before broadcast and followed like an order's transaction: the same nonce
manager, fee-bump replacements, the same signed bytes looked up or broadcast again after a crash, so
one client id is one transfer at most. A wallet short of the amount or of the gas for it is refused
before anything is signed (``TransferRefused``); a mined revert is FAILED with its decoded reason.
The source's view is ARRIVED once the transfer is mined and confirmed (an ERC-20 transfer is
credited to an address when mined; an exchange confirms through its own ``deposit_status``).
``deposit_status`` of an incoming transfer looks its ``txid`` up on chain: confirmed, successful and
with a ``Transfer`` of the quote token to this wallet, ARRIVED; known but not mined, PENDING.

Paper (``paper = true``). Nothing is signed or sent: the trade's own call is run with ``eth_call``
against the live contracts from the configured ``account`` with its token balance and allowance
overridden (ERC-20 storage slots, OpenZeppelin layout by default), which gives the exact output;
the gas is estimated the same way and costed at the current base fee. Cash and positions live in
a journal under the state directory. Transfers go over the paper network shared by every paper
account of the bot (``connectors.paper_network``, deposit address ``paper:<venue>``): one leaves at
once with ``paper_transfer_fee`` and ``paper_transfer_gas`` and arrives ``paper_transfer_minutes``
later on the bot's clock; the account's cash is its journal's plus what the network moved.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_utils import keccak
from pydantic import Field, model_validator
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound

from bot.components import ComponentConfig, ComponentContext
from bot.domain import (
    Balances,
    DepositAddress,
    Fill,
    MarketInfo,
    Order,
    OrderState,
    OrderStatus,
    Quote,
    RiskEvent,
    Severity,
    Transfer,
    TransferState,
    TransferStatus,
)
from bot.errors import ConfigError, InsufficientFunds, InvalidOrder, TransferRefused, VenueError
from bot.ledger import ChainTxRow, Ledger
from connectors.evm.async_requests import AsyncAssetConfig, AsyncRequests, AsyncSides, VenueSender, _sig_abi
from connectors.evm.chain import (
    ERROR_SIGNATURE,
    BlockIndex,
    RevertDecoder,
    Unreachable,
    abis,
    connect,
    error_abi,
    known_abis,
    load_abi,
    rpc,
)
from connectors.evm.data import traded_units
from connectors.evm.eligibility import Eligibility, TokenEligibility, trade_transfers
from connectors.evm.fees import SCALE, ProductFill, fill_dict, fill_from_dict, product_fee
from connectors.evm.nonces import LIVE, NonceManager, NoncePlan, NoncePolicy, replacement
from connectors.evm.price_rules import FeedRead, FeedRule, evaluate, read_feed
from connectors.evm.routes import (
    GAS_ESTIMATE,
    ManagerSpec,
    RouteCost,
    RouteSpec,
    UniV2Spec,
    cheapest,
    delay_cost,
    gross_for_net,
    transfer_sums,
)
from connectors.evm.univ2 import runtime_abis
from connectors.paper_network import PaperNetwork

log = logging.getLogger("rwabot.evm")

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
MAIN_STEPS = ("deposit", "redeem", "swap", "subscribe")
TRANSFER_STEP = "transfer"  # the chain_tx step of an outgoing ERC-20 transfer (bot.domain.Transfer)
TRANSFER_GAS = 65_000  # an ERC-20 transfer to a fresh holder; only for the message when no estimate can run
CASH = "__cash__"
ZERO = "0x0000000000000000000000000000000000000000"
PREMIUM_STEP_BPS = 10.0
UNIV2_ORACLE_GAS = 50_000  # two price-accumulator stores of a V2 pair (zero to non-zero: 2 × 22,100)
UNDERPRICED = ("less than block base fee", "underpriced", "fee too low", "feecap too low")


class Underpriced(VenueError):
    """The node refuses a signed transaction for its fee caps alone: it needs a replacement."""


class EvmAssetConfig(ComponentConfig):
    """One asset on the chain: fund shares (``vault``), a token traded on a pool (``pool``), a fund
    token of an issuer's manager (``manager``), a token on a Uniswap V2 pair (``univ2``), or the
    shares of an asynchronous fund (``async``).

    ``vault`` and ``async`` are the same kind of fund, side by side: each side is synchronous
    (ERC-4626 ``deposit``/``redeem`` at once) or asynchronous (ERC-7540 request, claimed later) as the
    vault declares through ERC-165 (async deposit ``0xce3bbe50``, async redeem ``0x620ee8e4``), so one
    config covers sync-in/async-out, async-in/sync-out, fully async and plain ERC-4626 funds; ``async``
    with ``asynchronous = { kind = "cooldown", … }`` is the request-then-claim-after-a-timestamp variant
    (redemptions only). ``decimals`` is read from the token when not given (and checked when given);
    ``abi`` (a JSON file: the ABI or an artifact holding it) and ``errors`` (signatures) add the
    contract's own custom errors to those the venue decodes reverts with."""

    kind: Literal["vault", "pool", "async", "manager", "univ2"]
    address: str = Field(pattern=ADDRESS, description="the vault (its shares are the asset) or the token")
    pool: str | None = Field(default=None, pattern=ADDRESS, description="kind pool: the pool contract")
    manager: ManagerSpec | None = Field(default=None, description="kind manager: the issuer's mint/redeem manager")
    univ2: UniV2Spec | None = Field(default=None, description="kind univ2: the Uniswap V2 pair and router")
    settlement_hours: float = Field(default=0.0, ge=0, le=24 * 60, description="route choice: delay priced in")
    routes: list[RouteSpec] = Field(
        default_factory=list, description="other ways to trade the same token: the cheapest for the size is taken"
    )
    decimals: int | None = Field(default=None, ge=0, le=36, description="None: read from the token's decimals()")
    abi: str | None = Field(default=None, min_length=1, description="JSON file of the contract's ABI (its errors)")
    errors: list[str] = Field(default_factory=list, description="custom error signatures, e.g. 'NotAllowed(address)'")
    permissioned: bool = Field(default=False, description="check ERC-3643 eligibility before trading")
    qty_step: float = Field(default=1e-6, gt=0)
    min_notional: float = Field(default=1.0, ge=0)
    balance_slot: int = Field(default=0, ge=0, description="paper: storage slot of the ERC-20 balances")
    allowance_slot: int = Field(default=1, ge=0, description="paper: storage slot of the ERC-20 allowances")
    paper_fulfilment_fee_bps: float = Field(
        default=0.0, ge=0, le=10_000,
        description="paper: the fee an ERC-7540 fund keeps when its manager fulfils a request (its terms), "
        "bps of the net amount (bps/(10^4+bps) of the gross); live claims measure the real one",
    )  # fmt: skip
    price_rule: FeedRule | None = Field(
        default=None, description="NAV oracle checks before planning: a violation holds the asset this cycle"
    )
    asynchronous: dict[str, Any] = Field(
        default_factory=dict,
        description="kind async: options of AsyncAssetConfig other than vault/decimals (e.g. kind = 'cooldown')",
    )

    @model_validator(mode="after")
    def _pool(self) -> EvmAssetConfig:
        if (self.kind == "pool") != (self.pool is not None):
            raise ValueError(f"pool is required for kind 'pool' and not allowed for kind '{self.kind}'")
        for k in ("manager", "univ2"):
            if (self.kind == k) != (getattr(self, k) is not None):
                raise ValueError(f"{k} is required for kind '{k}' and not allowed for kind '{self.kind}'")
        if self.routes and self.kind == "async":
            raise ValueError("routes: an async fund is traded by request only")
        for i, r in enumerate(self.routes):
            if (r.kind == "pool") != (r.pool is not None) or (r.kind == "manager") != (r.manager is not None) or (
                r.kind == "univ2") != (r.univ2 is not None):  # fmt: skip
                raise ValueError(f"routes[{i}]: kind '{r.kind}' needs exactly its own section ({r.kind})")
        if self.asynchronous and self.kind != "async":
            raise ValueError("asynchronous is only for kind 'async'")
        if self.kind == "async":
            self.async_config()  # unknown or bad keys fail at load time
        _check_errors(self.errors)
        return self

    def async_config(self) -> AsyncAssetConfig:
        if "vault" in self.asynchronous or "decimals" in self.asynchronous:
            raise ValueError("asynchronous: vault and decimals come from the asset's address and decimals")
        dec = {} if self.decimals is None else {"decimals": self.decimals}
        return AsyncAssetConfig.model_validate({"vault": self.address, **dec, **self.asynchronous})


def _check_errors(signatures: list[str]) -> None:
    bad = [e for e in signatures if not re.match(ERROR_SIGNATURE, e.strip())]
    if bad:
        raise ValueError(f"errors: {bad} are not error signatures like 'FeeTooHigh(uint256 bps, uint256 max)'")


class GasPolicy(ComponentConfig):
    max_fee_gwei: float = Field(default=100.0, gt=0, description="cap: skip the trade when base + priority exceeds it")
    priority_fee_gwei: float = Field(default=1.0, ge=0)
    gas_limit_multiplier: float = Field(default=1.25, ge=1.0, le=5.0, description="over the node's estimate")
    max_cost_bps: float | None = Field(default=None, gt=0, description="skip when gas would cost more of notional")


class EvmVenueConfig(ComponentConfig):
    """Options of the ``evm`` venue. Keys are *names* of environment variables or a keystore path."""

    rpc_url: str = Field(min_length=1)
    chain_id: int = Field(ge=1)
    quote_token: str = Field(pattern=ADDRESS, description="the stablecoin cash is held in")
    quote_decimals: int | None = Field(default=None, ge=0, le=36, description="None: the quote token's decimals()")
    quote_abi: str | None = Field(default=None, min_length=1, description="JSON file of the quote token's ABI")
    errors: list[str] = Field(default_factory=list, description="more custom error signatures to decode reverts")
    assets: dict[str, EvmAssetConfig] = Field(min_length=1)
    confirmations: int = Field(default=1, ge=1, le=100)
    gas: GasPolicy = Field(default_factory=GasPolicy)
    nonces: NoncePolicy = Field(default_factory=NoncePolicy)
    native_price: float | None = Field(default=None, gt=0, description="quote per native token, fixed")
    native_price_feed: str | None = Field(default=None, pattern=ADDRESS, description="AggregatorV3 native/quote")
    count_native_as_cash: bool = True
    max_slippage_bps: float = Field(default=50.0, ge=0, le=5000)
    carry_bps_per_day: float = Field(default=1.4, ge=0, le=100, description="route choice: cost of a settlement delay")
    deadline_s: int = Field(default=600, ge=10, le=86_400)
    receipt_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    poll_interval_s: float = Field(default=0.5, ge=0, le=60)
    rpc_timeout_s: float = Field(default=10.0, gt=0, le=300)
    key_env: str | None = Field(default="RWABOT_EVM_KEY", min_length=1)
    keystore: str | None = Field(default=None, min_length=1, description="encrypted JSON keystore file")
    keystore_password_env: str | None = Field(default=None, min_length=1)
    paper: bool = False
    account: str | None = Field(default=None, pattern=ADDRESS, description="paper: the address simulated")
    paper_cash: float = Field(default=1_000_000.0, ge=0)
    paper_async_settlement_hours: float = Field(
        default=24.0, ge=0, le=24 * 60, description="paper: a request is fulfilled this long after it was made"
    )
    paper_async_parts: int = Field(
        default=1, ge=1, le=100,
        description="paper: a request is fulfilled in this many equal parts, at equal steps until it settles",
    )  # fmt: skip
    paper_transfer_minutes: float = Field(
        default=30.0, ge=0, le=7 * 24 * 60, description="paper: a transfer arrives this long after it is sent"
    )
    paper_transfer_fee: float = Field(default=0.0, ge=0, description="paper: flat fee per transfer sent, quote")
    paper_transfer_gas: float = Field(
        default=0.5, ge=0, description="paper: gas of a transfer sent, quote (an ERC-20 transfer, ~50k gas)"
    )
    quote_asset: str | None = Field(
        default=None, min_length=1, description="the code routes give the quote token (default: its symbol())"
    )
    transfer_networks: list[str] = Field(
        default_factory=list, description="network names of this chain on the routes (ETH, ERC20); empty: any"
    )
    quote_balance_slot: int = Field(default=0, ge=0)
    quote_allowance_slot: int = Field(default=1, ge=0)
    eligibility: dict[str, TokenEligibility] = Field(
        default_factory=dict,
        description="per asset: the eligibility checks (default for permissioned assets: allowlist + compliance)",
    )

    @model_validator(mode="after")
    def _checks(self) -> EvmVenueConfig:
        stray = sorted(set(self.eligibility) - set(self.assets))
        if stray:
            raise ValueError(f"eligibility names assets that are not configured: {stray}")
        if self.paper and any(a.kind == "async" and a.async_config().kind != "erc7540" for a in self.assets.values()):
            raise ValueError("paper mode simulates ERC-7540 requests only, not the cooldown variant")
        if (self.native_price is None) == (self.native_price_feed is None):
            raise ValueError("give exactly one of native_price and native_price_feed (to cost gas in the quote)")
        if self.paper and self.account is None:
            raise ValueError("paper mode needs account: the address whose trades are simulated")
        if self.keystore is not None and self.keystore_password_env is None:
            raise ValueError("keystore needs keystore_password_env: the variable holding its password")
        _check_errors(self.errors)
        return self


def load_signer(cfg: EvmVenueConfig, where: str) -> Any:
    """The signing account from the keystore or the key variable; errors name the source, never a secret."""
    if cfg.keystore is not None:
        pw_env = cfg.keystore_password_env or ""
        password = os.environ.get(pw_env)
        if password is None:
            raise ConfigError(f"{where}.keystore_password_env: environment variable {pw_env} is not set")
        try:
            blob = json.loads(Path(cfg.keystore).expanduser().read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}.keystore: cannot read keystore {cfg.keystore}: {type(exc).__name__}") from None
        try:
            key = Account.decrypt(blob, password)
        except Exception:
            raise ConfigError(f"{where}.keystore: cannot decrypt {cfg.keystore} (wrong password?)") from None
    else:
        if cfg.key_env is None:
            raise ConfigError(f"{where}: live trading needs key_env or keystore")
        key = os.environ.get(cfg.key_env)
        if not key:
            raise ConfigError(f"{where}.key_env: environment variable {cfg.key_env} is not set")
    try:
        return Account.from_key(key)
    except Exception:
        raise ConfigError(f"{where}: the key is not a valid secp256k1 private key") from None


@dataclass(frozen=True)
class Prepared:
    """An order turned into chain amounts, before anything is signed."""

    asset: str
    a: EvmAssetConfig
    side: str
    qty_raw: int
    step: str
    call: Any  # the bound contract function of the main transaction
    approve_token: Any | None
    spender: str | None
    amount_in: int
    expected_out: int
    min_out: int
    route: int = 0  # index into the asset's routes (0: the asset's own kind)


@dataclass(frozen=True)
class Route:
    """One way to trade an asset: the asset's own kind (index 0) or one of its ``routes``."""

    index: int
    kind: str  # vault, pool, manager, univ2
    to: str  # the contract the trade transaction calls
    settlement_hours: float = 0.0
    pool: Any = None  # kind pool: the constant-product pool
    manager: Any = None  # kind manager: a contract built from the configured signatures
    mspec: ManagerSpec | None = None
    router: Any = None  # kind univ2
    pair: Any = None
    uspec: UniV2Spec | None = None


class PaperJournal:
    """Paper mode's account: cash, positions and simulated orders, durable under the state dir.

    With a ``network``, the cash is the journal's plus what the paper network has moved into and out
    of the account ``name`` by ``now()``: every read of the cash (balances, each buy's affordability)
    goes through ``balances`` and so sees a transfer the moment it leaves or arrives.
    """

    def __init__(
        self,
        path: Path,
        cash: float,
        network: PaperNetwork | None = None,
        name: str = "",
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.network = network
        self.name = name
        self.now = now
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS balance (asset TEXT PRIMARY KEY, qty REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS paper_order (client_id TEXT PRIMARY KEY, state TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS paper_request (client_id TEXT PRIMARY KEY, asset TEXT NOT NULL,
                side TEXT NOT NULL, qty REAL NOT NULL, usd REAL NOT NULL, nav REAL NOT NULL, gas REAL NOT NULL,
                settle_at TEXT NOT NULL, decision_price REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS paper_transfer_gas (client_id TEXT PRIMARY KEY, gas REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS paper_request_part (client_id TEXT NOT NULL, part INTEGER NOT NULL,
                fill TEXT NOT NULL, PRIMARY KEY (client_id, part));
            """
        )
        if "parts" not in {r[1] for r in self.db.execute("PRAGMA table_info(paper_request)")}:  # an older journal
            self.db.execute("ALTER TABLE paper_request ADD COLUMN parts INTEGER NOT NULL DEFAULT 1")
        self.db.execute("INSERT OR IGNORE INTO balance VALUES (?, ?)", (CASH, cash))

    def balances(self) -> Balances:
        with self.lock:
            rows = self.db.execute("SELECT asset, qty FROM balance").fetchall()
        cash = next((q for a, q in rows if a == CASH), 0.0)
        if self.network is not None and self.now is not None:
            cash += self.network.net_cash(self.name, self.now())
        return Balances(cash, {a: q for a, q in rows if a != CASH and q != 0.0})

    def transfer_gas(self, client_id: str) -> float | None:
        """The gas booked for paper transfer ``client_id``, None if none was."""
        with self.lock:
            row = self.db.execute("SELECT gas FROM paper_transfer_gas WHERE client_id=?", (client_id,)).fetchone()
        return None if row is None else float(row[0])

    def book_transfer_gas(self, client_id: str, gas: float) -> float:
        """Take a paper transfer's gas from the cash, once per client id (a second call books nothing and
        returns what the first booked): the network row and this one live in two files, so the gas is
        booked after the network accepted the transfer and again, idempotently, whenever it is seen."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                cur = self.db.execute("INSERT OR IGNORE INTO paper_transfer_gas VALUES (?, ?)", (client_id, gas))
                if cur.rowcount == 1:
                    self.db.execute("UPDATE balance SET qty = qty - ? WHERE asset=?", (gas, CASH))
                booked = self.db.execute(
                    "SELECT gas FROM paper_transfer_gas WHERE client_id=?", (client_id,)
                ).fetchone()[0]
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        return float(booked)

    def get(self, client_id: str) -> OrderState | None:
        with self.lock:
            row = self.db.execute("SELECT state FROM paper_order WHERE client_id=?", (client_id,)).fetchone()
        if row is None:
            return None
        d = json.loads(row[0])
        fills = tuple(fill_from_dict(f) for f in d["fills"])
        return OrderState(d["client_id"], OrderStatus(d["status"]), d["filled_qty"], fills, d["venue_order_id"],
                          d["message"])  # fmt: skip

    def book(
        self, state: OrderState, asset: str, cash_delta: float, qty_delta: float, *, settles: bool = False
    ) -> None:
        """The final state of an order and what it moved, in one commit (``settles``: it closes a
        simulated async request, which goes in the same commit)."""
        d = {
            "client_id": state.client_id, "status": state.status.value, "filled_qty": state.filled_qty,
            "venue_order_id": state.venue_order_id, "message": state.message,
            "fills": [fill_dict(f) for f in state.fills],
        }  # fmt: skip
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("INSERT INTO paper_order VALUES (?, ?)", (state.client_id, json.dumps(d)))
                if settles:
                    self.db.execute("DELETE FROM paper_request WHERE client_id=?", (state.client_id,))
                    self.db.execute("DELETE FROM paper_request_part WHERE client_id=?", (state.client_id,))
                self._move(cash_delta, asset, qty_delta)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def request(self, client_id: str, asset: str, side: str, qty: float, usd: float, nav: float, gas: float,
                settle_at: datetime, decision_price: float, parts: int = 1) -> None:  # fmt: skip
        """A simulated async request: what it takes leaves the account now (escrow), in one commit;
        it is fulfilled in ``parts`` equal parts."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("INSERT INTO paper_request VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (client_id, asset, side, qty, usd, nav, gas, settle_at.isoformat(), decision_price,
                                 parts))  # fmt: skip
                if side == "buy":
                    self.db.execute("UPDATE balance SET qty = qty - ? WHERE asset=?", (usd + gas, CASH))
                else:
                    self.db.execute("UPDATE balance SET qty = qty - ? WHERE asset=?", (gas, CASH))
                    self.db.execute("UPDATE balance SET qty = qty - ? WHERE asset=?", (qty, asset))
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def requests(self) -> list[tuple[Any, ...]]:
        """(client_id, asset, side, qty, usd, nav, gas, settle_at, decision_price, parts) of the open ones."""
        with self.lock:
            return self.db.execute(
                "SELECT client_id, asset, side, qty, usd, nav, gas, settle_at, decision_price, parts FROM paper_request"
            ).fetchall()

    def parts(self, client_id: str) -> list[Fill]:
        """The fills of the parts of an open request fulfilled so far, in order."""
        with self.lock:
            rows = self.db.execute(
                "SELECT fill FROM paper_request_part WHERE client_id=? ORDER BY part", (client_id,)
            ).fetchall()
        return [fill_from_dict(json.loads(r[0])) for r in rows]

    def book_part(self, client_id: str, part: int, fill: Fill, asset: str, cash_delta: float, qty_delta: float) -> None:
        """One part of a request fulfilled (not its last) and what it moved, in one commit; once per part."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                cur = self.db.execute("INSERT OR IGNORE INTO paper_request_part VALUES (?, ?, ?)",
                                      (client_id, part, json.dumps(fill_dict(fill))))  # fmt: skip
                if cur.rowcount == 1:
                    self._move(cash_delta, asset, qty_delta)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _move(self, cash_delta: float, asset: str, qty_delta: float) -> None:
        """Cash and one asset's units moved by a paper fill, inside the caller's transaction."""
        self.db.execute("UPDATE balance SET qty = qty + ? WHERE asset=?", (cash_delta, CASH))
        self.db.execute(
            "INSERT INTO balance VALUES (?, ?) ON CONFLICT(asset) DO UPDATE SET qty = qty + excluded.qty",
            (asset, qty_delta),
        )

    def close(self) -> None:
        self.db.close()
        if self.network is not None:
            self.network.close()


class EvmVenue:
    """A wallet on an EVM chain trading tokenized funds and pool tokens against a stablecoin."""

    def __init__(self, name: str, cfg: EvmVenueConfig, ctx: ComponentContext) -> None:
        self.name = name
        self.cfg = cfg
        self.clock = ctx.clock
        self.emit = ctx.emit
        where = f"venues.{name}.options"
        unknown = [a for a in cfg.assets if a not in ctx.assets]
        if ctx.assets and unknown:
            log.info("venue %s: assets %s are configured but not traded", name, unknown)
        self.w3: Web3 = connect(cfg.rpc_url, cfg.rpc_timeout_s)
        self._signer: Any = None
        if cfg.paper:
            self.address = Web3.to_checksum_address(cfg.account or "")
            self.network: PaperNetwork | None = PaperNetwork(Path(ctx.state_dir))
            self.journal: PaperJournal | None = PaperJournal(
                Path(ctx.state_dir) / f"evm-paper-{name}.sqlite", cfg.paper_cash, self.network, name, ctx.clock.now
            )
        else:
            self._signer = load_signer(cfg, where)
            self.address = self._signer.address
            if cfg.account is not None and Web3.to_checksum_address(cfg.account) != self.address:
                raise ConfigError(f"{where}.account: {cfg.account} is not the address of the configured key")
            self.journal = None
            self.network = None
        led = ctx.extra.get("ledger")
        self._own_ledger = led is None
        self.ledger: Ledger = led if led is not None else Ledger(Path(ctx.state_dir) / f"evm-{name}.sqlite")
        a = abis()
        self.stable = self.w3.eth.contract(address=Web3.to_checksum_address(cfg.quote_token), abi=a["Stablecoin"])
        self.contracts: dict[str, Any] = {}
        self.pools: dict[str, Any] = {}
        self.routes: dict[str, list[Route]] = {}
        for asset, ac in cfg.assets.items():
            abi = {"vault": a["FundVault"], "pool": a["RwaToken"], "async": a["AsyncVault"], "manager": a["FundToken"],
                   "univ2": a["FeeOnTransferToken"]}[ac.kind]  # fmt: skip
            self.contracts[asset] = self.w3.eth.contract(address=Web3.to_checksum_address(ac.address), abi=abi)
            if ac.pool:
                self.pools[asset] = self.w3.eth.contract(
                    address=Web3.to_checksum_address(ac.pool), abi=a["ConstantProductPool"]
                )
            specs: list[Any] = [ac, *ac.routes]
            if ac.kind == "async":  # the synchronous side of a fund, if it has one, trades like a vault's
                specs = [ac.model_copy(update={"kind": "vault"})]
            self.routes[asset] = [self._route(i, sp) for i, sp in enumerate(specs)]
        self.feed = (
            self.w3.eth.contract(address=Web3.to_checksum_address(cfg.native_price_feed), abi=a["PriceFeed"])
            if cfg.native_price_feed
            else None
        )
        self.decoder = RevertDecoder(known_abis(configured_abis(cfg, where)))
        self.index = BlockIndex(self.w3)
        self.nonces = NonceManager(
            mined=lambda: self.w3.eth.get_transaction_count(self.address, "latest"),
            pending=lambda: self.w3.eth.get_transaction_count(self.address, "pending"),
            live=lambda: [r.nonce for r in self._live_rows()],
            repair=self._repair_nonces,
        )
        self._checked_chain = False
        self._fee_bps: dict[str, int] = {}
        self._lock = threading.RLock()
        self._feed_reads: dict[str, list[FeedRead]] = {}
        self.premiums: dict[str, float] = {}  # last premium/discount of market to NAV, bps, per asset
        self._premium_reported: dict[str, float] = {}
        self._quote_symbol: str | None = None
        self._quote_dec: int | None = None  # the quote token's decimals, read (and checked) at the first call
        self._dec: dict[str, int] = {}  # each asset's decimals, read (and checked) at first use
        self._sides_reported: set[str] = set()
        self._deposit_warned: set[str] = set()
        self.eligibility = Eligibility(self.w3, name, eligibility_tokens(cfg), emit=self.emit, now=self.clock.now)
        # every fund: each of its sides is synchronous or a request, as its ERC-165 answers say
        asyncs = {n: ac.async_config() for n, ac in cfg.assets.items() if ac.kind in ("async", "vault")}
        self.async_: AsyncRequests | None = None
        if asyncs:
            self.async_ = AsyncRequests(
                VenueSender(self), self.ledger, asyncs, quote_token=cfg.quote_token, emit=self.emit,
                now=self.clock.now, unit=self._unit, quote_unit=lambda: self._q, decoder=self.decoder,
                eligible=self.eligibility.for_async({n: c.vault for n, c in asyncs.items()}, self.address),
            )  # fmt: skip

    def __repr__(self) -> str:  # never the key
        return f"EvmVenue({self.name!r}, chain {self.cfg.chain_id}, {self.address}, paper={self.cfg.paper})"

    # -- helpers --------------------------------------------------------------------------------------

    def _route(self, index: int, spec: Any) -> Route:
        """The contracts of one route (``spec``: the asset's own config or a ``RouteSpec``)."""
        a = abis()
        c = self.w3.eth.contract
        if spec.kind == "vault":
            return Route(index, "vault", Web3.to_checksum_address(spec.address), spec.settlement_hours)
        if spec.kind == "pool":
            pool = c(address=Web3.to_checksum_address(spec.pool), abi=a["ConstantProductPool"])
            return Route(index, "pool", pool.address, spec.settlement_hours, pool=pool)
        if spec.kind == "manager":
            m: ManagerSpec = spec.manager
            views = [v for v in (m.preview_subscribe, m.preview_redeem, m.mint_fee_bps, m.redeem_fee_bps,
                                 m.minimum_subscription, m.minimum_redemption, m.remaining_subscription,
                                 m.remaining_redemption, m.liquidity) if isinstance(v, str)]  # fmt: skip
            abi = [_sig_abi(m.subscribe), _sig_abi(m.redeem), *(_sig_abi(v, ("uint256",)) for v in views)]
            contract = c(address=Web3.to_checksum_address(m.address), abi=abi)
            return Route(index, "manager", contract.address, spec.settlement_hours, manager=contract, mspec=m)
        u: UniV2Spec = spec.univ2
        uni = runtime_abis()
        router = c(address=Web3.to_checksum_address(u.router), abi=uni["UniswapV2Router02"])
        pair = c(address=Web3.to_checksum_address(u.pair), abi=uni["UniswapV2Pair"])
        return Route(index, "univ2", router.address, spec.settlement_hours, router=router, pair=pair, uspec=u)

    def _mfn(self, r: Route, signature: str) -> Any:
        return getattr(r.manager.functions, signature.split("(")[0])

    def _mval(self, r: Route, value: float | str, *, money: bool) -> int | float:
        """A manager's fee (bps) or minimum (raw stablecoin units), configured or read from its view."""
        if isinstance(value, str):
            return int(self._rpc(value, lambda: self._mfn(r, value)().call()))
        return int(value * self._q) if money else float(value)

    def _transfer_fee(self, r: Route, asset: str, amount: int) -> int:
        """Units a fee-on-transfer token keeps out of a transfer of ``amount``."""
        u = r.uspec
        if u is None or amount <= 0:
            return 0
        if u.transfer_fee_view is not None:
            view = self.w3.eth.contract(address=self.contracts[asset].address,
                                        abi=[_sig_abi(u.transfer_fee_view, ("uint256",))])  # fmt: skip
            fn = getattr(view.functions, u.transfer_fee_view.split("(")[0])
            return int(self._rpc("transfer fee", lambda: fn(amount).call()))
        return int(amount * u.transfer_fee_bps / 1e4)

    def _transfer_fee_bps(self, r: Route, asset: str) -> float:
        if r.uspec is None:
            return 0.0
        one = 10**18
        return self._transfer_fee(r, asset, one) / one * 1e4 if r.uspec.transfer_fee_view else r.uspec.transfer_fee_bps

    def _rpc(self, what: str, fn: Any) -> Any:
        if not self._checked_chain:
            self._check_chain()
        return rpc(self.name, what, fn)

    def _check_chain(self) -> None:
        """Once: the node is on the configured chain, and the quote token's decimals are known (read from
        it, or checked against ``quote_decimals``)."""
        cid = rpc(self.name, "eth_chainId", lambda: self.w3.eth.chain_id)
        if cid != self.cfg.chain_id:
            raise VenueError(self.name, f"node {self.cfg.rpc_url} is on chain {cid}, config says {self.cfg.chain_id}")
        try:
            dec = int(rpc(self.name, "quote decimals", lambda: self.stable.functions.decimals().call()))
        except (ContractLogicError, VenueError) as exc:
            if isinstance(exc, VenueError) and exc.retryable:
                raise
            why = self.decoder.from_exception(exc) if isinstance(exc, ContractLogicError) else str(exc)
            if self.cfg.quote_decimals is None:
                raise VenueError(self.name, f"quote token {self.stable.address}: decimals() cannot be read ({why}); "
                                 "set quote_decimals") from None  # fmt: skip
            dec = self.cfg.quote_decimals
        if self.cfg.quote_decimals is not None and dec != self.cfg.quote_decimals:
            raise VenueError(self.name, f"quote token {self.stable.address} has {dec} decimals, quote_decimals says "
                             f"{self.cfg.quote_decimals}: nothing is traded until they agree")  # fmt: skip
        self._quote_dec = dec
        self._checked_chain = True

    def _decimals(self, asset: str) -> int:
        """The asset token's decimals: read from its ``decimals()``; a configured value must agree."""
        if asset in self._dec:
            return self._dec[asset]
        a, c = self._asset(asset), self.contracts[asset]
        try:
            dec: int | None = int(self._rpc(f"{asset} decimals", lambda: c.functions.decimals().call()))
            why = ""
        except (ContractLogicError, VenueError) as exc:
            if isinstance(exc, VenueError) and exc.retryable:
                raise
            dec, why = None, self.decoder.from_exception(exc) if isinstance(exc, ContractLogicError) else str(exc)
        if dec is None and a.decimals is None:
            raise VenueError(self.name, f"asset {asset}: {c.address}.decimals() cannot be read ({why}); set decimals")
        if dec is not None and a.decimals is not None and dec != a.decimals:
            raise VenueError(self.name, f"asset {asset}: token {c.address} has {dec} decimals, its config says "
                             f"{a.decimals}: nothing is traded until they agree")  # fmt: skip
        self._dec[asset] = a.decimals if a.decimals is not None else int(dec)  # type: ignore[arg-type]
        return self._dec[asset]

    def _sides(self, asset: str) -> AsyncSides | None:
        """A fund's ERC-165 answers (None for a token); reported once as a ``vault_sides`` info event."""
        a = self._asset(asset)
        if a.kind not in ("vault", "async") or self.async_ is None:
            return None
        if a.kind == "async" and a.async_config().kind == "cooldown":
            return AsyncSides(False, False, False, True)
        sides = self._rpc(f"{asset} supportsInterface", lambda: self.async_.detect(asset))  # type: ignore[union-attr]
        if asset not in self._sides_reported and sides.erc165:  # a plain ERC-4626 fund says nothing
            self._sides_reported.add(asset)
            how = lambda b: "request (ERC-7540)" if b else "at once (ERC-4626)"  # noqa: E731
            self._event("vault_sides", f"{asset}: subscriptions {how(sides.deposit)}, redemptions "
                        f"{how(sides.redeem)}; operators {'supported' if sides.operator else 'not declared'}",
                        Severity.INFO, asset=asset, deposit_async=sides.deposit, redeem_async=sides.redeem,
                        operator=sides.operator, erc165=sides.erc165)  # fmt: skip
        return sides

    def _is_async(self, asset: str, side: str) -> bool:
        """Whether this side of ``asset`` is traded by request and claim."""
        sides = self._sides(asset)
        return bool(sides is not None and (sides.deposit if side == "buy" else sides.redeem))

    def _event(self, kind: str, message: str, sev: Severity = Severity.WARNING, **data: Any) -> None:
        self.emit(RiskEvent(kind, sev, f"venue:{self.name}", message, self.clock.now(), None, data))

    def _asset(self, asset: str) -> EvmAssetConfig:
        try:
            return self.cfg.assets[asset]
        except KeyError:
            raise InvalidOrder(self.name, f"asset {asset} is not configured on this venue") from None

    def _unit(self, asset: str) -> int:
        return 10 ** self._decimals(asset)

    @property
    def _q(self) -> int:
        if self._quote_dec is None:
            self._check_chain()
        assert self._quote_dec is not None
        return 10**self._quote_dec

    def native_price(self) -> float:
        if self.cfg.native_price is not None:
            return self.cfg.native_price
        assert self.feed is not None
        _, answer, _, _, _ = self._rpc("native price feed", lambda: self.feed.functions.latestRoundData().call())
        dec = self._rpc("feed decimals", lambda: self.feed.functions.decimals().call())
        if answer <= 0:
            raise VenueError(self.name, f"native price feed {self.feed.address} answers {answer}")
        return answer / 10**dec

    def fee_bps(self, asset: str) -> int:
        if asset not in self._fee_bps:
            self._fee_bps[asset] = int(self._rpc("pool fee", lambda: self.pools[asset].functions.feeBps().call()))
        return self._fee_bps[asset]

    def _route_fee_bps(self, asset: str, r: Route, side: str) -> float:
        """The fee of a route in bps of the notional (a transfer fee counted in)."""
        if r.kind == "pool":
            return float(self.fee_bps(asset))
        if r.kind == "manager":
            assert r.mspec is not None
            return float(self._mval(r, r.mspec.mint_fee_bps if side == "buy" else r.mspec.redeem_fee_bps,
                                    money=False))  # fmt: skip
        if r.kind == "univ2":
            assert r.uspec is not None
            return r.uspec.fee_bps + self._transfer_fee_bps(r, asset)
        return 0.0

    def _latest(self) -> Any:
        return self._rpc("latest block", lambda: self.w3.eth.get_block("latest"))

    # -- Venue protocol: rules, quotes, balances --------------------------------------------------------

    def market(self, asset: str) -> MarketInfo:
        a = self._asset(asset)
        fee = self.fee_bps(asset) / 1e4 if a.kind == "pool" else 0.0  # vault, async: NAV, no fee
        if a.kind in ("manager", "univ2"):
            fee = self._route_fee_bps(asset, self.routes[asset][0], "buy") / 1e4
        return MarketInfo(asset, a.qty_step, a.qty_step, a.min_notional, 1.0 / self._q, fee)

    def quote(self, asset: str) -> Quote:
        a = self._asset(asset)
        one = self._unit(asset)
        c = self.contracts[asset]
        try:
            if a.kind in ("vault", "async"):  # previews revert on an async side: requests settle at a later NAV
                sides = self._sides(asset)
                assert sides is not None
                nav = lambda: self._rpc("convertToAssets", lambda: c.functions.convertToAssets(one).call())  # noqa: E731
                bid = (
                    nav() if sides.redeem else self._rpc("previewRedeem", lambda: c.functions.previewRedeem(one).call())
                ) / self._q
                ask = (
                    nav() if sides.deposit else self._rpc("previewMint", lambda: c.functions.previewMint(one).call())
                ) / self._q
            elif a.kind in ("manager", "univ2"):
                bid, ask = self._route_quote(asset, self.routes[asset][0], one)
            else:
                p = self.pools[asset]
                bid = self._rpc("getAmountOut", lambda: p.functions.getAmountOut(one, c.address).call()) / self._q
                ask = self._rpc("getAmountIn", lambda: p.functions.getAmountIn(one, c.address).call()) / self._q
        except ContractLogicError as exc:
            raise VenueError(self.name, f"no quote for {asset}: {self.decoder.from_exception(exc)}") from None
        if not (0 < bid <= ask) or not math.isfinite(ask):
            raise VenueError(self.name, f"invalid quote for {asset}: bid {bid}, ask {ask}", retryable=True)
        block = self._latest()
        vol = self._hourly_volume(asset, block)
        return Quote(asset, bid, ask, datetime.fromtimestamp(block["timestamp"], UTC), vol)

    def _route_quote(self, asset: str, r: Route, one: int) -> tuple[float, float]:
        """(bid, ask) per unit, fees included: what one unit brings and what it costs."""
        if r.kind == "manager":
            spec = r.mspec
            assert spec is not None
            probe = 1000 * self._q
            per = self._rpc("previewSubscribe", lambda: self._mfn(r, spec.preview_subscribe)(probe).call())
            bid = self._rpc("previewRedeem", lambda: self._mfn(r, spec.preview_redeem)(one).call()) / self._q
            return bid, (probe / max(per, 1)) * one / self._q
        token, stable = self.contracts[asset].address, self.stable.address
        fns = r.router.functions
        gross = gross_for_net(one, self._transfer_fee_bps(r, asset))
        ask = self._rpc("getAmountsIn", lambda: fns.getAmountsIn(gross, [stable, token]).call())[0] / self._q
        reaching = one - self._transfer_fee(r, asset, one)
        bid = self._rpc("getAmountsOut", lambda: fns.getAmountsOut(reaching, [token, stable]).call())[1] / self._q
        return bid, ask

    def _hourly_volume(self, asset: str, block: Any) -> float:
        """Units traded in the last hour of blocks (the data source gives the hourly bars proper)."""
        a = self._asset(asset)
        if a.kind in ("manager", "univ2"):  # the token's transfers with the manager (mint/burn) or the pair
            r = self.routes[asset][0]
            return self._transfer_volume(asset, r.pair.address if r.kind == "univ2" else ZERO, block)
        return traded_units(
            self.w3, self.name, "vault" if a.kind == "async" else a.kind, self.contracts[asset],
            self.pools.get(asset), self._decimals(asset),
            int(block["timestamp"]) - 3600, int(block["timestamp"]), int(block["number"]), self.index,
        )  # fmt: skip

    def _transfer_volume(self, asset: str, other: str, block: Any) -> float:
        start = self.index.at(int(block["timestamp"]) - 3600, int(block["number"]))
        c = self.contracts[asset]
        logs = self._rpc("logs", lambda: c.events.Transfer.get_logs(from_block=(start or -1) + 1,
                                                                    to_block=int(block["number"])))  # fmt: skip
        moved = sum(int(x["args"]["value"]) for x in logs if other in (x["args"]["from"], x["args"]["to"]))
        return moved / self._unit(asset)

    def balances(self) -> Balances:
        if self.journal is not None:
            with self._lock:
                self._paper_requests()  # settle what is due first, as a real poll claims first
                bal = self.journal.balances()
                pending: dict[str, float] = {}
                for cid, asset, side, qty, usd, nav0, *_, parts in self.journal.requests():
                    left = max(parts - len(self.journal.parts(cid)), 0) / parts  # parts fulfilled are held
                    pending[asset] = pending.get(asset, 0.0) + (usd / nav0 if side == "buy" else qty) * left
                return Balances(bal.cash, bal.positions, bal.reserved, pending)
        pending: dict[str, float] = {}
        if self.async_ is not None:
            with self._lock:  # claims first, so a settled request lands in the wallet, not in pending
                try:
                    self._rpc("async poll", self.async_.poll)
                except VenueError as exc:
                    if exc.retryable:
                        raise
                    # a claim refused at its estimate: recorded by the poll, retried next cycle; the
                    # request is still in flight and counted below
                    self._event("async_poll_failed", str(exc), Severity.CRITICAL)
                pending = {a: e.units for a, e in self._rpc("async exposure", self.async_.exposure).items()}
        # as of the head before the reads (they see that block or a later one): a conservative age
        as_of = datetime.fromtimestamp(int(self._latest()["timestamp"]), UTC)
        cash = self._rpc("balanceOf", lambda: self.stable.functions.balanceOf(self.address).call()) / self._q
        reserved = 0.0
        if self.cfg.count_native_as_cash:
            wei = self._rpc("native balance", lambda: self.w3.eth.get_balance(self.address))
            reserved = wei / 1e18 * self.native_price()  # gas money: in NAV, but it cannot buy a token
            cash += reserved
        positions: dict[str, float] = {}
        for asset, c in self.contracts.items():
            raw = self._rpc(f"balanceOf {asset}", lambda c=c: c.functions.balanceOf(self.address).call())
            if raw:
                positions[asset] = raw / self._unit(asset)
        return Balances(cash, positions, reserved, pending, time=as_of)

    def price_holds(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Optional venue hook, before planning: the assets whose ``price_rule`` is violated (stale NAV
        oracle by the underlying's calendar, an oracle echoing the block time with an answer unchanged
        too long, market too far from NAV), each with a message and data (reasons, premium/discount).
        The cycle holds them fixed this cycle with a ``price_rule`` risk event. An unreadable oracle
        is a violation (fail closed); an unreachable node raises ``VenueError`` as usual."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for asset, a in self.cfg.assets.items():
            rule = a.price_rule
            if rule is None:
                continue
            feed = self.w3.eth.contract(address=Web3.to_checksum_address(rule.feed), abi=abis()["PriceFeed"])
            try:
                read = self._rpc("price rule feed", lambda feed=feed: read_feed(feed))
            except (ContractLogicError, VenueError) as exc:
                if isinstance(exc, VenueError) and exc.retryable:
                    raise
                why = self.decoder.from_exception(exc) if isinstance(exc, ContractLogicError) else str(exc)
                out[asset] = (f"{asset}: NAV oracle {rule.feed} cannot be read ({why})", {"asset": asset})
                continue
            reads = self._feed_reads.setdefault(asset, [])
            if not reads or reads[-1].block_time != read.block_time:
                reads.append(read)
                del reads[: max(0, len(reads) - rule.max_reads)]
            verdict = evaluate(rule, reads, nav=read.answer, market=self.quote(asset).mid)
            self._report_premium(asset, verdict.premium_bps, read.answer)
            if not verdict.ok:
                data = {"asset": asset, "reasons": list(verdict.reasons), "premium_bps": verdict.premium_bps,
                        "nav": read.answer, "feed": rule.feed}  # fmt: skip
                out[asset] = (f"{asset}: price rule: {'; '.join(verdict.reasons)}", data)
        return out

    def _report_premium(self, asset: str, premium_bps: float | None, nav: float) -> None:
        """The market's premium (+) or discount (−) to NAV, as a ``nav_premium`` info event when it is
        first seen and whenever it moves by ``PREMIUM_STEP_BPS`` or more (not every hour)."""
        if premium_bps is None or not math.isfinite(premium_bps):
            return
        self.premiums[asset] = premium_bps
        seen = self._premium_reported.get(asset)
        if seen is None or abs(premium_bps - seen) >= PREMIUM_STEP_BPS:
            self._premium_reported[asset] = premium_bps
            self._event("nav_premium", f"{asset}: market {premium_bps:+.1f} bps to NAV {nav:.6g}", Severity.INFO,
                        asset=asset, premium_bps=premium_bps, nav=nav)  # fmt: skip

    # -- preparing a trade --------------------------------------------------------------------------------

    def _eligible(self, order: Order, kind: Literal["pool", "vault", "manager"], counterparty: str,
                  amount: int) -> None:  # fmt: skip
        """The asset's eligibility checks for the transfers this leg implies (views only, nothing signed)."""
        transfers = trade_transfers(kind, order.side, self.address, counterparty, amount)
        self._rpc("eligibility", lambda: self.eligibility.check(order.asset, transfers))

    def _prepare(self, order: Order, *, deadline: int) -> Prepared:
        """The order on its cheapest route for its size (the only one, for most assets)."""
        self._asset(order.asset)
        if not (order.qty > 0 and math.isfinite(order.qty)):
            raise InvalidOrder(self.name, f"order {order.client_id}: quantity {order.qty} is not positive")
        if self._is_async(order.asset, order.side):
            raise InvalidOrder(self.name, f"order {order.client_id}: {order.asset} is traded by request, not at once")
        routes = self.routes[order.asset]
        if len(routes) == 1:
            return self._prepare_route(order, routes[0], deadline)
        preps: dict[int, Prepared] = {}
        costs: list[RouteCost] = []
        refused: list[str] = []
        for r in routes:
            try:
                prep = self._prepare_route(order, r, deadline)
            except (InvalidOrder, InsufficientFunds) as exc:
                refused.append(f"{r.kind}: {exc}")
                continue
            preps[r.index] = prep
            costs.append(self._route_cost(order, r, prep))
        if not costs:
            raise InvalidOrder(self.name, f"order {order.client_id}: no route takes it: " + "; ".join(refused))
        best = cheapest(costs, order.side)
        listed = ", ".join(f"{c.kind} {abs(c.score(order.side)):.6g}/unit" for c in costs)
        self._event("route_choice", f"{order.asset} {order.side} {order.qty:.6g}: {routes[best.route].kind} "
                    f"(all-in per unit: {listed}){'; refused: ' + '; '.join(refused) if refused else ''}",
                    Severity.INFO, client_id=order.client_id, route=routes[best.route].kind,
                    costs={c.kind: c.score(order.side) for c in costs})  # fmt: skip
        return preps[best.route]

    def _route_cost(self, order: Order, r: Route, prep: Prepared) -> RouteCost:
        """Fee and price impact (in the amounts), gas at today's fees, and the settlement delay."""
        unit = self._unit(order.asset)
        units = (prep.expected_out if prep.side == "buy" else prep.qty_raw) / unit
        quote = (prep.amount_in if prep.side == "buy" else prep.expected_out) / self._q
        base = int(self._latest().get("baseFeePerGas") or 0)
        gas_units = GAS_ESTIMATE[r.kind] + (GAS_ESTIMATE["approve"] if prep.approve_token is not None else 0)
        gas = gas_units * (base + int(self.cfg.gas.priority_fee_gwei * 1e9)) / 1e18 * self.native_price()
        return RouteCost(
            r.index, r.kind, units, quote, gas, delay_cost(quote, r.settlement_hours, self.cfg.carry_bps_per_day)
        )

    def _prepare_route(self, order: Order, r: Route, deadline: int) -> Prepared:
        a = self._asset(order.asset)
        qty_raw = int(round(order.qty * self._unit(order.asset)))
        c = self.contracts[order.asset]
        me = self.address
        if r.kind == "pool" and order.side == "buy":
            # x·y = k only gets dearer with size: the mid is a lower bound of the cost, checked before
            # asking the pool for an exact amount it may not even have
            rb, rq = self._rpc("getReserves", lambda: r.pool.functions.getReserves().call())
            floor_cost = qty_raw * rq // max(rb, 1)
            cash = self._cash_raw()
            if rb <= qty_raw or cash < floor_cost:
                raise InsufficientFunds(
                    self.name,
                    f"order {order.client_id}: buying {order.qty} {order.asset} costs more than "
                    f"{floor_cost / self._q:.2f} (pool base reserve {rb / self._unit(order.asset):.4f}); "
                    f"cash {cash / self._q:.2f}",
                )
        slip = self.cfg.max_slippage_bps / 1e4
        try:
            if r.kind == "vault":
                if order.side == "buy":
                    self._eligible(order, "vault", c.address, qty_raw)
                    amount_in = self._rpc("previewMint", lambda: c.functions.previewMint(qty_raw).call())
                    out = self._rpc("previewDeposit", lambda: c.functions.previewDeposit(amount_in).call())
                    return Prepared(order.asset, a, "buy", qty_raw, "deposit", c.functions.deposit(amount_in, me),
                                    self.stable, c.address, amount_in, out, out, r.index)  # fmt: skip
                self._eligible(order, "vault", c.address, qty_raw)
                out = self._rpc("previewRedeem", lambda: c.functions.previewRedeem(qty_raw).call())
                return Prepared(order.asset, a, "sell", qty_raw, "redeem", c.functions.redeem(qty_raw, me, me),
                                None, None, qty_raw, out, out, r.index)  # fmt: skip
            if r.kind == "manager":
                return self._prepare_manager(order, r, qty_raw)
            if r.kind == "univ2":
                return self._prepare_univ2(order, r, qty_raw, deadline)
            p = r.pool
            if order.side == "buy":
                self._eligible(order, "pool", p.address, qty_raw)
                amount_in = self._rpc("getAmountIn", lambda: p.functions.getAmountIn(qty_raw, c.address).call())
                min_out = int(qty_raw * (1 - slip))
                call = p.functions.swap(self.stable.address, amount_in, min_out, me, deadline)
                return Prepared(order.asset, a, "buy", qty_raw, "swap", call, self.stable, p.address, amount_in,
                                qty_raw, min_out, r.index)  # fmt: skip
            self._eligible(order, "pool", p.address, qty_raw)
            out = self._rpc("getAmountOut", lambda: p.functions.getAmountOut(qty_raw, c.address).call())
            call = p.functions.swap(c.address, qty_raw, int(out * (1 - slip)), me, deadline)
            return Prepared(order.asset, a, "sell", qty_raw, "swap", call, c, p.address, qty_raw, out,
                            int(out * (1 - slip)), r.index)  # fmt: skip
        except ContractLogicError as exc:
            raise InvalidOrder(self.name, f"order {order.client_id}: {self.decoder.from_exception(exc)}") from None

    def _prepare_manager(self, order: Order, r: Route, qty_raw: int) -> Prepared:
        """Read the manager's fee, minimum, rate limit and liquidity first: a leg they would refuse is
        resized to what they allow (event ``manager_limit``) or refused here, never reverted on chain."""
        m, spec = r.manager, r.mspec
        assert spec is not None
        a = self._asset(order.asset)
        cid, unit = order.client_id, self._unit(order.asset)
        if order.side == "buy":
            probe = 1000 * self._q
            per = self._rpc("previewSubscribe", lambda: self._mfn(r, spec.preview_subscribe)(probe).call())
            if per <= 0:
                raise InvalidOrder(self.name, f"order {cid}: the manager quotes no shares for {order.asset}")
            usd_in = math.ceil(qty_raw * probe / per) + 1
            minimum = int(self._mval(r, spec.minimum_subscription, money=True))
            room = None
            if spec.remaining_subscription is not None:
                room = int(self._rpc("remaining", lambda: self._mfn(r, spec.remaining_subscription)().call()))
            if room is not None and usd_in > room:
                if room < max(minimum, 1):
                    msg = (f"order {cid}: the manager's subscription limit leaves {room / self._q:.2f} "
                           f"(minimum {minimum / self._q:.2f})")  # fmt: skip
                    raise InvalidOrder(self.name, msg)
                self._event("manager_limit", f"order {cid}: subscription of {usd_in / self._q:.2f} cut to the "
                            f"manager's remaining limit {room / self._q:.2f}", client_id=cid)  # fmt: skip
                usd_in = room
            if usd_in < minimum:
                msg = (
                    f"order {cid}: {usd_in / self._q:.2f} is below the manager's minimum subscription of "
                    f"{minimum / self._q:.2f}"
                )
                raise InvalidOrder(self.name, msg)
            out = int(self._rpc("previewSubscribe", lambda: self._mfn(r, spec.preview_subscribe)(usd_in).call()))
            self._eligible(order, "manager", m.address, out)
            call = self._mfn(r, spec.subscribe)(usd_in)
            return Prepared(order.asset, a, "buy", qty_raw, "subscribe", call, self.stable, m.address, usd_in, out,
                            out, r.index)  # fmt: skip
        fee_bps = float(self._mval(r, spec.redeem_fee_bps, money=False))
        out = int(self._rpc("previewRedeem", lambda: self._mfn(r, spec.preview_redeem)(qty_raw).call()))
        gross = math.ceil(out * 1e4 / max(1e4 - fee_bps, 1e-9))
        if spec.liquidity is not None:
            avail = int(self._rpc("liquidity", lambda: self._mfn(r, spec.liquidity)().call()))
        else:
            avail = int(self._rpc("liquidity", lambda: self.stable.functions.balanceOf(m.address).call()))
        limit, why = avail, f"liquidity {avail / self._q:.2f}"
        if spec.remaining_redemption is not None:
            room = int(self._rpc("remaining", lambda: self._mfn(r, spec.remaining_redemption)().call()))
            if room < limit:
                limit, why = room, f"redemption limit {room / self._q:.2f}"
        minimum = int(self._mval(r, spec.minimum_redemption, money=True))
        least = max(minimum, int(a.min_notional * self._q), 1)  # a cut leg this small is dust, not a trade
        if gross > limit:
            qty_raw = int(qty_raw * limit / gross * (1 - 1e-9))
            out = int(self._rpc("previewRedeem", lambda: self._mfn(r, spec.preview_redeem)(qty_raw).call())) if (
                qty_raw > 0) else 0  # fmt: skip
            gross = math.ceil(out * 1e4 / max(1e4 - fee_bps, 1e-9))
            if qty_raw <= 0 or gross < least:
                msg = (f"order {cid}: the manager can pay out {limit / self._q:.2f} now ({why}); redeeming "
                       f"{order.qty:.6g} {order.asset} needs more")  # fmt: skip
                raise InvalidOrder(self.name, msg)
            self._event("manager_limit", f"order {cid}: redemption cut to {qty_raw / unit:.6g} {order.asset} "
                        f"by the manager's {why}", client_id=cid)  # fmt: skip
        if gross < minimum:
            msg = (
                f"order {cid}: {gross / self._q:.2f} is below the manager's minimum redemption of "
                f"{minimum / self._q:.2f}"
            )
            raise InvalidOrder(self.name, msg)
        self._eligible(order, "manager", m.address, qty_raw)
        call = self._mfn(r, spec.redeem)(qty_raw)
        approve = self.contracts[order.asset] if spec.redeem_needs_approval else None
        return Prepared(order.asset, a, "sell", qty_raw, "redeem", call, approve,
                        m.address if approve is not None else None, qty_raw, out, out, r.index)  # fmt: skip

    def _prepare_univ2(self, order: Order, r: Route, qty_raw: int, deadline: int) -> Prepared:
        """Router02's fee-on-transfer-supporting swaps: a buy asks the pair for enough that the wanted
        units arrive after the token's transfer fee; a sell's output is quoted on what reaches the pair."""
        a = self._asset(order.asset)
        token = self.contracts[order.asset]
        router, me = r.router, self.address
        slip = self.cfg.max_slippage_bps / 1e4
        fn = router.functions.swapExactTokensForTokensSupportingFeeOnTransferTokens
        if order.side == "buy":
            path = [self.stable.address, token.address]
            gross = gross_for_net(qty_raw, self._transfer_fee_bps(r, order.asset))
            amount_in = int(self._rpc("getAmountsIn", lambda: router.functions.getAmountsIn(gross, path).call())[0])
            self._eligible(order, "pool", r.pair.address, gross)
            min_out = int(qty_raw * (1 - slip))
            return Prepared(order.asset, a, "buy", qty_raw, "swap", fn(amount_in, min_out, path, me, deadline),
                            self.stable, router.address, amount_in, qty_raw, min_out, r.index)  # fmt: skip
        path = [token.address, self.stable.address]
        reaching = qty_raw - self._transfer_fee(r, order.asset, qty_raw)
        out = int(self._rpc("getAmountsOut", lambda: router.functions.getAmountsOut(reaching, path).call())[1])
        self._eligible(order, "pool", r.pair.address, qty_raw)
        min_out = int(out * (1 - slip))
        return Prepared(order.asset, a, "sell", qty_raw, "swap", fn(qty_raw, min_out, path, me, deadline), token,
                        router.address, qty_raw, out, min_out, r.index)  # fmt: skip

    def _cash_raw(self) -> int:
        if self.journal is not None:
            return int(self.journal.balances().cash * self._q)
        return int(self._rpc("balanceOf", lambda: self.stable.functions.balanceOf(self.address).call()))

    def _check_funds(self, order: Order, prep: Prepared) -> None:
        if prep.side == "buy":
            have = self._rpc("balanceOf", lambda: self.stable.functions.balanceOf(self.address).call())
            what, unit = self.cfg.quote_token, self._q
        else:
            c = self.contracts[order.asset]
            have = self._rpc("balanceOf", lambda: c.functions.balanceOf(self.address).call())
            what, unit = order.asset, self._unit(order.asset)
        if have < prep.amount_in:
            raise InsufficientFunds(
                self.name,
                f"order {order.client_id}: needs {prep.amount_in / unit:.6f} of {what}, "
                f"the wallet has {have / unit:.6f}",
            )

    def _fees(self) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) in wei, or a gas_cap skip."""
        base = int(self._latest().get("baseFeePerGas") or 0)
        prio = int(self.cfg.gas.priority_fee_gwei * 1e9)
        cap = int(self.cfg.gas.max_fee_gwei * 1e9)
        if base + prio > cap:
            msg = (
                f"gas fee {(base + prio) / 1e9:.3f} gwei (base {base / 1e9:.3f} + priority {prio / 1e9:.3f}) "
                f"exceeds the cap of {cap / 1e9:.3f} gwei; trade skipped"
            )
            self._event("gas_cap", msg, base_fee_gwei=base / 1e9, cap_gwei=cap / 1e9)
            raise InvalidOrder(self.name, msg)
        return min(cap, 2 * base + prio), prio

    # -- live trading ------------------------------------------------------------------------------------

    def place_order(self, order: Order) -> OrderState:
        with self._lock:
            if self.journal is not None:
                return self._paper_place(order)
            if self._is_async(order.asset, order.side):
                assert self.async_ is not None
                return self._rpc("async request", lambda: self.async_.request(order))  # type: ignore[union-attr]
            rows = self.ledger.txs(venue=self.name, client_id=order.client_id)
            if any(r.step in MAIN_STEPS for r in rows):
                return self._resume(order.client_id)
            max_fee, prio = self._fees()  # first: over the cap, nothing else is worth asking
            block = self._latest()
            prep = self._prepare(order, deadline=int(block["timestamp"]) + self.cfg.deadline_s)
            self._check_funds(order, prep)
            if prep.approve_token is not None:
                allowance = self._rpc(
                    "allowance", lambda: prep.approve_token.functions.allowance(self.address, prep.spender).call()
                )
                if allowance != prep.amount_in:  # exact-amount approval, never unlimited
                    approve = prep.approve_token.functions.approve(prep.spender, prep.amount_in)
                    row = self._send(order, "approve", approve, max_fee, prio, notional=None)
                    receipt = self._wait(row)
                    if receipt["status"] != 1:
                        raise VenueError(self.name, f"approval {row.tx_hash} reverted: {row.message}")
            notional = prep.amount_in / self._q if prep.side == "buy" else prep.expected_out / self._q
            row = self._send(order, prep.step, prep.call, max_fee, prio, notional=notional)
            receipt = self._wait(row)
            if receipt["status"] != 1:
                mined = "0x" + bytes(receipt["transactionHash"]).hex()
                fresh = next(r for r in self.ledger.txs(venue=self.name, client_id=order.client_id)
                             if r.tx_hash == mined)  # fmt: skip
                raise VenueError(self.name, f"order {order.client_id}: {prep.step} {mined} {fresh.message}")
            state = self._state(order.client_id)
            assert state is not None
            return state

    def _send(self, order: Order, step: str, fn: Any, max_fee: int, prio: int, *, notional: float | None) -> ChainTxRow:
        """Estimate, sign, write to the ledger, then broadcast; returns the ledger row."""
        tx = {"from": self.address, "to": fn.address, "data": fn._encode_transaction_data(), "value": 0}
        try:
            gas = self._rpc(f"estimate {step}", lambda: self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
        except ContractLogicError as exc:
            reason = self.decoder.from_exception(exc)
            msg = f"order {order.client_id}: {step} of {order.asset} would revert: {reason}; nothing sent"
            self._event("tx_reverted", msg, Severity.CRITICAL, client_id=order.client_id, reason=reason)
            raise VenueError(self.name, msg) from None
        gas_limit = int(gas * self.cfg.gas.gas_limit_multiplier)
        if any(r.kind == "univ2" and r.to == fn.address for rs in self.routes.values() for r in rs):
            # a Uniswap V2 pair writes its price accumulators only in a block later than its last
            # trade: an estimate in the same block as that trade leaves out two storage writes
            gas_limit += UNIV2_ORACLE_GAS
        if notional and self.cfg.gas.max_cost_bps is not None:
            cost = gas_limit * max_fee / 1e18 * self.native_price()
            if cost > notional * self.cfg.gas.max_cost_bps / 1e4:
                msg = (
                    f"order {order.client_id}: gas up to {cost:.4f} would exceed {self.cfg.gas.max_cost_bps} bps "
                    f"of {notional:.2f}; trade skipped"
                )
                self._event("gas_cap", msg, client_id=order.client_id)
                raise InvalidOrder(self.name, msg)
        nonce = self._rpc("nonce", self.nonces.reserve)
        full = {
            "type": 2, "chainId": self.cfg.chain_id, "nonce": nonce, "to": fn.address, "data": tx["data"],
            "value": 0, "gas": gas_limit, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": prio,
        }  # fmt: skip
        signed = self._signer.sign_transaction(full)
        tx_hash = "0x" + bytes(signed.hash).hex()
        row = ChainTxRow(
            tx_hash=tx_hash, venue=self.name, client_id=order.client_id, step=step, chain_id=self.cfg.chain_id,
            sender=self.address, nonce=nonce, raw="0x" + bytes(signed.raw_transaction).hex(), asset=order.asset,
            side=order.side, qty=order.qty, decision_price=order.decision_price, status="signed",
            gas_limit=gas_limit, max_fee_per_gas=max_fee,
            created_at=datetime.now(UTC), updated_at=datetime.now(UTC),
        )  # fmt: skip
        self.ledger.record_tx(row)  # durable before the node sees it
        self._broadcast(row)
        return row

    def _broadcast(self, row: ChainTxRow) -> None:
        try:
            self._rpc("send", lambda: self.w3.eth.send_raw_transaction(row.raw))
        except Unreachable:
            self.nonces.resync()
            raise  # maybe sent, maybe not: the hash is in the ledger and is looked up before anything else
        except VenueError as exc:
            text = str(exc).lower()
            if "already known" in text or "already imported" in text:
                pass  # the node has it: the same bytes, the same hash
            elif any(k in text for k in UNDERPRICED):
                # valid, but its fee caps no longer buy a place in a block (the node evicted it or
                # will not take it back): not a drop, a replacement with higher caps is the cure
                msg = f"{row.step} {row.tx_hash} is underpriced now: {exc}"
                raise Underpriced(self.name, msg, retryable=True) from None
            else:
                self.nonces.resync()
                self.ledger.update_tx(row.tx_hash, status="dropped", message=f"refused by the node: {exc}"[:500])
                self._event("tx_dropped", f"{row.step} {row.tx_hash} refused by the node: {exc}", Severity.CRITICAL)
                raise VenueError(self.name, f"{row.step} {row.tx_hash} refused by the node: {exc}") from None
        self.ledger.update_tx(row.tx_hash, status="sent")

    def _wait(self, row: ChainTxRow, timeout: float | None = None) -> Any:
        """The receipt of whichever of our transactions at ``row``'s nonce is mined, after
        ``confirmations`` blocks. A transaction the node lost is broadcast again once; one that waits
        longer than ``nonces.stuck_after_s`` is replaced with a fee bump (at most
        ``nonces.max_replacements`` times, never over the gas cap); a nonce another signer used is a
        drop. Raises ``VenueError`` (retryable when the transaction may still be mined later)."""
        deadline = time.monotonic() + (self.cfg.receipt_timeout_s if timeout is None else timeout)
        since = time.monotonic()
        rebroadcast = False
        replaced = 0
        while True:
            outcome, receipt = self._settle_nonce(row)
            if outcome == "mined":
                return receipt
            if outcome == "dropped":
                msg = f"{row.step} {row.tx_hash} was dropped: nonce {row.nonce} is used by another transaction"
                self.nonces.resync()
                self._event("tx_dropped", msg, Severity.CRITICAL, client_id=row.client_id)
                raise VenueError(self.name, msg)
            if outcome == "lost":
                if rebroadcast:
                    msg = f"{row.step} {row.tx_hash} keeps disappearing from the mempool; left in flight"
                    self._event("tx_dropped", msg, Severity.WARNING, client_id=row.client_id)
                    raise VenueError(self.name, msg, retryable=True)
                log.warning("venue %s: %s %s not in the mempool; broadcasting it again", self.name, row.step,
                            row.tx_hash)  # fmt: skip
                try:
                    self._broadcast(self._nonce_rows(row)[-1])
                    rebroadcast = True
                except Underpriced:
                    if replaced < self.cfg.nonces.max_replacements and self._replace(row, why="underpriced"):
                        replaced += 1
                        since = time.monotonic()
            elif (
                outcome == "pending"
                and time.monotonic() - since > self.cfg.nonces.stuck_after_s
                and replaced < self.cfg.nonces.max_replacements
            ):
                if self._replace(row, why="stuck") is not None:
                    replaced += 1
                since = time.monotonic()
            if time.monotonic() > deadline:
                msg = f"{row.step} {row.tx_hash} not confirmed within the timeout; it stays in flight"
                self._event("tx_timeout", msg, client_id=row.client_id)
                raise VenueError(self.name, msg, retryable=True)
            time.sleep(self.cfg.poll_interval_s)

    # -- nonces: one nonce, several signed transactions (the original and its replacements) ------------------

    def _live_rows(self) -> list[ChainTxRow]:
        return [r for r in self.ledger.txs(venue=self.name) if r.sender == self.address and r.status in LIVE]

    def _nonce_rows(self, row: ChainTxRow) -> list[ChainTxRow]:
        """Our ledger rows at ``row``'s nonce, oldest first (the last is the highest-fee one)."""
        return [r for r in self.ledger.txs(venue=self.name) if r.sender == row.sender and r.nonce == row.nonce]

    def _settle_nonce(self, row: ChainTxRow) -> tuple[str, Any]:
        """Look once at ``row``'s nonce: ``mined`` (with the receipt, confirmed, ledger updated),
        ``confirming``, ``pending`` (in the mempool), ``lost`` (nowhere, nonce free) or ``dropped``."""
        rows = self._nonce_rows(row)
        for r in rows:
            if r.status in ("mined", "reverted"):
                return ("mined", self._receipt(r)) if r.client_id == row.client_id else ("dropped", None)
        live = [r for r in rows if r.status in LIVE]
        for r in live:
            receipt = self._receipt(r)
            if receipt is None:
                continue
            head = self._rpc("block number", lambda: self.w3.eth.block_number)
            if head - receipt["blockNumber"] + 1 < self.cfg.confirmations:
                return "confirming", None
            self._record_receipt(r, receipt)
            for other in live:
                if other.tx_hash != r.tx_hash:
                    how = "replaced" if other.client_id == r.client_id else "dropped"
                    self.ledger.update_tx(other.tx_hash, status=how, message=f"{how} by {r.tx_hash} (same nonce)")
            return ("mined", receipt) if r.client_id == row.client_id else ("dropped", None)
        if not live:
            return "dropped", None
        if any(self._known(r) for r in live):
            return "pending", None
        used = self._rpc("nonce", lambda: self.w3.eth.get_transaction_count(self.address, "latest"))
        if used > row.nonce:  # another signer's transaction took the nonce (or ours, unrecorded)
            for r in live:
                self.ledger.update_tx(r.tx_hash, status="dropped",
                                      message=f"nonce {r.nonce} is used by another transaction")  # fmt: skip
            return "dropped", None
        return "lost", None

    def _sign_row(self, tx: dict[str, Any], like: ChainTxRow | None, *, client_id: str, step: str) -> ChainTxRow:
        """Sign ``tx`` and commit it to the ledger (not yet broadcast)."""
        signed = self._signer.sign_transaction(tx)
        row = ChainTxRow(
            tx_hash="0x" + bytes(signed.hash).hex(), venue=self.name, client_id=client_id, step=step,
            chain_id=self.cfg.chain_id, sender=self.address, nonce=int(tx["nonce"]),
            raw="0x" + bytes(signed.raw_transaction).hex(), asset=like.asset if like else "",
            side=like.side if like else "", qty=like.qty if like else 0.0,
            decision_price=like.decision_price if like else 0.0, status="signed", gas_limit=int(tx["gas"]),
            max_fee_per_gas=int(tx["maxFeePerGas"]), created_at=datetime.now(UTC), updated_at=datetime.now(UTC),
        )  # fmt: skip
        self.ledger.record_tx(row)
        return row

    def _replace(self, row: ChainTxRow, *, why: str, cancel: bool = False) -> ChainTxRow | None:
        """Re-sign the newest transaction at ``row``'s nonce with both fee caps bumped (or as a
        self-transfer, ``cancel``); None when the bump would exceed the gas cap (event ``gas_cap``)."""
        last = self._nonce_rows(row)[-1]
        base = int(self._latest().get("baseFeePerGas") or 0)
        prio = int(self.cfg.gas.priority_fee_gwei * 1e9)
        tx = replacement(last.raw, base_fee=base, priority_fee=prio, bump=self.cfg.nonces.fee_bump,
                         cancel_to=self.address if cancel else None)  # fmt: skip
        cap = int(self.cfg.gas.max_fee_gwei * 1e9)
        if tx["maxFeePerGas"] > cap:
            msg = (f"{last.step} {last.tx_hash} is {why}; a replacement needs {tx['maxFeePerGas'] / 1e9:.3f} gwei, "
                   f"over the cap of {cap / 1e9:.3f} gwei: left as it is")  # fmt: skip
            self._event("gas_cap", msg, client_id=row.client_id)
            return None
        new = self._sign_row(tx, last, client_id=last.client_id, step="cancel" if cancel else last.step)
        self._event(
            "tx_replaced",
            f"{last.step} {last.tx_hash} {why}: replaced at nonce {last.nonce} by {new.tx_hash} "
            f"(max fee {last.max_fee_per_gas / 1e9:.3f} → {tx['maxFeePerGas'] / 1e9:.3f} gwei)",
            Severity.INFO if not cancel else Severity.WARNING,
            client_id=row.client_id, old=last.tx_hash, new=new.tx_hash,
        )  # fmt: skip
        self._broadcast(new)
        return new

    def _repair_nonces(self, plan: NoncePlan) -> None:
        """Before handing out nonces again: broadcast the ledger's transactions the node lacks, and
        fill every gap below them with a 0-value self-transfer so that they can be mined."""
        live = self._live_rows()
        for n in plan.unknown:
            rows = [r for r in live if r.nonce == n]
            if rows and not any(self._known(r) for r in rows):
                try:
                    self._broadcast(rows[-1])
                except VenueError:
                    pass  # refused (nonce used meanwhile): marked dropped by _broadcast
        for n in plan.gaps:
            base = int(self._latest().get("baseFeePerGas") or 0)
            prio = int(self.cfg.gas.priority_fee_gwei * 1e9)
            tx = {"type": 2, "chainId": self.cfg.chain_id, "nonce": n, "to": self.address, "value": 0, "data": b"",
                  "gas": 21_000, "maxFeePerGas": min(2 * base + prio, int(self.cfg.gas.max_fee_gwei * 1e9)),
                  "maxPriorityFeePerGas": prio}  # fmt: skip
            row = self._sign_row(tx, None, client_id=f"nonce-gap:{n}", step="gap")
            self._event("nonce_gap", f"nonce {n} had no transaction and blocked later ones: filled by {row.tx_hash}",
                        nonce=n, tx_hash=row.tx_hash)  # fmt: skip
            self._broadcast(row)
            self._wait(row)  # its cost is in chain_tx; nothing behind it mines before it does

    def _receipt(self, row: ChainTxRow) -> Any:
        try:
            return self._rpc("receipt", lambda: self.w3.eth.get_transaction_receipt(row.tx_hash))
        except TransactionNotFound:
            return None

    def _known(self, row: ChainTxRow) -> bool:
        try:
            self._rpc("transaction", lambda: self.w3.eth.get_transaction(row.tx_hash))
            return True
        except TransactionNotFound:
            return False

    def _record_receipt(self, row: ChainTxRow, receipt: Any) -> None:
        price = int(receipt.get("effectiveGasPrice") or 0)
        native = receipt["gasUsed"] * price / 1e18
        fields: dict[str, Any] = dict(
            gas_used=int(receipt["gasUsed"]), effective_gas_price=price, gas_cost_native=native,
            gas_cost_quote=native * self.native_price(), block_number=int(receipt["blockNumber"]),
            status="mined" if receipt["status"] == 1 else "reverted",
        )  # fmt: skip
        if receipt["status"] != 1:
            reason = self._replay(row, receipt)
            fields["message"] = f"reverted: {reason}"[:500]
            self._event("tx_reverted", f"{row.step} {row.tx_hash} of {row.client_id} reverted on chain: {reason}",
                        Severity.CRITICAL, client_id=row.client_id, reason=reason)  # fmt: skip
        self.ledger.update_tx(row.tx_hash, **fields)

    def _replay(self, row: ChainTxRow, receipt: Any) -> str:
        """Why a mined transaction reverted: the same call replayed on the state of its block."""
        tx = self._rpc("transaction", lambda: self.w3.eth.get_transaction(row.tx_hash))
        call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"], "gas": tx["gas"]}
        if int(receipt["gasUsed"]) >= 0.97 * int(tx["gas"]):  # a replay with a fresh 63/64 split may pass
            return f"out of gas (used {receipt['gasUsed']} of the limit {tx['gas']})"
        try:
            self._rpc("replay", lambda: self.w3.eth.call(call, block_identifier=receipt["blockNumber"] - 1))
        except ContractLogicError as exc:
            return self.decoder.from_exception(exc)
        try:  # the state before the block passes: something earlier in the block made it revert
            self._rpc("replay", lambda: self.w3.eth.call(call, block_identifier=receipt["blockNumber"]))
        except ContractLogicError as exc:
            return self.decoder.from_exception(exc)
        return "unknown reason (out of gas?)"

    # -- what happened to an order ---------------------------------------------------------------------

    def _refresh(self, rows: list[ChainTxRow]) -> list[ChainTxRow]:
        """Settle rows in doubt without waiting: receipts (once confirmed) of pending ones, the
        replaced and the dropped, and a rebroadcast of lost ones."""
        if not rows:
            return rows
        changed = False
        done: set[int] = set()
        for r in rows:
            if r.status not in LIVE or r.nonce in done:
                continue
            done.add(r.nonce)
            outcome, _ = self._settle_nonce(r)
            if outcome in ("mined", "dropped"):
                changed = True
            elif outcome == "lost":  # signed, never seen by the node (a crash between the ledger and the send)
                try:
                    self._broadcast(self._nonce_rows(r)[-1])
                except Underpriced:
                    pass  # stays in flight: the next wait replaces it with higher fee caps
        return self.ledger.txs(venue=self.name, client_id=rows[0].client_id) if changed else rows

    @staticmethod
    def _main(rows: list[ChainTxRow], steps: tuple[str, ...] = MAIN_STEPS) -> ChainTxRow:
        """The main transaction of an order (of a transfer: ``steps`` = its step): of the rows at its
        last main nonce, the one mined, else the newest (a replacement stands for the one it replaces)."""
        mains = [r for r in rows if r.step in steps]
        same = [r for r in mains if r.nonce == mains[-1].nonce]
        done = [r for r in same if r.status in ("mined", "reverted")]
        if done:
            return done[-1]
        live = [r for r in same if r.status in LIVE]
        return live[-1] if live else same[-1]

    def _state(self, client_id: str) -> OrderState | None:
        rows = self.ledger.txs(venue=self.name, client_id=client_id)
        if not any(r.step in MAIN_STEPS for r in rows):
            return None
        rows = self._refresh(rows)
        main = self._main(rows)
        gas = sum(r.gas_cost_quote for r in rows)
        now = self.clock.now()
        if main.status in ("signed", "sent"):
            return OrderState(client_id, OrderStatus.OPEN, 0.0, (), main.tx_hash, f"{main.step} pending")
        if main.status in ("reverted", "dropped", "replaced"):  # replaced: by a cancel that was mined
            fills: tuple[Fill, ...] = ()
            if gas > 0:
                fills = (Fill(f"gas:{main.tx_hash}", client_id, self.name, main.asset, main.side, 0.0, 0.0, 0.0, 0.0,
                              now, gas),)  # fmt: skip
            status = OrderStatus.REJECTED if main.status == "reverted" else OrderStatus.CANCELED
            return OrderState(client_id, status, 0.0, fills, main.tx_hash, main.message)
        receipt = self._rpc("receipt", lambda: self.w3.eth.get_transaction_receipt(main.tx_hash))
        block = self._rpc("block", lambda: self.w3.eth.get_block(receipt["blockNumber"]))
        fill = self._fill_from_receipt(main, receipt, gas, datetime.fromtimestamp(block["timestamp"], UTC))
        return OrderState(client_id, OrderStatus.FILLED, fill.qty, (fill,), main.tx_hash)

    def _route_of(self, asset: str, to: str | None) -> Route:
        """The route a mined transaction took, from the contract it called."""
        routes = self.routes[asset]
        for r in routes:
            if to is not None and r.to.lower() == to.lower():
                return r
        return routes[0]

    def _fill_from_receipt(self, row: ChainTxRow, receipt: Any, gas: float, when: datetime) -> Fill:
        asset = row.asset
        c = self.contracts[asset]
        r = self._route_of(asset, receipt.get("to"))
        transfer_fee = 0.0  # quote value of the units a fee-on-transfer token kept
        charged = 0.0  # the fund's own fee (entry/exit), measured: fees.py
        if r.kind == "vault":
            ev = c.events.Deposit() if row.side == "buy" else c.events.Withdraw()
            logs = [x for x in ev.process_receipt(receipt, errors=_DISCARD) if x["address"] == c.address]
            if not logs:
                raise VenueError(self.name, f"{row.tx_hash}: no {ev.event_name} event in the receipt")
            args = logs[0]["args"]
            quote_amt, units = args["assets"], args["shares"]
            fee_bps = 0.0
            nav_raw = self._nav_value(asset, units, int(receipt["blockNumber"]), row.client_id)
            charged = product_fee(row.side, int(quote_amt), nav_raw) / self._q
        elif r.kind == "pool":
            p = r.pool
            logs = [x for x in p.events.Swap().process_receipt(receipt, errors=_DISCARD) if x["address"] == p.address]
            if not logs:
                raise VenueError(self.name, f"{row.tx_hash}: no Swap event in the receipt")
            args = logs[0]["args"]
            fee_bps = float(self.fee_bps(asset))
            if row.side == "buy":
                quote_amt, units = args["amountIn"], args["amountOut"]
            else:
                units, quote_amt = args["amountIn"], args["amountOut"]
        else:  # manager, univ2: what the wallet's balances moved, from the tokens' Transfer logs
            tok = [x for x in c.events.Transfer().process_receipt(receipt, errors=_DISCARD)
                   if x["address"] == c.address]  # fmt: skip
            st = [x for x in self.stable.events.Transfer().process_receipt(receipt, errors=_DISCARD)
                  if x["address"] == self.stable.address]  # fmt: skip
            t_in, t_out = transfer_sums(tok, self.address)
            s_in, s_out = transfer_sums(st, self.address)
            units, quote_amt = (t_in, s_out) if row.side == "buy" else (t_out, s_in)
            if not units or not quote_amt:
                raise VenueError(self.name, f"{row.tx_hash}: no transfers of {asset} and the stablecoin to the wallet")
            if r.kind == "manager":
                assert r.mspec is not None
                fee_bps = float(self._mval(r, r.mspec.mint_fee_bps if row.side == "buy" else r.mspec.redeem_fee_bps,
                                           money=False))  # fmt: skip
            else:
                assert r.uspec is not None
                fee_bps = r.uspec.fee_bps
                pair = r.pair.address
                if row.side == "buy":  # the pair sent gross; the wallet got net
                    gross = sum(int(x["args"]["value"]) for x in tok if x["args"]["from"] == pair)
                    kept = max(gross - units, 0)
                    transfer_fee = kept / max(gross, 1) * (quote_amt / self._q) * (1 - fee_bps / 1e4)
                else:  # the wallet sent units; the pair got less
                    reached = sum(int(x["args"]["value"]) for x in tok if x["args"]["to"] == pair)
                    kept = max(units - reached, 0)
                    transfer_fee = kept / max(reached, 1) * (quote_amt / self._q) / (1 - fee_bps / 1e4)
        qty = units / self._unit(asset)
        q = quote_amt / self._q
        if row.side == "buy":
            fee = q * fee_bps / 1e4 + transfer_fee + charged
            price = (q - fee) / qty
            slippage = (price - row.decision_price) * qty
        else:
            gross_q = q / (1 - fee_bps / 1e4)
            fee = gross_q - q + transfer_fee + charged
            price = (q + fee) / qty
            slippage = (row.decision_price - price) * qty
        args = (f"tx:{row.tx_hash}", row.client_id, self.name, asset, row.side, qty, price, fee, slippage, when, gas)
        if r.kind in ("vault", "manager"):  # a fund's or an issuer's fee: a cost kind of its own in the ledger
            return ProductFill(*args, product_fee=charged if r.kind == "vault" else fee)
        return Fill(*args)

    def _nav_value(self, asset: str, shares: int, block: int | str, client_id: str) -> int:
        """``convertToAssets(shares)`` at ``block``, in millionths of a raw quote unit (the
        conversion is linear: ``shares · 10⁶`` converted, over 10⁶; the plain call if that reverts): what
        the shares are worth at the fund's own valuation. A node that no longer has that block's state
        (not an archive node) answers at the latest block instead, with a ``product_fee_estimated`` warning."""
        c = self.contracts[asset]
        conv = c.functions.convertToAssets
        try:
            try:
                return int(self._rpc("convertToAssets", lambda: conv(shares * SCALE).call(block_identifier=block)))
            except ContractLogicError:  # an overflow of the scaled amount
                return SCALE * int(self._rpc("convertToAssets", lambda: conv(shares).call(block_identifier=block)))
        except ContractLogicError as exc:
            raise VenueError(self.name, f"{asset}: {c.address}.convertToAssets({shares}) at block {block} reverts: "
                             f"{self.decoder.from_exception(exc)}") from None  # fmt: skip
        except Unreachable:
            raise
        except VenueError as exc:
            if block == "latest":
                raise
            msg = (f"{asset}: order {client_id}: the state of block {block} is not available ({exc}); its fund "
                   "fee is measured at the latest block")  # fmt: skip
            self._event("product_fee_estimated", msg, client_id=client_id)
            return self._nav_value(asset, shares, "latest", client_id)

    def _resume(self, client_id: str) -> OrderState:
        """An order sent before: wait for what is pending, never send it again."""
        state = self._state(client_id)
        assert state is not None
        if state.status is OrderStatus.OPEN:
            rows = self.ledger.txs(venue=self.name, client_id=client_id)
            self._wait(self._main(rows))
            state = self._state(client_id)
            assert state is not None
        return state

    def fetch_order(self, client_id: str) -> OrderState | None:
        with self._lock:
            if self.journal is not None:
                return self.journal.get(client_id) or self._paper_requests().get(client_id)
            if self.async_ is not None:
                st = self.async_.order_state(client_id)
                if st is not None:
                    return st
            return self._state(client_id)

    def cancel_order(self, client_id: str) -> OrderState:
        """A pending transaction is replaced by a 0-value transfer to self at the same nonce, both fee
        caps bumped by ``nonces.fee_bump``; whichever of the two is mined decides the order's fate."""
        with self._lock:
            state = self.fetch_order(client_id)
            if state is None:
                raise InvalidOrder(self.name, f"cannot cancel unknown order {client_id}")
            if state.status is not OrderStatus.OPEN or self.journal is not None:
                return state
            if self.async_ is not None and self.async_.order_state(client_id) is not None:
                return state  # a request cannot be withdrawn (no ERC-7887): it stays open until claimed
            main = self._main(self.ledger.txs(venue=self.name, client_id=client_id))
            row = self._replace(main, why="cancelled", cancel=True)
            if row is None:  # over the gas cap: the original stays in flight
                return state
            try:
                self._wait(row)
            except VenueError:
                pass
            state = self._state(client_id)
            assert state is not None
            return state

    def reconcile(self, in_flight: Mapping[str, str]) -> tuple[list[OrderState], list[RiskEvent]]:
        """Settle the legs the ledger has in flight on this venue, waiting for pending transactions."""
        with self._lock:
            if self.journal is not None:
                pending = self._paper_requests()
                got = [self.journal.get(c) or pending.get(c) for c in in_flight]
                return [s for s in got if s is not None], []
            states: list[OrderState] = []
            if self.async_ is not None:
                self._rpc("async poll", self.async_.poll)
            for cid in in_flight:
                ast = self.async_.order_state(cid) if self.async_ is not None else None
                if ast is not None:  # an open request is meant to stay open across cycles: reported as it is
                    states.append(ast)
                    continue
                st = self._state(cid)
                if st is not None and st.status is OrderStatus.OPEN:
                    try:
                        st = self._resume(cid)
                    except VenueError as exc:
                        if exc.retryable:
                            raise
                        st = self._state(cid)
                if st is None:
                    st = self._unsent_with_gas(cid)
                if st is not None:
                    states.append(st)
            return states, []

    def _unsent_with_gas(self, client_id: str) -> OrderState | None:
        """An order whose approval was mined but whose trade was never signed: closed, its gas kept."""
        rows = self._refresh(self.ledger.txs(venue=self.name, client_id=client_id)) if self.ledger.txs(
            venue=self.name, client_id=client_id) else []  # fmt: skip
        gas = sum(r.gas_cost_quote for r in rows)
        if not rows or gas <= 0:
            return None
        r = rows[-1]
        fill = Fill(
            f"gas:{r.tx_hash}", client_id, self.name, r.asset, r.side, 0.0, 0.0, 0.0, 0.0, self.clock.now(), gas
        )
        msg = f"approved ({r.tx_hash}) but the trade was never sent; the exact-amount allowance is left"
        return OrderState(client_id, OrderStatus.CANCELED, 0.0, (fill,), r.tx_hash, msg)

    # -- funding (bot.components.FundingVenue) ---------------------------------------------------------

    def quote_symbol(self) -> str:
        """The code routes give the quote token: ``quote_asset``, else the token's own ``symbol()``."""
        if self._quote_symbol is None:
            self._quote_symbol = self.cfg.quote_asset or str(
                self._rpc("symbol", lambda: self.stable.functions.symbol().call())
            )
        return self._quote_symbol

    def _check_funding(self, asset: str, network: str, what: str) -> None:
        """Only the quote token moves, and only over this chain: an address handed out for another
        asset or network would receive money this venue never sees."""
        sym = self.quote_symbol()
        if asset != sym:
            raise TransferRefused(self.name, f"{what}: asset {asset!r} is not this venue's quote token {sym!r} "
                                  f"({self.stable.address})")  # fmt: skip
        nets = self.cfg.transfer_networks
        if nets and network not in nets:
            raise TransferRefused(self.name, f"{what}: network {network!r} is not this chain (transfer_networks: "
                                  f"{', '.join(nets)})")  # fmt: skip

    def deposit_address(self, asset: str, network: str) -> DepositAddress:
        """The wallet's own address (paper: ``paper:<venue>`` on the paper network)."""
        self._check_funding(asset, network, "deposit address")
        if self.network is not None:
            return self.network.deposit_address(self.name, asset, network)
        return DepositAddress(self.name, asset, network, self.address)

    def _check_transfer(self, t: Transfer) -> None:
        """What no source may send, live or paper: another venue's transfer, another asset or network,
        a non-positive amount; live also an address that is not an EVM address, the wallet itself, or
        one with a tag (an ERC-20 transfer carries no memo: a destination needing one would not credit it)."""
        what = f"transfer {t.client_id}"
        if t.source != self.name:
            raise TransferRefused(self.name, f"{what}: its source is venue {t.source!r}, not {self.name!r}")
        self._check_funding(t.asset, t.network, what)
        if not (t.amount > 0 and math.isfinite(t.amount)):
            raise TransferRefused(self.name, f"{what}: amount {t.amount} is not positive")
        if self.network is not None:
            return
        if not Web3.is_address(t.address) or not t.address.startswith("0x"):
            raise TransferRefused(self.name, f"{what}: {t.address!r} is not an address on this chain")
        if Web3.to_checksum_address(t.address) == self.address:
            raise TransferRefused(self.name, f"{what}: {t.address} is this wallet's own address")
        if t.tag:
            raise TransferRefused(self.name, f"{what}: tag {t.tag!r} given, and an ERC-20 transfer carries no memo")

    def _raw_amount(self, amount: float) -> int:
        """``amount`` in the token's smallest unit, from its decimal form (1.1 is 1_100_000, not 1_099_999)."""
        return int((Decimal(repr(amount)) * self._q).to_integral_value(ROUND_HALF_UP))

    def send_transfer(self, transfer: Transfer) -> TransferState:
        """Send ``transfer`` (idempotent per client id: a transfer the ledger already holds is followed,
        never signed again). Waits for the receipt up to ``receipt_timeout_s``; still in flight then,
        PENDING (``fetch_transfer`` follows it)."""
        t = transfer
        with self._lock:
            if self.journal is not None:
                return self._paper_send(t)
            if self._transfer_rows(t.client_id):  # first: a signed transfer is followed whatever the checks say now
                return self._resume_transfer(t.client_id)
            self._check_transfer(t)
            amount_raw = self._raw_amount(t.amount)
            sym = self.quote_symbol()
            try:
                max_fee, prio = self._fees()
            except InvalidOrder as exc:  # the gas cap: nothing is sent, the next cycle may try again
                why = str(exc).removeprefix(f"venue {self.name}: ")
                raise TransferRefused(self.name, f"transfer {t.client_id}: {why}", retryable=True) from None
            to = Web3.to_checksum_address(t.address)
            fn = self.stable.functions.transfer(to, amount_raw)
            tok = int(self._rpc("balanceOf", lambda: self.stable.functions.balanceOf(self.address).call()))
            wei = int(self._rpc("native balance", lambda: self.w3.eth.get_balance(self.address)))
            gas_limit = int(TRANSFER_GAS * self.cfg.gas.gas_limit_multiplier)
            if tok >= amount_raw and wei >= gas_limit * max_fee:  # else the estimate fails for that: said below
                tx = {"from": self.address, "to": fn.address, "data": fn._encode_transaction_data(), "value": 0}
                try:
                    est = self._rpc("estimate transfer", lambda: self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
                except ContractLogicError as exc:
                    reason = self.decoder.from_exception(exc)
                    raise TransferRefused(self.name, f"transfer {t.client_id}: the {sym} transfer to {to} would "
                                          f"revert: {reason}; nothing sent") from None  # fmt: skip
                gas_limit = int(est * self.cfg.gas.gas_limit_multiplier)
            gas_wei = gas_limit * max_fee
            if tok < amount_raw or wei < gas_wei:
                short = [w for w, s in ((sym, tok < amount_raw), ("gas", wei < gas_wei)) if s]
                dec = self._quote_dec
                raise TransferRefused(
                    self.name,
                    f"transfer {t.client_id}: short of {' and '.join(short)}: needs {amount_raw / self._q:,.{dec}f} "
                    f"{sym} and up to {gas_wei / 1e18:.6f} of the native token for gas "
                    f"(≈{gas_wei / 1e18 * self.native_price():,.4f} {sym}); the wallet has "
                    f"{tok / self._q:,.{dec}f} {sym} and {wei / 1e18:.6f} native; nothing sent",
                )
            nonce = self._rpc("nonce", self.nonces.reserve)
            full = {"type": 2, "chainId": self.cfg.chain_id, "nonce": nonce, "to": fn.address,
                    "data": fn._encode_transaction_data(), "value": 0, "gas": gas_limit, "maxFeePerGas": max_fee,
                    "maxPriorityFeePerGas": prio}  # fmt: skip
            like = ChainTxRow(tx_hash="", venue=self.name, client_id=t.client_id, step=TRANSFER_STEP,
                              chain_id=self.cfg.chain_id, sender=self.address, nonce=nonce, raw="", asset=sym,
                              side="send", qty=amount_raw / self._q, decision_price=0.0, status="signed",
                              gas_limit=gas_limit, max_fee_per_gas=max_fee, created_at=datetime.now(UTC),
                              updated_at=datetime.now(UTC))  # fmt: skip
            row = self._sign_row(full, like, client_id=t.client_id, step=TRANSFER_STEP)  # durable before the send
            log.info("venue %s: transfer %s of %s %s to %s signed as %s (nonce %d)", self.name, t.client_id,
                     amount_raw / self._q, sym, to, row.tx_hash, nonce)  # fmt: skip
            self._broadcast(row)
            return self._resume_transfer(t.client_id)

    def _transfer_rows(self, client_id: str) -> list[ChainTxRow]:
        return [r for r in self.ledger.txs(venue=self.name, client_id=client_id) if r.step == TRANSFER_STEP]

    def _resume_transfer(self, client_id: str) -> TransferState:
        """A transfer in the ledger: wait for it while it is in flight (up to the receipt timeout), then
        say where it stands; never signs a second one."""
        state = self._transfer_state(client_id)
        assert state is not None
        if state.status is TransferStatus.PENDING:
            try:
                self._wait(self._main(self._transfer_rows(client_id), (TRANSFER_STEP,)))
            except Unreachable:
                raise
            except VenueError as exc:  # not mined in time (still in flight), or dropped: the state says which
                log.warning("venue %s: transfer %s: %s", self.name, client_id, exc)
            state = self._transfer_state(client_id)
            assert state is not None
        return state

    def fetch_transfer(self, client_id: str) -> TransferState | None:
        """The transfer of ``client_id`` from the ledger and the chain, None if it was never signed here.
        A signed transaction the node lost (a crash before the send, a mempool eviction) is broadcast
        again, byte for byte, and reported PENDING."""
        with self._lock:
            if self.journal is not None:
                return self._paper_fetch(client_id)
            return self._transfer_state(client_id)

    def _transfer_state(self, client_id: str) -> TransferState | None:
        rows = self._transfer_rows(client_id)
        if not rows:
            return None
        rows = [r for r in self._refresh(rows) if r.step == TRANSFER_STEP]
        main = self._main(rows, (TRANSFER_STEP,))
        gas = sum(r.gas_cost_quote for r in self.ledger.txs(venue=self.name, client_id=client_id))
        if main.status in ("signed", "sent"):
            return TransferState(client_id, TransferStatus.PENDING, main.qty, 0.0, gas, main.tx_hash, None,
                                 f"transfer {main.tx_hash} {main.status}, not mined yet")  # fmt: skip
        if main.status != "mined":  # reverted, dropped, replaced by a transaction of someone else's
            return TransferState(client_id, TransferStatus.FAILED, main.qty, 0.0, gas, main.tx_hash, None,
                                 main.message or f"transfer {main.tx_hash} {main.status}")  # fmt: skip
        receipt = self._rpc("receipt", lambda: self.w3.eth.get_transaction_receipt(main.tx_hash))
        block = self._rpc("block", lambda: self.w3.eth.get_block(receipt["blockNumber"]))
        logs = [x for x in self.stable.events.Transfer().process_receipt(receipt, errors=_DISCARD)
                if x["address"] == self.stable.address and x["args"]["from"] == self.address]  # fmt: skip
        sent = sum(int(x["args"]["value"]) for x in logs)
        return TransferState(client_id, TransferStatus.ARRIVED, sent / self._q if logs else main.qty, 0.0, gas,
                             main.tx_hash, main.tx_hash, f"mined in block {receipt['blockNumber']}",
                             datetime.fromtimestamp(block["timestamp"], UTC))  # fmt: skip

    def deposit_status(self, transfer: Transfer, state: TransferState) -> TransferStatus | None:
        """Whether an incoming transfer (``state.txid``: its on-chain hash) credited this wallet: mined
        with ``confirmations``, successful and with a ``Transfer`` of the quote token to it, ARRIVED;
        known to the node but not confirmed, PENDING; unknown (or mined without crediting this wallet:
        a ``deposit_mismatch`` warning, once), None."""
        with self._lock:
            if self.network is not None:
                return self.network.deposit_status(self.name, transfer.client_id, self.clock.now())
            txid = state.txid
            if not txid or not (txid.startswith("0x") and len(txid) == 66):
                return None
            try:
                receipt = self._rpc("receipt", lambda: self.w3.eth.get_transaction_receipt(txid))
            except TransactionNotFound:
                receipt = None
            if receipt is None:
                try:
                    self._rpc("transaction", lambda: self.w3.eth.get_transaction(txid))
                except TransactionNotFound:
                    return None
                return TransferStatus.PENDING
            head = self._rpc("block number", lambda: self.w3.eth.block_number)
            if head - receipt["blockNumber"] + 1 < self.cfg.confirmations:
                return TransferStatus.PENDING
            logs = [x for x in self.stable.events.Transfer().process_receipt(receipt, errors=_DISCARD)
                    if x["address"] == self.stable.address and x["args"]["to"] == self.address]  # fmt: skip
            credited = sum(int(x["args"]["value"]) for x in logs) if receipt["status"] == 1 else 0
            if credited <= 0:
                if txid not in self._deposit_warned:
                    self._deposit_warned.add(txid)
                    why = "reverted" if receipt["status"] != 1 else f"moved no {self.quote_symbol()} to {self.address}"
                    self._event("deposit_mismatch", f"transfer {transfer.client_id}: {txid} was mined but {why}",
                                client_id=transfer.client_id, txid=txid)  # fmt: skip
                return None
            expected = self._raw_amount(state.amount) if state.amount > 0 else credited
            if abs(credited - expected) > 1 and txid not in self._deposit_warned:
                self._deposit_warned.add(txid)
                self._event("deposit_mismatch", f"transfer {transfer.client_id}: {txid} credited "
                            f"{credited / self._q:,.6f}, the source said {state.amount:,.6f}",
                            client_id=transfer.client_id, txid=txid, credited=credited / self._q)  # fmt: skip
            return TransferStatus.ARRIVED

    def _paper_source(self, client_id: str) -> str | None:
        assert self.network is not None
        row = self.network.db.execute("SELECT source FROM paper_transfer WHERE client_id=?", (client_id,)).fetchone()
        return None if row is None else str(row[0])

    def _paper_send(self, t: Transfer) -> TransferState:
        """A transfer over the paper network: refused unless the account's cash pays the amount, the fee
        and the gas; then accepted by the network (one commit) and its gas booked here."""
        assert self.journal is not None and self.network is not None
        source = self._paper_source(t.client_id)
        if source is not None and source != self.name:  # the network would answer with the other's transfer
            raise TransferRefused(self.name, f"transfer {t.client_id} (paper): the client id is venue {source!r}'s")
        existing = self._paper_fetch(t.client_id)
        if existing is not None:
            return existing
        self._check_transfer(t)
        now = self.clock.now()
        fee, gas = self.cfg.paper_transfer_fee, self.cfg.paper_transfer_gas
        cash = self.journal.balances().cash
        if cash < t.amount + fee + gas:
            sym = self.quote_symbol()
            raise TransferRefused(self.name, f"transfer {t.client_id} (paper): needs {t.amount + fee + gas:,.2f} {sym} "
                                  f"({t.amount:,.2f} + fee {fee:,.2f} + gas {gas:,.2f}), the account has "
                                  f"{cash:,.2f}; nothing sent")  # fmt: skip
        state = self.network.send(self.name, t, available=cash - gas, fee=fee,
                                  delay=timedelta(minutes=self.cfg.paper_transfer_minutes), now=now)  # fmt: skip
        return replace(state, gas=self.journal.book_transfer_gas(t.client_id, gas))

    def _paper_fetch(self, client_id: str) -> TransferState | None:
        """The paper network's state of a transfer this account sent (None for one it did not); its gas
        is booked here if a crash came between the network's commit and the journal's."""
        assert self.journal is not None and self.network is not None
        if self._paper_source(client_id) != self.name:
            return None
        state = self.network.state(client_id, self.clock.now())
        if state is None:
            return None
        gas = self.journal.transfer_gas(client_id)
        if gas is None:
            gas = self.journal.book_transfer_gas(client_id, self.cfg.paper_transfer_gas)
        return replace(state, gas=gas)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self._own_ledger:
            self.ledger.close()

    # -- paper -------------------------------------------------------------------------------------------

    def _paper_requests(self) -> dict[str, OrderState]:
        """Simulated async requests: the parts due are fulfilled and claimed at today's NAV (booked, one
        fill each, less the fund's ``paper_fulfilment_fee_bps``), the rest reported OPEN with the fills
        so far. A real fund's manager decides when and how much; the paper one fulfils
        ``paper_async_parts`` equal parts at equal steps until ``paper_async_settlement_hours``."""
        assert self.journal is not None
        now = self.clock.now()
        out: dict[str, OrderState] = {}
        for cid, asset, side, qty, usd, _nav0, gas, settle_at, dp, parts in self.journal.requests():
            settle = datetime.fromisoformat(settle_at)
            step = timedelta(hours=self.cfg.paper_async_settlement_hours) / parts
            fills = self.journal.parts(cid)
            state: OrderState | None = None
            while len(fills) < parts:
                k = len(fills) + 1
                if settle - (parts - k) * step > now:
                    break
                assert self.async_ is not None
                nav = self._rpc("convertToAssets", lambda a=asset: self.async_.nav_per_share(a))  # type: ignore[union-attr]
                bps = self._asset(asset).paper_fulfilment_fee_bps
                last = k == parts
                if side == "buy":
                    paid = usd - sum(f.qty * f.price + f.fee for f in fills) if last else usd / parts
                    fee = paid * bps / (1e4 + bps)
                    units = (paid - fee) / nav
                    cash_delta, qty_delta = 0.0, units  # the cash left at the request
                else:
                    units = qty - sum(f.qty for f in fills) if last else qty / parts
                    fee = units * nav * bps / (1e4 + bps)
                    cash_delta, qty_delta = units * nav - fee, 0.0  # the shares left at the request
                slippage = (nav - dp) * units if side == "buy" else (dp - nav) * units
                fid = f"paper:{cid}" if parts == 1 else f"paper:{cid}:{k}"
                fill = ProductFill(fid, cid, self.name, asset, side, units, nav, fee, slippage, now,  # type: ignore[arg-type]
                                   gas if k == 1 else 0.0, product_fee=fee)  # fmt: skip
                fills.append(fill)
                done = sum(f.qty for f in fills)
                if last:
                    state = OrderState(cid, OrderStatus.FILLED, done, tuple(fills), f"paper-{cid}",
                                       f"paper {side} request fulfilled and claimed at NAV {nav:.6g}")  # fmt: skip
                    self.journal.book(state, asset, cash_delta, qty_delta, settles=True)
                else:
                    self.journal.book_part(cid, k, fill, asset, cash_delta, qty_delta)
            if state is None:
                msg = (f"paper {side} request: {len(fills)} of {parts} parts fulfilled, settles at {settle_at}"
                       if fills else f"paper {side} request pending until {settle_at}")  # fmt: skip
                state = OrderState(cid, OrderStatus.OPEN, sum(f.qty for f in fills), tuple(fills), f"paper-{cid}", msg)
            out[cid] = state
        return out

    def _paper_request(self, order: Order) -> OrderState:
        """An async fund on paper: the request's own call (``requestDeposit``/``requestRedeem`` from the
        account) is run with ``eth_call`` — eligibility and the vault's checks included — and its gas
        costed; what it takes leaves the paper account now, the shares or cash arrive when it settles."""
        assert self.journal is not None and self.async_ is not None
        a = self._asset(order.asset)
        c = self.async_.vaults[order.asset]
        me = self.address
        nav = self._rpc("convertToAssets", lambda: self.async_.nav_per_share(order.asset))  # type: ignore[union-attr]
        bal = self.journal.balances()
        if order.side == "buy":
            usd = order.qty * nav
            raw = int(usd * self._q)
            if bal.cash < usd:
                msg = f"order {order.client_id} (paper): needs {usd:.2f}, has {bal.cash:.2f}"
                raise InsufficientFunds(self.name, msg)
            call = c.functions.requestDeposit(raw, me, me)
            override = {self.stable.address: {"stateDiff": {
                _slot(me, self.cfg.quote_balance_slot): _word(raw),
                _slot(c.address, _slot_int(me, self.cfg.quote_allowance_slot)): _word(raw)}}}  # fmt: skip
        else:
            usd = 0.0
            raw = int(round(order.qty * self._unit(order.asset)))
            if bal.positions.get(order.asset, 0.0) < order.qty * (1 - 1e-12):
                msg = f"order {order.client_id} (paper): holds {bal.positions.get(order.asset, 0.0):.6f} {order.asset}"
                raise InsufficientFunds(self.name, msg)
            call = c.functions.requestRedeem(raw, me, me)
            override = {c.address: {"stateDiff": {_slot(me, a.balance_slot): _word(raw)}}}
        tx = {"from": me, "to": c.address, "data": call._encode_transaction_data(), "value": 0}
        try:
            gas = self._rpc("estimate", lambda: self.w3.eth.estimate_gas(tx, state_override=override))  # type: ignore[arg-type]
        except ContractLogicError as exc:
            reason = self.decoder.from_exception(exc)
            msg = f"order {order.client_id} (paper): request of {order.asset} would revert: {reason}"
            self._event("tx_reverted", msg, Severity.CRITICAL, client_id=order.client_id, reason=reason)
            raise VenueError(self.name, msg) from None
        block = self._latest()
        max_fee, prio = self._fees()
        gas_quote = gas * min(max_fee, int(block.get("baseFeePerGas") or 0) + prio) / 1e18 * self.native_price()
        settle_at = self.clock.now() + timedelta(hours=self.cfg.paper_async_settlement_hours)
        self.journal.request(order.client_id, order.asset, order.side, order.qty, usd, nav, gas_quote, settle_at,
                             order.decision_price, self.cfg.paper_async_parts)  # fmt: skip
        self._event("async_requested", f"{order.asset}: paper {order.side} request of {order.qty:.6g} pending "
                    f"until {settle_at.isoformat()}", Severity.INFO, client_id=order.client_id)  # fmt: skip
        return OrderState(order.client_id, OrderStatus.OPEN, 0.0, (), f"paper-{order.client_id}", "request pending")

    def _paper_place(self, order: Order) -> OrderState:
        assert self.journal is not None
        existing = self.journal.get(order.client_id)
        if existing is not None:
            return existing
        pending = self._paper_requests()
        if order.client_id in pending:
            return pending[order.client_id]
        if self._is_async(order.asset, order.side):
            return self._paper_request(order)
        block = self._latest()
        prep = self._prepare(order, deadline=int(block["timestamp"]) + self.cfg.deadline_s)
        bal = self.journal.balances()
        need = prep.amount_in / (self._q if prep.side == "buy" else self._unit(order.asset))
        have = bal.cash if prep.side == "buy" else bal.positions.get(order.asset, 0.0)
        if have < need:
            raise InsufficientFunds(self.name, f"order {order.client_id} (paper): needs {need:.6f}, has {have:.6f}")
        max_fee, prio = self._fees()
        override = self._overrides(order.asset, prep)
        tx = {"from": self.address, "to": prep.call.address, "data": prep.call._encode_transaction_data(), "value": 0}
        try:
            out_raw = self._rpc("eth_call", lambda: self.w3.eth.call(tx, state_override=override))  # type: ignore[arg-type]
            gas = self._rpc("estimate", lambda: self.w3.eth.estimate_gas(tx, state_override=override))  # type: ignore[arg-type]
            if prep.approve_token is not None:
                ap = prep.approve_token.functions.approve(prep.spender, prep.amount_in)
                gas += self._rpc("estimate approve", lambda: ap.estimate_gas({"from": self.address}))
        except ContractLogicError as exc:
            reason = self.decoder.from_exception(exc)
            msg = f"order {order.client_id} (paper): {prep.step} of {order.asset} would revert: {reason}"
            self._event("tx_reverted", msg, Severity.CRITICAL, client_id=order.client_id, reason=reason)
            raise VenueError(self.name, msg) from None
        # the call's own output; Router02's fee-on-transfer swaps return nothing: the prepared amounts
        # (already net of the transfer fee) stand, and the call proved that their minimum is met
        out = int.from_bytes(bytes(out_raw)[:32], "big") if len(bytes(out_raw)) >= 32 else prep.expected_out
        base = int(block.get("baseFeePerGas") or 0)
        gas_quote = gas * min(max_fee, base + prio) / 1e18 * self.native_price()
        route = self.routes[order.asset][prep.route]
        fee_bps = self._route_fee_bps(order.asset, route, prep.side)
        charged = 0.0  # the fund's own fee, measured on the state the trade was simulated on
        if route.kind == "vault":
            shares = out if prep.side == "buy" else prep.qty_raw
            nav_raw = self._nav_value(order.asset, shares, int(block["number"]), order.client_id)
            charged = product_fee(prep.side, prep.amount_in if prep.side == "buy" else out, nav_raw) / self._q
        if prep.side == "buy":
            units, q = out / self._unit(order.asset), prep.amount_in / self._q
            fee = q * fee_bps / 1e4 + charged
            price = (q - fee) / units
            slippage = (price - order.decision_price) * units
            cash_delta = -(q + gas_quote)
        else:
            units, q = prep.qty_raw / self._unit(order.asset), out / self._q
            gross = q / (1 - fee_bps / 1e4)
            fee = gross - q + charged
            price = (q + fee) / units
            slippage = (order.decision_price - price) * units
            cash_delta = q - gas_quote
        now = self.clock.now()
        args = (f"paper:{order.client_id}", order.client_id, self.name, order.asset, order.side, units, price, fee,
                slippage, now, gas_quote)  # fmt: skip
        fill = (ProductFill(*args, product_fee=charged if route.kind == "vault" else fee)
                if route.kind in ("vault", "manager") else Fill(*args))  # fmt: skip
        state = OrderState(order.client_id, OrderStatus.FILLED, units, (fill,), f"paper-{order.client_id}",
                           f"simulated by eth_call at block {block['number']}, {gas} gas")  # fmt: skip
        self.journal.book(state, order.asset, cash_delta, units if prep.side == "buy" else -units)
        return state

    def _overrides(self, asset: str, prep: Prepared) -> dict[str, Any]:
        """Give the paper account the balance and allowance the trade needs, in storage."""
        me = self.address
        a = self._asset(asset)
        if prep.side == "buy":
            token, bslot, aslot = self.stable.address, self.cfg.quote_balance_slot, self.cfg.quote_allowance_slot
        else:
            token, bslot, aslot = self.contracts[asset].address, a.balance_slot, a.allowance_slot
        diff = {_slot(me, bslot): _word(prep.amount_in)}
        if prep.spender is not None:
            diff[_slot(prep.spender, _slot_int(me, aslot))] = _word(prep.amount_in)
        return {token: {"stateDiff": diff}}


def configured_abis(cfg: EvmVenueConfig, where: str) -> dict[str, list[dict[str, Any]]]:
    """The ABIs and error signatures of the config (the quote token's, each asset's), for decoding reverts."""
    out: dict[str, list[dict[str, Any]]] = {}
    if cfg.quote_abi is not None:
        out["quote token"] = load_abi(cfg.quote_abi, f"{where}.quote_abi")
    if cfg.errors:
        out["venue errors"] = [error_abi(e) for e in cfg.errors]
    for name, a in cfg.assets.items():
        if a.abi is not None:
            out[f"asset {name}"] = load_abi(a.abi, f"{where}.assets.{name}.abi")
        if a.errors:
            out[f"asset {name} errors"] = [error_abi(e) for e in a.errors]
    return out


def eligibility_tokens(cfg: EvmVenueConfig) -> dict[str, TokenEligibility]:
    """The ``eligibility`` option, and for each other ``permissioned`` asset the checks its contracts
    support: the token's own allow-list (``isVerified``) and ``compliance().canTransfer`` (the
    ERC-3643-style views of the world's tokens), plus ``paused()`` where the asset is a vault's shares
    (a pool token has no ``paused()``; a paused pool is caught by the free gas estimate)."""
    out = dict(cfg.eligibility)
    for name, a in cfg.assets.items():
        if name in out or not a.permissioned:
            continue
        checks = ("allowlist", "compliance", "pause") if a.kind == "vault" else ("allowlist", "compliance")
        out[name] = TokenEligibility(token=a.address, checks=checks)
    return out


def _DISCARD_factory() -> Any:
    from web3.logs import DISCARD

    return DISCARD


_DISCARD = _DISCARD_factory()


def _slot_int(key: str, slot: int) -> int:
    return int.from_bytes(keccak(bytes.fromhex(key[2:].rjust(64, "0")) + slot.to_bytes(32, "big")), "big")


def _slot(key: str, slot: int) -> str:
    return "0x" + _slot_int(key, slot).to_bytes(32, "big").hex()


def _word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()
