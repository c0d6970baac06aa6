"""Import reconciliation without a router: the HL7 -> DICOM coding scheme mapping, the study match against a
worklist (a stand-in with the three questions), and what ``Reconciler`` writes into an object."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence

from router.config import load_config
from router.config.base import ConfigError
from router.hl7.coding import dicom_coding_scheme
from router.media.reconcile import ReconcileOptions, Reconciler, UidMap, match_study
from router.media.worklists import WorklistEntry

from peers import make_instance


@pytest.mark.parametrize(
    ("hl7", "dicom"),
    [
        ("LN", "LN"),
        ("SCT", "SCT"),
        ("SNM", "SCT"),
        ("snm", "SCT"),
        ("SNM3", "SCT"),
        ("DCM", "DCM"),
        ("I9", "I9C"),
        ("I10", "I10"),
        ("C4", "C4"),
        ("NCIt", "NCIt"),
        ("99ZHOSP", "99ZHOSP"),  # a site's own 99-prefixed scheme stays
        ("L", "99LOCAL"),
        ("LB", "99LOCAL"),
        ("", "99LOCAL"),
        ("99abc", "99LOCAL"),  # lower case is no valid designator name
        ("XYZ", "99LOCAL"),  # a mnemonic DICOM does not define
    ],
)
def test_hl7_coding_systems_become_dicom_designators(hl7: str, dicom: str) -> None:
    assert dicom_coding_scheme(hl7) == dicom
    assert dicom_coding_scheme(dicom) == dicom, "idempotent: a designator maps to itself"


def test_the_local_designator_is_configured_and_checked(tmp_path: Path) -> None:
    assert dicom_coding_scheme("L", "99UMCX") == "99UMCX"
    assert dicom_coding_scheme("99UMCX", "99UMCX") == "99UMCX"
    path = tmp_path / "router.yaml"
    path.write_text("hl7: {local_coding_scheme: 99UMCX}\n")
    assert load_config(path).hl7.local_coding_scheme == "99UMCX"
    assert load_config(None).hl7.local_coding_scheme == "99LOCAL"
    path.write_text("hl7: {local_coding_scheme: L}\n")
    with pytest.raises(ConfigError, match=r"hl7\.local_coding_scheme"):
        load_config(path)


# -- matching -------------------------------------------------------------------------------------------------------
def entry(pid: str, name: str, accession: str, issuer: str = "HOSP", birth: str = "19750304") -> WorklistEntry:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "RPCT1", "99LOCAL", "CT Thorax"
    return WorklistEntry(
        {"PatientID": pid, "IssuerOfPatientID": issuer, "PatientName": name, "PatientBirthDate": birth,
         "PatientSex": "F"},
        {"AccessionNumber": accession, "ReferringPhysicianName": "Huisarts^Karel",
         "RequestingPhysician": "Aanvrager^Ria", "ProcedureCodeSequence": Sequence([code])},
    )  # fmt: skip


class FakeWorklist:
    name = "fake"

    def __init__(self, *entries: WorklistEntry) -> None:
        self.entries = entries
        self.asked: list[str] = []

    def by_accession(self, accession: str) -> list[WorklistEntry]:
        self.asked.append("accession")
        return [e for e in self.entries if accession and e.order["AccessionNumber"] == accession]

    def by_patient_id(self, patient_id: str, issuer: str) -> list[WorklistEntry]:
        self.asked.append("id")
        return [e for e in self.entries if issuer and e.patient_key == (patient_id, issuer)]

    def by_name_and_birth_date(self, name: str, birth_date: str) -> list[WorklistEntry]:
        self.asked.append("name")
        wanted = (name.upper(), birth_date)
        return [e for e in self.entries if (e.patient["PatientName"].upper(), e.patient["PatientBirthDate"]) == wanted]


ANNA = entry("MRN500", "Muller^Anna", "ACC500")
ANNA_2 = entry("MRN500", "Muller^Anna", "ACC501")
OTHER_ANNA = entry("MRN900", "Muller^Anna", "ACC900")


def header(**attrs: Any) -> Dataset:
    return make_instance(**{"PatientName": "Foreign^Name", "PatientID": "EXT1", **attrs})


def test_the_accession_number_is_asked_first() -> None:
    worklist = FakeWorklist(ANNA, OTHER_ANNA)
    ds = header(AccessionNumber="ACC500", PatientName="Muller^Anna", PatientBirthDate="19750304")
    match = match_study(worklist, ds)
    assert (match.matched, match.how) == ("accession", "accession number")
    assert match.values["PatientID"] == "MRN500" and match.values["AccessionNumber"] == "ACC500"
    assert worklist.asked == ["accession"]


def test_patient_id_counts_only_with_its_issuer() -> None:
    worklist = FakeWorklist(ANNA)
    assert match_study(worklist, header(PatientID="MRN500")).matched == "none", "no issuer: not the same patient"
    match = match_study(worklist, header(PatientID="MRN500", IssuerOfPatientID="HOSP"))
    assert (match.matched, match.how) == ("demographics", "patient ID and issuer")
    assert match.values["AccessionNumber"] == "ACC500", "the patient's one order is taken too"


def test_name_and_birth_date_then_patient_only_when_the_patient_has_several_orders() -> None:
    match = match_study(FakeWorklist(ANNA), header(PatientName="MULLER^ANNA", PatientBirthDate="19750304"))
    assert (match.matched, match.how) == ("demographics", "patient name and birth date")
    match = match_study(FakeWorklist(ANNA, ANNA_2), header(PatientName="Muller^Anna", PatientBirthDate="19750304"))
    assert match.matched == "demographics" and "2 orders: patient only" in match.how
    assert "AccessionNumber" not in match.values and match.values["PatientID"] == "MRN500"


def test_two_patients_are_ambiguous_and_nothing_is_no_match() -> None:
    both = FakeWorklist(ANNA, OTHER_ANNA)
    match = match_study(both, header(PatientName="Muller^Anna", PatientBirthDate="19750304"))
    assert match.matched == "none" and "2 patients (ambiguous)" in match.how
    assert match_study(both, header(PatientBirthDate="19750304")).matched == "none"


# -- what an object becomes -----------------------------------------------------------------------------------------
def p10(ds: Dataset) -> bytes:
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def test_a_matched_object_takes_the_local_values_and_keeps_the_old_ones() -> None:
    original = header(AccessionNumber="ACC500", PatientSex="M", SpecificCharacterSet="ISO_IR 100")
    reconciler = Reconciler(FakeWorklist(entry("MRN500", "Müller^Anna", "ACC500")), ReconcileOptions())
    raw, match, changed = reconciler.apply(p10(original))
    assert raw is not None and match.objects == 1
    got = dcmread(BytesIO(raw))
    assert (str(got.PatientName), got.PatientID, got.IssuerOfPatientID) == ("Müller^Anna", "MRN500", "HOSP")
    assert got.SpecificCharacterSet == "ISO_IR 100", "the local name fits Latin-1: the declared set stays"
    assert got.ProcedureCodeSequence[0].CodingSchemeDesignator == "99LOCAL"
    assert got.SOPInstanceUID == original.SOPInstanceUID, "UIDs stay without --new-uids"
    assert "RequestingPhysician" not in got, "not an attribute of the image IODs (dciodvfy would warn)"
    [oas] = got.OriginalAttributesSequence
    assert oas.ReasonForTheAttributeModification == "COERCE"
    old = oas.ModifiedAttributesSequence[0]
    assert (str(old.PatientName), old.PatientID, old.PatientSex) == ("Foreign^Name", "EXT1", "M")
    assert set(changed) == {"PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                            "ReferringPhysicianName", "ProcedureCodeSequence"}  # fmt: skip
    assert match.as_json()["changed"] == sorted(changed)


def test_a_name_the_declared_set_cannot_hold_makes_the_object_utf8() -> None:
    reconciler = Reconciler(FakeWorklist(entry("MRN1", "Łukasz^Zoë", "ACC1")), ReconcileOptions())
    raw, _, changed = reconciler.apply(p10(header(AccessionNumber="ACC1", StudyDescription="Schädel")))
    assert raw is not None and "SpecificCharacterSet" in changed
    got = dcmread(BytesIO(raw))
    assert got.SpecificCharacterSet == "ISO_IR 192"
    assert str(got.PatientName) == "Łukasz^Zoë"
    assert got.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].SpecificCharacterSet in ("", None)


def test_new_uids_are_consistent_within_a_run_and_differ_between_runs() -> None:
    study, series = "1.2.3.4", "1.2.3.4.5"
    same_series = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "AccessionNumber": "ACC500"}
    objects = [p10(header(**same_series)) for _ in range(3)]
    run = Reconciler(FakeWorklist(ANNA), ReconcileOptions(new_uids=True))
    got = [dcmread(BytesIO(run.apply(raw)[0] or b"")) for raw in objects]
    assert len({g.StudyInstanceUID for g in got}) == 1 and len({g.SeriesInstanceUID for g in got}) == 1
    assert len({g.SOPInstanceUID for g in got}) == 3
    assert got[0].StudyInstanceUID != study and got[0].StudyInstanceUID.startswith("2.25.")
    assert all(g.file_meta.MediaStorageSOPInstanceUID == g.SOPInstanceUID for g in got)
    old = got[0].OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert (old.StudyInstanceUID, old.SeriesInstanceUID) == (study, series)
    assert old.SOPInstanceUID == dcmread(BytesIO(objects[0])).SOPInstanceUID
    assert run.report()[0]["new_study_uid"] == got[0].StudyInstanceUID
    other = UidMap()
    assert other(study) != run.uids(study), "another run, other UIDs"
    assert UidMap(b"k" * 32)(study) == UidMap(b"k" * 32)(study)


def test_matched_only_holds_back_an_unmatched_study_and_the_rest_is_left_alone() -> None:
    raw = p10(header(AccessionNumber="NOPE"))
    held = Reconciler(FakeWorklist(ANNA), ReconcileOptions(matched_only=True))
    assert held.apply(raw)[0] is None and held.report()[0]["held_back"] is True
    kept = Reconciler(FakeWorklist(ANNA), ReconcileOptions())
    out, match, changed = kept.apply(raw)
    assert out == raw and changed == [] and match.matched == "none"


# -- --new-uids: references inside objects ------------------------------------------------------------------------
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State Storage


def _ref(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
    return item


def referencing_set() -> tuple[list[Dataset], Dataset, Dataset]:
    """Two images of one series and frame of reference (the second derived from the first), a presentation state
    of the same study referencing both and an image outside the set, and that outside image."""
    study, series, frame = "1.2.7", "1.2.7.1", "1.2.7.99"
    images = [header(StudyInstanceUID=study, SeriesInstanceUID=series, FrameOfReferenceUID=frame) for _ in range(2)]
    images[1].SourceImageSequence = Sequence([_ref(images[0].SOPClassUID, images[0].SOPInstanceUID)])
    outside = header(StudyInstanceUID="1.2.8", SeriesInstanceUID="1.2.8.1")
    gsps = header(StudyInstanceUID=study, SeriesInstanceUID="1.2.7.2", sop_class=GSPS)
    by_series = [(series, images), ("1.2.8.1", [outside])]
    gsps.ReferencedSeriesSequence = Sequence()
    for series_uid, refs in by_series:
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedImageSequence = Sequence([_ref(ds.SOPClassUID, ds.SOPInstanceUID) for ds in refs])
        gsps.ReferencedSeriesSequence.append(item)
    gsps.ReferencedStudySequence = Sequence([_ref("1.2.840.10008.3.1.2.3.1", study)])  # a study's reference
    return images, gsps, outside


def test_new_uids_rewrite_references_to_objects_of_the_run_and_leave_others() -> None:
    images, gsps, outside = referencing_set()
    run = Reconciler(FakeWorklist(), ReconcileOptions(new_uids=True))
    objects = [p10(gsps), *map(p10, images)]  # the presentation state is read first
    for raw in objects:
        run.survey(raw)
    got_gsps, *got_images = [dcmread(BytesIO(run.apply(raw)[0] or b"")) for raw in objects]
    new = {ds.SOPInstanceUID: got.SOPInstanceUID for ds, got in zip(images, got_images, strict=True)}
    assert all(uid.startswith("2.25.") for uid in new.values())
    ours, theirs = got_gsps.ReferencedSeriesSequence
    assert ours.SeriesInstanceUID == got_images[0].SeriesInstanceUID != images[0].SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in ours.ReferencedImageSequence] == [
        new[ds.SOPInstanceUID] for ds in images
    ]
    kept = (theirs.SeriesInstanceUID, theirs.ReferencedImageSequence[0].ReferencedSOPInstanceUID)
    assert kept == (outside.SeriesInstanceUID, outside.SOPInstanceUID), "an object outside the run: as it was"
    assert got_gsps.ReferencedStudySequence[0].ReferencedSOPInstanceUID == got_gsps.StudyInstanceUID
    assert got_gsps.StudyInstanceUID == got_images[0].StudyInstanceUID
    assert (
        got_gsps.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPClassUID == images[0].SOPClassUID
    )
    assert got_images[1].SourceImageSequence[0].ReferencedSOPInstanceUID == got_images[0].SOPInstanceUID
    frames = {ds.FrameOfReferenceUID for ds in got_images}
    assert len(frames) == 1 and frames != {images[0].FrameOfReferenceUID}, "one frame of reference, re-identified"
    old = got_gsps.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert old.ReferencedSeriesSequence == gsps.ReferencedSeriesSequence, "the old references are kept"
    assert old.SOPInstanceUID == gsps.SOPInstanceUID
    assert got_images[0].OriginalAttributesSequence[0].ModifiedAttributesSequence[0].FrameOfReferenceUID == "1.2.7.99"


def test_without_the_survey_only_objects_already_read_are_known() -> None:
    images, gsps, _ = referencing_set()
    run = Reconciler(FakeWorklist(), ReconcileOptions(new_uids=True))
    got_gsps = dcmread(BytesIO(run.apply(p10(gsps))[0] or b""))
    refs = got_gsps.ReferencedSeriesSequence[0].ReferencedImageSequence
    assert [r.ReferencedSOPInstanceUID for r in refs] == [ds.SOPInstanceUID for ds in images]
    held = Reconciler(FakeWorklist(), ReconcileOptions(new_uids=True, matched_only=True))
    for ds in images:
        held.survey(p10(ds))
    assert held.in_set == set(), "a held-back study's objects are not imported: references to them stay"
