"""``router import --reconcile`` against orders a running router received over MLLP (issue 19): media from another
hospital, whose patient IDs and names differ, is imported with the local patient and order values and Original
Attributes Sequence; once from the router's own worklist, once from its MWL SCP by C-FIND (``--worklist``) with
``--matched-only`` and ``--new-uids``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from hl7msg import adt, message, seg, send
from media import report, rows, run, site
from peers import RouterProcess, free_port, make_instance

ANNA = {3: "MRN700^^^HOSP^MR", 5: "Müller^Anna", 7: "19750304", 8: "F"}
JAN = {3: "MRN701^^^HOSP^MR", 5: "de Vries^Jan", 7: "19650303", 8: "M"}


def order(patient: dict[int, str], accession: str) -> str:
    return message(
        "ORM^O01",
        seg("PID", {1: "1", **patient}),
        seg("PV1", {1: "1", 2: "O", 8: "D123^Huisarts^Karel"}),
        seg("ORC", {1: "NW", 2: f"PL-{accession}", 3: f"FL-{accession}"}),
        seg("OBR", {1: "1", 2: f"PL-{accession}", 3: f"FL-{accession}", 4: "RPCT1^CT Thorax^L", 18: accession,
                    19: f"RP-{accession}", 20: f"SPS-{accession}", 24: "CT", 27: "^^^202611221030^^R"}),
        version="2.3.1",
    )  # fmt: skip


def ok(port: int, text: str) -> None:
    ack = send(port, text)
    assert "MSA|AA|" in ack, ack


@pytest.fixture(scope="module")
def ris_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    """A router that received two patients and their orders over MLLP (nothing to forward to)."""
    router = RouterProcess(tmp_path_factory.mktemp("router"), hl7={"local_coding_scheme": "99UMCX"}).start()
    try:
        for patient, accession in ((ANNA, "ACC700"), (JAN, "ACC701")):
            ok(router.hl7_port, adt("A04", patient))
            ok(router.hl7_port, order(patient, accession))
        yield router
    finally:
        router.stop()


def foreign_media(folder: Path) -> dict[str, list[Dataset]]:
    """A CD from another hospital: its own patient IDs and spellings. Studies: by accession, by name and birth date,
    and one the worklist does not know."""
    folder.mkdir()
    studies = {
        "accession": [dict(AccessionNumber="ACC700", PatientID="EXT-1", IssuerOfPatientID="OTHERHOSP",
                           PatientName="Mueller^A", PatientBirthDate="19750304", PatientSex="O")] * 2,
        "demographics": [dict(AccessionNumber="", PatientID="EXT-2", PatientName="DE VRIES^JAN",
                              PatientBirthDate="19650303")],
        "none": [dict(AccessionNumber="X999", PatientID="EXT-3", PatientName="Nobody^Here",
                      PatientBirthDate="20000101")],
    }  # fmt: skip
    made: dict[str, list[Dataset]] = {}
    for name, objects in studies.items():
        study, series = generate_uid(), generate_uid()
        made[name] = [make_instance(study, series, Modality="CT", **attrs) for attrs in objects]
        for i, ds in enumerate(made[name]):
            ds.save_as(folder / f"{name}{i}.dcm", enforce_file_format=True)
    return made


def stored(config: Path) -> dict[str, Dataset]:
    """The stored objects of the router of ``config``: {SOP Instance UID: dataset}."""
    data = config.parent / "var"
    return {uid: dcmread(data / path) for uid, path in rows(config, "select sop_uid, path from instance")}


def by_study(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["study_uid"]: s for s in data["studies"]}


def old_values(ds: Dataset) -> Dataset:
    [change] = ds.OriginalAttributesSequence
    assert change.ReasonForTheAttributeModification == "COERCE"
    item: Dataset = change.ModifiedAttributesSequence[0]
    return item


def test_media_takes_the_local_patient_and_order_from_the_routers_worklist(
    ris_router: RouterProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = foreign_media(tmp_path / "cd")
    untouched = hashlib.sha256((tmp_path / "cd" / "none0.dcm").read_bytes()).hexdigest()
    config = ris_router.config_path  # the running router's own data: the import and the server share the index
    code, out, err = run(capsys, config, "import", "--reconcile", "-q", "--report", str(tmp_path / "r.json"),
                         str(tmp_path / "cd"))  # fmt: skip
    assert code == 0, err
    assert "reconciled 3 studies: 1 by accession, 1 by demographics, 1 unmatched" in out
    data = report(tmp_path / "r.json")
    assert data["counts"] == {"imported": 4}
    studies = by_study(data)
    first = made["accession"][0]
    assert studies[first.StudyInstanceUID]["matched"] == "accession"
    assert studies[first.StudyInstanceUID]["objects"] == 2
    assert studies[made["demographics"][0].StudyInstanceUID]["how"] == "patient name and birth date"
    assert studies[made["none"][0].StudyInstanceUID]["matched"] == "none"
    assert studies[made["none"][0].StudyInstanceUID]["changed"] == []

    objects = stored(config)
    for ds in made["accession"]:
        got = objects[ds.SOPInstanceUID]
        assert (str(got.PatientName), got.PatientID, got.IssuerOfPatientID) == ("Müller^Anna", "MRN700", "HOSP")
        assert (got.PatientBirthDate, got.PatientSex, got.AccessionNumber) == ("19750304", "F", "ACC700")
        assert str(got.ReferringPhysicianName) == "Huisarts^Karel"
        code_item = got.ProcedureCodeSequence[0]
        assert (code_item.CodeValue, code_item.CodingSchemeDesignator) == ("RPCT1", "99UMCX"), "not HL7's L"
        assert got.SpecificCharacterSet == "ISO_IR 192", "Müller needs more than the default repertoire"
        old = old_values(got)
        assert (str(old.PatientName), old.PatientID, old.IssuerOfPatientID) == ("Mueller^A", "EXT-1", "OTHERHOSP")
        assert old.PatientSex == "O" and old.get("ProcedureCodeSequence") in (None, [])
    jan = objects[made["demographics"][0].SOPInstanceUID]
    assert (str(jan.PatientName), jan.PatientID, jan.AccessionNumber) == ("de Vries^Jan", "MRN701", "ACC701")
    assert (str(old_values(jan).PatientName), old_values(jan).PatientID) == ("DE VRIES^JAN", "EXT-2")
    unmatched = made["none"][0].SOPInstanceUID
    path = rows(config, f"select path from instance where sop_uid = '{unmatched}'")[0][0]
    assert hashlib.sha256((config.parent / "var" / path).read_bytes()).hexdigest() == untouched, "imported as it is"


def test_a_worklist_peer_by_c_find_with_matched_only_and_new_uids(
    ris_router: RouterProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = foreign_media(tmp_path / "cd")
    peers = {"RIS": {"ae_title": "ROUTER", "host": "127.0.0.1", "port": ris_router.port},
             "PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 9}}  # fmt: skip
    config = site(tmp_path / "site", peers=peers, rules=[{"name": "all", "when": {"source": "media"}, "then": []}])
    code, out, err = run(capsys, config, "import", "--reconcile", "--worklist", "RIS", "--matched-only", "--new-uids",
                         "-q", "--report", str(tmp_path / "r.json"), str(tmp_path / "cd"))  # fmt: skip
    assert code == 0, err
    assert "(1 held back)" in out
    data = report(tmp_path / "r.json")
    assert data["counts"] == {"imported": 3, "not-selected": 1}
    held = next(f for f in data["files"] if f["outcome"] == "not-selected")
    assert held["file"] == "none0.dcm" and "held back" in held["reason"]
    studies = by_study(data)
    objects = stored(config)
    assert len(objects) == 3 and not set(objects) & {ds.SOPInstanceUID for v in made.values() for ds in v}
    anna = [ds for ds in objects.values() if ds.PatientID == "MRN700"]
    assert len(anna) == 2 and len({ds.StudyInstanceUID for ds in anna}) == 1, "one study stays one study"
    assert len({ds.SeriesInstanceUID for ds in anna}) == 1
    original = made["accession"][0]
    assert anna[0].StudyInstanceUID == studies[original.StudyInstanceUID]["new_study_uid"]
    for ds in anna:
        old = old_values(ds)
        assert (old.StudyInstanceUID, old.SeriesInstanceUID) == (original.StudyInstanceUID, original.SeriesInstanceUID)
        assert old.SOPInstanceUID in {o.SOPInstanceUID for o in made["accession"]}
        assert ds.ProcedureCodeSequence[0].CodingSchemeDesignator == "99UMCX", "from the MWL answer"
        assert (str(ds.PatientName), ds.AccessionNumber) == ("Müller^Anna", "ACC700")
    [jan] = [ds for ds in objects.values() if ds.PatientID == "MRN701"]
    assert studies[made["demographics"][0].StudyInstanceUID]["matched"] == "demographics"
    assert jan.AccessionNumber == "ACC701"


def test_worklist_problems_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign_media(tmp_path / "cd")
    peers = {"DOWN": {"ae_title": "DOWN", "host": "127.0.0.1", "port": free_port()},
             "HIS": {"mllp": "127.0.0.1:9"}}  # fmt: skip
    config = site(tmp_path / "site", peers=peers, rules=[{"name": "all", "when": {"source": "media"}, "then": []}])
    cd = str(tmp_path / "cd")
    code, _, err = run(capsys, config, "import", "--new-uids", cd)
    assert code == 2 and "go with --reconcile" in err
    code, _, err = run(capsys, config, "import", "--reconcile", "--worklist", "NOPE", "-q", cd)
    assert code == 2 and "unknown peer 'NOPE'" in err
    code, _, err = run(capsys, config, "import", "--reconcile", "--worklist", "HIS", "-q", cd)
    assert code == 2 and "not a DICOM one" in err
    code, _, err = run(capsys, config, "import", "--reconcile", "--worklist", "DOWN", "-q", cd)
    assert code == 2 and "worklist peer DOWN" in err, err
    assert rows(config, "select count(*) from instance") in ([], [(0,)]), "nothing imported without the worklist"


def test_new_uids_rewrite_a_presentation_states_references_read_before_its_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cd"
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    images = [make_instance(study, series, Modality="CT", FrameOfReferenceUID="1.2.3.44") for _ in range(2)]
    outside = make_instance(Modality="CT")  # on no medium of the run
    gsps = make_instance(study, sop_class="1.2.840.10008.5.1.4.1.1.11.1", Modality="PR")
    refs = []
    for ds in (*images, outside):
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        item = Dataset()
        item.SeriesInstanceUID, item.ReferencedImageSequence = ds.SeriesInstanceUID, [ref]
        refs.append(item)
    gsps.ReferencedSeriesSequence = refs
    for name, ds in (("a-gsps.dcm", gsps), ("b-ct1.dcm", images[0]), ("c-ct2.dcm", images[1])):
        ds.save_as(folder / name, enforce_file_format=True)  # the walk reads the presentation state first
    config = site(tmp_path / "site", rules=[{"name": "all", "when": {"source": "media"}, "then": []}])
    code, _, err = run(capsys, config, "import", "--reconcile", "--new-uids", "-q", str(folder))
    assert code == 0, err
    objects = stored(config)
    [state] = [ds for ds in objects.values() if ds.Modality == "PR"]
    ct = sorted((ds for ds in objects.values() if ds.Modality == "CT"), key=lambda ds: old_values(ds).SOPInstanceUID)
    assert [old_values(ds).SOPInstanceUID for ds in ct] == sorted(ds.SOPInstanceUID for ds in images)
    by_old = {old_values(ds).SOPInstanceUID: ds for ds in ct}
    got = [(i.SeriesInstanceUID, i.ReferencedImageSequence[0].ReferencedSOPInstanceUID)
           for i in state.ReferencedSeriesSequence]  # fmt: skip
    new = [by_old[ds.SOPInstanceUID] for ds in images]
    assert got == [(new[0].SeriesInstanceUID, new[0].SOPInstanceUID), (new[1].SeriesInstanceUID, new[1].SOPInstanceUID),
                   (outside.SeriesInstanceUID, outside.SOPInstanceUID)]  # fmt: skip
    assert state.StudyInstanceUID == new[0].StudyInstanceUID != study
    assert new[0].FrameOfReferenceUID == new[1].FrameOfReferenceUID != "1.2.3.44"
