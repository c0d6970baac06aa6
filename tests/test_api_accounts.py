"""Users, tokens, the login throttle, the activity record's retention and the off-loopback rule, without a router."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from router.config import ConfigError, parse_config
from router.listeners.http import auth
from router.listeners.http.auth import Throttle, exposure_problem
from router.store import users
from router.store.activity import Entry, prune, record_now, trace
from router.store.db import make_engine
from router.store.models import utcnow


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    found = make_engine(f"sqlite:///{tmp_path / 'router.db'}")
    yield found
    found.dispose()


def test_passwords_are_argon2id_hashes_and_tokens_are_only_digests(engine: Engine, tmp_path: Path) -> None:
    users.add_user(engine, "ann", "operator", "ann-password")
    with pytest.raises(users.UserError, match="exists already"):
        users.add_user(engine, "ann", "viewer", "another-password")
    with pytest.raises(users.UserError, match="unknown role"):
        users.add_user(engine, "bob", "root", "bob-password")
    with pytest.raises(users.UserError, match="8 to 1024"):
        users.add_user(engine, "bob", "viewer", "short")
    assert users.check_password(engine, "ann", "ann-password") == (True, users.Account("ann", "operator"))
    assert users.check_password(engine, "ann", "ann-password") == (True, users.Account("ann", "operator")), "again"
    assert users.check_password(engine, "ann", "wrong-password") == (True, None)
    assert users.check_password(engine, "nobody", "ann-password") == (False, None)
    token_id, token = users.create_token(engine, "ann", "nightly")
    assert users.check_token(engine, token) == users.Account("ann", "operator")
    assert users.check_token(engine, token + "x") is None and users.check_token(engine, "not-a-token") is None
    db = sqlite3.connect(tmp_path / "router.db")
    dump = "\n".join(db.iterdump())
    [(password_hash,)] = db.execute("select password_hash from router_user").fetchall()
    assert password_hash.startswith("$argon2id$") and "ann-password" not in dump
    assert token not in "\n".join(db.iterdump())
    assert users.change_user(engine, "ann", password="new-password")
    assert users.check_password(engine, "ann", "ann-password") == (True, None), "a remembered check ends with it"
    assert users.revoke_token(engine, "ann", token_id) and users.check_token(engine, token) is None
    assert users.remove_user(engine, "ann") and not users.any_users(engine)


def test_the_throttle_waits_longer_after_each_failure_and_forgets(monkeypatch: pytest.MonkeyPatch) -> None:
    throttle = Throttle()
    for _ in range(auth.FREE_FAILURES - 1):
        throttle.failed("user:ann", "host:10.0.0.1")
    assert throttle.delay("user:ann") == 0.0
    throttle.failed("user:ann", "host:10.0.0.1")
    assert throttle.delay("user:ann") == 0.5 and throttle.delay("user:bob", "host:10.0.0.1") == 0.5
    throttle.failed("user:ann")
    assert throttle.delay("user:ann") == 1.0
    for _ in range(20):
        throttle.failed("user:ann")
    assert throttle.delay("user:ann") == auth.MAX_DELAY
    throttle.succeeded("user:ann", "host:10.0.0.1")
    assert throttle.delay("user:ann", "host:10.0.0.1") == 0.0
    monkeypatch.setattr(auth, "MAX_TRACKED", 100)
    for n in range(500):
        throttle.failed(f"host:{n}")
    assert len(throttle._failures) == 100, "bounded memory"


def test_off_loopback_needs_tls_and_someone_to_sign_in(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http: .*set http.tls"):
        parse_config({"http": {"host": "0.0.0.0", "auth": {"bearer_token": "x" * 16}}}, tmp_path)
    exposed = parse_config({"http": {"host": "0.0.0.0", "tls": {"cert": "c.pem", "key": "k.pem"}}}, tmp_path)
    problem = exposure_problem(exposed, engine)
    assert problem is not None and "router users add" in problem and "http.auth" in problem
    users.add_user(engine, "ann", "admin", "ann-password")
    assert exposure_problem(exposed, engine) is None
    assert exposure_problem(parse_config({}, tmp_path), engine) is None, "loopback"


def test_activity_is_found_by_any_key_and_old_rows_go(engine: Engine) -> None:
    old = utcnow() - timedelta(days=40)
    record_now(engine, [
        Entry("received", "1.2.3", "dicom", {"accession": "A1", "sop_uid": "1.2.3"}, at=old),
        Entry("delivered", "1.2.3", "dicom-store", {"sop_uid": "1.2.3"}, peer="PACS", at=old + timedelta(seconds=1)),
        Entry("received", "1.2.4", "dicom", {"accession": "A1", "sop_uid": "1.2.4"}),
        Entry("received", "hl7/x.hl7", "hl7", {"msh10": "M1", "patient_id": "P9"}),
    ])  # fmt: skip
    rows, truncated = trace(engine, {"accession": "A1"})
    assert [(r["subject"], r["event"]) for r in rows] == [("1.2.3", "received"), ("1.2.3", "delivered"),
                                                         ("1.2.4", "received")] and not truncated  # fmt: skip
    assert [r["subject"] for r in trace(engine, {"msh10": "M1"})[0]] == ["hl7/x.hl7"]
    assert trace(engine, {"accession": "A1"}, limit=1) == (rows[:1], True)
    assert prune(engine, keep_days=30) == 2
    assert [r["subject"] for r in trace(engine, {"accession": "A1"})[0]] == ["1.2.4"]
