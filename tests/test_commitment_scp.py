"""The router as Storage Commitment SCP, driven by a pynetdicom SCU: reports on the same association, on a new
association to the requesting peer, failure reasons, refusals of bad requests, undeliverable reports retried."""

from __future__ import annotations

from pathlib import Path

from forwarding import db_rows, jobs
from peers import CT_IMAGE, SECONDARY_CAPTURE, RouterProcess, make_instance, running, send_datasets, wait_for
from workflow_peers import CommitSCU, ReportSink, listed, refs


def router_for(workdir: Path, sink: ReportSink, **peer: object) -> RouterProcess:
    modality = {"ae_title": "MODALITY", "host": "127.0.0.1", "port": sink.port, **peer}
    return RouterProcess(workdir, peers={"MODALITY": modality}, forward={"backoff_initial": 0.3, "backoff_max": 1.0})


def report_jobs(router: RouterProcess) -> list[dict[str, object]]:
    return [j for j in jobs(router) if j["peer"] == "MODALITY"]


def test_same_association_report_with_each_failure_reason(workdir: Path) -> None:
    sink = ReportSink()
    router = router_for(workdir, sink)
    stored = [make_instance() for _ in range(3)]
    missing = make_instance()
    with running(router.start()), sink.serving():
        assert send_datasets(router.port, stored, calling="MODALITY") == [0, 0, 0]
        a, b, d = (str(ds.SOPInstanceUID) for ds in stored)
        [(path,)] = [(r["path"],) for r in db_rows(router, "select path from instance where sop_uid=?", d)]
        target = router.data_dir / str(path)
        target.write_bytes(target.read_bytes()[:-10])  # damaged behind the router's back

        everything = refs((SECONDARY_CAPTURE, a), (CT_IMAGE, b), (SECONDARY_CAPTURE, str(missing.SOPInstanceUID)),
                          (SECONDARY_CAPTURE, d))  # fmt: skip
        scu = CommitSCU(router.port)
        status, _ = scu.request(everything)
        assert status == 0x0000
        [report] = scu.reports
        assert (report.event_type, report.same_association) == (2, True)
        assert report.info.TransactionUID == everything.TransactionUID
        assert listed(report.info, "ReferencedSOPSequence") == [(SECONDARY_CAPTURE, a)]
        assert report.info.RetrieveAETitle == "ROUTER"
        assert listed(report.info, "FailedSOPSequence") == [
            (CT_IMAGE, b, "0x0119"),
            (SECONDARY_CAPTURE, str(missing.SOPInstanceUID), "0x0112"),
            (SECONDARY_CAPTURE, d, "0x0110"),
        ]

        good = refs((SECONDARY_CAPTURE, a), (SECONDARY_CAPTURE, b))
        status, _ = scu.request(good)
        assert status == 0x0000
        second = scu.reports[1]
        assert (second.event_type, second.info.TransactionUID) == (1, good.TransactionUID)
        assert listed(second.info, "ReferencedSOPSequence") == [(SECONDARY_CAPTURE, a), (SECONDARY_CAPTURE, b)]
        assert "FailedSOPSequence" not in second.info

        # the report owed was a durable job, done once delivered here; nothing went over a new association
        wait_for(lambda: [j["state"] for j in report_jobs(router)] == ["done", "done"], 10, what="report jobs done")
        assert [j["sop_uid"] for j in report_jobs(router)] == [everything.TransactionUID, good.TransactionUID]
        assert sink.reports == []
        assert not list((router.data_dir / "commitment").iterdir()), "delivered reports leave no file behind"


def test_instances_sent_after_the_request_are_not_committed(workdir: Path) -> None:
    sink = ReportSink()
    router = router_for(workdir, sink)
    late = make_instance()
    with running(router.start()), sink.serving():
        scu = CommitSCU(router.port)
        request = refs((SECONDARY_CAPTURE, str(late.SOPInstanceUID)))
        assert scu.request(request)[0] == 0x0000
        assert send_datasets(router.port, [late], calling="MODALITY") == [0]
        [report] = scu.reports
        assert listed(report.info, "FailedSOPSequence") == [(SECONDARY_CAPTURE, str(late.SOPInstanceUID), "0x0112")]
        # asked again now that it is here: committed (the earlier request was not cached)
        assert scu.request(refs((SECONDARY_CAPTURE, str(late.SOPInstanceUID))))[0] == 0x0000
        assert scu.reports[1].event_type == 1


