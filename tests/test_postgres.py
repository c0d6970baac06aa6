"""The same store code on PostgreSQL: ``database_url: postgresql+psycopg://...`` for ingest and forwarding.

A throwaway cluster runs for the module, from the Debian ``postgresql`` package's binaries: in a temp folder, on
127.0.0.1 at a free port (and a unix socket in that folder), trusting every local connection, stopped
(``pg_ctl stop -m immediate``) and removed whatever happens. PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` system user the package creates. Each test gets a fresh database in it. The router
runs in-process, DCMTK storescu sends to it and DCMTK storescp receives what it forwards; the rows are then read
straight from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pydicom
import pytest
from psycopg import sql
from pydicom.uid import generate_uid

from router.app import Router
from router.config import parse_config

from peers import StoreSCP, free_port, make_instance, storescu, wait_for, write_instances

# -- a throwaway PostgreSQL cluster -------------------------------------------------------------------------------

PG_BIN_ENV = "PG_BIN"  # optional override: the folder holding initdb and pg_ctl
STARTUP_TIMEOUT = 30.0
MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin: "
    "install the Debian package postgresql (apt-get install -y postgresql), or set PG_BIN"
)


def pg_bin() -> Path:
    """The newest installed server version's bin folder; a clear error when there is none."""
    override = os.environ.get(PG_BIN_ENV)
    candidates = [Path(override)] if override else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise RuntimeError(MISSING)


@dataclass(frozen=True)
class PgCluster:
    host: str
    port: int
    user: str = "postgres"

    def url(self, dbname: str = "postgres") -> str:
        """The SQLAlchemy URL the router's ``database_url`` takes."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", autocommit: bool = False) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname=dbname, autocommit=autocommit, connect_timeout=5
        )

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[str]:
        """A new, empty database with a unique name; dropped afterwards (connections still open are ended)."""
        name = f"router_test_{uuid.uuid4().hex[:12]}"
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield name
        finally:
            with self.connect(autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _run(args: list[str], as_user: str | None, what: str, timeout: float = 60) -> None:
    cmd = ["runuser", "-u", as_user, "--", *args] if as_user else args
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")


def _wait_ready(cluster: PgCluster, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with cluster.connect() as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.2)
    server_log = log.read_text(errors="replace") if log.exists() else "(no server log)"
    raise RuntimeError(f"PostgreSQL not ready after {timeout}s: {last}\n{server_log}")


def _kill_leftover(data: Path) -> None:
    """Last resort when pg_ctl could not stop our own server: SIGKILL the postmaster named in its pid file."""
    pid_file = data / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres_cluster(timeout: float = STARTUP_TIMEOUT) -> Iterator[PgCluster]:
    """Start a throwaway cluster; always stop it and remove its folder."""
    bin_dir = pg_bin()
    as_user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(f"running as root but there is no 'postgres' user: {MISSING}") from None
        as_user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="router-pg-"))
    data, log = root / "data", root / "server.log"
    started = False
    try:
        if as_user:
            os.chown(root, pw.pw_uid, pw.pw_gid)
        _run(
            [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
            as_user,
            "initdb",
        )
        cluster = PgCluster("127.0.0.1", free_port())
        options = f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {root} -c fsync=off"
        started = True  # from here on a (partly) started server must be stopped
        _run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", str(int(timeout)),
             "start"],
            as_user,
            "pg_ctl start",
            timeout=timeout + 10,
        )  # fmt: skip
        _wait_ready(cluster, log, timeout)
        yield cluster
    finally:
        try:
            if started:
                try:
                    _run(
                        [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "20", "stop"],
                        as_user,
                        "pg_ctl stop",
                        timeout=30,
                    )
                except (RuntimeError, subprocess.TimeoutExpired):
                    _kill_leftover(data)
        finally:
            shutil.rmtree(root, ignore_errors=True)


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
