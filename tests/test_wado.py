"""WADO-RS against the running router: real HTTP (httpx, dicomweb-client) on objects stored by DCMTK storescu."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file

from router.listeners.http.multipart import media_type_params, parts

from peers import RouterProcess, query, storescu

pytestmark = pytest.mark.interop  # DCMTK storescu loads the router

FILES = {"CT_small.dcm": (), "MR_small_jp2klossless.dcm": ("-xv",), "SC_rgb_rle_2frame.dcm": ("-xr",)}
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    proc = RouterProcess(tmp_path_factory.mktemp("wado")).start()
    try:
        for name, propose in FILES.items():  # each sent in its own syntax
            path = Path(get_testdata_file(name))  # type: ignore[arg-type]
            result = storescu(proc.port, path, extra=propose)
            assert result.returncode == 0, result.stderr
        yield proc
    finally:
        proc.stop()


def source(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))  # type: ignore[arg-type]


def base(router: RouterProcess) -> str:
    return f"http://127.0.0.1:{router.http_port}/dicomweb"


def instance_url(router: RouterProcess, ds: pydicom.Dataset) -> str:
    return f"{base(router)}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def multipart(response: httpx.Response) -> list[tuple[str, bytes]]:
    kind, params = media_type_params(response.headers["content-type"])
    assert kind == "multipart/related", response.headers["content-type"]
    return [
        (p.headers.get("content-type", ""), p.body) for p in parts(io.BytesIO(response.content), params["boundary"])
    ]


def stored_file(router: RouterProcess, sop_uid: str) -> bytes:
    [(path,)] = query(router.data_dir / "router.db", "SELECT path FROM instance WHERE sop_uid=?", sop_uid)
    return (router.data_dir / path).read_bytes()


def test_instances_as_stored_are_byte_identical(router: RouterProcess) -> None:
    ds = source("MR_small_jp2klossless.dcm")
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    response = httpx.get(instance_url(router, ds), headers={"Accept": accept})
    assert response.status_code == 200
    [(content_type, body)] = multipart(response)
    assert content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90"
    assert body == stored_file(router, ds.SOPInstanceUID)


def test_default_syntax_is_explicit_little_endian_with_the_same_pixels(router: RouterProcess) -> None:
    ds = source("MR_small_jp2klossless.dcm")
    response = httpx.get(instance_url(router, ds), headers={"Accept": 'multipart/related; type="application/dicom"'})
    [(content_type, body)] = multipart(response)
    assert content_type == f"application/dicom; transfer-syntax={EXPLICIT}"
    got = pydicom.dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT
    assert np.array_equal(got.pixel_array, ds.pixel_array)


def test_study_series_retrieve_and_dicomweb_client(router: RouterProcess) -> None:
    ct = source("CT_small.dcm")
    client = DICOMwebClient(url=base(router))
    instances = client.retrieve_study(ct.StudyInstanceUID)
    expected = {d.SOPInstanceUID for d in map(source, FILES) if d.StudyInstanceUID == ct.StudyInstanceUID}
    assert {d.SOPInstanceUID for d in instances} == expected
    meta = client.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert meta["00100010"]["Value"][0]["Alphabetic"] == str(ct.PatientName)
    pixel_uri = meta["7FE00010"]["BulkDataURI"]
    assert pixel_uri == instance_url(router, ct) + "/frames/1"
    [frame] = client.retrieve_instance_frames(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, [1])
    assert frame == ct.PixelData


def test_frames_in_the_requested_order_native_and_as_stored(router: RouterProcess) -> None:
    ds = source("SC_rgb_rle_2frame.dcm")
    url = instance_url(router, ds) + "/frames/2,1"
    native = httpx.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert native.status_code == 200
    frames = [body for _, body in multipart(native)]
    expected = ds.pixel_array  # (frames, rows, cols, samples); native frames are interleaved RGB after decoding
    assert frames == [expected[1].tobytes(), expected[0].tobytes()]
    rle = httpx.get(url, headers={"Accept": 'multipart/related; type="image/x-dicom-rle"'})
    assert rle.status_code == 200
    encapsulated = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=2))
    assert [body for _, body in multipart(rle)] == [encapsulated[1], encapsulated[0]]
    assert httpx.get(instance_url(router, ds) + "/frames/3").status_code == 404


def test_rendered_and_bulkdata(router: RouterProcess) -> None:
    ct = source("CT_small.dcm")
    jpeg = httpx.get(instance_url(router, ct) + "/rendered", headers={"Accept": "image/jpeg"})
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (ct.Columns, ct.Rows)
    png = httpx.get(instance_url(router, ct) + "/frames/1/rendered", headers={"Accept": "image/png"})
    picture = Image.open(io.BytesIO(png.content))
    assert picture.format == "PNG" and picture.mode == "L"
    rgb = source("SC_rgb_rle_2frame.dcm")
    second = httpx.get(instance_url(router, rgb) + "/frames/2/rendered", headers={"Accept": "image/png"})
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(second.content))), rgb.pixel_array[1])
    [(_, pixels)] = multipart(httpx.get(instance_url(router, ct) + "/bulkdata/7FE00010"))
    assert pixels == ct.PixelData


def test_errors(router: RouterProcess) -> None:
    ct = source("CT_small.dcm")
    assert httpx.get(f"{base(router)}/studies/1.2.3.999").status_code == 404
    assert httpx.get(f"{base(router)}/studies/not-a-uid").status_code == 400
    assert httpx.get(instance_url(router, ct), headers={"Accept": "application/json"}).status_code == 406
    jpeg_baseline = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    assert httpx.get(instance_url(router, ct), headers={"Accept": jpeg_baseline}).status_code == 406
    assert httpx.get(instance_url(router, ct) + "/rendered", headers={"Accept": "image/gif"}).status_code == 406


def test_a_retrieve_as_stored_has_its_length_a_converted_one_is_chunked(router: RouterProcess) -> None:
    ct = source("CT_small.dcm")
    study = f"{base(router)}/studies/{ct.StudyInstanceUID}"
    as_stored = httpx.get(study, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert as_stored.status_code == 200
    assert int(as_stored.headers["content-length"]) == len(as_stored.content)
    assert "transfer-encoding" not in as_stored.headers
    assert sorted(body for _t, body in multipart(as_stored)) == sorted(
        stored_file(router, d.SOPInstanceUID) for d in map(source, FILES) if d.StudyInstanceUID == ct.StudyInstanceUID
    )
    mr = source("MR_small_jp2klossless.dcm")  # stored as JPEG 2000, asked for in Explicit VR Little Endian
    converted = httpx.get(instance_url(router, mr), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert converted.status_code == 200 and "content-length" not in converted.headers
    assert [t for t, _b in multipart(converted)] == [f"application/dicom; transfer-syntax={EXPLICIT}"]
