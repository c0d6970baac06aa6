"""No patient data where it does not belong: one scenario through real peers, with known names, IDs and birth
dates, then (1) none of them appears in the router's log output (the serving and the forward process, INFO level),
(2) everything under data_dir is readable by the router's user only (docs/security.md).

The scenario: HL7 ADT and ORM over MLLP (and messages refused for a bad birth date, a bad sex, an unparseable
segment), an HL7 forward to a peer that answers AE quoting the patient; C-STORE of objects whose rules coerce them
(set, copy into a date attribute, demographics from the HL7 feed) and forward them to a peer that is down and to one
that refuses them (both dead-lettered); a corrupt object (quarantined); a C-FIND and a Modality Worklist query by
name and ID; QIDO-RS by name; STOW-RS of an object; an MPPS N-CREATE.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL_FIND
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind as QR_FIND

from router.hl7.mllp import frame

from forwarding import job_states, wait_while_up
from hl7msg import adt, encode, message, seg, send
from peers import SECONDARY_CAPTURE, RouterProcess, associate, free_port, make_instance, send_datasets, write_instances
from worklist_peers import Order, Patient, at, mwl_query, order_message

FAMILY, GIVEN, PID, OTHER_PID, BIRTH = "Zebedee", "Quixote", "PHI7731", "PHI8842", "19470312"
PATIENT = Patient(PID, FAMILY, GIVEN, BIRTH, "M")
ORDER = Order("A9001", PATIENT, "CT", at("20241122093000"))
# Every way these could be written in a log line: as sent, upper case, as DICOM or HL7 names, the date with dashes.
PHI = [FAMILY, GIVEN, FAMILY.upper(), GIVEN.upper(), PID, OTHER_PID, BIRTH, "1947-03-12", "12.03.1947"]


# -- peers downstream --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def refusing_store_scp() -> Iterator[int]:
    """A storage SCP that refuses every object (0xC000: the forward is dead-lettered at once)."""
    ae = AE(ae_title="REFUSER")
    ae.add_supported_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0xC000)])
    try:
        yield port
    finally:
        server.shutdown()


@contextlib.contextmanager
def mllp_peer_answering_ae() -> Iterator[int]:
    """An HL7 receiver that answers every message AE, its ERR text quoting the patient (as some systems do)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                conn.settimeout(10)
                with contextlib.suppress(OSError):
                    while b"\x1c" not in data:
                        data += conn.recv(65536) or b"\x1c"
                    control = data.split(b"\r", 1)[0].split(b"|")[9].decode()
                    ack = message("ACK^A01", seg("MSA", {1: "AE", 2: control}),
                                  seg("ERR", {8: f"unknown patient {FAMILY}^{GIVEN} {PID} born {BIRTH}"}))  # fmt: skip
                    conn.sendall(frame(ack.encode()))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(5)
        listener.close()


RULES = {
    "10-dicom.yaml": [
        {
            "name": "coerce-and-forward",
            "when": {"kind": "dicom"},
            "then": [
                {"coerce": {"demographics": True}},  # stored: the HL7 feed's name and birth date
                {"coerce": {"set": {"InstitutionName": "General Hospital"}, "copy": {"PatientID": "StudyDate"}}},
                {"forward": ["DOWN", "REFUSER"]},
            ],
        }
    ],
    "20-hl7.yaml": [{"name": "adt-on", "when": {"kind": "hl7", "message": "ADT^A08"}, "then": [{"forward": "RIS"}]}],
}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    workdir = tmp_path_factory.mktemp("phi")
    old_umask = os.umask(0o022)  # the usual umask: the router's own modes must keep data private
    try:
        with refusing_store_scp() as refuser_port, mllp_peer_answering_ae() as ris_port:
            router = RouterProcess(
                workdir,
                peers={
                    "DOWN": {"ae_title": "DOWN", "host": "127.0.0.1", "port": free_port()},
                    "REFUSER": {"ae_title": "REFUSER", "host": "127.0.0.1", "port": refuser_port},
                    "RIS": {"type": "mllp", "mllp": f"127.0.0.1:{ris_port}"},
                },
                rules=RULES,
                log_level="INFO",
                forward={"max_attempts": 2},
                hl7={"worklist": {"station_ae_by_modality": {"CT": ["CT1"]}}},
            ).start()
            try:
                run_scenario(router, workdir)
                wait_while_up(router, lambda: job_states(router).get("dead", 0) >= 7, 60, "the failed forwards")
                yield router
            finally:
                router.stop()
    finally:
        os.umask(old_umask)


# -- the scenario ------------------------------------------------------------------------------------------------
def run_scenario(router: RouterProcess, workdir: Path) -> None:
    hl7_in(router)
    dicom_in(router, workdir)
    queries(router)
    mpps(router)


def ack_code(ack: str) -> str:
    return next(line.split("|")[1] for line in ack.split("\r") if line.startswith("MSA"))


def hl7_in(router: RouterProcess) -> None:
    pid = {3: f"{PID}^^^HOSP^MR~{OTHER_PID}^^^OTHER^MR", 5: f"{FAMILY}^{GIVEN}", 7: BIRTH, 8: "M"}
    assert ack_code(send(router.hl7_port, adt("A01", pid))) == "AA"
    assert ack_code(send(router.hl7_port, adt("A08", pid))) == "AA"  # forwarded to RIS, which answers AE
    assert ack_code(send(router.hl7_port, encode(order_message(ORDER)))) == "AA"
    refused = [
        adt("A08", {**pid, 7: "1947-03-12"}),  # not a date
        adt("A08", {**pid, 8: f"{FAMILY}"}),  # not a sex
        adt("A08", {**pid, 3: ""}),  # no identifier
        message("ADT^A08", seg("EVN", {1: "A08"}), f"PID|1||{PID}^^^HOSP^MR||{FAMILY}^{GIVEN}|\rZZ{FAMILY}|x\r"),
    ]
    for text in refused:
        assert ack_code(send(router.hl7_port, text)) in ("AE", "AR")


