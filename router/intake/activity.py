"""The activity rows the intakes write (``router.store.activity``): what came in, from whom, which rules matched,
what each stage did and which jobs were queued; or why it was refused.

The ``received`` row of a stored object is written in the transaction that commits its index rows and jobs
(``Ingestor._commit``, ``Hl7Intake._handle``). A refusal or a repeat has no transaction of its own to join:
``record_quietly`` writes it in one, and a database that cannot take it (the likely reason for some refusals)
costs a log line, never the answer to the sender.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine

from router.hl7.message import Hl7Header, Hl7Message
from router.hl7.segments import segments_of
from router.intake.envelope import Envelope, HeaderValues, Source
from router.intake.pipeline import PipelineResult
from router.store.activity import Entry, record_now

log = logging.getLogger(__name__)


def _source(source: Source) -> str:
    return " ".join(part for part in (source.calling_ae, source.address) if part)


def _plan(plan: PipelineResult | None, jobs: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    if plan is None:
        return {}
    return {
        "rules": [rule.name for rule in plan.rules],
        "steps": [{"rule": s.rule, "stage": s.stage, "where": s.where, "text": s.text} for s in plan.steps],
        "jobs": [{"peer": peer, "kind": kind} for peer, kind in jobs],
    }


def dicom_keys(values: HeaderValues, sop_uid: str) -> dict[str, str]:
    return {
        "patient_id": values.text("PatientID", 64),
        "accession": values.text("AccessionNumber", 16),
        "study_uid": values.text("StudyInstanceUID", 64),
        "sop_uid": sop_uid,
    }


def dicom_received(
    env: Envelope, values: HeaderValues, plan: PipelineResult, relpath: str, outcome: str, jobs: list[tuple[str, str]]
) -> Entry:
    """The ``received`` row of a stored DICOM object (``jobs``: peer and kind of each job queued)."""
    src = env.source
    detail = {"outcome": outcome, "protocol": src.protocol, "calling_ae": src.calling_ae,
              "called_ae": src.called_ae, "address": src.address, "path": relpath,
              "sop_class_uid": env.sop_class_uid, **_plan(plan, jobs)}  # fmt: skip
    return Entry("received", env.sop_instance_uid, "dicom", dicom_keys(values, env.sop_instance_uid),
                 source=_source(src), detail=detail)  # fmt: skip


def dicom_refused(source: Source, sop_uid: str, event: str, outcome: str, status: int, reason: str,
                  env: Envelope | None = None) -> Entry:  # fmt: skip
    """A refused object (``event`` ``refused``), or one received again and not stored again (``duplicate``)."""
    keys = {"sop_uid": sop_uid}
    if env is not None:
        with contextlib.suppress(Exception):  # a damaged object: the UID is all there is
            keys = dicom_keys(env.values, sop_uid)
    detail = {"outcome": outcome, "reason": reason, "protocol": source.protocol, "calling_ae": source.calling_ae,
              "called_ae": source.called_ae, "address": source.address}  # fmt: skip
    return Entry(event, sop_uid or f"refused:{source.protocol}:{source.calling_ae}", "dicom", keys, status=status,
                 source=_source(source), detail=detail)  # fmt: skip


def hl7_keys(msg: Hl7Header) -> dict[str, str]:
    keys = {"msh10": msg.control_id}
    if isinstance(msg, Hl7Message):
        segments = segments_of(msg)
        pid = next((s for s in segments if s.name == "PID"), None)
        if pid is not None:
            keys["patient_id"] = pid.get(3)
        accession = next((s.get(1) for s in segments if s.name == "IPC" and s.get(1)), "") or next(
            (s.get(18) for s in segments if s.name == "OBR" and s.get(18)), ""
        )
        keys["accession"] = accession
    return keys


def hl7_subject(msg: Hl7Header, relpath: str) -> str:
    """An HL7 message's rows: by its message file when it has one (its jobs' path), else sender and MSH-10."""
    return relpath or f"hl7:{msg.sending_application}^{msg.sending_facility}:{msg.control_id}"


def hl7_received(msg: Hl7Message, address: str, plan: PipelineResult, relpath: str, summary: list[str]) -> Entry:
    jobs = [(f.peer, "hl7") for f in plan.forwards]
    detail = {"outcome": "applied", "ack": "AA", "message_type": msg.message_type, "summary": summary,
              "sending_application": msg.sending_application, "sending_facility": msg.sending_facility,
              "address": address, "path": relpath, **_plan(plan, jobs)}  # fmt: skip
    return Entry("received", hl7_subject(msg, relpath), "hl7", hl7_keys(msg), source=f"{msg.sending_application} "
                 f"{address}".strip(), detail=detail, message=msg.raw.decode(msg.codec, "replace"))  # fmt: skip


def hl7_refused(msg: Hl7Header | None, address: str, event: str, ack_code: str, error: str) -> Entry:
    header = msg or Hl7Header()
    detail = {"outcome": "refused" if event == "refused" else "repeat", "ack": ack_code, "error": error,
              "message_type": header.message_type, "address": address}  # fmt: skip
    return Entry(event, hl7_subject(header, ""), "hl7", hl7_keys(header),
                 source=f"{header.sending_application} {address}".strip(), detail=detail)  # fmt: skip


def record_quietly(engine: Engine, entry: Entry) -> None:
    """Write one row in a transaction of its own; a failure is logged (the caller's answer does not depend on it)."""
    try:
        record_now(engine, [entry])
    except Exception as exc:
        log.warning("activity not recorded (%s %s): %s", entry.event, entry.kind, exc)
