"""``GET /api/stats``: what the console's dashboard draws, computed on request from the activity record and the
outbox.

- ``minutes``: objects and HL7 messages in (``received`` rows) and out (``delivered`` rows) per minute over the
  last ``minutes`` minutes, oldest first, every minute present (zeros too).
- ``queue``: per peer, jobs per state and the age of the oldest job still to deliver (pending or inflight).
- ``errors``: the newest refusals and failed or dead deliveries of that time (UIDs, peers, statuses: never
  patient data).
- ``recent``: the newest objects and messages received (SOP Instance UID or MSH-10, from whom).
- ``evictions``: the newest evictions this process saw (``router_evicted``: reason, counts, bytes).

The activity table has no index on ``at`` (each index costs every object received), but its rows are written in
time order, so the first row of the window is found by a binary search on the primary key (a few dozen primary
key reads), and every count is a range scan from that id.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from datetime import datetime, timedelta
from typing import Any

import pluggy
from sqlalchemy import Connection, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from router.hooks.specs import hookimpl
from router.listeners.http.api.endpoint import Call, Endpoint, Param
from router.listeners.http.api.services import ApiServices
from router.store.models import JobState, utcnow
from router.store.pruning import EvictedStudy
from router.store.tables import ACTIVITY, JOB

ERROR_EVENTS = ("refused", "failed", "dead")
MAX_ERRORS = 20
MAX_EVICTIONS = 20
MAX_RECENT = 10
PLUGIN_NAME = "api-stats-evictions"
PARAMS = (Param("minutes", "the window, in minutes", kind="integer", minimum=1, maximum=1440, default=60),)


class EvictionLog:
    """The newest evictions (``router_evicted``) this process announced, without patient data."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[dict[str, Any]] = deque(maxlen=MAX_EVICTIONS)

    @hookimpl
    def router_evicted(
        self, reason: str, studies: list[EvictedStudy], patients: int, instances: int, size: int
    ) -> None:
        item = {"at": utcnow(), "reason": reason, "studies": len(studies), "patients": patients,
                "instances": instances, "bytes": size}  # fmt: skip
        with self._lock:
            self._items.appendleft(item)

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)


def eviction_log(pm: pluggy.PluginManager) -> EvictionLog:
    """The manager's log, registered on first use (one per plugin manager)."""
    found = pm.get_plugin(PLUGIN_NAME)
    if isinstance(found, EvictionLog):
        return found
    log = EvictionLog()
    pm.register(log, name=PLUGIN_NAME)
    return log


def first_id_since(conn: Connection, cutoff: datetime) -> int | None:
    """The id of the first activity row at or after ``cutoff`` (rows are written in time order), by binary search
    on the primary key; None when there is none."""
    low, high = conn.execute(select(func.min(ACTIVITY.c.id), func.max(ACTIVITY.c.id))).one()
    if low is None or high is None:
        return None

    def at_from(row_id: int) -> tuple[int, datetime] | None:
        query = select(ACTIVITY.c.id, ACTIVITY.c.at).where(ACTIVITY.c.id >= row_id).order_by(ACTIVITY.c.id).limit(1)
        found = conn.execute(query).first()
        return (int(found[0]), _aware(found[1])) if found is not None else None

    last = at_from(int(high))
    if last is None or last[1] < cutoff:
        return None
    low, high = int(low), int(high)
    while low < high:  # the smallest id whose next row is at or after the cutoff
        middle = (low + high) // 2
        found = at_from(middle)
        if found is not None and found[1] >= cutoff:
            high = middle
        else:
            low = middle + 1
    found = at_from(low)
    return found[0] if found is not None else None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=utcnow().tzinfo)


def minute_of(conn: Connection) -> ColumnElement[str]:
    """``at`` cut to the minute, as ``YYYY-MM-DDTHH:MM`` text, in the database's own words."""
    if conn.dialect.name == "postgresql":
        return func.to_char(ACTIVITY.c.at, literal_column("'YYYY-MM-DD\"T\"HH24:MI'"))
    return func.strftime(literal_column("'%Y-%m-%dT%H:%M'"), ACTIVITY.c.at)


