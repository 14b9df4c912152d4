"""Asynchronous subscriptions and redemptions: ERC-7540 requests and a request-then-claim variant.

Why a state machine. An ERC-7540 fund (Centrifuge-style) does not settle in the transaction that
asks: ``requestDeposit``/``requestRedeem`` moves the stablecoin or the shares into the vault
(*pending*), the fund manager later fulfils it at the NAV of that day (*claimable*, and the vault
emits no event for it), and nothing arrives until the investor *claims* with ``deposit``/``redeem``.
The non-standard variant (the staked-stablecoin "cooldown": ``cooldownShares`` then ``unstake``
after a timestamp) has the same shape with a clock instead of a manager. So an order on such an
asset lives across cycles and restarts, and while it is open its value is neither cash nor a
position in the wallet: it must still count in NAV and risk, and the asset must not be traded again
until it settles.

How. Each request is an ``async_request`` ledger row (client id, side, raw amount, request id,
status, the claims already booked as fills), written before its first transaction is signed. The
transactions are signed, written to ``chain_tx`` and broadcast by a ``TxSender`` (``VenueSender``
adapts the ``evm`` venue's own signing, ledger-before-broadcast and receipt machinery), so they
carry the same guarantees as the venue's orders. ``poll()`` (every cycle, and on start) first settles
transactions in doubt (receipts, byte-identical rebroadcast, dropped), then reads the vault's views
(``pendingDepositRequest``/``claimableDepositRequest`` and the redeem pair, or the cooldown status),
claims what is claimable and books each mined claim once as a fill (with the fee the fund kept at
the fulfilments it takes, measured against their NAV: ``_fulfilment_fee``). Everything it decides is read
back from the chain and ``chain_tx``, so a crash at any point is resolved by the next poll.

Exposure. ``exposure()`` reads the on-chain pending and claimable amounts of the wallet (not the
ledger's belief) and values them: deposits by the assets waiting (pending) or the shares waiting
(claimable), redemptions by the shares in escrow at today's NAV (pending) or the stablecoin set
aside (claimable). ``held_fixed()`` names the assets with anything open. The cycle adds the units
to the asset's position (NAV and risk see them) and pins those assets' weights (lower = upper =
current) so the optimizer neither buys nor sells them until they settle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from eth_utils import function_signature_to_4byte_selector
from pydantic import Field, model_validator
from sqlmodel import select
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.logs import DISCARD

from bot.components import ComponentConfig
from bot.domain import Fill, Order, OrderState, OrderStatus, RiskEvent, Severity
from bot.errors import InsufficientFunds, InvalidOrder, VenueError
from bot.ledger import AsyncRequestRow, ChainTxRow, Ledger, OrderRow
from connectors.evm.chain import RevertDecoder, abis
from connectors.evm.fees import SCALE, ProductFill, fill_dict, fill_from_dict, product_fee

log = logging.getLogger("rwabot.evm.async")

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
OPEN = ("requesting", "pending", "claimable", "claiming")


# what nodes without a past block's state answer (geth, erigon, reth, nethermind, hosted providers)
NO_HISTORY = re.compile(r"missing trie node|header not found|state.*(not available|pruned|unavailable)|"
                        r"pruned|historical state|archive|not found.*state", re.IGNORECASE)  # fmt: skip


class _NoHistory(Exception):
    """The node has no state for a past block (not an archive node)."""


# ERC-165 interface ids of ERC-7540 (XOR of the selectors, checked against the EIP in the tests)
IID_ERC165 = bytes.fromhex("01ffc9a7")
IID_OPERATOR = bytes.fromhex("e3bc4e65")
IID_ASYNC_DEPOSIT = bytes.fromhex("ce3bbe50")
IID_ASYNC_REDEEM = bytes.fromhex("620ee8e4")

ERC20_ABI = [
    {"type": "function", "name": n, "stateMutability": m, "inputs": i, "outputs": [{"name": "", "type": o}]}
    for n, m, i, o in (
        ("balanceOf", "view", [{"name": "a", "type": "address"}], "uint256"),
        ("allowance", "view", [{"name": "o", "type": "address"}, {"name": "s", "type": "address"}], "uint256"),
        ("approve", "nonpayable", [{"name": "s", "type": "address"}, {"name": "v", "type": "uint256"}], "bool"),
    )
]


class AsyncAssetConfig(ComponentConfig):
    """One asset traded by request and claim.

    ``erc7540``: both sides as the vault declares them through ERC-165. ``cooldown``: redemptions
    only, by configured function signatures (the request takes the shares, the status view takes the
    controller and returns the claim time and the amount, the claim takes the receiver).
    """

    kind: Literal["erc7540", "cooldown"] = "erc7540"
    vault: str = Field(pattern=ADDRESS, description="the vault; its shares are the asset")
    decimals: int = Field(default=18, ge=0, le=36, description="decimals of the shares")
    request_fn: str = Field(default="cooldownShares(uint256)", description="cooldown: the request")
    status_fn: str = Field(default="cooldowns(address)", description="cooldown: the status view")
    status_outputs: tuple[str, ...] = Field(default=("uint104", "uint152"), min_length=2, strict=False)
    claimable_at_index: int = Field(default=0, ge=0, description="cooldown: output holding the claim time")
    amount_index: int = Field(default=1, ge=0, description="cooldown: output holding the assets waiting")
    claim_fn: str = Field(default="unstake(address)", description="cooldown: the claim")

    @model_validator(mode="after")
    def _indices(self) -> AsyncAssetConfig:
        n = len(self.status_outputs)
        if self.claimable_at_index >= n or self.amount_index >= n:
            raise ValueError(f"claimable_at_index and amount_index must be < {n} (the outputs of status_fn)")
        return self


@dataclass(frozen=True)
class AsyncSides:
    """What a vault declares through ERC-165."""

    erc165: bool
    operator: bool
    deposit: bool
    redeem: bool


@dataclass(frozen=True)
class PendingExposure:
    """Value of an asset's open requests, in asset units (at ``price``) and in the quote currency."""

    asset: str
    units: float
    value: float
    price: float
    pending_deposit: float  # quote waiting to become shares
    claimable_deposit_units: float
    pending_redeem_units: float
    claimable_redeem: float  # quote set aside for the claim


