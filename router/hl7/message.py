"""Parse one HL7 v2 message (ER7) from the bytes of an MLLP frame.

How it reads a message, and why:

1. MSH-1, MSH-2 and MSH-18 are read from the raw bytes (MSH is ASCII in every supported character set), then the
   bytes are decoded per MSH-18 (see :func:`router.hl7.er7.decode`).
2. Segments are split on CR (LF and CRLF tolerated) and fields with the message's own delimiters by
   :mod:`router.hl7.er7`. The header checks and the field helpers (:meth:`Hl7Message.field`,
   :meth:`~Hl7Message.repetitions`, :meth:`~Hl7Message.value`) use that splitter: it is lossless, keeps the wire
   order and works for segments hl7apy does not know (Z-segments).
3. Every segment ID must be one the message's version defines (hl7apy's tables, read once per version) or a
   Z-segment: the one refusal hl7apy's tolerant parse made that the checks above did not (issue 21).
4. Only when asked (``use_hl7apy=True``, the default here; the intake asks when ``hl7.validate: structure``),
   hl7apy parses the same text with exactly those encoding characters (``Hl7Message.msg``), tolerant validation
   and ``find_groups=False``: a flat list of segments in wire order (``msg.msg.pid.pid_5``), because grouping
   silently drops segments it cannot place (Z-segments, segments out of order). hl7apy values stay escaped.
   It costs about 2.5 ms per segment (10 ms for a four-segment ADT on a loaded 2-core machine), the whole budget
   of a message several times over; :meth:`Hl7Message.model` builds the same tree on demand for code that wants
   hl7apy's model.

Errors follow HL7 v2 chapter 2 (original acknowledgement rules): the receiving side rejects (AR) a message whose
MSH-9 message type, MSH-12 version or MSH-11 processing ID is missing or not acceptable, and a frame it cannot
read as a message at all (no MSH, bad delimiters, unknown MSH-18). Other content errors, such as an empty MSH-10,
a byte sequence the declared character set cannot hold or a malformed segment, are AE.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from hl7apy import load_library
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException, UnsupportedVersion
from hl7apy.parser import parse_message as _hl7apy_parse

from router.hl7 import er7
from router.hl7.er7 import DEFAULT_ENCODING, EncodingChars
from router.hl7.errors import ERROR_CODES, ErrorLocation, Hl7Error

__all__ = ["ERROR_CODES", "SUPPORTED_VERSIONS", "ErrorLocation", "Hl7Error", "Hl7Header", "Hl7Message", "parse_message"]

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


@dataclass(frozen=True)
class Hl7Header:
    """What MSH says. ``msh[n]`` is the raw (still escaped) MSH-n; ``msh[0]`` is ``"MSH"``.

    Also the ``partial`` header of an :class:`Hl7Error`: whatever could be read, enough to address an ACK.
    """

    encoding: EncodingChars = DEFAULT_ENCODING
    msh: tuple[str, ...] = ("MSH",)
    charset: str = ""  # MSH-18 (first repetition) as sent; "" when absent or not usable
    codec: str = "ascii"  # the Python codec the message was decoded with (and its ACK is encoded with)

    def msh_field(self, n: int) -> str:
        return self.msh[n] if 0 <= n < len(self.msh) else ""

    def _component(self, n: int, c: int) -> str:
        comps = self.msh_field(n).split(self.encoding.component)
        return er7.unescape(comps[c - 1], self.encoding, self.codec).strip() if c <= len(comps) else ""

    @property
    def field_separator(self) -> str:
        return self.encoding.field

    @property
    def encoding_chars(self) -> str:
        """MSH-2 as sent, e.g. ``^~\\&``."""
        return self.encoding.msh2

    @property
    def sending_application(self) -> str:
        """Raw MSH-3 (all components, escaped as on the wire)."""
        return self.msh_field(3)

    @property
    def sending_facility(self) -> str:
        return self.msh_field(4)

    @property
    def receiving_application(self) -> str:
        return self.msh_field(5)

    @property
    def receiving_facility(self) -> str:
        return self.msh_field(6)

    @property
    def control_id(self) -> str:
        """MSH-10 as sent (echoed verbatim in MSA-2)."""
        return self.msh_field(10)

    @property
    def message_code(self) -> str:
        return self._component(9, 1)

    @property
    def trigger_event(self) -> str:
        return self._component(9, 2)

    @property
    def structure(self) -> str:
        """MSH-9.3 (message structure), empty when the sender left it out."""
        return self._component(9, 3)

    @property
    def message_type(self) -> str:
        """``ADT^A01`` (always with ``^``, whatever the encoding characters); just the code without an event."""
        return f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code

    @property
    def processing_id(self) -> str:
        """MSH-11.1 (P, T, D)."""
        return self._component(11, 1)

    @property
    def version(self) -> str:
        """MSH-12.1, e.g. ``2.5.1``."""
        return self._component(12, 1)


@dataclass(frozen=True)
class Hl7Message(Hl7Header):
    """A parsed message. Field helpers number fields like HL7 (``field("PID", 3)`` is PID-3) and count segment
    occurrences from 1. Absent segments, fields, repetitions or components read as empty.

    Unescaped values: a component holding subcomponents keeps them joined by the message's subcomponent
    character; read one of them unambiguously with :meth:`value` (``subcomponent=n``).
    """

    raw: bytes = field(default=b"", repr=False)
    text: str = field(default="", repr=False)
    msg: Any = field(default=None, repr=False, compare=False)  # hl7apy Message, flat; None if use_hl7apy=False
    segment_list: tuple[tuple[str, ...], ...] = field(default=(), repr=False)  # raw fields of every segment
    _index: dict[str, list[tuple[str, ...]]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for seg in self.segment_list:
            self._index.setdefault(seg[0], []).append(seg)

    def model(self) -> Any:
        """hl7apy's flat tree of the message (``msg``), parsed now if ``parse_message`` skipped it; raises the
        ``Hl7Error`` ``parse_message(use_hl7apy=True)`` would have."""
        if self.msg is None:
            object.__setattr__(self, "msg", _hl7apy_message(er7.split_segments(self.text), self))
        return self.msg

    def segments(self, name: str) -> list[tuple[str, ...]]:
        """Every ``name`` segment in wire order, each as raw fields (``seg[3]`` is field 3, ``seg[0]`` the ID)."""
        return list(self._index.get(name, ()))

    def field(self, segment: str, index: int, occurrence: int = 1) -> str:
        """The raw field (all repetitions, still escaped); ``""`` when absent."""
        segs = self._index.get(segment, ())
        if not 1 <= occurrence <= len(segs):
            return ""
        seg = segs[occurrence - 1]
        return seg[index] if 0 <= index < len(seg) else ""

    def _tree(self, segment: str, index: int, occurrence: int) -> list[list[list[str]]]:
        raw = self.field(segment, index, occurrence)
        if segment == "MSH" and index in (1, 2):
            return [[[raw]]] if raw else []
        return er7.split_value(raw, self.encoding, self.codec)

    def repetitions(self, segment: str, index: int, occurrence: int = 1) -> list[list[str]]:
        """Each repetition of a field as its list of unescaped components; ``[]`` for an empty field."""
        sub = self.encoding.subcomponent
        return [[sub.join(c) for c in rep] for rep in self._tree(segment, index, occurrence)]

    def components(self, segment: str, index: int, repetition: int = 1, occurrence: int = 1) -> list[str]:
        reps = self.repetitions(segment, index, occurrence)
        return reps[repetition - 1] if 1 <= repetition <= len(reps) else []

    def value(
        self,
        segment: str,
        index: int,
        repetition: int = 1,
        component: int = 1,
        subcomponent: int = 1,
        occurrence: int = 1,
    ) -> str:
        """One unescaped value, e.g. ``value("PID", 3, 2, 4, 2)`` is the universal ID of PID-3[2].4."""
        tree = self._tree(segment, index, occurrence)
        try:
            return tree[repetition - 1][component - 1][subcomponent - 1] if min(repetition, component) > 0 else ""
        except IndexError:
            return ""

    def require_segment(self, name: str) -> tuple[str, ...]:
        """The first ``name`` segment, or AE 100 (segment sequence error) naming it."""
        segs = self._index.get(name)
        if not segs:
            raise Hl7Error("AE", 100, f"required segment {name} missing", location=(name, 1), partial=self)
        return segs[0]

    def require_value(
        self, segment: str, index: int, repetition: int = 1, component: int = 1, occurrence: int = 1
    ) -> str:
        """:meth:`value`, or AE 101 (required field missing) located at that field/component when empty."""
        value = self.value(segment, index, repetition, component, 1, occurrence)
        if value == "":
            several = len(self.components(segment, index, repetition, occurrence)) > 1
            comp = component if component > 1 or several else None
            rep = repetition if repetition > 1 else None
            where = ErrorLocation(segment, occurrence, index, comp, rep)
            raise Hl7Error("AE", 101, f"{segment}-{index} is empty", location=where, partial=self)
        return value


def _find_msh(raw: bytes) -> int:
    start = 0
    while start < len(raw) and raw[start] in b" \t\r\n\x0b\x00":
        start += 1
    if raw.startswith(b"\xef\xbb\xbf", start):
        start += 3
    return start if raw.startswith(b"MSH", start) else -1


def _decode_error_location(body: bytes, offset: int, enc: EncodingChars) -> ErrorLocation:
    lines = body[:offset].decode("latin-1").replace("\r\n", "\r").replace("\n", "\r").split("\r")
    current = lines[-1]
    name = current[:3]
    sequence = sum(1 for line in lines[:-1] if line[:3] == name) + 1
    index = current.count(enc.field) + (1 if name == "MSH" else 0)
    return ErrorLocation(name, sequence, index or None)


def parse_message(
    raw: bytes,
    *,
    accepted_processing_ids: Collection[str] = ("P",),
    accepted_versions: Collection[str] = SUPPORTED_VERSIONS,
    accepted_messages: Mapping[str, Collection[str]] | None = None,
    use_hl7apy: bool = True,
) -> Hl7Message:
    """Parse and check one message; raises :class:`Hl7Error` (with ``partial`` set whenever MSH was found).

    hl7apy costs about 1 to 2.5 ms per segment (4 to 10 ms for a small ADT, seconds for thousands of OBX); with
    ``use_hl7apy=False`` it is skipped, ``msg`` is ``None`` (:meth:`Hl7Message.model` parses it on demand) and the
    checks and field helpers, which cost a few percent of that, still work.

    ``accepted_messages`` maps message codes to the trigger events accepted (``{"ADT": {"A01", "A08"}}``, ``"*"``
    for any event); ``None`` accepts every type. Checks run in this order, the first failure is raised:

    =============================================  ===  =========  ==================
    condition                                      ACK  0357       location (ERR-2)
    =============================================  ===  =========  ==================
    no MSH at the start of the frame               AR   100        MSH^1
    MSH-1 / MSH-2 unusable                         AR   102        MSH^1^1 / MSH^1^2
    MSH-18 not a supported character set           AR   103        MSH^1^18
    bytes not valid in the declared character set  AE   102        SEG^seq^field
    MSH-9 (or MSH-9.1) empty                       AR   101        MSH^1^9
    MSH-12 empty / version not accepted            AR   101 / 203  MSH^1^12
    MSH-11 empty / processing ID not accepted      AR   101 / 202  MSH^1^11
    message code / trigger event not accepted      AR   200 / 201  MSH^1^9^1^1 / ^1^2
    MSH-10 empty                                   AE   101        MSH^1^10
    a second MSH in the frame (batch)              AR   100        MSH^2
    a malformed segment ID                         AE   100        SEG^seq
    a segment ID the version does not define       AE   100        SEG^seq
    hl7apy cannot parse the message                AE   102        (none)
    =============================================  ===  =========  ==================
    """
    body, first, enc, charset = _read_msh(raw)
    try:
        text, codec = er7.decode(body, charset)
    except UnicodeDecodeError as exc:
        codec = er7.CHARSETS[charset]
        msh = er7.segment_fields(first.decode(codec, errors="replace"), enc)
        raise Hl7Error(
            "AE",
            102,
            f"bytes not valid in the declared character set {charset}",
            location=_decode_error_location(body, exc.start, enc),
            partial=Hl7Header(encoding=enc, msh=msh, charset=charset, codec=codec),
        ) from None
    segments = er7.split_segments(text)
    segment_list = tuple(er7.segment_fields(s, enc) for s in segments)
    header = Hl7Header(encoding=enc, msh=segment_list[0], charset=charset, codec=codec)
    _check_header(header, accepted_processing_ids, accepted_versions, accepted_messages)
    _check_segments(header, segment_list)
    parsed = _hl7apy_message(segments, header) if use_hl7apy else None
    return Hl7Message(
        encoding=enc,
        msh=header.msh,
        charset=charset,
        codec=codec,
        raw=raw,
        text=text,
        msg=parsed,
        segment_list=segment_list,
    )


def _read_msh(raw: bytes) -> tuple[bytes, bytes, EncodingChars, str]:
    """The message from its MSH on, the MSH line, the encoding characters and the MSH-18 character set, read from
    the bytes before anything is decoded; raises the MSH-1/2/18 refusals of ``parse_message``."""
    start = _find_msh(raw)
    if start < 0:
        raise Hl7Error("AR", 100, "the frame does not start with an MSH segment", location=("MSH", 1))
    body = raw[start:]
    first = re.split(rb"[\r\n]", body, maxsplit=1)[0]
    fs = first[3:4].decode("latin-1")
    byte_fields = first.split(fs.encode("latin-1")) if fs else [first]
    msh2 = byte_fields[1].decode("latin-1") if len(byte_fields) > 1 else ""
    version_bytes = byte_fields[11] if len(byte_fields) > 11 else b""
    version = version_bytes.split(msh2[:1].encode("latin-1") or b"^")[0].decode("latin-1").strip()
    try:
        enc = EncodingChars.from_msh(fs, msh2, version)
    except ValueError as exc:
        usable_fs = er7._is_delimiter(fs)
        partial = None
        if usable_fs:
            msh = er7.segment_fields(first.decode("latin-1"), EncodingChars(field=fs))
            partial = Hl7Header(msh=("MSH", "|", DEFAULT_ENCODING.msh2, *msh[3:]), codec="latin-1")
        raise Hl7Error("AR", 102, str(exc), location=("MSH", 1, 2 if usable_fs else 1), partial=partial) from None
    charset_field = byte_fields[17].decode("latin-1") if len(byte_fields) > 17 else ""
    charset = charset_field.split(enc.repetition)[0].strip()
    if charset and charset not in er7.CHARSETS:
        partial = Hl7Header(encoding=enc, msh=er7.segment_fields(first.decode("latin-1"), enc), codec="latin-1")
        reason = f"unsupported character set (MSH-18) {charset!r}"
        raise Hl7Error("AR", 103, reason, location=("MSH", 1, 18), partial=partial)
    return body, first, enc, charset


def _hl7apy_message(segments: list[str], header: Hl7Header) -> Any:
    try:
        return _hl7apy_parse("\r".join(segments), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    except UnsupportedVersion:
        reason = f"version {header.version} is not supported by the parser"
        raise Hl7Error("AR", 203, reason, location=("MSH", 1, 12), partial=header) from None
    except HL7apyException as exc:
        # quoted: the parser's text may hold a field's value, which a log line then leaves out (router.logs.redact)
        raise Hl7Error("AE", 102, f"cannot parse the message: {str(exc)!r}", partial=header) from None


def _check_header(
    h: Hl7Header,
    processing_ids: Collection[str],
    versions: Collection[str],
    messages: Mapping[str, Collection[str]] | None,
) -> None:
    def fail(ack: Any, code: int, text: str, *where: int) -> Hl7Error:
        return Hl7Error(ack, code, text, location=("MSH", 1, *where), partial=h)

    if not h.message_code:
        raise fail("AR", 101, "MSH-9 (message type) is empty", 9, *((1,) if h.msh_field(9) else ()))
    if not h.version:
        raise fail("AR", 101, "MSH-12 (version ID) is empty", 12)
    if h.version not in versions:
        raise fail("AR", 203, f"version {h.version} is not supported", 12)
    if not h.processing_id:
        raise fail("AR", 101, "MSH-11 (processing ID) is empty", 11)
    if h.processing_id not in processing_ids:
        raise fail("AR", 202, f"processing ID {h.processing_id} is not accepted", 11)
    if messages is not None:
        events = messages.get(h.message_code)
        if events is None:
            raise fail("AR", 200, f"message type {h.message_code} is not supported", 9, 1)
        if "*" not in events and h.trigger_event not in events:
            raise fail("AR", 201, f"event {h.trigger_event or '(none)'} of {h.message_code} is not supported", 9, 2)
    if not h.control_id.strip():
        raise fail("AE", 101, "MSH-10 (message control ID) is empty", 10)


def _check_segments(h: Hl7Header, segment_list: tuple[tuple[str, ...], ...]) -> None:
    seen: dict[str, int] = {}
    known = _known_segments(h)
    for seg in segment_list:
        name = seg[0]
        seen[name] = seen.get(name, 0) + 1
        if name == "MSH" and seen[name] > 1:
            reason = "more than one MSH in one frame (batches are not supported)"
            raise Hl7Error("AR", 100, reason, location=("MSH", seen[name]), partial=h)
        if not _SEGMENT_ID.match(name):
            raise Hl7Error("AE", 100, "malformed segment ID", location=(name[:3], seen[name]), partial=h)
        if name[0] != "Z" and name not in known:
            reason = f"segment {name} is not defined in HL7 v{h.version}"
            raise Hl7Error("AE", 100, reason, location=(name, seen[name]), partial=h)


def _known_segments(h: Hl7Header) -> frozenset[str]:
    """The segment IDs the message's version defines (hl7apy's tables, the ones its parser accepts)."""
    try:
        return _segments_of_version(h.version)
    except UnsupportedVersion:
        reason = f"version {h.version} is not supported by the parser"
        raise Hl7Error("AR", 203, reason, location=("MSH", 1, 12), partial=h) from None


@functools.cache
def _segments_of_version(version: str) -> frozenset[str]:
    return frozenset(load_library(version).SEGMENTS)
