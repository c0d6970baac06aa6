"""router.dimse.command encodes DIMSE command sets itself: the bytes must be pydicom's (pure logic)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import dimse_messages as msgs
from pynetdicom import dimse_primitives as prims
from pynetdicom.dsutils import encode

from router.dimse import command
from router.dimse.command import encode_command, encode_command_set

command.install()  # what router.dimse.reactor.install() does for the router


def message(primitive: Any, message_class: type) -> Any:
    msg = message_class()
    msg.primitive_to_message(primitive)
    return msg


def c_store_rq(**extra: Any) -> Any:
    p = prims.C_STORE()
    p.MessageID, p.Priority = 1, 0
    p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = CTImageStorage, generate_uid()
    for key, value in extra.items():
        setattr(p, key, value)
    return message(p, msgs.C_STORE_RQ)


def c_store_rsp(status: int, uid: str) -> Any:
    p = prims.C_STORE()
    p.MessageIDBeingRespondedTo, p.Status = 65535, status
    p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = CTImageStorage, uid
    return message(p, msgs.C_STORE_RSP)


def c_move_rsp() -> Any:
    p = prims.C_MOVE()
    p.MessageIDBeingRespondedTo, p.Status = 3, 0xFF00
    p.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    p.NumberOfRemainingSuboperations, p.NumberOfCompletedSuboperations = 12, 0
    p.NumberOfFailedSuboperations, p.NumberOfWarningSuboperations = 1, 65535
    return message(p, msgs.C_MOVE_RSP)


def c_find_rq() -> Any:
    p = prims.C_FIND()
    p.MessageID, p.Priority = 2, 2
    p.AffectedSOPClassUID = "1.2.840.10008.5.1.4.31"
    p.Identifier = BytesIO(b"\x10\x00\x10\x00\x02\x00\x00\x00*\x20")  # (0010,0010) PN "*"
    return message(p, msgs.C_FIND_RQ)


def n_event_report_rq() -> Any:
    p = prims.N_EVENT_REPORT()
    p.MessageID, p.EventTypeID = 9, 1
    p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1"
    return message(p, msgs.N_EVENT_REPORT_RQ)


def c_echo_rsp_with_comment(comment: str) -> Any:
    p = prims.C_ECHO()
    p.MessageIDBeingRespondedTo, p.Status = 1, 0x0122
    p.AffectedSOPClassUID = "1.2.840.10008.1.1"
    p.ErrorComment = comment
    return message(p, msgs.C_ECHO_RSP)


CASES = {
    "c-store-rq": c_store_rq,
    "c-store-rq move originator (odd AE)": lambda: c_store_rq(
        MoveOriginatorApplicationEntityTitle="MOVESCU", MoveOriginatorMessageID=7
    ),
    "c-store-rsp even uid": lambda: c_store_rsp(0x0000, "1.2.34"),
    "c-store-rsp odd uid": lambda: c_store_rsp(0xA700, "1.2.345"),
    "c-move-rsp": c_move_rsp,
    "c-find-rq": c_find_rq,
    "n-event-report-rq": n_event_report_rq,
    "c-echo-rsp comment": lambda: c_echo_rsp_with_comment("odd"),
}


@pytest.mark.parametrize("build", CASES.values(), ids=CASES.keys())
def test_same_bytes_as_pydicom(build: Any) -> None:
    msg = build()
    ours = encode_command(msg.command_set)
    assert ours is not None
    assert ours == encode(msg.command_set, True, True)
    assert msg.command_set.CommandGroupLength == len(ours) - 12  # set by the installed group-length hook


def test_what_it_does_not_know_goes_to_pydicom() -> None:
    msg = c_echo_rsp_with_comment("caf\u00e9")  # not ASCII
    assert encode_command(msg.command_set) is None
    assert encode_command_set(msg.command_set) == encode(msg.command_set, True, True)
    ds = Dataset()
    ds.add_new(0x00000901, "AT", [0x00100010])  # Offending Element
    assert encode_command(ds) is None
