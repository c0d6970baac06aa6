"""Modality Worklist C-FIND (PS3.4 K.6): answering a query from the worklist items HL7 orders made.

Matching keys: Patient's Name (wildcards, case- and accent-insensitive), Patient ID (the MRN or any identifier
the hospital system gave, restricted by Issuer of Patient ID when given), Patient's Birth Date (single value or
range), Patient's Sex, Accession Number, Requested Procedure ID and, inside the Scheduled Procedure Step
Sequence, Modality, Scheduled Station AE Title, Scheduled Procedure Step Start Date and Time (one combined
date-time range, shifted by the request's Timezone Offset From UTC) and Scheduled Procedure Step Status.
Only active steps (SCHEDULED, ARRIVED, READY, IN PROGRESS) are on the worklist.

Every attribute the request asks for is returned: with its value when the item has one, zero-length otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import case, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from router.config import RouterConfig
from router.hl7.coding import dicom_coding_scheme
from router.logs import database_error, redact
from router.store.models import SpsStatus
from router.store.tables import PATIENT as P
from router.store.tables import PATIENT_DETAILS as D
from router.store.tables import PATIENT_IDENTIFIER as I
from router.store.tables import WORKLIST_ITEM as W
from router.worklist.matching import (
    KEY_FORMAT,
    MatchError,
    date_matches,
    datetime_interval,
    has_wildcard,
    is_universal,
    name_matches,
    parse_offset,
    text_matches,
    time_only,
    time_only_matches,
)

log = logging.getLogger(__name__)

MWL_FIND = "1.2.840.10008.5.1.4.31"
PENDING, PENDING_WARNING, SUCCESS, CANCEL = 0xFF00, 0xFF01, 0x0000, 0xFE00
IDENTIFIER_MISMATCH, OUT_OF_RESOURCES, UNABLE_TO_PROCESS = 0xA900, 0xA700, 0xC000


SPS = "ScheduledProcedureStepSequence"
ACTIVE = list(SpsStatus.ACTIVE)


def _code_sequence(value: str, scheme: str, meaning: str) -> Sequence:
    if not value:
        return Sequence()
    item = Dataset()
    # rows written before HL7 coding systems were mapped may hold HL7's (e.g. L): DICOM defines no such designator
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, dicom_coding_scheme(scheme), meaning
    return Sequence([item])


# keyword -> value from a result row (patient, details and worklist columns)
TOP_LEVEL: dict[str, Callable[[Any], Any]] = {
    "PatientName": lambda r: r.name,
    "PatientID": lambda r: r.patient_id,
    "IssuerOfPatientID": lambda r: r.issuer,
    "PatientBirthDate": lambda r: r.birth_date,
    "PatientSex": lambda r: r.sex,
    "PatientWeight": lambda r: r.weight or None,
    "MedicalAlerts": lambda r: r.medical_alerts or r.allergies,
    "Allergies": lambda r: r.allergies,
    "PregnancyStatus": lambda r: r.pregnancy_status,
    "PatientComments": lambda r: r.comments,
    "AdmissionID": lambda r: r.admission_id,
    "CurrentPatientLocation": lambda r: r.current_location,
    "AccessionNumber": lambda r: r.accession_number,
    "ReferringPhysicianName": lambda r: r.referring_physician,
    "RequestingPhysician": lambda r: r.requesting_physician,
    "RequestedProcedureID": lambda r: r.requested_procedure_id,
    "RequestedProcedureDescription": lambda r: r.requested_procedure_description,
    "RequestedProcedureCodeSequence": lambda r: _code_sequence(
        r.procedure_code_value, r.procedure_code_scheme, r.procedure_code_meaning
    ),
    "StudyInstanceUID": lambda r: r.study_uid,
    "RequestedProcedurePriority": lambda r: r.priority,
    "ReasonForTheRequestedProcedure": lambda r: r.reason,
    "PlacerOrderNumberImagingServiceRequest": lambda r: r.placer_order,
    "FillerOrderNumberImagingServiceRequest": lambda r: r.filler_order,
    "ReferencedStudySequence": lambda r: Sequence(),
    "ReferencedPatientSequence": lambda r: Sequence(),
}
STEP: dict[str, Callable[[Any], Any]] = {
    "Modality": lambda r: r.modality,
    "ScheduledStationAETitle": lambda r: r.station_ae,
    "ScheduledProcedureStepStartDate": lambda r: r.sps_start_date,
    "ScheduledProcedureStepStartTime": lambda r: r.sps_start_time,
    "ScheduledPerformingPhysicianName": lambda r: r.performing_physician,
    "ScheduledProcedureStepDescription": lambda r: r.sps_description,
    "ScheduledProcedureStepID": lambda r: r.sps_id,
    "ScheduledStationName": lambda r: r.station_name,
    "ScheduledProcedureStepLocation": lambda r: r.location,
    "ScheduledProcedureStepStatus": lambda r: sps_status(r.status),
    "ScheduledProtocolCodeSequence": lambda r: Sequence(),
}


def sps_status(status: str) -> str:
    """The router's step status as a PS3.3 C.4-10 defined term (SCHEDULED, ARRIVED, READY, STARTED)."""
    return "STARTED" if status == SpsStatus.IN_PROGRESS else status


