"""C-STORE throughput benchmark: the router vs DCMTK storescp vs Orthanc, all on 127.0.0.1.

Usage: python bench/bench_store.py [--tiny N] [--ct N] [--parallel N] [--out results.json] [--skip-orthanc]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache, partial
from pathlib import Path
from subprocess import DEVNULL, STDOUT, Popen

from dicom_corpus import Corpus, make_ct, make_tiny  # bench/dicom_corpus.py
from noop_scp import read_count  # bench/noop_scp.py

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK stalls on Nagle without it
READY_TIMEOUT = 30.0  # s, for a server to start answering
STOP_TIMEOUT = 10.0  # s, for a server to exit after SIGTERM
POLL = 0.05  # s
STALL_TIMEOUT = 60.0  # s, forward runs: give up when DEST gets no new file for this long
LOOP = "host: 127.0.0.1"
PROCS: list[Popen] = []  # every process started; all stopped in main()'s finally
ORTHANC_FORWARD_LUA = """\
function OnStoredInstance(instanceId, tags, metadata, origin)
  SendToModality(instanceId, 'DEST')
end
"""
ROUTER_FORWARD_RULE = """\
- name: all-to-dest
  when: {kind: dicom}
  then:
    - forward: DEST
"""


class StartError(RuntimeError):
    """A server exited or did not become ready in time."""


class RouterUnavailable(Exception):
    """`router serve` could not be started."""


@dataclass
class Result:
    corpus: str
    mode: str  # "receive", "receive<N>" (N parallel senders) or "forward"
    target: str
    instances: int
    seconds: float | None = None
    check: str = ""
    error: str | None = None
    round: int = 0

    @property
    def inst_s(self) -> float | None:
        return self.instances / self.seconds if self.seconds else None


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@cache
def dcmtk(tool: str) -> str:
    """Path of a DCMTK tool. pynetdicom installs same-named console scripts that may shadow it."""
    dirs = ["/usr/bin", *os.environ.get("PATH", "").split(os.pathsep)]
    for exe in (os.path.join(d, tool) for d in dirs if d):
        if os.access(exe, os.X_OK):
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
            if "dcmtk" in out.stdout.lower():
                return exe
    raise SystemExit(f"DCMTK {tool} not found")


def orthanc_exe() -> str | None:
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")


def version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, env=ENV)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    first = (out.stdout.strip() or out.stderr.strip() or "?").splitlines()[0].strip(" $")
    return first.removeprefix("dcmtk: ").removeprefix(os.path.dirname(cmd[0]) + "/")


def echo_ok(aet: str, port: int) -> bool:
    cmd = [dcmtk("echoscu"), "-aec", aet, "-to", "2", "-ta", "2", "127.0.0.1", str(port)]
    try:
        return subprocess.run(cmd, capture_output=True, env=ENV, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def http_get(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] = ENV) -> Popen:
    """Start cmd in a new process group, stdout and stderr to log_path."""
    with open(log_path, "wb") as log:
        proc = Popen(cmd, stdin=DEVNULL, stdout=log, stderr=STDOUT, env=env, start_new_session=True)
    PROCS.append(proc)
    return proc


def start_process(
    name: str, cmd: list[str], ready: Callable[[], bool], logdir: Path, env: dict[str, str] = ENV
) -> Popen:
    """spawn() cmd, logging to logdir/name.log, and wait until ready() (READY_TIMEOUT)."""
    log_path = logdir / f"{name}.log"
    proc = spawn(cmd, log_path, env)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(proc)
            raise StartError(f"{name} exited with code {proc.returncode}: {log_tail(log_path)}")
        if ready():
            return proc
        time.sleep(0.1)
    stop(proc)
    raise StartError(f"{name} not ready after {READY_TIMEOUT:.0f} s")


def wait_exactly(procs: list[Popen], timeout: float) -> None:
    """Wait until every one of ``procs`` has ended, seeing each end at once; after ``timeout`` s kill the process
    groups still running and raise ``TimeoutExpired``. (``Popen.wait(timeout)`` polls with sleeps growing to 50 ms,
    which added up to 50 ms to every timed run: a quarter of storescp's 0.2 s for the CT corpus.)"""
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        for proc in procs:
            proc.wait()  # a blocking waitpid: returns as the process ends
    finally:
        timer.cancel()
    if expired.is_set():
        raise subprocess.TimeoutExpired(procs[0].args, timeout)


def log_tail(path: Path) -> str:
    """The most telling line of a log: the last exception line, else the last line."""
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    errors = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception)\b", ln)]
    return (errors or lines or ["(empty log)"])[-1][:300]


