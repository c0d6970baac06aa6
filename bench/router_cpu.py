"""CPU time the router spends per object (serving process and forward process apart), beside the wall time.

Usage: python bench/router_cpu.py MODE N [--repo DIR]
  MODE: tiny-receive, tiny-forward, ct-receive or ct-forward; N: objects (bench/dicom_corpus.py)
  --repo: the checkout whose router and bench/bench_store.py are used (default: this one). To compare two
  versions, run it alternately on both checkouts (each with its own `router` first on PATH, e.g. a venv with an
  editable install of that checkout) and compare the medians.

On this 2-core machine the wall time of bench_store.py swings by a third between runs of the same code; the CPU
time per object swings less, and says which process a change made more expensive. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _router_cpu(pid: int) -> tuple[float, float]:
    """(serving process, its children: the forward process) CPU seconds so far."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children |= {int(c) for c in (task / "children").read_text().split()}
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return _cpu_seconds(pid), sum(_cpu_seconds(c) for c in children)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["tiny-receive", "tiny-forward", "ct-receive", "ct-forward"])
    parser.add_argument("n", type=int)
    parser.add_argument("--repo", type=Path, default=HERE)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo / "bench"))
    import bench_store as b  # the chosen checkout's, which starts that checkout's router
    from dicom_corpus import make_ct, make_tiny

    root = Path(tempfile.mkdtemp(prefix="router-cpu-"))
    corpus = (make_tiny if args.mode.startswith("tiny") else make_ct)(root / "corpus", args.n)
    procs = []
    try:
        dest_out, dest_port = None, None
        if args.mode.endswith("forward"):
            (root / "dest").mkdir()
            dest_port = b.free_port()
            procs.append(b.start_storescp(root / "dest", dest_port, aet="DEST"))
            dest_out = root / "dest" / "out"
        port = b.free_port()
        (root / "router").mkdir()
        router = b.start_router(root / "router", port, dest_port)
        procs.append(router)
        time.sleep(1.0)  # the forward process has started and settled
        serve0, forward0 = _router_cpu(router.pid)
        seconds = b.time_storescu(corpus, "ROUTER", port, root / "router", 600, dest_out)
        time.sleep(0.3)  # the last done marks
        serve1, forward1 = _router_cpu(router.pid)
    finally:
        for proc in procs:
            b.stop(proc)
    per = 1000 / args.n
    print(json.dumps({"mode": args.mode, "n": args.n, "seconds": round(seconds, 2),
                      "serve_cpu_ms": round((serve1 - serve0) * per, 3),
                      "forward_cpu_ms": round((forward1 - forward0) * per, 3)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
