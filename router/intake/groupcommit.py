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

Leadership passes on after each batch (the leader returns to its own sender at once), so no caller waits for more
than the batch it joined and the one running when it came.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from router.store.writelock import WriteLock

T = TypeVar("T")
MAX_BATCH = 64  # units per transaction at most


@dataclass
class _Unit(Generic[T]):
    work: Callable[[Connection], T]
    done: bool = False
    value: Any = None
    error: BaseException | None = None


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
        self._cond = threading.Condition()
        self._queue: list[_Unit[Any]] = []
        self._leading = False

    def run(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` inside a savepoint of a shared transaction; its value once that transaction is committed
        (its exception, after its savepoint was rolled back, or the commit's if the commit failed)."""
        unit: _Unit[T] = _Unit(work)
        with self._cond:
            self._queue.append(unit)
        while not unit.done:
            with self._cond:
                while self._leading and not unit.done:
                    self._cond.wait()
                if unit.done:
                    break
                self._leading = True
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if unit.error is not None:
            raise unit.error
        return unit.value

    def _commit(self, batch: list[_Unit[Any]]) -> None:
        """One transaction for ``batch``; never raises: each unit gets its value or an exception."""
        try:
            with self.write_lock, self.engine.begin() as conn:
                if conn.dialect.name == "sqlite":  # pysqlite: a SAVEPOINT first would begin (and RELEASE end) it
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                for unit in batch:
                    self._one(conn, unit)
        except BaseException as exc:  # nothing of the batch is committed: every caller gets the failure
            for unit in batch:
                unit.error, unit.value = exc, None
        else:
            self.stats.commits += 1
            self.stats.units += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
        finally:
            for unit in batch:
                unit.done = True

    @staticmethod
    def _one(conn: Connection, unit: _Unit[Any]) -> None:
        savepoint = conn.begin_nested()
        try:
            unit.value = unit.work(conn)
        except Exception as exc:
            savepoint.rollback()
            unit.error = exc
        else:
            savepoint.commit()
