"""``router import --reconcile``: imported studies take the local patient and order (IHE Import Reconciliation
Workflow, RAD TF-1 21).

Each study is matched once, on its first object, against a worklist (``router.media.worklists``: the router's own
items made from HL7 orders, or a peer's MWL by C-FIND):

1. by Accession Number: the order's patient and the order (``accession``);
2. else by Patient ID with Issuer of Patient ID, then by Patient's Name with Patient's Birth Date
   (``demographics``): the patient; the order too when that patient has exactly one;
3. else (nothing, or entries of more than one patient: ambiguous) ``none``: the study is imported as it is, or
   held back with ``--matched-only``.

A matched object's patient and order attributes are written with the local values by the demographics coercion
itself (``router.hl7.demographics.apply_demographics``): the values replaced go to Original Attributes Sequence
(reason COERCE). ``--new-uids`` gives every Study, Series, SOP Instance and Frame of Reference UID a new ``2.25``
UID, the same new UID for the same old one throughout a run (a keyed hash: objects of one series stay one series, in
any order), and references to them inside objects follow (``router.media.references``: the importer's ``survey``
pass names every object of the run first); the old values (the top-level attribute, or the whole top-level
sequence) are kept in the same Original Attributes Sequence item. When a local value does not fit the object's
Specific Character Set, the object is declared ``ISO_IR 192`` (UTF-8; the old set is kept there too).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from router.hl7.demographics import Demographics, apply_demographics
from router.media import references
from router.media.worklists import Worklist, WorklistEntry

ACCESSION, DEMOGRAPHICS, NONE = "accession", "demographics", "none"
UTF8 = "ISO_IR 192"
# values the demographics coercion writes that no composite image IOD has at the top level (dciodvfy: "not present
# in standard DICOM IOD"): reconciliation leaves them out, so the object does not become a Standard Extended one
OUTSIDE_IODS = frozenset({"RequestingPhysician"})


@dataclass(frozen=True)
class ReconcileOptions:
    matched_only: bool = False  # hold back studies without a match
    new_uids: bool = False


@dataclass
class StudyMatch:
    """What reconciliation found and did for one study (a row of the report's ``studies``)."""

    study_uid: str  # as on the medium
    matched: str  # accession | demographics | none
    how: str  # in words: which keys matched, or why there is no match
    values: dict[str, Any] = field(default_factory=dict, repr=False)  # the local values written
    objects: int = 0
    held_back: bool = False
    changed: set[str] = field(default_factory=set)
    new_study_uid: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"study_uid": self.study_uid, "matched": self.matched, "how": self.how, "objects": self.objects,
                "held_back": self.held_back, "changed": sorted(self.changed),
                "new_study_uid": self.new_study_uid}  # fmt: skip


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).replace("\x00", "").strip()


def _one_patient(entries: list[WorklistEntry]) -> bool:
    return len({e.patient_key for e in entries}) == 1


def match_study(worklist: Worklist, ds: Dataset) -> StudyMatch:
    """The worklist's patient and order for the study of ``ds`` (pure but for the worklist's look-ups)."""
    study = _text(ds, "StudyInstanceUID")
    accession = _text(ds, "AccessionNumber")
    entries = worklist.by_accession(accession)
    if entries:
        if not _one_patient(entries):
            return StudyMatch(study, NONE, f"accession number: items of {len({e.patient_key for e in entries})} "
                                           "patients in the worklist (ambiguous)")  # fmt: skip
        return StudyMatch(study, ACCESSION, "accession number", {**entries[0].patient, **entries[0].order})
    patient_id, issuer = _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")
    name, birth_date = _text(ds, "PatientName"), _text(ds, "PatientBirthDate")
    for how, found in (
        ("patient ID and issuer", lambda: worklist.by_patient_id(patient_id, issuer)),
        ("patient name and birth date", lambda: worklist.by_name_and_birth_date(name, birth_date)),
    ):
        entries = found()
        if not entries:
            continue
        if not _one_patient(entries):
            return StudyMatch(study, NONE, f"{how}: {len({e.patient_key for e in entries})} patients (ambiguous)")
        if len(entries) == 1:
            return StudyMatch(study, DEMOGRAPHICS, how, {**entries[0].patient, **entries[0].order})
        return StudyMatch(study, DEMOGRAPHICS, f"{how} (the patient has {len(entries)} orders: patient only)",
                          dict(entries[0].patient))  # fmt: skip
    return StudyMatch(study, NONE, "no worklist item with its accession number or patient")


