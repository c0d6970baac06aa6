"""Input the router cannot take, and resources that fail under it.

Corrupt bytes and objects that cannot be identified are refused with a failure status and kept in quarantine
exactly as received, with the reason. A full disk or a failing database is answered 'out of resources' (the
sender will retry), leaves nothing half-stored, and the router takes the same object once the problem is gone,
without a restart. The router runs in-process so the failures can be injected.
"""

from __future__ import annotations

import errno
import random
import sqlite3
import struct
import subprocess
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from pynetdicom.dsutils import split_dataset
from sqlalchemy import text

from router.app import Router
from router.config import parse_config
from router.intake.dicom import OVERLAP_FROM
from router.store import files

from peers import SECONDARY_CAPTURE, dataset_bytes, make_instance, send_datasets, write_instances

SUCCESS, OUT_OF_RESOURCES, DATASET_MISMATCH = 0x0000, 0xA700, 0xA900


# -- the router, in-process ----------------------------------------------------------------------------------
@pytest.fixture
def start_router(workdir: Path) -> Iterator[Callable[..., Router]]:
    """Start routers (listening on a free loopback port) that are all stopped when the test ends."""
    started: list[Router] = []

    def start(**settings: Any) -> Router:
        (workdir / "rules").mkdir(exist_ok=True)
        config = {
            "data_dir": "var",
            "rules_dir": "rules",
            **settings,
            "dicom": {"host": "127.0.0.1", "port": 0},
            "hl7": {"host": "127.0.0.1", "port": 0},
            "http": {"host": "127.0.0.1", "port": 0},
        }
        router = Router(parse_config(config, workdir))
        started.append(router)
        router.start()
        return router

    try:
        yield start
    finally:
        for router in started:
            router.stop()


@pytest.fixture
def router(start_router: Callable[..., Router]) -> Router:
    return start_router()


def send(router: Router, *items: Any) -> list[int | None]:
    assert router.dicom_port is not None
    return send_datasets(router.dicom_port, items)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def row_counts(router: Router) -> dict[str, int]:
    with router.engine.connect() as conn:
        return {t: conn.execute(text(f"select count(*) from {t}")).scalar_one() for t in ("instance", "job")}


def assert_nothing_stored(router: Router) -> None:
    data = router.config.data_dir
    assert files_under(data / "objects") == []
    assert files_under(data / "tmp") == [], "partial writes left behind"
    assert row_counts(router) == {"instance": 0, "job": 0}


def assert_stored_once(router: Router, sop_uid: str) -> None:
    with router.engine.connect() as conn:
        paths = conn.execute(text("select path from instance where sop_uid = :u"), {"u": sop_uid}).scalars().all()
    assert len(paths) == 1
    assert files_under(router.config.data_dir / "objects") == [router.config.data_dir / paths[0]]


def quarantined(router: Router) -> list[tuple[Path, str]]:
    """(object file, reason file text) for each quarantined object."""
    folder = router.config.data_dir / "quarantine"
    dcm = sorted(folder.glob("*.dcm"))
    assert sorted(folder.glob("*.txt")) == [p.with_suffix(".txt") for p in dcm], "one reason file per object"
    return [(p, p.with_suffix(".txt").read_text()) for p in dcm]


