"""The forward queue against peers that are down, refuse, or refuse for a while: nothing lost, nothing doubled."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from forwarding import (
    DATASET_MISMATCH,
    OUT_OF_RESOURCES,
    SUCCESS,
    ScriptedSCP,
    generated,
    job_states,
    jobs,
    jobs_by_uid,
    received_uids,
    router_to_dest,
    send_ok,
    sop_uid,
    wait_for_states,
    wait_while_up,
)
from peers import StoreSCP, free_port, running


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
