"""Klines of any whole-hour interval for the exchange emulator (``tests/connectors/emulator.py`` serves 1h only).

Why: ``rwabot data fetch --timeframe 1d`` must be tested against the wire format ccxt really parses, and
the emulator's hourly path already defines every price; a longer bar is that path aggregated the way
an exchange aggregates trades: open of its first hour, close of its last, high/low over them, volumes
summed. Bars open on multiples of the interval since the epoch (Binance's 1h/4h/1d grid; the
emulator's ORIGIN, 2025-01-01T00:00Z, is on it). The bar in progress, as the hourly one does, has no
close yet (close = open), so a fetch that keeps it would be caught storing a bar that will change.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from tests.connectors.emulator import HOUR_MS, ORIGIN_MS, ApiError, ExchangeEmulator, Fault, _s

INTERVAL_HOURS = {"1h": 1, "2h": 2, "4h": 4, "6h": 6, "8h": 8, "12h": 12, "1d": 24}


class KlinesEmulator(ExchangeEmulator):
    """The emulator with ``/api/v3/klines`` for every interval of ``INTERVAL_HOURS``."""

    def interval_klines(
        self, symbol: str, hours: int, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[Any]]:
        """Bars of ``hours`` hours opening in ``[start_ms, end_ms]``, at most ``limit``, oldest first."""
        tf = hours * HOUR_MS
        now = self.now_ms
        current = now - now % tf  # the bar in progress opens here
        first = current - (limit - 1) * tf if start_ms is None else -(-start_ms // tf) * tf
        last = current if end_ms is None else min(current, end_ms - end_ms % tf)
        first = max(first, ORIGIN_MS)  # ORIGIN is midnight UTC: on the grid of every interval here
        out: list[list[Any]] = []
        t = first
        while t <= last and len(out) < limit:
            h0 = (t - ORIGIN_MS) // HOUR_MS
            closes = [self._path(symbol, h0 + k + 1) for k in range(hours)]
            o = self._path(symbol, h0)
            c = o if t == current else closes[-1]
            v = sum(self._volume(symbol, h0 + k) for k in range(hours))
            hi, lo = max(o, *closes) * 1.001, min(o, *closes) * 0.999
            out.append(
                [t, _s(o), _s(hi), _s(lo), _s(c), _s(v), t + tf - 1, _s(v * c), 100, _s(v / 2), _s(v * c / 2), "0"]
            )
            t += tf
        return out

    def handle(
        self, method: str, path: str, query: str, body: str, headers: Any, fault: Fault | None = None
    ) -> tuple[int, Any]:
        if path != "/api/v3/klines" or fault is not None:
            return super().handle(method, path, query, body, headers, fault)
        p = dict(parse_qsl(query, keep_blank_values=True))
        interval = p.get("interval", "")
        if interval == "1h":
            return super().handle(method, path, query, body, headers, fault)
        with self.lock:  # the server logged the request; an ApiError becomes Binance's error answer there
            if p.get("symbol", "") not in self.specs:
                raise ApiError(400, -1121, "Invalid symbol.")
            if interval not in INTERVAL_HOURS:
                raise ApiError(400, -1120, "Invalid interval.")
            limit = min(int(p.get("limit", 500)), self.max_klines)
            start = int(p["startTime"]) if "startTime" in p else None
            end = int(p["endTime"]) if "endTime" in p else None
            return 200, self.interval_klines(p["symbol"], INTERVAL_HOURS[interval], start, end, limit)
