"""Group commit: the writes of several concurrent senders in one durable commit (one fsync), each still isolated.

Every acknowledged HL7 message needs a durable commit, and on this kind of disk one commit's fsync costs as much as
everything else the message needs (issue 21). Senders on other connections would wait for the write lock anyway;
with ``GroupCommit.run(work)`` they wait in a queue instead, and whoever finds no commit running leads the next
one: under the write lock it opens one transaction, runs every queued ``work(conn)`` in a SAVEPOINT of its own,
commits once, and only then hands each caller its own result or exception. So:

- a caller returns (and its sender is acknowledged) only after the commit that holds its rows;
- a unit that raises is rolled back to its savepoint alone; the others commit (an ``IntegrityError`` of a
  duplicate, an ``Hl7Error`` of a content error reach their caller only);
- if the commit fails, every caller of that batch gets the failure, and none of them is acknowledged;
- one caller alone (one connection) costs one transaction and one savepoint, as before plus the savepoint.

One caller with several units in order (the parts of one STOW-RS request) gives them together with
``GroupCommit.run_many(works)``: they are queued side by side, so they share a transaction (as many as
``max_batch`` allows) and their rows are inserted in the order given; each keeps its own savepoint and outcome.

Leadership passes on after each batch (the leader returns to its own sender at once), so no caller waits for more
than the batch it joined and the one running when it came.

A unit that also gives files their names (a C-STORE: the object renamed from its fsynced temp file) does it
through ``GroupCommit.batch.place`` (the folder store's ``commit_in``; S3 commits at once instead): the rename
happens in the unit, the folder's fsync once for the whole batch, before its commit (objects of one series share
one folder, so four associations sending one study pay one folder fsync per batch). ``batch.after_commit(fn)``
runs ``fn`` once the batch is committed, still under the write lock (a unit rolled back to its savepoint drops
what it registered).

With a write-ahead journal (``router.store.journal``, set as ``journal``), a unit whose files were written without
a flush places them with ``lazy=True`` and gives ``batch.journal(entry)`` what a replay needs to store it again.
Before the commit, the leader appends one record of all the batch's entries (one synchronous write); a batch whose
every unit is in it commits without flushing (SQLite ``synchronous=NORMAL`` for that commit only) and without the
lazy files' folder fsyncs: the journal's checkpoint flushes them later. A batch with any other unit (a large object,
an HL7 message) still fsyncs its other folders and commits with a flush. Without a journal, or when the record does
not fit it, the lazy files and their folders are fsynced as any others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from router.store import files
from router.store.journal import Journal, Ticket, TooLarge
from router.store.writelock import WriteLock, sqlite_file

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BATCH = 64  # units per transaction at most


@dataclass
class _Unit(Generic[T]):
    work: Callable[[Connection], T]
    done: bool = False
    value: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Done(Generic[T]):
    """One unit's outcome: its value, or the exception its caller gets (``get`` raises it)."""

    value: T | None
    error: BaseException | None = None

    def get(self) -> T:
        if self.error is not None:
            raise self.error
        return cast(T, self.value)


class _Failed(Exception):
    """A unit alone in its transaction raised ``error``: roll back, then hand the caller ``error`` itself."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Batch:
    """What the units of one transaction share: the folders to fsync before its commit, the calls after it."""

    known: set[Path]  # folders whose entries are durable (the group's, shared by its batches)
    folders: set[Path] = field(default_factory=set)
    after: list[Callable[[], None]] = field(default_factory=list)
    entries: list[Any] = field(default_factory=list)  # what the journal record holds (router.intake.journaled)
    lazy: list[Path] = field(default_factory=list)  # files placed unflushed: the journal has their bytes
    lazy_folders: set[Path] = field(default_factory=set)
    flushed: bool = False  # a unit outside the journal: the commit must flush

    def place(self, tmp: Path, final: Path, lazy: bool = False) -> None:
        """Give the temp file ``tmp`` its name ``final``: durable once the batch is committed (its folder, and any
        folder made for it, are fsynced before the commit; with ``lazy``, ``tmp`` was not flushed and the batch's
        journal record holds its bytes). The one function through which the ingest gives files their names."""
        created = files.rename_into(tmp, final, self.known)
        self.folders.update(folder.parent for folder in created)  # a new folder's name is flushed even when lazy:
        (self.lazy_folders if lazy else self.folders).add(final.parent)  # a later object outside it relies on it
        if lazy:
            self.lazy.append(final)

    def journal(self, entry: Any) -> None:
        """What a replay needs to store this unit's object again, for the batch's journal record."""
        self.entries.append(entry)

    def write_ahead(self, journal: Journal | None, encode: Callable[[list[Any]], list[bytes]]) -> Ticket | None:
        """The batch's journal record, appended (durable when this returns), or None: no entries, or no journal
        (then the lazy files and their folders are fsynced as any others)."""
        if not self.entries:
            return None
        if journal is not None:
            try:
                return journal.append(encode(self.entries))
            except TooLarge as exc:
                log.info("group commit without the journal: %s", exc)
        for path in self.lazy:
            files.fsync_path(path)
        self.folders |= self.lazy_folders
        self.flushed = True
        return None

    def after_commit(self, fn: Callable[[], None]) -> None:
        self.after.append(fn)

    def sync(self) -> None:
        """fsync the batch's folders (before the commit; an OSError fails the whole batch)."""
        for folder in sorted(self.folders, key=lambda p: len(p.parts), reverse=True):  # children first
            files.fsync_dir(folder)
        files.remember_durable(self.known, self.folders)


