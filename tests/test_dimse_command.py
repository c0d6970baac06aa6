"""router._pynetdicom.command encodes DIMSE command sets itself: the bytes must be pydicom's (pure logic)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import dimse_messages as msgs
from pynetdicom import dimse_primitives as prims
from pynetdicom.dsutils import decode, encode

from router import _pynetdicom
from router._pynetdicom import command
from router._pynetdicom.command import encode_command, encode_command_set, encode_primitive


@pytest.fixture(autouse=True, scope="module")
def patched() -> None:
    """The router's patches, command.install() among them, as the router applies them at start-up."""
    assert _pynetdicom.install()


def message(primitive: Any, message_class: type) -> Any:
    msg = message_class()
    msg.primitive_to_message(primitive)
    msg.test_primitive = primitive  # for encode_primitive, which starts from the primitive
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


def c_store_rq_from_file() -> Any:
    p: Any = prims.C_STORE()
    p.MessageID, p.Priority = 4, 2
    p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = CTImageStorage, generate_uid()
    p._dataset_path = ("/nonexistent/object.dcm", 132)  # what send_c_store sets for a file sent in chunks
    return message(p, msgs.C_STORE_RQ)


def c_store_rsp_comment() -> Any:
    p: Any = prims.C_STORE()
    p.MessageIDBeingRespondedTo, p.Status = 2, 0xC000
    p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = CTImageStorage, "1.2.3"
    p.ErrorComment = "cannot decode"
    return message(p, msgs.C_STORE_RSP)


def c_find_rsp_final() -> Any:
    p: Any = prims.C_FIND()
    p.MessageIDBeingRespondedTo, p.Status = 2, 0x0000
    p.AffectedSOPClassUID = "1.2.840.10008.5.1.4.31"
    return message(p, msgs.C_FIND_RSP)


def c_echo_rq() -> Any:
    p = prims.C_ECHO()
    p.MessageID = 1
    p.AffectedSOPClassUID = "1.2.840.10008.1.1"
    return message(p, msgs.C_ECHO_RQ)


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
    "c-store-rq from a file": c_store_rq_from_file,
    "c-store-rsp error comment": c_store_rsp_comment,
    "c-find-rsp final": c_find_rsp_final,
    "c-echo-rq": c_echo_rq,
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


@pytest.mark.parametrize("build", CASES.values(), ids=CASES.keys())
def test_from_the_primitive_same_as_pynetdicom_builds_it(build: Any) -> None:
    """encode_primitive skips DIMSEMessage; its command set and data set must be what primitive_to_message makes."""
    msg = build()
    direct = encode_primitive(msg.test_primitive, type(msg))
    assert direct is not None
    command_bytes, data_set, data_set_path = direct
    assert command_bytes == encode(msg.command_set, True, True)
    if msg.data_set is not None and msg.data_set.getvalue():
        assert data_set is msg.data_set
    else:
        assert data_set is None or not data_set.getvalue()
    assert data_set_path == msg._data_set_path


def test_from_the_primitive_leaves_to_pydicom_what_encode_command_does() -> None:
    p: Any = prims.C_STORE()
    p.MessageIDBeingRespondedTo, p.Status = 3, 0xA900
    p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = CTImageStorage, "1.2.3"
    p.OffendingElement = [0x00100010]  # AT
    assert encode_primitive(p, msgs.C_STORE_RSP) is None
    p.OffendingElement = None
    p.ErrorComment = "caf\u00e9"  # not ASCII
    assert encode_primitive(p, msgs.C_STORE_RSP) is None


def received(msg: Any) -> Any:
    """``msg`` as the peer's DUL would rebuild it: encoded by pynetdicom, decoded from its P-DATA primitives."""
    copy = msgs.DIMSEMessage()
    done = False
    for pdata in msg.encode_msg(1, 16384):
        done = copy.decode_msg(pdata)
    assert done
    return copy


def primitive_state(primitive: Any) -> dict[str, Any]:
    """Every property of a DIMSE primitive (what a service reads), plus what message_to_primitive sets privately."""
    state: dict[str, Any] = {}
    for name in dir(type(primitive)):
        if isinstance(getattr(type(primitive), name, None), property):
            value = getattr(primitive, name)
            state[name] = (type(value), value.getvalue() if isinstance(value, BytesIO) else value)
    for name in ("_context_id", "_dataset_path", "_dataset_file"):
        state[name] = getattr(primitive, name, None)
    return state


DECODE_CASES = {k: v for k, v in CASES.items() if k != "c-store-rq from a file"}  # that one names no real file


READ_DIRECTLY = {"c-store-rq", "c-store-rsp even uid", "c-store-rsp odd uid", "c-move-rsp", "c-find-rq"}
READ_DIRECTLY |= {"n-event-report-rq", "c-find-rsp final", "c-echo-rq"}  # the others hold an AE or LO value


@pytest.mark.parametrize("name", DECODE_CASES)
def test_decoded_primitive_same_as_pynetdicom_makes_it(name: str) -> None:
    msg = received(DECODE_CASES[name]())
    theirs = primitive_state(command._message_to_primitive(msg))  # pynetdicom's own conversion
    assert primitive_state(msg.message_to_primitive()) == theirs  # the installed one
    ours = command.decode_primitive(msg)
    assert (ours is not None) == (name in READ_DIRECTLY)
    if ours is not None:
        assert primitive_state(ours) == theirs


def test_decoding_leaves_to_pynetdicom_what_it_does_not_read() -> None:
    assert command.decode_primitive(received(c_echo_rsp_with_comment("odd"))) is None  # LO
    assert command.decode_primitive(received(c_store_rq(MoveOriginatorApplicationEntityTitle="MOVESCU"))) is None
    multi = c_store_rsp(0x0000, "1.2.34")
    multi.command_set.add_new(0x00000002, "UI", ["1.2.3", "1.2.4"])  # two values where one is allowed
    assert command.decode_primitive(received(multi)) is None
    # the installed path still decodes all of them, through pynetdicom
    assert received(c_echo_rsp_with_comment("odd")).message_to_primitive().ErrorComment == "odd"


@pytest.mark.parametrize("name", DECODE_CASES)
def test_a_received_command_set_reads_as_pydicom_decodes_it(name: str) -> None:
    msg = received(DECODE_CASES[name]())
    assert isinstance(msg.command_set, command.CommandSet)
    theirs = decode(BytesIO(msg.encoded_command_set.getvalue()), True, True)
    lazy = command.CommandSet(msg.encoded_command_set.getvalue())
    for keyword in ("CommandField", "CommandDataSetType", "MessageID", "AffectedSOPInstanceUID", "Status"):
        if keyword in theirs:
            assert getattr(lazy, keyword) == getattr(theirs, keyword)  # read from the bytes
    assert "_router_lazy" in object.__getattribute__(lazy, "__dict__")  # nothing decoded by pydicom yet
    assert msg.command_set == theirs and len(msg.command_set) == len(theirs)  # decoded, into itself, when used
    assert [e.keyword for e in msg.command_set] == [e.keyword for e in theirs]
