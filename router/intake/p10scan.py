"""A strict first look at a Part 10 object without pydicom: where each element is, no value decoded.

Every object received is checked to be whole before it is acknowledged, and the store's index needs a dozen
of its values. pydicom builds a data set of element objects for that and converts each value on access, about
half of the Python work a small object costs. ``scan_p10`` instead walks the element headers once (tag, VR,
length), nested sequences and encapsulated pixel data included, and keeps where each top-level value is. A value
that is plain ASCII text is then read straight from the bytes (``P10Scan.text``).

It vouches only for what it fully understands: a preamble and ``DICM``, explicit VR little endian file meta, a
data set in Implicit or Explicit VR Little Endian or an encapsulated syntax, every VR a valid one, every length
inside its container, every undefined-length sequence and item closed by its delimiter. For anything else
(big endian, deflate, a VR or structure pydicom would have to guess at, an object cut short) it answers None,
and the caller decodes the object with pydicom as before, which then decides: the errors an interface analyst
sees for a damaged object stay pydicom's and the router's own.

``walk`` is the same walk from any position, for the rest of an object pydicom decoded up to its pixel data.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.datadict import dictionary_VR
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
_ITEM, _ITEM_DELIMITER, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PREAMBLE = 128
MAX_NESTING = 64  # sequences within sequences the scan walks; deeper ones are pydicom's (it refuses them, deep enough)
TRANSFER_SYNTAX_UID = 0x00020010
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
# Explicit VR: the VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_TEXT_VRS = frozenset(vr.decode() for vr in b"AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split())
_NUMBER_VRS = frozenset(("IS", "DS"))
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class Unsure(Exception):
    """The walk met something it does not vouch for: pydicom decides."""


@dataclass(frozen=True)
class _Encoding:
    implicit: bool
    tag_len: struct.Struct  # group, element, 32-bit length
    u32: struct.Struct
    u16: struct.Struct
    # explicit VR, but an element without letters where its VR belongs is read as implicit VR, as pydicom does
    mixed: bool = False


def _encoding(implicit: bool, little: bool, mixed: bool = False) -> _Encoding:
    order = "<" if little else ">"
    structs = struct.Struct(order + "HHL"), struct.Struct(order + "L"), struct.Struct(order + "H")
    return _Encoding(implicit, *structs, mixed=mixed)


_ENCODINGS = {(i, le): _encoding(i, le) for i in (True, False) for le in (True, False)}
_META = _ENCODINGS[False, True]
_MIXED = {le: _encoding(False, le, mixed=True) for le in (True, False)}

Found = dict[int, tuple[bytes | None, int, int]]  # tag -> (VR as encoded, None when implicit; value start; length)


def _data_set(
    raw: bytes,
    pos: int,
    end: int,
    enc: _Encoding,
    found: Found | None,
    in_item: bool,
    delimited: bool = False,
    group_only: int | None = None,
    depth: int = 0,
) -> int:
    """Walk one data set's elements from ``pos``: the object's (``found`` collects its elements), or an item's, up
    to ``end`` (a defined-length item's end, or the object's) or, when ``delimited``, to its Item Delimitation
    Item; with ``group_only``, up to the first element of another group (the file meta). Returns the position
    after it."""
    first = True
    tag_len, u32, u16 = enc.tag_len, enc.u32, enc.u16
    while end - pos >= 8:
        group, element, length = tag_len.unpack_from(raw, pos)
        if group_only is not None and group != group_only:
            return pos
        tag = group << 16 | element
        if group == 0xFFFE:
            if delimited and tag == _ITEM_DELIMITER:
                return pos + 8
            raise Unsure(f"({group:04X},{element:04X}) where a data element belongs")
        encoded = raw[pos + 4 : pos + 6]
        vr: bytes | None = encoded
        start = pos + 8
        if enc.implicit:
            if first and encoded in VRS:
                raise Unsure("says implicit VR, reads as explicit")
            vr = None
        elif encoded not in VRS:
            if not enc.mixed or (encoded.isalpha() and encoded.isupper()):
                raise Unsure(f"({group:04X},{element:04X}) has no valid VR")
            vr = None
        elif vr in LONG_VRS:
            if end - pos < 12:
                raise InvalidDicomError(f"element ({group:04X},{element:04X}) is truncated in its header")
            length, start = u32.unpack_from(raw, pos + 8)[0], pos + 12
        else:
            length = u16.unpack_from(raw, pos + 6)[0]
        first = False
        if length != UNDEFINED_LENGTH:
            if start + length > end:
                raise InvalidDicomError(
                    f"element ({group:04X},{element:04X}) is truncated: {end - start} of {length} bytes"
                )
            pos = start + length
        elif tag == PIXEL_DATA and not in_item:
            pos = _items(raw, start, enc, fragments=True)
        elif vr is None or vr == b"SQ":
            pos = _items(raw, start, enc, depth=depth + 1)
        else:
            raise Unsure(f"({group:04X},{element:04X}) {vr!r} of undefined length")
        if found is not None:
            found[tag] = (vr, start, length)
    if delimited:
        raise InvalidDicomError("an item ends without its Item Delimitation Item")
    return pos


def _items(raw: bytes, pos: int, enc: _Encoding, fragments: bool = False, depth: int = 0) -> int:
    """An undefined-length sequence (or, with ``fragments``, encapsulated Pixel Data) from its first item: the
    position after its Sequence Delimitation Item. ``depth``: sequences it is nested in (itself included)."""
    if depth > MAX_NESTING:
        raise Unsure(f"sequences nested more than {MAX_NESTING} deep")
    end = len(raw)
    while end - pos >= 8:
        group, element, length = enc.tag_len.unpack_from(raw, pos)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return pos + 8
        if fragments:
            if tag != _ITEM or length == UNDEFINED_LENGTH:
                raise InvalidDicomError(
                    f"encapsulated Pixel Data holds ({group:04X},{element:04X}) where an item belongs"
                )
            if pos + 8 + length > end:
                raise InvalidDicomError(f"a Pixel Data fragment is truncated: {end - pos - 8} of {length} bytes")
            pos += 8 + length
            continue
        if tag != _ITEM:
            raise Unsure(f"({group:04X},{element:04X}) where an item belongs")
        if length == UNDEFINED_LENGTH:
            pos = _data_set(raw, pos + 8, end, enc, None, in_item=True, delimited=True, depth=depth)
            continue
        item_end = pos + 8 + length
        if item_end > end:
            raise InvalidDicomError(f"a sequence item is truncated: {end - pos - 8} of {length} bytes")
        if _data_set(raw, pos + 8, item_end, enc, None, in_item=True, depth=depth) != item_end:
            raise Unsure("bytes left over at the end of an item")
        pos = item_end
    if fragments:
        raise InvalidDicomError("encapsulated Pixel Data ends without its Sequence Delimitation Item")
    raise InvalidDicomError("a sequence ends without its Sequence Delimitation Item")


def walk(raw: bytes, pos: int, implicit: bool, little: bool) -> None:
    """Check the top-level elements from ``pos`` to the end of ``raw`` are whole. Raises InvalidDicomError for one
    cut short, Unsure for what pydicom must decide. Fewer than 8 bytes at the very end are ignored, as pydicom
    ends a data set there too. In an explicit VR data set, an element with no letters where its VR belongs is
    read as implicit VR, as pydicom reads it."""
    enc = _ENCODINGS[True, little] if implicit else _MIXED[little]
    _data_set(raw, pos, len(raw), enc, None, in_item=False)


@lru_cache(maxsize=64)
def _data_set_encoding(syntax: str) -> _Encoding | None:
    """How a data set in ``syntax`` is encoded, when the scan reads it (little endian, not deflated, known)."""
    if syntax == IMPLICIT_VR_LITTLE_ENDIAN:
        return _ENCODINGS[True, True]
    uid = UID(syntax)
    if syntax == EXPLICIT_VR_LITTLE_ENDIAN or (uid.is_transfer_syntax and uid.is_encapsulated and not uid.is_deflated):
        return _ENCODINGS[False, True]
    return None


@lru_cache(maxsize=1024)
def _text_vr(tag: int) -> str | None:
    """The dictionary VR of ``tag`` when it is a text VR (a value the scan may read as text), else None."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr if vr in _TEXT_VRS else None


