"""The Q/R SCP on PostgreSQL, and when the database goes away (0xA700, and the server carries on).

The router runs in-process; a pynetdicom SCU queries it and a pynetdicom SCP receives what it moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from sqlalchemy import create_engine

from router.app import Router
from router.config import parse_config
from router.listeners.dimse.qr_retrieve import RETRIEVER_ATTR

from peers import CT_IMAGE, echo, free_port, send_datasets, write_instances
from postgres import postgres_cluster
from qr_peers import MR_IMAGE, Corpus, PynetdicomSCP, generated_corpus, record_of, text, text_matches

FIND, MOVE, GET = (f"1.2.840.10008.5.1.4.1.2.2.{n}" for n in (1, 2, 3))


def start_router(workdir: Path, database_url: str | None, dest: PynetdicomSCP) -> Router:
    (workdir / "rules").mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "ae_title": "ROUTER", "data_dir": "var", "rules_dir": "rules", "dicom": {"host": "127.0.0.1", "port": 0},
        "peers": {"SINK": {"ae_title": "SINK", "host": "127.0.0.1", "port": dest.port}},
    }  # fmt: skip
    if database_url:
        settings["database_url"] = database_url
    router = Router(parse_config(settings, workdir))
    router.start()
    return router


def request(port: int, service: str, identifier: Dataset, move_to: str = "") -> list[tuple[Dataset, Dataset | None]]:
    ae = AE(ae_title="PYSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(service)
    neg = SOPClassExtendedNegotiation()
    neg.sop_class_uid = service
    neg.service_class_application_information = b"\x01\x01" if service == FIND else b"\x01"
    handlers, ext = [], [neg]
    if service == GET:
        for sop_class in (CT_IMAGE, MR_IMAGE):
            ae.add_requested_context(sop_class)
            ext.append(build_role(sop_class, scp_role=True))  # type: ignore[arg-type]
        handlers.append((evt.EVT_C_STORE, lambda event: 0x0000))
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER", ext_neg=ext, evt_handlers=handlers)
    assert assoc.is_established
    try:
        if service == FIND:
            return list(assoc.send_c_find(identifier, FIND))
        if service == MOVE:
            return list(assoc.send_c_move(identifier, move_to, MOVE))
        return list(assoc.send_c_get(identifier, GET))
    finally:
        assoc.release()


def ident(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


@pytest.fixture
def sink() -> Iterator[PynetdicomSCP]:
    scp = PynetdicomSCP("SINK").start()
    try:
        yield scp
    finally:
        scp.stop()


@pytest.mark.interop  # PostgreSQL
def test_queries_and_moves_on_postgresql(tmp_path: Path, sink: PynetdicomSCP) -> None:
    files = write_instances(tmp_path / "generated", generated_corpus())
    corpus = Corpus([record_of(p) for p in files])
    with postgres_cluster() as cluster, cluster.fresh_database() as name:
        router = start_router(tmp_path, cluster.url(name), sink)
        try:
            port = router.dicom_port
            assert port is not None
            assert send_datasets(port, files) == [0] * len(files)

            got = request(port, FIND, ident("STUDY", PatientName="mul*", StudyInstanceUID="", ModalitiesInStudy="",
                                            NumberOfStudyRelatedInstances="", StudyTime="2200-0600",
                                            StudyDate="20240101-20240102"))  # fmt: skip
            assert int(got[-1][0].Status) == 0
            matches = [ds for _s, ds in got[:-1] if ds is not None]
            assert len(matches) == 2
            for ds in matches:
                records = corpus.where(StudyInstanceUID=ds.StudyInstanceUID)
                assert records[0]["PatientID"] == "QR-P1"
                assert text(ds, "ModalitiesInStudy") == "\\".join(sorted({r["Modality"] for r in records}))
                assert int(ds.NumberOfStudyRelatedInstances) == len(records)

            item = Dataset()
            item.RequestedProcedureID = "RP?00"
            item.ScheduledProcedureStepID = ""
            got = request(port, FIND, ident("SERIES", SeriesInstanceUID="", RequestAttributesSequence=[item]))
            found = {ds.SeriesInstanceUID: [i.RequestedProcedureID for i in ds.RequestAttributesSequence]
                     for _s, ds in got[:-1] if ds is not None}  # fmt: skip
            expected = {r["SeriesInstanceUID"]: [rp for rp, _ in r.requests if text_matches("RP?00", rp)]
                        for r in corpus.records if any(text_matches("RP?00", rp) for rp, _ in r.requests)}  # fmt: skip
            assert found == expected and len(found) == 2  # not RP101 (S3)

            got = request(port, FIND, ident("IMAGE", PatientID="QR-P2", SOPInstanceUID="", InstanceNumber=""))
            assert {ds.SOPInstanceUID for _s, ds in got[:-1] if ds is not None} == corpus.matching(
                "IMAGE", lambda r: r["PatientID"] == "QR-P2"
            )

            study = corpus.where(StudyDescription="CT CHEST")[0]["StudyInstanceUID"]
            got = request(port, MOVE, ident("STUDY", StudyInstanceUID=study), move_to="SINK")
            assert int(got[-1][0].Status) == 0
            assert set(sink.received) == corpus.matching("IMAGE", lambda r: r["StudyInstanceUID"] == study)
        finally:
            router.stop()


def test_database_unavailable_is_out_of_resources(tmp_path: Path, sink: PynetdicomSCP) -> None:
    router = start_router(tmp_path, None, sink)
    try:
        port = router.dicom_port
        assert port is not None
        files = write_instances(tmp_path / "generated", generated_corpus())
        assert send_datasets(port, files) == [0] * len(files)
        study = record_of(files[0])["StudyInstanceUID"]
        retriever = getattr(router.listener.ae, RETRIEVER_ATTR)
        good = router.listener.qr.engine
        dead = create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none", pool_pre_ping=True)
        router.listener.qr.engine = retriever.engine = dead
        try:
            for service in (FIND, MOVE, GET):
                got = request(port, service, ident("STUDY", StudyInstanceUID=study), move_to="SINK")
                assert [int(s.Status) for s, _ in got] == [0xA700], service
            assert echo(port, calling="ECHOSCU")  # the listener is fine
        finally:
            router.listener.qr.engine = retriever.engine = good
            dead.dispose()
        got = request(port, FIND, ident("STUDY", StudyInstanceUID=study))
        assert [int(s.Status) for s, _ in got] == [0xFF00, 0x0000]  # and answers again once the database is back
        got = request(port, GET, ident("STUDY", StudyInstanceUID=study))
        assert int(got[-1][0].Status) == 0 and got[-1][0].NumberOfCompletedSuboperations == 5
    finally:
        router.stop()
