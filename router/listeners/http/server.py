"""Running the HTTP application under uvicorn in a thread of the router process."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn
from starlette.types import ASGIApp

from router.config import HttpListener

log = logging.getLogger(__name__)


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
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()

        def run() -> None:
            assert self._server is not None
            asyncio.run(self._serve(sock, started))

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
