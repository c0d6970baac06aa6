"""Coverage-guided fuzzing with atheris (libFuzzer) of the P10 scan, the ER7 parser, the multipart reader and MLLP
framing, a few seconds each (tests/fuzz_atheris.py has the targets; docs/security.md the outcomes).

Each target runs in a process of its own from a few valid seeds; libFuzzer mutates them guided by the coverage of
the router's modules and stops at the first input that raises anything but the target's documented refusal, that
takes longer than ``-timeout``, or that takes the process past ``-rss_limit_mb``. Bounded in time
(``-max_total_time``), so the inputs tried differ from run to run: a crash file names the one that failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).parent / "fuzz_atheris.py"
ROOT = HARNESS.parent.parent
SECONDS = 5


def test_atheris_is_installed() -> None:
    """atheris comes with the test extras (pyproject.toml): without it the targets below fail, never skip."""
    import atheris  # noqa: F401


@pytest.mark.parametrize("target", ["p10scan", "hl7", "multipart", "mllp"])
def test_fuzz_target_survives_coverage_guided_inputs(tmp_path: Path, target: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    seeds = tmp_path / "seeds"
    subprocess.run([sys.executable, str(HARNESS), target, "--seeds", str(seeds)], check=True, env=env, timeout=60)
    options = [f"-max_total_time={SECONDS}", "-timeout=2", "-rss_limit_mb=1024", "-max_len=4096",
               f"-artifact_prefix={tmp_path}/"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(HARNESS), target, *options, str(seeds)],
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        cwd=tmp_path,
        timeout=SECONDS + 60,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert done.returncode == 0 and not crashes, f"{crashes}\n{done.stderr[-3000:]}"
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs and int(runs.group(1)) > 1000, f"the fuzzer hardly ran:\n{done.stderr[-2000:]}"
