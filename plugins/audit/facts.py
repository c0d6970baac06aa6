"""Who and what an audit message names, read from what a hook gives or, where a hook lacks it, from the index.

PS3.15 A.5.3 messages about instances name their patient (ID and name) and their studies (Study Instance UID,
Accession Number, SOP classes with instance counts). A received object carries them; an outbox job or an export
names only SOP Instance UIDs, so ``from_index`` looks the rest up in the router's index (``router.store``). An HL7
message carries its patient in PID; an MPPS step in its attributes.

The patient ID is written as HL7 CX (``ID^^^ISSUER``) when an issuer is known, as IHE's audit messages do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Connection, select

from router.hl7.message import Hl7Message
from router.intake.envelope import Envelope, dataset_text
from router.store.tables import INSTANCE, PATIENT, SERIES, STUDY

CHUNK = 500  # SOP Instance UIDs per index query (SQLite's bound-parameter limit)


@dataclass(frozen=True)
class Patient:
    id: str  # CX: ID^^^ISSUER
    name: str  # as DICOM PN (HL7 XPN components joined with ^)


@dataclass
class Study:
    uid: str
    accessions: list[str] = field(default_factory=list)
    classes: dict[str, list[str]] = field(default_factory=dict)  # SOP Class UID -> SOP Instance UIDs
    mpps: list[str] = field(default_factory=list)

    def add(self, sop_class: str, sop_uid: str, accession: str = "") -> None:
        uids = self.classes.setdefault(sop_class, [])
        if sop_uid and sop_uid not in uids:
            uids.append(sop_uid)
        if accession and accession not in self.accessions:
            self.accessions.append(accession)


@dataclass
class Subject:
    """One patient and the studies of that patient an event concerns (A.5.3 messages name a single patient)."""

    patient: Patient
    studies: dict[str, Study] = field(default_factory=dict)

    def study(self, uid: str) -> Study:
        return self.studies.setdefault(uid, Study(uid))


UNKNOWN = Patient("", "")


def patient_id(value: str, issuer: str = "") -> str:
    return f"{value}^^^{issuer}" if issuer else value


def from_envelope(env: Envelope) -> Subject:
    """A received DICOM object, from the values it was received with (never decoding more than its header)."""
    values = env.stored_values()
    subject = Subject(Patient(patient_id(values.text("PatientID"), values.text("IssuerOfPatientID")),
                              values.text("PatientName")))  # fmt: skip
    study = subject.study(values.text("StudyInstanceUID"))
    study.add(env.sop_class_uid, env.sop_instance_uid, values.text("AccessionNumber"))
    return subject


def from_dataset(ds: Dataset) -> Subject:
    """An MPPS step (or any data set with patient attributes): its patient, the studies of its scheduled steps."""
    subject = Subject(Patient(patient_id(dataset_text(ds, "PatientID"), dataset_text(ds, "IssuerOfPatientID")),
                              dataset_text(ds, "PatientName")))  # fmt: skip
    for item in ds.get("ScheduledStepAttributesSequence", None) or []:
        study = subject.study(dataset_text(item, "StudyInstanceUID"))
        accession = dataset_text(item, "AccessionNumber")
        if accession and accession not in study.accessions:
            study.accessions.append(accession)
    return subject


def from_hl7(msg: Hl7Message) -> Patient:
    """The patient of an HL7 message: PID-3 (first repetition, as CX) and PID-5 (as PN)."""
    cx = msg.components("PID", 3)
    value = cx[0] if cx else ""
    authority = msg.value("PID", 3, 1, 4, 1) or msg.value("PID", 3, 1, 4, 2)
    name = "^".join(msg.components("PID", 5)).rstrip("^")
    return Patient(patient_id(value, authority), name)


def prior_ids(msg: Hl7Message) -> list[str]:
    """The identifiers a merge (A40, A34) folds into the surviving patient: MRG-1, as CX."""
    found = []
    for rep, comps in enumerate(msg.repetitions("MRG", 1), start=1):
        if comps and comps[0]:
            found.append(patient_id(comps[0], msg.value("MRG", 1, rep, 4, 1) or msg.value("MRG", 1, rep, 4, 2)))
    return found


def from_index(conn: Connection, refs: Iterable[tuple[str, str, str]]) -> list[Subject]:
    """Instances ``(study_uid, sop_class_uid, sop_uid)`` grouped by patient, their patient and accession read from
    the index. An instance the index does not know (removed since) keeps its study, under an unknown patient."""
    refs = list(refs)
    known: dict[str, Any] = {}
    uids = [sop for _, _, sop in refs if sop]
    for start in range(0, len(uids), CHUNK):
        for hit in conn.execute(_BY_SOP.where(INSTANCE.c.sop_uid.in_(uids[start : start + CHUNK]))):
            known[hit.sop_uid] = hit
    subjects: dict[Patient, Subject] = {}
    for study_uid, sop_class, sop_uid in refs:
        row = known.get(sop_uid)
        patient = Patient(patient_id(row.patient_id, row.issuer), row.name) if row is not None else UNKNOWN
        subject = subjects.setdefault(patient, Subject(patient))
        study = subject.study(row.study_uid if row is not None else study_uid)
        study.add(row.sop_class_uid if row is not None else sop_class, sop_uid,
                  row.accession_number if row is not None else "")  # fmt: skip
    return list(subjects.values())


def instances(conn: Connection, sop_uids: Sequence[str]) -> list[Subject]:
    """``from_index`` for instances known only by their SOP Instance UIDs (outbox jobs)."""
    return from_index(conn, [("", "", uid) for uid in sop_uids])


_BY_SOP = select(
    INSTANCE.c.sop_uid, INSTANCE.c.sop_class_uid, STUDY.c.study_uid, STUDY.c.accession_number,
    PATIENT.c.patient_id, PATIENT.c.issuer, PATIENT.c.name,
).select_from(
    INSTANCE.join(SERIES, SERIES.c.id == INSTANCE.c.series_fk)
    .join(STUDY, STUDY.c.id == SERIES.c.study_fk)
    .join(PATIENT, PATIENT.c.id == STUDY.c.patient_fk)
)  # fmt: skip
