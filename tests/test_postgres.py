"""The same store code on PostgreSQL: ``database_url: postgresql+psycopg://...`` for ingest and forwarding.

A throwaway cluster (postgres.py) runs for the module; each test gets a fresh database in it. The router runs
in-process, DCMTK storescu sends to it and DCMTK storescp receives what it forwards; the rows are then read
straight from PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from router.app import Router
from router.config import parse_config

from peers import StoreSCP, make_instance, storescu, wait_for, write_instances
from postgres import PgCluster, postgres_cluster

pytestmark = pytest.mark.interop  # PostgreSQL and DCMTK


# -- fixtures and test -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_database(pg_cluster: PgCluster) -> Iterator[str]:
    with pg_cluster.fresh_database() as name:
        yield name


@pytest.fixture
def pg_router(workdir: Path, dest: StoreSCP, pg_cluster: PgCluster, pg_database: str) -> Iterator[Router]:
    """An in-process router on PostgreSQL that forwards every DICOM object to ``dest``."""
    rules = workdir / "rules"
    rules.mkdir()
    (rules / "10-all.yaml").write_text(
        "- name: all-to-dest\n  when: {kind: dicom}\n  then:\n    - forward: DEST\n", encoding="utf-8"
    )
    cfg = parse_config(
        {
            "ae_title": "ROUTER",
            "data_dir": "var",
            "rules_dir": "rules",
            "database_url": pg_cluster.url(pg_database),
            "dicom": {"host": "127.0.0.1", "port": 0},
            "hl7": {"host": "127.0.0.1", "port": 0},
            "http": {"host": "127.0.0.1", "port": 0},
            "forward": {"backoff_initial": 0.2, "backoff_max": 1.0, "poll_interval": 0.2, "idle_release": 0.5},
            "peers": {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}},
        },
        workdir,
    )
    router = Router(cfg)
    try:
        router.start()
        yield router
    finally:
        router.stop()


def _rows(cluster: PgCluster, dbname: str, query: str) -> list[tuple[Any, ...]]:
    with cluster.connect(dbname) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def _count(cluster: PgCluster, dbname: str, table: str) -> int:
    return int(_rows(cluster, dbname, f"SELECT count(*) FROM {table}")[0][0])


def _job_states(cluster: PgCluster, dbname: str) -> dict[str, int]:
    return {state: int(n) for state, n in _rows(cluster, dbname, "SELECT state, count(*) FROM job GROUP BY state")}


def test_store_and_forward_on_postgresql(
    workdir: Path, dest: StoreSCP, pg_cluster: PgCluster, pg_database: str, pg_router: Router
) -> None:
    # the router really is on PostgreSQL, in the fresh database
    assert pg_router.engine.dialect.name == "postgresql"
    assert pg_router.engine.url.database == pg_database
    assert pg_router.dicom_port

    studies = [generate_uid(), generate_uid()]
    datasets = [
        make_instance(study, series, InstanceNumber=n + 1)
        for study in studies
        for series in (generate_uid(), generate_uid())
        for n in range(5)
    ]
    assert len(datasets) == 20 and {str(ds.PatientID) for ds in datasets} == {"P1"}
    files = write_instances(workdir / "generated", datasets)
    sent_uids = {str(ds.SOPInstanceUID) for ds in datasets}

    result = storescu(pg_router.dicom_port, files, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "E:" not in result.stderr, result.stderr

    wait_for(lambda: len(dest.received()) >= 20, 30, interval=0.2, what="20 objects at DEST")
    wait_for(lambda: _job_states(pg_cluster, pg_database) == {"done": 20}, 15, interval=0.2, what="20 jobs done")
    received = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in dest.received()]
    assert sorted(received) == sorted(sent_uids), "every object arrives, exactly once"

    # the index and the outbox, read straight from PostgreSQL
    assert _count(pg_cluster, pg_database, "instance") == 20
    assert {r[0] for r in _rows(pg_cluster, pg_database, "SELECT sop_uid FROM instance")} == sent_uids
    assert _count(pg_cluster, pg_database, "series") == 4
    assert {r[0] for r in _rows(pg_cluster, pg_database, "SELECT study_uid FROM study")} == set(studies)
    assert _rows(pg_cluster, pg_database, "SELECT patient_id, issuer, name FROM patient") == [
        ("P1", "", "Test^Patient")
    ]
    jobs = _rows(pg_cluster, pg_database, "SELECT peer, state, attempts, last_status, sop_uid FROM job")
    assert len(jobs) == 20
    assert {(peer, state, attempts, status) for peer, state, attempts, status, _ in jobs} == {("DEST", "done", 1, 0)}
    assert {uid for *_, uid in jobs} == sent_uids
    assert not any((workdir / "var" / "quarantine").iterdir())

    # the same object again, byte for byte: accepted, and nothing new is stored or queued
    again = storescu(pg_router.dicom_port, files[0], timeout=30)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "E:" not in again.stderr, again.stderr
    assert _count(pg_cluster, pg_database, "instance") == 20
    assert _count(pg_cluster, pg_database, "study") == 2
    assert _count(pg_cluster, pg_database, "patient") == 1
    assert _job_states(pg_cluster, pg_database) == {"done": 20}
    assert len(dest.received()) == 20


def test_text_with_nul_characters_is_indexed_on_postgresql(
    workdir: Path, dest: StoreSCP, pg_cluster: PgCluster, pg_database: str, pg_router: Router
) -> None:
    """Modalities send NUL inside text values; PostgreSQL text cannot hold NUL, so the index drops it."""
    files = write_instances(workdir / "nul", [make_instance(PatientName="Doe\x00John", PatientID="P\x002")])
    result = storescu(pg_router.dicom_port, files, timeout=30)
    assert result.returncode == 0 and "E:" not in result.stderr, result.stdout + result.stderr
    assert _rows(pg_cluster, pg_database, "SELECT patient_id, name FROM patient") == [("P2", "DoeJohn")]
    wait_for(lambda: len(dest.received()) == 1, 30, what="the object at DEST")
    assert pydicom.dcmread(dest.received()[0]).PatientName == "Doe\x00John", "forwarded exactly as received"
