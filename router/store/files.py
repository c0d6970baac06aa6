"""Object files: written once, via a temp file, fsynced, renamed atomically, directory fsynced.

``write_temp`` writes every received object to this node's temporary folder (``router.storage.tmp_dir``);
``commit_file`` is the folder store's commit (``router.storage.folder``); the S3 store PUTs the temp file instead.

Everything the router writes under ``data_dir`` may hold patient data (objects, HL7 messages, quarantined bytes and
their reasons, dead letters' payloads, the SQLite database): files are created with ``FILE_MODE`` and folders with
``DIR_MODE``, readable by the router's user only (``data_access: owner``, 0600 and 0700), or by its group too
(``group``, 0640 and 0750) for a backup or operator account in that group. ``set_access`` also sets the process's
umask to match (077, or 027), so what other code writes there (a plugin's files, prometheus_client's multiprocess
files) is just as private without knowing it; the umask can only take away, never widen. ``secure_data_dir`` sets
``data_dir`` and its top folders to ``DIR_MODE`` at start-up (what an older version or an operator left wider is
then out of other users' reach) and the SQLite database file to ``FILE_MODE``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import cast

log = logging.getLogger(__name__)

ACCESS_MODES = {"owner": (0o600, 0o700), "group": (0o640, 0o750)}  # data_access -> (file mode, folder mode)
FILE_MODE, DIR_MODE = ACCESS_MODES["owner"]

_SAFE = re.compile(r"[^0-9A-Za-z._-]")
# Synchronous writes: ``write`` returns once the data and the metadata needed to read it back (size, blocks) are on
# disk, as with fdatasync(). One system call instead of two, so a writing thread gives up and takes back the GIL
# once less per file.
_O_DSYNC = getattr(os, "O_DSYNC", 0)


def set_access(access: str) -> None:
    """The modes of what this process writes from now on (``data_access``: "owner" or "group"), and the umask."""
    global FILE_MODE, DIR_MODE
    FILE_MODE, DIR_MODE = ACCESS_MODES[access]
    os.umask(0o777 & ~DIR_MODE)


def make_dirs(path: Path) -> None:
    """``path`` and its missing parents, each with ``DIR_MODE`` (``mkdir(parents=True)`` gives the parents the
    umask's default instead)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(DIR_MODE)


def write_private(path: Path, data: bytes) -> None:
    """A small file (a quarantine reason) written at once with ``FILE_MODE``, replacing any of that name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def create_private(path: Path) -> None:
    """An empty file with ``FILE_MODE`` unless it exists (the SQLite database, before SQLite creates it 0644)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))


def _set_mode(path: Path, mode: int) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current != mode:
            path.chmod(mode)
            log.info("%s: mode %04o, was %04o", path, mode, current)
    except FileNotFoundError:
        pass
    except OSError as exc:  # not ours to change (another owner): say so, the router still runs
        log.warning("%s: cannot set mode %04o: %s", path, mode, exc)


def secure_data_dir(data_dir: Path, subfolders: Iterable[str], database: Path | None) -> None:
    """Create ``data_dir`` and its ``subfolders``, and set them to ``DIR_MODE``; the SQLite ``database`` file (and
    its WAL and shared-memory files) to ``FILE_MODE``. Files already below keep their modes: the folders keep
    other users out."""
    make_dirs(data_dir)
    _set_mode(data_dir, DIR_MODE)
    for sub in subfolders:
        make_dirs(data_dir / sub)
        _set_mode(data_dir / sub, DIR_MODE)
    if database is not None:
        for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
            _set_mode(path, FILE_MODE)


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


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by its name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries durable (the durability tests' double of the file layer replaces this one)."""
    fsync_path(path)


def write_temp(tmp_dir: Path, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to a new temp file, durably unless ``durable`` is false (an object the write-ahead journal
    holds: ``router.store.journal``); the caller renames or removes it."""
    path = tmp_dir / f"{time.time_ns()}-{os.getpid()}-{id(data)}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (_O_DSYNC if durable else 0)
    try:
        fd = os.open(path, flags, FILE_MODE)
    except FileNotFoundError:  # the first write, or the folder was removed: one more system call only then
        make_dirs(tmp_dir)
        fd = os.open(path, flags, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable and not _O_DSYNC:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


_known_dirs: set[Path] = set()  # folders known to exist durably: most objects land in an existing series folder
KNOWN_MAX = 100_000  # folders remembered as durable, at most


def rename_into(tmp: Path, final: Path, known: set[Path]) -> list[Path]:
    """Rename ``tmp`` to ``final``, making the folders it needs; the folders made (each one's entry in its parent,
    and ``final``'s in ``final.parent``, are durable only once fsynced). ``known`` holds folders known to exist
    durably: a walk stops at them, and it is emptied when one of them went away behind our back."""
    created: list[Path] = []
    parent = final.parent
    while parent not in known and not parent.exists():
        created.append(parent)
        parent = parent.parent
    if created:
        make_dirs(final.parent)
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        if final.parent not in known or not tmp.exists():
            raise
        known.clear()  # the folder went away behind our back: forget what we knew and start again
        return rename_into(tmp, final, known)
    return created


def remember_durable(known: set[Path], folders: Iterable[Path]) -> None:
    """Add ``folders`` (just fsynced) to ``known``, which never grows past ``KNOWN_MAX``."""
    if len(known) > KNOWN_MAX:
        known.clear()
    known.update(folders)


def commit_file(tmp: Path, final: Path) -> None:
    """Move a fsynced temp file to its final name and make the rename durable."""
    created = rename_into(tmp, final, _known_dirs)
    fsync_dir(final.parent)
    for folder in created:  # new folders must be durable entries of their parents too
        fsync_dir(folder.parent)
    remember_durable(_known_dirs, [final.parent])


def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return cast("Callable[[int], int]", libc.syncfs)
    except (OSError, AttributeError):  # not Linux (or a libc without syncfs)
        return None


_syncfs = _libc_syncfs()
HAS_SYNCFS = _syncfs is not None


def syncfs(path: Path) -> None:
    """Write back everything cached for the file system holding ``path`` (file data, names, the database's log) and
    flush the device's cache: one flush for all of it (Linux ``syncfs(2)``; it reports write-back errors since
    Linux 5.8). OSError when it fails."""
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "syncfs is not available on this system")
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs {path}: {os.strerror(code)}")
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
