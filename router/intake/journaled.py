"""What the write-ahead journal (``router.store.journal``) holds of each small object, and the replay after a
power cut.

A group commit's record holds one entry per object: the object as received (what a replay ingests again), its
sender, its SOP Instance UID and SHA-256, and every file the commit named (the stored object, changed payloads)
with its bytes. A payload shared by several entries is written once.

Replay (``replay``, run by ``Ingestor.open_journal`` before any listener opens) takes the records a checkpoint had
not covered yet, in order, skipping those whose commit failed (an aborted record):

- the index holds the instance with these bytes: its commit survived; each of its files is checked against the
  journal's bytes and written again (durably) where it is missing or differs (a power cut can keep a row whose file
  was never flushed);
- otherwise, if the machine was restarted since the record was written (its boot id differs: a power cut may have
  taken the commit with the page cache), the object is ingested again, through the same path a sender takes (rules
  and stages now in force, durable writes, no journal), which writes its files and rows and queues its jobs;
- otherwise (the same boot: only the process died, the page cache kept every commit that happened) the commit never
  happened and the sender was never answered: nothing is stored (the sender sends it again).

Then a checkpoint flushes everything and empties the journal. After a crash that kept the page cache (SIGKILL) every
entry is found whole: the replay only reads.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from router import storage
from router.intake.envelope import Source
from router.statuses import StoreOutcome
from router.store import files
from router.store.index import find_instance
from router.store.journal import ABORTED, CannotMake, Journal, JournalBusy, Record
from router.store.writelock import sqlite_file

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from router.intake.dicom import Ingestor

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<I")
CHECKPOINT_INTERVAL = 1.0  # seconds between checkpoints while records come (at most this much to replay)


@dataclass(frozen=True)
class Entry:
    raw: bytes  # the object as received
    source: Source
    sop_uid: str
    digest: str  # SHA-256 of raw: the index's sha256 of this version
    files: tuple[tuple[str, bytes], ...]  # relative path under data_dir, bytes
    boot: str = ""  # the kernel's boot id when it was written (read back from the journal)


def boot_id() -> str:
    """This boot of the machine (Linux ``/proc/sys/kernel/random/boot_id``); "" where there is none."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_written_in: str | None = None


def encode(entries: list[Entry]) -> list[bytes]:
    """The parts of one journal record (a JSON head, then each distinct blob once)."""
    blobs: list[bytes] = []
    index: dict[int, int] = {}

    def blob(data: bytes) -> int:
        found = index.get(id(data))
        if found is None:
            found = index[id(data)] = len(blobs)
            blobs.append(data)
        return found

    units = [{"source": asdict(e.source), "sop": e.sop_uid, "digest": e.digest, "raw": blob(e.raw),
              "files": [[rel, blob(data)] for rel, data in e.files]} for e in entries]  # fmt: skip
    global _written_in
    if _written_in is None:
        _written_in = boot_id()  # the boot a running process writes in does not change
    head = {"units": units, "sizes": [len(b) for b in blobs], "boot": _written_in}
    data = json.dumps(head, separators=(",", ":")).encode()
    return [_LENGTH.pack(len(data)), data, *blobs]


def decode(payload: bytes) -> list[Entry]:
    (length,) = _LENGTH.unpack_from(payload)
    head = json.loads(payload[_LENGTH.size : _LENGTH.size + length])
    blobs, at = [], _LENGTH.size + length
    for size in head["sizes"]:
        blobs.append(payload[at : at + size])
        at += size
    boot = head.get("boot", "")
    return [Entry(blobs[u["raw"]], Source(**u["source"]), u["sop"], u["digest"],
                  tuple((rel, blobs[i]) for rel, i in u["files"]), boot) for u in head["units"]]  # fmt: skip


@dataclass
class Replayed:
    """What a replay did (logged, and read by tests)."""

    records: int = 0
    found: int = 0  # objects whose commit survived
    files_rewritten: int = 0
    ingested: int = 0  # objects stored again
    failed: int = 0  # objects a replay could not store again (logged with the reason)
    never_committed: int = 0  # same boot, no row: the process died before the commit (never acknowledged)


