from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_config, parse_config
from bot.errors import ConfigError
from tests.conftest import PAPER, offline_config_text, paper_dict, squash


def test_shipped_paper_config_is_valid() -> None:
    cfg = load_config(PAPER)
    assert cfg.bot.mode == "paper"
    assert set(cfg.venues) == {"exchange", "wallet"}
    assert cfg.assets["USTB"].venue == "wallet"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(PAPER.read_text() + "\n" + text)
    return p


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(PAPER.read_text().replace("participation = 0.10", "participation = 0.10\nparticipaton = 0.2"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "risk.participaton" in str(e.value) and "Extra inputs" in str(e.value)


def test_wrong_type_and_range(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(PAPER.read_text().replace("participation = 0.10", 'participation = "lots"'))
    with pytest.raises(ConfigError, match=r"risk\.participation: Input should be a valid number"):
        load_config(p)
    p.write_text(PAPER.read_text().replace("participation = 0.10", "participation = 1.5"))
    with pytest.raises(ConfigError, match=r"risk\.participation: Input should be less than or equal to 1"):
        load_config(p)


def test_asset_on_unknown_venue(tmp_path: Path) -> None:
    d = paper_dict(tmp_path)
    d["assets"]["SPY"]["venue"] = "nasdaq"
    with pytest.raises(ConfigError, match=r"assets\.SPY\.venue: unknown venue 'nasdaq'"):
        parse_config(d, "t.toml")


def test_live_mode_refuses_paper_venues(tmp_path: Path) -> None:
    d = paper_dict(tmp_path, bot={"mode": "live"})
    with pytest.raises(ConfigError, match="bot.mode is live but venues"):
        parse_config(d, "t.toml")


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("[bot\nname=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_naive_clock_start_is_rejected(tmp_path: Path) -> None:
    from datetime import datetime

    d = paper_dict(tmp_path)
    d["clock"]["start"] = datetime(2026, 3, 1)
    with pytest.raises(ConfigError, match="clock.start"):
        parse_config(d, "t.toml")


def test_component_options_are_validated_by_the_component(tmp_path: Path) -> None:
    from bot.cycle import Engine

    d = paper_dict(tmp_path)
    d["venues"]["wallet"]["options"]["fee_bsp"] = 3.0
    with pytest.raises(ConfigError, match=r"^t\.toml: venues\.wallet\.options\.fee_bsp: Extra inputs are not"):
        Engine(parse_config(d, "t.toml"))
    d = paper_dict(tmp_path)
    d["strategy"]["options"]["band"] = -1.0
    with pytest.raises(ConfigError, match=r"^t\.toml: strategy\.options\.band"):
        Engine(parse_config(d, "t.toml"))
    assert not (tmp_path / "ledger.sqlite").exists()  # options are checked before the ledger is created


def test_an_option_a_strategy_sets_names_the_strategy(tmp_path: Path, rwabot_plugins) -> None:  # noqa: ANN001
    from bot.cycle import Engine
    from bot.hookspecs import hookimpl

    class Preset:
        @hookimpl
        def rwabot_register_strategies(self, register) -> None:  # noqa: ANN001
            register("typo_preset", lambda cfg, ctx: {"policy": {"plugin": "band", "options": {"bnad": 0.1}}})

    rwabot_plugins.add(Preset())
    d = paper_dict(tmp_path, strategy={"plugin": "typo_preset", "options": {}})
    d["forecaster"] = {"plugin": "ewma"}
    d["optimizer"] = {"plugin": "erc"}
    with pytest.raises(ConfigError, match=r"^t\.toml: strategy typo_preset: policy\.options\.bnad: Extra inputs"):
        Engine(parse_config(d, "t.toml"), pm=rwabot_plugins.pm)
    assert not (tmp_path / "ledger.sqlite").exists()


def test_plugin_option_error_names_the_file_and_creates_no_ledger(tmp_path: Path) -> None:
    """A typo in a venue's options stops ``rwabot run`` before the ledger, a venue book or anything else
    exists, and the message names the file as a typo in the core sections does."""
    from typer.testing import CliRunner

    from bot.cli import app
    from bot.cycle import Engine

    ledger = tmp_path / "var" / "ledger.sqlite"
    text = offline_config_text(ledger)
    assert "initial_cash = 250000.0, fee_bps = 2.0" in text
    cfg = tmp_path / "paper.toml"
    cfg.write_text(text.replace("initial_cash = 250000.0, fee_bps = 2.0", "initial_cash = 250000.0, feebps = 2.0"))
    expected = f"{cfg}: venues.exchange.options.feebps: Extra inputs are not permitted"
    with pytest.raises(ConfigError) as e:
        Engine(load_config(cfg))
    assert str(e.value) == expected
    for args in (["run", "--config", str(cfg), "--once"], ["backtest", "--config", str(cfg), "--hours", "2"]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 2, out.output
        assert squash(f"error: {expected}") in squash(out.output)
    assert not ledger.exists() and not ledger.with_suffix(".state").exists()
    assert not list(tmp_path.glob("**/*.sqlite")), "no ledger or venue book may be created"


def test_config_is_frozen(paper_config) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        paper_config.risk.participation = 0.5  # type: ignore[misc]


def _resolved_venues(tmp_path: Path, **venue_options: object):
    from bot.clock import SimulatedClock
    from bot.components import ComponentContext
    from bot.cycle import resolve_components
    from bot.plugins import Registry, make_plugin_manager

    d = paper_dict(tmp_path, venues={
        "cex": {"plugin": "ccxt", "options": {"exchange": "binance", **venue_options}},
        "wallet": {"plugin": "paper"},
    })  # fmt: skip
    cfg = parse_config(d, "t.toml")
    ctx = ComponentContext(SimulatedClock(cfg.clock.start), tmp_path, cfg.asset_names, lambda e: None)
    return resolve_components(cfg, Registry(make_plugin_manager()), ctx).venues


def test_mode_is_law_a_paper_bot_trades_every_venue_on_paper(tmp_path: Path) -> None:
    """A paper config one line short of ``paper = true`` must never reach a live order or ask for keys."""
    venues = _resolved_venues(tmp_path)
    assert venues["cex"].options.paper is True  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r't\.toml: venues\.cex\.options\.paper: false asks for live trading'):
        _resolved_venues(tmp_path, paper=False)
