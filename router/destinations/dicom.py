"""The DICOM destination: stored objects by C-STORE over an association kept between batches, MPPS messages and
storage commitment reports by DIMSE-N (``dimse_n``), and storage commitment asked of the peer once a batch that
wants it is delivered (``router.commitment.requester``).

Each object is sent from its file (byte-identical), or transcoded losslessly when the peer took only an
uncompressed syntax for it (``router.scu.association``). The peer's answer is judged by
``router.statuses.classify_peer_status``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import ClassVar

from router.commitment.requester import CommitRequester
from router.config import AnyPeer, DicomPeer
from router.destinations import dimse_n, printer
from router.destinations.base import DestinationContext, Outcome, Unreachable
from router.destinations.payload import job_file
from router.hooks.manager import notify
from router.outbox.jobs import DIMSE_N_KINDS, PRINT_KINDS, JobKind
from router.scu.association import MAX_CONTEXTS, AssociationFailed, Item, NoContext, StoreAssociation, context_count
from router.statuses import SendVerdict, classify_peer_status
from router.store.models import Job

log = logging.getLogger(__name__)


class DicomDestination:
    ordered: ClassVar[bool] = False

    def __init__(self, name: str, peer: AnyPeer, context: DestinationContext) -> None:
        assert isinstance(peer, DicomPeer)
        self.name = name
        self.peer = peer
        self.ctx = context
        self.assoc: StoreAssociation | None = None
        self.committer = CommitRequester(context.config, context.requestor, context.ledger, context.stop)

    @property
    def alive(self) -> bool:
        return self.assoc is not None and self.assoc.alive

    def close(self) -> None:
        if self.assoc is not None:
            self.assoc.close()
            self.assoc = None

    def send(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        n_jobs = [j for j in jobs if j.kind in DIMSE_N_KINDS]
        if n_jobs:  # commitment reports and MPPS messages: over an association of their own
            yield from dimse_n.send_jobs(self.ctx.requestor, self.peer, self.ctx.config.data_dir, n_jobs, self.ctx.pm)
        prints = [j for j in jobs if j.kind in PRINT_KINDS]
        if prints:  # print jobs (a printer: a DICOM peer with a print section): over an association of their own
            yield from printer.send_jobs(self.ctx.requestor, self.peer, self.ctx.config.data_dir, prints)
        stores = [j for j in jobs if j.kind not in DIMSE_N_KINDS and j.kind not in PRINT_KINDS]
        if stores:
            yield from self._send_stores(stores)

    # -- C-STORE --------------------------------------------------------------------------------------------
    def _items(self, jobs: Sequence[Job]) -> dict[int, Item]:
        data_dir = self.ctx.config.data_dir
        return {job.id or 0: Item(data_dir / job.path, job.sop_class_uid, job.transfer_syntax) for job in jobs}

    def _send_stores(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        items = self._items(jobs)
        commit = any(j.kind == JobKind.DICOM_STORE_COMMIT for j in jobs)
        if context_count(items.values()) > MAX_CONTEXTS - commit:  # too many kinds for one association: halve
            jobs = jobs[: len(jobs) // 2]  # the others go back to the queue unreported
            items = {j.id or 0: items[j.id or 0] for j in jobs}
        self._open_for(list(items.values()), commit)
        wanting: dict[int, int] = {}  # job id -> C-STORE status, for the delivered jobs that now want commitment
        for job in jobs:
            if self.ctx.stop.is_set():
                return  # what is left, and what waits for commitment, is sent again later
            try:
                outcome = self._send_one(job, items[job.id or 0])
            except AssociationFailed as exc:
                yield Outcome.retry(job, str(exc))
                assert self.assoc is not None
                self.assoc.abort()  # no valid answer: the association's state is unknown, a release could hang
                self.assoc = None
                break
            if outcome.verdict is SendVerdict.DONE and job.kind == JobKind.DICOM_STORE_COMMIT:
                wanting[job.id or 0] = outcome.status or 0
            else:
                yield outcome
        if wanting:
            yield from self._request_commitment([j for j in jobs if (j.id or 0) in wanting], wanting)

    def _open_for(self, wanted: list[Item], commit: bool) -> None:
        """Make sure the association can carry ``wanted`` (and a commitment request): keep it, or open anew."""
        if self.assoc is not None and not self.assoc.proposes(wanted, commitment=commit):
            self.close()
        if self.assoc is not None and self.assoc.alive:
            return
        on_report = self.committer.on_report if commit else None
        try:
            self.assoc = StoreAssociation(self.ctx.requestor, self.peer, wanted, on_report).open()
        except AssociationFailed as exc:
            self.assoc = None
            raise Unreachable(str(exc)) from exc
        notify(
            self.ctx.pm,
            "router_association_accepted",
            calling_ae=self.ctx.config.ae_title,
            called_ae=self.peer.ae_title,
            address=f"{self.peer.host}:{self.peer.port}",
            direction="outbound",
        )

    def _send_one(self, job: Job, item: Item) -> Outcome:
        """Send one job; raises AssociationFailed when the association is lost on the way."""
        assert self.assoc is not None
        try:
            with job_file(self.ctx.engine, self.ctx.config, job) as path:
                sent = Item(path, item.sop_class_uid, item.transfer_syntax)
                status = self.assoc.send(sent, msg_id=(job.id or 1) % 65536)
        except NoContext as exc:
            return Outcome.permanent(job, str(exc))
        except FileNotFoundError:
            return Outcome.permanent(job, f"stored file {job.path} is missing")
        verdict = classify_peer_status(status)
        if verdict is SendVerdict.DONE:
            return Outcome.done(job, status, f"0x{status:04X}")
        return Outcome(job, verdict, status, f"peer answered 0x{status:04X}")

    def _request_commitment(self, jobs: list[Job], statuses: dict[int, int]) -> Iterator[Outcome]:
        for job in jobs:
            log.info("forwarded %s to %s (0x%04X), storage commitment to follow", job.sop_uid, job.peer,
                     statuses[job.id or 0])  # fmt: skip
        self.assoc = self.committer.request(self.name, self.assoc, jobs, statuses)
        for job in jobs:  # committing now: the commitment ledger finishes them
            yield Outcome(job, SendVerdict.DONE, statuses[job.id or 0], "storage commitment requested", True)
