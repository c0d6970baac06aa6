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
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from router.store import files
from router.store.writelock import WriteLock

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BATCH = 64  # units per transaction at most
_KNOWN_MAX = 100_000  # folders remembered as durable, at most


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

    def place(self, tmp: Path, final: Path) -> None:
        """Give the fsynced temp file ``tmp`` its name ``final``: durable once the batch is committed (its folder,
        and any folder made for it, are fsynced before the commit). The one function through which the ingest
        gives files their names."""
        created: list[Path] = []
        parent = final.parent
        while parent not in self.known and not parent.exists():
            created.append(parent)
            parent = parent.parent
        if created:
            files.make_dirs(final.parent)
        self.folders.update(folder.parent for folder in created)
        self.folders.add(final.parent)
        try:
            os.replace(tmp, final)
        except FileNotFoundError:
            if final.parent not in self.known or not tmp.exists():
                raise
            self.known.clear()  # the folder went away behind our back: forget what we knew and start again
            self.place(tmp, final)

    def after_commit(self, fn: Callable[[], None]) -> None:
        self.after.append(fn)

    def sync(self) -> None:
        """fsync the batch's folders (before the commit; an OSError fails the whole batch)."""
        for folder in sorted(self.folders, key=lambda p: len(p.parts), reverse=True):  # children first
            files.fsync_dir(folder)
        if len(self.known) > _KNOWN_MAX:
            self.known.clear()
        self.known.update(self.folders)


@dataclass
class GroupStats:
    """Counters (read them for tests and benches)."""

    commits: int = 0
    units: int = 0
    largest: int = 0


class GroupCommit:
    def __init__(self, engine: Engine, write_lock: WriteLock, max_batch: int = MAX_BATCH) -> None:
        self.engine, self.write_lock, self.max_batch = engine, write_lock, max_batch
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
                    with self.engine.begin() as conn:
                        if conn.dialect.name == "sqlite":  # pysqlite: a SAVEPOINT first would begin (RELEASE end) it
                            conn.exec_driver_sql("BEGIN IMMEDIATE")
                        if len(batch) == 1:  # alone: no savepoint (SQLAlchemy's costs ~0.1 ms); a failure ends it all
                            self._alone(conn, batch[0])
                        else:
                            for unit in batch:
                                self._one(conn, unit, shared)
                        shared.sync()
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
    def _alone(conn: Connection, unit: _Unit[Any]) -> None:
        """The only unit of its transaction: its exception rolls the transaction back (the caller gets it)."""
        try:
            unit.value = unit.work(conn)
        except Exception as exc:
            unit.error = _Failed(exc)
            raise unit.error from exc

    @staticmethod
    def _one(conn: Connection, unit: _Unit[Any], shared: Batch) -> None:
        savepoint = conn.begin_nested()
        registered = len(shared.after)
        try:
            unit.value = unit.work(conn)
        except Exception as exc:
            savepoint.rollback()
            del shared.after[registered:]
            unit.error = exc
        else:
            savepoint.commit()
