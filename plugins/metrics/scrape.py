"""What is measured when ``/metrics`` is scraped: the outbox (two queries), the disk, the quarantine folder, the open
associations, the build. Nothing here is kept between scrapes.

The outbox is read with two statements, whatever its size:

1. ``SELECT peer, state, count(*), min(id) FROM job WHERE state IN (pending, inflight, committing, dead) GROUP BY
   peer, state``: a range of the ``ix_job_due (state, peer, next_attempt_at)`` index, which holds every column it
   needs (the row id included), so no row is read. Delivered jobs (``done``, which only grow) are not counted.
2. ``SELECT peer, created_at FROM job WHERE id IN (...)``: the oldest waiting job of each peer (the lowest id among
   its pending and inflight jobs, from 1), by primary key.

Measured in docs/operations.md (``bench/metrics_scrape.py``).
"""

from __future__ import annotations

import logging
import platform
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pynetdicom
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from pynetdicom.association import Association
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

import router
from plugins.metrics.labels import Labels
from router.config import RouterConfig
from router.store.models import JobState
from router.store.tables import JOB

log = logging.getLogger(__name__)

WAITING = (JobState.PENDING, JobState.INFLIGHT)  # not yet delivered: what the oldest job's age is about
COUNTED = (*WAITING, JobState.COMMITTING, JobState.DEAD)  # router_outbox_jobs' states
_COUNTS = (
    select(JOB.c.peer, JOB.c.state, func.count(), func.min(JOB.c.id))
    .where(JOB.c.state.in_(COUNTED))
    .group_by(JOB.c.peer, JOB.c.state)
)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite gives them back naive


class OutboxReading:
    """One reading of the outbox: jobs by destination and state, the age of each destination's oldest waiting job."""

    def __init__(self, engine: Engine, labels: Labels) -> None:
        self.jobs: dict[tuple[str, str], int] = {(peer, state): 0 for peer in labels.peers for state in COUNTED}
        self.oldest: dict[str, float] = dict.fromkeys(labels.peers, 0.0)
        first: dict[str, int] = {}  # destination -> the lowest id of its waiting jobs
        with engine.connect() as conn:
            for peer, state, count, lowest in conn.execute(_COUNTS):
                key = (labels.destination(peer), state)
                self.jobs[key] = self.jobs.get(key, 0) + count
                if state in WAITING:
                    first[peer] = min(first.get(peer, lowest), lowest)
            if not first:
                return
            now = datetime.now(UTC)
            created = conn.execute(select(JOB.c.peer, JOB.c.created_at).where(JOB.c.id.in_(list(first.values()))))
            for peer, created_at in created:
                destination = labels.destination(peer)
                age = max(0.0, (now - _utc(created_at)).total_seconds())
                self.oldest[destination] = max(self.oldest.get(destination, 0.0), age)

    def families(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("router_outbox_jobs", "Outbox jobs by destination and state (pending, inflight, "
                                 "committing, dead: the dead letters); delivered jobs are not counted",
                                 labels=["destination", "state"])  # fmt: skip
        for (destination, state), count in sorted(self.jobs.items()):
            jobs.add_metric([destination, state], count)
        oldest = GaugeMetricFamily("router_outbox_oldest_job_age_seconds", "Age of the oldest job not yet delivered "
                                   "(pending or inflight) per destination; 0 when none waits",
                                   labels=["destination"])  # fmt: skip
        for destination, age in sorted(self.oldest.items()):
            oldest.add_metric([destination], age)
        yield jobs
        yield oldest


def associations_active(ae_title: str) -> int:
    """Established associations that peers opened to the router's AE title, in this process."""
    return sum(
        1
        for thread in threading.enumerate()
        if isinstance(thread, Association)
        and thread.is_acceptor
        and thread.is_established
        and str(thread.ae.ae_title).strip() == ae_title.strip()
    )


def host_families(config: RouterConfig) -> Iterator[Metric]:
    """The data folder's file system, the quarantine folder and the open associations."""
    usage = shutil.disk_usage(config.data_dir)
    yield GaugeMetricFamily("router_storage_free_bytes", "Free space on the file system of data_dir, for the "
                            "router's user", value=usage.free)  # fmt: skip
    yield GaugeMetricFamily("router_storage_capacity_bytes", "Size of the file system of data_dir",
                            value=usage.total)  # fmt: skip
    yield GaugeMetricFamily("router_quarantined_objects", "Objects in the quarantine folder (refused as unreadable "
                            "or invalid, kept for an operator)", value=quarantined(config.data_dir))  # fmt: skip
    yield GaugeMetricFamily("router_associations_active", "Inbound DICOM associations established now",
                            value=associations_active(config.ae_title))  # fmt: skip


def quarantined(data_dir: Path) -> int:
    folder = data_dir / "quarantine"
    try:
        return sum(1 for path in folder.iterdir() if path.suffix == ".dcm")
    except FileNotFoundError:
        return 0


def build_info() -> Metric:
    info = InfoMetricFamily("router_build", "The router's version and the versions it runs on")
    info.add_metric([], {"version": router.__version__, "python": platform.python_version(),
                         "pynetdicom": str(pynetdicom.__version__), "pydicom": str(pydicom.__version__)})  # fmt: skip
    return info
