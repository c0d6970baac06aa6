"""Forward workers: drain the outbox to the peers.

A dispatcher thread looks at the due jobs per peer (woken at once when new jobs are committed, and every
``forward.poll_interval`` seconds). It runs one sender per peer, and more, up to the peer's
``max_associations``, while the backlog is larger than a batch. A sender claims a batch, sends it over one
association, records each outcome as it goes, and keeps the association for the next batch until it has been
idle for ``forward.idle_release`` seconds. When a peer cannot be reached, the peer is left alone until the
earliest retry time of the jobs that failed (so a dead peer costs one connection attempt per backoff step).

Jobs that want storage commitment are asked for once their batch is delivered (``commitment.requester``);
commitment reports and MPPS messages are DIMSE-N jobs sent by ``forward_dimse_n``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pluggy
from sqlalchemy.engine import Engine

from router.commitment import COMMIT_REPORT
from router.commitment.ledger import CommitLedger
from router.commitment.requester import CommitRequester
from router.config import RouterConfig
from router.destinations.corrections import CORRECTED, corrected_copy
from router.destinations.corrections import remove as remove_copy
from router.destinations.dimse_n import N_KINDS, send_jobs
from router.destinations.mllp import HL7Verdict, MllpLink
from router.destinations.stow import StowLink, StowUnreachable, StowVerdict
from router.hooks.manager import notify
from router.intake.dicom import STORE_COMMIT
from router.outbox.queue import Outbox, backoff_delay, drop_if_orphaned, drop_orphans
from router.scu.association import (
    MAX_CONTEXTS,
    AssociationFailed,
    Item,
    NoContext,
    StoreAssociation,
    context_count,
    make_requestor,
)
from router.statuses import SendVerdict, classify_peer_status
from router.store.db import make_engine
from router.store.models import Job

log = logging.getLogger(__name__)
DISPATCH_GAP = 0.05  # s: the least time between two dispatcher passes
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
    statuses: dict[int, int] = field(default_factory=dict)
    since: float = 0.0

    def add(self, job: Job, status: int) -> None:
        if not self.jobs:
            self.since = time.monotonic()
        self.jobs.append(job)
        self.statuses[job.id or 0] = status

    def due(self) -> bool:
        return len(self.jobs) >= DONE_MARKS or (bool(self.jobs) and time.monotonic() - self.since >= DONE_MARK_DELAY)


def make_forwarder(config: RouterConfig, engine: Engine, pm: pluggy.PluginManager, ledger: CommitLedger) -> Forwarder:
    """The forward workers for the database behind ``engine``. Claims and done marks go through an engine of
    their own, whose commits are not flushed one by one (see ``router.store.db``); on SQLite they queue on the
    ledger's write lock with every other writer (see ``router.store.writelock``)."""
    bookkeeping = make_engine(config.effective_database_url, durable=False)
    write_lock = ledger.write_lock if engine.dialect.name == "sqlite" else None
    return Forwarder(config, engine, Outbox(bookkeeping, config.forward, config.data_dir, write_lock), pm, ledger)


