"""``/metrics`` after real traffic, read with prometheus_client's own text parser.

One router (``router serve``, forward workers in their own process) forwarding what CT1 sends to PACS, an
in-process pynetdicom storage SCP, and what STRANGER sends to DOWN, a peer nobody listens for (one attempt, then
the dead letters). 50 objects from CT1 and 20 HL7 messages must move the counters by exactly that much; objects
from an AE title the configuration does not know must not add a label value the configuration does not name.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.dataset import Dataset

from forwarding import SUCCESS, ScriptedSCP, generated, peer_at, router_to_dest, send_ok
from hl7msg import adt
from hl7msg import send as send_hl7
from peers import RouterProcess, associate, free_port, running, send_datasets, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

RULES = {
    "10-forward.yaml": [
        {"name": "ct1-to-pacs", "when": {"kind": "dicom", "calling_ae": "CT1"}, "then": [{"forward": "PACS"}]},
        {"name": "stranger-to-down", "when": {"kind": "dicom", "calling_ae": "STRANGER"},
         "then": [{"forward": "DOWN"}]},
    ]
}  # fmt: skip


@dataclass
class Site:
    router: RouterProcess
    pacs: ScriptedSCP
    workdir: Path

    def scrape(self) -> Samples:
        response = httpx.get(f"http://127.0.0.1:{self.router.http_port}/metrics", timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return parse(response.text)


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, sorted labels); prometheus_client's parser reads it."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"{key} is exposed twice"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("metrics")
    pacs = ScriptedSCP(lambda ds: SUCCESS, aet="PACS")
    peers = {"PACS": peer_at(pacs.port, "PACS"), "DOWN": peer_at(free_port(), "DOWN"),
             "CT1": peer_at(free_port(), "CT1")}  # fmt: skip
    router = RouterProcess(workdir, peers=peers, rules=RULES, forward={"max_attempts": 1})
    with pacs.serving():
        router.start()
        try:
            yield Site(router, pacs, workdir)
        finally:
            router.stop()


def test_fifty_objects_and_twenty_hl7_messages_move_the_counters_by_exactly_that(site: Site) -> None:
    before = site.scrape()
    files = generated(site.workdir / "ct1", 50)
    assert send_datasets(site.router.port, files, calling="CT1") == [SUCCESS] * 50
    for n in range(20):
        ack = send_hl7(site.router.hl7_port, adt("A01", {3: f"MRN{n:04d}", 5: "Doe^Jane"}))
        assert "|AA|" in ack, ack
    wait_for(lambda: len(site.pacs.accepted()) >= 50, 60, what="50 objects forwarded to PACS")
    wait_for(lambda: moved(before, site.scrape(), "router_forward_attempts_total", destination="PACS",
                           result="delivered") >= 50, 30, what="the forward process's counts")  # fmt: skip
    after = site.scrape()

    assert moved(before, after, "router_instances_received_total", transport="dimse", calling_ae="CT1") == 50
    assert moved(before, after, "router_instances_stored_total", transport="dimse", outcome="stored") == 50
    assert moved(before, after, "router_dimse_requests_total", service="C-STORE", status_class="success") == 50
    assert moved(before, after, "router_hl7_messages_total", message_type="ADT^A01", ack="AA") == 20
    assert moved(before, after, "router_forward_attempts_total", destination="PACS", result="delivered") == 50
    assert moved(before, after, "router_forward_attempts_total", destination="PACS", result="failed") == 0
    assert moved(before, after, "router_forward_duration_seconds_count", destination="PACS") == 50
    assert moved(before, after, "router_forward_duration_seconds_bucket", destination="PACS", le="+Inf") == 50
    assert value(after, "router_outbox_jobs", destination="PACS", state="pending") == 0
    assert value(after, "router_outbox_oldest_job_age_seconds", destination="PACS") == 0
    assert value(after, "router_storage_free_bytes") > 0
    assert value(after, "router_build_info", **build_labels(after)) == 1
    # the write-ahead journal took the 50 objects; a checkpoint within a second makes them durable, nothing to replay
    assert value(after, "router_journal_capacity_bytes") == 32 * 1024 * 1024
    wait_for(lambda: value(site.scrape(), "router_journal_used_bytes") == 0, 10, what="a checkpoint of the journal")
    assert moved(before, site.scrape(), "router_journal_checkpoints_total") >= 1
    assert value(after, "router_journal_checkpoint_failures_total") == 0


def build_labels(samples: Samples) -> dict[str, str]:
    [labels] = [dict(labels) for name, labels in samples if name == "router_build_info"]
    return labels


def test_an_unknown_calling_ae_is_other_and_its_dead_letters_show(site: Site) -> None:
    before = site.scrape()
    files = generated(site.workdir / "stranger", 5)
    assert send_datasets(site.router.port, files, calling="STRANGER") == [SUCCESS] * 5
    wait_for(lambda: value(site.scrape(), "router_outbox_jobs", destination="DOWN", state="dead") >= 5, 60,
             what="five dead letters for DOWN")  # fmt: skip
    after = site.scrape()
    assert moved(before, after, "router_instances_received_total", transport="dimse", calling_ae="other") == 5
    assert moved(before, after, "router_forward_attempts_total", destination="DOWN", result="dead") == 5
    assert value(after, "router_outbox_jobs", destination="DOWN", state="dead") == 5

    configured = {"CT1", "PACS", "DOWN", "other"}
    for name, labels in after:
        for label, found in labels:
            if label in ("calling_ae", "destination"):
                assert found in configured, f"{name} has {label}={found!r}, which the configuration does not name"
    assert "STRANGER" not in httpx.get(f"http://127.0.0.1:{site.router.http_port}/metrics").text


def test_a_refused_object_counts_as_received_and_refused(site: Site) -> None:
    before = site.scrape()
    [unreadable] = generated(site.workdir / "broken", 1)
    unreadable.write_bytes(unreadable.read_bytes()[:300])  # cut short: quarantined, 0xC000
    [status] = send_datasets(site.router.port, [unreadable], calling="CT1")
    assert status is not None and status != SUCCESS
    after = site.scrape()
    assert moved(before, after, "router_instances_received_total", transport="dimse", calling_ae="CT1") == 1
    assert sum(moved(before, after, "router_instances_refused_total", transport="dimse", outcome=o)
               for o in ("unparseable", "invalid")) == 1  # fmt: skip
    assert moved(before, after, "router_dimse_requests_total", service="C-STORE", status_class="failure") == 1
    assert value(after, "router_quarantined_objects") >= 1


def test_an_open_association_is_active_and_an_echo_is_counted(site: Site) -> None:
    before = site.scrape()
    assoc = associate(site.router.port, calling="CT1")
    assert assoc.is_established
    try:
        wait_for(lambda: value(site.scrape(), "router_associations_active") == 1, 10, what="one active association")
        assert assoc.send_c_echo().Status == SUCCESS
    finally:
        assoc.release()
    wait_for(lambda: value(site.scrape(), "router_associations_active") == 0, 10, what="no active association")
    after = site.scrape()
    assert moved(before, after, "router_dimse_requests_total", service="C-ECHO", status_class="success") == 1
    assert moved(before, after, "router_associations_accepted_total", calling_ae="CT1") == 1


def delivered(router: RouterProcess) -> float:
    response = httpx.get(f"http://127.0.0.1:{router.http_port}/metrics", timeout=30)
    return value(parse(response.text), "router_forward_attempts_total", destination="DEST", result="delivered")


def test_a_restarted_forward_process_keeps_the_counts_of_the_one_before(workdir: Path) -> None:
    """The forward process's counts live in its multiprocess files (one per pid), which the scrape adds up."""
    dest = ScriptedSCP(lambda ds: SUCCESS)
    router = router_to_dest(workdir, dest.port)
    with dest.serving(), running(router.start()):
        send_ok(router.port, generated(workdir / "first", 3))
        wait_for(lambda: delivered(router) == 3, 30, what="3 delivered")
        [first] = {int(p.stem.rpartition("_")[2]) for p in (router.data_dir / "metrics").glob("counter_*.db")}
        os.kill(first, signal.SIGKILL)
        send_ok(router.port, generated(workdir / "second", 2))
        wait_for(lambda: len(set(dest.accepted())) == 5, 60, what="5 objects at DEST")
        # every delivery counted once: 5, and once more each object the killed process had not marked done
        wait_for(lambda: delivered(router) == len(dest.accepted()), 30, what="each delivery counted")
        assert len(list((router.data_dir / "metrics").glob("counter_*.db"))) == 2


