"""The web console without a browser: the HTTP application in process (Starlette's TestClient), with the router's
own plugins, users and database. Sign-in and the session cookie, CSRF refusal, roles (buttons hidden and the
server's 403), escaping of stored values, security headers, the vendored assets, the narrow layout, and
``/api/stats`` (per-minute counts, queue ages, errors) on rows written here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from router.config import parse_config
from router.hooks.manager import build_plugin_manager, collect_stages, notify
from router.listeners.http.api import ApiServices
from router.listeners.http.api.stats import first_id_since
from router.listeners.http.app import make_app
from router.rules.live import LiveRules
from router.store.activity import Entry, record
from router.store.db import make_engine
from router.store.models import utcnow
from router.store.tables import ACTIVITY, JOB, PATIENT, WORKLIST_ITEM
from router.store.users import add_user
from router.store.writelock import WriteLock

PASSWORDS = {"vera": "viewer-password", "otto": "operator-password", "ada": "admin-password"}
ROLES = {"vera": "viewer", "otto": "operator", "ada": "admin"}
HOSTILE = "<script>alert(1)</script>^Evil"
RULES = {"10-all.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]}


class Console:
    def __init__(self, app: Any, engine: Engine) -> None:
        self.app, self.engine = app, engine

    def client(self, user: str | None = None) -> TestClient:
        client = TestClient(self.app, base_url="http://127.0.0.1", follow_redirects=False)
        if user is not None:
            answer = client.post("/login", data={"username": user, "password": PASSWORDS[user]})
            assert answer.status_code == 303, answer.text
        return client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console")
    (folder / "rules").mkdir()
    for name, content in RULES.items():
        (folder / "rules" / name).write_text(yaml.safe_dump(content))
    peers = {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": 9}}
    config = parse_config({"data_dir": "var", "rules_dir": "rules", "peers": peers}, folder)
    pm = build_plugin_manager(config)
    notify(pm, "router_startup", config=config, process="serve", plugin_settings=pm.settings)
    engine = make_engine(config.effective_database_url)
    stages = collect_stages(pm)
    services = ApiServices(config, engine, pm, LiveRules(config.rules_dir, stages, config), stages, WriteLock(),
                           lambda peers: None)  # fmt: skip
    for name, password in PASSWORDS.items():
        add_user(engine, name, ROLES[name], password)
    with engine.begin() as conn:
        patient = conn.execute(insert(PATIENT).values(patient_id="P-1", name=HOSTILE)).inserted_primary_key[0]
        conn.execute(insert(WORKLIST_ITEM).values(patient_fk=patient, accession_number="ACC-W1", modality="CT",
                                                  sps_start_date="20240101"))  # fmt: skip
    try:
        yield Console(make_app(config, None, engine, pm, services), engine)  # type: ignore[arg-type]  # no STOW
    finally:
        notify(pm, "router_shutdown", process="serve")
        engine.dispose()


def test_a_page_without_a_session_sends_the_browser_to_sign_in(console: Console) -> None:
    client = console.client()
    assert client.get("/").headers["location"] == "/login"
    assert client.get("/queue").status_code == 303
    signed = client.get("/login")
    assert signed.status_code == 200 and 'name="password"' in signed.text


def test_wrong_password_is_refused_and_a_right_one_sets_an_httponly_samesite_cookie(console: Console) -> None:
    client = console.client()
    wrong = client.post("/login", data={"username": "vera", "password": "not-her-password"})
    assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
    right = client.post("/login", data={"username": "vera", "password": PASSWORDS["vera"]})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    dashboard = client.get("/")
    assert dashboard.status_code == 200 and "vera" in dashboard.text and "In and out per minute" in dashboard.text


def test_every_page_carries_the_security_headers_and_loads_only_its_own_assets(console: Console) -> None:
    client = console.client("ada")
    for path in ("/", "/login", "/peers", "/queue", "/activity", "/rules", "/rules/10-all.yaml", "/worklist",
                 "/studies", "/dashboard/panel"):  # fmt: skip
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
        assets = re.findall(r'(?:src|href)="([^"#?]+\.(?:js|css))"', page.text)
        assert all(a.startswith("/static/") for a in assets), assets
        assert "<script>" not in page.text, f"{path} has an inline script"
        assert " style=" not in page.text, f"{path} has an inline style"


def test_the_assets_are_served_by_the_router(console: Console) -> None:
    client = console.client()  # no session: the sign-in page needs them
    css = client.get("/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "@media (max-width: 760px)" in css.text, "the narrow layout"
    js = client.get("/static/htmx.min.js")
    assert js.status_code == 200 and "htmx" in js.text[:2000] and len(js.content) > 30_000
    assert client.get("/static/htmx-LICENSE.txt").status_code == 200
    login = client.get("/login").text
    assert 'name="viewport" content="width=device-width' in login


def test_stored_values_are_escaped(console: Console) -> None:
    page = console.client("vera").get("/worklist")
    assert HOSTILE not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;^Evil" in page.text


def test_a_change_without_the_csrf_token_is_refused(console: Console) -> None:
    client = console.client("otto")
    csrf_of(client.get("/peers").text)
    refused = client.post("/peers/DEST/pause", data={})
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = client.post("/peers/DEST/pause", data={"csrf_token": "not-the-token"})
    assert wrong.status_code == 403
    assert "paused" not in client.get("/peers").text.split("DEST", 1)[1].split("</tr>")[0]


def test_an_operator_pauses_and_resumes_with_the_token(console: Console) -> None:
    client = console.client("otto")
    token = csrf_of(client.get("/peers").text)
    assert client.post("/peers/DEST/pause", data={"csrf_token": token}).status_code == 303
    assert ">Resume</button>" in client.get("/peers").text
    assert client.post("/peers/DEST/resume", headers={"X-CSRF-Token": token}).status_code == 303  # htmx's way
    assert ">Pause</button>" in client.get("/peers").text


def test_a_viewer_sees_no_change_buttons_and_is_refused_by_the_server(console: Console) -> None:
    client = console.client("vera")
    peers = client.get("/peers").text
    assert ">Echo</button>" in peers and ">Pause</button>" not in peers
    token = csrf_of(peers)
    refused = client.post("/peers/DEST/pause", data={"csrf_token": token})
    assert refused.status_code == 403 and "takes operator" in refused.text
    editor = client.get("/rules/10-all.yaml").text
    assert 'id="save"' not in editor and 'id="check"' in editor
    assert client.post("/rules/10-all.yaml", data={"csrf_token": token, "text": "[]"}).status_code == 403


def test_check_shows_a_problem_at_its_line_and_saves_nothing(console: Console, tmp_path: Path) -> None:
    client = console.client("ada")
    token = csrf_of(client.get("/rules/10-all.yaml").text)
    broken = "- name: all\n  when: {kind: dicom}\n  then:\n    - forward: NOWHERE\n"
    checked = client.post("/rules/10-all.yaml/check", data={"csrf_token": token, "text": broken})
    assert checked.status_code == 200
    problems = re.findall(r'<li class="problem" data-line="(\d+)">', checked.text)
    assert problems, checked.text
    assert re.search(rf'<li id="line-{problems[0]}" class="problem-line">', checked.text)
    saved = client.post("/rules/10-all.yaml", data={"csrf_token": token, "text": broken})
    assert saved.status_code == 422 and "nothing was saved" in saved.text
    assert "NOWHERE" not in client.get("/api/rules/10-all.yaml").text


def test_stats_count_per_minute_and_age_the_oldest_job(console: Console) -> None:
    now = utcnow()
    with console.engine.begin() as conn:
        record(conn, [Entry("received", "1.2.3.old", "dicom", {"sop_uid": "1.2.3.old"}, at=now - timedelta(hours=3)),
                      Entry("received", "1.2.3.4", "dicom", {"sop_uid": "1.2.3.4"}, at=now - timedelta(minutes=2)),
                      Entry("received", "msg-1", "hl7", {"msh10": "M1"}, at=now - timedelta(minutes=1)),
                      Entry("delivered", "1.2.3.4", "dicom", peer="DEST", at=now - timedelta(minutes=1)),
                      Entry("dead", "1.2.3.4", "dicom", peer="DEST", status=0xA700, at=now,
                            detail={"error": "out of resources"})])  # fmt: skip
        conn.execute(insert(JOB).values(peer="DEST", kind="dicom_store", sop_uid="1.2.3.4", path="x", state="pending",
                                        sop_class_uid="1.2.840.10008.5.1.4.1.1.7", transfer_syntax="1.2.840.1",
                                        created_at=now - timedelta(minutes=20), next_attempt_at=now))  # fmt: skip
    stats = console.client("vera").get("/api/stats").json()
    assert len(stats["minutes"]) == 60
    totals = {k: sum(m[k] for m in stats["minutes"]) for k in ("dicom_in", "hl7_in", "dicom_out", "hl7_out")}
    assert totals == {"dicom_in": 1, "hl7_in": 1, "dicom_out": 1, "hl7_out": 0}, "the 3-hour-old row is out"
    (dest,) = [q for q in stats["queue"] if q["peer"] == "DEST"]
    assert dest["depth"] == 1 and 1190 < dest["oldest_age_seconds"] < 1300
    assert stats["errors"][0]["event"] == "dead" and stats["errors"][0]["error"] == "out of resources"
    assert [r["sop_uid"] or r["msh10"] for r in stats["recent"]] == ["M1", "1.2.3.4"], "newest first, in the hour"
    page = console.client("vera").get("/dashboard/panel").text
    assert 'id="total-dicom_in">1<' in page and "out of resources" in page


def test_the_window_starts_at_the_first_row_since_the_cutoff(console: Console) -> None:
    with console.engine.connect() as conn:
        old = conn.execute(ACTIVITY.select().where(ACTIVITY.c.subject == "1.2.3.old")).mappings().one()
        first = first_id_since(conn, utcnow() - timedelta(hours=1))
        assert first is not None and first > old["id"]
        assert first_id_since(conn, utcnow() + timedelta(minutes=5)) is None
