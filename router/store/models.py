"""The index (patient / study / series / instance) and the outbox, as SQLModel tables.

Fields are the ones the query services need (PS3.4 C.6 key tables, the ISUDM 2.1 Q/R tables). Text columns hold
DICOM values as received (PN as its DICOM string); dates as DA ``YYYYMMDD`` strings so range matching is a string
comparison that every database indexes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Patient(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("patient_id", "issuer", name="uq_patient_id_issuer"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_id: str = Field(default="", index=True, max_length=64)
    issuer: str = Field(default="", max_length=64)
    name: str = Field(default="", index=True, max_length=324)
    name_norm: str = Field(default="", max_length=324, description="normalize_name(name): for C-FIND matching")
    birth_date: str = Field(default="", max_length=8)
    sex: str = Field(default="", max_length=16)
    updated_at: datetime = Field(default_factory=utcnow)


class Study(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    study_uid: str = Field(unique=True, max_length=64)
    patient_fk: int = Field(foreign_key="patient.id", index=True)
    study_date: str = Field(default="", index=True, max_length=8)
    study_time: str = Field(default="", max_length=16)
    accession_number: str = Field(default="", index=True, max_length=16)
    study_id: str = Field(default="", max_length=16)
    description: str = Field(default="", max_length=64)
    referring_physician: str = Field(default="", max_length=324)
    referring_physician_norm: str = Field(default="", max_length=324, description="normalize_name(...)")
    updated_at: datetime = Field(default_factory=utcnow)


class Series(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    series_uid: str = Field(unique=True, max_length=64)
    study_fk: int = Field(foreign_key="study.id", index=True)
    modality: str = Field(default="", index=True, max_length=16)
    series_number: str = Field(default="", max_length=12)
    description: str = Field(default="", max_length=64)
    body_part: str = Field(default="", max_length=16)
    pps_start_date: str = Field(default="", max_length=8)
    pps_start_time: str = Field(default="", max_length=16)


class SeriesRequest(SQLModel, table=True):
    """One item of a series' Request Attributes Sequence (0040,0275): C-FIND sequence matching on it."""

    id: int | None = Field(default=None, primary_key=True)
    series_fk: int = Field(foreign_key="series.id", index=True)
    requested_procedure_id: str = Field(default="", max_length=16)
    scheduled_procedure_step_id: str = Field(default="", max_length=16)
    accession_number: str = Field(default="", max_length=16)
    requested_procedure_description: str = Field(default="", max_length=64)
    scheduled_procedure_step_description: str = Field(default="", max_length=64)


