"""Prometheus metrics at ``/metrics`` (docs/operations.md lists every one, with a scrape config and alert rules).

- Counters and the delivery histogram come from the notification hooks, in each process that calls them. The
  serving process keeps its own in memory. The forward process (``forward.process``) writes its own to
  ``prometheus_client``'s multiprocess files in ``data_dir/metrics/``: this plugin sets
  ``PROMETHEUS_MULTIPROC_DIR`` in that process before ``prometheus_client`` is first imported there, and the serving
  process empties the folder at start-up, before it starts the forward process. A scrape adds both up, so a
  forward process restarted after a crash does not take its counts with it.
- Gauges that read the database, the disk or the process (outbox jobs, the oldest waiting job, free space, the
  quarantine, open associations) are measured on each scrape (``plugins.metrics.scrape``).
- ``router_authenticate``: a scrape from loopback needs no login; from elsewhere it takes the credentials of
  ``http.auth``, and without ``http.auth`` it is refused, as a listener behind a reverse proxy on the same host
  would otherwise serve it to anyone. (A site that wants loopback scrapes to log in too answers the hook for
  ``/metrics`` in a plugin of its own with ``tryfirst``: registered later, it is asked before this one.)

Label values come from the configuration only (``plugins.metrics.labels``).
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins.metrics import labels as lbl
from router import storage
from router.config import RouterConfig
from router.hooks.answers import Authenticated, Denied
from router.hooks.specs import hookimpl
from router.intake.envelope import Envelope, Source
from router.store.models import Job

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
    from sqlalchemy.engine import Engine

    from plugins.metrics.counters import Counters

log = logging.getLogger(__name__)

PATH = "/metrics"
FOLDER = "metrics"  # under data_dir: the forward process's multiprocess files
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """What this plugin keeps in one process, from ``router_startup`` to ``router_shutdown``."""

    def __init__(self, config: RouterConfig, process: str) -> None:
        self.config = config
        self.process = process
        self.folder = storage.node_dir(config) / FOLDER
        self.labels = lbl.Labels(config)
        if process == "forward":
            _count_in_files(self.folder)
        else:
            _empty(self.folder)
        from plugins.metrics.counters import Counters  # after the multiprocess folder is set, in the forward process

        self.counters: Counters = Counters(config.peers)
        self.engine: Engine | None = None  # the serving process's reader (connections opened by scrapes)
        if process != "forward":
            from router.store.db import make_engine

            self.engine = make_engine(config.effective_database_url, durable=False)

    def collectors(self) -> list[Collector]:
        from prometheus_client import ProcessCollector

        return [_Scrape(self), ProcessCollector(namespace="router", registry=None)]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


class _Scrape:
    """The plugin's collector: its counters and the forward process's, then what is measured now."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        from plugins.metrics import counters, scrape

        m = self.metrics
        yield from counters.merged(m.counters.registry.collect(), counters.forward_process_families(m.folder))
        try:
            if m.engine is not None:
                yield from scrape.OutboxReading(m.engine, m.labels).families()
        except Exception:  # the database is away: the rest of the scrape still tells what it can
            log.exception("metrics: cannot read the outbox")
        yield from scrape.host_families(m.config)
        yield scrape.build_info()


def _empty(folder: Path) -> None:
    """The serving process starts: the counts of an earlier run go (a pid may come back)."""
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob("*.db"):
        leftover.unlink(missing_ok=True)


def _count_in_files(folder: Path) -> None:
    """The forward process: metrics in multiprocess files, which must be chosen before prometheus_client is imported."""
    os.environ[MULTIPROC_ENV] = str(folder)  # this process starts no other that uses prometheus_client
    if "prometheus_client" in sys.modules:
        values = importlib.import_module("prometheus_client.values")
        if not getattr(values.ValueClass, "_multiprocess", False):
            log.warning("prometheus_client was imported before the metrics plugin started: the forward process's "
                        "counts stay in this process and do not reach /metrics")  # fmt: skip


_state: Metrics | None = None  # this process's, between router_startup and router_shutdown


