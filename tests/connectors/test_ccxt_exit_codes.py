"""Honest exit codes, through the ``rwabot`` command line against the exchange emulator: ``run --once`` and
``backtest`` exit 1 with the reason on one line when the cycle failed or every venue did, 2 on a config
error (a passphrase no option names), 0 when one venue of several failed and the others traded; ``rwabot
status`` says ``failing``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.ledger import Ledger
from tests.connectors.conftest import BY_ID, NOW, Setup, ccxt_config, make_emulator, venue_options
from tests.connectors.emulator import HOUR_MS, ORIGIN_MS, ExchangeEmulator, Fault

runner = CliRunner()


def toml(v: Any) -> str:
    """A value as TOML (the config's dicts, lists, strings, numbers, booleans and datetimes)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, list):
        return "[" + ", ".join(toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {type(v).__name__}")


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    data["clock"] = {"kind": "simulated", "start": NOW, "speed": 0.0}
    lines = []
    for section, body in data.items():
        lines.append(f"[{section}]")
        lines += [f"{json.dumps(k)} = {toml(v)}" for k, v in body.items()]
    path = tmp_path / "ccxt.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp_path: Path, emu: ExchangeEmulator, setup: Setup, **venue: Any) -> Path:
    return write_config(tmp_path, ccxt_config(tmp_path, {"cex": (setup.apply(emu), {**setup.venue_options(),
                                                                                     **venue})}))  # fmt: skip


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture
def emu():  # noqa: ANN201
    e = make_emulator()
    yield e
    e.stop()


def test_a_cycle_that_traded_exits_0_and_status_says_ok(tmp_path: Path, creds: None, emu: ExchangeEmulator):
    path = config(tmp_path, emu, BY_ID["okx"])
    res = runner.invoke(app, ["run", "--once", "--live", "--config", str(path)])
    assert res.exit_code == 0, res.output
    assert "done" in res.output and not error_lines(res.output) and len(emu.orders) == 4
    st = runner.invoke(app, ["status", "--config", str(path)])
    assert st.exit_code == 0 and "health: ok; orders in flight: 0" in st.output, st.output


def test_a_wrong_passphrase_fails_the_cycle_and_exits_1(tmp_path: Path, creds: None, emu: ExchangeEmulator,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("RWABOT_TEST_WRONG_PASSPHRASE", "not-it")
    path = config(tmp_path, emu, BY_ID["okx"], password_env="RWABOT_TEST_WRONG_PASSPHRASE")
    res = runner.invoke(app, ["run", "--once", "--live", "--config", str(path)])
    assert res.exit_code == 1, res.output
    [line] = error_lines(res.output)  # the reason, on one line
    assert line.startswith("error: cycle 2026-04-15T00:00Z failed:") and "AuthenticationError" in line, line
    assert "not-it" not in res.output and not emu.orders
    st = runner.invoke(app, ["status", "--config", str(path)])
    assert st.exit_code == 0 and "health: failing: cycle 2026-04-15T00:00Z failed" in st.output, st.output


def test_a_passphrase_no_option_names_is_a_config_error(tmp_path: Path, creds: None, emu: ExchangeEmulator) -> None:
    path = config(tmp_path, emu, BY_ID["binance"], exchange="okx")
    res = runner.invoke(app, ["run", "--once", "--live", "--config", str(path)])
    assert res.exit_code == 2 and "set password_env" in " ".join(res.output.split()), res.output
    assert not emu.requests


def test_every_venue_failing_while_executing_exits_1(tmp_path: Path, creds: None, emu: ExchangeEmulator) -> None:
    """Planned fine, then every create answered 503: the cycle is ``done`` (nothing it could do) but nothing it
    meant to trade was traded: exit 1."""
    emu.faults.append(Fault("503", "POST", "/api/v3/order", times=10**6))
    path = config(tmp_path, emu, BY_ID["binance"])
    res = runner.invoke(app, ["run", "--once", "--live", "--config", str(path)])
    assert res.exit_code == 1, res.output
    [line] = error_lines(res.output)
    assert line.startswith("error: cycle 2026-04-15T00:00Z: every venue failed (cex: "), line
    assert "ExchangeNotAvailable" in line and len(line) <= 320, line
    led = Ledger(tmp_path / "ledger.sqlite")
    try:
        assert led.get_cycle("2026-04-15T00:00Z").status == "done" and led.events("venue_failed")
    finally:
        led.close()
    st = runner.invoke(app, ["status", "--config", str(path)])
    assert "health: failing: cycle 2026-04-15T00:00Z: every venue failed" in st.output, st.output


def test_one_venue_of_two_failing_exits_0(tmp_path: Path, creds: None, emu: ExchangeEmulator,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An OKX account with a wrong passphrase and a Binance account on the same exchange: the Binance legs
    trade, the cycle did what it could, the event says which venue failed; exit 0."""
    monkeypatch.setenv("RWABOT_TEST_WRONG_PASSPHRASE", "not-it")
    data = ccxt_config(tmp_path, {"okx": (emu, {}), "bin": (emu, {})})
    data["venues"]["okx"]["options"] = venue_options(emu, exchange="okx", password_env="RWABOT_TEST_WRONG_PASSPHRASE")
    data["assets"] = {a: {"venue": "okx" if a in ("SPY", "TLT") else "bin"} for a in ("SPY", "TLT", "GLD", "VNQ")}
    data.pop("report", None)  # the embedded [report] names the embedded book's assets
    path = write_config(tmp_path, data)
    res = runner.invoke(app, ["run", "--once", "--live", "--config", str(path)])
    assert res.exit_code == 0, res.output
    assert {x.symbol for x in emu.orders.values()} == {"GLDUSDT", "VNQUSDT"}
    led = Ledger(tmp_path / "ledger.sqlite")
    try:
        assert {e.where for e in led.events("venue_failed")} == {"venue:okx"}
    finally:
        led.close()


def test_a_backtest_with_a_failed_cycle_exits_1_after_its_summary(tmp_path: Path, creds: None,
                                                                  emu: ExchangeEmulator) -> None:  # fmt: skip
    """Four simulated hours on the emulator's market; the data source has no bar for 02:00-03:00, so the
    cycles from 03:00 on cannot be planned: the summary is printed, then the reason, and the exit code is 1."""
    emu.set_time(NOW + timedelta(hours=10))  # every bar the backtest asks for exists (but one)
    hour = (int(NOW.timestamp() * 1000) - ORIGIN_MS) // HOUR_MS + 2
    path = config(tmp_path, emu, BY_ID["binance"])
    ok = runner.invoke(app, ["backtest", "--config", str(path), "--hours", "4", "--start", NOW.isoformat()])
    assert ok.exit_code == 0 and not error_lines(ok.output), ok.output
    emu.kline_gaps["SPYUSDT"] = {ORIGIN_MS + hour * HOUR_MS}
    res = runner.invoke(app, ["backtest", "--config", str(path), "--hours", "4", "--start", NOW.isoformat()])
    assert res.exit_code == 1, res.output
    assert "end NAV" in res.output  # the summary first
    [line] = error_lines(res.output)
    assert line.startswith("error: 2 of 5 cycles failed; first: cycle 2026-04-15T03:00Z failed: DataError") or \
        line.startswith("error: 2 of 5 cycles failed; first: cycle 2026-04-15T03:00Z failed: data ccxt"), line
    assert "SPY: 1 missing hourly bars" in line, line
