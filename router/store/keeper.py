"""The storage keeper: how much the stored objects take, and what goes when they take too much or are too old.

``storage.mode: archive`` keeps every object; ``cache`` keeps the stored objects between two water marks: once
they take more than ``high_water``, whole patients are evicted, least recently used first, until they take less
than ``low_water``. ``keep_days`` evicts objects received longer ago, in either mode. See docs/storage.md.

When it looks:
- after each stored object (``stored``, on the receiving thread, under the write lock): the running total
  (``router.store.usage``) is compared with the high-water mark, and a check is asked of the scheduler when it is
  above. That is all the receiving thread does: the check runs on the scheduler's thread;
- every ``check_interval`` seconds (the router's apscheduler): the noted uses are written, the total is read
  from the index again, the marks are resolved (a percentage against the file system's size), and old and
  surplus objects are evicted (``router.store.eviction``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pluggy
from sqlalchemy import delete, select, text
from sqlalchemy.engine import Engine

from router.config import RouterConfig
from router.store.eviction import RECEIVED_AT_INDEX, Evictor, Kept, announce
from router.store.pruning import Pruned, sweep_removed
from router.store.tables import PATIENT, PATIENT_USE
from router.store.usage import UsageMeter, filesystem_size
from router.store.uses import RetrievedUse, UseRecorder
from router.store.writelock import WriteLock

log = logging.getLogger(__name__)
JOB_ID = "storage-check"


@dataclass
class Evicted:
    """What has been evicted since the router started."""

    patients: int = 0
    studies: int = 0
    instances: int = 0
    size: int = 0
    last_at: datetime | None = None


@dataclass
class StorageStatus:
    """What the keeper knows, for an operator (``StorageKeeper.status``)."""

    mode: str
    used: int
    high_water: int | None
    low_water: int | None
    keep_days: float | None
    checked_at: datetime | None = None
    evicted: Evicted = field(default_factory=Evicted)
    kept: list[Kept] = field(default_factory=list)  # cache mode, last check: patients skipped, and why
    old_kept: int = 0  # keep_days, last check: old objects a job or a commitment still holds


class StorageKeeper:
    def __init__(self, config: RouterConfig, engine: Engine, write_lock: WriteLock, pm: pluggy.PluginManager) -> None:
        self.settings = config.storage
        self.data_dir = config.data_dir
        self.engine = engine
        self.write_lock = write_lock
        self.pm = pm
        self.meter = UsageMeter()
        self.uses = UseRecorder()
        self.evictor = Evictor(engine, config.data_dir, write_lock, self.uses, self._pruned)
        self.cache = self.settings.mode == "cache"
        self.wake: Callable[[], None] = lambda: None  # ask for a check now (set by start)
        self._high: int | None = None  # the marks in bytes, resolved at each check (cache mode)
        self._low = 0
        self._woken = False  # a check was asked for and has not ended below the high-water mark
        self._stuck = False  # the last check ended above the high-water mark
        self._checking = threading.Lock()
        self._synced_at = 0.0
        self._state = StorageStatus(self.settings.mode, 0, None, None, self.settings.keep_days)
        pm.register(RetrievedUse(self.uses), name="storage-use")

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self, scheduler: Any) -> None:
        """Before the listeners start: finish removals a crash interrupted, count what is stored, and check every
        ``check_interval`` seconds on ``scheduler`` (an apscheduler ``BackgroundScheduler``)."""
        swept = sweep_removed(self.engine, self.data_dir, self.write_lock)
        if swept:
            log.info("storage: %d removal(s) left by an earlier run finished", swept)
        with self.write_lock, self.engine.begin() as conn:
            conn.execute(delete(PATIENT_USE).where(PATIENT_USE.c.patient_fk.not_in(select(PATIENT.c.id))))  # merged
            if self.settings.keep_days is not None:
                conn.execute(text(RECEIVED_AT_INDEX))
        self._synced_at = time.monotonic()
        self.meter.resync(self.engine, self.write_lock)
        self._resolve_marks()
        log.info("storage: %s mode, stored objects take %d byte(s)%s", self.settings.mode, self.meter.total,
                 f"; high-water mark {self._high}, low {self._low}" if self._high is not None else "")  # fmt: skip
        scheduler.add_job(self.check, "interval", seconds=self.settings.check_interval, id=JOB_ID,
                          max_instances=1, coalesce=True)  # fmt: skip
        self.wake = lambda: scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))

    def stored(self, study_uid: str, size: int, replaced: int) -> None:
        """An object of ``size`` bytes is committed (replacing one of ``replaced`` bytes); under the write lock."""
        self.meter.add(size - replaced)
        self.uses.study(study_uid)
        high = self._high
        if high is not None and self.meter.total > high and not self._woken:
            self._woken = True
            try:
                self.wake()
            except Exception as exc:  # the scheduler is shutting down: the object is stored all the same
                log.info("storage: no check asked for (%s)", exc)

    def status(self) -> StorageStatus:
        """A copy of what the keeper knows now."""
        low = self._low if self._high is not None else None
        evicted, kept = replace(self._state.evicted), list(self._state.kept)
        return replace(self._state, used=self.meter.total, high_water=self._high, low_water=low, evicted=evicted,
                       kept=kept)  # fmt: skip

    # -- the check -------------------------------------------------------------------------------------------
    def check(self) -> None:
        """One check (the scheduler's job); a check asked for while one runs is that one."""
        if not self._checking.acquire(blocking=False):
            return
        try:
            self._check()
        except Exception:
            log.exception("storage check failed")
        finally:
            self._checking.release()

    def _check(self) -> None:
        self._woken = True  # objects stored while this check runs ask for no other: it looks again before it ends
        self.uses.flush(self.engine, self.write_lock)
        sweep_removed(self.engine, self.data_dir, self.write_lock)
        if time.monotonic() - self._synced_at >= self.settings.check_interval * 0.9:
            self._synced_at = time.monotonic()
            self.meter.resync(self.engine, self.write_lock)
        self._resolve_marks()
        if self.settings.keep_days is not None:
            self._evict_old(datetime.now(UTC) - timedelta(days=self.settings.keep_days))
        ran_out = False
        while not ran_out and self._high is not None and self.meter.total > self._high:
            ran_out = not self._evict_least_recently_used()
        stuck = ran_out and self._high is not None and self.meter.total > self._high
        if stuck and not self._stuck:
            log.warning("storage: stored objects take %d byte(s), above the high-water mark %s, and nothing more can "
                        "be evicted now (%d patient(s) kept)", self.meter.total, self._high,
                        len(self._state.kept))  # fmt: skip
        self._stuck = self._woken = stuck  # while stuck, only the periodic checks try again
        self._state.checked_at = datetime.now(UTC)

    def _resolve_marks(self) -> None:
        if not self.cache:
            return
        size = filesystem_size(self.data_dir)
        self._high, self._low = self.settings.high.resolve(size), self.settings.low.resolve(size)

    def _evict_old(self, cutoff: datetime) -> None:
        while (pruned := self.evictor.evict_old(cutoff)).instances:
            announce(self.pm, "keep_days", pruned)
        held = self.evictor.old_but_held(cutoff)
        if held != self._state.old_kept and held:
            log.warning("storage: %d object(s) received before keep_days kept: jobs or commitments still hold them",
                        held)  # fmt: skip
        self._state.old_kept = held

    def _evict_least_recently_used(self) -> bool:
        """Evict until below the low-water mark; False when every patient left had to be kept."""
        before, kept = self.meter.total, []
        for patient_fk in self.evictor.least_recently_used():
            if self.meter.total <= self._low:
                break
            done = self.evictor.evict_patient(patient_fk)
            if isinstance(done, Kept):
                kept.append(done)
            elif done.instances:  # (a patient with only empty rows, left by an older version, goes silently)
                announce(self.pm, "cache", done)
        known = {k.patient_fk for k in self._state.kept}
        for skip in kept:
            if skip.patient_fk not in known:
                log.warning("storage: a least recently used patient kept (studies %s): %s",
                            ", ".join(skip.studies) or "none", skip.reason)  # fmt: skip
        self._state.kept = kept
        if self.meter.total < before:
            log.info("storage: stored objects take %d byte(s) after eviction (high-water mark %s, low %d)",
                     self.meter.total, self._high, self._low)  # fmt: skip
        return self.meter.total <= self._low

    def _pruned(self, pruned: Pruned) -> None:
        """Under the write lock, right after an eviction's commit."""
        self.meter.add(-pruned.size)
        evicted = self._state.evicted
        evicted.patients += pruned.patients
        evicted.studies += sum(1 for s in pruned.studies if s.removed)
        evicted.instances += pruned.instances
        evicted.size += pruned.size
        evicted.last_at = datetime.now(UTC)
