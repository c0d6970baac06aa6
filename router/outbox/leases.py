"""Nodes and their leases: several routers forwarding from one database (docs/cluster.md).

A claimed job is *leased* to the node that claimed it (``job.leased_by`` = its ``node_id``) until
``job.lease_until`` (``forward.lease_seconds`` after the claim). ``NodeKeeper``, a thread of the forward workers,
beats every ``beat_interval`` seconds:

- it renews the leases of every job this node still has in flight, and writes the node's row in ``node`` (version,
  start, heartbeat, how many jobs it holds), which ``router nodes`` and ``GET /api/nodes`` show;
- it takes over the jobs whose lease has expired (their node died, or lost the database for longer than the
  lease): back to pending, so that any node's workers send them. A delivery that was in flight on the dead node is
  then sent again (at-least-once), and nothing acknowledged is lost.

At start-up a node puts back its own jobs in flight (its previous forward process is gone) unless another live
router beats under the same ``node_id`` (a configuration mistake: its jobs are then left to their leases).
On SQLite there is one node; the forward process's ``forwarder.lock`` keeps a second one off the data folder, and
every job in flight is put back at start-up as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

import router
from router.store.models import JobState, utcnow
from router.store.tables import JOB, NODE, RULE_SET

if TYPE_CHECKING:
    from router.outbox.queue import Outbox

log = logging.getLogger(__name__)
MAX_BEAT = 5.0  # s: the longest time between two heartbeats


def beat_interval(lease_seconds: float) -> float:
    """Seconds between heartbeats: a lease is renewed at least twice before it could expire."""
    return min(MAX_BEAT, lease_seconds / 3)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)  # SQLite returns naive UTC


def renew(conn: Connection, node_id: str, until: datetime) -> int:
    """Extend the leases of the jobs ``node_id`` has in flight; how many it holds."""
    result = conn.execute(
        update(JOB).where(JOB.c.state == JobState.INFLIGHT, JOB.c.leased_by == node_id).values(lease_until=until)
    )
    return int(result.rowcount or 0)


def take_over_expired(conn: Connection, node_id: str, now: datetime) -> dict[str, int]:
    """Put back to pending the jobs in flight whose lease (held by another node) has expired; how many per former
    holder. A job without a lease (queued by a version before leases) counts as expired."""
    expired = and_(
        JOB.c.state == JobState.INFLIGHT,
        JOB.c.leased_by != node_id,
        or_(JOB.c.lease_until.is_(None), JOB.c.lease_until < now),
    )
    return _requeue(conn, expired, now)


def take_back_own(conn: Connection, node_id: str, now: datetime) -> dict[str, int]:
    """At start-up: this node's jobs in flight, left by its previous forward process, back to pending."""
    return _requeue(conn, and_(JOB.c.state == JobState.INFLIGHT, JOB.c.leased_by == node_id), now)


def _requeue(conn: Connection, where: object, now: datetime) -> dict[str, int]:
    rows = conn.execute(
        update(JOB)
        .where(where)  # type: ignore[arg-type]
        .values(state=JobState.PENDING, leased_by="", lease_until=None, updated_at=now)
        .returning(JOB.c.peer, JOB.c.leased_by)
    ).all()
    # RETURNING gives the new values: the former holder is gone from the row; count per peer instead
    counts: dict[str, int] = {}
    for peer, _ in rows:
        counts[peer] = counts.get(peer, 0) + 1
    return counts


def other_live_instance(conn: Connection, node_id: str, instance: str, lease_seconds: float) -> str | None:
    """The instance of another router beating under ``node_id`` within the last lease, if there is one."""
    row = conn.execute(select(NODE).where(NODE.c.node_id == node_id)).first()
    if row is None or row.instance == instance or row.stopped_at is not None:
        return None
    fresh = _aware(row.heartbeat_at) > utcnow() - timedelta(seconds=lease_seconds)
    return str(row.instance) if fresh else None


def write_heartbeat(conn: Connection, node_id: str, instance: str, started: datetime, leased: int,
                    stopped: bool = False, dropped: int = 0) -> None:  # fmt: skip
    """Insert or update the node's row (its ``rules`` are the serving process's to write: ``router.rules.shared``)."""
    now = utcnow()
    values = {"node_id": node_id, "instance": instance, "version": router.__version__, "started_at": started,
              "heartbeat_at": now, "stopped_at": now if stopped else None, "leased": leased,
              "dropped": dropped}  # fmt: skip
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(NODE).values(**values, rules="")
    changed = {key: statement.excluded[key] for key in values if key != "node_id"}
    conn.execute(statement.on_conflict_do_update(index_elements=[NODE.c.node_id], set_=changed))


