"""The worklist items a performed procedure step performs, and their status (IHE SWF: MPPS in progress,
completed or discontinued moves the scheduled step along).

An item of the Scheduled Step Attributes Sequence names its worklist item by Scheduled Procedure Step ID with
Accession Number and/or Requested Procedure ID, else by Accession Number (and Requested Procedure ID), else by
Study Instance UID. An unscheduled step (empty values) performs none. Only active items (SCHEDULED, ARRIVED,
READY, IN PROGRESS) are moved: a cancelled order stays cancelled.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Connection, select, update

from router.mpps.attributes import text
from router.store.models import SpsStatus, utcnow
from router.store.tables import WORKLIST_ITEM as W


def _where(item: Dataset) -> list[Any] | None:
    accession = text(item, "AccessionNumber")
    procedure = text(item, "RequestedProcedureID")
    step = text(item, "ScheduledProcedureStepID")
    study = text(item, "StudyInstanceUID")
    conditions = []
    if accession:
        conditions.append(W.c.accession_number == accession)
    if procedure:
        conditions.append(W.c.requested_procedure_id == procedure)
    if step and conditions:
        return [*conditions, W.c.sps_id == step]
    if accession:
        return conditions
    if study:
        return [W.c.study_uid == study]
    return None


def linked_items(conn: Connection, ds: Dataset) -> list[int]:
    """Ids of the active worklist items the N-CREATE's Scheduled Step Attributes Sequence names."""
    found: dict[int, None] = {}
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        where = _where(item)
        if where is None:
            continue
        query = select(W.c.id).where(*where, W.c.status.in_(list(SpsStatus.ACTIVE))).order_by(W.c.id)
        found.update(dict.fromkeys(conn.execute(query).scalars()))
    return list(found)


def set_status(conn: Connection, ids: list[int], status: str) -> int:
    """Move the still active items among ``ids`` to ``status``; how many moved."""
    if not ids:
        return 0
    result = conn.execute(
        update(W)
        .where(W.c.id.in_(ids), W.c.status.in_(list(SpsStatus.ACTIVE)))
        .values(status=status, updated_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def encode_ids(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids)[:1024]


def decode_ids(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip().isdigit()]