def stop(proc: Popen) -> None:
    """SIGTERM the process's group, SIGKILL what is left of it after STOP_TIMEOUT. Once only."""
    if proc not in PROCS:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGKILL also gets storescp --fork children
        if sig == signal.SIGTERM and proc.poll() is not None:
            continue
        try:
            os.killpg(proc.pid, sig)
            proc.wait(STOP_TIMEOUT)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    PROCS.remove(proc)


# ---------------------------------------------------------------- targets


def start_storescp(
    workdir: Path,
    dicom_port: int,
    forward_dest: int | None = None,  # unused: storescp only receives
    aet: str = "STORESCP",
    fork: bool = False,
) -> Popen:
    """storescp writing into workdir/out. As DEST (or with ``fork``, for parallel senders) it gets --fork: a router
    may open several associations at once, which a single-process storescp would serve one after the other."""
    (workdir / "out").mkdir(parents=True, exist_ok=True)
    cmd = [dcmtk("storescp"), "-aet", aet, "-od", str(workdir / "out"), str(dicom_port)]
    if aet == "DEST" or fork:
        cmd.insert(1, "--fork")
    return start_process(aet.lower(), cmd, partial(echo_ok, aet, dicom_port), workdir)


def start_orthanc(workdir: Path, dicom_port: int, forward_dest: int | None = None) -> Popen:
    exe = orthanc_exe()
    if exe is None:
        raise StartError("Orthanc executable not found")
    http_port = free_port()
    config: dict = {
        "Name": "bench",
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
    }  # no "Plugins" key: Debian's Orthanc then loads no plugin
    if forward_dest is not None:
        lua = workdir / "forward.lua"
        lua.write_text(ORTHANC_FORWARD_LUA)
        config["DicomModalities"] = {"DEST": ["DEST", "127.0.0.1", forward_dest]}
        config["LuaScripts"] = [str(lua)]
    (workdir / "orthanc.json").write_text(json.dumps(config, indent=2))

    def ready() -> bool:
        return http_get(http_port, "/system") is not None and echo_ok("ORTHANC", dicom_port)

    return start_process("orthanc", [exe, str(workdir / "orthanc.json")], ready, workdir)


def start_router(workdir: Path, dicom_port: int, forward_dest: int | None = None) -> Popen:
    """Write workdir/router.yaml (+ rules/) and start `router serve` on it; wait for C-ECHO."""
    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    peers = " {}"
    if forward_dest is not None:
        peers = f"\n  DEST: {{ae_title: DEST, host: 127.0.0.1, port: {forward_dest}}}"
        (workdir / "rules" / "10-forward.yaml").write_text(ROUTER_FORWARD_RULE)
    config = workdir / "router.yaml"
    config.write_text(
        "ae_title: ROUTER\ndata_dir: var\nrules_dir: rules\n"
        f"dicom: {{port: {dicom_port}, max_associations: 16, allowed_calling_aets: [], {LOOP}}}\n"
        f"peers:{peers}\n"
        # beyond the contract: keep the router's other listeners off fixed ports and 0.0.0.0
        f"hl7: {{port: {free_port()}, {LOOP}}}\nhttp: {{port: {free_port()}, {LOOP}}}\n"
    )
    exe = shutil.which("router")
    cmd = [exe] if exe else [sys.executable, "-m", "router"]
    ready = partial(echo_ok, "ROUTER", dicom_port)
    return start_process("router", [*cmd, "serve", "--config", str(config)], ready, workdir, repo_env())


def repo_env() -> dict[str, str]:
    """ENV with this checkout first on PYTHONPATH: a child process runs this checkout's router."""
    return {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}


