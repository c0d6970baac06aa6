"""One HL7 message from bytes to an acknowledgement (HL7 v2 chapter 2, original mode).

1. parse and check the header (unreadable, unsupported version / processing id / type: AR);
2. a message already applied (same MSH-10 from the same MSH-3/MSH-4) is acknowledged again, not re-applied;
3. the rules run (``when: {kind: hl7, message: ...}``): ``forward`` plans outbox jobs to MLLP peers;
4. in one transaction: the patient / order effects, the outbox jobs (their message file fsynced first) and the
   log row that makes step 2 work; commit;
5. AA. A message that can be read but is wrong gets AE with an ERR segment naming the field; a database or disk
   failure gets AR (error 207), so the sender keeps the message and retries.

Supported: ADT A01 A04 A05 A08 A28 A31 (patient create/update), A40 A34 (merge), ORM^O01 and OMI^O23 (orders
-> worklist). Any other type is accepted only when a rule routes it (``forward``), else AR 200/201.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from router.hl7.ack import build_ack
from router.hl7.codes import INTERNAL_ERROR, UNSUPPORTED_EVENT, UNSUPPORTED_MESSAGE_TYPE
from router.hl7.errors import Hl7Error
from router.hl7.message import Hl7Header, Hl7Message, parse_message
from router.hl7.orders import apply_order, order_groups, person_name_at
from router.hl7.patients import (
    MERGE_EVENTS,
    UPDATE_EVENTS,
    identifiers,
    merge_patients,
    read_patient,
    upsert_patient,
)
from router.hl7.segments import Segment, segments_of
from router.hooks.manager import notify
from router.intake import activity
from router.intake.base import Intake, IntakeContext
from router.intake.envelope import Envelope, Source
from router.intake.groupcommit import GroupCommit
from router.intake.pipeline import PipelineResult
from router.intake.resends import queue_patient_resends
from router.intake.stage import PlannedForward, StageError
from router.logs import database_error, redact
from router.outbox.jobs import HL7_STREAM, JobKind, NewJob, enqueue
from router.store.activity import record
from router.store.models import utcnow
from router.store.rawsql import insert_columns, raw
from router.store.tables import HL7_LOG as LOG

log = logging.getLogger(__name__)

ORDER_MESSAGES = {"ORM": {"O01"}, "OMI": {"O23"}}
# run by every message, compiled once (router.store.rawsql)
_APPLIED = select(LOG.c.ack_code).where(
    LOG.c.sender == bindparam("sender"), LOG.c.control_id == bindparam("control_id")
)
_LOG_INSERT = insert(LOG)
_LOG_KEYS = insert_columns(LOG)


@dataclass
class Applied:
    summary: list[str] = field(default_factory=list)
    merged: bool = False
    patient_fk: int | None = None  # the patient the message changed


def _about(msg: Hl7Header | None, address: str) -> dict[str, Any]:
    """The arguments ``router_hl7_received`` and ``router_hl7_acknowledged`` share (``msg``: None if unreadable)."""
    header = msg or Hl7Header()
    return {"message_type": header.message_type, "control_id": header.control_id, "address": address,
            "sending_application": header.sending_application, "sending_facility": header.sending_facility,
            "message": msg}  # fmt: skip


def _first(segments: list[Segment], name: str) -> Segment | None:
    return next((s for s in segments if s.name == name), None)


def _require(segments: list[Segment], name: str) -> Segment:
    found = _first(segments, name)
    if found is None:
        raise Hl7Error("AE", 100, f"required segment {name} missing", location=(name, 1))
    return found


class Hl7Intake(Intake):
    def __init__(self, context: IntakeContext) -> None:
        super().__init__(context)
        self.on_patients_merged: Callable[[], None] = lambda: None
        self.group = GroupCommit(self.engine, self.write_lock)  # connections share commits (one fsync)

    def handle(self, raw: bytes, peer_address: str) -> bytes:
        """The MLLP handler: the ACK for ``raw``. Never raises for a bad message."""
        try:
            msg = parse_message(raw, accepted_processing_ids=self.config.hl7.accepted_processing_ids,
                                use_hl7apy=self.config.hl7.validation == "structure")  # fmt: skip
        except Hl7Error as exc:
            log.warning("HL7 from %s refused: %s", peer_address, redact(exc))
            notify(self.pm, "router_hl7_acknowledged", **_about(exc.partial, peer_address), ack_code=exc.ack_code,
                   error=str(exc))  # fmt: skip
            self._refused(exc.partial, peer_address, exc.ack_code, str(exc))
            return build_ack(exc.partial, exc.ack_code, [exc])
        notify(self.pm, "router_hl7_received", **_about(msg, peer_address))
        try:
            ack = self._handle(msg, peer_address)
        except Hl7Error as exc:
            log.warning("HL7 %s %s from %s: %s", msg.message_type, msg.control_id, peer_address, redact(exc))
            notify(self.pm, "router_hl7_acknowledged", **_about(msg, peer_address), ack_code=exc.ack_code,
                   error=str(exc))  # fmt: skip
            self._refused(msg, peer_address, exc.ack_code, str(exc))
            return build_ack(msg, exc.ack_code, [exc])
        except (SQLAlchemyError, OSError) as exc:
            log.error("HL7 %s %s cannot be processed now: %s", msg.message_type, msg.control_id, database_error(exc))
            err = Hl7Error("AR", INTERNAL_ERROR, "the router cannot store this message now; send it again")
            notify(self.pm, "router_hl7_acknowledged", **_about(msg, peer_address), ack_code="AR", error=str(err))
            self._refused(msg, peer_address, "AR", str(err))
            return build_ack(msg, "AR", [err])
        notify(self.pm, "router_hl7_acknowledged", **_about(msg, peer_address), ack_code="AA", error="")
        return ack

    def _refused(self, msg: Hl7Header | None, address: str, ack_code: str, error: str, event: str = "refused") -> None:
        activity.record_quietly(self.engine, activity.hl7_refused(msg, address, event, ack_code, error))

    # -- steps --------------------------------------------------------------------------------------------
    def _handle(self, msg: Hl7Message, peer_address: str) -> bytes:
        sender = f"{msg.sending_application}^{msg.sending_facility}"
        with self.engine.connect() as conn:
            done = raw(_APPLIED, conn).execute(conn, {"sender": sender, "control_id": msg.control_id})
        if done is not None:
            log.info("HL7 %s %s from %s already applied: acknowledged again", msg.message_type, msg.control_id, sender)
            self._refused(msg, peer_address, done[0], "applied before: acknowledged again", event="duplicate")
            return build_ack(msg, done[0])
        env = Envelope.from_hl7(msg.raw, msg, Source("mllp", msg.sending_application, msg.receiving_application,
                                                     peer_address))  # fmt: skip
        try:
            plan = self.plan(env)
        except StageError as exc:
            raise Hl7Error("AR", INTERNAL_ERROR, str(exc)) from exc
        applies = self._supported(msg)
        if not applies and not plan.forwards:
            known = msg.message_code in ("ADT", *ORDER_MESSAGES)
            code = UNSUPPORTED_EVENT if known else UNSUPPORTED_MESSAGE_TYPE
            comp = 2 if known else 1
            raise Hl7Error("AR", code, f"{msg.message_type} is not supported here", location=("MSH", 1, 9, comp))
        segments = segments_of(msg)
        written: list[Path] = []
        try:
            relpath = self._write_message(msg, written) if plan.forwards else ""
            applied = self.group.run(lambda conn: self._commit(conn, msg, segments, plan, relpath, peer_address))
        except IntegrityError as exc:
            self.discard(written)
            if "control_id" in str(exc) or "uq_hl7" in str(exc):  # the same message on another connection won
                return build_ack(msg, "AA")
            raise
        except BaseException:
            self.discard(written)
            raise
        if applied.merged:
            self.on_patients_merged()
        self.committed({f.peer for f in plan.forwards} | {peer for peer, _ in plan.resends})
        log.info("HL7 %s %s from %s: %s", msg.message_type, msg.control_id, sender, "; ".join(applied.summary))
        return build_ack(msg, "AA")

    def _commit(
        self,
        conn: Connection,
        msg: Hl7Message,
        segments: list[Segment],
        plan: PipelineResult,
        relpath: str,
        address: str,
    ) -> Applied:
        """The message's rows (effects, jobs, log, activity), in its savepoint of a group commit."""
        applies = self._supported(msg)
        applied = self._apply(conn, msg, segments) if applies else Applied(["routed only"])
        self._queue(conn, msg, plan.forwards, relpath)
        if plan.resends and applied.patient_fk is not None:
            count = queue_patient_resends(conn, applied.patient_fk, plan.resends)
            applied.summary.append(f"{count} corrected object(s) queued")
        sender = f"{msg.sending_application}^{msg.sending_facility}"
        raw(_LOG_INSERT, conn, _LOG_KEYS).execute(conn, {
            "sender": sender, "control_id": msg.control_id, "message_type": msg.message_type, "ack_code": "AA",
            "summary": "; ".join(applied.summary)[:1024], "received_at": utcnow(),
        })  # fmt: skip
        record(conn, [activity.hl7_received(msg, address, plan, relpath, applied.summary)])
        return applied

    @staticmethod
    def _supported(msg: Hl7Message) -> bool:
        if msg.message_code == "ADT":
            return msg.trigger_event in UPDATE_EVENTS | MERGE_EVENTS
        return msg.trigger_event in ORDER_MESSAGES.get(msg.message_code, set())

    def _apply(self, conn: Connection, msg: Hl7Message, segments: list[Segment]) -> Applied:
        pid = _require(segments, "PID")
        pv1 = _first(segments, "PV1")
        facts = read_patient(pid, pv1, segments)
        if msg.message_code == "ADT" and msg.trigger_event in MERGE_EVENTS:
            mrg = _require(segments, "MRG")
            prior = identifiers(mrg, 1)
            if not prior:
                raise Hl7Error("AE", 101, "no prior patient identifier", location=("MRG", 1, 1, 1))
            survivor = upsert_patient(conn, facts)
            removed = merge_patients(conn, survivor, prior)
            return Applied([f"merged {len(removed)} patient(s) into patient {survivor}"], True, survivor)
        patient_fk = upsert_patient(conn, facts)
        if msg.message_code == "ADT":
            return Applied([f"patient {patient_fk} updated"], patient_fk=patient_fk)
        groups = order_groups(segments)
        if not groups:
            raise Hl7Error("AE", 100, "required segment ORC missing", location=("ORC", 1))
        referring = person_name_at(pv1, 8) if pv1 is not None else ""
        return Applied([apply_order(conn, g, patient_fk, self.config, referring) for g in groups])

    def _write_message(self, msg: Hl7Message, written: list[Path]) -> str:
        return self.write_file(f"hl7/{utcnow():%Y%m%d}/{uuid.uuid4().hex}.hl7", msg.raw, written)

    def _queue(self, conn: Connection, msg: Hl7Message, forwards: list[PlannedForward], relpath: str) -> None:
        enqueue(
            conn, [NewJob(JobKind.HL7, f.peer, HL7_STREAM, relpath, msg.message_type, rule=f.rule) for f in forwards]
        )
