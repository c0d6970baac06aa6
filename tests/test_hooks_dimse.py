"""The DICOM side's hooks, seen by a plugin loaded through the configuration, driven by real peers.

One router with ``tests/sample_plugins/recorder.py`` (every notification as a JSON line, its own settings, an
association policy refusing ``BLOCKED``) and ``broken.py`` (raises in its hooks, and is called first).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from peers import (
    DCMTK_ENV,
    RouterProcess,
    StoreSCP,
    associate,
    c_find_statuses,
    dcmtk,
    make_instance,
    storescu,
    wait_for,
    write_instances,
)
from workflow_peers import MPPS, CommitSCU, mpps_scu, refs

pytestmark = pytest.mark.interop  # storescp is the move destination; echoscu, movescu, getscu the callers

SAMPLES = Path(__file__).parent / "sample_plugins"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MWL_FIND = "1.2.840.10008.5.1.4.31"


def recorded(path: Path, event: str | None = None, /, **match: Any) -> list[dict[str, Any]]:
    """The recorder's events (named ``event``, with the given values)."""
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in found if (event is None or e["event"] == event) and all(e.get(k) == v for k, v in match.items())]


def one(path: Path, event: str, /, **match: Any) -> dict[str, Any]:
    """Wait for exactly one such event."""
    wait_for(lambda: recorded(path, event, **match), 30, what=f"{event} {match}")
    [found] = recorded(path, event, **match)
    return found


