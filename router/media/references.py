"""``router import --reconcile --new-uids``: references inside objects follow the objects they reference.

The run's re-identified UIDs (``in_set``) are the Study, Series, SOP Instance and Frame of Reference UIDs of the
objects it imports. Wherever an object holds one of them, at the top level or in a sequence item at any depth (a
presentation state's Referenced Series Sequence and Referenced Image Sequence, Source Image Sequence, Referenced
Study Sequence, Frame of Reference UID, Referenced Frame of Reference UID ...), it is replaced by its new UID. A
UID outside the set (an object that is not imported, another study's image) is left as it is. Original Attributes
Sequence keeps the old values: it is never rewritten.

The replacements are by value: any element of value representation UI whose value is a re-identified UID. A SOP
Class UID or a Transfer Syntax UID is never one of them. Private attributes at the top level are left as they are
(they have no keyword to write them back by), and so is an element whose VR is not known (implicit VR, private).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

IDENTITIES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
KEPT = "OriginalAttributesSequence"  # the values before every change: never rewritten


def identities(ds: Dataset) -> set[str]:
    """The UIDs that identify ``ds`` and its study, series and frame of reference (those it has)."""
    found = {str(ds.get(keyword, "") or "").strip("\x00 ") for keyword in IDENTITIES}
    return found - {""}


def _mapped(value: Any, in_set: Collection[str], new: Callable[[str], str]) -> Any:
    """``value`` (a UID or several) with the re-identified ones replaced; the same object when none is."""
    if isinstance(value, MultiValue | list):
        items = [str(v).strip("\x00 ") for v in value]
        if not any(v in in_set for v in items):
            return value
        return [new(v) if v in in_set else v for v in items]
    text = str(value or "").strip("\x00 ")
    return new(text) if text in in_set else value


def _rewrite_items(seq: Sequence, in_set: Collection[str], new: Callable[[str], str]) -> bool:
    """Replace re-identified UIDs in the items of ``seq`` in place; whether any was."""
    changed = False
    for item in seq:
        for elem in item:
            changed = _rewrite(elem, in_set, new) or changed
    return changed


def _rewrite(elem: DataElement, in_set: Collection[str], new: Callable[[str], str]) -> bool:
    if elem.VR == "SQ":
        return elem.keyword != KEPT and _rewrite_items(elem.value, in_set, new)
    if elem.VR != "UI" or elem.value is None:
        return False
    value = _mapped(elem.value, in_set, new)
    if value is elem.value:
        return False
    elem.value = value
    return True


def rewritten(ds: Dataset, in_set: Collection[str], new: Callable[[str], str]) -> dict[str, Any]:
    """The new value of each top-level attribute of ``ds`` holding a re-identified UID (itself or in its items),
    by keyword: a UID, or a rewritten copy of a sequence. ``ds`` is not changed: the caller writes the values and
    keeps the old ones (``apply_demographics``). Private elements (no keyword) are left as they are."""
    values: dict[str, Any] = {}
    for elem in ds:
        if not elem.keyword or elem.keyword == KEPT or elem.tag.group == 0x0002:
            continue
        if elem.VR == "SQ":
            copied = copy.deepcopy(elem.value)
            if _rewrite_items(copied, in_set, new):
                values[elem.keyword] = copied
        elif elem.VR == "UI" and elem.value is not None:
            value = _mapped(elem.value, in_set, new)
            if value is not elem.value:
                values[elem.keyword] = value
    return values
