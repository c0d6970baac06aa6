"""Run the schema's revisions without an ``alembic.ini``: what ``router db upgrade|current|history`` do.

``upgrade`` brings a database of any version to the head revision: an empty one is made by running every revision,
one at a revision of this router runs the revisions after it, and one made before schema versions (the router's
tables, no ``alembic_version``) is first checked against the baseline (revision 0001 made on a scratch SQLite
database: each of its tables that the database has must have all of its columns), after which 0001 adds what an
older router had not made yet. A revision this router does not know (a newer router's) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from router.store import schema

BASELINE = "0001"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(schema.MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def script() -> ScriptDirectory:
    return ScriptDirectory(str(schema.MIGRATIONS))


@dataclass(frozen=True)
class Upgraded:
    before: str  # a revision, schema.FRESH or schema.LEGACY
    after: str


def upgrade(engine: Engine, to: str = "head") -> Upgraded:
    """Bring the database to ``to`` (default: the head revision); ``SchemaMismatch`` when that cannot be done."""
    with engine.connect() as conn:
        before = schema.found_revision(conn)
        if before == schema.LEGACY:
            problems = baseline_problems(conn)
            if problems:
                raise schema.SchemaMismatch(
                    "the database has the router's tables but not the baseline's columns, so it cannot be upgraded:"
                    "\n  " + "\n  ".join(problems)
                )
    if before not in (schema.FRESH, schema.LEGACY) and before not in schema.known_revisions():
        raise schema.SchemaMismatch(schema.mismatch_message(before))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), to)
    with engine.connect() as conn:
        return Upgraded(before, schema.found_revision(conn))


def baseline_columns() -> dict[str, set[str]]:
    """Each table of revision 0001 with its columns, from running 0001 on an in-memory SQLite database."""
    scratch = create_engine("sqlite://", poolclass=StaticPool)
    try:
        with scratch.begin() as conn:
            command.upgrade(alembic_config(conn), BASELINE)
        found = inspect(scratch)
        return {
            t: {c["name"] for c in found.get_columns(t)}
            for t in found.get_table_names()
            if t != schema.VERSION_TABLE_NAME
        }
    finally:
        scratch.dispose()


def baseline_problems(conn: Connection) -> list[str]:
    """What a database made before schema versions lacks of revision 0001 in the tables it has (its missing tables
    are 0001's to create)."""
    found = inspect(conn)
    present = set(found.get_table_names())
    problems = []
    for table, columns in sorted(baseline_columns().items()):
        if table in present:
            missing = columns - {c["name"] for c in found.get_columns(table)}
            if missing:
                problems.append(f"table {table} has no column {', '.join(sorted(missing))}")
    return problems


def current(engine: Engine) -> str:
    """The database's revision (``schema.FRESH``, ``schema.LEGACY`` or a revision id)."""
    with engine.connect() as conn:
        return schema.found_revision(conn)


def history() -> list[tuple[str, str]]:
    """Every revision, oldest first, with the first line of its message."""
    revisions = reversed(list(script().walk_revisions()))
    return [(rev.revision, (rev.doc or "").strip().splitlines()[0] if rev.doc else "") for rev in revisions]
