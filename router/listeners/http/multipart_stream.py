"""Reading a multipart/related body (RFC 2046 5.1, RFC 2387) as it arrives, one piece at a time.

``PartParser.feed`` takes the body in pieces of any size and returns the parts completed so far; ``close`` says
the body ended (and raises ``MultipartError`` when it ended inside a part). The parser holds at most one piece plus
a delimiter's length of the body: a part's bytes go to its ``PartSink`` as they are found. A sink keeps a small
part in memory and moves a part that grows past ``file_from`` bytes to a temporary file, hashing it on the way
(``router.listeners.http.received``): a large object is never held whole in memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MAX_HEADER_AREA = 64 * 1024  # a delimiter line and a part's headers together; longer is refused


class MultipartError(ValueError):
    """The body is not the multipart/related it claims to be (400)."""


def media_type_params(header: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` -> ("multipart/related", {...})."""
    parts = [p.strip() for p in re.split(r';(?=(?:[^"]*"[^"]*")*[^"]*$)', header) if p.strip()]
    if not parts:
        return "", {}
    params = {}
    for p in parts[1:]:
        key, _, value = p.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return parts[0].lower(), params


class PartSink(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...

    def finish(self) -> bytes:
        """The part's bytes (or a mapped file that reads as bytes)."""
        ...

    def discard(self) -> None: ...


class MemorySink:
    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.buffer += data

    def finish(self) -> bytes:
        return bytes(self.buffer)

    def discard(self) -> None:
        self.buffer = bytearray()


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]
    body: bytes  # or a router.listeners.http.received.ReceivedFile (a mapped temp file): it reads as bytes

    @property
    def content_type(self) -> str:
        return media_type_params(self.headers.get("content-type", ""))[0]


def _headers(raw: bytes) -> dict[str, str]:
    headers = {}
    for line in raw.decode("latin-1").split("\r\n"):
        if line:
            key, sep, value = line.partition(":")
            if not sep:
                raise MultipartError(f"malformed part header {line[:60]!r}")
            headers[key.strip().lower()] = value.strip()
    return headers


class PartParser:
    """A push parser: the same reading as a whole-body parse (a preamble before the first delimiter, transport
    padding after each delimiter and an epilogue after the last are ignored), over a body given in pieces."""

    def __init__(self, boundary: str, new_sink: Callable[[], PartSink] = MemorySink) -> None:
        if not boundary or len(boundary) > 70:
            raise MultipartError("the Content-Type has no usable boundary parameter")
        self.delimiter = b"--" + boundary.encode("latin-1")
        self.next_delimiter = b"\r\n" + self.delimiter
        self.new_sink = new_sink
        self.state = "preamble"  # -> after-delimiter -> headers -> body -> after-delimiter ... -> done
        self.buf = bytearray()
        self.headers: dict[str, str] = {}
        self.sink: PartSink | None = None

    def feed(self, data: bytes) -> list[Part]:
        """The parts this piece completes (in order)."""
        self.buf += data
        done: list[Part] = []
        while self._step(done):
            pass
        return done

    def close(self) -> None:
        """The body ended: it must have ended with the close delimiter."""
        if self.state == "done":
            return
        self.discard()
        raise MultipartError(
            {
                "preamble": "the body holds no part delimited by the boundary",
                "after-delimiter": "a part delimiter is not followed by a line break",
                "headers": "a part has no end of headers",
                "body": "the last part is not closed by the boundary",
            }[self.state]
        )

    def discard(self) -> None:
        """Drop the part being read (its temporary file, if any)."""
        if self.sink is not None:
            self.sink.discard()
            self.sink = None

    def _step(self, done: list[Part]) -> bool:
        """One move of the state machine; False when it needs more of the body."""
        buf = self.buf
        if self.state == "preamble":
            at = buf.find(self.delimiter)
            if at < 0:
                del buf[: max(0, len(buf) - len(self.delimiter) + 1)]
                return False
            del buf[: at + len(self.delimiter)]
            self.state = "after-delimiter"
            return True
        if self.state == "after-delimiter":
            if buf[:2] == b"--":
                self.state = "done"
                buf.clear()
                return False
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                self._bounded()
                return False
            del buf[:line_end]  # the headers' search starts at this line break (it may end them at once)
            self.state = "headers"
            return True
        if self.state == "headers":
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                self._bounded()
                return False
            self.headers = _headers(bytes(buf[2:head_end]))
            del buf[: head_end + 4]
            self.sink = self.new_sink()
            self.state = "body"
            return True
        if self.state == "body":
            return self._body(done)
        buf.clear()  # the epilogue
        return False

    def _body(self, done: list[Part]) -> bool:
        assert self.sink is not None
        buf = self.buf
        at = buf.find(self.next_delimiter)
        if at < 0:
            keep = len(self.next_delimiter) - 1
            if len(buf) > keep:
                with memoryview(buf) as view:
                    self.sink.write(view[: len(buf) - keep])
                del buf[: len(buf) - keep]
            return False
        with memoryview(buf) as view:
            self.sink.write(view[:at])
        del buf[: at + len(self.next_delimiter)]
        sink, self.sink = self.sink, None
        done.append(Part(self.headers, sink.finish()))
        self.state = "after-delimiter"
        return True

    def _bounded(self) -> None:
        if len(self.buf) > MAX_HEADER_AREA:
            raise MultipartError(f"a part delimiter line and headers longer than {MAX_HEADER_AREA} bytes")
