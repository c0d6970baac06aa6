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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from router.commitment import COMMIT_REPORT, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
from router.commitment.datasets import event_type_of
from router.config import Peer
from router.mpps import MPPS, MPPS_CREATE, MPPS_SET
from router.scu.association import UNCOMPRESSED, AssociationFailed, set_nodelay
from router.statuses import SendVerdict
from router.store.datasets import from_part10
from router.store.models import Job

N_KINDS = frozenset({COMMIT_REPORT, MPPS_CREATE, MPPS_SET})
_CLASS = {COMMIT_REPORT: STORAGE_COMMITMENT, MPPS_CREATE: MPPS, MPPS_SET: MPPS}
_NAME = {COMMIT_REPORT: "commitment report", MPPS_CREATE: "MPPS N-CREATE", MPPS_SET: "MPPS N-SET"}


@dataclass(frozen=True)
class NOutcome:
    job: Job
    verdict: SendVerdict
    status: int | None
    reason: str


def classify(kind: str, status: int) -> SendVerdict:
    if status == 0x0000 or status == 0x0001 or 0xB000 <= status <= 0xBFFF:
        return SendVerdict.DONE
    if kind == MPPS_CREATE and status == 0x0111:
        return SendVerdict.DONE
    if 0xA700 <= status <= 0xA7FF or status == 0x0213 or (status == 0x0110 and kind != MPPS_SET):
        return SendVerdict.RETRY
    if 0x0100 <= status <= 0x02FF or 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF:
        return SendVerdict.PERMANENT
    return SendVerdict.RETRY


def open_association(ae: AE, peer: Peer, kinds: set[str]) -> Association:
    classes = sorted({_CLASS[k] for k in kinds})
    contexts = [build_context(uid, list(UNCOMPRESSED)) for uid in classes]
    roles: list[Any] = []
    if STORAGE_COMMITMENT in classes:
        roles.append(build_role(STORAGE_COMMITMENT, scu_role=False, scp_role=True))
    assoc = ae.associate(
        peer.host,
        peer.port,
        contexts=contexts,
        ae_title=peer.ae_title,
        ext_neg=roles or None,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],
    )
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        raise AssociationFailed(f"association to {peer.ae_title}@{peer.host}:{peer.port} {reason}")
    return assoc


def _send(assoc: Association, job: Job, ds: Dataset) -> Dataset:
    if job.kind == COMMIT_REPORT:
        status, _reply = assoc.send_n_event_report(ds, event_type_of(ds), STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
    elif job.kind == MPPS_CREATE:
        status, _attrs = assoc.send_n_create(ds, MPPS, job.sop_uid)
    else:
        status, _attrs = assoc.send_n_set(ds, MPPS, job.sop_uid)
    return status


def send_jobs(ae: AE, peer: Peer, data_dir: Path, jobs: list[Job]) -> tuple[list[NOutcome], list[Job]]:
    """Send ``jobs`` over one association: the outcome of each attempted job, and the jobs not attempted (the
    association was lost). Raises AssociationFailed when no association could be made."""
    assoc = open_association(ae, peer, {j.kind for j in jobs})
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    outcomes: list[NOutcome] = []
    try:
        for index, job in enumerate(jobs):
            what = _NAME[job.kind]
            if _CLASS[job.kind] not in accepted:
                reason = f"{peer.ae_title} accepted no context for {what} ({_CLASS[job.kind]})"
                outcomes.append(NOutcome(job, SendVerdict.PERMANENT, None, reason))
                continue
            try:
                ds = from_part10((data_dir / job.path).read_bytes())
            except FileNotFoundError:
                outcomes.append(NOutcome(job, SendVerdict.PERMANENT, None, f"stored {what} {job.path} is missing"))
                continue
            try:
                rsp = _send(assoc, job, ds) if assoc.is_established else Dataset()
            except ValueError as exc:  # pynetdicom cannot encode the dataset
                outcomes.append(NOutcome(job, SendVerdict.PERMANENT, None, f"cannot send {what}: {exc}"))
                continue
            if "Status" not in rsp:
                outcomes.append(NOutcome(job, SendVerdict.RETRY, None, f"no valid {what} response (association lost)"))
                return outcomes, jobs[index + 1 :]
            status = int(rsp.Status)
            verdict = classify(job.kind, status)
            comment = f" ({rsp.ErrorComment})" if "ErrorComment" in rsp else ""
            outcomes.append(NOutcome(job, verdict, status, f"peer answered 0x{status:04X}{comment}"))
        return outcomes, []
    finally:
        if assoc.is_established:
            assoc.release()
