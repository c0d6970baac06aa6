"""A throwaway PostgreSQL cluster for the tests that run the store on PostgreSQL (they are interop).

From the Debian ``postgresql`` package's server binaries (tools.postgres_bin): in a temp folder, on 127.0.0.1 at a
free port (and a unix socket in that folder), trusting every local connection, stopped (``pg_ctl stop -m
immediate``) and removed whatever happens. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user the package creates.
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

import psycopg
from psycopg import sql

import tools
from peers import free_port

STARTUP_TIMEOUT = 30.0


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
def postgres_cluster(timeout: float = STARTUP_TIMEOUT, fsync: bool = False) -> Iterator[PgCluster]:
    """Start a throwaway cluster; always stop it and remove its folder. ``fsync``: durable commits, as in
    production (the benches); off for the tests."""
    bin_dir = tools.postgres_bin()
    as_user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root but there is no 'postgres' user: install the Debian package postgresql"
            ) from None
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
        options = f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {root} -c fsync={'on' if fsync else 'off'}"
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
