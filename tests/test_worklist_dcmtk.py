"""The Modality Worklist SCP against a real modality-side peer: DCMTK ``findscu -W``.

The worklist is loaded the way a RIS does it: ORM^O01 (v2.3.1, IHE RAD-2/RAD-4 with ZDS) and OMI^O23 (v2.5.1, with
IPC) messages over real MLLP, each acknowledged AA. Queries are Part 10 files written with pydicom; the responses
are extracted by findscu (``-X``) and read back. Every expected set of accession numbers is computed from the
orders in ``ORDERS`` with a plain predicate over their values, and every returned attribute is compared with the
value the HL7 message gave. The router keeps scheduled times in UTC (``hl7.worklist.utc_offset: +0000``).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from router.hl7.ack import ack_code_of

from hl7msg import encode, message, seg, send
from peers import DCMTK_ENV, RouterProcess
from tools import dcmtk

pytestmark = pytest.mark.interop  # DCMTK findscu

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


# -- fixtures ------------------------------------------------------------------------------------------------------
def worklist_router(workdir: Path) -> RouterProcess:
    return RouterProcess(workdir, dicom={"host": "127.0.0.1"}, hl7=WORKLIST_SETTINGS)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    """One router for the read-only queries, loaded with every order in ``ORDERS``."""
    proc = worklist_router(tmp_path_factory.mktemp("mwl")).start()
    try:
        for order in ORDERS:
            send_order(proc, order)
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def find(router: RouterProcess, tmp_path: Path) -> Callable[[Dataset], Found]:
    def run(query: Dataset) -> Found:
        found = findscu(router.port, query, tmp_path)
        assert found.status == SUCCESS, found.log
        return found

    return run


# -- loading and returned values -----------------------------------------------------------------------------------
def test_no_matching_keys_returns_every_item_with_the_hl7_values(find: Callable[[Dataset], Found]) -> None:
    query = mwl_query()
    query.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName = ""  # no OBR-34 in any order
    found = find(query)
    assert found.accessions == {o.accession for o in ORDERS}
    for accession, ds in found.by_accession().items():
        assert values_of(ds) == hl7_values(BY_ACCESSION[accession]), accession
        step = ds.ScheduledProcedureStepSequence[0]
        assert "ScheduledPerformingPhysicianName" in step and not step.ScheduledPerformingPhysicianName, (
            "a return key the item has no value for comes back zero-length"
        )
        assert "ScheduledProtocolCodeSequence" not in step, "only what was asked for comes back"


def test_only_the_sequence_asked_returns_the_step_attributes(find: Callable[[Dataset], Found]) -> None:
    query = Dataset()
    query.AccessionNumber = ""
    query.ScheduledProcedureStepSequence = [Dataset()]  # an empty item: every step attribute is a return key
    found = find(query)
    assert found.accessions == {o.accession for o in ORDERS}
    for accession, ds in found.by_accession().items():
        order = BY_ACCESSION[accession]
        step = ds.ScheduledProcedureStepSequence[0]
        assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepID) == (
            order.modality,
            order.station_ae,
            order.sps_id,
        )
        assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
            order.start.strftime("%Y%m%d"),
            order.start.strftime("%H%M%S"),
        )
        assert "PatientName" not in ds, "a top-level attribute nobody asked for is not returned"


# -- scheduled date and time ---------------------------------------------------------------------------------------
def day(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d")


DATE_TIME_CASES: list[tuple[str, str, Callable[[Order], bool]]] = [
    ("20241122", "", lambda o: o.start.date() == day("20241122").date()),
    ("20241122-20241123", "", lambda o: day("20241122") <= o.start < day("20241124")),
    ("20241122-", "", lambda o: o.start >= day("20241122")),
    ("-20241122", "", lambda o: o.start < day("20241123")),
    # a time range on one day
    ("20241122", "0900-1400", lambda o: at("20241122090000") <= o.start <= at("20241122140059")),
    # a time range alone: that time of any day
    ("", "0400-0800", lambda o: "040000" <= o.start.strftime("%H%M%S") <= "080059"),
    # date and time ranges together: one date-time range, 22nd 22:00 to 23rd 06:00 (not 22:00-06:00 of each day)
    ("20241122-20241123", "2200-0600", lambda o: at("20241122220000") <= o.start <= at("20241123060059")),
    ("20241123", "2330", lambda o: at("20241123233000") <= o.start <= at("20241123233059")),
    ("20241122-", "2300-", lambda o: o.start >= at("20241122230000")),
    ("-20241123", "-0500", lambda o: o.start <= at("20241123050059")),
]


@pytest.mark.parametrize(
    ("date", "time", "predicate"),
    DATE_TIME_CASES,
    ids=[f"date={d or '-'} time={t or '-'}" for d, t, _ in DATE_TIME_CASES],
)
def test_scheduled_date_time_matching(
    find: Callable[[Dataset], Found], date: str, time: str, predicate: Callable[[Order], bool]
) -> None:
    want = expected(predicate)
    assert want and want != set(BY_ACCESSION), "the case should tell matching from not matching"
    found = find(mwl_query({"ScheduledProcedureStepStartDate": date, "ScheduledProcedureStepStartTime": time}))
    assert found.accessions == want
    for accession, ds in found.by_accession().items():
        assert values_of(ds) == hl7_values(BY_ACCESSION[accession])


def test_combined_range_is_one_interval_not_two_independent_ones(find: Callable[[Dataset], Found]) -> None:
    found = find(
        mwl_query(
            {"ScheduledProcedureStepStartDate": "20241122-20241123", "ScheduledProcedureStepStartTime": "2200-0600"}
        )
    )
    assert found.accessions == {"A102", "A103"}  # 22nd 23:00, 23rd 05:00
    # A109 (22nd 03:00) and A108 (23rd 23:30) are inside the date range and inside 22:00-06:00 as a time of day
    assert {"A108", "A109"}.isdisjoint(found.accessions)


# -- station, modality, patient --------------------------------------------------------------------------------------
STEP_KEY_CASES: list[tuple[str, str, Callable[[Order], bool]]] = [
    ("ScheduledStationAETitle", "CT1", lambda o: o.station_ae == "CT1"),
    ("ScheduledStationAETitle", "US1", lambda o: o.station_ae == "US1"),
    ("ScheduledStationAETitle", "MR_NORTH", lambda o: o.station_ae == "MR_NORTH"),  # IPC-9 of an OMI
    ("ScheduledStationAETitle", "MR*", lambda o: o.station_ae.startswith("MR")),
    ("Modality", "US", lambda o: o.modality == "US"),
    ("Modality", "MR", lambda o: o.modality == "MR"),
]


@pytest.mark.parametrize(
    ("keyword", "value", "predicate"), STEP_KEY_CASES, ids=[f"{k}={v}" for k, v, _ in STEP_KEY_CASES]
)
def test_station_and_modality_matching(
    find: Callable[[Dataset], Found], keyword: str, value: str, predicate: Callable[[Order], bool]
) -> None:
    want = expected(predicate)
    assert want
    found = find(mwl_query({keyword: value}))
    assert found.accessions == want
    for accession, ds in found.by_accession().items():
        assert values_of(ds) == hl7_values(BY_ACCESSION[accession])


def test_ipc_station_wins_over_the_modality_mapping(find: Callable[[Dataset], Found]) -> None:
    """MR orders came as OMI with IPC-9: none of them is scheduled on MR1, the configured MR station."""
    assert find(mwl_query({"ScheduledStationAETitle": "MR1"})).accessions == set()
    mr = find(mwl_query({"Modality": "MR"})).by_accession()
    assert {a: d.ScheduledProcedureStepSequence[0].ScheduledStationAETitle for a, d in mr.items()} == {
        "A106": "MR_NORTH",
        "A107": "MR_SOUTH",
    }


TOP_KEY_CASES: list[tuple[str, str, Callable[[Order], bool]]] = [
    ("PatientName", "mul*", lambda o: folded(o.patient.family).startswith("MUL")),  # Müller and Mulder
    ("PatientName", "MULLER^HANS", lambda o: o.patient is MULLER),
    ("PatientName", "de vries*", lambda o: o.patient is DE_VRIES),
    ("PatientName", "?ulder^anna", lambda o: o.patient is MULDER),
    ("PatientID", "P1001", lambda o: o.patient.pid == "P1001"),
    ("PatientID", "P1004", lambda o: o.patient.pid == "P1004"),
    ("PatientID", "P100*", lambda o: o.patient.pid.startswith("P100")),
    ("PatientSex", "F", lambda o: o.patient.sex == "F"),
    ("PatientBirthDate", "19700101-19851231", lambda o: "19700101" <= o.patient.birth_date <= "19851231"),
    ("AccessionNumber", "A105", lambda o: o.accession == "A105"),
    ("RequestedProcedureID", "RP-A106", lambda o: o.rp_id == "RP-A106"),  # IPC-2 of an OMI
]


@pytest.mark.parametrize(
    ("keyword", "value", "predicate"), TOP_KEY_CASES, ids=[f"{k}={v}" for k, v, _ in TOP_KEY_CASES]
)
def test_patient_and_request_key_matching(
    find: Callable[[Dataset], Found], keyword: str, value: str, predicate: Callable[[Order], bool]
) -> None:
    want = expected(predicate)
    assert want
    found = find(mwl_query(**{keyword: value}))
    assert found.accessions == want
    for accession, ds in found.by_accession().items():
        assert values_of(ds) == hl7_values(BY_ACCESSION[accession])


def test_keys_combine(find: Callable[[Dataset], Found]) -> None:
    found = find(mwl_query({"Modality": "CT", "ScheduledProcedureStepStartDate": "20241123"}, PatientName="bakker*"))
    assert found.accessions == expected(
        lambda o: o.modality == "CT" and o.start.date() == day("20241123").date() and o.patient is BAKKER
    )
    assert found.accessions == {"A108"}
    assert values_of(found.items[0])["ScheduledProcedureStepStartTime"] == "233015", "seconds from OBR-27.4 kept"


# -- time zones ------------------------------------------------------------------------------------------------------
def test_timezone_offset_shifts_matching_and_returned_times(find: Callable[[Dataset], Found]) -> None:
    """The worklist is kept in UTC; a modality at +0100 asks for its own day and gets its own clock times."""
    plus_one = timedelta(hours=1)
    utc = find(mwl_query({"ScheduledProcedureStepStartDate": "20241123"}))
    assert utc.accessions == expected(lambda o: o.start.date() == day("20241123").date())

    found = find(mwl_query({"ScheduledProcedureStepStartDate": "20241123"}, TimezoneOffsetFromUTC="+0100"))
    want = expected(lambda o: (o.start + plus_one).date() == day("20241123").date())
    assert found.accessions == want
    assert want != utc.accessions  # A102 (22nd 23:00 UTC) is the 23rd at +0100; A108 (23:30 UTC) is the 24th
    for accession, ds in found.by_accession().items():
        assert values_of(ds) == hl7_values(BY_ACCESSION[accession], shift=plus_one)
    a102 = found.by_accession()["A102"].ScheduledProcedureStepSequence[0]
    assert (a102.ScheduledProcedureStepStartDate, a102.ScheduledProcedureStepStartTime) == ("20241123", "000000")

    found = find(
        mwl_query(
            {"ScheduledProcedureStepStartDate": "20241122", "ScheduledProcedureStepStartTime": "1000-1100"},
            TimezoneOffsetFromUTC="+0100",
        )
    )
    assert (
        found.accessions
        == expected(lambda o: at("20241122100000") <= o.start + plus_one <= at("20241122110059"))
        == {"A101"}
    )
    assert values_of(found.items[0])["ScheduledProcedureStepStartTime"] == "103000"

    found = find(mwl_query({"ScheduledProcedureStepStartTime": "1000-1500"}, TimezoneOffsetFromUTC="+0100"))
    assert found.accessions == expected(lambda o: "100000" <= (o.start + plus_one).strftime("%H%M%S") <= "150059")
    assert found.accessions == {"A101", "A105", "A106", "A107"}  # 10:30, 13:00, 11:15, 15:00 at +0100


def test_patient_id_with_issuer(find: Callable[[Dataset], Found]) -> None:
    """PID-3.4 (assigning authority HOSP) is the issuer of the Patient ID."""
    found = find(mwl_query(PatientID="P1001", IssuerOfPatientID="HOSP"))
    assert found.accessions == expected(lambda o: o.patient is MULLER)
    assert {str(d.IssuerOfPatientID) for d in found.items} == {"HOSP"}
    assert find(mwl_query(PatientID="P1001", IssuerOfPatientID="ELSEWHERE")).accessions == set()


def test_timezone_offset_without_date_keys_shifts_every_returned_time(find: Callable[[Dataset], Found]) -> None:
    minus_five = timedelta(hours=-5)
    found = find(mwl_query(TimezoneOffsetFromUTC="-0500"))
    assert found.accessions == {o.accession for o in ORDERS}
    for accession, ds in found.by_accession().items():
        assert values_of(ds) == hl7_values(BY_ACCESSION[accession], shift=minus_five)


# -- character sets --------------------------------------------------------------------------------------------------
LATIN1_NAME = "Müller^Hans".encode("latin-1")
UTF8_NAME = "Müller^Hans".encode()


@pytest.mark.parametrize(
    ("requested", "charset", "name_bytes"),
    [("ISO_IR 100", "ISO_IR 100", LATIN1_NAME), ("ISO_IR 192", "ISO_IR 192", UTF8_NAME)],
)
def test_latin1_name_from_hl7_comes_back_in_the_requested_character_set(
    find: Callable[[Dataset], Found], requested: str, charset: str, name_bytes: bytes
) -> None:
    """Müller came in an ORM with MSH-18 8859/1 (A101) and in an OMI in UTF-8 (A107)."""
    found = find(mwl_query(SpecificCharacterSet=requested, PatientID="P1001"))
    assert found.accessions == {"A101", "A107"}
    for ds, raw in zip(found.items, found.raw, strict=True):
        assert ds.SpecificCharacterSet == charset
        assert str(ds.PatientName) == "Müller^Hans"
        assert name_bytes in raw, "the name is encoded in the character set the response declares"


def test_no_character_set_in_the_request_still_declares_the_one_used(find: Callable[[Dataset], Found]) -> None:
    found = find(mwl_query(PatientID="P1001"))
    assert found.accessions == {"A101", "A107"}
    for ds, raw in zip(found.items, found.raw, strict=True):
        assert ds.SpecificCharacterSet == "ISO_IR 100"
        assert str(ds.PatientName) == "Müller^Hans" and LATIN1_NAME in raw


NON_ASCII_NAME_CASES = [
    ("ISO_IR 192", "MÜLLER*", "MÜLLER*".encode()),
    ("ISO_IR 100", "mül*", "mül*".encode("latin-1")),
    ("ISO_IR 192", "*ü*", "*ü*".encode()),
]


@pytest.mark.parametrize(("charset", "pattern", "encoded"), NON_ASCII_NAME_CASES)
def test_name_key_with_non_ascii_letters_matches(
    find: Callable[[Dataset], Found], tmp_path: Path, charset: str, pattern: str, encoded: bytes
) -> None:
    """The key arrives in the request's character set; names match ignoring case and accents (the documented
    rule of router/worklist/matching.py), so ``mül*`` also finds Mulder and ``*ü*`` every name with a u."""
    query = mwl_query(SpecificCharacterSet=charset, PatientName=pattern)
    probe = tmp_path / "probe.dcm"
    pydicom.dcmwrite(probe, query, implicit_vr=False, little_endian=True)
    assert encoded in probe.read_bytes(), "the query really carries the name in that character set"
    regex = re.compile(folded(pattern).replace("*", ".*"))
    want = expected(lambda o: regex.fullmatch(folded(o.patient.dicom_name)) is not None)
    assert BY_ACCESSION["A101"].accession in want and len(want) < len(ORDERS)
    found = find(query)
    assert found.accessions == want
    for accession, ds in found.by_accession().items():
        assert values_of(ds) == hl7_values(BY_ACCESSION[accession])
        assert ds.SpecificCharacterSet == ("ISO_IR 192" if charset == "ISO_IR 192" else "ISO_IR 100")


# -- bad identifiers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("step", "top"),
    [
        ({"ScheduledProcedureStepStartDate": "2024XX01"}, {}),
        ({"ScheduledProcedureStepStartDate": "20241122", "ScheduledProcedureStepStartTime": "2599"}, {}),
        ({"ScheduledProcedureStepStartDate": "20241124-20241122"}, {}),  # a range that ends before it starts
        ({}, {"TimezoneOffsetFromUTC": "CET"}),
        ({}, {"PatientBirthDate": "1970-13-45"}),
    ],
    ids=["date 2024XX01", "time 2599", "reversed range", "offset CET", "birth date 1970-13-45"],
)
def test_invalid_identifier_fails_with_a900_and_the_router_keeps_serving(
    router: RouterProcess, tmp_path: Path, step: dict[str, str], top: dict[str, str]
) -> None:
    with warnings.catch_warnings():  # pydicom warns about a value that is not valid for its VR: that is the point
        warnings.simplefilter("ignore")
        bad = findscu(router.port, mwl_query(step, **top), tmp_path)
    assert (bad.status, bad.items) == (IDENTIFIER_DOES_NOT_MATCH, []), bad.log
    after = findscu(router.port, mwl_query({"ScheduledProcedureStepStartDate": "20241121"}), tmp_path)
    assert (after.status, after.accessions) == (SUCCESS, expected(lambda o: o.start.date() == day("20241121").date()))
    assert router.alive()


# -- order life cycle ------------------------------------------------------------------------------------------------
LIFECYCLE = [
    Order(f"L{n}", Patient(f"P200{n}", "Lifecycle", f"Case{n}", "19750101", "O"), "CT", at(f"2024120{n}080000"))
    for n in range(1, 6)
]


@pytest.fixture
def lifecycle_router(tmp_path: Path) -> Iterator[RouterProcess]:
    proc = worklist_router(tmp_path / "router").start()
    try:
        for order in LIFECYCLE:
            send_order(proc, order)
        yield proc
    finally:
        proc.stop()


def test_order_control_changes_the_worklist(lifecycle_router: RouterProcess, tmp_path: Path) -> None:
    l1, l2, l3, l4, l5 = LIFECYCLE

    def worklist() -> dict[str, Dataset]:
        found = findscu(lifecycle_router.port, mwl_query(), tmp_path)
        assert found.status == SUCCESS, found.log
        return found.by_accession()

    assert set(worklist()) == {"L1", "L2", "L3", "L4", "L5"}

    send_order(lifecycle_router, l1, "CA")
    assert set(worklist()) == {"L2", "L3", "L4", "L5"}, "CA: cancelled, off the worklist"

    send_order(lifecycle_router, l2, "DC")
    assert set(worklist()) == {"L3", "L4", "L5"}, "DC: discontinued, off the worklist"

    moved = at("20241203113000")
    send_order(lifecycle_router, l3, "XO", start=moved)
    items = worklist()
    assert set(items) == {"L3", "L4", "L5"}
    assert values_of(items["L3"]) == hl7_values(l3) | {"ScheduledProcedureStepStartTime": "113000"}
    by_time = findscu(
        lifecycle_router.port,
        mwl_query({"ScheduledProcedureStepStartDate": "20241203", "ScheduledProcedureStepStartTime": "1100-1200"}),
        tmp_path,
    )
    assert by_time.accessions == {"L3"}, "XO: matched on its new time"
    old_time = findscu(
        lifecycle_router.port,
        mwl_query({"ScheduledProcedureStepStartDate": "20241203", "ScheduledProcedureStepStartTime": "0700-0900"}),
        tmp_path,
    )
    assert old_time.accessions == set(), "XO: no longer matched on its old time"

    send_order(lifecycle_router, l4, "SC", status="IP")
    items = worklist()
    assert set(items) == {"L3", "L4", "L5"}, "SC/IP: in progress stays on the worklist"
    assert values_of(items["L4"])["ScheduledProcedureStepID"] == l4.sps_id

    send_order(lifecycle_router, l5, "SC", status="IP")
    send_order(lifecycle_router, l5, "SC", status="CM")
    assert set(worklist()) == {"L3", "L4"}, "SC/CM: completed, off the worklist"


def test_in_progress_step_reports_a_defined_sps_status(lifecycle_router: RouterProcess, tmp_path: Path) -> None:
    """PS3.3 Table C.4-10: Scheduled Procedure Step Status (0040,0020) is SCHEDULED, ARRIVED, READY, STARTED or
    DEPARTED. A step the RIS reported in progress (ORC-1 SC, ORC-5 IP) is STARTED; IN PROGRESS is a Performed
    Procedure Step status (Table C.4-14) and INPROGRESS is neither."""
    send_order(lifecycle_router, LIFECYCLE[0], "SC", status="IP")
    found = findscu(lifecycle_router.port, mwl_query(), tmp_path)
    statuses = {
        a: d.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus for a, d in found.by_accession().items()
    }
    assert statuses == {"L1": "STARTED", "L2": "SCHEDULED", "L3": "SCHEDULED", "L4": "SCHEDULED", "L5": "SCHEDULED"}
    started = findscu(lifecycle_router.port, mwl_query({"ScheduledProcedureStepStatus": "STARTED"}), tmp_path)
    assert started.accessions == {"L1"}


def test_new_order_for_a_cancelled_order_is_not_acknowledged_and_ignored(
    lifecycle_router: RouterProcess, tmp_path: Path
) -> None:
    """After CA, the RIS sends NW again with the same placer/filler numbers (a new MSH-10: not a re-send). The
    router may refuse it (AE: the order number is taken) or put the step back on the worklist; an AA that leaves
    the modality without the step is the one answer that loses the order."""
    order = LIFECYCLE[0]
    send_order(lifecycle_router, order, "CA")
    text = order_message(order, "NW")
    code, _ = ack_code_of(send(lifecycle_router.hl7_port, text).encode())
    found = findscu(lifecycle_router.port, mwl_query(AccessionNumber=order.accession), tmp_path)
    assert found.status == SUCCESS
    assert code == "AE" or (code == "AA" and found.accessions == {order.accession}), (
        f"ACK {code}, worklist {sorted(found.accessions)}"
    )


def test_update_of_a_cancelled_order_is_refused(lifecycle_router: RouterProcess, tmp_path: Path) -> None:
    """XO for an order the RIS cancelled: AE naming ORC-1 (the RIS must send NW to schedule it again)."""
    order = LIFECYCLE[1]
    send_order(lifecycle_router, order, "CA")
    ack = send(lifecycle_router.hl7_port, order_message(order, "XO"))
    assert "MSA|AE|" in ack and "ERR|ORC^1^1^204&Unknown key identifier&HL70357" in ack, ack  # v2.3.1 form
    found = findscu(lifecycle_router.port, mwl_query(AccessionNumber=order.accession), tmp_path)
    assert found.accessions == set()
