"""The README's commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _block_after(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(rf"## {heading}.*?```sh\n(.*?)\n```", readme, re.S)
    assert found, f"README has no command under '## {heading}'"
    return found.group(1)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _block_after("Test it") in ci


def test_run_command_installs_into_a_venv_and_uses_the_embedded_defaults() -> None:
    """A stock Debian 12 Python refuses pip outside a virtual environment (PEP 668): the command makes one,
    installs the router as a user would (not editable), and serves on the embedded defaults (no configuration)."""
    steps = _block_after("Run it").split(" && ")
    assert "apt-get install -y python3-venv" in steps, "Debian's python3 has no venv module without it"
    assert steps[-3:] == ["python3 -m venv .venv", ".venv/bin/pip install .", ".venv/bin/router serve"]
    assert not any("--config" in step or "ROUTER_CONFIG" in step for step in steps)
