"""Outbox ordering rules (pure database logic on a throwaway SQLite file, no network)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from router.config import ForwardSettings
from router.outbox.queue import Outbox
from router.store.db import make_engine
from router.store.models import Job, JobState, utcnow


def add_job(outbox: Outbox, sop_uid: str, peer: str = "PACS", delay: float = 0.0) -> int:
    with Session(outbox.engine) as session:
        job = Job(
            peer=peer,
            sop_uid=sop_uid,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
            transfer_syntax="1.2.840.10008.1.2.1",
            path=f"objects/{sop_uid}.dcm",
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )
        session.add(job)
        session.commit()
        assert job.id is not None
        return job.id


def test_a_newer_job_for_the_same_instance_waits_for_the_older_one(tmp_path: Path) -> None:
    outbox = Outbox(make_engine(f"sqlite:///{tmp_path / 'index.db'}"), ForwardSettings(), tmp_path)
    old = add_job(outbox, "1.2.3", delay=3600)  # first version, backing off after failed attempts
    new = add_job(outbox, "1.2.3")  # second version (overwrite policy), due now
    other_peer = add_job(outbox, "1.2.3", peer="ARCHIVE")
    unrelated = add_job(outbox, "1.2.4")

    assert [j.id for j in outbox.claim("PACS", 10)] == [unrelated], "the newer version must not overtake"
    assert [j.id for j in outbox.claim("ARCHIVE", 10)] == [other_peer], "other peers keep their own order"

    claimed = outbox.claim("PACS", 10, due_only=False)
    assert [j.id for j in claimed] == [old], "while the old version is inflight the new one still waits"
    assert outbox.claim("PACS", 10) == []
    outbox.mark_done(claimed, {})
    assert [j.id for j in outbox.claim("PACS", 10)] == [new]


def test_a_dead_older_job_does_not_block_the_newer_one(tmp_path: Path) -> None:
    outbox = Outbox(make_engine(f"sqlite:///{tmp_path / 'index.db'}"), ForwardSettings(), tmp_path)
    add_job(outbox, "1.2.3")
    new = add_job(outbox, "1.2.3")
    dead = outbox.claim("PACS", 10)
    assert outbox.mark_failed_many(dead, "refused", permanent=True) == [True]
    assert [j.id for j in outbox.claim("PACS", 10)] == [new]
    assert {j.state for j in outbox.list()} == {JobState.DEAD, JobState.INFLIGHT}


def test_drop_orphans_removes_only_files_nothing_refers_to(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    from router.intake.envelope import HeaderValues
    from router.outbox.orphans import drop_orphans
    from router.store.index import IdCache, index_instance

    engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    outbox = Outbox(engine, ForwardSettings(), tmp_path)
    ds = Dataset()
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "P1", "1.2.1", "1.2.1.1"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3"
    with engine.begin() as conn:
        index_instance(conn, IdCache(), HeaderValues(None, lambda: ds), relpath="objects/1.2.3.dcm", size=1,
                       digest="d", transfer_syntax="", calling_ae="", existing=None)  # fmt: skip
    indexed, old_version, derived_done, derived_pending = (
        "objects/1.2.3.dcm", "objects/1.2.3.old.dcm", "derived/ab/done.dcm", "derived/cd/pending.dcm"
    )  # fmt: skip
    for relpath in (indexed, old_version, derived_done, derived_pending):
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(b"x")
    add_job(outbox, "1.2.4")  # a pending job for another instance: its path must stay
    with Session(engine) as session:
        job = session.get(Job, 1)
        assert job is not None
        job.path = derived_pending
        session.add(job)
        session.commit()

    candidates = [(indexed, "1.2.3"), (old_version, "1.2.3"), (derived_done, "1.2.3"), (derived_pending, "1.2.4"),
                  (derived_done, "1.2.3")]  # fmt: skip
    assert sorted(drop_orphans(engine, tmp_path, candidates)) == [derived_done, old_version]
    assert (tmp_path / indexed).is_file() and (tmp_path / derived_pending).is_file()
    assert not (tmp_path / old_version).exists() and not (tmp_path / derived_done).exists()


def test_claim_takes_due_jobs_oldest_first_once_and_limited(tmp_path: Path) -> None:
    outbox = Outbox(make_engine(f"sqlite:///{tmp_path / 'index.db'}"), ForwardSettings(), tmp_path)
    ids = [add_job(outbox, f"1.2.{n}") for n in range(5)]
    later = add_job(outbox, "1.2.9", delay=3600)
    first = outbox.claim("PACS", 3)
    assert [j.id for j in first] == ids[:3]
    assert all(j.state == JobState.INFLIGHT and j.path == f"objects/1.2.{n}.dcm" for n, j in enumerate(first))
    assert [j.id for j in outbox.claim("PACS", 10)] == ids[3:], "claimed jobs are not handed out again"
    assert outbox.claim("PACS", 10) == []
    assert [j.id for j in outbox.claim("PACS", 10, due_only=False)] == [later]
    with Session(outbox.engine) as session:
        assert set(session.exec(select(Job.state)).all()) == {JobState.INFLIGHT}


def test_an_sqlite_without_returning_is_refused_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from router.store import db

    monkeypatch.setattr(db.sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(db.sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(RuntimeError, match=r"SQLite 3\.34\.1 is too old: the router needs 3\.35\.0 or later"):
        make_engine(f"sqlite:///{tmp_path / 'index.db'}")
