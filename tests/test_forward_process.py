"""The forward workers' own process (router.forward.process): restarted when it dies, gone when the router dies,
woken over its pipe; the SQLite write lock it shares with the serving process; the same workers as threads."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from router.forward.process import ALL_PEERS, END, ForwardProcess, _wakes
from router.store.writelock import WriteLock, shared_between_processes, sqlite_file, write_lock_for

from forwarding import generated, job_states, received_uids, router_to_dest, send_ok, wait_while_up
from peers import RouterProcess, StoreSCP, running, wait_for


def children(pid: int) -> list[int]:
    """The children of ``pid``'s threads; a thread or process that ends while they are read is passed over."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def forward_process_of(pid: int) -> int | None:
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        if b"router.forward.process" in cmdline:
            return child
    return None


def started_forward_process(router: RouterProcess) -> int:
    """The pid of the running router's forward process."""
    assert router.proc is not None
    pid = router.proc.pid
    wait_for(lambda: forward_process_of(pid) is not None, 15, what="the forward process")
    child = forward_process_of(pid)
    assert child is not None
    return child


def gone(pid: int) -> bool:
    """Ended (a zombie waiting for a parent to reap it counts: it runs nothing and holds no lock)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.mark.interop  # DCMTK storescp
def test_killed_forward_process_is_restarted_and_nothing_is_lost(workdir: Path) -> None:
    files = generated(workdir / "in", 90)
    dest = StoreSCP(workdir, "DEST")
    router = router_to_dest(workdir, dest.port)
    with running(dest.start(), router.start()):
        first = started_forward_process(router)
        sent = send_ok(router.port, files[:30])
        wait_while_up(router, lambda: set(sent) <= set(received_uids(dest)), 60, "the first 30 at DEST")

        os.kill(first, signal.SIGKILL)
        sent += send_ok(router.port, files[30:])  # ingest goes on without it
        wait_while_up(router, lambda: set(sent) <= set(received_uids(dest)), 60, "all 90 at DEST")
        wait_while_up(router, lambda: job_states(router) == Counter({"done": 90}), 30, "every job done")

        second = forward_process_of(router.proc.pid)
        assert second is not None and second != first
        assert "the forward process exited (signal SIGKILL): starting another" in router.output()
        arrived = received_uids(dest)
        assert sorted(set(arrived)) == sorted(sent)
        assert len(arrived) - len(set(arrived)) <= 64, "at most the batch in flight at the kill is sent again"


@pytest.mark.interop  # DCMTK storescp
def test_forward_process_ends_with_a_killed_router(workdir: Path) -> None:
    dest = StoreSCP(workdir, "DEST")
    router = router_to_dest(workdir, dest.port)
    with running(dest.start(), router.start()):
        child = started_forward_process(router)
        assert router.proc is not None
        os.kill(router.proc.pid, signal.SIGKILL)  # the router only, not its process group
        wait_for(lambda: gone(child), 10, what="the forward process to end with the router")


@pytest.mark.interop  # DCMTK storescp
def test_stopped_router_stops_its_forward_process(workdir: Path) -> None:
    dest = StoreSCP(workdir, "DEST")
    router = router_to_dest(workdir, dest.port)
    with running(dest.start(), router.start()):
        child = started_forward_process(router)
        assert router.proc is not None
        os.kill(router.proc.pid, signal.SIGTERM)  # the router only: it closes the pipe, the child follows
        router.proc.wait(30)
        assert gone(child)
        assert "router stopped" in router.output()


@pytest.mark.interop  # DCMTK storescp
def test_thread_mode_forwards_without_a_process(workdir: Path) -> None:
    files = generated(workdir / "in", 20)
    dest = StoreSCP(workdir, "DEST")
    router = router_to_dest(workdir, dest.port, forward={"process": False})
    with running(dest.start(), router.start()):
        assert router.proc is not None
        sent = send_ok(router.port, files)
        wait_while_up(router, lambda: sorted(received_uids(dest)) == sorted(sent), 60, "all 20 at DEST, once")
        assert forward_process_of(router.proc.pid) is None


# -- pure logic ------------------------------------------------------------------------------------------------
def test_wakes_name_the_peers_of_each_read_and_all_after_an_overflow() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"PACS" + END + b"A B" + END + b"PA")  # the last message is split over two reads
    reads = _wakes(read_end)
    assert next(reads) == {"PACS", "A", "B"}
    os.write(write_end, b"CS" + END)
    assert next(reads) == {"PACS"}
    os.write(write_end, b"A" + END + ALL_PEERS + END)
    assert next(reads) is None
    os.close(write_end)
    assert list(reads) == []
    os.close(read_end)


def test_wake_never_blocks_and_asks_for_every_peer_after_a_full_pipe() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    os.set_blocking(read_end, False)
    parent = ForwardProcess(None)  # type: ignore[arg-type]  # not started: the pipe is this test's
    parent._pipe = write_end
    start = time.monotonic()
    for _ in range(100_000):  # far more than a pipe holds
        parent.wake({"PACS"})
    assert time.monotonic() - start < 10 and parent._overflowed
    with contextlib.suppress(BlockingIOError):
        while os.read(read_end, 1 << 20):  # the child catches up
            pass
    parent.wake({"PACS"})
    assert os.read(read_end, 100) == ALL_PEERS + END
    parent.wake({"PACS", "CT"})
    assert os.read(read_end, 100) == b"CT PACS" + END
    parent.wake({f"PEER{i:060d}" for i in range(100)})  # longer than one atomic pipe write
    assert os.read(read_end, 100) == ALL_PEERS + END
    os.close(read_end)
    os.close(write_end)


HOLD = """
import sys, time
from pathlib import Path
from router.store.writelock import WriteLock
lock = WriteLock(Path(sys.argv[1]))
with lock:
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))  # the scenario: the lock stays held this long
"""


def test_write_lock_excludes_another_process(tmp_path: Path) -> None:
    path = tmp_path / "router.db-writer.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), "1.0"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        lock = WriteLock(path)
        start = time.monotonic()
        with lock:
            waited = time.monotonic() - start
            assert holder.poll() is not None or waited >= 0.5, "got the lock while the other process held it"
        assert waited >= 0.5
        lock.close()
    finally:
        holder.wait(10)


def test_write_lock_file_sits_beside_an_sqlite_database_only(tmp_path: Path) -> None:
    assert sqlite_file(f"sqlite:///{tmp_path}/var/router.db") == tmp_path / "var" / "router.db"
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("sqlite://") is None
    assert sqlite_file("postgresql+psycopg://u:p@localhost/router") is None
    assert shared_between_processes(f"sqlite:///{tmp_path}/router.db")
    assert shared_between_processes("postgresql+psycopg://u:p@localhost/router")
    assert not shared_between_processes("sqlite:///:memory:")
    lock = write_lock_for(f"sqlite:///{tmp_path}/router.db")
    with lock:
        assert (tmp_path / "router.db-writer.lock").exists()
    lock.close()
