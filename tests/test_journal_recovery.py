"""A power cut with the write-ahead journal (router.store.journal, router.intake.journaled): no acknowledged object
is lost and no index row is left without its file.

The disk after a power cut is simulated, worst case first: it holds exactly what the last checkpoint flushed (a copy
of the data folder and the database taken right after a checkpoint, while no commit runs) plus the journal, whose
records were written synchronously; everything acknowledged since then lived in the page cache only. A second case
keeps the database as it was at the end (a later flushing commit can make rows durable) but loses the files written
since the checkpoint. Each time a router opened on that disk must replay the journal before it receives anything,
and then hold every acknowledged object, its file byte for byte and its job."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from router.app import Router
from router.config import parse_config
from router.intake import journaled
from router.intake.envelope import Source
from router.statuses import StoreOutcome

from peers import make_instance, query

SOURCE = Source(protocol="dimse", calling_ae="MODALITY", called_ae="ROUTER", address="127.0.0.1")
FORWARD_RULE = "- name: all-to-dest\n  when: {kind: dicom}\n  then:\n    - forward: DEST\n"
CONFIG = {"data_dir": "var", "rules_dir": "rules",
          "peers": {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": 9}}}  # fmt: skip


def p10(study: str = "1.2.826.0.1.3680043.2.1125.88.1", series: str = "1.2.826.0.1.3680043.2.1125.88.2") -> bytes:
    buf = BytesIO()
    dcmwrite(buf, make_instance(study, series), enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def make_router(monkeypatch: pytest.MonkeyPatch, unstarted_routers: list[Router]) -> Callable[..., Router]:
    monkeypatch.setattr(journaled, "CHECKPOINT_INTERVAL", 3600.0)  # checkpoints only when a test takes one
    monkeypatch.setattr(journaled, "_BOOT_ID", journaled._BOOT_ID)  # set back after a simulated restart

    def make(root: Path, journal: bool = True) -> Router:
        (root / "rules").mkdir(parents=True, exist_ok=True)
        (root / "rules" / "10-forward.yaml").write_text(FORWARD_RULE)
        router = Router(parse_config({**CONFIG, "storage": {"journal": journal}}, root))
        router.rules.reload_if_changed()
        unstarted_routers.append(router)
        return router

    return make


def copy_database(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    source, target = sqlite3.connect(src), sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def durable_copy(router: Router, dest: Path) -> None:
    """A checkpoint, and a copy of what it made durable: the state a power cut right after it would leave."""
    var = router.config.data_dir
    with router.write_lock:  # no batch between its journal record and its commit
        assert router.ingestor.journal is not None
        router.ingestor.journal.checkpoint()
        for folder in ("objects", "derived"):
            shutil.copytree(var / folder, dest / "var" / folder, dirs_exist_ok=True)
        copy_database(var / "router.db", dest / "var" / "router.db")


def checkpointed(tmp_path: Path, make_router: Callable[..., Router]) -> tuple[Router, Path]:
    """A router with its journal open, and the copy of its disk right after a checkpoint (``tmp_path / "disk"``)."""
    router = make_router(tmp_path / "live")
    assert router.ingestor.open_journal() is not None
    durable_copy(router, tmp_path / "disk")
    return router, tmp_path / "disk"


def restart_machine(disk: Path) -> None:
    """The kernel's boot id from now on is another one (``make_router`` sets the real one back)."""
    journaled._BOOT_ID = disk / "boot_id"  # type: ignore[misc]
    journaled._BOOT_ID.write_text("after-the-power-cut\n")


def disk_after_power_cut(router: Router, durable: Path, keep_database: bool) -> Path:
    """``durable`` (a ``durable_copy``) with the journal as the synchronous writes left it; with ``keep_database``,
    the database as it is now instead of the checkpoint's. The machine restarts (a new boot id)."""
    restart_machine(durable)
    shutil.copyfile(router.config.data_dir / "journal", durable / "var" / "journal")
    if keep_database:
        (durable / "var" / "router.db").unlink()
        copy_database(router.config.data_dir / "router.db", durable / "var" / "router.db")
    return durable


