"""Job kinds and ``enqueue``: how every producer puts work in the outbox.

A job is one thing to deliver to one peer: a stored object, an HL7 message, an MPPS message, a commitment report.
Producers (DICOM and HL7 intake, the MPPS SCP, the storage commitment SCP, the ``resend`` stage) describe each job
with a ``NewJob`` and write it with ``enqueue`` inside the transaction that commits what the job refers to, so a
job exists exactly when its payload is durable.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select

from router.outbox.wakes import announce
from router.store.models import JobState, utcnow
from router.store.rawsql import insert_columns, raw
from router.store.tables import JOB


class JobKind(enum.StrEnum):
    """What a job delivers; the destination of the job's peer decides how."""

    DICOM_STORE = "dicom-store"  # a stored object, or a stage's version of it (C-STORE, STOW-RS ...)
    DICOM_STORE_COMMIT = "dicom-store-commit"  # the same, then storage commitment asked of the (DICOM) peer
    DICOM_CORRECTED = "dicom-corrected"  # a stored object, corrected to what the HIS knows when it is sent
    HL7 = "hl7"  # an HL7 v2 message, to an MLLP peer, in the order received
    COMMIT_REPORT = "commit-report"  # a storage commitment N-EVENT-REPORT the router owes a peer
    MPPS_CREATE = "mpps-create"  # an MPPS N-CREATE, forwarded
    MPPS_SET = "mpps-set"  # an MPPS N-SET, forwarded (after its N-CREATE: same sop_uid)
    PRINT = "print"  # images printed on a DICOM printer: a stored object, or a bundle (router.printing.bundle)
    PRINT_SERIES = "print-series"  # a stored object printed with the rest of its series (router.outbox.groups)


PRINT_KINDS = frozenset({JobKind.PRINT, JobKind.PRINT_SERIES})  # the printer destination's (a DICOM peer's)
DIMSE_N_KINDS = frozenset({JobKind.COMMIT_REPORT, JobKind.MPPS_CREATE, JobKind.MPPS_SET})
# Kinds whose file is also a record another service keeps (the MPPS messages and the step's state, which the next
# N-SET reads): a delivered job of these kinds never takes its file away. The files of the other kinds are payloads
# only, removed once nothing refers to them (router.outbox.orphans).
KEPT_FILES = frozenset({JobKind.MPPS_CREATE, JobKind.MPPS_SET})
HL7_STREAM = "hl7"  # the sop_uid of every HL7 job: jobs of one sop_uid go to a peer in order (Outbox.claim)


@dataclass(frozen=True)
class NewJob:
    """A job about to be queued. ``sop_uid`` orders jobs: those with the same one reach a peer in queue order."""

    kind: JobKind
    peer: str
    sop_uid: str
    path: str  # the bytes to send, relative to data_dir
    sop_class_uid: str = ""  # an HL7 job: the message type (router queue list shows it)
    transfer_syntax: str = ""
    rule: str = ""


_INSERT = insert(JOB)  # run raw (router.store.rawsql): compiled once per dialect, with every column
_KEYS = insert_columns(JOB)


def job_row(job: NewJob, now: datetime) -> dict[str, Any]:
    """The full row of a new, pending job: every column, as a raw insert needs."""
    return {
        "kind": job.kind.value, "peer": job.peer, "sop_uid": job.sop_uid, "sop_class_uid": job.sop_class_uid[:64],
        "transfer_syntax": job.transfer_syntax, "path": job.path, "rule": job.rule, "state": JobState.PENDING,
        "attempts": 0, "next_attempt_at": now, "last_error": "", "last_status": None, "created_at": now,
        "updated_at": now, "leased_by": "", "lease_until": None,
    }  # fmt: skip


def enqueue(conn: Connection, jobs: Sequence[NewJob], due: datetime | None = None) -> None:
    """Insert ``jobs`` in the caller's transaction (they are sent once it commits); ``due`` defers them (the first
    attempt not before then). The caller wakes the forward workers after the commit."""
    if not jobs:
        return
    now = utcnow()
    rows = [job_row(job, now) for job in jobs]
    if due is not None:
        for row in rows:
            row["next_attempt_at"] = due
    raw(_INSERT, conn, _KEYS).execute_many(conn, rows)
    announce(conn, {job.peer for job in jobs})


def enqueue_one(conn: Connection, job: NewJob, due: datetime | None = None) -> int:
    """``enqueue`` for one job whose id the caller needs (to act on it before it is sent)."""
    now = utcnow()
    row = job_row(job, now)
    if due is not None:
        row["next_attempt_at"] = due
    job_id = int(conn.execute(_INSERT.values(**row).returning(JOB.c.id)).scalar_one())
    announce(conn, {job.peer})
    return job_id


_EARLIER = JOB.alias("earlier")
# A job waits while an earlier job of the same instance to the same peer is pending or in flight: versions of one
# instance, the HL7 stream and an MPPS instance's messages reach a peer in the order they were queued.
WAITS_FOR_EARLIER = (
    select(_EARLIER.c.id)
    .where(
        _EARLIER.c.peer == JOB.c.peer,
        _EARLIER.c.sop_uid == JOB.c.sop_uid,
        _EARLIER.c.id < JOB.c.id,
        _EARLIER.c.state.in_([JobState.PENDING, JobState.INFLIGHT]),
    )
    .exists()
)


def taken() -> dict[str, Any]:
    """The values of a job a claim takes: in flight, leased to the claiming node (``node``) until ``lease_until``."""
    return {"state": JobState.INFLIGHT, "updated_at": bindparam("now"), "leased_by": bindparam("node"),
            "lease_until": bindparam("lease_until")}  # fmt: skip
