"""The Modality Worklist SCP against a real modality-side peer: DCMTK ``findscu -W``.

The worklist is loaded the way a RIS does it: ORM^O01 (v2.3.1, IHE RAD-2/RAD-4 with ZDS) and OMI^O23 (v2.5.1, with
IPC) messages over real MLLP, each acknowledged AA. Queries are Part 10 files written with pydicom; the responses
are extracted by findscu (``-X``) and read back. Every expected set of accession numbers is computed from the
orders in ``ORDERS`` with a plain predicate over their values, and every returned attribute is compared with the
value the HL7 message gave. The router keeps scheduled times in UTC (``hl7.worklist.utc_offset: +0000``).
The orders, their HL7 messages, findscu and the expected values are in worklist_peers.py.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from router.hl7.ack import ack_code_of

from hl7msg import send
from peers import RouterProcess
from worklist_peers import (
    BAKKER,
    BY_ACCESSION,
    DE_VRIES,
    IDENTIFIER_DOES_NOT_MATCH,
    MULDER,
    MULLER,
    ORDERS,
    SUCCESS,
    WORKLIST_SETTINGS,
    Found,
    Order,
    Patient,
    at,
    expected,
    findscu,
    folded,
    hl7_values,
    mwl_query,
    order_message,
    send_order,
    values_of,
)

pytestmark = pytest.mark.interop  # DCMTK findscu


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
