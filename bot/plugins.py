"""Plugin manager factory and the component registry built from the registration hooks.

Built-in plugins are found through the ``rwabot`` entry-point group exactly like third-party ones,
so this module never names a plugin. Tests build a manager with ``entry_points=False`` and add the
plugins they need (see ``bot.testing``).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy
from pydantic import ValidationError

from bot import hookspecs
from bot.components import ComponentConfig, ComponentContext, Factory, NoOptions
from bot.errors import ConfigError, PluginError

FAMILIES: dict[str, str] = {
    "data": "rwabot_register_data_sources",
    "forecaster": "rwabot_register_forecasters",
    "returns": "rwabot_register_return_models",
    "optimizer": "rwabot_register_optimizers",
    "policy": "rwabot_register_policies",
    "venue": "rwabot_register_venues",
    "strategy": "rwabot_register_strategies",
    "notifier": "rwabot_register_notifiers",
}


def make_plugin_manager(*, entry_points: bool = True, plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """Build a plugin manager; ``entry_points=False`` skips installed plugins (for tests)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if entry_points:
        _load_entry_points(pm)
    for plugin in plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook that does not exist: {exc}") from exc
    return pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Load the ``rwabot`` entry points, naming the distribution of any plugin that fails to import."""
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != hookspecs.PROJECT or pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) from distribution {dist.metadata['name']} "
                    f"failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            pm.register(plugin, name=ep.name)
            _DISTS[id(plugin)] = f"{dist.metadata['name']} {dist.version}"


_DISTS: dict[int, str] = {}


def distribution_of(plugin: object) -> str:
    """``name version`` of the distribution whose entry point loaded ``plugin``."""
    return _DISTS.get(id(plugin), "(registered directly)")


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    distribution: str
    hooks: tuple[str, ...]


def loaded_plugins(pm: pluggy.PluginManager) -> list[LoadedPlugin]:
    """Every plugin registered with ``pm`` and the hooks it implements, by name.

    The registry lists components; a plugin that only listens (lifecycle hooks) or only adds commands
    registers none and would be invisible there, yet it runs on every cycle.
    """
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        out.append(LoadedPlugin(name, distribution_of(plugin), hooks))
    return sorted(out, key=lambda p: p.name)


@dataclass(frozen=True)
class Registration:
    family: str
    name: str
    factory: Factory
    config_model: type[ComponentConfig]
    plugin: str
    distribution: str

    def validate(self, options: dict[str, Any] | ComponentConfig | None, *, where: str) -> ComponentConfig:
        """The component's options as its own model, without building anything.

        Kept apart from ``build`` so that every configured component can be checked before any of
        them starts a node, opens a book or the engine creates its ledger. ``where`` prefixes each
        error (``config/paper.toml: venues.exchange.options``); an instance of the model passes as is.
        """
        if isinstance(options, self.config_model):
            return options
        if isinstance(options, ComponentConfig):
            raise ConfigError(f"{where}: expected {self.config_model.__name__}, got {type(options).__name__}")
        try:
            return self.config_model.model_validate(options or {})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where)) from None

    def build(self, options: dict[str, Any] | ComponentConfig | None, ctx: ComponentContext, *, where: str) -> Any:
        """Validate ``options`` against the component's model and call its factory."""
        return self.factory(self.validate(options, where=where), ctx)


def format_validation_error(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{where}.{loc}" if loc else where
        lines.append(f"{key}: {err['msg']}")
    return "; ".join(lines)


class Registry:
    """Every component registered by every plugin, by family and name."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._items: dict[tuple[str, str], Registration] = {}
        for family, hook_name in FAMILIES.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
                dist_name = distribution_of(impl.plugin)

                def register(
                    name: str,
                    factory: Factory,
                    config_model: type[ComponentConfig] = NoOptions,
                    *,
                    _family: str = family,
                    _plugin: str = plugin_name,
                    _dist: str = dist_name,
                ) -> None:
                    key = (_family, name)
                    if key in self._items:
                        other = self._items[key]
                        raise PluginError(f"{_family} {name!r} registered twice: by {other.plugin} and by {_plugin}")
                    if not (isinstance(config_model, type) and issubclass(config_model, ComponentConfig)):
                        raise PluginError(
                            f"{_family} {name!r} from {_plugin}: config_model must subclass "
                            "bot.components.ComponentConfig"
                        )
                    self._items[key] = Registration(_family, name, factory, config_model, _plugin, _dist)

                impl.function(register=register)

    def get(self, family: str, name: str) -> Registration:
        try:
            return self._items[(family, name)]
        except KeyError:
            known = ", ".join(sorted(n for f, n in self._items if f == family)) or "none"
            raise PluginError(f"unknown {family} plugin {name!r} (known: {known})") from None

    def names(self, family: str) -> list[str]:
        return sorted(n for f, n in self._items if f == family)

    def __iter__(self):
        return iter(sorted(self._items.values(), key=lambda r: (r.family, r.name)))
