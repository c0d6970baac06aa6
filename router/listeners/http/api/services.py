"""What the admin API works with: the router's configuration, database, plugins, rules, outbox and forward workers,
given by ``router.app.Router`` (tests make their own)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pluggy
from sqlalchemy.engine import Engine

from router.config import RouterConfig
from router.hooks.manager import notify
from router.intake.stage import Stage
from router.outbox.queue import Outbox
from router.rules.live import LiveRules
from router.store.models import utcnow
from router.store.writelock import WriteLock


@dataclass
class ApiServices:
    config: RouterConfig
    engine: Engine
    pm: pluggy.PluginManager
    rules: LiveRules
    stages: Mapping[str, Stage]
    write_lock: WriteLock
    wake: Callable[[set[str] | None], None]  # the forward workers: jobs for these peers (None: any) are ready
    ports: Callable[[], Mapping[str, int | None]] = dict  # the listeners' bound ports
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=utcnow)

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.engine, self.config.forward, self.config.data_dir, self.write_lock)

    def changed(self, user: str, role: str, action: str, target: str, address: str, **detail: Any) -> None:
        """Announce an administrative change (``router_admin_changed``) for the audit trail."""
        notify(self.pm, "router_admin_changed", user=user, role=role, action=action, target=target,
               address=address, detail=detail)  # fmt: skip
