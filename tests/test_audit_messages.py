"""Every audit message the plugin builds is valid against the DICOM audit message schema (PS3.15 A.5.1.1) and says
what PS3.15 A.5.3 asks; the syslog bytes are RFC 5424 with RFC 5425 framing. Pure: lxml validates."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree
from pydicom.dataset import Dataset

from plugins.audit import events, facts, on_objects
from plugins.audit.message import AuditEvent, to_xml
from plugins.audit.syslog import BOM, octet_counted, syslog_message
from router.hl7.message import parse_message

from audit_repo import schema_problems
from hl7msg import adt, message, seg

ROUTER = events.Local("ROUTER", "router.example", "serve")
PATIENT = facts.Patient("PAT-1^^^HOSP", "DOE^JANE")
CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


def subject() -> facts.Subject:
    s = facts.Subject(PATIENT)
    s.study("1.2.3").add(CT, "1.2.3.1", "ACC1")
    s.study("1.2.3").add(CT, "1.2.3.2")
    s.study("1.2.4").add(MR, "1.2.4.1", "ACC2")
    return s


def modality() -> events.Participant:
    return events.dicom_node("CT1", "10.0.0.7:4006", True)


MESSAGES: dict[str, Callable[[], AuditEvent]] = {
    "application start": lambda: events.application_activity(ROUTER, True, "router-user"),
    "application stop": lambda: events.application_activity(ROUTER, False, ""),
    "instances received": lambda: events.instances_transferred(subject(), "C", modality(), ROUTER.participant(), []),
    "instances sent": lambda: events.instances_transferred(
        subject(),
        "R",
        ROUTER.participant(True),
        events.dicom_node("PACS", "pacs.local:104", False),
        [],
        events.MINOR,
        "1 not sent",
    ),
    "begin transferring": lambda: events.begin_transferring(
        subject(), ROUTER.participant(True), events.dicom_node("PACS", "pacs.local", False)
    ),
    "query": lambda: events.query(
        modality(),
        ROUTER.participant(),
        "1.2.840.10008.5.1.4.1.2.2.1",
        on_objects.encode(_keys()),
        events.SUCCESS,
        "1 match",
    ),
    "patient record": lambda: events.record(
        events.PATIENT_RECORD,
        "U",
        [events.hl7_application("HIS", "HOSP", "h:1"), ROUTER.participant()],
        PATIENT,
        [("MSH-10", b"MSG1")],
    ),
    "order record": lambda: events.record(events.ORDER_RECORD, "C", [ROUTER.participant()], PATIENT, []),
    "procedure record": lambda: events.record(
        events.PROCEDURE_RECORD,
        "U",
        [modality(), ROUTER.participant()],
        PATIENT,
        [],
        studies=list(subject().studies.values()),
    ),
    "security alert": lambda: events.security_alert(
        events.NODE_AUTHENTICATION,
        events.MINOR,
        ROUTER.participant(),
        [modality()],
        [events.alert_subject("10.0.0.7", "association rejected")],
    ),
    "user authentication": lambda: events.user_authentication(
        events.http_client("alice", "10.0.0.9:50123", True), ROUTER.participant(), events.SUCCESS, "basic"
    ),
    "export": lambda: events.data_export(
        [subject()],
        ROUTER.participant(),
        events.dicom_node("EXT", "ext.org", False),
        "dicom://EXT@ext.org:104",
        events.SUCCESS,
        "tele-radiology",
    ),
    "import": lambda: events.data_import(
        [subject()], ROUTER.participant(), modality(), "dicom://CT1@10.0.0.7:4006", events.SUCCESS, ""
    ),
}


def _keys() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "PAT-1"
    ds.StudyInstanceUID = ""
    return ds


def xml_of(event: AuditEvent) -> etree._Element:
    return etree.fromstring(to_xml(event, "ROUTER", "General Hospital").encode())


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_message_is_valid_against_the_dicom_audit_schema(name: str) -> None:
    xml = to_xml(MESSAGES[name](), "ROUTER", "General Hospital")
    assert schema_problems(xml) == []
    assert "\n" not in xml


def test_the_validator_is_real_it_refuses_what_the_schema_refuses() -> None:
    good = to_xml(MESSAGES["instances received"](), "ROUTER")
    assert schema_problems(good) == []
    for broken in (
        re.sub(r"<ParticipantObjectName>[^<]*</ParticipantObjectName>", "", good, count=1),  # name or query: required
        good.replace(' originalText="DICOM Instances Transferred"', ""),  # coded values carry originalText
        good.replace('EventOutcomeIndicator="0"', 'EventOutcomeIndicator="1"'),
        good.replace('EventDateTime="', 'EventDateTime="yesterday'),
    ):
        assert schema_problems(broken), broken


def test_instances_transferred_names_both_ends_the_studies_and_the_patient() -> None:
    root = xml_of(MESSAGES["instances received"]())
    assert root.find("EventIdentification/EventID").get("csd-code") == "110104"
    assert root.find("EventIdentification").get("EventActionCode") == "C"
    source, destination = root.findall("ActiveParticipant")
    assert (source.get("UserID"), source.get("AlternativeUserID"), source.get("NetworkAccessPointID")) == (
        "CT1", "AETITLES=CT1", "10.0.0.7")  # fmt: skip
    assert source.get("NetworkAccessPointTypeCode") == "2" and source.get("UserIsRequestor") == "true"
    assert source.find("RoleIDCode").get("csd-code") == "110153"
    assert destination.find("RoleIDCode").get("csd-code") == "110152"
    assert destination.get("UserID") == "ROUTER" and destination.get("NetworkAccessPointTypeCode") == "1"
    src = root.find("AuditSourceIdentification")
    assert (src.get("AuditSourceID"), src.get("AuditEnterpriseSiteID")) == ("ROUTER", "General Hospital")
    objects = root.findall("ParticipantObjectIdentification")
    studies = [o for o in objects if o.get("ParticipantObjectTypeCodeRole") == "3"]
    [patient] = [o for o in objects if o.get("ParticipantObjectTypeCodeRole") == "1"]
    assert [s.get("ParticipantObjectID") for s in studies] == ["1.2.3", "1.2.4"]
    ct = studies[0].find("ParticipantObjectDescription/SOPClass")
    assert (ct.get("UID"), ct.get("NumberOfInstances")) == (CT, "2")
    assert [i.get("UID") for i in ct.findall("Instance")] == ["1.2.3.1", "1.2.3.2"]
    assert studies[0].find("ParticipantObjectDescription/Accession").get("Number") == "ACC1"
    assert patient.get("ParticipantObjectID") == "PAT-1^^^HOSP"
    assert patient.find("ParticipantObjectIDTypeCode").get("csd-code") == "2"
    assert patient.findtext("ParticipantObjectName") == "DOE^JANE"


def test_many_instances_are_counted_not_listed() -> None:
    big = facts.Subject(PATIENT)
    for n in range(events.MAX_LISTED + 1):
        big.study("1.2.3").add(CT, f"1.2.3.{n}")
    root = xml_of(events.instances_transferred(big, "R", ROUTER.participant(True), modality(), []))
    sop = root.find("ParticipantObjectIdentification/ParticipantObjectDescription/SOPClass")
    assert sop.get("NumberOfInstances") == str(events.MAX_LISTED + 1) and sop.findall("Instance") == []


def test_query_carries_the_sop_class_and_the_query_data_set() -> None:
    root = xml_of(MESSAGES["query"]())
    [asked] = root.findall("ParticipantObjectIdentification")
    assert asked.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
    assert asked.find("ParticipantObjectIDTypeCode").get("csd-code") == "110181"
    from base64 import b64decode

    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    query = b64decode(asked.findtext("ParticipantObjectQuery"))
    preamble = b"\0" * 128 + b"DICM"
    ds = dcmread(DicomBytesIO(preamble + query), force=True)  # the data set, Explicit VR Little Endian
    assert (ds.QueryRetrieveLevel, ds.PatientID) == ("STUDY", "PAT-1")
    [detail] = asked.findall("ParticipantObjectDetail")
    assert (detail.get("type"), b64decode(detail.get("value"))) == ("TransferSyntax", b"1.2.840.10008.1.2.1")


def test_security_alert_names_what_was_refused() -> None:
    root = xml_of(MESSAGES["security alert"]())
    assert root.find("EventIdentification/EventTypeCode").get("csd-code") == "110126"
    reporter, performer = root.findall("ActiveParticipant")
    assert reporter.get("UserIsRequestor") == "true" and performer.get("UserIsRequestor") == "false"
    from base64 import b64decode

    detail = root.find("ParticipantObjectIdentification/ParticipantObjectDetail")
    assert detail.get("type") == "Alert Description" and b64decode(detail.get("value")) == b"association rejected"


def test_tls_failure_is_a_node_authentication_alert(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``router_tls_failed`` (the TLS listener announces it): the message, without a running router."""
    from plugins.audit import on_security, state

    recorded: list[AuditEvent] = []
    fake = state.Running.__new__(state.Running)
    fake.local, fake.record = ROUTER, recorded.append  # type: ignore[method-assign]
    monkeypatch.setattr(on_security, "running", lambda: fake)
    on_security.router_tls_failed("inbound", "10.0.0.66", 2762, "certificate verify failed")
    [alert] = recorded
    xml = to_xml(alert, "ROUTER")
    assert schema_problems(xml) == []
    root = etree.fromstring(xml.encode())
    assert root.find("EventIdentification/EventTypeCode").get("csd-code") == "110126"
    assert root.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert root.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "10.0.0.66"


