"""The forward workers in a process of their own.

Sending and receiving are both Python work, and in one process they take turns on the interpreter lock: a CT
study that streams in while it is forwarded was received at the pace of both together. The serving process
therefore starts ``python -m router.forward.process``, which runs the ``Forwarder`` (dispatcher, senders,
storage commitment requests) over the same database. Everything between the two goes through the database,
whose writers queue on a lock shared between the processes (``router.store.writelock``), except the wake-up: when
jobs are committed, the serving process writes the peers' names to a pipe and the forward process wakes its
senders at once instead of at its next poll.

- The configuration reaches the child pickled on its standard input; its log lines go where the parent's go.
- The child ends when the pipe closes: the serving process stops (the forwarder then finishes as on a stop of its
  own) or dies. On Linux a parent killed outright takes the child with it (``PR_SET_PDEATHSIG``), exactly as a
  ``kill -9`` of a single process would: what was in flight is sent again after the restart.
- On SQLite only one forward process works on a data folder at a time (an ``flock`` on ``forwarder.lock`` held
  for its life), so a restarted one never puts back to pending what another is still sending. On PostgreSQL the
  database coordinates the nodes (leases, ``router.outbox.leases``) and several of them may share one data folder:
  no lock.
- If the child exits on its own, the serving process logs it and starts another.

``forward.process: false`` runs the same workers as threads of the serving process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from router import _pynetdicom
from router import storage as object_storage
from router.commitment.ledger import CommitLedger
from router.config import RouterConfig
from router.forward.workers import make_forwarder
from router.hooks.manager import build_plugin_manager, notify
from router.intake.envelope import read_values_as_they_came
from router.logs import configure_logging
from router.store import files
from router.store.db import make_engine
from router.store.writelock import write_lock_for

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # s: before a forward process that exited on its own is started again
READY_TIMEOUT = 60.0  # s: for a new forward process to start its workers (imports, database, recovery)
STOP_TIMEOUT = 20.0  # s: for the forward process to finish after the pipe closed (its senders get 10 s)
ALL_PEERS = b"*"  # a wake for every peer (the pipe overflowed, or the caller named none)
END = b"\n"  # ends one wake message; peer names have no white space (config.PeerName)


class ForwardProcess:
    """The serving process's side: starts the forward process, wakes it, restarts it, stops it."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._pipe: int | None = None  # write end of the wake pipe of the running child
        self._proc: subprocess.Popen[bytes] | None = None
        self._overflowed = False
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> None:
        # The child is started from a thread that lives as long as it does: PR_SET_PDEATHSIG fires when the
        # thread that started the child ends, not only the process.
        started = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, args=(started,), name="forward-process")
        self._supervisor.daemon = True
        self._supervisor.start()
        started.wait()

    def wake(self, peers: set[str] | None = None) -> None:
        """Jobs for ``peers`` (None: any) are committed. Never blocks: when the pipe is full the child has wakes
        to read already, and the next message asks for every peer."""
        with self._lock:
            if self._pipe is None:
                return  # no child now: the next one looks at the whole queue when it starts
            message = ALL_PEERS if peers is None or self._overflowed else b" ".join(p.encode() for p in sorted(peers))
            if len(message) >= select.PIPE_BUF:
                message = ALL_PEERS
            try:
                os.write(self._pipe, message + END)  # at most PIPE_BUF: written whole or not at all
                self._overflowed = False
            except BlockingIOError:
                self._overflowed = True
            except BrokenPipeError:  # the child died: the supervisor starts another, which reads the whole queue
                self._close_pipe()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._close_pipe()
            proc = self._proc
        if proc is not None:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.error("the forward process did not stop within %g s: killed", STOP_TIMEOUT)
                proc.kill()
                proc.wait()
        if self._supervisor is not None:
            self._supervisor.join(STOP_TIMEOUT)

    # -- internals ----------------------------------------------------------------------------------------
    def _close_pipe(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start a child and wait until its workers run (or it gave up): the router is ready only then."""
        wake_read, wake_write = os.pipe()
        ready_read, ready_write = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "router.forward.process", "--wake-fd", str(wake_read),
                 "--ready-fd", str(ready_write), "--parent", str(os.getpid())],
                stdin=subprocess.PIPE,
                pass_fds=[wake_read, ready_write],
            )  # fmt: skip
        except BaseException:
            os.close(wake_write)
            os.close(ready_read)
            raise
        finally:
            os.close(wake_read)
            os.close(ready_write)
        os.set_blocking(wake_write, False)
        with self._lock:  # wakes from now on wait in the pipe until the child reads them
            self._pipe, self._proc, self._overflowed = wake_write, proc, False
            if self._stopping.is_set():  # stop() came while the child was being started: it ends at once
                self._close_pipe()
        try:
            assert proc.stdin is not None
            with proc.stdin:
                proc.stdin.write(pickle.dumps(self.config))
            ready, _, _ = select.select([ready_read], [], [], READY_TIMEOUT)
            if not ready or not os.read(ready_read, 1):
                log.error("the forward process did not start its workers within %g s", READY_TIMEOUT)
        except BaseException:
            proc.kill()
            proc.wait()
            with self._lock:
                self._close_pipe()
            raise
        finally:
            os.close(ready_read)
        return proc

    def _supervise(self, started: threading.Event) -> None:
        while not self._stopping.is_set():
            try:
                proc = self._spawn()
            except Exception:
                log.exception("cannot start the forward process: trying again in %g s", RESTART_DELAY)
                started.set()
                self._stopping.wait(RESTART_DELAY)
                continue
            started.set()
            code = proc.wait()
            with self._lock:
                self._close_pipe()
            if self._stopping.is_set():
                return
            log.error("the forward process exited (%s): starting another in %g s", _exit_text(code), RESTART_DELAY)
            self._stopping.wait(RESTART_DELAY)


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"


# -- the child ------------------------------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """On Linux, be killed when the serving process dies (it may have died before this call: check)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


@contextlib.contextmanager
def _sole_forwarder(data_dir: Path, database_url: str) -> Iterator[None]:
    """On SQLite, hold the data folder's forwarder lock for the process's life (waits for a forward process still
    ending). On PostgreSQL nothing: leases keep the nodes' forward processes apart."""
    if not database_url.startswith("sqlite"):
        yield
        return
    fd = os.open(data_dir / "forwarder.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _wakes(fd: int) -> Iterator[set[str] | None]:
    """The wake messages read from the pipe, coalesced per read (None: every peer), until it closes."""
    pending = b""
    while chunk := os.read(fd, 65536):
        *messages, pending = (pending + chunk).split(END)
        if messages:
            yield None if ALL_PEERS in messages else {peer.decode() for m in messages for peer in m.split()}


def run(config: RouterConfig, wake_fd: int, ready_fd: int, parent: int | None = None) -> None:
    _pynetdicom.install()  # before any association: pynetdicom configured and patched
    files.set_access(config.data_access)  # the modes of the files it writes under data_dir
    object_storage.register(config)  # the store reads in this process use (config arrived pickled, not parsed)
    read_values_as_they_came()
    pm = build_plugin_manager(config)
    engine = make_engine(config.effective_database_url)
    write_lock = write_lock_for(config.effective_database_url)
    try:
        with _sole_forwarder(config.data_dir, config.effective_database_url):
            notify(pm, "router_startup", config=config, process="forward", plugin_settings=pm.settings)
            ledger = CommitLedger(config, engine, pm, write_lock)
            forwarder = make_forwarder(config, engine, pm, ledger, serving_pid=parent)
            forwarder.start()
            os.write(ready_fd, b"r")
            os.close(ready_fd)
            try:
                for peers in _wakes(wake_fd):
                    forwarder.wake(peers)
            finally:
                forwarder.stop()
                notify(pm, "router_shutdown", process="forward")
    finally:
        write_lock.close()
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.forward.process", description=__doc__)
    parser.add_argument("--wake-fd", type=int, required=True, help="read end of the wake pipe")
    parser.add_argument("--ready-fd", type=int, required=True, help="written to once the workers run")
    parser.add_argument("--parent", type=int, required=True, help="process id of the serving process")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    config: RouterConfig = pickle.load(sys.stdin.buffer)  # written by ForwardProcess._spawn, our parent
    configure_logging(config.log_level)
    # A Ctrl-C or a service manager's SIGTERM may reach the whole process group: the serving process stops, then
    # closes the pipe, and this process ends after its senders.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run(config, args.wake_fd, args.ready_fd, args.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
