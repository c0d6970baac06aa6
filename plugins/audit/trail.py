"""The audit trail of one router process: record a message durably, then let the senders deliver it.

``record(event)`` turns an ``AuditEvent`` into its XML and its syslog message, appends the XML to ``file`` (one
line, fsynced) when one is configured, and spools the syslog message for every repository (``plugins.audit.spool``)
before it returns. Delivery happens in the senders' threads (``plugins.audit.sender``); the hook that recorded the
event never waits for a repository.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from plugins.audit.message import AuditEvent, to_xml
from plugins.audit.sender import RepositorySender
from plugins.audit.settings import Settings
from plugins.audit.spool import Spool
from plugins.audit.syslog import hostname, syslog_message

SPOOL = Path("audit") / "spool"  # under data_dir


def spool_for(settings: Settings, data_dir: Path) -> Spool:
    return Spool(data_dir / SPOOL, [r.name for r in settings.repositories])


class AuditTrail:
    def __init__(self, settings: Settings, data_dir: Path, source_id: str) -> None:
        self.settings = settings
        self.source_id = settings.source_id or source_id
        self.host = hostname()
        self.spool = spool_for(settings, data_dir)
        self.senders = [RepositorySender(r, self.spool.repositories[r.name], settings) for r in settings.repositories]
        self._file_lock = threading.Lock()
        self._file: int | None = None

    def start(self) -> None:
        self.spool.create()
        if self.settings.file is not None:
            self.settings.file.parent.mkdir(parents=True, exist_ok=True)
            self._file = os.open(self.settings.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for sender in self.senders:
            sender.start()

    def record(self, event: AuditEvent) -> None:
        """Durable when it returns: in ``file`` and in the spool of every repository."""
        xml = to_xml(event, self.source_id, self.settings.enterprise_site_id)
        if self._file is not None:
            with self._file_lock:
                os.write(self._file, xml.encode("utf-8") + b"\n")  # O_APPEND: one write, one whole line
                os.fsync(self._file)
        if self.senders:
            self.spool.write(syslog_message(xml, event.when, self.host, self.settings.app_name))
            for sender in self.senders:
                sender.wake.set()

    def stop(self, flush: float = 2.0) -> None:
        """Give the senders ``flush`` seconds to deliver what waits (the rest stays spooled), then stop them."""
        deadline = time.monotonic() + flush
        for sender in self.senders:
            sender.wake.set()
            while time.monotonic() < deadline and sender.thread.is_alive() and sender.spool.pending(limit=1):
                time.sleep(0.02)  # a short wait for the last messages, e.g. Application Stop
        for sender in self.senders:
            sender.stop(timeout=max(0.1, deadline - time.monotonic()) + 1.0)
        if self._file is not None:
            os.close(self._file)
            self._file = None
