"""HTTP, HL7, rule and life-cycle hooks, seen by a plugin loaded through the configuration, over the real protocols
(httpx on DICOMweb with http.auth, MLLP, rule files edited while the router runs, SIGTERM)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from hl7msg import adt, message, send
from peers import RouterProcess, make_instance, send_datasets, wait_for

SAMPLES = Path(__file__).parent / "sample_plugins"
TOKEN = "a-bearer-token-for-the-tests"
PLUGINS = [str(SAMPLES / "recorder.py"), str(SAMPLES / "broken.py")]


def recorded(path: Path, event: str, /, **match: Any) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in found if e["event"] == event and all(e.get(k) == v for k, v in match.items())]


def one(path: Path, event: str, /, **match: Any) -> dict[str, Any]:
    wait_for(lambda: recorded(path, event, **match), 30, what=f"{event} {match}")
    [found] = recorded(path, event, **match)
    return found


class Site:
    def __init__(self, router: RouterProcess, events: Path, study: str, sop: str) -> None:
        self.router, self.events, self.study, self.sop = router, events, study, sop

    def get(self, path: str, token: str | None = TOKEN, **headers: str) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"http://127.0.0.1:{self.router.http_port}/dicomweb{path}", headers={**auth, **headers})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("hooks-http-hl7")
    events = workdir / "events.jsonl"
    router = RouterProcess(workdir, plugin_modules=PLUGINS, plugins={"recorder": {"events": str(events)}},
                           http={"auth": {"bearer_token": TOKEN}}, rules_reload_interval=0.2)  # fmt: skip
    instance = make_instance(generate_uid())
    try:
        router.start()
        assert send_datasets(router.port, [instance]) == [0]
        yield Site(router, events, str(instance.StudyInstanceUID), str(instance.SOPInstanceUID))
    finally:
        router.stop()


# -- HTTP ----------------------------------------------------------------------------------------------------
def test_failed_and_successful_http_logins_are_announced(site: Site) -> None:
    path = "/dicomweb/studies"
    assert site.get("/studies", token=None).status_code == 401
    failed = one(site.events, "authentication_failed", reason="no credentials")
    assert (failed["user"], failed["path"], failed["has_address"]) == ("", path, True)
    assert site.get("/studies", token="wrong-token-wrong-token").status_code == 401
    one(site.events, "authentication_failed", reason="wrong bearer token", path=path)
    assert site.get(f"/studies?StudyInstanceUID={site.study}").status_code == 200
    assert recorded(site.events, "authentication_succeeded", user="bearer", method="bearer", path=path)


def test_qido_query_is_announced_with_its_user_and_matches(site: Site) -> None:
    response = site.get(f"/studies/{site.study}/instances?includefield=AccessionNumber")
    assert response.status_code == 200 and len(response.json()) == 1
    event = one(site.events, "query_answered", service="QIDO-RS", level="IMAGE")
    assert (event["user"], event["calling_ae"], event["matches"], event["status"]) == ("bearer", "", 1, 200)
    assert event["keys"]["StudyInstanceUID"] == site.study and event["sop_class"] == ""
    assert site.get("/series?StudyInstanceUID=1.2.3").status_code == 204
    one(site.events, "query_answered", service="QIDO-RS", level="SERIES", status=204, matches=0)


def test_wado_retrieve_and_metadata_are_exports(site: Site) -> None:
    response = site.get(f"/studies/{site.study}", Accept='multipart/related; type="application/dicom"')
    assert response.status_code == 200 and response.content.count(b"Content-Type: application/dicom") == 1
    event = one(site.events, "instances_exported", service="WADO-RS")
    assert (event["user"], event["sops"], event["studies"], event["failed"], event["status"]) == (
        "bearer", [site.sop], [site.study], 0, 200)  # fmt: skip
    assert event["destination"].startswith("127.0.0.1:") and event["calling_ae"] == ""
    assert site.get(f"/studies/{site.study}/metadata").status_code == 200
    assert one(site.events, "instances_exported", service="WADO-RS/metadata")["sops"] == [site.sop]


# -- HL7 -----------------------------------------------------------------------------------------------------
def test_hl7_message_received_and_acknowledged_aa(site: Site) -> None:
    ack = send(site.router.hl7_port, adt("A04", {3: "MRN300^^^HOSP^MR", 5: "Hook^Heard"}, control_id="HOOK-1"))
    assert "MSA|AA|HOOK-1" in ack
    received = one(site.events, "hl7_received", control_id="HOOK-1")
    assert (received["message_type"], received["sending"], received["facility"]) == ("ADT^A04", "HIS", "HOSP")
    assert received["parsed"] == "ADT^A04" and received["has_address"]
    acked = one(site.events, "hl7_acknowledged", control_id="HOOK-1")
    assert (acked["ack_code"], acked["error"], acked["message_type"], acked["has_message"]) == ("AA", "", "ADT^A04",
                                                                                                True)  # fmt: skip
    assert "plugin broken: router_hl7_acknowledged failed" in site.router.output()


def test_refused_hl7_messages_are_acknowledged_with_their_code(site: Site) -> None:
    ack = send(site.router.hl7_port, message("ORU^R01", control_id="HOOK-2"))
    assert "MSA|AR|HOOK-2" in ack
    acked = one(site.events, "hl7_acknowledged", control_id="HOOK-2")
    assert acked["ack_code"] == "AR" and acked["error"].startswith("AR 200 Unsupported message type")
    ack = send(site.router.hl7_port, adt("A08", {5: "Nobody^Known"}, control_id="HOOK-3"))
    assert "MSA|AE|HOOK-3" in ack
    assert one(site.events, "hl7_acknowledged", control_id="HOOK-3")["error"].startswith("AE 101 Required field")
    ack = send(site.router.hl7_port, message("ADT^A04", control_id="HOOK-4", version="9.9"))
    assert "MSA|AR|HOOK-4" in ack
    unread = one(site.events, "hl7_acknowledged", control_id="HOOK-4")
    assert unread["ack_code"] == "AR" and not recorded(site.events, "hl7_received", control_id="HOOK-4")


# -- rules ---------------------------------------------------------------------------------------------------
def test_rule_edits_are_announced_whether_they_take_effect_or_not(site: Site) -> None:
    rule = [{"name": "mark", "when": {"kind": "dicom"}, "then": [{"coerce": {"set": {"StationName": "X"}}}]}]
    site.router.write_rules("20-mark.yaml", rule)
    ok = one(site.events, "rules_reloaded", ok=True)
    assert (ok["rules"], ok["files"], ok["problems"]) == (1, ["20-mark.yaml"], [])
    site.router.write_rules("30-bad.yaml", [{"name": "bad", "when": {"kind": "dicom"}, "then": [{"nosuch": 1}]}])
    refused = one(site.events, "rules_reloaded", ok=False)
    assert (refused["rules"], refused["files"]) == (1, ["20-mark.yaml"]), "the previous rules stay in force"
    assert len(refused["problems"]) == 1 and "30-bad.yaml:" in refused["problems"][0]
    (site.router.workdir / "rules" / "30-bad.yaml").unlink()
    wait_for(lambda: len(recorded(site.events, "rules_reloaded", ok=True)) == 2, 30, what="the fixed rules")


# -- life cycle ----------------------------------------------------------------------------------------------
def test_startup_and_shutdown_are_announced_in_both_processes(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    router = RouterProcess(tmp_path, plugin_modules=PLUGINS, plugins={"recorder": {"events": str(events)}})
    try:
        router.start()
        starts = {e["process"]: e["pid"] for e in recorded(events, "startup")}
        assert set(starts) == {"serve", "forward"} and starts["serve"] != starts["forward"]
    finally:
        router.stop()
    stops = {e["process"]: e["pid"] for e in recorded(events, "shutdown")}
    assert stops == starts, "each process announced its own shut-down"
    log = router.output()
    assert "plugin broken: router_shutdown failed" in log and "router stopped" in log
