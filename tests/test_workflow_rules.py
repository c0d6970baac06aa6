"""Rules and settings of the workflow services, checked before anything runs: ``kind: mpps``, ``commit: true``,
the per-peer commitment settings; and what an MPPS rule sees (the step after the message)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from router.config import ConfigError, RouterConfig, parse_config
from router.hooks.manager import build_plugin_manager, collect_stages
from router.intake.envelope import Envelope, Source
from router.intake.pipeline import run_pipeline
from router.intake.stage import Stage, StageError
from router.mpps import MppsMessage
from router.rules.loader import load_rules

PEERS = {
    "PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104},
    "RIS2": {"mllp": "127.0.0.1:2575"},
}


@pytest.fixture
def config(tmp_path: Path) -> RouterConfig:
    return parse_config({"peers": PEERS, "rules_dir": "rules"}, tmp_path)


@pytest.fixture
def stages() -> dict[str, Stage]:
    return collect_stages(build_plugin_manager())


def problems(config: RouterConfig, stages: dict[str, Stage], text: str) -> list[str]:
    config.rules_dir.mkdir(exist_ok=True)
    (config.rules_dir / "10.yaml").write_text(text)
    return [p.split(": ", 1)[1] for p in load_rules(config.rules_dir, stages, config).problems]


def test_commit_and_mpps_in_rule_files(config: RouterConfig, stages: dict[str, Stage]) -> None:
    good = """
- name: commit
  when: {kind: dicom}
  then: [{forward: {to: PACS, commit: true}}]
- name: mpps
  when: {kind: mpps, message: N-SET, tags: {PerformedProcedureStepStatus: COMPLETED}}
  then: [{forward: PACS}]
"""
    assert problems(config, stages, good) == []
    bad = """
- name: bad
  when: {kind: [mpps, images]}
  then:
    - forward: {to: PACS, commit: yes please}
    - forward: {to: RIS2, commit: true}
    - forward: {to: PACS, commit: true, priority: 1}
"""
    assert problems(config, stages, bad) == [
        "unknown kind 'images' (expected one of ['dicom', 'hl7', 'mpps'])",
        "forward: commit: expects true or false",
        "forward: commit: peer 'RIS2' is an HL7 peer",
        "forward: unknown argument(s) ['priority'] (expected ['commit', 'to'])",
    ]


def test_commitment_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as found:
        parse_config({"peers": {"RIS": {"mllp": "127.0.0.1:1", "delete_after_commit": True}}}, tmp_path)
    assert "storage commitment settings are for DICOM peers" in str(found.value)
    with pytest.raises(ConfigError) as found:
        parse_config({"peers": {"PACS": {**PEERS["PACS"], "commit_wait": 120, "commit_timeout": 60}}}, tmp_path)
    assert "commit_timeout must be >= commit_wait" in str(found.value)
    peer = parse_config({"peers": {"PACS": PEERS["PACS"]}}, tmp_path).peers["PACS"]
    assert (peer.commit_wait, peer.commit_timeout, peer.commit_requests) == (60.0, 3600.0, 3)
    assert (peer.commit_new_association, peer.delete_after_commit) == (False, False)


def step(status: str, modality: str) -> MppsMessage:
    state = Dataset()
    state.PerformedProcedureStepStatus, state.Modality = status, modality
    change = Dataset()
    change.PerformedProcedureStepStatus = status
    return MppsMessage("N-SET", "1.2.3", change, state)


def test_mpps_rules_see_the_step_and_commit_is_for_images(config: RouterConfig, stages: dict[str, Stage]) -> None:
    problems(config, stages, """
- name: ct-done
  when: {kind: mpps, message: N-SET, calling_ae: CT1, tags: {PerformedProcedureStepStatus: COMPLETED, Modality: CT}}
  then: [{forward: PACS}]
""")  # fmt: skip
    ruleset = load_rules(config.rules_dir, stages, config).ruleset
    source = Source("dimse", "CT1", "ROUTER")
    done = run_pipeline(Envelope.from_mpps(b"", step("COMPLETED", "CT"), source), ruleset, stages, config)
    assert [(f.peer, f.commit) for f in done.forwards] == [("PACS", False)]
    other = run_pipeline(Envelope.from_mpps(b"", step("COMPLETED", "MR"), source), ruleset, stages, config)
    assert other.forwards == []
    problems(config, stages, "- {name: c, when: {kind: mpps}, then: [{forward: {to: PACS, commit: true}}]}\n")
    ruleset = load_rules(config.rules_dir, stages, config).ruleset
    with pytest.raises(StageError, match="commit: storage commitment is for DICOM objects, not mpps"):
        run_pipeline(Envelope.from_mpps(b"", step("COMPLETED", "CT"), source), ruleset, stages, config)