def test_forward_workers_as_threads_count_in_the_serving_process(workdir: Path) -> None:
    dest = ScriptedSCP(lambda ds: SUCCESS)
    router = router_to_dest(workdir, dest.port, forward={"process": False})
    with dest.serving(), running(router.start()):
        send_ok(router.port, generated(workdir / "objects", 4))
        wait_for(lambda: delivered(router) == 4, 30, what="4 delivered")
        assert not list((router.data_dir / "metrics").glob("*.db")), "no forward process, no multiprocess files"


def test_every_metric_is_documented_in_operations_md(site: Site) -> None:
    text = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    response = httpx.get(f"http://127.0.0.1:{site.router.http_port}/metrics", timeout=30)
    names = {family.name for family in text_string_to_metric_families(response.text)}
    documented = {name for name in names if name.startswith("router_process_") or f"`{name}" in text}
    assert names - documented == set(), "docs/operations.md does not describe these metrics"
    assert all(name.startswith("router_") for name in names)


def test_queries_and_a_refused_move_are_counted_by_status_class(site: Site) -> None:
    study_find, study_move = "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.2"
    before = site.scrape()
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    assoc = associate(site.router.port, [(study_find, None), (study_move, None)], calling="CT1")
    assert assoc.is_established
    try:
        statuses = [int(status.Status) for status, _ds in assoc.send_c_find(query, study_find)]
        assert statuses[-1] == SUCCESS
        query.StudyInstanceUID = "1.2.3"
        [(status, _ds)] = list(assoc.send_c_move(query, "NOWHERE", study_move))
        assert int(status.Status) == 0xA801  # move destination unknown
    finally:
        assoc.release()
    after = site.scrape()
    assert moved(before, after, "router_dimse_requests_total", service="C-FIND", status_class="success") == 1
    assert moved(before, after, "router_queries_total", service="C-FIND") == 1
    assert moved(before, after, "router_dimse_requests_total", service="C-MOVE", status_class="failure") == 1
