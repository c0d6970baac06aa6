"""What an MPPS N-CREATE / N-SET must carry, and applying an N-SET. Pure functions.

The attributes checked are those the ISUDM 2.1 conformance statement requires (its tables 31 and 34), with the
type PS3.4 Table F.7.2-1 gives each: a Type 1 attribute needs a value, a Type 2 attribute must be present (it may
be empty). Status 0x0120 (missing attribute) when one is absent, 0x0121 (missing attribute value) when a Type 1
one is empty. Accession Number, Study Instance UID, Scheduled Procedure Step ID and Requested Procedure ID are
checked in each item of the Scheduled Step Attributes Sequence, where PS3.4 puts them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from pydicom.dataset import Dataset

from router.mpps import FINAL, IN_PROGRESS, STATUSES
from router.statuses import (
    INVALID_ATTRIBUTE_VALUE,
    MAY_NO_LONGER_BE_UPDATED,
    MISSING_ATTRIBUTE,
    MISSING_ATTRIBUTE_VALUE,
    PROCESSING_FAILURE,
)

CREATE_REQUIRED = (
    ("Modality", 1),
    ("PatientName", 2),
    ("PatientID", 2),
    ("PatientBirthDate", 2),
    ("StudyID", 2),
    ("PerformedStationAETitle", 1),
    ("PerformedProcedureStepStartDate", 1),
    ("PerformedProcedureStepStartTime", 1),
    ("PerformedProcedureStepEndDate", 2),
    ("PerformedProcedureStepEndTime", 2),
    ("PerformedProcedureStepStatus", 1),
    ("PerformedProcedureStepID", 1),
    ("ScheduledStepAttributesSequence", 1),
)
STEP_REQUIRED = (
    ("AccessionNumber", 2),
    ("StudyInstanceUID", 1),
    ("ScheduledProcedureStepID", 2),
    ("RequestedProcedureID", 2),
)
FINAL_REQUIRED = (("PerformedProcedureStepEndDate", 1), ("PerformedProcedureStepEndTime", 1))


@dataclass(frozen=True)
class Refusal:
    status: int
    comment: str
    error_id: int | None = None


def text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).replace("\x00", "").strip()


def _empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, list | tuple) or type(value).__name__ in ("Sequence", "MultiValue"):
        return len(value) == 0  # type: ignore[arg-type]
    return str(value).replace("\x00", "").strip() == ""


def _check(ds: Dataset, required: tuple[tuple[str, int], ...], where: str = "") -> Refusal | None:
    for keyword, type_ in required:
        if keyword not in ds:
            return Refusal(MISSING_ATTRIBUTE, f"{where}{keyword} missing")
        if type_ == 1 and _empty(ds[keyword].value):
            return Refusal(MISSING_ATTRIBUTE_VALUE, f"{where}{keyword} has no value")
    return None


def check_create(ds: Dataset, sop_uid: str) -> Refusal | None:
    """Why an N-CREATE is refused, or None."""
    if not sop_uid:
        return Refusal(MISSING_ATTRIBUTE_VALUE, "Affected SOP Instance UID missing: the SCU assigns it")
    found = _check(ds, CREATE_REQUIRED)
    if found is not None:
        return found
    for number, item in enumerate(ds.ScheduledStepAttributesSequence, start=1):
        found = _check(item, STEP_REQUIRED, f"Scheduled Step Attributes item {number} > ")
        if found is not None:
            return found
    status = text(ds, "PerformedProcedureStepStatus")
    if status != IN_PROGRESS:
        return Refusal(INVALID_ATTRIBUTE_VALUE, f"PPS Status {status!r} in N-CREATE (must be IN PROGRESS)")
    return None


def check_set(ds: Dataset, current_status: str) -> Refusal | None:
    """Why an N-SET on a step now in ``current_status`` is refused, or None."""
    if current_status in FINAL:
        return Refusal(
            PROCESSING_FAILURE, "Performed Procedure Step Object may no longer be updated", MAY_NO_LONGER_BE_UPDATED
        )
    found = _check(ds, (("PerformedProcedureStepStatus", 1),))
    if found is not None:
        return found
    status = text(ds, "PerformedProcedureStepStatus")
    if status not in STATUSES:
        return Refusal(
            INVALID_ATTRIBUTE_VALUE, f"PPS Status {status!r} is not {', '.join(STATUSES[:2])} or {STATUSES[2]}"
        )
    return _check(ds, FINAL_REQUIRED) if status in FINAL else None


def apply_set(state: Dataset, modifications: Dataset) -> Dataset:
    """The step after an N-SET: each attribute of the Modification List replaces the one held (a sequence as a
    whole); ``state`` is not changed."""
    merged = copy.deepcopy(state)
    for elem in modifications:
        merged[elem.tag] = copy.deepcopy(elem)
    return merged
