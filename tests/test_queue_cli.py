"""`router queue list|retry|purge` against a live router with dead jobs for a refusing and an unreachable peer."""

from __future__ import annotations

import threading
from pathlib import Path

from pydicom.dataset import Dataset

from forwarding import (
    DATASET_MISMATCH,
    SUCCESS,
    ScriptedSCP,
    generated,
    jobs,
    peer_at,
    send_ok,
    wait_while_up,
)
from peers import RouterProcess, free_port, running

STATES = ("pending", "inflight", "committing", "done", "dead")


def queue(router: RouterProcess, *args: str) -> str:
    done = router.cli("queue", *args, check=False)
    assert done.returncode == 0, f"router queue {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


def queue_counts(router: RouterProcess) -> dict[str, dict[str, int]]:
    """The per-peer table of `router queue list`."""
    lines = queue(router, "list").splitlines()
    if lines == ["the queue is empty"]:
        return {}
    assert lines[0].split() == ["peer", *STATES], lines
    counts = {}
    for line in lines[1:]:
        if not line.strip():
            break
        peer, *numbers = line.split()
        counts[peer] = dict(zip(STATES, map(int, numbers), strict=True))
    return counts


def listed_jobs(router: RouterProcess, *filters: str) -> dict[int, str]:
    """job id -> its line, from `router queue list --state/--peer ...`."""
    lines = queue(router, "list", *filters).splitlines()
    return {int(line.split()[0]): line for line in lines if line[:8].strip().isdigit()}


def states_by_peer(router: RouterProcess) -> dict[str, dict[str, int]]:
    """The same table, from the database."""
    out: dict[str, dict[str, int]] = {}
    for job in jobs(router):
        row = out.setdefault(job["peer"], dict.fromkeys(STATES, 0))
        row[job["state"]] += 1
    return out


def dead_ids(router: RouterProcess, peer: str) -> set[int]:
    return {j["id"] for j in jobs(router) if j["peer"] == peer and j["state"] == "dead"}


def counts(**by_state: int) -> dict[str, int]:
    return {s: by_state.get(s, 0) for s in STATES}


def assert_listing(router: RouterProcess, settled: dict[str, dict[str, int]], gone_port: int) -> None:
    """list: the per-peer table; with --state, the jobs and their last error; --peer and --limit narrow it."""
    assert queue_counts(router) == settled
    assert "last error" not in queue(router, "list"), "no job lines without --state/--peer"
    listed = listed_jobs(router, "--state", "dead")
    assert set(listed) == dead_ids(router, "DEST") | dead_ids(router, "GONE")
    for job_id in dead_ids(router, "DEST"):
        assert "peer answered 0xA900" in listed[job_id], listed[job_id]
    for job_id in dead_ids(router, "GONE"):
        assert f"association to GONE@127.0.0.1:{gone_port}" in listed[job_id], listed[job_id]
    assert set(listed_jobs(router, "--state", "dead", "--peer", "DEST")) == dead_ids(router, "DEST")
    newest = queue(router, "list", "--state", "dead", "--limit", "1")
    total = len(dead_ids(router, "DEST") | dead_ids(router, "GONE"))
    assert len(listed_jobs(router, "--state", "dead", "--limit", "1")) == 1
    assert f"(the newest 1 of {total}; --limit N shows more)" in newest, "a cut list says so"


def test_queue_list_retry_purge(workdir: Path) -> None:
    accept_all = threading.Event()

    def status_for(ds: Dataset) -> int:
        return DATASET_MISMATCH if ds.PatientID == "BAD" and not accept_all.is_set() else SUCCESS

    scp = ScriptedSCP(status_for)
    gone_port = free_port()  # nothing listens here
    router = RouterProcess(
        workdir,
        peers={"DEST": peer_at(scp.port), "GONE": peer_at(gone_port, "GONE")},
        rules={"10-all.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": ["DEST", "GONE"]}]}]},
        forward={"max_attempts": 1},
    )
    files = generated(workdir / "good", 2) + generated(workdir / "bad", 2, PatientID="BAD")
    with scp.serving(), running(router.start()):
        send_ok(router.port, files)
        settled = {"DEST": counts(done=2, dead=2), "GONE": counts(dead=4)}
        wait_while_up(router, lambda: states_by_peer(router) == settled, 30, f"jobs {settled}")

        assert_listing(router, settled, gone_port)

        # retry needs ids or --all
        bare = router.cli("queue", "retry", check=False)
        assert bare.returncode == 2, bare
        assert "--all" in bare.stderr
        assert states_by_peer(router) == settled, "a refused retry changes nothing"

        # retry --all (for one peer), once that peer accepts: delivered, the other peer's dead jobs untouched
        refused = dead_ids(router, "DEST")
        accept_all.set()
        assert queue(router, "retry", "--all", "--peer", "DEST").strip() == "requeued 2 job(s)"
        after = {"DEST": counts(done=4), "GONE": counts(dead=4)}
        wait_while_up(router, lambda: states_by_peer(router) == after, 30, f"jobs {after}")
        retried = [j for j in jobs(router) if j["id"] in refused]
        assert all(j["attempts"] == 1 and j["last_status"] == SUCCESS for j in retried), retried
        for job in retried:
            assert scp.answered(job["sop_uid"]) == [DATASET_MISMATCH, SUCCESS]

        # retry one id: it is tried again (and dies again: GONE is still unreachable)
        one = min(dead_ids(router, "GONE"))
        [before] = [j for j in jobs(router) if j["id"] == one]
        assert queue(router, "retry", str(one)).strip() == "requeued 1 job(s)"

        def failed_again() -> bool:
            [job] = [j for j in jobs(router) if j["id"] == one]
            return job["state"] == "dead" and job["attempts"] == 1 and job["updated_at"] != before["updated_at"]

        wait_while_up(router, failed_again, 30, "the retried job to fail again")
        wait_while_up(router, lambda: states_by_peer(router) == after, 30, f"jobs {after}")

        # purge
        assert queue(router, "purge", "--done").strip() == "purged 4 job(s)"
        assert queue_counts(router) == {"GONE": counts(dead=4)}
        assert "done" not in {j["state"] for j in jobs(router)}
        assert router.cli("queue", "purge", check=False).returncode == 2
        assert queue(router, "purge", "--dead", "--peer", "GONE").strip() == "purged 4 job(s)"
        assert queue(router, "list").strip() == "the queue is empty"
