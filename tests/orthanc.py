"""A real Orthanc (Debian package) on free loopback ports, with its DICOMweb plugin."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx

from peers import Process, free_port, wait_for

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class Orthanc(Process):
    def __init__(self, workdir: Path, aet: str = "ORTHANC", modalities: dict[str, Any] | None = None) -> None:
        self.folder = workdir / f"orthanc-{aet}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.aet, self.dicom_port, self.http_port = aet, free_port(), free_port()
        config = {
            "Name": aet,
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": modalities or {},
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StorageCompression": False,
            "HttpTimeout": 60,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        super().__init__([ORTHANC, str(path)], self.folder / "orthanc.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        super().start()

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/system", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(lambda: not self.alive() or up(), 60, what="Orthanc to answer")
        if not self.alive():
            raise AssertionError(f"Orthanc did not start:\n{self.output()}")
        return self

    def instances(self) -> list[str]:
        """SOP Instance UIDs stored in Orthanc."""
        ids = httpx.get(f"{self.url}/instances", timeout=10).json()
        return sorted(
            httpx.get(f"{self.url}/instances/{i}/simplified-tags", timeout=10).json()["SOPInstanceUID"] for i in ids
        )