def test_values_from_the_wire_cannot_break_the_xml() -> None:
    evil = events.dicom_node("CT\x00<1>&", "10.0.0.7:1", True)
    event = events.instances_transferred(subject(), "C", evil, ROUTER.participant(), [], events.MINOR,
                                         "line one\nline two\r</AuditMessage>")  # fmt: skip
    xml = to_xml(event, "ROUTER")
    assert "\n" not in xml and "\r" not in xml and schema_problems(xml) == []
    root = etree.fromstring(xml.encode())
    assert root.findtext("EventIdentification/EventOutcomeDescription") == "line one\nline two\r</AuditMessage>"
    assert root.find("ActiveParticipant").get("UserID") == "CT\ufffd<1>&"


def test_hl7_patient_and_prior_identifiers() -> None:
    text = adt("A40", {3: "NEW-1^^^HOSP&1.2.3&ISO", 5: "DOE^JANE"}, seg("MRG", {1: "OLD-1^^^HOSP~OLD-2"}))
    msg = parse_message(text.encode())
    assert facts.from_hl7(msg) == facts.Patient("NEW-1^^^HOSP", "DOE^JANE")
    assert facts.prior_ids(msg) == ["OLD-1^^^HOSP", "OLD-2"]
    orm = parse_message(message("ORM^O01", seg("PID", {3: "P9"}), seg("ORC", {1: "NW", 2: "PO1"})).encode())
    assert facts.from_hl7(orm).id == "P9"


