from __future__ import annotations

import ast
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


def hook_doc_problems(fn: object) -> list[str]:
    """What a hookspec's docstring lacks: a ``:param`` for each parameter, a ``:returns:`` line, a ``:raises``
    line (which may say that nothing escapes)."""
    name = getattr(fn, "__name__", repr(fn))
    doc = inspect.getdoc(fn) or ""
    problems = [f"{name}: no :param {p}:" for p in inspect.signature(fn).parameters if f":param {p}:" not in doc]
    if not re.search(r"^:returns?:", doc, flags=re.M):
        problems.append(f"{name}: no :returns: line")
    if not re.search(r"^:raises\b", doc, flags=re.M):
        problems.append(f"{name}: no :raises line")
    return problems


def doc_sections(text: str) -> dict[str, str]:
    """``### `hook` `` sections of docs/plugins.md, each with its text up to the next heading."""
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    out = {}
    for head, body in zip(parts[1::2], parts[2::2]):
        m = re.match(r"### `(rwabot_\w+)`", head)
        if m:
            out[m.group(1)] = body
    return out


def hook_section_problems(name: str, params: list[str], body: str) -> list[str]:
    problems = [f"{name}: the docs do not name `{p}`" for p in params if not re.search(rf"`{p}\b", body)]
    if not re.search(r"\braise", body, flags=re.I):
        problems.append(f"{name}: the docs say nothing of what it raises")
    if len(body.strip()) < 80:
        problems.append(f"{name}: the docs section is a stub")
    return problems


def test_every_hookspec_documents_its_params_return_and_errors() -> None:
    problems = [p for name in HOOKS for p in hook_doc_problems(getattr(hookspecs, name))]
    assert not problems, "\n".join(problems)


def test_every_hook_has_a_real_section_in_the_docs() -> None:
    sections = doc_sections((ROOT / "docs" / "plugins.md").read_text())
    missing, stale = set(HOOKS) - set(sections), set(sections) - set(HOOKS)
    assert not missing and not stale, f"undocumented: {missing}; stale: {stale}"
    problems = []
    for name in HOOKS:
        params = list(inspect.signature(getattr(hookspecs, name)).parameters)
        problems += hook_section_problems(name, params, sections[name])
    assert not problems, "\n".join(problems)


def test_the_doc_checks_catch_what_they_look_for() -> None:
    def rwabot_thin(cycle, report):  # noqa: ANN001, ANN202
        """A one-liner that names nothing.

        :param cycle: the cycle.
        """

    assert hook_doc_problems(rwabot_thin) == [
        "rwabot_thin: no :param report:",
        "rwabot_thin: no :returns: line",
        "rwabot_thin: no :raises line",
    ]
    sections = doc_sections("## A\n### `rwabot_a`\n`cycle: CycleInfo` — short.\n### `rwabot_b`\nx\n## B\n")
    assert set(sections) == {"rwabot_a", "rwabot_b"}
    assert hook_section_problems("rwabot_a", ["cycle", "report"], sections["rwabot_a"]) == [
        "rwabot_a: the docs do not name `report`",
        "rwabot_a: the docs say nothing of what it raises",
        "rwabot_a: the docs section is a stub",
    ]


FORBIDDEN_IMPORTS = ("plugins", "connectors", "strategies")


def forbidden_imports(source: str, filename: str) -> list[str]:
    """Imports of plugin packages in ``source``: ``import``/``from`` statements and ``import_module`` or
    ``__import__`` calls with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{filename}:{node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IMPORTS]
    return found


def test_the_core_imports_no_plugin_module() -> None:
    """Built-ins are reached only through the ``rwabot`` entry points, exactly like third-party plugins."""
    files = sorted((ROOT / "bot").rglob("*.py"))
    assert len(files) > 10
    found = [f for path in files for f in forbidden_imports(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "the core imports plugin modules:\n" + "\n".join(found)
    sample = "import os\nfrom plugins.optimizers.erc import x\nimport connectors.evm.devnet as d\n"
    sample += "def f():\n    import strategies\n    importlib.import_module('plugins.data.simulated')\n"
    assert [f.split(": ")[1] for f in forbidden_imports(sample, "s.py")] == [
        "plugins.optimizers.erc", "connectors.evm.devnet", "strategies", "plugins.data.simulated"
    ]  # fmt: skip


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
    """Every hook that hands out ``register`` is a component family (the command hook hands out a CLI)."""
    takes_register = {h for h in HOOKS if list(inspect.signature(getattr(hookspecs, h)).parameters) == ["register"]}
    assert set(FAMILIES.values()) == takes_register
    assert {h for h in HOOKS if h.startswith("rwabot_register_")} == takes_register | {"rwabot_register_commands"}


LISTENER = """
from bot.hookspecs import hookimpl


