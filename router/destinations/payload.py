"""The bytes a job sends: the stored file, or a copy made at sending time.

A ``resend`` job (``JobKind.DICOM_CORRECTED``) sends a stored object corrected to what the hospital system knows
when it is sent, so a later ADT update is never overtaken by an earlier one's stale copy: the stored file with the
patient/order attributes of ``known_demographics`` and the replaced values in Original Attributes Sequence (reason
``CORRECT``), in the BSN mode for a BSN peer.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from sqlalchemy.engine import Engine

from router import storage
from router.config import ObjectPeer, RouterConfig
from router.hl7.demographics import apply_bsn_mode, apply_demographics, known_demographics
from router.outbox.jobs import JobKind
from router.store import files
from router.store.models import Job


def corrected_copy(engine: Engine, config: RouterConfig, job: Job) -> Path:
    """A temporary file holding the job's stored object as it must be sent now (the caller removes it)."""
    ds = dcmread(storage.of(config).local_path(job.path))
    with engine.connect() as conn:
        known = known_demographics(conn, ds)
    if known is not None:
        apply_demographics(ds, known, reason="CORRECT")
        peer = config.peers.get(job.peer)
        if isinstance(peer, ObjectPeer) and peer.patient_id == "bsn":
            apply_bsn_mode(ds, known, config)
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    path = storage.tmp_dir(config) / f"corrected-{job.id}-{uuid.uuid4().hex[:8]}.part"
    path.write_bytes(out.getvalue())
    return path


@contextlib.contextmanager
def job_file(engine: Engine, config: RouterConfig, job: Job) -> Iterator[Path]:
    """The file holding what ``job`` sends, for as long as the block runs (a copy made now is removed after)."""
    if job.kind != JobKind.DICOM_CORRECTED:
        yield storage.of(config).local_path(job.path)
        return
    copy = corrected_copy(engine, config, job)
    try:
        yield copy
    finally:
        files.remove_quietly(copy)
