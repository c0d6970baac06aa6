"""Two router nodes on one PostgreSQL and one shared data folder (docs/cluster.md), as an operator runs them.

Each node is a ``router serve`` subprocess of its own (its own ports, rules folder and log) with the same
``database_url`` and ``data_dir``. The destination is first a black hole (it accepts TCP connections and never
answers, so senders hang with their batch in flight), then DCMTK storescp on the same port. One node is killed with
SIGKILL while it holds jobs; the other takes them over once their lease has expired. Every object arrives, and a
duplicate can only be a job the killed node had in flight. A second run kills a node in the middle of deliveries to
a slow, live destination: what it had delivered without its done mark yet arrives twice, and nothing else. The HL7
stream to an MLLP peer keeps its order while both nodes forward it, and so do the N-CREATE and N-SETs of MPPS
instances received half by each node. A rule file saved through one node's admin API is routed by the other within
a reload, and a node that cannot load the cluster's rule set says so. Four associations store one study into one
node at once, with no write lock on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from router.hl7.ack import build_ack
from router.hl7.message import parse_message
from router.listeners.mllp import MllpServer

from cluster_peers import BlackHole, arrived_at, duplicates_only_in_flight, held, kill_a_holder, rows
from hl7msg import adt, send
from peers import RouterProcess, StoreSCP, free_port, make_instance, storescu, wait_for, write_instances
from postgres import PgCluster, postgres_cluster
from qr_peers import PynetdicomSCP
from workflow_peers import MPPS, MppsSCP, mpps_scu

pytestmark = pytest.mark.interop  # PostgreSQL server (Debian postgresql) and DCMTK storescu/storescp

OBJECTS_PER_NODE = 200  # 400 objects in all, as issue 20 asks
LEASE = 3.0  # s: forward.lease_seconds of the nodes (the least allowed), so that a takeover comes quickly


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def database(pg_cluster: PgCluster) -> Iterator[str]:
    with pg_cluster.fresh_database() as name:
        yield name


class Ris:
    """An MLLP receiver that records the messages in the order they arrive and answers AA."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self.server = MllpServer("127.0.0.1", self.port, self.handle)

    def handle(self, raw: bytes, _peer: str) -> bytes:
        msg = parse_message(raw)
        self.received.append(msg.control_id)
        return build_ack(msg, "AA")


RECORDER = Path(__file__).parent / "sample_plugins" / "recorder.py"


def node(
    workdir: Path, name: str, url: str, shared: Path, peers: dict[str, Any], rules: dict[str, Any], **extra: Any
) -> RouterProcess:
    folder = workdir / name
    folder.mkdir()
    return RouterProcess(
        folder,
        peers=peers,
        rules=rules,
        plugin_modules=[str(RECORDER)],
        plugins={"recorder": {"events": str(workdir / "events.jsonl")}},  # the nodes' notifications, one file
        node_id=name,
        database_url=url,
        data_dir=str(shared),
        forward={"lease_seconds": LEASE, "max_attempts": 1000, "batch_size": 10},
        dicom={"timeouts": {"acse": 300}},  # a sender waits on the black hole until it is closed
        **extra,
    )


