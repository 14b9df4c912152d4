from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_config, parse_config
from bot.errors import ConfigError
from tests.conftest import PAPER, paper_dict


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
    with pytest.raises(ConfigError, match=r"venues\.wallet\.options\.fee_bsp: Extra inputs are not permitted"):
        Engine(parse_config(d, "t.toml"))
    d = paper_dict(tmp_path)
    d["strategy"]["options"]["band"] = -1.0
    with pytest.raises(ConfigError, match=r"strategy\.options\.band"):
        Engine(parse_config(d, "t.toml"))


def test_config_is_frozen(paper_config) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        paper_config.risk.participation = 0.5  # type: ignore[misc]
