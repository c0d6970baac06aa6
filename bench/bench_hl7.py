"""HL7 MLLP throughput benchmark: ADT^A08 messages acknowledged AA per second, router vs minimal MLLP receivers.

Usage: python bench/bench_hl7.py [--messages N] [--patients N] [--connections 1,4] [--rounds N] [--time-cap S]
                                [--skip-references] [--out FILE]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from subprocess import DEVNULL, STDOUT, Popen

from router.hl7.ack import ack_code_of, build_ack
from router.hl7.message import parse_message
from router.hl7.mllp import MllpClient
from router.listeners.mllp import MllpServer

READY_TIMEOUT = 30.0  # s, for a server to accept MLLP connections
STOP_TIMEOUT = 10.0  # s, for a server to exit after SIGTERM
CLIENT_TIMEOUT = 30.0  # s, for one ACK
PROCS: list[Popen[bytes]] = []  # every process started; all stopped in main()'s finally
FAMILIES = ["Jansen", "de Vries", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder", "de Groot", "Bos"]
GIVEN = ["Anna", "Piet", "Els", "Jan", "Eva", "Kees", "Sanne", "Daan", "Emma", "Lucas"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- messages


def adt(event: str, seq: int, patient: int, run: str) -> bytes:
    """One ADT message (v2.5, UTF-8) for patient ``patient``; MSH-10 unique per (run, seq)."""
    family, given = FAMILIES[patient % len(FAMILIES)], GIVEN[(patient + seq) % len(GIVEN)]
    birth = f"19{50 + patient % 50:02d}{1 + patient % 12:02d}{1 + patient % 28:02d}"
    segments = [
        f"MSH|^~\\&|HIS|HOSP|ROUTER|RAD|20241101120000||ADT^{event}^ADT_A01|{run}{seq:07d}|P|2.5|||||NL|UNICODE UTF-8",
        f"EVN|{event}|20241101120000",
        f"PID|1||BP{patient:05d}^^^HOSP^MR||{family}^{given}||{birth}|{'MF'[patient % 2]}|||"
        f"Dorpsstraat {seq % 200}^^Utrecht^^3500AA^NL",
        f"PV1|1|O|RAD^{seq % 40}^1||||D100^Jansen^Piet",
    ]
    return ("\r".join(segments) + "\r").encode()


# ---------------------------------------------------------------- reference receivers (run as subprocesses)


def serve_mllp_ack(port: int) -> None:
    """The router's own MLLP server and ER7 parser, answering AA at once: no rules, no database, no fsync."""
    server = MllpServer("127.0.0.1", port, lambda raw, _peer: build_ack(parse_message(raw, use_hl7apy=False), "AA"))
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop()


_MSH10 = re.compile(rb"^MSH\|(?:[^|\r]*\|){8}([^|\r]*)")


