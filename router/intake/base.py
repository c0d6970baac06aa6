"""What every intake shares: rules and stages, durable files, outbox jobs, the wake-up after the commit.

Each kind of inbound object has an intake: DICOM objects (``router.intake.dicom``: C-STORE, STOW-RS), HL7
messages (``router.intake.hl7``: MLLP) and MPPS messages (``router.mpps.service``: N-CREATE, N-SET). All follow
one skeleton, and answer the sender only after its last step:

1. an ``Envelope`` of what came in (``router.intake.envelope``);
2. the rules and their stages decide what happens to it (``plan``): the forwards and resends to queue;
3. the files it needs are written durably (``write_file``: temp file, fsync, rename, folder fsync);
4. under the write lock, one transaction: the intake's own rows and the outbox jobs
   (``router.outbox.jobs.enqueue``);
5. after the commit, the forward workers are woken for the peers of the new jobs (``committed``).

A failure on the way removes what was written (``discard``) and is answered with a failure. Nothing after the
commit makes the answer a failure or removes a file: the object is stored, and its jobs are in the outbox whether
or not the wake-up reached the workers (their next poll finds them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pluggy
from sqlalchemy.engine import Engine

from router import storage
from router.config import RouterConfig
from router.intake.envelope import Envelope
from router.intake.pipeline import PipelineResult, run_pipeline
from router.intake.stage import Stage
from router.rules.model import RuleSet
from router.store import files
from router.store.writelock import WriteLock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeContext:
    """What every intake is made with (``router.app`` makes one for all three)."""

    config: RouterConfig
    engine: Engine
    rules: Callable[[], RuleSet]  # the rules in force now (they are reloaded while the router runs)
    stages: Mapping[str, Stage]
    pm: pluggy.PluginManager
    write_lock: WriteLock  # one writer at a time (SQLite): see router.store.writelock


class Intake:
    def __init__(self, context: IntakeContext) -> None:
        self.config = context.config
        self.engine = context.engine
        self.rules = context.rules
        self.stages = context.stages
        self.pm = context.pm
        self.write_lock = context.write_lock
        self.on_jobs_committed: Callable[[set[str]], None] = lambda peers: None

    def plan(self, env: Envelope) -> PipelineResult:
        """Run the matching rules' stages over ``env`` (raises StageError when one fails)."""
        return run_pipeline(env, self.rules(), self.stages, self.config, engine=self.engine)

    def write_file(self, relpath: str, data: bytes, written: list[Path]) -> str:
        """Write ``data`` durably at ``relpath`` under the data folder; ``written`` gets every path this created,
        so ``discard`` can remove them if what follows fails."""
        tmp = files.write_temp(storage.tmp_dir(self.config), data)
        written.append(tmp)
        written.append(self.config.data_dir / relpath)
        storage.of(self.config).commit(tmp, relpath)
        return relpath

    @staticmethod
    def discard(written: Iterable[Path]) -> None:
        """Remove what an object wrote before it failed (never acknowledged, so nothing refers to it)."""
        for path in written:
            files.remove_quietly(path)

    def committed(self, peers: set[str]) -> None:
        """Jobs for ``peers`` are committed: wake the forward workers. Never raises: the commit is done, and the
        workers' next poll (``forward.poll_interval``) finds jobs whose wake-up was lost."""
        if peers:
            try:
                self.on_jobs_committed(peers)
            except Exception:
                log.exception("waking the forward workers failed: their next poll sends the jobs")
