"""``/healthz`` and ``/readyz`` (router/listeners/http/health.py): liveness, and readiness that is false while the
database does not answer (or is at another schema revision), data_dir takes no file or the write-ahead journal's
last checkpoint failed; no credentials needed.

In-process against an SQLite database whose file goes away, and a router process on PostgreSQL whose database stops
taking connections (interop: the Debian package postgresql, tests/postgres.py) and comes back.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from router.listeners.http.health import Health
from router.store import files, schema
from router.store.db import make_engine
from router.store.journal import Journal

from peers import RouterProcess, running, wait_for
from postgres import postgres_cluster

TOKEN = "health-test-bearer-token-0123456789"


async def _refused(request: Request) -> PlainTextResponse:
    return PlainTextResponse("authentication required", 401)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    found = make_engine(f"sqlite:///{tmp_path / 'router.db'}")
    yield found
    found.dispose()


def client_for(engine: Engine, data_dir: Path, timeout: float = 5.0) -> TestClient:
    """Health in front of an app that refuses everything, as authentication would without credentials."""
    inner = Starlette(routes=[Route("/{path:path}", _refused, methods=["GET", "POST"])])
    return TestClient(Health(inner, engine, data_dir, timeout))


def test_liveness_and_readiness_answer_without_credentials(engine: Engine, tmp_path: Path) -> None:
    client = client_for(engine, tmp_path)
    live = client.get("/healthz")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}
    assert ready.headers["cache-control"] == "no-store"
    assert client.head("/readyz").status_code == 200
    assert client.post("/readyz").status_code == 405
    assert client.get("/api/peers").status_code == 401  # everything else goes on to authentication
    assert list((tmp_path / "tmp").iterdir()) == []  # the probe file was removed


def test_a_database_that_went_away_is_not_ready(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(engine, tmp_path)
    assert client.get("/readyz").status_code == 200
    engine.dispose()  # its connections closed; the file is gone and something else is where it was
    for name in ("router.db", "router.db-wal", "router.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "router.db").mkdir()
    with caplog.at_level(logging.WARNING, logger="router.listeners.http.health"):
        answers = [client.get("/readyz") for _ in range(2)]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json() == {
            "status": "not ready",
            "checks": {"database": "no answer (OperationalError)", "storage": "ok"},
        }
    assert client.get("/healthz").status_code == 200  # alive all the same
    assert len([r for r in caplog.records if "database failed" in r.getMessage()]) == 1  # once per change


def test_a_database_at_another_schema_revision_is_not_ready(engine: Engine, tmp_path: Path) -> None:
    with engine.begin() as conn:
        conn.execute(schema.VERSION_TABLE.update().values(version_num="9001"))
    answer = client_for(engine, tmp_path).get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["database"] == f"schema revision 9001, this node needs {schema.HEAD}"


def test_storage_that_takes_no_file_is_not_ready_until_it_does(engine: Engine, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    (data_dir / "tmp").parent.mkdir()
    (data_dir / "tmp").write_bytes(b"")  # a file where the temp folder should be (the tests run as root: no modes)
    client = client_for(engine, data_dir)
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"] == {"database": "ok", "storage": "data_dir not writable (NotADirectoryError)"}
    (data_dir / "tmp").unlink()
    assert client.get("/readyz").status_code == 200


def test_a_check_that_hangs_is_a_failure_in_bounded_time(engine: Engine, tmp_path: Path) -> None:
    release = threading.Event()
    health = Health(Starlette(), engine, tmp_path, timeout=0.3)
    health.checks["database"] = lambda: release.wait(30) and None
    health.checks["storage"] = lambda: None  # only the hanging check's time is measured here
    try:
        answer = TestClient(health).get("/readyz")
    finally:
        release.set()
    assert answer.status_code == 503
    assert answer.json()["checks"] == {"database": "no answer in 0.3 s", "storage": "ok"}


def test_a_failing_journal_checkpoint_is_not_ready_until_one_succeeds(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush of the data folder's file system that fails (EIO) means what was acknowledged since may not be on
    the disk: not ready, until a checkpoint succeeds again. A router without a journal has no such check."""
    journal = Journal(tmp_path / "journal", [tmp_path], capacity=16 * 4096)
    opened: Journal | None = None
    inner = Starlette(routes=[Route("/{path:path}", _refused, methods=["GET"])])
    client = TestClient(Health(inner, engine, tmp_path, journal=lambda: opened))
    try:
        assert client.get("/readyz").json()["checks"] == {"database": "ok", "storage": "ok"}
        opened = journal
        journal.finished(journal.append([b"an object"]))
        real = files.syncfs

        def failing(path: Path) -> None:
            raise OSError(errno.EIO, "Input/output error (simulated)")

        monkeypatch.setattr(files, "syncfs", failing)
        with pytest.raises(OSError):
            journal.checkpoint()
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"] == {"database": "ok", "storage": "ok", "journal": "checkpoint failing (OSError)"}
        assert (journal.checkpoints, journal.checkpoint_failures) == (0, 1)
        monkeypatch.setattr(files, "syncfs", real)
        assert journal.checkpoint()
        answer = client.get("/readyz")
        assert (answer.status_code, answer.json()["checks"]["journal"]) == (200, "ok")
    finally:
        journal.close()


@pytest.mark.interop  # PostgreSQL
def test_a_router_on_postgresql_is_ready_only_while_its_database_answers(workdir: Path) -> None:
    with postgres_cluster() as cluster, cluster.fresh_database() as name:
        router = RouterProcess(workdir, database_url=cluster.url(name), http={"auth": {"bearer_token": TOKEN}})
        base = f"http://127.0.0.1:{router.http_port}"
        with running(router):
            router.start()
            assert httpx.get(f"{base}/api/peers").status_code == 401  # the rest still asks for credentials
            assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
            assert httpx.get(f"{base}/readyz").status_code == 200
            with cluster.connect(autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

                def backends() -> int:
                    found = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))
                    return int(found.fetchone()[0])  # type: ignore[index]

                wait_for(lambda: backends() == 0, 30, what="the router's connections to end")  # signalled, not gone
            answer = httpx.get(f"{base}/readyz", timeout=30)
            assert answer.status_code == 503
            assert answer.json()["checks"] == {"database": "no answer (OperationalError)", "storage": "ok"}
            assert httpx.get(f"{base}/healthz").status_code == 200
            with cluster.connect(autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, what="ready again")
            assert router.alive()
    shutil.rmtree(workdir / "var", ignore_errors=True)
