"""The router asking a PACS for storage commitment after forwarding (``forward: {to: PACS, commit: true}``),
against a pynetdicom PACS that reports on the same association, late on a new one, fails instances or never
reports; and a SIGKILL while a transaction is pending."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from forwarding import db_rows, jobs, wait_while_up
from peers import RouterProcess, make_instance, running, send_datasets, wait_for
from workflow_peers import CommitPACS

COMMIT_TO_PACS = {"10-commit.yaml": [{"name": "to-pacs", "when": {"kind": "dicom"},
                                      "then": [{"forward": {"to": "PACS", "commit": True}}]}]}  # fmt: skip


def setup(workdir: Path, pacs: CommitPACS, rules: dict[str, Any] | None = None, **peer: Any) -> RouterProcess:
    others = peer.pop("others", {})
    settings = {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port, "commit_wait": 5, **peer}
    router = RouterProcess(workdir, peers={"PACS": settings, **others}, rules=rules or COMMIT_TO_PACS)
    pacs.router_port = router.port
    return router


def states(router: RouterProcess, peer: str = "PACS") -> Counter[str]:
    return Counter(j["state"] for j in jobs(router) if j["peer"] == peer)


def transactions(router: RouterProcess) -> list[dict[str, Any]]:
    return db_rows(router, "select transaction_uid, state, detail from committransaction order by id")


def items_of(router: RouterProcess, sop_uid: str) -> list[tuple[Any, ...]]:
    rows = db_rows(router, "select request_no, outcome, failure_reason from commititem where sop_uid=? order by id",
                 sop_uid)  # fmt: skip
    return [(r["request_no"], r["outcome"], r["failure_reason"]) for r in rows]


def test_report_on_the_same_association(workdir: Path) -> None:
    pacs = CommitPACS(0, report="same")
    router = setup(workdir, pacs)
    images = [make_instance() for _ in range(3)]
    uids = [str(i.SOPInstanceUID) for i in images]
    with pacs.serving(), running(router.start()):
        assert send_datasets(router.port, images) == [0, 0, 0]
        wait_while_up(router, lambda: states(router) == Counter({"done": 3}), 30, "every job committed")
        assert sorted(u for r in pacs.requests for u in r.sops) == sorted(uids)
        assert {r.calling_ae for r in pacs.requests} == {"ROUTER"}
        # the router commits a report's outcome before it answers it: the PACS records the answer a moment later
        wait_for(lambda: len(pacs.report_statuses) == len(pacs.requests), 10, what="the answer to each report")
        assert pacs.report_statuses == [0x0000] * len(pacs.requests), "the router accepted each report"
        assert all(t["state"] == "done" for t in transactions(router))
        assert [t["transaction_uid"] for t in transactions(router)] == [r.transaction_uid for r in pacs.requests]
        assert Counter(pacs.stored) == Counter(uids), "sent once each"
        assert (router.data_dir / db_rows(router, "select path from instance")[0]["path"]).is_file(), "copy kept"


def test_failed_instance_is_resent_and_requested_again_under_a_new_uid(workdir: Path) -> None:
    images = [make_instance() for _ in range(4)]
    uids = [str(i.SOPInstanceUID) for i in images]
    victim = uids[1]
    pacs = CommitPACS(
        0, report="new", delay=1.5, fail=lambda times, uid: 0x0112 if uid == victim and times == 1 else None
    )
    router = setup(workdir, pacs, commit_wait=0.5)
    with pacs.serving(), running(router.start()):
        assert send_datasets(router.port, images) == [0] * 4
        wait_while_up(router, lambda: states(router) == Counter({"done": 4}), 60, "every job committed")
        asked = Counter(u for r in pacs.requests for u in r.sops)
        assert asked == Counter({**dict.fromkeys(uids, 1), victim: 2})
        assert [r.sops for r in pacs.requests if victim in r.sops][1] == [victim], "asked again for it alone"
        assert len({r.transaction_uid for r in pacs.requests}) == len(pacs.requests), "a fresh UID every time"
        assert Counter(pacs.stored) == Counter({**dict.fromkeys(uids, 1), victim: 2}), "the failed one re-sent"
        wait_for(lambda: len(pacs.report_statuses) == len(pacs.requests), 10, what="the answer to each report")
        assert set(pacs.report_statuses) == {0x0000}
        assert items_of(router, victim) == [(1, "failed", 0x0112), (2, "committed", None)]
        assert {t["state"] for t in transactions(router)} == {"done"}
        assert "may report on a new association" in router.output()


def test_instance_never_committed_is_dead_lettered(workdir: Path) -> None:
    images = [make_instance() for _ in range(2)]
    victim = str(images[0].SOPInstanceUID)
    pacs = CommitPACS(0, report="same", fail=lambda times, uid: 0x0119 if uid == victim else None)
    router = setup(workdir, pacs, commit_requests=2)
    with pacs.serving(), running(router.start()):
        assert send_datasets(router.port, images) == [0, 0]
        wait_while_up(router, lambda: states(router) == Counter({"done": 1, "dead": 1}), 60, "one dead, one done")
        assert items_of(router, victim) == [(1, "failed", 0x0119), (2, "failed", 0x0119)]
        listing = router.cli("queue", "list", "--state", "dead").stdout
        assert victim in listing
        assert "not committed by PACS: 0x0119 class/instance conflict (after 2 commitment request(s))" in listing
        assert router.cli("queue", "list").stdout.splitlines()[1].split() == ["PACS", "0", "0", "0", "1", "1"]


def test_no_report_within_the_duration_of_applicability(workdir: Path) -> None:
    image = make_instance()
    pacs = CommitPACS(0, report="never")
    router = setup(workdir, pacs, commit_wait=0.3, commit_timeout=1.0, commit_requests=2)
    with pacs.serving(), running(router.start()):
        assert send_datasets(router.port, [image]) == [0]
        wait_while_up(router, lambda: states(router) == Counter({"dead": 1}), 60, "the job dead-lettered")
        [job] = jobs(router)
        assert job["last_error"] == (
            "no report from PACS within 1 s of the N-ACTION (duration of applicability) (after 2 commitment request(s))"
        )
        assert len(pacs.requests) == 2 and pacs.requests[0].transaction_uid != pacs.requests[1].transaction_uid
        assert [t["state"] for t in transactions(router)] == ["failed", "failed"]
        assert pacs.stored == [str(image.SOPInstanceUID)] * 2


def test_delete_after_commit_removes_the_copy_unless_another_job_needs_it(workdir: Path) -> None:
    gone, kept = make_instance(StationName="A"), make_instance(StationName="KEEP")
    pacs = CommitPACS(0, report="same")
    rules = {**COMMIT_TO_PACS, "20-down.yaml": [{"name": "also-down", "when": {"tags": {"StationName": "KEEP"}},
                                                 "then": [{"forward": "DOWN"}]}]}  # fmt: skip
    down = {"DOWN": {"ae_title": "DOWN", "host": "127.0.0.1", "port": 9}}
    router = setup(workdir, pacs, rules, delete_after_commit=True, others=down)
    with pacs.serving(), running(router.start()):
        assert send_datasets(router.port, [gone, kept]) == [0, 0]
        paths = {
            r["sop_uid"]: router.data_dir / r["path"] for r in db_rows(router, "select sop_uid, path from instance")
        }
        wait_while_up(router, lambda: states(router) == Counter({"done": 2}), 30, "both committed")
        wait_for(lambda: not paths[str(gone.SOPInstanceUID)].exists(), 10, what="the committed copy removed")
        remaining = [r["sop_uid"] for r in db_rows(router, "select sop_uid from instance")]
        assert remaining == [str(kept.SOPInstanceUID)], "the index row goes with the file"
        assert paths[str(kept.SOPInstanceUID)].is_file(), "DOWN still needs it"
        wait_for(lambda: f"{kept.SOPInstanceUID} committed, local copy kept" in router.output(), 10, what="the log")


def test_restart_while_waiting_for_a_report_resumes_the_transaction(workdir: Path) -> None:
    images = [make_instance() for _ in range(2)]
    pacs = CommitPACS(0, report="new", delay=4.0)
    router = setup(workdir, pacs, commit_wait=0.3)
    with pacs.serving(), running(router.start()):
        assert send_datasets(router.port, images) == [0, 0]

        def pending() -> bool:
            waiting = all(t["state"] == "waiting" for t in transactions(router))
            return states(router)["committing"] == 2 and not pacs.report_statuses and waiting

        wait_while_up(router, pending, 20, "a pending transaction")
        router.kill9()
        assert pacs.report_statuses == [], "killed before the report came"
        router.start()
        wait_while_up(router, lambda: states(router) == Counter({"done": 2}), 60, "committed after the restart")
        assert len(pacs.requests) == len(transactions(router)), "resumed: no new request"
        assert {t["state"] for t in transactions(router)} == {"done"}
        assert Counter(pacs.stored) == Counter(str(i.SOPInstanceUID) for i in images), "nothing re-sent"


def test_restart_before_the_request_was_accepted_requests_again_with_a_new_uid(workdir: Path) -> None:
    image = make_instance()
    pacs = CommitPACS(0, report="same")
    router = setup(workdir, pacs)
    with pacs.serving(), running(router.start()):
        pacs.hold.clear()  # the PACS sits on the N-ACTION
        assert send_datasets(router.port, [image]) == [0]
        wait_while_up(router, lambda: [t["state"] for t in transactions(router)] == ["requesting"], 20,
                      "the N-ACTION in flight")  # fmt: skip
        # "requesting" is recorded before the N-ACTION goes out: kill only once the PACS really holds it
        assert pacs.holding.wait(20), "the N-ACTION did not reach the PACS"
        router.kill9()
        pacs.hold.set()
        wait_for(lambda: len(pacs.requests) == 1, 10, what="the PACS to take the first request")
        router.start()
        wait_while_up(router, lambda: states(router) == Counter({"done": 1}), 30, "committed after the restart")
        first, second = transactions(router)
        assert (first["state"], first["detail"]) == (
            "failed",
            "the router stopped before the peer accepted the N-ACTION",
        )
        assert second["state"] == "done" and second["transaction_uid"] != first["transaction_uid"]
        assert [r.transaction_uid for r in pacs.requests] == [first["transaction_uid"], second["transaction_uid"]]
        assert items_of(router, str(image.SOPInstanceUID)) == [(1, "abandoned", None), (1, "committed", None)]
        assert "1 storage commitment request(s) the peer had not accepted: requested again" in router.output()
