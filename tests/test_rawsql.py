"""Statements run on the DB-API cursor (router.store.rawsql) store what SQLAlchemy would, and fail as it would.
SQLite here; tests/test_postgres.py takes the same ingest path on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from router.store.db import make_engine
from router.store.index import FIND_INSTANCE, INSERT_INSTANCE, INSTANCE_KEYS, find_instance
from router.store.models import Instance, Job, JobState, Patient, Series, Study
from router.store.rawsql import RawStatement, insert_columns, raw

RECEIVED = datetime(2026, 11, 24, 9, 30, 15, 250000, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    with Session(engine) as session:
        patient = Patient(patient_id="P1", issuer="", name="", name_norm="", birth_date="", sex="")
        session.add(patient)
        session.flush()
        study = Study(study_uid="1.2", patient_fk=patient.id)
        session.add(study)
        session.flush()
        session.add(Series(series_uid="1.2.1", study_fk=study.id))
        session.commit()
    return engine


def instance_values(sop_uid: str, **changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "sop_uid": sop_uid, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7", "series_fk": 1, "instance_number": "3",
        "image_type": "ORIGINAL\\PRIMARY", "number_of_frames": "", "transfer_syntax": "1.2.840.10008.1.2.1",
        "path": f"objects/{sop_uid}.dcm", "size": 10, "sha256": "ab" * 32, "calling_ae": "CT1",
        "received_at": RECEIVED,
    }  # fmt: skip
    values.update(changes)
    return values


def test_a_raw_insert_reads_back_through_the_orm_as_a_core_insert_does(engine: Engine) -> None:
    with engine.begin() as conn:
        raw(INSERT_INSTANCE, conn, INSTANCE_KEYS).execute(conn, instance_values("1.2.1.1"))
        conn.execute(insert(Instance.__table__), instance_values("1.2.1.2"))  # type: ignore[attr-defined]
    with Session(engine) as session:
        rows = {i.sop_uid: i for i in session.exec(select(Instance)).scalars()}  # type: ignore[call-overload]
    by_raw, by_core = rows["1.2.1.1"], rows["1.2.1.2"]
    assert by_raw.received_at == by_core.received_at
    assert by_raw.received_at.replace(tzinfo=UTC) == RECEIVED
    assert (by_raw.image_type, by_raw.size, by_raw.calling_ae) == (by_core.image_type, by_core.size, "CT1")
    with engine.connect() as conn:
        found = find_instance(conn, "1.2.1.1")
        assert found is not None and found.path == "objects/1.2.1.1.dcm" and found.sha256 == "ab" * 32
        assert find_instance(conn, "9.9") is None


def test_a_driver_error_reaches_the_caller_as_sqlalchemys(engine: Engine) -> None:
    """ingest tells a sender that stored the same instance meanwhile (IntegrityError) from a failing database."""
    with engine.begin() as conn:
        raw(INSERT_INSTANCE, conn, INSTANCE_KEYS).execute(conn, instance_values("1.2.1.1"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        raw(INSERT_INSTANCE, conn, INSTANCE_KEYS).execute(conn, instance_values("1.2.1.1", path="other"))
    with engine.connect() as conn:
        found = find_instance(conn, "1.2.1.1")
    assert found is not None and found.path == "objects/1.2.1.1.dcm", "the failed transaction was rolled back"


def test_an_insert_must_name_every_column(engine: Engine) -> None:
    """A column left out would take its default from SQLAlchemy's execution layer, which a raw statement skips."""
    with pytest.raises(ValueError, match="every column"):
        RawStatement(INSERT_INSTANCE, engine.dialect, ["sop_uid", "series_fk", "path", "sha256", "size"])


def test_many_rows_at_once_with_enum_and_null_values(engine: Engine) -> None:
    job = Job.__table__  # type: ignore[attr-defined]
    keys = insert_columns(job)
    rows = [
        {"kind": "dicom-store", "peer": peer, "sop_uid": "1.2.1.1", "sop_class_uid": "1.2", "transfer_syntax": "",
         "path": "p", "rule": "r", "state": JobState.PENDING, "attempts": 0, "next_attempt_at": RECEIVED,
         "last_error": "", "last_status": None, "created_at": RECEIVED, "updated_at": RECEIVED, "leased_by": "",
         "lease_until": None}
        for peer in ("PACS", "ARCHIVE")
    ]  # fmt: skip
    with engine.begin() as conn:
        raw(insert(job), conn, keys).execute_many(conn, rows)
    with Session(engine) as session:
        jobs = session.exec(select(Job).order_by(Job.id)).scalars().all()  # type: ignore[call-overload, arg-type]
    assert [(j.peer, j.state, j.last_status) for j in jobs] == [
        ("PACS", JobState.PENDING, None),
        ("ARCHIVE", JobState.PENDING, None),
    ]


def test_statements_are_compiled_once_per_dialect(engine: Engine) -> None:
    with engine.connect() as conn:
        assert raw(FIND_INSTANCE, conn) is raw(FIND_INSTANCE, conn)
        assert raw(INSERT_INSTANCE, conn, INSTANCE_KEYS) is not raw(FIND_INSTANCE, conn)
