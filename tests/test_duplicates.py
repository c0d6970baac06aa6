"""The same SOP Instance UID arriving again: identical bytes, or a different object under the duplicates policy
(reject | ignore | overwrite). What the sender is told, what the index and the stored file hold, and what the
destination receives (a DCMTK storescp behind a forward-everything rule)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from peers import RouterProcess, StoreSCP, make_instance, query, send_datasets, wait_for, write_instances

pytestmark = pytest.mark.interop  # DCMTK storescp

SUCCESS, DUPLICATE_SOP_INSTANCE = 0x0000, 0x0111
FORWARD_ALL = {"10-all.yaml": [{"name": "all-to-dest", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]}


@pytest.fixture
def start_router(workdir: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Routers forwarding everything to the storescp on ``dest_port``; all stopped when the test ends."""
    started: list[RouterProcess] = []

    def start(dest_port: int, duplicates: str | None) -> RouterProcess:
        """``duplicates=None``: the router's default policy."""
        router = RouterProcess(
            workdir,
            peers={"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}},
            rules=FORWARD_ALL,
            dicom={"duplicates": duplicates} if duplicates else {},
        )
        started.append(router)
        return router.start()

    try:
        yield start
    finally:
        for router in started:
            router.stop()


# -- observations --------------------------------------------------------------------------------------------
def rows(router: RouterProcess, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return query(router.data_dir / "router.db", sql, *params)


def stored(router: RouterProcess, ds: Dataset) -> tuple[str, str, bytes]:
    """(path, sha256, file bytes) of the one index row for ``ds``'s SOP Instance UID."""
    [(path, digest)] = rows(router, "select path, sha256 from instance where sop_uid = ?", str(ds.SOPInstanceUID))
    return path, digest, (router.data_dir / path).read_bytes()


def job_states(router: RouterProcess) -> list[str]:
    return [state for (state,) in rows(router, "select state from job order by id")]


def wait_all_forwarded(router: RouterProcess, jobs: int) -> None:
    wait_for(lambda: job_states(router) == ["done"] * jobs, 30, what=f"{jobs} forward job(s) done")


def received(dest: StoreSCP, ds: Dataset) -> list[Dataset]:
    """What the destination holds for ``ds``'s SOP Instance UID, oldest first."""
    by_time = sorted(dest.received(), key=lambda p: p.stat().st_mtime_ns)
    found = [pydicom.dcmread(p, stop_before_pixels=True) for p in by_time]
    return [r for r in found if r.SOPInstanceUID == ds.SOPInstanceUID]


def object_files(router: RouterProcess) -> list[str]:
    """The stored object files, as index paths (relative to the data folder)."""
    found = (router.data_dir / "objects").rglob("*")
    return sorted(str(p.relative_to(router.data_dir)) for p in found if p.is_file())


def second_version(ds: Dataset, description: str = "second version") -> Dataset:
    """A different object under the same SOP Instance UID."""
    other = copy.deepcopy(ds)
    other.SeriesDescription = description
    return other


def send(router: RouterProcess, *items: Dataset | Path) -> list[int | None]:
    return send_datasets(router.port, items)


# -- identical bytes -----------------------------------------------------------------------------------------
def test_identical_resend_accepted_stored_and_forwarded_once(
    workdir: Path, dest: StoreSCP, forwarding_router: RouterProcess
) -> None:
    first = make_instance()
    [path] = write_instances(workdir / "send", [first])

    assert send(forwarding_router, path) == [SUCCESS]
    assert send(forwarding_router, path) == [SUCCESS]  # a second association, the same file

    assert len(rows(forwarding_router, "select id from instance")) == 1
    assert len(job_states(forwarding_router)) == 1
    wait_all_forwarded(forwarding_router, 1)
    assert len(received(dest, first)) == 1
    assert len(dest.received()) == 1


# -- different object, same SOP Instance UID -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("duplicates", "answer"),
    [(None, DUPLICATE_SOP_INSTANCE), ("ignore", SUCCESS)],
    ids=["rejected by default", "ignored"],
)
def test_different_object_refused_or_ignored_first_version_kept(
    dest: StoreSCP, start_router: Callable[..., RouterProcess], duplicates: str | None, answer: int
) -> None:
    router = start_router(dest.port, duplicates=duplicates)
    first = make_instance()
    assert send(router, first) == [SUCCESS]
    wait_all_forwarded(router, 1)
    before = stored(router, first)

    assert send(router, second_version(first)) == [answer]

    assert stored(router, first) == before
    assert "SeriesDescription" not in pydicom.dcmread(router.data_dir / before[0])
    assert job_states(router) == ["done"]
    assert [r.get("SeriesDescription") for r in received(dest, first)] == [None]


def test_different_object_overwrites_and_new_version_forwarded(
    dest: StoreSCP, start_router: Callable[..., RouterProcess]
) -> None:
    router = start_router(dest.port, duplicates="overwrite")
    first = make_instance()
    assert send(router, first) == [SUCCESS]
    wait_all_forwarded(router, 1)
    old_path, old_digest, _ = stored(router, first)

    assert send(router, second_version(first)) == [SUCCESS]

    new_path, new_digest, content = stored(router, first)
    assert new_path != old_path and new_digest != old_digest
    assert hashlib.sha256(content).hexdigest() == new_digest
    assert pydicom.dcmread(router.data_dir / new_path).SeriesDescription == "second version"
    assert object_files(router) == [new_path], "the old file must go: no job needs it"

    wait_all_forwarded(router, 2)
    versions = [r.get("SeriesDescription") for r in received(dest, first)]
    assert versions == [None, "second version"], "the destination must end with the new version"


def test_overwrite_while_first_version_queued_old_file_removed_after_delivery(
    workdir: Path, start_router: Callable[..., RouterProcess]
) -> None:
    late = StoreSCP(workdir, "LATE")  # not listening yet: the first version's job waits in the queue
    try:
        router = start_router(late.port, duplicates="overwrite")
        first = make_instance()
        assert send(router, first) == [SUCCESS]
        assert send(router, second_version(first)) == [SUCCESS]
        new_path, _, _ = stored(router, first)
        assert len(job_states(router)) == 2

        late.start()
        wait_all_forwarded(router, 2)
        versions = [r.get("SeriesDescription") for r in received(late, first)]
        assert versions[-1] == "second version", f"the destination ends with {versions}"
        with contextlib.suppress(AssertionError):  # bounded wait, then assert with the evidence
            wait_for(lambda: object_files(router) == [new_path], 5)
        assert object_files(router) == [new_path], "the old file must go once delivered"
    finally:
        late.stop()
