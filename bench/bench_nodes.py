"""Several router nodes on one PostgreSQL: receive and forward throughput of one node and of two (docs/cluster.md).

    python bench/bench_nodes.py [--senders 4] [--objects 250] [--only NAME ...] [--out results.json]

Everything on 127.0.0.1, on free ports, in a temporary folder removed at the end; PostgreSQL is a throwaway cluster
started as the tests start one (tests/postgres.py: Debian package postgresql, fsync on here, unlike the tests), the
nodes are ``router serve`` processes sharing it and one data folder, the destination is DCMTK ``storescp``.

- ``receive-1``, ``receive-2``: ``--senders`` parallel ``storescu`` runs of ``--objects`` tiny objects each (one
  association each) into one node, or half of them into each of two nodes; no rule forwards. Objects per second
  from the start of the first sender to the end of the last.
- ``forward-1``, ``forward-2``: the same objects received with a rule that forwards them to DEST while DEST is
  paused (``router.store.peer_state``); then DEST is resumed and the time runs until storescp holds them all
  (polled every 50 ms). Objects per second of the forward alone, by one node's workers or by both nodes'.

A bounded run: 4 x 250 objects per measurement, each under ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers: PostgreSQL, router processes, DCMTK peers

from router.store.db import make_engine  # noqa: E402
from router.store.peer_state import set_paused  # noqa: E402

from peers import RouterProcess, StoreSCP, free_port, make_instance, storescu, wait_for, write_instances  # noqa: E402
from postgres import postgres_cluster  # noqa: E402

MEASUREMENTS = ("receive-1", "receive-2", "forward-1", "forward-2")


def start_nodes(workdir: Path, url: str, count: int, dest_port: int, forward: bool) -> list[RouterProcess]:
    peers = {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest_port, "max_associations": 4}}
    rules = (
        {"10-all.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]} if forward else {}
    )
    nodes = []
    for n in range(count):
        folder = workdir / f"node{n}"
        folder.mkdir()
        nodes.append(RouterProcess(folder, peers=peers, rules=rules, node_id=f"N{n}", database_url=url,
                                   data_dir=str(workdir / "shared"), log_level="WARNING",
                                   forward={"lease_seconds": 30, "batch_size": 50}))  # fmt: skip
    for node in nodes:
        node.start()
    return nodes


def send_all(nodes: list[RouterProcess], batches: list[list[Path]], timeout: float) -> float:
    """The senders in parallel, spread over the nodes; their wall time."""
    errors: list[str] = []

    def send(port: int, files: list[Path]) -> None:
        done = storescu(port, files, timeout=timeout)
        if done.returncode != 0:
            errors.append(done.stderr[-500:])

    threads = [
        threading.Thread(target=send, args=(nodes[i % len(nodes)].port, files)) for i, files in enumerate(batches)
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    elapsed = time.monotonic() - began
    if errors:
        raise RuntimeError(f"storescu failed: {errors[0]}")
    return elapsed


def measure(name: str, workdir: Path, url: str, batches: list[list[Path]], timeout: float) -> dict[str, Any]:
    count = int(name[-1])
    total = sum(len(b) for b in batches)
    dest_port = free_port()
    forward = name.startswith("forward")
    engine = make_engine(url)
    if forward:
        set_paused(engine, "DEST", True, "bench")
    nodes = start_nodes(workdir, url, count, dest_port, forward)
    dest = None
    try:
        received = send_all(nodes, batches, timeout)
        result: dict[str, Any] = {"name": name, "nodes": count, "objects": total, "receive_s": round(received, 2),
                                  "receive_per_s": round(total / received, 1)}  # fmt: skip
        if forward:
            dest = StoreSCP(workdir, "DEST", port=dest_port).start()
            began = time.monotonic()
            set_paused(engine, "DEST", False, "bench")
            wait_for(lambda: len(dest.received()) >= total, timeout, 0.05, what=f"{total} objects at DEST")
            took = time.monotonic() - began
            result.update(forward_s=round(took, 2), forward_per_s=round(total / took, 1))
        return result
    finally:
        for node in nodes:
            node.stop()
        if dest is not None:
            dest.stop()
        engine.dispose()


def run(args: argparse.Namespace, report: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    results = []
    try:
        corpus = root / "corpus"
        batches = [write_instances(corpus / str(s), [make_instance() for _ in range(args.objects)])
                   for s in range(args.senders)]  # fmt: skip
        with postgres_cluster(fsync=True) as cluster:
            for name in args.only or MEASUREMENTS:
                with cluster.fresh_database() as db:
                    workdir = root / name
                    workdir.mkdir()
                    result = measure(name, workdir, cluster.url(db), batches, args.timeout)
                    report(result)
                    results.append(result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=4, help="parallel storescu runs (associations)")
    parser.add_argument("--objects", type=int, default=250, help="tiny objects per sender")
    parser.add_argument("--only", nargs="*", choices=MEASUREMENTS, help="run these measurements only")
    parser.add_argument("--timeout", type=float, default=300, help="upper bound of one send or forward, s")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    def report(result: dict[str, Any]) -> None:
        line = f"{result['name']:<10} {result['nodes']} node(s) {result['objects']} objects: receive " \
               f"{result['receive_s']:>6.2f} s {result['receive_per_s']:>7.1f}/s"  # fmt: skip
        if "forward_s" in result:
            line += f"   forward {result['forward_s']:>6.2f} s {result['forward_per_s']:>7.1f}/s"
        print(line, flush=True)

    results = run(args, report)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