@dataclass
class GroupStats:
    """Counters (read them for tests and benches)."""

    commits: int = 0
    units: int = 0
    largest: int = 0


class GroupCommit:
    def __init__(self, engine: Engine, write_lock: WriteLock, max_batch: int = MAX_BATCH) -> None:
        self.engine, self.write_lock, self.max_batch = engine, write_lock, max_batch
        self.journal: Journal | None = None  # ``use_journal``
        self.encode: Callable[[list[Any]], list[bytes]] = lambda entries: []  # a batch's entries as record parts
        database = sqlite_file(engine.url.render_as_string(hide_password=False))
        # the SQLite database's log, fsynced after a commit that must flush while the connection runs NORMAL
        self.wal = database.with_name(database.name + "-wal") if database is not None else None
        self._conn: Connection | None = None  # kept between batches (``_connection``)
        self._normal = False
        self.stats = GroupStats()
        self._known: set[Path] = set()
        self._batch: Batch | None = None
        self._cond = threading.Condition()
        self._queue: list[_Unit[Any]] = []
        self._leading = False

    def run(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` inside a savepoint of a shared transaction; its value once that transaction is committed
        (its exception, after its savepoint was rolled back, or the commit's if the commit failed)."""
        return self.run_many([work])[0].get()

    def run_many(self, works: Sequence[Callable[[Connection], T]]) -> list[Done[T]]:
        """The ``works`` of one caller (a STOW request's parts) queued together, in this order: each in a savepoint
        of its own, as many to a transaction as ``max_batch`` allows (one commit and one fsync per folder for up
        to that many), their rows inserted in the order given. Returns once every one is committed or failed:
        each one's outcome, to ``get``."""
        units: list[_Unit[T]] = [_Unit(work) for work in works]
        with self._cond:
            self._queue.extend(units)
        while not all(unit.done for unit in units):
            with self._cond:
                while self._leading and not all(unit.done for unit in units):
                    self._cond.wait()
                if all(unit.done for unit in units):
                    break
                self._leading = True
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        return [Done(unit.value, unit.error) for unit in units]

    @property
    def batch(self) -> Batch:
        """The batch being committed (for a unit's ``work``, which runs while it is built)."""
        if self._batch is None:
            raise RuntimeError("GroupCommit.batch is only there for a unit's work")
        return self._batch

    def _commit(self, batch: list[_Unit[Any]]) -> None:
        """One transaction for ``batch``; never raises: each unit gets its value or an exception."""
        shared = self._batch = Batch(self._known)
        try:
            with self.write_lock:
                try:
                    self._transaction(batch, shared)
                finally:
                    self._batch = None
                self._committed(batch, shared)
        except _Failed as failed:  # a unit alone failed: its transaction is rolled back, the caller gets its error
            batch[0].error, batch[0].value = failed.error, None
        except BaseException as exc:  # nothing of the batch is committed: every caller gets the failure
            for unit in batch:
                unit.error, unit.value = exc, None
        finally:
            for unit in batch:
                unit.done = True

    def use_journal(self, journal: Journal | None, encode: Callable[[list[Any]], list[bytes]] | None = None) -> None:
        """Take the units' entries through ``journal`` (each batch's as one record of ``encode(entries)``); None:
        no journal any more."""
        self.journal = journal
        if encode is not None:
            self.encode = encode

    def _connection(self, normal: bool) -> Connection:
        """The group commit's own connection, kept between batches (checking one out of the pool and back costs
        more than a small object's rows); its ``synchronous`` NORMAL while a journal holds the batches."""
        if self._conn is None:
            self._conn, self._normal = self.engine.connect(), False
        if normal != self._normal:
            _synchronous(self._conn, "NORMAL" if normal else "FULL")
            self._normal = normal
        return self._conn

    def close(self) -> None:
        """Give the kept connection back (``synchronous`` FULL again); the next batch takes another."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._normal:
                _synchronous(conn, "FULL")
            conn.close()

    def _transaction(self, batch: list[_Unit[Any]], shared: Batch) -> None:
        ticket: Ticket | None = None
        sqlite = self.engine.dialect.name == "sqlite"
        normal = sqlite and self.journal is not None and self.wal is not None
        # SQLite: one connection kept (and synchronous set outside a transaction, where SQLite allows it); a server
        # database: one from the pool each time, checked (pool_pre_ping) after a restart of the server
        conn = self._connection(normal) if sqlite else self.engine.connect()
        try:
            with conn.begin():
                if sqlite:  # pysqlite: a SAVEPOINT first would begin (RELEASE end) it
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                if len(batch) == 1:  # alone: no savepoint (SQLAlchemy's costs ~0.1 ms); a failure ends it all
                    self._alone(conn, batch[0], shared)
                else:
                    for unit in batch:
                        self._one(conn, unit, shared)
                ticket = shared.write_ahead(self.journal, self.encode)
                shared.sync()
            if normal and (ticket is None or shared.flushed) and self.wal is not None:
                _flush_log(self.wal)  # a unit outside the journal: its rows flushed as FULL would
        except BaseException:
            if ticket is not None and self.journal is not None:
                self.journal.abort(ticket)
            self.close()  # a connection that failed is not kept
            raise
        finally:
            if not sqlite:
                conn.close()
        if ticket is not None and self.journal is not None:
            self.journal.finished(ticket)

    def _committed(self, batch: list[_Unit[Any]], shared: Batch) -> None:
        self.stats.commits += 1
        self.stats.units += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for fn in shared.after:
            try:
                fn()
            except Exception:  # committed all the same: the callers are answered
                log.exception("a call after a group commit failed")

    @staticmethod
    def _alone(conn: Connection, unit: _Unit[Any], shared: Batch) -> None:
        """The only unit of its transaction: its exception rolls the transaction back (the caller gets it)."""
        try:
            unit.value = unit.work(conn)
        except Exception as exc:
            unit.error = _Failed(exc)
            raise unit.error from exc
        shared.flushed |= not shared.entries

    @staticmethod
    def _one(conn: Connection, unit: _Unit[Any], shared: Batch) -> None:
        # The savepoint on the driver's connection: SQLAlchemy's begin_nested() and its commit cost 0.06 ms a unit
        # (a quarter of a group commit's time with four associations), the statements alone a few microseconds.
        _driver_sql(conn, "SAVEPOINT unit")
        registered, entries, lazy = len(shared.after), len(shared.entries), len(shared.lazy)
        try:
            unit.value = unit.work(conn)
        except Exception as exc:
            _driver_sql(conn, "ROLLBACK TO SAVEPOINT unit")
            _driver_sql(conn, "RELEASE SAVEPOINT unit")
            del shared.after[registered:], shared.entries[entries:], shared.lazy[lazy:]
            unit.error = exc
        else:
            _driver_sql(conn, "RELEASE SAVEPOINT unit")
            shared.flushed |= len(shared.entries) == entries  # a unit outside the journal


def _driver_sql(conn: Connection, sql: str) -> None:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _flush_log(wal: Path) -> None:
    try:
        files.fsync_path(wal)
    except FileNotFoundError:  # no log at this moment: everything is in the database file
        files.fsync_path(wal.with_name(wal.name.removesuffix("-wal")))


def _synchronous(conn: Connection, level: str) -> None:
    """Set SQLite's ``synchronous`` on the driver's connection (outside SQLAlchemy's transaction handling); a
    connection that cannot be set back to FULL is not reused."""
    try:
        conn.connection.dbapi_connection.execute(f"PRAGMA synchronous={level}")  # type: ignore[union-attr]
    except Exception:
        if level == "NORMAL":
            raise
        log.exception("cannot restore synchronous=FULL: dropping the connection")
        conn.invalidate()
