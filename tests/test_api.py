"""The admin API end to end against a live router (``router serve``), over httpx: every role boundary, the queue
(keyset pages, a dead letter retried and delivered, delete), paused peers, rule saves (a mistake refused with its
file:line, a good save routing the next object), activity found by accession number and MSH-10, dry runs, studies,
users, tokens, console sessions with their CSRF token, slowed-down guessing, and the hook for every change."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from forwarding import SUCCESS, ScriptedSCP, peer_at
from hl7msg import adt, send
from peers import RouterProcess, free_port, make_instance, send_datasets, wait_for
from worklist_peers import ORDERS, send_order

PASSWORDS = {"vera": "viewer-password", "otto": "operator-password", "ada": "admin-password"}
ROLES = {"vera": "viewer", "otto": "operator", "ada": "admin"}
RULES = {
    "10-dicom.yaml": [
        {
            "name": "paged",
            "when": {"kind": "dicom", "calling_ae": "PAGER"},
            "then": [{"forward": "HELD"}],
            "stop": True,
        },
        {"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]},
    ],
    "20-hl7.yaml": [{"name": "adt", "when": {"kind": "hl7", "message": "ADT^*"}, "then": [{"forward": "RIS"}]}],
}
RECORDER = """
import json
from router.hooks.specs import hookimpl
PATH = {path!r}

def _write(event, **kw):
    with open(PATH, "a") as f:
        f.write(json.dumps({{"event": event, **kw}}, default=str) + "\\n")

@hookimpl
def router_admin_changed(user, role, action, target, address, detail):
    _write("admin_changed", user=user, role=role, action=action, target=target, detail=detail)

@hookimpl
def router_authentication_succeeded(user, method, path):
    _write("auth_ok", user=user, method=method, path=path)

@hookimpl
def router_authentication_failed(user, reason, path):
    _write("auth_failed", user=user, reason=reason, path=path)
