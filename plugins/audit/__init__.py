"""The IHE ATNA audit trail (PS3.15 A.5 messages, RFC 5424 syslog over TLS or UDP), as a plugin on the hooks.

Configured under ``plugins: {audit: {...}}`` (``plugins.audit.settings``); with no repository and no file it
records nothing. In each router process (``serve``, ``forward``) ``router_startup`` opens the trail: the durable
spool, one sender per repository, the optional local file; every hook below then records its messages before it
returns, and the senders deliver them. docs/audit.md says which event sends which message.

The hook implementations live in ``on_objects`` (instances, queries, MPPS), ``on_hl7`` (patient and order
records), ``on_security`` (alerts, logins) and ``on_admin`` (administrative changes); they are imported here so
that this module is the plugin.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

from plugins.audit import events, state
from plugins.audit.on_admin import router_admin_changed
from plugins.audit.on_hl7 import router_hl7_acknowledged
from plugins.audit.on_objects import (
    router_forwarded,
    router_instance_refused,
    router_instance_stored,
    router_instances_exported,
    router_mpps_created,
    router_mpps_updated,
    router_query_answered,
)
from plugins.audit.on_security import (
    router_association_rejected,
    router_authentication_failed,
    router_authentication_succeeded,
    router_rules_reloaded,
    router_tls_failed,
)
from plugins.audit.settings import Settings
from plugins.audit.stage import AuditStage
from plugins.audit.syslog import hostname
from plugins.audit.trail import AuditTrail
from router.config import RouterConfig
from router.hooks.specs import hookimpl
from router.intake.stage import Stage

__all__ = [
    "router_admin_changed",
    "router_association_rejected",
    "router_authentication_failed",
    "router_authentication_succeeded",
    "router_forwarded",
    "router_hl7_acknowledged",
    "router_instance_refused",
    "router_instance_stored",
    "router_instances_exported",
    "router_mpps_created",
    "router_mpps_updated",
    "router_query_answered",
    "router_rules_reloaded",
    "router_shutdown",
    "router_stages",
    "router_startup",
    "router_tls_failed",
    "settings_model",
]

log = logging.getLogger("router.audit")

settings_model = Settings


def _launcher() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


@hookimpl
def router_startup(config: RouterConfig, process: str, plugin_settings: Mapping[str, BaseModel]) -> None:
    settings = plugin_settings.get("audit")
    if not isinstance(settings, Settings) or not settings.enabled:
        return
    settings = settings.resolved(config.source.parent if config.source else Path.cwd())
    trail = AuditTrail(settings, config.data_dir, config.ae_title)
    trail.start()
    running = state.Running(config, settings, trail, events.Local(config.ae_title, hostname(), process))
    state.begin(running)
    running.record(events.application_activity(running.local, start=True, launcher=_launcher()))
    where = ", ".join(r.where for r in settings.repositories) or "no repository"
    log.info("audit trail (%s) to %s%s", process, where, f", and {settings.file}" if settings.file else "")


@hookimpl
def router_shutdown(process: str) -> None:
    running = state.end()
    if running is None:
        return
    try:
        running.record(events.application_activity(running.local, start=False, launcher=_launcher()))
    finally:
        running.trail.stop()
        running.close()


@hookimpl
def router_stages() -> list[Stage]:
    return [AuditStage()]
