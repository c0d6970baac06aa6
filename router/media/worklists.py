"""Where ``router import --reconcile`` looks for the local patient and order of an imported study: the worklist.

``LocalWorklist`` reads the items the HL7 orders made (``router.hl7.orders``, the same rows the MWL SCP answers
from), with the demographics coercion's own readers (``router.hl7.demographics``). ``RemoteWorklist`` asks a DICOM
peer's Modality Worklist SCP by C-FIND (PS3.4 K.6). Both answer the three questions of the import reconciliation,
each with the worklist entries that fit, the active ones first:

- by Accession Number;
- by Patient ID with its Issuer of Patient ID (both needed: a patient ID without its issuer, from another hospital,
  may name another patient here);
- by Patient's Name (compared as the MWL SCP does: case and accents aside) with Patient's Birth Date.

Cancelled and discontinued steps are left out; completed ones still name the right patient and order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import ColumnElement, select
from sqlalchemy.engine import Engine

from router.config import RouterConfig
from router.hl7.coding import dicom_coding_scheme
from router.hl7.demographics import _find_patient, _order_values, _patient_values  # the coercion's own readers
from router.query.matching import normalize_name
from router.store.models import SpsStatus
from router.store.tables import PATIENT
from router.store.tables import WORKLIST_ITEM as WORKLIST

MWL_FIND = "1.2.840.10008.5.1.4.31"
PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
ORDER_KEYS = ("AccessionNumber", "ReferringPhysicianName")
LEFT_OUT = (SpsStatus.CANCELED, SpsStatus.DISCONTINUED)


class WorklistUnavailable(Exception):
    """The worklist peer could not be asked (the message says why)."""


@dataclass(frozen=True)
class WorklistEntry:
    """One worklist item as DICOM values (keyword -> value): its patient's and its order's."""

    patient: dict[str, Any]
    order: dict[str, Any]

    @property
    def patient_key(self) -> tuple[str, str]:
        return str(self.patient.get("PatientID") or ""), str(self.patient.get("IssuerOfPatientID") or "")


class Worklist(Protocol):
    name: str  # for the report: "local" or the peer's name

    def by_accession(self, accession: str) -> list[WorklistEntry]: ...

    def by_patient_id(self, patient_id: str, issuer: str) -> list[WorklistEntry]: ...

    def by_name_and_birth_date(self, name: str, birth_date: str) -> list[WorklistEntry]: ...


def _with_scheme(order: dict[str, Any], local_scheme: str) -> dict[str, Any]:
    """The order's procedure code with a DICOM Coding Scheme Designator (rows and peers may hold HL7's ``L``)."""
    codes = order.get("ProcedureCodeSequence")
    for item in codes or ():
        if "CodeValue" in item:
            item.CodingSchemeDesignator = dicom_coding_scheme(str(item.get("CodingSchemeDesignator", "")), local_scheme)
    return order


class LocalWorklist:
    """The router's own worklist items (the index of ``config``)."""

    name = "local"

    def __init__(self, engine: Engine, local_scheme: str) -> None:
        self.engine, self.local_scheme = engine, local_scheme

    def _entries(self, where: ColumnElement[bool], name: str = "") -> list[WorklistEntry]:
        query = (
            select(WORKLIST)
            .join(PATIENT, PATIENT.c.id == WORKLIST.c.patient_fk)
            .where(where, WORKLIST.c.status.not_in(LEFT_OUT))
            .order_by(WORKLIST.c.status.in_(SpsStatus.ACTIVE).desc(), WORKLIST.c.id.desc())
        )
        found: list[WorklistEntry] = []
        with self.engine.connect() as conn:
            for row in conn.execute(query).all():
                patient = _patient_values(conn, row.patient_fk)
                if patient is None or (name and normalize_name(patient["PatientName"]) != normalize_name(name)):
                    continue
                found.append(WorklistEntry(patient, _with_scheme(_order_values(row), self.local_scheme)))
        return found

    def by_accession(self, accession: str) -> list[WorklistEntry]:
        return self._entries(WORKLIST.c.accession_number == accession) if accession else []

    def by_patient_id(self, patient_id: str, issuer: str) -> list[WorklistEntry]:
        if not patient_id or not issuer:
            return []
        with self.engine.connect() as conn:
            patient_fk = _find_patient(conn, patient_id, issuer)
        return [] if patient_fk is None else self._entries(WORKLIST.c.patient_fk == patient_fk)

    def by_name_and_birth_date(self, name: str, birth_date: str) -> list[WorklistEntry]:
        if not normalize_name(name) or not birth_date:
            return []
        return self._entries(PATIENT.c.birth_date == birth_date, name=name)


