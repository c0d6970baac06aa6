"""Real peers for the tests: the router as a process, DCMTK tools, a generated corpus. Loopback only."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset

from router.intake.envelope import _check_complete

from tools import dcmtk

DATA_ROOT = Path(pydicom.__file__).parent / "data"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


_HANDED_OUT: set[int] = set()  # ports free_port() gave this test session: never given twice
_RANDOM = random.Random()


def _worker_ports(first: int, last: int) -> tuple[int, int]:
    """The share of ``[first, last)`` of this pytest-xdist worker (all of it without xdist): two workers never pick
    the same port, each only checks that no one else on the machine listens there."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return first, last
    index = int(worker[2:]) % count
    size = (last - first) // count
    return first + index * size, first + (index + 1) * size


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (and bind-to-0)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback TCP port nobody listens on, for a server a test is about to start.

    Picked below the kernel's ephemeral range, so no outgoing connection takes it as its local port before the
    server binds it (bind-to-0 ports come from that range: a CI run once saw "address already in use"), and never
    one this session handed out before (two picks in a row could otherwise return the same port); under
    pytest-xdist, from this worker's share of the range only."""
    low = _ephemeral_low()
    if low > 11000:
        first, last = _worker_ports(10000, low)
        for _ in range(200):
            port = _RANDOM.randrange(first, last)
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no room below the range: the kernel's pick
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _HANDED_OUT.add(port)
    return port


