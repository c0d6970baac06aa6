"""The test suite's own rules: shared helpers live in helper modules (peers, forwarding, tools ...), never in a
test module that another one imports (a test module is free to change its helpers; importing it also runs its
module-level set-up), and helper modules are imported by their own name: ``tests.peers`` would be a second copy
of ``peers``, with its own record of the ports it handed out."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def forbidden(module: str) -> bool:
    return module.split(".")[-1].startswith("test_") or module.split(".")[0] == "tests"


def test_no_module_of_the_suite_imports_a_test_module() -> None:
    offenders = {path.name: sorted(filter(forbidden, imported_modules(path))) for path in sorted(TESTS.rglob("*.py"))}
    assert {name: mods for name, mods in offenders.items() if mods} == {}
