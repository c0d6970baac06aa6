"""Leases, takeover, ordering across nodes, NOTIFY wakes and association slots, on the database itself.

The SQLite tests need nothing outside Python; the PostgreSQL ones (interop: Debian postgresql) run two ``Outbox``
objects as two nodes on one throwaway database, with threads claiming at once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import update
from sqlalchemy.engine import Engine

from router.config import ForwardSettings
from router.forward.slots import PeerSlots
from router.outbox.jobs import JobKind, NewJob, enqueue
from router.outbox.leases import NodeKeeper, node_rows, take_over_expired
from router.outbox.queue import Outbox
from router.outbox.wakes import JobListener, origin_of
from router.store.db import make_engine
from router.store.models import JobState, utcnow
from router.store.tables import JOB

from peers import wait_for
from postgres import PgCluster, postgres_cluster

SETTINGS = ForwardSettings(lease_seconds=30)


def queue_jobs(engine: Engine, *jobs: tuple[str, str]) -> None:
    """(peer, sop_uid) each, queued in one transaction as a producer does."""
    with engine.begin() as conn:
        enqueue(conn, [NewJob(JobKind.DICOM_STORE, peer, uid, f"objects/{uid}.dcm") for peer, uid in jobs])


def test_a_claim_leases_the_jobs_and_the_heartbeat_renews_them(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'router.db'}")
    outbox = Outbox(engine, SETTINGS, tmp_path, node_id="N1")
    queue_jobs(engine, ("PACS", "1.1"), ("PACS", "1.2"))
    before = utcnow()
    claimed = outbox.claim("PACS", 10)
    assert [(j.leased_by, j.state) for j in claimed] == [("N1", JobState.INFLIGHT)] * 2
    assert all(j.lease_until is not None for j in claimed)

    keeper = NodeKeeper(outbox, "host:1", cluster=False, on_takeover=lambda peers: None)
    assert keeper.beat() == {}, "on SQLite (one node) nothing is taken over"
    with engine.connect() as conn:
        [row] = node_rows(conn, SETTINGS.lease_seconds)
    assert (row["node_id"], row["status"], row["holds"], row["instance"]) == ("N1", "up", 2, "host:1")
    renewed = [j.lease_until for j in outbox.list(state=JobState.INFLIGHT)]
    assert all(u is not None and u.replace(tzinfo=before.tzinfo) > before + timedelta(seconds=29) for u in renewed)

    outbox.mark_done(claimed[:1], {})
    outbox.release(claimed[1:])
    assert {(j.state, j.leased_by, j.lease_until) for j in outbox.list()} == {
        (JobState.DONE, "", None),
        (JobState.PENDING, "", None),
    }, "a finished or released job keeps no lease"
    keeper.stop()
    with engine.connect() as conn:
        assert node_rows(conn, SETTINGS.lease_seconds)[0]["status"] == "stopped"


def test_release_gives_back_only_what_this_node_holds(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'router.db'}")
    queue_jobs(engine, ("PACS", "1.1"))
    mine = Outbox(engine, SETTINGS, tmp_path, node_id="N1").claim("PACS", 10)
    Outbox(engine, SETTINGS, tmp_path, node_id="N2").release(mine)  # not N2's: untouched
    assert [j.state for j in Outbox(engine, SETTINGS, tmp_path).list()] == [JobState.INFLIGHT]


def test_router_nodes_lists_the_nodes(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "var", "node_id": "N1"}))
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'router.db'}")
    outbox = Outbox(engine, SETTINGS, tmp_path, node_id="N1")
    queue_jobs(engine, ("PACS", "1.1"))
    outbox.claim("PACS", 10)
    NodeKeeper(outbox, "host:1", cluster=False, on_takeover=lambda peers: None).beat()
    run = [sys.executable, "-m", "router", "--config", str(config), "nodes"]
    table = subprocess.run(run, capture_output=True, text=True, check=True, timeout=60).stdout
    assert "N1" in table and "up" in table and "(this one)" in table, table
    as_json = subprocess.run([*run, "--json"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert '"holds": 1' in as_json and '"node_id": "N1"' in as_json, as_json


def lost_lease_outcomes_are_dropped(engine: Engine) -> None:
    """Node A claims, its lease expires, node B takes the jobs over and claims them: A's done and failure marks
    change nothing (counted in ``Outbox.dropped``), B's count."""
    queue_jobs(engine, ("PACS", "6.1"), ("PACS", "6.2"))
    node_a = Outbox(engine, SETTINGS, Path("."), node_id="A")
    node_b = Outbox(engine, SETTINGS, Path("."), node_id="B")
    claimed = node_a.claim("PACS", 10)
    assert len(claimed) == 2
    with engine.begin() as conn:
        conn.execute(update(JOB).values(lease_until=utcnow() - timedelta(seconds=1)))  # A went silent
        assert take_over_expired(conn, "B", utcnow()) == {"PACS": 2}
    assert {(j.state, j.leased_by) for j in node_a.list()} == {(JobState.PENDING, "")}
    assert node_a.mark_done(claimed[:1], {}) == [], "A no longer holds the job: nothing marked"
    assert node_a.mark_failed_many(claimed[1:], "late", permanent=True) == [None]
    assert node_a.dropped == 2
    assert {(j.state, j.attempts) for j in node_a.list()} == {(JobState.PENDING, 0)}, "A's outcomes changed nothing"
    retaken = node_b.claim("PACS", 10)
    assert node_a.mark_done(claimed, {}) == [], "nor once B holds them"
    assert {(j.state, j.leased_by) for j in node_b.list()} == {(JobState.INFLIGHT, "B")}
    assert [j.id for j in node_b.mark_done(retaken, {})] == [j.id for j in retaken], "the holder's marks count"
    assert {j.state for j in node_b.list()} == {JobState.DONE}
    assert node_b.dropped == 0


