"""Hostile rule files: whatever a file holds, loading it ends with rules or ``file:line: message`` problems, never an
exception, in bounded time and memory (hypothesis for the shapes, examples for the known bombs; docs/security.md).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.config import RouterConfig, parse_config
from router.hooks.manager import build_plugin_manager, collect_stages
from router.intake.stage import Stage
from router.rules.loader import MAX_DEPTH, MAX_VALUES, load_rules

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PROBLEM = re.compile(r"^.+\.ya?ml:\d+: .+")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Stage], RouterConfig]:
    workdir = tmp_path_factory.mktemp("fuzz-rules")
    config = parse_config(
        {"data_dir": "var", "peers": {"PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}}}, workdir
    )
    (workdir / "rules").mkdir()
    return workdir / "rules", collect_stages(build_plugin_manager(config)), config


def loaded(setup: tuple[Path, dict[str, Stage], RouterConfig], text: str) -> list[str]:
    """The problems of a folder holding one rule file with ``text``; fails on an exception or a slow load."""
    folder, stages, config = setup
    (folder / "10-fuzz.yaml").write_text(text, encoding="utf-8")
    started = time.monotonic()
    result = load_rules(folder, stages, config)
    assert time.monotonic() - started < 5, "loading one small rule file took too long"
    assert all(PROBLEM.match(p) for p in result.problems), result.problems
    return result.problems


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
keys = st.sampled_from(["name", "when", "then", "stop", "kind", "tags", "coerce", "forward", "set", "remove", "copy",
                        "PatientID", "to", "commit", "demographics", "calling_ae", "message", "x"])  # fmt: skip
shapes = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=30)  # fmt: skip


@BOUNDED
@given(rules=st.lists(shapes, max_size=4))
def test_any_shape_of_rule_file_loads_or_is_refused_by_line(
    setup: tuple[Path, dict[str, Stage], RouterConfig], rules: list[Any]
) -> None:
    loaded(setup, yaml.safe_dump(rules))


@BOUNDED
@given(text=st.text(max_size=400))
def test_any_text_loads_or_is_refused_by_line(setup: tuple[Path, dict[str, Stage], RouterConfig], text: str) -> None:
    loaded(setup, text)


def laughs(levels: int, place: str) -> str:
    """The billion laughs: each level a list of ten references to the level before, the last used in ``place``."""
    text = "- name: r0\n  then: []\n  description: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        text += f"- name: r{level}\n  then: []\n  description: &a{level} [{refs}]\n"
    return text + place.replace("BOMB", f"*a{levels - 1}")


@pytest.mark.parametrize(
    "place",
    [
        "- name: bomb\n  then:\n    - coerce:\n        remove: BOMB\n",  # its problem message quoted 10**8 values
        "- name: bomb\n  then:\n    - forward: BOMB\n",
        "- name: bomb\n  when: {kind: BOMB}\n  then: []\n",
        "- name: bomb\n  unknown: BOMB\n  then: []\n",
    ],
    ids=["coerce remove", "forward", "when kind", "unknown key"],
)
def test_yaml_alias_bombs_are_refused_before_they_are_walked(
    setup: tuple[Path, dict[str, Stage], RouterConfig], place: str
) -> None:
    problems = loaded(setup, laughs(8, place))
    assert any(f"more than {MAX_VALUES} values" in p for p in problems), problems


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_nesting_too_deep_is_refused(setup: tuple[Path, dict[str, Stage], RouterConfig], depth: int) -> None:
    problems = loaded(setup, "- name: deep\n  then: []\n  description: " + "[" * depth + "]" * depth + "\n")
    assert any("nested" in p for p in problems), problems


def test_a_rule_whose_values_break_the_reader_is_a_problem_of_its_own(
    setup: tuple[Path, dict[str, Stage], RouterConfig],
) -> None:
    """A list where a kind belongs (unhashable) raised TypeError out of the loader; now the rule is refused and
    the others still load."""
    problems = loaded(setup, "- name: bad\n  when: {kind: [[dicom]]}\n  then: []\n- name: good\n  then: []\n")
    assert problems == [f"{setup[0] / '10-fuzz.yaml'}:1: this rule cannot be read (TypeError)"]