def wait_for(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def echo(port: int, aet: str = "ROUTER", calling: str = "ECHOSCU") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = 5
    ae.connection_timeout = 2
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


# -- pynetdicom SCU helpers ------------------------------------------------------------------------------------------
def associate(
    port: int,
    contexts: Iterable[tuple[str, str | None]] = (("1.2.840.10008.1.1", None),),
    calling: str = "STORESCU",
    called: str = "ROUTER",
) -> Association:
    """One association from a pynetdicom requestor; ``contexts`` are (abstract syntax, transfer syntax or None
    for pynetdicom's default list). The caller releases it."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.connection_timeout = 5
    for abstract, ts in dict.fromkeys(contexts):
        if ts:
            ae.add_requested_context(abstract, ts)
        else:
            ae.add_requested_context(abstract)
    return ae.associate("127.0.0.1", port, ae_title=called)


def c_find_statuses(port: int, sop_class: str, identifier: Dataset, calling: str = "FINDSCU") -> list[int]:
    """The status of every C-FIND response (pending ones, then the final) to ``identifier`` over one association."""
    assoc = associate(port, [(sop_class, None)], calling=calling)
    assert assoc.is_established
    try:
        return [int(status.Status) for status, _ds in assoc.send_c_find(identifier, sop_class)]
    finally:
        assoc.release()


def context_of(item: Dataset | Path) -> tuple[str, str]:
    if isinstance(item, Path):
        meta = read_file_meta_info(item)
        return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)
    return str(item.SOPClassUID), str(item.file_meta.TransferSyntaxUID)


def send_datasets(
    port: int, items: Iterable[Dataset | Path], calling: str = "STORESCU", called: str = "ROUTER"
) -> list[int | None]:
    """C-STORE each item over one association; the status of each (None: no response).

    A Dataset is encoded by pynetdicom; a Path is sent as the raw bytes after its file meta, never decoded,
    so a file can carry bytes that are not a valid dataset."""
    items = list(items)
    assoc = associate(port, [context_of(i) for i in items], calling, called)
    assert assoc.is_established, f"association refused: {assoc.acceptor.primitive}"
    saved = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        statuses = []
        for item in items:
            rsp = assoc.send_c_store(item)
            statuses.append(int(rsp.Status) if "Status" in rsp else None)
        return statuses
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = saved
        assoc.release()


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from the router's SQLite index (a fresh read-only connection each time)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- corpus -------------------------------------------------------------------------------------------------
def pydicom_corpus() -> list[Path]:
    """pydicom's bundled files that are proper Part 10 objects, one per SOP Instance UID."""
    candidates = sorted((DATA_ROOT / "test_files").glob("*.dcm")) + sorted(
        (DATA_ROOT / "charset_files").glob("chr*.dcm")
    )
    chosen: dict[str, Path] = {}
    for path in candidates:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            keys = (ds.file_meta.TransferSyntaxUID, ds.SOPClassUID, ds.StudyInstanceUID, ds.SeriesInstanceUID)
            uid = str(ds.SOPInstanceUID)
        except Exception:
            continue
        if all(str(k) for k in keys) and uid not in chosen and path.stat().st_size < 4_000_000:
            chosen[uid] = path
    return [p for p in chosen.values() if dcmtk_reads(p)]


def meta_names_data_set(path: Path) -> bool:
    """Whether the file meta names the data set's SOP Class and Instance. ``send_datasets`` (pynetdicom) builds the
    C-STORE request from the meta, and a request that names another object is refused 0xA900 (DCMTK, Orthanc and
    the router alike); storescu builds it from the data set. A few of pydicom's files disagree."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    meta = ds.file_meta
    return (meta.get("MediaStorageSOPClassUID"), meta.get("MediaStorageSOPInstanceUID")) == (
        ds.get("SOPClassUID"),
        ds.get("SOPInstanceUID"),
    )


def pydicom_reads_whole(raw: bytes) -> bool:
    """Whether pydicom reads these Part 10 bytes as a complete object (the router's own completeness check on
    what pydicom decoded, router.intake.envelope._check_complete, included)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _check_complete(pydicom.dcmread(BytesIO(raw), force=False))
    except Exception:
        return False
    return True


def dcmtk_reads(path: Path) -> bool:
    """Some of pydicom's files are deliberately broken; DCMTK's storescu must be able to read what we send."""
    done = subprocess.run([dcmtk("dcmdump"), str(path)], capture_output=True, text=True, errors="replace", timeout=30)
    return done.returncode == 0 and not any(f"{level}:" in done.stderr for level in "WEF")


def make_instance(
    study_uid: str | None = None,
    series_uid: str | None = None,
    *,
    sop_class: str = SECONDARY_CAPTURE,
    size: int = 8,
    bits: int = 8,
    **attrs: Any,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "Test^Patient"
    ds.PatientID = "P1"
    ds.Modality = "OT"
    ds.StudyDate = "20260101"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    dtype = np.uint8 if bits == 8 else np.uint16
    ds.PixelData = (np.arange(size * size) % 200).astype(dtype).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def encapsulated_instances(transfer_syntaxes: list[str]) -> list[Dataset]:
    """Objects in transfer syntaxes the router must store as received without decoding (video, JPEG-LS).

    RLE is real (pydicom's own encoder); the others carry a valid encapsulated frame structure with opaque
    bytes: a router stores and forwards them as they are, so their content is not its business."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    out = []
    for ts in transfer_syntaxes:
        ds = make_instance(size=16, Modality="XC")
        if ts == RLELossless:
            ds.compress(RLELossless)
        else:
            ds.PixelData = encapsulate([bytes(range(256)) * 4])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = ts
            ds.LossyImageCompression = "01"
        out.append(ds)
    return out


def write_instances(folder: Path, datasets: list[Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a Part 10 file, without preamble and file meta."""
    _meta, offset = split_dataset(path)
    with path.open("rb") as f:
        f.seek(offset)
        return f.read()


def same_content(a: Path, b: Path) -> bool:
    """Equal after parsing: every element the same; group lengths and trailing padding, which a sender such
    as storescu may drop while re-encoding, are ignored."""

    def elements(path: Path) -> dict[int, Any]:
        ds = pydicom.dcmread(path)
        return {int(e.tag): e.value for e in ds if e.tag.element != 0 and e.tag != 0xFFFCFFFC}

    return elements(a) == elements(b)


# -- processes ----------------------------------------------------------------------------------------------
class Process:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.args = args
        self.log_path = log
        self.env = env or DCMTK_ENV
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        self.log.close()

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class StoreSCP(Process):
    """DCMTK storescp writing every received object into ``folder``, each delivery under a unique name (+uf), so
    an object delivered twice shows up twice."""

    def __init__(self, workdir: Path, aet: str = "DEST", port: int | None = None):
        self.folder = workdir / f"storescp-{aet}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.port = port or free_port()
        super().__init__(
            [dcmtk("storescp"), "-aet", aet, "-od", str(self.folder), "+uf", "--accept-all", str(self.port)],
            workdir / f"storescp-{aet}.log",
        )

    def start(self) -> StoreSCP:
        super().start()
        wait_for(lambda: echo(self.port, self.aet), 15, what=f"storescp {self.aet} on {self.port}")
        return self

    def received(self) -> list[Path]:
        """Every file storescp has written whole: one it still holds open is left for a later look (it writes
        straight under the final name, so a reader could find half an object)."""
        found = sorted(p for p in self.folder.iterdir() if p.is_file())
        still_open = self._open_files()
        return [p for p in found if os.path.realpath(p) not in still_open]

    def _open_files(self) -> set[str]:
        opened: set[str] = set()
        if self.proc is None:  # not started: nothing is being written
            return opened
        with contextlib.suppress(FileNotFoundError):  # the process has ended: nothing is being written
            for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
                with contextlib.suppress(OSError):  # closed meanwhile
                    opened.add(os.readlink(fd))
        return opened


class RouterProcess(Process):
    """``router serve`` with a config written into ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        peers: dict[str, dict[str, Any]] | None = None,
        rules: dict[str, Any] | None = None,
        **settings: Any,
    ):
        self.workdir = workdir
        self.port = settings.get("dicom", {}).get("port") or free_port()
        config: dict[str, Any] = {
            "ae_title": "ROUTER",
            "data_dir": "var",
            "rules_dir": "rules",
            "forward": {"backoff_initial": 0.2, "backoff_max": 1.0, "poll_interval": 0.2, "idle_release": 0.5},
            "peers": peers or {},
        }
        for key, value in settings.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        config["dicom"] = {**config.get("dicom", {}), "port": self.port}
        self.hl7_port = config.get("hl7", {}).get("port") or free_port()
        config["hl7"] = {"host": "127.0.0.1", **config.get("hl7", {}), "port": self.hl7_port}
        self.http_port = config.get("http", {}).get("port") or free_port()
        config["http"] = {"host": "127.0.0.1", **config.get("http", {}), "port": self.http_port}
        (workdir / "rules").mkdir(parents=True, exist_ok=True)
        for name, content in (rules or {}).items():
            self.write_rules(name, content)
        self.config = config
        self.config_path = workdir / "router.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.data_dir = workdir / "var"
        super().__init__(
            [sys.executable, "-m", "router", "serve", "--config", str(self.config_path)],
            workdir / "router.log",
            env={**os.environ},
        )

    def write_rules(self, name: str, content: Any) -> None:
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        (self.workdir / "rules" / name).write_text(text)

    def start(self) -> RouterProcess:
        super().start()
        allowed = self.config.get("dicom", {}).get("allowed_calling_aets") or ["ECHOSCU"]
        wait_for(lambda: not self.alive() or echo(self.port, calling=allowed[0]), 30, what="router to listen")
        if not self.alive():
            raise AssertionError(f"router did not start:\n{self.output()}")
        return self

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "router", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )


def storescu(
    port: int,
    files: list[Path] | Path,
    aec: str = "ROUTER",
    aet: str = "STORESCU",
    extra: tuple[str, ...] = (),
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    targets = [str(files)] if isinstance(files, Path) else [str(f) for f in files]
    scan = ["+sd"] if isinstance(files, Path) and files.is_dir() else []
    return subprocess.run(
        [dcmtk("storescu"), "-aet", aet, "-aec", aec, *scan, *extra, "127.0.0.1", str(port), *targets],
        capture_output=True,
        text=True,
        errors="replace",
        env=DCMTK_ENV,
        timeout=timeout,
    )


@contextlib.contextmanager
def running(*procs: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for p in reversed(procs):
            p.stop()
