"""Hostile input for HL7 v2: the ER7 parser, the HL7 intake behind the MLLP listener, and MLLP framing
(hypothesis; docs/security.md).

- ``parse_message`` answers any bytes with a message or an ``Hl7Error`` (its documented refusals, AE or AR with a
  table 0357 code), never another exception; an error that read the MSH carries a header an ACK can be built on.
- the intake's handler (what the MLLP listener calls) answers every frame with an ACK whose MSA-1 is AA, AE or AR,
  never raises, and takes bounded time.
- the ``Deframer`` yields exactly the framed messages of a stream however it is cut into reads, discards the rest,
  and never holds more than ``max_message_bytes``.

Bounded: a few hundred examples each, no example database, the same examples every run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.app import Router
from router.config import parse_config
from router.hl7.ack import ack_code_of, build_ack
from router.hl7.errors import Hl7Error
from router.hl7.message import parse_message
from router.listeners.mllp import Deframer, MessageTooLarge

from hl7msg import adt, encode, message, seg
from worklist_peers import Order, Patient, at, order_message

BOUNDED = settings(
    max_examples=300,
    deadline=None,  # each example is checked against its own bound (a loaded CI machine stalls)
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PER_EXAMPLE = 2.0  # s
VT, FS, CR = 0x0B, 0x1C, 0x0D

PATIENT = Patient("FZ1", "Fuzz", "Hl7", "19700101", "F")
VALID = [
    encode(adt("A01", {3: "FZ1^^^HOSP^MR", 5: "Fuzz^Hl7", 7: "19700101", 8: "F"})),
    encode(adt("A40", {3: "FZ1^^^HOSP^MR"}, seg("MRG", {1: "FZ0^^^HOSP^MR"}))),
    encode(order_message(Order("A7001", PATIENT, "CT", at("20241122093000")))),
    encode(message("ORU^R01", seg("PID", {3: "FZ1"}), seg("OBX", {1: "1", 2: "TX", 5: "text~with^all\\&delimiters"}))),
]
DELIMITERS = b"|^~\\&\r\n\x0b\x1c"


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    """A valid message with a few hostile edits: delimiters and bytes inserted, fields cut, MSH-2 or MSH-18
    changed, segments repeated."""
    raw = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 5))):
        at_ = draw(st.integers(0, max(0, len(raw) - 1)))
        edit = draw(st.sampled_from(["delimiter", "bytes", "cut", "repeat", "msh2", "charset", "high"]))
        if edit == "delimiter":
            raw[at_:at_] = draw(st.binary(min_size=1, max_size=6).map(lambda b: bytes(DELIMITERS[x % 9] for x in b)))
        elif edit == "bytes":
            raw[at_ : at_ + draw(st.integers(0, 8))] = draw(st.binary(max_size=8))
        elif edit == "cut":
            del raw[max(at_, 1) :]
        elif edit == "repeat":
            raw[at_:at_] = raw[at_ : at_ + draw(st.integers(1, 80))] * draw(st.integers(2, 40))
        elif edit == "msh2":
            raw[4:8] = draw(st.binary(min_size=0, max_size=6))
        elif edit == "charset":
            raw[at_:at_] = b"|" + draw(st.sampled_from([b"8859/1", b"UNICODE UTF-8", b"ISO IR87", b"X" * 40, b""]))
        else:
            raw[at_:at_] = draw(st.binary(min_size=1, max_size=4).map(lambda b: bytes(0x80 | x for x in b)))
    return bytes(raw)


def parsed_or_refused(raw: bytes) -> None:
    started = time.monotonic()
    try:
        parse_message(raw, accepted_processing_ids=("P", "T", "D"))
    except Hl7Error as exc:
        assert exc.ack_code in ("AE", "AR") and 100 <= exc.error_code <= 207
        if exc.partial is not None:
            assert build_ack(exc.partial, exc.ack_code, [exc]).startswith(b"MSH")
    assert time.monotonic() - started < PER_EXAMPLE


@BOUNDED
@given(raw=st.binary(max_size=2048))
def test_any_bytes_are_parsed_or_refused(raw: bytes) -> None:
    parsed_or_refused(raw)
    parsed_or_refused(b"MSH|^~\\&|" + raw)


@BOUNDED
@given(raw=hostile_messages())
def test_hostile_messages_are_parsed_or_refused(raw: bytes) -> None:
    parsed_or_refused(raw)


# -- the intake behind the MLLP listener ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    workdir = tmp_path_factory.mktemp("fuzz-hl7")
    (workdir / "rules").mkdir()
    router = Router(parse_config({"data_dir": "var", "rules_dir": "rules"}, workdir))
    try:
        yield router
    finally:
        router.ingestor.close()
        router.engine.dispose()


def test_the_intake_acknowledges_every_hostile_message(intake: Router) -> None:
    codes: set[str] = set()

    @settings(BOUNDED, max_examples=200)
    @given(raw=hostile_messages())
    def check(raw: bytes) -> None:
        started = time.monotonic()
        ack = intake.hl7.handle(raw, "127.0.0.1:1")
        assert time.monotonic() - started < PER_EXAMPLE
        assert ack.startswith(b"MSH"), ack[:80]
        code, _ = ack_code_of(ack)
        assert code in ("AA", "AE", "AR"), code
        codes.add(code)

    check()
    assert {"AA", "AE", "AR"} <= codes, f"the strategy reached only {codes}"


# -- MLLP framing ----------------------------------------------------------------------------------------------
def feed(frames: Deframer, stream: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        out.extend(frames.feed(stream[start:cut]))
        assert len(frames.buf) <= frames.max_message_bytes
        start = cut
    return out


not_framing = st.binary(max_size=200).map(lambda b: bytes(x for x in b if x not in (VT, FS)))
junk = not_framing.map(lambda b: b.lstrip(b"\r"))  # a CR right after FS belongs to the frame before
body = not_framing.map(lambda b: b.replace(b"\r", b"") or b"x")


@BOUNDED
@given(
    messages=st.lists(st.tuples(body, junk, st.booleans()), max_size=8),
    cuts=st.lists(st.integers(0, 3000), max_size=20),
)
def test_framed_messages_come_out_whole_however_the_stream_is_cut(
    messages: list[tuple[bytes, bytes, bool]], cuts: list[int]
) -> None:
    """Each message preceded by junk (outside any frame), ended by FS with or without CR."""
    stream = b"".join(junk + bytes([VT]) + body + bytes([FS]) + (b"\r" if cr else b"") for body, junk, cr in messages)
    frames = Deframer(max_message_bytes=1 << 20)
    assert feed(frames, stream, [c for c in cuts if c < len(stream)]) == [body for body, _junk, _cr in messages]
    assert frames.take_discarded() == sum(len(junk) for _body, junk, _cr in messages)


@BOUNDED
@given(stream=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=20), limit=st.integers(1, 600))
def test_any_stream_is_framed_within_the_limit(stream: bytes, cuts: list[int], limit: int) -> None:
    frames = Deframer(max_message_bytes=limit)
    try:
        for message in feed(frames, stream, [c for c in cuts if c < len(stream)]):
            assert len(message) <= limit and VT not in message and FS not in message
    except MessageTooLarge:
        assert any(len(part) > limit for part in stream.split(bytes([FS])))
