"""The outbox: durable forward jobs, their states and the operations on them.

pending --claim--> inflight (leased by a node) --delivered--> done
                      |--delivered, storage commitment wanted--> committing --committed--> done
                      |                                              |--not committed--> pending | dead
                      |--failed, attempts left--> pending (next_attempt_at = now + backoff)
                      |--permanent refusal or attempts used up--> dead   (router queue retry: -> pending)
inflight jobs left by a crash are put back to pending at start-up, and on PostgreSQL whenever their node's lease has
expired (at-least-once delivery; ``router.outbox.leases``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Select, Update, bindparam, delete, func, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from router.config import ForwardSettings
from router.outbox import groups
from router.outbox.jobs import WAITS_FOR_EARLIER, taken
from router.outbox.orphans import drop_if_orphaned
from router.store.activity import Entry, record, subject_of
from router.store.models import Job, JobState, utcnow
from router.store.peer_state import PAUSED
from router.store.tables import JOB
from router.store.writelock import WriteLock

log = logging.getLogger(__name__)


def backoff_delay(attempts: int, settings: ForwardSettings, rng: random.Random | None = None) -> float:
    """Exponential backoff with a cap and +-10 % jitter (so a recovered peer is not hit all at once)."""
    base = min(settings.backoff_initial * (2 ** max(attempts - 1, 0)), settings.backoff_max)
    jitter = (rng or random).uniform(-0.1, 0.1) * base
    return max(0.0, min(base + jitter, settings.backoff_max))


# The statements of the forwarding hot path, built once so that SQLAlchemy reuses their compiled form. Forwarded
# objects cost claims, done marks and orphan checks (a sender writes them for many jobs at once); built per call
# they took more of the GIL than the C-STORE they accompany.
_NOT_PAUSED = JOB.c.peer.not_in(PAUSED.scalar_subquery())  # a paused peer's jobs stay pending (peer_state)
_CLAIMABLE = core_select(JOB.c.id).where(
    JOB.c.state == JobState.PENDING, JOB.c.peer == bindparam("for_peer"), ~WAITS_FOR_EARLIER, _NOT_PAUSED
)


def _take(claimable: Select[tuple[int]]) -> Update:
    """Mark the jobs ``claimable`` selects inflight and return them: one statement (SQLite 3.35+, PostgreSQL).

    The selection is a MATERIALIZED common table expression, so that it runs once: as an ``IN`` subquery with
    ``FOR UPDATE SKIP LOCKED`` PostgreSQL may run it again for the rows it joins, and each run can lock other rows
    (a claim of one job came back with two)."""
    chosen = claimable.cte("claimable").prefix_with("MATERIALIZED")
    return (
        update(JOB)
        .where(JOB.c.id.in_(core_select(chosen.c.id)), JOB.c.state == JobState.PENDING)
        .values(**taken())
        .returning(*JOB.c)
    )


# PostgreSQL: FOR UPDATE SKIP LOCKED, so that nodes claiming at once take different jobs instead of queueing on each
# other's row locks and coming back empty. SQLite has one writer at a time and renders no FOR UPDATE.
_CLAIM_ANY = _take(_CLAIMABLE.order_by(JOB.c.id).limit(bindparam("limit")).with_for_update(skip_locked=True, of=JOB))
_CLAIM_DUE = _take(
    _CLAIMABLE.where(JOB.c.next_attempt_at <= bindparam("now"))
    .order_by(JOB.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True, of=JOB)
)
_DUE_COUNTS = (
    core_select(JOB.c.peer, func.count())
    .where(JOB.c.state == JobState.PENDING, JOB.c.next_attempt_at <= bindparam("now"), _NOT_PAUSED)
    .group_by(JOB.c.peer)
)
_DONE = (
    update(JOB)
    .where(JOB.c.id == bindparam("job_id"))  # a job ``_held`` found this node still leases (row locked)
    .values(
        state=JobState.DONE,
        attempts=bindparam("n_attempts"),
        last_error="",
        last_status=bindparam("status"),
        updated_at=bindparam("now"),
        leased_by="",
        lease_until=None,
    )
)


def _held(conn: Connection, jobs: Sequence[Job], node_id: str) -> set[int]:
    """The ids of ``jobs`` this node still leases (in flight, ``leased_by`` = ``node_id``), their rows locked until
    the transaction ends: a job whose lease expired and was taken over belongs to its new holder, and the outcome
    this node reports for it is dropped (the new holder delivers it, and records what happens)."""
    ids = [job.id for job in jobs]
    held = (
        core_select(JOB.c.id)
        .where(JOB.c.id.in_(ids), JOB.c.state == JobState.INFLIGHT, JOB.c.leased_by == node_id)
        .order_by(JOB.c.id)  # rows locked in one order by every writer of done marks
        .with_for_update()
    )
    return {int(i) for i in conn.execute(held).scalars()}


def _attempt(job: Job, event: str, attempt: int, status: int | None, error: str = "") -> Entry:
    """The activity row of one delivery attempt."""
    detail: dict[str, object] = {"attempt": attempt, "job_kind": job.kind}
    if error:
        detail["error"] = error[:1024]
    return Entry(event, subject_of(job.kind, job.sop_uid, job.path), kind=job.kind, peer=job.peer, job_id=job.id,
                 status=status, keys={"sop_uid": job.sop_uid if job.kind != "hl7" else ""}, detail=detail)  # fmt: skip


class Outbox:
    """The forward queue's jobs: claimed, marked done or failed, released, listed.

    ``write_lock``: the router's lock for writers to its SQLite database (ingest, HL7 intake, MPPS hold it around
    their transactions; see ``router.store.writelock``). The queue's own write transactions take it too, so
    writers queue on a lock that wakes the next at once instead of sleeping in SQLite's busy handler. None
    (PostgreSQL, the ``router queue`` commands) means no lock: the database itself serialises what must be.

    ``node_id``: the node whose workers claim (``leased_by`` of what they claim, for ``forward.lease_seconds``)."""

    def __init__(
        self,
        engine: Engine,
        settings: ForwardSettings,
        data_dir: Path,
        write_lock: WriteLock | None = None,
        node_id: str = "",
    ) -> None:
        self.engine = engine
        self.node_id = node_id
        self.settings = settings
        self.data_dir = data_dir
        self._claim_lock = threading.Lock()  # one claimer at a time: a job is never handed out twice
        self.dropped = 0  # outcomes dropped since start: their jobs' leases had been taken over (``mark_done``)
        self._writing: WriteLock | contextlib.nullcontext[None] = write_lock or contextlib.nullcontext()

    @property
    def writing(self) -> WriteLock | contextlib.nullcontext[None]:
        """The write lock the queue's writers hold (a no-op on PostgreSQL)."""
        return self._writing

    def recover_inflight(self) -> int:
        """Put back jobs a previous process was sending when it died."""
        with Session(self.engine) as session:
            result = session.execute(
                update(Job)
                .where(col(Job.state) == JobState.INFLIGHT)
                .values(state=JobState.PENDING, updated_at=utcnow(), leased_by="", lease_until=None)
            )
            session.commit()
            return int(getattr(result, "rowcount", 0) or 0)

    def due_counts(self, now: datetime | None = None) -> dict[str, int]:
        """Pending jobs that are due, per peer."""
        with self.engine.connect() as conn:
            rows = conn.execute(_DUE_COUNTS, {"now": now or utcnow()}).all()
        return {peer: int(n) for peer, n in rows}

    def claim(self, peer: str, limit: int, due_only: bool = True) -> list[Job]:
        """Atomically take up to ``limit`` due (or, with ``due_only=False``, all) pending jobs for ``peer``,
        oldest first, and mark them inflight.

        Jobs for one SOP Instance go to a peer in the order they were queued: a job waits while an older one
        for the same instance and peer is pending or inflight (two versions under the overwrite policy must
        not arrive newest first because the older one was backing off). That holds across nodes: a job another
        node is claiming is locked (skipped here) and still pending in this statement's snapshot, so the jobs
        after it wait too. The claimed jobs are leased to this node for ``forward.lease_seconds``. A claimed job of a
        group brings the group's other pending jobs, beyond ``limit`` (``router.outbox.groups``)."""
        now = utcnow()
        lease_until = now + timedelta(seconds=self.settings.lease_seconds)
        params = {"for_peer": peer, "now": now, "limit": limit, "node": self.node_id, "lease_until": lease_until}
        with self._claim_lock, self._writing, self.engine.begin() as conn:
            query = _CLAIM_DUE if due_only else _CLAIM_ANY
            rows = conn.execute(query, params).mappings().all()
            rows = [*rows, *groups.claim_rest(conn, rows, params)]  # a print group is handed over whole
        return sorted((Job(**row) for row in rows), key=lambda job: job.id or 0)  # RETURNING has no order

    def mark_done(self, jobs: Sequence[Job], statuses: dict[int, int | None]) -> list[Job]:
        """Mark delivered jobs done, with a ``delivered`` activity row each, in one transaction: those this node
        still leases (``_held``); the others' outcomes are dropped (``dropped``). The jobs marked."""
        if not jobs:
            return []
        now = utcnow()
        with self._writing, self.engine.begin() as conn:
            held = _held(conn, jobs, self.node_id)
            marked = [job for job in jobs if job.id in held]
            if marked:
                conn.execute(
                    _DONE,
                    [{"job_id": job.id, "n_attempts": job.attempts + 1, "status": statuses.get(job.id or 0),
                      "now": now} for job in marked],
                )  # fmt: skip
                record(conn, [_attempt(job, "delivered", job.attempts + 1, statuses.get(job.id or 0))
                              for job in marked])  # fmt: skip
        self._drop([job for job in jobs if job.id not in held], "delivered")
        return marked

    def mark_failed_many(
        self, jobs: Sequence[Job], error: str, permanent: bool, status: int | None = None
    ) -> list[bool | None]:
        """Record one failed attempt for each job, in one transaction; which of them are now dead (None: the job's
        lease was lost, its outcome dropped, see ``mark_done``)."""
        now = utcnow()
        verdicts: list[bool | None] = []
        with self._writing, Session(self.engine) as session:
            held = _held(session.connection(), jobs, self.node_id) if jobs else set()
            for job in jobs:
                if job.id not in held:
                    verdicts.append(None)
                    continue
                attempts = job.attempts + 1
                dead = permanent or attempts >= self.settings.max_attempts
                values: dict[str, object] = {
                    "attempts": attempts,
                    "last_error": error[:1024],
                    "last_status": status,
                    "updated_at": now,
                    "state": JobState.DEAD if dead else JobState.PENDING,
                    "leased_by": "",
                    "lease_until": None,
                }
                if not dead:
                    values["next_attempt_at"] = now + timedelta(seconds=backoff_delay(attempts, self.settings))
                session.execute(update(Job).where(col(Job.id) == job.id).values(**values))
                job.attempts = attempts
                verdicts.append(dead)
            attempted = [(job, dead) for job, dead in zip(jobs, verdicts, strict=True) if dead is not None]
            record(session.connection(), [_attempt(job, "dead" if dead else "failed", job.attempts, status, error)
                                          for job, dead in attempted])  # fmt: skip
            session.commit()
        self._drop([job for job in jobs if job.id not in held], "failed")
        return verdicts

    def _drop(self, jobs: Sequence[Job], outcome: str) -> None:
        """Count and log outcomes dropped because this node no longer leases their jobs."""
        if not jobs:
            return
        with self._claim_lock:
            self.dropped += len(jobs)
        log.warning(
            "%d %s job(s) for %s are no longer leased by node %r (the lease expired and another node took them "
            "over): their outcome is dropped, the new holder delivers them",
            len(jobs), outcome, ", ".join(sorted({job.peer for job in jobs})), self.node_id,
        )  # fmt: skip

    def release(self, jobs: Iterable[Job]) -> None:
        """Give unattempted claimed jobs back (shutdown in the middle of a batch): those this node still holds."""
        ids = [j.id for j in jobs]
        if not ids:
            return
        with self._writing, Session(self.engine) as session:
            session.execute(
                update(Job)
                .where(col(Job.id).in_(ids), col(Job.state) == JobState.INFLIGHT, col(Job.leased_by) == self.node_id)
                .values(state=JobState.PENDING, updated_at=utcnow(), leased_by="", lease_until=None)
            )
            session.commit()

    # -- operator commands (router queue ..., the admin API's /api/jobs: one code path) ---------------------------
    def page(
        self,
        state: str | None = None,
        peer: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> tuple[list[Job], int | None]:
        """Jobs newest first, filtered; keyset pagination on the job id: ``before`` is the cursor the previous page
        gave (its last id), and the answer's second value the next cursor (None on the last page)."""
        with Session(self.engine) as session:
            query = select(Job).order_by(col(Job.id).desc()).limit(limit + 1)
            if state:
                query = query.where(Job.state == state)
            if peer:
                query = query.where(col(Job.peer) == peer)
            if kind:
                query = query.where(col(Job.kind) == kind)
            if before is not None:
                query = query.where(col(Job.id) < before)
            jobs = list(session.exec(query).all())
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return jobs, (jobs[-1].id if more and jobs else None)

    def list(self, state: str | None = None, peer: str | None = None, limit: int = 100) -> list[Job]:
        return self.page(state, peer, limit=limit)[0]

    def get(self, job_id: int) -> Job | None:
        with Session(self.engine) as session:
            return session.get(Job, job_id)

    def counts(self) -> dict[tuple[str, str], int]:
        with Session(self.engine) as session:
            rows = session.exec(select(Job.peer, Job.state, func.count()).group_by(Job.peer, Job.state)).all()
        return {(peer, state): int(n) for peer, state, n in rows}

    def retry(
        self,
        ids: Sequence[int] = (),
        peer: str | None = None,
        all_dead: bool = False,
        state: str | None = None,
        by: str = "",
    ) -> int:
        """Requeue jobs, attempts from zero: the named ones (dead, or pending to retry now), every dead one
        (``all_dead``), or every one in ``state`` (dead or pending); ``peer`` narrows any of these. Each requeued
        job gets a ``retried`` activity row naming ``by``."""
        where: list[ColumnElement[bool]]
        if ids:
            where = [col(Job.state).in_([JobState.DEAD, JobState.PENDING]), col(Job.id).in_(list(ids))]
        elif all_dead or state == JobState.DEAD:
            where = [col(Job.state) == JobState.DEAD]
        elif state == JobState.PENDING:
            where = [col(Job.state) == JobState.PENDING]
        else:
            return 0
        if peer:
            where.append(col(Job.peer) == peer)
        now = utcnow()
        with self._writing, Session(self.engine) as session:
            jobs = list(session.exec(select(Job).where(*where)).all())
            if jobs:
                session.execute(
                    update(Job)
                    .where(col(Job.id).in_([j.id for j in jobs]), *where)
                    .values(state=JobState.PENDING, attempts=0, next_attempt_at=now, updated_at=now)
                )
                record(session.connection(), [_operator(job, "retried", by) for job in jobs])
            session.commit()
        return len(jobs)

    def delete(self, job_id: int, by: str = "") -> Job | None:
        """Delete one job that is not being sent (pending, done or dead); its file goes when nothing else needs it.
        Returns the job as it was, None when there is none; raises ``JobBusy`` for an inflight or committing one."""
        with self._writing, Session(self.engine) as session:
            job = session.get(Job, job_id)
            if job is None:
                return None
            if job.state in (JobState.INFLIGHT, JobState.COMMITTING):
                raise JobBusy(f"job {job_id} is {job.state}: it can be deleted once its delivery is over")
            gone = Job.model_validate(job.model_dump())  # what it was, outside the session
            deleted = session.execute(delete(Job).where(col(Job.id) == job_id, col(Job.state) == job.state))
            if not getattr(deleted, "rowcount", 0):  # claimed meanwhile
                raise JobBusy(f"job {job_id} is being delivered: it can be deleted once its delivery is over")
            record(session.connection(), [_operator(gone, "deleted", by)])
            session.commit()
        drop_if_orphaned(self.engine, self.data_dir, gone.path, gone.sop_uid)
        return gone

    def purge(self, states: Sequence[str], peer: str | None = None) -> int:
        """Delete jobs in the given states (done and/or dead; never pending or inflight)."""
        allowed = [s for s in states if s in (JobState.DONE, JobState.DEAD)]
        if not allowed:
            return 0
        query = delete(Job).where(col(Job.state).in_(allowed))
        if peer:
            query = query.where(col(Job.peer) == peer)
        with Session(self.engine) as session:
            paths = set(session.exec(select(Job.path, Job.sop_uid).where(query.whereclause)).all())  # type: ignore[arg-type]
            result = session.execute(query)
            session.commit()
        for relpath, sop_uid in paths:  # changed payloads of dead jobs are needed by nothing else
            drop_if_orphaned(self.engine, self.data_dir, relpath, sop_uid)
        return int(getattr(result, "rowcount", 0) or 0)


class JobBusy(Exception):
    """The job is being delivered (inflight, or waiting for a storage commitment report)."""


def _operator(job: Job, event: str, by: str) -> Entry:
    return Entry(event, subject_of(job.kind, job.sop_uid, job.path), kind=job.kind, peer=job.peer, job_id=job.id,
                 keys={"sop_uid": job.sop_uid if job.kind != "hl7" else ""},
                 detail={"by": by, "state": job.state, "attempts": job.attempts})  # fmt: skip
