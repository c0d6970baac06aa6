"""Shared fixtures. Peers live in peers.py; every server a test starts is stopped by the test's fixture.

Tests that run a program outside Python (DCMTK, Orthanc, PostgreSQL) are marked ``interop``; tools.py fails an
unmarked test that runs one, and a marked one on a machine without it (naming the Debian package)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from router import _pynetdicom
from router.app import Router

import tools
from peers import RouterProcess, StoreSCP


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """tools.py checks the mark of the test that is running (its fixtures' setup and teardown included)."""
    with tools.running(item):
        return (yield)


@pytest.fixture(autouse=True, scope="session")
def pynetdicom_as_the_router_runs_it() -> None:
    """The in-process pynetdicom peers (peers.py, workflow_peers.py) run with the router's pynetdicom patches, as they
    did when importing router.scu.association applied them (now router._pynetdicom.install(), docs/pynetdicom.md);
    without them a peer's send_c_store can lose its response to pynetdicom's reactor race (a 30 s DIMSE timeout)."""
    _pynetdicom.install()


@pytest.fixture
def unstarted_routers() -> Iterator[list[Router]]:
    """Routers a test builds in-process and never starts (nothing listens): each one appended is closed at the end."""
    made: list[Router] = []
    yield made
    for router in made:
        router.ingestor.close()
        router.engine.dispose()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def dest(workdir: Path) -> Iterator[StoreSCP]:
    """A DCMTK storescp (tests that use it are interop)."""
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
