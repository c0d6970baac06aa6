"""The cluster's rule set (router.rules.shared, docs/cluster.md): how a node's rules folder and the database's
newest version meet, at start-up and at each reload. The nodes are simulated on one SQLite database (the code is
the same; the router wires it on PostgreSQL only); tests/test_nodes.py runs two real nodes on PostgreSQL."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy.engine import Engine

from router.outbox.leases import node_rows, write_heartbeat
from router.rules.shared import SharedRules, digest_of, newest, read_folder
from router.store.db import make_engine
from router.store.models import utcnow
from router.store.rule_history import versions


def folder_with(path: Path, texts: dict[str, str], age: float = 0.0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (path / name).write_text(text)
        then = time.time() - age
        os.utime(path / name, (then, then))
    return path


def a_node(engine: Engine, folder: Path, name: str) -> tuple[SharedRules, list[int]]:
    reloads: list[int] = []
    with engine.begin() as conn:
        write_heartbeat(conn, name, f"host:{name}", utcnow(), 0)
    return SharedRules(engine, folder, name, lambda: reloads.append(1) is None), reloads


def test_first_node_publishes_and_a_stale_node_takes_the_cluster_rules(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'router.db'}")
    a, _ = a_node(engine, folder_with(tmp_path / "a", {"10-x.yaml": "new: 1\n"}), "A")
    a.sync(loaded=True)
    cluster = newest(engine)
    assert cluster is not None and cluster.node_id == "A" and cluster.rule_texts == {"10-x.yaml": "new: 1\n"}

    stale = folder_with(tmp_path / "b", {"10-x.yaml": "old: 1\n", "20-gone.yaml": "gone: 1\n"}, age=3600)
    b, reloads = a_node(engine, stale, "B")
    b.sync(loaded=True)
    assert read_folder(stale) == {"10-x.yaml": "new: 1\n"}, "B took the cluster's files, removed the other one"
    assert reloads == [1] and b.routing == cluster.digest
    assert [v["size"] for v in versions(engine, "20-gone.yaml")] == [len("gone: 1\n")], "the hand edit is kept"
    assert versions(engine, "10-x.yaml")[0]["replaced_by"] == "node B"
    with engine.connect() as conn:
        assert {n["node_id"]: n["rules_current"] for n in node_rows(conn, 30)} == {"A": True, "B": True}


def test_an_edit_on_one_node_reaches_the_other_and_a_newer_folder_at_start_is_published(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'router.db'}")
    a_dir = folder_with(tmp_path / "a", {"10-x.yaml": "v: 1\n"}, age=3600)
    b_dir = folder_with(tmp_path / "b", {"10-x.yaml": "v: 1\n"}, age=3600)
    a, _ = a_node(engine, a_dir, "A")
    b, b_reloads = a_node(engine, b_dir, "B")
    a.sync(True)
    b.sync(True)
    assert b_reloads == [], "the same files: nothing to take"

    folder_with(a_dir, {"10-x.yaml": "v: 2\n"})
    a.sync(loaded=False)  # an edit that does not load is not published
    assert newest(engine).rule_texts == {"10-x.yaml": "v: 1\n"}  # type: ignore[union-attr]
    a.sync(loaded=True)  # fixed (the reload loaded it): published
    b.sync(True)
    assert read_folder(b_dir) == {"10-x.yaml": "v: 2\n"} and b_reloads == [1], "B took A's edit at its next sync"
    assert versions(engine, "10-x.yaml") == [], "B's files were the cluster's: nothing to keep"

    c_dir = folder_with(tmp_path / "c", {"10-x.yaml": "v: 3\n"})  # deployed while C was stopped: newer
    c, _ = a_node(engine, c_dir, "C")
    c.sync(True)
    assert newest(engine).rule_texts == {"10-x.yaml": "v: 3\n"}  # type: ignore[union-attr]
    with engine.connect() as conn:
        current = {n["node_id"]: n["rules_current"] for n in node_rows(conn, 30)}
    assert current == {"A": False, "B": False, "C": True}, "A and B route by v2 until their next sync"
    assert newest(engine).digest == digest_of({"10-x.yaml": "v: 3\n"})  # type: ignore[union-attr]
