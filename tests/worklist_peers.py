"""The worklist test's world: patients and orders, the HL7 messages a RIS sends for them, DCMTK ``findscu -W`` and
what a query should return (computed from the orders, never from the router). Used by test_worklist_dcmtk.py.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from router.hl7.ack import ack_code_of

from hl7msg import encode, message, seg, send
from peers import DCMTK_ENV, RouterProcess
from tools import dcmtk

SUCCESS, PENDING, PENDING_WARNING, IDENTIFIER_DOES_NOT_MATCH = 0x0000, 0xFF00, 0xFF01, 0xA900
STATIONS = {"CT": ["CT1"], "US": ["US1"], "MR": ["MR1"]}  # hl7.worklist.station_ae_by_modality
WORKLIST_SETTINGS = {"worklist": {"station_ae_by_modality": STATIONS, "utc_offset": "+0000"}}
REFERRING = "D100^Jansen^Piet"  # PV1-8 (XCN: id^family^given)


@dataclass(frozen=True)
class Patient:
    pid: str
    family: str
    given: str
    birth_date: str
    sex: str

    @property
    def dicom_name(self) -> str:
        return f"{self.family}^{self.given}"


MULLER = Patient("P1001", "Müller", "Hans", "19700101", "M")
MULDER = Patient("P1002", "Mulder", "Anna", "19800202", "F")
DE_VRIES = Patient("P1003", "de Vries", "Jan", "19650303", "M")
BAKKER = Patient("P1004", "Bakker", "Els", "19900404", "F")
VISSER = Patient("P1005", "Visser", "Piet", "19550505", "M")
SMIT = Patient("P1006", "Smit", "Kees", "20000606", "M")


@dataclass(frozen=True)
class Order:
    """One order with one scheduled step. ``how`` says where the HL7 message puts the start and the station:

    * ``ORM``: ORM^O01, start in OBR-27.4, station from ``station_ae_by_modality``, MSH-18 ``8859/1`` (Latin-1);
    * ``ORM-ORC7``: the same, but the start only in ORC-7.4 (the last fallback of the mapping);
    * ``OMI``: OMI^O23 v2.5.1 in UTF-8, start in TQ1-7, accession/ids/modality/study UID/station in IPC
      (OBR-18/19/20/24 left empty so the IPC values are the only source).
    """

    accession: str
    patient: Patient
    modality: str
    start: datetime
    how: str = "ORM"
    ipc_station: str = ""
    code: str = "CTHEAD"
    text: str = "CT head"

    @property
    def placer(self) -> str:
        return f"PL-{self.accession}"

    @property
    def filler(self) -> str:
        return f"FI-{self.accession}"

    @property
    def rp_id(self) -> str:
        return f"RP-{self.accession}"

    @property
    def sps_id(self) -> str:
        return f"SPS-{self.accession}"

    @property
    def study_uid(self) -> str:
        return f"1.2.826.0.1.3680043.10.543.{self.accession[1:]}"

    @property
    def station_ae(self) -> str:
        return self.ipc_station if self.how == "OMI" else STATIONS[self.modality][0]


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M%S")


ORDERS = [
    Order("A101", MULLER, "CT", at("20241122093000")),
    Order("A102", MULDER, "CT", at("20241122230000"), text="CT thorax", code="CTTHOR"),
    Order("A103", DE_VRIES, "CT", at("20241123050000")),
    Order("A104", BAKKER, "US", at("20241123070000"), how="ORM-ORC7", code="USABD", text="US abdomen"),
    Order("A105", VISSER, "CT", at("20241121120000")),
    Order("A106", SMIT, "MR", at("20241124101500"), how="OMI", ipc_station="MR_NORTH", code="MRKNEE", text="MR knee"),
    Order("A107", MULLER, "MR", at("20241122140000"), how="OMI", ipc_station="MR_SOUTH", code="MRBRN", text="MR brain"),
    Order("A108", BAKKER, "CT", at("20241123233015")),
    Order("A109", VISSER, "US", at("20241122030000"), code="USNECK", text="US neck"),
]
BY_ACCESSION = {o.accession: o for o in ORDERS}


# -- HL7 ---------------------------------------------------------------------------------------------------------
def ts(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S") if when.second else when.strftime("%Y%m%d%H%M")


def order_message(order: Order, control: str = "NW", status: str = "", start: datetime | None = None) -> str:
    """The HL7 message for ``order`` with ORC-1 ``control`` (and ORC-5 ``status``); ``start`` overrides it."""
    when = ts(start or order.start)
    p = order.patient
    pid = seg("PID", {1: "1", 3: f"{p.pid}^^^HOSP^MR", 5: f"{p.family}^{p.given}", 7: p.birth_date, 8: p.sex})
    pv1 = seg("PV1", {1: "1", 2: "O", 8: REFERRING})
    orc = {1: control, 2: order.placer, 3: order.filler, 5: status}
    obr = {1: "1", 2: order.placer, 3: order.filler, 4: f"{order.code}^{order.text}^LOCAL"}
    if order.how == "OMI":
        ipc = {1: order.accession, 2: order.rp_id, 3: order.study_uid, 4: order.sps_id, 5: order.modality}
        ipc[9] = order.ipc_station
        segments = [pid, pv1, seg("ORC", orc), seg("TQ1", {1: "1", 7: when}), seg("OBR", obr), seg("IPC", ipc)]
        text = message("OMI^O23", *segments, version="2.5.1", charset="UNICODE UTF-8")
    else:
        obr.update({18: order.accession, 19: order.rp_id, 20: order.sps_id, 24: order.modality})
        if order.how == "ORM-ORC7":
            orc[7] = f"^^^{when}^^R"
        else:
            obr[27] = f"^^^{when}^^R"
        zds = seg("ZDS", {1: f"{order.study_uid}^ROUTER^Application^DICOM"})
        text = message("ORM^O01", pid, pv1, seg("ORC", orc), seg("OBR", obr), zds, version="2.3.1", charset="8859/1")
    fields = {line[:3]: line.split("|") for line in text.split("\r") if line}
    if order.how != "OMI":  # the builder placed the values where the mapping reads them
        assert (fields["OBR"][18], fields["OBR"][24]) == (order.accession, order.modality)
    else:
        assert (fields["IPC"][1], fields["IPC"][5], fields["IPC"][9]) == (
            order.accession,
            order.modality,
            order.ipc_station,
        )
    return text


def send_order(router: RouterProcess, order: Order, control: str = "NW", status: str = "", **kw: datetime) -> None:
    text = order_message(order, control, status, **kw)
    control_id = text.split("\r", 1)[0].split("|")[9]
    raw = encode(text)  # per MSH-18: Latin-1 for the ORM (8859/1), UTF-8 for the OMI
    if order.patient is MULLER:
        assert "Müller".encode("latin-1" if order.how != "OMI" else "utf-8") in raw
    ack = send(router.hl7_port, raw)
    assert ack_code_of(ack.encode()) == ("AA", control_id), ack


# -- findscu -------------------------------------------------------------------------------------------------------
TOP_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "ReferringPhysicianName",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "StudyInstanceUID",
)
STEP_KEYS = (
    "Modality",
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepStatus",
)


def mwl_query(step: dict[str, str] | None = None, /, **top: str) -> Dataset:
    """An MWL identifier: every return key universal, plus the matching keys given."""
    ds = Dataset()
    for keyword in TOP_KEYS:
        setattr(ds, keyword, "")
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    item = Dataset()
    for keyword in STEP_KEYS:
        setattr(item, keyword, "")
    for keyword, value in (step or {}).items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return ds


@dataclass
class Found:
    status: int  # the final C-FIND status
    items: list[Dataset]
    raw: list[bytes]  # the response files as findscu wrote them
    log: str

    @property
    def accessions(self) -> set[str]:
        found = [str(d.AccessionNumber) for d in self.items]
        assert len(found) == len(set(found)), f"an item came back twice: {found}"
        return set(found)

    def by_accession(self) -> dict[str, Dataset]:
        return {str(d.AccessionNumber): d for d in self.items}


_runs = itertools.count(1)


def findscu(port: int, query: Dataset, folder: Path) -> Found:
    """One ``findscu -W`` association with ``query`` (written as a file); the final status and the responses."""
    run = folder / f"find{next(_runs):03d}"
    (run / "rsp").mkdir(parents=True)
    qfile = run / "query.dcm"
    pydicom.dcmwrite(qfile, query, implicit_vr=False, little_endian=True)
    args = [dcmtk("findscu"), "-W", "-d", "-X", "-od", str(run / "rsp"), "-aet", "MODALITY", "-aec", "ROUTER"]
    done = subprocess.run(
        [*args, "127.0.0.1", str(port), str(qfile)],
        capture_output=True,
        text=True,
        errors="replace",
        env=DCMTK_ENV,
        timeout=60,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    statuses = [int(s, 16) for s in re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", log)]
    assert statuses, f"no C-FIND response:\n{log}"
    files = sorted((run / "rsp").glob("rsp*.dcm"))
    pending = [s for s in statuses if s in (PENDING, PENDING_WARNING)]
    assert statuses[:-1] == pending and len(pending) == len(files), log
    return Found(statuses[-1], [pydicom.dcmread(f) for f in files], [f.read_bytes() for f in files], log)


def expected(predicate: Callable[[Order], bool], orders: list[Order] = ORDERS) -> set[str]:
    return {o.accession for o in orders if predicate(o)}


def folded(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).upper()


def values_of(ds: Dataset) -> dict[str, str]:
    assert len(ds.ScheduledProcedureStepSequence) == 1
    step = ds.ScheduledProcedureStepSequence[0]
    top = {k: str(ds[k].value if ds[k].value is not None else "") for k in TOP_KEYS}
    return top | {k: str(step[k].value if step[k].value is not None else "") for k in STEP_KEYS}


def hl7_values(order: Order, shift: timedelta = timedelta(0)) -> dict[str, str]:
    """What the worklist must return for ``order`` (times seen from a requester ``shift`` away from UTC)."""
    start = order.start + shift
    return {
        "PatientName": order.patient.dicom_name,
        "PatientID": order.patient.pid,
        "PatientBirthDate": order.patient.birth_date,
        "PatientSex": order.patient.sex,
        "AccessionNumber": order.accession,
        "ReferringPhysicianName": "Jansen^Piet",
        "RequestedProcedureID": order.rp_id,
        "RequestedProcedureDescription": order.text,
        "StudyInstanceUID": order.study_uid,
        "Modality": order.modality,
        "ScheduledStationAETitle": order.station_ae,
        "ScheduledProcedureStepStartDate": start.strftime("%Y%m%d"),
        "ScheduledProcedureStepStartTime": start.strftime("%H%M%S"),
        "ScheduledProcedureStepID": order.sps_id,
        "ScheduledProcedureStepDescription": order.text,
        "ScheduledProcedureStepStatus": "SCHEDULED",
    }
