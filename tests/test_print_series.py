"""``print`` with ``group: series`` without a printer: the settle time, the group handed over whole by the outbox
(whatever the batch size, retries included), the stage's arguments, and series order on the film. The outbox tests
run on SQLite, and on PostgreSQL as interop (a throwaway cluster from the Debian package, tests/postgres.py): its
claim takes row locks (FOR UPDATE SKIP LOCKED) that SQLite does not have."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy.engine import Engine

from router.config import ForwardSettings, parse_config
from router.intake.envelope import HeaderValues
from router.outbox.groups import hold
from router.outbox.jobs import JobKind, NewJob, enqueue
from router.outbox.queue import Outbox
from router.printing import series
from router.store.db import make_engine
from router.store.index import IdCache, index_instance
from router.store.models import Job, utcnow
from router.store.tables import JOB

from postgres import PgCluster, postgres_cluster

PRINTER = "PRINTER"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _dataset(series_uid: str, sop_uid: str, number: str = "") -> Dataset:
    ds = Dataset()
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "P1", "1.2.9", series_uid
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CT, sop_uid, "CT"
    if number:
        ds.InstanceNumber = number
    return ds


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.interop)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: an SQLite file, or a fresh database in the module's PostgreSQL cluster."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.db'}"
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    with cluster.fresh_database() as name:
        yield cluster.url(name)


class Queue:
    """An index and an outbox in a throwaway database; objects arrive as the intake queues them."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.engine: Engine = make_engine(url)
        self.outbox = Outbox(self.engine, ForwardSettings(), tmp_path, node_id="n1")
        self.ids = IdCache()

    def arrive(self, series_uid: str, sop_uid: str, settle: float = 10.0, at: datetime | None = None) -> None:
        """Index the object and queue its print-series job, holding its series, in one transaction."""
        ds = _dataset(series_uid, sop_uid)
        with self.engine.begin() as conn:
            values = HeaderValues(None, lambda: ds)
            new_ids = index_instance(conn, self.ids, values, relpath=f"o/{sop_uid}.dcm", size=1, digest=sop_uid,
                                     transfer_syntax="", calling_ae="", existing=None)  # fmt: skip
            self.ids.remember(new_ids)
            enqueue(conn, [NewJob(JobKind.PRINT_SERIES, PRINTER, sop_uid, f"o/{sop_uid}.dcm", CT)])
            hold(conn, series_uid, {PRINTER: settle}, now=at)

    def due_at(self) -> dict[str, datetime]:
        return {job.sop_uid: job.next_attempt_at for job in self.outbox.list(peer=PRINTER)}

    def claim(self, limit: int = 1) -> list[str]:
        return [job.sop_uid for job in self.outbox.claim(PRINTER, limit)]


def test_a_later_object_of_the_series_puts_the_whole_group_off(url: str, tmp_path: Path) -> None:
    queue = Queue(url, tmp_path)
    start = utcnow()
    queue.arrive("1.5.1", "1.5.1.1", at=start)
    queue.arrive("1.5.2", "1.5.2.1", at=start)  # another series: its own group
    assert queue.claim(10) == [], "nothing is due before the series has settled"
    later = start + timedelta(seconds=4)
    queue.arrive("1.5.1", "1.5.1.2", at=later)
    due = queue.due_at()
    assert due["1.5.1.1"] == due["1.5.1.2"] == later + timedelta(seconds=10), due
    assert due["1.5.2.1"] == start + timedelta(seconds=10), "another series is not put off"


def test_a_claim_takes_a_settled_group_whole_beyond_the_batch_size(url: str, tmp_path: Path) -> None:
    queue = Queue(url, tmp_path)
    for n in range(1, 6):
        queue.arrive("1.6.1", f"1.6.1.{n}", settle=0)
    queue.arrive("1.6.2", "1.6.2.1", settle=0)
    ordinary = NewJob(JobKind.PRINT, PRINTER, "1.7.1", "o/1.7.1.dcm", CT)
    with queue.engine.begin() as conn:
        enqueue(conn, [ordinary])
    assert queue.claim(limit=1) == [f"1.6.1.{n}" for n in range(1, 6)], "one job of the group brings the others"
    assert queue.claim(limit=1) == ["1.6.2.1"], "the other series is a group of its own"
    assert queue.claim(limit=1) == ["1.7.1"], "a print job without a group is claimed alone"
    assert {job.leased_by for job in queue.outbox.list(peer=PRINTER)} == {"n1"}


