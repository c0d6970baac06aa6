"""The write-ahead journal: one synchronous write per acknowledged group of small objects, instead of three.

Without it, every stored object pays three flushes before its acknowledgement: its temp file's ``O_DSYNC`` write,
the folder fsync after its rename, the database commit (issue 21: 60 % of a small object's time on one
association). With it, a group commit of small objects (``router.intake.groupcommit``) first appends one record
holding every object's bytes (and what is needed to store it again) to this preallocated file with one
``O_DSYNC`` write, then writes the files and commits the rows as before but without their own flushes. So:

- a crash of the process (SIGKILL) keeps the page cache: every acknowledged object has its file and its rows, as
  before, when the process is gone;
- a power cut may lose the un-flushed files and rows of the last second; the journal has their bytes, and
  ``router.intake.replay`` stores them again before any listener opens.

A **checkpoint** (a background thread, every ``interval`` seconds while records come, and at once when the journal
is half full) makes the files and rows of every finished record durable with one ``syncfs(2)`` per file system
(``router.store.files.syncfs``: the object files, their folders and the database's log), then moves the durable
start of the journal (its header) past them: those records are never needed again and their space is reused.

Layout: a 4 KiB header (start position and the sequence number expected there), then a ring of ``capacity``
bytes, zero-filled when the file is made (a synchronous write into blocks already written costs one device write,
no allocation). Records are 4 KiB-aligned: a 32-byte record header (magic, flags, sequence number, payload length,
CRC-32 of the payload, CRC-32 of the header), the payload, zero padding. A record never wraps: one that does not fit
before the end of the ring starts at its beginning. Positions are logical (they only grow; the ring position is
the logical one modulo ``capacity``), so a reader starting at the header's position follows sequence numbers and
stops at the first record that is torn, stale (an older lap's, a lower sequence number) or absent.

One process at a time appends (an exclusive ``flock``: a second process that opens it gets ``JournalBusy``), and
one thread at a time (the group commit's leader, under the write lock); the checkpoint thread only writes the header.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from router.store import files

log = logging.getLogger(__name__)

HEADER_SIZE = 4096
ALIGN = 4096
DEFAULT_CAPACITY = 32 * 1024 * 1024
_HEADER = struct.Struct("<4sIQQQ")  # magic, version, capacity, start (logical), sequence number expected there
_RECORD = struct.Struct("<4sIQQII")  # magic, flags, sequence number, payload length, payload CRC, header CRC
_HEADER_MAGIC, _RECORD_MAGIC, _VERSION = b"RJH1", b"RJR1", 1
ABORTED = 1  # a record's flag: its payload is the 8-byte sequence number of a record whose commit failed
_IOV_MAX = 1000


class JournalBusy(OSError):
    """Another process holds the journal (a second ``router serve`` on the same ``data_dir``)."""


class CannotMake(OSError):
    """The journal file could not be made (no room for it): a router runs without one."""


class TooLarge(ValueError):
    """A record larger than the journal's ring can hold."""


@dataclass(frozen=True)
class Ticket:
    """An appended record: its sequence number and the logical position after it."""

    seq: int
    end: int


@dataclass(frozen=True)
class Record:
    seq: int
    flags: int
    payload: bytes


