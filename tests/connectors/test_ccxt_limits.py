"""Rate limits through unmodified ccxt and the emulator: one limiter per exchange and host for the
process, Retry-After, and how many requests are in flight at once.

Timing assertions are one-sided and loose (a loaded 2-core machine only ever makes requests later):
a span at least ~60% of what the limiter enforces, a median gap at least half the interval, a pause
at least ~80% of Retry-After. Two limiters instead of one would halve the span; no limiter would
make it ~0."""

from __future__ import annotations

import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.errors import VenueError
from connectors.ccxt_client import retry_after_s
from connectors.ccxt_venue import CcxtDataConfig, CcxtDataSource
from tests.connectors.conftest import MARKETS, NOW, make_emulator
from tests.connectors.emulator import ExchangeEmulator, Fault
from tests.connectors.test_ccxt_venue import ctx, make_venue


def data_source(emu: ExchangeEmulator, tmp_path: Path, **kw: object) -> CcxtDataSource:
    opts = {"api_urls": {"*": emu.base_url}, "rate_limit_per_s": 5000.0, **kw}
    d = CcxtDataSource(CcxtDataConfig.model_validate(opts), ctx(tmp_path))
    d.client.markets()
    return d


def arrivals(emu: ExchangeEmulator, since: int, path: str | None = None) -> list[float]:
    with emu.lock:
        return sorted(t[0] for t in emu.timeline[since:] if path is None or t[3] == path)


def test_one_limiter_per_exchange_and_host(emulator: ExchangeEmulator, creds: None, tmp_path: Path) -> None:
    other = make_emulator()
    try:
        d = data_source(emulator, tmp_path)
        v = make_venue(emulator, tmp_path, name="cex1", rate_limit_per_s=40.0)
        w = make_venue(other, tmp_path, name="cex2", rate_limit_per_s=40.0)
        assert d.client.limiter is v.client.limiter  # the data source and the venue: one exchange, one limit
        assert w.client.limiter is not v.client.limiter  # another host (a testnet, a gateway) has its own
        assert v.client.limiter.interval == pytest.approx(1 / 40.0)  # the slower of the two rates asked for
        d.close()
        v.close()
        w.close()
    finally:
        other.stop()


def test_every_client_of_an_exchange_is_spaced_by_the_one_limiter(
    emulator: ExchangeEmulator, creds: None, tmp_path: Path
) -> None:
    rate, n = 10.0, 10
    d = data_source(emulator, tmp_path, rate_limit_per_s=rate)
    v = make_venue(emulator, tmp_path, rate_limit_per_s=rate)
    v.client.markets()
    start = len(emulator.timeline)

    def venue_reads() -> None:
        for _ in range(n):
            v.balances()

    def data_reads() -> None:
        for _ in range(n):
            d.latest(["SPY"], NOW)

    threads = [threading.Thread(target=venue_reads), threading.Thread(target=data_reads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = arrivals(emulator, start)
    assert len(got) == 2 * n
    # one limiter for both: 2n requests take (2n-1)/rate; two limiters would take (n-1)/rate
    assert got[-1] - got[0] >= 0.6 * (2 * n - 1) / rate
    assert statistics.median(b - a for a, b in zip(got, got[1:])) >= 0.5 / rate
    d.close()
    v.close()


def test_retry_after_pauses_every_client_of_the_exchange(emulator: ExchangeEmulator, creds: None, tmp_path: Path):
    d = data_source(emulator, tmp_path)
    v = make_venue(emulator, tmp_path)  # 5000/s: only Retry-After makes anyone wait
    v.client.markets()
    fault = Fault("429", "GET", "/api/v3/account", times=1, retry_after="1")
    emulator.faults.append(fault)
    start = len(emulator.timeline)
    t = threading.Thread(target=v.balances)
    t.start()
    deadline = time.monotonic() + 20
    while True:  # until the venue has the 429 and paused the shared limiter
        hit = arrivals(emulator, start, "/api/v3/account")
        if fault.hits and hit and v.client.limiter.paused_until >= hit[0] + 0.9:
            break
        assert time.monotonic() < deadline, "the 429 never paused the limiter"
        time.sleep(0.005)
    d.latest(["SPY"], NOW)  # another client of the same exchange waits out the same Retry-After
    t.join()
    accounts = arrivals(emulator, start, "/api/v3/account")
    tickers = arrivals(emulator, start, "/api/v3/ticker/24hr")
    assert len(accounts) == 2 and len(tickers) == 1
    assert accounts[1] - accounts[0] >= 0.8 and tickers[0] - accounts[0] >= 0.8
    d.close()
    v.close()


def test_a_retry_after_longer_than_the_cap_fails_at_once(emulator: ExchangeEmulator, creds: None, tmp_path: Path):
    v = make_venue(emulator, tmp_path, max_retry_after_s=0.2)
    v.client.markets()
    emulator.faults.append(Fault("429", "GET", "/api/v3/account", times=5, retry_after="120"))
    with pytest.raises(VenueError, match="Retry-After 120s") as err:
        v.balances()
    assert err.value.retryable and emulator.count("GET", "/api/v3/account") == 1  # a ban is not hammered
    v.close()


def test_peak_concurrency_is_the_pool_width_and_the_limiter_spreads_it(emulator: ExchangeEmulator, tmp_path: Path):
    emulator.latency_s = 0.1
    emulator.max_klines = 100
    d = data_source(emulator, tmp_path, max_workers=2)
    emulator.peak_in_flight = 0
    d.bars(list(MARKETS), NOW, 300)  # 4 assets × 3 pages, two assets at a time
    assert emulator.peak_in_flight == 2
    d.close()
    # four workers, but starts 1/5 s apart and every answer takes 0.05 s: about one at a time
    slow = make_emulator()
    try:
        slow.latency_s = 0.05
        d2 = data_source(slow, tmp_path, max_workers=4, rate_limit_per_s=5.0)
        slow.peak_in_flight = 0
        start = len(slow.timeline)
        d2.bars(list(MARKETS), NOW, 48)  # one page per asset
        got = arrivals(slow, start, "/api/v3/klines")
        assert len(got) == 4 and slow.peak_in_flight <= 2
        assert got[-1] - got[0] >= 0.6 * 3 / 5.0
        d2.close()
    finally:
        slow.stop()


def test_retry_after_header_forms() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert retry_after_s({"Retry-After": "2"}) == 2.0
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now) == pytest.approx(30.0)
    assert retry_after_s({"Retry-After": "soon"}) is None and retry_after_s({}) is None and retry_after_s(None) is None
