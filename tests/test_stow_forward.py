"""Forwarding over STOW-RS (httpx) through the outbox: to Orthanc's DICOMweb plugin, and to another router that
refuses one instance (dead-lettered with the failure reason) while the others are delivered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from orthanc import Orthanc
from peers import RouterProcess, make_instance, query, storescu, wait_for, write_instances

pytestmark = pytest.mark.interop  # Orthanc with its DICOMweb plugin; DCMTK storescu


@pytest.fixture
def orthanc(workdir: Path) -> Iterator[Orthanc]:
    server = Orthanc(workdir, dicomweb=True, StorageCompression=False, HttpTimeout=60).start()
    try:
        yield server
    finally:
        server.stop()


def forwarding_to(workdir: Path, url: str, **peer: object) -> RouterProcess:
    return RouterProcess(
        workdir,
        peers={"WEB": {"stow_url": url, **peer}},
        rules={"10-web.yaml": [{"name": "to-web", "when": {"kind": "dicom"}, "then": [{"forward": "WEB"}]}]},
    )


def states(router: RouterProcess) -> list[tuple[str, str]]:
    return query(router.data_dir / "router.db", "SELECT sop_uid, state FROM job ORDER BY id")


def test_every_instance_lands_in_orthanc(workdir: Path, orthanc: Orthanc) -> None:
    router = forwarding_to(workdir, f"{orthanc.url}/dicom-web/studies").start()
    try:
        study = make_instance().StudyInstanceUID
        datasets = [make_instance(study) for _ in range(12)]
        result = storescu(router.port, write_instances(workdir / "in", datasets))
        assert result.returncode == 0, result.stderr
        expected = {d.SOPInstanceUID for d in datasets}
        wait_for(lambda: orthanc.instances() == expected, 60, what="every instance in Orthanc")
        wait_for(lambda: {s for _, s in states(router)} == {"done"}, 30, what="jobs done")
    finally:
        router.stop()


def test_a_refused_instance_is_dead_lettered_the_others_delivered(workdir: Path) -> None:
    target = RouterProcess(workdir / "target").start()  # duplicate policy reject: a changed instance is refused
    router = forwarding_to(workdir / "source", f"http://127.0.0.1:{target.http_port}/dicomweb/studies").start()
    try:
        taken: Dataset = make_instance(SeriesDescription="first version")
        assert storescu(target.port, write_instances(workdir / "pre", [taken])).returncode == 0
        changed = taken.copy()
        changed.SeriesDescription = "second version"
        fresh = [make_instance() for _ in range(3)]
        assert storescu(router.port, write_instances(workdir / "in", [changed, *fresh])).returncode == 0
        wait_for(lambda: all(s in ("done", "dead") for _, s in states(router)) and len(states(router)) == 4, 30,
                 what="every job settled")  # fmt: skip
        assert dict(states(router)) == {changed.SOPInstanceUID: "dead", **{d.SOPInstanceUID: "done" for d in fresh}}
        [(error,)] = query(router.data_dir / "router.db", "SELECT last_error FROM job WHERE state='dead'")
        assert error in ("HTTP 202, failure reason 0x0111", "HTTP 409, failure reason 0x0111")  # batch split or not
        got = query(target.data_dir / "router.db", "SELECT sop_uid FROM instance ORDER BY sop_uid")
        assert got == sorted((d.SOPInstanceUID,) for d in [taken, *fresh])
    finally:
        router.stop()
        target.stop()
