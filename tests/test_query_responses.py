"""C-FIND answers over the network with pre-encoded identifiers and batched pending responses
(router/_pynetdicom/findresponses.py, router/query/encode.py): a pynetdicom SCU gets every match once, in order, equal
to the datasets ``run_find`` builds, in Implicit and in Explicit VR Little Endian, with values outside ASCII (which
go through pydicom) among the encoded ones, and a C-CANCEL still ends the answer.

The router runs in-process on an index filled directly (C-FIND reads only the index)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dsutils import encode
from sqlalchemy import insert

from router import _pynetdicom
from router.app import Router
from router.config import parse_config
from router.query.find import plan_find, run_find
from router.query.matching import normalize_name
from router.query.model import STUDY_ROOT
from router.store.db import make_engine
from router.store.tables import INSTANCE, PATIENT, SERIES, STUDY

FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDIES = 300  # several batches of pending responses
NAMES = ["Smith^Ann", "Jérôme^Buc", "Johnson^Bob"]


def fill(db: Path) -> None:
    engine = make_engine(f"sqlite:///{db}")
    patients = [{"id": i + 1, "patient_id": f"P{i}", "issuer": "", "name": n, "name_norm": normalize_name(n),
                 "birth_date": "19700101", "sex": "O"} for i, n in enumerate(NAMES)]  # fmt: skip
    studies = [{"id": s + 1, "study_uid": f"1.2.{s}", "patient_fk": s % len(NAMES) + 1, "study_date": "20240101",
                "study_time": "", "accession_number": f"A{s}", "study_id": str(s), "description": "",
                "referring_physician": "", "referring_physician_norm": ""} for s in range(STUDIES)]  # fmt: skip
    series = [{"id": s + 1, "series_uid": f"1.3.{s}", "study_fk": s + 1, "modality": "CT", "series_number": "1",
               "description": "", "body_part": "", "pps_start_date": "", "pps_start_time": ""}
              for s in range(STUDIES)]  # fmt: skip
    instances = [{"sop_uid": f"1.4.{s}", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7", "series_fk": s + 1,
                  "transfer_syntax": "1.2.840.10008.1.2.1", "path": f"{s}", "size": 0, "sha256": ""}
                 for s in range(STUDIES)]  # fmt: skip
    with engine.begin() as conn:
        for table, rows in ((PATIENT, patients), (STUDY, studies), (SERIES, series), (INSTANCE, instances)):
            conn.execute(insert(table), rows)
    engine.dispose()


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "var").mkdir()
    fill(tmp_path / "var" / "router.db")
    settings: dict[str, Any] = {"ae_title": "ROUTER", "data_dir": "var", "rules_dir": "rules",
                                "dicom": {"host": "127.0.0.1", "port": 0}}  # fmt: skip
    router = Router(parse_config(settings, tmp_path))
    router.start()
    try:
        yield router
    finally:
        router.stop()


def query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber", "ModalitiesInStudy",
                    "NumberOfStudyRelatedInstances", "PatientComments"):  # fmt: skip
        setattr(ds, keyword, keys.get(keyword, ""))
    return ds


def associate(port: int, syntax: str) -> Any:
    ae = AE(ae_title="PYSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(FIND, [syntax])
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    assert assoc.is_established
    return assoc


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian], ids=["implicit", "explicit"])
def test_every_match_arrives_once_in_order_as_built(router: Router, syntax: str) -> None:
    assert _pynetdicom.installed()
    ds = query()
    wanted = list(run_find(router.engine, plan_find(STUDY_ROOT, ds), retrieve_ae="ROUTER"))
    assoc = associate(router.dicom_port, syntax)
    try:
        answers = list(assoc.send_c_find(ds, FIND))
    finally:
        assoc.release()
    statuses = [status.Status for status, _ in answers]
    assert statuses == [0xFF00] * STUDIES + [0x0000]
    got = [identifier for _, identifier in answers[:-1]]
    assert [str(g.StudyInstanceUID) for g in got] == [f"1.2.{s}" for s in range(STUDIES)]
    implicit = syntax == ImplicitVRLittleEndian
    assert [encode(g, implicit, True) for g in got] == [encode(w, implicit, True) for w in wanted]
    assert str(got[1].PatientName) == "Jérôme^Buc" and got[1].SpecificCharacterSet == "ISO_IR 192"
    assert str(got[0].PatientName) == "Smith^Ann" and "SpecificCharacterSet" not in got[0]


def test_a_cancel_ends_the_answer(router: Router) -> None:
    assoc = associate(router.dicom_port, ExplicitVRLittleEndian)
    try:
        answers = assoc.send_c_find(query(), FIND, msg_id=7)
        pending = 0
        for status, _identifier in answers:
            if status.Status == 0xFF00:
                pending += 1
                if pending == 1:
                    assoc.send_c_cancel(7, query_model=FIND)
                continue
            final = status.Status
            break
        assert final == 0xFE00
        assert 1 <= pending < STUDIES
        echo = assoc.send_c_echo()  # the association carries on
        assert echo.Status == 0x0000
    finally:
        assoc.release()


def test_with_a_dimse_sent_handler_every_response_is_announced(router: Router) -> None:
    """A handler bound to EVT_DIMSE_SENT on the listener sees every C-FIND response (sent one by one, unbatched)."""
    sent: list[int] = []

    def on_sent(event: Any) -> None:
        if type(event.message).__name__ == "C_FIND_RSP":
            sent.append(int(event.message.command_set.Status))

    server = router.listener.server
    assert server is not None
    server.bind(evt.EVT_DIMSE_SENT, on_sent)
    try:
        assoc = associate(router.dicom_port, ExplicitVRLittleEndian)
        try:
            answers = list(assoc.send_c_find(query(AccessionNumber="A1*"), FIND))
        finally:
            assoc.release()
    finally:
        server.unbind(evt.EVT_DIMSE_SENT, on_sent)
    matches = 1 + 10 + 100  # A1, A10-A19, A100-A199
    assert [status.Status for status, _ in answers] == [0xFF00] * matches + [0x0000]
    assert sent == [0xFF00] * matches + [0x0000]
