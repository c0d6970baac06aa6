"""Security Alerts and User Authentication (PS3.15 A.5.3.11-12): what was refused, what changed, who logged in.

- a rejected association, a failed TLS handshake: Security Alert "Node Authentication", minor failure (the
  refusal worked), the other node as the alert subject (its address) and performer;
- rule files read again: Security Alert "Software Configuration", success when the new rules are in force, minor
  failure when the edit was refused, every rule file as a subject (its ``file://`` URI);
- an HTTP request refused 401: User Authentication "Login" failed, and Security Alert "Use of Restricted
  Function" about the path it asked for;
- an HTTP request authenticated: User Authentication "Login" succeeded. Every request authenticates (there are no
  sessions), so the same user from the same host is audited again only after ``login_repeat_after`` seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

from plugins.audit import events
from plugins.audit.state import running
from router.hooks.specs import hookimpl


@hookimpl
def router_association_rejected(calling_ae: str, called_ae: str, address: str, reason: str, result: int,
                                source: int, diagnostic: int) -> None:  # fmt: skip
    state = running()
    if state is None:
        return
    node = events.dicom_node(calling_ae, address, False)
    text = (f"association from {calling_ae!r} at {address} to {called_ae!r} rejected: {reason} "
            f"(A-ASSOCIATE-RJ result {result}, source {source}, reason {diagnostic})")  # fmt: skip
    subject = events.alert_subject(node.host, text, name=calling_ae or node.host)
    state.record(events.security_alert(events.NODE_AUTHENTICATION, events.MINOR, state.local.participant(), [node],
                                       [subject]))  # fmt: skip


@hookimpl
def router_tls_failed(direction: str, address: str, port: int, reason: str) -> None:
    """A TLS handshake failed (``direction``: inbound, a client of the router's; outbound, a peer it called)."""
    state = running()
    if state is None:
        return
    host = events.split_address(address)[0] if address.count(":") == 1 else address.strip("[]")
    node = events.Participant(host, False, host=host)
    text = f"TLS handshake {direction} with {host} port {port} failed: {reason}"
    state.record(events.security_alert(events.NODE_AUTHENTICATION, events.MINOR, state.local.participant(), [node],
                                       [events.alert_subject(host, text)]))  # fmt: skip


@hookimpl
def router_rules_reloaded(ok: bool, rules: int, files: list[str], problems: list[str]) -> None:
    state = running()
    if state is None:
        return
    if ok:
        text = f"rules read again: {rules} rule(s) from {len(files)} file(s) in force"
    else:
        text = f"rule edit refused, the {rules} rule(s) in force stay: " + "; ".join(problems)
    subjects = [
        events.alert_subject(Path(f).resolve().as_uri(), text, events.URI, events.ROLE_MASTER_FILE)
        for f in files or [str(state.config.rules_dir)]
    ]
    state.record(events.security_alert(events.SOFTWARE_CONFIGURATION, events.SUCCESS if ok else events.MINOR,
                                       state.local.participant(), [], subjects))  # fmt: skip


@hookimpl
def router_authentication_failed(user: str, reason: str, address: str, path: str) -> None:
    state = running()
    if state is None:
        return
    text = f"HTTP request for {path} refused (401): {reason}"
    client = events.http_client(user, address, True)
    state.record(events.user_authentication(client, state.local.participant(), events.MINOR, text))
    performer = events.http_client(user, address, False)
    subject = events.alert_subject(path, f"{text}, from {address}", events.URI)
    state.record(events.security_alert(events.RESTRICTED_FUNCTION, events.MINOR, state.local.participant(),
                                       [performer], [subject]))  # fmt: skip


@hookimpl
def router_authentication_succeeded(user: str, method: str, address: str, path: str) -> None:
    state = running()
    if state is None:
        return
    client = events.http_client(user, address, True)
    key, now = (user, method, client.host), time.monotonic()
    last = state.logins.get(key)
    if last is not None and now - last < state.settings.login_repeat_after:
        return
    state.logins[key] = now
    if len(state.logins) > 10000:  # forget the oldest logins rather than grow without bound
        for old in sorted(state.logins, key=state.logins.__getitem__)[:5000]:
            del state.logins[old]
    text = f"{method} authentication for {path}"
    state.record(events.user_authentication(client, state.local.participant(), events.SUCCESS, text))