def test_two_nodes_survive_a_sigkill_with_jobs_in_flight(workdir: Path, pg_cluster: PgCluster, database: str) -> None:
    shared, dest_port = workdir / "shared", free_port()
    url = pg_cluster.url(database)
    peers = {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest_port, "max_associations": 4}}
    rules = {"10-all.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]}
    hole = BlackHole(dest_port)
    a = node(workdir, "A", url, shared, peers, rules)
    b = node(workdir, "B", url, shared, peers, rules)
    dest: StoreSCP | None = None
    try:
        a.start()
        b.start()  # its forward process starts beside A's although both share data_dir (no forwarder.lock)
        sent = {"A": write_instances(workdir / "in-a", [make_instance() for _ in range(OBJECTS_PER_NODE)]),
                "B": write_instances(workdir / "in-b", [make_instance() for _ in range(OBJECTS_PER_NODE)])}  # fmt: skip
        for name, router in (("A", a), ("B", b)):
            done = storescu(router.port, sent[name], timeout=120)
            assert done.returncode == 0, done.stderr
        uids = {p.stem for paths in sent.values() for p in paths}
        assert rows(pg_cluster, database, "SELECT count(*) FROM job")[0][0] == len(uids)

        killed = kill_a_holder(pg_cluster, database, {"A": a, "B": b})
        # its senders' association slots (advisory locks) go with its connections; its leases run out in LEASE s

        hole.close()
        dest = StoreSCP(workdir, "DEST", port=dest_port).start()
        wait_for(lambda: len(dest.received()) >= len(uids), 120, 0.5, what=f"all {len(uids)} objects at DEST")
        duplicates = duplicates_only_in_flight(pg_cluster, database, lambda: arrived_at(dest), uids, killed.in_flight)
        print(f"killed {killed.name} holding {len(killed.in_flight)} job(s); duplicates: {sum(duplicates.values())}")
        survivor = killed.survivor
        assert "took over" in survivor.output(), "the survivor took the killed node's jobs over"
        events = [json.loads(line) for line in (workdir / "events.jsonl").read_text().splitlines()]
        taken = [e for e in events if e["event"] == "jobs_taken_over"]
        assert {e["node_id"] for e in taken} == {"B" if killed.name == "A" else "A"}, taken
        assert sum(e["peers"]["DEST"] for e in taken) == len(killed.in_flight), "router_jobs_taken_over counts them all"

        listing = survivor.cli("nodes").stdout
        assert f"{killed.name} " in listing and "silent" in listing, listing
        assert "up" in listing and "(this one)" in listing, listing
    finally:
        hole.close()
        for proc in (a, b, dest):
            if proc is not None:
                proc.stop()


def test_a_node_killed_mid_delivery_costs_only_duplicates_of_its_batch(
    workdir: Path, pg_cluster: PgCluster, database: str
) -> None:
    """The destination is up and slow: the killed node was sending, and what it had delivered without its done mark
    yet is delivered again by the other node. Those are the only duplicates."""
    dest = PynetdicomSCP("DEST", delay=0.05).start()  # 50 ms per object: a slow PACS, so the kill lands mid-batch
    url = pg_cluster.url(database)
    peers = {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port, "max_associations": 4}}
    rules = {"10-all.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]}
    a = node(workdir, "A", url, workdir / "shared", peers, rules)
    b = node(workdir, "B", url, workdir / "shared", peers, rules)
    try:
        a.start()
        b.start()
        sent = [write_instances(workdir / f"in-{n}", [make_instance() for _ in range(OBJECTS_PER_NODE)]) for n in "ab"]
        for router, files in zip((a, b), sent, strict=True):
            done = storescu(router.port, files, timeout=120)
            assert done.returncode == 0, done.stderr
        uids = {p.stem for files in sent for p in files}
        wait_for(lambda: len(dest.received) >= 40 and bool(held(pg_cluster, database)), 60, 0.05,
                 what="deliveries under way")  # fmt: skip
        holding = held(pg_cluster, database)
        victim_name = max(holding, key=lambda n: len(holding[n]))
        (a if victim_name == "A" else b).kill9()
        in_flight = set(held(pg_cluster, database).get(victim_name, []))
        wait_for(lambda: set(dest.received) >= uids, 120, 0.5, what=f"all {len(uids)} objects at DEST")
        duplicates = duplicates_only_in_flight(pg_cluster, database, lambda: Counter(dest.received), uids, in_flight)
        assert sum(duplicates.values()) <= len(in_flight)
        print(f"killed {victim_name} mid-delivery holding {len(in_flight)} job(s); "
              f"duplicates: {sum(duplicates.values())} of {len(uids)} objects")  # fmt: skip
    finally:
        a.stop()
        b.stop()
        dest.stop()


def test_hl7_stream_stays_in_order_across_two_nodes(workdir: Path, pg_cluster: PgCluster, database: str) -> None:
    ris = Ris()
    url = pg_cluster.url(database)
    peers = {"RIS": {"mllp": f"127.0.0.1:{ris.port}"}}
    rules = {
        "20-adt.yaml": [{"name": "adt", "when": {"kind": "hl7", "message": "ADT^A0*"}, "then": [{"forward": "RIS"}]}]
    }
    a = node(workdir, "A", url, workdir / "shared", peers, rules)
    b = node(workdir, "B", url, workdir / "shared", peers, rules)
    try:
        a.start()
        b.start()
        expected = []
        for i in range(40):  # the first half while RIS is down (a backlog both nodes compete for), then live
            if i == 20:
                ris.server.start()
            control = f"ORD{i:04d}"
            ack = send(
                (a if i % 2 else b).hl7_port, adt("A08", {3: f"MRN{i}^^^HOSP^MR", 5: "Order^Kept"}, control_id=control)
            )
            assert "|AA|" in ack, ack
            expected.append(control)
        wait_for(lambda: len(ris.received) >= len(expected), 60, what="RIS to receive the stream")
        assert ris.received == expected, "the HL7 stream arrives whole and in order"
        forwarded_by = rows(pg_cluster, database, "SELECT count(*) FROM node")[0][0]
        assert forwarded_by == 2
    finally:
        with contextlib.suppress(Exception):
            ris.server.stop()
        a.stop()
        b.stop()


def step_created(study_uid: str) -> Dataset:
    """An MPPS N-CREATE attribute list with the attributes the ISUDM table requires."""
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.ReferencedStudySequence = Sequence()
    step.AccessionNumber = "ACC1"
    for keyword in ("RequestedProcedureID", "RequestedProcedureDescription", "ScheduledProcedureStepID",
                    "ScheduledProcedureStepDescription"):  # fmt: skip
        setattr(step, keyword, "X1")
    step.ScheduledProtocolCodeSequence = Sequence()
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Step^Patient", "MRN1", "19700101", "F"
    ds.ReferencedPatientSequence = Sequence()
    ds.PerformedProcedureStepID, ds.PerformedStationAETitle = "PPS1", "MODALITY"
    ds.PerformedStationName, ds.PerformedLocation = "CT1", "RAD"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20241122", "103000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = ds.PerformedProtocolCodeSequence = ds.PerformedSeriesSequence = Sequence()
    ds.PerformedProcedureStepEndDate = ds.PerformedProcedureStepEndTime = ""
    ds.Modality, ds.StudyID = "CT", "1"
    return ds


def step_set(status: str, description: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepDescription = description
    if status == "COMPLETED":
        ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20241122", "104500"
    return ds


def test_mpps_sequences_stay_in_order_across_two_nodes(workdir: Path, pg_cluster: PgCluster, database: str) -> None:
    ris = MppsSCP("RIS")
    url = pg_cluster.url(database)
    peers = {"RIS_MPPS": {"ae_title": "RIS", "host": "127.0.0.1", "port": ris.port}}
    rules = {"10-mpps.yaml": [{"name": "mpps", "when": {"kind": "mpps"}, "then": [{"forward": "RIS_MPPS"}]}]}
    a = node(workdir, "A", url, workdir / "shared", peers, rules)
    b = node(workdir, "B", url, workdir / "shared", peers, rules)
    try:
        a.start()
        b.start()
        expected: dict[str, list[tuple[str, str]]] = {}
        phases: list[list[tuple[RouterProcess, str, str, Dataset]]] = [[], [], []]
        for n in range(4):  # each step: N-CREATE on one node, an N-SET on the other, the final N-SET on the first
            uid = generate_uid()
            first, other = (a, b) if n % 2 else (b, a)
            phases[0].append((first, "N-CREATE", uid, step_created(generate_uid())))
            phases[1].append((other, "N-SET", uid, step_set("IN PROGRESS", "halfway")))
            phases[2].append((first, "N-SET", uid, step_set("COMPLETED", "done")))
            expected[uid] = [("N-CREATE", ""), ("N-SET", "halfway"), ("N-SET", "done")]
        messages = [m for phase in phases for m in phase]  # the steps interleaved, as several modalities send them
        for router, op, uid, ds in messages:
            assoc = mpps_scu(router.port)
            try:
                status, _ = assoc.send_n_create(ds, MPPS, uid) if op == "N-CREATE" else assoc.send_n_set(ds, MPPS, uid)
                assert status.Status == 0x0000, f"{op} {uid}: 0x{status.Status:04X}"
            finally:
                assoc.release()
        with ris.serving():  # the RIS was down: 12 messages wait, and both nodes' workers go for them at once
            wait_for(lambda: len(ris.received) >= len(messages), 60, what="every MPPS message at the RIS")
        got: dict[str, list[tuple[str, str]]] = {}
        for op, uid, ds in ris.received:
            got.setdefault(uid, []).append((op, str(ds.get("PerformedProcedureStepDescription", ""))))
        assert got == expected, "each step's N-CREATE, then its N-SETs in the order received"
    finally:
        a.stop()
        b.stop()


def forward_all_to(peer: str) -> str:
    return yaml.safe_dump([{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": peer}]}])


def test_rules_saved_on_one_node_are_routed_by_every_node(workdir: Path, pg_cluster: PgCluster, database: str) -> None:
    """A rule file saved through node A's admin API is the cluster's rule set: node B routes by it within a few
    reloads. A rule set node B cannot load (it names a peer B does not know) is reported: B's ``rules`` differ."""
    url = pg_cluster.url(database)
    peers = {name: {"ae_title": name, "host": "127.0.0.1", "port": free_port()} for name in ("OLD", "NEW")}
    rules = {"10-all.yaml": forward_all_to("OLD")}
    a = node(workdir, "A", url, workdir / "shared", {**peers, "ONLY_A": peers["NEW"]}, rules, rules_reload_interval=0.5)
    b = node(workdir, "B", url, workdir / "shared", peers, rules, rules_reload_interval=0.5)
    try:
        a.start()
        b.start()
        done = subprocess.run([sys.executable, "-m", "router", "--config", str(a.config_path), "users", "add", "ada",
                               "--role", "admin"], input="a-long-password\n", capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_for(lambda: _node_rules(pg_cluster, database)[1] == 2, 20, what="both nodes to report their rules")
        saved = httpx.put(f"http://127.0.0.1:{a.http_port}/api/rules/10-all.yaml", content=forward_all_to("NEW"),
                          auth=("ada", "a-long-password"), timeout=30)  # fmt: skip
        assert saved.status_code == 200 and saved.json()["saved"], saved.text
        began = time.monotonic()
        wait_for(lambda: _node_rules(pg_cluster, database)[0] == {"A", "B"}, 15, 0.1,
                 what="both nodes to route by the saved rules")  # fmt: skip
        print(f"node B routed by the rules saved on node A after {time.monotonic() - began:.1f} s")
        assert (workdir / "B" / "rules" / "10-all.yaml").read_text() == forward_all_to("NEW")
        instance = write_instances(workdir / "in", [make_instance()])
        assert storescu(b.port, instance, timeout=60).returncode == 0
        assert rows(pg_cluster, database, "SELECT peer FROM job") == [("NEW",)], "B routed by A's rules"

        assert httpx.put(f"http://127.0.0.1:{a.http_port}/api/rules/10-all.yaml", content=forward_all_to("ONLY_A"),
                         auth=("ada", "a-long-password"), timeout=30).status_code == 200  # fmt: skip
        wait_for(lambda: _node_rules(pg_cluster, database)[0] == {"A"}, 15, 0.1, what="B to report other rules")
        listing = b.cli("nodes").stdout
        assert "DIFFERS (this one)" in listing, listing
        wait_for(lambda: "not by the cluster's rule set" in b.output(), 10, what="B's warning")
    finally:
        a.stop()
        b.stop()


def _node_rules(cluster: PgCluster, db: str) -> tuple[set[str], int]:
    """The nodes that route by the cluster's rule set, and how many nodes report a digest at all."""
    newest = rows(cluster, db, "SELECT digest FROM ruleset ORDER BY id DESC LIMIT 1")
    reported = rows(cluster, db, "SELECT node_id, rules FROM node WHERE rules <> ''")
    return {n for n, digest in reported if newest and digest == newest[0][0]}, len(reported)


def test_parallel_associations_into_one_study_without_the_write_lock(
    workdir: Path, pg_cluster: PgCluster, database: str
) -> None:
    """On PostgreSQL no write lock serialises a node's writers (router.store.writelock.Unlocked): four associations
    storing one study's series at once, into one node, all succeed and make one patient, study and series."""
    study, series = generate_uid(), generate_uid()
    only = node(workdir, "A", pg_cluster.url(database), workdir / "shared", {}, {})
    try:
        only.start()
        batches = [write_instances(workdir / f"in-{n}", [make_instance(study, series) for _ in range(50)])
                   for n in range(4)]  # fmt: skip
        results: list[int] = []
        senders = [threading.Thread(target=lambda b=b: results.append(storescu(only.port, b).returncode))
                   for b in batches]  # fmt: skip
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
        assert results == [0, 0, 0, 0], only.output()[-3000:]
        counts = rows(pg_cluster, database, "SELECT (SELECT count(*) FROM instance), (SELECT count(*) FROM series), "
                      "(SELECT count(*) FROM study), (SELECT count(*) FROM patient)")  # fmt: skip
        assert counts == [(200, 1, 1, 1)]
    finally:
        only.stop()