def start_floor(workdir: Path, dicom_port: int, forward_dest: int | None = None, sync: bool = False) -> Popen:
    """bench/noop_scp.py: the router's DIMSE stack receiving and keeping nothing (``sync``: one O_DSYNC write of
    each object before its answer); receive modes only."""
    cmd = [sys.executable, str(REPO_ROOT / "bench" / "noop_scp.py"), str(dicom_port), "--count", str(workdir / "count")]
    cmd += ["--sync", str(workdir / "ring")] if sync else []
    return start_process("floor", cmd, partial(echo_ok, "FLOOR", dicom_port), workdir, repo_env())


# name -> (AE title, start function with start_router's signature)
TARGETS: dict[str, tuple[str, Callable[[Path, int, int | None], Popen]]] = {
    "storescp": ("STORESCP", start_storescp),
    "orthanc": ("ORTHANC", start_orthanc),
    "router": ("ROUTER", start_router),
    "floor": ("FLOOR", start_floor),  # --floor: what the router's DIMSE stack allows (bench/noop_scp.py)
    "floor+sync": ("FLOOR", partial(start_floor, sync=True)),
}
RECEIVE_ONLY = {"storescp", "floor", "floor+sync"}


def count_files(folder: Path) -> int:
    return sum(1 for e in os.scandir(folder) if e.is_file())


def received(target: str, workdir: Path) -> int | None:
    """Instances the receive target holds, where we know how to tell."""
    if target == "storescp":
        return count_files(workdir / "out")
    if target == "orthanc":
        port = json.loads((workdir / "orthanc.json").read_text())["HttpPort"]
        return (http_get(port, "/statistics") or {}).get("CountInstances")
    if target.startswith("floor"):
        return read_count(workdir / "count")
    return None


def time_storescu(
    corpus: Corpus,
    aet: str,
    port: int,
    logdir: Path,
    timeout: float,
    dest: Path | None = None,
    parallel: int = 1,
) -> float:
    """Send the corpus over one association. Seconds until storescu exits or, with dest, until
    dest holds as many files as the corpus (polled every POLL s; given up after timeout, or
    after STALL_TIMEOUT without a new file once storescu has ended). With ``parallel`` > 1 (receive only):
    that many storescu processes at once, each with every parallel-th file of the corpus; the wall time of all."""
    if parallel > 1:
        return time_parallel(corpus, aet, port, logdir, timeout, parallel)
    cmd = [dcmtk("storescu"), "-aet", "BENCH", "-aec", aet, "--scan-directories", "--recurse"]
    cmd += ["127.0.0.1", str(port), str(corpus.path)]
    log_path = logdir / "storescu.log"
    t0 = time.perf_counter()
    proc = spawn(cmd, log_path)
    try:
        if dest is None:
            wait_exactly([proc], timeout)
        else:
            seen, idle_since = -1, t0
            while (n := count_files(dest)) < corpus.count and not proc.poll():
                now = time.perf_counter()
                if n != seen or proc.returncode is None:  # storescu still sending: not idle
                    seen, idle_since = n, now
                if now - t0 > timeout or now - idle_since > STALL_TIMEOUT:
                    break
                time.sleep(POLL)
        elapsed = time.perf_counter() - t0
        proc.wait(timeout)  # forward: storescu must still end cleanly
        if proc.returncode:
            raise RuntimeError(f"storescu exited with code {proc.returncode}: {log_tail(log_path)}")
        if dest is not None and (n := count_files(dest)) < corpus.count:
            raise RuntimeError(f"DEST got {n}/{corpus.count} instances in {elapsed:.0f} s")
        return elapsed
    finally:
        stop(proc)


