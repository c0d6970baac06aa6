"""Storage modes in-process: what eviction deletes and keeps, and what it leaves behind (nothing).

The router is built but not started (nothing listens): objects go through the real ingest, queries through the
real C-FIND engine, the storage keeper's checks are run by the test. The database (SQLite, and PostgreSQL for the
tests marked so: a throwaway cluster, tests/postgres.py) and files are real. The same scenario with real peers
and the router as a process is in test_storage_cache.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid
from sqlalchemy import text

import router.store.eviction as eviction_module
from router.app import Router
from router.config import parse_config
from router.hooks.answers import InstanceRef
from router.hooks.calls import notify
from router.hooks.specs import hookimpl
from router.intake.envelope import Source
from router.query.find import plan_find, run_find
from router.query.model import PATIENT_ROOT
from router.statuses import StoreOutcome
from router.store import usage
from router.store.pruning import EvictedStudy, Pruned
from router.store.removal import remove_instance
from router.store.writelock import WriteLock

from forwarding import index_and_files_disagree
from peers import make_instance
from postgres import PgCluster, postgres_cluster

SOURCE = Source(protocol="dimse", calling_ae="CT1", called_ae="ROUTER", address="127.0.0.1")
DOWN = {"DOWN": {"ae_title": "DOWN", "host": "127.0.0.1", "port": 9}}  # nothing listens: jobs stay pending
TO_DOWN = [{"name": "p3-down", "when": {"tags": {"PatientID": "P3"}}, "then": [{"forward": "DOWN"}]}]


class Scheduler:
    """Stands in for the router's apscheduler: records the job and the checks asked for."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.woken = 0

    def add_job(self, func: Any, trigger: str, **kw: Any) -> None:
        self.jobs.append({"func": func, "trigger": trigger, **kw})

    def modify_job(self, job_id: str, **changes: Any) -> None:
        self.woken += 1


