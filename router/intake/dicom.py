"""Taking one inbound object from bytes to durable: the path every C-STORE and STOW part goes through.

Order of work (the acknowledgement comes only after the last step):
1. check the object is whole and find its values (``router.intake.p10scan``; pydicom decodes what the scan does
   not vouch for); an object that cannot be decoded or identified, or (C-STORE) is not the object its request
   names, goes to quarantine;
2. an instance already stored with the same bytes is accepted and nothing else happens;
3. rules and stages run (coerce changes what is forwarded, forward plans outbox jobs);
4. the object (and any changed payload) is written to a temp file and fsynced;
5. in a unit of a group commit (``router.intake.groupcommit``): insert index and outbox rows, rename into place;
   objects being stored at the same time (other associations, the parts of a STOW request: ``ingest_many``) share
   the folder fsyncs and the one commit, each answered only after it.
Any failure on the way removes what this object wrote and is answered with a failure status.

For a large object, step 4 for the bytes as received overlaps steps 1 to 3: the calling thread writes them (a
synchronous write, holding no GIL) while a worker thread checks, hashes, looks up and runs the rules, then waits
for that write and commits (a writer thread instead would need the GIL the checking thread holds). When
the object turns out to be a duplicate or a stage changes what is stored, that temp file is removed unused; an
unusable object is moved from it into quarantine.

A small object is taken through every step on the calling thread: checking, hashing and looking it up take less
time than handing it to a worker and waking the caller again (``OVERLAP_FROM``).

With the write-ahead journal open (``open_journal``; ``router.intake.journaled``), an object below ``JOURNAL_MAX``
held in memory is written in steps 4 and 5 without flushes: its group commit's journal record holds its bytes, and
that record's one synchronous write is what its acknowledgement waits for.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydicom.errors import InvalidDicomError
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from router import storage
from router.hooks.manager import notify
from router.intake import activity
from router.intake.base import Intake, IntakeContext
from router.intake.early import EarlyWrite, in_file, written_as
from router.intake.envelope import UNLIMITED, Envelope, Source, sha256
from router.intake.groupcommit import Done, GroupCommit
from router.intake.journaled import Entry, Replayed, encode, open_journal
from router.intake.pipeline import PipelineResult
from router.intake.stage import PlannedForward, StageError
from router.logs import database_error, redact
from router.outbox.groups import hold
from router.outbox.jobs import JobKind, NewJob, enqueue
from router.outbox.orphans import drop_if_orphaned
from router.statuses import StoreOutcome, c_store_status
from router.store import files
from router.store.activity import record
from router.store.index import IdCache, find_instance, index_instance
from router.store.journal import Journal
from router.store.models import utcnow

log = logging.getLogger(__name__)

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# Objects from this size on are written while a worker checks them. Below it, the two thread hand-offs cost more
# than the overlap gains: 2000 objects of 1 KB from storescu, in-process, five alternated pairs, 273-378 objects/s
# with the worker, 325-423 without (bench/README.md, ninth session).
OVERLAP_FROM = 64 * 1024
# Objects below this size go through the journal when it is open; larger ones keep their own flushes: written twice
# (journal, then file) and checksummed, 525 KB CT slices took more time than their three flushes (bench/README.md).
JOURNAL_MAX = OVERLAP_FROM


@dataclass(frozen=True)
class IngestResult:
    outcome: StoreOutcome
    sop_instance_uid: str = ""
    reason: str = ""
    jobs: int = 0

    @property
    def status(self) -> int:
        return c_store_status(self.outcome)


def _request_mismatch(env: Envelope) -> str:
    """For a C-STORE: how the data set's SOP Class and Instance UIDs differ from the request's Affected SOP Class and
    Instance UIDs, "" when they agree. The file meta of a received object holds the request's (``dimse.p10``).
    DCMTK's storescp and Orthanc answer such a request 0xA900 (Data Set does not match SOP Class) too."""
    values = env.values
    differences = [
        f"{name} {found!r} in the data set, {requested!r} in the C-STORE request"
        for name, found, requested in (
            ("SOP Class UID", env.sop_class_uid, values.meta_uid("MediaStorageSOPClassUID")),
            ("SOP Instance UID", env.sop_instance_uid, values.meta_uid("MediaStorageSOPInstanceUID")),
        )
        if found != requested
    ]
    return "; ".join(differences)


