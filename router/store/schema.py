"""The database schema's version: which Alembic revision a database is at, and what a process may do with it.

The schema is versioned by the Alembic revisions in ``router/store/migrations/versions`` (``router db upgrade``
runs them). Every process that opens the database (``router serve``, the forward process, the commands) goes
through ``prepare``:

- an empty database (none of the router's tables) is created at the head revision: ``create_all`` and the
  revision written into ``alembic_version``, as ``alembic stamp`` would (faster than running the revisions one by
  one, and without importing Alembic: see docs/database.md);
- a database at the head revision is used as it is;
- anything else is refused with ``SchemaMismatch``, whose message says what to run: an older revision, or tables
  made before schema versions (no ``alembic_version``), need ``router db upgrade``; a revision this router does not
  know was written by a newer router, and nodes of different schema versions never run on one database.

``HEAD`` is the head revision, kept here so that the check at start-up costs one query and no Alembic import; a
test (tests/test_migrations.py) fails when it is not the head of the revisions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Column, Connection, MetaData, PrimaryKeyConstraint, String, Table, func, inspect, select
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from router.store import models, ops_models  # noqa: F401  (register the tables)
from router.store.writelock import write_lock_for

HEAD = "0003"  # the newest revision in router/store/migrations/versions (tests/test_migrations.py checks it)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE_NAME = "alembic_version"
# Alembic's own version table, as ``alembic stamp`` creates it
VERSION_TABLE = Table(
    VERSION_TABLE_NAME,
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE_NAME}_pkc"),
)
# pg_advisory_xact_lock key: one process at a time creates or upgrades the schema ("router" in ASCII)
POSTGRES_LOCK_KEY = 0x726F75746572

FRESH = "fresh"  # none of the router's tables
LEGACY = "legacy"  # the router's tables without alembic_version: made before schema versions


class SchemaMismatch(RuntimeError):
    """The database is not at this router's schema revision; the message says what to run."""


def router_tables() -> set[str]:
    return set(SQLModel.metadata.tables)


def found_revision(conn: Connection) -> str:
    """The database's revision, or ``FRESH`` / ``LEGACY``; several revisions (branches) come back joined by ``+``."""
    tables = set(inspect(conn).get_table_names())
    revisions: list[str] = []
    if VERSION_TABLE_NAME in tables:
        revisions = sorted(conn.execute(select(VERSION_TABLE.c.version_num)).scalars())
    if revisions:
        return "+".join(revisions)
    return LEGACY if tables & router_tables() else FRESH


def prepare(engine: Engine) -> None:
    """Create an empty database at ``HEAD``; accept one at ``HEAD``; refuse any other (``SchemaMismatch``)."""
    with engine.connect() as conn:
        found = found_revision(conn)
    if found == HEAD:
        return
    if found == FRESH:
        with _schema_lock(engine) as conn:
            found = found_revision(conn)  # another process may have created it meanwhile
            if found == FRESH:
                _create_at_head(conn)
                return
    if found != HEAD:
        raise SchemaMismatch(mismatch_message(found))


def _create_at_head(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn)
    VERSION_TABLE.create(conn, checkfirst=True)
    conn.execute(VERSION_TABLE.insert().values(version_num=HEAD))


@contextlib.contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A transaction that no other process creating or upgrading the schema runs beside: a PostgreSQL advisory
    lock held until it ends, for an SQLite file the writers' lock (``router.store.writelock``)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(select(func.pg_advisory_xact_lock(POSTGRES_LOCK_KEY)))
            yield conn
        return
    lock = write_lock_for(engine.url.render_as_string(hide_password=False))
    try:
        with lock, engine.begin() as conn:
            # one transaction for all the DDL (the driver would commit, and fsync, each CREATE on its own)
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
    finally:
        lock.close()


def known_revisions() -> list[str]:
    """Every revision of this router, oldest first (imports Alembic: not on the start-up path)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def mismatch_message(found: str) -> str:
    import router

    if found == LEGACY:
        return (
            "the database was made by a router from before schema versions (it has the router's tables but no "
            f"{VERSION_TABLE_NAME} table): stop every router on it, back it up and run `router db upgrade` once "
            "(see docs/database.md)"
        )
    if found in known_revisions():
        return (
            f"the database schema is at revision {found}, older than this router's {HEAD}: stop every router "
            "on it, back it up and run `router db upgrade` (see docs/database.md)"
        )
    return (
        f"the database schema is at revision {found}, which this router ({router.__version__}, schema {HEAD}) "
        "does not know: a newer router upgraded it. Run that version; routers of different schema versions never "
        "share a database"
    )
