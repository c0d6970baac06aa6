"""Sending queued DIMSE-N messages to a DICOM peer: storage commitment reports and MPPS N-CREATE / N-SET.

One association per round carries the jobs claimed for the peer, in order (the outbox hands out one job per
MPPS instance or transaction at a time). Storage Commitment is proposed with SCP/SCU role selection, the router
in the SCP role, as PS3.4 J.3.3 asks of an SCP that opens the association for its report; MPPS with the default
roles. Both with Explicit and Implicit VR Little Endian.

| answer | job |
| --- | --- |
| success, warning (0x0001, 0xBxxx); 0x0111 to an N-CREATE (the peer already has the step) | done |
| 0xA7xx, 0x0213 resource limitation, unknown status, 0x0110 to an N-CREATE or a report, no response | retried |
| any other failure (0x0110 to an N-SET: the step may no longer be updated; 0x0112, 0x0115 ...) | dead |
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pluggy
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from router import storage
from router.commitment import STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
from router.commitment.datasets import event_type_of, report_uids
from router.config import DicomPeer
from router.destinations.base import Outcome, Unreachable
from router.hooks.calls import notify
from router.mpps import MPPS
from router.outbox.jobs import JobKind
from router.scu.association import UNCOMPRESSED, AssociationFailed, open_association
from router.statuses import (
    DUPLICATE_INSTANCE,
    PROCESSING_FAILURE,
    RESOURCE_LIMITATION,
    SendVerdict,
    is_out_of_resources,
    is_success,
)
from router.store.datasets import from_part10
from router.store.models import Job

_CLASS = {JobKind.COMMIT_REPORT: STORAGE_COMMITMENT, JobKind.MPPS_CREATE: MPPS, JobKind.MPPS_SET: MPPS}
_NAME = {JobKind.COMMIT_REPORT: "commitment report", JobKind.MPPS_CREATE: "MPPS N-CREATE",
         JobKind.MPPS_SET: "MPPS N-SET"}  # fmt: skip


def classify(kind: str, status: int) -> SendVerdict:
    if is_success(status):
        return SendVerdict.DONE
    if kind == JobKind.MPPS_CREATE and status == DUPLICATE_INSTANCE:
        return SendVerdict.DONE
    if is_out_of_resources(status) or status == RESOURCE_LIMITATION:
        return SendVerdict.RETRY
    if status == PROCESSING_FAILURE and kind != JobKind.MPPS_SET:
        return SendVerdict.RETRY
    if 0x0100 <= status <= 0x02FF or 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF:
        return SendVerdict.PERMANENT
    return SendVerdict.RETRY


def _open(ae: AE, peer: DicomPeer, kinds: set[str]) -> Association:
    """One association for these kinds of jobs: Storage Commitment with the router in the SCP role (PS3.4 J.3.3, the
    SCP opens the association for its report), MPPS with the default roles."""
    classes = sorted({_CLASS[JobKind(k)] for k in kinds})
    contexts = [build_context(uid, list(UNCOMPRESSED)) for uid in classes]
    roles: list[Any] = []
    if STORAGE_COMMITMENT in classes:
        roles.append(build_role(STORAGE_COMMITMENT, scu_role=False, scp_role=True))
    return open_association(ae, peer, contexts, ext_neg=roles)


def _send(assoc: Association, job: Job, ds: Dataset) -> Dataset:
    if job.kind == JobKind.COMMIT_REPORT:
        status, _reply = assoc.send_n_event_report(ds, event_type_of(ds), STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
    elif job.kind == JobKind.MPPS_CREATE:
        status, _attrs = assoc.send_n_create(ds, MPPS, job.sop_uid)
    else:
        status, _attrs = assoc.send_n_set(ds, MPPS, job.sop_uid)
    return status


def send_jobs(
    ae: AE, peer: DicomPeer, data_dir: Path, jobs: Sequence[Job], pm: pluggy.PluginManager
) -> Iterator[Outcome]:
    """Send ``jobs`` over one association of their own, in order: the outcome of each job attempted. Raises
    Unreachable when no association could be made; stops early when the association is lost."""
    try:
        assoc = _open(ae, peer, {j.kind for j in jobs})
    except AssociationFailed as exc:
        raise Unreachable(str(exc)) from exc
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    try:
        for job in jobs:
            outcome = _one(assoc, peer, data_dir, job, accepted, pm)
            yield outcome
            if outcome.verdict is SendVerdict.RETRY and outcome.status is None:
                return  # the association was lost: the rest go back to the queue
    finally:
        if assoc.is_established:
            assoc.release()


def _one(
    assoc: Association, peer: DicomPeer, data_dir: Path, job: Job, accepted: set[str], pm: pluggy.PluginManager
) -> Outcome:
    kind = JobKind(job.kind)
    what = _NAME[kind]
    if _CLASS[kind] not in accepted:
        return Outcome.permanent(job, f"{peer.ae_title} accepted no context for {what} ({_CLASS[kind]})")
    try:
        ds = from_part10(storage.at(data_dir).read_bytes(job.path))
    except FileNotFoundError:
        return Outcome.permanent(job, f"stored {what} {job.path} is missing")
    try:
        rsp = _send(assoc, job, ds) if assoc.is_established else Dataset()
    except ValueError as exc:  # pynetdicom cannot encode the dataset
        return Outcome.permanent(job, f"cannot send {what}: {exc}")
    if "Status" not in rsp:
        return Outcome.retry(job, f"no valid {what} response (association lost)")
    status = int(rsp.Status)
    comment = f" ({rsp.ErrorComment})" if "ErrorComment" in rsp else ""
    verdict = classify(job.kind, status)
    if kind == JobKind.COMMIT_REPORT and verdict is SendVerdict.DONE:
        _announce_report(pm, peer, job.sop_uid, ds)
    return Outcome(job, verdict, status, f"peer answered 0x{status:04X}{comment}")


def _announce_report(pm: pluggy.PluginManager, peer: DicomPeer, transaction_uid: str, info: Dataset) -> None:
    """``router_commitment_reported`` (outbound) for a report the outbox delivered on a new association."""
    committed, failed = report_uids(info)
    notify(pm, "router_commitment_reported", transaction_uid=transaction_uid, direction="outbound",
           peer_ae=peer.ae_title, address=f"{peer.host}:{peer.port}", committed=committed, failed=failed)  # fmt: skip
