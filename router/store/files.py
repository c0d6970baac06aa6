"""Object files: written once, via a temp file, fsynced, renamed atomically, directory fsynced."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

_SAFE = re.compile(r"[^0-9A-Za-z._-]")
# Synchronous writes: ``write`` returns once the data and the metadata needed to read it back (size, blocks) are on
# disk, as with fdatasync(). One system call instead of two, so a writing thread gives up and takes back the GIL
# once less per file.
_O_DSYNC = getattr(os, "O_DSYNC", 0)


def safe_component(uid: str) -> str:
    """A UID as a file-name component (UIDs are digits and dots; anything else is replaced)."""
    cleaned = _SAFE.sub("_", uid.strip())
    return cleaned or "_"


def object_relpath(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return "/".join(
        ("objects", safe_component(study_uid), safe_component(series_uid), safe_component(sop_uid) + ".dcm")
    )


def derived_relpath(digest: str) -> str:
    return f"derived/{digest[:2]}/{digest}.dcm"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(tmp_dir: Path, data: bytes) -> Path:
    """Write ``data`` durably to a new temp file; the caller renames or removes it."""
    path = tmp_dir / f"{time.time_ns()}-{os.getpid()}-{id(data)}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DSYNC
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:  # the first write, or the folder was removed: one more system call only then
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if not _O_DSYNC:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


_known_dirs: set[Path] = set()  # folders known to exist durably: most objects land in an existing series folder


def commit_file(tmp: Path, final: Path) -> None:
    """Move a fsynced temp file to its final name and make the rename durable."""
    created: list[Path] = []
    parent = final.parent
    while parent not in _known_dirs and not parent.exists():
        created.append(parent)
        parent = parent.parent
    if created:
        final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        if final.parent not in _known_dirs or not tmp.exists():
            raise
        _known_dirs.clear()  # the folder went away behind our back: forget what we knew and start again
        commit_file(tmp, final)
        return
    fsync_dir(final.parent)
    for folder in created:  # new folders must be durable entries of their parents too
        fsync_dir(folder.parent)
    if len(_known_dirs) > 100_000:
        _known_dirs.clear()
    _known_dirs.add(final.parent)


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
