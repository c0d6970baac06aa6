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
    DONE = "done"
    DEAD = "dead"
    ALL = (PENDING, INFLIGHT, DONE, DEAD)


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
