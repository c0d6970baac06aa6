"""Query/Retrieve test helpers: a corpus with known keys, an independent model of what it holds, DCMTK's findscu.

The expected answer of every query is computed here, in Python, from the files themselves (read with pydicom),
never from the router's index or its SQL: the corpus is a list of records, and ``Corpus.matching`` filters them
with the matching rules of PS3.4 C.2.2.2 written as plain string and regex comparisons.
"""

from __future__ import annotations

import re
import subprocess
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from peers import CT_IMAGE, DCMTK_ENV, free_port, make_instance
from tools import dcmtk

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
PATIENT_FIELDS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")
STUDY_FIELDS = ("StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription")
SERIES_FIELDS = ("Modality", "SeriesNumber", "BodyPartExamined", "PerformedProcedureStepStartDate")


def text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


@dataclass(frozen=True)
class Record:
    """One instance and the keys of its patient, study and series, as a file states them."""

    path: Path
    values: dict[str, str]
    requests: tuple[tuple[str, str], ...]  # (Requested Procedure ID, Scheduled Procedure Step ID) per item

    def __getitem__(self, keyword: str) -> str:
        return self.values[keyword]


def record_of(path: Path) -> Record:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    keywords = (
        *PATIENT_FIELDS, *STUDY_FIELDS, *SERIES_FIELDS, "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
        "SOPClassUID", "InstanceNumber", "ImageType", "PerformedProcedureStepStartTime",
    )  # fmt: skip
    values = {k: text(ds, k) for k in keywords}
    for k in ("StudyDate", "PatientBirthDate", "PerformedProcedureStepStartDate"):
        values[k] = values[k].replace(".", "")
    for k in ("StudyTime", "PerformedProcedureStepStartTime"):
        values[k] = values[k].replace(":", "")
    items = ds.get("RequestAttributesSequence") or []
    requests = tuple((text(i, "RequestedProcedureID"), text(i, "ScheduledProcedureStepID")) for i in items)
    return Record(path, values, requests)


def consistent(paths: Iterable[Path]) -> list[Path]:
    """The files whose patient, study and series keys agree with the first file naming the same entity: the index
    keeps an entity's keys from the first object it stores, so only these have one unambiguous expected answer."""
    seen: dict[tuple[str, ...], tuple[Any, ...]] = {}
    kept = []
    for path in paths:
        r = record_of(path)
        claims = {
            ("patient", r["PatientID"], r["IssuerOfPatientID"]): tuple(r[k] for k in PATIENT_FIELDS),
            ("study", r["StudyInstanceUID"]): (r["PatientID"], r["IssuerOfPatientID"], *(r[k] for k in STUDY_FIELDS)),
            ("series", r["SeriesInstanceUID"]): (r["StudyInstanceUID"], *(r[k] for k in SERIES_FIELDS), r.requests),
        }
        if all(seen.get(key, value) == value for key, value in claims.items()):
            seen.update(claims)
            kept.append(path)
    return kept


