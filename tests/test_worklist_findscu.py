"""The Modality Worklist from HL7 orders, queried by DCMTK findscu -W (the modality side), over real MLLP and
DIMSE: matching on scheduled date/time ranges, station AE, modality, names; CA removes; time zones; charsets."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from hl7msg import message, seg, send
from peers import DCMTK_ENV, RouterProcess, dcmtk

ORDERS = {  # accession: (patient, modality, start, IPC station AE or None)
    "A1": ("MRN1^^^HOSP^MR", "Müller^Anna", "CT", "202411221030", None),
    "A2": ("MRN2^^^HOSP^MR", "Jansen^Piet", "MR", "202411222300", None),
    "A3": ("MRN3^^^HOSP^MR", "de Vries^Els", "CT", "202411230500", None),
    "A4": ("MRN4^^^HOSP^MR", "Bakker^Jan", "CT", "202411240800", None),
    "A5": ("MRN5^^^HOSP^MR", "Visser^Eva", "US", "202411221400", "US7"),
}


def orm(accession: str, control: str = "NW", start: str | None = None) -> str:
    pid, name, modality, when, _ = ORDERS[accession]
    return message(
        "ORM^O01",
        seg("PID", {1: "1", 3: pid, 5: name, 7: "19700101", 8: "F"}),
        seg("PV1", {1: "1", 2: "O"}),
        seg("ORC", {1: control, 2: f"PL{accession}", 3: f"FL{accession}"}),
        seg("OBR", {1: "1", 2: f"PL{accession}", 3: f"FL{accession}", 4: f"P{accession}^Proc {accession}^L",
                    18: accession, 19: f"RP{accession}", 20: f"SP{accession}", 24: modality,
                    27: f"^^^{start or when}^^R"}),
        seg("ZDS", {1: f"1.2.826.0.1.3680043.10.999.{accession[1:]}^^Application^DICOM"}),
        version="2.3.1",
        charset="8859/1",
    )  # fmt: skip


def omi(accession: str) -> str:
    pid, name, modality, when, station = ORDERS[accession]
    return message(
        "OMI^O23",
        seg("PID", {1: "1", 3: pid, 5: name}),
        seg("ORC", {1: "NW", 2: f"PL{accession}", 3: f"FL{accession}"}),
        seg("TQ1", {1: "1", 7: when}),
        seg("OBR", {1: "1", 2: f"PL{accession}", 3: f"FL{accession}", 4: f"P{accession}^Proc {accession}^L"}),
        seg("IPC", {1: accession, 2: f"RP{accession}", 3: f"1.2.826.0.1.3680043.10.999.{accession[1:]}",
                    4: f"SP{accession}", 5: modality, 9: station or ""}),
        version="2.5.1",
    )  # fmt: skip


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    proc = RouterProcess(
        tmp_path_factory.mktemp("mwl"),
        hl7={"worklist": {"station_ae_by_modality": {"CT": ["CT1"], "MR": ["MR1"]}, "utc_offset": "+0000"}},
    ).start()
    try:
        for accession in ("A1", "A2", "A3", "A4"):
            assert "MSA|AA|" in send(proc.hl7_port, orm(accession))
        assert "MSA|AA|" in send(proc.hl7_port, omi("A5"))
        yield proc
    finally:
        proc.stop()


def findscu(router: RouterProcess, tmp_path: Path, *keys: str, step: tuple[str, ...] = ()) -> list[pydicom.Dataset]:
    """findscu -W with the keys given (plus the usual return keys); the responses, read back."""
    out = tmp_path / f"rsp{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    sps = [f"(0040,0100)[0].{k}" for k in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                                           "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID")]  # fmt: skip
    args = [f"-k{k}" for k in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID",
                                "RequestedProcedureID", "RequestedProcedureDescription", *sps, *keys)]  # fmt: skip
    args += [f"-k(0040,0100)[0].{k}" for k in step]
    result = subprocess.run(
        [dcmtk("findscu"), "-W", "-X", "-od", str(out), "-aet", "MODALITY", "-aec", "ROUTER", *[
            a for k in args for a in ("-k", k[2:])], "127.0.0.1", str(router.port)],
        capture_output=True, text=True, env=DCMTK_ENV, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def worklist_statuses(router: RouterProcess, date: str) -> list[int]:
    """The statuses of a pynetdicom MWL C-FIND for one scheduled date."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", router.port, ae_title="ROUTER")
    assert assoc.is_established
    try:
        query = Dataset()
        query.AccessionNumber = ""
        step = Dataset()
        step.ScheduledProcedureStepStartDate = date
        query.ScheduledProcedureStepSequence = [step]
        return [int(status.Status) for status, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)]
    finally:
        assoc.release()