def _padded(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


class Journal:
    def __init__(self, path: Path, sync_paths: Sequence[Path], capacity: int = DEFAULT_CAPACITY) -> None:
        """Open (or make) the journal at ``path``; ``sync_paths`` name the file systems a checkpoint flushes (the
        data folder's, the database's)."""
        self.path, self.capacity = path, capacity
        self.sync_paths = list(sync_paths)
        self.checkpoints = 0  # checkpoints that moved the start
        self.checkpoint_failures = 0
        self.failure: OSError | None = None  # the last checkpoint's error; None once one succeeds again
        self._lock = threading.Lock()  # the positions below
        self._checkpointing = threading.Lock()  # one checkpoint at a time (the thread's, or an append's)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = self._open()
        try:
            self._start, self._start_seq = self._read_header()
            self._head, self._next_seq = self._start, self._start_seq
            self._pending = list(self._scan())  # records after the durable start: to replay before any append
            self._finished, self._finished_seq = self._head, self._next_seq - 1
        except BaseException:
            os.close(self._fd)
            raise

    # -- opening --------------------------------------------------------------------------------------------
    def _open(self) -> int:
        made = not self.path.exists()
        if made:
            self._make()
        fd = os.open(self.path, os.O_RDWR | getattr(os, "O_DSYNC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalBusy(f"{self.path} is in use by another process") from None
        if os.fstat(fd).st_size != HEADER_SIZE + self.capacity:
            size = os.fstat(fd).st_size
            os.close(fd)
            raise OSError(f"{self.path}: {size} bytes, expected {HEADER_SIZE + self.capacity}")
        return fd

    def _make(self) -> None:
        """A zero-filled file with an empty header, made under a temp name and renamed (never half made)."""
        files.make_dirs(self.path.parent)
        tmp = self.path.with_suffix(".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, files.FILE_MODE)
        try:
            os.write(fd, self._header_bytes(0, 1))
            zeros = bytes(1024 * 1024)
            left = self.capacity
            while left:
                left -= os.write(fd, zeros[: min(left, len(zeros))])
            os.fsync(fd)
        except OSError as exc:  # no room for it (ENOSPC): nothing half made is left
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise CannotMake(f"cannot make {self.path}: {exc}") from exc
        os.close(fd)
        os.replace(tmp, self.path)
        files.fsync_dir(self.path.parent)

    def _header_bytes(self, start: int, seq: int) -> bytes:
        body = _HEADER.pack(_HEADER_MAGIC, _VERSION, self.capacity, start, seq)
        return (body + struct.pack("<I", zlib.crc32(body))).ljust(HEADER_SIZE, b"\0")

    def _read_header(self) -> tuple[int, int]:
        raw = os.pread(self._fd, _HEADER.size + 4, 0)
        body, (crc,) = raw[: _HEADER.size], struct.unpack("<I", raw[_HEADER.size :])
        magic, version, capacity, start, seq = _HEADER.unpack(body)
        if magic != _HEADER_MAGIC or zlib.crc32(body) != crc or version != _VERSION or capacity != self.capacity:
            raise OSError(f"{self.path}: not a journal of this router, or its header is damaged "
                          "(move it aside to start without replaying it)")  # fmt: skip
        return start, seq

    def _at(self, logical: int) -> int:
        return HEADER_SIZE + logical % self.capacity

    def _record_at(self, logical: int, seq: int) -> Record | None:
        raw = os.pread(self._fd, _RECORD.size, self._at(logical))
        if len(raw) < _RECORD.size:
            return None
        magic, flags, found, length, crc, hcrc = _RECORD.unpack(raw)
        if magic != _RECORD_MAGIC or zlib.crc32(raw[:-4]) != hcrc or found != seq:
            return None
        if logical % self.capacity + _padded(_RECORD.size + length) > self.capacity:
            return None
        payload = os.pread(self._fd, length, self._at(logical) + _RECORD.size)
        if len(payload) != length or zlib.crc32(payload) != crc:
            return None  # torn: the write was cut short
        return Record(seq, flags, payload)

    def _scan(self) -> Iterator[Record]:
        """The records from the durable start on, in order; moves the head past them."""
        while self._head - self._start < self.capacity:
            record = self._record_at(self._head, self._next_seq)
            at = self._head
            if record is None and self._head % self.capacity:
                at = self._head + self.capacity - self._head % self.capacity  # it may have started the next lap
                record = self._record_at(at, self._next_seq)
            if record is None:
                return
            self._head = at + _padded(_RECORD.size + len(record.payload))
            self._next_seq += 1
            yield record

    # -- what a restart finds -------------------------------------------------------------------------------
    def pending(self) -> list[Record]:
        """The records found after the durable start when the journal was opened (a power cut's or a crash's):
        replay them, then ``checkpoint``."""
        return list(self._pending)

    # -- appending (one thread at a time) -------------------------------------------------------------------
    def append(self, parts: Sequence[bytes | memoryview], flags: int = 0) -> Ticket:
        """Write one record of ``parts`` (joined), synchronously: durable when this returns. Checkpoints first
        when the ring has no room (every record appended before has finished: one appender)."""
        length = sum(len(p) for p in parts)
        size = _padded(_RECORD.size + length)
        if size > self.capacity:
            raise TooLarge(f"a record of {length} bytes does not fit a journal of {self.capacity}")
        at = self._place(size)
        if at + size - self._start > self.capacity:
            self.checkpoint()
            with self._lock:
                if self._start == self._head:  # empty: start the next record at the beginning of the ring
                    self._head = self._start = self._head + (-self._head) % self.capacity
            at = self._place(size)
            if at + size - self._start > self.capacity:  # records not finished yet take the room
                raise TooLarge(f"no room for a record of {length} bytes before the journal's start")
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        head = _RECORD.pack(_RECORD_MAGIC, flags, self._next_seq, length, crc, 0)[:-4]
        buffers: list[bytes | memoryview] = [head + struct.pack("<I", zlib.crc32(head))]
        buffers += parts if len(parts) < _IOV_MAX else [b"".join(parts)]
        buffers.append(bytes(size - _RECORD.size - length))
        written = os.pwritev(self._fd, buffers, self._at(at))
        if written != size:
            raise OSError(f"{self.path}: short write ({written} of {size} bytes)")
        with self._lock:
            ticket = Ticket(self._next_seq, at + size)
            self._head, self._next_seq = at + size, self._next_seq + 1
            used = self._head - self._start
        if used > self.capacity // 2:
            self._wake.set()
        return ticket

    def _place(self, size: int) -> int:
        head = self._head
        if head % self.capacity + size > self.capacity:
            head += self.capacity - head % self.capacity
        return head

    def abort(self, ticket: Ticket) -> None:
        """The commit of ``ticket``'s record failed: a record saying so, so a replay does not store it (best
        effort: if this write fails too, a replay may store objects whose senders were refused; none is lost)."""
        self.finished(ticket)  # a checkpoint covering it now is as good: nothing of it is replayed then
        try:
            self.finished(self.append([struct.pack("<Q", ticket.seq)], flags=ABORTED))
        except (OSError, TooLarge) as exc:
            log.error("journal: cannot record that record %d was not committed: %s", ticket.seq, exc)

    def finished(self, ticket: Ticket) -> None:
        """``ticket``'s files and rows are written (or its batch failed): a checkpoint may now cover it."""
        with self._lock:
            if ticket.seq > self._finished_seq:
                self._finished, self._finished_seq = ticket.end, ticket.seq

    # -- checkpoints ----------------------------------------------------------------------------------------
    def checkpoint(self) -> bool:
        """Flush what the finished records wrote (one ``syncfs`` per file system), then move the durable start
        past them. False when there was nothing to do. OSError when a flush fails (the start stays)."""
        with self._checkpointing:
            with self._lock:
                end, seq = self._finished, self._finished_seq
            if seq < self._start_seq:
                return False
            try:
                for path in self.sync_paths:
                    files.syncfs(path)
                os.pwrite(self._fd, self._header_bytes(end, seq + 1), 0)
            except OSError as exc:  # /readyz says so until one succeeds (router.listeners.http.health)
                self.checkpoint_failures += 1
                self.failure = exc
                raise
            self.failure = None
            with self._lock:
                self._start, self._start_seq = end, seq + 1
            self._pending = []
            self.checkpoints += 1
            return True

    def start(self, interval: float = 1.0) -> None:
        """Checkpoint every ``interval`` seconds while records come (at once when the ring is half full); a failed
        one is logged and kept in ``failure`` until one succeeds."""

        def run() -> None:
            while not self._stop.is_set():
                self._wake.wait(interval)
                self._wake.clear()
                try:
                    self.checkpoint()
                except OSError as exc:  # the next one tries again; appends checkpoint themselves when full
                    log.error("journal checkpoint failed: %s", exc)

        self._thread = threading.Thread(target=run, name="journal-checkpoint", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the checkpoints, make everything durable (a last checkpoint) and close the file."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.checkpoint()
        finally:
            os.close(self._fd)

    @property
    def used(self) -> int:
        """Bytes between the durable start and the head (records a power cut would replay)."""
        with self._lock:
            return self._head - self._start