"""


class Site:
    def __init__(self, router: RouterProcess, dest: ScriptedSCP, held: ScriptedSCP, events: Path) -> None:
        self.router, self.dest, self.held, self.events = router, dest, held, events
        self.base = f"http://127.0.0.1:{router.http_port}"

    def call(self, method: str, path: str, user: str | None = "ada", **kw: Any) -> httpx.Response:
        auth = (user, PASSWORDS[user]) if user else None
        return httpx.request(method, self.base + path, auth=auth, timeout=30, **kw)

    def get(self, path: str, user: str | None = "ada", **kw: Any) -> httpx.Response:
        return self.call("GET", path, user, **kw)

    def post(self, path: str, user: str | None = "ada", **kw: Any) -> httpx.Response:
        return self.call("POST", path, user, **kw)

    def recorded(self, event: str, **match: Any) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        rows = [json.loads(line) for line in self.events.read_text().splitlines()]
        return [r for r in rows if r["event"] == event and all(r.get(k) == v for k, v in match.items())]

    def jobs(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.get("/api/jobs", params={"limit": 1000, **params}).json()["items"])


def add_user(router: RouterProcess, name: str, role: str, password: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router", "--config", str(router.config_path), "users", "add", name, "--role", role],
        input=password + "\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("api")
    events = workdir / "events.jsonl"
    (workdir / "recorder_api.py").write_text(RECORDER.format(path=str(events)))
    dest, held = ScriptedSCP(lambda ds: SUCCESS), ScriptedSCP(lambda ds: SUCCESS, aet="HELD")
    peers = {
        "DEST": peer_at(dest.port),
        "HELD": peer_at(held.port, "HELD"),
        "RIS": {"mllp": f"127.0.0.1:{free_port()}"},
    }
    router = RouterProcess(workdir, peers=peers, rules=RULES, rules_reload_interval=0.2,
                           plugin_modules=[str(workdir / "recorder_api.py")],
                           forward={"max_attempts": 2, "backoff_initial": 0.2, "backoff_max": 0.5})  # fmt: skip
    for name, password in PASSWORDS.items():
        add_user(router, name, ROLES[name], password)
    with held.serving():
        router.start()
        try:
            yield Site(router, dest, held, events)
        finally:
            router.stop()


def instance(**attrs: Any) -> Dataset:
    return make_instance(generate_uid(), **attrs)


# -- who may do what -----------------------------------------------------------------------------------------------
PATH_VALUES = {"name": "NOPE", "id": "999999", "file": "99-none.yaml", "version": "1", "uid": "1.2.3", "token": "1"}


def operations(site: Site) -> list[tuple[str, str, str]]:
    spec = site.get("/api/openapi.json", user=None).json()
    found = []
    for path, methods in spec["paths"].items():
        concrete = path
        for key, value in PATH_VALUES.items():
            concrete = concrete.replace(f"{{{key}}}", value)
        found += [(method.upper(), concrete, op["x-role"]) for method, op in methods.items() if "x-role" in op]
    return found


def test_every_operation_answers_401_without_credentials_and_403_below_its_role(site: Site) -> None:
    ops = operations(site)
    assert len(ops) >= 30
    order = ["viewer", "operator", "admin"]
    for method, path, role in ops:
        if role == "anyone":
            continue
        assert site.call(method, path, user=None).status_code == 401, (method, path)
        for user, user_role in ROLES.items():
            status = site.call(method, path, user=user, json={}).status_code
            if order.index(user_role) < order.index(role):
                assert status == 403, (method, path, user)
            elif method == "GET":
                assert status not in (401, 403), (method, path, user, status)


def test_wrong_credentials_are_401_and_announced(site: Site) -> None:
    response = httpx.get(site.base + "/api/status", auth=("vera", "not-her-password"))
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Basic")
    wait_for(lambda: site.recorded("auth_failed", user="vera"), 10, what="a failed login announced")
    assert site.get("/api/status", user="vera").status_code == 200
    assert site.recorded("auth_ok", user="vera", method="basic")


def test_repeated_failures_are_slowed_down(site: Site) -> None:
    wrong = ("mallory", "guess-guess")
    for _ in range(5):
        assert httpx.get(site.base + "/api/status", auth=wrong).status_code == 401
    started = time.monotonic()
    assert httpx.get(site.base + "/api/status", auth=wrong).status_code == 401
    assert time.monotonic() - started >= 0.45, "the 6th failure of a name waits"


def test_status_says_what_runs(site: Site) -> None:
    status = site.get("/api/status", user="vera").json()
    assert status["listeners"]["dicom"]["port"] == site.router.port
    assert status["listeners"]["http"]["port"] == site.router.http_port
    assert status["database"]["dialect"] == "sqlite" and status["rules"]["files"] == sorted(RULES)
    assert set(status["queue"]) == {"pending", "inflight", "committing", "done", "dead"}
    assert status["storage"]["disk_free_bytes"] > 0


# -- the queue, dead letters, pages, paused peers -------------------------------------------------------------------
def test_a_dead_letter_is_retried_and_delivered_to_the_peer(site: Site) -> None:
    ds = instance(AccessionNumber="ACC-DEAD-1")
    assert send_datasets(site.router.port, [ds]) == [0]
    uid = str(ds.SOPInstanceUID)

    def dead() -> list[dict[str, Any]]:
        return [j for j in site.jobs(state="dead", peer="DEST") if j["sop_uid"] == uid]

    wait_for(dead, 30, what="the job to DEST dead-lettered (DEST is down)")
    [job] = dead()
    assert job["attempts"] == 2 and "DEST" in job["last_error"]
    assert site.post(f"/api/jobs/{job['id']}/retry", user="vera").status_code == 403
    with site.dest.serving():
        assert site.post(f"/api/jobs/{job['id']}/retry", user="otto").json() == {"retried": 1}
        wait_for(lambda: uid in site.dest.accepted(), 30, what="the retried job delivered")
    wait_for(lambda: site.get(f"/api/jobs/{job['id']}").json()["state"] == "done", 10, what="marked done")
    trace = site.get("/api/activity", user="vera", params={"accession": "ACC-DEAD-1"}).json()["items"]
    events = [row["event"] for row in trace]
    assert events[0] == "received" and events[-1] == "delivered", events
    assert events.count("failed") == 1 and events.index("dead") < events.index("retried") < events.index("delivered")
    received = trace[0]
    assert received["detail"]["rules"] == ["all"] and received["detail"]["calling_ae"] == "STORESCU"
    assert received["detail"]["jobs"] == [{"peer": "DEST", "kind": "dicom-store"}]
    assert received["detail"]["steps"][0]["where"].startswith("10-dicom.yaml:")
    assert trace[-1]["peer"] == "DEST" and trace[-1]["status"] == 0
    assert site.recorded("admin_changed", action="job.retried", target=str(job["id"]), user="otto")


def test_jobs_are_paged_by_id_and_a_paused_peer_keeps_them_pending(site: Site) -> None:
    assert site.post("/api/peers/HELD/pause", user="vera").status_code == 403
    assert site.post("/api/peers/HELD/pause", user="otto").json()["paused"] is True
    held = site.get("/api/peers", user="vera").json()["items"]
    assert next(p for p in held if p["name"] == "HELD")["paused"] is True
    datasets = [instance() for _ in range(7)]
    assert send_datasets(site.router.port, datasets, calling="PAGER") == [0] * 7
    time.sleep(1.5)  # the scenario: forward workers that would have sent them by now (poll 0.2 s)
    assert site.held.accepted() == []
    pages, cursor = [], None
    while True:
        params = {"peer": "HELD", "limit": 3, **({"cursor": cursor} if cursor else {})}
        answer = site.get("/api/jobs", user="vera", params=params).json()
        pages.append(answer["items"])
        cursor = answer["next"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    ids = [j["id"] for page in pages for j in page]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7
    assert {j["state"] for page in pages for j in page} == {"pending"}
    assert {j["sop_uid"] for page in pages for j in page} == {str(d.SOPInstanceUID) for d in datasets}
    assert site.post("/api/peers/HELD/resume", user="otto").json()["changed"] is True
    wait_for(lambda: len(site.held.accepted()) == 7, 30, what="the held jobs delivered after resume")
    assert site.recorded("admin_changed", action="peer.paused", target="HELD")
    assert site.recorded("admin_changed", action="peer.resumed", target="HELD")


def test_retry_all_and_delete(site: Site) -> None:
    ds = instance()
    assert send_datasets(site.router.port, [ds]) == [0]
    wait_for(lambda: any(j["sop_uid"] == ds.SOPInstanceUID for j in site.jobs(state="dead")), 30, what="dead")
    assert site.post("/api/jobs/retry", user="otto", params={"state": "done"}).status_code == 400
    assert site.post("/api/jobs/retry", user="otto", params={"state": "dead", "peer": "DEST"}).json()["retried"] >= 1
    wait_for(lambda: any(j["sop_uid"] == ds.SOPInstanceUID for j in site.jobs(state="dead")), 30, what="dead again")
    [job] = [j for j in site.jobs(state="dead") if j["sop_uid"] == ds.SOPInstanceUID]
    assert site.call("DELETE", f"/api/jobs/{job['id']}", user="otto").json() == {"deleted": job["id"]}
    assert site.get(f"/api/jobs/{job['id']}").status_code == 404
    assert site.call("DELETE", f"/api/jobs/{job['id']}", user="otto").status_code == 404


def test_echo_tells_a_live_peer_from_a_dead_one(site: Site) -> None:
    live = site.post("/api/peers/HELD/echo", user="vera").json()
    assert live["ok"] is True and live["check"] == "C-ECHO" and live["status"] == 0
    down = site.post("/api/peers/RIS/echo", user="vera").json()
    assert down["ok"] is False and down["check"] == "connect"
    assert site.post("/api/peers/NOPE/echo", user="vera").status_code == 404


# -- rules -------------------------------------------------------------------------------------------------------------
def test_a_rule_with_a_mistake_is_refused_at_its_line_and_a_good_one_routes_the_next_object(site: Site) -> None:
    path = site.router.workdir / "rules" / "30-new.yaml"
    broken = "- name: new\n  when: {kind: dicom, calling_ae: NEWAE}\n  then:\n    - forward: NOWHERE\n"
    response = site.call("PUT", "/api/rules/30-new.yaml", user="otto", content=broken)
    assert response.status_code == 403
    response = site.call("PUT", "/api/rules/30-new.yaml", content=broken)
    assert response.status_code == 422
    [problem] = response.json()["problems"]
    assert (problem["file"], problem["line"]) == ("30-new.yaml", 4)
    assert problem["message"].startswith("forward: unknown peer 'NOWHERE'")
    assert not path.exists(), "nothing written"
    good = broken.replace("NOWHERE", "HELD") + "  stop: true\n"
    saved = site.call("PUT", "/api/rules/30-new.yaml", content=good).json()
    assert saved["saved"] is True and path.read_text() == good
    assert site.get("/api/rules/30-new.yaml", user="vera").text == good
    ds = instance()
    assert send_datasets(site.router.port, [ds], calling="NEWAE") == [0]
    wait_for(lambda: str(ds.SOPInstanceUID) in site.held.accepted(), 30, what="the new rule's forward")
    assert sorted(j["rule"] for j in site.jobs() if j["sop_uid"] == ds.SOPInstanceUID) == ["all", "new"]
    assert site.recorded("admin_changed", action="rules.saved", target="30-new.yaml", user="ada")


def test_history_and_revert(site: Site) -> None:
    first = "- name: hist\n  when: {kind: dicom, calling_ae: HIST1}\n  then: [{forward: HELD}]\n"
    second = first.replace("HIST1", "HIST2")
    assert site.call("PUT", "/api/rules/40-hist.yaml", content=first).json()["saved"]
    assert site.call("PUT", "/api/rules/40-hist.yaml", content=second).json()["saved"]
    history = site.get("/api/rules/40-hist.yaml/history", user="vera").json()["items"]
    assert [h["replaced_by"] for h in history] == ["ada", "ada"]
    newest = history[0]["version"]
    assert site.get(f"/api/rules/40-hist.yaml/history/{newest}", user="vera").text == first
    assert site.post(f"/api/rules/40-hist.yaml/history/{newest}/revert", user="otto").status_code == 403
    reverted = site.post(f"/api/rules/40-hist.yaml/history/{newest}/revert").json()
    assert reverted["saved"] and (site.router.workdir / "rules" / "40-hist.yaml").read_text() == first
    assert site.get("/api/rules/../router.yaml").status_code in (400, 404)
    assert site.get("/api/rules/router.conf", user="vera").status_code == 400


def _p10(ds: Dataset) -> bytes:
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def test_dry_run_of_an_upload_with_the_current_and_edited_rules(site: Site) -> None:
    ds = instance()
    body = {"object": base64.b64encode(_p10(ds)).decode(), "calling_ae": "PAGER",
            "rules": {"05-first.yaml": "- name: first\n  when: {calling_ae: PAGER}\n  then: [{forward: DEST}]\n"
                                       "  stop: true\n"}}  # fmt: skip
    answer = site.post("/api/rules/test", user="vera", json=body).json()
    assert answer["object"]["sop_instance_uid"] == ds.SOPInstanceUID
    assert [r["name"] for r in answer["current"]["rules"]] == ["paged"] and answer["current"]["forwards"] == ["HELD"]
    assert answer["edited"]["forwards"] == ["DEST"] and not (site.router.workdir / "rules" / "05-first.yaml").exists()
    hl7 = adt("A08", {3: "MRN-T^^^HOSP^MR", 5: "Dry^Run"}, control_id="DRY-1")
    answer = site.post("/api/rules/test", user="vera", json={"object": base64.b64encode(hl7.encode()).decode()}).json()
    assert answer["object"]["control_id"] == "DRY-1" and answer["current"]["forwards"] == ["RIS"]
    bad = site.post("/api/rules/test", user="vera", json={"object": base64.b64encode(b"junk").decode()})
    assert bad.status_code == 422
    edited = {"object": body["object"], "rules": {"05-first.yaml": "- name: x\n  then: [{forward: NOPE}]\n"}}
    assert site.post("/api/rules/test", user="vera", json=edited).json()["problems"][0]["line"] == 2


def test_replay_says_what_an_edit_would_change(site: Site) -> None:
    assert send_datasets(site.router.port, [instance()], calling="REPLAYAE") == [0]
    edit = {"05-replay.yaml": "- name: replay\n  when: {calling_ae: REPLAYAE}\n  then: [{forward: HELD}]\n"
                              "  stop: true\n"}  # fmt: skip
    answer = site.post("/api/rules/replay", user="vera", json={"last": 5, "rules": edit}).json()
    newest = answer["items"][0]
    assert newest["current"]["forwards"] == ["DEST"] and newest["edited"]["forwards"] == ["HELD"]
    assert newest["changed"] is True and newest["recorded"]["forwards"] == ["DEST"]
    unchanged = site.post("/api/rules/replay", user="vera", json={"last": 1}).json()["items"][0]
    assert unchanged["changed"] is False and unchanged["edited"] is None


# -- activity by MSH-10, studies, send -------------------------------------------------------------------------------
def test_activity_of_an_hl7_message_by_its_control_id(site: Site) -> None:
    ack = send(site.router.hl7_port, adt("A08", {3: "MRN-ACT^^^HOSP^MR", 5: "Act^Ivity"}, control_id="ACT-MSG-1"))
    assert "MSA|AA|ACT-MSG-1" in ack

    def trace() -> list[dict[str, Any]]:
        return list(site.get("/api/activity", user="vera", params={"msh10": "ACT-MSG-1"}).json()["items"])

    wait_for(lambda: any(r["event"] in ("failed", "dead") for r in trace()), 30, what="a delivery attempt to RIS")
    rows = trace()
    assert rows[0]["event"] == "received" and rows[0]["kind"] == "hl7" and rows[0]["patient_id"] == "MRN-ACT"
    assert rows[0]["detail"]["message_type"] == "ADT^A08"
    assert rows[0]["detail"]["jobs"] == [{"peer": "RIS", "kind": "hl7"}]
    assert all(r["subject"] == rows[0]["subject"] for r in rows) and rows[1]["peer"] == "RIS"
    assert site.get("/api/activity", user="vera", params={"patient_id": "MRN-ACT"}).json()["items"][0] == rows[0]
    assert site.get("/api/activity", user="vera").status_code == 400
    since = site.get("/api/activity", user="vera", params={"msh10": "ACT-MSG-1", "since": "2999-01-01T00:00:00"})
    assert since.json()["items"] == []


def test_studies_search_and_send_to_a_peer(site: Site) -> None:
    study = generate_uid()
    datasets = [make_instance(study, AccessionNumber="ACC-SEND-1", PatientID="PSEND") for _ in range(3)]
    assert send_datasets(site.router.port, datasets, calling="PAGER") == [0] * 3
    found = site.get("/api/studies", user="vera", params={"AccessionNumber": "ACC-SEND-1"}).json()["items"]
    assert [s["StudyInstanceUID"] for s in found] == [study] and found[0]["PatientID"] == "PSEND"
    assert site.get("/api/studies", user="vera", params={"StudyDate": "not-a-date"}).status_code == 400
    assert site.post(f"/api/studies/{study}/send", user="vera", params={"peer": "HELD"}).status_code == 403
    assert site.post(f"/api/studies/{study}/send", user="otto", params={"peer": "RIS"}).status_code == 422
    before = len(site.held.accepted())
    sent = site.post(f"/api/studies/{study}/send", user="otto", params={"peer": "HELD"}).json()
    assert sent["queued"] == 3
    wait_for(lambda: len(site.held.accepted()) >= before + 3, 30, what="the study sent")
    assert {j["rule"] for j in site.jobs(peer="HELD") if j["sop_uid"] == datasets[0].SOPInstanceUID} >= {"api:otto"}
    assert site.get("/api/worklist", user="vera").json()["next"] is None


# -- users, tokens, sessions -------------------------------------------------------------------------------------------
def test_users_and_tokens_are_managed_by_an_admin(site: Site) -> None:
    assert site.post("/api/users", user="otto", json={}).status_code == 403
    new = {"name": "tess", "role": "viewer", "password": "tess-password"}
    assert site.post("/api/users", json=new).status_code == 201
    assert site.post("/api/users", json=new).status_code == 409
    assert site.post("/api/users", json={**new, "name": "short", "password": "x"}).status_code == 422
    assert httpx.get(site.base + "/api/status", auth=("tess", "tess-password")).status_code == 200
    token = site.post("/api/users/tess/tokens", json={"label": "script"}).json()
    bearer = {"Authorization": f"Bearer {token['token']}"}
    assert httpx.get(site.base + "/api/jobs", headers=bearer).status_code == 200
    assert httpx.post(site.base + "/api/jobs/retry", headers=bearer).status_code == 403, "a viewer's token"
    listed = {u["name"]: u for u in site.get("/api/users").json()["items"]}
    assert listed["tess"]["tokens"][0]["label"] == "script" and "token" not in listed["tess"]["tokens"][0]
    assert "password_hash" not in listed["tess"]
    assert site.call("PUT", "/api/users/tess", json={"role": "operator"}).status_code == 200
    assert httpx.post(site.base + "/api/jobs/retry", headers=bearer).status_code == 200, "the role counts at once"
    assert site.call("DELETE", f"/api/users/tess/tokens/{token['id']}").status_code == 200
    assert httpx.get(site.base + "/api/jobs", headers=bearer).status_code == 401
    assert site.call("DELETE", "/api/users/tess").status_code == 200
    assert httpx.get(site.base + "/api/status", auth=("tess", "tess-password")).status_code == 401
    actions = [e["action"] for e in site.recorded("admin_changed") if e["target"] == "tess"]
    assert actions == ["user.added", "token.created", "user.changed", "token.revoked", "user.removed"]


def test_a_console_session_needs_its_csrf_token_for_changes(site: Site) -> None:
    with httpx.Client(base_url=site.base) as console:
        assert console.post("/api/login", json={"username": "otto", "password": "wrong"}).status_code == 401
        login = console.post("/api/login", json={"username": "otto", "password": PASSWORDS["otto"]})
        assert login.status_code == 200 and login.json()["role"] == "operator"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        csrf = login.json()["csrf_token"]
        assert console.get("/api/session").json()["user"] == "otto"
        assert console.post("/api/peers/HELD/resume").status_code == 403, "no CSRF token"
        assert console.post("/api/peers/HELD/resume", headers={"X-CSRF-Token": "forged"}).status_code == 403
        assert console.post("/api/peers/HELD/resume", headers={"X-CSRF-Token": csrf}).status_code == 200
        form = console.post("/api/peers/HELD/resume", content=f"csrf_token={csrf}",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert form.status_code == 200
        assert console.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert console.get("/api/session").status_code == 401
    assert site.recorded("auth_ok", user="otto", method="login", path="/api/login")
    assert site.recorded("auth_failed", user="otto", path="/api/login")


def test_users_command_line(site: Site) -> None:
    listed = site.router.cli("users", "list").stdout
    assert "vera" in listed and "operator" in listed
    token = site.router.cli("users", "token", "vera", "--label", "cli").stdout.strip()
    assert httpx.get(site.base + "/api/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    refused = site.router.cli("users", "add", "bad name", "--role", "admin", check=False)
    assert refused.returncode == 1 and "user name" in refused.stderr
    assert site.recorded("admin_changed", action="token.created", target="vera", role="")


def test_openapi_matches_the_routes(site: Site) -> None:
    spec = site.get("/api/openapi.json", user=None).json()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    for method, path in documented:
        if path != "/api/openapi.json":
            assert f"`{method} {path}" in text, f"docs/api.md does not describe {method} {path}"
    assert yaml.safe_dump(spec)  # plain data


def test_an_order_is_on_the_worklist_and_its_message_found_by_accession(site: Site) -> None:
    order = ORDERS[0]
    send_order(site.router, order)
    items = site.get("/api/worklist", user="vera", params={"accession": order.accession}).json()["items"]
    assert [(i["patient_id"], i["modality"], i["status"]) for i in items] == [(order.patient.pid, "CT", "SCHEDULED")]
    assert site.get("/api/worklist", user="vera", params={"status": "NOPE"}).status_code == 400
    [row] = site.get("/api/activity", user="vera", params={"accession": order.accession}).json()["items"]
    assert (row["event"], row["kind"], row["detail"]["message_type"]) == ("received", "hl7", "ORM^O01")
