"""MPPS SCP: N-CREATE and N-SET (PS3.4 F.7), IN PROGRESS -> COMPLETED | DISCONTINUED.

Order of work for each message (the response comes after the last step, as for C-STORE):
1. check the request (``attributes.py``): refusals 0x0120 / 0x0121 / 0x0106, 0x0111 duplicate N-CREATE, 0x0112
   N-SET on an unknown step, 0x0110 (Error ID A710) N-SET on a completed or discontinued step;
2. run the rules (``when: {kind: mpps}``; ``message`` is N-CREATE or N-SET; ``tags`` test the step as it is
   after the message): ``forward`` plans outbox jobs (an N-SET forwarded carries the received images, see
   ``images.py``);
3. write the message as received and the step's new state (fsynced files), then in one transaction under the
   write lock: the step row, the worklist items it performs, the outbox jobs. Jobs of one step go to a peer in
   order (the outbox claims one job per step and peer at a time).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from router import storage
from router.hooks.manager import notify
from router.intake.base import Intake
from router.intake.envelope import Envelope, Source
from router.intake.pipeline import PipelineResult
from router.intake.stage import StageError
from router.logs import database_error, redact
from router.mpps import FINAL, MPPS, MppsMessage
from router.mpps.attributes import Refusal, apply_set, check_create, check_set, text
from router.mpps.images import with_received_images
from router.mpps.worklist import decode_ids, encode_ids, linked_items, set_status
from router.outbox.jobs import JobKind, NewJob, enqueue
from router.statuses import DUPLICATE_INSTANCE, NO_SUCH_INSTANCE, PROCESSING_FAILURE, dimse_status
from router.store import files
from router.store.datasets import from_part10, to_part10
from router.store.models import utcnow
from router.store.tables import PERFORMED_PROCEDURE_STEP as PPS

log = logging.getLogger(__name__)


class Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.comment)
        self.refusal = refusal


def _source(event: evt.Event) -> Source:
    req = event.assoc.requestor
    return Source("dimse", str(req.ae_title).strip(), str(event.assoc.acceptor.ae_title).strip(),
                  f"{req.address}:{req.port}")  # fmt: skip


class MppsService(Intake):
    # -- handlers (EVT_N_CREATE / EVT_N_SET for the MPPS SOP class) ------------------------------------------
    def on_create(self, event: evt.Event) -> tuple[Dataset, None]:
        uid = str(getattr(event.request, "AffectedSOPInstanceUID", None) or "").rstrip("\x00 ")
        return self._answer("N-CREATE", uid, event, lambda ds, src: self._create(uid, ds, src))

    def on_set(self, event: evt.Event) -> tuple[Dataset, None]:
        uid = str(getattr(event.request, "RequestedSOPInstanceUID", None) or "").rstrip("\x00 ")
        return self._answer("N-SET", uid, event, lambda ds, src: self._set(uid, ds, src))

    def _answer(
        self, operation: str, uid: str, event: evt.Event, apply: Callable[[Dataset, Source], str]
    ) -> tuple[Dataset, None]:
        source = _source(event)
        try:
            ds = event.attribute_list if operation == "N-CREATE" else event.modification_list
        except Exception as exc:
            log.warning("MPPS %s %s from %s cannot be decoded: %s", operation, uid, source.calling_ae, redact(exc))
            return dimse_status(PROCESSING_FAILURE, "cannot decode the dataset"), None
        try:
            outcome = apply(ds, source)
        except Refused as exc:
            r = exc.refusal
            log.warning("MPPS %s %s from %s refused (0x%04X): %s", operation, uid, source.calling_ae, r.status,
                        redact(r.comment))  # fmt: skip
            return dimse_status(r.status, r.comment, r.error_id), None
        except StageError as exc:
            log.warning("MPPS %s %s from %s: %s", operation, uid, source.calling_ae, redact(exc))
            return dimse_status(PROCESSING_FAILURE, "a rule stage failed"), None
        except (SQLAlchemyError, OSError) as exc:
            log.error(
                "MPPS %s %s from %s cannot be stored now: %s", operation, uid, source.calling_ae, database_error(exc)
            )
            return dimse_status(PROCESSING_FAILURE, "cannot store the step now"), None
        log.info("MPPS %s %s from %s: %s", operation, uid, source.calling_ae, outcome)
        return dimse_status(0x0000), None

    # -- N-CREATE -------------------------------------------------------------------------------------------
    def _create(self, uid: str, ds: Dataset, source: Source) -> str:
        refusal = check_create(ds, uid)
        if refusal is not None:
            raise Refused(refusal)
        if self._find(uid) is not None:
            raise Refused(Refusal(DUPLICATE_INSTANCE, "an MPPS with this SOP Instance UID exists"))
        message = MppsMessage("N-CREATE", uid, ds, ds)
        raw = to_part10(ds, MPPS, uid)
        plan = self.plan(Envelope.from_mpps(raw, message, source))
        written: list[Path] = []
        try:
            relpath = self._write(uid, 1, "create", raw, written)
            with self.write_lock, self.engine.begin() as conn:
                items = linked_items(conn, ds)
                now = utcnow()
                conn.execute(insert(PPS).values(
                    sop_uid=uid, status=message.status, calling_ae=source.calling_ae[:16],
                    modality=text(ds, "Modality")[:16], study_uid=_step_value(ds, "StudyInstanceUID")[:64],
                    accession_number=_step_value(ds, "AccessionNumber")[:16],
                    pps_id=text(ds, "PerformedProcedureStepID")[:16], path=relpath, messages=1,
                    worklist_items=encode_ids(items), created_at=now, updated_at=now,
                ))  # fmt: skip
                moved = set_status(conn, items, message.status)
                self._queue(conn, JobKind.MPPS_CREATE, uid, plan, relpath)
        except IntegrityError as exc:
            self.discard(written)
            raise Refused(Refusal(DUPLICATE_INSTANCE, "an MPPS with this SOP Instance UID exists")) from exc
        except BaseException:
            self.discard(written)
            raise
        self.committed({f.peer for f in plan.forwards})
        notify(self.pm, "router_mpps_created", **_about(uid, message, source))
        return f"{message.status}, {moved} worklist item(s) moved, {len(plan.forwards)} forward job(s)"

    # -- N-SET ----------------------------------------------------------------------------------------------
    def _set(self, uid: str, mods: Dataset, source: Source) -> str:
        row = self._find(uid)
        if row is None:
            raise Refused(Refusal(NO_SUCH_INSTANCE, "no MPPS with this SOP Instance UID"))
        refusal = check_set(mods, row.status)
        if refusal is not None:
            raise Refused(refusal)
        state = apply_set(from_part10(storage.of(self.config).read_bytes(row.path)), mods)
        message = MppsMessage("N-SET", uid, mods, state)
        raw = to_part10(mods, MPPS, uid)
        plan = self.plan(Envelope.from_mpps(raw, message, source))
        added = 0
        forward = mods
        if plan.forwards:
            with self.engine.connect() as conn:
                forward, added = with_received_images(conn, mods, state)
        number = row.messages + 1
        written: list[Path] = []
        try:
            set_path = self._write(uid, number, "set", raw, written)
            state_path = self._write(uid, number, "state", to_part10(state, MPPS, uid), written)
            forward_path = set_path
            if added:
                forward_path = self._write(uid, number, "forward", to_part10(forward, MPPS, uid), written)
            with self.write_lock, self.engine.begin() as conn:
                current = conn.execute(select(PPS.c.status, PPS.c.messages).where(PPS.c.sop_uid == uid)).one()
                if current.status in FINAL or current.messages != row.messages:  # another N-SET got there first
                    raise Refused(check_set(mods, current.status) or Refusal(PROCESSING_FAILURE, "concurrent N-SET"))
                conn.execute(update(PPS).where(PPS.c.sop_uid == uid).values(
                    status=message.status, path=state_path, messages=number, updated_at=utcnow()))  # fmt: skip
                final = message.status in FINAL
                moved = set_status(conn, decode_ids(row.worklist_items), message.status) if final else 0
                self._queue(conn, JobKind.MPPS_SET, uid, plan, forward_path)
        except BaseException:
            self.discard(written)
            raise
        self.committed({f.peer for f in plan.forwards})
        notify(self.pm, "router_mpps_updated", **_about(uid, message, source))
        return (f"{message.status}, {moved} worklist item(s) moved, {len(plan.forwards)} forward job(s)"
                f"{f' with {added} received instance(s) added' if added else ''}")  # fmt: skip

    # -- helpers --------------------------------------------------------------------------------------------
    def _find(self, uid: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(PPS).where(PPS.c.sop_uid == uid)).first()

    def _write(self, uid: str, number: int, what: str, data: bytes, written: list[Path]) -> str:
        relpath = f"mpps/{files.safe_component(uid)}/{number:03d}-{what}-{uuid.uuid4().hex[:8]}.dcm"
        return self.write_file(relpath, data, written)

    @staticmethod
    def _queue(conn: Connection, kind: JobKind, uid: str, plan: PipelineResult, relpath: str) -> None:
        enqueue(conn, [NewJob(kind, fwd.peer, uid, relpath, MPPS, rule=fwd.rule) for fwd in plan.forwards])


def _about(uid: str, message: MppsMessage, source: Source) -> dict[str, Any]:
    """The arguments of ``router_mpps_created`` / ``router_mpps_updated``."""
    return {"sop_instance_uid": uid, "status": message.status, "calling_ae": source.calling_ae,
            "address": source.address, "dataset": message.state}  # fmt: skip


def _step_value(ds: Dataset, keyword: str) -> str:
    """A value from the first Scheduled Step Attributes item that has it."""
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        found = text(item, keyword)
        if found:
            return found
    return ""