class Forwarder:
    def __init__(
        self,
        config: RouterConfig,
        engine: Engine,
        outbox: Outbox,
        pm: pluggy.PluginManager,
        ledger: CommitLedger,
    ):
        self.config = config
        self.engine = engine
        self.outbox = outbox
        self.pm = pm
        self.ae = make_requestor(config)
        self.ledger = ledger
        self.ledger.on_jobs_requeued = self.wake
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}
        self._blocked_until: dict[str, float] = {}
        self._wake = threading.Event()
        self._work = threading.Condition()
        self._generation = 0  # wake() calls so far: a sender compares it with its last claim (see _next_batch)
        self._stop = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._senders: set[threading.Thread] = set()
        self.committer = CommitRequester(config, self.ae, self.ledger, self._stop)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        recovered = self.outbox.recover_inflight()
        if recovered:
            log.info("requeued %d job(s) that were in flight when the router stopped", recovered)
        abandoned = self.ledger.recover()
        if abandoned:
            log.info("%d storage commitment request(s) the peer had not accepted: requested again", abandoned)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="forward-dispatch", daemon=True)
        self._dispatcher.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers (each finishes the object it is sending) and release the outbox's connections."""
        self._stop.set()
        self._wake.set()
        with self._work:
            self._work.notify_all()
        deadline = time.monotonic() + timeout
        for thread in [self._dispatcher, *list(self._senders)]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self.outbox.engine.dispose()

    def wake(self, peers: set[str] | None = None) -> None:
        """New jobs are committed: start senders now and wake idle ones.

        A peer with a sender running needs no dispatcher pass: the sender claims the new jobs itself (one that is
        just giving up wakes the dispatcher on its way out), and a growing backlog gets more associations at the
        next regular pass (``forward.poll_interval``)."""
        with self._lock:
            served = peers is not None and all(self._active.get(peer, 0) > 0 for peer in peers)
        if not served:
            self._wake.set()
        with self._work:
            self._generation += 1
            self._work.notify_all()

    # -- dispatcher ---------------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._dispatch_once()
            except Exception:
                log.exception("forward dispatcher error (will retry)")
            # Every stored object with a forward wakes us; one pass per DISPATCH_GAP is enough (running senders
            # take new jobs themselves), and the passes' queries would otherwise compete with ingest.
            self._stop.wait(DISPATCH_GAP)
            self._wake.wait(self.config.forward.poll_interval)
            self._wake.clear()

    def _dispatch_once(self) -> None:
        self.ledger.expire_overdue()
        batch = self.config.forward.batch_size
        now = time.monotonic()
        for peer_name, due in self.outbox.due_counts().items():
            peer = self.config.peers.get(peer_name)
            if peer is None:
                self._dead_letter_unknown_peer(peer_name)
                continue
            if self._blocked_until.get(peer_name, 0.0) > now:
                continue
            wanted = 1 if peer.is_mllp else min(peer.max_associations, max(1, math.ceil(due / batch)))
            with self._lock:
                running = self._active.get(peer_name, 0)
                for _ in range(wanted - running):
                    self._active[peer_name] = self._active.get(peer_name, 0) + 1
                    thread = threading.Thread(
                        target=self._sender, args=(peer_name,), name=f"forward-{peer_name}", daemon=True
                    )
                    self._senders.add(thread)
                    thread.start()

    def _dead_letter_unknown_peer(self, peer_name: str) -> None:
        jobs = self.outbox.claim(peer_name, 1000)
        self._fail_many(jobs, f"peer {peer_name!r} is not configured", permanent=True)

    # -- sender -------------------------------------------------------------------------------------------
    def _claim(self, peer: str, drained: _Drained) -> list[Job]:
        if self._stop.is_set() or self._blocked_until.get(peer, 0.0) > time.monotonic():
            return []
        # HL7 goes one message at a time, in order (the outbox keeps one stream per MLLP peer)
        limit = 1 if self.config.peers[peer].is_mllp else self.config.forward.batch_size
        generation = self._generation
        jobs = self.outbox.claim(peer, limit)
        drained.at = generation if len(jobs) < limit else None
        return jobs

    def _next_batch(self, peer: str, keep_open: bool, drained: _Drained, delivered: _Delivered) -> list[Job]:
        """The next jobs to send. A sender whose last claim drained the queue, with no job committed since (no
        wake), waits before it claims: claiming at once would find nothing and cost a transaction per object
        while objects stream in one by one. Jobs that become due by time are found at the latest after 0.2 s.

        Done marks are written before the sender waits longer than ``DONE_MARK_GRACE`` (a job for the same
        instance waits for the earlier one's): objects streaming in one by one usually come sooner, and their marks
        then gather for one transaction instead of one each."""
        if delivered.due():
            self._write_done_marks(delivered)
        if not (keep_open and drained.quiet(self._generation)):
            jobs = self._claim(peer, drained)
            if jobs or not keep_open:
                return jobs
        if delivered.jobs:
            if self._wait_for_work(drained, DONE_MARK_GRACE):
                jobs = self._claim(peer, drained)
                if jobs:
                    return jobs
            if self._write_done_marks(delivered):
                jobs = self._claim(peer, drained)
                if jobs:
                    return jobs
        deadline = time.monotonic() + self.config.forward.idle_release
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._wait_for_work(drained, min(0.2, max(0.0, deadline - time.monotonic())))
            jobs = self._claim(peer, drained)
            if jobs:
                return jobs
        return []

    def _wait_for_work(self, drained: _Drained, timeout: float) -> bool:
        """Wait up to ``timeout`` for a wake after the sender's last claim (none if one came already); whether one
        came."""
        with self._work:
            if not drained.news(self._generation):
                self._work.wait(timeout)
            return drained.news(self._generation)

    def _sender(self, peer_name: str) -> None:
        assoc: StoreAssociation | MllpLink | StowLink | None = None
        jobs: list[Job] = []
        drained = _Drained()
        delivered = _Delivered()
        try:
            while not self._stop.is_set():
                jobs = self._next_batch(peer_name, assoc is not None and assoc.alive, drained, delivered)
                if not jobs:
                    return
                if self.config.peers[peer_name].is_stow:
                    assoc = self._send_stow(peer_name, jobs, assoc if isinstance(assoc, StowLink) else None)
                elif self.config.peers[peer_name].is_mllp:
                    assoc = self._send_hl7(peer_name, jobs, assoc if isinstance(assoc, MllpLink) else None)
                else:
                    n_jobs = [j for j in jobs if j.kind in N_KINDS]
                    if n_jobs:
                        self._send_n(peer_name, n_jobs)
                    stores = [j for j in jobs if j.kind not in N_KINDS]
                    if stores:
                        assoc = self._send_batch(
                            peer_name, stores, assoc if isinstance(assoc, StoreAssociation) else None, delivered
                        )
        except Exception:
            log.exception("forward sender for %s crashed", peer_name)
            delivered_ids = {job.id for job in delivered.jobs}
            # what this batch had not finished goes back to pending (inflight only)
            self.outbox.release([job for job in jobs if job.id not in delivered_ids])
        finally:
            self._write_done_marks(delivered)
            if assoc is not None:
                assoc.close()
            with self._lock:
                self._active[peer_name] -= 1
                self._senders.discard(threading.current_thread())
            self._wake.set()  # let the dispatcher re-evaluate the backlog

    def _items(self, jobs: list[Job]) -> dict[int, Item]:
        return {
            job.id or 0: Item(self.config.data_dir / job.path, job.sop_class_uid, job.transfer_syntax) for job in jobs
        }

    def _write_done_marks(self, delivered: _Delivered) -> bool:
        """Write the gathered done marks; whether any were written (a database failure keeps them for later)."""
        if not delivered.jobs:
            return False
        try:
            self.outbox.mark_done(delivered.jobs, delivered.statuses)
        except Exception:
            log.exception("cannot mark %d delivered job(s) done: trying again later", len(delivered.jobs))
            return False
        jobs, delivered.jobs, delivered.statuses = delivered.jobs, [], {}
        try:
            drop_orphans(self.engine, self.config.data_dir, [(job.path, job.sop_uid) for job in jobs])
        except Exception:
            log.exception("cannot look for files the delivered jobs left unused")
        return True

    def _send_batch(
        self, peer_name: str, jobs: list[Job], assoc: StoreAssociation | None, delivered_jobs: _Delivered
    ) -> StoreAssociation | None:
        peer = self.config.peers[peer_name]
        items = self._items(jobs)
        commit = any(j.kind == STORE_COMMIT for j in jobs)
        if context_count(items.values()) > MAX_CONTEXTS - commit:  # too many kinds for one association: halve
            half = len(jobs) // 2
            self.outbox.release(jobs[half:])
            jobs, items = jobs[:half], {j.id or 0: items[j.id or 0] for j in jobs[:half]}
        if assoc is not None and not assoc.proposes(items.values(), commitment=commit):
            assoc.close()
            assoc = None
        if assoc is None or not assoc.alive:
            try:
                on_report = self.committer.on_report if commit else None
                assoc = StoreAssociation(self.ae, peer, items.values(), on_report).open()
            except AssociationFailed as exc:
                self._peer_unreachable(peer_name, jobs, str(exc))
                return None
            notify(
                self.pm,
                "router_association_accepted",
                calling_ae=self.config.ae_title,
                called_ae=peer.ae_title,
                address=f"{peer.host}:{peer.port}",
                direction="outbound",
            )
        delivered: dict[int, int] = {}  # job id -> C-STORE status, for the jobs that now want commitment
        for index, job in enumerate(jobs):
            if self._stop.is_set():
                self.outbox.release(jobs[index:] + [j for j in jobs if j.id in delivered])  # sent again later
                return assoc
            try:
                status = self._send_one(assoc, job, items[job.id or 0], delivered_jobs)
            except AssociationFailed as exc:
                self._fail(job, str(exc), permanent=False)
                self.outbox.release(jobs[index + 1 :])
                assoc.abort()  # no valid answer: the association's state is unknown, a release could wait for ever
                assoc = None
                break
            if status is not None:
                delivered[job.id or 0] = status
        if delivered:
            return self.committer.request(peer_name, assoc, [j for j in jobs if j.id in delivered], delivered)
        return assoc

    def _send_n(self, peer_name: str, jobs: list[Job]) -> None:
        """Commitment reports and MPPS messages, over an association of their own."""
        try:
            outcomes, unsent = send_jobs(self.ae, self.config.peers[peer_name], self.config.data_dir, jobs)
        except AssociationFailed as exc:
            self._peer_unreachable(peer_name, jobs, str(exc))
            return
        for outcome in outcomes:
            job = outcome.job
            if outcome.verdict is SendVerdict.DONE:
                self.outbox.mark_done([job], {job.id or 0: outcome.status or 0})
                log.info("forwarded %s %s to %s (%s)", job.kind, job.sop_uid, job.peer, outcome.reason)
                notify(self.pm, "router_forwarded", job=job, status=outcome.status or 0)
                if job.kind == COMMIT_REPORT:
                    drop_if_orphaned(self.engine, self.config.data_dir, job.path, job.sop_uid)
            else:
                self._fail(job, outcome.reason, outcome.verdict is SendVerdict.PERMANENT, outcome.status)
        self.outbox.release(unsent)

    def _send_hl7(self, peer_name: str, jobs: list[Job], link: MllpLink | None) -> MllpLink | None:
        peer = self.config.peers[peer_name]
        try:
            if link is None or not link.alive:
                link = MllpLink(peer, self.config.dicom.timeouts.dimse).open()
        except ConnectionError as exc:
            self._peer_unreachable(peer_name, jobs, str(exc))
            return None
        for index, job in enumerate(jobs):
            if self._stop.is_set():
                self.outbox.release(jobs[index:])
                return link
            try:
                verdict, reason = link.send(self.config.data_dir / job.path)
            except FileNotFoundError:
                self._fail(job, f"stored message {job.path} is missing", permanent=True)
                continue
            except ConnectionError as exc:
                self._fail(job, str(exc), permanent=False)
                self.outbox.release(jobs[index + 1 :])
                link.close()
                return None
            if verdict is HL7Verdict.DONE:
                self.outbox.mark_done([job], {})
                log.info("forwarded HL7 %s to %s (%s)", job.sop_class_uid, job.peer, reason)
                notify(self.pm, "router_forwarded", job=job, status=0)
                drop_if_orphaned(self.engine, self.config.data_dir, job.path, job.sop_uid)
            else:
                self._fail(job, reason, permanent=verdict is HL7Verdict.PERMANENT)
        return link

    def _send_stow(self, peer_name: str, jobs: list[Job], link: StowLink | None) -> StowLink | None:
        peer = self.config.peers[peer_name]
        if link is None or not link.alive:
            link = StowLink(peer, self.config.dicom.timeouts.dimse)
        copies: list[Path] = []
        try:
            items = []
            for job in jobs:
                path = self.config.data_dir / job.path
                if job.kind == CORRECTED:
                    path = corrected_copy(self.engine, self.config, job)
                    copies.append(path)
                items.append((job.sop_uid, path))
            try:
                verdicts = link.send(items)
            except FileNotFoundError as exc:
                self._fail_many(jobs, f"a stored file is missing: {exc.filename}", permanent=True)
                return link
            except StowUnreachable as exc:
                self._peer_unreachable(peer_name, jobs, str(exc))
                link.close()
                return None
        finally:
            for copy in copies:
                remove_copy(copy)
        for job, (verdict, reason) in zip(jobs, verdicts, strict=True):
            if verdict is StowVerdict.DONE:
                self.outbox.mark_done([job], {})
                notify(self.pm, "router_forwarded", job=job, status=0)
                drop_if_orphaned(self.engine, self.config.data_dir, job.path, job.sop_uid)
            else:
                self._fail(job, reason, permanent=verdict is StowVerdict.PERMANENT)
        log.info("STOW-RS to %s: %d of %d delivered", peer_name,
                 sum(v is StowVerdict.DONE for v, _ in verdicts), len(jobs))  # fmt: skip
        return link

    def _send_one(self, assoc: StoreAssociation, job: Job, item: Item, delivered: _Delivered) -> int | None:
        """Send one job; its C-STORE status when it was delivered and now wants storage commitment. A job
        delivered without commitment joins ``delivered`` (its done mark is written with the others)."""
        corrected: Path | None = None
        try:
            if job.kind == CORRECTED:
                corrected = corrected_copy(self.engine, self.config, job)
                item = Item(corrected, item.sop_class_uid, item.transfer_syntax)
            status = assoc.send(item, msg_id=(job.id or 1) % 65536)
        except NoContext as exc:
            self._fail(job, str(exc), permanent=True)
            return None
        except FileNotFoundError:
            self._fail(job, f"stored file {job.path} is missing", permanent=True)
            return None
        finally:
            remove_copy(corrected)
        verdict = classify_peer_status(status)
        if verdict is SendVerdict.DONE and job.kind == STORE_COMMIT:
            log.info("forwarded %s to %s (0x%04X), storage commitment to follow", job.sop_uid, job.peer, status)
            return status
        if verdict is SendVerdict.DONE:
            delivered.add(job, status)
            log.info("forwarded %s to %s (0x%04X)", job.sop_uid, job.peer, status)
            notify(self.pm, "router_forwarded", job=job, status=status)
        else:
            self._fail(job, f"peer answered 0x{status:04X}", verdict is SendVerdict.PERMANENT, status)
        return None

    def _fail(self, job: Job, error: str, permanent: bool, status: int | None = None) -> None:
        [dead] = self._fail_many([job], error, permanent, status)
        log.warning(
            "forward of %s to %s failed (attempt %d%s): %s",
            job.sop_uid,
            job.peer,
            job.attempts,
            ", dead-lettered" if dead else "",
            error,
        )

    def _fail_many(self, jobs: list[Job], error: str, permanent: bool, status: int | None = None) -> list[bool]:
        """Record a failed attempt for each job (one transaction) and tell the plugins; which are now dead."""
        verdicts = self.outbox.mark_failed_many(jobs, error, permanent, status)
        for job, dead in zip(jobs, verdicts, strict=True):
            notify(self.pm, "router_forward_failed", job=job, error=error, dead=dead)
        return verdicts

    def _peer_unreachable(self, peer_name: str, jobs: list[Job], error: str) -> None:
        """The first failure of a round charges every pending job of the peer, not just this batch: jobs age
        together, so an outage dead-letters none or all of them, never just the head of the queue. A sender
        failing in the same round (the peer already blocked) charges only its own batch."""
        with self._lock:
            first = self._blocked_until.get(peer_name, 0.0) <= time.monotonic()
            if first:
                self._blocked_until[peer_name] = math.inf  # until this round is recorded
        if first:
            jobs = jobs + self.outbox.claim(peer_name, 1_000_000, due_only=False)
        verdicts = self._fail_many(jobs, error, permanent=False)
        log.warning(
            "%s unreachable (%s): %d job(s) wait, %d dead-lettered",
            peer_name,
            error,
            verdicts.count(False),
            verdicts.count(True),
        )
        if first:
            attempts = max(j.attempts for j in jobs)  # how long the outage has lasted, not the newest arrival
            self._blocked_until[peer_name] = time.monotonic() + backoff_delay(attempts, self.config.forward)