class Instance(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    sop_uid: str = Field(unique=True, max_length=64)
    sop_class_uid: str = Field(max_length=64, index=True)
    series_fk: int = Field(foreign_key="series.id", index=True)
    instance_number: str = Field(default="", max_length=12)
    image_type: str = Field(default="", max_length=128)
    number_of_frames: str = Field(default="", max_length=12)
    transfer_syntax: str = Field(max_length=64)
    path: str = Field(max_length=1024, description="relative to data_dir")
    size: int
    sha256: str = Field(max_length=64)
    calling_ae: str = Field(default="", max_length=16)
    received_at: datetime = Field(default_factory=utcnow)


# Name wildcards ("SMITH*") are the most common C-FIND; on PostgreSQL a LIKE prefix uses a text_pattern_ops index.
Index(
    "ix_patient_name_norm",
    Patient.__table__.c.name_norm,  # type: ignore[attr-defined]
    postgresql_ops={"name_norm": "text_pattern_ops"},
)


class JobState:
    PENDING = "pending"
    INFLIGHT = "inflight"
    COMMITTING = "committing"  # delivered; waiting for the peer's storage commitment report
    DONE = "done"
    DEAD = "dead"
    ALL = (PENDING, INFLIGHT, COMMITTING, DONE, DEAD)


class Job(SQLModel, table=True):
    """One durable outbox entry: deliver one object to one peer."""

    __table_args__ = (Index("ix_job_due", "state", "peer", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(default="dicom-store", max_length=32)
    peer: str = Field(max_length=64)
    sop_uid: str = Field(max_length=64, index=True)
    sop_class_uid: str = Field(max_length=64)
    transfer_syntax: str = Field(max_length=64)
    path: str = Field(max_length=1024, description="the bytes to send, relative to data_dir")
    rule: str = Field(default="", max_length=128)
    state: str = Field(default=JobState.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str = Field(default="", max_length=1024)
    last_status: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    leased_by: str = Field(default="", max_length=64, description="node_id of the node sending it (inflight)")
    lease_until: datetime | None = Field(default=None, description="its lease ends (router.outbox.leases)")


# -- HL7: patient identities, the worklist, the message log ------------------------------------------------------
BSN_OID = "2.16.840.1.113883.2.4.6.3"  # Dutch citizen service number (BSN), issuer of the identifier


class PatientIdentifier(SQLModel, table=True):
    """Every identifier an HL7 feed gave a patient (PID-3 repetitions), with its assigning authority.

    A merge (A40/A34) moves the old patient's identifiers here onto the surviving patient with ``merged``
    set, so an object that still carries an old identifier is recognised as the surviving patient."""

    __table_args__ = (UniqueConstraint("value", "authority", name="uq_identifier_value_authority"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_fk: int = Field(foreign_key="patient.id", index=True)
    value: str = Field(max_length=64, index=True)
    authority: str = Field(default="", max_length=64, description="HD.1 namespace id (BSN_OID for a BSN)")
    authority_uid: str = Field(default="", max_length=64, description="HD.2 universal id")
    authority_uid_type: str = Field(default="", max_length=16, description="HD.3 universal id type")
    id_type: str = Field(default="", max_length=16, description="CX.5, e.g. MR, PI, NNNLD")
    is_bsn: bool = False
    merged: bool = False


class PatientDetails(SQLModel, table=True):
    """What an ADT feed says about a patient beyond the index's columns (returned by the worklist)."""

    patient_fk: int = Field(foreign_key="patient.id", primary_key=True)
    weight: str = Field(default="", max_length=16)
    medical_alerts: str = Field(default="", max_length=1024)
    allergies: str = Field(default="", max_length=1024)
    pregnancy_status: int | None = None
    admission_id: str = Field(default="", max_length=64)
    current_location: str = Field(default="", max_length=64)
    comments: str = Field(default="", max_length=10240)


class SpsStatus:
    SCHEDULED = "SCHEDULED"
    ARRIVED = "ARRIVED"
    READY = "READY"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELED = "CANCELED"  # order cancelled by the RIS: off the worklist
    ACTIVE = (SCHEDULED, ARRIVED, READY, IN_PROGRESS)


class WorklistItem(SQLModel, table=True):
    """One Scheduled Procedure Step of one Requested Procedure, made from an HL7 order (IHE SWF)."""

    __table_args__ = (
        UniqueConstraint("placer_order", "filler_order", "sps_id", name="uq_worklist_order_step"),
        Index("ix_worklist_start", "sps_start_date", "sps_start_time"),
    )

    id: int | None = Field(default=None, primary_key=True)
    patient_fk: int = Field(foreign_key="patient.id", index=True)
    placer_order: str = Field(default="", max_length=64, index=True)
    filler_order: str = Field(default="", max_length=64, index=True)
    accession_number: str = Field(default="", max_length=16, index=True)
    requested_procedure_id: str = Field(default="", max_length=16, index=True)
    requested_procedure_description: str = Field(default="", max_length=64)
    procedure_code_value: str = Field(default="", max_length=16)
    procedure_code_scheme: str = Field(default="", max_length=16)
    procedure_code_meaning: str = Field(default="", max_length=64)
    sps_id: str = Field(default="", max_length=16)
    sps_description: str = Field(default="", max_length=64)
    sps_start_date: str = Field(default="", max_length=8, description="YYYYMMDD in utc_offset's zone")
    sps_start_time: str = Field(default="", max_length=16)
    modality: str = Field(default="", max_length=16, index=True)
    station_ae: str = Field(default="", max_length=16, index=True)
    station_name: str = Field(default="", max_length=16)
    location: str = Field(default="", max_length=16)
    performing_physician: str = Field(default="", max_length=324)
    referring_physician: str = Field(default="", max_length=324)
    requesting_physician: str = Field(default="", max_length=324)
    study_uid: str = Field(default="", max_length=64, index=True)
    priority: str = Field(default="", max_length=16)
    reason: str = Field(default="", max_length=64)
    comments: str = Field(default="", max_length=10240)
    status: str = Field(default=SpsStatus.SCHEDULED, max_length=16, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class Hl7Log(SQLModel, table=True):
    """Messages applied, by sender and control id: a re-sent message is acknowledged again, not applied twice."""

    __table_args__ = (UniqueConstraint("sender", "control_id", name="uq_hl7_sender_control_id"),)

    id: int | None = Field(default=None, primary_key=True)
    sender: str = Field(max_length=256, description="MSH-3^MSH-4")
    control_id: str = Field(max_length=64)
    message_type: str = Field(max_length=32)
    ack_code: str = Field(default="AA", max_length=2, description="what was answered; a re-send gets it again")
    summary: str = Field(default="", max_length=1024)
    received_at: datetime = Field(default_factory=utcnow)


# -- storage commitment (SCU role) and modality performed procedure steps -----------------------------------------
class CommitState:
    REQUESTING = "requesting"  # stored before the N-ACTION is sent; not yet accepted by the peer
    WAITING = "waiting"  # N-ACTION accepted: the report is due before ``deadline``
    DONE = "done"  # the report was applied
    FAILED = "failed"  # refused, no report in time, or abandoned by a restart: its jobs were requeued


class CommitTransaction(SQLModel, table=True):
    """One Storage Commitment request the router made to a peer; its Transaction UID is never used again."""

    __table_args__ = (Index("ix_commit_state_deadline", "state", "deadline"),)

    id: int | None = Field(default=None, primary_key=True)
    transaction_uid: str = Field(unique=True, max_length=64)
    peer: str = Field(max_length=64, index=True)
    node_id: str = Field(default="", max_length=64, description="the node whose forward workers requested it")
    state: str = Field(default=CommitState.REQUESTING, max_length=16)
    deadline: datetime | None = None
    detail: str = Field(default="", max_length=1024)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CommitItem(SQLModel, table=True):
    """One instance of a commitment request and what the peer said about it.

    ``job_fk`` is the outbox job that delivered it (no foreign key: ``router queue purge`` may delete done jobs);
    ``request_no`` counts the requests made for that job since it was (re)queued by an operator."""

    id: int | None = Field(default=None, primary_key=True)
    transaction_fk: int = Field(foreign_key="committransaction.id", index=True)
    job_fk: int = Field(index=True)
    sop_class_uid: str = Field(max_length=64)
    sop_uid: str = Field(max_length=64, index=True)
    request_no: int = 1
    outcome: str = Field(default="", max_length=16, description="'', committed, failed or abandoned")
    failure_reason: int | None = None


class PerformedProcedureStep(SQLModel, table=True):
    """A Modality Performed Procedure Step received by the MPPS SCP (PS3.4 F.7).

    ``path`` is the current state (the N-CREATE attributes with every N-SET applied), relative to data_dir; every
    message is kept next to it as received. ``worklist_items`` are the ids of the worklist items it performs."""

    id: int | None = Field(default=None, primary_key=True)
    sop_uid: str = Field(unique=True, max_length=64)
    status: str = Field(max_length=16, index=True)
    calling_ae: str = Field(default="", max_length=16)
    modality: str = Field(default="", max_length=16)
    study_uid: str = Field(default="", max_length=64, index=True)
    accession_number: str = Field(default="", max_length=16, index=True)
    pps_id: str = Field(default="", max_length=16)
    path: str = Field(max_length=1024)
    messages: int = 1
    worklist_items: str = Field(default="", max_length=1024, description="comma-separated WorklistItem ids")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


# -- storage modes (router.store.keeper) ----------------------------------------------------------------------------
class PatientUse(SQLModel, table=True):
    """When a patient's stored objects were last used: received, found by a query, retrieved (cache mode's order).

    No foreign key: an HL7 merge removes patient rows without knowing about this table; a row whose patient is
    gone is ignored, and removed at the next start."""

    patient_fk: int = Field(primary_key=True)
    used_at: datetime = Field(default_factory=utcnow)


class RemovedFile(SQLModel, table=True):
    """A file whose index row was deleted (eviction, ``delete_after_commit``), written in the same transaction.

    The file is removed right after the commit; these rows let a start-up after a crash in between remove what is
    left (``router.store.pruning.sweep_removed``), unless the path was indexed again meanwhile."""

    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(max_length=1024, description="relative to data_dir")
    sop_uid: str = Field(max_length=64)
    removed_at: datetime = Field(default_factory=utcnow)