def accessions(found: list[pydicom.Dataset]) -> list[str]:
    return sorted(d.AccessionNumber for d in found)


def test_all_items_with_their_hl7_values(router: RouterProcess, tmp_path: Path) -> None:
    found = {d.AccessionNumber: d for d in findscu(router, tmp_path)}
    assert sorted(found) == ["A1", "A2", "A3", "A4", "A5"]
    a1 = found["A1"]
    assert (str(a1.PatientName), a1.PatientID, a1.RequestedProcedureID) == ("Müller^Anna", "MRN1", "RPA1")
    assert a1.RequestedProcedureDescription == "Proc A1"
    assert a1.StudyInstanceUID == "1.2.826.0.1.3680043.10.999.1"
    step = a1.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepID) == ("CT", "CT1", "SPA1")
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == ("20241122", "103000")
    a5 = found["A5"].ScheduledProcedureStepSequence[0]
    assert (a5.Modality, a5.ScheduledStationAETitle) == ("US", "US7"), "OMI: station from IPC-9"


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        ("20241122", "", ["A1", "A2", "A5"]),
        ("20241122-20241123", "", ["A1", "A2", "A3", "A5"]),
        ("20241122-20241123", "2200-0600", ["A2", "A3"]),  # one date-time range: 22nd 22:00 to 23rd 06:00
        ("20241123-", "", ["A3", "A4"]),
        ("-20241122", "", ["A1", "A2", "A5"]),
        ("20241122", "1030", ["A1"]),
        ("", "1000-1500", ["A1", "A5"]),
    ],
)
def test_scheduled_date_time_matching(
    router: RouterProcess, tmp_path: Path, date: str, time: str, expected: list[str]
) -> None:
    keys = ("ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime")
    found = findscu(router, tmp_path, *[f"(0040,0100)[0].{k}={v}" for k, v in zip(keys, (date, time), strict=True)])
    assert accessions(found) == expected


def test_station_modality_name_and_id(router: RouterProcess, tmp_path: Path) -> None:
    assert accessions(findscu(router, tmp_path, "(0040,0100)[0].ScheduledStationAETitle=CT1")) == ["A1", "A3", "A4"]
    assert accessions(findscu(router, tmp_path, "(0040,0100)[0].Modality=MR")) == ["A2"]
    assert accessions(findscu(router, tmp_path, "PatientName=mul*")) == ["A1"], "case and accents ignored"
    assert accessions(findscu(router, tmp_path, "PatientID=MRN3")) == ["A3"]


def test_timezone_offset_shifts_matching_and_answers(router: RouterProcess, tmp_path: Path) -> None:
    found = findscu(router, tmp_path, "(0008,0201)=+0100", "(0040,0100)[0].ScheduledProcedureStepStartDate=20241122",
                    "(0040,0100)[0].ScheduledProcedureStepStartTime=1130")  # fmt: skip
    assert accessions(found) == ["A1"], "10:30 UTC is 11:30 at +0100"
    step = found[0].ScheduledProcedureStepSequence[0]
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == ("20241122", "113000")
    assert "TimezoneOffsetFromUTC" not in found[0]


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192"])
def test_latin1_name_both_ways(router: RouterProcess, tmp_path: Path, charset: str) -> None:
    [found] = findscu(router, tmp_path, f"SpecificCharacterSet={charset}", "AccessionNumber=A1")
    assert str(found.PatientName) == "Müller^Anna"


def test_cancel_and_update_change_the_worklist(tmp_path: Path) -> None:
    proc = RouterProcess(tmp_path / "router", hl7={"worklist": {"utc_offset": "+0000"}}).start()
    try:
        for accession in ("A1", "A2", "A3"):
            assert "MSA|AA|" in send(proc.hl7_port, orm(accession))
        assert "MSA|AA|" in send(proc.hl7_port, orm("A1", "CA"))
        assert "MSA|AA|" in send(proc.hl7_port, orm("A2", "DC"))
        assert "MSA|AA|" in send(proc.hl7_port, orm("A3", "XO", start="202411231615"))
        [left] = findscu(proc, tmp_path)
        assert left.AccessionNumber == "A3"
        assert left.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "161500"
        assert findscu(proc, tmp_path, "(0040,0100)[0].ScheduledProcedureStepStartDate=2024XX01") == []
        assert worklist_statuses(proc, "2024XX01") == [0xA900], "a malformed date: identifier does not match"
        assert worklist_statuses(proc, "20241123") == [0xFF00, 0x0000]
        assert [d.AccessionNumber for d in findscu(proc, tmp_path)] == ["A3"], "still serving after a bad query"
    finally:
        proc.stop()
