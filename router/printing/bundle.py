"""What a print job prints: its payload file.

A job of the ``print`` stage prints one stored object: its path is the stored file's. A job of ``router print`` (or
of several objects) has a bundle of its own under ``data_dir/print/``: a zip (stored, not compressed) of the Part 10
files in print order and ``print.json`` with the job's own film settings (``format``, ``copies``). Like every
payload, it is written durably before its job is committed, and removed once no job that may still be sent
refers to it (``router.outbox.orphans``).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from router import storage
from router.store import files

BUNDLE_DIR = "print"
SUFFIX = ".print.zip"
SETTINGS = "print.json"


@dataclass(frozen=True)
class Overrides:
    """A job's own film settings, over the printer's."""

    format: str | None = None
    copies: int | None = None


def make_bundle(objects: Sequence[bytes], overrides: Overrides) -> bytes:
    """The bytes of a bundle: ``objects`` (Part 10 files) in print order and the job's settings."""
    out = BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(SETTINGS, json.dumps({"format": overrides.format, "copies": overrides.copies}))
        for number, data in enumerate(objects, 1):
            zf.writestr(f"{number:05d}.dcm", data)
    return out.getvalue()


def write_bundle(data_dir: Path, objects: Sequence[bytes], overrides: Overrides) -> tuple[str, str]:
    """Write a bundle durably under ``data_dir/print/``: (its relative path, the job's sop_uid, a new UID)."""
    uid = generate_uid()
    relpath = f"{BUNDLE_DIR}/{uid}{SUFFIX}"
    tmp = files.write_temp(data_dir / "tmp", make_bundle(objects, overrides))
    storage.at(data_dir).commit(tmp, relpath)
    return relpath, uid


def is_bundle(relpath: str) -> bool:
    return relpath.endswith(SUFFIX)


def read_overrides(path: Path) -> Overrides:
    if not is_bundle(path.name):
        return Overrides()
    with zipfile.ZipFile(path) as zf:
        data: dict[str, Any] = json.loads(zf.read(SETTINGS))
    return Overrides(data.get("format"), data.get("copies"))


def objects(path: Path) -> Iterator[Dataset]:
    """The objects a job's payload holds, one at a time (a series is not held in memory at once)."""
    if not is_bundle(path.name):
        yield dcmread(path)
        return
    with zipfile.ZipFile(path) as zf:
        for name in sorted(n for n in zf.namelist() if n.endswith(".dcm")):
            yield dcmread(BytesIO(zf.read(name)))
