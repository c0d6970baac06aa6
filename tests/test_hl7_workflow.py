"""The hospital system's knowledge reaching images (IHE SWF / PIR): demographics coercion with Original
Attributes Sequence, the BSN mode of a peer, an A40 merge relinking stored studies, and HL7 forwarded to an
MLLP peer through the outbox. Real peers: DCMTK storescu / storescp, MLLP sockets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from router.hl7.ack import build_ack
from router.hl7.message import parse_message
from router.listeners.mllp import MllpServer

from hl7msg import adt, message, seg, send
from peers import RouterProcess, StoreSCP, free_port, make_instance, query, storescu, wait_for

pytestmark = pytest.mark.interop  # DCMTK storescu, storescp

BSN = "111222333"
BSN_OID = "2.16.840.1.113883.2.4.6.3"
HOSP_OID = "1.2.3.4.5.6"


class Ris:
    """An MLLP receiver on a reserved port: records what it receives, answers AA (or AE for chosen ids)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[bytes] = []
        self.refuse: set[str] = set()
        self.server: MllpServer | None = None
        self.lock = threading.Lock()

    def handle(self, raw: bytes, _peer: str) -> bytes:
        msg = parse_message(raw)
        with self.lock:
            self.received.append(raw)
        return build_ack(msg, "AE" if msg.control_id in self.refuse else "AA")

    def start(self) -> None:
        self.server = MllpServer("127.0.0.1", self.port, self.handle)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def setup(workdir: Path) -> Iterator[tuple[RouterProcess, StoreSCP, StoreSCP, Ris]]:
    dest, bsn_dest, ris = StoreSCP(workdir, "DEST").start(), StoreSCP(workdir, "BSNDEST").start(), Ris()
    router = RouterProcess(
        workdir,
        peers={
            "DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port},
            "BSNDEST": {"ae_title": "BSNDEST", "host": "127.0.0.1", "port": bsn_dest.port, "patient_id": "bsn"},
            "RIS2": {"mllp": f"127.0.0.1:{ris.port}"},
        },
        rules={
            "10-images.yaml": [
                {
                    "name": "images",
                    "when": {"kind": "dicom"},
                    "then": [{"coerce": {"demographics": True}}, {"forward": ["DEST", "BSNDEST"]}],
                },
            ],
            "30-corrections.yaml": [
                {
                    "name": "corrections",
                    "when": {"kind": "hl7", "message": ["ADT^A08", "ADT^A40"]},
                    "then": [{"resend": "DEST"}],
                }
            ],
            "20-adt.yaml": [
                {"name": "adt-to-ris2", "when": {"kind": "hl7", "message": "ADT^A0*"}, "then": [{"forward": "RIS2"}]}
            ],
        },
        hl7={"assigning_authorities": {"HOSP": {"universal_id": HOSP_OID}}},
    ).start()
    try:
        yield router, dest, bsn_dest, ris
    finally:
        router.stop()
        ris.stop()
        dest.stop()
        bsn_dest.stop()


def store(router: RouterProcess, workdir: Path, ds: Dataset) -> None:
    path = workdir / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = storescu(router.port, path)
    assert result.returncode == 0, result.stderr


def arrived(scp: StoreSCP, sop_uid: str, timeout: float = 30) -> Dataset:
    def find() -> Dataset | None:
        for path in scp.received():
            ds = pydicom.dcmread(path)
            if ds.SOPInstanceUID == sop_uid:
                return ds
        return None

    wait_for(lambda: find() is not None, timeout, what=f"{sop_uid} at {scp.aet}")
    found = find()
    assert found is not None
    return found


def patient_level_ids(router: RouterProcess, pattern: str) -> list[str]:
    """Patient IDs a Patient Root C-FIND at PATIENT level returns."""
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", router.port, ae_title="ROUTER")
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "PATIENT"
        identifier.PatientID = pattern
        found = assoc.send_c_find(identifier, PatientRootQueryRetrieveInformationModelFind)
        return sorted(str(ds.PatientID) for status, ds in found if status.Status == 0xFF00 and ds is not None)
    finally:
        assoc.release()


def ok(port: int, text: str) -> None:
    ack = send(port, text)
    assert "MSA|AA|" in ack, ack


