"""The activity record: what the router did with each object and message, found again by its business keys.

Rows are written where the thing happens, in the same transaction as what it records whenever there is one, so a
trace never shows what did not happen:

- intake (``router.intake.dicom``, ``router.intake.hl7``): one ``received`` row per object or message, committed
  with its index rows and outbox jobs: from whom, the rules that matched, each stage's outcome, the jobs queued.
  Refusals (``refused``) and repeats (``duplicate``) have no transaction of their own and get one.
- forward (``router.outbox.queue``): one row per delivery attempt (``delivered``, ``failed``, ``dead``), committed
  with the job's done or failure mark.
- operators (``router.outbox.queue``, the admin API): ``retried``, ``deleted``, ``sent`` (a study sent to a peer).

A row's ``subject`` ties an object's rows together (``subject_of``): the SOP Instance UID of a DICOM object, the
message file of a forwarded HL7 message (its jobs' ``path``). A search by a business key finds the subjects of the
matching rows, then every row of those subjects, in time order: indexed queries (partial indexes: a row without
a key costs that key's index nothing). Rows older than ``activity.keep_days`` are removed every hour (``prune``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, literal_column, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnClause

from router.store.models import utcnow
from router.store.rawsql import insert_columns, raw
from router.store.tables import ACTIVITY

KEYS = ("patient_id", "accession", "study_uid", "sop_uid", "msh10")
_LIMITS = {"patient_id": 64, "accession": 16, "study_uid": 64, "sop_uid": 64, "msh10": 64}
HL7_KIND = "hl7"
MAX_SUBJECTS = 1000  # a search matching more objects shows the newest of them
# literals, not parameters: the planner matches them with the partial indexes' terms
_EMPTY: ColumnClause[str] = literal_column("''")
_DELIVERED: ColumnClause[str] = literal_column("'delivered'")
_INSERT = insert(ACTIVITY)  # run raw (router.store.rawsql): the intake's hot path
_COLUMNS = insert_columns(ACTIVITY)


def subject_of(job_kind: str, sop_uid: str, path: str) -> str:
    """The subject of a job's rows: an HL7 job's message file, else its SOP Instance UID."""
    return path if job_kind == HL7_KIND else sop_uid


@dataclass
class Entry:
    """One activity row about to be written."""

    event: str
    subject: str
    kind: str = ""
    keys: dict[str, str] | None = None
    peer: str = ""
    job_id: int | None = None
    status: int | None = None
    source: str = ""
    detail: dict[str, Any] | None = None
    message: str | None = None
    at: datetime | None = None

    def row(self, now: datetime) -> dict[str, Any]:
        keys = self.keys or {}
        return {
            "at": self.at or now, "event": self.event, "kind": self.kind, "subject": self.subject[:1024],
            **{k: (keys.get(k) or "")[: _LIMITS[k]] for k in KEYS},
            "peer": self.peer[:64], "job_id": self.job_id, "status": self.status, "source": self.source[:256],
            "detail": json.dumps(self.detail, default=str) if self.detail else "", "message": self.message,
        }  # fmt: skip


def record(conn: Connection, entries: Sequence[Entry]) -> None:
    """Write ``entries`` in the caller's transaction."""
    if not entries:
        return
    now = utcnow()
    statement = raw(_INSERT, conn, _COLUMNS)
    if len(entries) == 1:
        statement.execute(conn, entries[0].row(now))
    else:
        statement.execute_many(conn, [entry.row(now) for entry in entries])


def record_now(engine: Engine, entries: Sequence[Entry]) -> None:
    """Write ``entries`` in a transaction of their own (what happened has no other row to go with)."""
    with engine.begin() as conn:
        record(conn, entries)


def trace(
    engine: Engine, keys: dict[str, str], since: datetime | None = None, limit: int = 1000
) -> tuple[list[dict[str, Any]], bool]:
    """The rows of every object or message one of ``keys`` matches, oldest first; and whether more matched."""
    # each key on its partial index (its "<> ''" term lets the planner use it); a SOP Instance UID is a subject
    wanted = [
        ACTIVITY.c.subject == v if k == "sop_uid" else and_(ACTIVITY.c[k] == v[: _LIMITS[k]], ACTIVITY.c[k] != _EMPTY)
        for k, v in keys.items()
        if k in KEYS and v
    ]
    if not wanted:
        return [], False
    with engine.connect() as conn:
        subjects: set[str] = set()
        for condition in wanted:  # one indexed lookup per key (an OR of them may not use the indexes)
            query = select(ACTIVITY.c.subject).where(condition).distinct().limit(MAX_SUBJECTS + 1)
            subjects.update(conn.execute(query).scalars())
        if not subjects:
            return [], False
        chosen = sorted(subjects)[:MAX_SUBJECTS]
        query = select(ACTIVITY).where(ACTIVITY.c.subject.in_(chosen)).order_by(ACTIVITY.c.at, ACTIVITY.c.id)
        if since is not None:
            query = query.where(ACTIVITY.c.at >= since)
        rows = conn.execute(query.limit(limit + 1)).mappings().all()
    return [as_json(row) for row in rows[:limit]], len(rows) > limit or len(subjects) > MAX_SUBJECTS


def as_json(row: Any) -> dict[str, Any]:
    found = dict(row)
    found["detail"] = json.loads(found["detail"]) if found.get("detail") else {}
    found.pop("message", None)
    return found


def last_delivery(engine: Engine, peers: Iterable[str]) -> dict[str, datetime]:
    """When each peer last took a delivery (from the activity record)."""
    found: dict[str, datetime] = {}
    with engine.connect() as conn:
        for peer in peers:
            at = conn.execute(
                select(func.max(ACTIVITY.c.at)).where(ACTIVITY.c.peer == peer, ACTIVITY.c.event == _DELIVERED)
            ).scalar()
            if at is not None:
                found[peer] = at
    return found


def received_lately(engine: Engine, limit: int) -> list[dict[str, Any]]:
    """The ``received`` rows of the last ``limit`` objects and messages, newest first, with the HL7 text."""
    query = select(ACTIVITY).where(ACTIVITY.c.event == "received").order_by(ACTIVITY.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings().all()]


PRUNE_BATCH = 10_000  # rows deleted per transaction: the writers of objects wait for no longer


def prune(engine: Engine, keep_days: float, write_lock: AbstractContextManager[object] | None = None) -> int:
    """Remove rows older than ``keep_days``; how many went. Rows are written in time order, so the newest old row
    is found once (a read, which does not hold up the writers) and everything up to its id is deleted in short
    transactions by primary key, each under ``write_lock`` (SQLite: the router's one writer at a time)."""
    cutoff = utcnow() - timedelta(days=keep_days)
    with engine.connect() as conn:
        last = conn.execute(select(func.max(ACTIVITY.c.id)).where(ACTIVITY.c.at < cutoff)).scalar()
        first = conn.execute(select(func.min(ACTIVITY.c.id))).scalar()
    if last is None or first is None:
        return 0
    gone = 0
    for start in range(int(first), int(last) + 1, PRUNE_BATCH):
        with write_lock or nullcontext(), engine.begin() as conn:
            result = conn.execute(
                delete(ACTIVITY).where(ACTIVITY.c.id >= start, ACTIVITY.c.id < min(start + PRUNE_BATCH, last + 1))
            )
            gone += int(result.rowcount or 0)
    return gone
