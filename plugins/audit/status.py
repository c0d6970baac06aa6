"""``router audit status``: per repository, how many messages wait in the spool and what its sender last saw."""

from __future__ import annotations

from pathlib import Path

from plugins.audit.settings import Settings
from plugins.audit.trail import spool_for


def status_lines(settings: Settings, data_dir: Path) -> list[str]:
    if not settings.enabled:
        return ["the audit trail is off: plugins.audit names no repository and no file"]
    lines = []
    spool = spool_for(settings, data_dir)
    for repo in settings.repositories:
        rs = spool.repositories[repo.name]
        if not rs.folder.is_dir():
            lines.append(f"{repo.where:<40} {0:>8} waiting (nothing spooled yet)")
            continue
        depth, age = len(rs.pending()), rs.oldest_age()
        oldest = f", the oldest for {age:.0f} s" if age is not None else ""
        lines.append(f"{repo.where:<40} {depth:>8} waiting{oldest}")
        lines.append(f"  sender: {'running' if rs.sender_running() else 'not running (no router process)'}")
        state = rs.state()
        if state.get("last_error"):
            lines.append(f"  last attempt failed at {state.get('error_at', '?')}: {state['last_error']}")
        elif state.get("last_delivery"):
            lines.append(f"  last delivery at {state['last_delivery']}")
        lines.append(f"  spool: {rs.folder}")
    if settings.file is not None:
        lines.append(f"file: {settings.file}")
    return lines
