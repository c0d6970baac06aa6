"""Deleting stored instances from the index, with the series, studies and patients they leave empty.

``prune`` runs inside the caller's transaction, under the write lock: the instance rows go, then every series,
study and patient row left without children, and the paths of the files are recorded in ``removedfile`` in the
same transaction. After the commit the caller bumps the lock's generation (cached ids of deleted rows must not be
used again) and removes the files (``remove_files``). ``sweep_removed``, at start-up and at each storage check,
clears the ``removedfile`` rows; a file one names that is still there (a crash came between the commit and the
removal) is removed then, unless its path was indexed again or a job may still send it. Rows first, files second:
the index never names a file that is gone.

A patient row stays while the HL7 feed's record of the patient refers to it (worklist items, identifiers, details):
it is not empty, and a Q/R query does not show a patient without studies.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, exists, insert, select
from sqlalchemy.engine import Engine

from router import storage
from router.outbox.orphans import drop_orphans
from router.store.models import utcnow
from router.store.tables import (
    INSTANCE,
    PATIENT,
    PATIENT_DETAILS,
    PATIENT_IDENTIFIER,
    PATIENT_USE,
    REMOVED_FILE,
    SERIES,
    SERIES_REQUEST,
    STUDY,
    WORKLIST_ITEM,
)
from router.store.writelock import WriteLock

CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class EvictedStudy:
    """A study some instances of which were deleted (``router_evicted``)."""

    study_uid: str
    patient_id: str
    issuer: str
    instances: int  # deleted from this study
    removed: bool  # the study's row went too: nothing of it is stored any more


@dataclass
class Pruned:
    """What one ``prune`` deleted."""

    studies: list[EvictedStudy] = field(default_factory=list)
    instances: int = 0
    size: int = 0
    patients: int = 0  # patient rows deleted
    parents: int = 0  # series, study and patient rows deleted: cached ids to forget
    paths: list[tuple[str, str]] = field(default_factory=list)  # (relpath, sop_uid) of the files to remove


# instances with what the pruning and the announcement need, joined up to their patient
INSTANCE_ROWS = (
    select(INSTANCE.c.id, INSTANCE.c.sop_uid, INSTANCE.c.path, INSTANCE.c.size, INSTANCE.c.series_fk,
           SERIES.c.study_fk, STUDY.c.study_uid, STUDY.c.patient_fk, PATIENT.c.patient_id, PATIENT.c.issuer)
    .select_from(INSTANCE.join(SERIES, INSTANCE.c.series_fk == SERIES.c.id)
                 .join(STUDY, SERIES.c.study_fk == STUDY.c.id).join(PATIENT, STUDY.c.patient_fk == PATIENT.c.id))
)  # fmt: skip


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start : start + CHUNK])


def _empty(conn: Connection, table: Any, ids: set[int], child_fk: Any) -> list[int]:
    """Those of ``ids`` (rows of ``table``) that no row refers to through ``child_fk``."""
    found: list[int] = []
    for chunk in _chunks(sorted(ids)):
        query = select(table.c.id).where(table.c.id.in_(chunk), ~exists().where(child_fk == table.c.id))
        found += [int(i) for i in conn.execute(query).scalars()]
    return found


def _delete(conn: Connection, table: Any, column: Any, ids: Sequence[int]) -> None:
    for chunk in _chunks(ids):
        conn.execute(delete(table).where(column.in_(chunk)))


def _empty_patients(conn: Connection, ids: set[int]) -> list[int]:
    """Patients without studies, and without what the HL7 feed keeps of them."""
    found = set(_empty(conn, PATIENT, ids, STUDY.c.patient_fk))
    for fk in (WORKLIST_ITEM.c.patient_fk, PATIENT_IDENTIFIER.c.patient_fk, PATIENT_DETAILS.c.patient_fk):
        found -= {
            int(i) for chunk in _chunks(sorted(found)) for i in conn.execute(select(fk).where(fk.in_(chunk))).scalars()
        }
    return sorted(found)


def prune(
    conn: Connection,
    rows: Sequence[Any],
    *,
    series: Iterable[int] = (),
    studies: Iterable[int] = (),
    patients: Iterable[int] = (),
) -> Pruned:
    """Delete the instances of ``rows`` (``INSTANCE_ROWS`` rows) and the parents they leave empty, and record their
    files in ``removedfile``; ``series``, ``studies`` and ``patients`` are more parents to delete when empty.
    Inside the caller's transaction."""
    out = Pruned(instances=len(rows), size=sum(int(r.size) for r in rows))
    _delete(conn, INSTANCE, INSTANCE.c.id, [r.id for r in rows])
    empty_series = _empty(conn, SERIES, {*series, *(r.series_fk for r in rows)}, INSTANCE.c.series_fk)
    _delete(conn, SERIES_REQUEST, SERIES_REQUEST.c.series_fk, empty_series)
    _delete(conn, SERIES, SERIES.c.id, empty_series)
    empty_studies = set(_empty(conn, STUDY, {*studies, *(r.study_fk for r in rows)}, SERIES.c.study_fk))
    _delete(conn, STUDY, STUDY.c.id, sorted(empty_studies))
    empty_patients = _empty_patients(conn, {*patients, *(r.patient_fk for r in rows)})
    _delete(conn, PATIENT_USE, PATIENT_USE.c.patient_fk, empty_patients)
    _delete(conn, PATIENT, PATIENT.c.id, empty_patients)
    out.patients = len(empty_patients)
    out.parents = len(empty_series) + len(empty_studies) + len(empty_patients)
    by_study: dict[int, list[Any]] = {}
    for r in rows:
        by_study.setdefault(r.study_fk, []).append(r)
    out.studies = [EvictedStudy(group[0].study_uid, group[0].patient_id, group[0].issuer, len(group),
                                fk in empty_studies) for fk, group in by_study.items()]  # fmt: skip
    out.paths = [(str(r.path), str(r.sop_uid)) for r in rows]
    if out.paths:
        now = utcnow()
        conn.execute(insert(REMOVED_FILE), [{"path": p, "sop_uid": uid, "removed_at": now} for p, uid in out.paths])
    return out


