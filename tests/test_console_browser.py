"""The web console in a real browser (Debian's chromium, headless, through Selenium and chromium-driver) against a
live router (``router serve``) and a DCMTK storescp peer: one router and one browser for the module. Every step
waits on a condition the user would see, never on time.

1. sign in, send a C-STORE, see it on the dashboard (it refreshes itself);
2. find it by accession number on the activity page and open its trace;
3. a dead letter (its peer was down, max_attempts 1) is retried from the queue page once the peer is up, and
   storescp has the file;
4. a rule with a mistake is refused with the problem at its line; fixed and saved, it routes the next object;
5. a viewer has no operator buttons, and a forged POST with her session and token is refused 403.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from selenium.webdriver.common.by import By

from browser import NARROW, Browser
from forwarding import generated, send_ok
from peers import RouterProcess, StoreSCP, free_port, wait_for

pytestmark = pytest.mark.interop

PASSWORDS = {"vera": "viewer-password", "otto": "operator-password", "ada": "admin-password"}
ROLES = {"vera": "viewer", "otto": "operator", "ada": "admin"}
RULES = {
    "10-main.yaml": [
        {"name": "late", "when": {"kind": "dicom", "tags": {"Modality": "LT"}}, "then": [{"forward": "LATE"}],
         "stop": True},
        {"name": "to-dest", "when": {"kind": "dicom", "tags": {"Modality": "OT"}}, "then": [{"forward": "DEST"}]},
    ],
    "20-edit.yaml": [{"name": "unused", "when": {"kind": "dicom", "tags": {"Modality": "NONE"}},
                      "then": [{"forward": "DEST"}]}],
}  # fmt: skip
EDITED = "- name: edited-rule\n  when: {kind: dicom, tags: {Modality: ED}}\n  then:\n    - forward: %s\n"


def add_user(router: RouterProcess, name: str, role: str, password: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router", "--config", str(router.config_path), "users", "add", name, "--role", role],
        input=password + "\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


class Site:
    def __init__(self, router: RouterProcess, dest: StoreSCP, late_port: int, workdir: Path, browser: Browser):
        self.router, self.dest, self.late_port, self.workdir, self.browser = router, dest, late_port, workdir, browser

    def send(self, count: int = 1, **attrs: str) -> list[str]:
        folder = self.workdir / f"out-{free_port()}"
        folder.mkdir()
        return send_ok(self.router.port, generated(folder, count, **attrs))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("console-browser")
    dest = StoreSCP(workdir, "DEST")
    late_port = free_port()
    peers = {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port},
             "LATE": {"ae_title": "LATE", "host": "127.0.0.1", "port": late_port}}  # fmt: skip
    router = RouterProcess(workdir, peers=peers, rules=RULES, rules_reload_interval=0.2,
                           forward={"max_attempts": 1, "backoff_initial": 0.2, "backoff_max": 0.5})  # fmt: skip
    for name, password in PASSWORDS.items():
        add_user(router, name, ROLES[name], password)
    dest.start()
    try:
        router.start()
        browser = Browser(f"http://127.0.0.1:{router.http_port}")
        try:
            yield Site(router, dest, late_port, workdir, browser)
        finally:
            browser.close()
            router.stop()
    finally:
        dest.stop()


def test_a_c_store_appears_on_the_dashboard(site: Site) -> None:
    b = site.browser
    b.sign_in("ada", PASSWORDS["ada"])
    b.open("/")
    before = int(b.find("#total-dicom_in").text)
    (uid,) = site.send(1, Modality="OT", AccessionNumber="ACC-DASH")
    b.until(lambda: uid in b.find("#recent").text, "the object among those received lately (htmx refresh)")
    b.until(lambda: int(b.find("#total-dicom_in").text) == before + 1, "the per-minute total to count it")
    b.until(lambda: int(b.find("#total-dicom_out").text) >= 1, "its delivery to DEST")
    b.find("svg.chart rect.bar.dicom_in")
    b.shot("dashboard")
    b.shot("dashboard-narrow", NARROW)


def test_find_by_accession_number_and_open_the_trace(site: Site) -> None:
    b = site.browser
    b.sign_in("vera", PASSWORDS["vera"])
    (uid,) = site.send(1, Modality="OT", AccessionNumber="ACC-FIND-1")
    b.open("/activity")
    b.find("input[name=accession]").send_keys("ACC-FIND-1")
    b.click("#search button[type=submit]")
    b.until(lambda: b.texts("#subjects a.trace") == [uid], "the search's answer: that object alone")
    b.shot("activity")
    b.click("#subjects a.trace")
    b.until(lambda: "Trace" in b.find("h1").text and "delivered" in b.text(), "the trace, delivered to DEST")
    text = b.text()
    assert "received" in text and "to-dest" in text and "DEST" in text
    b.shot("trace")


def test_a_dead_letter_is_retried_from_the_queue_once_the_peer_is_up(site: Site) -> None:
    b = site.browser
    b.sign_in("otto", PASSWORDS["otto"])
    (uid,) = site.send(1, Modality="LT")
    b.open("/queue?state=dead&peer=LATE")
    b.until(lambda: uid in b.find("#jobs").text or b.open("/queue?state=dead&peer=LATE"), "the dead letter")
    row = next(r for r in b.all("#jobs tbody tr") if uid in r.text)
    assert "dead" in row.text and row.find_elements(By.CSS_SELECTOR, ".error")[0].text, "its last error"
    row_id = row.get_attribute("id")
    b.shot("queue")
    late = StoreSCP(site.workdir, "LATE", port=site.late_port).start()
    try:
        b.click(f"#{row_id} button.retry")
        b.until(lambda: "requeued" in b.find("#done").text, "the retry to be done")
        wait_for(lambda: len(late.received()) == 1, 30, what="storescp LATE to have the object")
        trace = f"/activity/trace?sop_uid={uid}"  # reloaded until the done mark (written after the delivery) shows
        b.open(trace)
        b.until(
            lambda: ("retried" in b.text() and "delivered" in b.text()) or b.open(trace),
            "the trace: retried, then delivered",
        )
    finally:
        late.stop()


def test_a_rule_mistake_is_shown_at_its_line_and_the_fixed_rule_routes_the_next_object(site: Site) -> None:
    b = site.browser
    b.sign_in("ada", PASSWORDS["ada"])
    b.open("/rules/20-edit.yaml")
    area = b.find("#text")
    area.clear()
    area.send_keys(EDITED % "NOPEER")
    b.click("#save")
    b.until(lambda: b.all("#problems li.problem"), "the problems")
    problem = b.find("#problems li.problem")
    line = problem.get_attribute("data-line")
    assert line == "4" and "20-edit.yaml:4" in problem.text and "NOPEER" in problem.text, problem.text
    assert b.find(f"#line-{line}").get_attribute("class") == "problem-line"
    assert "nothing was saved" in b.find("#problems").text
    b.shot("rules-problem")
    assert "NOPEER" not in (site.router.workdir / "rules" / "20-edit.yaml").read_text()
    area = b.find("#text")
    area.clear()
    area.send_keys(EDITED % "DEST")
    b.click("#check")
    b.until(lambda: b.all("#check-ok"), "the check to pass")
    b.click("#save")
    b.until(lambda: "saved" in b.find("#done").text, "the save")
    assert yaml.safe_load((site.router.workdir / "rules" / "20-edit.yaml").read_text())[0]["name"] == "edited-rule"
    b.shot("rules")
    (uid,) = site.send(1, Modality="ED")
    b.open(f"/activity/trace?sop_uid={uid}")
    b.until(lambda: "edited-rule" in b.text() or b.open(f"/activity/trace?sop_uid={uid}"), "routed by the new rule")


def test_a_viewer_sees_no_operator_buttons_and_a_forged_post_is_refused(site: Site) -> None:
    b = site.browser
    b.sign_in("vera", PASSWORDS["vera"])
    b.open("/peers")
    assert b.all("#peer-DEST button") and not [x for x in b.all("#peer-DEST button") if x.text in ("Pause", "Resume")]
    b.open("/queue?state=dead")
    assert not b.all("button.retry") and not b.all("#retry-all") and not b.all("button.danger")
    b.open("/rules/20-edit.yaml")
    assert not b.all("#save") and b.find("#text").get_attribute("readonly") is not None
    token = b.find("input[name=csrf_token]").get_attribute("value")
    cookies = {"router_session": b.cookie("router_session")}
    forged = httpx.post(f"{b.base}/queue/retry", data={"csrf_token": token, "state": "dead"}, cookies=cookies)
    assert forged.status_code == 403 and "takes operator" in forged.text
    api = httpx.post(f"{b.base}/api/peers/DEST/pause", headers={"X-CSRF-Token": str(token)}, cookies=cookies)
    assert api.status_code == 403
    b.open("/peers")
    assert "forwarding" in b.find("#peer-DEST").text
