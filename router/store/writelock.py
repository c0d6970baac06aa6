"""The lock a writer to the router's SQLite database holds around its transaction.

SQLite takes one writer at a time. A writer that meets another's lock sleeps in SQLite's busy handler (1 ms, then
longer), which cost forwarded CT slices about 2 ms each; writers that queue on a lock of their own are woken the
moment it is free. Within one process that is a ``threading.Lock``. The forward workers run in a process of their
own (``router.forward.process``), so for a database file the lock is also an ``flock`` on a file beside it, which
the kernel hands to the next process as soon as it is released. PostgreSQL needs no lock at all (``Unlocked``).

The lock also carries a *generation* of the index's patient, study and series rows: whoever deletes such rows bumps
it before releasing the lock (``bump``), and the ingest's cache of their ids (``router.store.index.IdCache``) is
dropped when it sees a new one. For a database file it is 8 bytes in the lock file, read on every acquisition, so
a deletion in the forward process (``delete_after_commit``) reaches the serving process's cache: SQLite gives the
id of a deleted last row to the next insert, and a cached id would then name another series.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class WriteLock:
    """A ``threading.Lock`` that, given a path, also holds an exclusive ``flock`` on that file."""

    def __init__(self, path: Path | None = None) -> None:
        self._threads = threading.Lock()
        self._fd: int | None = None
        self.generation = 0  # as of the last acquisition (or bump) by this holder
        if path is not None:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self) -> None:
        self._threads.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                self.generation = int.from_bytes(os.pread(self._fd, 8, 0), "little")
            except BaseException:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._threads.release()
                raise

    @property
    def shared(self) -> bool:
        """Whether other processes' writers hold this lock too (a database file)."""
        return self._fd is not None

    def bump(self) -> None:
        """Patient, study or series rows were deleted: a new generation (call while holding the lock)."""
        self.generation += 1
        if self._fd is not None:
            os.pwrite(self._fd, self.generation.to_bytes(8, "little"), 0)

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def __enter__(self) -> WriteLock:
        self.acquire()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.release()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for PostgreSQL or an in-memory database."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[1] if "///" in url else ""
    path = path.split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def shared_between_processes(url: str) -> bool:
    """Whether another process can open the database at ``url``: anything but an in-memory SQLite database."""
    return sqlite_file(url) is not None or not url.startswith("sqlite")


class Unlocked(WriteLock):
    """The write lock of a PostgreSQL database: it locks nothing. PostgreSQL's row locks already keep concurrent
    writers apart, and the nodes of a cluster, which share no lock, write side by side anyway: serialising one
    node's writers made four parallel associations into one node receive 40 objects/s where two nodes took 67/s
    (docs/cluster.md). Deletions still ``bump`` the generation that the ingest's id cache reads."""

    def acquire(self) -> None:
        return None

    def release(self) -> None:
        return None


def write_lock_for(url: str) -> WriteLock:
    """The write lock for the database at ``url``: shared with other processes for an SQLite file; none for
    PostgreSQL (``Unlocked``)."""
    db = sqlite_file(url)
    if db is None and not url.startswith("sqlite"):
        return Unlocked()
    return WriteLock(db.with_name(db.name + "-writer.lock") if db is not None else None)
