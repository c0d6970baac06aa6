"""A test double of the file layer for durability tests: the folders holding a rename or a new entry that has not
been fsynced yet, which a lost page cache (a power cut) would drop (tests/test_group_commit.py,
tests/test_stow_batch.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from router.store import files


class UnsyncedNames:
    """Installs itself on ``os.replace``, ``os.mkdir`` and ``files.fsync_dir`` through ``monkeypatch``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folders: set[Path] = set()  # folders holding a rename or a new entry not yet fsynced
        real_replace, real_mkdir, real_fsync = os.replace, os.mkdir, files.fsync_dir

        def replace(src: Any, dst: Any) -> None:
            real_replace(src, dst)
            self.folders.add(Path(dst).parent)

        def mkdir(path: Any, mode: int = 0o777) -> None:
            real_mkdir(path, mode)
            self.folders.add(Path(path).parent)

        def fsync_dir(path: Path) -> None:
            real_fsync(path)
            self.folders.discard(Path(path))

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(files, "fsync_dir", fsync_dir)

    def under(self, top: Path) -> int:
        """How many of the unsynced folders are ``top`` or below it."""
        return len({p for p in self.folders if top in (p, *p.parents)})
