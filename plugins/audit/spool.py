"""The durable spool: every audit message is a file under ``data_dir/audit/spool/<repository>/`` before it is sent.

- ``Spool.write`` writes a message once (a temporary file, fsynced), links it into the folder of every repository
  and fsyncs those folders: when it returns, the message survives a crash or a power loss. It is called in the
  thread of the event it records, before the hook returns.
- File names sort in the order the messages were written: ``<time in ns>-<pid>-<sequence>.msg``.
- Both router processes (``serve`` and ``forward``) write into the same folders. One process at a time sends a
  repository's messages: the one holding the folder's ``.sender.lock`` (``flock``); the other only writes, and
  takes over when the first one ends. A message is removed once its repository took it.
- ``.state.json`` says what the sender last saw (for ``router audit status``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUFFIX = ".msg"
LOCK = ".sender.lock"
STATE = ".state.json"


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Stamp:
    """Increasing file-name stamps for this process (the clock may step back; names never do)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._seq = 0

    def next(self) -> str:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns())
            self._seq += 1
            return f"{self._last:020d}-{os.getpid()}-{self._seq:08d}{SUFFIX}"


class RepositorySpool:
    """The spooled messages of one repository."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock_fd: int | None = None

    def pending(self, limit: int | None = None) -> list[str]:
        """The names of the messages waiting, oldest first."""
        names = sorted(n for n in os.listdir(self.folder) if n.endswith(SUFFIX))
        return names if limit is None else names[:limit]

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
        fsync_dir(self.folder)  # a removed message must not come back after a crash (it would be sent twice)

    def try_lock(self) -> bool:
        """Become this repository's sender, if no other process is."""
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def sender_running(self) -> bool:
        """Whether a router process holds this repository's sender lock (for ``router audit status``)."""
        if not (self.folder / LOCK).exists():
            return False
        if self.try_lock():
            self.unlock()
            return False
        return True

    def save_state(self, **state: Any) -> None:
        tmp = self.folder / f"{STATE}.{os.getpid()}"
        tmp.write_text(json.dumps({"pid": os.getpid(), "at": datetime.now(UTC).isoformat(), **state}))
        tmp.replace(self.folder / STATE)

    def state(self) -> dict[str, Any]:
        try:
            loaded = json.loads((self.folder / STATE).read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def oldest_age(self) -> float | None:
        """Seconds since the oldest waiting message was written, None when none waits."""
        first = self.pending(limit=1)
        return None if not first else max(0.0, time.time() - int(first[0].split("-", 1)[0]) / 1e9)


class Spool:
    """The spool folders of every configured repository, under ``root`` (``data_dir/audit/spool``)."""

    def __init__(self, root: Path, repositories: Iterable[str]) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self.repositories = {name: RepositorySpool(root / name) for name in repositories}
        self._stamp = Stamp()

    def create(self) -> None:
        for folder in (self.tmp, *(r.folder for r in self.repositories.values())):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def write(self, message: bytes) -> str:
        """Spool ``message`` for every repository; durable when this returns. Returns its file name."""
        name = self._stamp.next()
        tmp = self.tmp / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(message)
            f.flush()
            os.fsync(f.fileno())
        try:
            for repo in self.repositories.values():
                os.link(tmp, repo.folder / name)
            for repo in self.repositories.values():
                fsync_dir(repo.folder)
        finally:
            tmp.unlink()
        return name

    def __iter__(self) -> Iterator[RepositorySpool]:
        return iter(self.repositories.values())
