"""C-MOVE and C-GET SCP against DCMTK movescu/getscu/storescp and pynetdicom peers; relational C-FIND; resources.

The router (a ``router serve`` process) knows three move destinations: DCMTK ``storescp`` (DEST), a pynetdicom SCP
that takes 0.25 s per object (SLOW) and one that refuses CT images with 0xA700 (PICKY).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from peers import (
    DCMTK_ENV,
    RouterProcess,
    StoreSCP,
    dataset_bytes,
    echo,
    make_instance,
    pydicom_corpus,
    query,
    same_content,
    send_datasets,
    wait_for,
    write_instances,
)
from qr_peers import MR_IMAGE, Corpus, PynetdicomSCP, consistent, findscu, generated_corpus, record_of, text
from tools import dcmtk

pytestmark = pytest.mark.interop  # DCMTK movescu, getscu, storescp, dcmdump

STUDY_FIND, STUDY_MOVE, STUDY_GET = (f"1.2.840.10008.5.1.4.1.2.2.{n}" for n in (1, 2, 3))
PATIENT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
BULK = 20
LESTRADE = "Lestrade^G"  # a pydicom study of 12 objects in many transfer syntaxes


@dataclass
class Site:
    router: RouterProcess
    corpus: Corpus
    dest: StoreSCP
    slow: PynetdicomSCP
    picky: PynetdicomSCP
    raw: PynetdicomSCP
    workdir: Path

    def study(self, **equal: str) -> str:
        return self.corpus.where(**equal)[0]["StudyInstanceUID"]

    def stored_path(self, sop_uid: str) -> Path:
        rows = query(self.router.data_dir / "router.db", "select path from instance where sop_uid = ?", sop_uid)
        return self.router.data_dir / rows[0][0]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("qr-retrieve")
    lestrade = [p for p in pydicom_corpus() if str(pydicom.dcmread(p).get("PatientName", "")) == LESTRADE]
    files = consistent([*lestrade, *write_instances(workdir / "generated", generated_corpus(bulk=BULK))])
    started: list[Any] = []
    try:
        dest = StoreSCP(workdir, "DEST").start()
        started.append(dest)
        slow = PynetdicomSCP("SLOW", delay=0.25).start()
        started.append(slow)
        picky = PynetdicomSCP("PICKY", refuse=lambda ds: ds.Modality == "CT").start()
        started.append(picky)
        raw = PynetdicomSCP("RAW").start()
        started.append(raw)
        peers = {
            name: {"ae_title": name, "host": "127.0.0.1", "port": scp.port}
            for name, scp in (("DEST", dest), ("SLOW", slow), ("PICKY", picky), ("RAW", raw))
        }
        router = RouterProcess(workdir, peers=peers)
        started.append(router)
        router.start()
        assert send_datasets(router.port, files) == [0] * len(files)
        yield Site(router, Corpus([record_of(p) for p in files]), dest, slow, picky, raw, workdir)
    finally:
        for server in reversed(started):
            server.stop()


STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


def dcmtk_retrieve(tool: str, port: int, args: list[str], cwd: Path) -> tuple[list[int], str]:
    done = subprocess.run(
        [dcmtk(tool), "-d", "-aet", tool.upper(), "-aec", "ROUTER", *args, "127.0.0.1", str(port)],
        capture_output=True, text=True, errors="replace", env=DCMTK_ENV, timeout=120, cwd=cwd,
    )  # fmt: skip
    log = done.stdout + done.stderr
    return [int(s, 16) for s in STATUS.findall(log)], log


def study_keys(study: str) -> list[str]:
    return keys("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")


def keys(*pairs: str) -> list[str]:
    out = []
    for pair in pairs:
        out += ["-k", pair]
    return out


def new_files(scp: StoreSCP, before: set[Path]) -> list[Path]:
    return [p for p in scp.received() if p not in before]


# -- DCMTK movescu / getscu ------------------------------------------------------------------------------------------
def test_movescu_retrieves_a_study_byte_identical(site: Site) -> None:
    study = site.study(PatientName=LESTRADE)
    expected = site.corpus.matching("IMAGE", lambda r: r["StudyInstanceUID"] == study)
    assert len(expected) == 12
    before = set(site.dest.received())
    args = ["-S", "-aem", "DEST", *study_keys(study)]
    statuses, log = dcmtk_retrieve("movescu", site.router.port, args, site.workdir)
    assert statuses == [0xFF00] * 12 + [0x0000], log
    received = new_files(site.dest, before)
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in received}
    assert set(by_uid) == expected and len(received) == 12
    for uid, path in by_uid.items():  # storescp re-encodes what it writes: compare after parsing
        assert same_content(path, site.stored_path(uid)), uid
    # the bytes on the wire are the stored file's, whatever its transfer syntax
    args = ["-S", "-aem", "RAW", *study_keys(study)]
    statuses, log = dcmtk_retrieve("movescu", site.router.port, args, site.workdir)
    assert statuses[-1] == 0x0000, log
    assert set(site.raw.raw) == expected
    for uid, data in site.raw.raw.items():
        assert data == dataset_bytes(site.stored_path(uid)), uid


def test_movescu_patient_root_and_patient_study_only(site: Site) -> None:
    p1 = site.corpus.matching("IMAGE", lambda r: r["PatientID"] == "QR-P1")
    cases = [
        ("-P", ["QueryRetrieveLevel=PATIENT", "PatientID=QR-P1"], p1),
        ("-O", ["QueryRetrieveLevel=PATIENT", "PatientID=QR-P1"], p1),
    ]
    s3 = site.study(StudyDescription="CT CHEST")
    cases.append(("-O", ["QueryRetrieveLevel=STUDY", "PatientID=QR-P2", f"StudyInstanceUID={s3}"],
                  site.corpus.matching("IMAGE", lambda r: r["StudyInstanceUID"] == s3)))  # fmt: skip
    ct = site.corpus.where(StudyInstanceUID=site.study(StudyDescription="CT HEAD"), Modality="CT")
    two = [ct[0]["SOPInstanceUID"], ct[1]["SOPInstanceUID"]]
    cases.append(("-P", ["QueryRetrieveLevel=IMAGE", "PatientID=QR-P1", f"StudyInstanceUID={ct[0]['StudyInstanceUID']}",
                         f"SeriesInstanceUID={ct[0]['SeriesInstanceUID']}", "SOPInstanceUID=" + "\\".join(two)],
                  set(two)))  # fmt: skip
    for model, identifier, expected in cases:
        before = set(site.dest.received())
        statuses, log = dcmtk_retrieve("movescu", site.router.port, [model, "-aem", "DEST", *keys(*identifier)],
                                       site.workdir)  # fmt: skip
        assert statuses[-1] == 0x0000 and statuses.count(0xFF00) == len(expected), log
        got = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in new_files(site.dest, before)}
        assert got == expected, (model, identifier)


def test_getscu_retrieves_a_study_decompressing_what_it_cannot_take(site: Site) -> None:
    study = site.study(PatientName=LESTRADE)
    out = site.workdir / "getscu"
    out.mkdir()
    statuses, log = dcmtk_retrieve(
        "getscu", site.router.port, ["-S", "-od", str(out), *study_keys(study)], site.workdir
    )
    assert statuses[-1] == 0x0000, log
    received = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p) for p in out.iterdir()}
    assert set(received) == site.corpus.matching("IMAGE", lambda r: r["StudyInstanceUID"] == study)
    for uid, ds in received.items():
        stored = pydicom.dcmread(site.stored_path(uid))
        assert not ds.file_meta.TransferSyntaxUID.is_compressed  # getscu takes uncompressed syntaxes only
        if not stored.file_meta.TransferSyntaxUID.is_compressed:
            assert ds.PixelData == stored.PixelData
        else:
            assert (ds.Rows, ds.Columns) == (stored.Rows, stored.Columns)
            assert len(ds.PixelData) >= ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8


def test_unknown_move_destination(site: Site) -> None:
    study = site.study(PatientName=LESTRADE)
    args = ["-S", "-aem", "NOWHERE", *study_keys(study)]
    statuses, log = dcmtk_retrieve("movescu", site.router.port, args, site.workdir)
    assert statuses == [0xA801], log


def test_cancel_mid_move(site: Site) -> None:
    bulk = site.study(StudyDescription="UNDATED")
    site.slow.received.clear()
    statuses, log = dcmtk_retrieve(
        "movescu", site.router.port,
        ["-S", "-aem", "SLOW", "--cancel", "1", *study_keys(bulk)],
        site.workdir,
    )  # fmt: skip
    assert statuses[-1] == 0xFE00, log
    remaining = re.findall(r"Remaining Suboperations\s*:\s*(\d+)", log)
    assert remaining, log
    # a sub-operation in flight when the cancel came may still end: wait for the count the final response gave
    with contextlib.suppress(AssertionError):  # bounded wait, then assert with the evidence
        wait_for(lambda: len(site.slow.received) == BULK - int(remaining[-1]), 10, what="the sub-operation in flight")
    assert 1 <= len(site.slow.received) < BULK
    assert int(remaining[-1]) == BULK - len(site.slow.received), log


def test_move_does_not_block_other_associations(site: Site) -> None:
    bulk = site.study(StudyDescription="UNDATED")
    site.slow.received.clear()
    args = [dcmtk("movescu"), "-aet", "MOVESCU", "-aec", "ROUTER", "-S", "-aem", "SLOW", *study_keys(bulk),
            "127.0.0.1", str(site.router.port)]  # fmt: skip
    mover = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=DCMTK_ENV)
    try:
        wait_for(lambda: len(site.slow.received) >= 1, 20, what="the move to start")
        started = time.monotonic()
        res = findscu(site.router.port, "-S", ["QueryRetrieveLevel=STUDY", "PatientID=QR-P2"], site.workdir)
        assert res.status == 0 and len(res.responses) == 2
        extra = make_instance(PatientID="QR-P9", PatientName="Other^Patient")
        assert send_datasets(site.router.port, [extra]) == [0]
        assert echo(site.router.port, calling="ECHOSCU")
        assert time.monotonic() - started < 5
        assert len(site.slow.received) < BULK  # the move was still going on meanwhile
        assert mover.wait(60) == 0
    finally:
        if mover.poll() is None:
            mover.kill()
            mover.wait(10)
    assert len(site.slow.received) == BULK


# -- pynetdicom SCU: exact response contents ----------------------------------------------------------------------
def scu(port: int, context: str, ext: bytes | None = None) -> Any:
    ae = AE(ae_title="PYSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(context)
    neg = []
    if ext is not None:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = context
        item.service_class_application_information = ext
        neg.append(item)
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER", ext_neg=neg or None)
    assert assoc.is_established
    return assoc


def move_responses(site: Site, destination: str, identifier: Dataset) -> list[tuple[Dataset, Dataset | None]]:
    assoc = scu(site.router.port, STUDY_MOVE)
    try:
        return list(assoc.send_c_move(identifier, destination, STUDY_MOVE))
    finally:
        assoc.release()


def test_failed_suboperations_are_listed(site: Site) -> None:
    study = site.study(StudyDescription="CT HEAD")  # 3 CT + 2 MR images; PICKY refuses CT
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study
    responses = move_responses(site, "PICKY", ident)
    final, identifier = responses[-1]
    assert [int(s.Status) for s, _ in responses] == [0xFF00] * 5 + [0xB000]
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (2, 3, 0)  # fmt: skip
    assert "NumberOfRemainingSuboperations" not in final
    ct = {r["SOPInstanceUID"] for r in site.corpus.where(StudyInstanceUID=study, Modality="CT")}
    assert identifier is not None and set(identifier.FailedSOPInstanceUIDList) == ct
    pending = [s for s, _ in responses[:-1]]
    assert [int(s.NumberOfRemainingSuboperations) for s in pending] == [4, 3, 2, 1, 0]

    ident.QueryRetrieveLevel = "SERIES"
    ident.SeriesInstanceUID = site.corpus.where(StudyInstanceUID=study, Modality="CT")[0]["SeriesInstanceUID"]
    responses = move_responses(site, "PICKY", ident)
    final, identifier = responses[-1]
    assert int(final.Status) == 0xA702 and final.NumberOfFailedSuboperations == 3  # every one failed
    assert identifier is not None and set(identifier.FailedSOPInstanceUIDList) == ct


def test_relational_queries_and_combined_date_time(site: Site) -> None:
    def find(identifier: Dataset, ext: bytes | None) -> tuple[int, list[Dataset]]:
        assoc = scu(site.router.port, STUDY_FIND, ext)
        try:
            got = list(assoc.send_c_find(identifier, STUDY_FIND))
        finally:
            assoc.release()
        return int(got[-1][0].Status), [ds for _s, ds in got[:-1] if ds is not None]

    series = Dataset()
    series.QueryRetrieveLevel = "SERIES"
    series.PatientName = "mul*"
    series.Modality = "MR"
    series.SeriesInstanceUID = ""
    status, found = find(series, b"\x01")
    assert status == 0
    expected = site.corpus.matching("SERIES", lambda r: r["PatientID"] in ("QR-P1", "QR-P2") and r["Modality"] == "MR")
    assert {ds.SeriesInstanceUID for ds in found} == expected and len(expected) == 4
    assert find(series, None)[0] == 0xA900  # hierarchical without the Study Instance UID

    study = Dataset()
    study.QueryRetrieveLevel = "STUDY"
    study.StudyDate = "20240101-20240102"
    study.StudyTime = "2200-0600"
    study.StudyDescription = ""
    status, found = find(study, b"\x01\x01")
    assert status == 0
    assert {ds.StudyDescription for ds in found} == {"CT HEAD", "MR KNEE"}  # 1 Jan 22:30, 2 Jan 05:00; not 06:01
    status, found = find(study, b"\x01\x00")  # not negotiated: each key on its own; 22:00-06:00 is empty
    assert status == 0 and found == []

    assoc = scu(site.router.port, STUDY_FIND, b"\x01\x01\x01\x01")
    try:  # fuzzy names and time zone adjustment are declined, the others accepted
        assert assoc.acceptor.sop_class_extended[STUDY_FIND] == b"\x01\x01\x00\x00"
    finally:
        assoc.release()


def test_c_get_over_pynetdicom_with_role_selection(site: Site) -> None:
    from pynetdicom import build_role

    study = site.study(StudyDescription="MR KNEE")
    got: list[str] = []
    ae = AE(ae_title="GETTER")
    ae.add_requested_context(STUDY_GET)
    ae.add_requested_context(MR_IMAGE)
    role = build_role(MR_IMAGE, scp_role=True)

    def on_store(event: evt.Event) -> int:
        got.append(str(event.dataset.SOPInstanceUID))
        return 0

    assoc = ae.associate("127.0.0.1", site.router.port, ae_title="ROUTER", ext_neg=[role],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    assert assoc.is_established
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study
    try:
        responses = list(assoc.send_c_get(ident, STUDY_GET))
    finally:
        assoc.release()
    final = responses[-1][0]
    assert int(final.Status) == 0 and final.NumberOfCompletedSuboperations == 2
    assert set(got) == site.corpus.matching("IMAGE", lambda r: r["StudyInstanceUID"] == study)


def test_retrieve_identifiers_that_do_not_fit(site: Site) -> None:
    for level, extra, status in [
        ("STUDY", {}, 0xA900),  # no Study Instance UID
        ("STUDY", {"StudyInstanceUID": "1.2.*"}, 0xA900),  # no wildcards in a retrieve
        ("PATIENT", {"PatientID": "QR-P1"}, 0xA900),  # no patient level in Study Root
        ("STUDY", {"StudyInstanceUID": "1.2.3.4.5.6.7"}, 0x0000),  # nothing matches: done, nothing sent
    ]:
        ident = Dataset()
        ident.QueryRetrieveLevel = level
        for k, v in extra.items():
            setattr(ident, k, v)
        responses = move_responses(site, "DEST", ident)
        assert [int(s.Status) for s, _ in responses] == [status], (level, extra)
    assert text(responses[-1][0], "NumberOfCompletedSuboperations") == "0"
