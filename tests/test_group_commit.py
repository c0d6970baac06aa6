"""Group commit (router.intake.groupcommit, issue 21): concurrent callers share one durable commit, each rolled back
alone when it fails, none answered before the commit that holds its rows; and the HL7 and DICOM intakes over it
(objects stored at once share the commit and their folder's fsync)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.filewriter import dcmwrite
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from router.app import Router
from router.config import parse_config
from router.hl7.ack import ack_code_of
from router.intake.dicom import IngestResult
from router.intake.envelope import Source
from router.intake.groupcommit import GroupCommit
from router.statuses import StoreOutcome
from router.store import files
from router.store.db import make_engine
from router.store.writelock import WriteLock

from hl7msg import adt, encode
from peers import make_instance, query, wait_for
from unsynced import UnsyncedNames


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE item (name TEXT PRIMARY KEY, parent TEXT REFERENCES item(name) "
                             "DEFERRABLE INITIALLY DEFERRED)")  # fmt: skip
    try:
        yield engine
    finally:
        engine.dispose()


def names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT name FROM item ORDER BY name"))]


def insert(name: str, parent: str | None = None, fail: bool = False) -> Callable[[Connection], str]:
    def work(conn: Connection) -> str:
        conn.execute(text("INSERT INTO item (name, parent) VALUES (:n, :p)"), {"n": name, "p": parent})
        if fail:
            raise ValueError(f"{name} fails after its insert")
        return name

    return work


def in_one_batch(group: GroupCommit, lock: WriteLock, works: list[Callable[[Connection], Any]]) -> list[Future[Any]]:
    """Run ``works`` from threads of their own so that the first commits alone and the rest together: the write
    lock is held until they are all queued."""
    pool = ThreadPoolExecutor(len(works))
    lock.acquire()
    try:
        first = pool.submit(group.run, works[0])
        wait_for(lambda: group._leading, 10, 0.01, "a leader")
        rest = [pool.submit(group.run, w) for w in works[1:]]
        wait_for(lambda: len(group._queue) == len(rest), 10, 0.01, "the others queued")
    finally:
        lock.release()
    pool.shutdown(wait=True)
    return [first, *rest]


def test_queued_callers_share_one_commit_and_each_gets_its_value(engine: Engine) -> None:
    lock = WriteLock()
    group = GroupCommit(engine, lock)
    done = in_one_batch(group, lock, [insert(f"n{i}") for i in range(5)])
    assert [f.result() for f in done] == [f"n{i}" for i in range(5)]
    assert (group.stats.commits, group.stats.units, group.stats.largest) == (2, 5, 4)
    assert names(engine) == [f"n{i}" for i in range(5)]


def test_a_failing_unit_is_rolled_back_alone(engine: Engine) -> None:
    lock = WriteLock()
    group = GroupCommit(engine, lock)
    done = in_one_batch(group, lock, [insert("a"), insert("b"), insert("c", fail=True), insert("a"), insert("d")])
    assert [f.exception() is None for f in done] == [True, True, False, False, True]
    assert isinstance(done[2].exception(), ValueError)
    assert isinstance(done[3].exception(), IntegrityError)  # a duplicate of a: its own savepoint only
    assert names(engine) == ["a", "b", "d"]


def test_a_failed_commit_fails_every_caller_of_the_batch_and_keeps_nothing(engine: Engine) -> None:
    lock = WriteLock()
    group = GroupCommit(engine, lock)
    # the deferred foreign key is checked at COMMIT: the whole second batch fails there
    done = in_one_batch(group, lock, [insert("x"), insert("y"), insert("z", parent="nowhere")])
    assert done[0].result() == "x"
    assert all(isinstance(f.exception(), IntegrityError) for f in done[1:])
    assert names(engine) == ["x"]
    assert group.run(insert("w")) == "w"  # the next batch commits again


def rowid_order(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT name FROM item ORDER BY rowid"))]


def test_one_callers_units_share_one_commit_in_their_order_and_each_keeps_its_outcome(engine: Engine) -> None:
    group = GroupCommit(engine, WriteLock())
    works = [insert("m3"), insert("m1"), insert("m2", fail=True), insert("m1"), insert("m0")]
    done = group.run_many(works)
    assert (group.stats.commits, group.stats.largest) == (1, 5)
    assert [d.value for d in done] == ["m3", "m1", None, None, "m0"]
    assert isinstance(done[2].error, ValueError) and isinstance(done[3].error, IntegrityError)
    with pytest.raises(IntegrityError):
        done[3].get()
    assert rowid_order(engine) == ["m3", "m1", "m0"]  # inserted in the order given, not sorted


def test_more_units_than_a_batch_holds_commit_in_batches_in_order(engine: Engine) -> None:
    group = GroupCommit(engine, WriteLock(), max_batch=3)
    order = [f"k{i}" for i in (7, 2, 9, 4, 1, 8, 3)]
    assert [d.get() for d in group.run_many([insert(n) for n in order])] == order
    assert (group.stats.commits, group.stats.largest) == (3, 3)
    assert rowid_order(engine) == order


def test_a_failed_commit_fails_every_unit_of_one_caller(engine: Engine) -> None:
    group = GroupCommit(engine, WriteLock())
    done = group.run_many([insert("u"), insert("v", parent="nowhere"), insert("w")])
    assert all(isinstance(d.error, IntegrityError) for d in done)
    assert names(engine) == []


def test_a_callers_units_wait_behind_a_running_batch_and_join_the_others_queued(engine: Engine) -> None:
    lock = WriteLock()
    group = GroupCommit(engine, lock)
    pool = ThreadPoolExecutor(3)
    lock.acquire()
    try:
        first = pool.submit(group.run, insert("lead"))
        wait_for(lambda: group._leading, 10, 0.01, "a leader")
        other = pool.submit(group.run, insert("other"))
        wait_for(lambda: len(group._queue) == 1, 10, 0.01, "another caller queued")
        many = pool.submit(group.run_many, [insert(f"p{i}") for i in range(4)])
        wait_for(lambda: len(group._queue) == 5, 10, 0.01, "the units queued")
    finally:
        lock.release()
    pool.shutdown(wait=True)
    assert first.result() == "lead" and other.result() == "other"
    assert [d.get() for d in many.result()] == [f"p{i}" for i in range(4)]
    assert (group.stats.commits, group.stats.largest) == (2, 5)
    assert rowid_order(engine) == ["lead", "other", "p0", "p1", "p2", "p3"]


def test_a_caller_returns_only_after_its_rows_are_committed(engine: Engine) -> None:
    group = GroupCommit(engine, WriteLock())
    seen_before: list[list[str]] = []

    def work(conn: Connection) -> None:
        insert("late")(conn)
        seen_before.append(names(engine))  # another connection: not committed yet

    group.run(work)
    assert seen_before == [[]] and names(engine) == ["late"]


def test_a_rolled_back_unit_drops_what_it_asked_to_run_after_the_commit(engine: Engine) -> None:
    lock = WriteLock()
    group = GroupCommit(engine, lock)
    called: list[str] = []

    def then(name: str, fail: bool = False) -> Callable[[Connection], str]:
        def work(conn: Connection) -> str:
            group.batch.after_commit(lambda: called.append(name))
            return insert(name, fail=fail)(conn)

        return work

    done = in_one_batch(group, lock, [then("p"), then("q"), then("r", fail=True), then("s")])
    assert [f.exception() is None for f in done] == [True, True, False, True]
    assert called == ["p", "q", "s"] and names(engine) == ["p", "q", "s"]
    with pytest.raises(RuntimeError):
        group.batch  # noqa: B018  # only a unit's work has a batch


def test_callers_from_many_threads_all_commit(engine: Engine) -> None:
    group = GroupCommit(engine, WriteLock())
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: group.run(insert(f"t{i:03d}")), range(200)))
    assert results == [f"t{i:03d}" for i in range(200)] and len(names(engine)) == 200
    assert group.stats.units == 200 and group.stats.commits <= 200


# -- the HL7 intake ------------------------------------------------------------------------------------------
@pytest.fixture
def router(tmp_path: Path, unstarted_routers: list[Router]) -> Router:
    (tmp_path / "rules").mkdir()
    unstarted_routers.append(Router(parse_config({"data_dir": "var", "rules_dir": "rules"}, tmp_path)))
    return unstarted_routers[-1]


def test_hl7_messages_of_several_connections_share_a_commit_and_a_resend_is_applied_once(router: Router) -> None:
    pid = {3: "GC1^^^HOSP^MR", 5: "Groep^Commit", 7: "19900101", 8: "M"}
    raws = [encode(adt("A01", pid, control_id=f"GC-{i}")) for i in [0, 1, 2, 3, 2]]  # GC-2 re-sent in the batch
    intake = router.hl7
    group = intake.group

    pool = ThreadPoolExecutor(len(raws))
    router.write_lock.acquire()
    try:
        first = pool.submit(intake.handle, raws[0], "127.0.0.1:1")
        wait_for(lambda: group._leading, 10, 0.01, "a leader")
        rest = [pool.submit(intake.handle, raw, "127.0.0.1:2") for raw in raws[1:]]
        wait_for(lambda: len(group._queue) == len(rest), 10, 0.01, "the others queued")
    finally:
        router.write_lock.release()
    pool.shutdown(wait=True)
    acks = [f.result() for f in [first, *rest]]
    assert [ack_code_of(a)[0] for a in acks] == ["AA"] * 5
    assert (group.stats.commits, group.stats.largest) == (2, 4)
    db = router.config.data_dir / "router.db"
    assert sorted(r[0] for r in query(db, "SELECT control_id FROM hl7log")) == [f"GC-{i}" for i in range(4)]
    assert query(db, "SELECT count(*) FROM patient WHERE patient_id='GC1'") == [(1,)]


# -- the DICOM intake ----------------------------------------------------------------------------------------
SOURCE = Source(protocol="dimse", calling_ae="GC", called_ae="ROUTER", address="127.0.0.1")
STUDY, SERIES = "1.2.826.0.1.3680043.2.1125.77.1", "1.2.826.0.1.3680043.2.1125.77.2"


def p10_objects(n: int) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(n):
        ds = make_instance(STUDY, SERIES)
        buf = BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        out.append((str(ds.SOPInstanceUID), buf.getvalue()))
    return out


def ingest_in_one_batch(router: Router, raws: list[bytes]) -> list[IngestResult]:
    """Ingest ``raws`` from threads of their own, the first alone and the rest in one batch."""
    group = router.ingestor.group
    pool = ThreadPoolExecutor(len(raws))
    router.write_lock.acquire()
    try:
        first = pool.submit(router.ingestor.ingest, raws[0], SOURCE)
        wait_for(lambda: group._leading, 10, 0.01, "a leader")
        rest = [pool.submit(router.ingestor.ingest, raw, SOURCE) for raw in raws[1:]]
        wait_for(lambda: len(group._queue) == len(rest), 10, 0.01, "the others queued")
    finally:
        router.write_lock.release()
    pool.shutdown(wait=True)
    return [f.result() for f in [first, *rest]]


def count_fsyncs(monkeypatch: pytest.MonkeyPatch, fail_from: int | None = None) -> list[Path]:
    """Every folder fsync from now on; with ``fail_from``, that one and the later ones raise."""
    synced: list[Path] = []
    real = files.fsync_dir

    def fsync_dir(path: Path) -> None:
        synced.append(path)
        if fail_from is not None and len(synced) >= fail_from:
            raise OSError(28, "No space left on device (simulated)")
        real(path)

    monkeypatch.setattr(files, "fsync_dir", fsync_dir)
    return synced


def instance_paths(router: Router) -> dict[str, str]:
    db = router.config.data_dir / "router.db"
    return dict(query(db, "SELECT sop_uid, path FROM instance"))


def test_dicom_objects_stored_at_once_share_one_commit_and_one_folder_fsync(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = p10_objects(6)
    synced = count_fsyncs(monkeypatch)
    results = ingest_in_one_batch(router, [raw for _uid, raw in objects])
    assert [r.outcome for r in results] == [StoreOutcome.STORED] * 6
    group = router.ingestor.group
    assert (group.stats.commits, group.stats.largest) == (2, 5)
    series = router.config.data_dir / "objects" / STUDY / SERIES
    assert synced.count(series) == 2, synced  # once per batch, not once per object
    paths = instance_paths(router)
    for uid, raw in objects:
        assert (router.config.data_dir / paths[uid]).read_bytes() == raw


def test_a_failed_folder_fsync_fails_every_object_of_its_batch_and_leaves_nothing_of_them(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = p10_objects(4)
    # the first batch makes and fsyncs three folders (objects/, the study's, the series'): the second one's fails
    count_fsyncs(monkeypatch, fail_from=4)
    results = ingest_in_one_batch(router, [raw for _uid, raw in objects])
    assert [r.outcome for r in results] == [StoreOutcome.STORED] + [StoreOutcome.OUT_OF_RESOURCES] * 3
    assert list(instance_paths(router)) == [objects[0][0]]
    series = router.config.data_dir / "objects" / STUDY / SERIES
    assert sorted(p.name for p in series.iterdir()) == [f"{objects[0][0]}.dcm"]
    assert not list((router.config.data_dir / "tmp").iterdir())
    monkeypatch.undo()
    again = router.ingestor.ingest(objects[1][1], SOURCE)  # the sender tries again: stored
    assert again.outcome == StoreOutcome.STORED


def test_no_row_is_committed_before_the_names_of_its_files_are_durable(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost page cache at the moment of any commit would keep every row of it with its file: each rename and
    each new folder of the batch is fsynced before (a test double of the file layer records what is not yet)."""
    checked: list[int] = []

    def at_commit(_conn: Any) -> None:
        checked.append(unsynced.under(router.config.data_dir / "objects"))

    unsynced = UnsyncedNames(monkeypatch)
    event.listen(router.engine, "commit", at_commit)
    try:
        results = ingest_in_one_batch(router, [raw for _uid, raw in p10_objects(5)])
        results.append(router.ingestor.ingest(p10_objects(1)[0][1], SOURCE))
    finally:
        event.remove(router.engine, "commit", at_commit)
    assert [r.outcome for r in results] == [StoreOutcome.STORED] * 6
    assert len(checked) >= 3 and set(checked) == {0}, checked  # at every commit, nothing of the store unsynced