def test_syslog_message_is_rfc5424_and_framed_by_octet_count() -> None:
    when = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    message_ = syslog_message("<AuditMessage/>", when, "router.example", "router", procid=4242)
    assert message_ == (b"<85>1 2024-05-01T10:00:00.123456Z router.example router 4242 IHE+RFC-3881 - "
                        + BOM + b"<AuditMessage/>")  # fmt: skip
    assert octet_counted(message_) == str(len(message_)).encode() + b" " + message_
    assert syslog_message("<A/>", when, "a b\x7f", "r o", 1).startswith(b"<85>1 2024-05-01T10:00:00.123456Z a_b_ r_o ")


@pytest.mark.parametrize(
    ("action", "target", "address", "type_code", "id_type"),
    [
        ("rules.saved", "file:///etc/router/rules/10-ct.yaml", "127.0.0.1:50000", "110131", "12"),
        ("user.added", "ann", "", "110137", "11"),
        ("token.revoked", "ann", "10.0.0.9:443", "110137", "11"),
        ("peer.paused", "PACS", "10.0.0.9:443", "110128", "110182"),
        ("jobs.retried", "dead PACS", "10.0.0.9:443", "110132", "20"),
        ("study.sent", "1.2.3", "10.0.0.9:443", "110132", "110180"),
    ],
)
def test_an_administrative_change_is_a_security_alert_naming_who_and_what(
    action: str, target: str, address: str, type_code: str, id_type: str
) -> None:
    from plugins.audit.on_admin import admin_alert

    user = "cli:root" if not address else "ann"
    xml = to_xml(admin_alert(ROUTER.participant(), user, "admin", action, target, address, {"count": 3}), "ROUTER")
    assert schema_problems(xml) == []
    root = etree.fromstring(xml.encode())
    assert root.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    assert root.find("EventIdentification/EventTypeCode").get("csd-code") == type_code
    reporter, performer = root.findall("ActiveParticipant")
    assert reporter.get("UserID") == "ROUTER" and reporter.get("UserIsRequestor") == "true"
    assert performer.get("UserID") == user and performer.get("UserIsRequestor") == "false"
    if address:
        assert performer.get("NetworkAccessPointID") == address.rpartition(":")[0]
    obj = root.find("ParticipantObjectIdentification")
    assert obj.find("ParticipantObjectIDTypeCode").get("csd-code") == id_type
    assert obj.get("ParticipantObjectID") == target
    from base64 import b64decode

    said = b64decode(obj.find("ParticipantObjectDetail").get("value")).decode()
    assert said == f"{action} {target} (count=3) by {user} (admin)"
