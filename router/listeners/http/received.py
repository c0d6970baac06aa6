"""Where the parts of a STOW-RS request go while the request arrives: memory for a small part, a temporary file
for a large one.

A part starts in memory; once it passes ``file_from`` bytes it moves to a new ``*.part`` file in the router's
temp folder (the folder start-up empties), hashed (SHA-256) as it is written. When the part ends the file is
flushed to disk (``fdatasync``) and mapped: the ``ReceivedFile`` reads as bytes without being read into memory,
and carries its path and digest, so the intake takes the file as it is (a rename, no second write) and does not
hash it again. The request's parts share an in-memory budget (``Spill``): past it, smaller parts go to files too.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import time
from itertools import count
from pathlib import Path
from typing import cast

from router.store import files

PART_IN_MEMORY = 4 * 1024 * 1024  # a part larger than this goes to a file
REQUEST_IN_MEMORY = 32 * 1024 * 1024  # the parts of one request held in memory together, at most
_names = count()


class ReceivedFile(mmap.mmap):
    """A part received into a flushed temporary file, mapped read-only: ``path``, ``sha256`` (hex)."""

    path: Path
    sha256: str


class WrittenPart(bytes):
    """A part in memory that is also written, flushed, to a temp file: ``path``, ``sha256`` (hex)."""

    path: Path
    sha256: str


def _create(tmp_dir: Path, sync: bool = False) -> tuple[int, Path]:
    """A new private temp file for a part (the one place a STOW part is written to disk); opened for reading too,
    to be mapped when the part ends; ``sync``: each write returns once on disk (O_DSYNC)."""
    path = tmp_dir / f"{time.time_ns()}-{os.getpid()}-stow{next(_names)}.part"
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | (getattr(os, "O_DSYNC", 0) if sync else 0)
    try:
        return os.open(path, flags, files.FILE_MODE), path
    except FileNotFoundError:
        files.make_dirs(tmp_dir)
        return os.open(path, flags, files.FILE_MODE), path


class Spill:
    """The in-memory budget of one request's parts, and the temp files it made (``discard`` removes those the
    intake did not take)."""

    def __init__(self, tmp_dir: Path, part_in_memory: int = PART_IN_MEMORY, request: int = REQUEST_IN_MEMORY):
        self.tmp_dir = tmp_dir
        self.part_in_memory = part_in_memory
        self.left = request
        self.paths: list[Path] = []

    def sink(self) -> SpillingSink:
        return SpillingSink(self)

    def written(self, data: bytes) -> bytes:
        """``data`` written durably to a temp file of this request (called for several parts at once: their
        synchronous writes overlap, and the file system flushes them together). When it cannot be written (a full
        disk), ``data`` as it is: the intake tries again and answers the failure."""
        try:
            fd, path = _create(self.tmp_dir, sync=True)
        except OSError:
            return data
        self.paths.append(path)
        try:
            with memoryview(data) as view:
                while view:
                    view = view[os.write(fd, view) :]
            if not getattr(os, "O_DSYNC", 0):
                os.fsync(fd)
        except OSError:
            return data
        finally:
            os.close(fd)
        part = WrittenPart(data)
        part.path, part.sha256 = path, hashlib.sha256(data).hexdigest()
        return part

    def discard(self) -> None:
        for path in self.paths:
            files.remove_quietly(path)
        self.paths.clear()


class SpillingSink:
    def __init__(self, spill: Spill) -> None:
        self.spill = spill
        self.buffer = bytearray()
        self.fd: int | None = None
        self.path: Path | None = None
        self.hash = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        if self.fd is None:
            self.buffer += data
            if len(self.buffer) <= min(self.spill.part_in_memory, self.spill.left):
                return
            self.fd, self.path = _create(self.spill.tmp_dir)
            self.spill.paths.append(self.path)
            data, self.buffer = bytes(self.buffer), bytearray()
        self.hash.update(data)
        with memoryview(data) as view:
            while view:
                view = view[os.write(self.fd, view) :]

    def finish(self) -> bytes:
        if self.fd is None:
            self.spill.left -= len(self.buffer)
            return bytes(self.buffer)
        assert self.path is not None
        fd, self.fd = self.fd, None
        try:
            os.fdatasync(fd)
            mapped = ReceivedFile(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        mapped.path, mapped.sha256 = self.path, self.hash.hexdigest()
        return cast(bytes, mapped)  # it reads as bytes (slices, buffer protocol, len) without being read whole

    def discard(self) -> None:
        self.buffer = bytearray()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
