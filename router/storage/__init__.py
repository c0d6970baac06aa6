"""Object storage: the ``data_dir`` folder (the default) or an S3-compatible bucket (``storage.s3``).

Code that has the configuration asks ``of(config)``; code that has only the data folder asks ``at(data_dir)``. Each
process registers its configuration's store when it reads the configuration (``register``: ``parse_config``, the
forward process, ``Router``), so both find the same store; a data folder never registered is a folder store.

Per-node files: on SQLite (one node by construction) a node's temporary files stay in ``data_dir/tmp`` as they
always were; with a server database (several nodes may share ``data_dir``) they are under
``data_dir/nodes/<node_id>/`` (``tmp``, ``metrics``, the S3 read ``cache``), so one node's start-up clean-up never
removes another's files.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from router.storage.base import Storage, StorageUnavailable
from router.storage.folder import FolderStorage

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.config.s3 import S3Settings

__all__ = ["Storage", "StorageUnavailable", "at", "node_dir", "of", "register", "tmp_dir"]

_stores: dict[Path, tuple[S3Settings | None, Storage]] = {}
_lock = threading.Lock()


def node_dir(config: RouterConfig) -> Path:
    """Where this node's own files go: ``data_dir`` on SQLite, ``data_dir/nodes/<node_id>`` otherwise."""
    if config.effective_database_url.startswith("sqlite"):
        return config.data_dir
    return config.data_dir / "nodes" / config.node_id


def tmp_dir(config: RouterConfig) -> Path:
    """This node's temporary files: every object is written here durably before ``commit``."""
    return node_dir(config) / "tmp"


def register(config: RouterConfig) -> Storage:
    """The store ``config`` names, made the one ``at(config.data_dir)`` answers in this process."""
    settings = config.storage.s3
    with _lock:
        known = _stores.get(config.data_dir)
        if known is not None and known[0] == settings:
            return known[1]
        store: Storage
        if settings is None:
            store = FolderStorage(config.data_dir)
        else:
            from router.storage.s3 import S3Storage

            store = S3Storage(settings, node_dir(config) / "cache")
        _stores[config.data_dir] = (settings, store)
        return store


def of(config: RouterConfig) -> Storage:
    known = _stores.get(config.data_dir)
    if known is not None and known[0] == config.storage.s3:
        return known[1]
    return register(config)


def at(data_dir: Path) -> Storage:
    known = _stores.get(data_dir)
    if known is not None:
        return known[1]
    with _lock:
        return _stores.setdefault(data_dir, (None, FolderStorage(data_dir)))[1]