def _text(ds: Dataset, keyword: str) -> str:
    elem = ds.data_element(keyword) if keyword in ds else None
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


class Query:
    """One C-FIND identifier, validated and turned into SQL conditions plus Python filters."""

    def __init__(self, identifier: Dataset, stored_offset: timedelta) -> None:
        self.identifier = identifier
        if SPS in identifier and not isinstance(identifier[SPS].value, Sequence | list):
            raise MatchError("Scheduled Procedure Step Sequence is not a sequence")
        items = list(identifier[SPS].value) if SPS in identifier else []
        if len(items) > 1:
            raise MatchError("Scheduled Procedure Step Sequence in a query holds at most one item")
        self.step = items[0] if items else Dataset()
        tz = _text(identifier, "TimezoneOffsetFromUTC")
        # the client's clock minus ours: add it to our times to answer in the client's zone
        self.shift = (parse_offset(tz) - stored_offset) if tz else timedelta(0)
        self.interval = datetime_interval(
            _text(self.step, "ScheduledProcedureStepStartDate"), _text(self.step, "ScheduledProcedureStepStartTime")
        )
        if self.interval is not None:
            self.interval = self.interval.shifted(-self.shift)
        start_time = _text(self.step, "ScheduledProcedureStepStartTime")
        self.time_only = time_only(start_time) if self.interval is None and not is_universal(start_time) else None
        birth = _text(identifier, "PatientBirthDate")
        if birth:
            date_matches(birth, "19000101")  # validates the value now: a bad one is the identifier's fault

    def sql(self) -> Any:
        start_key = W.c.sps_start_date + case((W.c.sps_start_time == "", "000000"), else_=W.c.sps_start_time)
        query = (
            select(W, P.c.name, P.c.patient_id, P.c.issuer, P.c.birth_date, P.c.sex,
                   D.c.weight, D.c.medical_alerts, D.c.allergies, D.c.pregnancy_status, D.c.admission_id,
                   D.c.current_location, D.c.comments)
            .join(P, P.c.id == W.c.patient_fk)
            .outerjoin(D, D.c.patient_fk == W.c.patient_fk)
            .where(W.c.status.in_(ACTIVE))
            .order_by(W.c.sps_start_date, W.c.sps_start_time, W.c.id)
        )  # fmt: skip
        if self.interval is not None:
            if self.interval.lo is not None:
                query = query.where(start_key >= self.interval.lo)
            if self.interval.hi is not None:
                query = query.where(start_key <= self.interval.hi)
        for column, value in (
            (W.c.accession_number, _text(self.identifier, "AccessionNumber")),
            (W.c.requested_procedure_id, _text(self.identifier, "RequestedProcedureID")),
            (W.c.modality, _text(self.step, "Modality")),
            (W.c.station_ae, _text(self.step, "ScheduledStationAETitle")),
        ):
            if not is_universal(value) and not has_wildcard(value) and "\\" not in value:
                query = query.where(column == value)
        pid = _text(self.identifier, "PatientID")
        if not is_universal(pid) and not has_wildcard(pid):
            issuer = _text(self.identifier, "IssuerOfPatientID")
            by_identifier = select(I.c.patient_fk).where(I.c.value == pid)
            if issuer:
                by_identifier = by_identifier.where((I.c.authority == issuer) | (I.c.authority_uid == issuer))
                query = query.where(
                    ((P.c.patient_id == pid) & (P.c.issuer == issuer)) | W.c.patient_fk.in_(by_identifier)
                )
            else:
                query = query.where((P.c.patient_id == pid) | W.c.patient_fk.in_(by_identifier))
        return query

    def accepts(self, row: Any) -> bool:
        """The matching SQL cannot do: names, wildcards, lists, sex, birth date, status, time-only ranges."""
        ident, step = self.identifier, self.step
        if not name_matches(_text(ident, "PatientName"), row.name):
            return False
        for value, stored in (
            (_text(ident, "PatientID"), row.patient_id),
            (_text(ident, "PatientSex"), row.sex),
            (_text(ident, "AccessionNumber"), row.accession_number),
            (_text(ident, "RequestedProcedureID"), row.requested_procedure_id),
            (_text(step, "Modality"), row.modality),
            (_text(step, "ScheduledStationAETitle"), row.station_ae),
            (_text(step, "ScheduledProcedureStepStatus"), sps_status(row.status)),
        ):
            if is_universal(value) or (value == _text(ident, "PatientID") and not has_wildcard(value)):
                continue  # Patient ID single values were matched in SQL against every identifier
            if not any(text_matches(v, stored, fold_case=False) for v in value.split("\\")):
                return False
        birth = _text(ident, "PatientBirthDate")
        if birth and not date_matches(birth, row.birth_date):
            return False
        if self.time_only is not None:
            when = (datetime.strptime(row.sps_start_date + (row.sps_start_time or "000000"), KEY_FORMAT)
                    + self.shift).strftime("%H%M%S")  # fmt: skip
            if not time_only_matches(self.time_only, when):
                return False
        return True

    def answer(self, row: Any) -> Dataset:
        out = Dataset()
        for elem in self.identifier:
            keyword = elem.keyword
            if keyword in ("SpecificCharacterSet", "TimezoneOffsetFromUTC") or elem.tag.is_private:
                continue
            if keyword == SPS:
                out.ScheduledProcedureStepSequence = Sequence([self._step(row)])
            else:
                _put(out, elem, TOP_LEVEL.get(keyword), row)
        return out

    def _step(self, row: Any) -> Dataset:
        item = Dataset()
        asked = list(self.step) if len(self.step) else [DataElement(_tag(k), _vr(k), None) for k in STEP]
        for elem in asked:
            if elem.tag.is_private:
                continue
            _put(item, elem, STEP.get(elem.keyword), row)
        if self.shift and ("ScheduledProcedureStepStartDate" in item or "ScheduledProcedureStepStartTime" in item):
            when = datetime.strptime(row.sps_start_date + (row.sps_start_time or "000000"), KEY_FORMAT) + self.shift
            if "ScheduledProcedureStepStartDate" in item:
                item.ScheduledProcedureStepStartDate = when.strftime("%Y%m%d")
            if "ScheduledProcedureStepStartTime" in item and row.sps_start_time:
                item.ScheduledProcedureStepStartTime = when.strftime("%H%M%S")
        return item