def remove_files(data_dir: Path, paths: Iterable[tuple[str, str]], folders_too: bool = True) -> None:
    """Remove the files of pruned instances, and (``folders_too``) their series and study folders once empty.
    Under the write lock (an instance stored again meanwhile would get the same path). An ingest creates the
    folders under its write lock: remove folders only under a lock every ingest holds too (the serving process's,
    or one shared by every process)."""
    folders: set[Path] = set()
    for relpath, _uid in paths:
        path = data_dir / relpath
        storage.at(data_dir).delete(relpath)
        folders.add(path.parent)
    if not folders_too:
        return
    objects = data_dir / "objects"
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        for empty in (folder, folder.parent):
            if empty != objects and objects in empty.parents:
                with contextlib.suppress(OSError):  # not empty, or gone: either is fine
                    os.rmdir(empty)


def sweep_removed(engine: Engine, data_dir: Path, write_lock: WriteLock, batch: int = 5000) -> int:
    """Handle the ``removedfile`` rows: a file that is still there (a crash came between a prune's commit and its
    file removals) is removed unless its path is indexed again or a job may still send it; then the rows go.
    Returns how many rows were handled."""
    handled = 0
    while True:
        with write_lock:
            with engine.connect() as conn:
                rows = conn.execute(select(REMOVED_FILE).order_by(REMOVED_FILE.c.id).limit(batch)).all()
            if not rows:
                return handled
            left = [(r.path, r.sop_uid) for r in rows if storage.at(data_dir).exists(r.path)]
            remove_files(data_dir, [(p, "") for p in drop_orphans(engine, data_dir, left)])
            with engine.begin() as conn:
                _delete(conn, REMOVED_FILE, REMOVED_FILE.c.id, [r.id for r in rows])
        handled += len(rows)
