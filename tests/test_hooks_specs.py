"""Every hook a plugin can implement is called somewhere, documented in docs/plugins.md, and has a docstring.

A hook that nothing calls is a promise the router does not keep (``router_query_answered`` was one): this reads
the source of ``router/`` and ``plugins/`` for a call, ``notify(pm, "name", ...)``, ``decide(pm, "name", ...)`` or
``pm.hook.name(...)``.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from router.hooks import specs

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs" / "plugins.md"
HOOKS = sorted(name for name, fn in inspect.getmembers(specs, inspect.isfunction) if name.startswith("router_"))


def calls_in_source() -> dict[str, list[str]]:
    """hook name -> the files that call it."""
    found: dict[str, list[str]] = {}
    for path in sorted([*(ROOT / "router").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = None
            if isinstance(func, ast.Name) and func.id in ("notify", "decide") and len(node.args) >= 2:
                arg = node.args[1]
                name = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            elif (
                isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute) and func.value.attr == "hook"
            ):
                name = func.attr
            if name:
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_there_are_hooks_to_check() -> None:
    assert len(HOOKS) >= 23


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_called(hook: str) -> None:
    assert hook in calls_in_source(), f"{hook} is declared in router/hooks/specs.py but nothing calls it"


def test_only_declared_hooks_are_called() -> None:
    assert set(calls_in_source()) - {*HOOKS, "router_stages"} == set()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook: str) -> None:
    assert inspect.getdoc(getattr(specs, hook)), f"{hook} has no docstring"
    text = DOCS.read_text()
    entry = re.search(rf"^### `{hook}`\n(.*?)(?=^#)", text, re.S | re.M)
    assert entry, f"docs/plugins.md has no '### `{hook}`' entry"
    body = entry.group(1)
    for arg in inspect.signature(getattr(specs, hook)).parameters:
        assert f"`{arg}`" in body, f"docs/plugins.md: {hook} does not describe its argument {arg}"
    kind = "decision" if getattr(specs, hook).router_spec["firstresult"] else None
    if kind:
        assert "decision" in body.lower(), f"docs/plugins.md: {hook} is a decision hook; say so"
