"""Print jobs to a DICOM printer: a DICOM peer with a ``print`` section (docs/print.md).

The DICOM destination hands its ``print`` jobs here (``JobKind.PRINT``). One association (Basic Grayscale Print
Management Meta SOP Class, Explicit and Implicit VR Little Endian) carries the batch; each job is one film session
(``router.printing.session``) printing every frame of its objects, as many films as the format needs.

| what happened | job |
| --- | --- |
| printed, also with warnings (0xB6xx, printer status WARNING) | done, the first warning status recorded |
| no association (printer down, AE title refused) | retried with backoff (``Unreachable``), then dead |
| printer in FAILURE, queue full (0xC601/0xC602), memory (0xC605), 0x0110, 0x0213, 0xA7xx, no answer | retried |
| any other failure (0xC603 image too large, an attribute refused, no image box, an object without image) | dead |
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import ValidationError
from pydicom.errors import InvalidDicomError
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from router import storage
from router.config import DicomPeer
from router.config.printing import PrintSettings
from router.destinations.base import Outcome, Unreachable
from router.printing import bundle
from router.printing.session import META, PrintFailed, PrintSession
from router.scu.association import UNCOMPRESSED, AssociationFailed, open_association
from router.statuses import SendVerdict
from router.store.models import Job

log = logging.getLogger(__name__)


def settings_of(peer: DicomPeer) -> PrintSettings:
    """The peer's film settings; the defaults for a peer without a ``print`` section."""
    return peer.print if peer.print is not None else PrintSettings()


def send_jobs(ae: AE, peer: DicomPeer, data_dir: Path, jobs: Sequence[Job]) -> Iterator[Outcome]:
    """Print ``jobs`` over one association: the outcome of each job attempted. Raises Unreachable when no
    association could be made; stops early when the association is lost."""
    try:
        assoc = open_association(ae, peer, [build_context(META, list(UNCOMPRESSED))])
    except AssociationFailed as exc:
        raise Unreachable(str(exc)) from exc
    settings = settings_of(peer)
    assoc.dimse_timeout = settings.timeout
    try:
        if META not in {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}:
            for job in jobs:
                yield Outcome.permanent(job, f"{peer.ae_title} does not take Basic Grayscale Print Management ({META})")
            return
        for job in jobs:
            outcome = print_job(assoc, peer, settings, data_dir, job)
            yield outcome
            if not assoc.is_established:
                return  # the association was lost: the rest go back to the queue
    finally:
        if assoc.is_established:
            assoc.release()


def print_job(assoc: Association, peer: DicomPeer, settings: PrintSettings, data_dir: Path, job: Job) -> Outcome:
    """One job, one film session."""
    path = storage.at(data_dir).local_path(job.path)
    try:
        overrides = bundle.read_overrides(path)
        own = settings.with_overrides(overrides.format, overrides.copies)
        report = PrintSession(assoc, own).print_images(bundle.objects(path))
    except PrintFailed as exc:
        log.warning("print job %s to %s failed: %s", job.id, peer.ae_title, exc)
        return Outcome(job, exc.verdict, exc.status, str(exc))
    except FileNotFoundError:
        return Outcome.permanent(job, f"the print job's file {job.path} is missing")
    except (InvalidDicomError, zipfile.BadZipFile, KeyError, ValueError, ValidationError) as exc:
        return Outcome.permanent(job, f"the print job's file {job.path} cannot be read: {exc}")
    text = report.text(peer.ae_title)
    log.info("print job %s: %s", job.id, text)
    return Outcome(job, SendVerdict.DONE, report.status, text)
