"""The rules in force, re-read when the files change. A broken edit keeps the previous rules running.

Every reload after the first (the start-up load) is announced with ``router_rules_reloaded``: a rule change is a
configuration change an audit trail records, and so is an edit that was refused."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import pluggy
from sqlalchemy.engine import Engine

from router.config import RouterConfig
from router.hooks.manager import notify
from router.intake.stage import Stage
from router.rules.loader import directory_signature, load_rules
from router.rules.model import RuleSet
from router.rules.shared import SharedRules

log = logging.getLogger(__name__)


class LiveRules:
    def __init__(
        self, rules_dir: Path, stages: Mapping[str, Stage], config: RouterConfig, pm: pluggy.PluginManager | None = None
    ) -> None:
        self._dir = rules_dir
        self._pm = pm
        self._stages = stages
        self._config = config
        self._lock = threading.Lock()
        self._current = RuleSet()
        self._seen_signature: tuple[tuple[str, float, int], ...] | None = None
        self.last_problems: list[str] = []
        self.shared: SharedRules | None = None

    @property
    def current(self) -> RuleSet:
        return self._current

    def share(self, engine: Engine, node_id: str) -> None:
        """Route by the cluster's rule set (several nodes on one PostgreSQL database): every reload syncs the folder
        with it (``router.rules.shared``)."""
        self.shared = SharedRules(engine, self._dir, node_id, self._reload_taken)

    def reload_if_changed(self) -> bool:
        """Re-read the rule files if any changed (on a node of a cluster, after syncing them with the cluster's
        rule set); True when new rules took effect."""
        ok = self._reload()
        if self.shared is not None:
            try:
                self.shared.sync(loaded=not self.last_problems)
            except Exception as exc:  # the database is away: the rules in force stay, synced at the next reload
                log.warning("cannot sync the rules with the cluster's rule set (%s): trying again at the next "
                            "reload", type(exc).__name__)  # fmt: skip
        return ok

    def _reload_taken(self) -> bool:
        """Load the cluster's rule set just written into the folder; whether it is in force."""
        self._reload()
        return not self.last_problems

    def _reload(self) -> bool:
        with self._lock:
            signature = directory_signature(self._dir)
            if signature == self._seen_signature:
                return False
            first = self._seen_signature is None
            self._seen_signature = signature
            result = load_rules(self._dir, self._stages, self._config)
            if result.warnings and self._current.files:  # the folder went away under rules in force: keep them
                result.problems.extend(result.warnings)
            self.last_problems = result.problems
            if not result.ok:
                for problem in result.problems:
                    log.error("rules not reloaded: %s", problem)
                log.error("keeping the %d rules loaded before", len(self._current.rules))
            else:
                for warning in result.warnings:
                    log.warning("%s", warning)
                self._current = result.ruleset
                log.info(
                    "rules loaded: %d rules from %s",
                    len(result.ruleset.rules),
                    ", ".join(result.ruleset.files) or "no files",
                )
        if self._pm is not None and not first:
            current = self._current  # the new rules, or the previous ones kept
            notify(self._pm, "router_rules_reloaded", ok=result.ok, rules=len(current.rules),
                   files=list(current.files), problems=list(result.problems))  # fmt: skip
        return result.ok