class TxSender(Protocol):
    """Signs, records in ``chain_tx`` before broadcast, and follows transactions.

    ``send`` estimates first (a revert raises ``VenueError`` and sends nothing), ``wait`` returns the
    receipt after the required confirmations, ``refresh`` settles rows in doubt without waiting.
    """

    address: str
    w3: Web3
    name: str

    def send(self, order: Order, step: str, fn: Any) -> ChainTxRow: ...

    def wait(self, row: ChainTxRow) -> Any: ...

    def refresh(self, rows: list[ChainTxRow]) -> list[ChainTxRow]: ...

    def native_price(self) -> float: ...


class VenueSender:
    """The ``evm`` venue's transaction machinery as a ``TxSender`` (same nonces, ledger, gas policy)."""

    def __init__(self, venue: Any) -> None:
        self.venue = venue
        self.address: str = venue.address
        self.w3: Web3 = venue.w3
        self.name: str = venue.name

    def send(self, order: Order, step: str, fn: Any) -> ChainTxRow:
        max_fee, prio = self.venue._fees()
        return self.venue._send(order, step, fn, max_fee, prio, notional=None)

    def wait(self, row: ChainTxRow) -> Any:
        return self.venue._wait(row)

    def refresh(self, rows: list[ChainTxRow]) -> list[ChainTxRow]:
        return self.venue._refresh(rows) if rows else rows

    def native_price(self) -> float:
        return float(self.venue.native_price())


def _sig_abi(signature: str, outputs: tuple[str, ...] = ()) -> dict[str, Any]:
    name, args = signature.split("(", 1)
    types = [t for t in args.rstrip(")").split(",") if t]
    return {
        "type": "function",
        "name": name,
        "stateMutability": "view" if outputs else "nonpayable",
        "inputs": [{"name": f"a{i}", "type": t} for i, t in enumerate(types)],
        "outputs": [{"name": f"o{i}", "type": t} for i, t in enumerate(outputs)],
    }


