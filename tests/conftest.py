"""Shared fixtures. Peers live in peers.py; every server a test starts is stopped by the test's fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import RouterProcess, StoreSCP, dcmtk_missing


def pytest_configure(config: pytest.Config) -> None:
    missing = dcmtk_missing()
    if missing:
        raise pytest.UsageError(f"DCMTK tools missing ({', '.join(missing)}): install the Debian package dcmtk")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def dest(workdir: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(workdir, "DEST").start()
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture
def forwarding_router(workdir: Path, dest: StoreSCP) -> Iterator[RouterProcess]:
    """A router that forwards every DICOM object to the DCMTK storescp ``dest``."""
    router = RouterProcess(
        workdir,
        peers={"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}},
        rules={"10-all.yaml": [{"name": "all-to-dest", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]},
    ).start()
    try:
        yield router
    finally:
        router.stop()