# -- matching, written independently of router.query.matching -----------------------------------------------------
def fold(name: str) -> str:
    """Case and accents away, trailing empty name components dropped."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c)).upper()
    return "=".join(g.rstrip("^") for g in plain.split("=")).rstrip("=")


def wildcard_regex(query: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in query) + r"\Z", re.S)


def name_matches(query: str, value: str) -> bool:
    q, v = fold(query), fold(value)
    pattern = wildcard_regex(q)
    return bool(pattern.match(v) or ("=" not in q and pattern.match(v.split("=")[0])))


def text_matches(query: str, value: str) -> bool:
    return any(wildcard_regex(q).match(value) for q in query.split("\\"))


def in_range(query: str, value: str, ceil: Callable[[str], str] = lambda v: v) -> bool:
    if not value:
        return False
    lo, _, hi = query.partition("-") if "-" in query else (query, "", query)
    return (not lo or value >= lo) and (not hi or value <= ceil(hi))


def time_ceil(tm: str) -> str:
    return (tm + "595959"[len(tm) - 2 :])[:6] + ".999999" if len(tm) < 6 else tm + ".999999"


# -- the corpus --------------------------------------------------------------------------------------------------
LEVEL_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


@dataclass
class Corpus:
    records: list[Record]

    def matching(self, level: str, predicate: Callable[[Record], bool] = lambda r: True) -> set[str]:
        """The unique keys (at ``level``) of the entities one of whose instances satisfies ``predicate``."""
        return {r[LEVEL_KEY[level]] for r in self.records if predicate(r)}

    def where(self, **equal: str) -> list[Record]:
        return [r for r in self.records if all(r[k] == v for k, v in equal.items())]

    def by_uid(self, keyword: str, value: str) -> Record:
        return next(r for r in self.records if r[keyword] == value)


def generated_corpus(bulk: int = 0) -> list[Dataset]:
    """Three patients, six studies, with the keys the Q/R tests match on; ``bulk`` more images in one series."""
    out: list[Dataset] = []

    def series(patient: tuple[str, str, str, str], study: dict[str, Any], modality: str, n: int, **extra: Any) -> None:
        pid, name, birth, sex = patient
        series_uid = generate_uid()
        number = str(extra.pop("number", 1))
        for i in range(n):
            ds = make_instance(
                study["uid"], series_uid, sop_class=CT_IMAGE if modality == "CT" else MR_IMAGE,
                PatientID=pid, PatientName=name, PatientBirthDate=birth, PatientSex=sex,
                StudyDate=study["date"], StudyTime=study["time"], AccessionNumber=study["acc"],
                StudyID=study["id"], StudyDescription=study["desc"], Modality=modality,
                SeriesNumber=number, InstanceNumber=str(i + 1),
                ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], **extra,
            )  # fmt: skip
            ds.SpecificCharacterSet = "ISO_IR 100"
            out.append(ds)

    def requests(*items: tuple[str, str]) -> list[Dataset]:
        seq = []
        for rp, sps in items:
            item = Dataset()
            item.RequestedProcedureID = rp
            item.ScheduledProcedureStepID = sps
            seq.append(item)
        return seq

    p1 = ("QR-P1", "Müller^Jürgen", "19700101", "M")
    p2 = ("QR-P2", "MULLER^ANNA", "19800202", "F")
    p3 = ("QR-P3", "O'Brien^Seán", "19900303", "M")
    s = [
        {"date": "20240101", "time": "223000", "acc": "ACC%1", "desc": "CT HEAD", "id": "S1"},
        {"date": "20240102", "time": "0500", "acc": "ACC_2", "desc": "MR KNEE", "id": "S2"},
        {"date": "20231231", "time": "235959.5", "acc": "ACCX1", "desc": "CT CHEST", "id": "S3"},
        {"date": "20240115", "time": "093000.123", "acc": "B-17", "desc": "MR HEAD", "id": "S4"},
        {"date": "20240102", "time": "0601", "acc": "B-18", "desc": "MR SPINE", "id": "S5"},
        {"date": "", "time": "", "acc": "", "desc": "UNDATED", "id": "S6"},
    ]
    for study in s:
        study["uid"] = generate_uid()
    rp1 = requests(("RP100", "SPS1"), ("RP200", "SPS2"))
    series(p1, s[0], "CT", 3, BodyPartExamined="HEAD", PerformedProcedureStepStartDate="20240101",
           PerformedProcedureStepStartTime="2230", RequestAttributesSequence=rp1)  # fmt: skip
    series(p1, s[0], "MR", 2, number=2, BodyPartExamined="HEAD", RequestAttributesSequence=requests(("RP300", "SPS1")))
    series(p1, s[1], "MR", 2, BodyPartExamined="KNEE")
    series(p2, s[2], "CT", 2, BodyPartExamined="CHEST", RequestAttributesSequence=requests(("RP101", "SPS3")))
    series(p2, s[2], "MR", 1, number=2, BodyPartExamined="CHEST")
    series(p2, s[3], "MR", 2, BodyPartExamined="HEAD")
    series(p3, s[4], "MR", 1, BodyPartExamined="SPINE")
    series(p3, s[5], "CT", bulk or 1, BodyPartExamined="ABDOMEN")
    return out


class PynetdicomSCP:
    """A storage SCP in this process; ``delay`` seconds per object; refuses objects ``refuse(ds)`` says."""

    def __init__(self, aet: str, delay: float = 0.0, refuse: Any = None) -> None:
        self.aet, self.delay, self.refuse = aet, delay, refuse
        self.port = free_port()
        self.received: list[str] = []
        self.raw: dict[str, bytes] = {}  # the dataset bytes as they came over the network
        self.server: ThreadedAssociationServer | None = None

    def _on_store(self, event: evt.Event) -> int:
        time.sleep(self.delay)  # the scenario, not a synchronisation: a slow peer
        ds = event.dataset
        if self.refuse is not None and self.refuse(ds):
            return 0xA700
        self.received.append(str(ds.SOPInstanceUID))
        self.raw[str(ds.SOPInstanceUID)] = event.request.DataSet.getvalue()  # type: ignore[union-attr]
        return 0x0000

    def start(self) -> PynetdicomSCP:
        ae = AE(ae_title=self.aet)
        for cx in AllStoragePresentationContexts:  # every transfer syntax: nothing needs converting
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context("1.2.840.10008.1.1")
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


# -- DCMTK findscu ------------------------------------------------------------------------------------------------
@dataclass
class FindResult:
    statuses: list[int]
    responses: list[Dataset]
    log: str

    @property
    def status(self) -> int:
        return self.statuses[-1] if self.statuses else -1

    def keys(self, keyword: str) -> set[str]:
        return {text(ds, keyword) for ds in self.responses}


STATUS_LINE = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


def findscu(port: int, model: str, keys: list[str], workdir: Path, *extra: str) -> FindResult:
    """findscu -P/-S/-O with ``-k`` keys; the responses as written by ``-X``, every DIMSE status in order."""
    out_dir = workdir / f"find-{generate_uid()[-12:]}"
    out_dir.mkdir(parents=True)
    args = [dcmtk("findscu"), "-d", "-aet", "FINDSCU", "-aec", "ROUTER", model, "-X", "-od", str(out_dir), *extra]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run(
        [*args, "127.0.0.1", str(port)], capture_output=True, text=True, errors="replace", env=DCMTK_ENV, timeout=60
    )
    log = done.stdout + done.stderr
    statuses = [int(m, 16) for m in STATUS_LINE.findall(log)]
    responses = [pydicom.dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]
    return FindResult(statuses, responses, log)