class AsyncRequests:
    """Open requests of one wallet on one chain: request, poll, claim, expose.

    ``quote_token``/``quote_decimals`` are the stablecoin the vaults take. ``eligible`` (optional) is
    called before any request is signed with ``(asset, side, raw_amount)`` and raises to refuse it.
    """

    def __init__(
        self,
        sender: TxSender,
        ledger: Ledger,
        assets: Mapping[str, AsyncAssetConfig],
        *,
        quote_token: str,
        quote_decimals: int = 6,
        emit: Callable[[RiskEvent], None] | None = None,
        now: Callable[[], datetime] | None = None,
        eligible: Callable[[str, str, int], None] | None = None,
        unit: Callable[[str], int] | None = None,
        quote_unit: Callable[[], int] | None = None,
        decoder: RevertDecoder | None = None,
    ) -> None:
        self.sender = sender
        self.w3 = sender.w3
        self.name = sender.name
        self.ledger = ledger
        self.assets = dict(assets)
        self._q = 10**quote_decimals
        self._quote_unit = quote_unit  # the venue's, once it has read the quote token's decimals
        self._unit_of = unit  # the venue's: share decimals read from the chain
        self.emit = emit or (lambda e: None)
        self.now = now or (lambda: datetime.now(UTC))
        self.eligible = eligible
        self.decoder = decoder or RevertDecoder()
        self.quote = self.w3.eth.contract(address=Web3.to_checksum_address(quote_token), abi=ERC20_ABI)
        abi = abis()["AsyncVault"]
        self.vaults = {
            a: self.w3.eth.contract(address=Web3.to_checksum_address(c.vault), abi=abi) for a, c in self.assets.items()
        }
        self._sides: dict[str, AsyncSides] = {}

    # -- helpers ----------------------------------------------------------------------------------------

    def _event(self, kind: str, message: str, sev: Severity = Severity.INFO, **data: Any) -> None:
        self.emit(RiskEvent(kind, sev, f"venue:{self.name}", message, self.now(), None, data))

    def _cfg(self, asset: str) -> AsyncAssetConfig:
        try:
            return self.assets[asset]
        except KeyError:
            raise InvalidOrder(self.name, f"{asset} is not an asynchronous asset of this venue") from None

    @property
    def q(self) -> int:
        return self._quote_unit() if self._quote_unit is not None else self._q

    def _unit(self, asset: str) -> int:
        self._cfg(asset)
        return self._unit_of(asset) if self._unit_of is not None else 10 ** self._cfg(asset).decimals

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn.call()
        except ContractLogicError as exc:
            raise VenueError(self.name, f"{what}: {self.decoder.from_exception(exc)}") from None

    def _cooldown_status(self, asset: str) -> tuple[int, int]:
        c = self._cfg(asset)
        view = self.w3.eth.contract(address=c.vault, abi=[_sig_abi(c.status_fn, c.status_outputs)])
        out = self._call(f"{asset} {c.status_fn}", getattr(view.functions, c.status_fn.split("(")[0])(self.address))
        return int(out[c.claimable_at_index]), int(out[c.amount_index])

    @property
    def address(self) -> str:
        return self.sender.address

    def detect(self, asset: str) -> AsyncSides:
        """The vault's ERC-165 answers; a contract without ERC-165 declares nothing."""
        if asset in self._sides:
            return self._sides[asset]
        vault = self._cfg(asset).vault

        def supports(iid: bytes) -> bool:
            data = "0x01ffc9a7" + iid.hex().ljust(64, "0")
            try:
                raw = self.w3.eth.call({"to": vault, "data": data})  # type: ignore[typeddict-item]
            except (ContractLogicError, ValueError):
                return False
            return len(raw) == 32 and int.from_bytes(raw, "big") == 1

        erc165 = supports(IID_ERC165) and not supports(bytes.fromhex("ffffffff"))
        sides = AsyncSides(
            erc165,
            erc165 and supports(IID_OPERATOR),
            erc165 and supports(IID_ASYNC_DEPOSIT),
            erc165 and supports(IID_ASYNC_REDEEM),
        )
        self._sides[asset] = sides
        return sides

    def nav_per_share(self, asset: str) -> float:
        """Quote per share from ``convertToAssets`` (the async sides' ``preview*`` revert by design)."""
        raw = self._call(f"{asset} convertToAssets", self.vaults[asset].functions.convertToAssets(self._unit(asset)))
        return raw / self.q

    # -- requests --------------------------------------------------------------------------------------------

    def request(self, order: Order) -> OrderState:
        """Open a request for an order: a buy requests a deposit, a sell a redemption (or a cooldown).

        Idempotent per client id: a second call resumes the first. One open request per asset: the
        asset is held fixed until it settles, so a second one is refused.
        """
        existing = self.ledger.get_async_request(order.client_id)
        if existing is not None:
            return self._resume(existing, order)
        c = self._cfg(order.asset)
        side = "deposit" if order.side == "buy" else "redeem"
        if c.kind == "erc7540":
            sides = self.detect(order.asset)
            if not (sides.deposit if side == "deposit" else sides.redeem):
                raise InvalidOrder(
                    self.name,
                    f"{order.asset}: vault {c.vault} does not declare asynchronous {side}s through ERC-165; "
                    "trade it as a plain ERC-4626 vault",
                )
        elif side == "deposit":
            raise InvalidOrder(self.name, f"{order.asset}: the cooldown variant only redeems asynchronously")
        busy = [r for r in self.ledger.async_requests(venue=self.name, open_only=True) if r.asset == order.asset]
        if busy:
            raise InvalidOrder(
                self.name, f"{order.asset}: request {busy[0].client_id} is still {busy[0].status}; asset held fixed"
            )
        shares_raw = int(round(order.qty * self._unit(order.asset)))
        if shares_raw <= 0:
            raise InvalidOrder(self.name, f"{order.asset}: quantity {order.qty} rounds to zero shares")
        vault = self.vaults[order.asset]
        if side == "deposit":
            amount = self._call("convertToAssets", vault.functions.convertToAssets(shares_raw))
            have = self._call("stablecoin balance", self.quote.functions.balanceOf(self.address))
        else:
            amount = shares_raw
            have = self._call("share balance", vault.functions.balanceOf(self.address))
        if amount > have:
            raise InsufficientFunds(
                self.name, f"{order.asset}: {side} request needs {amount} raw units, the wallet has {have}"
            )
        if self.eligible is not None:
            self.eligible(order.asset, side, amount)
        row = AsyncRequestRow(
            client_id=order.client_id, venue=self.name, asset=order.asset, side=side, kind=c.kind, vault=c.vault,
            controller=self.address, amount_raw=str(amount), qty=order.qty, decision_price=order.decision_price,
            status="requesting", created_at=self.now(), updated_at=self.now(),
        )  # fmt: skip
        self.ledger.add_async_request(row)
        return self._send_request(row, order)

    def _send_request(self, row: AsyncRequestRow, order: Order) -> OrderState:
        amount = int(row.amount_raw)
        vault = self.vaults[row.asset]
        if row.side == "deposit":
            allowance = self._call("allowance", self.quote.functions.allowance(self.address, vault.address))
            if allowance != amount:  # exact-amount approval
                tx = self.sender.send(order, "approve", self.quote.functions.approve(vault.address, amount))
                if self.sender.wait(tx)["status"] != 1:
                    return self._fail(row, f"approval {tx.tx_hash} reverted")
            fn = vault.functions.requestDeposit(amount, self.address, self.address)
        elif row.kind == "erc7540":
            fn = vault.functions.requestRedeem(amount, self.address, self.address)
        else:
            c = self._cfg(row.asset)
            fn = self._variant(c, c.request_fn)(amount)
        tx = self.sender.send(order, "request", fn)  # in chain_tx before the node sees it
        self.ledger.update_async_request(row.client_id, request_tx=tx.tx_hash)
        self.sender.wait(tx)
        return self._advance(self.ledger.get_async_request(row.client_id))  # type: ignore[arg-type]

    def _variant(self, c: AsyncAssetConfig, signature: str) -> Any:
        contract = self.w3.eth.contract(address=c.vault, abi=[_sig_abi(signature)])
        return getattr(contract.functions, signature.split("(")[0])

    def _resume(self, row: AsyncRequestRow, order: Order) -> OrderState:
        if row.status == "requesting" and not self._txs(row, "request"):
            return self._send_request(row, order)  # nothing was signed: sending cannot double anything
        return self._advance(row)

    def _fail(self, row: AsyncRequestRow, message: str) -> OrderState:
        self.ledger.update_async_request(row.client_id, status="failed", message=message[:500])
        self._event("async_failed", f"{row.asset} {row.side} request {row.client_id}: {message}", Severity.CRITICAL)
        return self.order_state(row.client_id)  # type: ignore[return-value]

    def _txs(self, row: AsyncRequestRow, step: str) -> list[ChainTxRow]:
        # a row another of ours replaced (fee bump) never executes: its replacement stands for it
        return [t for t in self.ledger.txs(venue=self.name, client_id=row.client_id)
                if t.step == step and t.status != "replaced"]  # fmt: skip

    # -- polling ---------------------------------------------------------------------------------------------

    def poll(self) -> list[OrderState]:
        """Advance every open request once; returns the states of those that changed.

        Claims are booked into the ledger's orders when the order row exists (the cycle's leg)."""
        out = []
        for row in self.ledger.async_requests(venue=self.name, open_only=True):
            before = (row.status, len(row.claim_txs))
            state = self._advance(row)
            after = self.ledger.get_async_request(row.client_id)
            assert after is not None
            if (after.status, len(after.claim_txs)) != before:
                out.append(state)
                self._book(state)
        return out

    def _book(self, state: OrderState) -> None:

        with self.ledger.session() as s:
            exists = s.exec(select(OrderRow.id).where(OrderRow.client_id == state.client_id)).first()
        if exists is not None:
            self.ledger.record_order_state(state)

    def _advance(self, row: AsyncRequestRow, *, may_claim: bool = True) -> OrderState:
        """One step of the state machine, entirely from ``chain_tx`` and the vault's views."""
        if row.status in ("claimed", "failed"):
            return self.order_state(row.client_id)  # type: ignore[return-value]
        # 1. the request transaction
        if row.status == "requesting":
            reqs = self.sender.refresh(self._txs(row, "request"))
            if not reqs:
                return self._fail(row, "the request was never signed (crash before sending)")
            tx = reqs[-1]
            if tx.status in ("signed", "sent"):
                self.sender.wait(tx)
                tx = self._txs(row, "request")[-1]
            if tx.status != "mined":
                return self._fail(row, f"request {tx.tx_hash} {tx.status}: {tx.message}")
            rid = self._request_id(row, tx.tx_hash)
            row = self.ledger.update_async_request(row.client_id, status="pending", request_id=str(rid))
            self._event("async_requested", f"{row.asset}: {row.side} request {rid} pending ({tx.tx_hash})")
        # 2. claims already sent: book the mined ones once, wait for those in doubt
        claims = self.sender.refresh(self._txs(row, "claim"))
        doubt = [t for t in claims if t.status in ("signed", "sent")]
        if doubt:
            if row.status != "claiming":
                row = self.ledger.update_async_request(row.client_id, status="claiming")
            for t in doubt:  # rebroadcast by refresh if the node lost it; a timeout leaves it in flight
                self.sender.wait(t)
            claims = self._txs(row, "claim")
        for tx in claims:
            if tx.status == "mined" and tx.tx_hash not in row.claim_txs:
                row = self._book_claim(row, tx)
        # 3. where the request stands on chain
        pending, claimable, claimable_at = self._onchain(row)
        if claimable == 0:
            if pending == 0 and row.claim_txs:
                row = self.ledger.update_async_request(row.client_id, status="claimed", settled_at=self.now())
                self._event("async_settled", f"{row.asset}: {row.side} request {row.client_id} settled")
            elif row.status != "pending" or claimable_at != row.claimable_at:
                row = self.ledger.update_async_request(row.client_id, status="pending", claimable_at=claimable_at)
            return self.order_state(row.client_id)  # type: ignore[return-value]
        if row.status not in ("claimable", "claiming"):
            self._event("async_claimable", f"{row.asset}: {row.side} request {row.client_id} is claimable")
        if not may_claim:  # a claim of this poll reverted: the next poll estimates it again first
            row = self.ledger.update_async_request(row.client_id, status="claimable", claimable_at=claimable_at)
            return self.order_state(row.client_id)  # type: ignore[return-value]
        row = self.ledger.update_async_request(row.client_id, status="claiming", claimable_at=claimable_at)
        order = Order(row.client_id, "", self.name, row.asset, "buy" if row.side == "deposit" else "sell", row.qty, 0)
        try:
            tx = self.sender.send(order, "claim", self._claim_fn(row, claimable))
        except VenueError as exc:  # refused before signing, or signed and maybe sent: the next poll knows
            doubt = any(t.status in ("signed", "sent") for t in self._txs(row, "claim"))
            self.ledger.update_async_request(
                row.client_id, status="claiming" if doubt else "claimable", message=str(exc)[:500]
            )
            raise
        receipt = self.sender.wait(tx)
        fresh = next(t for t in self._txs(row, "claim") if t.tx_hash == tx.tx_hash)
        if receipt["status"] == 1:
            row = self._book_claim(row, fresh)
            return self._advance(row)
        self._event("async_claim_reverted", f"{row.asset}: claim {tx.tx_hash} reverted: {fresh.message}",
                    Severity.CRITICAL)  # fmt: skip
        return self._advance(row, may_claim=False)

    def _onchain(self, row: AsyncRequestRow) -> tuple[int, int, int | None]:
        """(pending, claimable, claimable_at) in the side's raw unit: assets for deposits, shares for
        redemptions; the cooldown variant's amount is in assets and claimable once its time is past."""
        if row.kind == "cooldown":
            at, amount = self._cooldown_status(row.asset)
            ts = int(self.w3.eth.get_block("latest")["timestamp"])
            return (amount, 0, at) if ts < at else (0, amount, at)
        v, rid = self.vaults[row.asset], int(row.request_id or 0)
        if row.side == "deposit":
            pending = self._call("pendingDepositRequest", v.functions.pendingDepositRequest(rid, self.address))
            claimable = self._call("claimableDepositRequest", v.functions.claimableDepositRequest(rid, self.address))
        else:
            pending = self._call("pendingRedeemRequest", v.functions.pendingRedeemRequest(rid, self.address))
            claimable = self._call("claimableRedeemRequest", v.functions.claimableRedeemRequest(rid, self.address))
        return int(pending), int(claimable), None

    def _claim_fn(self, row: AsyncRequestRow, claimable: int) -> Any:
        v = self.vaults[row.asset]
        if row.kind == "cooldown":
            return self._variant(self._cfg(row.asset), self._cfg(row.asset).claim_fn)(self.address)
        if row.side == "deposit":
            return v.functions.deposit(claimable, self.address, self.address)
        return v.functions.redeem(claimable, self.address, self.address)

    def _request_id(self, row: AsyncRequestRow, tx_hash: str) -> int:
        if row.kind == "cooldown":
            return 0
        receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        ev = self.vaults[row.asset].events
        event = ev.DepositRequest() if row.side == "deposit" else ev.RedeemRequest()
        logs = event.process_receipt(receipt, errors=DISCARD)
        if not logs:
            raise VenueError(self.name, f"request {tx_hash} of {row.asset} mined without a request event")
        return int(logs[-1]["args"]["requestId"])

    def _book_claim(self, row: AsyncRequestRow, tx: ChainTxRow) -> AsyncRequestRow:
        """A mined claim becomes a fill: the shares, the fund's fee at fulfilment (ERC-7540: measured
        against the NAV of each fulfilment the claim takes, ``_fulfilment_fee``) and the NAV paid or
        received per share, so ``qty · price + fee`` is the cash that moved."""
        receipt = self.w3.eth.get_transaction_receipt(tx.tx_hash)  # type: ignore[arg-type]
        unit = self._unit(row.asset)
        charged = 0.0
        if row.kind == "cooldown":
            assets = self._transfer_to_self(receipt)
            shares = row.qty  # burnt at the request, at the NAV of the request
        else:
            assets_raw, shares_raw = self._claimed(row, receipt, tx.tx_hash)
            assets, shares = assets_raw / self.q, shares_raw / unit
            charged = self._fulfilment_fee(row, tx.tx_hash, receipt, assets_raw, shares_raw) / self.q
        first = not row.claim_txs
        gas = tx.gas_cost_quote
        if first:  # the approval and the request are paid by the first fill
            gas += sum(t.gas_cost_quote for t in self.ledger.txs(venue=self.name, client_id=row.client_id)
                       if t.step in ("approve", "request"))  # fmt: skip
        side = "buy" if row.side == "deposit" else "sell"
        sign = 1.0 if side == "buy" else -1.0
        price = (assets - sign * charged) / shares if shares else 0.0  # the NAV: the fee is booked apart
        args = (tx.tx_hash, row.client_id, self.name, row.asset, side, shares, price, charged,
                sign * (price - row.decision_price) * shares, self.now(), gas)  # fmt: skip
        fill = Fill(*args) if row.kind == "cooldown" else ProductFill(*args, product_fee=charged)  # type: ignore[arg-type]
        fills = [*row.fills, fill_dict(fill)]
        self._event("async_claimed", f"{row.asset}: claimed {shares:.6g} shares at {price:.6g}"
                    f"{f', fund fee {charged:.6g}' if charged else ''} ({tx.tx_hash})")  # fmt: skip
        return self.ledger.update_async_request(
            row.client_id, claim_txs=[*row.claim_txs, tx.tx_hash], fills=fills, filled_qty=row.filled_qty + shares
        )

    def _claimed(self, row: AsyncRequestRow, receipt: Any, tx_hash: str) -> tuple[int, int]:
        """(assets, shares) of a mined ERC-7540 claim, raw, from its Deposit/Withdraw event."""
        ev = self.vaults[row.asset].events
        logs = (ev.Deposit() if row.side == "deposit" else ev.Withdraw()).process_receipt(receipt, errors=DISCARD)
        logs = [lg for lg in logs if lg["address"].lower() == self.vaults[row.asset].address.lower()]
        if not logs:
            raise VenueError(self.name, f"claim {tx_hash} of {row.asset} mined without a Deposit/Withdraw")
        return int(logs[-1]["args"]["assets"]), int(logs[-1]["args"]["shares"])

    # -- the fund's fee at fulfilment -------------------------------------------------------------------------

    def _call_at(self, what: str, fn: Any, block: int | str) -> int:
        """A view at ``block``; a node without that block's state raises ``_NoHistory``."""
        try:
            return int(fn.call(block_identifier=block))
        except ContractLogicError as exc:
            raise VenueError(self.name, f"{what} at block {block}: {self.decoder.from_exception(exc)}") from None
        except Web3RPCError as exc:  # a pruned node says so; anything else is retried at the next poll
            if NO_HISTORY.search(str(exc)):
                raise _NoHistory(str(exc)[:200]) from None
            raise VenueError(
                self.name, f"{what} at block {block}: node error: {str(exc)[:300]}", retryable=True
            ) from None

    def _convert_micro(self, fn: Any, amount: int, block: int | str, what: str) -> int:
        """``fn(amount · 10⁶)`` at ``block`` (ERC-4626 conversions are linear: six more digits), or
        ``fn(amount) · 10⁶`` where the scaled amount overflows the vault's arithmetic."""
        try:
            return self._call_at(what, fn(amount * SCALE), block)
        except VenueError:
            return SCALE * self._call_at(what, fn(amount), block)

    def _fulfilment_fee(self, row: AsyncRequestRow, tx_hash: str, receipt: Any, assets: int, shares: int) -> int:
        """Raw quote units the fund kept of what this claim takes, at the fulfilment(s) it takes.

        An ERC-7540 manager fixes the price of a request when it fulfils it (all of it or a part), and
        a fund that charges a fee then (an exit fee on redemptions, an entry fee on subscriptions) sets
        aside less stablecoin, or mints fewer shares, than the NAV of that moment gives; the vault says
        nothing of it in the claim's event. Measured like a synchronous fill's (``fees.py``), against
        the fund's own valuation *at the block of each fulfilment*: the blocks where the request's
        pending amount fell are found by bisection of ``pending*Request(requestId, controller)`` over
        the blocks since the request (historical state, as an archive node keeps it); each part
        fulfilled is valued there (redemption: ``convertToAssets`` of its shares; subscription:
        ``convertToShares`` of its assets, the shares the NAV would give). Claims take from what is
        claimable in proportion (ERC-7540: a claimable request's rate is fixed, partial claims are pro
        rata), so the claims already mined are replayed first:

            redeem:  fee = value of the shares claimed at their fulfilments' NAV − assets received
            deposit: fee = assets claimed − value of the shares received at their fulfilments' NAV

        A node without that history: the NAV of the latest block, with a ``product_fee_estimated``
        warning."""
        redeem = row.side == "redeem"
        block = int(receipt["blockNumber"])
        try:
            value = self._fulfilled_value(row, tx_hash, receipt, shares if redeem else assets, shares)
        except _NoHistory as exc:
            value, why = None, f"the state of past blocks is not available ({exc})"
        else:
            why = "its fulfilments could not be told apart in the vault's pending amounts"
        if value is None:
            conv = self.vaults[row.asset].functions.convertToAssets
            value = self._convert_micro(conv, shares, "latest", f"{row.asset} convertToAssets")
            msg = (f"{row.asset}: claim {tx_hash} of request {row.client_id} (block {block}): {why}; its fund fee "
                   "is measured at the latest block's NAV")  # fmt: skip
            self._event("product_fee_estimated", msg, Severity.WARNING, client_id=row.client_id)
        return product_fee("sell" if redeem else "buy", assets, value)

    def _fulfilled_value(
        self, row: AsyncRequestRow, tx_hash: str, receipt: Any, claimed: int, shares: int
    ) -> int | None:
        """Millionths of a raw quote unit: what the shares of this claim were worth at their
        fulfilments' NAV (None: the fulfilments and the claims do not add up)."""
        v, rid, me = self.vaults[row.asset], int(row.request_id or 0), self.address
        redeem = row.side == "redeem"
        req = next((t for t in self._txs(row, "request") if t.status == "mined"), None)
        if req is None:
            return None
        start = int(self.w3.eth.get_transaction_receipt(req.tx_hash)["blockNumber"])  # type: ignore[arg-type]
        end = int(receipt["blockNumber"])
        amount = int(row.amount_raw)
        pending = v.functions.pendingRedeemRequest if redeem else v.functions.pendingDepositRequest
        what = f"{row.asset} {'pendingRedeemRequest' if redeem else 'pendingDepositRequest'}({rid})"
        fulfilled: dict[int, int] = {start - 1: 0}  # before the request: nothing

        def f(b: int) -> int:  # the part of the request fulfilled by the end of block b
            if b not in fulfilled:
                fulfilled[b] = amount - self._call_at(what, pending(rid, me), b)
            return fulfilled[b]

        steps: list[tuple[int, int]] = []

        def split(lo: int, hi: int) -> None:  # the request's pending amount only falls: bisect where
            if f(hi) == f(lo):
                return
            if hi == lo + 1:
                if f(hi) > f(lo):
                    steps.append((hi, f(hi) - f(lo)))
                return
            mid = (lo + hi) // 2
            split(lo, mid)
            split(mid, hi)

        split(start - 1, end)
        # (block, 0 = a fulfilment / 1 = a claim, position in the block, amount, is this claim)
        events: list[tuple[int, int, int, int, bool]] = [(b, 0, 0, d, False) for b, d in steps]
        for h in row.claim_txs:
            if h == tx_hash:
                continue
            r = self.w3.eth.get_transaction_receipt(h)  # type: ignore[arg-type]
            a, s = self._claimed(row, r, h)
            events.append((int(r["blockNumber"]), 1, int(r["transactionIndex"]), s if redeem else a, False))
        events.append((end, 1, int(receipt["transactionIndex"]), claimed, True))
        conv = v.functions.convertToAssets if redeem else v.functions.convertToShares
        conv_what = f"{row.asset} {'convertToAssets' if redeem else 'convertToShares'}"
        units = worth = 0  # what is claimable: units of the request's side; redeem: its value, deposit: NAV shares
        for b, kind, _i, amt, this in sorted(events):
            if kind == 0:
                units += amt
                micro = self._convert_micro(conv, amt, b, conv_what)
                # a redemption's part is worth whole units: the vault sets aside whole units, and what it
                # rounds away (less than one per fulfilment) is not a fee
                worth += micro // SCALE * SCALE if redeem else micro
                continue
            if amt > units or units == 0:
                return None
            part = worth * amt // units
            units, worth = units - amt, worth - part
            if this:
                if redeem:
                    return part
                return shares * amt * SCALE * SCALE // part if part > 0 else None
        return None

    def _transfer_to_self(self, receipt: Any) -> float:
        topic = Web3.keccak(text="Transfer(address,address,uint256)")
        me = bytes.fromhex(self.address[2:].lower().rjust(64, "0"))
        total = 0
        for lg in receipt["logs"]:
            if lg["address"].lower() == self.quote.address.lower() and lg["topics"][0] == topic:
                if bytes(lg["topics"][2]) == me:
                    total += int.from_bytes(bytes(lg["data"]), "big")
        return total / self.q

    # -- what the cycle reads ------------------------------------------------------------------------------

    def order_state(self, client_id: str) -> OrderState | None:
        row = self.ledger.get_async_request(client_id)
        if row is None:
            return None
        fills = tuple(fill_from_dict(d) for d in row.fills)
        if row.status == "claimed":
            status = OrderStatus.FILLED
        elif row.status == "failed":
            status = OrderStatus.CANCELED if fills else OrderStatus.REJECTED
        else:
            status = OrderStatus.OPEN
        msg = row.message or f"async {row.side} {row.status}"
        return OrderState(client_id, status, row.filled_qty, fills, row.request_tx, msg)

    def exposure(self) -> dict[str, PendingExposure]:
        """Per asset, the value of the wallet's open requests, read from the vaults (the truth)."""
        out: dict[str, PendingExposure] = {}
        open_rows = self.ledger.async_requests(venue=self.name, open_only=True)
        for asset, c in self.assets.items():
            sides = self.detect(asset) if c.kind == "erc7540" else None
            if sides is not None and not (sides.deposit or sides.redeem):
                continue  # an ERC-4626 vault with both sides synchronous: nothing can be in flight
            v, unit = self.vaults[asset], self._unit(asset)
            price = self.nav_per_share(asset)
            pd = cdu = pru = cr = 0.0
            if sides is None:
                _, amount = self._cooldown_status(asset)
                cr = amount / self.q  # fixed at the request: counts as quote waiting either way
            else:
                # request 0 (vaults that aggregate a controller's requests) and every id the ledger has open
                def rids(side: str, asset: str = asset) -> list[int]:
                    return sorted({0} | {int(r.request_id) for r in open_rows
                                         if r.asset == asset and r.side == side and r.request_id})  # fmt: skip

                if sides.deposit:
                    pd = sum(self._call("pendingDepositRequest", v.functions.pendingDepositRequest(i, self.address))
                             for i in rids("deposit")) / self.q  # fmt: skip
                    cdu = self._call("maxMint", v.functions.maxMint(self.address)) / unit
                if sides.redeem:
                    pru = sum(self._call("pendingRedeemRequest", v.functions.pendingRedeemRequest(i, self.address))
                              for i in rids("redeem")) / unit  # fmt: skip
                    cr = self._call("maxWithdraw", v.functions.maxWithdraw(self.address)) / self.q
            value = pd + cdu * price + pru * price + cr
            if value > 0:
                out[asset] = PendingExposure(asset, value / price, value, price, pd, cdu, pru, cr)
        return out

    def held_fixed(self) -> frozenset[str]:
        """Assets that must not be traded this cycle: an open request in the ledger or value on chain."""
        open_rows = {r.asset for r in self.ledger.async_requests(venue=self.name, open_only=True)}
        return frozenset(open_rows | set(self.exposure()))


def erc165_id(*signatures: str) -> bytes:
    """XOR of the function selectors: an interface id, computed independently of any contract."""
    v = 0
    for s in signatures:
        v ^= int.from_bytes(function_signature_to_4byte_selector(s), "big")
    return v.to_bytes(4, "big")


__all__ = [
    "AsyncAssetConfig",
    "AsyncRequests",
    "AsyncSides",
    "PendingExposure",
    "TxSender",
    "VenueSender",
    "erc165_id",
]
