"""The counters and the histogram the ``metrics`` plugin keeps from the notification hooks, in each process.

The serving process keeps them in memory. The forward process keeps them in ``prometheus_client``'s multiprocess
files (``PROMETHEUS_MULTIPROC_DIR``, set by ``plugins.metrics`` in that process before ``prometheus_client`` is
first imported there), which the serving process reads on each scrape and adds to its own (``merged``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)

# from the object's acknowledgement to its delivery: seconds on a good day, hours of backoff on a bad one
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 14400)
ATTEMPT_RESULTS = ("delivered", "failed", "dead")


# attribute: (name, help, labels): the counters every process keeps
COUNTERS = {
    "received": ("router_instances_received", "DICOM objects received (C-STORE, STOW-RS), whatever became of them",
                 ("transport", "calling_ae")),
    "stored": ("router_instances_stored", "Objects accepted (stored, or a duplicate the policy accepts), by outcome",
               ("transport", "outcome")),
    "refused": ("router_instances_refused", "Objects refused with a failure status (quarantined, a refused "
                "duplicate, out of resources), by outcome", ("transport", "outcome")),
    "hl7": ("router_hl7_messages", "HL7 messages acknowledged over MLLP, by message type and acknowledgement code",
            ("message_type", "ack")),
    "dimse": ("router_dimse_requests", "DIMSE requests answered on inbound associations, by service and class of "
              "their final status", ("service", "status_class")),
    "accepted": ("router_associations_accepted", "Inbound associations established", ("calling_ae",)),
    "rejected": ("router_associations_rejected", "Inbound associations rejected (A-ASSOCIATE-RJ)",
                 ("calling_ae", "reason")),
    "queries": ("router_queries", "Queries answered (C-FIND, MWL, QIDO-RS)", ("service",)),
    "exported": ("router_instances_exported", "Stored instances sent out on request (C-MOVE, C-GET, WADO-RS)",
                 ("service",)),
    "auth_failures": ("router_http_authentication_failures", "HTTP requests refused 401", ()),
    "reloads": ("router_rules_reloads", "Rule files read again while running: ok (in force) or refused (the "
                "previous rules stay)", ("result",)),
    "attempts": ("router_forward_attempts", "Outbox jobs attempted: delivered, failed (tried again later) or dead "
                 "(dead-lettered)", ("destination", "result")),
}  # fmt: skip
DELIVERY = ("router_forward_duration_seconds", "From an object's acknowledgement (its job queued) to its delivery to "
            "the destination", ("destination",))  # fmt: skip


class Counters:
    """Every counter one process keeps, in a registry of its own (never prometheus_client's global one)."""

    def __init__(self, destinations: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.counters = {what: Counter(name, doc, labels, registry=self.registry)
                         for what, (name, doc, labels) in COUNTERS.items()}  # fmt: skip
        self._series: dict[tuple[str, ...], Counter] = {}
        name, doc, labels = DELIVERY
        self.delivery = Histogram(name, doc, labels, buckets=DELIVERY_BUCKETS, registry=self.registry)
        for destination in destinations:  # known series start at 0, so rates and alerts see them from the start
            for result in ATTEMPT_RESULTS:
                self.counters["attempts"].labels(destination, result)
            self.delivery.labels(destination)

    def count(self, what: str, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to counter ``what`` (a key of ``COUNTERS``) for these label values. Each series is looked
        up once: prometheus_client's ``labels()`` checks and locks on every call, 3 to 4 us, several times per
        object; the dictionary is bounded by the label values the configuration allows."""
        key = (what, *labels)
        series = self._series.get(key)
        if series is None:
            counter = self.counters[what]
            series = self._series[key] = counter.labels(*labels) if labels else counter
        series.inc(amount)


def forward_process_families(directory: Path) -> list[Metric]:
    """What the forward process counted (its multiprocess files in ``directory``), summed over its pids."""
    if not any(directory.glob("*.db")):
        return []
    return list(MultiProcessCollector(None, path=str(directory)).collect())


def merged(*sources: Iterable[Metric]) -> Iterator[Metric]:
    """The families of ``sources`` with those of one name added up, sample by sample. A counter or histogram
    counted by both processes (a forward delivered by the forward process, a commitment report received by the
    serving one) is exposed once. The ``_created`` samples of the in-memory metrics are left out: a sum has none."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for source in sources:
        for family in source:
            families.setdefault(family.name, family)  # its name, help and type
            values = sums.setdefault(family.name, {})
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    values[key] = values.get(key, 0.0) + sample.value
    for name, first in families.items():
        family = Metric(name, first.documentation, first.type)
        family.samples = [Sample(sample, dict(labels), value) for (sample, labels), value in sums[name].items()]
        yield family
