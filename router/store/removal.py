"""Removing a stored instance once a peer has taken responsibility for it (``delete_after_commit``)."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from router.store import files
from router.store.models import JobState
from router.store.tables import INSTANCE, JOB
from router.store.writelock import WriteLock

log = logging.getLogger(__name__)

# a job in one of these states may still need the stored file (dead jobs can be requeued)
NEEDS_FILE = (JobState.PENDING, JobState.INFLIGHT, JobState.COMMITTING, JobState.DEAD)


def remove_instance(engine: Engine, data_dir: Path, write_lock: WriteLock, sop_uid: str) -> bool:
    """Delete the instance's index row and file, unless a job (for any peer) may still send it.

    Patient, study and series rows stay: other instances, the worklist and cached ids of the ingest refer to
    them. Runs under the ingest's write lock, so a re-send of the same instance being stored is not undone."""
    with write_lock, engine.begin() as conn:
        busy = conn.execute(
            select(JOB.c.id).where(JOB.c.sop_uid == sop_uid, JOB.c.state.in_(NEEDS_FILE)).limit(1)
        ).first()
        if busy is not None:
            log.info("%s committed, local copy kept: job %d may still send it", sop_uid, busy.id)
            return False
        row = conn.execute(select(INSTANCE.c.id, INSTANCE.c.path).where(INSTANCE.c.sop_uid == sop_uid)).first()
        if row is None:
            return False
        conn.execute(delete(INSTANCE).where(INSTANCE.c.id == row.id))
    files.remove_quietly(data_dir / row.path)
    log.info("%s committed by its peer: local copy removed", sop_uid)
    return True
