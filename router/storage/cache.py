"""A bounded local copy of objects read from a remote store, least recently used out first.

Each process has its own folder (``<node dir>/cache/<pid>``): the serve process and its forward process never
count or evict each other's files. A folder whose process is gone is removed when the next cache starts. The file
just fetched is never evicted by its own fetch, so a reader always finds what it asked for; a file handed out
earlier may be evicted by later fetches once the cache is over its bound (a reader that opened it keeps reading:
unlinking does not end an open file)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from router.store import files

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(parent: Path) -> None:
    """The cache folders of processes that are gone (a crash or a stop leaves them)."""
    if not parent.is_dir():
        return
    for folder in parent.iterdir():
        if folder.name.isdigit() and int(folder.name) != os.getpid() and not _alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)


class ReadCache:
    def __init__(self, parent: Path, max_bytes: int) -> None:
        self.parent = parent
        self.max_bytes = max_bytes
        self._folder: Path | None = None
        self._pid = 0
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """This process's folder (a forked child gets a new one, with an empty account)."""
        if self._folder is None or self._pid != os.getpid():
            remove_stale(self.parent)
            self._pid = os.getpid()
            self._folder = self.parent / str(self._pid)
            self._sizes.clear()
            self._total = 0
        return self._folder

    def get(self, relpath: str, fetch: Callable[[Path], None]) -> Path:
        """The cached copy of ``relpath``; ``fetch(dest)`` writes it to ``dest`` when it is not here."""
        path = self.folder / relpath
        with self._lock:
            known = relpath in self._sizes
            if known:
                self._sizes.move_to_end(relpath)
        if known and path.exists():
            return path
        files.make_dirs(path.parent)
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            fetch(part)
            size = part.stat().st_size
            os.replace(part, path)
        finally:
            files.remove_quietly(part)
        with self._lock:
            self._total += size - self._sizes.get(relpath, 0)
            self._sizes[relpath] = size
            self._sizes.move_to_end(relpath)
            self._evict(keep=relpath)
        return path

    def drop(self, relpath: str) -> None:
        with self._lock:
            self._total -= self._sizes.pop(relpath, 0)
        files.remove_quietly(self.folder / relpath)

    @property
    def total(self) -> int:
        return self._total

    def _evict(self, keep: str) -> None:
        while self._total > self.max_bytes and len(self._sizes) > 1:
            oldest = next(iter(self._sizes))
            if oldest == keep:
                break
            self._total -= self._sizes.pop(oldest)
            with contextlib.suppress(OSError):
                (self.folder / oldest).unlink()
