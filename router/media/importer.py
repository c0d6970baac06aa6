"""The import loop: every file of a medium to an outcome (``router.media.report``).

A DICOMDIR, where there is one, defines the file-set (``router.media.fileset``); otherwise every file is a
candidate. Each candidate is read (never written), checked as a received object is (``Envelope.from_p10``),
selected, checked for its character set (``router.media.charsets``), and then:

- by default, taken through the router's own intake (``router.intake.dicom.Ingestor``) with a ``media`` source,
  exactly as a C-STORE: rules (``when: {source: media}``), stages, the durable store, outbox jobs that the
  forward workers of a running router pick up on their next pass;
- with ``--dry-run``, matched against the rules and run through their stages in dry-run mode: nothing stored;
- with ``--to PEER``, sent to the peer by C-STORE (``router.media.direct``), not stored.
"""

from __future__ import annotations

import getpass
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import MediaStorageDirectoryStorage

from router.config import RouterConfig
from router.hooks.answers import ImportedInstance
from router.hooks.manager import notify
from router.intake.envelope import Envelope, Source, sha256
from router.intake.stage import StageError
from router.media import charsets
from router.media.fileset import NotADicomDir, read_dicomdir
from router.media.reconcile import ReconcileOptions, Reconciler
from router.media.report import (
    DAMAGED,
    DUPLICATE,
    FAILED,
    IMPORTED,
    NOT_DICOM,
    NOT_SELECTED,
    REFUSED,
    UNREFERENCED,
    WOULD_IMPORT,
    FileOutcome,
    ImportReport,
    Progress,
)
from router.media.selection import Selection, Tree, header_values
from router.media.source import DICOMDIR, MediaSource
from router.media.worklists import LocalWorklist, RemoteWorklist, Worklist, WorklistUnavailable
from router.media.workspace import Workspace
from router.statuses import StoreOutcome

log = logging.getLogger(__name__)

IMPORTED_OUTCOMES = {StoreOutcome.STORED, StoreOutcome.OVERWRITTEN}
DUPLICATE_OUTCOMES = {StoreOutcome.DUPLICATE_IDENTICAL, StoreOutcome.DUPLICATE_IGNORED}


@dataclass(frozen=True)
class ImportOptions:
    selection: Selection = field(default_factory=Selection)
    dry_run: bool = False
    assume_charset: str = ""
    to: str = ""  # a DICOM peer: send there instead of the router's intake
    progress: bool = True
    reconcile: ReconcileOptions | None = None  # --reconcile: match each study against the worklist
    worklist: str = ""  # --worklist PEER: that MWL SCP's worklist, not the router's own


@dataclass
class Candidate:
    source: MediaSource
    name: str  # its path on the medium
    in_file_set: bool  # named by the medium's DICOMDIR


@dataclass
class Taken:
    """An object ready for its destination: its outcome row, its bytes, its values."""

    outcome: FileOutcome
    raw: bytes
    values: dict[str, str]
    source: Source  # the intake's: media, and the medium's path
    path: Path | None = None  # the file on disk, when these are its bytes (not in a zip, not corrected)


def survey(source: MediaSource, report: ImportReport) -> list[Candidate]:
    """The files to read on ``source``; what is not part of its file-set, or is missing, goes to ``report``."""
    found = source.dicomdir()
    if found is None:
        return [Candidate(source, name, False) for name in source.names]
    try:
        dicomdir = read_dicomdir(source.read(found))
    except (NotADicomDir, OSError) as exc:
        report.problems.append(f"{source.label}: {found}: {exc}: every file is read instead")
        return [Candidate(source, n, False) for n in source.names if n != found]
    report.problems.extend(f"{source.label}: {found}: {p}" for p in dicomdir.problems)
    named: list[Candidate] = []
    seen: set[str] = set()
    for ref in dicomdir.files:
        name = source.find(ref.file_id)
        if name is None:
            report.add(FileOutcome(ref.file_id, DAMAGED, "named by the DICOMDIR but not on the medium"))
        elif name not in seen:
            seen.add(name)
            named.append(Candidate(source, name, True))
    for name in source.names:
        if name not in seen and name != found:
            report.add(FileOutcome(name, UNREFERENCED, "not named by the DICOMDIR: not part of the file-set"))
    return named