def test_a_failed_group_is_retried_together(url: str, tmp_path: Path) -> None:
    queue = Queue(url, tmp_path)
    for n in range(1, 4):
        queue.arrive("1.8.1", f"1.8.1.{n}", settle=0)
    claimed = queue.outbox.claim(PRINTER, 10)
    assert queue.outbox.mark_failed_many(claimed, "printer in FAILURE", permanent=False) == [False] * 3
    # each job backs off with its own jitter; the first due brings the rest of its group
    first = min(claimed, key=lambda job: queue.due_at()[job.sop_uid])
    with queue.engine.begin() as conn:
        conn.execute(JOB.update().where(JOB.c.id == first.id).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    assert queue.claim(limit=1) == ["1.8.1.1", "1.8.1.2", "1.8.1.3"]


def test_a_second_version_of_an_instance_waits_for_the_first(url: str, tmp_path: Path) -> None:
    queue = Queue(url, tmp_path)
    queue.arrive("1.9.1", "1.9.1.1", settle=0)
    queue.arrive("1.9.1", "1.9.1.2", settle=0)
    with queue.engine.begin() as conn:  # the same instance received again (overwrite policy): a second job
        enqueue(conn, [NewJob(JobKind.PRINT_SERIES, PRINTER, "1.9.1.1", "o/1.9.1.1.v2.dcm", CT)])
    assert queue.claim(limit=1) == ["1.9.1.1", "1.9.1.2"], "the newer version is not printed beside the older"
    assert queue.claim(limit=1) == []


def test_the_stage_takes_group_series_and_a_settle_time() -> None:
    from plugins.printing import SETTLE_SECONDS, PrintStage, grouping

    printer = {"ae_title": "IHEFULL", "host": "10.0.0.9", "port": 10005, "print": {}}
    cfg = parse_config({"peers": {PRINTER: printer}}, Path("/tmp"))
    stage = PrintStage()
    assert stage.check({"to": PRINTER, "group": "series", "settle_seconds": 2.5}, cfg) == []
    assert grouping({"to": PRINTER, "group": "series"}) == ("series", SETTLE_SECONDS) == ("series", 10.0)
    assert grouping(PRINTER) == (None, SETTLE_SECONDS)
    assert stage.check({"to": PRINTER, "group": "study"}, cfg) == ["group: 'study' is not a group (one of series)"]
    assert stage.check({"to": PRINTER, "group": "series", "settle_seconds": -1}, cfg) == [
        "settle_seconds: -1 is not a number of seconds from 0 to 86400"
    ]
    assert stage.check({"to": PRINTER, "settle_seconds": 5}, cfg) == ["settle_seconds needs group: series"]


@pytest.mark.parametrize("numbers", [["3", "1", "2", ""], ["10", "9", "", "1"]])
def test_a_group_is_laid_out_in_series_order(tmp_path: Path, numbers: list[str]) -> None:
    jobs = []
    for n, number in enumerate(numbers):
        ds = _dataset("1.4.1", f"1.4.1.{9 - n}", number)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(tmp_path / f"{n}.dcm", enforce_file_format=True)
        jobs.append(Job(id=n + 1, kind=JobKind.PRINT_SERIES, peer=PRINTER, sop_uid=ds.SOPInstanceUID,
                        sop_class_uid=CT, transfer_syntax="", path=f"{n}.dcm"))  # fmt: skip
    jobs.append(Job(id=99, kind=JobKind.PRINT_SERIES, peer=PRINTER, sop_uid="1.4.9", sop_class_uid=CT,
                    transfer_syntax="", path="gone.dcm"))  # fmt: skip
    (group,), unreadable = series.gather(tmp_path, jobs)
    expected = sorted((int(x) if x else 2**63, f"1.4.1.{9 - n}") for n, x in enumerate(numbers))
    assert [m.order for m in group] == expected
    assert [ds.SOPInstanceUID for ds in series.objects(group)] == [uid for _, uid in expected]
    assert unreadable == [(jobs[-1], "the print job's file gone.dcm is missing")]
