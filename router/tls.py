"""TLS for DICOM (IHE ATNA secure node, BCP 195 / RFC 9325): the one place that builds the router's SSL contexts.

- ``server_context``: the TLS listener's (``dicom.tls``); with ``ca`` a client must show a certificate chaining to
  it (mutual TLS). ``accept`` does the server side of the handshake within a deadline (the listener calls it on
  the connection's own thread: ``router._pynetdicom.handshake``).
- ``ClientContexts``: one client context per DICOM peer with ``tls``, for every association the router opens to it
  (``router.scu.association.open_association``). The peer's certificate must chain to its ``ca`` and, unless
  ``check_hostname: false``, name its host; with ``subject`` it must have exactly that subject. A failed handshake
  is logged, handed to ``on_failed`` (the router announces it: ``router_tls_failed``) and remembered for the
  thread that tried (``failure_on``), so that the association's error can say why.

Both sides speak TLS 1.2 and 1.3 only; for TLS 1.2 only the ECDHE suites with AES-GCM (RFC 9325 section 4.2; every
TLS 1.3 suite is an AEAD one), without compression or renegotiation.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from router.config.peers import SUBJECT_NAMES, Subject, subject_text

if TYPE_CHECKING:
    from router.config import DicomPeer, DicomTls, PeerTls, RouterConfig

log = logging.getLogger(__name__)

TLS12_CIPHERS = "ECDHE+AESGCM"  # ECDHE-{ECDSA,RSA}-AES{128,256}-GCM-SHA{256,384}
FailureHandler = Callable[[str, int, str], None]  # (address, port, reason)
_failures: weakref.WeakKeyDictionary[threading.Thread, str] = weakref.WeakKeyDictionary()
_failures_lock = threading.Lock()
_T = TypeVar("_T")


class SubjectMismatch(ssl.SSLCertVerificationError):
    """The peer's certificate chains, but its subject is not the pinned one."""


