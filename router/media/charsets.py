"""Specific Character Set (0008,0005): is it one the router reads, does every text value decode under it, and the
correction when it is wrong (``--assume-charset``, ``import.assume_charset``).

The accepted terms are the syngo.share import statement's table 8 (PS3.3 C.12.1.1.2): the single-byte sets with
and without code extensions, the multi-byte ISO 2022 sets, ISO_IR 192 (UTF-8), GB18030 and GBK. Without a Specific
Character Set the default repertoire is ASCII: a byte above 0x7F is then text that does not decode (pydicom itself
would quietly read it as Latin-1). ISO 2022 escape sequences are decoded by pydicom in strict mode.

A correction decodes every text value under the assumed set. When the assumed set is a defined term, its name is
declared and the values are written in it (the same bytes for a single-byte set); when it is only a codec name
(``cp1252``, ``latin-1``...), the values are written in ISO_IR 192. Either way the Specific Character Set the
object came with (empty when it had none) is kept in Original Attributes Sequence, reason CORRECT (PS3.3 C.12.1), as
the demographics coercion keeps what it replaces.
"""

from __future__ import annotations

import codecs
import copy
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO

from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import TEXT_VR_DELIMS

from router.hl7.demographics import MODIFYING_SYSTEM

SINGLE_BYTE = ("100", "101", "109", "110", "144", "127", "126", "138", "148", "13", "166")
MULTI_BYTE = ("87", "159", "149", "58")
WITHOUT_EXTENSIONS = frozenset({"", *(f"ISO_IR {n}" for n in SINGLE_BYTE), "ISO_IR 192", "GB18030", "GBK"})
WITH_EXTENSIONS = frozenset({"ISO 2022 IR 6", *(f"ISO 2022 IR {n}" for n in (*SINGLE_BYTE, *MULTI_BYTE))})
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
PN_DELIMS = {0x5E, 0x3D}  # ^ and =: component and group delimiters reset ISO 2022 code sets
CHARSET_TAG = 0x00080005
UTF8 = "ISO_IR 192"
_strict = threading.Lock()  # pydicom's strict reading is a process-wide setting


class CharsetProblem(ValueError):
    """Why an object's text cannot be read (the reason of a refusal; never quotes a value)."""


@dataclass(frozen=True)
class Checked:
    declared: list[str]  # the Specific Character Set values as found ([] when absent)
    corrected: bytes | None = None  # the object rewritten under a corrected set, or None when nothing changed
    note: str = ""


def invalid_terms(terms: list[str]) -> str:
    """Why ``terms`` is not a Specific Character Set the router accepts, "" when it is one."""
    if not terms:
        return ""
    if len(terms) == 1:
        if terms[0] in WITHOUT_EXTENSIONS or terms[0] in WITH_EXTENSIONS:
            return ""
        return f"Specific Character Set {terms[0]!r} is not a defined term this router reads"
    first, rest = terms[0], terms[1:]
    if first not in WITH_EXTENSIONS and first != "":
        return f"Specific Character Set {first!r} cannot start a set with code extensions (ISO 2022 terms only)"
    bad = [t for t in rest if t not in WITH_EXTENSIONS]
    if bad:
        return f"Specific Character Set {bad[0]!r} is not an ISO 2022 term, which code extensions need"
    return ""


def _encodings(terms: list[str]) -> list[str]:
    """Python codecs for ``terms``; ASCII for the default repertoire (pydicom would read Latin-1)."""
    if not terms or terms[0] in ("", "ISO 2022 IR 6"):
        rest = convert_encodings(list(terms[1:])) if len(terms) > 1 else []
        return ["ascii", *rest]
    return convert_encodings(list(terms))


