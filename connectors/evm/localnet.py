"""The ``evm_devnet`` venue: the ``evm`` venue in paper mode on a local anvil chain it starts itself.

This is what the embedded defaults (``config/paper.toml``) trade the tokenized assets on, so that a
newcomer sees real contracts quote and fill with nothing but this repository and its npm tools. At
start the venue launches anvil on a free 127.0.0.1 port (genesis an hour before the clock), deploys
the RWA world of ``connectors/evm/deploy.py`` (an ERC-4626 fund vault per name in ``funds``, a
permissioned token on a constant-product pool per name in ``pools``, all at the data source's
current prices) and trades through an ordinary ``EvmVenue`` with ``paper = true``: every fill is the
trade's own call run with ``eth_call`` against the live contracts from anvil's development account
#2 (an address only: paper mode holds no key and signs nothing).

The chain has no market of its own, so a keeper stands in for the world: the first time the venue
is used in a new hour of the clock, it mines one block at the clock's time in which the fund
manager sets each vault's NAV to the data source's latest price and an arbitrageur swaps each pool
to it. Chain quotes then track the simulated market and the cycle's prices, liquidity limits and
fills agree. If the keeper cannot reach the node, the venue raises ``VenueError`` and the cycle
fails this venue only. Funding is the evm venue's: in paper mode the deposit address is
``paper:<venue>`` and transfers go over the bot's paper network (``paper_transfer_*`` options); live,
real ERC-20 transfers of the stablecoin (symbol ``tUSD`` unless ``quote_asset`` names it otherwise).
``close()`` stops anvil; on Linux the node also dies with the process that started it, so a killed
daemon leaves no chain behind.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from bot.clock import floor_hour
from bot.components import ComponentConfig, ComponentContext
from bot.domain import (
    Balances,
    DepositAddress,
    MarketInfo,
    Order,
    OrderState,
    Quote,
    Transfer,
    TransferState,
    TransferStatus,
)
from bot.errors import ConfigError, RwabotError, VenueError
from connectors.evm.book import Book, deploy_book, eligibility
from connectors.evm.build import ToolchainMissing, require_node_modules
from connectors.evm.chain import connect
from connectors.evm.deploy import FundSpec, PoolSpec, World, WorldSpec, deploy_world, mine_block
from connectors.evm.node import AnvilNode
from connectors.evm.venue import EvmVenue, EvmVenueConfig

log = logging.getLogger("rwabot.evm.devnet")

CHAIN_ID = 31337


class EvmDevnetConfig(ComponentConfig):
    """Options of ``evm_devnet``: which assets are fund shares and which are pool tokens, and sizes."""

    funds: list[str] = Field(default_factory=list, description="assets held as ERC-4626 fund shares")
    pools: list[str] = Field(default_factory=list, description="assets traded on constant-product pools")
    managers: list[str] = Field(default_factory=list, description="funds minted and redeemed by an issuer manager")
    async_funds: list[str] = Field(default_factory=list, description="ERC-7540 funds: requests fulfilled hourly")
    trex_pools: list[str] = Field(default_factory=list, description="ERC-3643 T-REX tokens on a verified pool")
    fot_pools: list[str] = Field(default_factory=list, description="fee-on-transfer tokens on a Uniswap V2 pair")
    manager_fee_bps: int = Field(default=10, ge=0, le=1000, description="the issuer managers' mint and redeem fee")
    live: bool = Field(default=False, description="sign and send (anvil's development key #2 from key_env)")
    key_env: str = Field(default="RWABOT_EVM_KEY", min_length=1, description="live: the variable with the key")
    async_settlement_hours: float = Field(default=2.0, ge=0, le=24 * 60, description="paper: a request's delay")
    paper_cash: float = Field(default=1_000_000.0, ge=0, description="stablecoin in the paper account")
    pool_depth_usd: float = Field(default=25_000_000.0, gt=0, description="stablecoin side of each pool")
    pool_fee_bps: int = Field(default=30, ge=0, le=1000)
    fund_size_usd: float = Field(default=20_000_000.0, gt=0, description="assets of each fund at start")
    max_slippage_bps: float = Field(default=50.0, ge=0, le=5000)
    eth_usd: float = Field(default=3000.0, gt=0, description="price of the gas token on the chain's feed")
    keeper: bool = Field(default=True, description="move chain prices to the data source's every hour")
    paper_transfer_minutes: float = Field(default=30.0, ge=0, le=7 * 24 * 60, description="paper network delay")
    paper_transfer_fee: float = Field(default=0.0, ge=0, description="paper: flat fee per transfer sent, quote")
    paper_transfer_gas: float = Field(default=0.5, ge=0, description="paper: gas of a transfer sent, quote")
    quote_asset: str | None = Field(
        default=None, min_length=1, description="the code routes give the stablecoin (default: its symbol, tUSD)"
    )

    @model_validator(mode="after")
    def _assets(self) -> EvmDevnetConfig:
        names = self.names()
        twice = sorted({a for a in names if names.count(a) > 1})
        if twice:
            raise ValueError(f"assets {twice} are listed in more than one of funds, pools, managers, ... ")
        if not names:
            raise ValueError("list at least one asset in funds, pools, managers, async_funds, trex_pools or fot_pools")
        return self

    def names(self) -> list[str]:
        return [*self.funds, *self.pools, *self.managers, *self.async_funds, *self.trex_pools, *self.fot_pools]


class DevnetVenue:
    """An ``EvmVenue`` (paper) on its own anvil node, with the hourly keeper; owns the node."""

    def __init__(self, venue: EvmVenue, node: AnvilNode, world: World, ctx: ComponentContext, cfg: EvmDevnetConfig,
                 book: Book | None = None):  # fmt: skip
        self.name = venue.name
        self.book = book
        self.venue = venue
        self.node = node
        self.world = world
        self.cfg = cfg
        self.clock = ctx.clock
        self.data = ctx.data
        self._kept: datetime | None = None

    def __getattr__(self, item: str) -> Any:  # optional venue members (reconcile, ...) of the evm venue
        return getattr(self.venue, item)

    def __repr__(self) -> str:
        return f"DevnetVenue({self.venue!r}, node {self.node.url})"

    def keep(self, force: bool = False) -> None:
        """Once per hour of the clock: vault NAVs and pool prices to the data source's latest prices."""
        if not self.cfg.keeper or self.data is None:
            return
        now = self.clock.now()
        hour = floor_hour(now)
        if hour == self._kept and not force:
            return
        names = self.cfg.names()
        prices = dict(zip(names, (float(p) for p in self.data.latest(names, now).prices)))
        w3 = self.world.w3
        try:
            last = int(w3.eth.get_block("latest")["timestamp"])
            when = max(int(now.timestamp()), last + 1)

            def moves() -> None:
                for a in self.cfg.funds:
                    self.world.set_nav(a, prices[a])
                for a in self.cfg.pools:
                    self.world.move_pool(a, prices[a])
                if self.book is not None:
                    self.book.move(prices)

            mine_block(w3, when, moves)
        except Exception as exc:  # the node is gone or refused: this venue fails the cycle, not the bot
            raise VenueError(self.name, f"keeper could not move the local chain: {type(exc).__name__}: {exc}") from None
        self._kept = hour
        log.debug("keeper: local chain at %s moved to %s", now.isoformat(), prices)

    # -- the Venue protocol ---------------------------------------------------------------------------

    def market(self, asset: str) -> MarketInfo:
        self.keep()
        return self.venue.market(asset)

    def quote(self, asset: str) -> Quote:
        self.keep()
        return self.venue.quote(asset)

    def balances(self) -> Balances:
        self.keep()
        return self.venue.balances()

    def place_order(self, order: Order) -> OrderState:
        self.keep()
        return self.venue.place_order(order)

    def fetch_order(self, client_id: str) -> OrderState | None:
        return self.venue.fetch_order(client_id)

    def cancel_order(self, client_id: str) -> OrderState:
        return self.venue.cancel_order(client_id)

    # -- funding (bot.components.FundingVenue): the evm venue's, paper or live; no keeper needed ---------

    def deposit_address(self, asset: str, network: str) -> DepositAddress:
        return self.venue.deposit_address(asset, network)

    def send_transfer(self, transfer: Transfer) -> TransferState:
        return self.venue.send_transfer(transfer)

    def fetch_transfer(self, client_id: str) -> TransferState | None:
        return self.venue.fetch_transfer(client_id)

    def deposit_status(self, transfer: Transfer, state: TransferState) -> TransferStatus | None:
        return self.venue.deposit_status(transfer, state)

    def close(self) -> None:
        try:
            self.venue.close()
        finally:
            self.node.stop()


