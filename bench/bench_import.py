"""Media import throughput: ``router import`` of a DICOMDIR file-set beside DCMTK ``storescu`` of the same folder
into a running router, on 127.0.0.1.

Usage: python bench/bench_import.py [--tiny N] [--ct N] [--timeout S] [--out FILE]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# the same process handling as bench_store
from bench_store import dcmtk, free_port, repo_env, spawn, start_router, stop, wait_exactly
from dicom_corpus import make_ct, make_tiny

LIMITS = {"tiny": (0, 20_000), "ct": (0, 2_000), "timeout": (1, 3_600)}


@dataclass
class Run:
    corpus: str
    method: str  # router import | storescu -> router serve
    objects: int
    seconds: float
    check: str

    @property
    def rate(self) -> float:
        return self.objects / self.seconds if self.seconds else 0.0


def media_from(corpus: Path, media: Path) -> int:
    """The corpus as a General Purpose file-set: files IM000000... in folders of 500, and a DICOMDIR by dcmmkdir."""
    files = sorted(corpus.iterdir())
    for n, src in enumerate(files):
        target = media / f"D{n // 500:07d}" / f"IM{n:06d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, target)
    made = subprocess.run([dcmtk("dcmmkdir"), "+r", "-Pgp", "+I", "+id", str(media), "+D", str(media / "DICOMDIR")],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if made.returncode:
        raise RuntimeError(f"dcmmkdir failed: {made.stderr[-300:]}")
    return len(files)


def router_cmd() -> list[str]:
    exe = shutil.which("router")
    return [exe] if exe else [sys.executable, "-m", "router"]


def time_import(media: Path, count: int, work: Path, timeout: float) -> Run:
    """``router import MEDIA/DICOMDIR`` into a fresh data folder, no rules, no server (Python start-up included)."""
    (work / "rules").mkdir(parents=True)
    config = work / "router.yaml"
    config.write_text("data_dir: var\nrules_dir: rules\n")
    t0 = time.perf_counter()
    done = subprocess.run([*router_cmd(), "--config", str(config), "import", str(media / "DICOMDIR"), "-q",
                           "--report", str(work / "report.json")], capture_output=True, text=True, timeout=timeout,
                          env=repo_env())  # fmt: skip
    elapsed = time.perf_counter() - t0
    counts = json.loads((work / "report.json").read_text())["counts"] if (work / "report.json").exists() else {}
    check = "ok" if done.returncode == 0 and counts.get("imported") == count else f"{done.returncode} {counts}"
    return Run(media.name, "router import", count, elapsed, check)


def time_storescu(media: Path, count: int, work: Path, timeout: float) -> Run:
    """DCMTK ``storescu +sd +r`` of the same folder (the objects, not the DICOMDIR) into ``router serve``."""
    work.mkdir(parents=True)
    port = free_port()
    router = start_router(work, port)
    try:
        cmd = [dcmtk("storescu"), "-aet", "BENCH", "-aec", "ROUTER", "--scan-directories", "--recurse",
               "--scan-pattern", "IM*", "127.0.0.1", str(port), str(media)]  # fmt: skip
        t0 = time.perf_counter()
        proc = spawn(cmd, work / "storescu.log")
        try:
            wait_exactly([proc], timeout)
            elapsed = time.perf_counter() - t0
        finally:
            stop(proc)
    finally:
        stop(router)
    return Run(media.name, "storescu -> router serve", count, elapsed, "ok" if proc.returncode == 0 else
               f"storescu exited {proc.returncode}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", type=int, default=2000, help="small Secondary Capture objects (about 1 KB)")
    parser.add_argument("--ct", type=int, default=300, help="512x512 CT slices (about 525 KB)")
    parser.add_argument("--timeout", type=float, default=600, help="upper bound of one run, seconds")
    parser.add_argument("--out", help="also write the results as JSON")
    args = parser.parse_args()
    for name, (low, high) in LIMITS.items():
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be within {low}..{high}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        root = Path(tmp)
        for name, n, make in (("tiny", args.tiny, make_tiny), ("ct", args.ct, make_ct)):
            if n == 0:
                continue
            media = root / name
            count = media_from(make(root / f"{name}-corpus", n).path, media)
            subprocess.run(["sync"], check=False)
            for run in (time_import(media, count, root / f"{name}-import", args.timeout),
                        time_storescu(media, count, root / f"{name}-storescu", args.timeout)):  # fmt: skip
                runs.append(run)
                print(f"{run.corpus:5} {run.method:26} {run.objects:6d} {run.seconds:8.2f} s {run.rate:8.1f} "
                      f"objects/s  {run.check}", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps([{**asdict(r), "rate": r.rate} for r in runs], indent=1) + "\n")
    return 0 if all(r.check == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
