"""When each patient's stored objects were last used: the order in which cache mode evicts them.

Receiving an object, finding it by a query (C-FIND, QIDO-RS) and retrieving it (C-MOVE, C-GET, WADO-RS) count as
use. Each is noted in memory (a dictionary write under a lock: a stored object notes its study, a page of query
results the patients it holds), and ``flush`` writes the latest time per patient to ``patientuse`` before every
storage check, in one statement. So no use costs a database write of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from router.hooks.answers import InstanceRef
from router.hooks.specs import hookimpl
from router.store.tables import PATIENT_USE, STUDY
from router.store.writelock import WriteLock

CHUNK = 500


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or move forward each patient's ``used_at`` (never back)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(PATIENT_USE)
    stmt = stmt.on_conflict_do_update(
        index_elements=[PATIENT_USE.c.patient_fk],
        set_={"used_at": stmt.excluded.used_at},
        where=PATIENT_USE.c.used_at < stmt.excluded.used_at,
    )
    conn.execute(stmt, rows)


class UseRecorder:
    """Uses noted since the last flush: by study UID (receive, retrieve) and by patient row id (queries)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._studies: dict[str, float] = {}
        self._patients: dict[int, float] = {}

    def study(self, study_uid: str) -> None:
        now = time.time()
        with self._lock:
            self._studies[study_uid] = now

    def studies(self, study_uids: Iterable[str]) -> None:
        now = time.time()
        with self._lock:
            self._studies.update(dict.fromkeys(study_uids, now))

    def patients(self, patient_fks: Iterable[int]) -> None:
        now = time.time()
        with self._lock:
            self._patients.update(dict.fromkeys(patient_fks, now))

    def pending(self, patient_fk: int, study_uids: Iterable[str]) -> bool:
        """Whether a use of this patient (or one of its studies) is noted and not flushed yet."""
        with self._lock:
            return patient_fk in self._patients or any(uid in self._studies for uid in study_uids)

    def flush(self, engine: Engine, write_lock: WriteLock) -> int:
        """Write the noted uses; returns the number of patients whose time was written."""
        with self._lock:
            studies, self._studies = self._studies, {}
            by_patient, self._patients = self._patients, {}
        uids = sorted(studies)
        if uids:
            with engine.connect() as conn:
                for start in range(0, len(uids), CHUNK):
                    query = select(STUDY.c.study_uid, STUDY.c.patient_fk).where(
                        STUDY.c.study_uid.in_(uids[start : start + CHUNK])
                    )
                    for uid, fk in conn.execute(query):
                        by_patient[fk] = max(by_patient.get(fk, 0.0), studies[uid])
        if not by_patient:
            return 0
        rows = [{"patient_fk": fk, "used_at": datetime.fromtimestamp(t, UTC)} for fk, t in sorted(by_patient.items())]
        with write_lock, engine.begin() as conn:
            _upsert(conn, rows)
        return len(rows)


class RetrievedUse:
    """The plugin that notes a retrieve as a use: ``router_instances_exported`` names the studies sent."""

    def __init__(self, uses: UseRecorder) -> None:
        self.uses = uses

    @hookimpl
    def router_instances_exported(self, instances: list[InstanceRef]) -> None:
        self.uses.studies({ref.study_uid for ref in instances})
