"""Media for the import and export tests: pydicom's dicomdirtests copied (renamed, damaged, zipped), a router
configuration to import into, and the router's CLI run in this process."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import zipfile
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
import yaml

from router.cli import main

DICOMDIR_TESTS = Path(os.path.dirname(pydicom.data.__file__)) / "test_files" / "dicomdirtests"
CHARSET_FILES = Path(os.path.dirname(pydicom.data.__file__)) / "charset_files"
PATIENT_FOLDERS = ("77654033", "98892001", "98892003")
OBJECTS = 31  # the image records of dicomdirtests' DICOMDIR
MEDIA_RULE = {"name": "media to pacs", "when": {"source": "media"}, "then": [{"forward": "PACS"}]}
NETWORK_RULE = {"name": "network to other", "when": {"source": "dimse"}, "then": [{"forward": "OTHER"}]}


def site(folder: Path, peers: dict[str, Any] | None = None, rules: list[Any] | None = None, **settings: Any) -> Path:
    """A router configuration in ``folder`` (nothing listens: the PACS and OTHER peers are never reached)."""
    (folder / "rules").mkdir(parents=True, exist_ok=True)
    config = {
        "data_dir": "var",
        "rules_dir": "rules",
        "peers": peers
        or {
            "PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 9},
            "OTHER": {"ae_title": "OTHER", "host": "127.0.0.1", "port": 9},
        },
        **settings,
    }
    (folder / "rules" / "10-media.yaml").write_text(yaml.safe_dump(rules or [MEDIA_RULE, NETWORK_RULE]))
    path = folder / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    """``router --config CONFIG ARGS...`` in this process: exit status, standard output, standard error."""
    capsys.readouterr()
    code = main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def rows(config: Path, sql: str) -> list[tuple[Any, ...]]:
    db = config.parent / "var" / "router.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def outcomes(data: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in data["counts"].items() if v}


def copy_media(dest: Path, lower: bool = False, dicomdir: str = "DICOMDIR") -> Path:
    """The dicomdirtests file-set (one DICOMDIR variant, as DICOMDIR) in ``dest``; all names lower-cased if asked."""
    dest.mkdir(parents=True, exist_ok=True)
    name = "dicomdir" if lower else "DICOMDIR"
    shutil.copyfile(DICOMDIR_TESTS / dicomdir, dest / name)
    for folder in PATIENT_FOLDERS:
        for src in (DICOMDIR_TESTS / folder).rglob("*"):
            if src.is_file():
                rel = src.relative_to(DICOMDIR_TESTS)
                target = dest / (str(rel).lower() if lower else rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
    return dest


def zip_folder(folder: Path, out: Path, top: str = "CD") -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return out


OFFSET_TAGS = (b"\x04\x00\x00\x12", b"\x04\x00\x00\x14", b"\x04\x00\x20\x14")  # (0004,1200) (0004,1400) (0004,1420)


def shift_offsets(dicomdir: Path, delta: int) -> int:
    """Every non-zero record offset of an explicit VR little endian DICOMDIR moved by ``delta`` bytes, in place."""
    raw = bytearray(dicomdir.read_bytes())
    shifted = 0
    for tag in OFFSET_TAGS:
        start = 0
        while (at := raw.find(tag + b"UL\x04\x00", start)) >= 0:
            value = struct.unpack_from("<I", raw, at + 8)[0]
            if value:
                struct.pack_into("<I", raw, at + 8, value + delta)
                shifted += 1
            start = at + 12
    dicomdir.write_bytes(bytes(raw))
    return shifted