def time_parallel(corpus: Corpus, aet: str, port: int, logdir: Path, timeout: float, parallel: int) -> float:
    """Seconds for ``parallel`` storescu processes, each sending its share of the corpus over one association."""
    names = sorted(str(p) for p in corpus.path.rglob("*") if p.is_file())
    procs = []
    t0 = time.perf_counter()
    try:
        for i in range(parallel):
            cmd = [dcmtk("storescu"), "-aet", f"BENCH{i}", "-aec", aet, "127.0.0.1", str(port), *names[i::parallel]]
            procs.append(spawn(cmd, logdir / f"storescu{i}.log"))
        wait_exactly(procs, timeout)
        elapsed = time.perf_counter() - t0
        for i, proc in enumerate(procs):
            if proc.returncode:
                raise RuntimeError(
                    f"storescu {i} exited with code {proc.returncode}: {log_tail(logdir / f'storescu{i}.log')}"
                )
        return elapsed
    finally:
        for proc in procs:
            stop(proc)


def bench(corpus: Corpus, mode: str, target: str, root: Path, timeout: float) -> Result:
    """Start target (and DEST for mode 'forward') fresh, push the corpus, time it, stop all."""
    aet, start = TARGETS[target]
    parallel = int(mode[len("receive") :] or 1) if mode.startswith("receive") else 1  # "receive4": four senders
    if target == "storescp" and parallel > 1:
        start = partial(start_storescp, fork=True)
    res = Result(corpus.name, mode, target, corpus.count)
    workdir = root / f"{corpus.name}-{mode}-{target}"
    workdir.mkdir()
    procs: list[Popen] = []
    try:
        dest_dir, dest_out, dest_port = workdir / "dest", None, None
        if mode == "forward":
            dest_dir.mkdir()
            dest_port = free_port()
            procs.append(start_storescp(dest_dir, dest_port, aet="DEST"))
            dest_out = dest_dir / "out"
        port = free_port()
        try:
            procs.append(start(workdir, port, dest_port))
        except StartError as exc:
            if target == "router":
                raise RouterUnavailable(str(exc)) from exc
            raise
        os.sync()  # start on a quiet disk: no target pays for the writeback of the corpus or of the run before
        res.seconds = time_storescu(corpus, aet, port, workdir, timeout, dest_out, parallel)
        got = corpus.count if mode == "forward" else received(target, workdir)
        res.check = "n/a" if got is None else "ok" if got == corpus.count else f"got {got}"
    except (StartError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return res


# ---------------------------------------------------------------- report


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(results: list[Result], corpora: dict[str, Corpus]) -> None:
    """One line per run; with several rounds, each run's round too, runs of the same kind together."""
    rounds = any(r.round for r in results)
    head = f"{'corpus':<7}{'mode':<9}{'target':<10}" + (f"{'round':>6}" if rounds else "")
    print(f"\n{head}{'instances':>10}{'seconds':>9}{'inst/s':>10}{'MB/s':>9}  check")
    order = {key: i for i, key in enumerate(dict.fromkeys((r.corpus, r.mode, r.target) for r in results))}
    for r in sorted(results, key=lambda r: (order[(r.corpus, r.mode, r.target)], r.round)):
        mb_s = corpora[r.corpus].nbytes / 1e6 / r.seconds if r.seconds else None
        print(
            f"{r.corpus:<7}{r.mode:<9}{r.target:<10}"
            + (f"{r.round + 1:>6}" if rounds else "")
            + f"{r.instances:>10}{fmt(r.seconds):>9}{fmt(r.inst_s, '.1f'):>10}{fmt(mb_s):>9}  {r.error or r.check}"
        )


RATIOS = [("receive", "orthanc"), ("receive", "storescp"), ("forward", "orthanc")]


def ratios(results: list[Result]) -> dict[str, float | None]:
    rate = {(r.corpus, r.mode, r.target): r.inst_s for r in results}
    out: dict[str, float | None] = {}
    parallel = sorted({r.mode for r in results if r.mode.startswith("receive") and r.mode != "receive"})
    floors = sorted({r.target for r in results if r.target.startswith("floor")})
    receives = ["receive", *parallel]
    pairs = [("router", mode, other) for mode, other in RATIOS]
    pairs += [("router", m, t) for m in parallel for t in ("orthanc", "storescp")]
    pairs += [(floor, m, t) for floor in floors for m in receives for t in ("orthanc", "storescp")]  # the ceiling
    pairs += [("router", m, floor) for floor in floors for m in receives]  # of the router's stack; its share of it
    for corpus in dict.fromkeys(r.corpus for r in results):
        for target, mode, other in pairs:
            a, b = rate.get((corpus, mode, target)), rate.get((corpus, mode, other))
            out[f"{corpus} {mode} {target}/{other}"] = a / b if a and b else None
    return out


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", type=int, default=2000, help="tiny SC instances (default 2000)")
    ap.add_argument("--ct", type=int, default=300, help="512x512 CT slices (default 300)")
    ap.add_argument("--out", type=Path, help="write results to this JSON file")
    ap.add_argument(
        "--parallel", type=int, default=1, help="also receive with N storescu processes at once (default 1: not)"
    )
    ap.add_argument("--skip-orthanc", action="store_true", help="do not benchmark Orthanc")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also receive with the router's DIMSE stack alone, keeping nothing (floor) and with one O_DSYNC write "
        "per object (floor+sync): bench/noop_scp.py",
    )
    ap.add_argument("--timeout", type=float, default=600, help="per-run bound in s (default 600)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="run everything N times, targets in a rotating order (default 1)"
    )
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks

    versions = {"DCMTK": version([dcmtk("storescu"), "--version"])}
    orthanc = orthanc_exe()
    if not args.skip_orthanc:
        versions["Orthanc"] = version([orthanc, "--version"]) if orthanc else "not found"
    print("\n".join(f"{k}: {v}" for k, v in versions.items()))
    targets = ["storescp", "router"] + ([] if args.skip_orthanc else ["orthanc"])
    targets += ["floor", "floor+sync"] if args.floor else []
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    results: list[Result] = []
    try:
        t0 = time.perf_counter()
        made = [make_tiny(tmp / "tiny", args.tiny), make_ct(tmp / "ct", args.ct)]
        corpora = {c.name: c for c in made}
        for c in corpora.values():
            print(f"corpus {c.name}: {c.count} files, {c.nbytes / 1e6:.1f} MB")
        print(f"corpora generated in {time.perf_counter() - t0:.1f} s")
        router_down: str | None = None
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]  # no target always follows another
            plan = [(c, "receive", t) for c in corpora.values() for t in order]
            if args.parallel > 1:
                plan += [(c, f"receive{args.parallel}", t) for c in corpora.values() for t in order]
            plan += [(c, "forward", t) for c in corpora.values() for t in order if t not in RECEIVE_ONLY]
            for corpus, mode, target in plan:
                if target == "router" and router_down:
                    continue
                try:
                    res = bench(corpus, mode, target, tmp, args.timeout)
                except RouterUnavailable as exc:
                    router_down = str(exc)
                    print(f"router: not available ({exc})")
                    continue
                res.round = rnd
                results.append(res)
                label = f"round {rnd + 1}: " if args.rounds > 1 else ""
                print(f"{label}{corpus.name} {mode} {target}: {fmt(res.seconds)} s {res.error or res.check}")
        print_table(results, corpora)
        by_round = [ratios([r for r in results if r.round == rnd]) for rnd in range(args.rounds)]
        rat = {key: median_or_none([b.get(key) for b in by_round]) for key in by_round[0]}
        print("\nratios of inst/s" + (f" (median of {args.rounds} rounds, range)" if args.rounds > 1 else "") + ":")
        for key, val in rat.items():
            spread = [v for b in by_round if (v := b.get(key))]
            extra = f"  ({min(spread):.2f}-{max(spread):.2f})" if args.rounds > 1 and spread else ""
            print(f"  {key:<34}{fmt(val) if val else 'n/a'}{extra}")
        if args.out:
            rows = [{**asdict(r), "inst_s": r.inst_s} for r in results]
            sizes = [{**asdict(c), "path": None} for c in corpora.values()]
            doc: dict[str, object] = {"versions": versions, "ratios": rat, "ratios_by_round": by_round}
            doc |= {"router": router_down or "available", "corpora": sizes, "results": rows}
            args.out.write_text(json.dumps(doc, indent=2) + "\n")
            print(f"results written to {args.out}")
        return 0 if all(r.error is None for r in results) else 1
    finally:
        while PROCS:
            stop(PROCS[-1])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
