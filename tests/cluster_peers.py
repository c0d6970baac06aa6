"""Shared by the tests of several router nodes on one PostgreSQL: a destination that hangs every association, what
the database says about the jobs (who holds which, how many in each state), killing a node that holds jobs and
checking that only its jobs in flight arrived twice.

tests/test_nodes.py and tests/test_nodes_s3.py use these."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydicom

from peers import RouterProcess, StoreSCP, wait_for
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
        """Close everything with a reset (no TIME_WAIT left on the port, so storescp can take it at once). The
        listener is shut down first: that wakes the thread blocked in accept(), which a close alone does not (the
        port then stays in LISTEN until a connection happens to come)."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
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


def arrived_at(dest: StoreSCP) -> Counter[str]:
    """How many times each SOP instance arrived at a DCMTK storescp."""
    return Counter(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in dest.received())


@dataclass(frozen=True)
class Killed:
    name: str  # the node killed
    survivor: RouterProcess
    in_flight: set[int]  # the jobs it held when it died


def kill_a_holder(cluster: PgCluster, db: str, nodes: dict[str, RouterProcess]) -> Killed:
    """Once a node holds jobs in flight, SIGKILL the first of ``nodes`` that does."""
    wait_for(lambda: bool(held(cluster, db)), 30, what="a node to hold jobs in flight")
    holding = held(cluster, db)
    name = next(n for n in nodes if n in holding)
    nodes[name].kill9()
    in_flight = set(held(cluster, db).get(name, []))
    assert in_flight, "the killed node held jobs"
    return Killed(name, next(router for n, router in nodes.items() if n != name), in_flight)


def duplicates_only_in_flight(
    cluster: PgCluster, db: str, arrivals: Callable[[], Counter[str]], uids: set[str], in_flight: set[int]
) -> dict[str, int]:
    """Once every job is done: every object arrived, and those that arrived more than once were among the killed
    node's jobs ``in_flight``. The duplicates, SOP Instance UID -> extra arrivals."""
    wait_for(lambda: job_states(cluster, db) == {"done": len(uids)}, 30, what="every job done")
    arrived = arrivals()
    assert set(arrived) == uids, "every object arrived"
    duplicates = {uid: n - 1 for uid, n in arrived.items() if n > 1}
    sop_of = dict(rows(cluster, db, "SELECT id, sop_uid FROM job"))
    assert set(duplicates) <= {sop_of[i] for i in in_flight}, "only the killed node's jobs in flight may arrive twice"
    return duplicates
