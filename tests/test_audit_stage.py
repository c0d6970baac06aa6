"""The ``audit`` stage: ``router rules check`` checks its arguments, ``router rules test`` shows it without recording,
and what it plans is recorded only once its object is durable (dropped when the object is refused)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lxml import etree
from pydicom.uid import generate_uid

from plugins.audit import events, stage, state
from plugins.audit.message import AuditEvent, to_xml
from plugins.audit.settings import Settings
from router.config import parse_config
from router.intake.envelope import Envelope, Source

from audit_repo import schema_problems
from peers import make_instance


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "--config", str(config), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ})  # fmt: skip


def site(tmp_path: Path, then: list[object]) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "10-audit.yaml").write_text(yaml.safe_dump([{"name": "r", "then": then}]))
    config = tmp_path / "router.yaml"
    peers = {"EXT": {"ae_title": "EXT", "host": "ext.example", "port": 104}}
    config.write_text(yaml.safe_dump({"data_dir": "var", "rules_dir": "rules", "peers": peers}))
    return config


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"event": "export"}, "export: name the peer"),
        ({"event": "export", "to": "NOWHERE"}, "'NOWHERE' is not a configured peer"),
        ({"event": "leak"}, "event: expected one of export, import, security-alert"),
        ({"event": "import", "outcome": "fine"}, "outcome: expected one of success, minor, serious, major"),
        ({"event": "import", "to": "EXT"}, "only an export names a peer"),
        ({"event": "import", "colour": "red"}, "unknown key 'colour'"),
        ("export", "expects a mapping"),
    ],
)
def test_rules_check_reports_bad_audit_arguments(tmp_path: Path, args: object, problem: str) -> None:
    done = cli(site(tmp_path, [{"audit": args}]), "rules", "check")
    assert done.returncode == 1 and problem in done.stdout and "10-audit.yaml:" in done.stdout, done.stdout


def test_rules_check_and_test_accept_a_good_audit_stage(tmp_path: Path) -> None:
    config = site(tmp_path, [{"audit": {"event": "export", "to": "EXT", "outcome": "success", "description": "x"}}])
    assert cli(config, "rules", "check").returncode == 0
    dcm = tmp_path / "one.dcm"
    make_instance(generate_uid()).save_as(dcm, enforce_file_format=True)
    done = cli(config, "rules", "test", str(dcm))
    assert done.returncode == 0 and "audit: export to EXT: would be recorded once stored" in done.stdout, done.stdout


def test_planned_events_wait_for_their_object_and_are_dropped_with_it() -> None:
    recorded: list[AuditEvent] = []

    class Fake:
        record = staticmethod(recorded.append)

    local = events.Local("ROUTER", "h", "serve")
    planned = events.security_alert(events.RESTRICTED_FUNCTION, 0, local.participant(), [], [])
    stage.PENDING.add(("dicom", "1.2.3"), planned)
    stage.PENDING.add(("dicom", "1.2.4"), planned)
    stage.drop(("dicom", "1.2.4"))  # refused: never recorded
    stage.flush(Fake(), ("dicom", "1.2.4"))  # type: ignore[arg-type]
    assert recorded == []
    stage.flush(Fake(), ("dicom", "1.2.3"))  # type: ignore[arg-type]
    assert recorded == [planned]
    stage.flush(Fake(), ("dicom", "1.2.3"))  # type: ignore[arg-type]
    assert recorded == [planned], "recorded once"


def test_export_message_names_the_peer_as_destination_media(tmp_path: Path) -> None:
    config = parse_config({"peers": {"EXT": {"ae_title": "EXT", "host": "ext.example", "port": 104}}}, Path("/"))
    assert stage.problems({"event": "export", "to": "EXT"}, config) == []
    running = state.Running(config, Settings(), None, events.Local("ROUTER", "h", "serve"))  # type: ignore[arg-type]
    instance = make_instance(generate_uid(), PatientID="P7")
    path = tmp_path / "one.dcm"
    instance.save_as(path, enforce_file_format=True)
    env = Envelope.from_p10(path.read_bytes(), Source("dimse", "CT1", "ROUTER", "10.0.0.7:4006"))
    xml = to_xml(stage.build(running, env, {"event": "export", "to": "EXT"}), "ROUTER")
    assert schema_problems(xml) == []
    root = etree.fromstring(xml.encode())
    assert root.find("EventIdentification/EventID").get("csd-code") == "110106"
    remote, exporter, media = root.findall("ActiveParticipant")
    assert (exporter.get("UserID"), exporter.get("UserIsRequestor")) == ("ROUTER", "true")
    assert (remote.get("UserID"), remote.get("NetworkAccessPointID")) == ("EXT", "ext.example")
    assert (media.get("UserID"), media.find("RoleIDCode").get("csd-code")) == ("dicom://EXT@ext.example:104", "110154")
    assert media.find("MediaIdentifier/MediaType").get("csd-code") == "110037"
    patient = root.findall("ParticipantObjectIdentification")[-1]
    assert patient.get("ParticipantObjectID") == "P7"


def test_router_users_changes_are_audited_from_the_command_line(tmp_path: Path) -> None:
    """``router users add`` (no server running): Application Start, a Security Alert "User Security Attributes
    Changed" naming the user and who made the change, Application Stop, all in the audit file."""
    config = site(tmp_path, [])
    settings = yaml.safe_load(config.read_text())
    settings["plugins"] = {"audit": {"file": "audit/audit.xml.log"}}
    config.write_text(yaml.safe_dump(settings))
    command = [sys.executable, "-m", "router", "--config", str(config), "users", "add", "ann", "--role", "operator"]
    done = subprocess.run(command, input="a long enough secret\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "audit" / "audit.xml.log").read_text().splitlines()
    assert [schema_problems(line) for line in lines] == [[]] * len(lines)
    codes = [etree.fromstring(line.encode()).find("EventIdentification/EventTypeCode") for line in lines]
    types = [code.get("csd-code") for code in codes]
    assert types == ["110120", "110137", "110121"]  # start, user security attributes changed, stop
    alert = etree.fromstring(lines[1].encode())
    [performer] = [p for p in alert.findall("ActiveParticipant") if p.get("UserIsRequestor") == "false"]
    assert performer.get("UserID").startswith("cli:")
    assert alert.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "ann"
