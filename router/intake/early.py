"""Early writes: the bytes of an object as received, in a temp file before the object has been checked.

A large C-STORE object is written by the calling thread while a worker checks it (``router.intake.dicom``); a STOW-RS
part over 4 MiB and a C-STORE data set past 4 MiB arrive already in a flushed temp file (``router.listeners.http.
received``, ``router._pynetdicom.spool``) that the intake takes as it is. Either way the file is renamed into the
store if the object is stored as received, and removed otherwise.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from router.store import files


def _remove_written(done: Future[Path]) -> None:
    if not done.cancelled() and done.exception() is None:
        files.remove_quietly(done.result())


def in_file(raw: bytes) -> Path | None:
    """The flushed temp file ``raw`` is already in (a large STOW-RS part, a spooled C-STORE data set), if it is."""
    path = getattr(raw, "path", None)
    return path if isinstance(path, Path) else None


def written_as(raw: bytes) -> Future[Path] | None:
    """``in_file(raw)`` as an early write done."""
    path = in_file(raw)
    if path is None:
        return None
    done: Future[Path] = Future()
    done.set_result(path)
    return done


class EarlyWrite:
    """The temp file of the bytes as received, being written by the calling thread; removed unless taken."""

    def __init__(self, pending: Future[Path] | None) -> None:
        self.pending = pending

    def take(self) -> Path | None:
        """The fsynced temp file (waits for it; raises its OSError), or None without an early write."""
        pending, self.pending = self.pending, None
        return pending.result() if pending is not None else None

    def discard(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.add_done_callback(_remove_written)