def _values(ds: Dataset, path: str = "") -> Iterator[tuple[Dataset, int, str, bytes, str]]:
    """(data set, tag, VR, raw bytes, where) of every text value, sequences included; a value already decoded
    (a data set pydicom made itself) is skipped."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = raw.VR if isinstance(raw, RawDataElement | DataElement) else None
        if vr is None and not tag.is_private:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = None
        where = f"{path}{tag}"
        if vr == "SQ":
            for n, item in enumerate(ds[tag].value or []):
                yield from _values(item, f"{where}[{n}].")
        elif vr in TEXT_VRS and isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) and raw.value:
            yield ds, tag, vr, raw.value, where


def _decode(value: bytes, encodings: list[str], vr: str) -> str:
    delims = PN_DELIMS if vr == "PN" else TEXT_VR_DELIMS
    if b"\x1b" not in value:
        return value.decode(encodings[0])  # strict: a byte outside the set raises
    with _strict, pydicom_config.strict_reading():
        return decode_bytes(value, encodings, delims)


def check(raw: bytes, assume: str = "") -> Checked:
    """Check ``raw`` (a Part 10 file); with ``assume``, correct an object whose set is invalid or whose text does not
    decode. Raises CharsetProblem with the reason when the object cannot be taken."""
    ds = dcmread(BytesIO(raw), stop_before_pixels=True, force=True)
    declared = _declared(ds)
    problem = _problem(ds, declared)
    if not problem:
        return Checked(declared)
    if not assume:
        raise CharsetProblem(problem)
    return Checked(declared, correct(raw, assume), f"{problem}: corrected to {assume!r}")


def _declared(ds: Dataset) -> list[str]:
    elem = ds.get_item(CHARSET_TAG)
    if elem is None or elem.value in (None, b"", ""):
        return []
    value = elem.value
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
    else:
        text = "\\".join(str(v) for v in value) if isinstance(value, list | tuple | MultiValue) else str(value)
    return [t.strip() for t in text.split("\\")]


def _problem(ds: Dataset, declared: list[str], where: str = "") -> str:
    invalid = invalid_terms(declared)
    if invalid:
        return f"{where}{invalid}"
    encodings = _encodings(declared)
    for item_ds, _tag, vr, value, at in _values(ds):
        if item_ds is not ds and CHARSET_TAG in item_ds:  # an item with a set of its own
            own = _declared(item_ds)
            if sub := invalid_terms(own):
                return f"{at}: {sub}"
            codecs_ = _encodings(own)
        else:
            codecs_ = encodings
        try:
            _decode(value, codecs_, vr)
        except (UnicodeError, LookupError, ValueError):
            shown = "\\".join(declared) if declared else "none: the default repertoire, ASCII"
            return f"text of {at} ({vr}) does not decode under the Specific Character Set ({shown})"
    return ""


def assumed_codec(assume: str) -> tuple[list[str], str]:
    """The codecs to decode with and the term to declare for an assumed set: a defined term declares itself, a
    Python codec name (``cp1252``) is declared ISO_IR 192 after re-encoding. Raises CharsetProblem when neither."""
    terms = [t.strip() for t in assume.split("\\")]
    if not invalid_terms(terms):
        return _encodings(terms), assume
    try:
        return [codecs.lookup(assume).name], UTF8
    except LookupError:
        raise CharsetProblem(f"the assumed character set {assume!r} is neither a defined term nor a codec") from None


def correct(raw: bytes, assume: str) -> bytes:
    """``raw`` with its text read under ``assume`` and declared in a valid set; the original Specific Character Set
    in Original Attributes Sequence. Raises CharsetProblem when the text does not decode under ``assume`` either."""
    encodings, declare = assumed_codec(assume)
    ds = dcmread(BytesIO(raw), force=True)
    original = ds.get_item(CHARSET_TAG)
    for item_ds, tag, vr, value, at in list(_values(ds)):
        try:
            text = _decode(value, encodings, vr)
        except (UnicodeError, LookupError, ValueError):
            reason = f"text of {at} ({vr}) does not decode under the assumed set {assume!r} either"
            raise CharsetProblem(reason) from None
        # the decoded text: pydicom writes it in the declared set (a raw value would be decoded under the set the
        # object was read with, the wrong one, and written with replacement characters)
        item_ds[tag] = DataElement(tag, vr, text)
        if item_ds is not ds and CHARSET_TAG in item_ds:
            del item_ds[CHARSET_TAG]  # one set for the whole object now
    kept = Dataset()
    if original is None:
        kept.add_new(CHARSET_TAG, "CS", None)
    else:
        kept[CHARSET_TAG] = copy.deepcopy(ds[CHARSET_TAG])  # the attribute is changed in place below
    ds.SpecificCharacterSet = declare
    _add_original(ds, kept)
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _add_original(ds: Dataset, original: Dataset) -> None:
    item = Dataset()
    item.AttributeModificationDateTime = datetime.now(UTC).strftime("%Y%m%d%H%M%S.%f+0000")
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.SourceOfPreviousValues = ""
    item.ReasonForTheAttributeModification = "CORRECT"
    item.ModifiedAttributesSequence = Sequence([original])
    if "OriginalAttributesSequence" not in ds:
        ds.OriginalAttributesSequence = Sequence()
    ds.OriginalAttributesSequence.append(item)
