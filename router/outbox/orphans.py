"""Files nothing needs any more: removed once the index and every job that may still be sent have let go.

That is a changed payload whose jobs are done, or an object version replaced under the overwrite policy once its
last job is done. A file only ever holds one instance's bytes, so the lookups go by its indexed SOP Instance UID.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import bindparam
from sqlalchemy import select as core_select
from sqlalchemy.engine import Engine

from router import storage
from router.store.models import JobState
from router.store.tables import INSTANCE, JOB

# dead jobs can be requeued; committing ones are sent again if the peer does not commit them
_RETRYABLE = [JobState.PENDING, JobState.INFLIGHT, JobState.COMMITTING, JobState.DEAD]

_INDEXED_PATHS = core_select(INSTANCE.c.sop_uid, INSTANCE.c.path).where(
    INSTANCE.c.sop_uid.in_(bindparam("sop_uids", expanding=True))
)
_JOB_NEEDS_PATH = (
    core_select(JOB.c.id)
    .where(JOB.c.sop_uid == bindparam("sop_uid"), JOB.c.path == bindparam("path"), JOB.c.state.in_(_RETRYABLE))
    .limit(1)
)


def drop_if_orphaned(engine: Engine, data_dir: Path, relpath: str, sop_uid: str) -> bool:
    """Remove a file that neither the index nor any job that may still be sent refers to.

    That is a changed payload whose jobs are done, or an object version replaced under the overwrite policy
    once its last job is done. ``sop_uid`` is the instance the file belongs to (a file only ever holds one
    instance's bytes, so the lookups go by its indexed UID). Returns whether the file was removed."""
    return bool(drop_orphans(engine, data_dir, [(relpath, sop_uid)]))


def drop_orphans(engine: Engine, data_dir: Path, candidates: Sequence[tuple[str, str]]) -> list[str]:
    """``drop_if_orphaned`` for many (relpath, sop_uid) pairs: one query for the usual case, where the index
    still points at every file. Returns the relpaths removed."""
    removed: list[str] = []
    if not candidates:
        return removed
    with engine.connect() as conn:
        uids = sorted({sop_uid for _, sop_uid in candidates})
        indexed: dict[str, str] = {uid: path for uid, path in conn.execute(_INDEXED_PATHS, {"sop_uids": uids})}
        for relpath, sop_uid in candidates:
            if indexed.get(sop_uid) == relpath or relpath in removed:
                continue
            if conn.execute(_JOB_NEEDS_PATH, {"sop_uid": sop_uid, "path": relpath}).first() is None:
                removed.append(relpath)
    for relpath in removed:
        storage.at(data_dir).delete(relpath)
    return removed
