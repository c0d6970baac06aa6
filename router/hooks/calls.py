"""Calling hooks so that one plugin cannot silence another: each implementation is called on its own.

pluggy calls a hook as one loop: the first implementation that raises ends it, and the implementations after it are
never called. An audit plugin would lose events to any other plugin's bug. So the router never calls
``pm.hook.NAME(...)`` for its notifications and decisions; it calls:

- ``notify(pm, "router_x", **kw)``: every implementation, in pluggy's order (last registered first, ``tryfirst``
  and ``trylast`` respected), each with only the arguments it declares. One that raises is logged with its
  plugin's name and the others still run. Nothing is returned.
- ``decide(pm, "router_x", on_error=..., **kw)``: a ``firstresult`` hook. Implementations are asked in the same
  order until one answers (returns something other than ``None``); that answer is returned, ``None`` when no
  implementation answered. One that raises is logged with its plugin's name and ``on_error`` is returned at once,
  without asking the others: the caller chooses the safe answer (the association policy refuses, the HTTP
  authentication denies), so a plugin that crashes can never let in what it would have kept out.

Hook wrappers (``wrapper=True`` / ``hookwrapper=True``) cannot be honoured when implementations are called one by
one; ``check_no_wrappers`` refuses them when the plugins are loaded.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import pluggy

log = logging.getLogger("router.hooks")

T = TypeVar("T")


def _implementations(pm: pluggy.PluginManager, hook: str) -> list[pluggy.HookImpl]:
    # pluggy keeps them in registration order and calls them last first: the same order here
    return list(reversed(getattr(pm.hook, hook).get_hookimpls()))


def _call(impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> Any:
    return impl.function(*[kwargs[name] for name in impl.argnames])


def notify(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> None:
    """Call every implementation of notification ``hook``; a failing one is logged, never allowed to stop the
    others or the caller."""
    for impl in _implementations(pm, hook):
        try:
            _call(impl, kwargs)
        except Exception:
            log.exception("plugin %s: %s failed (the other plugins were still told)", impl.plugin_name, hook)


def decide(pm: pluggy.PluginManager, hook: str, *, on_error: T, **kwargs: Any) -> T | Any | None:
    """The first answer (not ``None``) of decision ``hook``; ``on_error`` when an implementation raises first."""
    for impl in _implementations(pm, hook):
        try:
            answer = _call(impl, kwargs)
        except Exception:
            log.exception("plugin %s: %s failed: answering %r", impl.plugin_name, hook, on_error)
            return on_error
        if answer is not None:
            return answer
    return None


def check_no_wrappers(pm: pluggy.PluginManager, project: str) -> list[str]:
    """Problems: implementations of the router's hooks that are wrappers (not supported, see above)."""
    problems = []
    for name, caller in vars(pm.hook).items():
        if not name.startswith(f"{project}_"):
            continue
        for impl in caller.get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                problems.append(f"plugin {impl.plugin_name}: {name} is a hook wrapper, which the router does not call")
    return problems