def serve_asyncio_ack(port: int) -> None:
    """A bare asyncio MLLP receiver: finds MSH-10 with a regex and answers a fixed AA; nothing is parsed."""

    async def conversation(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                frame = await reader.readuntil(b"\x1c\x0d")
                m = _MSH10.match(frame[frame.find(b"\x0b") + 1 :])
                control = m.group(1) if m else b""
                writer.write(
                    b"\x0bMSH|^~\\&|ROUTER|RAD|HIS|HOSP|||ACK^A08^ACK|1|P|2.5\rMSA|AA|" + control + b"\r\x1c\x0d"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(conversation, "127.0.0.1", port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


# ---------------------------------------------------------------- processes


def spawn(cmd: list[str], log_path: Path, cwd: Path | None = None) -> Popen[bytes]:
    with open(log_path, "wb") as log:
        proc = Popen(cmd, stdin=DEVNULL, stdout=log, stderr=STDOUT, cwd=cwd, start_new_session=True)
    PROCS.append(proc)
    return proc


def stop(proc: Popen[bytes]) -> None:
    """SIGTERM the process's group, SIGKILL it after STOP_TIMEOUT. Once only."""
    if proc not in PROCS:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if sig == signal.SIGTERM and proc.poll() is not None:
            continue
        try:
            os.killpg(proc.pid, sig)
            proc.wait(STOP_TIMEOUT)
            break
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    PROCS.remove(proc)


def wait_listening(proc: Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"exited with code {proc.returncode}: {' | '.join(tail)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"not listening on {port} after {READY_TIMEOUT:.0f} s")


def start_router(workdir: Path) -> tuple[Popen[bytes], int]:
    """``router serve`` with its default durable settings (SQLite WAL, synchronous=FULL), no rules, loopback only."""
    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    hl7_port = free_port()
    (workdir / "router.yaml").write_text(
        "ae_title: ROUTER\ndata_dir: var\nrules_dir: rules\nlog_level: WARNING\npeers: {}\n"
        f"dicom: {{port: {free_port()}, host: 127.0.0.1}}\n"
        f"hl7: {{port: {hl7_port}, host: 127.0.0.1}}\n"
        f"http: {{port: {free_port()}, host: 127.0.0.1}}\n"
    )
    log_path = workdir / "router.log"
    proc = spawn([sys.executable, "-m", "router", "serve", "--config", str(workdir / "router.yaml")], log_path, workdir)
    wait_listening(proc, hl7_port, log_path)
    return proc, hl7_port


def start_reference(kind: str, workdir: Path) -> tuple[Popen[bytes], int]:
    port = free_port()
    log_path = workdir / f"{kind}.log"
    proc = spawn([sys.executable, __file__, "--serve", kind, "--port", str(port)], log_path)
    wait_listening(proc, port, log_path)
    return proc, port


# ---------------------------------------------------------------- load


@dataclass
class Result:
    target: str
    connections: int
    sent: int = 0
    seconds: float = 0.0
    acks: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    capped: bool = False
    error: str | None = None
    check: str = ""

    @property
    def msg_s(self) -> float | None:
        return self.acks["AA"] / self.seconds if self.seconds else None

    def percentile(self, q: float) -> float | None:
        if len(self.latencies_ms) < 2:
            return None
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


def send_all(port: int, messages: list[bytes], connections: int, time_cap: float, result: Result) -> None:
    """Send ``messages`` over ``connections`` MLLP connections (one thread each, one message in flight per
    connection, each waiting for its ACK); stop starting new messages after ``time_cap`` seconds."""
    lock = threading.Lock()
    shares = [messages[i::connections] for i in range(connections)]
    clients = [MllpClient("127.0.0.1", port, CLIENT_TIMEOUT) for _ in range(connections)]
    for c in clients:
        c.connect()  # connections are open before the clock starts
    start = time.perf_counter()
    deadline = start + time_cap

    def worker(client: MllpClient, share: list[bytes]) -> None:
        codes: Counter[str] = Counter()
        lat: list[float] = []
        try:
            for raw in share:
                if time.perf_counter() > deadline:
                    result.capped = True
                    break
                t0 = time.perf_counter()
                ack = client.send(raw)
                lat.append((time.perf_counter() - t0) * 1000)
                codes[ack_code_of(ack)[0]] += 1
        except Exception as exc:
            with lock:
                result.error = result.error or f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
            with lock:
                result.acks.update(codes)
                result.latencies_ms.extend(lat)

    threads = [threading.Thread(target=worker, args=(c, s)) for c, s in zip(clients, shares, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - start
    result.sent = sum(result.acks.values())


def db_counts(workdir: Path) -> tuple[int, int]:
    """(hl7log rows, patients) in the router's index."""
    conn = sqlite3.connect(f"file:{workdir / 'var' / 'router.db'}?mode=ro", uri=True, timeout=30)
    try:
        log_rows = conn.execute("select count(*) from hl7log").fetchone()[0]
        patients = conn.execute("select count(*) from patient").fetchone()[0]
        return int(log_rows), int(patients)
    finally:
        conn.close()


@dataclass
class Target:
    name: str
    proc: Popen[bytes]
    port: int
    workdir: Path
    applied: int = 0  # messages acknowledged AA so far (the router's index must hold as many)


def start_target(name: str, root: Path, patients: int) -> Target:
    """Start ``name`` and load its patients (untimed: the timed A08 messages are updates, not first inserts)."""
    workdir = root / name
    workdir.mkdir()
    proc, port = start_router(workdir) if name == "router" else start_reference(name, workdir)
    preload = Result(name, 1)
    send_all(port, [adt("A04", p, p, "PRE") for p in range(patients)], 1, 600, preload)
    if preload.error or preload.acks["AA"] != patients:
        stop(proc)
        raise RuntimeError(f"preloading {patients} patients failed: {preload.error or dict(preload.acks)}")
    return Target(name, proc, port, workdir, patients)


def run_once(target: Target, args: argparse.Namespace, conns: int, tag: str) -> Result:
    messages = [adt("A08", i, i % args.patients, tag) for i in range(args.messages)]
    res = Result(target.name, conns)
    send_all(target.port, messages, conns, args.time_cap, res)
    target.applied += res.acks["AA"]
    bad = {k: v for k, v in res.acks.items() if k != "AA"}
    res.check = f"AA {res.acks['AA']}" + (f", {bad}" if bad else "") + (" (time cap)" if res.capped else "")
    if target.name == "router":
        log_rows, patients = db_counts(target.workdir)
        ok = log_rows == target.applied and patients == args.patients
        res.check += f", index {'ok' if ok else f'{log_rows} log rows / {patients} patients'}"
        if not ok:
            res.error = res.error or f"index holds {log_rows} messages and {patients} patients"
    print(f"{tag} {target.name} x{conns}: {res.acks['AA']} AA in {res.seconds:.2f} s, "
          f"{fmt(res.msg_s, '.1f')} msg/s {res.error or res.check}")  # fmt: skip
    return res


def run_rounds(targets: list[Target], args: argparse.Namespace, conn_counts: list[int]) -> list[list[Result]]:
    """Every round runs every connection count against every target, one after the other: the targets meet the
    same machine load within a round, so a round's ratios compare like with like."""
    rounds = []
    for r in range(args.rounds):
        rounds.append([run_once(t, args, c, f"R{r}C{c}-") for c in conn_counts for t in targets])
    return rounds


def fsync_probe(folder: Path, count: int = 100) -> float:
    """Median ms of one 4 KiB write + fdatasync in ``folder``: the disk's price of one durable commit now (an AA
    on one connection, the sender waiting for it, cannot come faster than one of these)."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        os.pwrite(fd, b"x" * 4096 * 16, 0)  # the file has its size first: the timed flushes are overwrites
        os.fdatasync(fd)
        for i in range(count):
            os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


# ---------------------------------------------------------------- report


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def print_table(rounds: list[list[Result]]) -> None:
    """One row per target and connection count: median msg/s over the rounds, min and max, latencies of all."""
    print(f"\n{'target':<12}{'conns':>6}{'AA':>7}{'msg/s':>9}{'min':>9}{'max':>9}{'p50 ms':>8}{'p99 ms':>8}  check")
    for key in dict.fromkeys((r.target, r.connections) for r in rounds[0]):
        runs = [r for rnd in rounds for r in rnd if (r.target, r.connections) == key]
        rates = [r.msg_s for r in runs if r.msg_s is not None]
        merged = Result(*key, latencies_ms=[x for r in runs for x in r.latencies_ms])
        checks = "; ".join(dict.fromkeys(r.error or r.check for r in runs))
        print(
            f"{key[0]:<12}{key[1]:>6}{sum(r.acks['AA'] for r in runs):>7}{fmt(median(rates), '.1f'):>9}"
            f"{fmt(min(rates, default=None), '.1f'):>9}{fmt(max(rates, default=None), '.1f'):>9}"
            f"{fmt(merged.percentile(50)):>8}{fmt(merged.percentile(99)):>8}  {checks}"
        )


def ratios(rounds: list[list[Result]]) -> dict[str, float | None]:
    """Router msg/s over each reference's, per round (same machine load), then the median over the rounds."""
    per_round: dict[str, list[float | None]] = {}
    for rnd in rounds:
        rate = {(r.target, r.connections): r.msg_s for r in rnd}
        for conns in dict.fromkeys(r.connections for r in rnd):
            for other in REFERENCES:
                a, b = rate.get(("router", conns)), rate.get((other, conns))
                per_round.setdefault(f"x{conns} router/{other}", []).append(a / b if a and b else None)
    return {key: median(values) for key, values in per_round.items()}


REFERENCES = ("mllp-ack", "asyncio-ack")
SERVERS = {"mllp-ack": serve_mllp_ack, "asyncio-ack": serve_asyncio_ack}


def write_json(path: Path, rounds: list[list[Result]], rat: dict[str, float | None]) -> None:
    rows = [
        {**{k: v for k, v in asdict(r).items() if k not in ("latencies_ms", "acks")}, "acks": dict(r.acks),
         "round": n, "msg_s": r.msg_s, "p50_ms": r.percentile(50), "p99_ms": r.percentile(99)}
        for n, rnd in enumerate(rounds) for r in rnd
    ]  # fmt: skip
    path.write_text(json.dumps({"ratios": rat, "results": rows}, indent=2) + "\n")
    print(f"results written to {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000, help="A08 messages per run (default 2000)")
    ap.add_argument("--patients", type=int, default=500, help="distinct patients updated (default 500)")
    ap.add_argument("--connections", default="1,4", help="comma-separated connection counts (default 1,4)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians over them (default 3)")
    ap.add_argument("--time-cap", type=float, default=60, help="stop a run after this many seconds (default 60)")
    ap.add_argument("--skip-references", action="store_true", help="measure the router only")
    ap.add_argument("--out", type=Path, help="also write the results as JSON")
    ap.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)  # a reference receiver's process
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        SERVERS[args.serve](args.port)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    conn_counts = [int(c) for c in args.connections.split(",") if c.strip()]
    names = ["router", *([] if args.skip_references else REFERENCES)]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.messages} ADT^A08 per run over "
          f"{args.patients} patients; connections {conn_counts}; {args.rounds} rounds; time cap "
          f"{args.time_cap:.0f} s")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="bench-hl7-"))
    try:
        targets = []
        for name in names:
            try:
                targets.append(start_target(name, root, args.patients))
            except RuntimeError as exc:
                print(f"{name}: not available ({exc})")
        if not targets:
            return 1
        before = fsync_probe(root)
        rounds = run_rounds(targets, args, conn_counts)
        after = fsync_probe(root)
        print(f"\nfdatasync of 4 KiB in {root}: median {before:.2f} ms before the rounds, {after:.2f} ms after")
        print_table(rounds)
        rat = ratios(rounds)
        print(
            f"\nratios of msg/s, median over {args.rounds} rounds of the ratio in each (above 1: the router is faster):"
        )
        for key, val in rat.items():
            print(f"  {key:<26}{fmt(val, '.3g') if val else 'n/a'}")
        if args.out:
            write_json(args.out, rounds, rat)
        return 0 if all(r.error is None for rnd in rounds for r in rnd) else 1
    finally:
        while PROCS:
            stop(PROCS[-1])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
