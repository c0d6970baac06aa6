"""Durable file writes (pure file-system logic, no network)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from router.store import files


def test_commit_file_recreates_a_folder_removed_behind_its_back(tmp_path: Path) -> None:
    final = tmp_path / "objects" / "study" / "series" / "a.dcm"
    files.commit_file(files.write_temp(tmp_path / "tmp", b"one"), final)
    shutil.rmtree(tmp_path / "objects")  # the folder cache still believes in it
    files.commit_file(files.write_temp(tmp_path / "tmp", b"two"), final)
    assert final.read_bytes() == b"two"


def test_commit_file_with_a_missing_temp_file_raises(tmp_path: Path) -> None:
    final = tmp_path / "objects" / "a.dcm"
    files.commit_file(files.write_temp(tmp_path / "tmp", b"one"), final)  # the folder is now known
    with pytest.raises(FileNotFoundError):
        files.commit_file(tmp_path / "tmp" / "gone.part", tmp_path / "objects" / "b.dcm")
