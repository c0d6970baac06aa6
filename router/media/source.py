"""Where media is read from: a folder (or the folder of a DICOMDIR file), or a .zip read in place. Read-only.

File IDs are matched case-insensitively: media mounted on Linux often shows ``dicomdir`` and ``pt000000/st000000``
where the DICOMDIR says ``DICOMDIR`` and ``PT000000\\ST000000``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

DICOMDIR = "dicomdir"
DICOMDIR_CLASS = b"1.2.840.10008.1.3.10"  # Media Storage Directory Storage, in the file meta


class MediaError(Exception):
    """The path cannot be read as media at all (it does not exist, a .zip that is not one)."""


@dataclass
class MediaSource:
    """The files of one medium by their relative path (``/``-separated), readable without changing anything."""

    location: Path  # what was given: a folder, a DICOMDIR file, a .zip
    root: Path  # the folder file IDs are relative to (for a .zip: the zip itself)
    names: list[str] = field(default_factory=list)  # every regular file, sorted
    _zip: zipfile.ZipFile | None = None
    _prefix: str = ""  # inside a .zip: the folder holding the DICOMDIR
    given: str | None = None  # a DICOMDIR named on the command line, whatever its file name
    _by_lower: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_lower = {}
        for name in self.names:
            self._by_lower.setdefault(name.lower(), name)

    @property
    def label(self) -> str:
        """What the report and the audit trail call this medium (its path)."""
        return str(self.location)

    def find(self, relpath: str) -> str | None:
        """The name of the file at ``relpath`` whatever its case, None when there is none."""
        return self._by_lower.get(relpath.lower())

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._prefix + name)
        return (self.root / name).read_bytes()

    def size(self, name: str) -> int:
        if self._zip is not None:
            return self._zip.getinfo(self._prefix + name).file_size
        return (self.root / name).stat().st_size

    def path_of(self, name: str) -> Path | None:
        """The file on disk (None inside a .zip)."""
        return None if self._zip is not None else self.root / name

    def dicomdir(self) -> str | None:
        """The DICOMDIR of the file-set: the one given, else the one at the root (any case)."""
        return self.given or self.find(DICOMDIR)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> MediaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(path: Path) -> MediaSource:
    """A folder, a DICOMDIR file (its folder is the root), a .zip, or one DICOM file (its folder, that file only)."""
    if not path.exists():
        raise MediaError(f"{path}: no such file or folder")
    if path.is_dir():
        return MediaSource(path, path, _walk(path))
    if zipfile.is_zipfile(path):
        return _open_zip(path)
    if path.name.lower() == DICOMDIR or _is_dicomdir(path):
        return MediaSource(path, path.parent, _walk(path.parent), given=path.name)
    return MediaSource(path, path.parent, [path.name])


def _is_dicomdir(path: Path) -> bool:
    """A Part 10 file of the Media Storage Directory SOP Class (a DICOMDIR under another name)."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return head[128:132] == b"DICM" and DICOMDIR_CLASS in head


def _walk(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = Path(folder).relative_to(root)
        for name in sorted(files):
            if (Path(folder) / name).is_file():
                found.append((rel / name).as_posix())
    return found


def _open_zip(path: Path) -> MediaSource:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise MediaError(f"{path}: not a readable .zip: {exc}") from None
    names = []
    for info in zf.infolist():
        posix = PurePosixPath(info.filename)
        if info.is_dir() or posix.is_absolute() or ".." in posix.parts:
            continue  # a name outside the archive's tree is never followed
        names.append(info.filename)
    prefix = _dicomdir_folder(names)  # a zip of the CD's folder: file IDs are relative to the DICOMDIR's folder
    inside = sorted(n[len(prefix) :] for n in names if n.startswith(prefix))
    return MediaSource(path, path, inside, zf, prefix)


def _dicomdir_folder(names: list[str]) -> str:
    """``CD/`` when the archive's only DICOMDIR is ``CD/DICOMDIR``; "" otherwise."""
    dirs = [n for n in names if PurePosixPath(n).name.lower() == DICOMDIR]
    if len(dirs) != 1 or "/" not in dirs[0]:
        return ""
    return dirs[0].rsplit("/", 1)[0] + "/"
