"""The body of a WADO-RS retrieve (``multipart/related; type="application/dicom"``), produced a batch at a time.

Each call of ``next_batch`` (made in a worker thread) returns up to ``BATCH`` bytes of the body as one chunk: many
small instances share one thread hop and one socket write; a large instance sent as stored is read from its file a
piece at a time, so it is never held whole in memory. An instance in another transfer syntax than stored is read
whole and converted (the converter needs all of it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from router.listeners.http.store_lookup import StoredRef

BATCH = 1024 * 1024  # bytes of body per call (and per socket write)


class RetrieveBody:
    def __init__(
        self,
        refs: list[StoredRef],
        open_object: Callable[[StoredRef], IO[bytes]],
        convert: Callable[[bytes, StoredRef], tuple[bytes, str]],
        wanted: str,
        boundary: str,
    ) -> None:
        """``open_object``: a stored object's file; ``convert``: (bytes, ref) -> (bytes in ``wanted``, their
        transfer syntax), used only when ``wanted`` is neither ``*`` nor the stored syntax."""
        self.refs = refs
        self.open_object = open_object
        self.convert = convert
        self.wanted = wanted
        self.boundary = boundary
        self.sent = 0  # instances whose part was produced whole
        self._next = 0  # index of the next instance to start
        self._file: IO[bytes] | None = None  # the instance being streamed as stored
        self._ended = False

    def _head(self, syntax: str) -> bytes:
        return f"--{self.boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}\r\n\r\n".encode(
            "latin-1"
        )

    def length(self, sizes: list[int]) -> int:
        """The body's length when every instance goes as stored, its file ``sizes[i]`` bytes long."""
        parts = sum(len(self._head(ref.transfer_syntax)) + size + 2 for ref, size in zip(self.refs, sizes, strict=True))
        return parts + len(f"--{self.boundary}--\r\n")

    @property
    def finished(self) -> bool:
        """The whole body has been produced."""
        return self._ended

    def next_batch(self) -> bytes:
        """The next piece of the body; b"" once it has all been produced."""
        out: list[bytes] = []
        size = 0
        while size < BATCH:
            if self._file is not None:
                data = self._file.read(BATCH - size)
                if data:
                    out.append(data)
                    size += len(data)
                    continue
                self._finish_file()
                out.append(b"\r\n")
                continue
            if self._next == len(self.refs):
                if not self._ended:
                    out.append(f"--{self.boundary}--\r\n".encode("latin-1"))
                    self._ended = True
                break
            size += self._start(self.refs[self._next], out)
            self._next += 1
        return b"".join(out)

    def _start(self, ref: StoredRef, out: list[bytes]) -> int:
        """Begin the part of ``ref``: its file is streamed from the next read on, or (converted) added whole."""
        if self.wanted in ("*", ref.transfer_syntax):
            self._file = self.open_object(ref)
            out.append(self._head(ref.transfer_syntax))
            return len(out[-1])
        with self.open_object(ref) as f:
            data, syntax = self.convert(f.read(), ref)
        out += [self._head(syntax), data, b"\r\n"]
        self.sent += 1
        return len(data)

    def _finish_file(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        self.sent += 1

    def close(self) -> None:
        """Close the file being streamed (the client went away, or the body is done)."""
        if self._file is not None:
            self._file.close()
            self._file = None