def every_row_has_its_file(root: Path) -> dict[str, str]:
    """SOP Instance UID -> path of every indexed instance, each checked against its file's SHA-256."""
    db = root / "var" / "router.db"
    rows = query(db, "SELECT sop_uid, path, sha256 FROM instance")
    for sop_uid, path, digest in rows:
        data = (root / "var" / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{sop_uid}: file differs from its row"
    return {sop_uid: path for sop_uid, path, _digest in rows}


def ingest_from_threads(router: Router, raws: list[bytes], threads: int, at_half: Callable[[], None]) -> set[str]:
    """``raws`` stored by ``threads`` senders at once; ``at_half`` called once half of them are acknowledged.
    The SOP Instance UIDs acknowledged."""
    acked: set[str] = set()
    lock, half = threading.Lock(), threading.Event()
    errors: list[BaseException] = []

    def send(part: list[bytes]) -> None:
        try:
            for raw in part:
                result = router.ingestor.ingest(raw, SOURCE)
                assert result.outcome == StoreOutcome.STORED, result
                with lock:
                    acked.add(result.sop_instance_uid)
                    if len(acked) >= len(raws) // 2:
                        half.set()
        except BaseException as exc:  # the test fails below with it
            errors.append(exc)
            half.set()

    senders = [threading.Thread(target=send, args=(raws[i::threads],)) for i in range(threads)]
    for sender in senders:
        sender.start()
    assert half.wait(60)
    at_half()
    for sender in senders:
        sender.join(60)
    assert not errors, errors
    return acked


@pytest.mark.parametrize("keep_database", [False, True], ids=["rows-and-files-lost", "files-lost"])
def test_a_power_cut_during_sustained_load_loses_no_acknowledged_object(
    tmp_path: Path, make_router: Callable[..., Router], keep_database: bool
) -> None:
    router = make_router(tmp_path / "live")
    assert router.ingestor.open_journal() is not None
    raws = [p10(series=f"1.2.826.0.1.3680043.2.1125.88.{2 + n % 3}") for n in range(160)]
    durable = tmp_path / "disk"
    acked = ingest_from_threads(router, raws, 4, lambda: durable_copy(router, durable))
    assert len(acked) == 160
    before = set(every_row_has_its_file(durable))  # what the checkpoint had made durable
    assert 0 < len(before) < 160

    disk = disk_after_power_cut(router, durable, keep_database)
    survived = set(query(disk / "var" / "router.db", "SELECT sop_uid FROM instance"))
    again = make_router(disk)
    replayed = again.ingestor.open_journal()
    assert replayed is not None
    after = every_row_has_its_file(disk)
    assert set(after) == acked
    lost = len(acked) - len(before)
    if keep_database:
        assert len(survived) == 160 and (replayed.found, replayed.files_rewritten, replayed.ingested) == (lost, lost, 0)
    else:
        assert (replayed.found, replayed.ingested, replayed.failed) == (0, lost, 0)
    jobs = query(disk / "var" / "router.db", "SELECT path FROM job WHERE peer = 'DEST'")
    assert sorted(p for (p,) in jobs) == sorted(after.values())  # one forward job each, none twice
    assert again.ingestor.journal is not None and again.ingestor.journal.pending() == []


def test_a_crash_that_keeps_the_page_cache_replays_nothing_and_rewrites_nothing(
    tmp_path: Path, make_router: Callable[..., Router]
) -> None:
    router = make_router(tmp_path / "live")
    router.ingestor.open_journal()
    raws = [p10() for _ in range(20)]
    assert all(router.ingestor.ingest(raw, SOURCE).outcome == StoreOutcome.STORED for raw in raws)
    disk = tmp_path / "disk"  # the whole folder as it is (SIGKILL: the page cache is the disk's future)
    shutil.copytree(router.config.data_dir / "objects", disk / "var" / "objects")
    copy_database(router.config.data_dir / "router.db", disk / "var" / "router.db")
    shutil.copyfile(router.config.data_dir / "journal", disk / "var" / "journal")
    replayed = make_router(disk).ingestor.open_journal()
    assert replayed is not None and replayed.records >= 1
    assert (replayed.found, replayed.files_rewritten, replayed.ingested) == (20, 0, 0)
    assert len(every_row_has_its_file(disk)) == 20


def test_an_object_whose_commit_failed_is_not_stored_by_a_replay(
    tmp_path: Path, make_router: Callable[..., Router]
) -> None:
    router, disk = checkpointed(tmp_path, make_router)
    first, refused = p10(), p10()
    assert router.ingestor.ingest(first, SOURCE).outcome == StoreOutcome.STORED

    def fail(_conn: Any) -> None:
        raise OperationalError("COMMIT", {}, sqlite3.OperationalError("disk I/O error"))

    event.listen(router.engine, "commit", fail)
    try:
        result = router.ingestor.ingest(refused, SOURCE)
    finally:
        event.remove(router.engine, "commit", fail)
    assert result.outcome == StoreOutcome.OUT_OF_RESOURCES  # its record is in the journal, then marked aborted
    replayed = make_router(disk_after_power_cut(router, disk, keep_database=False)).ingestor.open_journal()
    assert replayed is not None and replayed.ingested == 1
    assert list(every_row_has_its_file(disk)) == [str(dcmread(BytesIO(first)).SOPInstanceUID)]


def test_large_objects_and_a_router_without_the_journal_keep_their_own_flushes(
    tmp_path: Path, make_router: Callable[..., Router], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = make_router(tmp_path / "live")
    router.ingestor.open_journal()
    journal = router.ingestor.journal
    assert journal is not None
    monkeypatch.setattr("router.intake.dicom.JOURNAL_MAX", 100)
    assert router.ingestor.ingest(p10(), SOURCE).outcome == StoreOutcome.STORED
    assert journal.used == 0  # not journaled: written and committed with its own flushes
    monkeypatch.undo()
    assert router.ingestor.ingest(p10(), SOURCE).outcome == StoreOutcome.STORED
    assert journal.used > 0
    off = make_router(tmp_path / "off", journal=False)
    assert off.ingestor.open_journal() is None and not (off.config.data_dir / "journal").exists()


@pytest.mark.parametrize("restarted", [False, True], ids=["process-killed", "machine-restarted"])
def test_a_record_whose_commit_never_came_is_stored_only_after_a_restart_of_the_machine(
    tmp_path: Path, make_router: Callable[..., Router], restarted: bool
) -> None:
    """The process died between the journal write and the commit (never acknowledged). With the same boot the page
    cache kept every commit that happened, so a missing row means none happened: nothing is stored. After a
    restart of the machine a missing row may be a commit the power cut took: the object is stored again."""
    router = make_router(tmp_path / "live")
    journal = router.ingestor.open_journal() and router.ingestor.journal
    assert journal
    raw = p10()
    sop_uid = str(dcmread(BytesIO(raw)).SOPInstanceUID)
    journal.append(journaled.encode([journaled.Entry(raw, SOURCE, sop_uid, hashlib.sha256(raw).hexdigest(), ())]))
    disk = tmp_path / "disk"
    durable_copy(router, disk)  # the checkpoint covers only finished records: this one stays
    shutil.copyfile(router.config.data_dir / "journal", disk / "var" / "journal")
    if restarted:
        restart_machine(disk)
    replayed = make_router(disk).ingestor.open_journal()
    assert replayed is not None
    assert (replayed.ingested, replayed.never_committed) == ((1, 0) if restarted else (0, 1))
    assert list(every_row_has_its_file(disk)) == ([sop_uid] if restarted else [])


def test_a_journal_left_when_it_is_turned_off_is_replayed_then_removed(
    tmp_path: Path, make_router: Callable[..., Router]
) -> None:
    router, disk = checkpointed(tmp_path, make_router)
    raw = p10()
    assert router.ingestor.ingest(raw, SOURCE).outcome == StoreOutcome.STORED
    disk_after_power_cut(router, disk, keep_database=False)
    off = make_router(disk, journal=False)
    assert off.ingestor.open_journal() is None
    assert list(every_row_has_its_file(disk)) == [str(dcmread(BytesIO(raw)).SOPInstanceUID)]
    assert not (disk / "var" / "journal").exists()
