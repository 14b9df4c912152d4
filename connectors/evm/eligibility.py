"""Eligibility before every on-chain leg: may these addresses move this token, right now?

Why. A permissioned token (ERC-3643 / T-REX, or an issuer's allow-list) reverts a transfer whose
sender or receiver is not allowed, and a revert mined on chain is paid in gas. Worse, view quoters
(``getAmountOut``) still quote a pool whose address is not verified, so a quote proves nothing. The
checks here are ``eth_call`` views only, run before anything is signed, for every transfer the
trade implies: the bot's wallet and each counterparty (pool, vault, manager). A failure raises
``NotEligible`` ("not eligible: <who>, <why>") and emits a ``not_eligible`` risk event naming every
reason found, never a revert. A view that cannot be read fails closed (not eligible).

Pluggable per token: ``TokenEligibility.checks`` names the checks to run, in order, from
``CHECKS``; ``register_check`` adds one (a plugin's issuer-specific rule). Built in:

- ``erc3643``: what T-REX's ``Token.transfer`` requires: the token not ``paused()``, neither wallet
  ``isFrozen``, enough unfrozen balance (``balanceOf - getFrozenTokens``), the receiver
  ``identityRegistry().isVerified``, and ``compliance().canTransfer(from, to, amount)``. A mint needs
  the receiver verified and the compliance; a burn needs nothing from the holder's side.
- ``allowlist``: a configured view (``allowlist_fn`` on ``allowlist``, default the token's own
  ``isVerified(address)``) must be true for every party.
- ``compliance``: ``compliance().canTransfer(from, to, amount)`` only (tokens without pause/freeze views).
- ``pause``: ``pause_fn`` must be false on the token and on ``pause_targets`` (a pool, a vault).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import Field
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception

from bot.components import ComponentConfig
from bot.domain import RiskEvent, Severity
from bot.errors import InvalidOrder
from connectors.evm.chain import RevertDecoder

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
ZERO = "0x" + "00" * 20


class TokenEligibility(ComponentConfig):
    """How to decide whether a token may move between two addresses."""

    token: str = Field(pattern=ADDRESS)
    checks: tuple[str, ...] = Field(default=("erc3643",), min_length=1, strict=False)  # TOML gives lists
    allowlist: str | None = Field(default=None, pattern=ADDRESS, description="contract of the list (the token)")
    allowlist_fn: str = Field(default="isVerified(address)", description="view(address) -> bool")
    pause_fn: str = Field(default="paused()", description="view() -> bool")
    pause_targets: tuple[str, ...] = Field(
        default=(), strict=False, description="other contracts whose pause blocks the trade"
    )


@dataclass(frozen=True)
class Party:
    role: str  # wallet, pool, vault, manager, ...
    address: str

    def __str__(self) -> str:
        return f"{self.role} {self.address}"


@dataclass(frozen=True)
class Transfer:
    """One movement of the token a trade implies; ``sender`` None is a mint, ``receiver`` None a burn."""

    sender: Party | None
    receiver: Party | None
    amount: int


class NotEligible(InvalidOrder):
    """A trade refused before anything was signed: who may not move the token, and why."""


class Check(Protocol):
    def __call__(self, ctx: CheckContext, t: Transfer) -> list[str]: ...


@dataclass
class CheckContext:
    w3: Web3
    asset: str
    cfg: TokenEligibility
    decoder: RevertDecoder

    def view(self, address: str, signature: str, outputs: Sequence[str], *args: Any) -> Any:
        """Call a view by its signature; raises ``Unreadable`` with the decoded reason."""
        name, rest = signature.split("(", 1)
        types = [t for t in rest.rstrip(")").split(",") if t]
        abi = [{
            "type": "function", "name": name, "stateMutability": "view",
            "inputs": [{"name": f"a{i}", "type": t} for i, t in enumerate(types)],
            "outputs": [{"name": f"o{i}", "type": t} for i, t in enumerate(outputs)],
        }]  # fmt: skip
        c = self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)
        try:
            out = getattr(c.functions, name)(*args).call()
        except ContractLogicError as exc:
            raise Unreadable(f"{signature} on {address} reverts: {self.decoder.from_exception(exc)}") from None
        except (Web3Exception, ValueError) as exc:  # no such function: empty return data, bad ABI decode
            raise Unreadable(f"{signature} on {address} cannot be read: {type(exc).__name__}") from None
        return out


class Unreadable(Exception):
    """A view the check needs did not answer: the trade is not eligible (fail closed)."""


def erc3643(ctx: CheckContext, t: Transfer) -> list[str]:
    token, why = ctx.cfg.token, []
    f = ctx.view
    if t.sender is not None and t.receiver is not None and f(token, "paused()", ["bool"]):
        why.append(f"token {ctx.asset} ({token}) is paused")
    for p in (t.sender, t.receiver):
        if p is not None and f(token, "isFrozen(address)", ["bool"], p.address):
            why.append(f"{p} is frozen on {ctx.asset}")
    if t.sender is not None and t.receiver is not None and t.sender.role == "wallet":  # our own balance only
        bal = f(token, "balanceOf(address)", ["uint256"], t.sender.address)
        frozen = f(token, "getFrozenTokens(address)", ["uint256"], t.sender.address)
        if t.amount > bal - frozen:
            why.append(f"{t.sender} has {bal - frozen} unfrozen of {bal} ({frozen} frozen), needs {t.amount}")
    if t.receiver is not None:
        registry = f(token, "identityRegistry()", ["address"])
        if not f(registry, "isVerified(address)", ["bool"], t.receiver.address):
            why.append(f"{t.receiver} is not verified in {ctx.asset}'s identity registry {registry}")
    compliance = f(token, "compliance()", ["address"])
    frm = t.sender.address if t.sender else ZERO
    to = t.receiver.address if t.receiver else ZERO
    if not f(compliance, "canTransfer(address,address,uint256)", ["bool"], frm, to, t.amount):
        why.append(
            f"compliance {compliance} refuses {t.sender or 'mint'} -> {t.receiver or 'burn'} of {t.amount} {ctx.asset}"
        )
    return why


def allowlist(ctx: CheckContext, t: Transfer) -> list[str]:
    where = ctx.cfg.allowlist or ctx.cfg.token
    return [
        f"{p} is not on the allow-list ({ctx.cfg.allowlist_fn} on {where})"
        for p in (t.sender, t.receiver)
        if p is not None and not ctx.view(where, ctx.cfg.allowlist_fn, ["bool"], p.address)
    ]


def compliance(ctx: CheckContext, t: Transfer) -> list[str]:
    """``compliance().canTransfer(from, to, amount)`` alone: for tokens with an ERC-3643-style compliance
    view but no ``paused``/``isFrozen`` (the allow-listed tokens of ``Permissioned.sol``)."""
    where = ctx.view(ctx.cfg.token, "compliance()", ["address"])
    frm = t.sender.address if t.sender else ZERO
    to = t.receiver.address if t.receiver else ZERO
    if ctx.view(where, "canTransfer(address,address,uint256)", ["bool"], frm, to, t.amount):
        return []
    return [f"compliance {where} refuses {t.sender or 'mint'} -> {t.receiver or 'burn'} of {t.amount} {ctx.asset}"]


def pause(ctx: CheckContext, t: Transfer) -> list[str]:
    return [
        f"{a} is paused ({ctx.cfg.pause_fn})"
        for a in (ctx.cfg.token, *ctx.cfg.pause_targets)
        if ctx.view(a, ctx.cfg.pause_fn, ["bool"])
    ]


CHECKS: dict[str, Check] = {"erc3643": erc3643, "allowlist": allowlist, "compliance": compliance, "pause": pause}


def register_check(name: str, check: Check) -> None:
    """Add a check that token configs can name (e.g. an issuer's own rule, from a plugin)."""
    if name in CHECKS:
        raise ValueError(f"eligibility check {name!r} exists already")
    CHECKS[name] = check


def trade_transfers(kind: Literal["pool", "vault", "async", "manager"], side: str, wallet: str,
                    counterparty: str, amount: int) -> list[Transfer]:  # fmt: skip
    """The transfers of the traded token a trade implies, with the roles named for the messages."""
    me = Party("wallet", wallet)
    role = {"pool": "pool", "vault": "vault", "async": "vault", "manager": "manager"}[kind]
    other = Party(role, counterparty)
    buy = side in ("buy", "deposit")
    if kind == "pool":
        return [Transfer(other, me, amount) if buy else Transfer(me, other, amount)]
    if kind == "vault":  # shares are minted to the wallet and burnt from it
        return [Transfer(None, me, amount) if buy else Transfer(me, None, amount)]
    if kind == "async":  # claims come out of the vault's escrow, redemptions go into it
        return [Transfer(other, me, amount) if buy else Transfer(me, other, amount)]
    return [Transfer(None, me, amount) if buy else Transfer(me, other, amount)]  # manager: mint / take back


class Eligibility:
    """The per-token checks of one venue. ``check`` raises ``NotEligible`` with every reason found."""

    def __init__(
        self,
        w3: Web3,
        venue: str,
        tokens: dict[str, TokenEligibility],
        *,
        emit: Callable[[RiskEvent], None] | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        unknown = {c for cfg in tokens.values() for c in cfg.checks} - set(CHECKS)
        if unknown:
            raise ValueError(f"unknown eligibility checks {sorted(unknown)}; known: {sorted(CHECKS)}")
        self.w3, self.venue, self.tokens = w3, venue, dict(tokens)
        self.emit = emit or (lambda e: None)
        self.now = now or (lambda: datetime.now(UTC))
        self.decoder = RevertDecoder()

    def reasons(self, asset: str, transfers: Sequence[Transfer]) -> list[str]:
        cfg = self.tokens.get(asset)
        if cfg is None:
            return []  # not a permissioned token
        ctx = CheckContext(self.w3, asset, cfg, self.decoder)
        out: list[str] = []
        for t in transfers:
            for name in cfg.checks:
                try:
                    out += [r for r in CHECKS[name](ctx, t) if r not in out]
                except Unreadable as exc:
                    out.append(f"{name} check cannot be read ({exc}); refusing")
        return out

    def check(self, asset: str, transfers: Sequence[Transfer]) -> None:
        why = self.reasons(asset, transfers)
        if why:
            msg = f"not eligible: {'; '.join(why)}; nothing sent"
            self.emit(
                RiskEvent(
                    "not_eligible", Severity.CRITICAL, f"venue:{self.venue}", msg, self.now(), None,
                    {"asset": asset, "reasons": why},
                )
            )  # fmt: skip
            raise NotEligible(self.venue, msg)

    def for_async(self, vaults: dict[str, str], wallet: str) -> Callable[[str, str, int], None]:
        """The ``eligible`` callback of ``AsyncRequests``. The vault's escrow is exempt from its own
        share restrictions (as Centrifuge's restriction manager exempts its escrow), so the shares
        are checked as minted to the wallet (deposit) or taken from it (redemption)."""

        def check(asset: str, side: str, amount: int) -> None:
            self.check(asset, trade_transfers("vault", side, wallet, vaults[asset], amount))

        return check
