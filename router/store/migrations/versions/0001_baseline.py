"""Baseline: the schema as it was when revisions began (router.store.models and ops_models).

Made by ``alembic revision --autogenerate`` against an empty database, written as tables of its own (a revision
never follows the models) and run so that it creates only what a database lacks: on a database made before schema
versions (the router's tables, no ``alembic_version``), which ``router db upgrade`` brings here after checking that
its tables have 0001's columns, it adds the tables and indexes that the router which made it did not have yet
(``create_all`` never added an index to an existing table).

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

META = sa.MetaData()


def _keyed(name: str, *columns: str, where: str) -> sa.Index:
    """A partial index: rows without the key cost no entry (SQLite and PostgreSQL)."""
    return sa.Index(name, *columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))


sa.Table(
    "activity",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event", sa.String(length=32), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("subject", sa.String(length=1024), nullable=False),
    sa.Column("patient_id", sa.String(length=64), nullable=False),
    sa.Column("accession", sa.String(length=16), nullable=False),
    sa.Column("study_uid", sa.String(length=64), nullable=False),
    sa.Column("sop_uid", sa.String(length=64), nullable=False),
    sa.Column("msh10", sa.String(length=64), nullable=False),
    sa.Column("peer", sa.String(length=64), nullable=False),
    sa.Column("job_id", sa.Integer(), nullable=True),
    sa.Column("status", sa.Integer(), nullable=True),
    sa.Column("source", sa.String(length=256), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("message", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    _keyed("ix_activity_accession", "accession", where="accession <> ''"),
    _keyed("ix_activity_delivered", "peer", "at", where="event = 'delivered'"),
    _keyed("ix_activity_msh10", "msh10", where="msh10 <> ''"),
    _keyed("ix_activity_patient_id", "patient_id", where="patient_id <> ''"),
    _keyed("ix_activity_study_uid", "study_uid", where="study_uid <> ''"),
    sa.Index("ix_activity_subject", "subject"),
)

sa.Table(
    "committransaction",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("transaction_uid", sa.String(length=64), nullable=False),
    sa.Column("peer", sa.String(length=64), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("detail", sa.String(length=1024), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("transaction_uid"),
    sa.Index("ix_commit_state_deadline", "state", "deadline"),
    sa.Index("ix_committransaction_peer", "peer"),
)

sa.Table(
    "hl7log",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("sender", sa.String(length=256), nullable=False),
    sa.Column("control_id", sa.String(length=64), nullable=False),
    sa.Column("message_type", sa.String(length=32), nullable=False),
    sa.Column("ack_code", sa.String(length=2), nullable=False),
    sa.Column("summary", sa.String(length=1024), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("sender", "control_id", name="uq_hl7_sender_control_id"),
)

sa.Table(
    "job",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("kind", sa.String(length=32), nullable=False),
    sa.Column("peer", sa.String(length=64), nullable=False),
    sa.Column("sop_uid", sa.String(length=64), nullable=False),
    sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
    sa.Column("transfer_syntax", sa.String(length=64), nullable=False),
    sa.Column("path", sa.String(length=1024), nullable=False),
    sa.Column("rule", sa.String(length=128), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.String(length=1024), nullable=False),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_job_due", "state", "peer", "next_attempt_at"),
    sa.Index("ix_job_sop_uid", "sop_uid"),
)

sa.Table(
    "patient",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("patient_id", sa.String(length=64), nullable=False),
    sa.Column("issuer", sa.String(length=64), nullable=False),
    sa.Column("name", sa.String(length=324), nullable=False),
    sa.Column("name_norm", sa.String(length=324), nullable=False),
    sa.Column("birth_date", sa.String(length=8), nullable=False),
    sa.Column("sex", sa.String(length=16), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("patient_id", "issuer", name="uq_patient_id_issuer"),
    sa.Index("ix_patient_name", "name"),
    sa.Index("ix_patient_name_norm", "name_norm", postgresql_ops={"name_norm": "text_pattern_ops"}),
    sa.Index("ix_patient_patient_id", "patient_id"),
)

sa.Table(
    "patientuse",
    META,
    sa.Column("patient_fk", sa.Integer(), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("patient_fk"),
)

sa.Table(
    "peerstate",
    META,
    sa.Column("peer", sa.String(length=64), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False),
    sa.Column("changed_by", sa.String(length=64), nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("peer"),
)

sa.Table(
    "performedprocedurestep",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("sop_uid", sa.String(length=64), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("calling_ae", sa.String(length=16), nullable=False),
    sa.Column("modality", sa.String(length=16), nullable=False),
    sa.Column("study_uid", sa.String(length=64), nullable=False),
    sa.Column("accession_number", sa.String(length=16), nullable=False),
    sa.Column("pps_id", sa.String(length=16), nullable=False),
    sa.Column("path", sa.String(length=1024), nullable=False),
    sa.Column("messages", sa.Integer(), nullable=False),
    sa.Column("worklist_items", sa.String(length=1024), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("sop_uid"),
    sa.Index("ix_performedprocedurestep_accession_number", "accession_number"),
    sa.Index("ix_performedprocedurestep_status", "status"),
    sa.Index("ix_performedprocedurestep_study_uid", "study_uid"),
)

sa.Table(
    "removedfile",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("path", sa.String(length=1024), nullable=False),
    sa.Column("sop_uid", sa.String(length=64), nullable=False),
    sa.Column("removed_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
)

sa.Table(
    "router_user",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("role", sa.String(length=16), nullable=False),
    sa.Column("password_hash", sa.String(length=256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name"),
)

sa.Table(
    "ruleversion",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("file", sa.String(length=255), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("saved_by", sa.String(length=64), nullable=False),
    sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_ruleversion_file", "file"),
)

sa.Table(
    "websession",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("user", sa.String(length=64), nullable=False),
    sa.Column("role", sa.String(length=16), nullable=False),
    sa.Column("from_users", sa.Boolean(), nullable=False),
    sa.Column("token_hash", sa.String(length=64), nullable=False),
    sa.Column("csrf_token", sa.String(length=64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("token_hash"),
    sa.Index("ix_websession_expires_at", "expires_at"),
    sa.Index("ix_websession_user", "user"),
)

sa.Table(
    "apitoken",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("user_fk", sa.Integer(), nullable=False),
    sa.Column("label", sa.String(length=64), nullable=False),
    sa.Column("token_hash", sa.String(length=64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(
        ["user_fk"],
        ["router_user.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("token_hash"),
    sa.Index("ix_apitoken_user_fk", "user_fk"),
)

sa.Table(
    "commititem",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("transaction_fk", sa.Integer(), nullable=False),
    sa.Column("job_fk", sa.Integer(), nullable=False),
    sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
    sa.Column("sop_uid", sa.String(length=64), nullable=False),
    sa.Column("request_no", sa.Integer(), nullable=False),
    sa.Column("outcome", sa.String(length=16), nullable=False),
    sa.Column("failure_reason", sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(
        ["transaction_fk"],
        ["committransaction.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_commititem_job_fk", "job_fk"),
    sa.Index("ix_commititem_sop_uid", "sop_uid"),
    sa.Index("ix_commititem_transaction_fk", "transaction_fk"),
)

sa.Table(
    "patientdetails",
    META,
    sa.Column("patient_fk", sa.Integer(), nullable=False),
    sa.Column("weight", sa.String(length=16), nullable=False),
    sa.Column("medical_alerts", sa.String(length=1024), nullable=False),
    sa.Column("allergies", sa.String(length=1024), nullable=False),
    sa.Column("pregnancy_status", sa.Integer(), nullable=True),
    sa.Column("admission_id", sa.String(length=64), nullable=False),
    sa.Column("current_location", sa.String(length=64), nullable=False),
    sa.Column("comments", sa.String(length=10240), nullable=False),
    sa.ForeignKeyConstraint(
        ["patient_fk"],
        ["patient.id"],
    ),
    sa.PrimaryKeyConstraint("patient_fk"),
)

sa.Table(
    "patientidentifier",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("patient_fk", sa.Integer(), nullable=False),
    sa.Column("value", sa.String(length=64), nullable=False),
    sa.Column("authority", sa.String(length=64), nullable=False),
    sa.Column("authority_uid", sa.String(length=64), nullable=False),
    sa.Column("authority_uid_type", sa.String(length=16), nullable=False),
    sa.Column("id_type", sa.String(length=16), nullable=False),
    sa.Column("is_bsn", sa.Boolean(), nullable=False),
    sa.Column("merged", sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(
        ["patient_fk"],
        ["patient.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("value", "authority", name="uq_identifier_value_authority"),
    sa.Index("ix_patientidentifier_patient_fk", "patient_fk"),
    sa.Index("ix_patientidentifier_value", "value"),
)

sa.Table(
    "study",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("study_uid", sa.String(length=64), nullable=False),
    sa.Column("patient_fk", sa.Integer(), nullable=False),
    sa.Column("study_date", sa.String(length=8), nullable=False),
    sa.Column("study_time", sa.String(length=16), nullable=False),
    sa.Column("accession_number", sa.String(length=16), nullable=False),
    sa.Column("study_id", sa.String(length=16), nullable=False),
    sa.Column("description", sa.String(length=64), nullable=False),
    sa.Column("referring_physician", sa.String(length=324), nullable=False),
    sa.Column("referring_physician_norm", sa.String(length=324), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(
        ["patient_fk"],
        ["patient.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("study_uid"),
    sa.Index("ix_study_accession_number", "accession_number"),
    sa.Index("ix_study_patient_fk", "patient_fk"),
    sa.Index("ix_study_study_date", "study_date"),
)

sa.Table(
    "worklistitem",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("patient_fk", sa.Integer(), nullable=False),
    sa.Column("placer_order", sa.String(length=64), nullable=False),
    sa.Column("filler_order", sa.String(length=64), nullable=False),
    sa.Column("accession_number", sa.String(length=16), nullable=False),
    sa.Column("requested_procedure_id", sa.String(length=16), nullable=False),
    sa.Column("requested_procedure_description", sa.String(length=64), nullable=False),
    sa.Column("procedure_code_value", sa.String(length=16), nullable=False),
    sa.Column("procedure_code_scheme", sa.String(length=16), nullable=False),
    sa.Column("procedure_code_meaning", sa.String(length=64), nullable=False),
    sa.Column("sps_id", sa.String(length=16), nullable=False),
    sa.Column("sps_description", sa.String(length=64), nullable=False),
    sa.Column("sps_start_date", sa.String(length=8), nullable=False),
    sa.Column("sps_start_time", sa.String(length=16), nullable=False),
    sa.Column("modality", sa.String(length=16), nullable=False),
    sa.Column("station_ae", sa.String(length=16), nullable=False),
    sa.Column("station_name", sa.String(length=16), nullable=False),
    sa.Column("location", sa.String(length=16), nullable=False),
    sa.Column("performing_physician", sa.String(length=324), nullable=False),
    sa.Column("referring_physician", sa.String(length=324), nullable=False),
    sa.Column("requesting_physician", sa.String(length=324), nullable=False),
    sa.Column("study_uid", sa.String(length=64), nullable=False),
    sa.Column("priority", sa.String(length=16), nullable=False),
    sa.Column("reason", sa.String(length=64), nullable=False),
    sa.Column("comments", sa.String(length=10240), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(
        ["patient_fk"],
        ["patient.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("placer_order", "filler_order", "sps_id", name="uq_worklist_order_step"),
    sa.Index("ix_worklist_start", "sps_start_date", "sps_start_time"),
    sa.Index("ix_worklistitem_accession_number", "accession_number"),
    sa.Index("ix_worklistitem_filler_order", "filler_order"),
    sa.Index("ix_worklistitem_modality", "modality"),
    sa.Index("ix_worklistitem_patient_fk", "patient_fk"),
    sa.Index("ix_worklistitem_placer_order", "placer_order"),
    sa.Index("ix_worklistitem_requested_procedure_id", "requested_procedure_id"),
    sa.Index("ix_worklistitem_station_ae", "station_ae"),
    sa.Index("ix_worklistitem_status", "status"),
    sa.Index("ix_worklistitem_study_uid", "study_uid"),
)

sa.Table(
    "series",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("series_uid", sa.String(length=64), nullable=False),
    sa.Column("study_fk", sa.Integer(), nullable=False),
    sa.Column("modality", sa.String(length=16), nullable=False),
    sa.Column("series_number", sa.String(length=12), nullable=False),
    sa.Column("description", sa.String(length=64), nullable=False),
    sa.Column("body_part", sa.String(length=16), nullable=False),
    sa.Column("pps_start_date", sa.String(length=8), nullable=False),
    sa.Column("pps_start_time", sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(
        ["study_fk"],
        ["study.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("series_uid"),
    sa.Index("ix_series_modality", "modality"),
    sa.Index("ix_series_study_fk", "study_fk"),
)

sa.Table(
    "instance",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("sop_uid", sa.String(length=64), nullable=False),
    sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
    sa.Column("series_fk", sa.Integer(), nullable=False),
    sa.Column("instance_number", sa.String(length=12), nullable=False),
    sa.Column("image_type", sa.String(length=128), nullable=False),
    sa.Column("number_of_frames", sa.String(length=12), nullable=False),
    sa.Column("transfer_syntax", sa.String(length=64), nullable=False),
    sa.Column("path", sa.String(length=1024), nullable=False),
    sa.Column("size", sa.Integer(), nullable=False),
    sa.Column("sha256", sa.String(length=64), nullable=False),
    sa.Column("calling_ae", sa.String(length=16), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(
        ["series_fk"],
        ["series.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("sop_uid"),
    sa.Index("ix_instance_series_fk", "series_fk"),
    sa.Index("ix_instance_sop_class_uid", "sop_class_uid"),
)

sa.Table(
    "seriesrequest",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("series_fk", sa.Integer(), nullable=False),
    sa.Column("requested_procedure_id", sa.String(length=16), nullable=False),
    sa.Column("scheduled_procedure_step_id", sa.String(length=16), nullable=False),
    sa.Column("accession_number", sa.String(length=16), nullable=False),
    sa.Column("requested_procedure_description", sa.String(length=64), nullable=False),
    sa.Column("scheduled_procedure_step_description", sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(
        ["series_fk"],
        ["series.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_seriesrequest_series_fk", "series_fk"),
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table in META.sorted_tables:
        if table.name not in present:
            table.create(bind)  # with its indexes
            continue
        have = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in have:
                index.create(bind)


def downgrade() -> None:
    for table in reversed(META.sorted_tables):
        op.drop_table(table.name)