@dataclass
class Site:
    router: RouterProcess
    dest: StoreSCP
    events: Path
    study: str
    series: str
    sops: list[str]
    workdir: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("hooks-dimse")
    events = workdir / "events.jsonl"
    dest = StoreSCP(workdir, "DEST").start()
    router = RouterProcess(
        workdir,
        peers={"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}},
        plugin_modules=[str(SAMPLES / "recorder.py"), str(SAMPLES / "broken.py")],
        plugins={"recorder": {"events": str(events), "reject_calling": ["BLOCKED"]}},
    )
    study = generate_uid()
    series = generate_uid()
    instances = [make_instance(study, series, InstanceNumber=str(n)) for n in (1, 2)]
    try:
        router.start()
        assert storescu(router.port, write_instances(workdir / "in", instances)).returncode == 0
        yield Site(router, dest, events, study, series, sorted(str(ds.SOPInstanceUID) for ds in instances), workdir)
    finally:
        router.stop()
        dest.stop()


# -- associations --------------------------------------------------------------------------------------------
def test_a_policy_plugin_rejects_with_its_reason_and_the_rejection_is_announced(site: Site) -> None:
    refused = associate(site.router.port, calling="BLOCKED")
    assert refused.is_rejected
    rj = refused.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (2, 1, 1)  # what the recorder's policy answered
    event = one(site.events, "association_rejected", calling_ae="BLOCKED")
    assert event["reason"] == "refused by the recorder's policy" and event["codes"] == [2, 1, 1]
    assert event["called_ae"] == "ROUTER" and event["address"].startswith("127.0.0.1:")

    echo = subprocess.run([dcmtk("echoscu"), "-aet", "BLOCKED", "-aec", "ROUTER", "127.0.0.1", str(site.router.port)],
                          capture_output=True, text=True, env=DCMTK_ENV, timeout=30)  # fmt: skip
    assert echo.returncode != 0 and "Rejected Transient" in echo.stderr, echo.stderr
    wait_for(lambda: len(recorded(site.events, "association_rejected", calling_ae="BLOCKED")) == 2, 30)


def test_the_built_in_policy_still_decides_after_the_plugins(site: Site) -> None:
    refused = associate(site.router.port, calling="OTHER", called="NOTROUTER")
    rj = refused.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (1, 1, 7)
    event = one(site.events, "association_rejected", calling_ae="OTHER")
    assert event["called_ae"] == "NOTROUTER" and event["codes"] == [1, 1, 7]
    assert event["reason"] == "called AE title 'NOTROUTER' is not 'ROUTER'"


def test_a_raising_plugin_is_logged_and_the_recorder_still_hears(site: Site) -> None:
    # broken.py raises in router_association_accepted and router_instance_stored, and is called first
    assert len(recorded(site.events, "instance_stored", outcome="stored")) == 2
    assert recorded(site.events, "association_accepted", calling_ae="STORESCU", direction="inbound")
    log = site.router.output()
    assert "plugin broken: router_association_accepted failed" in log
    assert "plugin broken: router_instance_stored failed" in log
    assert "Boom: broken plugin on a stored instance" in log
    # both processes started, each with the validated settings of every plugin that has some: the recorder's and
    # the built-in audit plugin's (its defaults: off)
    startups = recorded(site.events, "startup")
    assert {e["process"] for e in startups} == {"serve", "forward"}
    assert all(e["settings"] == ["audit", "recorder"] for e in startups)


# -- queries and exports -------------------------------------------------------------------------------------
def test_c_find_announces_the_query_and_its_matches(site: Site) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = site.study
    ds.SeriesInstanceUID = site.series
    ds.SOPInstanceUID = ""
    statuses = c_find_statuses(site.router.port, STUDY_FIND, ds)
    assert statuses == [0xFF00, 0xFF00, 0x0000]
    event = one(site.events, "query_answered", service="C-FIND", level="IMAGE")
    assert event["matches"] == 2 and event["status"] == 0 and event["calling_ae"] == "FINDSCU"
    assert event["sop_class"] == STUDY_FIND and event["keys"]["StudyInstanceUID"] == site.study


def test_worklist_query_is_announced(site: Site) -> None:
    ds = Dataset()
    ds.PatientName = ""
    ds.AccessionNumber = "NOSUCH"
    step = Dataset()
    step.Modality = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    assert c_find_statuses(site.router.port, MWL_FIND, ds) == [0x0000]
    event = one(site.events, "query_answered", service="MWL")
    assert (event["matches"], event["status"], event["level"], event["sop_class"]) == (0, 0, "", MWL_FIND)
    assert event["keys"]["AccessionNumber"] == "NOSUCH"


def dcmtk_retrieve(tool: str, site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={site.study}"]
    return subprocess.run(
        [dcmtk(tool), "-S", "-aet", tool.upper(), "-aec", "ROUTER", *args, *keys, "127.0.0.1", str(site.router.port)],
        capture_output=True, text=True, errors="replace", env=DCMTK_ENV, timeout=120, cwd=site.workdir,
    )  # fmt: skip


def test_c_move_and_c_get_announce_what_they_exported(site: Site) -> None:
    done = dcmtk_retrieve("movescu", site, "-aem", "DEST")
    assert done.returncode == 0, done.stderr
    moved = one(site.events, "instances_exported", service="C-MOVE")
    assert (moved["calling_ae"], moved["destination"], moved["failed"], moved["status"]) == ("MOVESCU", "DEST", 0, 0)
    assert moved["sops"] == site.sops and moved["studies"] == [site.study] and moved["has_address"]
    assert moved["classes"] == ["1.2.840.10008.5.1.4.1.1.7"]

    out = site.workdir / "got"
    out.mkdir()
    done = dcmtk_retrieve("getscu", site, "-od", str(out))
    assert done.returncode == 0, done.stderr
    got = one(site.events, "instances_exported", service="C-GET")
    assert (got["calling_ae"], got["destination"], got["sops"], got["failed"]) == ("GETSCU", "GETSCU", site.sops, 0)


# -- MPPS and storage commitment ----------------------------------------------------------------------------------
def step(study: str) -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study
    item.AccessionNumber = ""
    item.ScheduledProcedureStepID = ""
    item.RequestedProcedureID = ""
    ds.ScheduledStepAttributesSequence = Sequence([item])
    for keyword, value in {"PatientName": "", "PatientID": "", "PatientBirthDate": "", "StudyID": "",
                           "Modality": "CT", "PerformedStationAETitle": "MODALITY", "PerformedProcedureStepID": "PPS7",
                           "PerformedProcedureStepStartDate": "20260101", "PerformedProcedureStepStartTime": "100000",
                           "PerformedProcedureStepEndDate": "", "PerformedProcedureStepEndTime": "",
                           "PerformedProcedureStepStatus": "IN PROGRESS"}.items():  # fmt: skip
        setattr(ds, keyword, value)
    return ds


def test_mpps_created_and_updated_are_announced(site: Site) -> None:
    uid = generate_uid()
    assoc = mpps_scu(site.router.port)
    try:
        status, _ = assoc.send_n_create(step(site.study), MPPS, uid)
        assert status.Status == 0
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        done.PerformedProcedureStepEndDate = "20260101"
        done.PerformedProcedureStepEndTime = "101500"
        status, _ = assoc.send_n_set(done, MPPS, uid)
        assert status.Status == 0
    finally:
        assoc.release()
    created = one(site.events, "mpps_created", sop=uid)
    assert (created["status"], created["calling_ae"], created["step"]["Modality"]) == ("IN PROGRESS", "MODALITY", "CT")
    updated = one(site.events, "mpps_updated", sop=uid)
    assert updated["status"] == "COMPLETED" and updated["step"]["PerformedProcedureStepEndTime"] == "101500"


def test_storage_commitment_request_and_report_are_announced(site: Site) -> None:
    action = refs(*(("1.2.840.10008.5.1.4.1.1.7", sop) for sop in site.sops), ("1.2.840.10008.5.1.4.1.1.7", "1.2.3"))
    scu = CommitSCU(site.router.port)
    status, _ = scu.request(action)
    assert status == 0 and len(scu.reports) == 1
    transaction = str(action.TransactionUID)
    asked = one(site.events, "commitment_requested", transaction=transaction)
    assert (asked["direction"], asked["peer_ae"], asked["has_address"]) == ("inbound", "MODALITY", True)
    assert asked["sops"] == [*site.sops, "1.2.3"]
    reported = one(site.events, "commitment_reported", transaction=transaction)
    assert (reported["direction"], reported["peer_ae"]) == ("outbound", "MODALITY")
    assert (reported["committed"], reported["failed"]) == (site.sops, ["1.2.3"])