def make_devnet_venue(cfg: EvmDevnetConfig, ctx: ComponentContext) -> DevnetVenue:
    """Start anvil, deploy the world at the data source's prices, and open a paper venue on it."""
    name = str(ctx.extra.get("venue_name", "evm_devnet"))
    where = ctx.extra.get("where", f"venues.{name}.options")
    if ctx.data is None:
        raise ConfigError(f"{where}: the local chain takes its prices from the data source, and there is none")
    names = cfg.names()
    known = set(ctx.data.assets())
    unknown = [a for a in names if a not in known]
    if unknown:
        raise ConfigError(f"{where}: assets {unknown} are not known to the data source (it has {sorted(known)})")
    try:
        require_node_modules()
    except ToolchainMissing as exc:
        raise ConfigError(f"{where}: the local chain needs the npm tools (anvil, solc-js, OZ): {exc}") from None
    now = ctx.clock.now()
    prices = dict(zip(names, (float(p) for p in ctx.data.latest(names, now).prices)))
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    node = AnvilNode(
        chain_id=CHAIN_ID,
        timestamp=int(now.timestamp()) - 3600,
        log_file=ctx.state_dir / f"anvil-{name}.log",
        die_with_parent=True,
    ).start()
    try:
        w3 = connect(node.url, 10.0)
        depth = cfg.pool_depth_usd
        spec = WorldSpec(
            funds=tuple(FundSpec(a, prices[a], 0.0, cfg.fund_size_usd / 20) for a in cfg.funds),
            pools=tuple(PoolSpec(a, prices[a], 0.0, depth, depth / 50, cfg.pool_fee_bps) for a in cfg.pools),
            eth_usd=cfg.eth_usd,
            # paper: the account's cash is the paper journal's, overridden in each eth_call; live: real money
            trader_usd=cfg.paper_cash if cfg.live else 0.0,
        )
        world = deploy_world(w3, spec)
        assets = world.venue_assets()
        book = None
        if any((cfg.managers, cfg.async_funds, cfg.trex_pools, cfg.fot_pools)):
            book = deploy_book(world, prices, managers=cfg.managers, async_funds=cfg.async_funds,
                               trex_pools=cfg.trex_pools, fot_pools=cfg.fot_pools, fund_size_usd=cfg.fund_size_usd,
                               pool_depth_usd=depth, manager_fee_bps=cfg.manager_fee_bps)  # fmt: skip
            assets.update(book.assets)
        options = {
            "rpc_url": node.url,
            "chain_id": CHAIN_ID,
            "quote_token": world.stable.address,
            "assets": {a: assets[a] for a in names},
            "native_price_feed": world.feeds["ETH"].address,
            "paper": not cfg.live,
            "account": world.trader,  # anvil's public development account #2; paper: no key is read or held
            "key_env": cfg.key_env if cfg.live else None,
            "paper_cash": cfg.paper_cash,
            "eligibility": eligibility(book) if book is not None else {},
            "paper_async_settlement_hours": cfg.async_settlement_hours,
            "paper_transfer_minutes": cfg.paper_transfer_minutes,
            "paper_transfer_fee": cfg.paper_transfer_fee,
            "paper_transfer_gas": cfg.paper_transfer_gas,
            "quote_asset": cfg.quote_asset,
            "max_slippage_bps": cfg.max_slippage_bps,
            "receipt_timeout_s": 30.0,
            "poll_interval_s": 0.05,
        }
        venue = EvmVenue(name, EvmVenueConfig.model_validate(options), ctx)
    except (RwabotError, OSError, ValueError, RuntimeError) as exc:
        node.stop()
        raise ConfigError(f"{where}: could not set up the local chain: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        node.stop()
        raise
    log.info("venue %s: local anvil chain on %s with %s", name, node.url, ", ".join(names))
    out = DevnetVenue(venue, node, world, ctx, cfg, book)
    try:
        out.keep(force=True)
    except BaseException:
        out.close()
        raise
    return out
