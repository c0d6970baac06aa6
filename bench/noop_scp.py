"""The router's DIMSE stack alone: a C-STORE SCP that receives each object as the router does and keeps nothing.

Usage: python bench/noop_scp.py PORT [--aet FLOOR] [--sync FILE] [--count FILE]

pynetdicom with the router's patches (``router._pynetdicom.install()``) and its listener's AE (``listener_ae``,
``tune_server``, the default ``dicom.max_pdu``), each object framed as a Part 10 file with the listener's
``p10(event)`` and answered success. With ``--sync FILE`` each object is also written into a
preallocated FILE with one ``O_DSYNC`` write before the answer (wrapping round at 64 MiB): the one synchronous
write per acknowledgement that a durable receiver cannot do without. With ``--count FILE`` the number of objects
received so far is kept in FILE (8 bytes, little-endian, through a shared mapping), for the bench's check.

bench_store.py runs it as the targets ``floor`` and ``floor+sync``: the rate of these is what the router could
reach if everything it does besides receiving (checks, rules, index, journal record, log, hooks) cost nothing, in
the same run as Orthanc and storescp. Loopback only; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the checkout whose router this runs (put first on sys.path by main)
RING = 64 << 20  # bytes the --sync file holds before it wraps round
BLOCK = 4096
SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
SOP_CLASSES = ["1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.2"]  # Secondary Capture, CT (the corpora)
VERIFICATION = "1.2.840.10008.1.1"


class SyncWriter:
    """Each object appended with one O_DSYNC write, at a block boundary, into a preallocated ring file."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DSYNC, 0o600)
        os.posix_fallocate(self.fd, 0, RING)
        os.fsync(self.fd)
        self.offset = 0
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        size = -(-len(data) // BLOCK) * BLOCK
        with self.lock:
            if self.offset + size > RING:
                self.offset = 0
            at, self.offset = self.offset, self.offset + size
        os.pwrite(self.fd, data, at)


class Counter:
    """Objects received so far, in a file another process reads (``read_count``)."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(bytes(8))
        with open(path, "r+b") as f:
            self.map = mmap.mmap(f.fileno(), 8)
        self.n = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.n += 1
            self.map[:8] = self.n.to_bytes(8, "little")


def read_count(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--aet", default="FLOOR")
    ap.add_argument("--sync", type=Path, help="one O_DSYNC write of each object into this file before the answer")
    ap.add_argument("--count", type=Path, help="keep the number of objects received in this file (8 bytes)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))

    from pynetdicom import evt

    from router import _pynetdicom
    from router.config.model import DicomListener
    from router.listeners.dimse.p10 import p10
    from router.scu.association import set_nodelay

    _pynetdicom.quiet_event_logging()
    _pynetdicom.install()
    writer = SyncWriter(args.sync) if args.sync else None
    counter = Counter(args.count) if args.count else None

    def on_store(event: Any) -> int:
        raw = p10(event)
        if writer is not None:
            writer.write(raw)
        if counter is not None:
            counter.add()
        return 0x0000

    ae = _pynetdicom.listener_ae(args.aet)
    ae.maximum_associations = 16
    ae.maximum_pdu_size = DicomListener().max_pdu  # as the router's listener: 256 KiB, not pynetdicom's 16 KiB
    for sop_class in SOP_CLASSES:
        ae.add_supported_context(sop_class, SYNTAXES)
    ae.add_supported_context(VERIFICATION, SYNTAXES)
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_C_STORE, on_store)]
    server = ae.start_server(("127.0.0.1", args.port), block=False, evt_handlers=handlers)
    assert server is not None  # block=False
    _pynetdicom.tune_server(server)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
