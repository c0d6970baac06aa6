"""STOW-RS against the running router: real HTTP (httpx and dicomweb-client), each part routed like a C-STORE,
the PS3.18 statuses, limits and authentication."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset

from router.listeners.http.multipart import build

from peers import RouterProcess, StoreSCP, dataset_bytes, make_instance, query, wait_for

BOUNDARY = "router-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def p10(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def body(*payloads: bytes) -> bytes:
    return build([("application/dicom", p) for p in payloads], BOUNDARY)


@pytest.fixture
def router(workdir: Path, dest: StoreSCP) -> Iterator[RouterProcess]:
    proc = RouterProcess(
        workdir,
        peers={"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}},
        rules={"10-all.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]},
        http={"max_upload_bytes": 200_000},
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def url(router: RouterProcess, path: str = "/studies") -> str:
    return f"http://127.0.0.1:{router.http_port}/dicomweb{path}"


def refs(answer: dict, key: str) -> list[tuple[str, str, int | None]]:  # type: ignore[type-arg]
    items = answer.get(key, {}).get("Value", [])
    return [
        (
            i.get("00081150", {}).get("Value", [""])[0],
            i.get("00081155", {}).get("Value", [""])[0],
            i.get("00081197", {}).get("Value", [None])[0],
        )
        for i in items
    ]


@pytest.mark.interop  # the router fixture forwards to DCMTK storescp
def test_stow_stores_and_routes_like_c_store(router: RouterProcess, dest: StoreSCP) -> None:
    study = pydicom.uid.generate_uid()
    a, b = make_instance(study), make_instance(study)
    response = httpx.post(url(router), content=body(p10(a), p10(b)), headers={"Content-Type": MULTIPART})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    answer = response.json()
    assert refs(answer, "00081199") == [
        (a.SOPClassUID, a.SOPInstanceUID, None),
        (b.SOPClassUID, b.SOPInstanceUID, None),
    ]
    assert answer["00081190"]["Value"] == [url(router, f"/studies/{study}")]
    assert "00081198" not in answer
    stored = query(router.data_dir / "router.db", "SELECT sop_uid FROM instance ORDER BY id")
    assert stored == [(a.SOPInstanceUID,), (b.SOPInstanceUID,)]
    wait_for(lambda: len(dest.received()) == 2, 30, what="the STOW-RS instances forwarded by the rule")
    sent = sorted(dataset_bytes_of(x, router.workdir) for x in (a, b))
    assert sorted(dataset_bytes(p) for p in dest.received()) == sent


def dataset_bytes_of(ds: Dataset, folder: Path) -> bytes:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(p10(ds))
    return dataset_bytes(path)


@pytest.mark.interop  # the router fixture forwards to DCMTK storescp
def test_partial_failure_is_202_and_none_stored_is_409(router: RouterProcess) -> None:
    good = make_instance()
    response = httpx.post(
        url(router), content=body(p10(good), b"not dicom at all" * 10), headers={"Content-Type": MULTIPART}
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert refs(answer, "00081199") == [(good.SOPClassUID, good.SOPInstanceUID, None)]
    assert refs(answer, "00081198") == [("", "", 0xC000)]

    other_study = make_instance()
    response = httpx.post(
        url(router, f"/studies/{pydicom.uid.generate_uid()}"), content=body(p10(other_study)),
        headers={"Content-Type": MULTIPART},
    )  # fmt: skip
    assert response.status_code == 409
    assert refs(response.json(), "00081198") == [(other_study.SOPClassUID, other_study.SOPInstanceUID, 0x0110)]
    assert query(router.data_dir / "router.db", "SELECT count(*) FROM instance WHERE sop_uid=?",
                 other_study.SOPInstanceUID) == [(0,)]  # fmt: skip


@pytest.mark.interop  # the router fixture forwards to DCMTK storescp
def test_bad_requests(router: RouterProcess) -> None:
    ds = p10(make_instance())
    assert httpx.post(url(router), content=ds, headers={"Content-Type": "application/dicom"}).status_code == 415
    wrong_type = 'multipart/related; type="application/dicom+xml"; boundary=x'
    assert httpx.post(url(router), content=body(ds), headers={"Content-Type": wrong_type}).status_code == 415
    garbled = b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + ds  # never closed
    assert httpx.post(url(router), content=garbled, headers={"Content-Type": MULTIPART}).status_code == 400
    big = body(p10(make_instance(size=400)))  # 160 kB of pixels + 2 parts > 200 kB
    assert httpx.post(url(router), content=big + big, headers={"Content-Type": MULTIPART}).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield big
        yield big

    assert httpx.post(url(router), content=chunks(), headers={"Content-Type": MULTIPART}).status_code == 413
    spec = httpx.get(url(router, "/openapi.json")).json()
    assert {"/dicomweb/studies", "/dicomweb/studies/{study}"} <= set(spec["paths"])


@pytest.mark.interop  # the router fixture forwards to DCMTK storescp
def test_dicomweb_client_stores(router: RouterProcess) -> None:
    client = DICOMwebClient(url=f"http://127.0.0.1:{router.http_port}/dicomweb")
    ds = make_instance()
    answer = client.store_instances([pydicom.dcmread(BytesIO(p10(ds)))])
    assert answer.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_authentication(workdir: Path, auth: str) -> None:
    settings = (
        {"bearer_token": "s3cret-token-0123456789"}
        if auth == "bearer"
        else {"username": "ris", "password": "correct-horse"}
    )
    proc = RouterProcess(workdir, http={"auth": settings}).start()
    try:
        ds = p10(make_instance())
        plain = httpx.post(url(proc), content=body(ds), headers={"Content-Type": MULTIPART})
        assert plain.status_code == 401
        assert plain.headers["www-authenticate"].lower().startswith(auth)
        wrong = "Bearer nope" if auth == "bearer" else "Basic " + __import__("base64").b64encode(b"ris:wrong").decode()
        assert (
            httpx.post(
                url(proc), content=body(ds), headers={"Content-Type": MULTIPART, "Authorization": wrong}
            ).status_code
            == 401
        )
        good = (
            "Bearer s3cret-token-0123456789" if auth == "bearer"
            else "Basic " + __import__("base64").b64encode(b"ris:correct-horse").decode()
        )  # fmt: skip
        ok = httpx.post(url(proc), content=body(ds), headers={"Content-Type": MULTIPART, "Authorization": good})
        assert ok.status_code == 200, ok.text
    finally:
        proc.stop()
