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


def test_run_command_uses_the_embedded_defaults() -> None:
    assert _block_after("Run it") == "python3 -m pip install -e . && router serve"
