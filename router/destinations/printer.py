"""Print jobs to a DICOM printer: a DICOM peer with a ``print`` section (docs/print.md).

The DICOM destination hands its ``print`` jobs here (``JobKind.PRINT``). One association (Basic Grayscale Print
Management Meta SOP Class, Explicit and Implicit VR Little Endian) carries the batch; each job is one film session
(``router.printing.session``) printing every frame of its objects, as many films as the format needs. The
``print-series`` jobs of one series (``group: series``, handed over whole by ``router.outbox.groups``) share one
film session, their images in series order (``router.printing.series``), and share its outcome: printed, retried or
dead alike. A grouped job whose file cannot be read is dead on its own; the rest of its series is printed.

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
from router.outbox.jobs import JobKind
from router.printing import bundle, series
from router.printing.series import Member
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
    groups, unreadable = series.gather(data_dir, [j for j in jobs if j.kind == JobKind.PRINT_SERIES])
    for job, reason in unreadable:
        yield Outcome.permanent(job, reason)
    units: list[Job | list[Member]] = [j for j in jobs if j.kind != JobKind.PRINT_SERIES]
    units += groups
    if not units:
        return
    try:
        assoc = open_association(ae, peer, [build_context(META, list(UNCOMPRESSED))])
    except AssociationFailed as exc:
        raise Unreachable(str(exc)) from exc
    settings = settings_of(peer)
    assoc.dimse_timeout = settings.timeout
    try:
        if META not in {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}:
            for unit in units:
                for job in [unit] if isinstance(unit, Job) else [m.job for m in unit]:
                    yield Outcome.permanent(
                        job, f"{peer.ae_title} does not take Basic Grayscale Print Management ({META})"
                    )
            return
        for unit in units:
            if isinstance(unit, Job):
                yield print_job(assoc, peer, settings, data_dir, unit)
            else:
                yield from print_series(assoc, peer, settings, unit)
            if not assoc.is_established:
                return  # the association was lost: the rest go back to the queue
    finally:
        if assoc.is_established:
            assoc.release()


def print_series(assoc: Association, peer: DicomPeer, settings: PrintSettings, group: list[Member]) -> list[Outcome]:
    """One series, one film session: the same outcome for each of its jobs."""
    try:
        report = PrintSession(assoc, settings).print_images(series.objects(group))
    except PrintFailed as exc:
        log.warning("print of a series (%d job(s)) to %s failed: %s", len(group), peer.ae_title, exc)
        return [Outcome(m.job, exc.verdict, exc.status, str(exc)) for m in group]
    except (OSError, InvalidDicomError, KeyError, ValueError) as exc:  # a file went or changed since it was read
        return [Outcome.permanent(m.job, f"a file of the series cannot be read: {exc}") for m in group]
    text = f"{report.text(peer.ae_title)}; a series of {len(group)} object(s) on one film session"
    log.info("print jobs %s: %s", ",".join(str(m.job.id) for m in group), text)
    return [Outcome(m.job, SendVerdict.DONE, report.status, text) for m in group]


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
