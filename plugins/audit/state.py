"""What the audit plugin keeps while a router process runs: its trail, who the router is, the index, the peers.

One per process (``router_startup`` makes it, ``router_shutdown`` ends it); ``running()`` is ``None`` when the
plugin is not configured (no repository, no file): every hook then returns at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine

from plugins.audit.events import Local, split_address
from plugins.audit.message import AuditEvent, Participant
from plugins.audit.settings import Settings
from plugins.audit.trail import AuditTrail
from router.config import DicomPeer, DicomwebPeer, MllpPeer, RouterConfig

log = logging.getLogger("router.audit")


@dataclass
class Running:
    config: RouterConfig
    settings: Settings
    trail: AuditTrail
    local: Local
    logins: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (user, method, host) -> when
    _engine: Engine | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, event: AuditEvent) -> None:
        self.trail.record(event)

    def engine(self) -> Engine:
        """The index, opened on first use (only messages about stored instances need it)."""
        with self._lock:
            if self._engine is None:
                from router.store.db import make_engine

                self._engine = make_engine(self.config.effective_database_url)
            return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def peer(self, name: str) -> tuple[Participant, str]:
        """The configured peer ``name`` as a participant (not the requestor), and its URI."""
        peer = self.config.peers.get(name)
        if isinstance(peer, DicomPeer):
            who = Participant(peer.ae_title, False, alt_user_id=f"AETITLES={peer.ae_title}", user_name=name,
                              host=peer.host)  # fmt: skip
            return who, f"dicom://{peer.ae_title}@{peer.host}:{peer.port}"
        if isinstance(peer, MllpPeer):
            return Participant(name, False, user_name=name, host=split_address(peer.mllp)[0]), f"mllp://{peer.mllp}"
        if isinstance(peer, DicomwebPeer):
            return Participant(peer.stow_url, False, user_name=name, host=urlsplit(peer.stow_url).hostname or ""), (
                peer.stow_url
            )
        kind = getattr(peer, "type", "peer")
        return Participant(name, False, user_name=name), f"{kind}:{name}"

    def peer_by_ae(self, ae_title: str) -> Participant:
        """The DICOM peer whose AE title is ``ae_title`` (a move destination), as a participant."""
        for name, peer in self.config.peers.items():
            if isinstance(peer, DicomPeer) and peer.ae_title.strip() == ae_title.strip():
                return self.peer(name)[0]
        return Participant(ae_title, False, alt_user_id=f"AETITLES={ae_title}")


_current: list[Running] = []


def running() -> Running | None:
    return _current[0] if _current else None


def begin(state: Running) -> None:
    _current[:] = [state]


def end() -> Running | None:
    state = running()
    _current.clear()
    return state
