"""Modality Performed Procedure Step SOP Class (PS3.4 F.7): the SCP, the worklist link and the forward."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

MPPS = "1.2.840.10008.3.1.2.3.3"

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
FINAL = (COMPLETED, DISCONTINUED)


@dataclass
class MppsMessage:
    """One N-CREATE or N-SET on its way through the rules (``Envelope.message`` of kind ``mpps``)."""

    operation: str  # "N-CREATE" or "N-SET"
    sop_uid: str
    dataset: Dataset  # the Attribute List / Modification List as received
    state: Dataset  # the step once this message is applied (what ``tags`` conditions test)

    @property
    def status(self) -> str:
        return str(self.state.get("PerformedProcedureStepStatus", "")).strip()
