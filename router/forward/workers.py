"""Forward workers: drain the outbox to the peers.

A dispatcher thread looks at the due jobs per peer (woken at once when new jobs are committed, and every
``forward.poll_interval`` seconds). It runs one sender per peer (``router.forward.sender``), and more, up to the
peer's ``max_associations``, while the backlog is larger than a batch (one only for an ordered destination, HL7).
Each sender owns the destination of its peer (``router.destinations``, chosen by the peer's ``type``), claims a
batch, hands it to the destination and records each outcome. When a peer cannot be reached, the peer is left alone
until the earliest retry time of the jobs that failed (so a dead peer costs one connection attempt per backoff
step).

Several nodes may share one PostgreSQL database (docs/cluster.md): what a node claims is leased to it and renewed
by its heartbeat (``router.outbox.leases``), jobs queued on other nodes wake it through ``LISTEN``
(``router.outbox.wakes``), and a peer's ``max_associations`` counts the senders of every node
(``router.forward.slots``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time

import pluggy
from sqlalchemy.engine import Engine

from router.commitment.ledger import CommitLedger
from router.config import RouterConfig
from router.destinations.base import Destination, DestinationContext, DestinationType
from router.destinations.registry import destination_type
from router.forward.sender import Sender, _Drained
from router.forward.slots import PeerSlots, Slot
from router.hooks.manager import notify
from router.outbox.leases import NodeKeeper
from router.outbox.queue import Outbox, backoff_delay
from router.outbox.wakes import JobListener, origin_of
from router.scu.association import make_requestor
from router.store.db import make_engine
from router.store.models import Job

log = logging.getLogger(__name__)
DISPATCH_GAP = 0.05  # s: the least time between two dispatcher passes


def make_forwarder(
    config: RouterConfig, engine: Engine, pm: pluggy.PluginManager, ledger: CommitLedger, serving_pid: int | None = None
) -> Forwarder:
    """The forward workers for the database behind ``engine``. Claims and done marks go through an engine of
    their own, whose commits are not flushed one by one (see ``router.store.db``); on SQLite they queue on the
    ledger's write lock with every other writer (see ``router.store.writelock``). ``serving_pid``: the serving
    process's id when the workers run in a process of their own (it names the node's instance)."""
    bookkeeping = make_engine(config.effective_database_url, durable=False)
    write_lock = ledger.write_lock if engine.dialect.name == "sqlite" else None
    outbox = Outbox(bookkeeping, config.forward, config.data_dir, write_lock, node_id=config.node_id)
    return Forwarder(config, engine, outbox, pm, ledger, origin_of(serving_pid or os.getpid()))


class Forwarder:
    def __init__(
        self,
        config: RouterConfig,
        engine: Engine,
        outbox: Outbox,
        pm: pluggy.PluginManager,
        ledger: CommitLedger,
        instance: str = "",
    ):
        self.config = config
        self.engine = engine
        self.outbox = outbox
        self.pm = pm
        self.ledger = ledger
        self.ledger.on_jobs_requeued = self.wake
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}
        self._blocked_until: dict[str, float] = {}
        self._wake = threading.Event()
        self._work = threading.Condition()
        self.generation = 0  # wake() calls so far: a sender compares it with its last claim (Sender._next_batch)
        self._stop = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._senders: set[threading.Thread] = set()
        self.context = DestinationContext(config, engine, pm, self._stop, make_requestor(config, pm), ledger)
        self._types: dict[str, DestinationType | None] = {
            name: destination_type(pm, peer.type) for name, peer in config.peers.items()
        }
        cluster = engine.dialect.name == "postgresql"
        self.keeper = NodeKeeper(outbox, instance or origin_of(os.getpid()), cluster, self._taken_over)
        self.slots = PeerSlots(config.effective_database_url)
        self.listener = JobListener(config.effective_database_url, self.keeper.instance, self.wake) if cluster else None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        recovered = self.keeper.recover()
        if recovered:
            log.info(
                "requeued %d job(s) that were in flight when the router stopped (or their lease expired)", recovered
            )
        abandoned = self.ledger.recover()
        if abandoned:
            log.info("%d storage commitment request(s) the peer had not accepted: requested again", abandoned)
        self.keeper.start()
        if self.listener is not None:
            self.listener.start()
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
        if self.listener is not None:
            self.listener.stop()
        self.keeper.stop()  # after the senders: their leases are renewed until they have ended
        self.slots.dispose()
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
            self.generation += 1
            self._work.notify_all()

    def _taken_over(self, peers: dict[str, int]) -> None:
        """The heartbeat put back jobs of a node whose lease expired: announce it and send them."""
        notify(self.pm, "router_jobs_taken_over", node_id=self.config.node_id, peers=peers)
        self.wake(set(peers))

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
        if self.keeper.cluster and self.ledger.take_over_silent():
            log.warning("abandoned storage commitment requests of a silent node: their jobs are sent again")
        now = time.monotonic()
        for peer_name, due in self.outbox.due_counts().items():
            kind = self._types.get(peer_name)
            if kind is None:
                self._dead_letter_undeliverable(peer_name)
                continue
            if self._blocked_until.get(peer_name, 0.0) > now:
                continue
            with self._lock:  # only this thread starts senders: the count cannot grow meanwhile
                missing = self._senders_wanted(peer_name, kind, due) - self._active.get(peer_name, 0)
            for _ in range(missing):
                self._start_sender(peer_name, kind)

    def _senders_wanted(self, peer_name: str, kind: DestinationType, due: int) -> int:
        if getattr(kind, "ordered", False):
            return 1
        backlog = max(1, math.ceil(due / self.config.forward.batch_size))
        return min(self.config.peers[peer_name].max_associations, backlog)

    def _start_sender(self, peer_name: str, kind: DestinationType) -> None:
        """Start one more sender for ``peer_name`` if the cluster has an association slot left for it. A
        destination that cannot be made (a plugin's bug, a setting it refuses late) counts as an unreachable peer:
        its jobs wait with backoff and end as dead letters."""
        limit = 1 if getattr(kind, "ordered", False) else self.config.peers[peer_name].max_associations
        slot = self.slots.take(peer_name, limit)
        if slot is None:
            return  # every association the peer allows is in use, on this node or another
        try:
            destination = kind(peer_name, self.config.peers[peer_name], self.context)
        except Exception as exc:
            slot.release()
            log.exception("cannot make the destination of %s", peer_name)
            self.peer_unreachable(peer_name, [], f"cannot make the destination: {exc!r}")
            return
        thread = threading.Thread(
            target=self._run_sender, args=(peer_name, destination, slot), name=f"forward-{peer_name}", daemon=True
        )
        with self._lock:
            self._active[peer_name] = self._active.get(peer_name, 0) + 1
            self._senders.add(thread)
        thread.start()

    def _run_sender(self, peer_name: str, destination: Destination, slot: Slot) -> None:
        try:
            Sender(self, peer_name, destination).run()
        finally:
            slot.release()
            with self._lock:
                self._active[peer_name] -= 1
                self._senders.discard(threading.current_thread())
            self._wake.set()  # let the dispatcher re-evaluate the backlog

    def _dead_letter_undeliverable(self, peer_name: str) -> None:
        peer = self.config.peers.get(peer_name)
        error = (
            f"peer {peer_name!r} is not configured"
            if peer is None
            else f"no destination of type {peer.type!r} is provided for peer {peer_name!r}"
        )
        self.fail_many(self.outbox.claim(peer_name, 1000), error, permanent=True)

    # -- what senders share -----------------------------------------------------------------------------------
    def blocked(self, peer: str) -> bool:
        """Whether ``peer`` is being left alone after it could not be reached."""
        return self._blocked_until.get(peer, 0.0) > time.monotonic()

    def wait_for_work(self, drained: _Drained, timeout: float) -> bool:
        """Wait up to ``timeout`` for a wake after a sender's last claim (none if one came already); whether one
        came."""
        with self._work:
            if not drained.news(self.generation):
                self._work.wait(timeout)
            return drained.news(self.generation)

    def fail(self, job: Job, error: str, permanent: bool, status: int | None = None) -> None:
        [dead] = self.fail_many([job], error, permanent, status)
        log.warning(
            "forward of %s to %s failed (attempt %d%s): %s",
            job.sop_uid,
            job.peer,
            job.attempts,
            ", dead-lettered" if dead else "",
            error,
        )

    def fail_many(self, jobs: list[Job], error: str, permanent: bool, status: int | None = None) -> list[bool | None]:
        """Record a failed attempt for each job (one transaction) and tell the plugins; which are now dead (None:
        the job's lease was taken over by another node, and this outcome dropped)."""
        verdicts = self.outbox.mark_failed_many(jobs, error, permanent, status)
        for job, dead in zip(jobs, verdicts, strict=True):
            if dead is not None:
                notify(self.pm, "router_forward_failed", job=job, error=error, dead=dead)
        return verdicts

    def peer_unreachable(self, peer_name: str, jobs: list[Job], error: str) -> None:
        """The first failure of a round charges every pending job of the peer, not just this batch: jobs age
        together, so an outage dead-letters none or all of them, never just the head of the queue. A sender
        failing in the same round (the peer already blocked) charges only its own batch."""
        with self._lock:
            first = self._blocked_until.get(peer_name, 0.0) <= time.monotonic()
            if first:
                self._blocked_until[peer_name] = math.inf  # until this round is recorded
        if first:
            jobs = jobs + self.outbox.claim(peer_name, 1_000_000, due_only=False)
        verdicts = self.fail_many(jobs, error, permanent=False)
        log.warning(
            "%s unreachable (%s): %d job(s) wait, %d dead-lettered",
            peer_name,
            error,
            verdicts.count(False),
            verdicts.count(True),
        )
        if first:
            attempts = max((j.attempts for j in jobs), default=1)  # how long the outage has lasted, not the newest
            self._blocked_until[peer_name] = time.monotonic() + backoff_delay(attempts, self.config.forward)
