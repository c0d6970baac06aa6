"""Evicting stored objects: whole patients, least recently used first (cache mode), or objects received longer ago
than ``storage.keep_days`` (any mode).

An object is never evicted while something may still need its file: a job that may still send it (pending,
inflight, committing, or dead: an operator can requeue a dead letter) or an open storage commitment transaction
of the router's (requesting, waiting). In cache mode a patient one of whose objects is so held is skipped whole,
and the skip is reported (``Kept``), as is a patient used while the check ran.

Each eviction is one transaction under the write lock (``router.store.pruning``): the rows go, the files after the
commit, and ``router_evicted`` announces what went (``announce``), logged with UIDs and counts only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pluggy
from sqlalchemy import Connection, bindparam, exists, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from router.hooks.calls import notify
from router.store.models import CommitState
from router.store.pruning import INSTANCE_ROWS, Pruned, prune, remove_files
from router.store.removal import NEEDS_FILE
from router.store.tables import COMMIT_ITEM, COMMIT_TRANSACTION, INSTANCE, JOB, PATIENT, PATIENT_USE, SERIES, STUDY
from router.store.uses import UseRecorder
from router.store.writelock import WriteLock

log = logging.getLogger(__name__)

OPEN_COMMITMENTS = (CommitState.REQUESTING, CommitState.WAITING)
REASONS = {"cache": "least recently used, above the high-water mark", "keep_days": "received before keep_days",
           "committed": "committed by a peer (delete_after_commit)"}  # fmt: skip

_PATIENT_SERIES = (
    select(SERIES.c.id, STUDY.c.id.label("study_id"), STUDY.c.study_uid)
    .select_from(STUDY.outerjoin(SERIES, SERIES.c.study_fk == STUDY.c.id))
    .where(STUDY.c.patient_fk == bindparam("fk"))
)
_JOB_HOLDS = (
    select(JOB.c.id, JOB.c.state, JOB.c.peer, JOB.c.sop_uid)
    .select_from(JOB.join(INSTANCE, JOB.c.sop_uid == INSTANCE.c.sop_uid)
                 .join(SERIES, INSTANCE.c.series_fk == SERIES.c.id).join(STUDY, SERIES.c.study_fk == STUDY.c.id))
    .where(STUDY.c.patient_fk == bindparam("fk"), JOB.c.state.in_(NEEDS_FILE))
    .order_by(JOB.c.id)
    .limit(1)
)  # fmt: skip
_COMMIT_HOLDS = (
    select(COMMIT_ITEM.c.sop_uid, COMMIT_TRANSACTION.c.transaction_uid, COMMIT_TRANSACTION.c.peer)
    .select_from(COMMIT_ITEM.join(COMMIT_TRANSACTION, COMMIT_ITEM.c.transaction_fk == COMMIT_TRANSACTION.c.id)
                 .join(INSTANCE, COMMIT_ITEM.c.sop_uid == INSTANCE.c.sop_uid)
                 .join(SERIES, INSTANCE.c.series_fk == SERIES.c.id).join(STUDY, SERIES.c.study_fk == STUDY.c.id))
    .where(STUDY.c.patient_fk == bindparam("fk"), COMMIT_TRANSACTION.c.state.in_(OPEN_COMMITMENTS))
    .order_by(COMMIT_ITEM.c.id)
    .limit(1)
)  # fmt: skip
_LRU = (
    select(PATIENT.c.id)
    .select_from(PATIENT.outerjoin(PATIENT_USE, PATIENT_USE.c.patient_fk == PATIENT.c.id))
    .where(exists().where(STUDY.c.patient_fk == PATIENT.c.id))
    .order_by(func.coalesce(PATIENT_USE.c.used_at, PATIENT.c.updated_at), PATIENT.c.id)
)
_NEEDED = exists().where(JOB.c.sop_uid == INSTANCE.c.sop_uid, JOB.c.state.in_(NEEDS_FILE))
_COMMITTING = exists(
    select(COMMIT_ITEM.c.id)
    .select_from(COMMIT_ITEM.join(COMMIT_TRANSACTION, COMMIT_ITEM.c.transaction_fk == COMMIT_TRANSACTION.c.id))
    .where(COMMIT_ITEM.c.sop_uid == INSTANCE.c.sop_uid, COMMIT_TRANSACTION.c.state.in_(OPEN_COMMITMENTS))
)
_OLD = INSTANCE_ROWS.where(INSTANCE.c.received_at < bindparam("cutoff"))
_OLD_FREE = _OLD.where(~_NEEDED, ~_COMMITTING).order_by(INSTANCE.c.received_at).limit(bindparam("batch"))
_OLD_HELD = (
    select(func.count())
    .select_from(INSTANCE)
    .where(INSTANCE.c.received_at < bindparam("cutoff"), _NEEDED | _COMMITTING)
)
RECEIVED_AT_INDEX = "CREATE INDEX IF NOT EXISTS ix_instance_received_at ON instance (received_at)"


@dataclass(frozen=True)
class Kept:
    """A least recently used patient that was not evicted, and why."""

    patient_fk: int
    studies: list[str]
    reason: str


def announce(pm: pluggy.PluginManager, reason: str, pruned: Pruned) -> None:
    """Log (UIDs and counts, never patient data) and announce ``router_evicted``."""
    removed = [s.study_uid for s in pruned.studies if s.removed]
    partly = [s.study_uid for s in pruned.studies if not s.removed]
    log.info(
        "evicted %d instance(s), %d byte(s) (%s): studies removed %s%s; %d patient(s) removed",
        pruned.instances, pruned.size, REASONS.get(reason, reason), ", ".join(removed) or "none",
        f", instances removed from {', '.join(partly)}" if partly else "", pruned.patients,
    )  # fmt: skip
    notify(pm, "router_evicted", reason=reason, studies=pruned.studies, patients=pruned.patients,
           instances=pruned.instances, size=pruned.size)  # fmt: skip


def _holder(conn: Connection, patient_fk: int) -> str | None:
    """Why one of the patient's objects must stay, or None."""
    job = conn.execute(_JOB_HOLDS, {"fk": patient_fk}).first()
    if job is not None:
        return f"job {job.id} ({job.state}, peer {job.peer}) may still send {job.sop_uid}"
    item = conn.execute(_COMMIT_HOLDS, {"fk": patient_fk}).first()
    if item is not None:
        return f"storage commitment {item.transaction_uid} of peer {item.peer} still covers {item.sop_uid}"
    return None


