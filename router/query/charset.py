"""Specific Character Set (0008,0005) of C-FIND responses.

The index holds text as Unicode (pydicom decodes each object with its own character set). A response is encoded in
the character set the request named when every returned value fits in it, so an SCU gets answers in the repertoire
it asked in; otherwise in UTF-8 (``ISO_IR 192``). A request without (0008,0005) gets no (0008,0005) back when the
values are plain ASCII (the default repertoire), else ``ISO_IR 192``.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

UTF8 = "ISO_IR 192"
DEFAULT_TERMS = ("", "ISO_IR 6", "ISO 2022 IR 6")
TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})


def element(ds: Dataset, keyword: str) -> DataElement | None:
    return ds.data_element(keyword) if keyword in ds else None


def requested_terms(identifier: Dataset) -> list[str]:
    """The request's (0008,0005) values; ``[]`` when absent (the default repertoire)."""
    elem = element(identifier, "SpecificCharacterSet")
    if elem is None or elem.value is None or elem.value == "":
        return []
    value = elem.value
    if isinstance(value, str):
        return [value.strip()]
    return [str(v).strip() for v in value]


def _codecs(terms: list[str]) -> list[str] | None:
    """Python codec names for the terms; None when a term is unknown."""
    names = []
    for term in terms:
        if term in DEFAULT_TERMS:
            names.append("ascii")
            continue
        try:
            (name,) = convert_encodings([term])
            codecs.lookup(name)
        except (LookupError, ValueError):
            return None
        names.append(name)
    return names


def encodable(text: str, terms: list[str]) -> bool:
    """Whether every character of ``text`` can be encoded with one of the character sets named by ``terms``."""
    if text.isascii():
        return True
    names = _codecs(terms) if terms else ["ascii"]
    if names is None:
        return False
    for ch in text:
        if ch.isascii():
            continue
        for name in names:
            try:
                ch.encode(name)
                break
            except UnicodeError:
                continue
        else:
            return False
    return True


def texts(ds: Dataset) -> Iterable[str]:
    """Every text value of the dataset (sequences included) that the character set applies to."""
    for elem in ds:
        if elem.VR == "SQ" and isinstance(elem.value, Sequence):
            for item in elem.value:
                yield from texts(item)
        elif elem.VR in TEXT_VRS and elem.value is not None:
            values = elem.value if isinstance(elem.value, list | tuple) else [elem.value]
            yield from (str(v) for v in values)


def response_charset(requested: list[str], values: Iterable[str]) -> list[str]:
    """The (0008,0005) terms to answer with (``[]``: leave it out)."""
    if requested and _codecs(requested) is None:  # a character set we do not know: answer in a known one
        requested = []
    all_values = list(values)
    if all(encodable(v, requested) for v in all_values):
        return requested
    return [UTF8]


def apply_charset(ds: Dataset, requested: list[str]) -> None:
    """Set (0008,0005) of a response dataset; pydicom then encodes its text in that character set."""
    terms = response_charset(requested, texts(ds))
    if terms:
        ds.SpecificCharacterSet = terms if len(terms) > 1 else terms[0]
    elif "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