def _context(protocol: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.sslsocket_class = TlsSocket
    return ctx


def server_context(tls: DicomTls) -> ssl.SSLContext:
    """The TLS listener's context: its certificate and key; with ``ca``, client certificates required."""
    ctx = _context(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.cert, tls.key)
    if tls.ca is not None:
        ctx.load_verify_locations(cafile=tls.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.num_tickets = 0  # no session resumption: nothing for a client to read after the handshake
    return ctx


def client_context(peer: DicomPeer, on_failed: FailureHandler | None = None) -> ssl.SSLContext:
    """A context for associations to ``peer`` (which has ``tls``)."""
    tls = peer.tls
    assert tls is not None
    ctx = _context(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED
    ctx.check_hostname = tls.check_hostname
    ctx.load_verify_locations(cafile=tls.ca)
    if tls.cert is not None:
        ctx.load_cert_chain(tls.cert, tls.key)
    ctx.sslsocket_class = type(
        "PeerSocket",
        (PeerSocket,),
        {
            "router_peer": (peer.host, peer.port),
            "router_pinned": tls.pinned,
            "router_on_failed": () if on_failed is None else (on_failed,),
        },
    )
    return ctx


class ClientContexts:
    """The client contexts of one requesting AE, built once per peer (thread-safe)."""

    def __init__(self, on_failed: FailureHandler | None = None) -> None:
        self.on_failed = on_failed
        self._lock = threading.Lock()
        self._contexts: dict[tuple[str, int, PeerTls], ssl.SSLContext] = {}

    def get(self, peer: DicomPeer) -> ssl.SSLContext:
        assert peer.tls is not None
        key = (peer.host, peer.port, peer.tls)
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is None:
                ctx = self._contexts[key] = client_context(peer, self.on_failed)
            return ctx


def certificate_subject(conn: ssl.SSLSocket) -> Subject:
    """The subject of the other side's certificate as (short name, value) pairs, sorted; () without one."""
    cert = conn.getpeercert() or {}
    rdns: Any = cert.get("subject", ())
    return tuple(sorted((SUBJECT_NAMES.get(str(name), str(name)), str(value)) for rdn in rdns for name, value in rdn))


class TlsSocket(ssl.SSLSocket):
    """The router's TLS sockets (both sides): ``application_data_ready`` tells whether a read would return
    application data now, reading (without blocking) whatever TLS records are there. A TLS 1.3 server sends session
    tickets after the handshake, which make the socket readable without any data for DICOM in it: a blocking read
    would then wait for the peer's next PDU (``router._pynetdicom.handshake`` has the DUL ask this instead). What
    such a read returned is kept for the next ``recv``/``recv_into``."""

    _router_kept = b""  # application data read ahead by application_data_ready
    _router_error: OSError | None = None  # what that read raised, for the next read to raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        kept = self._take(buflen)
        if kept is not None:
            return kept
        return self._read(lambda: super(TlsSocket, self).recv(buflen, flags))

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        kept = self._take(nbytes or len(buffer))
        if kept is not None:
            buffer[: len(kept)] = kept
            return len(kept)
        return self._read(lambda: super(TlsSocket, self).recv_into(buffer, nbytes, flags))

    def buffered(self) -> bool:
        """Whether the next read is answered from what ``application_data_ready`` read."""
        return bool(self._router_kept) or self._router_error is not None

    def application_data_ready(self) -> bool:
        """Whether a read would return application data, the end of the connection or an error without waiting."""
        if self.buffered() or self.pending():
            return True
        timeout = self.gettimeout()
        self.settimeout(0.0)
        try:
            got = self._read(lambda: super(TlsSocket, self).recv(65536))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # only TLS records of its own (session tickets), or part of a record
        except OSError as exc:
            self._router_error = exc
            return True
        finally:
            self.settimeout(timeout)
        self._router_kept += got  # b"": the end of the connection, which the next read finds again
        return True

    def _take(self, size: int) -> bytes | None:
        if self._router_error is not None:
            exc, self._router_error = self._router_error, None
            raise exc
        if not self._router_kept:
            return None
        kept, self._router_kept = self._router_kept[:size], self._router_kept[size:]
        return kept

    def _read(self, read: Callable[[], _T]) -> _T:
        return read()


class PeerSocket(TlsSocket):
    """The client socket of an association to one peer (``client_context`` makes a subclass per peer): the pinned
    subject checked, a failed handshake recorded and announced. With TLS 1.3 a server that refuses the client's
    certificate says so after the client's handshake has completed: the alert arrives with the first read, which
    therefore counts as part of the handshake here; so does a reset of the connection at that read (the peer's close
    can reset it before the alert is read: "the connection was closed during the TLS handshake")."""

    router_peer: ClassVar[tuple[str, int]] = ("", 0)
    router_pinned: ClassVar[Subject | None] = None
    router_on_failed: ClassVar[tuple[FailureHandler, ...]] = ()  # a tuple: a function here would be a method
    _router_first_read = False

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
            pinned = self.router_pinned
            if pinned is not None and certificate_subject(self) != pinned:
                shown = subject_text(certificate_subject(self)) or "(none)"
                raise SubjectMismatch(f"certificate subject {shown} is not the pinned {subject_text(pinned)}")
        except OSError as exc:
            self._failed(describe(exc))
            raise
        with _failures_lock:
            _failures.pop(threading.current_thread(), None)
        self._router_first_read = True

    def _read(self, read: Callable[[], _T]) -> _T:
        if not self._router_first_read:
            return read()
        try:
            got = read()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except (ssl.SSLError, ConnectionError) as exc:  # an alert, or a reset that came before it
            self._router_first_read = False
            self._failed(describe(exc))
            raise
        self._router_first_read = False
        return got

    def _failed(self, reason: str) -> None:
        host, port = self.router_peer
        with _failures_lock:
            _failures[threading.current_thread()] = reason
        log.warning("TLS handshake with %s:%d failed: %s", host, port, reason)
        for handler in self.router_on_failed:
            try:
                handler(host, port, reason)
            except Exception:  # the announcement must not hide the failure
                log.exception("announcing the failed TLS handshake with %s:%d failed", host, port)


def failure_on(thread: threading.Thread) -> str | None:
    """Why the last TLS handshake tried on ``thread`` (an association's connecting thread) failed, if it did."""
    with _failures_lock:
        return _failures.get(thread)


def describe(exc: BaseException) -> str:
    """A failed handshake in words, for logs, hooks and error messages."""
    if isinstance(exc, SubjectMismatch):
        return str(exc.args[0])
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ConnectionError):
        return "the connection was closed during the TLS handshake"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        reason = str(exc.reason).lower().replace("_", " ")
        if exc.reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNEXPECTED_RECORD", "RECORD_LAYER_FAILURE"):
            reason += " (not TLS: a plain connection?)"
        return reason
    if isinstance(exc, TimeoutError):
        return str(exc) if exc.args else "timed out"
    return str(exc) or type(exc).__name__


def accept(sock: socket.socket, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    """The server side of the handshake on an accepted connection, all of it within ``timeout`` seconds (a client
    sending a byte now and then cannot stretch it); the connection is closed when it fails."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        conn = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except BaseException:
        sock.close()
        raise
    try:
        conn.setblocking(False)
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn.do_handshake()
                break
            except ssl.SSLWantReadError:
                wait: tuple[list[ssl.SSLSocket], list[ssl.SSLSocket]] = ([conn], [])
            except ssl.SSLWantWriteError:
                wait = ([], [conn])
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no TLS handshake within {timeout:g} s")
            select.select(*wait, [], left)
        conn.setblocking(True)
        return conn
    except BaseException:
        conn.close()
        raise


# -- configuration checks ------------------------------------------------------------------------------------------
def _missing(key: str, path: Path | None) -> list[str]:
    if path is not None and not path.is_file():
        return [f"{key}: {path}: no such file"]
    return []


def _loads(key: str, build: Callable[[], object]) -> list[str]:
    try:
        build()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        text = describe(exc) if isinstance(exc, ssl.SSLError) else str(exc)
        return [f"{key}: cannot be used: {text}"]
    return []


def problems(config: RouterConfig) -> list[str]:
    """What keeps the configured TLS files from being used, each naming its key; empty when they load."""
    found: list[str] = []
    tls = config.dicom.tls
    if tls is not None:
        missing = [*_missing("dicom.tls.cert", tls.cert), *_missing("dicom.tls.key", tls.key)]
        missing += _missing("dicom.tls.ca", tls.ca)
        found += missing or _loads("dicom.tls (cert, key, ca)", lambda: server_context(tls))
    from router.config import DicomPeer

    for name, peer in config.peers.items():
        if not isinstance(peer, DicomPeer) or peer.tls is None:
            continue
        key = f"peers.{name}.tls"
        t = peer.tls
        missing = [*_missing(f"{key}.ca", t.ca), *_missing(f"{key}.cert", t.cert), *_missing(f"{key}.key", t.key)]
        found += missing or _loads(f"{key} (ca, cert, key)", lambda p=peer: client_context(p))  # type: ignore[misc]
    return found
