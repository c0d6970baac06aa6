"""A real audit record repository: Debian's rsyslog (TLS with the router's client certificate from trustme, and UDP)
receives every message type from a router driven by real peers; each message is valid against the DICOM audit
message schema (jing). With rsyslog stopped while objects arrive and started again, every message arrives once."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from audit_repo import Certificates, Received, Rsyslog, jing_problems, received, wait_received
from hl7msg import adt, message, seg, send
from peers import DCMTK_ENV, RouterProcess, associate, c_find_statuses, dcmtk, make_instance, send_datasets, wait_for
from workflow_peers import MPPS, mpps_scu

pytestmark = pytest.mark.interop  # rsyslogd (rsyslog, rsyslog-gnutls), jing, DCMTK's getscu

SAMPLES = Path(__file__).parent / "sample_plugins"
TOKEN = "a-bearer-token-for-the-audit-tests"
STUDY_FIND, MWL_FIND = "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.31"
ALLOWED = ["ECHOSCU", "STORESCU", "FINDSCU", "GETSCU", "MODALITY"]


def audit_settings(certs: Certificates, repo: Rsyslog, udp: bool = True) -> dict[str, Any]:
    repositories: list[dict[str, Any]] = [{"host": "127.0.0.1", "port": repo.tls_port, "transport": "tls",
                                           "ca": str(certs.ca), "cert": str(certs.client)}]  # fmt: skip
    if udp:
        repositories.append({"host": "127.0.0.1", "port": repo.udp_port, "transport": "udp"})
    return {"source_id": "AUDITSRC", "enterprise_site_id": "General Hospital", "repositories": repositories,
            "file": "audit/audit.xml.log", "retry_initial": 0.1, "retry_max": 0.5, "login_repeat_after": 0}  # fmt: skip


def event_ids(messages: list[Received]) -> Counter[str]:
    return Counter(etree.fromstring(m.xml.encode()).find("EventIdentification/EventID").get("csd-code")
                   for m in messages)  # fmt: skip


def mpps_step(study: str) -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID, item.AccessionNumber, item.ScheduledProcedureStepID = study, "ACC-9", ""
    item.RequestedProcedureID = ""
    ds.ScheduledStepAttributesSequence = Sequence([item])
    for keyword, value in {"PatientName": "Test^Patient", "PatientID": "P1", "PatientBirthDate": "", "StudyID": "",
                           "Modality": "CT", "PerformedStationAETitle": "MODALITY", "PerformedProcedureStepID": "PPS7",
                           "PerformedProcedureStepStartDate": "20260101", "PerformedProcedureStepStartTime": "100000",
                           "PerformedProcedureStepEndDate": "", "PerformedProcedureStepEndTime": "",
                           "PerformedProcedureStepStatus": "IN PROGRESS"}.items():  # fmt: skip
        setattr(ds, keyword, value)
    return ds


@dataclass
class Scenario:
    router: RouterProcess
    repo: Rsyslog
    study: str
    sop: str


def _drive(router: RouterProcess, workdir: Path, instance: Dataset) -> None:
    """One of everything the trail audits (the router is running; stopping it is the caller's)."""
    assert send_datasets(router.port, [instance]) == [0]  # received, begin transferring, export (rule), forwarded
    keys = Dataset()
    keys.QueryRetrieveLevel, keys.StudyInstanceUID, keys.PatientID = "STUDY", instance.StudyInstanceUID, ""
    assert c_find_statuses(router.port, STUDY_FIND, keys)[-1] == 0
    mwl = Dataset()
    mwl.PatientName, mwl.ScheduledProcedureStepSequence = "", Sequence([Dataset()])
    assert c_find_statuses(router.port, MWL_FIND, mwl)[-1] == 0
    got = subprocess.run(
        [dcmtk("getscu"), "-S", "-aet", "GETSCU", "-aec", "ROUTER", "-od", str(workdir), "-k",
         "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={instance.StudyInstanceUID}", "127.0.0.1",
         str(router.port)], capture_output=True, text=True, env=DCMTK_ENV, timeout=120,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    web = f"http://127.0.0.1:{router.http_port}/dicomweb"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{web}/studies?StudyInstanceUID={instance.StudyInstanceUID}", headers=auth).status_code == 200
    assert httpx.get(f"{web}/studies").status_code == 401
    study = f"{web}/studies/{instance.StudyInstanceUID}"
    assert httpx.get(study, headers={**auth, "Accept": "multipart/related; type=application/dicom"}).status_code == 200
    pid = {3: "HL7-1^^^HOSP", 5: "DOE^JANE", 7: "19700101", 8: "F"}
    obr = seg("OBR", {1: "1", 2: "PO-1", 3: "FO-1", 4: "CT^CT HEAD", 18: "ACC-9", 24: "CT", 27: "^^^20261201120000"})
    orm = message("ORM^O01", seg("PID", {1: "1", **pid}), seg("ORC", {1: "NW", 2: "PO-1", 3: "FO-1"}), obr)
    for text in (adt("A04", pid), adt("A40", pid, seg("MRG", {1: "OLD-1^^^HOSP"})), orm):
        assert "|AA|" in send(router.hl7_port, text)
    assoc = mpps_scu(router.port)
    try:
        status, _ = assoc.send_n_create(mpps_step(str(instance.StudyInstanceUID)), MPPS, generate_uid())
        assert status.Status == 0
    finally:
        assoc.release()
    refused = associate(router.port, calling="BLOCKED")
    assert refused.is_rejected
    router.write_rules("20-more.yaml", [{"name": "nothing", "when": {"kind": "hl7"}, "then": []}])


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    workdir = tmp_path_factory.mktemp("audit-rsyslog")
    certs = Certificates.make(workdir / "certs")
    repo = Rsyslog(workdir / "rsyslog", certs).start()
    archive = workdir / "archive"
    archive.mkdir()
    rules = {
        "00-audit.yaml": [
            {
                "name": "archive",
                "when": {"kind": "dicom"},
                "then": [
                    {"forward": "ARCHIVE"},
                    {"audit": {"event": "export", "to": "ARCHIVE", "description": "to the archive"}},
                ],
            }
        ]
    }
    router = RouterProcess(
        workdir, peers={"ARCHIVE": {"type": "folder", "path": str(archive)}}, rules=rules,
        plugin_modules=[str(SAMPLES / "folder_destination.py")], rules_reload_interval=0.2,
        dicom={"allowed_calling_aets": ALLOWED}, http={"auth": {"bearer_token": TOKEN}},
        plugins={"audit": audit_settings(certs, repo)},
    )  # fmt: skip
    instance = make_instance(generate_uid(), PatientID="P1", AccessionNumber="ACC-9")
    try:
        router.start()
        _drive(router, workdir, instance)
        wait_for(lambda: any(archive.iterdir()), 30, what="the forward to the archive")
        wait_for(lambda: repo.tls_log.exists() and "110131" in repo.tls_log.read_text(), 30,
                 what="the rules change audited")  # fmt: skip
    finally:
        router.stop()
    try:
        yield Scenario(router, repo, str(instance.StudyInstanceUID), str(instance.SOPInstanceUID))
    finally:
        repo.stop()


EXPECTED = {
    "110100": "Application Activity (start and stop, both processes)",
    "110102": "Begin Transferring DICOM Instances (queued for ARCHIVE)",
    "110104": "DICOM Instances Transferred (received, forwarded, C-GET, WADO-RS)",
    "110106": "Export (the rule's audit stage)",
    "110109": "Order Record (ORM^O01)",
    "110110": "Patient Record (ADT A04, A40)",
    "110111": "Procedure Record (MPPS N-CREATE)",
    "110112": "Query (C-FIND, MWL, QIDO-RS)",
    "110113": "Security Alert (rejected association, 401, rules changed)",
    "110114": "User Authentication (HTTP logins)",
}


def test_rsyslog_receives_every_message_type_over_tls_and_udp_and_each_is_schema_valid(scenario: Scenario) -> None:
    tls = wait_received(scenario.repo.tls_log, 1)
    wait_for(lambda: event_ids(received(scenario.repo.tls_log))["110100"] == 4, 30, what="both processes stopping")
    tls = received(scenario.repo.tls_log)
    ids = event_ids(tls)
    assert set(EXPECTED) <= set(ids), {k: v for k, v in EXPECTED.items() if k not in ids}
    assert ids["110100"] == 4 and ids["110110"] == 3 and ids["110112"] == 3  # A04 + A40 (survivor, merged)
    assert jing_problems([m.xml for m in tls]) == ""
    udp = wait_received(scenario.repo.udp_log, len(tls))
    assert sorted(m.xml for m in udp) == sorted(m.xml for m in tls)  # the same messages, each whole in a datagram
    assert all(m.header.startswith("<85>1 ") and " IHE+RFC-3881 - " in m.header + " " for m in tls)
    lines = (scenario.router.workdir / "audit" / "audit.xml.log").read_text().splitlines()
    assert sorted(lines) == sorted(m.xml for m in tls)


def test_the_received_object_is_named_with_its_patient_study_and_sender(scenario: Scenario) -> None:
    for m in received(scenario.repo.tls_log):
        root = etree.fromstring(m.xml.encode())
        ident = root.find("EventIdentification")
        if ident.find("EventID").get("csd-code") == "110104" and ident.get("EventActionCode") == "C":
            break
    else:
        pytest.fail("no Instances Transferred (C) message")
    source = root.find("AuditSourceIdentification")
    assert (source.get("AuditSourceID"), source.get("AuditEnterpriseSiteID")) == ("AUDITSRC", "General Hospital")
    sender, router = root.findall("ActiveParticipant")
    assert (sender.get("UserID"), sender.get("NetworkAccessPointID")) == ("STORESCU", "127.0.0.1")
    assert router.get("UserID") == "ROUTER"
    study, patient = root.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == scenario.study
    assert study.find("ParticipantObjectDescription/SOPClass/Instance").get("UID") == scenario.sop
    assert study.find("ParticipantObjectDescription/Accession").get("Number") == "ACC-9"
    assert patient.get("ParticipantObjectID") == "P1"


def test_rsyslog_stopped_while_objects_arrive_gets_every_message_once_started_again(
    tmp_path: Path,
) -> None:
    certs = Certificates.make(tmp_path / "certs")
    repo = Rsyslog(tmp_path / "rsyslog", certs).start()
    router = RouterProcess(tmp_path, plugins={"audit": audit_settings(certs, repo, udp=False)})
    instances = [make_instance(generate_uid(), PatientID=f"P{n}") for n in range(6)]
    try:
        router.start()
        wait_for(lambda: event_ids(received(repo.tls_log))["110100"] == 2, 30, what="both processes started")
        repo.stop()
        assert send_datasets(router.port, instances[:3]) == [0, 0, 0]
        status = router.cli("audit", "status").stdout
        assert f"tls://127.0.0.1:{repo.tls_port}" in status
        wait_for(lambda: "last attempt failed" in router.cli("audit", "status").stdout, 30, what="a failed attempt")
        assert send_datasets(router.port, instances[3:]) == [0, 0, 0]
        repo.start()
        wait_for(lambda: event_ids(received(repo.tls_log))["110104"] == 6, 60, what="the six transfers")
        wait_for(lambda: " 0 waiting" in router.cli("audit", "status").stdout, 30, what="an empty spool")
    finally:
        router.stop()
        wait_for(lambda: event_ids(received(repo.tls_log))["110100"] == 4, 30, what="both processes stopping")
        repo.stop()
    messages = received(repo.tls_log)
    assert len({m.xml for m in messages}) == len(messages), "a message arrived twice"
    sent = Counter(etree.fromstring(m.xml.encode()).find(".//ParticipantObjectDescription/SOPClass/Instance")
                   .get("UID") for m in messages if "110104" in m.xml)  # fmt: skip
    assert sent == Counter(str(i.SOPInstanceUID) for i in instances)
    assert jing_problems([m.xml for m in messages]) == ""
