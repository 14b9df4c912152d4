from __future__ import annotations

import inspect
import re
import shutil
from pathlib import Path

import pytest

from bot import hookspecs
from bot.components import ComponentConfig
from bot.errors import PluginError
from bot.hookspecs import hookimpl
from bot.plugins import FAMILIES, Registry, make_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("rwabot_"))


def test_every_hook_has_a_docstring_and_a_section_in_the_docs() -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    documented = set(re.findall(r"^### `(rwabot_\w+)`", docs, flags=re.M))
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 40, f"hook {name} has no real docstring"
    assert documented == set(HOOKS), f"undocumented: {set(HOOKS) - documented}; stale: {documented - set(HOOKS)}"


def test_builtins_come_from_entry_points() -> None:
    reg = Registry(make_plugin_manager())
    names = {(r.family, r.name) for r in reg}
    for expected in [
        ("data", "simulated"),
        ("forecaster", "ewma"),
        ("forecaster", "sample"),
        ("optimizer", "erc"),
        ("policy", "full"),
        ("policy", "band"),
        ("venue", "paper"),
        ("strategy", "risk_parity"),
    ]:
        assert expected in names
    for r in reg:
        assert r.distribution.startswith("rwabot "), r
        assert issubclass(r.config_model, ComponentConfig)


def test_without_entry_points_nothing_is_registered() -> None:
    reg = Registry(make_plugin_manager(entry_points=False))
    assert list(reg) == []
    with pytest.raises(PluginError, match="unknown optimizer plugin 'erc' \\(known: none\\)"):
        reg.get("optimizer", "erc")


def test_misspelled_hook_is_caught() -> None:
    class Typo:
        @hookimpl
        def rwabot_register_forcasters(self, register):  # noqa: ANN001
            pass

    with pytest.raises(PluginError, match="rwabot_register_forcasters"):
        make_plugin_manager(entry_points=False, plugins=[Typo()])


def test_duplicate_name_in_a_family_is_refused() -> None:
    class A:
        @hookimpl
        def rwabot_register_policies(self, register):  # noqa: ANN001
            register("same", lambda cfg, ctx: None)

    class B(A):
        pass

    with pytest.raises(PluginError, match="policy 'same' registered twice"):
        Registry(make_plugin_manager(entry_points=False, plugins=[A(), B()]))


def test_third_party_plugin_found_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "ext_plugin" / "rwabot_ext_demo.py", site)
    info = site / "rwabot_ext_demo-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rwabot-ext-demo\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[rwabot]\next_demo = rwabot_ext_demo\n")
    monkeypatch.syspath_prepend(str(site))
    reg = Registry(make_plugin_manager())
    r = reg.get("forecaster", "scaled_identity")
    assert r.distribution == "rwabot-ext-demo 1.2.3"
    assert r.plugin == "ext_demo"
    # and the CLI lists it
    from typer.testing import CliRunner

    from bot.cli import app

    out = CliRunner().invoke(app, ["plugins"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "scaled_identity" in out.output and "rwabot-ext-demo" in out.output


def test_broken_plugin_names_its_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    info = site / "broken-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "rwabot_broken.py").write_text("raise RuntimeError('boom')\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rwabot]\nbroken = rwabot_broken\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(
        PluginError, match="plugin 'broken' .* from distribution broken failed to load: RuntimeError: boom"
    ):
        make_plugin_manager()


def test_harness_fixture_registers_temporarily(rwabot_plugins) -> None:  # noqa: ANN001
    import importlib.util

    spec = importlib.util.spec_from_file_location("ext_demo_tmp", ROOT / "tests/fixtures/ext_plugin/rwabot_ext_demo.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    rwabot_plugins.add(mod)
    assert "scaled_identity" in rwabot_plugins.registry().names("forecaster")
    rwabot_plugins.remove_all()
    assert "scaled_identity" not in rwabot_plugins.registry().names("forecaster")


def test_families_cover_every_registration_hook() -> None:
    assert set(FAMILIES.values()) == {h for h in HOOKS if h.startswith("rwabot_register_")}
