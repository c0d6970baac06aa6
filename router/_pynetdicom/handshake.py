"""The TLS listener: each connection's handshake on that connection's own thread, bounded in time, failures told.

pynetdicom's ``AssociationServer`` (3.0) wraps an accepted socket with its ``ssl_context`` in ``get_request``, on the
one thread that accepts every connection, and the handshake runs there with no timeout: one client that opens a
TCP connection to the TLS port and sends nothing stalls every TLS association after it (a second ``storescu +tls``
waited more than 24 s), and a failed handshake raises an exception the server swallows, with no event.

``start_server`` makes the listener the supported way instead: ``AE.make_server`` with a request handler of our
own (``request_handler``, documented) and no ``ssl_context``. pynetdicom's ``ThreadingMixIn`` gives each connection
a thread before the handler runs; ``TlsRequestHandler`` does the handshake there (``router.tls.accept``: all of it
within ``timeout``, the ACSE timeout) and only then lets pynetdicom make the association from the TLS socket. A
failed handshake closes the connection and is handed to ``on_failed`` (address, port, reason).

The listener uses only public pynetdicom names, so it serves on any pynetdicom version (``install()`` does not gate it).
Upstream would need: the handshake moved from ``get_request`` into the connection's thread, with a timeout, and an
event for a failed one (EVT_CONN_OPEN is only triggered for a connection that got through).

``install()`` (with the other patches, pynetdicom 3.0 only) also makes ``AssociationSocket.ready`` mean
"application data to read" for the router's TLS sockets (``router.tls.TlsSocket``, the class of the sockets of
its contexts). A TLS 1.3 server sends session tickets once the handshake is done: the socket turns readable with
nothing for DICOM in it. pynetdicom's own DUL loop sends the A-ASSOCIATE-RQ before it looks at the socket, but the
event-driven loop (``reactor.py``) takes turns reading and sending, and when it looked first it blocked in the
read, waiting for an A-ASSOCIATE-AC to a request still in its queue, until the peer's ARTIM timer aborted the
connection (about one association in seven to a TLS 1.3 peer on loopback). Upstream would need the same test in
``AssociationSocket.ready`` (a non-blocking read, not ``select()``), which matters to any loop that reads before
it sends.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from router.config.peers import subject_text
from router.tls import FailureHandler, TlsSocket, accept, certificate_subject, describe

log = logging.getLogger(__name__)


class TlsAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, doing no handshake itself; its connection threads do not hold up ``shutdown``
    (a handshake still under way ends within its own timeout)."""

    daemon_threads = True
    block_on_close = False
    router_context: ssl.SSLContext
    router_timeout: float
    router_on_failed: FailureHandler

    def shutdown(self) -> None:
        """Stop serving and close the socket (pynetdicom's would also take the server off its AE's list of
        servers, which ``start_server`` never put it on)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class TlsRequestHandler(RequestHandler):
    """The handshake first, on this connection's thread; then pynetdicom's association, from the TLS socket."""

    server: TlsAssociationServer

    def handle(self) -> None:
        host, port = str(self.client_address[0]), int(self.client_address[1])
        raw = self.request
        assert isinstance(raw, socket.socket)
        try:
            conn = accept(raw, self.server.router_context, self.server.router_timeout)
        except OSError as exc:
            self.server.router_on_failed(host, port, describe(exc))
            return
        subject = subject_text(certificate_subject(conn)) or "no client certificate"
        cipher = conn.cipher()
        log.info("TLS connection from %s:%d (%s, %s; %s)", host, port, conn.version(), cipher and cipher[0], subject)
        self.request = conn
        super().handle()


def start_server(
    ae: AE,
    address: tuple[str, int],
    context: ssl.SSLContext,
    timeout: float,
    on_failed: FailureHandler,
    evt_handlers: list[Any],
) -> ThreadedAssociationServer:
    """Serve ``ae``'s associations over TLS on ``address`` (non-blocking); stop it with ``shutdown()``."""
    server = ae.make_server(
        address,
        evt_handlers=evt_handlers,
        server_class=TlsAssociationServer,
        request_handler=TlsRequestHandler,
    )
    assert isinstance(server, TlsAssociationServer)
    server.router_context = context
    server.router_timeout = timeout
    server.router_on_failed = on_failed
    serve: Callable[[], None] = server.serve_forever
    threading.Thread(target=serve, name=f"TlsAcceptor@{server.server_address[1]}", daemon=True).start()
    return server


# -- readiness of a TLS client socket (installed with the other patches) ------------------------------------------
_socket_ready = AssociationSocket.ready
_installed = False


def _ready(self: AssociationSocket) -> bool:
    """``AssociationSocket.ready``, true for a router's TLS socket only when application data (or the end) is there."""
    sock = self.socket
    if isinstance(sock, TlsSocket) and self._is_connected:
        return sock.buffered() or (bool(_socket_ready.fget(self)) and sock.application_data_ready())  # type: ignore[attr-defined]
    return bool(_socket_ready.fget(self))  # type: ignore[attr-defined]


def install() -> None:
    """Make ``AssociationSocket.ready`` wait for application data on TLS client sockets (idempotent). Called by
    ``router._pynetdicom.install()`` after its version check, with ``reactor.install()``."""
    global _installed
    if not _installed:
        AssociationSocket.ready = property(_ready)  # type: ignore[method-assign,assignment]
        _installed = True
