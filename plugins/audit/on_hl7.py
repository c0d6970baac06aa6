"""HL7 messages applied (AA): Patient Record for ADT, Order Record for ORM^O01 / OMI^O23 (PS3.15 A.5.3.13-14).

The action follows the trigger event or order control: A01 A04 A05 A28 register a patient (C), A08 A31 update
one (U), a merge (A40, A34) updates the surviving patient (U) and removes the merged ones (D, one message each);
ORC-1 NW creates an order (C), XO and SC change it (U), CA DC OC cancel it (D). A message acknowledged AE or AR
changed nothing: no record message (its stage events are dropped).
"""

from __future__ import annotations

from plugins.audit import events, facts, stage
from plugins.audit.message import Participant
from plugins.audit.state import Running, running
from router.hl7.message import Hl7Header, Hl7Message
from router.hl7.patients import MERGE_EVENTS, UPDATE_EVENTS
from router.hooks.specs import hookimpl

CREATE_EVENTS = {"A01", "A04", "A05", "A28"}
ORDER_MESSAGES = {("ORM", "O01"), ("OMI", "O23")}
ORDER_ACTIONS = {"NW": "C", "XO": "U", "SC": "U", "CA": "D", "DC": "D", "OC": "D"}


def record_message(state: Running, msg: Hl7Message, action: str | None, users: list[Participant]) -> None:
    """The record messages of ``msg``; ``action``: as the message says (None) or this one (a forward: R)."""
    details = [("MSH-10", msg.control_id.encode())]
    if msg.message_code == "ADT" and msg.trigger_event in UPDATE_EVENTS | MERGE_EVENTS:
        own = "C" if msg.trigger_event in CREATE_EVENTS else "U"
        state.record(events.record(events.PATIENT_RECORD, action or own, users, facts.from_hl7(msg), details))
        if msg.trigger_event in MERGE_EVENTS and action is None:
            for prior in facts.prior_ids(msg):
                state.record(events.record(events.PATIENT_RECORD, "D", users, facts.Patient(prior, prior), details))
    elif (msg.message_code, msg.trigger_event) in ORDER_MESSAGES:
        control = msg.value("ORC", 1)
        orders = [("ORC-2", msg.value("ORC", 2).encode()), ("ORC-3", msg.value("ORC", 3).encode())]
        state.record(events.record(events.ORDER_RECORD, action or ORDER_ACTIONS.get(control, "U"), users,
                                   facts.from_hl7(msg), details + [d for d in orders if d[1]]))  # fmt: skip


@hookimpl
def router_hl7_acknowledged(ack_code: str, control_id: str, sending_application: str, sending_facility: str,
                            address: str, message: Hl7Header | None) -> None:  # fmt: skip
    key = ("hl7", sending_application, sending_facility, control_id)
    state = running()
    if state is None or ack_code != "AA" or not isinstance(message, Hl7Message):
        stage.drop(key)
        return
    users = [events.hl7_application(sending_application, sending_facility, address), state.local.participant()]
    record_message(state, message, None, users)
    stage.flush(state, key)
