"""``/healthz`` and ``/readyz`` for a load balancer or an orchestrator, without authentication (they reveal nothing).

- ``/healthz`` (liveness): the process serves HTTP. 200 ``{"status": "ok"}``.
- ``/readyz`` (readiness): 200 when the database answers (the schema's revision is read: a node whose database was
  upgraded underneath it by a newer router is not ready) and the storage works: this node's ``tmp`` folder takes a
  file (one is written and removed: every received object is written there first) and the configured store
  answers (an S3 bucket: a HEAD of the bucket, docs/storage.md), and, when the router keeps a write-ahead journal,
  its last checkpoint did not fail (a flush of the data folder's file system that returns an error means what was
  acknowledged since may not be on the disk); else 503 with the check that failed. Each check is bounded by
  ``CHECK_TIMEOUT``: a database or a storage that hangs is a failure, not a hang.

An ASGI middleware in front of authentication (``router.listeners.http.app`` puts it first), so that no credentials
are asked for these two paths whatever ``http.auth`` says. The answers name a check and a reason in a few words
(the error's class), never an address, a path or a value; a change of readiness is logged with the error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from router import storage
from router.config import RouterConfig
from router.storage import Storage
from router.store import files
from router.store.journal import Journal
from router.store.schema import HEAD, VERSION_TABLE

log = logging.getLogger(__name__)

LIVE, READY = "/healthz", "/readyz"
CHECK_TIMEOUT = 5.0  # s, per check
NO_STORE = {"Cache-Control": "no-store"}


class NotReady(Exception):
    """A check failed; the message is what the answer says (a few words, nothing from the data)."""


def check_database(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            revisions = list(conn.execute(select(VERSION_TABLE.c.version_num)).scalars())
    except Exception as exc:
        raise NotReady(f"no answer ({type(exc).__name__})") from exc
    if revisions != [HEAD]:
        raise NotReady(f"schema revision {'+'.join(revisions) or 'none'}, this node needs {HEAD}")


def check_storage(tmp: Path, store: Storage) -> None:
    """This node's temp folder takes a file (every object is written there first), and the store answers."""
    probe = tmp / f".readyz-{os.getpid()}-{time.monotonic_ns()}"
    try:
        files.make_dirs(tmp)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"ready")
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise NotReady(f"data_dir not writable ({type(exc).__name__})") from exc
    try:
        store.check()
    except OSError as exc:
        raise NotReady(f"{store.kind} store not answering ({type(exc).__name__})") from exc


def check_journal(journal: Journal) -> None:
    """The write-ahead journal's last checkpoint did not fail."""
    failure = journal.failure
    if failure is not None:
        raise NotReady(f"checkpoint failing ({type(failure).__name__})") from failure


class Health:
    """Answers ``/healthz`` and ``/readyz``; every other request goes on to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        engine: Engine,
        data_dir: Path,
        timeout: float = CHECK_TIMEOUT,
        config: RouterConfig | None = None,
        journal: Callable[[], Journal | None] | None = None,
    ) -> None:
        """With ``config``: this node's temp folder and the configured store; without: ``data_dir``'s. ``journal``:
        the write-ahead journal in use now, if any (opened when the router starts, after this is made)."""
        self.app = app
        tmp = storage.tmp_dir(config) if config is not None else data_dir / "tmp"
        store = storage.of(config) if config is not None else storage.at(data_dir)
        self.checks: dict[str, Callable[[], None]] = {
            "database": lambda: check_database(engine),
            "storage": lambda: check_storage(tmp, store),
        }
        self.journal = journal
        self.timeout = timeout
        self._failing: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path not in (LIVE, READY):
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            response: Response = JSONResponse({"error": "GET or HEAD"}, 405, {"Allow": "GET, HEAD"})
        elif path == LIVE:
            response = JSONResponse({"status": "ok"}, headers=NO_STORE)
        else:
            response = await self.readiness()
        await response(scope, receive, send)

    async def readiness(self) -> Response:
        checks_now = dict(self.checks)
        journal = self.journal() if self.journal is not None else None
        if journal is not None:
            checks_now["journal"] = lambda: check_journal(journal)
        results = await asyncio.gather(*(self._run(name, check) for name, check in checks_now.items()))
        checks = dict(zip(checks_now, results, strict=True))
        ready = all(result == "ok" for result in results)
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return JSONResponse(body, 200 if ready else 503, headers=NO_STORE)

    async def _run(self, name: str, check: Callable[[], None]) -> str:
        try:
            await asyncio.wait_for(run_in_threadpool(check), self.timeout)
        except TimeoutError:
            return self._failed(name, f"no answer in {self.timeout:g} s", None)
        except NotReady as exc:
            return self._failed(name, str(exc), exc.__cause__)
        if name in self._failing:
            self._failing.discard(name)
            log.warning("/readyz: %s is ok again", name)
        return "ok"

    def _failed(self, name: str, reason: str, cause: BaseException | None) -> str:
        if name not in self._failing:
            self._failing.add(name)
            log.warning("/readyz: %s failed: %s (%s)", name, reason, cause if cause is not None else "-")
        return reason