class Evictions:
    """A plugin recording ``router_evicted``."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def router_evicted(
        self, reason: str, studies: list[EvictedStudy], patients: int, instances: int, size: int
    ) -> None:
        self.calls.append({"reason": reason, "studies": studies, "patients": patients, "instances": instances,
                           "size": size})  # fmt: skip

    def patients(self, reason: str) -> list[str]:
        return [s.patient_id for c in self.calls if c["reason"] == reason for s in c["studies"]]


def p10(ds: Dataset) -> bytes:
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    with postgres_cluster() as cluster:
        yield cluster


ON_BOTH = pytest.mark.parametrize(
    "database",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.interop)],  # PostgreSQL's server
    indirect=True,
)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The database URL (None: SQLite in data_dir) of the test's ``database`` parameter."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    cluster = request.getfixturevalue("pg_cluster")
    with cluster.fresh_database() as name:
        yield cluster.url(name)


@pytest.fixture
def make_router(workdir: Path, database: str | None) -> Iterator[Any]:
    made: list[Router] = []

    def make(storage: dict[str, Any] | None = None, rules: list[Any] | None = None, **config: Any) -> Router:
        (workdir / "rules").mkdir(exist_ok=True)
        if rules:
            (workdir / "rules" / "10-rules.yaml").write_text(yaml.safe_dump(rules))
        settings = {"data_dir": "var", "rules_dir": "rules", "peers": DOWN, "storage": storage or {}, **config}
        if database is not None:
            settings["database_url"] = database
        router = Router(parse_config(settings, workdir))  # not started: nothing listens
        router.rules.reload_if_changed()
        made.append(router)
        return router

    yield make
    for router in made:
        router.ingestor.close()
        router.engine.dispose()
        router.write_lock.close()


def store(router: Router, *datasets: Dataset) -> None:
    for ds in datasets:
        assert router.ingestor.ingest(p10(ds), SOURCE).outcome is StoreOutcome.STORED


def patient_study(patient_id: str, count: int = 2) -> list[Dataset]:
    study, series = generate_uid(), generate_uid()
    return [make_instance(study, series, PatientID=patient_id) for _ in range(count)]


def rows(router: Router, sql: str) -> list[Any]:
    with router.engine.connect() as conn:
        return list(conn.execute(text(sql)).all())


def back_date(router: Router, when: datetime, sop_uids: list[str] | None = None) -> None:
    """Make objects look received at ``when`` (all of them without ``sop_uids``)."""
    with router.engine.begin() as conn:
        if sop_uids is None:
            conn.execute(text("update instance set received_at = :when"), {"when": when})
        for uid in sop_uids or []:
            conn.execute(text("update instance set received_at = :t where sop_uid = :uid"), {"t": when, "uid": uid})


def agree(router: Router) -> None:
    assert index_and_files_disagree(router.config.data_dir, lambda sql: rows(router, sql)) == {
        "rows without a file": [], "files without a row": [], "series": [], "studies": [], "patients": []
    }  # fmt: skip


@ON_BOTH
def test_cache_evicts_least_recently_used_patients_whole_and_keeps_what_a_job_needs(make_router: Any) -> None:
    probe = p10(patient_study("P0", 1)[0])
    size = len(probe)  # every object here has this size, give or take a few bytes of UIDs
    router = make_router({"mode": "cache", "high_water": str(9 * size), "low_water": str(5 * size)}, TO_DOWN)
    recorded = Evictions()
    router.pm.register(recorded, name="evictions")
    scheduler = Scheduler()
    router.storage.start(scheduler)
    assert [(j["trigger"], j["seconds"], j["id"]) for j in scheduler.jobs] == [("interval", 60.0, "storage-check")]
    for patient in ("P1", "P2", "P3", "P4", "P5"):  # 10 objects: above the high-water mark with the 10th
        store(router, *patient_study(patient))
    assert scheduler.woken == 1, "one check asked for, however many objects arrive above the mark"
    query = Dataset()
    query.QueryRetrieveLevel, query.PatientID = "PATIENT", "P1"
    assert len(list(run_find(router.engine, plan_find(PATIENT_ROOT, query), used=router.storage.uses.patients))) == 1

    router.storage.check()

    # least recently used first: P2, then P3 (a pending forward to DOWN: kept whole), P4, P5; P1 was queried
    assert recorded.patients("cache") == ["P2", "P4", "P5"]
    assert sorted(r.patient_id for r in rows(router, "select patient_id from patient")) == ["P1", "P3"]
    assert router.storage.meter.total <= 5 * size
    assert [call["patients"] for call in recorded.calls] == [1, 1, 1]
    assert all(s.removed and s.instances == 2 for call in recorded.calls for s in call["studies"])
    [kept] = router.storage.status().kept
    assert "job 1 (pending, peer DOWN) may still send" in kept.reason
    agree(router)
    assert router.storage.meter.resync(router.engine, router.write_lock) == router.storage.meter.total
    assert sum(r.size for r in rows(router, "select size from instance")) == router.storage.meter.total


@ON_BOTH
def test_keep_days_evicts_objects_received_longer_ago_in_archive_mode(make_router: Any) -> None:
    router = make_router({"keep_days": 1}, TO_DOWN)
    recorded = Evictions()
    router.pm.register(recorded, name="evictions")
    router.storage.start(Scheduler())
    old1, new1 = patient_study("P1")
    old3, held3 = patient_study("P3")
    store(router, old1, new1, old3, held3, *patient_study("P5"))
    back_date(router, datetime.now(UTC) - timedelta(days=2), [str(ds.SOPInstanceUID) for ds in (old1, old3, held3)])
    with router.engine.begin() as conn:
        conn.execute(text("update job set state = 'done' where sop_uid = :uid"), {"uid": str(old3.SOPInstanceUID)})

    router.storage.check()

    left = {r.sop_uid for r in rows(router, "select sop_uid from instance")}
    assert str(old1.SOPInstanceUID) not in left and str(old3.SOPInstanceUID) not in left
    assert {str(new1.SOPInstanceUID), str(held3.SOPInstanceUID)} <= left, "new, or still to be sent to DOWN"
    assert router.storage.status().old_kept == 1
    [call] = recorded.calls
    assert (call["reason"], call["instances"], call["patients"]) == ("keep_days", 2, 0)
    assert {(s.patient_id, s.instances, s.removed) for s in call["studies"]} == {("P1", 1, False), ("P3", 1, False)}
    agree(router)


@ON_BOTH
def test_delete_after_commit_takes_the_rows_it_leaves_empty_and_no_stale_id_survives(make_router: Any) -> None:
    """A removal in another process (its own lock on the same file, as the forward process has) deletes the last
    patient, study and series rows; SQLite then gives their ids to the next new patient, study and series. The
    ingest must not file an object of the removed series under the new one's id. (PostgreSQL never gives an id
    twice: there the stale id fails the foreign key, and the ingest tries again without its cache.)"""
    router = make_router()
    first, second = patient_study("P1")
    store(router, first)
    announced: list[Pruned] = []
    other_process = WriteLock(router.config.data_dir / "router.db-writer.lock")
    try:
        assert remove_instance(router.engine, router.config.data_dir, other_process, str(first.SOPInstanceUID),
                               announce=announced.append)  # fmt: skip
    finally:
        other_process.close()
    [pruned] = announced
    assert (pruned.instances, pruned.patients, pruned.parents) == (1, 1, 3)
    assert rows(router, "select id from series") == []
    store(router, *patient_study("P2", 1))  # takes the freed ids
    store(router, second)
    series = dict(rows(router, "select i.sop_uid, s.series_uid from instance i join series s on s.id = i.series_fk"))
    assert series[str(second.SOPInstanceUID)] == str(second.SeriesInstanceUID)
    agree(router)


def test_a_patient_the_hl7_feed_knows_keeps_its_row(make_router: Any) -> None:
    router = make_router()
    [ds] = patient_study("P1", 1)
    store(router, ds)
    with router.engine.begin() as conn:
        conn.execute(text("insert into patientidentifier (patient_fk, value, authority, authority_uid,"
                          " authority_uid_type, id_type, is_bsn, merged) select id, 'P1', 'HIS', '', '', 'MR', 0, 0"
                          " from patient"))  # fmt: skip
    assert remove_instance(router.engine, router.config.data_dir, router.write_lock, str(ds.SOPInstanceUID))
    assert [r.patient_id for r in rows(router, "select patient_id from patient")] == ["P1"]
    assert rows(router, "select id from study") == []
    agree(router)


def test_files_left_by_a_crash_after_the_commit_go_at_the_next_start(
    make_router: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = make_router({"keep_days": 1})
    router.storage.start(Scheduler())
    gone, again = patient_study("P1")
    store(router, gone, again)
    paths = {r.sop_uid: router.config.data_dir / r.path for r in rows(router, "select sop_uid, path from instance")}
    back_date(router, datetime(2001, 1, 1, tzinfo=UTC))
    monkeypatch.setattr(eviction_module, "remove_files", lambda *a, **k: None)  # the crash: no file removed
    router.storage.evictor.evict_old(datetime.now(UTC))
    assert rows(router, "select id from instance") == [] and all(p.is_file() for p in paths.values())
    store(router, again)  # received again meanwhile: the same path, indexed again
    monkeypatch.undo()

    restarted = make_router({"keep_days": 1})
    restarted.storage.start(Scheduler())

    assert not paths[str(gone.SOPInstanceUID)].exists()
    assert paths[str(again.SOPInstanceUID)].is_file()
    assert rows(restarted, "select id from removedfile") == []
    agree(restarted)


def test_the_total_is_exact_when_objects_are_stored_while_it_is_summed(make_router: Any) -> None:
    """``resync`` sums outside the write lock: an object committed between its snapshot and its sum is counted
    once, from the meter's own count."""
    router = make_router()
    store(router, *patient_study("P1"))
    meanwhile = patient_study("P2", 1)

    class StoresAfterTheSnapshot:
        def __enter__(self) -> None:
            router.write_lock.acquire()

        def __exit__(self, *exc: Any) -> None:
            router.write_lock.release()
            if meanwhile:
                store(router, meanwhile.pop())

    total = router.storage.meter.resync(router.engine, StoresAfterTheSnapshot())  # type: ignore[arg-type]  # a stand-in
    assert total == sum(r.size for r in rows(router, "select size from instance"))
    assert not meanwhile and len(rows(router, "select id from instance")) == 3