# -- life cycle ----------------------------------------------------------------------------------------------
@hookimpl
def router_startup(config: RouterConfig, process: str) -> None:
    global _state
    if process in ("serve", "forward"):  # not a command's short life (``router users``): it serves no metrics
        _state = Metrics(config, process)


@hookimpl
def router_shutdown() -> None:
    global _state
    if _state is not None:
        _state.close()
    _state = None


@hookimpl
def router_metrics() -> list[Collector]:
    return _state.collectors() if _state is not None else []


# -- who may scrape ------------------------------------------------------------------------------------------
def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@hookimpl(tryfirst=True)
def router_authenticate(address: str, path: str, config: RouterConfig) -> Authenticated | Denied | None:
    """``/metrics`` only: from loopback no login (when ``http.auth`` would ask for one, the scrape is let in as
    ``anonymous``); from elsewhere the other plugins decide, and without ``http.auth`` nobody would: refused."""
    if path != PATH:
        return None
    if _loopback(address):
        return Authenticated("anonymous", "loopback") if config.http.auth.enabled else None
    if not config.http.auth.enabled:
        return Denied(f"{PATH} from off loopback needs http.auth")
    return None


# -- what is counted (nothing before router_startup: ``router rules check`` loads the plugins, starts nothing) --
@hookimpl
def router_instance_stored(envelope: Envelope, outcome: str) -> None:
    if _state is not None:
        transport = lbl.one_of(envelope.source.protocol, lbl.TRANSPORTS)
        _state.counters.count("received", transport, _state.labels.calling_ae(envelope.source.calling_ae))
        _state.counters.count("stored", transport, outcome)


@hookimpl
def router_instance_refused(source: Source, outcome: str) -> None:
    if _state is not None:
        transport = lbl.one_of(source.protocol, lbl.TRANSPORTS)
        _state.counters.count("received", transport, _state.labels.calling_ae(source.calling_ae))
        _state.counters.count("refused", transport, outcome)


@hookimpl
def router_hl7_acknowledged(ack_code: str, message_type: str) -> None:
    if _state is not None:
        _state.counters.count("hl7", lbl.one_of(message_type, lbl.HL7_TYPES), lbl.one_of(ack_code, lbl.ACK_CODES))


@hookimpl
def router_dimse_answered(service: str, status: int) -> None:
    if _state is not None:
        _state.counters.count("dimse", lbl.one_of(service, lbl.DIMSE_SERVICES), lbl.status_class(status))


@hookimpl
def router_association_accepted(calling_ae: str, direction: str) -> None:
    if _state is not None and direction == "inbound":
        _state.counters.count("accepted", _state.labels.calling_ae(calling_ae))


@hookimpl
def router_association_rejected(calling_ae: str, source: int, diagnostic: int) -> None:
    if _state is not None:
        reason = lbl.rejection_reason(source, diagnostic)
        _state.counters.count("rejected", _state.labels.calling_ae(calling_ae), reason)


@hookimpl
def router_query_answered(service: str) -> None:
    if _state is not None:
        _state.counters.count("queries", lbl.one_of(service, lbl.QUERY_SERVICES))


@hookimpl
def router_instances_exported(service: str, instances: list[Any]) -> None:
    if _state is not None and instances:
        _state.counters.count("exported", lbl.export_service(service), amount=len(instances))


@hookimpl
def router_authentication_failed() -> None:
    if _state is not None:
        _state.counters.count("auth_failures")


@hookimpl
def router_rules_reloaded(ok: bool) -> None:
    if _state is not None:
        _state.counters.count("reloads", "ok" if ok else "refused")


@hookimpl
def router_forwarded(job: Job) -> None:
    if _state is not None:
        destination = _state.labels.destination(job.peer)
        _state.counters.count("attempts", destination, "delivered")
        waited = (datetime.now(UTC) - _utc(job.created_at)).total_seconds()
        _state.counters.delivery.labels(destination).observe(max(0.0, waited))


@hookimpl
def router_forward_failed(job: Job, dead: bool) -> None:
    if _state is not None:
        _state.counters.count("attempts", _state.labels.destination(job.peer), "dead" if dead else "failed")


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
