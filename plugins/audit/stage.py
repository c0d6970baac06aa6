"""The ``audit`` stage: a rule records an extra audit message for what it matches.

    - name: teleradiology
      when: {kind: dicom, calling_ae: CT1}
      then:
        - forward: NIGHTHAWK
        - audit: {event: export, to: NIGHTHAWK, description: "night reading by the tele-radiology partner"}

``event``: ``export`` (PS3.15 A.5.3.4 Data Export: the objects leave the router's security domain for the peer
``to``), ``import`` (A.5.3.5 Data Import: they entered it from their sender) or ``security-alert`` (A.5.3.11, type
"Use of Restricted Function", about the sender). ``outcome``: ``success`` (default), ``minor``, ``serious`` or
``major``. ``description``: free text for the message. ``router rules check`` checks all of them.

A stage runs before the object is durable, so the message is not recorded there: it waits until the object is
stored (``router_instance_stored``), the HL7 message acknowledged AA, or the MPPS message accepted, and is dropped
when the object is refused. In a dry run (``router rules test``) nothing is recorded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from plugins.audit import events, facts
from plugins.audit.message import AuditEvent, Participant
from plugins.audit.state import Running, running
from router.config import RouterConfig
from router.intake.envelope import Envelope
from router.intake.stage import StageContext

EVENTS = ("export", "import", "security-alert")
KEYS = {"event", "outcome", "to", "description"}
PENDING_MAX = 10000  # events waiting for their object; the oldest go first beyond this
PENDING_AGE = 600.0  # s: an event whose object was neither stored nor refused by then is dropped

Key = tuple[str, ...]


def key_of(env: Envelope) -> Key:
    """Which later hook finds the events a stage planned for ``env``."""
    if env.kind == "hl7":
        msg = env.message
        return ("hl7", msg.sending_application, msg.sending_facility, msg.control_id)
    if env.kind == "mpps":
        return ("mpps", env.message.sop_uid)
    return ("dicom", env.sop_instance_uid)


class Pending:
    """Audit events planned by stages, waiting for their object to be durable (thread-safe, bounded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: OrderedDict[Key, tuple[float, list[AuditEvent]]] = OrderedDict()

    def add(self, key: Key, event: AuditEvent) -> None:
        now = time.monotonic()
        with self._lock:
            _, planned = self._events.pop(key, (now, []))
            self._events[key] = (now, [*planned, event])
            while self._events and (len(self._events) > PENDING_MAX or next(iter(self._events.values()))[0] <
                                    now - PENDING_AGE):  # fmt: skip
                self._events.popitem(last=False)

    def take(self, key: Key) -> list[AuditEvent]:
        with self._lock:
            return self._events.pop(key, (0.0, []))[1]


PENDING = Pending()


def flush(state: Running, key: Key) -> None:
    """Record the events planned for ``key``: its object is durable now."""
    for event in PENDING.take(key):
        event.when = datetime.now(UTC)  # the time it became true
        state.record(event)


def drop(key: Key) -> None:
    PENDING.take(key)


def problems(args: Any, config: RouterConfig) -> list[str]:
    if not isinstance(args, dict):
        return [f"expects a mapping: {{event: {' | '.join(EVENTS)}, outcome: ..., to: PEER, description: ...}}"]
    found = [f"unknown key {k!r} (expected {', '.join(sorted(KEYS))})" for k in args if k not in KEYS]
    if args.get("event") not in EVENTS:
        found.append(f"event: expected one of {', '.join(EVENTS)} (got {args.get('event')!r})")
    if "outcome" in args and args["outcome"] not in events.OUTCOMES:
        found.append(f"outcome: expected one of {', '.join(events.OUTCOMES)} (got {args['outcome']!r})")
    if "description" in args and not isinstance(args["description"], str):
        found.append("description: expects text")
    if args.get("event") == "export":
        if "to" not in args:
            found.append("export: name the peer the objects go to (to: PEER)")
        elif args["to"] not in config.peers:
            found.append(f"to: {args['to']!r} is not a configured peer")
    elif "to" in args:
        found.append("to: only an export names a peer")
    return found


def sender(env: Envelope) -> tuple[Participant, str]:
    """Who sent ``env``, as a participant (the requestor), and a URI for where it came from."""
    src = env.source
    if src.protocol == "mllp":
        return events.hl7_application(src.calling_ae, "", src.address), f"mllp://{src.address}"
    if src.protocol == "stow":
        return events.http_client("", src.address, True), f"http://{src.address}"
    return events.dicom_node(src.calling_ae, src.address, True), f"dicom://{src.calling_ae}@{src.address}"


def subjects(env: Envelope) -> list[facts.Subject]:
    if env.kind == "hl7":
        return [facts.Subject(facts.from_hl7(env.message))]
    if env.kind == "mpps":
        return [facts.from_dataset(env.message.state)]
    return [facts.from_envelope(env)]


def build(state: Running, env: Envelope, args: dict[str, Any]) -> AuditEvent:
    outcome = events.OUTCOMES[args.get("outcome", "success")]
    text = args.get("description", "")
    who, where = sender(env)
    if args["event"] == "export":
        remote, uri = state.peer(args["to"])
        return events.data_export(subjects(env), state.local.participant(), remote, uri, outcome, text)
    if args["event"] == "import":
        return events.data_import(subjects(env), state.local.participant(), who, where, outcome, text)
    subject = events.alert_subject(who.host or who.user_id, text or f"a rule marked this {env.kind} object",
                                   name=who.user_id)  # fmt: skip
    return events.security_alert(events.RESTRICTED_FUNCTION, outcome, state.local.participant(), [who], [subject])


class AuditStage:
    name = "audit"

    def check(self, args: Any, config: RouterConfig) -> list[str]:
        return problems(args, config)

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        what = f"audit: {args['event']}" + (f" to {args['to']}" if "to" in args else "")
        if ctx.dry_run:
            return f"{what}: would be recorded once stored"
        state = running()
        if state is None:
            return f"{what}: not recorded (plugins.audit has no repository and no file)"
        PENDING.add(key_of(env), build(state, env, args))
        return f"{what}: recorded once stored"
