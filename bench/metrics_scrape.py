"""How long the outbox part of a /metrics scrape takes on a large outbox (docs/operations.md quotes it).

    python bench/metrics_scrape.py --waiting 100000 --done 1000000 --peers 10 --rounds 20

Fills a fresh SQLite database (the router's own schema, in a temporary folder) with ``--waiting`` jobs spread over
the states a scrape counts (pending 90 %, inflight 5 %, committing 3 %, dead 2 %) and ``--done`` delivered ones,
over ``--peers`` peers; then times ``plugins.metrics.scrape.OutboxReading`` (its two statements and the families),
``--rounds`` times; prints the median and the slowest. Then the cost of counting: the two hooks every stored
C-STORE object calls (``router_instance_stored``, ``router_dimse_answered``), 20,000 times in-process, with and
without the plugin (best of 5, alternated twice).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugins.metrics.labels import Labels
from plugins.metrics.scrape import OutboxReading
from router.config import RouterConfig
from router.hooks.manager import build_plugin_manager, notify
from router.intake.envelope import Source
from router.store.db import make_engine
from router.store.tables import JOB

SHARES = (("pending", 0.90), ("inflight", 0.05), ("committing", 0.03), ("dead", 0.02))


def fill(url: str, waiting: int, done: int, peers: list[str]) -> None:
    engine = make_engine(url, durable=False)
    start = datetime.now(UTC) - timedelta(hours=2)
    states = [state for state, share in SHARES for _ in range(round(waiting * share))] + ["done"] * done
    states.sort(key=lambda s: s != "done")  # delivered first: the oldest jobs, as in a router that has run a while
    batch = []
    with engine.begin() as conn:
        for n, state in enumerate(states):
            batch.append({"kind": "dicom-store", "peer": peers[n % len(peers)], "sop_uid": f"1.2.3.{n}",
                          "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7", "transfer_syntax": "1.2.840.10008.1.2.1",
                          "path": f"objects/{n}.dcm", "state": state, "created_at": start + timedelta(milliseconds=n),
                          "updated_at": start, "next_attempt_at": start})  # fmt: skip
            if len(batch) == 10000:
                conn.execute(JOB.insert(), batch)
                batch = []
        if batch:
            conn.execute(JOB.insert(), batch)
    engine.dispose()


def timed(rounds: int, work: object) -> list[float]:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        work()  # type: ignore[operator]
        times.append((time.perf_counter() - began) * 1000)
    return times


class _Envelope:  # what the plugin reads of an envelope
    source = Source("dimse", "PEER0", "ROUTER", "127.0.0.1:11112")


def hook_cost(config: RouterConfig, with_plugin: bool, objects: int = 20_000) -> float:
    """Microseconds per stored object spent in the hooks' calls."""
    pm = build_plugin_manager(config)
    if not with_plugin:
        pm.unregister(name="metrics")
    notify(pm, "router_startup", config=config, process="serve", plugin_settings=pm.settings)
    env, best = _Envelope(), float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(objects):
            notify(pm, "router_instance_stored", envelope=env, outcome="stored", path="x.dcm", jobs=1)
            notify(pm, "router_dimse_answered", service="C-STORE", sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                   calling_ae="PEER0", address="127.0.0.1:11112", status=0)  # fmt: skip
        best = min(best, (time.perf_counter() - began) / objects * 1e6)
    notify(pm, "router_shutdown", process="serve")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--done", type=int, default=1_000_000)
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    peers = [f"PEER{n}" for n in range(args.peers)]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/router.db"
        began = time.perf_counter()
        fill(url, args.waiting, args.done, peers)
        print(f"filled {args.waiting} waiting + {args.done} done jobs in {time.perf_counter() - began:.1f} s")
        config = RouterConfig.model_validate({"data_dir": tmp, "database_url": url,
                                              "peers": {p: {"ae_title": p, "host": "127.0.0.1", "port": 104}
                                                        for p in peers}})  # fmt: skip
        engine = make_engine(url, durable=False)
        labels = Labels(config)
        reading = OutboxReading(engine, labels)
        print(f"pending {sum(c for (_p, s), c in reading.jobs.items() if s == 'pending')}, "
              f"oldest {max(reading.oldest.values()):.0f} s")  # fmt: skip
        times = timed(args.rounds, lambda: list(OutboxReading(engine, labels).families()))
        print(f"outbox reading: median {statistics.median(times):.1f} ms, slowest {max(times):.1f} ms "
              f"({args.rounds} rounds)")  # fmt: skip
        engine.dispose()
        for with_plugin in (False, True, False, True):
            print(f"hooks per stored object, {'with' if with_plugin else 'without'} the metrics plugin: "
                  f"{hook_cost(config, with_plugin):.1f} us")  # fmt: skip


if __name__ == "__main__":
    main()
