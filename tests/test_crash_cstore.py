"""SIGKILL the router while four associations send C-STOREs (group commit, issue 21): every object answered
success has its index row, its forward job and its complete file on disk; no index row or job names a file that
is not there; after a restart the same objects sent again are stored once."""

from __future__ import annotations

import threading
from pathlib import Path

from pydicom.uid import generate_uid

from forwarding import SUCCESS, db_rows, send, wait_while_up
from peers import RouterProcess, dataset_bytes, free_port, make_instance, write_instances

SENDERS, PER_SENDER = 4, 150  # bounded: 600 objects at most, each sent at most twice
RULE = {"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "PACS"}]}


def test_sigkill_under_four_associations_loses_no_acknowledged_object(workdir: Path) -> None:
    study, series = generate_uid(), generate_uid()  # one series folder: the senders share its fsyncs
    files = write_instances(workdir / "in", [make_instance(study, series) for _ in range(SENDERS * PER_SENDER)])
    originals = {f.name.removesuffix(".dcm"): f for f in files}
    batches = [files[i::SENDERS] for i in range(SENDERS)]
    # nobody listens at PACS: the jobs stay in the outbox
    pacs = {"ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}
    router = RouterProcess(workdir, peers={"PACS": pacs}, rules={"20-all.yaml": [RULE]})
    results: list[list[tuple[str, int | None]]] = [[] for _ in range(SENDERS)]

    def acknowledged() -> list[str]:
        return [uid for r in results for uid, status in list(r) if status == SUCCESS]

    router.start()
    try:
        pairs = zip(batches, results, strict=True)
        threads = [threading.Thread(target=send, args=(router.port, b, r), daemon=True) for b, r in pairs]
        for t in threads:
            t.start()
        wait_while_up(router, lambda: len(acknowledged()) >= 200, 120, "200 acknowledged objects")
        router.kill9()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "every sender should stop once the router is gone"
        acked = acknowledged()
        assert 200 <= len(acked) < SENDERS * PER_SENDER, f"the kill should land mid-load ({len(acked)} acknowledged)"

        # before any restart: every acknowledged object is indexed with its complete file and its job
        stored = {row["sop_uid"]: row for row in db_rows(router, "select sop_uid, path, size from instance")}
        missing = [uid for uid in acked if uid not in stored]
        assert not missing, f"{len(missing)} acknowledged object(s) not in the index, e.g. {missing[:3]}"
        for uid, row in stored.items():  # every row, acknowledged or not: none without its file
            path = router.data_dir / row["path"]
            assert path.is_file(), f"{uid}: indexed but its file {path} is missing"
            assert path.stat().st_size == row["size"], f"{uid}: file size differs from the index"
        for uid in acked:
            assert dataset_bytes(router.data_dir / stored[uid]["path"]) == dataset_bytes(originals[uid])
        jobs = db_rows(router, "select sop_uid, path from job where peer = 'PACS'")
        assert sorted(j["sop_uid"] for j in jobs) == sorted(stored), "one job per stored object, no other"
        assert all((router.data_dir / j["path"]).is_file() for j in jobs), "a job names a missing file"

        router.start()  # the same data: every object again, acknowledged or not
        again: list[tuple[str, int | None]] = []
        for batch in batches:
            send(router.port, batch, again)
        assert [s for _uid, s in again] == [SUCCESS] * len(files), "each object is answered success again"
        rows = db_rows(router, "select sop_uid, count(*) as n from instance group by sop_uid")
        assert len(rows) == len(files) and {r["n"] for r in rows} == {1}
        assert db_rows(router, "select count(*) as n from job where peer = 'PACS'") == [{"n": len(files)}]
    finally:
        router.stop()
