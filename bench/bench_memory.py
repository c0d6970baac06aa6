"""Resident memory of the router while a large multi-frame object goes in by STOW-RS and out by WADO-RS, and
another one comes in by C-STORE.

Usage: python bench/bench_memory.py [--mib 1024] [--limit-mib 100] [--timeout 600] [--out FILE]
See bench/README.md (section bench_memory.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path

import httpx
from bench_dicomweb import Server, start_router  # bench/bench_dicomweb.py: the router with its durable defaults
from bench_store import PROCS, stop
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

MF_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture Image Storage
ROWS = COLUMNS = 512
FRAME = ROWS * COLUMNS * 2  # 16 bits a pixel
PIECE = 1024 * 1024


def write_multiframe(path: Path, mib: int) -> tuple[str, str, int]:
    """A Part 10 multi-frame object of about ``mib`` MiB written a piece at a time (never whole in memory);
    returns its Study and SOP Instance UIDs and its size."""
    frames = max(1, mib * 1024 * 1024 // FRAME)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MF_WORD_SC
    ds.file_meta.MediaStorageSOPInstanceUID = sop = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MF_WORD_SC, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, _series = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality, ds.InstanceNumber = "MEM1", "Memory^Bench", "OT", 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.NumberOfFrames = 1, "MONOCHROME2", frames
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        ROWS, COLUMNS, 16, 16, 15, 0,
    )  # fmt: skip
    head = BytesIO()
    ds.save_as(head, enforce_file_format=True)
    length = frames * FRAME
    pattern = bytes(range(256)) * (PIECE // 256)
    with path.open("wb") as f:
        f.write(head.getvalue())
        f.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))  # (7FE0,0010) OW, explicit VR LE
        left = length
        while left:
            n = min(left, PIECE)
            f.write(pattern[:n])
            left -= n
    return study, sop, path.stat().st_size


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and VmRSS's parts (RssAnon, RssFile: mapped file pages, RssShmem) of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            found[key] = int(value.split()[0])
    return found


class Sampler:
    """The highest VmRSS seen, sampled every ``interval`` seconds in a thread while the ``with`` block runs."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.parts: dict[str, int] = {}  # the highest of each of VmRSS's parts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        now = rss_kib(self.pid)
        self.peak = max(self.peak, now["VmRSS"])
        for key in ("RssAnon", "RssFile", "RssShmem"):
            self.parts[key] = max(self.parts.get(key, 0), now.get(key, 0))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def body(path: Path, boundary: str) -> Iterator[bytes]:
    """The multipart/related body around the file, read a piece at a time (httpx sends it chunked)."""
    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    with path.open("rb") as f:
        while piece := f.read(PIECE):
            yield piece
    yield f"\r\n--{boundary}--\r\n".encode()


def as_sent(answer: httpx.Response, sent: hashlib._Hash) -> tuple[bool, int]:
    """Whether a one-part answer holds the bytes sent (hashed as they arrive, never held whole), and its size."""
    boundary = answer.headers.get("content-type", "").rpartition("boundary=")[2].strip('"')
    expected = sent.copy()
    expected.update(f"\r\n--{boundary}--\r\n".encode())
    got, head, received = hashlib.sha256(), b"", 0
    for piece in answer.iter_bytes(PIECE):
        received += len(piece)
        if head is not None:  # the part's headers end at the first blank line
            head += piece
            if (end := head.find(b"\r\n\r\n")) < 0:
                continue
            piece, head = head[end + 4 :], None
        got.update(piece)
    return answer.status_code == 200 and got.digest() == expected.digest(), received


@dataclass
class Report:
    object_bytes: int = 0
    generated_s: float = 0.0
    before_kib: int = 0  # VmRSS after a warm-up request, before the STOW-RS
    stow_s: float = 0.0
    stow_peak_kib: int = 0
    stow_peak_parts_kib: dict[str, int] = field(default_factory=dict)
    wado_s: float = 0.0
    wado_peak_kib: int = 0
    wado_peak_parts_kib: dict[str, int] = field(default_factory=dict)
    wado_bytes: int = 0
    wado_as_sent: bool = False
    cstore_s: float = 0.0
    cstore_peak_kib: int = 0
    cstore_peak_parts_kib: dict[str, int] = field(default_factory=dict)
    cstore_as_sent: bool = False  # the stored file's data set is the one sent
    after_kib: int = 0
    hwm_kib: int = 0  # VmHWM: the kernel's own peak since the warm-up (catches what sampling misses)

    @property
    def rise_kib(self) -> int:
        return max(self.stow_peak_kib, self.wado_peak_kib, self.cstore_peak_kib, self.hwm_kib) - self.before_kib