def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None
    return tag


def _vr(keyword: str) -> str:
    from pydicom.datadict import dictionary_VR

    return str(dictionary_VR(_tag(keyword)))


def _put(out: Dataset, asked: DataElement, getter: Callable[[Any], Any] | None, row: Any) -> None:
    value = getter(row) if getter is not None else None
    vr = asked.VR if asked.VR not in ("UN", None) else _vr(asked.keyword) if asked.keyword else "UN"
    if vr == "SQ":
        out.add_new(asked.tag, "SQ", value if isinstance(value, Sequence) else Sequence())
        return
    out.add_new(asked.tag, vr, value if value not in ("", None) else None)


def response_charset(requested: list[str], answers: list[Dataset]) -> str | list[str] | None:
    """ISO_IR 100 when the text fits Latin-1 (or as the request asked), ISO_IR 192 (UTF-8) when it does not."""
    texts = [str(e.value) for ds in answers for e in ds.iterall() if isinstance(e.value, str) or e.VR == "PN"]
    if all(t.isascii() for t in texts):
        return requested or None
    if requested and any("192" in r for r in requested):
        return "ISO_IR 192"
    try:
        for t in texts:
            t.encode("latin-1")
        return "ISO_IR 100"
    except UnicodeEncodeError:
        return "ISO_IR 192"


class WorklistService:
    def __init__(self, config: RouterConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine

    def stored_offset(self) -> timedelta:
        configured = self.config.hl7.worklist.utc_offset
        if configured:
            return parse_offset(configured)
        return datetime.now().astimezone().utcoffset() or timedelta(0)

    def find(self, identifier: Dataset, cancelled: Callable[[], bool]) -> Iterator[tuple[int, Dataset | None]]:
        """C-FIND responses: (status, identifier) pairs, pending per match then the final status."""
        try:
            query = Query(identifier, self.stored_offset())
        except (MatchError, ValueError, TypeError, KeyError) as exc:
            log.warning("worklist query refused: %s", redact(exc))
            yield IDENTIFIER_MISMATCH, None
            return
        requested = [str(v) for v in _values(identifier, "SpecificCharacterSet")]
        matches = 0
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(yield_per=200).execute(query.sql())
                for row in result:
                    if cancelled():
                        yield CANCEL, None
                        return
                    if not query.accepts(row):
                        continue
                    answer = query.answer(row)
                    charset = response_charset(requested, [answer])
                    if charset:
                        answer.SpecificCharacterSet = charset
                    matches += 1
                    yield PENDING, answer
        except SQLAlchemyError as exc:
            log.error("worklist query failed: %s", database_error(exc))
            yield OUT_OF_RESOURCES, None
            return
        except (MatchError, ValueError) as exc:
            log.warning("worklist query refused: %s", redact(exc))
            yield UNABLE_TO_PROCESS, None
            return
        log.info("worklist query: %d match(es)", matches)
        yield SUCCESS, None


def _values(ds: Dataset, keyword: str) -> list[Any]:
    if keyword not in ds or ds[keyword].value is None:
        return []
    value = ds[keyword].value
    return list(value) if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