@dataclass(frozen=True)
class P10Scan:
    """Where the file meta and top-level data set values of one whole Part 10 object are."""

    raw: bytes
    meta: dict[int, bytes]
    elements: Found
    _texts: dict[int, str | None] = field(default_factory=dict, compare=False, repr=False)

    def text(self, tag: int) -> str | None:
        """The value of a top-level text attribute as pydicom would show it (multiple values joined with a
        backslash, NUL padding dropped, surrounding spaces stripped); "" when absent. None when the scan cannot
        say: a value that is not plain ASCII (a character set decides), not text, or a number that is not one."""
        try:
            return self._texts[tag]
        except KeyError:
            found = self._texts[tag] = self._text(tag)
            return found

    def _text(self, tag: int) -> str | None:
        vr = _text_vr(tag)
        if vr is None:
            return None
        found = self.elements.get(tag)
        if found is None:
            return ""
        encoded_vr, start, length = found
        if length == UNDEFINED_LENGTH or (encoded_vr is not None and encoded_vr.decode() not in _TEXT_VRS):
            return None
        value = self.raw[start : start + length]
        if not value.isascii() or b"\x1b" in value:
            return None
        text = value.decode("ascii").replace("\x00", "")
        if vr in _NUMBER_VRS:
            numbers = [v.strip() for v in text.split("\\")]
            if not all(_NUMBER.fullmatch(v) for v in numbers):
                return None
            return "\\".join(numbers)
        return text.strip()

    def meta_text(self, tag: int) -> str:
        """A file meta UID as text, "" when absent."""
        return self.meta.get(tag, b"").decode("latin-1").rstrip("\x00 ")

    @property
    def transfer_syntax(self) -> str:
        return self.meta_text(TRANSFER_SYNTAX_UID)


def scan_p10(raw: bytes) -> P10Scan | None:
    """Scan a Part 10 object; None when it is not one this scan vouches for (pydicom decides then)."""
    if raw[_PREAMBLE : _PREAMBLE + 4] != b"DICM":
        return None
    try:
        found: Found = {}
        pos = _data_set(raw, _PREAMBLE + 4, len(raw), _META, found, in_item=False, group_only=0x0002)
        if any(length == UNDEFINED_LENGTH for _vr, _start, length in found.values()):
            return None  # a file meta element of undefined length: pydicom decides
        scan = P10Scan(raw, {tag: raw[start : start + length] for tag, (_vr, start, length) in found.items()}, {})
        syntax = scan.transfer_syntax
        enc = _data_set_encoding(syntax) if syntax else None
        if enc is None:
            return None  # no transfer syntax, or one the scan does not read
        if _data_set(raw, pos, len(raw), enc, scan.elements, in_item=False) != len(raw):
            return None  # bytes left over at the end: pydicom decides
    except (Unsure, InvalidDicomError, struct.error):
        return None
    return scan
