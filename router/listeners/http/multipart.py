"""multipart/related (RFC 2387) for DICOMweb: reading a request body part by part, writing responses.

A request body is spooled to a temporary file as it arrives (bounded by ``http.max_upload_bytes``) and parts
are then read one at a time through a memory map: the body is never held whole in memory, only the part being
stored.
"""

from __future__ import annotations

import mmap
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO

SPOOL_IN_MEMORY = 1024 * 1024


class MultipartError(ValueError):
    """The body is not the multipart/related it claims to be (400)."""


class TooLarge(Exception):
    """The body is larger than allowed (413)."""


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


async def spool(chunks: AsyncIterator[bytes], limit: int) -> IO[bytes]:
    """Copy a request body into a temporary file (memory first, disk once large)."""
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (closed by caller)
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            out.close()
            raise TooLarge(f"the request body is larger than {limit} bytes")
        out.write(chunk)
    out.seek(0)
    return out


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return media_type_params(self.headers.get("content-type", ""))[0]


def _view(body: IO[bytes]) -> bytes | mmap.mmap:
    """The body's bytes: mapped from its file when it has one (not read into memory), else read."""
    try:
        if getattr(body, "_rolled", True) is False:
            raise OSError("still in memory")
        fileno = body.fileno()
    except (OSError, ValueError):
        body.seek(0)
        return body.read()
    body.seek(0, 2)
    if body.tell() == 0:
        return b""
    return mmap.mmap(fileno, 0, access=mmap.ACCESS_READ)


def parts(body: IO[bytes], boundary: str) -> Iterator[Part]:
    """The parts of a multipart body, one at a time. Raises MultipartError for a malformed body."""
    if not boundary or len(boundary) > 70:
        raise MultipartError("the Content-Type has no usable boundary parameter")
    data = _view(body)
    delimiter = b"--" + boundary.encode("latin-1")
    start = data.find(delimiter)
    if start < 0:
        raise MultipartError("the body holds no part delimited by the boundary")
    pos = start + len(delimiter)
    while True:
        if data[pos : pos + 2] == b"--":
            return  # close delimiter
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            raise MultipartError("a part delimiter is not followed by a line break")
        head_end = data.find(b"\r\n\r\n", line_end)
        if head_end < 0:
            raise MultipartError("a part has no end of headers")
        headers = {}
        for line in bytes(data[line_end + 2 : head_end]).decode("latin-1").split("\r\n"):
            if line:
                key, sep, value = line.partition(":")
                if not sep:
                    raise MultipartError(f"malformed part header {line[:60]!r}")
                headers[key.strip().lower()] = value.strip()
        body_start = head_end + 4
        next_delim = data.find(b"\r\n" + delimiter, body_start)
        if next_delim < 0:
            raise MultipartError("the last part is not closed by the boundary")
        yield Part(headers, bytes(data[body_start:next_delim]))
        pos = next_delim + 2 + len(delimiter)


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
