"""A real Orthanc (Debian package orthanc) on free loopback ports: the downstream PACS of the interop tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

import tools
from peers import Process, echo, free_port, wait_for


class Orthanc(Process):
    """Orthanc on free DICOM and HTTP ports (HTTP on 127.0.0.1 only, no authentication), storing under
    ``workdir/orthanc-<aet>``. ``settings`` go into its configuration as they are (DicomModalities, StableAge ...);
    ``dicomweb`` loads its DICOMweb plugin (Debian package orthanc-dicomweb) under /dicom-web/, otherwise it loads
    no plugin. Tests that start one are interop (tools.orthanc checks)."""

    def __init__(self, workdir: Path, aet: str = "ORTHANC", *, dicomweb: bool = False, **settings: Any) -> None:
        self.folder = workdir / f"orthanc-{aet}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.aet, self.port, self.http_port = aet, free_port(), free_port()
        config: dict[str, Any] = {
            "Name": aet,
            "DicomAet": aet,
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [tools.orthanc_dicomweb_plugin()] if dicomweb else [],
        }
        if dicomweb:
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        config.update(settings)
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        super().__init__([tools.orthanc(), str(path)], self.folder / "orthanc.log")

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

        wait_for(lambda: not self.alive() or up(), 60, what="Orthanc's REST API to answer")
        wait_for(lambda: not self.alive() or echo(self.port, self.aet), 30, what="Orthanc's DICOM port to answer")
        if not self.alive():
            raise AssertionError(f"Orthanc did not start:\n{self.output()}")
        return self

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        """A call to Orthanc's REST API; the JSON answer. A str body is sent as plain text (e.g. /tools/lookup)."""
        url = f"{self.url}{path}"
        if isinstance(body, str):
            rsp = httpx.request(method, url, content=body.encode(), timeout=60)
        else:
            rsp = httpx.request(method, url, json=body, timeout=60)
        rsp.raise_for_status()
        return rsp.json()

    def instances(self) -> set[str]:
        """The SOP Instance UIDs Orthanc holds."""
        return {
            self.rest("GET", f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
            for i in self.rest("GET", "/instances")
        }
