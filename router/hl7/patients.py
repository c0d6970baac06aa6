"""ADT: patients and their identifiers (IHE PAM / PIR), written inside the caller's transaction.

- A01/A04/A05/A08/A28/A31 create or update the patient named by PID-3. Fields left empty in the message are
  kept (HL7 update semantics); the HL7 null ``""`` clears a value.
- A40/A34 merge: the patient(s) named by MRG-1 are folded into the surviving patient of PID-3. Their studies,
  worklist items and identifiers move to the survivor (identifiers marked ``merged``), the old patient row goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from router.hl7.codes import (
    DATA_TYPE_ERROR,
    DUPLICATE_KEY,
    REQUIRED_FIELD_MISSING,
    TABLE_VALUE_NOT_FOUND,
)
from router.hl7.errors import Hl7Error
from router.hl7.identifiers import Identifier, bsn_ok, identifier_from_cx
from router.hl7.segments import HL7_NULL, Segment
from router.query.matching import normalize_name
from router.store.models import utcnow
from router.store.rawsql import raw
from router.store.tables import PATIENT, STUDY
from router.store.tables import PATIENT_DETAILS as DETAILS
from router.store.tables import PATIENT_IDENTIFIER as IDENT
from router.store.tables import WORKLIST_ITEM as WORKLIST

UPDATE_EVENTS = {"A01", "A04", "A05", "A08", "A28", "A31"}
MERGE_EVENTS = {"A40", "A34"}
SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": ""}  # HL7 table 0001 -> DICOM (0010,0040)

# the statements every ADT update runs, compiled once (router.store.rawsql: SQLAlchemy's execution layer cost more
# than SQLite running them, issue 21); inserts and merges, rarer, stay ordinary Core statements
_IDENT = select(IDENT.c.patient_fk, IDENT.c.id).where(
    IDENT.c.value == bindparam("value"), IDENT.c.authority == bindparam("authority")
)
_PATIENT_BY_ID = select(PATIENT.c.id).where(
    PATIENT.c.patient_id == bindparam("value"), PATIENT.c.issuer == bindparam("authority")
)
_UPDATE_PATIENT = update(PATIENT).where(PATIENT.c.id == bindparam("b_id"))
_UPDATE_IDENT = update(IDENT).where(IDENT.c.id == bindparam("b_id"))
_DETAILS = select(DETAILS.c.patient_fk).where(DETAILS.c.patient_fk == bindparam("b_fk"))
_UPDATE_DETAILS = update(DETAILS).where(DETAILS.c.patient_fk == bindparam("b_fk"))


def _run(conn: Connection, statement: Any, values: dict[str, Any]) -> Any:
    """``statement`` with ``values`` on the raw cursor; its first row (a tuple) or None."""
    return raw(statement, conn, sorted(values)).execute(conn, values)


@dataclass(frozen=True)
class PatientFacts:
    identifiers: tuple[Identifier, ...]
    values: dict[str, str]  # column -> value; "" = not sent (keep), HL7_NULL = clear
    details: dict[str, str]


def identifiers(seg: Segment, field: int) -> tuple[Identifier, ...]:
    """The identifiers of a CX list field (PID-3, MRG-1); a BSN that fails the eleven-test is an error."""
    found = []
    for rep in range(1, seg.repetitions(field) + 1):
        namespace, uid, uid_type = (seg.get(field, 4, rep, sub) for sub in (1, 2, 3))
        ident = identifier_from_cx(seg.get(field, 1, rep), namespace, uid, uid_type, seg.get(field, 5, rep))
        if not ident.value:
            continue
        if ident.is_bsn and not bsn_ok(ident.value):
            raise Hl7Error(
                "AE",
                DATA_TYPE_ERROR,
                "not a valid BSN (fails the eleven-test)",
                location=(seg.name, 1, field, 1, rep),
            )
        found.append(ident)
    bsns = {i.value for i in found if i.is_bsn}
    if len(bsns) > 1:
        raise Hl7Error("AE", DUPLICATE_KEY, "more than one BSN for one patient", location=(seg.name, 1, field))
    return tuple(found)


def person_name(seg: Segment, field: int) -> str:
    """XPN (family^given^second^suffix^prefix) as a DICOM PN (family^given^middle^prefix^suffix)."""
    if seg.get(field) == HL7_NULL:
        return HL7_NULL
    parts = [seg.get(field, c) for c in (1, 2, 3, 5, 4)]
    return "^".join(parts).rstrip("^")


def hl7_date(seg: Segment, field: int, comp: int = 1) -> str:
    """A TS/DT/DTM field's date as DICOM DA; the HL7 null passes through."""
    value = seg.get(field, comp)
    if value in ("", HL7_NULL):
        return value
    date = value[:8]
    if not (date.isdigit() and len(date) == 8 and 1 <= int(date[4:6]) <= 12 and 1 <= int(date[6:8]) <= 31):
        raise Hl7Error("AE", DATA_TYPE_ERROR, "not a date (YYYYMMDD...)", location=(seg.name, 1, field, comp))
    return date


