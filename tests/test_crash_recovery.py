"""SIGKILL the router: what it acknowledged is durable and still delivered; in-flight jobs are sent again."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from forwarding import (
    SUCCESS,
    ScriptedSCP,
    db_rows,
    generated,
    job_states,
    received_uids,
    router_to_dest,
    send,
    send_ok,
    wait_while_up,
)
from peers import StoreSCP, dataset_bytes, running

pytestmark = pytest.mark.interop  # DCMTK storescp

BATCH_SIZE = 64  # forward.batch_size default: at most one batch per sender can be in flight


def test_sigkill_mid_transfer_loses_nothing_acknowledged(workdir: Path) -> None:
    files = generated(workdir / "in", 300)
    originals = {f.name.removesuffix(".dcm"): f for f in files}
    dest = StoreSCP(workdir, "DEST")
    router = router_to_dest(workdir, dest.port)
    results: list[tuple[str, int | None]] = []
    with running(dest.start(), router.start()):
        sender = threading.Thread(target=send, args=(router.port, files, results), daemon=True)
        sender.start()

        def acknowledged() -> list[str]:
            return [uid for uid, status in results if status == SUCCESS]

        wait_while_up(router, lambda: len(acknowledged()) >= 100, 60, "100 acknowledged objects")
        router.kill9()
        sender.join(30)
        assert not sender.is_alive(), "the sender should fail once the router is gone"
        acked = acknowledged()
        assert 100 <= len(acked) < 300, f"the kill should land mid-transfer ({len(acked)} acknowledged)"
        assert results[-1][1] is None, "the C-STORE in progress at the kill gets no response"

        # before any restart: every acknowledged object is indexed, with its complete file
        stored = {row["sop_uid"]: row for row in db_rows(router, "select sop_uid, path, size from instance")}
        missing = [uid for uid in acked if uid not in stored]
        assert not missing, f"{len(missing)} acknowledged object(s) not in the index, e.g. {missing[:3]}"
        for uid in acked:
            path = router.data_dir / stored[uid]["path"]
            assert path.is_file(), f"{uid}: indexed but its file {path} is missing"
            assert path.stat().st_size == stored[uid]["size"], f"{uid}: file size differs from the index"
            assert dataset_bytes(path) == dataset_bytes(originals[uid]), f"{uid}: stored bytes differ"
        at_kill = job_states(router)

        router.start()  # same workdir, config and port
        wait_while_up(router, lambda: set(acked) <= set(received_uids(dest)), 60, "acknowledged objects at DEST")
        wait_while_up(
            router, lambda: job_states(router) == Counter({"done": len(stored)}), 60, "every stored object sent"
        )
        arrived = received_uids(dest)
        duplicates = len(arrived) - len(set(arrived))
        indexed = {router.data_dir / row["path"] for row in stored.values()}
        orphans = [p for p in (router.data_dir / "objects").rglob("*.dcm") if p not in indexed]
        print(
            f"\nacknowledged {len(acked)}, stored {len(stored)}, jobs at kill {dict(at_kill)}, delivered "
            f"{len(arrived)} file(s) for {len(set(arrived))} instance(s): {duplicates} duplicate(s), "
            f"{len(orphans)} unindexed file(s) under objects/"
        )
        assert set(arrived) == set(stored), "exactly the stored objects are delivered"
        assert duplicates <= BATCH_SIZE, f"{duplicates} duplicate deliveries: more than one batch was resent"
        if at_kill["inflight"]:
            assert f"requeued {at_kill['inflight']} job(s) that were in flight" in router.output()


def test_restart_requeues_inflight(workdir: Path) -> None:
    """Jobs inflight at a SIGKILL (the peer holds their C-STORE unanswered) are delivered after a restart."""
    release = threading.Event()

    def hold(_ds: Dataset) -> int:
        release.wait(30)  # never answer while the router lives
        return SUCCESS

    hanging = ScriptedSCP(hold)
    router = router_to_dest(workdir, hanging.port)
    files = generated(workdir / "in", 100)
    with running(router.start()):
        with hanging.serving():
            sent = send_ok(router.port, files)
            wait_while_up(router, lambda: job_states(router)["inflight"] > 0, 30, "jobs in flight")
            assert not hanging.answers, "the hanging peer answered nothing while the router lived"
            router.kill9()
            release.set()
        at_kill = job_states(router)
        assert at_kill["inflight"] > 0 and set(at_kill) <= {"pending", "inflight"}, at_kill

        dest = StoreSCP(workdir, "DEST", port=hanging.port)
        with running(dest.start()):
            router.start()
            wait_while_up(router, lambda: len(dest.received()) >= len(sent), 60, "every object at DEST")
            wait_while_up(router, lambda: job_states(router) == Counter({"done": len(sent)}), 30, "every job done")
            arrived = received_uids(dest)
            assert sorted(arrived) == sorted(sent), "each object delivered exactly once"
        assert f"requeued {at_kill['inflight']} job(s) that were in flight" in router.output()
