"""``router print PRINTER FILES... [--format "STANDARD\\2,2"] [--copies N] [--no-wait]``: print on a DICOM printer.

The files (folders are walked) are checked, written with the job's own settings as one bundle under
``data_dir/print/`` and queued as one print job through the outbox (``router.printing.bundle``): the running
router's forward workers send it as any job, with retries, backoff and dead letters. The command then follows the
job row until it is done or dead (printing each failed attempt) and prints its outcome; ``--no-wait`` prints the
job id and returns at once. Exit status: 0 printed, 1 failed (dead, or still not printed after ``--timeout``),
2 a usage problem (unknown printer, a file that is no image, a bad format).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from router.config import DicomPeer, RouterConfig, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
POLL = 0.2  # s between two looks at the job row


def _printer(cfg: RouterConfig, name: str) -> tuple[str, DicomPeer]:
    """The printer called ``name`` (a peer name, or its AE title)."""
    found = [(n, p) for n, p in cfg.peers.items() if n == name or (isinstance(p, DicomPeer) and p.is_ae(name))]
    printers = sorted(n for n, p in cfg.peers.items() if isinstance(p, DicomPeer) and p.print is not None)
    if not found:
        raise ValueError(f"no peer {name!r} (printers: {', '.join(printers) or 'none configured'})")
    peer_name, peer = found[0]
    if not isinstance(peer, DicomPeer) or peer.print is None:
        raise ValueError(f"peer {peer_name!r} is not a printer: give it a print section (print: {{}} for defaults)")
    return peer_name, peer


def _images(paths: list[str]) -> list[bytes]:
    """The Part 10 files named (folders walked, in name order); ValueError naming every file that is no image."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    found: list[Path] = []
    for given in map(Path, paths):
        found += sorted(p for p in given.rglob("*") if p.is_file()) if given.is_dir() else [given]
    problems, images = [], []
    for path in found:
        try:
            data = path.read_bytes()
            ds = dcmread(path, stop_before_pixels=False, specific_tags=["PixelData"])
        except (OSError, InvalidDicomError) as exc:
            problems.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if "PixelData" not in ds:
            problems.append(f"{path}: no image (no Pixel Data)")
            continue
        images.append(data)
    if problems or not images:
        raise ValueError("; ".join(problems) or "no files to print")
    return images


def _queue(cfg: RouterConfig, peer_name: str, images: list[bytes], fmt: str | None, copies: int | None) -> int:
    from router.outbox.jobs import JobKind, NewJob, enqueue_one
    from router.printing.bundle import Overrides, write_bundle
    from router.store.db import make_engine, sqlite_file
    from router.store.writelock import write_lock_for

    url = cfg.effective_database_url
    engine = make_engine(url)
    relpath, uid = write_bundle(cfg.data_dir, images, Overrides(fmt, copies))
    lock: Any = write_lock_for(url) if sqlite_file(url) is not None else None
    job = NewJob(JobKind.PRINT, peer_name, uid, relpath, rule="router print")
    if lock is not None:
        with lock, engine.begin() as conn:
            return enqueue_one(conn, job)
    with engine.begin() as conn:
        return enqueue_one(conn, job)


def _wait(cfg: RouterConfig, job_id: int, peer_name: str, timeout: float) -> int:
    """Follow the job until done or dead (or ``timeout``); print what happens; the exit status."""
    from router.outbox.queue import Outbox
    from router.statuses import print_status_text
    from router.store.db import make_engine
    from router.store.models import JobState

    outbox = Outbox(make_engine(cfg.effective_database_url), cfg.forward, cfg.data_dir)
    deadline, attempts = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        job = outbox.get(job_id)
        if job is None:
            print(f"print job {job_id} is gone (purged or deleted)", file=sys.stderr)
            return EXIT_FAILED
        if job.state == JobState.DONE:
            status = job.last_status or 0
            print(f"printed: job {job_id} done on {job.peer} (printer answered {print_status_text(status)})")
            return EXIT_OK
        if job.state == JobState.DEAD:
            print(f"print failed: job {job_id} dead after {job.attempts} attempt(s): {job.last_error}", file=sys.stderr)
            return EXIT_FAILED
        if job.attempts > attempts:
            attempts = job.attempts
            print(f"attempt {attempts} failed: {job.last_error}; trying again at {job.next_attempt_at:%H:%M:%S} UTC",
                  file=sys.stderr)  # fmt: skip
        time.sleep(POLL)  # polling the job row: the state lives in the database the router's workers write
    print(f"print job {job_id} not printed after {timeout:g} s (is the router running?); it stays queued: "
          f"router queue list --peer {peer_name}", file=sys.stderr)  # fmt: skip
    return EXIT_FAILED


def cmd_print(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    try:
        peer_name, peer = _printer(cfg, args.printer)
        assert peer.print is not None
        peer.print.with_overrides(args.format, args.copies)
        images = _images(args.files)
    except ValueError as exc:  # a pydantic ValidationError is one too
        print(f"router print: {exc}", file=sys.stderr)
        return EXIT_USAGE
    job_id = _queue(cfg, peer_name, images, args.format, args.copies)
    print(f"queued print job {job_id}: {len(images)} object(s) for {peer_name} ({peer.ae_title})")
    if args.no_wait:
        return EXIT_OK
    return _wait(cfg, job_id, peer_name, args.timeout)


def add_print_command(sub: Any) -> argparse.ArgumentParser:
    """``router print``: one registration line in router/cli.py."""
    p = sub.add_parser("print", help="print images on a DICOM printer (queued through the outbox)")
    p.add_argument("printer", help="a printer: a peer with a print section (its name or AE title)")
    p.add_argument("files", nargs="+", help="Part 10 files or folders; every frame is one image, in this order")
    p.add_argument("--format", help='Image Display Format for this job, e.g. "STANDARD\\2,2" (default: the peer\'s)')
    p.add_argument("--copies", type=int, help="number of copies for this job (default: the peer's)")
    p.add_argument("--no-wait", action="store_true", help="queue the job and return")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the outcome (default 600)")
    p.add_argument("--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_print)
    return p
