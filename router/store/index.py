"""Writing the index: one object's patient, study, series and instance rows.

This is the hot path of every C-STORE, so it uses SQLAlchemy Core statements and remembers the ids of
patients, studies and series it has seen (``IdCache``). The cache is filled only after a commit succeeded, so a
rolled-back insert never leaves a stale id behind.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Connection, bindparam, insert, select, update

from router.intake.envelope import HeaderValues, dataset_text
from router.query.matching import normalize_name
from router.store.models import utcnow
from router.store.rawsql import insert_columns, raw
from router.store.tables import INSTANCE, PATIENT, SERIES, SERIES_REQUEST, STUDY
from router.store.writelock import WriteLock

# Built once. The lookup and the instance insert run raw (router.store.rawsql), compiled once per dialect; the
# patient, study and series statements (a cache miss, once per series) go through SQLAlchemy.
FIND_INSTANCE = select(INSTANCE.c.id, INSTANCE.c.sha256, INSTANCE.c.path, INSTANCE.c.size).where(
    INSTANCE.c.sop_uid == bindparam("sop_uid")
)
INSERT_INSTANCE = insert(INSTANCE)
INSTANCE_KEYS = insert_columns(INSTANCE)  # what ``index_instance`` inserts
_INSERT = {id(t): insert(t) for t in (PATIENT, STUDY, SERIES, SERIES_REQUEST)}


def date_text(values: HeaderValues, keyword: str) -> str:
    """A DA value as ``YYYYMMDD`` (ACR-NEMA ``YYYY.MM.DD`` without its dots), so range matching compares strings."""
    return values.text(keyword, 64).replace(".", "")[:8]


def time_text(values: HeaderValues, keyword: str) -> str:
    """A TM value without ACR-NEMA ``hh:mm:ss`` colons, so range matching compares strings."""
    return values.text(keyword, 64).replace(":", "")[:16]


def request_items(ds: Dataset) -> list[dict[str, str]]:
    """The Request Attributes Sequence items, as ``SeriesRequest`` values (without the series)."""
    elem = ds.data_element("RequestAttributesSequence") if "RequestAttributesSequence" in ds else None
    if elem is None or elem.VR != "SQ" or not elem.value:
        return []
    return [
        {
            "requested_procedure_id": dataset_text(item, "RequestedProcedureID", 16),
            "scheduled_procedure_step_id": dataset_text(item, "ScheduledProcedureStepID", 16),
            "accession_number": dataset_text(item, "AccessionNumber", 16),
            "requested_procedure_description": dataset_text(item, "RequestedProcedureDescription", 64),
            "scheduled_procedure_step_description": dataset_text(item, "ScheduledProcedureStepDescription", 64),
        }
        for item in elem.value
    ]


@dataclass(frozen=True)
class StoredInstance:
    id: int
    sha256: str
    path: str
    size: int


class IdCache:
    """Ids of rows known to be committed, keyed by their natural keys; bounded (least recently used out).

    With ``write_lock``, read under it: a new generation of the lock (patient, study or series rows were deleted,
    in this process or another) empties the cache first."""

    def __init__(self, size: int = 20000, write_lock: WriteLock | None = None) -> None:
        self._size = size
        self._ids: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._lock = threading.Lock()
        self._write_lock = write_lock
        self._generation = write_lock.generation if write_lock is not None else 0

    def get(self, key: tuple[str, ...]) -> int | None:
        with self._lock:
            if self._write_lock is not None and self._write_lock.generation != self._generation:
                self._ids.clear()
                self._generation = self._write_lock.generation
            found = self._ids.get(key)
            if found is not None:
                self._ids.move_to_end(key)
            return found

    def clear(self) -> None:
        """Forget everything (rows were merged or deleted behind the cache's back)."""
        with self._lock:
            self._ids.clear()

    def remember(self, entries: dict[tuple[str, ...], int]) -> None:
        with self._lock:
            self._ids.update(entries)
            while len(self._ids) > self._size:
                self._ids.popitem(last=False)


NewIds = dict[tuple[str, ...], int]  # ids one write created: for ``IdCache.remember`` once it committed


def find_instance(conn: Connection, sop_uid: str) -> StoredInstance | None:
    row = raw(FIND_INSTANCE, conn).execute(conn, {"sop_uid": sop_uid})
    return StoredInstance(*row) if row is not None else None


def _get_or_insert(
    conn: Connection,
    cache: IdCache,
    new_ids: NewIds,
    key: tuple[str, ...],
    table: Any,
    where: Callable[[], Any],
    values: Callable[[], dict[str, Any]],
) -> tuple[int, bool]:
    """The row's id, and whether this call inserted it. ``where`` and ``values`` are only built on a cache miss:
    most objects belong to a patient, study and series seen just before."""
    cached = cache.get(key)
    if cached is not None:
        return cached, False
    found = conn.execute(select(table.c.id).where(where())).scalar()
    inserted = found is None
    if found is None:
        found = conn.execute(_INSERT[id(table)].returning(table.c.id), values()).scalar_one()
    new_ids[key] = int(found)
    return int(found), inserted


def _patient_row(values: HeaderValues) -> dict[str, Any]:
    text = values.text
    name = text("PatientName")
    return {"patient_id": text("PatientID", 64), "issuer": text("IssuerOfPatientID", 64), "name": name,
            "name_norm": normalize_name(name)[:324], "birth_date": date_text(values, "PatientBirthDate"),
            "sex": text("PatientSex", 16), "updated_at": utcnow()}  # fmt: skip


def _study_row(values: HeaderValues, patient_fk: int) -> dict[str, Any]:
    text = values.text
    referring = text("ReferringPhysicianName")
    return {"study_uid": text("StudyInstanceUID", 64), "patient_fk": patient_fk,
            "study_date": date_text(values, "StudyDate"), "study_time": time_text(values, "StudyTime"),
            "accession_number": text("AccessionNumber", 16), "study_id": text("StudyID", 16),
            "description": text("StudyDescription", 64), "referring_physician": referring,
            "referring_physician_norm": normalize_name(referring)[:324], "updated_at": utcnow()}  # fmt: skip


def _series_row(values: HeaderValues, study_fk: int) -> dict[str, Any]:
    text = values.text
    return {"series_uid": text("SeriesInstanceUID", 64), "study_fk": study_fk, "modality": text("Modality", 16),
            "series_number": text("SeriesNumber", 12), "description": text("SeriesDescription", 64),
            "body_part": text("BodyPartExamined", 16),
            "pps_start_date": date_text(values, "PerformedProcedureStepStartDate"),
            "pps_start_time": time_text(values, "PerformedProcedureStepStartTime")}  # fmt: skip


def index_instance(
    conn: Connection,
    cache: IdCache,
    values: HeaderValues,
    *,
    relpath: str,
    size: int,
    digest: str,
    transfer_syntax: str,
    calling_ae: str,
    existing: StoredInstance | None,
) -> NewIds:
    """Add (or, for an overwrite, update) the rows for one object. The caller commits. Only a new patient, study
    or series reads more than the few values every instance row needs."""
    text = values.text
    new_ids: NewIds = {}
    pid, issuer = text("PatientID", 64), text("IssuerOfPatientID", 64)
    patient_id, _ = _get_or_insert(
        conn, cache, new_ids, ("patient", pid, issuer), PATIENT,
        lambda: (PATIENT.c.patient_id == pid) & (PATIENT.c.issuer == issuer), lambda: _patient_row(values),
    )  # fmt: skip
    study_uid = text("StudyInstanceUID", 64)
    study_id, _ = _get_or_insert(
        conn, cache, new_ids, ("study", study_uid), STUDY,
        lambda: STUDY.c.study_uid == study_uid, lambda: _study_row(values, patient_id),
    )  # fmt: skip
    series_uid = text("SeriesInstanceUID", 64)
    series_id, new_series = _get_or_insert(
        conn, cache, new_ids, ("series", series_uid), SERIES,
        lambda: SERIES.c.series_uid == series_uid, lambda: _series_row(values, study_id),
    )  # fmt: skip
    if new_series and (requests := request_items(values.dataset)):
        conn.execute(_INSERT[id(SERIES_REQUEST)], [{"series_fk": series_id, **item} for item in requests])
    row = {
        "sop_class_uid": text("SOPClassUID", 64),
        "series_fk": series_id,
        "instance_number": text("InstanceNumber", 12),
        "image_type": text("ImageType", 128),
        "number_of_frames": text("NumberOfFrames", 12),
        "transfer_syntax": transfer_syntax,
        "path": relpath,
        "size": size,
        "sha256": digest,
        "calling_ae": calling_ae,
        "received_at": utcnow(),
    }
    if existing is None:
        raw(INSERT_INSTANCE, conn, INSTANCE_KEYS).execute(conn, {"sop_uid": text("SOPInstanceUID", 64), **row})
    else:
        conn.execute(update(INSTANCE).where(INSTANCE.c.id == existing.id).values(**row))
    return new_ids
