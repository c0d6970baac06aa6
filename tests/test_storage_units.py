"""The storage interface without a server: the folder store keeps today's layout and durability, the registry
finds a configuration's store by its data folder, per-node folders on a server database, the S3 settings are
checked, the read cache stays within its bound, and an S3 server that does not answer is ``StorageUnavailable``
(an ``OSError``, not a missing file) in bounded time."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from router import storage
from router.config import RouterConfig, parse_config
from router.config.base import ConfigError
from router.storage.cache import ReadCache
from router.storage.folder import FolderStorage
from router.store import files

from peers import free_port


def test_folder_commit_is_todays_rename_into_data_dir(tmp_path: Path) -> None:
    store = FolderStorage(tmp_path)
    tmp = files.write_temp(tmp_path / "tmp", b"DICM object")
    relpath = files.object_relpath("1.2.3", "1.2.3.4", "1.2.3.4.5")
    store.commit(tmp, relpath)
    assert not tmp.exists()
    assert (tmp_path / "objects" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm").read_bytes() == b"DICM object"
    assert store.local_path(relpath) == tmp_path / relpath
    assert store.read_bytes(relpath) == b"DICM object"
    with store.open(relpath) as stream:
        assert stream.read(4) == b"DICM"
    assert store.exists(relpath) and store.size(relpath) == len(b"DICM object")
    store.delete(relpath)
    store.delete(relpath)  # gone already: nothing happens
    assert not store.exists(relpath)
    with pytest.raises(FileNotFoundError):
        store.local_path(relpath).read_bytes()


def test_a_configuration_registers_its_store_for_its_data_folder(tmp_path: Path) -> None:
    folder_cfg = parse_config({"data_dir": "a"}, tmp_path)
    assert isinstance(storage.at(folder_cfg.data_dir), FolderStorage)
    assert storage.of(folder_cfg) is storage.at(folder_cfg.data_dir)
    s3 = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "bucket": "objects", "access_key_id": "k",
          "secret_access_key": "s"}  # fmt: skip
    s3_cfg = parse_config({"data_dir": "b", "storage": {"s3": s3}}, tmp_path)
    found = storage.at(s3_cfg.data_dir)
    assert found.kind == "s3" and storage.of(s3_cfg) is found
    assert storage.at(tmp_path / "never-configured").kind == "folder"


def test_per_node_folders_only_on_a_server_database(tmp_path: Path) -> None:
    single = RouterConfig(data_dir=tmp_path, node_id="n1")
    assert storage.tmp_dir(single) == tmp_path / "tmp"  # SQLite: one node, the folder it always was
    shared = RouterConfig(data_dir=tmp_path, node_id="n1", database_url="postgresql+psycopg://u@h/db")
    assert storage.node_dir(shared) == tmp_path / "nodes" / "n1"
    assert storage.tmp_dir(shared) == tmp_path / "nodes" / "n1" / "tmp"


@pytest.mark.parametrize(
    ("s3", "says"),
    [
        ({"endpoint_url": "ftp://h:1", "bucket": "objects"}, "storage.s3.endpoint_url"),
        ({"endpoint_url": "http://h:1/path", "bucket": "objects"}, "storage.s3.endpoint_url"),
        ({"endpoint_url": "http://h:1", "bucket": "Bad_Name"}, "storage.s3.bucket"),
        ({"endpoint_url": "http://h:1", "bucket": "objects", "part_size": 1024}, "storage.s3.part_size"),
        ({"endpoint_url": "http://h:1", "bucket": "objects", "prefix": "/abs"}, "storage.s3.prefix"),
        ({"bucket": "objects"}, "storage.s3.endpoint_url"),
    ],
)
def test_s3_settings_are_checked(tmp_path: Path, s3: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        parse_config({"storage": {"s3": s3}}, tmp_path)


def test_the_secret_key_is_not_shown(tmp_path: Path) -> None:
    s3 = {"endpoint_url": "http://h:1", "bucket": "objects", "access_key_id": "A", "secret_access_key": "very-secret"}
    cfg = parse_config({"storage": {"s3": s3}}, tmp_path)
    assert "very-secret" not in repr(cfg) and "very-secret" not in cfg.model_dump_json()


def test_the_read_cache_keeps_to_its_bound_least_recently_used_out_first(tmp_path: Path) -> None:
    cache = ReadCache(tmp_path / "cache", max_bytes=250)
    fetched: list[str] = []

    def fetch_of(name: str):  # type: ignore[no-untyped-def]
        def fetch(dest: Path) -> None:
            fetched.append(name)
            dest.write_bytes(b"x" * 100)

        return fetch

    a = cache.get("objects/a.dcm", fetch_of("a"))
    cache.get("objects/b.dcm", fetch_of("b"))
    cache.get("objects/a.dcm", fetch_of("a"))  # a hit: a is now the most recently used
    assert fetched == ["a", "b"] and a.read_bytes() == b"x" * 100
    cache.get("objects/c.dcm", fetch_of("c"))  # 300 bytes > 250: b (least recently used) goes
    assert cache.total == 200
    assert sorted(p.name for p in cache.folder.rglob("*.dcm")) == ["a.dcm", "c.dcm"]
    cache.get("objects/b.dcm", fetch_of("b"))
    assert fetched == ["a", "b", "c", "b"]
    big = cache.get("objects/big.dcm", lambda dest: dest.write_bytes(b"y" * 1000))  # larger than the bound
    assert big.read_bytes() == b"y" * 1000, "the file just fetched is never evicted by its own fetch"
    assert sorted(p.name for p in cache.folder.rglob("*.dcm")) == ["big.dcm"]
    assert not list(cache.folder.rglob("*.part")), "no partial download left"


def test_a_failed_fetch_leaves_nothing_and_a_dead_process_folder_goes(tmp_path: Path) -> None:
    parent = tmp_path / "cache"
    stale = parent / "999999999"  # no such process
    stale.mkdir(parents=True)
    (stale / "old.dcm").write_bytes(b"old")
    cache = ReadCache(parent, max_bytes=1000)

    def broken(dest: Path) -> None:
        dest.write_bytes(b"half")
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        cache.get("objects/x.dcm", broken)
    assert not stale.exists()
    assert cache.folder == parent / str(os.getpid())
    assert [p for p in cache.folder.rglob("*") if p.is_file()] == []
    assert cache.total == 0


def test_an_s3_server_that_does_not_answer_is_unavailable_not_missing(tmp_path: Path) -> None:
    from router.config.s3 import S3Settings
    from router.storage.s3 import S3Storage

    dead = S3Settings(endpoint_url=f"http://127.0.0.1:{free_port()}", bucket="objects", access_key_id="k",
                      secret_access_key="s", timeout=2)  # type: ignore[arg-type]  # fmt: skip
    store = S3Storage(dead, tmp_path / "cache")
    tmp = files.write_temp(tmp_path / "tmp", b"DICM")
    started = time.monotonic()
    for attempt in (lambda: store.commit(tmp, "objects/a.dcm"), lambda: store.local_path("objects/a.dcm"),
                    lambda: store.exists("objects/a.dcm"), store.check):  # fmt: skip
        with pytest.raises(storage.StorageUnavailable) as raised:
            attempt()
        assert not isinstance(raised.value, FileNotFoundError)
    assert time.monotonic() - started < 30
    assert tmp.exists(), "a temp file the store did not take stays for the caller to discard"
    store.delete("objects/a.dcm")  # logged, not raised: an orphan key costs space, not correctness


def test_without_s3_the_client_is_never_imported(tmp_path: Path) -> None:
    import subprocess

    code = ("import sys; from router.config import parse_config; from router import storage; "
            f"cfg = parse_config({{'data_dir': {str(tmp_path)!r}}}, __import__('pathlib').Path('.')); "
            "storage.of(cfg).exists('objects/x.dcm'); print('minio' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
