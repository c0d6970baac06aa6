"""The MPPS SCP: a modality's IN PROGRESS -> COMPLETED step moves the worklist item ordered over HL7, goes
through the rules and reaches a pynetdicom MPPS SCP (the RIS) intact and in order, with the images the router
received added; and every refusal status."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from forwarding import db_rows
from hl7msg import message, seg, send
from peers import SECONDARY_CAPTURE, RouterProcess, make_instance, send_datasets, wait_for
from workflow_peers import MPPS, MppsSCP, mpps_scu

ACCESSION = "ACC900"


def order(accession: str) -> str:
    return message(
        "ORM^O01",
        seg("PID", {1: "1", 3: "MRN900^^^HOSP^MR", 5: "Step^Patient", 7: "19700101", 8: "F"}),
        seg("PV1", {1: "1", 2: "O"}),
        seg("ORC", {1: "NW", 2: f"PL-{accession}", 3: f"FL-{accession}"}),
        seg("OBR", {1: "1", 2: f"PL-{accession}", 3: f"FL-{accession}", 4: "RPCT1^CT Thorax^L", 18: accession,
                    19: f"RP-{accession}", 20: f"SPS-{accession}", 24: "CT", 27: "^^^202411221030^^R"}),
        version="2.3.1",
    )  # fmt: skip


def in_progress(study_uid: str, accession: str = ACCESSION, **changes: Any) -> Dataset:
    """An N-CREATE Attribute List with every attribute the ISUDM table requires (and a few more)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.ReferencedStudySequence = Sequence()
    step.AccessionNumber = accession
    step.RequestedProcedureID = f"RP-{accession}"
    step.RequestedProcedureDescription = "CT Thorax"
    step.ScheduledProcedureStepID = f"SPS-{accession}"
    step.ScheduledProcedureStepDescription = "CT Thorax"
    step.ScheduledProtocolCodeSequence = Sequence()
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientName = "Step^Patient"
    ds.PatientID = "MRN900"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.ReferencedPatientSequence = Sequence()
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "MODALITY"
    ds.PerformedStationName = "CT ROOM 1"
    ds.PerformedLocation = "RAD"
    ds.PerformedProcedureStepStartDate = "20241122"
    ds.PerformedProcedureStepStartTime = "103000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = "CT Thorax"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = Sequence()
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence()
    return changed(ds, changes)


def final(status: str = "COMPLETED", series: Sequence | None = None, **changes: Any) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20241122"
    ds.PerformedProcedureStepEndTime = "104500"
    if series is not None:
        ds.PerformedSeriesSequence = series
    return changed(ds, changes)


def changed(ds: Dataset, changes: dict[str, Any]) -> Dataset:
    """``ds`` with each keyword set to its value, or removed where the value is None."""
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def series_item(series_uid: str, images: list[Dataset]) -> Dataset:
    item = Dataset()
    item.PerformingPhysicianName = ""
    item.ProtocolName = "THORAX"
    item.OperatorsName = "Tech^One"
    item.SeriesInstanceUID = series_uid
    item.SeriesDescription = "Axial"
    item.RetrieveAETitle = ""
    item.ReferencedImageSequence = Sequence([ref(i) for i in images])
    item.ReferencedNonImageCompositeSOPInstanceSequence = Sequence()
    return item


