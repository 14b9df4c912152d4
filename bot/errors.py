"""Errors that name what failed and where, so an operator can act without reading a traceback."""

from __future__ import annotations


class RwabotError(Exception):
    """Base class of every error rwabot raises on purpose."""


class ConfigError(RwabotError):
    """The configuration is invalid; the message names the file, the key and the reason."""


class PluginError(RwabotError):
    """A plugin is unknown, registered twice, or broke its contract."""


class DataError(RwabotError):
    """Market data is missing, stale, NaN or otherwise unusable."""


class ForecastError(RwabotError):
    """A covariance forecast is not finite, not symmetric or not positive semi-definite."""


class OptimizerError(RwabotError):
    """The optimizer could not produce valid weights (infeasible bounds, bad input)."""


class InfeasibleBoundsError(OptimizerError):
    """Bounds admit no fully invested portfolio; ``assets`` names the ones that bind."""

    def __init__(self, message: str, assets: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.assets = assets


class VenueError(RwabotError):
    """A venue failed; ``retryable`` says whether the same request may be sent again."""

    def __init__(self, venue: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"venue {venue}: {message}")
        self.venue = venue
        self.retryable = retryable


class InsufficientFunds(VenueError):
    """The venue refused an order for lack of cash or position."""


class InvalidOrder(VenueError):
    """The venue refused an order's size, price or asset."""


class LedgerError(RwabotError):
    """The ledger is locked by another daemon, of a newer schema, or inconsistent."""


class TransferRefused(VenueError):
    """A transfer was refused before any money moved: a destination off the allow-list, an amount
    outside the route's limits or the daily cap, or the source's own refusal (funds, address)."""


class NotifierError(RwabotError):
    """A notifier could not deliver an alert (HTTP status, timeout); the message never holds a secret."""
