"""In-process ingest throughput: N threads each calling ``Ingestor.ingest`` on M tiny objects of one series.

Usage: python bench/bench_ingest_threads.py THREADS PER_THREAD [--repo DIR]
No network and no pynetdicom: what the group commit (``router.intake.groupcommit``) does for concurrent senders,
without the DIMSE path around it. Prints objects/s, the CPU per object and the group commit's counters. To compare
two checkouts, run it alternately with ``--repo`` naming each (its ``router`` package is imported from there).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("threads", type=int)
    ap.add_argument("per_thread", type=int)
    ap.add_argument("--repo", type=Path, default=HERE, help="the checkout whose router is measured")
    args = ap.parse_args()
    sys.path[:0] = [str(args.repo), str(HERE / "tests")]
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import generate_uid

    from router.app import Router
    from router.config import parse_config
    from router.intake.envelope import Source

    from peers import make_instance  # tests/peers.py

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        (work / "rules").mkdir()
        router = Router(parse_config({"data_dir": "var", "rules_dir": "rules"}, work))
        study, series = generate_uid(), generate_uid()

        def p10() -> bytes:
            buf = BytesIO()
            dcmwrite(buf, make_instance(study, series), enforce_file_format=True)
            return buf.getvalue()

        batches = [[p10() for _ in range(args.per_thread)] for _ in range(args.threads)]
        source = Source(protocol="dimse", calling_ae="BENCH", called_ae="ROUTER", address="127.0.0.1")
        router.ingestor.ingest(p10(), source)  # the folders exist before the clock starts
        failures: list[int] = []

        def send(batch: list[bytes]) -> None:
            failures.extend(s for raw in batch if (s := router.ingestor.ingest(raw, source).status) != 0)

        threads = [threading.Thread(target=send, args=(b,)) for b in batches]
        t0, c0 = time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = args.threads * args.per_thread
        group = getattr(router.ingestor, "group", None)
        print(f"{args.threads}x{args.per_thread}: {n / seconds:.0f} objects/s, CPU {cpu / n * 1000:.2f} ms/object, "
              f"{len(failures)} failure(s)" + (f", {group.stats}" if group is not None else ""))  # fmt: skip
        router.ingestor.close()
        router.engine.dispose()
        return 1 if failures else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
