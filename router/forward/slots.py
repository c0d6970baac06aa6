"""Association slots: a peer's ``max_associations`` held for the whole cluster, not per node.

On PostgreSQL a sender may run only while it holds one of its peer's slots: a session advisory lock
``(peer key, slot number)`` with slot number below the peer's limit (1 for an ordered destination such as MLLP, so
that one node at a time speaks to it). A slot is held on a database connection of its own for the sender's life
and released when the sender ends; a node that dies loses its connections, and PostgreSQL frees the locks at once.
On SQLite there is one node: the forwarder's own count of senders is the limit, and slots are not needed.
"""

from __future__ import annotations

import logging
import zlib
from typing import Protocol

from sqlalchemy import bindparam, create_engine, func, select
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

_NAMESPACE = 0x52545200  # "RTR\0": the first key of every slot lock is this plus the peer's hash, as int4
_TRY = select(func.pg_try_advisory_lock(bindparam("peer_key"), bindparam("slot")))
_UNLOCK = select(func.pg_advisory_unlock(bindparam("peer_key"), bindparam("slot")))


def peer_key(peer: str) -> int:
    """The first advisory-lock key of ``peer``'s slots: a signed 32-bit hash of its name."""
    value = (zlib.crc32(peer.encode()) ^ _NAMESPACE) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class Slot(Protocol):
    def release(self) -> None: ...


class _Free:
    """A slot on a single node (SQLite): nothing to hold."""

    def release(self) -> None:
        return None


class _Held:
    """A slot held as a session advisory lock on its own connection."""

    def __init__(self, conn: Connection, key: int, slot: int) -> None:
        self.conn, self.key, self.slot = conn, key, slot

    def release(self) -> None:
        try:
            self.conn.execute(_UNLOCK, {"peer_key": self.key, "slot": self.slot})
            self.conn.commit()
        except Exception:
            log.warning("cannot release association slot %d: its connection ends instead", self.slot)
            self.conn.invalidate()
        finally:
            self.conn.close()


class PeerSlots:
    """Hands out the cluster's association slots of each peer."""

    def __init__(self, url: str) -> None:
        self.engine: Engine | None = None
        if url.startswith("postgresql"):
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=-1, hide_parameters=True)

    def take(self, peer: str, limit: int) -> Slot | None:
        """One free slot of ``peer`` (of ``limit``), or None when every one is held somewhere in the cluster."""
        if self.engine is None:
            return _Free()
        key = peer_key(peer)
        conn = self.engine.connect()
        try:
            for slot in range(limit):
                if conn.execute(_TRY, {"peer_key": key, "slot": slot}).scalar_one():
                    conn.commit()
                    return _Held(conn, key, slot)
            conn.commit()
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        conn.close()
        return None

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
