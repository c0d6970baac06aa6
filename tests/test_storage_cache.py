"""Storage modes with the router as a process and real peers: cache mode evicts the least recently used patients
and keeps what a pending forward needs; keep_days; a percentage mark; bad settings refused.

The router announces evictions to a plugin written by the test (``router_evicted`` as JSON lines). Its log must
not carry the patients' IDs or names.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from router.config.storage import Mark, parse_mark
from router.store.usage import filesystem_size

from forwarding import db_rows, index_and_files_disagree, jobs, wait_while_up
from peers import RouterProcess, StoreSCP, make_instance, running, send_datasets, storescu, wait_for, write_instances
from qr_peers import findscu

PLUGIN = """
import json
from router.hooks.specs import hookimpl

@hookimpl
def router_evicted(reason, studies, patients, instances, size):
    with open({path!r}, "a") as out:
        found = [[s.study_uid, s.patient_id, s.instances, s.removed] for s in studies]
        out.write(json.dumps({{"reason": reason, "patients": patients, "instances": instances, "size": size,
                              "studies": found}}) + "\\n")
"""
NOT_IN_LOGS = ("STORAGE-PID-", "Cache^Patient")


def patient(number: int, count: int = 3) -> list[Dataset]:
    """``count`` objects of one study and series of patient ``STORAGE-PID-<number>``, 1 KiB of pixels each."""
    study, series = generate_uid(), generate_uid()
    return [make_instance(study, series, size=32, PatientID=f"STORAGE-PID-{number}",
                          PatientName=f"Cache^Patient{number}") for _ in range(count)]  # fmt: skip


def object_size(workdir: Path) -> int:
    """The size of the largest object ``patient`` makes (UIDs differ in length by a few bytes)."""
    return max(p.stat().st_size for p in write_instances(workdir / "probe", patient(0)))


def storage_router(workdir: Path, storage: dict[str, Any], **settings: Any) -> tuple[RouterProcess, Path]:
    events = workdir / "evicted.jsonl"
    plugin = workdir / "evictions.py"
    plugin.write_text(PLUGIN.format(path=str(events)))
    router = RouterProcess(workdir, storage=storage, plugin_modules=[str(plugin)], **settings)
    return router, events


def evicted(events: Path) -> list[dict[str, Any]]:
    if not events.exists():
        return []
    return [json.loads(line) for line in events.read_text().splitlines()]


def evicted_patients(events: Path) -> list[str]:
    return [s[1] for e in evicted(events) for s in e["studies"]]


def patients_left(router: RouterProcess) -> list[str]:
    return sorted(r["patient_id"] for r in db_rows(router, "select patient_id from patient"))


def agree(router: RouterProcess) -> None:
    assert index_and_files_disagree(router.data_dir) == {
        "rows without a file": [], "files without a row": [], "series": [], "studies": [], "patients": []
    }  # fmt: skip


def no_patient_data_in(log: str) -> None:
    assert not [word for word in NOT_IN_LOGS if word in log], "patient IDs or names in the router's log"


def forwarded(router: RouterProcess, count: int) -> None:
    def done() -> bool:
        return sum(1 for j in jobs(router) if j["peer"] == "DEST" and j["state"] == "done") == count

    wait_while_up(router, done, 60, f"{count} objects forwarded to DEST")


@pytest.mark.interop  # storescu and findscu send and query, DCMTK storescp is the destination
def test_cache_mode_evicts_least_recently_used_patients_and_keeps_pending_forwards(
    workdir: Path, dest: StoreSCP
) -> None:
    size = object_size(workdir)
    rules = {"10-all.yaml": [{"name": "all", "then": [{"forward": "DEST"}]}],
             "20-down.yaml": [{"name": "p3-down", "when": {"tags": {"PatientID": "STORAGE-PID-3"}},
                               "then": [{"forward": "DOWN"}]}]}  # fmt: skip
    peers = {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port},
             "DOWN": {"ae_title": "DOWN", "host": "127.0.0.1", "port": 9}}  # fmt: skip
    storage = {"mode": "cache", "high_water": str(13 * size), "low_water": str(int(9.5 * size))}
    router, events = storage_router(workdir, storage, peers=peers, rules=rules)
    with running(router.start()):
        for number in (1, 2, 3, 4):  # 12 objects: below the high-water mark
            folder = workdir / f"patient{number}"
            write_instances(folder, patient(number))
            assert storescu(router.port, folder).returncode == 0
            forwarded(router, 3 * number)
            if number == 4:  # P1 is used: found by a query after P2, P3 and P4 were received
                found = findscu(router.port, "-P", ["QueryRetrieveLevel=PATIENT", "PatientID=STORAGE-PID-1"], workdir)
                assert found.status == 0 and found.keys("PatientID") == {"STORAGE-PID-1"}
        write_instances(workdir / "patient5", patient(5))  # 15 objects: above the high-water mark
        assert storescu(router.port, workdir / "patient5").returncode == 0

        # least recently used first: P2, P3 (a forward to DOWN pending: kept whole), P4; then 9 objects are left
        wait_while_up(router, lambda: len(evicted(events)) == 2, 30, "two patients evicted")
        assert evicted_patients(events) == ["STORAGE-PID-2", "STORAGE-PID-4"]
        assert patients_left(router) == ["STORAGE-PID-1", "STORAGE-PID-3", "STORAGE-PID-5"]
        assert all(e["reason"] == "cache" and e["patients"] == 1 and e["instances"] == 3 for e in evicted(events))
        down = [j["state"] for j in jobs(router) if j["peer"] == "DOWN"]
        assert len(down) == 3 and set(down) <= {"pending", "inflight"}, "still to be sent (being retried)"
        agree(router)
        forwarded(router, 15)  # P5's forwards may still have been on their way
        assert len(dest.received()) == 15, "what was evicted had reached DEST first"
        wait_for(lambda: "a least recently used patient kept" in router.output(), 10, what="the kept patient logged")
    log = router.output()
    assert "may still send" in log and "peer DOWN" in log
    no_patient_data_in(log)


def test_keep_days_evicts_what_was_received_longer_ago(workdir: Path) -> None:
    router, events = storage_router(workdir, {"keep_days": 1, "check_interval": 1})
    old, recent = patient(1, 2), patient(2, 2)
    with running(router.start()):
        assert send_datasets(router.port, [*old, *recent]) == [0] * 4
        two_days_ago = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S.%f")
        db = sqlite3.connect(router.data_dir / "router.db", timeout=30)
        with db:
            db.executemany("update instance set received_at = ? where sop_uid = ?",
                           [(two_days_ago, str(ds.SOPInstanceUID)) for ds in old])  # fmt: skip
        db.close()
        wait_while_up(router, lambda: len(evicted(events)) == 1, 30, "the old objects evicted")
        [event] = evicted(events)
        assert (event["reason"], event["instances"], event["patients"]) == ("keep_days", 2, 1)
        assert patients_left(router) == ["STORAGE-PID-2"]
        agree(router)
    no_patient_data_in(router.output())


def test_a_percentage_of_the_file_system_and_a_qido_query_as_a_use(workdir: Path) -> None:
    """The marks as percentages of the data folder's file system, small enough to hold about five objects."""
    size, whole = object_size(workdir), filesystem_size(workdir)
    high, low = f"{100 * 5.5 * size / whole:.12f}%", f"{100 * 2.5 * size / whole:.12f}%"
    router, events = storage_router(workdir, {"mode": "cache", "high_water": high, "low_water": low})
    with running(router.start()):
        for number in (1, 2):
            assert send_datasets(router.port, patient(number, 2)) == [0, 0]
        url = f"http://127.0.0.1:{router.http_port}/dicomweb/studies"
        assert len(httpx.get(url, params={"PatientID": "STORAGE-PID-1"}).json()) == 1  # P1 is used now
        assert send_datasets(router.port, patient(3, 2)) == [0, 0]  # 6 objects: above the mark
        wait_while_up(router, lambda: len(evicted(events)) == 2, 30, "two patients evicted")
        assert evicted_patients(events) == ["STORAGE-PID-2", "STORAGE-PID-1"]
        assert patients_left(router) == ["STORAGE-PID-3"]
        agree(router)


