"""The write-ahead journal's file (router.store.journal): records found again after a reopen, in order, up to the
first torn one; the durable start moved by checkpoints; the ring reused across laps; one process at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router.store import files
from router.store.journal import ALIGN, HEADER_SIZE, CannotMake, Journal, JournalBusy, TooLarge

CAPACITY = 16 * ALIGN


def journal(path: Path, capacity: int = CAPACITY) -> Journal:
    return Journal(path / "journal", [path], capacity=capacity)


def payloads(j: Journal) -> list[bytes]:
    return [r.payload for r in j.pending()]


def close_without_checkpoint(j: Journal) -> None:
    """What a crash leaves: the file as the synchronous writes made it, no last checkpoint."""
    os.close(j._fd)


def test_records_appended_are_found_again_in_order_until_a_checkpoint(tmp_path: Path) -> None:
    j = journal(tmp_path)
    assert j.pending() == []
    tickets = [j.append([b"one", b"-", b"part"]), j.append([b"two"]), j.append([bytes(5000)])]
    assert [t.seq for t in tickets] == [1, 2, 3]
    close_without_checkpoint(j)
    again = journal(tmp_path)
    assert [(r.seq, r.payload) for r in again.pending()] == [(1, b"one-part"), (2, b"two"), (3, bytes(5000))]
    again.finished(tickets[-1])
    assert again.checkpoint() and again.pending() == [] and again.used == 0
    close_without_checkpoint(again)
    assert payloads(journal(tmp_path)) == []


def test_a_checkpoint_covers_finished_records_only(tmp_path: Path) -> None:
    j = journal(tmp_path)
    first = j.append([b"a"])
    j.append([b"b"])
    j.finished(first)
    assert j.checkpoint()
    assert not j.checkpoint()  # nothing finished since
    close_without_checkpoint(j)
    assert payloads(journal(tmp_path)) == [b"b"]


def test_a_torn_record_ends_what_is_found(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.append([b"whole"])
    j.append([b"torn" * 100])
    j.append([b"after"])
    close_without_checkpoint(j)
    with (tmp_path / "journal").open("r+b") as f:  # the second record's payload cut short by a power cut
        f.seek(HEADER_SIZE + ALIGN + 64)
        f.write(b"\0" * 16)
    assert payloads(journal(tmp_path)) == [b"whole"]


def test_the_ring_is_reused_across_laps_and_a_reopen_follows_it(tmp_path: Path) -> None:
    j = journal(tmp_path)
    seen: list[bytes] = []
    for n in range(40):  # 40 records of 2 blocks each in a ring of 16 blocks: five laps
        data = f"record {n}".encode() * 500
        ticket = j.append([data])
        seen.append(data)
        if n % 5 == 4 and n != 39:
            j.finished(ticket)
            j.checkpoint()
            seen.clear()
    close_without_checkpoint(j)
    again = journal(tmp_path)
    assert payloads(again) == seen and [r.seq for r in again.pending()][-1] == 40
    assert again.append([b"next"]).seq == 41


def test_a_full_ring_checkpoints_before_appending(tmp_path: Path) -> None:
    j = journal(tmp_path)
    for _ in range(30):
        j.finished(j.append([bytes(3 * ALIGN)]))  # 4 blocks each: the ring holds 4
    assert j.checkpoints >= 6
    assert (tmp_path / "journal").stat().st_size == HEADER_SIZE + CAPACITY


def test_records_not_finished_are_never_overwritten(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.append([bytes(6 * ALIGN)])
    with pytest.raises(TooLarge):
        j.append([bytes(10 * ALIGN)])  # no room before the unfinished record
    with pytest.raises(TooLarge):
        j.append([bytes(CAPACITY)])


def test_one_process_at_a_time(tmp_path: Path) -> None:
    j = journal(tmp_path)
    with pytest.raises(JournalBusy):
        journal(tmp_path)
    j.close()
    journal(tmp_path).close()


def test_a_journal_of_another_size_or_a_damaged_header_is_refused(tmp_path: Path) -> None:
    journal(tmp_path).close()
    with pytest.raises(OSError, match="expected"):
        journal(tmp_path, capacity=2 * CAPACITY)
    with (tmp_path / "journal").open("r+b") as f:
        f.write(b"XXXX")
    with pytest.raises(OSError, match="not a journal"):
        journal(tmp_path)


def test_a_new_journal_is_private_and_preallocated(tmp_path: Path) -> None:
    journal(tmp_path).close()
    info = (tmp_path / "journal").stat()
    assert info.st_mode & 0o777 == files.FILE_MODE and info.st_size == HEADER_SIZE + CAPACITY
    assert not (tmp_path / "journal.new").exists()


def test_a_journal_that_does_not_fit_is_not_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if len(data) > HEADER_SIZE:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(CannotMake, match="No space"):
        journal(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
