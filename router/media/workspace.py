"""What an import or export opens of the router, and closes after it: the plugins, and (only when needed) the
index, the rules and the intake. The router need not be running: the same data folder and database, the same
write lock (``router.store.writelock``) as a running router's, so both can work at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from router.config import RouterConfig
from router.hooks.manager import RouterPlugins, build_plugin_manager, collect_stages, notify
from router.intake.envelope import read_values_as_they_came

if TYPE_CHECKING:
    from router.intake.dicom import Ingestor
    from router.intake.pipeline import PipelineResult
    from router.intake.stage import Stage
    from router.media.importer import Taken
    from router.rules.model import RuleSet
    from router.store.writelock import WriteLock


class WorkspaceError(Exception):
    """The router's rules or data cannot be used (the message says why)."""


@dataclass
class Workspace:
    config: RouterConfig
    process: str  # import | export: router_startup's process
    pm: RouterPlugins = field(init=False)
    _engine: Engine | None = None
    _lock: WriteLock | None = None
    _ingestor: Ingestor | None = None
    _rules: RuleSet | None = None
    _stages: dict[str, Stage] | None = None

    def __post_init__(self) -> None:
        read_values_as_they_came()
        self.pm = build_plugin_manager(self.config)

    def __enter__(self) -> Workspace:
        notify(self.pm, "router_startup", config=self.config, process=self.process, plugin_settings=self.pm.settings)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._ingestor is not None:
                self._ingestor.close()
            if self._engine is not None:
                self._engine.dispose()
            if self._lock is not None:
                self._lock.close()
        finally:
            notify(self.pm, "router_shutdown", process=self.process)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from router.app import DATA_FOLDERS
            from router.store import files
            from router.store.db import make_engine
            from router.store.writelock import sqlite_file

            url = self.config.effective_database_url
            files.set_access(self.config.data_access)
            files.secure_data_dir(self.config.data_dir, DATA_FOLDERS, sqlite_file(url))
            self._engine = make_engine(url)
        return self._engine

    @property
    def write_lock(self) -> WriteLock:
        if self._lock is None:
            from router.store.writelock import write_lock_for

            self._lock = write_lock_for(self.config.effective_database_url)
        return self._lock

    @property
    def stages(self) -> dict[str, Stage]:
        if self._stages is None:
            self._stages = collect_stages(self.pm)
        return self._stages

    @property
    def rules(self) -> RuleSet:
        if self._rules is None:
            from router.rules.loader import load_rules

            loaded = load_rules(self.config.rules_dir, self.stages, self.config)
            if loaded.problems:
                raise WorkspaceError("the rules are invalid:\n" + "\n".join(loaded.problems))
            self._rules = loaded.ruleset
        return self._rules

    @property
    def ingestor(self) -> Ingestor:
        if self._ingestor is None:
            from router.intake.base import IntakeContext
            from router.intake.dicom import Ingestor

            ruleset = self.rules
            context = IntakeContext(self.config, self.engine, lambda: ruleset, self.stages, self.pm, self.write_lock)
            self._ingestor = Ingestor(context)
        return self._ingestor

    def stored_digest(self, sop_uid: str) -> str | None:
        from router.store.index import find_instance

        with self.engine.connect() as conn:
            found = find_instance(conn, sop_uid)
        return found.sha256 if found is not None else None

    def dry_run(self, env: Any) -> PipelineResult:
        from router.intake.pipeline import run_pipeline

        return run_pipeline(env, self.rules, self.stages, self.config, dry_run=True, engine=self.engine)

    def send(self, peer: str, taken: list[Taken]) -> None:
        from router.media.direct import send_taken

        send_taken(self.config, peer, taken)
