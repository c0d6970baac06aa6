"""MLLP (HL7 v2 Minimal Lower Layer Protocol): framing and a blocking client.

A frame is ``VT <message> FS CR`` (0x0B ... 0x1C 0x0D). The server side is ``router.listeners.mllp``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from types import TracebackType

VT, FS, CR = 0x0B, 0x1C, 0x0D
START, END = b"\x0b", b"\x1c\x0d"
READ_CHUNK = 65536


def frame(message: bytes) -> bytes:
    return START + message + END


class MllpError(Exception):
    """The MLLP exchange failed; the client closed its connection (the next send reconnects)."""


class MllpTimeout(MllpError, TimeoutError):
    """No complete reply within the timeout."""


class MllpConnectionClosed(MllpError, ConnectionError):
    """The peer closed the connection (or it could not be opened) before a complete reply arrived."""


class MllpClient:
    """Blocking MLLP client: ``send(message) -> reply`` (both unframed). Connects on first use and again after a
    failure or after the peer closed an idle connection; ``timeout`` bounds connecting and each reply."""

    def __init__(self, host: str, port: int, timeout: float = 30.0, *, max_reply_bytes: int = 16 * 1_048_576) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.max_reply_bytes = max_reply_bytes
        self._sock: socket.socket | None = None
        self._pending = bytearray()

    def connect(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError:
            raise MllpTimeout(f"connecting to {self.host}:{self.port} timed out after {self.timeout}s") from None
        except OSError as exc:
            raise MllpConnectionClosed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._pending.clear()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._pending.clear()

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _stale(self) -> bool:
        """True when the peer has closed the open connection (e.g. its idle timeout) since the last reply."""
        assert self._sock is not None
        self._sock.setblocking(False)
        try:
            return self._sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            self._sock.settimeout(self.timeout)

    def send(self, message: bytes) -> bytes:
        if self._sock is not None and not self._pending and self._stale():
            self.close()
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(frame(message))
            return self._read_reply(self._sock)
        except MllpError:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise MllpTimeout(f"no reply from {self.host}:{self.port} within {self.timeout}s") from None
        except OSError as exc:
            self.close()
            raise MllpConnectionClosed(f"connection to {self.host}:{self.port} failed: {exc}") from None

    def _read_reply(self, sock: socket.socket) -> bytes:
        deadline = time.monotonic() + self.timeout
        buf = self._pending
        while True:
            start = buf.find(START)
            if start > 0:
                del buf[:start]
                start = 0
            end = buf.find(END, 1) if start == 0 else -1
            if end > 0:
                reply = bytes(buf[1:end])
                del buf[: end + 2]
                return reply
            if start < 0:
                buf.clear()
            if len(buf) > self.max_reply_bytes:
                raise MllpError(f"reply from {self.host}:{self.port} exceeds {self.max_reply_bytes} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(READ_CHUNK)
            if not chunk:
                raise MllpConnectionClosed(f"{self.host}:{self.port} closed the connection before replying")
            buf += chunk
