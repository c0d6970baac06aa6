"""A large C-STORE data set received into a file as it arrives, never whole in memory.

pynetdicom (3.0) gathers a received data set in a ``BytesIO`` (``DIMSEMessage.decode_msg``) and the listener then
builds the Part 10 object from it (``listeners.dimse.p10``): a 200 MB object raised the router's peak resident
memory by about twice its size. pynetdicom's own ``STORE_RECV_CHUNKED_DATASET`` writes every data set, small ones
too, to a ``NamedTemporaryFile`` in the system's temp folder (another file system than the store's, so no rename),
a buffered ``write`` and ``flush`` per fragment, neither hashed nor flushed to disk: the intake would write and hash
it again. It stays off.

``spool_large(ae, tmp_dir, head)`` makes the C-STORE requests an acceptor AE receives start in memory as before (the
fast path of small objects is untouched) and, once a data set passes ``SPOOL_FROM`` bytes, move it to a new
``*.part`` file in ``tmp_dir`` (the node's temp folder, on the store's file system): ``head(sop_class, instance,
transfer_syntax)`` first (preamble and file meta, the bytes ``p10`` writes: from the request's command set and the
context's transfer syntax), then the fragments received so far, then each one as it comes, gathered into writes of
``WRITE_BYTES`` and hashed (SHA-256) on the way. With the last fragment the file is flushed (``fdatasync``) and
mapped read-only: ``spooled(request)`` is then a ``SpooledObject`` that reads as bytes (the intake scans its first
bytes; pages are read only where touched) and carries its ``path`` and ``sha256``, so the intake renames it into the
store as its early write and does not hash it again. A file that cannot be written (disk full) is removed and the
request carries the ``OSError`` instead. A message that never completes (the association aborted, the connection
lost) has its file closed and removed when the DUL thread that was writing it ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import time
import weakref
from collections.abc import Callable
from io import BytesIO
from itertools import count
from pathlib import Path
from typing import Any

from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dul import DULServiceProvider

SPOOL_FROM = 4 * 1024 * 1024  # a data set larger than this goes to a file
WRITE_BYTES = 1 << 20  # fragments gathered into one write
FILE_MODE = 0o640
_AE_ATTR = "_router_spool"  # on an AE: (tmp_dir, head, spool_from)
_RECEIVED = "_router_spooled"  # on a message, then its primitive: the SpooledObject or the OSError
_IN_MEMORY = "_router_in_memory"  # on a message that stays in memory (no spool, or no head for its UIDs)
_names = count()
_decode_msg = DIMSEMessage.decode_msg
_to_primitive = DIMSEMessage.message_to_primitive
_dul_run = DULServiceProvider.run_reactor

Head = Callable[[str, str, str], bytes]


class SpooledObject(mmap.mmap):
    """A received Part 10 object in a flushed temp file, mapped read-only: ``path``, ``sha256`` (hex)."""

    path: Path
    sha256: str


def _abandon(fd: int, path: Path) -> None:
    """A file whose message never completed: closed and removed."""
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        path.unlink()


def write_all(fd: int, data: bytearray) -> None:
    with memoryview(data) as view:
        while view:
            view = view[os.write(fd, view) :]


class _Sink:
    """Stands in for the message's ``BytesIO`` data set: pynetdicom only calls ``write`` on it while receiving."""

    def __init__(self, tmp_dir: Path, head: bytes | memoryview) -> None:
        self.path = tmp_dir / f"{time.time_ns()}-{os.getpid()}-cstore{next(_names)}.part"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            self.fd = os.open(self.path, flags, FILE_MODE)
        except FileNotFoundError:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, flags, FILE_MODE)
        self._abandon = weakref.finalize(self, _abandon, self.fd, self.path)
        self.hash = hashlib.sha256()
        self.pending = bytearray()
        self.failed: OSError | None = None
        self.write(head)

    def write(self, data: bytes | memoryview) -> int:
        if self.failed is None:
            self.pending += data
            if len(self.pending) >= WRITE_BYTES:
                self._flush()
        return len(data)

    def _flush(self) -> None:
        pending, self.pending = self.pending, bytearray()
        self.hash.update(pending)
        try:
            write_all(self.fd, pending)
        except OSError as exc:  # a full disk: the request is answered with it
            self.failed = exc
            self._abandon()

    def abandon(self) -> None:
        """The message will not complete: its file closed and removed (on the DUL thread, the one writer)."""
        self.failed = OSError("the association ended before the data set did")
        self._abandon()

    def finish(self) -> SpooledObject | OSError:
        self._flush()
        if self.failed is not None:
            return self.failed
        try:
            os.fdatasync(self.fd)
            mapped = SpooledObject(self.fd, 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            self._abandon()
            return exc
        self._abandon.detach()
        os.close(self.fd)
        mapped.path, mapped.sha256 = self.path, self.hash.hexdigest()
        return mapped


def _spill(msg: DIMSEMessage, data: BytesIO, assoc: Any) -> None:
    """Move the data set gathered so far to a file, when the AE spools and the message is a C-STORE request."""
    spool = getattr(getattr(assoc, "ae", None), _AE_ATTR, None)
    if spool is None or not isinstance(msg, C_STORE_RQ):
        msg.__dict__[_IN_MEMORY] = True
        return
    tmp_dir, head, spool_from = spool
    if data.tell() <= spool_from:
        return
    msg.__dict__[_IN_MEMORY] = True  # decided once per message, whatever follows
    try:
        cs = msg.command_set
        syntax = assoc._accepted_cx[msg.context_id].transfer_syntax[0]
        start = head(str(cs.AffectedSOPClassUID), str(cs.AffectedSOPInstanceUID), str(syntax))
    except Exception:  # UIDs p10 cannot write itself (not ASCII): pynetdicom builds the object from memory
        return
    try:
        sink = _Sink(tmp_dir, start)
    except OSError:  # no file: memory as before, and the intake answers a full disk when it writes
        return
    with data.getbuffer() as received:
        sink.write(received)
    msg.data_set = sink  # type: ignore[assignment]


def _patched_decode_msg(self: DIMSEMessage, primitive: Any, assoc: Any = None) -> bool:
    """pynetdicom's ``decode_msg``; a C-STORE data set past ``SPOOL_FROM`` continues in a file."""
    done = _decode_msg(self, primitive, assoc)
    data = self.data_set
    if type(data) is BytesIO and data.tell() and not self.__dict__.get(_IN_MEMORY):
        _spill(self, data, assoc)
        data = self.data_set
    if done and isinstance(data, _Sink):
        self.__dict__[_RECEIVED] = data.finish()
        self.data_set = BytesIO()
    return done


def _patched_to_primitive(self: DIMSEMessage) -> Any:
    primitive = _to_primitive(self)
    received = self.__dict__.get(_RECEIVED)
    if received is not None:
        primitive.__dict__[_RECEIVED] = received
    return primitive


def _patched_dul_run(self: DULServiceProvider) -> None:
    """The DUL thread's loop; when it ends, a data set still arriving into a file is abandoned."""
    try:
        _dul_run(self)
    finally:
        message = getattr(getattr(self.assoc, "dimse", None), "message", None)
        sink = getattr(message, "data_set", None)
        if isinstance(sink, _Sink):
            sink.abandon()


def spool_large(ae: Any, tmp_dir: Path, head: Head, spool_from: int = SPOOL_FROM) -> None:
    """Receive the C-STORE data sets of ``ae``'s associations past ``spool_from`` bytes into files in ``tmp_dir``."""
    setattr(ae, _AE_ATTR, (tmp_dir, head, spool_from))


def spooled(request: Any) -> SpooledObject | OSError | None:
    """The object a C-STORE request was received into (or why it could not be written); None: it is in memory."""
    found = request.__dict__.get(_RECEIVED)
    return found if isinstance(found, SpooledObject | OSError) else None


def install() -> None:
    """After ``reactor.install()``: wraps the ``message_to_primitive`` (``command.py``) and DUL loop it sets."""
    global _to_primitive, _dul_run
    if DIMSEMessage.decode_msg is _patched_decode_msg:
        return
    _to_primitive = DIMSEMessage.message_to_primitive
    _dul_run = DULServiceProvider.run_reactor
    DULServiceProvider.run_reactor = _patched_dul_run  # type: ignore[method-assign]
    DIMSEMessage.decode_msg = _patched_decode_msg  # type: ignore[method-assign]
    DIMSEMessage.message_to_primitive = _patched_to_primitive  # type: ignore[method-assign]