def read_patient(pid: Segment, pv1: Segment | None, extra: Sequence[Segment] = ()) -> PatientFacts:
    idents = identifiers(pid, 3)
    if not idents:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "no patient identifier", location=("PID", 1, 3, 1))
    sex = pid.get(8).upper()
    if sex not in SEX and sex not in ("", HL7_NULL):
        raise Hl7Error(
            "AE",
            TABLE_VALUE_NOT_FOUND,
            f"{sex!r} is not an administrative sex (HL7 table 0001)",
            location=("PID", 1, 8, 1),
        )
    values = {
        "name": person_name(pid, 5),
        "birth_date": hl7_date(pid, 7),
        "sex": SEX.get(sex, sex),
    }
    details: dict[str, str] = {}
    if pv1 is not None:
        details["admission_id"] = pv1.get(19)
        details["current_location"] = " ".join(p for p in (pv1.get(3, c) for c in (1, 2, 3)) if p)[:64]
    allergies = [s.get(3, 2) or s.get(3, 1) for s in extra if s.name == "AL1"]
    if allergies:
        details["allergies"] = "; ".join(a for a in allergies if a)[:1024]
    for obx in (s for s in extra if s.name == "OBX"):
        code, text = obx.get(3, 1), obx.get(3, 2).upper()
        if code in ("3141-9", "29463-7") or "WEIGHT" in text:
            details["weight"] = obx.get(5)[:16]
    return PatientFacts(idents, values, details)


def _primary(idents: Sequence[Identifier]) -> Identifier:
    return next((i for i in idents if not i.is_bsn), idents[0])


def _owners(conn: Connection, idents: Sequence[Identifier]) -> set[int]:
    owners: set[int] = set()
    for ident in idents:
        key = {"value": ident.value, "authority": ident.authority}
        row = _run(conn, _IDENT, key)
        if row is None:  # a patient the DICOM index created from images, before the hospital system spoke of it
            row = _run(conn, _PATIENT_BY_ID, key)
        if row is not None:
            owners.add(int(row[0]))
    return owners


def _add_identifiers(conn: Connection, patient_fk: int, idents: Sequence[Identifier]) -> None:
    for ident in idents:
        if ident.is_bsn:  # at most one BSN: a new one replaces the old
            conn.execute(
                delete(IDENT).where(
                    IDENT.c.patient_fk == patient_fk, IDENT.c.is_bsn.is_(True), IDENT.c.value != ident.value
                )
            )
        existing = _run(conn, _IDENT, {"value": ident.value, "authority": ident.authority})
        row: dict[str, Any] = {
            "patient_fk": patient_fk,
            "authority_uid": ident.authority_uid,
            "authority_uid_type": ident.authority_uid_type,
            "id_type": ident.id_type,
            "is_bsn": ident.is_bsn,
            "merged": False,
        }
        if existing is None:
            conn.execute(insert(IDENT).values(value=ident.value, authority=ident.authority, **row))
        else:
            _run(conn, _UPDATE_IDENT, {"b_id": existing[1], **row})


def _changes(values: dict[str, str]) -> dict[str, str]:
    changes = {k: ("" if v == HL7_NULL else v) for k, v in values.items() if v != ""}
    if "name" in changes:  # the search form C-FIND (and QIDO) match names on
        changes["name_norm"] = normalize_name(changes["name"])[:324]
    return changes


def upsert_patient(conn: Connection, facts: PatientFacts) -> int:
    """The patient's row id, created or updated from ``facts``."""
    owners = _owners(conn, facts.identifiers)
    if len(owners) > 1:
        raise Hl7Error(
            "AE",
            DUPLICATE_KEY,
            "the identifiers in PID-3 belong to different patients (merge them first)",
            location=("PID", 1, 3, 1),
        )
    changes = _changes(facts.values)
    if owners:
        patient_fk = owners.pop()
        if changes:
            _run(conn, _UPDATE_PATIENT, {"b_id": patient_fk, "updated_at": utcnow(), **changes})
    else:
        primary = _primary(facts.identifiers)
        patient_fk = int(
            conn.execute(
                insert(PATIENT)
                .values(patient_id=primary.value, issuer=primary.authority, updated_at=utcnow(), **changes)
                .returning(PATIENT.c.id)
            ).scalar_one()
        )
    _add_identifiers(conn, patient_fk, facts.identifiers)
    details = _changes(facts.details)
    if details:
        if _run(conn, _DETAILS, {"b_fk": patient_fk}) is None:
            conn.execute(insert(DETAILS).values(patient_fk=patient_fk, **details))
        else:
            _run(conn, _UPDATE_DETAILS, {"b_fk": patient_fk, **details})
    return patient_fk


def merge_patients(conn: Connection, survivor_fk: int, prior: Sequence[Identifier]) -> list[int]:
    """Fold the patients named by ``prior`` into ``survivor_fk``; returns the ids of the rows removed."""
    removed = []
    for old_fk in sorted(_owners(conn, prior) - {survivor_fk}):
        conn.execute(update(STUDY).where(STUDY.c.patient_fk == old_fk).values(patient_fk=survivor_fk))
        conn.execute(update(WORKLIST).where(WORKLIST.c.patient_fk == old_fk).values(patient_fk=survivor_fk))
        conn.execute(
            update(IDENT)
            .where(IDENT.c.patient_fk == old_fk)
            .values(patient_fk=survivor_fk, merged=True, is_bsn=False)  # the survivor's BSN is the one that counts
        )
        conn.execute(delete(DETAILS).where(DETAILS.c.patient_fk == old_fk))
        conn.execute(delete(PATIENT).where(PATIENT.c.id == old_fk))
        removed.append(old_fk)
    for ident in prior:  # a prior identifier the router never saw still points at the survivor from now on
        known = conn.execute(
            select(IDENT.c.id).where(IDENT.c.value == ident.value, IDENT.c.authority == ident.authority)
        ).first()
        if known is None:
            conn.execute(
                insert(IDENT).values(
                    patient_fk=survivor_fk,
                    value=ident.value,
                    authority=ident.authority,
                    authority_uid=ident.authority_uid,
                    authority_uid_type=ident.authority_uid_type,
                    id_type=ident.id_type,
                    is_bsn=False,
                    merged=True,
                )
            )
    return removed
