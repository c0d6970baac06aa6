"""The Envelope: one inbound object on its way through the router.

It carries the bytes exactly as received, where they came from, and a lazily decoded view. A stage that changes
the object (coerce) works on ``dataset`` and marks the envelope modified; ``payload()`` then re-encodes it once.
A stage that re-encodes the whole object (transcode) hands the new bytes to ``replace_payload``; later stages see
them. Stages that only read use ``header`` (decoded without pixel data). ``raw`` always stays as received.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, BinaryIO, Literal

from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from router.intake import p10scan

Kind = Literal["dicom", "hl7", "mpps"]


def read_values_as_they_came() -> None:
    """Have pydicom read values without judging them: a router passes objects on. pydicom's default (WARN) ran a
    regular expression over every UI, DA, TM... value read, and logged each oddity on every read."""
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


@dataclass(frozen=True)
class Source:
    """Who sent the object and how."""

    protocol: Literal["dimse", "stow", "file", "mllp", "media"]  # media: ``router import`` (router.media)
    calling_ae: str = ""
    called_ae: str = ""
    address: str = ""


@dataclass
class Envelope:
    kind: Kind
    raw: bytes
    source: Source
    _header: Dataset | None = field(default=None, repr=False)
    _scan: p10scan.P10Scan | None = field(default=None, repr=False)  # where the received values are
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
        """Check the object is whole and find its values; raises InvalidDicomError for bytes that are not a
        complete dataset. The common object is scanned (``p10scan``) and decoded by pydicom only when a stage or
        rule asks for its ``header``; anything the scan does not vouch for is decoded and checked at once."""
        env = cls(kind="dicom", raw=raw, source=source)
        env._scan = p10scan.scan_p10(raw)
        if env._scan is not None:
            return env
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
            self._header = dcmread(_reader(self.raw), stop_before_pixels=True)
        return self._header

    @property
    def dataset(self) -> Dataset:
        """The full, mutable dataset (as earlier stages left it). Call ``mark_modified()`` after changing it."""
        if self._dataset is None:
            self._dataset = dcmread(BytesIO(self._current if self._current is not None else self.raw))
        return self._dataset

    @property
    def values(self) -> HeaderValues:
        """The values of ``header`` as text."""
        if self._dataset is not None:
            return HeaderValues(None, lambda: self.header)
        return HeaderValues(self._scan, self._received_header)

    def stored_values(self) -> HeaderValues:
        """The values of what is stored as text: as received, or as ``keep_as_stored`` fixed it."""
        stored = self.stored
        if stored is None:
            return HeaderValues(self._scan, self._received_header)
        return HeaderValues(None, lambda: dcmread(BytesIO(stored), stop_before_pixels=True))

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
        return clean_uid(self.values.text("SOPInstanceUID", UNLIMITED))

    @property
    def sop_class_uid(self) -> str:
        return clean_uid(self.values.text("SOPClassUID", UNLIMITED))

    @property
    def transfer_syntax(self) -> str:
        """The transfer syntax the object was received (and is stored) in."""
        if self._scan is not None:
            return self._scan.transfer_syntax
        return clean_uid(self._received_header().file_meta.get("TransferSyntaxUID", ""))

    @property
    def payload_transfer_syntax(self) -> str:
        """The transfer syntax of ``payload()``: as received unless a stage re-encoded the object."""
        if self._dataset is not None:
            return clean_uid(self._dataset.file_meta.get("TransferSyntaxUID", ""))
        return self._current_syntax or self.transfer_syntax


UNLIMITED = 1 << 30  # a ``text`` limit for values taken whole


def dataset_text(ds: Dataset, keyword: str, limit: int = 324) -> str:
    """An attribute as text, multi-values joined with a backslash, trimmed to ``limit`` (a column size).

    NUL characters (UID padding, sloppy modalities) are dropped: PostgreSQL text cannot hold them."""
    tag = _tag(keyword)
    elem = ds[tag] if tag in ds._dict else None
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).replace("\x00", "").strip()[:limit]


_TAGS: dict[str, int] = {}


def _tag(keyword: str) -> int:
    tag = _TAGS.get(keyword)
    if tag is None:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"not a DICOM keyword: {keyword}")
        _TAGS[keyword] = tag
    return tag


class HeaderValues:
    """One data set's top-level values as text (``dataset_text``): read from a ``p10scan`` where it can tell,
    from the pydicom data set (decoded on first need) otherwise."""

    def __init__(self, scan: p10scan.P10Scan | None, dataset: Callable[[], Dataset]) -> None:
        self._scan = scan
        self._decode = dataset
        self._dataset: Dataset | None = None

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = self._decode()
        return self._dataset

    def text(self, keyword: str, limit: int = 324) -> str:
        if self._scan is not None:
            found = self._scan.text(_tag(keyword))
            if found is not None:
                return found[:limit]
        return dataset_text(self.dataset, keyword, limit)

    def meta_uid(self, keyword: str) -> str:
        """A file meta UID (``TransferSyntaxUID``, ``MediaStorageSOPInstanceUID``...), "" when absent."""
        if self._scan is not None:
            return self._scan.meta_text(_tag(keyword))
        return clean_uid(self.dataset.file_meta.get(keyword, ""))

    def has_meta(self, keyword: str) -> bool:
        if self._scan is not None:
            return _tag(keyword) in self._scan.meta
        return keyword in self.dataset.file_meta


def _check_complete(ds: Dataset) -> None:
    """pydicom reads a value cut short by the end of the stream without complaint; we do not."""
    for elem in ds._dict.values():
        if (
            isinstance(elem, RawDataElement)
            and elem.length != p10scan.UNDEFINED_LENGTH
            and elem.value is not None
            and len(elem.value) != elem.length
        ):
            raise InvalidDicomError(f"element {elem.tag} is truncated: {len(elem.value)} of {elem.length} bytes")


def _check_rest(raw: bytes, pos: int, header: Dataset) -> None:
    """The header was decoded up to the Pixel Data element (at ``pos``); the rest of the data set (Pixel Data and
    anything after it) must be whole too, or the object is not one that can be stored and forwarded as received.
    ``p10scan.walk`` checks the element headers without decoding any value; what it cannot vouch for (a deflated
    object, an element pydicom reads by guessing its encoding) is decided by decoding the whole object."""
    if pos >= len(raw):
        return
    syntax = UID(header.file_meta.get("TransferSyntaxUID", ""))
    if syntax.is_transfer_syntax and not syntax.is_deflated:
        implicit, little = header.original_encoding
        try:
            p10scan.walk(raw, pos, bool(implicit), little is not False)
            return
        except p10scan.Unsure:
            pass
    _check_complete(dcmread(BytesIO(raw), force=False))


def clean_uid(value: object) -> str:
    """A UID as text without its padding (UIDs are padded with NUL to an even length)."""
    return str(value).rstrip("\x00 ")


def _reader(data: bytes) -> BinaryIO:
    """A file over ``data`` without a copy: BytesIO shares bytes, a mapped file (a large STOW-RS part) is read where
    it lies (BytesIO would copy all of it, and read every page of the file)."""
    if isinstance(data, mmap.mmap):
        data.seek(0)
        return data
    return BytesIO(data)


def sha256(data: bytes) -> str:
    """Hex digest; bytes that arrived hashed (a STOW-RS part in a temp file: ``sha256`` attribute) are not read."""
    known = getattr(data, "sha256", None)
    return known if isinstance(known, str) else hashlib.sha256(data).hexdigest()
