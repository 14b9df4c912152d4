"""Pytest helpers for plugin authors, shipped with rwabot (registered as a pytest plugin).

``rwabot_plugins`` gives a fresh plugin manager with the installed plugins and a way to register
one more for the duration of a test, like ``pytester`` does for pytest plugins::

    def test_my_venue(rwabot_plugins):
        rwabot_plugins.add(my_plugin_module)
        venue = rwabot_plugins.registry().get("venue", "mine")
"""

from __future__ import annotations

from collections.abc import Iterator

import pluggy
import pytest

from bot.plugins import Registry, make_plugin_manager


class PluginHarness:
    def __init__(self, entry_points: bool = True) -> None:
        self.pm: pluggy.PluginManager = make_plugin_manager(entry_points=entry_points)
        self._added: list[object] = []

    def add(self, plugin: object, name: str | None = None) -> None:
        """Register ``plugin`` until the end of the test; misspelled hooks fail here."""
        self.pm.register(plugin, name=name)
        self._added.append(plugin)
        self.pm.check_pending()

    def registry(self) -> Registry:
        return Registry(self.pm)

    def remove_all(self) -> None:
        for plugin in reversed(self._added):
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
        self._added.clear()


@pytest.fixture
def rwabot_plugins() -> Iterator[PluginHarness]:
    harness = PluginHarness()
    yield harness
    harness.remove_all()
