"""C-FIND response identifiers encoded straight from index rows, without building pydicom Datasets.

Building a ``Dataset`` for each match and having pydicom write it took about 0.2 ms per response, the larger part of
answering a query with hundreds of matches. The values of a response are few and simple: text from the index
(UI, DA, TM, IS, CS, SH, LO, PN, AE), computed counts and lists, and empty elements. ``Encoder`` writes them in
Implicit or Explicit VR Little Endian as pydicom would write the ``Dataset`` that ``find._identifier`` builds, byte
for byte (tests/test_query_encode.py compares the two on every key the router knows).

It covers what most responses are: every value ASCII and no sequence. Anything else (a value outside ASCII, so the
character set decides the bytes; the Request Attributes Sequence; an unknown key of VR SQ; another transfer
syntax) gives ``None`` and the caller builds the ``Dataset`` as before.
"""

from __future__ import annotations

import struct
from typing import Any

from router.query.charset import _codecs
from router.query.model import ATTRS, UNIQUE_KEY, Attr

_IMPLICIT = struct.Struct("<HHL")
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2s2xL")
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
MULTI_VALUED = frozenset({"ImageType", "ModalitiesInStudy", "SOPClassesInStudy"})
QUERY_RETRIEVE_LEVEL = (0x0008, 0x0052)
RETRIEVE_AE_TITLE = (0x0008, 0x0054)
INSTANCE_AVAILABILITY = (0x0008, 0x0056)
SPECIFIC_CHARACTER_SET = (0x0008, 0x0005)
TIMEZONE_OFFSET = (0x0008, 0x0201)


def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    return int(tag_for_keyword(keyword) or 0)


class Encoder:
    """Encodes the responses of one query plan (see ``find.FindPlan``) in one transfer syntax."""

    def __init__(self, plan: Any, retrieve_ae: str, *, implicit_vr: bool) -> None:
        self.implicit_vr = implicit_vr
        self.level = plan.level
        unique = {UNIQUE_KEY[lv] for lv in plan.model.levels[: plan.model.levels.index(plan.level) + 1]}
        attrs: dict[int, Attr] = {_tag(k): ATTRS[k] for k in unique}
        for attr in plan.returned:
            attrs[_tag(attr.keyword)] = attr
        # every element whose value does not depend on the row, pre-encoded; None where a later one replaces it
        fixed: dict[int, tuple[str, str] | None] = {}
        self.possible = all(vr.isalpha() and len(vr) == 2 and vr != "SQ" for _tag_, vr in plan.unknown) and all(
            a.vr != "SQ" for a in attrs.values()
        )
        for tag, vr in plan.unknown:
            fixed[tag] = (vr, "")
        fixed[_join(QUERY_RETRIEVE_LEVEL)] = ("CS", plan.level)
        if retrieve_ae:
            fixed[_join(RETRIEVE_AE_TITLE)] = ("AE", retrieve_ae)
        if "InstanceAvailability" in plan.controls:
            fixed[_join(INSTANCE_AVAILABILITY)] = ("CS", "ONLINE")
        if "TimezoneOffsetFromUTC" in plan.controls:
            fixed[_join(TIMEZONE_OFFSET)] = ("SH", "")
        charset = plan.charset if plan.charset and _codecs(plan.charset) is not None else []
        if charset:  # all values ASCII (else no fast path): the requested set is answered (charset.response_charset)
            fixed[_join(SPECIFIC_CHARACTER_SET)] = ("CS", "\\".join(charset))
        fixed_values = [entry[1] for entry in fixed.values() if entry is not None]
        self.possible = self.possible and all(v.isascii() for v in fixed_values) and retrieve_ae.isascii()
        for tag in attrs:
            fixed.pop(tag, None)
        self.order: list[tuple[int, Attr | None, bytes]] = []  # (tag, attribute read from the row, or fixed bytes)
        for tag in sorted([*attrs, *fixed]):
            if tag in attrs:
                self.order.append((tag, attrs[tag], b""))
            else:
                vr, text = fixed[tag]  # type: ignore[misc]
                self.order.append((tag, None, self._element(tag, vr, text)))

    def _element(self, tag: int, vr: str, text: str) -> bytes:
        data = text.encode("ascii")
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
        if self.implicit_vr:
            return _IMPLICIT.pack(tag >> 16, tag & 0xFFFF, len(data)) + data
        if vr in LONG_VRS:
            return _EXPLICIT_LONG.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(data)) + data
        return _EXPLICIT_SHORT.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(data)) + data

    def encode(self, row: dict[str, Any], derived: dict[str, dict[int, Any]]) -> bytes | None:
        """The identifier of one match; None when a value is one this leaves to pydicom (not ASCII)."""
        if not self.possible:
            return None
        parts: list[bytes] = []
        for tag, attr, fixed in self.order:
            if attr is None:
                parts.append(fixed)
                continue
            value = derived[attr.keyword].get(row[f"_id_{attr.level}"]) if attr.derived else row[attr.keyword]
            text = _text(attr.keyword, value)
            if not text.isascii():
                return None
            parts.append(self._element(tag, attr.vr, text))
        return b"".join(parts)


def _join(tag: tuple[int, int]) -> int:
    return tag[0] << 16 | tag[1]


def _text(keyword: str, value: Any) -> str:
    """The value as ``find._put`` stores it, written as pydicom writes it (values joined by backslashes)."""
    if value is None:
        return ""
    if keyword in MULTI_VALUED:
        parts = value.split("\\") if isinstance(value, str) else [str(v) for v in value]
        return "\\".join(p for p in parts if p)
    return str(value)
