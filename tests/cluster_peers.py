"""Shared by the tests of several router nodes on one PostgreSQL: a destination that hangs every association, and
what the database says about the jobs (who holds which, how many in each state).

tests/test_nodes.py and tests/test_nodes_s3.py use these."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Any

from postgres import PgCluster


class BlackHole:
    """A TCP listener that accepts connections and never answers: a DICOM peer that hangs every association."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", port))
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                self.accepted.append(conn)

    def close(self) -> None:
        """Close everything with a reset (no TIME_WAIT left on the port, so storescp can take it at once)."""
        self.listener.close()
        self._thread.join(5)
        accepted, self.accepted = self.accepted, []
        for conn in accepted:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()


def rows(cluster: PgCluster, db: str, query: str) -> list[tuple[Any, ...]]:
    with cluster.connect(db) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def held(cluster: PgCluster, db: str) -> dict[str, list[int]]:
    """The jobs in flight, by the node that leases them."""
    out: dict[str, list[int]] = {}
    for job_id, by in rows(cluster, db, "SELECT id, leased_by FROM job WHERE state = 'inflight'"):
        out.setdefault(by, []).append(job_id)
    return out


def job_states(cluster: PgCluster, db: str) -> dict[str, int]:
    return {state: int(n) for state, n in rows(cluster, db, "SELECT state, count(*) FROM job GROUP BY state")}
