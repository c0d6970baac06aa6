"""A large multi-frame object goes in by STOW-RS and out by WADO-RS without the router holding it in memory.

The object (about 200 MB) is written to disk a piece at a time, sent as a chunked request body read from the file,
and read back as a stream, hashed on the way: neither side holds it whole. The router's peak resident memory
(VmHWM, reset after a warm-up through /proc/<pid>/clear_refs) may rise by less than 60 MiB.
bench/bench_memory.py does the same with 1 GiB.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset

from memory_probe import memory, write_frames
from peers import RouterProcess, make_instance

PIECE = 1024 * 1024
RISE_LIMIT = 60 * 1024 * 1024
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def multipart(path: Path, boundary: str) -> Iterator[bytes]:
    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    with path.open("rb") as f:
        while piece := f.read(PIECE):
            yield piece
    yield f"\r\n--{boundary}--\r\n".encode()


def file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.mark.slow
def test_a_200_mb_object_in_by_stow_and_out_by_wado_raises_resident_memory_by_less_than_60_mb(
    workdir: Path, tmp_path: Path
) -> None:
    obj = tmp_path / "large.dcm"
    study, sop = write_frames(obj)
    router = RouterProcess(workdir).start()
    try:
        pid = router.proc.pid
        base = f"http://127.0.0.1:{router.http_port}/dicomweb"
        boundary = uuid.uuid4().hex
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
        with httpx.Client(timeout=120) as client:
            small = make_instance()  # warm-up: what the first STOW-RS and WADO-RS load stays out of the figures
            warm = client.post(f"{base}/studies", content=b"".join(_small_body(small, boundary)), headers=headers)
            assert warm.status_code == 200, warm.text
            assert client.get(f"{base}/studies/{small.StudyInstanceUID}", headers={"Accept": ACCEPT}).status_code == 200
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = memory(pid)["VmRSS"]

            answer = client.post(f"{base}/studies", content=multipart(obj, boundary), headers=headers)
            assert answer.status_code == 200, answer.text
            after_stow = memory(pid)["VmHWM"]

            got = hashlib.sha256()
            with client.stream("GET", f"{base}/studies/{study}", headers={"Accept": ACCEPT}) as response:
                assert response.status_code == 200
                content_type = response.headers["content-type"]
                head = b""
                for piece in response.iter_bytes(PIECE):
                    if head is not None:  # the part's headers end at the first blank line
                        head += piece
                        if (end := head.find(b"\r\n\r\n")) < 0:
                            continue
                        piece, head = head[end + 4 :], None
                    got.update(piece)
            peak = memory(pid)["VmHWM"]
    finally:
        router.stop()
    closing = f"\r\n--{content_type.rpartition('boundary=')[2].strip(chr(34))}--\r\n".encode()
    expected = hashlib.sha256()
    with obj.open("rb") as f:
        while piece := f.read(PIECE):
            expected.update(piece)
    expected.update(closing)
    assert got.hexdigest() == expected.hexdigest(), "WADO-RS did not send back the bytes stored"
    stored = [p for p in (router.data_dir / "objects").rglob("*.dcm") if sop in p.name]
    assert len(stored) == 1 and file_digest(stored[0]) == file_digest(obj)
    assert not list((router.data_dir / "tmp").glob("*.part")), "a part file was left behind"
    assert after_stow - before < RISE_LIMIT, f"STOW-RS raised VmHWM by {(after_stow - before) / 2**20:.0f} MiB"
    assert peak - before < RISE_LIMIT, f"WADO-RS raised VmHWM by {(peak - before) / 2**20:.0f} MiB"


def _small_body(ds: Dataset, boundary: str) -> Iterator[bytes]:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    yield out.getvalue()
    yield f"\r\n--{boundary}--\r\n".encode()