class UidMap:
    """New UIDs for old ones, the same for the same old UID within a run (HMAC-SHA-256 under a key of the run)."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or os.urandom(32)

    def __call__(self, old: str) -> str:
        digest = hmac.new(self.key, old.encode("ascii", "replace"), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _fits(ds: Dataset, values: dict[str, Any]) -> bool:
    """Whether the new text values can be written in the object's declared Specific Character Set."""
    texts = [str(v) for v in values.values() if isinstance(v, str)]
    if all(t.isascii() for t in texts):
        return True
    declared = ds.get("SpecificCharacterSet") or ""
    terms = [declared] if isinstance(declared, str) else list(declared)
    if len(terms) != 1 or not terms[0]:
        return False  # the default repertoire, or ISO 2022 code extensions: UTF-8 is simpler and always fits
    try:
        codec = convert_encodings(terms)[0]
        for text in texts:
            text.encode(codec)
    except (LookupError, UnicodeError):
        return False
    return True


class Reconciler:
    """Matches studies once and rewrites their objects; ``studies`` holds the report rows."""

    def __init__(self, worklist: Worklist, options: ReconcileOptions, uids: UidMap | None = None) -> None:
        self.worklist, self.options = worklist, options
        self.uids = uids or UidMap()
        self.studies: dict[str, StudyMatch] = {}
        self.in_set: set[str] = set()  # --new-uids: the UIDs re-identified in this run (router.media.references)

    def _match(self, ds: Dataset) -> StudyMatch:
        study = _text(ds, "StudyInstanceUID")
        match = self.studies.get(study)
        if match is None:
            match = self.studies[study] = match_study(self.worklist, ds)
            match.held_back = self.options.matched_only and match.matched == NONE
        return match

    def survey(self, raw: bytes) -> None:
        """Before the run: note an object that will be imported, so that references to it are rewritten in the
        objects before it too (``--new-uids``; its study is matched now, once, and held back or not)."""
        if not self.options.new_uids:
            return
        ds = dcmread(BytesIO(raw), stop_before_pixels=True)
        if not self._match(ds).held_back:
            self.in_set |= references.identities(ds)

    def apply(self, raw: bytes) -> tuple[bytes | None, StudyMatch, list[str]]:
        """The object's new bytes (``raw`` itself when nothing changes; None when its study is held back), its
        study's match, and the attributes changed in it."""
        ds = dcmread(BytesIO(raw))
        match = self._match(ds)
        match.objects += 1
        if match.held_back:
            return None, match, []
        values = {k: v for k, v in match.values.items() if k not in OUTSIDE_IODS}
        if self.options.new_uids:
            self.in_set |= references.identities(ds)
            values.update(references.rewritten(ds, self.in_set, self.uids))
            match.new_study_uid = values.get("StudyInstanceUID", "")
        if not _fits(ds, values):
            for _ in ds.iterall():  # every text value decoded under the declared set before the declaration changes
                pass
            values["SpecificCharacterSet"] = UTF8
        changed = apply_demographics(ds, Demographics(0, values, (), match.how), reason="COERCE")
        if not changed:
            return raw, match, []
        match.changed.update(changed)
        if "SOPInstanceUID" in changed:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = BytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
        return out.getvalue(), match, changed

    def report(self) -> list[dict[str, Any]]:
        return [m.as_json() for m in self.studies.values()]
