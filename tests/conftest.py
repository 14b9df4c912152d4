"""Shared fixtures: configs pointing at temporary ledgers, engines on a simulated clock."""

from __future__ import annotations

import os
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from bot.config import Config, parse_config

# Property tests run the same examples on every machine, so a red CI always reproduces; search new
# ones with `pytest --hypothesis-profile=explore` (or HYPOTHESIS_PROFILE=explore) and pin what it finds.
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "config" / "paper-offline.toml"  # the embedded defaults without the local chain: fast
DEFAULT = ROOT / "config" / "paper.toml"  # the README's main command: the tokenized assets on a local anvil
START = datetime(2026, 3, 1, tzinfo=UTC)


def paper_dict(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    data = tomllib.loads(PAPER.read_text())
    data["bot"]["ledger"] = str(tmp_path / "ledger.sqlite")
    data["clock"] = {"kind": "simulated", "start": START, "speed": 0.0}
    # the embedded threshold is set so a newcomer sees a vol breach in the first week; tests pin the old
    # one, so only the tests about the trigger get risk cycles
    data["risk"]["vol_threshold_annual"] = 0.10
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    routes = data.get("funding", {}).get("routes", [])
    if "venues" in overrides and any(r[end] not in data["venues"] for r in routes for end in ("source", "destination")):
        data.pop("funding")  # a test that brings its own venues brings its own funding, or none
    report = data.get("report", {})
    named = {report.get("risk_free_asset"), *(a for w in report.get("benchmarks", {}).values() for a in w)} - {None}
    if "report" not in overrides and not named <= set(data["assets"]):
        data.pop("report")  # ... and its own assets: the embedded book's benchmarks name assets it has not
    return data


@pytest.fixture
def paper_config(tmp_path: Path) -> Config:
    return parse_config(paper_dict(tmp_path), "test")


def install_plugin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    source: str,
    *,
    dist: str = "rwabot-test-plugin",
    version: str = "0.0.1",
) -> Path:
    """Install ``source`` as module ``module`` of a distribution with an ``rwabot`` entry point, for one test.

    Goes through the same ``importlib.metadata`` path as a pip-installed plugin, so the CLI (which builds
    its own plugin manager) finds it. ``module`` must be unique per test: modules stay imported.
    """
    site = tmp_path / f"site-{module}"
    site.mkdir()
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[rwabot]\n{module} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def offline_config_text(ledger: Path, *, speed: float = 3600.0) -> str:
    """config/paper-offline.toml with its ledger in a temporary folder (never the repository's own)."""
    import re

    text = PAPER.read_text()
    text = re.sub(r'(?m)^ledger = ".*"$', f'ledger = "{ledger}"', text)
    assert str(ledger) in text, "a test must never write the config's own ledger"
    text = re.sub(r"(?m)^vol_threshold_annual = 0\.014 ", "vol_threshold_annual = 0.10 ", text)  # as paper_dict
    return text.replace("speed = 3600.0", f"speed = {speed}")


def squash(text: str) -> str:
    """``text`` without whitespace: rich wraps long CLI lines wherever the terminal width falls."""
    return "".join(text.split())
