"""Where one HL7 message's time goes in the router (issue 21): the per-message path of bench_hl7.py, in-process.

Usage: python bench/bench_hl7_profile.py [--messages N] [--patients N] [--rounds N] [--cprofile]

Builds a router (default durable settings: SQLite WAL, synchronous=FULL, no rules) in a temporary folder, loads
``--patients`` ADT^A04, then times ``--messages`` ADT^A08 (the bench's messages) through ``Hl7Intake.handle`` with
wrappers around each step: parse, the hl7apy parse within it, the rules (plan), the patient effects (apply), the
SQLite commit, the ACK build and the hooks; the rest of ``handle`` (duplicate look-up, log row, activity row,
connection handling) is "other". Then the same messages over a real MLLP connection to the router's listener give
the MLLP share (round trip minus ``handle``), and four connections at once the messages per group commit.
Medians over ``--rounds``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_hl7 import adt

import router.hl7.message as message_module
import router.intake.hl7 as intake_module
from router.app import Router
from router.config import parse_config
from router.hl7.mllp import MllpClient
from router.listeners.mllp import MllpServer

SPENT: dict[str, float] = defaultdict(float)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - t0

    return wrapper


@contextlib.contextmanager
def instrumented(router: Router) -> Iterator[None]:
    """Wrap each step of the HL7 path with a timer (restored on exit)."""
    patches: list[tuple[Any, str, Any]] = [
        (intake_module, "parse_message", timed("parse", intake_module.parse_message)),
        (intake_module, "build_ack", timed("ack build", intake_module.build_ack)),
        (intake_module, "notify", timed("hooks", intake_module.notify)),
        (router.hl7, "plan", timed("rules (plan)", router.hl7.plan)),
        (router.hl7, "_apply", timed("apply (patient rows)", router.hl7._apply)),
        (router.engine.dialect, "do_commit", timed("commit (fsync)", router.engine.dialect.do_commit)),
    ]
    if hasattr(message_module, "_hl7apy_message"):
        patches.append((message_module, "_hl7apy_message", timed("  of which hl7apy", message_module._hl7apy_message)))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, new in patches:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)


def make_router(workdir: Path) -> Router:
    (workdir / "rules").mkdir(parents=True)
    router = Router(parse_config({"data_dir": "var", "rules_dir": "rules", "log_level": "WARNING"}, workdir))
    router.rules.reload_if_changed()
    return router


def one_round(router: Router, n: int, patients: int, tag: str) -> dict[str, float]:
    """ms per message of each step, handle in-process, then over MLLP."""
    SPENT.clear()
    messages = [adt("A08", i, i % patients, f"{tag}H") for i in range(n)]
    with instrumented(router):
        t0 = time.perf_counter()
        for raw in messages:
            router.hl7.handle(raw, "127.0.0.1:1")
        total = time.perf_counter() - t0
    row = {k: v * 1000 / n for k, v in SPENT.items()}
    row["other"] = total * 1000 / n - sum(v for k, v in row.items() if not k.startswith(" "))
    row["handle total"] = total * 1000 / n
    server = MllpServer("127.0.0.1", 0, router.hl7.handle)
    port = server.start()
    try:
        with MllpClient("127.0.0.1", port) as client:
            client.connect()
            messages = [adt("A08", i, i % patients, f"{tag}M") for i in range(n)]
            t0 = time.perf_counter()
            for raw in messages:
                client.send(raw)
            mllp_total = (time.perf_counter() - t0) * 1000 / n
    finally:
        server.stop()
    row["MLLP round trip"] = mllp_total
    row["MLLP share"] = mllp_total - row["handle total"]
    row.update(four_connections(router, n, patients, tag))
    return row


def four_connections(router: Router, n: int, patients: int, tag: str) -> dict[str, float]:
    """``n`` messages over four MLLP connections at once: ms per message and messages per group commit."""
    group = getattr(router.hl7, "group", None)  # None: code from before issue 21 (one commit per message)
    commits, units = (group.stats.commits, group.stats.units) if group else (0, 0)
    server = MllpServer("127.0.0.1", 0, router.hl7.handle)
    port = server.start()
    messages = [adt("A08", i, i % patients, f"{tag}F") for i in range(n)]

    def send(share: list[bytes]) -> None:
        with MllpClient("127.0.0.1", port) as client:
            for raw in share:
                client.send(raw)

    try:
        threads = [threading.Thread(target=send, args=(messages[i::4],)) for i in range(4)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
    finally:
        server.stop()
    per_commit = (group.stats.units - units) / max(1, group.stats.commits - commits) if group else 1.0
    return {"x4: ms per message": elapsed * 1000 / n, "x4: messages per commit": per_commit}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cprofile", action="store_true", help="also print cProfile's top functions of one round")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-hl7-profile-"))
    try:
        router = make_router(root)
        try:
            for p in range(args.patients):
                router.hl7.handle(adt("A04", p, p, "PRE"), "127.0.0.1:1")
            rows = [one_round(router, args.messages, args.patients, f"R{r}") for r in range(args.rounds)]
            print(f"ms per message, median of {args.rounds} rounds of {args.messages} ADT^A08:")
            for key in rows[0]:
                print(f"  {key:<24}{statistics.median(r.get(key, 0.0) for r in rows):8.3f}")
            rate = 1000 / statistics.median(r["MLLP round trip"] for r in rows)
            rate4 = 1000 / statistics.median(r["x4: ms per message"] for r in rows)
            print(f"  => {rate:.0f} msg/s on one connection, {rate4:.0f} on four (clients in the same process)")
            if args.cprofile:
                prof = cProfile.Profile()
                prof.runcall(one_round, router, args.messages, args.patients, "CP")
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        finally:
            router.ingestor.close()
            router.engine.dispose()
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