def test_new_association_report_is_retried_until_the_peer_listens(workdir: Path) -> None:
    sink = ReportSink()
    router = router_for(workdir, sink, commit_new_association=True)
    image = make_instance()
    with running(router.start()):
        assert send_datasets(router.port, [image], calling="MODALITY") == [0]
        scu = CommitSCU(router.port)
        request = refs((SECONDARY_CAPTURE, str(image.SOPInstanceUID)))
        assert scu.request(request, wait=1.0)[0] == 0x0000
        assert scu.reports == [], "commit_new_association: never on the requesting association"
        wait_for(lambda: any(j["attempts"] >= 1 for j in report_jobs(router)), 15, what="a failed delivery")
        [job] = report_jobs(router)
        # waiting for its next attempt, or already in it (the test backoff is 0.2 s): never dead, never done
        assert job["state"] in ("pending", "inflight") and "MODALITY" in str(job["last_error"]), job
        with sink.serving():
            wait_for(lambda: len(sink.reports) == 1, 20, what="the report at the modality")
            wait_for(lambda: report_jobs(router)[0]["state"] == "done", 10, what="the report job done")
        [report] = sink.reports
        assert (report.calling_ae, report.event_type, report.same_association) == ("ROUTER", 1, False)
        assert report.info.TransactionUID == request.TransactionUID
        assert listed(report.info, "ReferencedSOPSequence") == [(SECONDARY_CAPTURE, str(image.SOPInstanceUID))]
        assert sink.roles == [(True, False)], "the router proposed the SCP role: the modality is the SCU"


def test_refused_report_on_the_association_goes_over_a_new_one(workdir: Path) -> None:
    sink = ReportSink()
    router = router_for(workdir, sink)
    image = make_instance()
    with running(router.start()), sink.serving():
        assert send_datasets(router.port, [image], calling="MODALITY") == [0]
        scu = CommitSCU(router.port, answer=0x0110)  # "cannot take it here"
        request = refs((SECONDARY_CAPTURE, str(image.SOPInstanceUID)))
        assert scu.request(request)[0] == 0x0000
        assert len(scu.reports) == 1
        wait_for(lambda: len(sink.reports) == 1, 20, what="the report on a new association")
        assert sink.reports[0].info.TransactionUID == request.TransactionUID
        wait_for(lambda: report_jobs(router)[0]["state"] == "done", 10, what="the report job done")
        assert report_jobs(router)[0]["last_status"] == 0


def test_bad_requests_are_refused(workdir: Path) -> None:
    sink = ReportSink()
    router = router_for(workdir, sink)
    image = make_instance()
    with running(router.start()):
        assert send_datasets(router.port, [image], calling="STRANGER") == [0]
        scu = CommitSCU(router.port, calling="STRANGER")
        no_uid = refs((SECONDARY_CAPTURE, str(image.SOPInstanceUID)))
        del no_uid.TransactionUID
        status, rsp = scu.request(no_uid)
        assert (status, rsp.ErrorComment) == (0x0115, "Transaction UID (0008,1195) is missing or empty")
        empty = refs()
        status, rsp = scu.request(empty)
        assert (status, rsp.ErrorComment) == (0x0115, "Referenced SOP Sequence (0008,1199) is missing or empty")
        status, rsp = scu.request(refs((SECONDARY_CAPTURE, str(image.SOPInstanceUID))), action_type=2)
        assert (status, rsp.ErrorComment) == (0x0123, "action type 2 is not 1")
        assert scu.reports == [], "no report for a refused request"
        # a requester not in the peer table still gets its report on its association (no job: nowhere to retry)
        good = refs((SECONDARY_CAPTURE, str(image.SOPInstanceUID)))
        assert scu.request(good)[0] == 0x0000
        assert [r.info.TransactionUID for r in scu.reports] == [good.TransactionUID]
        assert report_jobs(router) == []
