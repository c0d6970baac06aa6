"""QIDO-RS against the running router (real HTTP: dicomweb-client and httpx), on objects stored by C-STORE."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient

from router.listeners.http.multipart import media_type_params, parts

from peers import RouterProcess, make_instance, storescu, write_instances

pytestmark = pytest.mark.interop  # DCMTK storescu loads the router

STUDIES = {  # study date, patient name, modality, instances
    "1.2.826.0.1.3680043.10.543.1": ("20240105", "Müller^Anna", "CT", 3),
    "1.2.826.0.1.3680043.10.543.2": ("20240220", "Jansen^Piet", "MR", 2),
    "1.2.826.0.1.3680043.10.543.3": ("20240311", "Mulder^Jan", "CT", 1),
}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    work = tmp_path_factory.mktemp("qido")
    proc = RouterProcess(work).start()
    try:
        datasets = []
        for n, (study, (date, name, modality, count)) in enumerate(STUDIES.items()):
            series = f"{study}.1"
            for i in range(count):
                datasets.append(make_instance(study, series, StudyDate=date, PatientName=name, PatientID=f"P{n}",
                                              Modality=modality, InstanceNumber=i + 1,
                                              SpecificCharacterSet="ISO_IR 192"))  # fmt: skip
        assert storescu(proc.port, write_instances(work / "in", datasets)).returncode == 0
        yield proc
    finally:
        proc.stop()


def base(router: RouterProcess) -> str:
    return f"http://127.0.0.1:{router.http_port}/dicomweb"


def values(found: list[dict], tag: str) -> list:  # type: ignore[type-arg]
    return sorted(str((d.get(tag, {}).get("Value") or [None])[0]) for d in found)


def test_studies_with_dicomweb_client(router: RouterProcess) -> None:
    client = DICOMwebClient(url=base(router))
    found = client.search_for_studies()
    assert values(found, "0020000D") == sorted(STUDIES)
    ct = client.search_for_studies(search_filters={"PatientName": "mul*"})
    assert values(ct, "0020000D") == ["1.2.826.0.1.3680043.10.543.1", "1.2.826.0.1.3680043.10.543.3"]
    [first] = client.search_for_studies(search_filters={"StudyDate": "20240101-20240131"})
    assert first["00100010"]["Value"][0]["Alphabetic"] == "Müller^Anna"
    assert first["00201208"]["Value"] == [3], "Number of Study Related Instances"
    assert first["00080061"]["Value"] == ["CT"], "Modalities in Study"
    assert first["00081190"]["Value"] == [f"{base(router)}/studies/1.2.826.0.1.3680043.10.543.1"]


def test_series_and_instances_levels(router: RouterProcess) -> None:
    client = DICOMwebClient(url=base(router))
    series = client.search_for_series(search_filters={"Modality": "CT"})
    assert values(series, "0020000E") == ["1.2.826.0.1.3680043.10.543.1.1", "1.2.826.0.1.3680043.10.543.3.1"]
    within = client.search_for_series("1.2.826.0.1.3680043.10.543.2")
    assert values(within, "0020000E") == ["1.2.826.0.1.3680043.10.543.2.1"]
    instances = client.search_for_instances("1.2.826.0.1.3680043.10.543.1", "1.2.826.0.1.3680043.10.543.1.1")
    assert values(instances, "00200013") == ["1", "2", "3"]
    assert all(i["00081190"]["Value"][0].endswith(i["00080018"]["Value"][0]) for i in instances)


def test_parameters(router: RouterProcess) -> None:
    url = f"{base(router)}/studies"
    by_tag = httpx.get(url, params={"00100020": "P1"}).json()
    assert values(by_tag, "0020000D") == ["1.2.826.0.1.3680043.10.543.2"]
    page = httpx.get(url, params={"limit": "1", "offset": "1"}).json()
    assert len(page) == 1
    all_pages = [httpx.get(url, params={"limit": "1", "offset": str(n)}).json()[0] for n in range(3)]
    assert values(all_pages, "0020000D") == sorted(STUDIES)
    included = httpx.get(url, params={"includefield": "StudyDescription,00081030", "fuzzymatching": "true"}).json()
    assert all("00081030" in d for d in included)
    assert httpx.get(url, params={"PatientName": "Nobody*"}).status_code == 204
    assert httpx.get(url, params={"NotAKeyword": "x"}).status_code == 400
    assert httpx.get(url, params={"StudyDate": "2024XX01"}).status_code == 400
    assert httpx.get(url, params={"limit": "-1"}).status_code == 400
    assert httpx.get(url, headers={"Accept": "text/html"}).status_code == 406


def test_xml_answer(router: RouterProcess) -> None:
    accept = 'multipart/related; type="application/dicom+xml"'
    response = httpx.get(f"{base(router)}/studies", params={"PatientID": "P0"}, headers={"Accept": accept})
    assert response.status_code == 200
    kind, params = media_type_params(response.headers["content-type"])
    assert kind == "multipart/related"
    [part] = list(parts(io.BytesIO(response.content), params["boundary"]))
    assert part.content_type == "application/dicom+xml"
    root = ET.fromstring(part.body)
    assert root.tag == "NativeDicomModel"
    uid = root.find("DicomAttribute[@keyword='StudyInstanceUID']/Value")
    assert uid is not None and uid.text == "1.2.826.0.1.3680043.10.543.1"
    family = root.find("DicomAttribute[@keyword='PatientName']/PersonName/Alphabetic/FamilyName")
    assert family is not None and family.text == "Müller"


def test_stored_via_stow_is_found(router: RouterProcess, tmp_path: Path) -> None:
    client = DICOMwebClient(url=base(router))
    ds = make_instance(PatientName="Stow^Only", PatientID="STOW1")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    client.store_instances([pydicom.dcmread(io.BytesIO(buffer.getvalue()))])
    [found] = client.search_for_studies(search_filters={"PatientID": "STOW1"})
    assert found["0020000D"]["Value"] == [ds.StudyInstanceUID]
