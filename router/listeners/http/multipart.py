"""multipart/related (RFC 2387) for DICOMweb: receiving a request body within its size limit, reading its parts
(``router.listeners.http.multipart_stream``), writing responses."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import IO

from router.listeners.http.multipart_stream import MultipartError, Part, PartParser, media_type_params

__all__ = ["MultipartError", "Part", "TooLarge", "batches", "build", "media_type_params", "parts", "spool"]

SPOOL_IN_MEMORY = 1024 * 1024
READ_SIZE = 1024 * 1024  # the body is read and parsed in pieces of about this size


class TooLarge(Exception):
    """The body is larger than allowed (413)."""


async def batches(chunks: AsyncIterator[bytes], limit: int, size: int = READ_SIZE) -> AsyncIterator[bytes]:
    """A request body in pieces of at least ``size`` bytes (the last may be shorter): the small chunks a server
    hands over are joined, so each piece costs one hand-over to a worker thread. Raises TooLarge as soon as the
    body passes ``limit`` bytes."""
    pending: list[bytes] = []
    pending_size = total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"the request body is larger than {limit} bytes")
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= size:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending_size:
        yield b"".join(pending)


async def spool(chunks: AsyncIterator[bytes], limit: int) -> IO[bytes]:
    """Copy a request body into a temporary file (memory first, disk once large)."""
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (closed by caller)
    try:
        async for piece in batches(chunks, limit, size=1):
            out.write(piece)
    except TooLarge:
        out.close()
        raise
    out.seek(0)
    return out


def parts(body: IO[bytes], boundary: str) -> Iterator[Part]:
    """The parts of a whole multipart body in a file, one at a time, each in memory. Raises MultipartError for a
    malformed body."""
    parser = PartParser(boundary)
    body.seek(0)
    while chunk := body.read(READ_SIZE):
        yield from parser.feed(chunk)
    parser.close()


def build(parts_: list[tuple[str, bytes]], boundary: str) -> bytes:
    """A multipart/related body from (content type, bytes) pairs."""
    out = bytearray()
    for content_type, payload in parts_:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1")
        out += payload
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode("latin-1")
    return bytes(out)


def public_base(scope_server: tuple[str, int | None] | None, host_header: str, scheme: str) -> str:
    """The URL prefix of this service as the client reached it (for RetrieveURL and BulkDataURI)."""
    host = host_header.strip()
    if not host and scope_server is not None:
        host = scope_server[0]
    if ":" not in host.rsplit("]", 1)[-1] and scope_server is not None and scope_server[1]:
        default = 443 if scheme == "https" else 80
        if scope_server[1] != default:
            host = f"{host}:{scope_server[1]}"
    return f"{scheme}://{host}/dicomweb"