class RemoteWorklist:
    """A DICOM peer's Modality Worklist, by C-FIND."""

    def __init__(self, config: RouterConfig, peer: str) -> None:
        from router.scu.commands import peer_named

        self.config, self.name = config, peer
        self.peer = peer_named(config, peer)
        self.local_scheme = config.hl7.local_coding_scheme

    def by_accession(self, accession: str) -> list[WorklistEntry]:
        return self._find({"AccessionNumber": accession}) if accession else []

    def by_patient_id(self, patient_id: str, issuer: str) -> list[WorklistEntry]:
        if not patient_id or not issuer:
            return []
        found = self._find({"PatientID": patient_id, "IssuerOfPatientID": issuer})
        return [e for e in found if e.patient_key == (patient_id, issuer)]  # a SCP may ignore the issuer key

    def by_name_and_birth_date(self, name: str, birth_date: str) -> list[WorklistEntry]:
        if not normalize_name(name) or not birth_date:
            return []
        found = self._find({"PatientName": name.replace("*", "").replace("?", ""), "PatientBirthDate": birth_date})
        wanted = normalize_name(name)
        return [e for e in found if normalize_name(str(e.patient.get("PatientName") or "")) == wanted]

    def _find(self, keys: dict[str, str]) -> list[WorklistEntry]:
        return [self._entry(ds) for ds in self._matches(_identifier(keys))]

    def _matches(self, identifier: Dataset) -> Iterator[Dataset]:
        from pynetdicom.presentation import build_context

        from router.scu.association import AssociationFailed
        from router.scu.commands import associate

        try:
            with associate(self.config, self.peer, [build_context(MWL_FIND)]) as assoc:
                for status, match in assoc.send_c_find(identifier, MWL_FIND):
                    if status is None or "Status" not in status:
                        raise WorklistUnavailable(f"worklist peer {self.name}: no valid C-FIND response")
                    code = int(status.Status)
                    if code in (0xFF00, 0xFF01):
                        if match is not None:
                            yield match
                        continue
                    if code != 0:
                        raise WorklistUnavailable(f"worklist peer {self.name}: C-FIND status 0x{code:04X}")
                    return
        except AssociationFailed as exc:
            raise WorklistUnavailable(f"worklist peer {self.name}: {exc}") from exc

    def _entry(self, ds: Dataset) -> WorklistEntry:
        patient = {k: _value(ds, k) for k in PATIENT_KEYS}
        order: dict[str, Any] = {k: _value(ds, k) for k in ORDER_KEYS}
        codes = ds.get("RequestedProcedureCodeSequence")
        if codes:
            code = Dataset()
            for keyword in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
                setattr(code, keyword, _value(codes[0], keyword))
            order["ProcedureCodeSequence"] = Sequence([code])
        return WorklistEntry(patient, _with_scheme(order, self.local_scheme))


def _value(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _identifier(keys: dict[str, str]) -> Dataset:
    """An MWL query: ``keys`` matched, the attributes reconciliation writes returned."""
    ds = Dataset()
    for keyword in (*PATIENT_KEYS, *ORDER_KEYS, "RequestedProcedureID", "StudyInstanceUID"):
        setattr(ds, keyword, keys.get(keyword, ""))
    ds.RequestedProcedureCodeSequence = Sequence()
    step = Dataset()
    step.Modality = ""
    step.ScheduledStationAETitle = ""
    step.ScheduledProcedureStepStartDate = ""
    step.ScheduledProcedureStepStatus = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds
