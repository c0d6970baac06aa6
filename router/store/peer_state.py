"""Paused peers: an operator stops forwarding to a peer (maintenance on its side) and resumes it later.

The state is a row in the database, so it holds across restarts and in both router processes: the forward
workers' claims and due counts leave out the jobs of a paused peer (``router.outbox.queue``), which stay pending.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from router.store.models import utcnow
from router.store.tables import PEER_STATE

PAUSED = select(PEER_STATE.c.peer).where(PEER_STATE.c.paused.is_(True))


def set_paused(engine: Engine, peer: str, paused: bool, by: str) -> bool:
    """Pause or resume ``peer``; whether that changed anything."""
    with engine.begin() as conn:
        was = conn.execute(select(PEER_STATE.c.paused).where(PEER_STATE.c.peer == peer)).scalar()
        if bool(was) == paused:
            return False
        conn.execute(delete(PEER_STATE).where(PEER_STATE.c.peer == peer))
        if paused:
            conn.execute(insert(PEER_STATE).values(peer=peer, paused=True, changed_by=by[:64], changed_at=utcnow()))
    return True


def paused_peers(engine: Engine) -> dict[str, dict[str, object]]:
    """The paused peers: who paused each and when."""
    query = select(PEER_STATE.c.peer, PEER_STATE.c.changed_by, PEER_STATE.c.changed_at).where(
        PEER_STATE.c.paused.is_(True)
    )
    with engine.connect() as conn:
        return {peer: {"by": by, "at": at} for peer, by, at in conn.execute(query).all()}
