"""Picking part of a medium (``--patient-id``, ``--study`` UID or accession number, ``--series``, ``--modality``)
and the patient/study/series tree ``--list`` prints. Values come from each object's own header."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from router.intake.envelope import HeaderValues

KEYS = ("PatientID", "IssuerOfPatientID", "PatientName", "StudyInstanceUID", "AccessionNumber", "StudyDate",
        "StudyDescription", "SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription",
        "SOPClassUID")  # fmt: skip


@dataclass(frozen=True)
class Selection:
    patient_ids: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()  # Study Instance UIDs or accession numbers
    series: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not (self.patient_ids or self.studies or self.series or self.modalities)

    def why_not(self, values: dict[str, str]) -> str:
        """ "" when the object is selected, else which option leaves it out."""
        if self.patient_ids and values["PatientID"] not in self.patient_ids:
            return "--patient-id"
        if self.studies and not ({values["StudyInstanceUID"], values["AccessionNumber"]} & set(self.studies)):
            return "--study"
        if self.series and values["SeriesInstanceUID"] not in self.series:
            return "--series"
        if self.modalities and values["Modality"].upper() not in {m.upper() for m in self.modalities}:
            return "--modality"
        return ""


def header_values(values: HeaderValues) -> dict[str, str]:
    return {key: values.text(key) for key in KEYS}


@dataclass
class SeriesNode:
    uid: str
    number: str
    modality: str
    description: str
    count: int = 0
    size: int = 0


@dataclass
class StudyNode:
    uid: str
    accession: str
    date: str
    description: str
    series: dict[str, SeriesNode] = field(default_factory=dict)


@dataclass
class PatientNode:
    patient_id: str
    name: str
    studies: dict[str, StudyNode] = field(default_factory=dict)


class Tree:
    """Patients, their studies, their series, with object counts and sizes (``--list``)."""

    def __init__(self) -> None:
        self.patients: dict[tuple[str, str], PatientNode] = {}

    def add(self, values: dict[str, str], size: int) -> None:
        key = (values["PatientID"], values["PatientName"])
        patient = self.patients.setdefault(key, PatientNode(*key))
        study = patient.studies.setdefault(
            values["StudyInstanceUID"],
            StudyNode(values["StudyInstanceUID"], values["AccessionNumber"], values["StudyDate"],
                      values["StudyDescription"]),
        )  # fmt: skip
        series = study.series.setdefault(
            values["SeriesInstanceUID"],
            SeriesNode(values["SeriesInstanceUID"], values["SeriesNumber"], values["Modality"],
                       values["SeriesDescription"]),
        )  # fmt: skip
        series.count += 1
        series.size += size

    def lines(self) -> list[str]:
        out: list[str] = []
        for patient in self.patients.values():
            counts: dict[str, int] = defaultdict(int)
            for study in patient.studies.values():
                counts["objects"] += sum(s.count for s in study.series.values())
            out.append(f"patient {patient.patient_id or '-'} {patient.name or ''} ({counts['objects']} objects)")
            for study in patient.studies.values():
                total = sum(s.count for s in study.series.values())
                out.append(f"  study {study.uid} accession {study.accession or '-'} {study.date or '-'} "
                           f"{study.description} ({total} objects)")  # fmt: skip
                for series in study.series.values():
                    size = f"{series.size / 1e6:.1f} MB"
                    out.append(f"    series {series.uid} #{series.number or '-'} {series.modality or '-'} "
                               f"{series.description} ({series.count} objects, {size})")  # fmt: skip
        return out
