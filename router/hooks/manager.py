"""Building the plugin manager: one per router process, never a module-level global.

Plugins come from three places, registered in this order (see docs/plugins.md):

1. ``DEFAULT_PLUGINS``: the built-in ones, shipped inside the package (datasette's habit): the stages and the
   default access policy. They are registered by module name, whatever the installation (editable or not).
2. the ``router`` setuptools entry point group: third-party packages (``pip install router-audit``).
3. ``plugin_modules`` in the configuration: a module name or a ``.py`` file, without packaging.

A plugin's name is its entry point name, else the last part of its module name, else its file's stem (``coerce``,
``stamp``); ``router plugins`` lists them. A plugin with settings declares a pydantic model as its module's
``settings_model``; ``plugins: {NAME: {...}}`` in the configuration is validated against it when the plugins are
loaded (also an empty section when none is given, so defaults apply and required settings are asked for), and the
validated settings reach the plugin as ``plugin_settings[NAME]`` in ``router_startup``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pluggy
from pydantic import BaseModel, ValidationError

from router.config import ConfigError, RouterConfig, format_errors
from router.hooks import specs as hookspecs
from router.hooks.calls import check_no_wrappers, decide, notify
from router.intake.stage import Stage

__all__ = [
    "DEFAULT_PLUGINS",
    "PluginError",
    "RouterPlugins",
    "build_plugin_manager",
    "collect_stages",
    "decide",
    "notify",
    "stages_by_plugin",
]

# The built-in plugins, registered from inside the installed package (never through the entry point group).
DEFAULT_PLUGINS = (
    "plugins.access",
    "plugins.audit",
    "plugins.coerce",
    "plugins.destinations",
    "plugins.forward",
    "plugins.metrics",
    "plugins.resend",
    "plugins.transcode",
)
SETTINGS_ATTR = "settings_model"

log = logging.getLogger(__name__)


class PluginError(ConfigError):
    """A plugin cannot be loaded or configured: the router does not start (reported like a configuration error)."""


class RouterPlugins(pluggy.PluginManager):
    """pluggy's manager, plus where each plugin came from and each plugin's validated settings."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}
        self.settings: dict[str, BaseModel] = {}

    def add(self, plugin: object, name: str, origin: str) -> None:
        if self.is_registered(plugin):
            return
        if self.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r}: {self.origins.get(name, '?')} and {origin}")
        try:
            self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name} ({origin}): {exc}") from exc
        self.origins[name] = origin


def _load_module(ref: str) -> ModuleType:
    if ref.endswith(".py"):
        path = Path(ref)
        name = f"router_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"plugin {ref}: cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(ref)


def _plugin_name(ref: str) -> str:
    return Path(ref).stem if ref.endswith(".py") else ref.rpartition(".")[2]


def _load_entry_points(pm: RouterPlugins) -> None:
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        taken = pm.origins.get(ep.name, "")
        if taken and taken != f"built-in ({ep.value})":  # the same module under its own name: an older install's
            log.warning("entry point plugin %s (%s) is not loaded: a %s plugin has that name", ep.name, ep.value, taken)
    before = set(pm.get_plugins())
    try:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"entry point plugin {exc.plugin!r}: {exc}") from exc
    except ValueError as exc:  # a module registered twice, under another name
        raise PluginError(f"entry point plugins: {exc}") from exc
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    for plugin in set(pm.get_plugins()) - before:
        name = pm.get_name(plugin) or "?"
        dist = dists.get(id(plugin))
        where = f"{dist.project_name} {dist.version}" if dist is not None else "?"
        pm.origins[name] = f"entry point ({where})"


def _validate_settings(pm: RouterPlugins, sections: Mapping[str, Any], source: str) -> None:
    problems = []
    for name in sections:
        if not pm.has_plugin(name):
            problems.append(f"plugins.{name}: no plugin of this name is loaded (see `router plugins`)")
    for name, plugin in pm.list_name_plugin():
        model = getattr(plugin, SETTINGS_ATTR, None)
        if model is None:
            if name in sections:
                problems.append(f"plugins.{name}: this plugin takes no settings")
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            problems.append(f"plugins.{name}: the plugin's {SETTINGS_ATTR} is not a pydantic model")
            continue
        section = sections.get(name)
        try:
            pm.settings[name] = model.model_validate({} if section is None else section)
        except ValidationError as exc:
            problems += format_errors(exc, f"plugins.{name}").splitlines()
    if problems:
        raise PluginError(f"{source}: invalid configuration\n" + "\n".join(problems))


def build_plugin_manager(config: RouterConfig | None = None) -> RouterPlugins:
    """The built-in plugins, the entry point plugins and ``config.plugin_modules``, their settings validated."""
    config = config or RouterConfig()
    pm = RouterPlugins()
    for ref in DEFAULT_PLUGINS:
        pm.add(importlib.import_module(ref), _plugin_name(ref), f"built-in ({ref})")
    _load_entry_points(pm)
    for ref in config.plugin_modules:
        try:
            module = _load_module(ref)
        except (ImportError, OSError) as exc:
            raise PluginError(f"plugin_modules: {ref}: {exc}") from exc
        pm.add(module, _plugin_name(ref), f"plugin_modules ({ref})")
    wrappers = check_no_wrappers(pm, hookspecs.PROJECT)
    if wrappers:
        raise PluginError("\n".join(wrappers))
    _validate_settings(pm, config.plugins, str(config.source or "configuration"))
    return pm


def collect_stages(pm: pluggy.PluginManager) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    for provided in pm.hook.router_stages():
        for stage in provided:
            if stage.name in stages:
                raise PluginError(f"two plugins provide a stage named {stage.name!r}")
            stages[stage.name] = stage
    return stages


def stages_by_plugin(pm: pluggy.PluginManager) -> dict[str, list[str]]:
    """The names of the stages each plugin provides (for ``router plugins``)."""
    found: dict[str, list[str]] = {}
    for impl in pm.hook.router_stages.get_hookimpls():
        provided = cast(list[Stage], impl.function())
        found[impl.plugin_name] = [stage.name for stage in provided]
    return found