class Importer:
    def __init__(self, config: RouterConfig, options: ImportOptions, workspace: Workspace) -> None:
        self.config = config
        self.options = options
        self.work = workspace
        self.assume = options.assume_charset or config.media_import.assume_charset
        self.reconciler: Reconciler | None = None

    # -- the whole run --------------------------------------------------------------------------------------
    def run(self, sources: list[MediaSource]) -> ImportReport:
        report = ImportReport([s.label for s in sources], dry_run=self.options.dry_run, destination=self.options.to)
        candidates = [c for s in sources for c in survey(s, report)]
        progress = Progress("import", len(candidates), sum(_size(c) for c in candidates),
                            enabled=self.options.progress)  # fmt: skip
        taken: list[Taken] = []
        if self.options.reconcile is not None:
            self.reconciler = Reconciler(self._worklist(), self.options.reconcile)
            self._survey(candidates, self.reconciler)
        for cand in candidates:
            item = self._take(cand)
            if isinstance(item, Taken) and self.reconciler is not None:
                item = self._reconcile(item, self.reconciler)
            outcome = report.add(item.outcome if isinstance(item, Taken) else item)
            if isinstance(item, Taken):
                self._deliver(item, taken)
            progress.step(outcome.size, outcome.outcome in FAILED)
        if self.options.to and taken and not self.options.dry_run:
            self.work.send(self.options.to, taken)
        report.finish()
        if self.reconciler is not None:
            report.studies = self.reconciler.report()
        if not self.options.dry_run:
            self._announce(report, taken)
        return report

    def tree(self, sources: list[MediaSource]) -> tuple[Tree, ImportReport]:
        """``--list``: the patient/study/series tree of what would be imported, and what could not be read."""
        report = ImportReport([s.label for s in sources], dry_run=True)
        tree = Tree()
        for cand in (c for s in sources for c in survey(s, report)):
            item = self._take(cand)
            if isinstance(item, Taken):
                tree.add(item.values, item.outcome.size)
            else:
                report.add(item)
        return tree, report

    # -- one file ------------------------------------------------------------------------------------------
    def _take(self, cand: Candidate) -> Taken | FileOutcome:
        out = FileOutcome(cand.name, "")
        try:
            raw = cand.source.read(cand.name)
        except Exception as exc:  # OSError, a damaged zip member (BadZipFile, zlib.error)
            return _set(out, DAMAGED if cand.in_file_set else NOT_DICOM, f"cannot read: {exc}")
        out.size = len(raw)
        if raw[128:132] != b"DICM":
            return _set(out, DAMAGED if cand.in_file_set else NOT_DICOM, "not a DICOM Part 10 file")
        source = Source("media", called_ae=self.config.ae_title, address=cand.source.label)
        try:
            env = Envelope.from_p10(raw, source)
            with warnings.catch_warnings():  # text that does not decode: the character set check says so below
                warnings.simplefilter("ignore")
                values = header_values(env.values)
        except Exception as exc:  # pydicom raises a wide variety on corrupt input
            return _set(out, DAMAGED, f"cannot decode: {exc}")
        if env.sop_class_uid == MediaStorageDirectoryStorage or cand.name.rsplit("/", 1)[-1].lower() == DICOMDIR:
            return _set(out, NOT_DICOM, "a DICOMDIR, not an object")
        out.sop_instance_uid = env.sop_instance_uid
        out.study_uid, out.series_uid = values["StudyInstanceUID"], values["SeriesInstanceUID"]
        if why := self.options.selection.why_not(values):
            return _set(out, NOT_SELECTED, f"left out by {why}")
        try:
            checked = charsets.check(raw, self.assume)
        except charsets.CharsetProblem as exc:
            return _set(out, REFUSED, str(exc))
        except Exception as exc:
            return _set(out, DAMAGED, f"cannot decode: {exc}")
        if checked.corrected is not None:
            raw, out.corrected = checked.corrected, checked.note
        path = cand.source.path_of(cand.name) if checked.corrected is None else None
        return Taken(out, raw, values, source, path)

    def _survey(self, candidates: list[Candidate], reconciler: Reconciler) -> None:
        """``--new-uids``: a first pass over what will be imported, so that references to an object are rewritten
        in the objects read before it too (``router.media.references``). Each file is read twice."""
        if reconciler.options.new_uids:
            for cand in candidates:
                item = self._take(cand)
                if isinstance(item, Taken):
                    try:
                        reconciler.survey(item.raw)
                    except WorklistUnavailable:
                        raise
                    except Exception:  # pydicom on a damaged object: refused with the reason when it is reconciled
                        continue

    def _worklist(self) -> Worklist:
        if self.options.worklist:
            return RemoteWorklist(self.config, self.options.worklist)
        return LocalWorklist(self.work.engine, self.config.hl7.local_coding_scheme)

    def _reconcile(self, item: Taken, reconciler: Reconciler) -> Taken | FileOutcome:
        """The object with the local patient and order (``router.media.reconcile``), or held back."""
        out = item.outcome
        try:
            raw, match, changed = reconciler.apply(item.raw)
        except WorklistUnavailable:
            raise
        except Exception as exc:  # pydicom on an object it cannot write again
            return _set(out, REFUSED, f"cannot reconcile: {exc}")
        if raw is None:
            return _set(out, NOT_SELECTED, "held back: no worklist match (--matched-only)")
        if not changed:
            return item
        note = f"reconciled ({match.matched}): {', '.join(changed)}"
        out.corrected = f"{out.corrected}; {note}" if out.corrected else note
        item.values = header_values(Envelope.from_p10(raw, item.source).values)
        item.raw, item.path = raw, None
        return item

    def _deliver(self, item: Taken, taken: list[Taken]) -> None:
        out = item.outcome
        if self.options.dry_run and self.options.to:
            out.destinations = [self.options.to]
            _set(out, WOULD_IMPORT, "")
            return
        if self.options.dry_run:
            self._dry_run(item)
            return
        if self.options.to:
            taken.append(item)  # sent at the end, over as few associations as possible (router.media.direct)
            return
        result = self.work.ingestor.ingest(item.raw, item.source)
        if result.outcome in IMPORTED_OUTCOMES:
            _set(out, IMPORTED, f"{result.jobs} job(s) queued" if result.jobs else "")
            taken.append(item)
        elif result.outcome in DUPLICATE_OUTCOMES:
            _set(out, DUPLICATE, result.outcome.value)
        else:
            _set(out, REFUSED, f"{result.outcome.value}: {result.reason}")

    def _dry_run(self, item: Taken) -> None:
        out = item.outcome
        env = Envelope.from_p10(item.raw, item.source)
        stored = self.work.stored_digest(env.sop_instance_uid)
        if stored is not None and stored == sha256(item.raw):
            _set(out, DUPLICATE, "already stored with the same bytes")
            return
        try:
            planned = self.work.dry_run(env)
        except StageError as exc:
            _set(out, REFUSED, f"a stage would fail: {exc}")
            return
        out.rules = [rule.name for rule in planned.rules]
        out.destinations = sorted({fwd.peer for fwd in planned.forwards})
        _set(out, WOULD_IMPORT, "a different object with this SOP Instance UID is stored" if stored else "")

    def _announce(self, report: ImportReport, taken: list[Taken]) -> None:
        imported = [t for t in taken if t.outcome.outcome == IMPORTED]
        counts = report.counts()
        notify(self.work.pm, "router_instances_imported", media=", ".join(report.media), user=_user(),
               destination=self.options.to, instances=[_instance(t) for t in imported],
               refused=counts.get(REFUSED, 0), damaged=counts.get(DAMAGED, 0))  # fmt: skip


def _set(out: FileOutcome, outcome: str, reason: str) -> FileOutcome:
    out.outcome, out.reason = outcome, reason
    return out


def _size(cand: Candidate) -> int:
    try:
        return cand.source.size(cand.name)
    except Exception:
        return 0


def _instance(item: Taken) -> ImportedInstance:
    v = item.values
    return ImportedInstance(v["StudyInstanceUID"], v["SOPClassUID"], item.outcome.sop_instance_uid,
                            v["PatientID"], v["IssuerOfPatientID"], v["PatientName"], v["AccessionNumber"])  # fmt: skip


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