def run(root: Path, mib: int, timeout: float) -> Report:
    obj = root / "large.dcm"
    t0 = time.perf_counter()
    study, _sop, size = write_multiframe(obj, mib)
    digest = hashlib.sha256()
    with obj.open("rb") as f:
        while piece := f.read(PIECE):
            digest.update(piece)
    report = Report(object_bytes=size, generated_s=round(time.perf_counter() - t0, 2))
    server = start_router(root / "router")
    pid = server.proc.pid
    boundary = uuid.uuid4().hex
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    with httpx.Client(timeout=timeout) as client:
        client.get(f"{server.studies_url}/1.2.3")  # warm-up: the first request's imports and caches
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM from here on
        report.before_kib = rss_kib(pid)["VmRSS"]
        t0 = time.perf_counter()
        with Sampler(pid) as stow_rss:
            resp = client.post(server.stow_url, content=body(obj, boundary), headers=headers)
        report.stow_s = round(time.perf_counter() - t0, 2)
        if resp.status_code != 200:
            raise SystemExit(f"STOW-RS answered {resp.status_code}: {resp.text[:300]}")
        t0 = time.perf_counter()
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        url = f"{server.studies_url}/{study}"
        with Sampler(pid) as wado_rss, client.stream("GET", url, headers={"Accept": accept}) as answer:
            report.wado_as_sent, report.wado_bytes = as_sent(answer, digest)
        report.wado_s = round(time.perf_counter() - t0, 2)
    report.stow_peak_kib, report.stow_peak_parts_kib = stow_rss.peak, stow_rss.parts
    report.wado_peak_kib, report.wado_peak_parts_kib = wado_rss.peak, wado_rss.parts
    obj.unlink()  # the C-STORE object: another instance of the same size
    _study, sop, _size = write_multiframe(obj, mib)
    t0 = time.perf_counter()
    with Sampler(pid) as cstore_rss:
        status = c_store(dicom_port(server), obj, timeout)
    report.cstore_s = round(time.perf_counter() - t0, 2)
    if status != 0:
        raise SystemExit(f"C-STORE answered 0x{status:04X}")
    report.cstore_peak_kib, report.cstore_peak_parts_kib = cstore_rss.peak, cstore_rss.parts
    found = list((root / "router" / "var" / "objects").rglob(f"*{sop}*.dcm"))
    report.cstore_as_sent = len(found) == 1 and data_set_digest(found[0]) == data_set_digest(obj)
    report.after_kib, report.hwm_kib = rss_kib(pid)["VmRSS"], rss_kib(pid)["VmHWM"]
    return report


def dicom_port(server: Server) -> int:
    """The router's DICOM port, from the configuration ``start_router`` wrote."""
    config = Path(server.proc.args[-1]).read_text()  # type: ignore[index]
    return int(config.split("dicom: {port: ", 1)[1].split(",", 1)[0])


def c_store(port: int, path: Path, timeout: float) -> int:
    """The file sent by C-STORE (pynetdicom, from the file a fragment at a time); the response's status."""
    meta = read_file_meta_info(path)
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="BENCHSCU")
    ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    if not assoc.is_established:
        raise SystemExit("the router refused the association")
    try:
        rsp = assoc.send_c_store(path)
        return int(rsp.Status) if "Status" in rsp else -1
    finally:
        assoc.release()


def data_set_digest(path: Path) -> bytes:
    """SHA-256 of a Part 10 file's data set: what follows the preamble and the file meta group."""
    with path.open("rb") as f:
        head = f.read(144)  # preamble, "DICM", (0002,0000) UL with its 4-byte value
        f.seek(144 + int.from_bytes(head[140:144], "little"))
        return hashlib.file_digest(f, "sha256").digest()


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="object size in MiB (1..8192)")
    parser.add_argument("--limit-mib", type=int, default=100, help="allowed rise of the router's resident memory")
    parser.add_argument("--timeout", type=float, default=600, help="upper bound of one HTTP request, seconds")
    parser.add_argument("--out", type=Path, help="also write the report as JSON")
    args = parser.parse_args()
    if not 1 <= args.mib <= 8192:
        parser.error("--mib: 1..8192")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    root = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        r = run(root, args.mib, args.timeout)
    finally:
        for proc in list(PROCS):
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)
    ok = r.rise_kib < args.limit_mib * 1024 and r.wado_as_sent and r.cstore_as_sent
    rate = r.object_bytes / 1e6
    print(f"object {r.object_bytes / 2**20:.0f} MiB (written in {r.generated_s} s); router VmRSS {mib(r.before_kib)}")
    print(
        f"STOW-RS {r.stow_s} s ({rate / r.stow_s:.0f} MB/s), VmRSS peak {mib(r.stow_peak_kib)} {r.stow_peak_parts_kib}"
    )
    print(
        f"WADO-RS {r.wado_s} s ({rate / r.wado_s:.0f} MB/s), VmRSS peak {mib(r.wado_peak_kib)} {r.wado_peak_parts_kib}"
    )
    print(
        f"C-STORE {r.cstore_s} s ({rate / r.cstore_s:.0f} MB/s), VmRSS peak {mib(r.cstore_peak_kib)} "
        f"{r.cstore_peak_parts_kib}; stored as sent: {r.cstore_as_sent}"
    )
    print(f"after: VmRSS {mib(r.after_kib)}, VmHWM {mib(r.hwm_kib)}; WADO-RS answer as sent: {r.wado_as_sent}")
    print(f"rise {r.rise_kib / 1024:.1f} MiB (limit {args.limit_mib} MiB): {'ok' if ok else 'FAILED'}")
    if args.out:
        args.out.write_text(json.dumps({**asdict(r), "rise_kib": r.rise_kib, "ok": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
