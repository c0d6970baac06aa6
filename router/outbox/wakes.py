"""Waking the forward workers of every node on PostgreSQL: ``NOTIFY`` when jobs are queued, ``LISTEN`` for them.

Within one node the serving process wakes its forward process through a pipe (``router.forward.process``). A job
queued on another node (or by a ``router`` command) reaches this node's workers through PostgreSQL: ``enqueue``
calls ``announce`` in the transaction that queues the jobs, and PostgreSQL delivers the notification when, and only
if, that transaction commits. ``JobListener`` holds one connection that listens and wakes the workers for the
peers named. Polling (``forward.poll_interval``) stays the fallback: a notification lost while the listener
reconnects delays a job by one poll, no more.

The payload is ``<origin> <peer> <peer> ...``, where the origin is ``host:pid`` of the process that queued the jobs:
a listener ignores what its own serving process announced, since the pipe has woken its workers already.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

CHANNEL = "router_jobs"
RECONNECT_DELAY = 2.0  # s: between attempts to listen again after the connection was lost
MAX_PAYLOAD = 7000  # bytes: PostgreSQL's limit is 8000; a longer list of peers becomes "every peer"
EVERY_PEER = "*"
_NOTIFY = select(func.pg_notify(CHANNEL, bindparam("payload")))


def origin_of(pid: int) -> str:
    """How a process that queues jobs names itself in a notification: ``host:pid``."""
    return f"{socket.gethostname()}:{pid}"


def announce(conn: Connection, peers: Iterable[str]) -> None:
    """In the caller's transaction: tell every node's workers that jobs for ``peers`` are queued (PostgreSQL only;
    delivered at commit, dropped on rollback)."""
    if conn.dialect.name != "postgresql":
        return
    names = sorted(set(peers))
    if not names:
        return
    payload = " ".join([origin_of(os.getpid()), *names])
    if len(payload) > MAX_PAYLOAD:
        payload = f"{origin_of(os.getpid())} {EVERY_PEER}"
    conn.execute(_NOTIFY, {"payload": payload})


def parse(payload: str, own_origin: str) -> set[str] | None:
    """The peers a notification names; None for every peer; none when our own serving process sent it."""
    origin, _, rest = payload.partition(" ")
    if origin == own_origin:
        return set()
    names = set(rest.split())
    return None if EVERY_PEER in names or not names else names


class JobListener:
    """A thread that ``LISTEN``s on PostgreSQL and calls ``wake(peers)`` for each batch of notifications."""

    def __init__(self, url: str, own_origin: str, wake: Callable[[set[str] | None], None]) -> None:
        self.url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.own_origin = own_origin
        self.wake = wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while a connection listens (tests wait for it)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="forward-listen", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # the database went away: polling covers the gap
                log.warning("listening for queued jobs failed (%s): again in %g s", type(exc).__name__, RECONNECT_DELAY)
            self.listening.clear()
            self._stop.wait(RECONNECT_DELAY)

    def _listen(self) -> None:
        import psycopg  # the PostgreSQL driver: only a router on PostgreSQL gets here

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            while not self._stop.is_set():
                woken: set[str] = set()
                every = False
                for note in conn.notifies(timeout=0.5, stop_after=256):
                    peers = parse(note.payload, self.own_origin)
                    if peers is None:
                        every = True
                    else:
                        woken |= peers
                if every:
                    self.wake(None)
                elif woken:
                    self.wake(woken)