def _own_file(fwd: PlannedForward, env: Envelope) -> bool:
    """A forward whose bytes are not the stored object's needs a file of its own."""
    stored = env.stored if env.stored is not None else env.raw
    return fwd.payload is not stored


def _job(fwd: PlannedForward, env: Envelope, path: str) -> NewJob:
    kind = JobKind(fwd.kind) if fwd.kind else JobKind.DICOM_STORE_COMMIT if fwd.commit else JobKind.DICOM_STORE
    return NewJob(kind, fwd.peer, env.sop_instance_uid, path, env.sop_class_uid, fwd.transfer_syntax, fwd.rule)


@dataclass(frozen=True)
class _Committed:
    relpath: str
    old_path: str | None  # the replaced version's file (overwrite policy)


@dataclass(frozen=True)
class _Pending:
    """An object checked, planned and in its temp file: ``commit(conn, look_again)`` is its unit of the group."""

    env: Envelope
    plan: PipelineResult
    written: list[Path]
    commit: Callable[..., _Committed | StoreOutcome]
    known: bool  # the lookup found this SOP Instance UID stored already


class Ingestor(Intake):
    def __init__(self, context: IntakeContext) -> None:
        super().__init__(context)
        config = context.config
        self.data_dir = config.data_dir
        self.tmp_dir = storage.tmp_dir(config)
        self.quarantine_dir = config.data_dir / "quarantine"
        self.ids = IdCache(write_lock=context.write_lock)
        # told of each object committed, under the write lock (study UID, bytes, bytes of the version it replaced)
        self.on_stored: Callable[[str, int, int], None] = lambda study_uid, size, replaced: None
        # One worker per caller that can be ingesting at once (associations, STOW and HL7 requests): a caller
        # waits for its own worker, so fewer would only queue them.
        workers = config.dicom.max_associations + 8
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store-ingest")
        # objects being stored at the same time (associations, STOW requests) share one commit and folder fsyncs
        self.group = GroupCommit(self.engine, self.write_lock)

    @property
    def journal(self) -> Journal | None:
        """The write-ahead journal small objects go through (the group commit's), if there is one."""
        return self.group.journal

    def open_journal(self) -> Replayed | None:
        """Replay what a power cut left in the write-ahead journal, then take small objects through it (None when
        this configuration does not use one: ``router.intake.journaled.open_journal``)."""
        if (opened := open_journal(self)) is None:
            return None
        self.group.use_journal(opened[0], encode)
        return opened[1]

    def close(self) -> None:
        self._workers.shutdown(wait=True)
        self.group.close()
        if (journal := self.journal) is not None:
            self.group.use_journal(None)
            journal.close()  # a last checkpoint: nothing to replay after a clean stop

    def _journaled(self, raw: bytes) -> bool:  # through the journal: its files are written without flushes
        return self.journal is not None and in_file(raw) is None and len(raw) < JOURNAL_MAX

    # -- public -------------------------------------------------------------------------------------------
    def ingest(self, raw: bytes, source: Source) -> IngestResult:
        if (done := written_as(raw)) is not None:  # already in a flushed temp file (STOW-RS, a spooled C-STORE)
            return self._ingest(raw, source, EarlyWrite(done))  # taken (renamed), or left for the caller to remove
        if len(raw) < OVERLAP_FROM:
            return self._ingest(raw, source, EarlyWrite(None))
        written: Future[Path] = Future()
        early = EarlyWrite(written)
        try:
            job = self._workers.submit(self._ingest, raw, source, early)
        except RuntimeError:  # shutting down: everything on this thread
            job = None
            early = EarlyWrite(None)
        try:
            if job is None:
                return self._ingest(raw, source, early)
            try:
                written.set_result(files.write_temp(self.tmp_dir, raw, durable=not self._journaled(raw)))
            except Exception as exc:  # the worker meets it when it takes the file (an OSError: out of resources)
                written.set_exception(exc)
            return job.result()
        finally:
            early.discard()

    def ingest_many(self, raws: Sequence[bytes], source: Source) -> list[IngestResult]:
        """Each object's result, in order: checked one after the other, then committed together (in as few group
        commits as ``GroupCommit.max_batch`` allows, rows inserted in this order), each answered as ``ingest``
        would. An object that is already in a flushed temp file (``path``) is taken from it."""
        results: list[IngestResult] = []
        for start in range(0, len(raws), self.group.max_batch):  # a batch's objects held at once, no more
            checked = [self._check(raw, source, EarlyWrite(written_as(raw)))
                       for raw in raws[start : start + self.group.max_batch]]  # fmt: skip
            results += self._store(checked)
        return results

    def _ingest(self, raw: bytes, source: Source, early: EarlyWrite) -> IngestResult:
        return self._store([self._check(raw, source, early)])[0]

    def _store(self, checked: list[IngestResult | _Pending]) -> list[IngestResult]:
        """The objects ready to commit committed together, in order; every one's result."""
        pending = [c for c in checked if isinstance(c, _Pending)]
        done = iter(self.group.run_many([partial(p.commit, look_again=p.known) for p in pending]))
        return [self._finish(c, next(done)) if isinstance(c, _Pending) else c for c in checked]

    def _check(self, raw: bytes, source: Source, early: EarlyWrite) -> IngestResult | _Pending:
        try:
            env = Envelope.from_p10(raw, source)
            values = env.values
            missing = [k for k in REQUIRED_UIDS if not values.text(k, UNLIMITED)]
            if not values.has_meta("TransferSyntaxUID"):
                missing.append("TransferSyntaxUID (file meta)")
        except (InvalidDicomError, ValueError, KeyError, EOFError, OSError, TypeError) as exc:
            return self._refuse_quarantined(raw, early, source, StoreOutcome.UNPARSEABLE, f"cannot decode: {exc}")
        except Exception as exc:  # pydicom raises a wide variety on corrupt input
            return self._refuse_quarantined(raw, early, source, StoreOutcome.UNPARSEABLE, f"cannot decode: {exc!r}")
        if missing:
            reason = f"missing {', '.join(missing)}"
            return self._refuse_quarantined(raw, early, source, StoreOutcome.INVALID, reason, env=env)
        if source.protocol == "dimse" and (mismatch := _request_mismatch(env)):
            return self._refuse_quarantined(raw, early, source, StoreOutcome.INVALID, mismatch, env=env)
        notify(self.pm, "router_instance_received", envelope=env)
        return self._prepare(env, early)

    # -- steps --------------------------------------------------------------------------------------------
    def _prepare(self, env: Envelope, early: EarlyWrite) -> IngestResult | _Pending:
        """Steps 2 to 4: the object's result when it ends there (a duplicate, a refusal), else its commit to run."""
        sop_uid = env.sop_instance_uid
        digest = sha256(env.raw)
        try:
            with self.engine.connect() as conn:
                existing = find_instance(conn, sop_uid)
        except SQLAlchemyError as exc:
            return self._refuse(env, StoreOutcome.OUT_OF_RESOURCES, f"database unavailable: {database_error(exc)}")
        verdict = self._duplicate_verdict(existing.sha256 if existing else None, digest)
        if verdict is not None:
            return self._finish_duplicate(env, verdict)

        try:
            plan = self.plan(env)
        except StageError as exc:
            return self._refuse(env, StoreOutcome.PROCESSING_FAILED, str(exc))

        written: list[Path] = []
        lazy = self._journaled(env.raw)
        try:
            if env.stored is None:
                tmp_object = early.take() or files.write_temp(self.tmp_dir, env.raw, durable=not lazy)
            else:
                tmp_object = files.write_temp(self.tmp_dir, env.stored, durable=not lazy)
            written.append(tmp_object)
            derived = self._write_derived(env, plan, written, lazy)
        except Exception as exc:
            return self._failed(env, written, exc)
        commit = partial(self._commit, env, digest, tmp_object, derived, plan, written, lazy)
        return _Pending(env, plan, written, commit, known=existing is not None)

    def _finish(self, pending: _Pending, done: Done[_Committed | StoreOutcome]) -> IngestResult:
        """Step 5's outcome: the object stored, a duplicate found meanwhile, or its failure answered."""
        env = pending.env
        try:
            try:
                result = done.get()
            except IntegrityError:
                self.ids.clear()  # or a cached id named a row another process deleted (PostgreSQL)
                if pending.known:
                    raise
                log.info("%s was stored meanwhile by another sender: deciding again", env.sop_instance_uid)
                result = self.group.run(partial(pending.commit, look_again=True))
        except Exception as exc:
            return self._failed(env, pending.written, exc)
        if isinstance(result, StoreOutcome):
            self.discard(pending.written)
            return self._finish_duplicate(env, result)
        return self._stored(env, result, pending.plan)  # committed: nothing from here on removes a file

    def _failed(self, env: Envelope, written: list[Path], exc: Exception) -> IngestResult:
        self.discard(written)
        if isinstance(exc, OSError):
            return self._refuse(env, StoreOutcome.OUT_OF_RESOURCES, f"cannot write: {exc}")
        if isinstance(exc, SQLAlchemyError):
            return self._refuse(env, StoreOutcome.OUT_OF_RESOURCES, f"database failure: {database_error(exc)}")
        log.error("storing %s failed", env.sop_instance_uid, exc_info=exc)
        return self._refuse(env, StoreOutcome.PROCESSING_FAILED, f"internal error: {exc!r}")

    def _duplicate_verdict(self, stored_digest: str | None, digest: str) -> StoreOutcome | None:
        """None when the object is new or must be (over)written; otherwise the duplicate outcome."""
        if stored_digest is None:
            return None
        if stored_digest == digest:
            return StoreOutcome.DUPLICATE_IDENTICAL
        policy = self.config.dicom.duplicates
        if policy == "overwrite":
            return None
        return StoreOutcome.DUPLICATE_IGNORED if policy == "ignore" else StoreOutcome.DUPLICATE_REJECTED

    def _write_derived(self, env: Envelope, plan: PipelineResult, written: list[Path], lazy: bool) -> dict[int, str]:
        """Write each changed payload once (content-addressed); map id(payload) -> relpath."""
        derived: dict[int, str] = {}
        for fwd in plan.forwards:
            if _own_file(fwd, env) and id(fwd.payload) not in derived:
                tmp = files.write_temp(self.tmp_dir, fwd.payload, durable=not lazy)
                written.append(tmp)
                derived[id(fwd.payload)] = files.derived_relpath(sha256(fwd.payload))
        return derived

    def _commit(
        self,
        env: Envelope,
        digest: str,
        tmp_object: Path,
        derived: dict[int, str],
        plan: PipelineResult,
        written: list[Path],
        lazy: bool,
        conn: Connection,
        look_again: bool,
    ) -> _Committed | StoreOutcome:
        """Rows and renames, in a unit of the group commit (``conn``: its savepoint); the duplicate outcome when
        ``look_again`` finds the instance stored meanwhile. Without ``look_again`` (the lookup before the rules
        found no instance with this SOP Instance UID) the rows are inserted at once: an instance another
        association stored meanwhile makes the insert fail on the unique SOP Instance UID (IntegrityError, before
        any file is renamed) and the caller decides again with ``look_again``."""
        values = env.stored_values()
        sop_uid = env.sop_instance_uid
        existing = find_instance(conn, sop_uid) if look_again else None
        verdict = self._duplicate_verdict(existing.sha256 if existing else None, digest)
        if verdict is not None:
            return verdict
        study_uid = values.text("StudyInstanceUID", UNLIMITED)
        relpath = files.object_relpath(study_uid, values.text("SeriesInstanceUID", UNLIMITED), sop_uid)
        if existing is not None:  # overwrite policy: a new file name, the old file goes after commit
            relpath = relpath[: -len(".dcm")] + f".{digest[:12]}.dcm"
        size = len(env.stored if env.stored is not None else env.raw)
        new_ids = index_instance(
            conn,
            self.ids,
            values,
            relpath=relpath,
            size=size,
            digest=digest,
            transfer_syntax=values.meta_uid("TransferSyntaxUID"),
            calling_ae=env.source.calling_ae,
            existing=existing,
        )
        jobs = [_job(f, env, derived[id(f.payload)] if _own_file(f, env) else relpath) for f in plan.forwards]
        enqueue(conn, jobs)
        hold(
            conn,
            values.text("SeriesInstanceUID", UNLIMITED),
            {f.peer: f.settle for f in plan.forwards if f.settle is not None},
        )
        outcome = StoreOutcome.OVERWRITTEN if existing is not None else StoreOutcome.STORED
        queued = [(job.peer, job.kind.value) for job in jobs]
        record(conn, [activity.dicom_received(env, values, plan, relpath, outcome.value, queued)])
        self._rename_into_place(tmp_object, relpath, derived, written, lazy)
        replaced = existing.size if existing is not None else 0
        batch = self.group.batch
        if lazy:  # what a replay after a power cut needs to store it again
            payloads = {id(f.payload): f.payload for f in plan.forwards if _own_file(f, env)}
            stored = ((relpath, env.stored if env.stored is not None else env.raw),)
            batch.journal(Entry(env.raw, env.source, sop_uid, digest,
                                stored + tuple((rel, payloads[key]) for key, rel in derived.items())))  # fmt: skip
        batch.after_commit(partial(self.ids.remember, new_ids))
        batch.after_commit(partial(self.on_stored, study_uid, size, replaced))  # under the write lock still
        return _Committed(relpath, existing.path if existing is not None else None)

    def _rename_into_place(
        self, tmp_object: Path, relpath: str, derived: dict[int, str], written: list[Path], lazy: bool
    ) -> None:
        """Files take their names only after the rows: a unique-UID failure before leaves no file behind. Their
        folders are fsynced once for the whole group commit, before it commits (``lazy``: the journal's checkpoint
        flushes them)."""
        tmp_paths = iter(written[1:])
        renames = [(tmp_object, relpath)]
        renames += [(next(tmp_paths), rel) for rel in derived.values()]
        batch, store = self.group.batch, storage.of(self.config)
        for tmp, rel in renames:
            written.append(self.data_dir / rel)  # before the rename: a failed folder fsync must clean it too
            store.commit_in(batch, tmp, rel, lazy)  # a folder: fsynced once for the batch; S3: durable when it returns

    def _stored(self, env: Envelope, done: _Committed, plan: PipelineResult) -> IngestResult:
        """The object is committed: the replaced version's file goes (overwrite policy), the plugins are told, the
        forward workers woken."""
        sop_uid = env.sop_instance_uid
        relpath, old_path = done.relpath, done.old_path
        if old_path is not None and old_path != relpath:
            try:
                with self.write_lock:  # no commit between its look and the removal (an overwrite back to them)
                    drop_if_orphaned(self.engine, self.data_dir, old_path, sop_uid)
            except Exception:  # the new version is stored all the same; the old file stays behind
                log.exception("%s overwritten: its replaced file %s was not removed", sop_uid, old_path)
        outcome = StoreOutcome.OVERWRITTEN if old_path is not None else StoreOutcome.STORED
        source = env.source.calling_ae or env.source.protocol
        log.info("stored %s from %s (%s), %d forward job(s)", sop_uid, source, outcome.value, len(plan.forwards))
        notify(
            self.pm,
            "router_instance_stored",
            envelope=env,
            outcome=outcome.value,
            path=relpath,
            jobs=len(plan.forwards),
        )
        self.committed({f.peer for f in plan.forwards})
        return IngestResult(outcome, sop_uid, jobs=len(plan.forwards))

    # -- outcomes -----------------------------------------------------------------------------------------
    def _finish_duplicate(self, env: Envelope, outcome: StoreOutcome) -> IngestResult:
        sop_uid = env.sop_instance_uid
        if outcome == StoreOutcome.DUPLICATE_REJECTED:
            return self._refuse(
                env, outcome, "a different object with this SOP Instance UID is stored (policy: reject)"
            )
        log.info("duplicate %s from %s: %s", sop_uid, env.source.calling_ae, outcome.value)
        entry = activity.dicom_refused(env.source, sop_uid, "duplicate", outcome.value, 0, "already stored", env)
        activity.record_quietly(self.engine, entry)
        notify(self.pm, "router_instance_stored", envelope=env, outcome=outcome.value, path="", jobs=0)
        return IngestResult(outcome, sop_uid)

    def _refuse(self, env: Envelope, outcome: StoreOutcome, reason: str) -> IngestResult:
        result = IngestResult(outcome, env.sop_instance_uid, reason)
        log.warning(
            "refused %s from %s: %s (0x%04X)",
            result.sop_instance_uid,
            env.source.calling_ae,
            redact(reason),
            result.status,
        )
        notify(
            self.pm,
            "router_instance_refused",
            source=env.source,
            sop_instance_uid=result.sop_instance_uid,
            outcome=outcome.value,
            status=result.status,
            reason=reason,
        )
        entry = activity.dicom_refused(env.source, result.sop_instance_uid, "refused", outcome.value, result.status,
                                       reason, env)  # fmt: skip
        activity.record_quietly(self.engine, entry)
        return result

    def _refuse_quarantined(
        self,
        raw: bytes,
        early: EarlyWrite,
        source: Source,
        outcome: StoreOutcome,
        reason: str,
        env: Envelope | None = None,
    ) -> IngestResult:
        sop_uid = ""
        if env is not None:
            sop_uid = str(env.header.get("SOPInstanceUID", ""))
        name = (
            f"{utcnow():%Y%m%dT%H%M%S}-{files.safe_component(source.calling_ae or source.protocol)}-"
            f"{uuid.uuid4().hex[:8]}"
        )
        # A decoder's error may quote the object's values: the log line says what kind of refusal it is, the whole
        # reason goes to the sender's Error Comment and the quarantine's .txt file (readable by the router only).
        logged = "cannot decode" if outcome == StoreOutcome.UNPARSEABLE else redact(reason)
        try:
            tmp = early.take() or files.write_temp(self.tmp_dir, raw)  # the bytes as received: already written
            files.commit_file(tmp, self.quarantine_dir / f"{name}.dcm")
            files.write_private(
                self.quarantine_dir / f"{name}.txt",
                f"reason: {reason}\ncalling_ae: {source.calling_ae}\ncalled_ae: {source.called_ae}\n"
                f"address: {source.address}\nprotocol: {source.protocol}\nsop_instance_uid: {sop_uid}\n".encode(),
            )
        except OSError as exc:
            outcome, reason = StoreOutcome.OUT_OF_RESOURCES, f"{reason}; quarantine failed: {exc}"
            logged += f"; quarantine failed: {exc}"
        result = IngestResult(outcome, sop_uid, reason)
        log.warning("refused object from %s into quarantine %s: %s (0x%04X)", source.calling_ae, name, logged,
                    result.status)  # fmt: skip
        notify(
            self.pm,
            "router_instance_refused",
            source=source,
            sop_instance_uid=sop_uid,
            outcome=outcome.value,
            status=result.status,
            reason=reason,
        )
        entry = activity.dicom_refused(source, sop_uid, "refused", outcome.value, result.status,
                                       f"{reason} (quarantine {name})")  # fmt: skip
        activity.record_quietly(self.engine, entry)
        return result
