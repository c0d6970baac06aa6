"""The SCU commands against a real Orthanc, and Orthanc querying and retrieving from the router.

Orthanc (Debian's package) runs on free ports in a temp folder, with the router in its DicomModalities. It is
loaded with ``router send``; ``router find``/``move``/``get`` then work on it. Orthanc's own SCU (through its REST
API on 127.0.0.1) queries the router and has it move a study back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from orthanc import Orthanc
from peers import RouterProcess, free_port, query, write_instances
from qr_peers import Corpus, generated_corpus, record_of

pytestmark = pytest.mark.interop  # Orthanc


@dataclass
class Pair:
    router: RouterProcess
    orthanc: Orthanc
    corpus: Corpus
    files: list[Path]
    workdir: Path

    def study(self, description: str) -> str:
        return self.corpus.where(StudyDescription=description)[0]["StudyInstanceUID"]

    def router_has(self) -> set[str]:
        return {row[0] for row in query(self.router.data_dir / "router.db", "select sop_uid from instance")}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("qr-orthanc")
    files = write_instances(workdir / "generated", generated_corpus())
    router_port = free_port()
    orthanc = Orthanc(
        workdir, DicomCheckCalledAet=False, DicomModalities={"router": ["ROUTER", "127.0.0.1", router_port]}
    )
    router = RouterProcess(
        workdir, peers={"ORTHANC": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.port}},
        dicom={"port": router_port},
    )  # fmt: skip
    try:
        orthanc.start()
        router.start()
        sent = router.cli("send", "ORTHANC", *map(str, files))
        assert f"sent {len(files)} of {len(files)} file(s) to ORTHANC, 0 failed" in sent.stdout, sent.stderr
        yield Pair(router, orthanc, Corpus([record_of(p) for p in files]), files, workdir)
    finally:
        router.stop()
        orthanc.stop()


def test_router_echo_and_find_on_orthanc(pair: Pair) -> None:
    done = pair.router.cli("echo", "ORTHANC")
    assert "C-ECHO status 0x0000" in done.stdout
    done = pair.router.cli("find", "ORTHANC", "--json", "-k", "PatientID=QR-P*", "-k", "StudyDate=20240101-20240131")
    answers = json.loads(done.stdout)
    studies = {a["0020000D"]["Value"][0] for a in answers}
    expected = pair.corpus.matching(
        "STUDY", lambda r: r["PatientID"].startswith("QR-P") and "20240101" <= r["StudyDate"] <= "20240131"
    )
    assert studies == expected and len(expected) == 4
    assert "4 match(es), final status 0x0000" in done.stderr

    done = pair.router.cli("find", "ORTHANC", "-k", "PatientID=QR-P2")  # a table, one column per key
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "StudyDescription", "PatientName",
        "PatientID", "StudyInstanceUID", "NumberOfStudyRelatedInstances",
    ]  # fmt: skip
    assert len(lines) == 3 and all("MULLER^ANNA" in line and "QR-P2" in line for line in lines[1:])

    study = pair.study("CT HEAD")
    done = pair.router.cli("find", "ORTHANC", "--json", "--level", "SERIES", "-k", f"StudyInstanceUID={study}")
    series = {a["0020000E"]["Value"][0] for a in json.loads(done.stdout)}
    assert series == pair.corpus.matching("SERIES", lambda r: r["StudyInstanceUID"] == study)


def test_router_move_and_get_from_orthanc(pair: Pair) -> None:
    study = pair.study("CT CHEST")
    expected = pair.corpus.matching("IMAGE", lambda r: r["StudyInstanceUID"] == study)
    done = pair.router.cli("move", "ORTHANC", "--to", "ROUTER", "-k", f"StudyInstanceUID={study}", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"C-MOVE from ORTHANC to ROUTER: {len(expected)} completed, 0 failed" in done.stdout
    assert "C-MOVE to ROUTER" in done.stderr  # the progress lines
    assert expected <= pair.router_has()

    other = pair.study("MR HEAD")
    out = pair.workdir / "got"
    done = pair.router.cli("get", "ORTHANC", "--out", str(out), "-k", f"StudyInstanceUID={other}", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    got = {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.glob("*.dcm")}
    assert got == pair.corpus.matching("IMAGE", lambda r: r["StudyInstanceUID"] == other)


def test_orthanc_queries_and_retrieves_from_the_router(pair: Pair) -> None:
    # the router holds what a move brought in; Orthanc forgets that study, then finds and pulls it back
    study = pair.study("MR KNEE")
    done = pair.router.cli("move", "ORTHANC", "--to", "ROUTER", "-q", "-k", f"StudyInstanceUID={study}")
    assert done.returncode == 0
    expected = pair.corpus.matching("IMAGE", lambda r: r["StudyInstanceUID"] == study)
    orthanc_id = pair.orthanc.rest("POST", "/tools/lookup", study)[0]["ID"]
    pair.orthanc.rest("DELETE", f"/studies/{orthanc_id}")

    keys = {"StudyInstanceUID": study, "PatientName": "", "StudyDate": ""}
    q = pair.orthanc.rest("POST", "/modalities/router/query", {"Level": "Study", "Query": keys})
    answers = pair.orthanc.rest("GET", f"{q['Path']}/answers?expand&simplify")
    assert [(a["StudyInstanceUID"], a["PatientName"], a["StudyDate"]) for a in answers] == [
        (study, "Müller^Jürgen", "20240102")
    ]
    pair.orthanc.rest("POST", f"{q['Path']}/retrieve", {"TargetAet": "ORTHANC", "Synchronous": True})
    instances = pair.orthanc.rest("GET", f"/studies/{orthanc_id}/instances")
    assert {i["MainDicomTags"]["SOPInstanceUID"] for i in instances} == expected
