"""Core statements compiled once and run on the DB-API cursor: the few statements every stored object runs.

SQLAlchemy's execution layer (a cached-compile lookup, an execution context, a result object) costs about 0.1 ms a
statement on this machine, more than SQLite takes to run one. ``RawStatement`` keeps what matters from
SQLAlchemy: the statement's SQL for the connection's dialect (SQLite or PostgreSQL), its parameter order, and the
bind processors of its column types (date-times stored as SQLite expects them). Transactions stay SQLAlchemy's:
the statement runs on the DB-API connection of an open ``Connection``, inside whatever it has begun.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement


class RawStatement:
    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        assert isinstance(compiled, SQLCompiler)
        if keys is not None and set(compiled.binds) != set(keys):
            # a column left out would take its default from SQLAlchemy's execution layer, which this skips
            raise ValueError(f"an insert needs every column's value: {sorted(set(compiled.binds) - set(keys))}")
        self.sql = compiled.string
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor

    def parameters(self, values: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        if self._processors:
            values = {**values, **{k: p(values[k]) for k, p in self._processors.items() if k in values}}
        if self._order is not None:
            return tuple(values[k] for k in self._order)
        return values

    def execute(self, conn: Connection, values: dict[str, Any]) -> Any:
        """Run it with ``values``; the first row of its result (None when it has none or returns no rows)."""
        parameters = self.parameters(values)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(self.sql, parameters)
            return cursor.fetchone() if cursor.description is not None else None
        except Exception as exc:
            raise _as_sqlalchemy(exc, conn, cursor, self.sql, parameters) from exc
        finally:
            cursor.close()

    def execute_many(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        parameters = [self.parameters(row) for row in rows]
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(self.sql, parameters)  # type: ignore[arg-type]  # all tuples or all dicts
        except Exception as exc:
            raise _as_sqlalchemy(exc, conn, cursor, self.sql, parameters) from exc
        finally:
            cursor.close()


def _as_sqlalchemy(exc: Exception, conn: Connection, cursor: Any, sql: str, parameters: Any) -> Exception:
    """A driver error as SQLAlchemy would raise it (``IntegrityError``, ``OperationalError``...), so callers catch
    one family whichever way a statement ran; a lost connection is invalidated, as SQLAlchemy does."""
    dialect = conn.dialect
    base = dialect.loaded_dbapi.Error
    if not isinstance(exc, base):
        return exc
    if dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor):
        conn.invalidate(exc)
    return DBAPIError.instance(sql, parameters, exc, base, dialect=dialect)


def insert_columns(table: Table) -> tuple[str, ...]:
    """Every column of ``table`` but its generated primary key: what a raw insert must give a value for."""
    return tuple(c.name for c in table.columns if not (c.primary_key and c.autoincrement in (True, "auto")))


_compiled: dict[tuple[int, str, str], RawStatement] = {}


def raw(statement: ClauseElement, conn: Connection, keys: Sequence[str] | None = None) -> RawStatement:
    """``statement`` compiled for ``conn``'s dialect, once (statements are module constants: keyed by identity)."""
    dialect = conn.dialect
    key = (id(statement), f"{dialect.name}+{dialect.driver}:{dialect.paramstyle}", ",".join(keys or ()))
    found = _compiled.get(key)
    if found is None:
        found = _compiled[key] = RawStatement(statement, dialect, keys)
    return found
