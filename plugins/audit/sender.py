"""One thread per repository and router process: it sends the repository's spooled messages, in order.

While another process holds the repository's sender lock it waits and tries again (``LOCK_RETRY``). Holding it,
it sends batches of the oldest messages and removes them once the repository took them; when a delivery fails the
messages stay and it waits, from ``retry_initial`` doubling to ``retry_max``, then starts again from the oldest.
New messages of its own process wake it at once; those of the other process are seen within ``POLL``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from plugins.audit.settings import Repository, Settings
from plugins.audit.spool import RepositorySpool
from plugins.audit.transport import Delivery, DeliveryError, delivery_for

log = logging.getLogger("router.audit")

BATCH = 100  # messages per delivery
POLL = 0.5  # s: between looks at the spool when nothing woke the sender
LOCK_RETRY = 1.0  # s: between attempts to become the repository's sender


class RepositorySender:
    def __init__(
        self, repo: Repository, spool: RepositorySpool, settings: Settings,
        make_delivery: Callable[[Repository, float], Delivery] = delivery_for,
    ) -> None:  # fmt: skip
        self.repo = repo
        self.spool = spool
        self.settings = settings
        self.delivery = make_delivery(repo, settings.timeout)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.idle = threading.Event()  # set while this sender holds the lock and the spool is empty
        self.thread = threading.Thread(target=self._run, name=f"audit-{repo.name}", daemon=True)
        self._failing = False

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while not self.stopping.is_set():
            if not self.spool.try_lock():
                self.stopping.wait(LOCK_RETRY)
                continue
            try:
                self._send_while_holding()
            except Exception:  # never let the trail die: log, let go of the lock, start again
                log.exception("audit sender for %s failed", self.repo.where)
                self.stopping.wait(LOCK_RETRY)
            finally:
                self.delivery.close()
                self.spool.unlock()

    def _send_while_holding(self) -> None:
        wait = self.settings.retry_initial
        while not self.stopping.is_set():
            names = self.spool.pending(limit=BATCH)
            if not names:
                self.idle.set()
                self.wake.wait(POLL)
                self.wake.clear()
                continue
            self.idle.clear()
            try:
                self.delivery.deliver([self.spool.read(name) for name in names])
            except (DeliveryError, OSError) as exc:
                self._failed(str(exc), len(names), wait)
                self.stopping.wait(wait)
                wait = min(wait * 2, self.settings.retry_max)
                continue
            self.spool.remove(names)
            wait = self.settings.retry_initial
            self._delivered(len(names))

    def _failed(self, error: str, waiting: int, wait: float) -> None:
        if not self._failing:
            log.warning("audit repository %s: %s; %d+ message(s) wait in the spool, retrying with backoff",
                        self.repo.where, error, waiting)  # fmt: skip
        self._failing = True
        self.spool.save_state(last_error=error, error_at=datetime.now(UTC).isoformat(), retry_in=wait)

    def _delivered(self, count: int) -> None:
        if self._failing:
            log.info("audit repository %s reachable again", self.repo.where)
        self._failing = False
        self.spool.save_state(last_delivery=datetime.now(UTC).isoformat(), delivered=count)
