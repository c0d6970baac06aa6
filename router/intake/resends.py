"""Queueing a patient's stored objects again after an HL7 message changed the patient (the ``resend`` stage).

The jobs are of kind ``dicom-corrected``: their bytes are made when they are sent (``router.destinations.payload``),
so each peer gets the objects as the hospital system knows them at that time.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from router.outbox.jobs import JobKind, NewJob, enqueue
from router.store.tables import INSTANCE, SERIES, STUDY


def queue_patient_resends(conn: Connection, patient_fk: int, peers: list[tuple[str, str]]) -> int:
    """Queue every stored instance of the patient for each (peer, rule); returns the number of jobs."""
    rows = conn.execute(
        select(INSTANCE.c.sop_uid, INSTANCE.c.sop_class_uid, INSTANCE.c.transfer_syntax, INSTANCE.c.path)
        .join(SERIES, SERIES.c.id == INSTANCE.c.series_fk)
        .join(STUDY, STUDY.c.id == SERIES.c.study_fk)
        .where(STUDY.c.patient_fk == patient_fk)
        .order_by(INSTANCE.c.id)
    ).all()
    jobs = [
        NewJob(JobKind.DICOM_CORRECTED, peer, r.sop_uid, r.path, r.sop_class_uid, r.transfer_syntax, rule)
        for peer, rule in peers
        for r in rows
    ]
    enqueue(conn, jobs)
    return len(jobs)
