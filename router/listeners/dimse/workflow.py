"""The DIMSE-N side of the listener: storage commitment (both roles) and MPPS, dispatched by SOP class.

- N-ACTION on Storage Commitment Push Model: a peer asks us to commit (``commitment.scp``).
- N-EVENT-REPORT on Storage Commitment: a peer reports on a commitment we requested, on an association it opened
  (it proposes the SCP role by SCP/SCU role selection, which we accept; without role selection it is accepted
  too). The transaction must have been requested from that peer's AE title (``commitment.ledger``).
- N-CREATE / N-SET on Modality Performed Procedure Step (``mpps.service``).
Anything else on these services: 0x0211 (unrecognised operation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from router.commitment import STORAGE_COMMITMENT
from router.commitment.ledger import CommitLedger
from router.commitment.requester import handle_report
from router.commitment.scp import CommitmentSCP
from router.mpps import MPPS
from router.mpps.service import MppsService
from router.statuses import PROCESSING_FAILURE, UNRECOGNISED_OPERATION, dimse_status

log = logging.getLogger(__name__)


def _sop_class(event: evt.Event) -> str:
    request = event.request
    return str(getattr(request, "AffectedSOPClassUID", None) or getattr(request, "RequestedSOPClassUID", None) or "")


def _guarded(name: str, event: evt.Event, handler: Any) -> tuple[Dataset, None]:
    try:
        return handler(event)
    except Exception:
        log.exception("%s from %s failed unexpectedly", name, event.assoc.requestor.ae_title)
        return dimse_status(PROCESSING_FAILURE, "internal error"), None


def _refuse(name: str, event: evt.Event) -> tuple[Dataset, None]:
    log.warning("%s for SOP class %s from %s: not supported", name, _sop_class(event), event.assoc.requestor.ae_title)
    return dimse_status(UNRECOGNISED_OPERATION, f"{name} is not supported for this SOP class"), None


@dataclass
class WorkflowServices:
    commitment: CommitmentSCP
    ledger: CommitLedger
    mpps: MppsService

    def add_contexts(self, ae: AE, transfer_syntaxes: list[str]) -> None:
        ae.add_supported_context(STORAGE_COMMITMENT, transfer_syntaxes, scu_role=True, scp_role=True)
        ae.add_supported_context(MPPS, transfer_syntaxes)

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_N_ACTION, self.on_n_action),
            (evt.EVT_N_EVENT_REPORT, self.on_n_event_report),
            (evt.EVT_N_CREATE, self.on_n_create),
            (evt.EVT_N_SET, self.on_n_set),
        ]

    def on_n_action(self, event: evt.Event) -> tuple[Dataset, None]:
        if _sop_class(event) == STORAGE_COMMITMENT:
            return _guarded("N-ACTION", event, self.commitment.on_action)
        return _refuse("N-ACTION", event)

    def on_n_event_report(self, event: evt.Event) -> tuple[Dataset, None]:
        if _sop_class(event) == STORAGE_COMMITMENT:
            calling = str(event.assoc.requestor.ae_title).strip()
            return _guarded("N-EVENT-REPORT", event, lambda e: handle_report(self.ledger, e, calling))
        return _refuse("N-EVENT-REPORT", event)

    def on_n_create(self, event: evt.Event) -> tuple[Dataset, None]:
        if _sop_class(event) == MPPS:
            return _guarded("N-CREATE", event, self.mpps.on_create)
        return _refuse("N-CREATE", event)

    def on_n_set(self, event: evt.Event) -> tuple[Dataset, None]:
        if _sop_class(event) == MPPS:
            return _guarded("N-SET", event, self.mpps.on_set)
        return _refuse("N-SET", event)
