"""Jobs delivered as a group: the ``print-series`` jobs of one printer and one series (docs/print.md).

Each object of a series the ``print`` stage prints with ``group: series`` gets a job of its own at intake (durable
with the object: the acknowledgement means the job exists). The group is those jobs' printer and the Series Instance
UID of their stored objects (the index: ``instance`` -> ``series``), so no column of the job table holds it.

- ``hold``: in the intake's transaction, every pending job of the object's group (the new one too) is put off to
  now + the settle time: a series is printed once it has been quiet that long.
- ``claim_rest``: in the claim's transaction, when a claim took a job of a group, the group's other pending jobs are
  claimed with it, whatever their due time and whatever the batch size: the destination is handed each group whole,
  retries included (a failed group's jobs back off apart, by their jitter; the first due brings the others).

A group's job is left out of the claim only while an older job for the same instance and printer is pending or in
flight (the queue's order per instance, ``Outbox.claim``); it is then printed later, on a film session of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, select, update

from router.outbox.jobs import WAITS_FOR_EARLIER, JobKind, taken
from router.store.models import JobState, utcnow
from router.store.tables import INSTANCE, JOB, SERIES

GROUPED = JobKind.PRINT_SERIES.value
_SERIES_SOPS = (
    select(INSTANCE.c.sop_uid)
    .join(SERIES, SERIES.c.id == INSTANCE.c.series_fk)
    .where(SERIES.c.series_uid.in_(bindparam("series", expanding=True)))
)
_SERIES_OF = (
    select(SERIES.c.series_uid)
    .join(INSTANCE, SERIES.c.id == INSTANCE.c.series_fk)
    .where(INSTANCE.c.sop_uid.in_(bindparam("sops", expanding=True)))
    .distinct()
)
_PENDING_IN_GROUPS = (JOB.c.peer == bindparam("for_peer"), JOB.c.kind == GROUPED, JOB.c.state == JobState.PENDING,
                      JOB.c.sop_uid.in_(_SERIES_SOPS))  # fmt: skip
_HOLD = update(JOB).where(*_PENDING_IN_GROUPS).values(next_attempt_at=bindparam("due"), updated_at=bindparam("now"))
_REST = (
    select(JOB.c.id)
    .where(*_PENDING_IN_GROUPS, ~WAITS_FOR_EARLIER)
    .order_by(JOB.c.id)
    .with_for_update(skip_locked=True, of=JOB)
)
_TAKE = (
    update(JOB)
    .where(JOB.c.id.in_(bindparam("ids", expanding=True)), JOB.c.state == JobState.PENDING)
    .values(**taken())
    .returning(*JOB.c)
)


def hold(conn: Connection, series_uid: str, settle: Mapping[str, float], now: datetime | None = None) -> None:
    """Put off the pending grouped jobs of ``series_uid`` for each printer of ``settle`` (printer -> seconds), in
    the caller's transaction (the one that queued the new object's jobs, after the object was indexed)."""
    now = now or utcnow()
    for peer, seconds in sorted(settle.items()):
        params = {"for_peer": peer, "series": [series_uid], "due": now + timedelta(seconds=seconds), "now": now}
        conn.execute(_HOLD, params)


def claim_rest(conn: Connection, claimed: Sequence[RowMapping], params: Mapping[str, Any]) -> list[RowMapping]:
    """The rows of the other pending jobs of the groups of the ``claimed`` rows, now claimed too (in the claim's
    transaction, with its ``params``: for_peer, now, node, lease_until). Nothing when no claimed job is grouped."""
    sops = sorted({str(row["sop_uid"]) for row in claimed if row["kind"] == GROUPED})
    if not sops:
        return []
    series = sorted(str(uid) for uid in conn.execute(_SERIES_OF, {"sops": sops}).scalars())
    if not series:
        return []
    ids = list(conn.execute(_REST, {"for_peer": params["for_peer"], "series": series}).scalars())
    if not ids:
        return []
    taken = {"ids": ids, "now": params["now"], "node": params["node"], "lease_until": params["lease_until"]}
    return list(conn.execute(_TAKE, taken).mappings().all())