def phi_instance(**attrs: object) -> Dataset:
    return make_instance(
        PatientName=f"{FAMILY}^Wrong",  # demographics coercion puts the HL7 name in
        PatientID=PID,
        PatientBirthDate=BIRTH,
        OtherPatientIDs=OTHER_PID,
        AccessionNumber=ORDER.accession,
        **attrs,
    )


def dicom_in(router: RouterProcess, workdir: Path) -> None:
    assert send_datasets(router.port, [phi_instance(), phi_instance()]) == [0, 0]
    good = write_instances(workdir / "corrupt", [phi_instance()])[0]
    raw = good.read_bytes()
    name_at = raw.index(f"{FAMILY}^".encode())
    good.write_bytes(raw[: name_at + 40] + b"\xff\xff\xff\xff" + raw[name_at + 40 : name_at + 200])  # cut and bent
    statuses = send_datasets(router.port, [good])
    assert statuses[0] not in (None, 0), "the corrupt object was accepted"
    stow = write_instances(workdir / "stow", [phi_instance()])[0]
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + stow.read_bytes() + b"\r\n--b--\r\n"
    response = httpx.post(
        f"http://127.0.0.1:{router.http_port}/dicomweb/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def c_find(router: RouterProcess, sop_class: str, identifier: Dataset) -> tuple[list[Dataset], int]:
    """The matches and the final status of one C-FIND."""
    assoc = associate(router.port, [(sop_class, None)], calling="FINDSCU")
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_find(identifier, sop_class))
    finally:
        assoc.release()
    matches = [ds for status, ds in answers if status.Status in (0xFF00, 0xFF01)]
    return matches, int(answers[-1][0].Status)


def queries(router: RouterProcess) -> None:
    qr = Dataset()
    qr.QueryRetrieveLevel, qr.PatientID, qr.PatientName, qr.PatientBirthDate = "PATIENT", PID, f"{FAMILY}*", ""
    worklist = mwl_query(PatientName=f"{FAMILY}*", PatientID=PID)
    for sop_class, identifier in ((QR_FIND, qr), (MWL_FIND, worklist)):
        matches, status = c_find(router, sop_class, identifier)
        assert status == 0 and matches and all(str(ds.PatientID) == PID for ds in matches)
    qr.PatientBirthDate = worklist.PatientBirthDate = "1947-03-12"  # not a DA: refused, the refusal logged
    for sop_class, identifier in ((QR_FIND, qr), (MWL_FIND, worklist)):
        assert c_find(router, sop_class, identifier)[1] not in (0, 0xFF00, 0xFF01)
    response = httpx.get(
        f"http://127.0.0.1:{router.http_port}/dicomweb/studies",
        params={"PatientName": f"{FAMILY}*", "PatientID": PID},
        timeout=10,
    )
    assert response.status_code == 200 and PID in response.text


def mpps(router: RouterProcess) -> None:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"{FAMILY}^{GIVEN}", PID, BIRTH
    ds.PerformedProcedureStepStatus, ds.Modality = "IN PROGRESS", "CT"
    ds.PerformedProcedureStepID, ds.PerformedStationAETitle = "PPS1", "CT1"
    ds.StudyID, ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "1", "", ""
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20241122", "093000"
    ds.ScheduledStepAttributesSequence = [Dataset()]
    ds.ScheduledStepAttributesSequence[0].AccessionNumber = ORDER.accession
    ds.ScheduledStepAttributesSequence[0].StudyInstanceUID = ORDER.study_uid
    ds.ScheduledStepAttributesSequence[0].ScheduledProcedureStepID = ORDER.sps_id
    ds.ScheduledStepAttributesSequence[0].RequestedProcedureID = ORDER.rp_id
    assoc = associate(router.port, [(ModalityPerformedProcedureStep, None)], calling="CT1")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, generate_uid())
    finally:
        assoc.release()
    assert status is not None and status.Status == 0, status


# -- what is checked ---------------------------------------------------------------------------------------------
def test_no_patient_name_id_or_birth_date_in_the_logs(scenario: RouterProcess) -> None:
    log = scenario.output()
    assert "forwarded" in log or "dead-lettered" in log, "the scenario did not run"
    leaks = [
        f"{value!r} in: {line.strip()[:300]}"
        for line in log.splitlines()
        for value in PHI
        if re.search(re.escape(value), line, re.IGNORECASE)
    ]
    assert not leaks, "patient data in the log output:\n" + "\n".join(leaks[:20])


def test_everything_under_data_dir_is_readable_by_the_router_user_only(scenario: RouterProcess) -> None:
    data_dir = scenario.data_dir
    found = {"quarantine": 0, "objects": 0, "derived": 0, "hl7": 0, "router.db": 0}
    wrong = []
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            wrong.append(f"{oct(mode)} {path.relative_to(data_dir.parent)}")
        top = path.relative_to(data_dir).parts[:1]
        if top and top[0] in found and path.is_file():
            found[top[0]] += 1
    assert not wrong, "modes other than 0600 (files) and 0700 (folders):\n" + "\n".join(wrong)
    assert all(found.values()), f"the scenario left no file in some place that must be checked: {found}"
