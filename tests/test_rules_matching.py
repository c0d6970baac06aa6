"""Rule language: patterns, conditions and file loading (pure logic, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from router.config import RouterConfig, parse_config
from router.hooks.manager import build_plugin_manager, collect_stages
from router.rules.loader import load_rules
from router.rules.matching import Subject, dataset_values, matching_rules
from router.rules.patterns import PatternError, compile_pattern

ISSUE_EXAMPLE = """\
- name: ct-to-pacs
  when:
    kind: dicom                  # dicom (C-STORE or STOW) | hl7
    calling_ae: [CT1, CT2]       # any of
    tags:                        # DICOM keyword -> value; * and ? wildcards; a list = any of; "re:..." = regex
      Modality: CT
      StudyDescription: "*HEAD*"
  then:
    - coerce: {set: {InstitutionName: General Hospital}}
    - forward: PACS              # a peer name, or a list of names
"""


@pytest.fixture
def config(tmp_path: Path) -> RouterConfig:
    return parse_config({"peers": {"PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}}}, tmp_path)


@pytest.fixture
def stages():  # type: ignore[no-untyped-def]
    return collect_stages(build_plugin_manager())


def subject(calling: str = "CT1", **tags: object) -> Subject:
    ds = Dataset()
    for key, value in tags.items():
        setattr(ds, key, value)
    return Subject(kind="dicom", calling_ae=calling, values=dataset_values(ds))


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("CT", "CT", True),
        ("ct", "CT ", True),  # case and DICOM padding do not matter
        ("CT", "CTA", False),
        ("*HEAD*", "CT HEAD W/O", True),
        ("*head*", "Head routine", True),
        ("*HEAD*", "THORAX", False),
        ("C?", "CR", True),
        ("C?", "CTA", False),
        ("re:^CT\\d+$", "CT12", True),
        ("re:CT", "xCTx", False),  # a regex must match the whole value
        ("re:(?i)ct", "Ct", True),
        ("a.b", "axb", False),  # only * and ? are wildcards
    ],
)
def test_patterns(pattern: str, value: str, matches: bool) -> None:
    assert compile_pattern(pattern).matches([value]) is matches


def test_null_pattern_means_absent_or_empty() -> None:
    p = compile_pattern(None)
    assert p.matches([]) and p.matches([""]) and not p.matches(["X"])


def test_multivalued_attribute_matches_any_value_or_the_whole() -> None:
    values = ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert compile_pattern("PRIMARY").matches(values)
    assert compile_pattern("ORIGINAL\\PRIMARY*").matches(values)
    assert not compile_pattern("DERIVED").matches(values)


def test_bad_regex_is_reported() -> None:
    with pytest.raises(PatternError, match="bad regular expression"):
        compile_pattern("re:([")


def test_issue_example_works_as_written(tmp_path: Path, config: RouterConfig, stages) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "10-ct.yaml").write_text(ISSUE_EXAMPLE)
    result = load_rules(tmp_path, stages, config)
    assert result.problems == []
    rules = result.ruleset
    assert [r.name for r in matching_rules(rules, subject("CT1", Modality="CT", StudyDescription="CT HEAD"))] == [
        "ct-to-pacs"
    ]
    assert matching_rules(rules, subject("CT3", Modality="CT", StudyDescription="CT HEAD")) == []
    assert matching_rules(rules, subject("CT2", Modality="MR", StudyDescription="HEAD")) == []
    assert matching_rules(rules, subject("CT2", Modality="CT", StudyDescription="THORAX")) == []
    assert matching_rules(rules, subject("CT2", Modality="CT")) == [], "an absent attribute does not match *HEAD*"


def test_all_matching_rules_run_until_stop(tmp_path: Path, config: RouterConfig, stages) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.yaml").write_text(
        "- {name: one, when: {tags: {Modality: [CT, MR]}}, then: []}\n"
        "- {name: two, when: {kind: dicom}, then: [], stop: true}\n"
    )
    (tmp_path / "b.yaml").write_text("- {name: three, when: {}, then: []}\n")
    rules = load_rules(tmp_path, stages, config).ruleset
    assert [r.name for r in matching_rules(rules, subject(Modality="MR"))] == ["one", "two"]
    assert [r.name for r in matching_rules(rules, subject(Modality="US"))] == ["two"]
    hl7 = Subject(kind="hl7")
    assert [r.name for r in matching_rules(rules, hl7)] == ["three"], "files load in name order; kind filters"


def test_tags_by_keyword_or_number(tmp_path: Path, config: RouterConfig, stages) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "r.yaml").write_text(
        "- {name: n, when: {tags: {'(0008,0060)': CT, '00080080': 'General*'}}, then: []}\n"
    )
    rules = load_rules(tmp_path, stages, config).ruleset
    assert matching_rules(rules, subject(Modality="CT", InstitutionName="General Hospital"))
    assert not matching_rules(rules, subject(Modality="CT", InstitutionName="Other"))


def test_problems_are_reported_with_file_and_line(tmp_path: Path, config: RouterConfig, stages) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "10-bad.yaml").write_text(
        "- name: bad\n"  # line 1
        "  when:\n"
        "    colour: red\n"  # 3: unknown condition
        "    tags:\n"
        "      NotAKeyword: X\n"  # 5: unknown keyword
        "      Modality: 're:(['\n"  # 6: bad regex
        "  then:\n"
        "    - fax: PACS\n"  # 8: unknown stage
        "    - forward: NOWHERE\n"  # 9: unknown peer
        "    - coerce: {set: {Nonsense: 1}}\n"  # 10: unknown keyword in a stage argument
        "- name: bad\n"  # 11: duplicate name
        "  then: []\n"
        f"- name: {'n' * 129}\n"  # 13: too long for the outbox's rule column
        "  then: []\n"
    )
    (tmp_path / "20-broken.yaml").write_text("- name: x\n  then: [\n")
    problems = load_rules(tmp_path, stages, config).problems
    text = "\n".join(problems)
    bad = tmp_path / "10-bad.yaml"
    assert f"{bad}:3: unknown condition 'colour'" in text
    assert f"{bad}:5: unknown DICOM keyword or tag 'NotAKeyword'" in text
    assert f"{bad}:6: tags.Modality: bad regular expression" in text
    assert f"{bad}:8: unknown stage 'fax'" in text
    assert f"{bad}:9: forward: unknown peer 'NOWHERE' (peers: PACS)" in text
    assert f"{bad}:10: coerce: set: unknown DICOM keyword or tag 'Nonsense'" in text
    assert f"{bad}:11: rule name 'bad' already used at 10-bad.yaml:1" in text
    assert f"{bad}:13: a rule name has at most 128 characters" in text
    assert f"{tmp_path / '20-broken.yaml'}:3: not valid YAML" in text
    assert len(problems) == 9
