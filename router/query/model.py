"""The Query/Retrieve information models (PS3.4 C.6) mapped onto the index tables.

Each attribute the router can match or return is an ``Attr``: the level it belongs to in the Patient Root
hierarchy, its VR, the index column holding its value and, when it differs, the column it is matched on (the
normalized form of a Person Name). Attributes the index derives (counts, Modalities in Study ...) have no column:
``find`` computes them per page of results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.store.tables import INSTANCE as INSTANCE_T
from router.store.tables import PATIENT as PATIENT_T
from router.store.tables import SERIES as SERIES_T
from router.store.tables import SERIES_REQUEST as REQUEST_T
from router.store.tables import STUDY as STUDY_T

PATIENT, STUDY, SERIES, IMAGE = "PATIENT", "STUDY", "SERIES", "IMAGE"
DEPTH = {PATIENT: 0, STUDY: 1, SERIES: 2, IMAGE: 3}
TABLE = {PATIENT: PATIENT_T, STUDY: STUDY_T, SERIES: SERIES_T, IMAGE: INSTANCE_T}
UNIQUE_KEY = {PATIENT: "PatientID", STUDY: "StudyInstanceUID", SERIES: "SeriesInstanceUID", IMAGE: "SOPInstanceUID"}


@dataclass(frozen=True)
class InfoModel:
    name: str
    levels: tuple[str, ...]

    def level_of(self, attr: Attr) -> str:
        """Where the attribute sits in this model: patient attributes are study attributes in Study Root."""
        return attr.level if attr.level in self.levels else self.levels[0]


PATIENT_ROOT = InfoModel("Patient Root", (PATIENT, STUDY, SERIES, IMAGE))
STUDY_ROOT = InfoModel("Study Root", (STUDY, SERIES, IMAGE))
PATIENT_STUDY_ONLY = InfoModel("Patient/Study Only", (PATIENT, STUDY))

FIND, MOVE, GET = "C-FIND", "C-MOVE", "C-GET"
SOP_CLASSES: dict[str, tuple[InfoModel, str]] = {
    "1.2.840.10008.5.1.4.1.2.1.1": (PATIENT_ROOT, FIND),
    "1.2.840.10008.5.1.4.1.2.1.2": (PATIENT_ROOT, MOVE),
    "1.2.840.10008.5.1.4.1.2.1.3": (PATIENT_ROOT, GET),
    "1.2.840.10008.5.1.4.1.2.2.1": (STUDY_ROOT, FIND),
    "1.2.840.10008.5.1.4.1.2.2.2": (STUDY_ROOT, MOVE),
    "1.2.840.10008.5.1.4.1.2.2.3": (STUDY_ROOT, GET),
    "1.2.840.10008.5.1.4.1.2.3.1": (PATIENT_STUDY_ONLY, FIND),
    "1.2.840.10008.5.1.4.1.2.3.2": (PATIENT_STUDY_ONLY, MOVE),
}


def sop_class_for(model: InfoModel, service: str) -> str:
    return next(uid for uid, (m, s) in SOP_CLASSES.items() if m == model and s == service)


@dataclass(frozen=True)
class Attr:
    keyword: str
    level: str
    vr: str
    column: Any = None  # the stored value; None for derived attributes
    match_column: Any = None  # matched on this column instead (PN: the normalized name)
    derived: str = ""  # how ``find`` computes it: "count-studies", "modalities" ...
    return_only: bool = False  # returned, never matched (treated as universal)

    @property
    def matchable(self) -> bool:
        if self.return_only:
            return False
        return self.column is not None or self.derived in MATCHABLE_DERIVED


MATCHABLE_DERIVED = {"modalities", "sop-classes"}

ATTRS: dict[str, Attr] = {
    a.keyword: a
    for a in (
        # patient
        Attr("PatientName", PATIENT, "PN", PATIENT_T.c.name, PATIENT_T.c.name_norm),
        Attr("PatientID", PATIENT, "LO", PATIENT_T.c.patient_id),
        Attr("IssuerOfPatientID", PATIENT, "LO", PATIENT_T.c.issuer),
        Attr("PatientBirthDate", PATIENT, "DA", PATIENT_T.c.birth_date),
        Attr("PatientSex", PATIENT, "CS", PATIENT_T.c.sex),
        Attr("NumberOfPatientRelatedStudies", PATIENT, "IS", derived="count-studies"),
        Attr("NumberOfPatientRelatedSeries", PATIENT, "IS", derived="count-series"),
        Attr("NumberOfPatientRelatedInstances", PATIENT, "IS", derived="count-instances"),
        # study
        Attr("StudyInstanceUID", STUDY, "UI", STUDY_T.c.study_uid),
        Attr("StudyDate", STUDY, "DA", STUDY_T.c.study_date),
        Attr("StudyTime", STUDY, "TM", STUDY_T.c.study_time),
        Attr("AccessionNumber", STUDY, "SH", STUDY_T.c.accession_number),
        Attr("StudyID", STUDY, "SH", STUDY_T.c.study_id),
        Attr("StudyDescription", STUDY, "LO", STUDY_T.c.description),
        Attr("ReferringPhysicianName", STUDY, "PN", STUDY_T.c.referring_physician, STUDY_T.c.referring_physician_norm),
        Attr("ModalitiesInStudy", STUDY, "CS", derived="modalities"),
        Attr("SOPClassesInStudy", STUDY, "UI", derived="sop-classes"),
        Attr("NumberOfStudyRelatedSeries", STUDY, "IS", derived="count-series"),
        Attr("NumberOfStudyRelatedInstances", STUDY, "IS", derived="count-instances"),
        # series
        Attr("SeriesInstanceUID", SERIES, "UI", SERIES_T.c.series_uid),
        Attr("Modality", SERIES, "CS", SERIES_T.c.modality),
        Attr("SeriesNumber", SERIES, "IS", SERIES_T.c.series_number),
        Attr("SeriesDescription", SERIES, "LO", SERIES_T.c.description),
        Attr("BodyPartExamined", SERIES, "CS", SERIES_T.c.body_part),
        Attr("PerformedProcedureStepStartDate", SERIES, "DA", SERIES_T.c.pps_start_date),
        Attr("PerformedProcedureStepStartTime", SERIES, "TM", SERIES_T.c.pps_start_time),
        Attr("NumberOfSeriesRelatedInstances", SERIES, "IS", derived="count-instances"),
        Attr("RequestAttributesSequence", SERIES, "SQ", derived="requests"),
        # image
        Attr("SOPInstanceUID", IMAGE, "UI", INSTANCE_T.c.sop_uid),
        Attr("SOPClassUID", IMAGE, "UI", INSTANCE_T.c.sop_class_uid),
        Attr("InstanceNumber", IMAGE, "IS", INSTANCE_T.c.instance_number),
        Attr("ImageType", IMAGE, "CS", INSTANCE_T.c.image_type, return_only=True),  # multi-valued: no sense in matching
        Attr("NumberOfFrames", IMAGE, "IS", INSTANCE_T.c.number_of_frames),
    )
}

# Request Attributes Sequence item keys -> SeriesRequest columns (sequence matching, one item deep)
REQUEST_ITEM: dict[str, tuple[str, Any]] = {
    "RequestedProcedureID": ("SH", REQUEST_T.c.requested_procedure_id),
    "ScheduledProcedureStepID": ("SH", REQUEST_T.c.scheduled_procedure_step_id),
    "AccessionNumber": ("SH", REQUEST_T.c.accession_number),
    "RequestedProcedureDescription": ("LO", REQUEST_T.c.requested_procedure_description),
    "ScheduledProcedureStepDescription": ("LO", REQUEST_T.c.scheduled_procedure_step_description),
}

# Date and Time keys matched as one date-time range when combined matching is negotiated
DATE_TIME_PAIRS = (
    ("StudyDate", "StudyTime"),
    ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
)

# Keys that are not attributes of an entity: never matched, handled by the service
CONTROL_KEYWORDS = frozenset(
    {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability", "TimezoneOffsetFromUTC"}
)
