"""The storage interface: where objects (and the other files jobs name by a relative path) are kept.

Temporary files are always local and per node (``router.storage.tmp_dir``): an object is written there durably
first, then ``commit`` gives it its name in the store. ``commit`` returns only once the store has confirmed the
write (a folder: rename and folder fsync; S3: the server's 200): an acknowledgement follows it, never precedes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol


class StorageUnavailable(OSError):
    """The store did not answer or refused (an S3 server down, a timeout, a 5xx): nothing was written or read.

    An ``OSError``, so that a receiver answers it as it answers a full disk (out of resources), and not a
    ``FileNotFoundError``, so that a forward job retries instead of failing for a missing file."""


class Placer(Protocol):
    """What a group commit offers a store (``router.intake.groupcommit.Batch``): a local rename whose folder is
    fsynced once for the whole batch, before its commit."""

    def place(self, tmp: Path, final: Path, lazy: bool = False) -> None: ...


class Storage(Protocol):
    kind: str  # "folder" or "s3", for logs and /readyz

    def commit(self, tmp: Path, relpath: str) -> None:
        """Move the fsynced local temp file ``tmp`` into the store at ``relpath``; returns once it is durable."""

    def commit_in(self, batch: Placer, tmp: Path, relpath: str, lazy: bool = False) -> None:
        """``commit``, inside a unit of a group commit: durable once ``batch`` is committed, at the latest. A folder
        renames through ``batch.place`` (one folder fsync for the batch; ``lazy``: ``tmp`` was not flushed, the
        batch's journal record holds its bytes); a store that cannot defer its durability (S3) commits at once, as
        ``commit`` does."""

    def local_path(self, relpath: str) -> Path:
        """A local file with the bytes at ``relpath`` (a folder: the file itself; S3: a copy in the read cache).
        FileNotFoundError when there is no such object."""

    def open(self, relpath: str) -> BinaryIO:
        """The bytes at ``relpath`` as a binary file, read as they are needed."""

    def read_bytes(self, relpath: str) -> bytes: ...

    def exists(self, relpath: str) -> bool: ...

    def size(self, relpath: str) -> int: ...

    def delete(self, relpath: str) -> None:
        """Remove ``relpath``; nothing happens when it is already gone; store errors are logged, not raised."""

    def check(self) -> None:
        """Raise ``StorageUnavailable`` when the store cannot be used (for ``/readyz``)."""