class Evictor:
    """Deletes what the storage keeper decided, one transaction per patient (or per batch of old objects).

    ``on_pruned`` is called under the write lock right after each commit (the usage meter counts there)."""

    def __init__(
        self,
        engine: Engine,
        data_dir: Path,
        write_lock: WriteLock,
        uses: UseRecorder,
        on_pruned: Callable[[Pruned], None],
    ) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.write_lock = write_lock
        self.uses = uses
        self.on_pruned = on_pruned

    def least_recently_used(self) -> list[int]:
        """Patients with stored studies, least recently used first (never used: by when their row changed)."""
        with self.engine.connect() as conn:
            return [int(fk) for fk in conn.execute(_LRU).scalars()]

    def evict_patient(self, patient_fk: int) -> Pruned | Kept:
        """Delete every stored object of the patient, or nothing (``Kept``: why)."""
        try:
            return self._locked(lambda conn: self._patient(conn, patient_fk))
        except IntegrityError as exc:  # PostgreSQL: an object of the patient was being stored meanwhile
            log.info("eviction of a patient rolled back, an object was stored meanwhile: %s", exc.orig)
            return Kept(patient_fk, [], "an object was stored while it was being evicted")

    def evict_old(self, cutoff: datetime, batch: int = 500) -> Pruned:
        """Delete up to ``batch`` objects received before ``cutoff`` that nothing needs, oldest first."""

        def old(conn: Connection) -> Pruned:
            return prune(conn, conn.execute(_OLD_FREE, {"cutoff": cutoff, "batch": batch}).all())

        try:
            found = self._locked(old)
        except IntegrityError as exc:
            log.info("eviction of old objects rolled back, an object was stored meanwhile: %s", exc.orig)
            return Pruned()
        assert isinstance(found, Pruned)
        return found

    def old_but_held(self, cutoff: datetime) -> int:
        """Objects received before ``cutoff`` that a job or a commitment still holds."""
        with self.engine.connect() as conn:
            return int(conn.execute(_OLD_HELD, {"cutoff": cutoff}).scalar_one())

    def _patient(self, conn: Connection, patient_fk: int) -> Pruned | Kept:
        shape = conn.execute(_PATIENT_SERIES, {"fk": patient_fk}).all()
        studies = sorted({str(s.study_uid) for s in shape if s.study_uid is not None})
        reason = _holder(conn, patient_fk)
        if reason is None and self.uses.pending(patient_fk, studies):
            reason = "used while the check ran"
        if reason is not None:
            return Kept(patient_fk, studies, reason)
        rows = conn.execute(INSTANCE_ROWS.where(STUDY.c.patient_fk == patient_fk)).all()
        series = {int(s.id) for s in shape if s.id is not None}  # empty ones too: left by older versions
        return prune(conn, rows, series=series, studies={int(s.study_id) for s in shape}, patients={patient_fk})

    def _locked(self, work: Callable[[Connection], Any]) -> Pruned | Kept:
        with self.write_lock:
            with self.engine.begin() as conn:
                done = work(conn)
            if isinstance(done, Pruned) and (done.instances or done.parents):
                if done.parents:
                    self.write_lock.bump()
                remove_files(self.data_dir, done.paths)
                self.on_pruned(done)
        return done
