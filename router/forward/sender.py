"""One peer's sender: it claims batches of the peer's jobs, hands them to the peer's destination and records every
outcome the same way, whatever the destination.

- delivered: done (the done marks of up to ``DONE_MARKS`` jobs are written in one transaction, see ``_Delivered``;
  an ordered destination's at once, since the next job of its stream waits for it), ``router_forwarded``;
- handed over (storage commitment requested): nothing here, the commitment ledger finishes the job;
- refused or failed: ``Outbox.mark_failed_many`` (retried with backoff, or dead-lettered), ``router_forward_failed``;
- the peer unreachable: every job of the peer is charged and the peer left alone until its backoff has passed;
- not reported (the link was lost, the router is stopping): back to pending, untouched.

While the queue is drained the sender keeps the destination's link open for ``forward.idle_release`` seconds and
waits for work (``Forwarder.wake``) instead of polling the database.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from router.destinations.base import Destination, Outcome, Unreachable
from router.hooks.manager import notify
from router.outbox.jobs import KEPT_FILES
from router.outbox.orphans import drop_orphans
from router.statuses import SendVerdict
from router.store.models import Job

if TYPE_CHECKING:
    from router.forward.workers import Forwarder

log = logging.getLogger(__name__)
DONE_MARKS = 64  # delivered jobs whose done marks a sender writes in one transaction, at most
DONE_MARK_DELAY = 1.0  # s: the longest a delivered job waits for its done mark while the sender is busy
DONE_MARK_GRACE = 0.02  # s: a drained sender holding done marks waits this long for more work before writing them


@dataclass
class _Drained:
    """A sender's memory of its last claim: the wake generation it started at, if it came back short."""

    at: int | None = None

    def quiet(self, generation: int) -> bool:
        """The last claim drained the queue and no wake came since."""
        return self.at is not None and self.at == generation

    def news(self, generation: int) -> bool:
        """The last claim drained the queue and a wake came since."""
        return self.at is not None and self.at != generation


@dataclass
class _Delivered:
    """Jobs a sender delivered whose done marks are not written yet: written together, in one transaction, once
    ``DONE_MARKS`` have gathered, ``DONE_MARK_DELAY`` has passed, the queue is drained or the sender stops. Until
    then they are inflight in the database; a crash puts them back to pending and they are delivered once more
    (at-least-once, as for any job in flight)."""

    jobs: list[Job] = field(default_factory=list)
    statuses: dict[int, int | None] = field(default_factory=dict)
    since: float = 0.0

    def add(self, job: Job, status: int | None) -> None:
        if not self.jobs:
            self.since = time.monotonic()
        self.jobs.append(job)
        self.statuses[job.id or 0] = status

    def due(self) -> bool:
        return len(self.jobs) >= DONE_MARKS or (bool(self.jobs) and time.monotonic() - self.since >= DONE_MARK_DELAY)


class Sender:
    """The loop of one sender thread for ``peer`` (``Forwarder`` starts it and counts it)."""

    def __init__(self, workers: Forwarder, peer: str, destination: Destination) -> None:
        self.workers = workers
        self.peer = peer
        self.destination = destination
        self.limit = 1 if destination.ordered else workers.config.forward.batch_size
        self.drained = _Drained()
        self.delivered = _Delivered()

    def run(self) -> None:
        jobs: list[Job] = []
        try:
            while not self.workers.stopping:
                jobs = self._next_batch(self.destination.alive)
                if not jobs:
                    return
                self._send(jobs)
                jobs = []
        except Exception:
            log.exception("forward sender for %s crashed", self.peer)
            delivered = {job.id for job in self.delivered.jobs}
            # what this batch had not finished goes back to pending (inflight only)
            self.workers.outbox.release([job for job in jobs if job.id not in delivered])
        finally:
            self._write_done_marks()
            self.destination.close()

    def _send(self, jobs: list[Job]) -> None:
        reported: set[int | None] = set()
        try:
            for outcome in self.destination.send(jobs):
                reported.add(outcome.job.id)
                self._record(outcome)
        except Unreachable as exc:
            self.workers.peer_unreachable(self.peer, [j for j in jobs if j.id not in reported], str(exc))
            return
        self.workers.outbox.release([j for j in jobs if j.id not in reported])  # sent again later

    def _record(self, outcome: Outcome) -> None:
        job = outcome.job
        if outcome.handed_over:
            return
        if outcome.verdict is not SendVerdict.DONE:
            self.workers.fail(job, outcome.reason, outcome.verdict is SendVerdict.PERMANENT, outcome.status)
            return
        self.delivered.add(job, outcome.status)
        if self.destination.ordered:  # the next job of the stream waits for this one's mark
            self._write_done_marks()
        log.info("forwarded %s %s to %s (%s)", job.kind, job.sop_uid, job.peer, outcome.reason)
        notify(self.workers.pm, "router_forwarded", job=job, status=outcome.status or 0)

    # -- claiming ------------------------------------------------------------------------------------------
    def _claim(self) -> list[Job]:
        if self.workers.stopping or self.workers.blocked(self.peer):
            return []
        generation = self.workers.generation
        jobs = self.workers.outbox.claim(self.peer, self.limit)
        self.drained.at = generation if len(jobs) < self.limit else None
        return jobs

    def _next_batch(self, keep_open: bool) -> list[Job]:
        """The next jobs to send. A sender whose last claim drained the queue, with no job committed since (no
        wake), waits before it claims: claiming at once would find nothing and cost a transaction per object
        while objects stream in one by one. Jobs that become due by time are found at the latest after 0.2 s.

        Done marks are written before the sender waits longer than ``DONE_MARK_GRACE`` (a job for the same
        instance waits for the earlier one's): objects streaming in one by one usually come sooner, and their marks
        then gather for one transaction instead of one each."""
        if self.delivered.due():
            self._write_done_marks()
        if not (keep_open and self.drained.quiet(self.workers.generation)):
            jobs = self._claim()
            if jobs or not keep_open:
                return jobs
        if self.delivered.jobs:
            if self.workers.wait_for_work(self.drained, DONE_MARK_GRACE) and (jobs := self._claim()):
                return jobs
            if self._write_done_marks() and (jobs := self._claim()):
                return jobs
        deadline = time.monotonic() + self.workers.config.forward.idle_release
        while not self.workers.stopping and time.monotonic() < deadline:
            self.workers.wait_for_work(self.drained, min(0.2, max(0.0, deadline - time.monotonic())))
            jobs = self._claim()
            if jobs:
                return jobs
        return []

    def _write_done_marks(self) -> bool:
        """Write the gathered done marks; whether any were written (a database failure keeps them for later)."""
        delivered = self.delivered
        if not delivered.jobs:
            return False
        try:
            self.workers.outbox.mark_done(delivered.jobs, delivered.statuses)
        except Exception:
            log.exception("cannot mark %d delivered job(s) done: trying again later", len(delivered.jobs))
            return False
        jobs, delivered.jobs, delivered.statuses = delivered.jobs, [], {}
        try:
            payloads = [(job.path, job.sop_uid) for job in jobs if job.kind not in KEPT_FILES]
            drop_orphans(self.workers.engine, self.workers.config.data_dir, payloads)
        except Exception:
            log.exception("cannot look for files the delivered jobs left unused")
        return True