def ref(image: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def worklist_status(router: RouterProcess, accession: str = ACCESSION) -> str:
    [row] = db_rows(router, "select status from worklistitem where accession_number=?", accession)
    return str(row["status"])


@pytest.fixture
def ris(workdir: Path) -> MppsSCP:
    return MppsSCP("RIS")


@pytest.fixture
def router(workdir: Path, ris: MppsSCP) -> Iterator[RouterProcess]:
    ris2 = MppsSCP("RIS2")
    process = RouterProcess(
        workdir,
        peers={"RIS_MPPS": {"ae_title": "RIS", "host": "127.0.0.1", "port": ris.port},
               "RIS2": {"ae_title": "RIS2", "host": "127.0.0.1", "port": ris2.port}},
        rules={"10-mpps.yaml": [
            {"name": "mpps-to-ris", "when": {"kind": "mpps"}, "then": [{"forward": "RIS_MPPS"}]},
            {"name": "completed-ct", "when": {"kind": "mpps", "message": "N-SET",
                                              "tags": {"PerformedProcedureStepStatus": "COMPLETED", "Modality": "CT"}},
             "then": [{"forward": "RIS2"}]},
        ]},
    )  # fmt: skip
    process.ris2 = ris2  # type: ignore[attr-defined]
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_step_completed_is_forwarded_in_order_with_the_received_images(
    router: RouterProcess, ris: MppsSCP, workdir: Path
) -> None:
    assert "MSA|AA|" in send(router.hl7_port, order(ACCESSION))
    assert worklist_status(router) == "SCHEDULED"
    study, series = generate_uid(), generate_uid()
    first, second = make_instance(study, series), make_instance(study, series)
    elsewhere = make_instance(study, generate_uid())  # a series the step does not list: not added
    uid = generate_uid()
    created = in_progress(study)
    assoc = mpps_scu(router.port)
    try:
        status, _ = assoc.send_n_create(created, MPPS, uid)
        assert status.Status == 0x0000
        assert worklist_status(router) == "IN PROGRESS"
        assert send_datasets(router.port, [first, second, elsewhere]) == [0, 0, 0]
        done = final(series=Sequence([series_item(series, [first])]))
        status, _ = assoc.send_n_set(done, MPPS, uid)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    assert worklist_status(router) == "COMPLETED"
    [row] = db_rows(router, "select status, messages, calling_ae, accession_number from performedprocedurestep")
    assert row == {"status": "COMPLETED", "messages": 2, "calling_ae": "MODALITY", "accession_number": ACCESSION}

    with ris.serving():  # the RIS was down: both messages waited in the outbox, and arrive in order
        wait_for(lambda: len(ris.received) == 2, 30, what="N-CREATE and N-SET at the RIS")
    (op1, uid1, got_create), (op2, uid2, got_set) = ris.received
    assert (op1, uid1, op2, uid2) == ("N-CREATE", uid, "N-SET", uid)
    assert got_create == created, "every attribute of the N-CREATE intact"
    expected = copy.deepcopy(done)
    expected.PerformedSeriesSequence[0].ReferencedImageSequence.append(ref(second))
    assert got_set == expected, "the N-SET intact, with the received image that was not listed added"
    refs = [(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID)
            for r in got_set.PerformedSeriesSequence[0].ReferencedImageSequence]  # fmt: skip
    assert refs == [(SECONDARY_CAPTURE, first.SOPInstanceUID), (SECONDARY_CAPTURE, second.SOPInstanceUID)]

    # the second rule tests the step's state: Modality came with the N-CREATE, the status with the N-SET
    ris2: MppsSCP = router.ris2  # type: ignore[attr-defined]
    with ris2.serving():
        wait_for(lambda: len(ris2.received) == 1, 30, what="the N-SET at RIS2")
    assert [(op, got) for op, _uid, got in ris2.received] == [("N-SET", expected)]
    wait_for(lambda: {r["state"] for r in db_rows(router, "select state from job")} == {"done"}, 10, what="jobs done")


def test_a_step_forwarded_as_it_goes_takes_its_n_set_after_the_n_create_was_delivered(
    router: RouterProcess, ris: MppsSCP
) -> None:
    """The RIS is up: the N-CREATE is delivered (its job done) before the N-SET comes. Delivering a job must not take
    away the files the MPPS service keeps: the N-SET applies to the step as created, and both messages stay stored."""
    uid = generate_uid()
    created = in_progress(generate_uid())
    with ris.serving():
        assoc = mpps_scu(router.port)
        try:
            status, _ = assoc.send_n_create(created, MPPS, uid)
            assert status.Status == 0x0000
            wait_for(lambda: len(ris.received) == 1, 30, what="the N-CREATE at the RIS")
            wait_for(lambda: [r["state"] for r in db_rows(router, "select state from job")] == ["done"], 30,
                     what="the N-CREATE job done")  # fmt: skip
            status, _ = assoc.send_n_set(final(), MPPS, uid)
            assert status.Status == 0x0000, status
        finally:
            assoc.release()
        wait_for(lambda: len(ris.received) == 2, 30, what="the N-SET at the RIS")
    assert [(op, got_uid) for op, got_uid, _ in ris.received] == [("N-CREATE", uid), ("N-SET", uid)]
    to_ris = "select state from job where peer='RIS_MPPS'"  # (RIS2, for completed CT steps, is not listening)
    wait_for(lambda: {r["state"] for r in db_rows(router, to_ris)} == {"done"}, 10, what="the jobs to the RIS done")
    kept = sorted(p.name.split("-")[1] for p in (router.data_dir / "mpps").rglob("*.dcm"))
    assert kept == ["create", "set", "state"], "the step's messages and its state are kept after forwarding"


def statuses(router: RouterProcess, operations: list[tuple[str, Dataset, str | None]]) -> list[tuple[int, str, int]]:
    """(Status, Error Comment, Error ID) for each (operation, dataset, SOP Instance UID) over one association."""
    assoc = mpps_scu(router.port)
    out = []
    try:
        for operation, ds, uid in operations:
            if operation == "N-CREATE":
                status, _ = assoc.send_n_create(ds, MPPS, uid)
            else:
                status, _ = assoc.send_n_set(ds, MPPS, uid)
            out.append((int(status.Status), str(status.get("ErrorComment", "")), int(status.get("ErrorID", 0))))
    finally:
        assoc.release()
    return out


def test_each_refusal(router: RouterProcess, ris: MppsSCP) -> None:
    study = generate_uid()
    uid, other = generate_uid(), generate_uid()
    no_study = in_progress(study)
    del no_study.ScheduledStepAttributesSequence[0].StudyInstanceUID
    answers = statuses(router, [
        ("N-CREATE", in_progress(study, PatientID=None), generate_uid()),
        ("N-CREATE", in_progress(study, Modality=""), generate_uid()),
        ("N-CREATE", no_study, generate_uid()),
        ("N-CREATE", in_progress(study, PerformedProcedureStepStatus="COMPLETED"), generate_uid()),
        ("N-CREATE", in_progress(study), None),
        ("N-CREATE", in_progress(study), uid),
        ("N-CREATE", in_progress(study), uid),
        ("N-SET", final(), other),
        ("N-SET", final(PerformedProcedureStepEndTime=None), uid),
        ("N-SET", final(PerformedProcedureStepEndDate=""), uid),
        ("N-SET", final("DONE"), uid),
        ("N-SET", final("DISCONTINUED"), uid),
        ("N-SET", final(), uid),
    ])  # fmt: skip
    assert answers == [
        (0x0120, "PatientID missing", 0),
        (0x0121, "Modality has no value", 0),
        (0x0120, "Scheduled Step Attributes item 1 > StudyInstanceUID missing", 0),
        (0x0106, "PPS Status 'COMPLETED' in N-CREATE (must be IN PROGRESS)", 0),
        (0x0121, "Affected SOP Instance UID missing: the SCU assigns it", 0),
        (0x0000, "", 0),
        (0x0111, "an MPPS with this SOP Instance UID exists", 0),
        (0x0112, "no MPPS with this SOP Instance UID", 0),
        (0x0120, "PerformedProcedureStepEndTime missing", 0),
        (0x0121, "PerformedProcedureStepEndDate has no value", 0),
        (0x0106, "PPS Status 'DONE' is not IN PROGRESS, COMPLETED or DISCONTINUED", 0),
        (0x0000, "", 0),
        (0x0110, "Performed Procedure Step Object may no longer be updated", 0xA710),
    ]
    [row] = db_rows(router, "select sop_uid, status, messages from performedprocedurestep")
    assert row == {"sop_uid": uid, "status": "DISCONTINUED", "messages": 2}, "refused messages changed nothing"
    with ris.serving():
        wait_for(lambda: len(ris.received) == 2, 30, what="the accepted messages at the RIS")
    assert [(op, got.PerformedProcedureStepStatus) for op, _uid, got in ris.received] == [
        ("N-CREATE", "IN PROGRESS"),
        ("N-SET", "DISCONTINUED"),
    ], "only what was accepted is forwarded"
