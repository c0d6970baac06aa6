"""Storage Commitment Push Model SCP: a peer asks the router to take responsibility for instances it sent.

For each instance of the N-ACTION's Referenced SOP Sequence the router checks, at that moment, that it is durably
stored: an index row, with the SOP Class asked for, and its file present with the size recorded. There is no
caching of requests: an instance not received yet is reported as failed, never committed later.

The N-EVENT-REPORT (event type 1 when every instance is committed, 2 with a Failed SOP Sequence otherwise; Failure
Reason 0x0112 no such object instance, 0x0119 class/instance conflict, 0x0110 processing failure) is sent over
the same association once the N-ACTION response is out, while the peer keeps it open. When that is not possible,
or the peer's ``commit_new_association`` says so, it goes over a new association to the peer whose AE title
called (``peers``), as a durable outbox job (kind ``commit-report``) retried like any forward. The job is
committed before the N-ACTION is answered, so a report owed survives a crash.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pluggy
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from router import storage
from router._pynetdicom import reply_gate
from router.commitment import REQUEST_COMMITMENT, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
from router.commitment.datasets import BadRequest, Ref, event_information, read_action, report_uids, to_bytes
from router.config import RouterConfig
from router.hooks.manager import notify
from router.logs import database_error, redact
from router.outbox.jobs import JobKind, NewJob, enqueue_one
from router.statuses import (
    CLASS_INSTANCE_CONFLICT,
    INVALID_ARGUMENT,
    NO_SUCH_ACTION,
    NO_SUCH_INSTANCE,
    PROCESSING_FAILURE,
    SUCCESS,
    dimse_status,
)
from router.store import files
from router.store.models import JobState, utcnow
from router.store.tables import INSTANCE, JOB

if TYPE_CHECKING:
    from router._pynetdicom.gate import Gate

log = logging.getLogger(__name__)

PARK_TIMEOUT = 10.0  # seconds for the reactor to send the N-ACTION response and go idle
CHUNK = 500  # SOP Instance UIDs per index query


def verify(engine: Engine, config: RouterConfig, refs: list[Ref]) -> list[tuple[Ref, int | None]]:
    """Each instance with None (durably stored) or its Failure Reason."""
    rows: dict[str, Any] = {}
    row: Any
    uids = list(dict.fromkeys(r.sop_uid for r in refs))
    with engine.connect() as conn:
        for start in range(0, len(uids), CHUNK):
            query = select(INSTANCE.c.sop_uid, INSTANCE.c.sop_class_uid, INSTANCE.c.path, INSTANCE.c.size)
            for row in conn.execute(query.where(INSTANCE.c.sop_uid.in_(uids[start : start + CHUNK]))):
                rows[row.sop_uid] = row
    outcomes: list[tuple[Ref, int | None]] = []
    for ref in refs:
        row = rows.get(ref.sop_uid)
        if row is None:
            outcomes.append((ref, NO_SUCH_INSTANCE))
        elif row.sop_class_uid != ref.sop_class_uid:
            outcomes.append((ref, CLASS_INSTANCE_CONFLICT))
        else:
            outcomes.append((ref, None if _intact(config, row) else PROCESSING_FAILURE))
    return outcomes


def _intact(config: RouterConfig, row: Any) -> bool:
    try:
        size = storage.of(config).size(row.path)
    except OSError:
        log.error("storage commitment: %s is indexed but its file %s is missing", row.sop_uid, row.path)
        return False
    if size != row.size:
        log.error("storage commitment: %s file is %d bytes, %d recorded", row.sop_uid, size, row.size)
        return False
    return True


class CommitmentSCP:
    def __init__(self, config: RouterConfig, engine: Engine, pm: pluggy.PluginManager) -> None:
        self.config = config
        self.engine = engine
        self.pm = pm
        self.wake: Callable[[set[str]], None] = lambda peers: None  # the forward workers: a report job is due

    def on_action(self, event: evt.Event) -> tuple[Dataset, None]:
        """EVT_N_ACTION for Storage Commitment: check, record the report owed, answer, then report."""
        calling = str(event.assoc.requestor.ae_title).strip()
        if event.action_type != REQUEST_COMMITMENT:
            return dimse_status(NO_SUCH_ACTION, f"action type {event.action_type} is not 1"), None
        try:
            uid, refs = read_action(event.action_information)
        except BadRequest as exc:
            log.warning("storage commitment request from %s refused: %s", calling, redact(exc))
            return dimse_status(INVALID_ARGUMENT, str(exc)), None
        except Exception as exc:  # the Action Information cannot be decoded
            log.warning("storage commitment request from %s cannot be decoded: %s", calling, redact(exc))
            return dimse_status(PROCESSING_FAILURE, "cannot decode the Action Information"), None
        peer = self.config.peer_by_ae(calling)
        dicom = self.config.dicom_peer(peer) if peer is not None else None
        new_association = dicom is not None and dicom.commit_new_association
        gate = None if new_association else reply_gate(event.assoc)  # None: pynetdicom's own code cannot report here
        try:
            outcomes = verify(self.engine, self.config, refs)
            event_type, info = event_information(uid, outcomes, self.config.ae_title)
            job_id = self._queue(peer, uid, info, due_now=gate is None) if peer is not None else None
        except (SQLAlchemyError, OSError) as exc:
            log.error(
                "storage commitment request %s from %s cannot be processed now: %s", uid, calling, database_error(exc)
            )
            return dimse_status(PROCESSING_FAILURE, "cannot check or record the request now"), None
        failed = sum(1 for _ref, reason in outcomes if reason is not None)
        address = f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"
        notify(self.pm, "router_commitment_requested", transaction_uid=uid, direction="inbound", peer_ae=calling,
               address=address, sop_instance_uids=[ref.sop_uid for ref in refs])  # fmt: skip
        log.info(
            "storage commitment %s from %s: %d instance(s), %d committed, %d failed; report %s",
            uid, calling, len(refs), len(refs) - failed, failed,
            "on a new association" if gate is None else "on this association",
        )  # fmt: skip
        if gate is None:
            if peer is not None:
                self.wake({peer})
            else:
                log.error("storage commitment report %s cannot be sent: not on this association without the "
                          "pynetdicom patches, and %s is not in peers", uid, calling)  # fmt: skip
        else:
            threading.Thread(
                target=self._report_here,
                args=(event.assoc, gate, uid, event_type, info, peer, job_id),
                name=f"commit-report-{uid[-8:]}",
                daemon=True,
            ).start()
        return dimse_status(SUCCESS), None

    def _queue(self, peer: str, uid: str, info: Dataset, due_now: bool) -> int:
        """The report as a durable outbox job for ``peer``; held back while it is tried on this association."""
        relpath = f"commitment/{files.safe_component(uid)}-{uuid.uuid4().hex[:8]}.dcm"
        tmp = files.write_temp(storage.tmp_dir(self.config), to_bytes(info))
        try:
            storage.of(self.config).commit(tmp, relpath)
        except OSError:
            files.remove_quietly(tmp)
            raise
        hold = 0.0 if due_now else PARK_TIMEOUT + self.config.dicom.timeouts.dimse + 5
        report = NewJob(JobKind.COMMIT_REPORT, peer, uid, relpath, STORAGE_COMMITMENT)
        try:
            with self.engine.begin() as conn:
                return enqueue_one(conn, report, due=utcnow() + timedelta(seconds=hold))
        except SQLAlchemyError:
            storage.of(self.config).delete(relpath)
            raise

    def _report_here(
        self,
        assoc: Association,
        gate: Gate,
        uid: str,
        event_type: int,
        info: Dataset,
        peer: str | None,
        job_id: int | None,
    ) -> None:
        status: int | None = None
        try:
            result = gate.after_response(
                assoc,
                PARK_TIMEOUT,
                lambda: assoc.send_n_event_report(info, event_type, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE),
            )
            if result is not None and "Status" in result[0]:
                status = int(result[0].Status)
        except Exception:
            log.exception("storage commitment report %s on the requesting association failed", uid)
        if status == 0x0000:
            self._announce_report(assoc, uid, info)
        try:
            self._settle(uid, status, peer, job_id)
        except Exception:
            log.exception("storage commitment report %s: cannot record the outcome (the job stays queued)", uid)

    def _settle(self, uid: str, status: int | None, peer: str | None, job_id: int | None) -> None:
        now = utcnow()
        if status == SUCCESS:
            log.info("storage commitment report %s delivered on the requesting association", uid)
            if job_id is not None:
                with self.engine.begin() as conn:
                    conn.execute(update(JOB).where(JOB.c.id == job_id, JOB.c.state == JobState.PENDING)
                                 .values(state=JobState.DONE, attempts=1, last_status=0, updated_at=now))  # fmt: skip
                self._drop_report_file(job_id)
            return
        why = "association closed" if status is None else f"the peer answered 0x{status:04X}"
        if job_id is None:
            log.error("storage commitment report %s not delivered (%s) and its requester is not in peers: lost",
                      uid, why)  # fmt: skip
            return
        log.warning("storage commitment report %s not delivered on the requesting association (%s): "
                    "sending it on a new association to %s", uid, why, peer)  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(update(JOB).where(JOB.c.id == job_id, JOB.c.state == JobState.PENDING)
                         .values(next_attempt_at=now, last_error=why, last_status=status, updated_at=now))  # fmt: skip
        assert peer is not None
        self.wake({peer})

    def _announce_report(self, assoc: Association, uid: str, info: Dataset) -> None:
        """``router_commitment_reported`` (outbound) for a report delivered on the requesting association."""
        peer = assoc.requestor
        committed, failed = report_uids(info)
        notify(self.pm, "router_commitment_reported", transaction_uid=uid, direction="outbound",
               peer_ae=str(peer.ae_title).strip(), address=f"{peer.address}:{peer.port}", committed=committed,
               failed=failed)  # fmt: skip

    def _drop_report_file(self, job_id: int) -> None:
        with self.engine.connect() as conn:
            path = conn.execute(select(JOB.c.path).where(JOB.c.id == job_id)).scalar()
        if path:
            storage.of(self.config).delete(path)
