"""Removing a stored instance once a peer has taken responsibility for it (``delete_after_commit``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine

from router.store.models import JobState
from router.store.pruning import INSTANCE_ROWS, Pruned, prune, remove_files
from router.store.tables import INSTANCE, JOB
from router.store.writelock import WriteLock

log = logging.getLogger(__name__)

# a job in one of these states may still need the stored file (dead jobs can be requeued)
NEEDS_FILE = (JobState.PENDING, JobState.INFLIGHT, JobState.COMMITTING, JobState.DEAD)


def remove_instance(
    engine: Engine,
    data_dir: Path,
    write_lock: WriteLock,
    sop_uid: str,
    announce: Callable[[Pruned], None] | None = None,
) -> bool:
    """Delete the instance's index row and file, unless a job (for any peer) may still send it.

    The series, study and patient rows it leaves empty go too (``router.store.pruning``); ``announce`` is told
    what went. Runs under the ingest's write lock, files included, so a re-send of the same instance being stored
    is not undone. Empty folders are removed only where the lock is shared by every process (SQLite)."""
    with write_lock:
        with engine.begin() as conn:
            busy = conn.execute(
                select(JOB.c.id).where(JOB.c.sop_uid == sop_uid, JOB.c.state.in_(NEEDS_FILE)).limit(1)
            ).first()
            if busy is not None:
                log.info("%s committed, local copy kept: job %d may still send it", sop_uid, busy.id)
                return False
            rows = conn.execute(INSTANCE_ROWS.where(INSTANCE.c.sop_uid == sop_uid)).all()
            if not rows:
                return False
            pruned = prune(conn, rows)
        if pruned.parents:
            write_lock.bump()
        remove_files(data_dir, pruned.paths, folders_too=write_lock.shared)
    log.info("%s committed by its peer: local copy removed", sop_uid)
    if announce is not None:
        announce(pruned)
    return True
