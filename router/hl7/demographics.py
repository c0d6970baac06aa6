"""What the hospital system knows about an object's patient and order, and making the object agree with it.

``known_demographics`` finds, for a DICOM header, the HL7 order (by Accession Number, else Study Instance UID)
or the HL7 patient (by Patient ID and, when present, Issuer of Patient ID; identifiers merged away by an A40
lead to the surviving patient). ``apply_demographics`` writes the HL7 values into the dataset and records the
values it replaced in Original Attributes Sequence (0400,0561), per PS3.3 C.12.1.
``apply_bsn_mode`` prepares an object for a peer with ``patient_id: bsn`` (the ISUDM 2.1 statement's C-STORE
SCU BSN mode).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import Connection, select

from router.config import RouterConfig
from router.hl7.coding import dicom_coding_scheme
from router.store.models import BSN_OID, SpsStatus
from router.store.tables import PATIENT
from router.store.tables import PATIENT_IDENTIFIER as IDENT
from router.store.tables import WORKLIST_ITEM as WORKLIST

MODIFYING_SYSTEM = "DICOM-HL7 ROUTER"


@dataclass(frozen=True)
class KnownIdentifier:
    value: str
    authority: str
    authority_uid: str
    authority_uid_type: str
    is_bsn: bool


@dataclass(frozen=True)
class Demographics:
    """HL7-known values, as DICOM attribute values (keyword -> value); ``identifiers`` for the BSN mode."""

    patient_fk: int
    values: dict[str, Any]
    identifiers: tuple[KnownIdentifier, ...] = field(default=())
    matched_by: str = ""

    @property
    def bsn(self) -> KnownIdentifier | None:
        return next((i for i in self.identifiers if i.is_bsn), None)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).replace("\x00", "").strip() if value is not None else ""


def _identifiers(conn: Connection, patient_fk: int) -> tuple[KnownIdentifier, ...]:
    rows = conn.execute(
        select(IDENT.c.value, IDENT.c.authority, IDENT.c.authority_uid, IDENT.c.authority_uid_type, IDENT.c.is_bsn)
        .where(IDENT.c.patient_fk == patient_fk, IDENT.c.merged.is_(False))
        .order_by(IDENT.c.id)
    ).all()
    return tuple(KnownIdentifier(*row) for row in rows)


def _patient_values(conn: Connection, patient_fk: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(PATIENT.c.patient_id, PATIENT.c.issuer, PATIENT.c.name, PATIENT.c.birth_date, PATIENT.c.sex).where(
            PATIENT.c.id == patient_fk
        )
    ).first()
    if row is None:
        return None
    return {
        "PatientID": row.patient_id,
        "IssuerOfPatientID": row.issuer,
        "PatientName": row.name,
        "PatientBirthDate": row.birth_date,
        "PatientSex": row.sex,
    }


def _order_values(item: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"AccessionNumber": item.accession_number}
    if item.referring_physician:
        values["ReferringPhysicianName"] = item.referring_physician
    # no Requesting Physician (0032,1032): PS3.3 defines it in the Imaging Service Request Module only (the worklist
    # has it), in no composite image IOD, not in Request Attributes Sequence either (PS3.3 Table 10-9); written into
    # an image it made a Standard Extended SOP Class (dciodvfy)
    if item.procedure_code_value:
        code = Dataset()
        code.CodeValue = item.procedure_code_value
        code.CodingSchemeDesignator = dicom_coding_scheme(item.procedure_code_scheme)  # rows from before the mapping
        code.CodeMeaning = item.procedure_code_meaning
        values["ProcedureCodeSequence"] = Sequence([code])
    return values


def _find_order(conn: Connection, accession: str, study_uid: str) -> Any:
    for column, value in ((WORKLIST.c.accession_number, accession), (WORKLIST.c.study_uid, study_uid)):
        if not value:
            continue
        # an active step first, then the most recent one (a completed order still names the right patient)
        row = conn.execute(
            select(WORKLIST)
            .where(column == value, WORKLIST.c.status != SpsStatus.CANCELED)
            .order_by(WORKLIST.c.status.in_(SpsStatus.ACTIVE).desc(), WORKLIST.c.id.desc())
            .limit(1)
        ).first()
        if row is not None:
            return row
    return None


def _find_patient(conn: Connection, patient_id: str, issuer: str) -> int | None:
    if not patient_id:
        return None
    query = select(IDENT.c.patient_fk, IDENT.c.authority, IDENT.c.authority_uid).where(IDENT.c.value == patient_id)
    rows = conn.execute(query).all()
    if issuer:
        rows = [r for r in rows if issuer in (r.authority, r.authority_uid)]
    patients = {r.patient_fk for r in rows}
    return patients.pop() if len(patients) == 1 else None  # ambiguous without an issuer: leave it alone


def known_demographics(conn: Connection, header: Dataset) -> Demographics | None:
    """The HL7-known patient (and order) for this object, or None when the hospital system does not know it."""
    order = _find_order(conn, _text(header, "AccessionNumber"), _text(header, "StudyInstanceUID"))
    if order is not None:
        patient_fk, matched_by, extra = order.patient_fk, f"order {order.accession_number}", _order_values(order)
    else:
        found = _find_patient(conn, _text(header, "PatientID"), _text(header, "IssuerOfPatientID"))
        if found is None:
            return None
        patient_fk, matched_by, extra = found, "patient id", {}
    values = _patient_values(conn, patient_fk)
    if values is None:
        return None
    return Demographics(patient_fk, {**values, **extra}, _identifiers(conn, patient_fk), matched_by)


def _same(ds: Dataset, keyword: str, value: Any) -> bool:
    if keyword not in ds:
        return value in ("", None)
    current = ds[keyword].value
    if isinstance(value, Sequence):
        return isinstance(current, Sequence) and [dict(i) for i in current] == [dict(i) for i in value]
    return str(current if current is not None else "").strip() == str(value).strip()


def apply_demographics(ds: Dataset, known: Demographics, reason: str = "COERCE") -> list[str]:
    """Make ``ds`` carry the known values; the replaced values go to Original Attributes Sequence.

    Empty HL7 values do not erase what the object has. Returns the keywords changed."""
    changed = [k for k, v in known.values.items() if v not in ("", None) and not _same(ds, k, v)]
    if not changed:
        return []
    original = Dataset()
    for keyword in changed:
        if keyword in ds:
            original[keyword] = copy.deepcopy(ds[keyword])  # setattr below changes the element in place
        else:  # it was absent: recorded as zero-length
            original.add_new(keyword, _vr(keyword), None)
    for keyword in changed:
        setattr(ds, keyword, known.values[keyword])
    _add_original_attributes(ds, original, reason)
    return changed


def _vr(keyword: str) -> str:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return str(dictionary_VR(tag))


def _add_original_attributes(ds: Dataset, original: Dataset, reason: str) -> None:
    item = Dataset()
    item.AttributeModificationDateTime = datetime.now(UTC).strftime("%Y%m%d%H%M%S.%f+0000")
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.SourceOfPreviousValues = ""
    item.ReasonForTheAttributeModification = reason
    item.ModifiedAttributesSequence = Sequence([original])
    if "OriginalAttributesSequence" not in ds:
        ds.OriginalAttributesSequence = Sequence()
    ds.OriginalAttributesSequence.append(item)


def _other_id(value: str, issuer: str, qualifiers: Dataset | None = None) -> Dataset:
    item = Dataset()
    item.PatientID = value
    item.IssuerOfPatientID = issuer
    item.TypeOfPatientID = "TEXT"
    if qualifiers is not None:
        item.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
    return item


def apply_bsn_mode(ds: Dataset, known: Demographics | None, config: RouterConfig) -> bool:
    """Patient ID := the BSN, Issuer := the BSN OID, every other identifier in Other Patient IDs Sequence.

    Identifiers already in the object's Other Patient IDs Sequence are kept as they are. Returns False (and
    changes nothing) when the patient has no BSN."""
    bsn = known.bsn if known is not None else None
    if bsn is None or known is None:
        return False
    authorities = config.hl7.assigning_authorities
    existing = list(ds.get("OtherPatientIDsSequence", []))
    seen = {(_text(i, "PatientID"), _text(i, "IssuerOfPatientID")) for i in existing}
    added: list[Dataset] = []

    def add(value: str, issuer: str, qualifiers: Dataset | None) -> None:
        if value and (value, issuer) not in seen:
            seen.add((value, issuer))
            added.append(_other_id(value, issuer, qualifiers))

    original_id, original_issuer = _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")
    add(bsn.value, BSN_OID, None)
    others = [i for i in known.identifiers if not i.is_bsn]
    if original_id and not any(i.value == original_id for i in others):
        add(original_id, original_issuer, None)
    for ident in others:
        uid, uid_type = ident.authority_uid, ident.authority_uid_type
        if not uid and ident.authority in authorities:
            configured = authorities[ident.authority]
            uid, uid_type = configured.universal_id, configured.universal_id_type
        qualifiers = None
        if uid:
            qualifiers = Dataset()
            qualifiers.UniversalEntityID = uid
            qualifiers.UniversalEntityIDType = uid_type or "ISO"
        add(ident.value, ident.authority, qualifiers)
    ds.PatientID = bsn.value
    ds.IssuerOfPatientID = BSN_OID
    ds.OtherPatientIDsSequence = Sequence(existing + added)
    return True
