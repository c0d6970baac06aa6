"""Database engine: SQLite (WAL, synchronous=FULL) by default, PostgreSQL by URL, the same code for both.

``make_engine(url, durable=False)`` is for the outbox's own bookkeeping (claims, done and failure marks): its
commits are not flushed to disk one by one (SQLite ``synchronous=NORMAL`` in WAL mode, PostgreSQL
``synchronous_commit=off``). They survive a crash of the process; a power loss may take back the last ones, and
only together with everything committed after them (both logs are written in order, and the next durable commit
flushes all earlier ones), so the worst case is an object delivered once more. Everything that an
acknowledgement depends on goes through the durable engine.

``make_engine`` also checks the schema (``router.store.schema.prepare``): an empty database is created at the head
revision, one at another revision is refused with a message that says what to do. ``open_engine`` is the same engine
without that check, for ``router db`` (which upgrades what ``make_engine`` refuses).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

from router.store import files, models, ops_models  # noqa: F401  (models, ops_models register the tables)
from router.store.writelock import sqlite_file

WAL_SWITCH_TIMEOUT = 30.0  # s: as long as a writer waits for the lock (busy_timeout)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, synchronous: str = "FULL") -> None:
    cur = dbapi_conn.cursor()
    _switch_to_wal(cur)
    cur.execute(f"PRAGMA synchronous={synchronous}")  # FULL: a commit survives power loss before we acknowledge
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _switch_to_wal(cur: Any) -> None:
    """``journal_mode=WAL``, waiting like a writer. SQLite answers the switch "database is locked" at once, without
    its busy handler, while another connection opens the same new database (4 % of four processes making one
    database at once): it is tried again until ``WAL_SWITCH_TIMEOUT``."""
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT
    pause = 0.001
    while True:
        try:
            mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):  # SQLITE_BUSY's text: "database is locked"
                raise
            mode = str(exc)
        if mode in ("wal", "memory"):  # an in-memory database has no log on disk
            return
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"cannot switch the database to WAL mode: {mode}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _sqlite_bookkeeping_pragmas(dbapi_conn: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_conn, record, synchronous="NORMAL")


def _postgres_bookkeeping(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("SET synchronous_commit TO OFF")
    cur.close()
    dbapi_conn.commit()


SQLITE_MINIMUM = (3, 35, 0)  # UPDATE ... RETURNING (the outbox's claim)


def make_engine(url: str, durable: bool = True) -> Engine:
    """The engine for ``database_url``, its schema at this router's revision (``schema.SchemaMismatch`` if not)."""
    from router.store import schema

    engine = open_engine(url, durable)
    try:
        schema.prepare(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def open_engine(url: str, durable: bool = True) -> Engine:
    """The engine for ``database_url`` as it is: no table is created, no revision checked."""
    if url.startswith("sqlite"):
        if sqlite3.sqlite_version_info < SQLITE_MINIMUM:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: the router needs {'.'.join(map(str, SQLITE_MINIMUM))} "
                "or later (UPDATE ... RETURNING); use a newer Python build or PostgreSQL"
            )
        db = sqlite_file(url)
        if db is not None:
            files.make_dirs(db.parent)
            files.create_private(db)  # SQLite would create it 0644; its WAL and shm files take the database's mode
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=8,
            hide_parameters=True,  # an error's text names the statement, never its values (patient data)
        )
        event.listen(engine, "connect", _sqlite_pragmas if durable else _sqlite_bookkeeping_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8, hide_parameters=True)
        if not durable:
            event.listen(engine, "connect", _postgres_bookkeeping)
    return engine
