"""Building the plugin manager: one per router instance, never a module-level global.

Built-in stages are found through the ``router`` setuptools entry point group, exactly like third-party plugins.
Extra plugins can be named in the configuration (``plugins: [my.module, ./local_stage.py]``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from router.hooks import specs as hookspecs
from router.intake.stage import Stage

log = logging.getLogger(__name__)


class PluginError(Exception):
    pass


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


def build_plugin_manager(extra: list[str] | None = None) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    from router.destinations import registry  # the built-in destination types (dicom, mllp, dicomweb)

    pm.register(registry, name="router.destinations")
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    for ref in extra or []:
        try:
            module = _load_module(ref)
        except (ImportError, OSError) as exc:
            raise PluginError(f"plugin {ref}: {exc}") from exc
        if not pm.is_registered(module):
            pm.register(module, name=ref)
    return pm


def collect_stages(pm: pluggy.PluginManager) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    for provided in pm.hook.router_stages():
        for stage in provided:
            if stage.name in stages:
                raise PluginError(f"two plugins provide a stage named {stage.name!r}")
            stages[stage.name] = stage
    return stages


def notify(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> None:
    """Call a notification hook; a failing plugin is logged, never allowed to break the caller."""
    try:
        getattr(pm.hook, hook)(**kwargs)
    except Exception:
        log.exception("plugin notification %s failed", hook)
