"""The router's storage commitment requests (SCU role), as durable state.

A delivered job that wants commitment becomes ``committing`` in the same database transaction that records a
``CommitTransaction`` with a fresh Transaction UID and one ``CommitItem`` per instance. From there:

- the peer reports (on the N-ACTION's association or on a new one, whenever it arrives): committed instances'
  jobs are ``done`` (and, with ``delete_after_commit``, the local copy goes); failed ones are sent again and
  commitment is requested again under a new Transaction UID, up to the peer's ``commit_requests``, then ``dead``;
- the peer refuses the N-ACTION, or no report comes within ``commit_timeout`` of it (the duration of
  applicability): the same as a failure of every instance;
- the router restarts: a transaction whose N-ACTION the peer had accepted is resumed (its report is still
  accepted, its deadline still counts); one it had not is abandoned and its jobs are sent and requested again.

A report for a transaction already given up still counts for the instances it commits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pluggy
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from router.commitment.datasets import BadRequest, Ref, read_report
from router.config import RouterConfig
from router.hooks.manager import notify
from router.outbox.leases import beat_interval
from router.outbox.orphans import drop_if_orphaned
from router.outbox.queue import backoff_delay
from router.statuses import INVALID_ARGUMENT, PROCESSING_FAILURE
from router.store.eviction import announce as announce_eviction
from router.store.models import CommitState, Job, JobState, utcnow
from router.store.removal import remove_instance
from router.store.tables import COMMIT_ITEM as ITEM
from router.store.tables import COMMIT_TRANSACTION as TX
from router.store.tables import JOB, NODE
from router.store.writelock import WriteLock

log = logging.getLogger(__name__)

# run on every forwarder dispatch pass: built once
_OVERDUE = select(TX.c.transaction_uid, TX.c.peer).where(
    TX.c.state == CommitState.WAITING, TX.c.deadline <= bindparam("now")
)

_STATE = select(TX.c.state).where(TX.c.transaction_uid == bindparam("uid"))

REASONS = {0x0110: "processing failure", 0x0112: "no such object instance", 0x0119: "class/instance conflict",
           0x0122: "SOP class not supported", 0x0131: "duplicate transaction UID",
           0x0213: "resource limitation", 0xA770: "referenced SOP instance not available"}  # fmt: skip


def reason_text(reason: int | None) -> str:
    if reason is None:
        return "not in the peer's report"
    return f"0x{reason:04X} {REASONS.get(reason, 'failure')}"


class CommitLedger:
    def __init__(self, config: RouterConfig, engine: Engine, pm: pluggy.PluginManager, write_lock: WriteLock) -> None:
        self.config = config
        self.engine = engine
        self.pm = pm
        self.write_lock = write_lock
        self.on_jobs_requeued: Callable[[set[str]], None] = lambda peers: None
        self._reported: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._silent_checked = time.monotonic()

    # -- a new request --------------------------------------------------------------------------------------
    def begin(self, peer: str, jobs: list[Job], statuses: dict[int, int]) -> tuple[str, list[Ref]]:
        """Record a new transaction for delivered ``jobs`` (C-STORE status by job id); the jobs are now
        ``committing``. Returns the Transaction UID, never used before, and the instances to request."""
        uid = generate_uid()
        now = utcnow()
        ids = [j.id for j in jobs]
        with self.engine.begin() as conn:
            last: dict[int, Any] = {}
            for row in conn.execute(select(ITEM).where(ITEM.c.job_fk.in_(ids)).order_by(ITEM.c.id)):
                last[row.job_fk] = row
            tx_id = conn.execute(
                insert(TX).values(transaction_uid=uid, peer=peer, node_id=self.config.node_id,
                                  state=CommitState.REQUESTING, detail="", created_at=now, updated_at=now)
                .returning(TX.c.id)
            ).scalar_one()  # fmt: skip
            conn.execute(
                insert(ITEM),
                [
                    {"transaction_fk": tx_id, "job_fk": j.id, "sop_class_uid": j.sop_class_uid, "sop_uid": j.sop_uid,
                     "request_no": _request_no(j, last.get(j.id or 0)), "outcome": "", "failure_reason": None}
                    for j in jobs
                ],
            )  # fmt: skip
            for job in jobs:
                conn.execute(
                    update(JOB).where(JOB.c.id == job.id, JOB.c.state == JobState.INFLIGHT,
                                      JOB.c.leased_by == self.config.node_id)  # not if taken over meanwhile
                    .values(state=JobState.COMMITTING, attempts=job.attempts + 1, last_error="",
                            last_status=statuses.get(job.id or 0), updated_at=now)
                )  # fmt: skip
        with self._lock:
            self._reported[uid] = threading.Event()
        return uid, [Ref(j.sop_class_uid, j.sop_uid) for j in jobs]

    def accepted(self, uid: str) -> None:
        """The peer accepted the N-ACTION: its report is due within the duration of applicability."""
        with self.engine.begin() as conn:
            peer = conn.execute(select(TX.c.peer).where(TX.c.transaction_uid == uid)).scalar_one()
            dicom = self.config.dicom_peer(peer)
            timeout = dicom.commit_timeout if dicom is not None else 0.0
            now = utcnow()
            conn.execute(
                update(TX).where(TX.c.transaction_uid == uid, TX.c.state == CommitState.REQUESTING)
                .values(state=CommitState.WAITING, deadline=now + timedelta(seconds=timeout), updated_at=now)
            )  # fmt: skip

    def wait(self, uid: str, seconds: float, stop: threading.Event) -> bool:
        """Wait up to ``seconds`` for the report of ``uid`` (from any association); whether it came.

        A report on the association that requested it is applied in this process and wakes the wait at once. One
        on a new association reaches the serving process's SCP, which may be another process than the forward
        workers' (``router.forward.process``): the transaction's state is therefore also looked up every 0.1 s."""
        with self._lock:
            event = self._reported.get(uid)
        if event is None:
            return False
        deadline = threading.Event()
        timer = threading.Timer(seconds, deadline.set)
        timer.start()
        try:
            while not event.is_set() and not deadline.is_set() and not stop.is_set():
                if event.wait(0.1) or self._reported_elsewhere(uid):
                    return True
            return event.is_set()
        finally:
            timer.cancel()
            with self._lock:
                self._reported.pop(uid, None)

    def _reported_elsewhere(self, uid: str) -> bool:
        with self.engine.connect() as conn:
            state = conn.execute(_STATE, {"uid": uid}).scalar()
        return state == CommitState.DONE

    # -- outcomes -------------------------------------------------------------------------------------------
    def fail(self, uid: str, reason: str, permanent: bool = False, abandoned: bool = False) -> None:
        """Every instance of ``uid`` still open failed (or, ``abandoned``, was never asked for)."""
        with self.engine.begin() as conn:
            # locked: two nodes giving up the same request (overdue, abandoned) requeue its jobs once
            tx = conn.execute(select(TX).where(TX.c.transaction_uid == uid).with_for_update()).first()
            if tx is None or tx.state in (CommitState.DONE, CommitState.FAILED):
                return
            conn.execute(update(TX).where(TX.c.id == tx.id)
                         .values(state=CommitState.FAILED, detail=reason[:1024], updated_at=utcnow()))  # fmt: skip
            items = list(conn.execute(select(ITEM).where(ITEM.c.transaction_fk == tx.id, ITEM.c.outcome == "")))
            outcome = "abandoned" if abandoned else "failed"
            conn.execute(
                update(ITEM).where(ITEM.c.transaction_fk == tx.id, ITEM.c.outcome == "").values(outcome=outcome)
            )
            changed = self._requeue(conn, tx.peer, [(i, reason) for i in items], permanent, abandoned)
        log.warning("storage commitment %s by %s failed: %s", uid, tx.peer, reason)
        self._after(uid, done=[], failed=changed)

    def apply_report(self, calling_ae: str, ds: Dataset) -> tuple[int, str]:
        """Apply an N-EVENT-REPORT from ``calling_ae``; the status to answer and an error comment."""
        try:
            report = read_report(ds)
        except BadRequest as exc:
            return PROCESSING_FAILURE, str(exc)
        uid = report.transaction_uid
        with self.engine.begin() as conn:
            tx = conn.execute(select(TX).where(TX.c.transaction_uid == uid)).first()
            peer = self.config.dicom_peer(tx.peer) if tx is not None else None
            if tx is None or peer is None or not peer.is_ae(calling_ae):
                return INVALID_ARGUMENT, f"no storage commitment transaction {uid} was requested from {calling_ae}"
            if tx.state == CommitState.DONE:
                return 0x0000, ""
            late = tx.state == CommitState.FAILED
            items = list(conn.execute(select(ITEM).where(ITEM.c.transaction_fk == tx.id)))
            committed = [i for i in items if i.sop_uid in report.committed]
            failed = [] if late else [i for i in items if i.sop_uid not in report.committed]
            if committed:
                conn.execute(update(ITEM).where(ITEM.c.id.in_([i.id for i in committed])).values(outcome="committed"))
            for item in failed:
                found = report.failed.get(item.sop_uid)
                conn.execute(update(ITEM).where(ITEM.c.id == item.id)
                             .values(outcome="failed", failure_reason=found[1] if found else None))  # fmt: skip
            done = self._mark_committed(conn, [i.job_fk for i in committed])
            reasons = [(i, f"not committed by {tx.peer}: {reason_text(_reason(report.failed, i.sop_uid))}")
                       for i in failed]  # fmt: skip
            changed = self._requeue(conn, tx.peer, reasons, permanent=False, abandoned=False)
            conn.execute(update(TX).where(TX.c.id == tx.id).values(
                state=CommitState.FAILED if late else CommitState.DONE, updated_at=utcnow(),
                detail=f"{'late ' if late else ''}report: {len(committed)} committed, {len(report.failed)} failed",
            ))  # fmt: skip
        log.info(
            "storage commitment %s from %s: %d committed, %d not%s",
            uid, tx.peer, len(done), len(failed), " (late report)" if late else "",
        )  # fmt: skip
        self._after(uid, done=done, failed=changed, delete=peer.delete_after_commit)
        return 0x0000, ""

    def expire_overdue(self) -> int:
        """Transactions whose report did not come within the duration of applicability fail; how many."""
        with self.engine.connect() as conn:
            rows = list(conn.execute(_OVERDUE, {"now": utcnow()}))
        for uid, peer in rows:
            dicom = self.config.dicom_peer(peer)
            timeout = dicom.commit_timeout if dicom is not None else 0.0
            self.fail(uid, f"no report from {peer} within {timeout:g} s of the N-ACTION (duration of applicability)")
        return len(rows)

    def recover(self) -> int:
        """At start-up: this node's requests the peer never accepted are abandoned (their jobs requested again), and
        so are those of nodes that are silent (``take_over_silent``) and those made before requests had a node."""
        self._silent_checked = time.monotonic()
        node = self.config.node_id
        own = TX.c.node_id.in_([node, ""])
        return self._abandon(
            or_(own, _of_silent_nodes(node)), "the router stopped before the peer accepted the N-ACTION"
        )

    def take_over_silent(self) -> int:
        """Requests of other nodes that are silent (no heartbeat for ``forward.lease_seconds``, or stopped) and
        that their peer never accepted: abandoned, as their node's own start-up would; how many. Checked at most
        once per heartbeat interval (every forwarder dispatch pass calls it)."""
        if time.monotonic() - self._silent_checked < beat_interval(self.config.forward.lease_seconds):
            return 0
        self._silent_checked = time.monotonic()
        return self._abandon(_of_silent_nodes(self.config.node_id), "its node went silent before the peer "
                             "accepted the N-ACTION")  # fmt: skip

    def _abandon(self, whose: ColumnElement[bool], reason: str) -> int:
        with self.engine.connect() as conn:
            query = select(TX.c.transaction_uid).where(TX.c.state == CommitState.REQUESTING, whose)
            uids = list(
                conn.execute(
                    query, {"since": utcnow() - timedelta(seconds=self.config.forward.lease_seconds)}
                ).scalars()
            )
        for uid in uids:
            self.fail(uid, reason, abandoned=True)
        return len(uids)

    # -- helpers --------------------------------------------------------------------------------------------
    def _mark_committed(self, conn: Connection, job_ids: list[int]) -> list[Job]:
        if not job_ids:
            return []
        open_states = [JobState.COMMITTING, JobState.PENDING]  # pending: re-send after an earlier failure
        rows = list(conn.execute(select(JOB).where(JOB.c.id.in_(job_ids), JOB.c.state.in_(open_states))))
        if rows:
            conn.execute(update(JOB).where(JOB.c.id.in_([r.id for r in rows]), JOB.c.state.in_(open_states))
                         .values(state=JobState.DONE, last_error="", updated_at=utcnow()))  # fmt: skip
        return [Job(**dict(r._mapping)) for r in rows]

    def _requeue(
        self, conn: Connection, peer_name: str, items: list[tuple[Any, str]], permanent: bool, abandoned: bool
    ) -> list[tuple[Job, str, bool]]:
        """Jobs of failed items: back to pending (sent and requested again) or dead. (job, error, dead) each."""
        peer = self.config.dicom_peer(peer_name)
        limit = peer.commit_requests if peer is not None else 1
        by_job = {item.job_fk: (item, error) for item, error in items}
        if not by_job:
            return []
        rows = conn.execute(select(JOB).where(JOB.c.id.in_(list(by_job)), JOB.c.state == JobState.COMMITTING))
        now = utcnow()
        changed = []
        for row in rows:
            item, error = by_job[row.id]
            dead = permanent or peer is None or (not abandoned and item.request_no >= limit)
            attempts = row.attempts if abandoned else row.attempts + 1
            if dead:
                error = f"{error} (after {item.request_no} commitment request(s))"
            values: dict[str, object] = {"state": JobState.DEAD if dead else JobState.PENDING, "attempts": attempts,
                                         "last_error": error[:1024], "updated_at": now}  # fmt: skip
            if not dead:
                delay = 0.0 if abandoned else backoff_delay(attempts, self.config.forward)
                values["next_attempt_at"] = now + timedelta(seconds=delay)
            conn.execute(update(JOB).where(JOB.c.id == row.id).values(**values))
            changed.append((Job(**{**dict(row._mapping), **values}), error, dead))
        return changed

    def _after(self, uid: str, done: list[Job], failed: list[tuple[Job, str, bool]], delete: bool = False) -> None:
        """Once committed to the database: wake a waiting sender, tell plugins, remove or requeue."""
        with self._lock:
            event = self._reported.get(uid)
        if event is not None:
            event.set()
        for job in done:
            notify(self.pm, "router_forwarded", job=job, status=job.last_status or 0)
            if delete:
                remove_instance(self.engine, self.config.data_dir, self.write_lock, job.sop_uid,
                                announce=partial(announce_eviction, self.pm, "committed"))  # fmt: skip
            drop_if_orphaned(self.engine, self.config.data_dir, job.path, job.sop_uid)
        for job, error, dead in failed:
            log.warning("%s: %s; %s", job.sop_uid, error, "dead-lettered" if dead else "to be sent and requested again")
            notify(self.pm, "router_forward_failed", job=job, error=error, dead=dead)
        retry = {job.peer for job, _e, dead in failed if not dead}
        if retry:
            self.on_jobs_requeued(retry)


def _of_silent_nodes(node_id: str) -> ColumnElement[bool]:
    """Requests of another node that has no heartbeat since ``:since`` (or stopped, or has no row): a node whose
    forward workers are gone, whose jobs are taken over as well (``router.outbox.leases``)."""
    live = select(NODE.c.node_id).where(NODE.c.stopped_at.is_(None), NODE.c.heartbeat_at >= bindparam("since"))
    return and_(TX.c.node_id != node_id, TX.c.node_id != "", TX.c.node_id.not_in(live.scalar_subquery()))


def _request_no(job: Job, last: Any) -> int:
    """Which request this is for the job: 1 after an operator requeued it (attempts back to 0)."""
    if last is None or job.attempts == 0:
        return 1
    return int(last.request_no) if last.outcome == "abandoned" else int(last.request_no) + 1


def _reason(failed: dict[str, tuple[Ref, int]], sop_uid: str) -> int | None:
    found = failed.get(sop_uid)
    return found[1] if found else None
