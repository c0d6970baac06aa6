"""SIGKILL the router while two clients send STOW-RS requests whose parts share a commit (issue 21): every part
answered stored has its index row, its forward job and its complete file on disk; no index row or job names a file
that is not there; after a restart the same requests sent again store each object once."""

from __future__ import annotations

import threading
from io import BytesIO
from pathlib import Path

import httpx
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from router.listeners.http.multipart import build

from forwarding import db_rows, wait_while_up
from peers import RouterProcess, free_port, make_instance

SENDERS, REQUESTS, PARTS = 2, 20, 10  # bounded: 400 objects at most, each sent at most twice
RULE = {"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "PACS"}]}
BOUNDARY = "crash-boundary"
HEADERS = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}


def p10(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def send(port: int, requests: list[list[tuple[str, bytes]]], acked: list[str], stop_on_error: bool = True) -> None:
    """POST each request; the SOP Instance UIDs its answer lists as stored go to ``acked``."""
    with httpx.Client(timeout=30) as client:
        for parts in requests:
            body = build([("application/dicom", raw) for _uid, raw in parts], BOUNDARY)
            try:
                answer = client.post(f"http://127.0.0.1:{port}/dicomweb/studies", content=body, headers=HEADERS)
            except httpx.HTTPError:
                if stop_on_error:
                    return
                raise
            stored = answer.json().get("00081199", {}).get("Value", []) if answer.status_code in (200, 202) else []
            acked += [item["00081155"]["Value"][0] for item in stored]


def test_sigkill_under_stow_requests_loses_no_acknowledged_part(workdir: Path) -> None:
    study = generate_uid()
    objects = [make_instance(study) for _ in range(SENDERS * REQUESTS * PARTS)]
    raws = [(str(ds.SOPInstanceUID), p10(ds)) for ds in objects]
    originals = dict(raws)
    requests = [raws[i : i + PARTS] for i in range(0, len(raws), PARTS)]
    batches = [requests[i::SENDERS] for i in range(SENDERS)]
    pacs = {"ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}  # nobody listens: jobs stay queued
    router = RouterProcess(workdir, peers={"PACS": pacs}, rules={"20-all.yaml": [RULE]})
    results: list[list[str]] = [[] for _ in range(SENDERS)]
    router.start()
    try:
        threads = [threading.Thread(target=send, args=(router.http_port, b, r), daemon=True)
                   for b, r in zip(batches, results, strict=True)]  # fmt: skip
        for t in threads:
            t.start()
        wait_while_up(router, lambda: sum(len(r) for r in results) >= 100, 120, "100 acknowledged parts")
        router.kill9()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "every sender should stop once the router is gone"
        acked = [uid for r in results for uid in r]
        assert 100 <= len(acked) < len(raws), f"the kill should land mid-load ({len(acked)} acknowledged)"

        stored = {row["sop_uid"]: row for row in db_rows(router, "select sop_uid, path, size from instance")}
        missing = [uid for uid in acked if uid not in stored]
        assert not missing, f"{len(missing)} acknowledged part(s) not in the index, e.g. {missing[:3]}"
        for uid, row in stored.items():  # every row, acknowledged or not: none without its complete file
            path = router.data_dir / row["path"]
            assert path.is_file(), f"{uid}: indexed but its file {path} is missing"
            assert path.read_bytes() == originals[uid], f"{uid}: the file is not the object sent"
        jobs = db_rows(router, "select sop_uid, path from job where peer = 'PACS'")
        assert sorted(j["sop_uid"] for j in jobs) == sorted(stored), "one job per stored object, no other"
        assert all((router.data_dir / j["path"]).is_file() for j in jobs), "a job names a missing file"

        router.start()  # the same requests again, acknowledged or not: every part stored (or a duplicate) once
        again: list[str] = []
        send(router.http_port, requests, again, stop_on_error=False)
        assert sorted(again) == sorted(originals), "each part is answered stored again"
        rows = db_rows(router, "select sop_uid, count(*) as n from instance group by sop_uid")
        assert len(rows) == len(raws) and {r["n"] for r in rows} == {1}
        assert db_rows(router, "select count(*) as n from job where peer = 'PACS'") == [{"n": len(raws)}]
    finally:
        router.stop()