def _live(records: list[Record]) -> list[Record]:
    aborted = {struct.unpack("<Q", r.payload)[0] for r in records if r.flags & ABORTED}
    return [r for r in records if not r.flags & ABORTED and r.seq not in aborted]


def _same(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def replay(journal: Journal, ingestor: Ingestor) -> Replayed:
    """Store again what the records after the journal's durable start hold, then checkpoint (see above)."""
    done, boot = Replayed(), boot_id()
    for record in _live(journal.pending()):
        done.records += 1
        for entry in decode(record.payload):
            with ingestor.engine.connect() as conn:
                stored = find_instance(conn, entry.sop_uid)
            if stored is not None and stored.sha256 == entry.digest:
                done.found += 1
                for relpath, data in entry.files:
                    if not _same(ingestor.data_dir / relpath, data):
                        files.commit_file(files.write_temp(ingestor.tmp_dir, data), ingestor.data_dir / relpath)
                        done.files_rewritten += 1
                continue
            if boot and entry.boot == boot:
                done.never_committed += 1
                continue
            result = ingestor.ingest(entry.raw, entry.source)
            if result.outcome in (StoreOutcome.STORED, StoreOutcome.OVERWRITTEN):
                done.ingested += 1
            else:
                done.failed += 1
                log.error("journal replay: %s could not be stored again: %s (%s)", entry.sop_uid,
                          result.outcome.value, result.reason)  # fmt: skip
    journal.checkpoint()
    if done.records:
        log.warning("journal replay after an unclean stop: %d record(s), %d object(s) found stored (%d file(s) "
                    "written again), %d stored again, %d failed, %d never committed", done.records, done.found,
                    done.files_rewritten, done.ingested, done.failed, done.never_committed)  # fmt: skip
    return done


def open_journal(ingestor: Ingestor) -> tuple[Journal, Replayed] | None:
    """The node's journal (``<node dir>/journal``), replayed and checkpointing, or None where this configuration
    does not use one: ``storage.journal: false``, a server database (its commits are PostgreSQL's to flush), an S3
    store (a PUT is durable when it returns), no ``syncfs`` (not Linux), or another process holding it. A journal
    left by an earlier configuration that used one is replayed first, then removed."""
    config = ingestor.config
    database = sqlite_file(config.effective_database_url)
    path = storage.node_dir(config) / "journal"
    sync_paths = [config.data_dir]
    if database is not None and database.parent.stat().st_dev != config.data_dir.stat().st_dev:
        sync_paths.append(database.parent)
    used = config.storage.journal and database is not None and config.storage.s3 is None and files.HAS_SYNCFS
    if not used and not (path.exists() and files.HAS_SYNCFS):  # a journal left by a configuration that used one
        return None
    try:
        journal = Journal(path, sync_paths)
    except (JournalBusy, CannotMake) as exc:
        log.warning("no write-ahead journal: %s (every object is flushed on its own)", exc)
        return None
    try:
        replayed = replay(journal, ingestor)
    except BaseException:
        journal.close()
        raise
    if not used:  # replayed, and no more of it
        journal.close()
        path.unlink()
        log.info("write-ahead journal %s replayed and removed (this configuration does not use one)", path)
        return None
    journal.start(CHECKPOINT_INTERVAL)
    return journal, replayed


def metric_families(journal: Journal | None) -> Iterator[Metric]:
    """The journal's state for ``/metrics`` (docs/operations.md); nothing when this router runs without one."""
    if journal is None:
        return
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily("router_journal_used_bytes", "Bytes of write-ahead journal records not yet made durable "
                            "by a checkpoint (what a power cut would replay)", value=journal.used)  # fmt: skip
    yield GaugeMetricFamily("router_journal_capacity_bytes", "Size of the write-ahead journal's ring",
                            value=journal.capacity)  # fmt: skip
    yield CounterMetricFamily("router_journal_checkpoints", "Checkpoints of the write-ahead journal",
                              value=journal.checkpoints)  # fmt: skip
    yield CounterMetricFamily("router_journal_checkpoint_failures", "Checkpoints that failed (a flush of the data "
                              "folder's file system returned an error)", value=journal.checkpoint_failures)  # fmt: skip
