"""Storage commitment requests across nodes (router.commitment.ledger, docs/cluster.md): a node's start-up abandons
its own requests the peer never accepted, never another live node's; a silent node's are taken over after its lease.

On SQLite (a single router's database, nodes simulated) and on PostgreSQL (interop: Debian postgresql).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from router.commitment.ledger import CommitLedger
from router.config import RouterConfig
from router.hooks.manager import build_plugin_manager
from router.outbox.jobs import JobKind, NewJob, enqueue
from router.outbox.leases import write_heartbeat
from router.outbox.queue import Outbox
from router.store.db import make_engine
from router.store.models import CommitState, JobState, utcnow
from router.store.tables import COMMIT_TRANSACTION, JOB, NODE
from router.store.writelock import WriteLock

from postgres import postgres_cluster

PEERS = {"PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 11112}}


def node(engine: Engine, tmp_path: Path, name: str) -> tuple[Outbox, CommitLedger]:
    config = RouterConfig.model_validate({"node_id": name, "data_dir": str(tmp_path), "peers": PEERS,
                                          "forward": {"lease_seconds": 30}})  # fmt: skip
    outbox = Outbox(engine, config.forward, tmp_path, node_id=name)
    return outbox, CommitLedger(config, engine, build_plugin_manager(config), WriteLock())


def requesting(engine: Engine, tmp_path: Path, name: str, uid: str) -> tuple[CommitLedger, str]:
    """Node ``name`` delivered a job and began a commitment request the peer has not accepted yet."""
    with engine.begin() as conn:
        enqueue(conn, [NewJob(JobKind.DICOM_STORE, "PACS", uid, f"objects/{uid}.dcm")])
        write_heartbeat(conn, name, f"host:{name}", utcnow(), 0)
    outbox, ledger = node(engine, tmp_path, name)
    jobs = outbox.claim("PACS", 10)
    tx_uid, _refs = ledger.begin("PACS", jobs, {})
    return ledger, tx_uid


def states(engine: Engine) -> dict[str, tuple[str, str]]:
    """By node: the state of its job (SOP Instance UID ``9.<node>``) and of the newest request it made."""
    with engine.connect() as conn:
        jobs = dict(conn.execute(select(JOB.c.sop_uid, JOB.c.state)).all())
        txs = dict(conn.execute(select(COMMIT_TRANSACTION.c.node_id, COMMIT_TRANSACTION.c.state)
                                .order_by(COMMIT_TRANSACTION.c.id)).all())  # fmt: skip
    return {f"9.{name}": (jobs[f"9.{name}"], state) for name, state in txs.items()}


def recovery_is_per_node(engine: Engine, tmp_path: Path) -> None:
    ledger_a, _ = requesting(engine, tmp_path, "A", "9.A")
    ledger_b, _ = requesting(engine, tmp_path, "B", "9.B")
    assert states(engine) == {"9.A": (JobState.COMMITTING, CommitState.REQUESTING),
                              "9.B": (JobState.COMMITTING, CommitState.REQUESTING)}  # fmt: skip

    restarted_b = node(engine, tmp_path, "B")[1]
    assert restarted_b.recover() == 1, "B's start-up abandons its own request only"
    assert states(engine)["9.A"] == (JobState.COMMITTING, CommitState.REQUESTING), "A is live: left alone"
    assert states(engine)["9.B"] == (JobState.PENDING, CommitState.FAILED), "B's job is sent and requested again"

    restarted_b._silent_checked = time.monotonic() - 60  # the next dispatch pass after a heartbeat interval
    assert restarted_b.take_over_silent() == 0, "A beats within its lease"
    with engine.begin() as conn:
        conn.execute(update(NODE).where(NODE.c.node_id == "A").values(heartbeat_at=utcnow() - timedelta(seconds=31)))
    assert restarted_b.take_over_silent() == 0, "checked at most once per heartbeat interval"
    restarted_b._silent_checked = time.monotonic() - 60
    assert restarted_b.take_over_silent() == 1, "A went silent: its request is taken over"
    assert states(engine)["9.A"] == (JobState.PENDING, CommitState.FAILED)
    del ledger_a, ledger_b


def test_commitment_recovery_is_per_node(tmp_path: Path) -> None:
    recovery_is_per_node(make_engine(f"sqlite:///{tmp_path / 'router.db'}"), tmp_path)


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    with postgres_cluster() as cluster, cluster.fresh_database() as name:
        engine = make_engine(cluster.url(name))
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.mark.interop  # PostgreSQL server
def test_commitment_recovery_is_per_node_on_postgresql(pg_engine: Engine, tmp_path: Path) -> None:
    recovery_is_per_node(pg_engine, tmp_path)
