"""STOW-RS parts in one group commit (issue 21): the parts of a request share one SQLite commit and one fsync of
their folder, are indexed in the order sent, and each keeps its own outcome (a refused or duplicate part fails
alone; a failed commit fails every part it held). The HTTP application runs in process (Starlette's TestClient)
over a router's ingest, so its commits and fsyncs can be counted."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import event
from starlette.testclient import TestClient

from router.app import Router
from router.config import parse_config
from router.listeners.http.app import make_app
from router.listeners.http.multipart import build
from router.store import files

from peers import make_instance, query
from unsynced import UnsyncedNames

BOUNDARY = "batch-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
FAILED, REFERENCED, REASON = "00081198", "00081199", "00081197"


@pytest.fixture
def router(tmp_path: Path, unstarted_routers: list[Router]) -> Router:
    (tmp_path / "rules").mkdir()
    unstarted_routers.append(Router(parse_config({"data_dir": "var", "rules_dir": "rules"}, tmp_path)))
    return unstarted_routers[-1]


@pytest.fixture
def client(router: Router) -> Iterator[TestClient]:
    app = make_app(router.config, router.ingestor, router.engine, router.pm)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def commits(router: Router) -> Iterator[list[int]]:
    """One entry per SQLite commit of the router's engine."""
    seen: list[int] = []

    def count(_conn: Any) -> None:
        seen.append(1)

    event.listen(router.engine, "commit", count)
    try:
        yield seen
    finally:
        event.remove(router.engine, "commit", count)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    synced: list[Path] = []
    real = files.fsync_dir

    def fsync_dir(path: Path) -> None:
        synced.append(Path(path))
        real(path)

    monkeypatch.setattr(files, "fsync_dir", fsync_dir)
    return synced


def p10(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stow(client: TestClient, *payloads: bytes) -> Any:
    body = build([("application/dicom", p) for p in payloads], BOUNDARY)
    return client.post("/dicomweb/studies", content=body, headers={"Content-Type": MULTIPART})


def uids(answer: dict[str, Any], key: str) -> list[str]:
    return [item["00081155"]["Value"][0] for item in answer.get(key, {}).get("Value", [])]


def indexed(router: Router) -> list[str]:
    return [row[0] for row in query(router.config.data_dir / "router.db", "SELECT sop_uid FROM instance ORDER BY id")]


def test_a_request_of_small_parts_makes_one_commit_and_one_folder_fsync_and_keeps_their_order(
    router: Router, client: TestClient, commits: list[int], fsyncs: list[Path]
) -> None:
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    sent = [make_instance(study, series) for _ in range(12)]
    stow(client, p10(make_instance(study, series)))  # the folders exist: the request below makes none
    commits.clear(), fsyncs.clear()
    response = stow(client, *[p10(ds) for ds in sent])
    assert response.status_code == 200, response.text
    assert len(commits) == 1
    folder = router.config.data_dir / "objects" / study / series
    assert fsyncs.count(folder) == 1, fsyncs
    order = [str(ds.SOPInstanceUID) for ds in sent]
    assert uids(response.json(), REFERENCED) == order
    assert indexed(router)[1:] == order
    for ds in sent:
        assert (folder / f"{ds.SOPInstanceUID}.dcm").read_bytes() == p10(ds)


def test_a_bad_part_and_a_duplicate_among_good_ones_fail_alone(router: Router, client: TestClient) -> None:
    study = pydicom.uid.generate_uid()
    good = [make_instance(study) for _ in range(4)]
    nameless = make_instance(study)
    del nameless.SeriesInstanceUID  # refused before its commit (quarantined)
    payloads = [p10(good[0]), p10(good[1]), p10(nameless), p10(good[2]), p10(good[1]), p10(good[3])]
    response = stow(client, *payloads)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert uids(answer, REFERENCED) == [str(ds.SOPInstanceUID) for ds in [good[0], good[1], good[2], good[1], good[3]]]
    failed = answer[FAILED]["Value"]
    assert [(i["00081155"]["Value"][0], i[REASON]["Value"][0]) for i in failed] == [
        (str(nameless.SOPInstanceUID), 0xA900)
    ]
    # the repeated part's row fails on the unique UID in its savepoint; decided again, it is a duplicate
    assert indexed(router) == [str(ds.SOPInstanceUID) for ds in good]
    group = router.ingestor.group
    assert (group.stats.commits, group.stats.largest) == (2, 5)  # the five parts' batch, the repeated one's look


def test_a_failed_commit_fails_every_part_it_held_and_leaves_none_of_them(
    router: Router, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    stow(client, p10(make_instance(study, series)))
    before = indexed(router)
    real = files.fsync_dir

    def fsync_dir(path: Path) -> None:
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(files, "fsync_dir", fsync_dir)
    sent = [make_instance(study, series) for _ in range(3)]
    response = stow(client, *[p10(ds) for ds in sent])
    monkeypatch.setattr(files, "fsync_dir", real)
    assert response.status_code == 409, response.text
    failed = response.json()[FAILED]["Value"]
    assert [(i["00081155"]["Value"][0], i[REASON]["Value"][0]) for i in failed] == [
        (str(ds.SOPInstanceUID), 0xA700) for ds in sent
    ]
    assert indexed(router) == before
    folder = router.config.data_dir / "objects" / study / series
    assert sorted(p.name for p in folder.iterdir()) == [f"{before[0]}.dcm"]
    assert not list((router.config.data_dir / "tmp").iterdir())
    again = stow(client, *[p10(ds) for ds in sent])  # the sender tries again: stored
    assert again.status_code == 200, again.text


def test_more_parts_than_a_batch_holds_commit_in_batches_in_order(
    router: Router, client: TestClient, commits: list[int]
) -> None:
    router.ingestor.group.max_batch = 4
    study = pydicom.uid.generate_uid()
    sent = [make_instance(study) for _ in range(10)]
    commits.clear()
    response = stow(client, *[p10(ds) for ds in sent])
    assert response.status_code == 200, response.text
    assert len(commits) == 3
    assert indexed(router) == [str(ds.SOPInstanceUID) for ds in sent]


def test_no_row_of_a_request_is_committed_before_the_names_of_its_files_are_durable(
    router: Router, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost page cache at the moment of the request's commit would keep every row with its file: each rename and
    each new folder is fsynced before it (a test double of the file layer records what is not yet)."""
    at_commit: list[int] = []
    objects = router.config.data_dir / "objects"

    def check(_conn: Any) -> None:
        at_commit.append(unsynced.under(objects))

    unsynced = UnsyncedNames(monkeypatch)
    event.listen(router.engine, "commit", check)
    try:
        study = pydicom.uid.generate_uid()
        sent = [make_instance(study, series) for series in ("1.2.3.1", "1.2.3.2") for _ in range(3)]
        response = stow(client, *[p10(ds) for ds in sent])
    finally:
        event.remove(router.engine, "commit", check)
    assert response.status_code == 200, response.text
    assert at_commit == [0]  # one commit, nothing of the store unsynced at it
    assert indexed(router) == [str(ds.SOPInstanceUID) for ds in sent]
