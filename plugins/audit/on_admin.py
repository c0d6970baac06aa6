"""Administrative changes (``router_admin_changed``: the admin API, the console, ``router users``) as Security
Alerts (PS3.15 A.5.3.11), success, the user who made the change as performer and what was changed as subject:

- a rule file saved or reverted: "Software Configuration", the file (its ``file://`` URI, a master file);
- a user, a password, a role or an API token added, changed or removed, a console session ended: "User Security
  Attributes Changed", the user (RFC 3881 "User Identifier");
- a peer paused or resumed: "Network Configuration", the peer (its name);
- jobs retried or deleted, a study sent to a peer: "Use of Restricted Function" (an operator's function used), the
  job, the peer or the study.

The text of each subject's Alert Description says what was done (``rules.saved 10-ct.yaml``, how many jobs ...),
never a secret: ``detail`` never holds one (the hook's contract).
"""

from __future__ import annotations

from typing import Any

from plugins.audit import events
from plugins.audit.message import AuditEvent, Code, Participant
from plugins.audit.state import running
from router.hooks.specs import hookimpl

NETWORK_CONFIGURATION = Code("110128", "DCM", "Network Configuration")
USER_SECURITY_ATTRIBUTES = Code("110137", "DCM", "User Security Attributes Changed")
USER_IDENTIFIER = Code("11", "RFC-3881", "User Identifier")
JOB_NUMBER = Code("20", "RFC-3881", "Job Number")
STUDY_UID = events.STUDY_UID

_KINDS: dict[str, tuple[Code, Code, str]] = {  # action prefix: alert type, subject id type, role
    "rules": (events.SOFTWARE_CONFIGURATION, events.URI, events.ROLE_MASTER_FILE),
    "user": (USER_SECURITY_ATTRIBUTES, USER_IDENTIFIER, events.ROLE_SECURITY_RESOURCE),
    "token": (USER_SECURITY_ATTRIBUTES, USER_IDENTIFIER, events.ROLE_SECURITY_RESOURCE),
    "session": (USER_SECURITY_ATTRIBUTES, USER_IDENTIFIER, events.ROLE_SECURITY_RESOURCE),
    "peer": (NETWORK_CONFIGURATION, events.NODE_ID, events.ROLE_MASTER_FILE),
    "job": (events.RESTRICTED_FUNCTION, JOB_NUMBER, events.ROLE_JOB),
    "jobs": (events.RESTRICTED_FUNCTION, JOB_NUMBER, events.ROLE_JOB),
    "study": (events.RESTRICTED_FUNCTION, STUDY_UID, events.ROLE_REPORT),
    "schema": (events.SOFTWARE_CONFIGURATION, events.URI, events.ROLE_MASTER_FILE),  # router db upgrade
}


def admin_alert(
    reporter: Participant, user: str, role: str, action: str, target: str, address: str, detail: dict[str, Any]
) -> AuditEvent:
    """The Security Alert of one administrative change (a rule file's ``target``: its URI)."""
    alert_type, id_type, object_role = _KINDS.get(action.split(".", 1)[0], _KINDS["job"])
    said = ", ".join(f"{key}={value}" for key, value in sorted(detail.items()))
    text = (
        f"{action} {target}"
        + (f" ({said})" if said else "")
        + f" by {user or 'unknown'}"
        + (f" ({role})" if role else "")
    )
    performer = events.http_client(user, address, False) if address else Participant(user, False)
    subject = events.alert_subject(target or action, text, id_type, object_role)
    return events.security_alert(alert_type, events.SUCCESS, reporter, [performer], [subject])


@hookimpl
def router_admin_changed(user: str, role: str, action: str, target: str, address: str, detail: dict[str, Any]) -> None:
    state = running()
    if state is None:
        return
    if action.startswith("rules."):  # a rule file's name: named by its URI, as router_rules_reloaded names it
        target = (state.config.rules_dir / target).resolve().as_uri()
    state.record(admin_alert(state.local.participant(), user, role, action, target, address, detail))
