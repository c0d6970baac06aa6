"""Running the HTTP application under uvicorn in a thread of the router process.

uvicorn's h11 protocol has no timeout while it waits for a request: its keep-alive timer starts only after a
response and stops at the first byte of the next request. A client that connects and sends nothing, or drips its
request headers a byte at a time (slowloris), or stops half-way through a body, holds a connection (and a file
descriptor) for ever. ``guarded_protocol`` adds the two timers it lacks: the request headers must be complete
``header_timeout`` seconds after the connection opened or the previous response ended (else ``408`` and the
connection is closed), and a request body may pause at most ``body_timeout`` seconds (not counted while uvicorn
itself stopped reading because the application is behind).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
from typing import Any

import h11
import uvicorn
import uvloop
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from router.config import HttpListener

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request headers and a bound on pauses in a request body."""

    header_timeout = 30.0
    body_timeout = 60.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._router_timer: asyncio.TimerHandle | None = None
        self._arm(self.header_timeout, self._headers_late)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.body_timeout, self._body_stalled)
        elif state is not h11.IDLE:  # the request is in (DONE), or the connection ends: nothing to wait for
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.header_timeout, self._headers_late)  # the next request's (after uvicorn's keep-alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._router_timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        timer = getattr(self, "_router_timer", None)
        if timer is not None:
            timer.cancel()
            self._router_timer = None

    def _peer(self) -> str:
        return "{}:{}".format(*self.client) if self.client else "?"

    def _headers_late(self) -> None:
        self._router_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.our_state is h11.IDLE:  # nothing of a response sent: a 408 says why before we close
            self.transport.write(REQUEST_TIMEOUT)
        log.warning("HTTP connection from %s: no whole request within %ss: closed", self._peer(), self.header_timeout)
        self.transport.close()

    def _body_stalled(self) -> None:
        self._router_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        if self.flow.read_paused:  # we stopped reading, not the client: wait again
            self._arm(self.body_timeout, self._body_stalled)
            return
        log.warning("HTTP connection from %s: request body paused for %ss: closed", self._peer(), self.body_timeout)
        self.transport.close()


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with these timeouts."""
    return type(
        "RouterH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )


class WebServer:
    def __init__(self, settings: HttpListener, app: ASGIApp) -> None:
        self.settings = settings
        self.app = app
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind (port 0 = any free port), serve in a thread; returns the bound port."""
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for such a socket; without
        # it a response written as headers + body waits ~40 ms for the client's delayed ACK
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((s.host, s.port))
        sock.listen(128)
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            ssl_certfile=str(s.tls.cert) if s.tls else None,
            ssl_keyfile=str(s.tls.key) if s.tls else None,
            timeout_graceful_shutdown=5,
            # an idle kept-alive connection is ended by the header timer (a 408 says why): uvicorn's own 5 s close
            # without a word raced clients reusing the connection (a POST sent into it met a reset)
            timeout_keep_alive=math.ceil(s.header_timeout) + 1,
            http=guarded_protocol(s.header_timeout, s.body_timeout),
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()

        def run() -> None:
            assert self._server is not None
            # uvloop: a request that hands work to a thread and back (most DICOMweb requests) takes ~40% less time
            # than on asyncio's own loop (bench/README.md, issue 21 figures)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._serve(sock, started))

        self._thread = threading.Thread(target=run, name="http-server", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the HTTP server did not start")
        log.info("DICOMweb on %s://%s:%d/dicomweb", "https" if s.tls else "http", s.host, port)
        return port

    async def _serve(self, sock: socket.socket, started: threading.Event) -> None:
        assert self._server is not None
        task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not task.done():
            await asyncio.sleep(0.01)
        started.set()
        await task

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = None
        self._thread = None
