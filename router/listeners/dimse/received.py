"""The object of a received C-STORE request, handed to the intake: from memory, or from the file it arrived into.

A small data set arrives in memory and ``p10`` frames it. A large one (``router._pynetdicom.spool``: past 4 MiB) was
written as it arrived to a flushed ``*.part`` file in the node's temp folder, preamble and file meta first
(``head``), hashed on the way: the intake takes that file as the object's early write (renamed into the store, not
written or hashed again) and reads only its first bytes to find its values. Whatever the intake did not take (a
duplicate, a refused object) is removed here once it has answered.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from router import _pynetdicom
from router.intake.dicom import Ingestor, IngestResult
from router.intake.envelope import Source
from router.listeners.dimse.p10 import PREAMBLE, file_meta, p10
from router.logs import redact
from router.statuses import StoreOutcome
from router.store import files

log = logging.getLogger(__name__)


def head(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """What a spooled object's file begins with: the bytes ``p10`` puts before the data set."""
    return PREAMBLE + file_meta(sop_class_uid, sop_instance_uid, transfer_syntax)


def ingest_received(ingestor: Ingestor, event: Any, source: Source) -> IngestResult:
    """The C-STORE request of ``event`` taken through the intake."""
    spooled = _pynetdicom.spooled(event.request)
    if isinstance(spooled, OSError):
        log.warning("C-STORE from %s: cannot write the data set as it arrives: %s", source.calling_ae, redact(spooled))
        return IngestResult(StoreOutcome.OUT_OF_RESOURCES, reason=f"cannot write the data set: {spooled}")
    if spooled is None:
        try:
            raw = p10(event)
        except Exception as exc:  # a dataset pynetdicom itself cannot frame
            log.warning("C-STORE from %s: cannot read the dataset: %s", source.calling_ae, redact(exc))
            raw = b""
        return ingestor.ingest(raw, source)
    try:
        return ingestor.ingest(spooled, source)
    finally:
        with contextlib.suppress(BufferError):  # a view of it still held somewhere: unmapped when that goes
            spooled.close()
        files.remove_quietly(spooled.path)
