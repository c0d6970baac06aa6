"""Re-sending stored objects corrected to what the hospital system now knows (after an ADT update or merge).

A ``resend`` stage in an HL7 rule queues jobs of kind ``dicom-corrected`` for every stored instance of the
patient the message changed. Their bytes are made when they are sent (so a later update is not overtaken by an
earlier one's stale copy): the stored file with the patient/order attributes of ``known_demographics`` and
the replaced values in Original Attributes Sequence (reason ``CORRECT``), in the BSN mode for a BSN peer.
"""

from __future__ import annotations

import uuid
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from sqlalchemy import Connection, select
from sqlalchemy.engine import Engine

from router.config import RouterConfig
from router.hl7.demographics import apply_bsn_mode, apply_demographics, known_demographics
from router.store import files
from router.store.models import Job, JobState, utcnow
from router.store.tables import INSTANCE, JOB, SERIES, STUDY

CORRECTED = "dicom-corrected"


def queue_patient_resends(conn: Connection, patient_fk: int, peers: list[tuple[str, str]]) -> int:
    """Queue every stored instance of the patient for each (peer, rule); returns the number of jobs."""
    rows = conn.execute(
        select(INSTANCE.c.sop_uid, INSTANCE.c.sop_class_uid, INSTANCE.c.transfer_syntax, INSTANCE.c.path)
        .join(SERIES, SERIES.c.id == INSTANCE.c.series_fk)
        .join(STUDY, STUDY.c.id == SERIES.c.study_fk)
        .where(STUDY.c.patient_fk == patient_fk)
        .order_by(INSTANCE.c.id)
    ).all()
    if not rows or not peers:
        return 0
    now = utcnow()
    jobs = [
        {
            "kind": CORRECTED, "peer": peer, "sop_uid": r.sop_uid, "sop_class_uid": r.sop_class_uid,
            "transfer_syntax": r.transfer_syntax, "path": r.path, "rule": rule, "state": JobState.PENDING,
            "attempts": 0, "next_attempt_at": now, "last_error": "", "created_at": now, "updated_at": now,
        }
        for peer, rule in peers
        for r in rows
    ]  # fmt: skip
    conn.execute(JOB.insert(), jobs)
    return len(jobs)


def corrected_copy(engine: Engine, config: RouterConfig, job: Job) -> Path:
    """A temporary file holding the job's stored object as it must be sent now (the caller removes it)."""
    ds = dcmread(config.data_dir / job.path)
    with engine.connect() as conn:
        known = known_demographics(conn, ds)
    if known is not None:
        apply_demographics(ds, known, reason="CORRECT")
        if config.peers[job.peer].patient_id == "bsn":
            apply_bsn_mode(ds, known, config)
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    path = config.data_dir / "tmp" / f"corrected-{job.id}-{uuid.uuid4().hex[:8]}.part"
    path.write_bytes(out.getvalue())
    return path


def remove(path: Path | None) -> None:
    if path is not None:
        files.remove_quietly(path)