def test_a_node_whose_lease_was_taken_over_cannot_mark_the_jobs(tmp_path: Path) -> None:
    lost_lease_outcomes_are_dropped(make_engine(f"sqlite:///{tmp_path / 'router.db'}"))


# -- PostgreSQL: two nodes on one database -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_engine(pg_cluster: PgCluster) -> Iterator[Engine]:
    with pg_cluster.fresh_database() as name:
        engine = make_engine(pg_cluster.url(name))
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.mark.interop  # PostgreSQL server
def test_nodes_claiming_at_once_never_share_a_job_and_keep_each_instance_in_order(pg_engine: Engine) -> None:
    uids = [f"2.{i % 10}" for i in range(200)]  # 10 instances, 20 versions each, interleaved
    queue_jobs(pg_engine, *[("PACS", uid) for uid in uids])
    nodes = [Outbox(pg_engine, SETTINGS, Path("."), node_id=f"N{n}") for n in range(2)]
    delivered: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(outbox: Outbox) -> None:
        idle = 0
        while idle < 50:
            jobs = outbox.claim("PACS", 7)
            idle = 0 if jobs else idle + 1
            with lock:
                delivered.extend((j.sop_uid, j.id or 0) for j in jobs)
            outbox.mark_done(jobs, {})

    threads = [threading.Thread(target=work, args=(node,)) for node in nodes for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(i for _, i in delivered) == list(range(1, 201)), "every job claimed exactly once"
    for uid in set(uids):
        ids = [i for u, i in delivered if u == uid]
        assert ids == sorted(ids), f"the versions of {uid} were claimed in the order they were queued"


@pytest.mark.interop  # PostgreSQL server
def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(pg_engine: Engine) -> None:
    queue_jobs(pg_engine, ("PACS", "3.1"), ("PACS", "3.2"))
    dead = Outbox(pg_engine, SETTINGS, Path("."), node_id="DEAD")
    alive = Outbox(pg_engine, SETTINGS, Path("."), node_id="ALIVE")
    [held] = dead.claim("PACS", 1)
    keeper = NodeKeeper(alive, "host:2", cluster=True, on_takeover=lambda peers: None)
    assert keeper.beat() == {}, "a lease that runs is left alone"
    with pg_engine.begin() as conn:
        assert take_over_expired(conn, "ALIVE", utcnow() + timedelta(seconds=29)) == {}
        conn.execute(update(JOB).where(JOB.c.id == held.id).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert keeper.beat() == {"PACS": 1}, "the heartbeat takes over what has expired"
    [job] = alive.claim("PACS", 1)
    assert (job.id, job.leased_by) == (held.id, "ALIVE"), "the dead node's job goes to the live one, first"


@pytest.mark.interop  # PostgreSQL server
def test_a_restarted_node_takes_back_its_own_jobs_unless_its_name_is_in_use(pg_engine: Engine) -> None:
    queue_jobs(pg_engine, ("PACS", "4.1"))
    first = Outbox(pg_engine, SETTINGS, Path("."), node_id="N1")
    first.claim("PACS", 1)
    keeper = NodeKeeper(first, "host:10", cluster=True, on_takeover=lambda peers: None)
    keeper.beat()
    twin = NodeKeeper(Outbox(pg_engine, SETTINGS, Path("."), node_id="N1"), "host:11", True, lambda peers: None)
    assert twin.recover() == 0, "another live router beats as N1: its job is left to its lease"
    keeper.beat()  # the first one beats on
    restarted = NodeKeeper(Outbox(pg_engine, SETTINGS, Path("."), node_id="N1"), "host:10", True, lambda p: None)
    assert restarted.recover() == 1, "the same serving process's new forward process takes its job back"


@pytest.mark.interop  # PostgreSQL server
def test_a_job_queued_elsewhere_wakes_the_listener_and_its_own_does_not(pg_engine: Engine) -> None:
    woken: list[set[str] | None] = []
    url = pg_engine.url.render_as_string(hide_password=False)
    listener = JobListener(url, origin_of(12345), woken.append)
    listener.start()
    try:
        wait_for(listener.listening.is_set, 15, what="the listener to listen")
        queue_jobs(pg_engine, ("PACS", "5.1"), ("ARCHIVE", "5.1"))  # this process: another origin than 12345
        wait_for(lambda: woken, 10, what="a wake")
        assert woken == [{"PACS", "ARCHIVE"}]
        own = JobListener(url, origin_of(__import__("os").getpid()), woken.append)
        own.start()
        try:
            wait_for(own.listening.is_set, 15, what="the second listener")
            queue_jobs(pg_engine, ("PACS", "5.2"))
            wait_for(lambda: len(woken) == 2, 10, what="the first listener's wake")
        finally:
            own.stop()
        assert woken == [{"PACS", "ARCHIVE"}, {"PACS"}], "the second listener ignored its own process's jobs"
        with pg_engine.begin() as conn:  # rolled back: no notification
            enqueue(conn, [NewJob(JobKind.DICOM_STORE, "GONE", "5.3", "objects/5.3.dcm")])
            conn.rollback()
        queue_jobs(pg_engine, ("LAST", "5.4"))
        wait_for(lambda: len(woken) == 3, 10, what="the last wake")
        assert woken[-1] == {"LAST"}, "a rolled-back enqueue wakes nobody"
    finally:
        listener.stop()


@pytest.mark.interop  # PostgreSQL server
def test_association_slots_hold_for_the_cluster(pg_engine: Engine) -> None:
    url = pg_engine.url.render_as_string(hide_password=False)
    node_a, node_b = PeerSlots(url), PeerSlots(url)
    try:
        first, second = node_a.take("PACS", 2), node_b.take("PACS", 2)
        assert first is not None and second is not None
        assert node_a.take("PACS", 2) is None and node_b.take("PACS", 2) is None, "two associations in all"
        assert node_b.take("RIS", 1) is not None, "each peer has its own slots"
        first.release()
        third = node_b.take("PACS", 2)
        assert third is not None, "a released slot is free for any node"
        second.release()
        third.release()
        both = [node_a.take("PACS", 2), node_a.take("PACS", 2)]
        assert None not in both, "every slot is free again"
    finally:
        node_a.dispose()
        node_b.dispose()


@pytest.mark.interop  # PostgreSQL server
def test_a_node_whose_lease_was_taken_over_cannot_mark_the_jobs_on_postgresql(pg_engine: Engine) -> None:
    lost_lease_outcomes_are_dropped(pg_engine)
