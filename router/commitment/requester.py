"""Asking a peer for storage commitment once a batch has been delivered (the forward workers' side).

After the C-STOREs of a batch, the jobs that want commitment are recorded as a new transaction (``CommitLedger
.begin``) and an N-ACTION with its fresh Transaction UID goes over the same association (or, when that one was
lost, a new one proposing only Storage Commitment). The sender then waits up to the peer's ``commit_wait`` for
the N-EVENT-REPORT on that association; if none comes it releases the association and the report is accepted
later on a new association from the peer (``DicomListener``), until ``commit_timeout`` runs out.
"""

from __future__ import annotations

import logging
import threading

from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from router.commitment import STORAGE_COMMITMENT
from router.commitment.datasets import Ref, action_information, read_report
from router.commitment.ledger import CommitLedger
from router.config import RouterConfig
from router.hooks.manager import notify
from router.logs import redact
from router.scu.association import AssociationFailed, StoreAssociation
from router.statuses import PROCESSING_FAILURE, UNRECOGNISED_OPERATION, dimse_status, is_success
from router.store.models import Job

log = logging.getLogger(__name__)


def handle_report(ledger: CommitLedger, event: evt.Event, remote_ae: str) -> tuple[Dataset, None]:
    """EVT_N_EVENT_REPORT on any association: a peer reports on a commitment we requested."""
    if str(event.request.AffectedSOPClassUID) != STORAGE_COMMITMENT:
        return dimse_status(UNRECOGNISED_OPERATION, "no event reports accepted for this SOP class"), None
    try:
        info = event.event_information
    except Exception as exc:
        log.warning("storage commitment report from %s cannot be decoded: %s", remote_ae, redact(exc))
        return dimse_status(PROCESSING_FAILURE, "cannot decode the Event Information"), None
    status, comment = ledger.apply_report(remote_ae, info)
    if status:
        log.warning("storage commitment report from %s refused (0x%04X): %s", remote_ae, status, redact(comment))
    else:
        _announce_report(ledger, event, remote_ae, info)
    return dimse_status(status, comment), None


def _announce_report(ledger: CommitLedger, event: evt.Event, remote_ae: str, info: Dataset) -> None:
    """``router_commitment_reported`` (inbound): the peer's report, as it named the instances."""
    report = read_report(info)
    other = event.assoc.acceptor if event.assoc.is_requestor else event.assoc.requestor
    notify(ledger.pm, "router_commitment_reported", transaction_uid=report.transaction_uid, direction="inbound",
           peer_ae=remote_ae, address=f"{other.address}:{other.port}", committed=sorted(report.committed),
           failed=sorted(report.failed))  # fmt: skip


class CommitRequester:
    def __init__(self, config: RouterConfig, ae: AE, ledger: CommitLedger, stop: threading.Event) -> None:
        self.config = config
        self.ae = ae
        self.ledger = ledger
        self.stop = stop

    def on_report(self, event: evt.Event) -> tuple[Dataset, None]:
        """The report on an association we opened (the peer is its acceptor)."""
        return handle_report(self.ledger, event, str(event.assoc.acceptor.ae_title).strip())

    def request(
        self, peer_name: str, assoc: StoreAssociation | None, jobs: list[Job], statuses: dict[int, int]
    ) -> StoreAssociation | None:
        """Request commitment for delivered ``jobs``; the association to keep using, or None (released)."""
        uid, refs = self.ledger.begin(peer_name, jobs, statuses)
        try:
            return self._request(peer_name, assoc, uid, refs)
        except Exception as exc:  # never leave a transaction 'requesting' behind a crashed sender
            log.exception("storage commitment %s to %s failed unexpectedly", uid, peer_name)
            if assoc is not None:
                assoc.abort()
            self.ledger.fail(uid, f"internal error while requesting commitment: {exc!r}")
            return None

    def _request(
        self, peer_name: str, assoc: StoreAssociation | None, uid: str, refs: list[Ref]
    ) -> StoreAssociation | None:
        peer = self.config.dicom_peer(peer_name)
        if peer is None:
            self.ledger.fail(uid, f"{peer_name} is not a DICOM peer: no storage commitment", permanent=True)
            return None
        if assoc is None or not assoc.alive:
            try:
                assoc = StoreAssociation(self.ae, peer, [], self.on_report).open()
            except AssociationFailed as exc:
                self.ledger.fail(uid, f"cannot request storage commitment: {exc}")
                return None
        if not assoc.can_commit:
            assoc.close()
            self.ledger.fail(uid, f"{peer_name} accepted no Storage Commitment Push Model context", permanent=True)
            return None
        try:
            status = assoc.request_commitment(action_information(uid, refs))
        except AssociationFailed:
            status = None
        if status is None:
            assoc.close()
            self.ledger.fail(uid, f"no N-ACTION response from {peer_name} (timeout or association lost)")
            return None
        if not is_success(status):
            assoc.abort()  # as the ISUDM statement does after a refused N-ACTION
            self.ledger.fail(uid, f"{peer_name} refused the commitment request: N-ACTION status 0x{status:04X}")
            return None
        self.ledger.accepted(uid)
        log.info("storage commitment %s requested from %s for %d instance(s)", uid, peer_name, len(refs))
        notify(self.ledger.pm, "router_commitment_requested", transaction_uid=uid, direction="outbound",
               peer_ae=peer.ae_title, address=f"{peer.host}:{peer.port}",
               sop_instance_uids=[ref.sop_uid for ref in refs])  # fmt: skip
        if self.ledger.wait(uid, peer.commit_wait, self.stop):
            return assoc
        log.info(
            "no report for %s on the association within %g s: released; %s may report on a new association",
            uid,
            peer.commit_wait,
            peer_name,
        )
        assoc.close()
        return None