def per_minute(conn: Connection, start_id: int | None, now: datetime, minutes: int) -> list[dict[str, Any]]:
    first = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    slots = [(first + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M") for i in range(minutes)]
    table: dict[str, dict[str, Any]] = {
        slot: {"minute": slot, "dicom_in": 0, "hl7_in": 0, "dicom_out": 0, "hl7_out": 0} for slot in slots
    }
    if start_id is not None:
        minute = minute_of(conn).label("minute")
        query = (
            select(minute, ACTIVITY.c.event, ACTIVITY.c.kind, func.count())
            .where(ACTIVITY.c.id >= start_id, ACTIVITY.c.event.in_(("received", "delivered")))
            .group_by(minute, ACTIVITY.c.event, ACTIVITY.c.kind)
        )
        for slot, event, kind, count in conn.execute(query).all():
            row = table.get(str(slot))
            if row is not None:
                column = f"{'hl7' if kind == 'hl7' else 'dicom'}_{'in' if event == 'received' else 'out'}"
                row[column] += int(count)
    return [table[slot] for slot in slots]


def queues(conn: Connection, now: datetime, peers: list[str]) -> list[dict[str, Any]]:
    counts: dict[str, dict[str, int]] = {p: dict.fromkeys(JobState.ALL, 0) for p in peers}
    grouped = select(JOB.c.peer, JOB.c.state, func.count()).group_by(JOB.c.peer, JOB.c.state)
    for peer, state, count in conn.execute(grouped):
        counts.setdefault(peer, dict.fromkeys(JobState.ALL, 0))[state] = int(count)
    waiting = (JobState.PENDING, JobState.INFLIGHT)
    oldest = dict(conn.execute(select(JOB.c.peer, func.min(JOB.c.created_at)).where(JOB.c.state.in_(waiting))
                               .group_by(JOB.c.peer)).all())  # fmt: skip
    return [
        {"peer": peer, "jobs": states, "depth": sum(states[s] for s in waiting),
         "oldest_age_seconds": round((now - _aware(oldest[peer])).total_seconds(), 1) if peer in oldest else None}
        for peer, states in sorted(counts.items())
    ]  # fmt: skip


def errors(conn: Connection, start_id: int | None) -> list[dict[str, Any]]:
    if start_id is None:
        return []
    a = ACTIVITY.c
    query = (
        select(a.id, a.at, a.event, a.kind, a.subject, a.sop_uid, a.msh10, a.peer, a.status, a.detail)
        .where(a.id >= start_id, a.event.in_(ERROR_EVENTS))
        .order_by(a.id.desc())
        .limit(MAX_ERRORS)
    )
    found = []
    for row in conn.execute(query).mappings():
        item = dict(row)
        detail = item.pop("detail") or ""
        item["error"] = _error_of(detail)
        found.append(item)
    return found


def recent(conn: Connection, start_id: int | None) -> list[dict[str, Any]]:
    """The newest objects and messages received in the window: when, what (SOP Instance UID or MSH-10), from
    whom (calling AE or sending application, and address)."""
    if start_id is None:
        return []
    a = ACTIVITY.c
    query = (
        select(a.at, a.kind, a.sop_uid, a.msh10, a.source)
        .where(a.id >= start_id, a.event == literal_column("'received'"))
        .order_by(a.id.desc())
        .limit(MAX_RECENT)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def _error_of(detail: str) -> str:
    try:
        parsed = json.loads(detail) if detail else {}
    except ValueError:
        return ""
    if not isinstance(parsed, dict):
        return ""
    return str(parsed.get("error") or parsed.get("reason") or "")[:300]


def make_endpoints(services: ApiServices) -> list[Endpoint]:
    evictions = eviction_log(services.pm)

    def stats(call: Call) -> dict[str, Any]:
        minutes = call.params["minutes"]
        now = utcnow()
        with services.engine.connect() as conn:
            start = first_id_since(conn, (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0))
            return {
                "at": now, "minutes": per_minute(conn, start, now, minutes),
                "queue": queues(conn, now, list(services.config.peers)), "errors": errors(conn, start),
                "recent": recent(conn, start),
                "evictions": evictions.items(),
            }  # fmt: skip

    return [
        Endpoint("GET", "/api/stats", "The dashboard: objects and messages in and out per minute, queue depth and "
                 "oldest job age per peer, recent errors and evictions", stats, params=PARAMS, tag="router"),
    ]  # fmt: skip