def order(patient: dict[int, str], accession: str, control: str = "NW", **kw: Any) -> str:
    return message(
        "ORM^O01",
        seg("PID", {1: "1", **patient}),
        seg("PV1", {1: "1", 2: "O", 8: "D123^Huisarts^Karel"}),
        seg("ORC", {1: control, 2: f"PL-{accession}", 3: f"FL-{accession}", 12: "D456^Aanvrager^Ria"}),
        seg("OBR", {1: "1", 2: f"PL-{accession}", 3: f"FL-{accession}", 4: "RPCT1^CT Thorax^L",
                    18: accession, 19: f"RP-{accession}", 20: f"SPS-{accession}", 24: "CT",
                    27: "^^^202411221030^^R"}),
        version="2.3.1",
        **kw,
    )  # fmt: skip


def test_image_takes_hl7_demographics_and_bsn_peer_gets_the_bsn(
    setup: tuple[RouterProcess, StoreSCP, StoreSCP, Ris], workdir: Path
) -> None:
    router, dest, bsn_dest, _ = setup
    patient = {3: f"MRN500^^^HOSP^MR~{BSN}^^^NLMINBIZA^NNNLD", 5: "Müller^Anna", 7: "19750304", 8: "F"}
    ok(router.hl7_port, adt("A04", patient))
    ok(router.hl7_port, order(patient, "ACC500"))

    image = make_instance(PatientName="Wrong^Name", PatientID="X1", AccessionNumber="ACC500", PatientSex="M")
    store(router, workdir, image)

    got = arrived(dest, image.SOPInstanceUID)
    assert (str(got.PatientName), got.PatientID, got.IssuerOfPatientID) == ("Müller^Anna", "MRN500", "HOSP")
    assert (got.PatientBirthDate, got.PatientSex, got.AccessionNumber) == ("19750304", "F", "ACC500")
    assert str(got.ReferringPhysicianName) == "Huisarts^Karel"
    # ORC-12's Requesting Physician stays in the worklist: PS3.3 has it in the Imaging Service Request Module only,
    # in no image IOD (nor in Request Attributes Sequence, Table 10-9); dciodvfy flagged it as Standard Extended
    assert "RequestingPhysician" not in got
    code = got.ProcedureCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("RPCT1", "99LOCAL", "CT Thorax")
    [change] = got.OriginalAttributesSequence
    assert change.ReasonForTheAttributeModification == "COERCE"
    old = change.ModifiedAttributesSequence[0]
    assert (str(old.PatientName), old.PatientID, old.PatientSex) == ("Wrong^Name", "X1", "M")
    assert old.PatientBirthDate in ("", None), "absent before: recorded as zero-length"

    bsn = arrived(bsn_dest, image.SOPInstanceUID)
    assert (bsn.PatientID, bsn.IssuerOfPatientID, str(bsn.PatientName)) == (BSN, BSN_OID, "Müller^Anna")
    others = [(i.PatientID, i.IssuerOfPatientID, i.TypeOfPatientID) for i in bsn.OtherPatientIDsSequence]
    assert others == [(BSN, BSN_OID, "TEXT"), ("MRN500", "HOSP", "TEXT")]
    qualifiers = bsn.OtherPatientIDsSequence[1].IssuerOfPatientIDQualifiersSequence[0]
    assert (qualifiers.UniversalEntityID, qualifiers.UniversalEntityIDType) == (HOSP_OID, "ISO")

    # the router stored what the hospital system knows (the file and the index agree)
    [(path,)] = query(router.data_dir / "router.db", "SELECT path FROM instance WHERE sop_uid=?", image.SOPInstanceUID)
    stored = pydicom.dcmread(router.data_dir / path)
    assert (str(stored.PatientName), stored.PatientID) == ("Müller^Anna", "MRN500")
    assert query(router.data_dir / "router.db",
                 "SELECT p.patient_id, p.name FROM patient p JOIN study s ON s.patient_fk = p.id "
                 "WHERE s.study_uid=?", image.StudyInstanceUID) == [("MRN500", "Müller^Anna")]  # fmt: skip


def test_unknown_patient_is_forwarded_unchanged(
    setup: tuple[RouterProcess, StoreSCP, StoreSCP, Ris], workdir: Path
) -> None:
    router, dest, bsn_dest, _ = setup
    image = make_instance(PatientName="Walk^In", PatientID="UNKNOWN9", AccessionNumber="NOPE")
    store(router, workdir, image)
    got = arrived(dest, image.SOPInstanceUID)
    assert (str(got.PatientName), got.PatientID) == ("Walk^In", "UNKNOWN9")
    assert "OriginalAttributesSequence" not in got
    no_bsn = arrived(bsn_dest, image.SOPInstanceUID)
    assert no_bsn.PatientID == "UNKNOWN9" and "OtherPatientIDsSequence" not in no_bsn


