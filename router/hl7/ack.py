"""HL7 v2 acknowledgements in original mode (chapter 2): build an ACK for a message, read the code of an ACK.

The ACK uses the message's own delimiters and character set (MSH-1, MSH-2, MSH-18; bytes encoded in that set),
swaps sending and receiving application/facility, copies MSH-11 and MSH-12, carries a fresh MSH-10 and echoes the
received MSH-10 in MSA-2. Errors become ERR segments in the form of the message's version:

* v2.5 and later: one ERR per error; ERR-2 location (ERL ``SEG^seq^field^rep^comp^sub``), ERR-3
  ``code^text^HL70357``, ERR-4 severity, ERR-8 the error's text.
* before v2.5: one ERR whose repeating ERR-1 (ELD) holds ``SEG^seq^field^code&text&HL70357`` per error; MSA-6
  carries the first error as ``code^text^HL70357``.

``text`` goes into MSA-3 for versions before 2.4 only (deprecated from 2.4); later versions carry text in ERR-8.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime

from router.hl7 import er7
from router.hl7.er7 import DEFAULT_ENCODING, EncodingChars
from router.hl7.errors import AckCode, Hl7Error
from router.hl7.message import Hl7Header

DEFAULT_VERSION = "2.5"


def new_control_id() -> str:
    """A unique MSH-10 of 20 characters (the v2.3-v2.6 length limit)."""
    return uuid.uuid4().hex[:20].upper()


def _join(parts: Sequence[str], sep: str) -> str:
    parts = list(parts)
    while parts and parts[-1] == "":
        parts.pop()
    return sep.join(parts)


def _err_segments(errors: Sequence[Hl7Error], enc: EncodingChars, version: tuple[int, ...]) -> list[list[str]]:
    c, s = enc.component, enc.subcomponent

    def esc(value: str) -> str:
        return er7.escape(value, enc)

    if version >= (2, 5):
        segments = []
        for e in errors:
            erl = _join([esc(p) for p in e.location.erl()], c) if e.location else ""
            code = c.join([str(e.error_code), esc(e.code_text), "HL70357"])
            segments.append(["ERR", "", erl, code, e.severity, "", "", "", esc(e.text)])
        return segments
    elds = []
    for e in errors:
        loc = e.location
        where = ["", "", ""]
        if loc:
            where = [esc(loc.segment), str(loc.sequence), "" if loc.field is None else str(loc.field)]
        elds.append(c.join([*where, s.join([str(e.error_code), esc(e.code_text), "HL70357"])]))
    return [["ERR", enc.repetition.join(elds)]] if elds else []


def build_ack(
    header: Hl7Header | None,
    code: AckCode,
    errors: Sequence[Hl7Error] = (),
    text: str = "",
    control_id: str | None = None,
    *,
    now: datetime | None = None,
) -> bytes:
    """The ACK (bytes, unframed, segments ended by CR) for ``header`` (an ``Hl7Message`` or an error's ``partial``).

    ``header`` may be ``None`` (nothing could be read): the ACK then uses ``|^~\\&``, version 2.5, no addressees
    and an empty MSA-2. ``control_id`` is the ACK's own MSH-10 (default: :func:`new_control_id`).
    """
    if code not in ("AA", "AE", "AR"):
        raise ValueError(f"ACK code must be AA, AE or AR, not {code!r}")
    h = header or Hl7Header()
    enc = h.encoding if header else DEFAULT_ENCODING
    version_field = h.msh_field(12) or DEFAULT_VERSION
    version = er7.version_tuple(h.version or DEFAULT_VERSION) or er7.version_tuple(DEFAULT_VERSION)
    event = er7.escape(h.trigger_event, enc)
    msh9 = ["ACK", event, "ACK"] if version >= (2, 3, 1) else ["ACK", event]  # MSH-9.3 exists from v2.3.1
    stamp = (now or datetime.now().astimezone()).strftime("%Y%m%d%H%M%S%z")
    msh = ["MSH", enc.msh2, h.msh_field(5), h.msh_field(6), h.msh_field(3), h.msh_field(4), stamp, ""]
    msh += [_join(msh9, enc.component), control_id or new_control_id(), h.msh_field(11) or "P", version_field]
    msh += ["", "", "", "", "", er7.escape(h.charset, enc)]
    msa = ["MSA", code, h.control_id, er7.escape(text, enc) if version < (2, 4) else ""]
    if errors and version < (2, 5):
        first = errors[0]
        msa += ["", "", enc.component.join([str(first.error_code), er7.escape(first.code_text, enc), "HL70357"])]
    segments = [msh, msa, *_err_segments(errors, enc, version)]
    out = "".join(_join(seg, enc.field) + "\r" for seg in segments)
    return out.encode(h.codec, errors="replace")


_MSA = re.compile(rb"(?:^|[\r\n])MSA(.)([^\r\n]*)")


def ack_code_of(ack: bytes) -> tuple[str, str]:
    """``(MSA-1, MSA-2)`` of an ACK (MLLP framing, if present, is ignored); ``ValueError`` when there is no MSA."""
    m = _MSA.search(ack)
    if m is None:
        raise ValueError("not an acknowledgement: no MSA segment")
    fields = m.group(2).decode("latin-1").split(m.group(1).decode("latin-1"))
    return fields[0].strip(), (fields[1] if len(fields) > 1 else "").strip()
