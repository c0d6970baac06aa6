"""docs/architecture.md names every package and top-level module of router/, so the map stays the whole tree."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


def test_every_package_and_top_level_module_is_named() -> None:
    text = DOC.read_text(encoding="utf-8")
    router = ROOT / "router"
    names = [f"router/{p.name}/" for p in router.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    names += [f"router/{p.name}" for p in router.glob("*.py")]
    missing = sorted(name for name in names if f"`{name}" not in text)
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_every_module_of_a_package_is_named() -> None:
    """Inside the packages the table names each module by its file name (``scp.py``)."""
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "router").rglob("*.py")
        if p.name != "__init__.py" and p.parent != ROOT / "router" and f"`{p.name}`" not in text
    )
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_every_hook_is_listed() -> None:
    from router.hooks import specs

    text = DOC.read_text(encoding="utf-8")
    missing = [name for name in vars(specs) if name.startswith("router_") and f"`{name}`" not in text]
    assert not missing, f"docs/architecture.md does not list the hooks {missing}"