def test_merge_relinks_stored_studies_and_old_id_maps_to_survivor(
    setup: tuple[RouterProcess, StoreSCP, StoreSCP, Ris], workdir: Path
) -> None:
    router, dest, _, _ = setup
    db = router.data_dir / "router.db"
    ok(router.hl7_port, adt("A01", {3: "MRN600^^^HOSP^MR", 5: "Old^Record", 7: "19800101"}))
    first = make_instance(PatientName="Old^Record", PatientID="MRN600", IssuerOfPatientID="HOSP")
    store(router, workdir, first)
    arrived(dest, first.SOPInstanceUID)
    ok(router.hl7_port, adt("A01", {3: "MRN601^^^HOSP^MR", 5: "New^Record", 7: "19800101"}))

    merge = adt("A40", {3: "MRN601^^^HOSP^MR", 5: "New^Record"}, seg("MRG", {1: "MRN600^^^HOSP^MR"}))
    ok(router.hl7_port, merge)

    assert query(db, "SELECT patient_id FROM patient WHERE patient_id IN ('MRN600', 'MRN601')") == [("MRN601",)]
    assert query(db, "SELECT p.patient_id FROM patient p JOIN study s ON s.patient_fk = p.id WHERE s.study_uid=?",
                 first.StudyInstanceUID) == [("MRN601",)]  # fmt: skip
    assert query(db, "SELECT merged FROM patientidentifier WHERE value='MRN600'") == [(1,)]
    assert patient_level_ids(router, "MRN60?") == ["MRN601"], "a patient-level C-FIND shows one patient"

    # the rule "corrections" re-sends the stored image, corrected to the surviving patient
    def copies() -> list[Dataset]:
        found = [pydicom.dcmread(p) for p in dest.received()]
        return [d for d in found if d.SOPInstanceUID == first.SOPInstanceUID]

    wait_for(lambda: len(copies()) == 2, 30, what="the corrected copy at DEST")
    corrected = copies()[-1] if copies()[-1].PatientID == "MRN601" else copies()[0]
    assert (corrected.PatientID, str(corrected.PatientName)) == ("MRN601", "New^Record")
    assert corrected.OriginalAttributesSequence[-1].ReasonForTheAttributeModification == "CORRECT"
    assert corrected.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientID == "MRN600"

    late = make_instance(PatientName="Old^Record", PatientID="MRN600", IssuerOfPatientID="HOSP")
    store(router, workdir, late)
    got = arrived(dest, late.SOPInstanceUID)
    assert (got.PatientID, str(got.PatientName)) == ("MRN601", "New^Record")
    assert query(db, "SELECT count(*) FROM patient WHERE patient_id='MRN600'") == [(0,)]


def test_adt_forwarded_to_mllp_peer_after_it_comes_up_and_ae_dead_letters(
    setup: tuple[RouterProcess, StoreSCP, StoreSCP, Ris],
) -> None:
    router, _, _, ris = setup
    first = adt("A08", {3: "MRN700^^^HOSP^MR", 5: "Forward^Me"}, control_id="FWD-1")
    second = adt("A08", {3: "MRN700^^^HOSP^MR", 5: "Forward^Me^Again"}, control_id="FWD-2")
    ok(router.hl7_port, first)  # RIS2 is down: acknowledged all the same, queued
    ok(router.hl7_port, second)
    ok(router.hl7_port, order({3: "MRN700^^^HOSP^MR"}, "ACC700"))  # not an ADT^A0*: not forwarded
    ris.start()
    wait_for(lambda: len(ris.received) >= 2, 30, what="RIS2 to receive the queued ADT messages")
    assert ris.received == [first.encode(), second.encode()], "byte-identical, in order"

    ris.refuse.add("FWD-3")
    ok(router.hl7_port, adt("A08", {3: "MRN700^^^HOSP^MR", 5: "Refused^By^Peer"}, control_id="FWD-3"))
    wait_for(lambda: router.cli("queue", "list", "--state", "dead").stdout.count("RIS2") >= 1, 30,
             what="the refused message to be dead-lettered")  # fmt: skip
    states = query(router.data_dir / "router.db", "SELECT sop_class_uid, state FROM job WHERE peer='RIS2' ORDER BY id")
    assert states == [("ADT^A08", "done"), ("ADT^A08", "done"), ("ADT^A08", "dead")]