@pytest.fixture
def bad_config(workdir: Path) -> Iterator[Any]:
    def serve(storage: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        path = workdir / "bad.yaml"
        path.write_text(json.dumps({"data_dir": "var", "storage": storage}))
        return subprocess.run([sys.executable, "-m", "router", "serve", "--config", str(path)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    yield serve
    assert not (workdir / "var").exists(), "nothing is created before the configuration is valid"


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"mode": "cache", "high_water": "500XB"}, "storage.high_water: Value error, unknown unit 'XB'"),
        ({"high_water": "400GB", "low_water": "500GB"}, "storage.low_water: Value error, low_water '500GB' must be"),
        ({"high_water": "90%", "low_water": "400GB"}, "storage.low_water: Value error, give both marks as sizes or"),
        ({"high_water": "120%"}, "storage.high_water: Value error, '120%': a percentage of the file system is"),
        ({"mode": "lru"}, "storage.mode: Input should be 'archive' or 'cache'"),
        ({"keep_days": -1}, "storage.keep_days: Input should be greater than 0"),
    ],
)
def test_bad_storage_settings_are_refused_naming_the_key(
    bad_config: Any, storage: dict[str, Any], message: str
) -> None:
    done = bad_config(storage)
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.parametrize(
    ("text", "size", "percent"),
    [("500GB", 500 * 10**9, None), ("1.5 TiB", 3 * 2**39, None), ("1048576", 2**20, None), ("64kb", 64000, None),
     ("90%", None, 90.0), ("0.000012%", None, 0.000012)],
)  # fmt: skip
def test_sizes_and_percentages(text: str, size: int | None, percent: float | None) -> None:
    assert parse_mark(text) == Mark(size, percent)
