"""A throwaway SeaweedFS (``weed server -s3``) on loopback free ports, for the S3 store's tests (they are interop).

Every port ``weed server`` would open is named (master, volume, filer, S3 and their gRPC ports; the IAM, Iceberg
and Lance servers are off), the data lives in a temp folder, one S3 identity (``ACCESS``/``SECRET``) may do
everything, and one bucket is created. ``stop`` and ``start`` again on the same folder and S3 port model an
S3 server that goes down and comes back with its data (its internal ports are picked anew at each start: another
test session may take one while it is down)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minio import Minio

import tools
from peers import free_port, wait_for

ACCESS, SECRET = "routertest", "routertest-secret-key"
BUCKET = "router-objects"
STARTUP_TIMEOUT = 60.0


class Seaweed:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = {"s3": free_port()}  # the router's endpoint: the same across a stop and a start
        self.grpc: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        identities = {"identities": [{"name": "router", "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}  # fmt: skip
        self.s3_config = folder / "s3.json"
        self.s3_config.write_text(json.dumps(identities))
        (folder / "data").mkdir(exist_ok=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The router's ``storage.s3`` section for this server."""
        return {"endpoint_url": self.endpoint_url, "bucket": BUCKET, "access_key_id": ACCESS,
                "secret_access_key": SECRET, **extra}  # fmt: skip

    def client(self) -> Minio:
        return Minio(f"127.0.0.1:{self.ports['s3']}", access_key=ACCESS, secret_key=SECRET, secure=False,
                     region="us-east-1")  # fmt: skip

    def start(self) -> None:
        """Start on the S3 port, with the other ports picked anew (one freed by a stop may be taken meanwhile)."""
        self.ports.update({name: free_port() for name in ("master", "volume", "filer")})
        self.grpc = {name: free_port() for name in self.ports}
        p, g = self.ports, self.grpc
        argv = [tools.weed(), "server", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={g['master']}", "-master.volumeSizeLimitMB=64",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={g['volume']}", "-volume.max=8",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={g['filer']}",
                "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={g['s3']}", f"-s3.config={self.s3_config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false", "-master.telemetry=false"]  # fmt: skip
        log = (self.folder / "weed.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                     start_new_session=True)  # fmt: skip
        log.close()
        wait_for(self._ready, STARTUP_TIMEOUT, interval=0.3, what=f"SeaweedFS S3 on {self.endpoint_url}")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"weed exited {self.proc.returncode}: {self.log_tail()}")
        try:
            client = self.client()
            if not client.bucket_exists(BUCKET):
                client.make_bucket(BUCKET)
            return True
        except Exception:
            return False

    def stop(self) -> None:
        """Stop the server at once (SIGKILL to its process group): an S3 store that is down."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def log_tail(self) -> str:
        path = self.folder / "weed.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(str(o.object_name) for o in self.client().list_objects(BUCKET, prefix=prefix, recursive=True))

    def get(self, key: str) -> bytes:
        response = self.client().get_object(BUCKET, key)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()


@contextlib.contextmanager
def seaweed() -> Iterator[Seaweed]:
    """A started SeaweedFS with the bucket; stopped and removed afterwards whatever happens."""
    with tempfile.TemporaryDirectory(prefix="seaweed-") as tmp:
        server = Seaweed(Path(tmp))
        try:
            server.start()
            yield server
        finally:
            server.stop()
