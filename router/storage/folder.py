"""The folder store: ``data_dir`` itself, local or shared by several nodes (NFS: see docs/storage.md).

The layout and the durability are those the router always had: ``objects/<study>/<series>/<sop>.dcm`` and the other
relative paths under ``data_dir``, a temp file written with O_DSYNC, renamed into place, the folder fsynced."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from router.storage.base import Placer
from router.store import files


class FolderStorage:
    kind = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root

    def commit(self, tmp: Path, relpath: str) -> None:
        files.commit_file(tmp, self.root / relpath)

    def commit_in(self, batch: Placer, tmp: Path, relpath: str, lazy: bool = False) -> None:
        batch.place(tmp, self.root / relpath, lazy)  # its folder fsynced once for the batch, before the commit

    def local_path(self, relpath: str) -> Path:
        return self.root / relpath

    def open(self, relpath: str) -> BinaryIO:
        return (self.root / relpath).open("rb")

    def read_bytes(self, relpath: str) -> bytes:
        return (self.root / relpath).read_bytes()

    def exists(self, relpath: str) -> bool:
        return (self.root / relpath).exists()

    def size(self, relpath: str) -> int:
        return (self.root / relpath).stat().st_size

    def delete(self, relpath: str) -> None:
        files.remove_quietly(self.root / relpath)

    def check(self) -> None:
        """The folder is checked by writing a probe beside the temp files (router.listeners.http.health)."""