# -- corrupt and unidentifiable objects ----------------------------------------------------------------------
def part10(folder: Path, body: bytes, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """A file with a valid preamble and file meta, followed by ``body`` as its dataset bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    out = BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{meta.MediaStorageSOPInstanceUID}.dcm"
    path.write_bytes(out.getvalue() + body)
    return path


def explicit_le(group: int, element: int, vr: bytes, length: int, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, element, vr, length) + value


def explicit_le_long(group: int, element: int, vr: bytes, length: int, value: bytes) -> bytes:
    """An element of a VR with a 4-byte length (OB, OW, SQ, UN ...)."""
    return struct.pack("<HH2sHL", group, element, vr, 0, length) + value


ITEM = struct.pack("<HH", 0xFFFE, 0xE000)


def uid_element(group: int, element: int, uid: str) -> bytes:
    value = uid.encode() + b"\0" * (len(uid) % 2)  # UIDs are padded to an even length with NUL
    return explicit_le(group, element, b"UI", len(value), value)


IDENTIFIED = (  # the four UIDs an object needs to be stored, in tag order
    uid_element(0x0008, 0x0016, SECONDARY_CAPTURE)
    + uid_element(0x0008, 0x0018, "1.2.826.0.1.3680043.9.7.1.1")
    + uid_element(0x0020, 0x000D, "1.2.826.0.1.3680043.9.7.1.2")
    + uid_element(0x0020, 0x000E, "1.2.826.0.1.3680043.9.7.1.3")
)


CORRUPT = {
    "random bytes": (random.Random(2026).randbytes(512), ExplicitVRLittleEndian),
    # SOP Class UID, then a SOP Instance UID whose value claims 64 bytes where the stream ends after 8
    "truncated element": (
        explicit_le(0x0008, 0x0016, b"UI", 26, SECONDARY_CAPTURE.encode() + b"\0")
        + explicit_le(0x0008, 0x0018, b"UI", 64, b"1.2.3.4\0"),
        ExplicitVRLittleEndian,
    ),
    "deflated syntax, not a deflate stream": (random.Random(2027).randbytes(512), DeflatedExplicitVRLittleEndian),
    # a whole header, then Pixel Data that claims 512 bytes where the stream ends after 100
    "pixel data cut short": (
        IDENTIFIED + explicit_le_long(0x7FE0, 0x0010, b"OW", 512, bytes(100)),
        ExplicitVRLittleEndian,
    ),
    # the same in an object large enough to be written while it is checked (router.intake.dicom.OVERLAP_FROM)
    "large object, pixel data cut short": (
        IDENTIFIED + explicit_le_long(0x7FE0, 0x0010, b"OW", 200_000, bytes(100_000)),
        ExplicitVRLittleEndian,
    ),
    # encapsulated Pixel Data: the offset table and one fragment, then the stream ends without the delimiter
    "encapsulated pixel data without its end": (
        IDENTIFIED
        + explicit_le_long(0x7FE0, 0x0010, b"OB", 0xFFFFFFFF, ITEM + struct.pack("<L", 0))
        + ITEM
        + struct.pack("<L", 6)
        + b"\xff\xd8\xff\xe0\x00\x10",
        JPEGBaseline8Bit,
    ),
}


@pytest.mark.parametrize("body, transfer_syntax", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_dataset_refused_and_quarantined_as_received(
    router: Router, workdir: Path, body: bytes, transfer_syntax: str
) -> None:
    [status] = send(router, part10(workdir / "corrupt", body, transfer_syntax))

    [(kept, reason)] = quarantined(router)
    assert dataset_bytes(kept) == body, "quarantine must hold exactly the bytes received"
    assert "calling_ae: STORESCU" in reason
    assert_nothing_stored(router)
    assert status is not None and 0xC000 <= status <= 0xCFFF, f"0x{status:04X}, expected 0xCxxx (cannot understand)"
    assert "reason: cannot decode" in reason


def test_dataset_without_study_uid_refused_and_quarantined(router: Router, workdir: Path) -> None:
    ds = make_instance()
    del ds.StudyInstanceUID
    [path] = write_instances(workdir / "no-study", [ds])

    assert send(router, path) == [DATASET_MISMATCH]
    [(kept, reason)] = quarantined(router)
    assert dataset_bytes(kept) == dataset_bytes(path)
    assert "StudyInstanceUID" in reason and f"sop_instance_uid: {ds.SOPInstanceUID}" in reason
    assert_nothing_stored(router)


@pytest.mark.parametrize("differs", ["SOP Instance UID", "SOP Class UID"])
def test_dataset_that_is_not_the_object_its_request_names_refused_and_quarantined(
    router: Router, workdir: Path, differs: str
) -> None:
    """0xA900, as DCMTK's storescp and Orthanc answer it. pynetdicom takes the request's UIDs from the file meta,
    so a file whose meta names another object makes such a request."""
    ds = make_instance()
    [path] = write_instances(workdir / "mismatch", [ds])
    raw = bytearray(path.read_bytes())
    _meta, meta_end = split_dataset(path)
    if differs == "SOP Instance UID":
        named = str(ds.SOPInstanceUID)
        other = named[:-1] + ("1" if named.endswith("0") else "0")
    else:
        named, other = SECONDARY_CAPTURE, "1.2.840.10008.5.1.4.1.1.6"  # retired Ultrasound, as long
    assert named != other and len(named) == len(other)
    where = raw.index(named.encode(), 132, meta_end)
    raw[where : where + len(named)] = other.encode()
    path.write_bytes(bytes(raw))

    assert send(router, path) == [DATASET_MISMATCH]
    [(kept, reason)] = quarantined(router)
    assert dataset_bytes(kept) == dataset_bytes(path), "the data set exactly as received"
    assert f"{differs} '{named}' in the data set, '{other}' in the C-STORE request" in reason
    assert_nothing_stored(router)


# -- full disk -----------------------------------------------------------------------------------------------
def failing(err: int) -> Callable[..., None]:
    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(err, f"injected: {errno.errorcode[err]}")

    return fail


# where the write path can meet a full (or failing) disk: ingest reaches both through the `files` module
DISK_FAILURES = {
    "temp file write, ENOSPC": ("write_temp", errno.ENOSPC),
    "folder fsync after the rename, EIO": ("fsync_dir", errno.EIO),
}


# a small object goes through ingest on the association's thread, a large one is written while a worker checks it
SIZES = {"small object": 8, "large object": 320}
assert SIZES["large object"] ** 2 >= OVERLAP_FROM > SIZES["small object"] ** 2


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("function, err", DISK_FAILURES.values(), ids=DISK_FAILURES.keys())
def test_disk_failure_answered_out_of_resources_then_recovers(
    router: Router, monkeypatch: pytest.MonkeyPatch, function: str, err: int, size: int
) -> None:
    ds = make_instance(size=size)
    with monkeypatch.context() as patch:
        patch.setattr(files, function, failing(err))
        assert send(router, ds) == [OUT_OF_RESOURCES]
    assert_nothing_stored(router)

    assert send(router, ds) == [SUCCESS], "the router must take the object once the disk is back"
    assert_stored_once(router, str(ds.SOPInstanceUID))


@pytest.fixture
def tiny_filesystem(workdir: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (needs root). Request it before ``start_router`` so the router stops before unmount."""
    mount = workdir / "var"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the test command runs as root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem is full."""
    with path.open("wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    for size in (4096, 512, 1):  # the last pages too
        try:
            with path.open("ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * size)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_really_full_filesystem_answered_out_of_resources_then_recovers(
    tiny_filesystem: Path, start_router: Callable[..., Router], workdir: Path
) -> None:
    router = start_router(database_url=f"sqlite:///{workdir / 'index.db'}")  # objects on the tmpfs, index not
    filler = tiny_filesystem / "filler"
    fill(filler)
    ds = make_instance(size=64)

    assert send(router, ds) == [OUT_OF_RESOURCES]
    assert_nothing_stored(router)

    filler.unlink()
    assert send(router, ds) == [SUCCESS]
    assert_stored_once(router, str(ds.SOPInstanceUID))


# -- failing database ----------------------------------------------------------------------------------------
def test_database_failure_answered_out_of_resources_then_recovers(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(_dbapi_connection: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database is locked")

    ds = make_instance()
    with monkeypatch.context() as patch:
        # at the driver, under SQLAlchemy: the failure reaches ingest as sqlalchemy.exc.OperationalError
        # whether it commits through the ORM or Core
        patch.setattr(router.engine.dialect, "do_commit", locked)
        assert send(router, ds) == [OUT_OF_RESOURCES]
    assert_nothing_stored(router)

    assert send(router, ds) == [SUCCESS]
    assert_stored_once(router, str(ds.SOPInstanceUID))
