"""Delivering spooled syslog messages to one audit record repository: TLS (RFC 5425) or UDP (RFC 5426).

``deliver(messages)`` returns once the repository took them all, or raises ``DeliveryError`` (the caller keeps
them and tries again later, from the first). "Took" means, over TLS, that the repository's TCP stack acknowledged
every byte: syslog over TLS has no acknowledgement of its own, so once ``sendall`` returned the connection's send
queue is watched until it is empty (``TIOCOUTQ``) while the connection stays up. A connection the repository
closed (it restarted) is noticed before a batch is written, never by losing the batch: a syslog receiver sends
nothing, so a connection that became readable is closed by the other side.

UDP has no acknowledgement at all: a datagram sent is taken (RFC 5426). A message longer than a datagram can
carry cannot be sent over UDP; it is logged and dropped for that repository only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import select
import socket
import ssl
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

from plugins.audit.settings import Repository
from plugins.audit.syslog import MAX_DATAGRAM, octet_counted

log = logging.getLogger("router.audit")

TCP_ESTABLISHED, TCP_CLOSE_WAIT = 1, 8  # linux/tcp_states.h
TIOCOUTQ = 0x5411  # linux: bytes in a TCP socket's send queue not yet acknowledged by the peer
ACK_POLL = 0.002  # s: between looks at the send queue
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"  # TLS 1.2 (RFC 9325 4.2); 1.3 has its own


class DeliveryError(Exception):
    """The repository cannot be reached, refused the connection, or did not take the messages in time."""


def tls_context(repo: Repository) -> ssl.SSLContext:
    """The client side of RFC 5425: TLS 1.2 or 1.3, the repository's certificate checked against ``ca`` and its
    name, the router's certificate shown when configured (mutual authentication, as IHE ATNA asks)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    ctx.load_verify_locations(cafile=str(repo.ca))
    if repo.cert is not None:
        ctx.load_cert_chain(str(repo.cert), str(repo.key) if repo.key else None)
    return ctx


class TlsDelivery:
    def __init__(self, repo: Repository, timeout: float) -> None:
        self.repo = repo
        self.timeout = timeout
        self.sock: ssl.SSLSocket | None = None
        self._ctx: ssl.SSLContext | None = None

    def _connect(self) -> ssl.SSLSocket:
        try:
            if self._ctx is None:
                self._ctx = tls_context(self.repo)
            raw = socket.create_connection((self.repo.host, self.repo.port), timeout=self.timeout)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"cannot connect: {exc}") from exc
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return self._ctx.wrap_socket(raw, server_hostname=self.repo.server_name or self.repo.host)
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise DeliveryError(f"TLS handshake failed: {exc}") from exc

    def _closed_by_peer(self, sock: ssl.SSLSocket) -> bool:
        """Whether the repository closed the connection. What it may send otherwise is TLS housekeeping (TLS 1.3
        session tickets), which reading consumes without application data."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable and not sock.pending():
            return False
        sock.setblocking(False)
        try:
            sock.recv(4096)  # b"": closed; data: a syslog receiver sends none, so something is wrong
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(self.timeout)
        return True

    def deliver(self, messages: Sequence[bytes]) -> None:
        if self.sock is not None and self._closed_by_peer(self.sock):
            log.info("audit repository %s closed the connection: connecting again", self.repo.where)
            self.close()
        if self.sock is None:
            self.sock = self._connect()
        try:
            self.sock.sendall(b"".join(octet_counted(m) for m in messages))
            self._wait_taken(self.sock)
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise DeliveryError(f"sending failed: {exc}") from exc
        except DeliveryError:
            self.close()
            raise

    def _wait_taken(self, sock: ssl.SSLSocket) -> None:
        """Return when the peer acknowledged every byte written; raise when the connection failed first."""
        if not sys.platform.startswith("linux"):
            return  # no portable way to look: sendall returning is all that is known
        deadline = time.monotonic() + self.timeout
        while True:
            unacked = struct.unpack("i", fcntl.ioctl(sock.fileno(), TIOCOUTQ, b"\0\0\0\0"))[0]
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            if error or state not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):
                raise DeliveryError(f"the connection failed before the repository took the messages (error {error})")
            if unacked == 0:
                return
            if time.monotonic() > deadline:
                raise DeliveryError(f"the repository did not take {unacked} byte(s) within {self.timeout:g} s")
            time.sleep(ACK_POLL)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


class UdpDelivery:
    def __init__(self, repo: Repository, timeout: float) -> None:
        self.repo = repo
        self.sock: socket.socket | None = None
        self.target: Any = None

    def deliver(self, messages: Sequence[bytes]) -> None:
        try:
            if self.sock is None or self.target is None:
                family, _, _, _, address = socket.getaddrinfo(self.repo.host, self.repo.port, type=socket.SOCK_DGRAM)[0]
                self.sock, self.target = socket.socket(family, socket.SOCK_DGRAM), address
            for message in messages:
                if len(message) > MAX_DATAGRAM:
                    log.error("audit message of %d bytes is too long for a datagram: not sent to %s",
                              len(message), self.repo.where)  # fmt: skip
                    continue
                self.sock.sendto(message, self.target)
        except OSError as exc:
            self.close()
            raise DeliveryError(f"sending failed: {exc}") from exc

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


Delivery = TlsDelivery | UdpDelivery


def delivery_for(repo: Repository, timeout: float) -> Delivery:
    return TlsDelivery(repo, timeout) if repo.transport == "tls" else UdpDelivery(repo, timeout)