def node_rows(conn: Connection, lease_seconds: float) -> list[dict[str, Any]]:
    """Every node (``router nodes``, ``GET /api/nodes``): its row, ``status`` (``up``: a heartbeat within the last
    lease; ``stopped``: stopped cleanly; ``silent``: no heartbeat for longer, its jobs are taken over), the
    seconds since its heartbeat, the jobs it holds now (in flight under its lease), the outcomes it dropped since
    its start (their jobs taken over), the digest of the rules it routes by (``rules``; on PostgreSQL,
    ``rules_current``: whether they are the cluster's rule set, ``router.rules.shared``)."""
    held: dict[str, int] = dict(
        conn.execute(
            select(JOB.c.leased_by, func.count()).where(JOB.c.state == JobState.INFLIGHT).group_by(JOB.c.leased_by)
        ).all()
    )
    cluster_rules = conn.execute(select(RULE_SET.c.digest).order_by(RULE_SET.c.id.desc()).limit(1)).scalar()
    now = utcnow()
    nodes = []
    for row in conn.execute(select(NODE).order_by(NODE.c.node_id)).mappings():
        age = (now - _aware(row["heartbeat_at"])).total_seconds()
        status = "stopped" if row["stopped_at"] is not None else "up" if age <= lease_seconds else "silent"
        nodes.append({"node_id": row["node_id"], "status": status, "version": row["version"],
                      "instance": row["instance"], "started_at": _aware(row["started_at"]).isoformat(),
                      "heartbeat_at": _aware(row["heartbeat_at"]).isoformat(), "heartbeat_age": round(age, 1),
                      "holds": int(held.get(row["node_id"], 0)), "dropped": row["dropped"],
                      "rules": row["rules"], "rules_current": row["rules"] == cluster_rules})  # fmt: skip
    return nodes


class NodeKeeper:
    """The heartbeat thread of one node's forward workers (see the module's description)."""

    def __init__(self, outbox: Outbox, instance: str, cluster: bool, on_takeover: Callable[[dict[str, int]], None]):
        self.outbox = outbox
        self.node_id = outbox.node_id
        self.instance = instance
        self.cluster = cluster  # PostgreSQL: leases decide; SQLite: one node, start-up takes every job back
        self.on_takeover = on_takeover
        self.lease_seconds = outbox.settings.lease_seconds
        self.started = utcnow()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def recover(self) -> int:
        """At start-up: the jobs left in flight that this node may take back now; how many."""
        if not self.cluster:
            recovered = self.outbox.recover_inflight()
            with self.outbox.writing, self.outbox.engine.begin() as conn:
                write_heartbeat(conn, self.node_id, self.instance, self.started, 0)
            return recovered
        now = utcnow()
        with self.outbox.writing, self.outbox.engine.begin() as conn:
            other = other_live_instance(conn, self.node_id, self.instance, self.lease_seconds)
            if other is not None:
                log.error("another router (%s) runs as node %r: give every node its own node_id; its jobs in "
                          "flight are left to their leases", other, self.node_id)  # fmt: skip
                own: dict[str, int] = {}
            else:
                own = take_back_own(conn, self.node_id, now)
            expired = take_over_expired(conn, self.node_id, now)
            write_heartbeat(conn, self.node_id, self.instance, self.started, 0)
        return sum(own.values()) + sum(expired.values())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="node-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        try:
            with self.outbox.writing, self.outbox.engine.begin() as conn:
                leased = renew(conn, self.node_id, utcnow() + timedelta(seconds=self.lease_seconds))
                write_heartbeat(conn, self.node_id, self.instance, self.started, leased, True, self.outbox.dropped)
        except Exception:
            log.exception("cannot record that node %r stopped", self.node_id)

    def beat(self) -> dict[str, int]:
        """One heartbeat: renew, record, take over; the jobs taken over, per peer."""
        now = utcnow()
        with self.outbox.writing, self.outbox.engine.begin() as conn:
            leased = renew(conn, self.node_id, now + timedelta(seconds=self.lease_seconds))
            write_heartbeat(conn, self.node_id, self.instance, self.started, leased, dropped=self.outbox.dropped)
            return take_over_expired(conn, self.node_id, now) if self.cluster else {}

    def _run(self) -> None:
        interval = beat_interval(self.lease_seconds)
        while not self._stop.wait(interval):
            try:
                taken = self.beat()
            except Exception as exc:  # the database is away: the leases run on; they are renewed at the next beat
                log.warning("node heartbeat failed (%s): trying again in %g s", type(exc).__name__, interval)
                continue
            if taken:
                log.warning("took over %d job(s) whose node's lease expired: %s", sum(taken.values()),
                            ", ".join(f"{peer} {n}" for peer, n in sorted(taken.items())))  # fmt: skip
                self.on_takeover(taken)
