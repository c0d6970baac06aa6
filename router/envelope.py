"""The Envelope: one inbound object on its way through the router.

It carries the bytes exactly as received, where they came from, and a lazily decoded view. A stage that changes
the object (coerce) works on ``dataset`` and marks the envelope modified; ``payload()`` then re-encodes it once.
A stage that re-encodes the whole object (transcode) hands the new bytes to ``replace_payload``; later stages see
them. Stages that only read use ``header`` (decoded without pixel data). ``raw`` always stays as received.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Literal

from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

Kind = Literal["dicom", "hl7", "mpps"]
UNDEFINED_LENGTH = 0xFFFFFFFF


def read_values_as_they_came() -> None:
    """Have pydicom read values without judging them: a router passes objects on. pydicom's default (WARN) ran a
    regular expression over every UI, DA, TM... value read, and logged each oddity on every read."""
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


@dataclass(frozen=True)
class Source:
    """Who sent the object and how."""

    protocol: Literal["dimse", "stow", "file", "mllp"]
    calling_ae: str = ""
    called_ae: str = ""
    address: str = ""


@dataclass
class Envelope:
    kind: Kind
    raw: bytes
    source: Source
    _header: Dataset | None = field(default=None, repr=False)
    _dataset: Dataset | None = field(default=None, repr=False)
    _payload: bytes | None = field(default=None, repr=False)
    _current: bytes | None = field(default=None, repr=False)  # the object as a stage re-encoded it
    _current_syntax: str = ""
    modified: bool = False
    notes: list[str] = field(default_factory=list)
    message: Any = field(default=None, repr=False)  # the parsed HL7 message (Hl7Message) or an MppsMessage
    stored: bytes | None = field(default=None, repr=False)  # what to store when not the bytes received

    @classmethod
    def from_hl7(cls, raw: bytes, message: Any, source: Source) -> Envelope:
        return cls(kind="hl7", raw=raw, source=source, message=message)

    @classmethod
    def from_mpps(cls, raw: bytes, message: Any, source: Source) -> Envelope:
        """An MPPS N-CREATE or N-SET: ``raw`` is the message as stored, ``message`` a router.mpps.MppsMessage."""
        return cls(kind="mpps", raw=raw, source=source, message=message)

    @classmethod
    def from_p10(cls, raw: bytes, source: Source) -> Envelope:
        """Decode the header; raises InvalidDicomError for bytes that are not a complete dataset."""
        env = cls(kind="dicom", raw=raw, source=source)
        stream = BytesIO(raw)
        env._header = dcmread(stream, stop_before_pixels=True, force=False)
        _check_complete(env._header)
        _check_rest(raw, stream.tell(), env._header)
        return env

    @property
    def header(self) -> Dataset:
        """The dataset without pixel data, as received (or as modified, once a stage changed it)."""
        if self._dataset is not None:
            return self._dataset
        return self._received_header()

    def _received_header(self) -> Dataset:
        if self._header is None:
            self._header = dcmread(BytesIO(self.raw), stop_before_pixels=True)
        return self._header

    @property
    def dataset(self) -> Dataset:
        """The full, mutable dataset (as earlier stages left it). Call ``mark_modified()`` after changing it."""
        if self._dataset is None:
            self._dataset = dcmread(BytesIO(self._current if self._current is not None else self.raw))
        return self._dataset

    @property
    def stored_header(self) -> Dataset:
        """The header of what is stored: as received, or as ``keep_as_stored`` fixed it."""
        if self.stored is not None:
            return dcmread(BytesIO(self.stored), stop_before_pixels=True)
        if self._header is None:
            self._header = dcmread(BytesIO(self.raw), stop_before_pixels=True)
        return self._header

    def keep_as_stored(self) -> None:
        """Store the object as it is now rather than as received (demographics coercion). Later stages may
        change it further for their forwards; the stored version stays this one."""
        self.stored = self.payload()

    def mark_modified(self, note: str) -> None:
        self.modified = True
        self._payload = None
        self.notes.append(note)

    def replace_payload(self, data: bytes, transfer_syntax: str, note: str) -> None:
        """A stage re-encoded the whole object into ``data`` (a complete Part 10 file in ``transfer_syntax``): later
        stages and ``payload()`` work on it; ``raw``, ``transfer_syntax`` and the store keep what was received."""
        self.modified = True
        self._current = data
        self._current_syntax = clean_uid(transfer_syntax)
        self._payload = data
        self._dataset = None
        self.notes.append(note)

    def payload(self) -> bytes:
        """The bytes to forward at this point of the pipeline: the original unless a stage changed it."""
        if not self.modified:
            return self.raw
        if self._payload is None:
            out = BytesIO()
            dcmwrite(out, self.dataset, enforce_file_format=True)
            self._payload = out.getvalue()
        return self._payload

    @property
    def sop_instance_uid(self) -> str:
        return clean_uid(self.header.get("SOPInstanceUID", ""))

    @property
    def sop_class_uid(self) -> str:
        return clean_uid(self.header.get("SOPClassUID", ""))

    @property
    def transfer_syntax(self) -> str:
        """The transfer syntax the object was received (and is stored) in."""
        return clean_uid(self._received_header().file_meta.get("TransferSyntaxUID", ""))

    @property
    def payload_transfer_syntax(self) -> str:
        """The transfer syntax of ``payload()``: as received unless a stage re-encoded the object."""
        if self._dataset is not None:
            return clean_uid(self._dataset.file_meta.get("TransferSyntaxUID", ""))
        return self._current_syntax or self.transfer_syntax


def _check_complete(ds: Dataset) -> None:
    """pydicom reads a value cut short by the end of the stream without complaint; we do not."""
    for elem in ds._dict.values():
        if (
            isinstance(elem, RawDataElement)
            and elem.length != UNDEFINED_LENGTH
            and elem.value is not None
            and len(elem.value) != elem.length
        ):
            raise InvalidDicomError(f"element {elem.tag} is truncated: {len(elem.value)} of {elem.length} bytes")


# Explicit VR: the VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010


def _check_rest(raw: bytes, pos: int, header: Dataset) -> None:
    """The header was decoded up to the Pixel Data element (at ``pos``); the rest of the data set (Pixel Data and
    anything after it) must be whole too, or the object is not one that can be stored and forwarded as received.
    ``_walk_rest`` checks the element headers without decoding any value; what it cannot vouch for (a deflated
    object, an undefined-length sequence after the pixel data) is decided by decoding the whole object."""
    if pos >= len(raw):
        return
    syntax = UID(header.file_meta.get("TransferSyntaxUID", ""))
    if syntax.is_transfer_syntax and not syntax.is_deflated and _walk_rest(raw, pos, *header.original_encoding):
        return
    _check_complete(dcmread(BytesIO(raw), force=False))


def _walk_rest(raw: bytes, pos: int, implicit: bool | None, little: bool | None) -> bool:
    """Walk the top-level elements from ``pos`` to the end, encoded as the header was (``implicit``, ``little``):
    True when all are whole, False when it cannot tell; raises InvalidDicomError for one that is cut short."""
    order = ">" if little is False else "<"
    tag_len, u32 = struct.Struct(order + "HHL"), struct.Struct(order + "L")
    short_length = struct.Struct(order + "H")
    end = len(raw)
    while end - pos >= 8:  # fewer bytes than a tag and length: pydicom ends the data set there too
        group, element, length = tag_len.unpack_from(raw, pos)
        tag, start = group << 16 | element, pos + 8
        vr = raw[pos + 4 : pos + 6]
        # Explicit VR unless implicit, an item tag, or no VR there (an implicit element in an explicit data set,
        # which pydicom reads as implicit too)
        if not implicit and group != 0xFFFE and vr.isalpha() and vr.isupper():
            if vr not in _LONG_VRS:
                length = short_length.unpack_from(raw, pos + 6)[0]
            elif end - pos < 12:
                raise InvalidDicomError(f"element ({group:04X},{element:04X}) is truncated in its header")
            else:
                length, start = u32.unpack_from(raw, pos + 8)[0], pos + 12
        if length != UNDEFINED_LENGTH:
            if start + length > end:
                raise InvalidDicomError(
                    f"element ({group:04X},{element:04X}) is truncated: {end - start} of {length} bytes"
                )
            pos = start + length
        elif tag == _PIXEL_DATA:
            pos = _skip_fragments(raw, start, tag_len)
        else:  # an undefined-length sequence after the pixel data (digital signatures)
            return False
    return True


def _skip_fragments(raw: bytes, pos: int, tag_len: struct.Struct) -> int:
    """Encapsulated Pixel Data from its first item: the position after its Sequence Delimitation Item."""
    end = len(raw)
    while end - pos >= 8:
        group, element, length = tag_len.unpack_from(raw, pos)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return pos + 8
        if tag != _ITEM or length == UNDEFINED_LENGTH:
            raise InvalidDicomError(f"encapsulated Pixel Data holds ({group:04X},{element:04X}) where an item belongs")
        if pos + 8 + length > end:
            raise InvalidDicomError(f"a Pixel Data fragment is truncated: {end - pos - 8} of {length} bytes")
        pos += 8 + length
    raise InvalidDicomError("encapsulated Pixel Data ends without its Sequence Delimitation Item")


def clean_uid(value: object) -> str:
    """A UID as text without its padding (UIDs are padded with NUL to an even length)."""
    return str(value).rstrip("\x00 ")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
