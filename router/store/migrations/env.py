"""Alembic's environment for the router's schema: the target is ``SQLModel.metadata`` (router.store.models and
ops_models), SQLite ALTERs run in batch mode (``render_as_batch``), column types are compared.

Run from ``router.store.migrations.runner`` (``router db ...``), the connection comes in ``config.attributes``;
run by the ``alembic`` command (the repository's alembic.ini, for ``alembic revision --autogenerate``), the
database is ``-x url=...`` or alembic.ini's ``sqlalchemy.url``. On PostgreSQL a transaction-scoped advisory lock
keeps two nodes from upgrading at once.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, func, select
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from router.store import models, ops_models  # noqa: F401  (register the tables)
from router.store.schema import POSTGRES_LOCK_KEY


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """SQLModel's types written as what they are in the database (``AutoString(n)``: ``sa.String(length=n)``,
    ``UTCDateTime``: ``sa.DateTime(timezone=True)``), so that revisions do not depend on sqlmodel's internals."""
    if type_ == "type" and isinstance(obj, AutoString):
        length = getattr(obj.impl, "length", None)
        return f"sa.String(length={length})" if length is not None else "sa.String()"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(POSTGRES_LOCK_KEY)))
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    from router.store.db import open_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database: give -x url=... or sqlalchemy.url in alembic.ini")
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: run against a database")
run_online()
