"""C-FIND response identifiers encoded from index rows (router/query/encode.py) are pydicom's bytes, exactly.

Each case builds a plan from a request identifier, a row of index values and the derived values, and compares
``Encoder.encode`` with pynetdicom's encoding of the ``Dataset`` the router built before (``find._identifier``), in
Implicit and Explicit VR Little Endian.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from router.query.encode import Encoder
from router.query.find import _identifier, plan_find
from router.query.model import ATTRS, PATIENT_ROOT, STUDY_ROOT, InfoModel

VALUES: dict[str, Any] = {
    "PatientName": "Smith^John",
    "PatientID": "P1",
    "IssuerOfPatientID": "",
    "PatientBirthDate": "19700101",
    "PatientSex": "M",
    "StudyInstanceUID": "1.2.3.45",  # odd length: padded with NUL
    "StudyDate": "20240101",
    "StudyTime": "101010.5",
    "AccessionNumber": "A123",
    "StudyID": "7",
    "StudyDescription": "CT HEAD",
    "ReferringPhysicianName": "",
    "SeriesInstanceUID": "1.2.3.4.5",
    "Modality": "CT",
    "SeriesNumber": "3",
    "SeriesDescription": "axial 5mm",
    "BodyPartExamined": "",
    "PerformedProcedureStepStartDate": "",
    "PerformedProcedureStepStartTime": "",
    "SOPInstanceUID": "1.2.3.4.5.6",
    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",
    "InstanceNumber": "12",
    "ImageType": "ORIGINAL\\PRIMARY\\AXIAL",
    "NumberOfFrames": "",
}
DERIVED: dict[str, Any] = {
    "ModalitiesInStudy": ["CT", "MR", "SR"],
    "SOPClassesInStudy": ["1.2.840.10008.5.1.4.1.1.7"],
    "NumberOfPatientRelatedStudies": "2",
    "NumberOfPatientRelatedSeries": "10",
    "NumberOfPatientRelatedInstances": "51",
    "NumberOfStudyRelatedSeries": "5",
    "NumberOfStudyRelatedInstances": "25",
    "NumberOfSeriesRelatedInstances": "5",
}
LEVEL_KEYS = {
    "PATIENT": {"PatientID": "P1"},
    "STUDY": {"PatientID": "P1"},
    "SERIES": {"PatientID": "P1", "StudyInstanceUID": "1.2.3.45"},
    "IMAGE": {"PatientID": "P1", "StudyInstanceUID": "1.2.3.45", "SeriesInstanceUID": "1.2.3.4.5"},
}


def request(model: InfoModel, level: str, *, extra: dict[str, Any] | None = None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, attr in ATTRS.items():
        if attr.derived == "requests":
            continue
        setattr(ds, keyword, "")
    for keyword, value in LEVEL_KEYS[level].items():
        if keyword != "PatientID" or model is PATIENT_ROOT:
            setattr(ds, keyword, value)
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    return ds


def row_and_derived(plan: Any, values: dict[str, Any], derived: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    row: dict[str, Any] = {f"_id_{lv}": 1 for lv in ("PATIENT", "STUDY", "SERIES", "IMAGE")}
    row.update(values)
    return row, {keyword: {1: value} for keyword, value in derived.items()}


def both(plan: Any, row: dict[str, Any], derived: Any, ae: str, implicit: bool) -> tuple[bytes | None, bytes]:
    ours = Encoder(plan, ae, implicit_vr=implicit).encode(row, derived)
    theirs = encode(_identifier(plan, row, derived, ae), implicit, True)
    assert theirs
    return ours, theirs


CASES = [(m, lv) for m in (PATIENT_ROOT, STUDY_ROOT) for lv in m.levels]


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize(("model", "level"), CASES, ids=[f"{m.name}-{lv}" for m, lv in CASES])
def test_every_key_encodes_as_pydicom_does(model: InfoModel, level: str, implicit: bool) -> None:
    plan = plan_find(model, request(model, level))
    row, derived = row_and_derived(plan, VALUES, DERIVED)
    ours, theirs = both(plan, row, derived, "ROUTER", implicit)
    assert ours == theirs
    assert b"Smith^John" in theirs and b"ROUTER" in theirs


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_empty_values_controls_unknown_keys_and_character_set(implicit: bool) -> None:
    extra = {
        "InstanceAvailability": "",
        "TimezoneOffsetFromUTC": "",
        "SpecificCharacterSet": ["ISO 2022 IR 6", "ISO 2022 IR 87"],
        "PatientComments": "",  # unknown to the index: returned empty
        "OtherPatientIDs": "",
        "PatientSize": None,  # DS
    }
    plan = plan_find(STUDY_ROOT, request(STUDY_ROOT, "STUDY", extra=extra))
    row, derived = row_and_derived(plan, {k: "" for k in VALUES}, {**DERIVED, "ModalitiesInStudy": []})
    for ae in ("ROUTER", "", "ODD"):
        ours, theirs = both(plan, row, derived, ae, implicit)
        assert ours == theirs


@pytest.mark.filterwarnings("ignore:Unknown encoding")
@pytest.mark.parametrize("terms", ["ISO_IR 100", "ISO_IR 192", "ISO_IR 999", "", ["", "ISO 2022 IR 149"]])
def test_requested_character_sets_with_ascii_values(terms: Any) -> None:
    plan = plan_find(STUDY_ROOT, request(STUDY_ROOT, "STUDY", extra={"SpecificCharacterSet": terms}))
    row, derived = row_and_derived(plan, VALUES, DERIVED)
    ours, theirs = both(plan, row, derived, "ROUTER", True)
    assert ours == theirs


def test_a_value_outside_ascii_is_left_to_pydicom() -> None:
    plan = plan_find(STUDY_ROOT, request(STUDY_ROOT, "STUDY", extra={"SpecificCharacterSet": "ISO_IR 100"}))
    row, derived = row_and_derived(plan, {**VALUES, "PatientName": "Buc^Jérôme"}, DERIVED)
    assert Encoder(plan, "ROUTER", implicit_vr=True).encode(row, derived) is None
    ascii_row, _ = row_and_derived(plan, VALUES, DERIVED)
    assert Encoder(plan, "ROUTER", implicit_vr=True).encode(ascii_row, derived) is not None


def test_the_request_attributes_sequence_is_left_to_pydicom() -> None:
    ds = request(PATIENT_ROOT, "SERIES")
    ds.RequestAttributesSequence = [Dataset()]
    plan = plan_find(PATIENT_ROOT, ds)
    row, derived = row_and_derived(plan, VALUES, {**DERIVED, "RequestAttributesSequence": []})
    assert Encoder(plan, "ROUTER", implicit_vr=False).encode(row, derived) is None