def test_a_percentage_is_of_the_file_system_that_holds_the_data(make_router: Any) -> None:
    router = make_router({"mode": "cache", "high_water": "50%", "low_water": "12.5%"})
    router.storage.start(Scheduler())
    size = usage.filesystem_size(router.config.data_dir)
    status = router.storage.status()
    assert (status.high_water, status.low_water) == (size // 2, int(size * 0.125))


def test_a_retrieve_counts_as_a_use(make_router: Any) -> None:
    """C-MOVE, C-GET and WADO-RS announce what they sent (``router_instances_exported``): the keeper hears it."""
    router = make_router({"mode": "cache"})
    first, second = patient_study("P1", 1), patient_study("P2", 1)
    store(router, *first, *second)
    ref = InstanceRef(str(first[0].StudyInstanceUID), str(first[0].SOPClassUID), str(first[0].SOPInstanceUID))
    notify(router.pm, "router_instances_exported", service="C-GET", calling_ae="VIEWER", user="", address="",
           destination="VIEWER", instances=[ref], failed=0, status=0)  # fmt: skip
    router.storage.uses.flush(router.engine, router.write_lock)
    ids = dict(rows(router, "select id, patient_id from patient"))
    assert [ids[fk] for fk in router.storage.evictor.least_recently_used()] == ["P2", "P1"]


def test_when_everything_is_held_the_keeper_says_so_once_and_waits_for_the_periodic_check(
    make_router: Any, caplog: pytest.LogCaptureFixture
) -> None:
    size = len(p10(patient_study("P0", 1)[0]))
    everything_down = [{"name": "all-down", "then": [{"forward": "DOWN"}]}]
    router = make_router({"mode": "cache", "high_water": str(5 * size), "low_water": str(3 * size)}, everything_down)
    scheduler = Scheduler()
    router.storage.start(scheduler)
    for patient in ("P1", "P2", "P3"):
        store(router, *patient_study(patient))
    assert scheduler.woken == 1
    with caplog.at_level("INFO", logger="router.store"):
        router.storage.check()
        store(router, *patient_study("P4"))  # still above the mark: no check asked for per object
        router.storage.check()  # the periodic one
    assert scheduler.woken == 1
    assert len(rows(router, "select id from instance")) == 8, "nothing evicted"
    status = router.storage.status()
    holders = [k.reason.split(" may still")[0] for k in status.kept]
    assert holders == [f"job {n} (pending, peer DOWN)" for n in (1, 3, 5, 7)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("nothing more can be evicted" in w for w in warnings) == 1, warnings
    assert sum("a least recently used patient kept" in w for w in warnings) == 4, "each patient once"
