"""A router forwarding to a destination, watched through its job table: the helpers of the forward queue tests
(resilience, crash recovery, forward process, queue CLI, commitment, MPPS).

``router_to_dest`` builds the router; ``send``/``send_ok`` feed it over pynetdicom; ``db_rows``, ``jobs`` and
``job_states`` read its SQLite index; ``wait_while_up`` waits on a condition and fails at once (with the end of
the router's log) if the router dies meanwhile; ``ScriptedSCP`` is an in-process destination answering what a
test decides.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from peers import SECONDARY_CAPTURE, RouterProcess, StoreSCP, free_port, make_instance, wait_for, write_instances

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
ROUTE_ALL_TO_DEST = {"10-all.yaml": [{"name": "all-to-dest", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]}


def peer_at(port: int, aet: str = "DEST") -> dict[str, Any]:
    return {"ae_title": aet, "host": "127.0.0.1", "port": port}


def router_to_dest(workdir: Path, port: int, **settings: Any) -> RouterProcess:
    """A router (not started) forwarding every DICOM object to the peer DEST on ``port``."""
    return RouterProcess(workdir, peers={"DEST": peer_at(port)}, rules=ROUTE_ALL_TO_DEST, **settings)


def db_rows(router: RouterProcess, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of the router's SQLite index, as dicts (peers.query takes a database path and gives tuples)."""
    db = sqlite3.connect(router.data_dir / "router.db", timeout=30)
    try:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, params).fetchall()]
    finally:
        db.close()


def jobs(router: RouterProcess) -> list[dict[str, Any]]:
    return db_rows(
        router, "select id, peer, sop_uid, state, attempts, last_error, last_status, updated_at from job order by id"
    )


def job_states(router: RouterProcess) -> Counter[str]:
    return Counter(j["state"] for j in jobs(router))


def jobs_by_uid(router: RouterProcess) -> dict[str, dict[str, Any]]:
    return {j["sop_uid"]: j for j in jobs(router)}


def generated(folder: Path, count: int, **attrs: Any) -> list[Path]:
    """``count`` small Secondary Capture files of one series."""
    study, series = generate_uid(), generate_uid()
    return write_instances(folder, [make_instance(study, series, **attrs) for _ in range(count)])


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _nodelay(event: evt.Event) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send(
    port: int, files: list[Path], results: list[tuple[str, int | None]] | None = None, aec: str = "ROUTER"
) -> list[tuple[str, int | None]]:
    """C-STORE ``files`` over one association; (SOP Instance UID, status or None) per file, appended as we go.

    Stops at the first object without a response (association lost)."""
    results = [] if results is None else results
    ae = AE(ae_title="RESILIENCE")
    ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.connection_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=aec, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    assert assoc.is_established, f"association to {aec} on {port} failed"
    try:
        for path in files:
            uid = path.name.removesuffix(".dcm")  # write_instances names files by SOP Instance UID
            try:
                rsp = assoc.send_c_store(path) if assoc.is_established else Dataset()
            except Exception:
                rsp = Dataset()
            status = int(rsp.Status) if "Status" in rsp else None
            results.append((uid, status))
            if status is None:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def send_ok(port: int, files: list[Path]) -> list[str]:
    """Send and require 0x0000 for every object; returns the SOP Instance UIDs."""
    results = send(port, files)
    bad = [(uid, status) for uid, status in results if status != SUCCESS]
    assert len(results) == len(files) and not bad, f"the router did not take everything: {bad[:5]}"
    return [uid for uid, _ in results]


def received_uids(scp: StoreSCP) -> list[str]:
    """The SOP Instance UID of every file storescp wrote, duplicates included."""
    return [sop_uid(p) for p in scp.received()]


class ScriptedSCP:
    """An in-process pynetdicom storage SCP answering ``status_for(dataset)`` to each C-STORE.

    ``answers`` records (SOP Instance UID, status) in order."""

    def __init__(self, status_for: Callable[[Dataset], int], aet: str = "DEST", port: int | None = None):
        self.status_for = status_for
        self.aet = aet
        self.port = port or free_port()
        self.answers: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self.ae = AE(ae_title=aet)
        for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            self.ae.add_supported_context(SECONDARY_CAPTURE, ts)
        self.ae.add_supported_context("1.2.840.10008.1.1")
        self.server: Any = None

    def _on_store(self, event: evt.Event) -> int:
        ds = event.dataset
        status = self.status_for(ds)
        with self._lock:
            self.answers.append((str(ds.SOPInstanceUID), status))
        return status

    def accepted(self) -> list[str]:
        with self._lock:
            return [uid for uid, status in self.answers if status == SUCCESS]

    def answered(self, uid: str) -> list[int]:
        with self._lock:
            return [status for u, status in self.answers if u == uid]

    @contextlib.contextmanager
    def serving(self) -> Iterator[ScriptedSCP]:
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay), (evt.EVT_C_STORE, self._on_store)],
        )
        try:
            yield self
        finally:
            self.server.shutdown()


def log_tail(router: RouterProcess, lines: int = 15) -> str:
    return "\n".join(router.output().splitlines()[-lines:])


def wait_while_up(router: RouterProcess, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_for, failing at once (with the end of its log) when the router process has gone."""

    def check() -> bool:
        if not router.alive():
            raise AssertionError(f"the router exited while waiting for {what}:\n{log_tail(router)}")
        return predicate()

    wait_for(check, timeout, 0.2, what)


def wait_for_states(router: RouterProcess, expected: dict[str, int], timeout: float) -> None:
    wait_while_up(router, lambda: job_states(router) == Counter(expected), timeout, f"job states {expected}")


def index_and_files_disagree(
    data_dir: Path, query: Callable[[str], list[tuple[Any, ...]]] | None = None
) -> dict[str, list[str]]:
    """Where a router's index and its object files disagree (empty lists when they agree): instance rows whose file
    is missing, files under ``objects/`` without an instance row, and series, studies and patients (those the HL7
    feed does not keep) left without children. ``query`` runs SQL on the index (default: its SQLite file)."""

    def sqlite_rows(sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(data_dir / "router.db", timeout=30)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    rows = query or sqlite_rows
    indexed = {str(path) for (path,) in rows("select path from instance")}
    empty = {
        "series": "select series_uid from series where id not in (select series_fk from instance)",
        "studies": "select study_uid from study where id not in (select study_fk from series)",
        "patients": "select id from patient where id not in (select patient_fk from study) and id not in"
        " (select patient_fk from worklistitem union select patient_fk from patientidentifier"
        " union select patient_fk from patientdetails)",
    }
    found = {name: [str(v) for (v,) in rows(sql)] for name, sql in empty.items()}
    files = {str(p.relative_to(data_dir)) for p in (data_dir / "objects").rglob("*") if p.is_file()}
    return {"rows without a file": sorted(indexed - files), "files without a row": sorted(files - indexed), **found}