@hookimpl
def rwabot_fill(fill):
    pass


@hookimpl
def rwabot_cycle_finished(cycle, report):
    pass
"""


def test_plugins_lists_a_lifecycle_only_plugin_with_its_hooks_and_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin that registers no component still runs on every cycle: ``rwabot plugins`` must show it."""
    from typer.testing import CliRunner

    from bot import cli
    from tests.conftest import install_plugin

    install_plugin(tmp_path, monkeypatch, "rwabot_listener_demo", LISTENER, dist="rwabot-listener-demo", version="0.3")
    monkeypatch.setattr(cli.console, "_width", 250)
    out = CliRunner().invoke(cli.app, ["plugins"])
    assert out.exit_code == 0, out.output
    (row,) = [line for line in out.output.splitlines() if "rwabot_listener_demo" in line]
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells == ["rwabot_listener_demo", "rwabot-listener-demo 0.3", "rwabot_cycle_finished, rwabot_fill"]
    (erc,) = [line for line in out.output.splitlines() if line.startswith("│ erc ")]
    assert "rwabot 0.1.0" in erc and "rwabot_register_optimizers" in erc


COMMANDS = """
import typer

from bot.hookspecs import hookimpl


@hookimpl
def rwabot_register_commands(cli):
    @cli.command()
    def hello(name: str = "world") -> None:
        '''Say hello from a plugin.'''
        typer.echo(f"hello {name} from a plugin")
"""


def test_a_plugin_adds_a_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bot.cli import app
    from tests.conftest import install_plugin

    install_plugin(tmp_path, monkeypatch, "rwabot_hello_demo", COMMANDS)
    out = CliRunner().invoke(app, ["hello", "--name", "rwa"])
    assert out.exit_code == 0 and out.output == "hello rwa from a plugin\n", out.output
    listed = CliRunner().invoke(app, ["--help"])
    assert "hello" in listed.output and "devnet" in listed.output and "optimize" in listed.output
    assert CliRunner().invoke(app, ["nope"]).exit_code == 2


def test_devnet_is_the_evm_plugins_command(tmp_path: Path) -> None:
    """Reached through the command hook, not imported by the core; a bad --mode stops before any node."""
    from typer.testing import CliRunner

    from bot.cli import app, plugin_commands

    assert "devnet" in plugin_commands(set())
    out = CliRunner().invoke(app, ["devnet", "--help"])
    assert out.exit_code == 0 and "--keep" in out.output and "--mode" in out.output
    bad = CliRunner().invoke(app, ["devnet", "--out", str(tmp_path / "d"), "--mode", "main"])
    assert bad.exit_code == 2 and "--mode must be paper or live, not 'main'" in bad.output
    assert not (tmp_path / "d").exists()


def test_a_command_name_taken_twice_is_refused_naming_both() -> None:
    import typer

    from bot.cli import plugin_commands

    class One:
        @hookimpl
        def rwabot_register_commands(self, cli: typer.Typer) -> None:
            cli.command("same")(lambda: None)

    class Two(One):
        pass

    pm = make_plugin_manager(entry_points=False, plugins=[One(), Two()])
    with pytest.raises(PluginError, match="command 'same' registered twice: by .* and by "):
        plugin_commands(set(), pm)
    pm = make_plugin_manager(entry_points=False, plugins=[One()])
    with pytest.raises(PluginError, match="command 'same' of plugin .* is a core rwabot command"):
        plugin_commands({"same"}, pm)
    assert list(plugin_commands({"run"}, pm)) == ["same"]
