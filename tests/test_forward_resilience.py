"""The forward queue against peers that are down, refuse, or refuse for a while: nothing lost, nothing doubled.

The helpers at the top are shared with test_crash_recovery.py and test_queue_cli.py.
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
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from peers import (
    SECONDARY_CAPTURE,
    RouterProcess,
    StoreSCP,
    free_port,
    make_instance,
    running,
    wait_for,
    write_instances,
)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
ROUTE_ALL_TO_DEST = {"10-all.yaml": [{"name": "all-to-dest", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]}


# -- shared helpers -----------------------------------------------------------------------------------------
def peer_at(port: int, aet: str = "DEST") -> dict[str, Any]:
    return {"ae_title": aet, "host": "127.0.0.1", "port": port}


def router_to_dest(workdir: Path, port: int, **settings: Any) -> RouterProcess:
    """A router (not started) forwarding every DICOM object to the peer DEST on ``port``."""
    return RouterProcess(workdir, peers={"DEST": peer_at(port)}, rules=ROUTE_ALL_TO_DEST, **settings)


def query(router: RouterProcess, sql: str, *params: Any) -> list[dict[str, Any]]:
    db = sqlite3.connect(router.data_dir / "router.db", timeout=30)
    try:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, params).fetchall()]
    finally:
        db.close()


def jobs(router: RouterProcess) -> list[dict[str, Any]]:
    return query(
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


# -- tests --------------------------------------------------------------------------------------------------
@pytest.mark.interop  # DCMTK storescp
def test_destination_down_then_up_all_arrive_once(workdir: Path) -> None:
    dest = StoreSCP(workdir, "DEST", port=free_port())  # not started: the port is closed
    router = router_to_dest(workdir, dest.port)  # default max_attempts
    with running(router.start(), dest):
        sent = send_ok(router.port, generated(workdir / "in", 200))

        def all_failed_twice() -> bool:
            return len(jobs(router)) == 200 and all(j["attempts"] >= 2 for j in jobs(router))

        # the whole queue ages together: each connection attempt is charged to every due job of the peer
        wait_while_up(router, all_failed_twice, 30, "every job failing twice")
        assert job_states(router).keys() <= {"pending", "inflight"}, "nothing done or dead while DEST is down"
        # every failed connection attempt is charged to every pending job once (objects that arrived later have
        # seen fewer rounds): between two looks, all jobs aged by the same number of rounds
        before = {j["id"]: j["attempts"] for j in jobs(router)}
        wait_while_up(
            router,
            lambda: max(j["attempts"] for j in jobs(router)) >= max(before.values()) + 2,
            30,
            "two more failed rounds",
        )
        aged = Counter(j["attempts"] - before[j["id"]] for j in jobs(router))
        # (a batch in flight across a round boundary is charged in the next round: one round of slack)
        assert min(aged) >= 1 and max(aged) - min(aged) <= 1, f"jobs aged unevenly between two looks: {aged}"
        assert all(f"association to DEST@127.0.0.1:{dest.port}" in j["last_error"] for j in jobs(router))

        dest.start()
        wait_while_up(router, lambda: len(dest.received()) >= 200, 60, "200 objects at DEST")
        wait_for_states(router, {"done": 200}, 30)
        arrived = received_uids(dest)
        assert len(arrived) == 200, f"{len(arrived) - len(set(arrived))} duplicate deliveries"
        assert sorted(arrived) == sorted(sent)


def test_permanent_refusal_dead_letters_at_once(workdir: Path) -> None:
    transient_accepted = threading.Event()

    def status_for(ds: Dataset) -> int:
        if ds.PatientID == "BAD":
            return DATASET_MISMATCH
        if ds.PatientID == "BUSY" and not transient_accepted.is_set():
            return OUT_OF_RESOURCES
        return SUCCESS

    scp = ScriptedSCP(status_for)
    router = router_to_dest(workdir, scp.port)
    good = generated(workdir / "good", 3)
    bad = generated(workdir / "bad", 2, PatientID="BAD")
    busy = generated(workdir / "busy", 1, PatientID="BUSY")
    with scp.serving(), running(router.start()):
        send_ok(router.port, good + bad + busy)
        [busy_uid] = [sop_uid(p) for p in busy]
        good_uids, bad_uids = {sop_uid(p) for p in good}, {sop_uid(p) for p in bad}

        def settled() -> bool:
            by_uid = jobs_by_uid(router)
            return (
                len(by_uid) == 6
                and all(by_uid[u]["state"] == "done" for u in good_uids)
                and all(by_uid[u]["state"] == "dead" for u in bad_uids)
                and by_uid[busy_uid]["attempts"] >= 2
            )

        wait_while_up(router, settled, 30, "good done, bad dead, busy retried")
        by_uid = jobs_by_uid(router)
        for uid in bad_uids:
            job = by_uid[uid]
            assert (job["attempts"], job["last_status"]) == (1, DATASET_MISMATCH), job
            assert "0xA900" in job["last_error"]
            assert scp.answered(uid) == [DATASET_MISMATCH], "a permanent refusal must not be retried"
        busy_job = by_uid[busy_uid]
        assert busy_job["state"] in ("pending", "inflight"), busy_job  # inflight: being retried right now
        assert busy_job["last_status"] == OUT_OF_RESOURCES and "0xA700" in busy_job["last_error"], busy_job

        transient_accepted.set()
        wait_while_up(router, lambda: jobs_by_uid(router)[busy_uid]["state"] == "done", 30, "busy object delivered")
        answers = scp.answered(busy_uid)
        assert answers[-1] == SUCCESS and len(answers) >= 3 and set(answers[:-1]) == {OUT_OF_RESOURCES}, answers
        assert sorted(scp.accepted()) == sorted(good_uids | {busy_uid}), "each accepted exactly once"
        assert job_states(router) == Counter({"done": 4, "dead": 2})


def test_max_attempts_then_dead(workdir: Path) -> None:
    port = free_port()  # nothing listens here
    router = router_to_dest(workdir, port, forward={"max_attempts": 3})
    with running(router.start()):
        uids = send_ok(router.port, generated(workdir / "in", 3))
        wait_for_states(router, {"dead": 3}, 30)
        assert {j["sop_uid"] for j in jobs(router)} == set(uids)
        [job, *_] = jobs(router)
        assert all(j["attempts"] == 3 for j in jobs(router)), jobs(router)
        assert job["last_status"] is None
        assert f"association to DEST@127.0.0.1:{port}" in job["last_error"], job["last_error"]
