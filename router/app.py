"""Wiring: one Router object owns the plugin manager, database, rules, ingest path, listener and workers."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from router import _pynetdicom
from router import storage as object_storage
from router.commitment.ledger import CommitLedger
from router.commitment.scp import CommitmentSCP
from router.config import RouterConfig
from router.destinations.registry import peer_problems
from router.forward.process import ForwardProcess
from router.forward.workers import Forwarder, make_forwarder
from router.hooks.manager import build_plugin_manager, collect_stages, notify
from router.intake.base import IntakeContext
from router.intake.dicom import Ingestor
from router.intake.envelope import read_values_as_they_came
from router.intake.hl7 import Hl7Intake
from router.listeners.dimse.scp import DicomListener
from router.listeners.dimse.workflow import WorkflowServices
from router.listeners.http.api import ApiServices
from router.listeners.http.app import make_app
from router.listeners.http.auth import exposure_problem
from router.listeners.http.server import WebServer
from router.listeners.mllp import MllpServer
from router.mpps.service import MppsService
from router.rules.live import LiveRules
from router.store import files
from router.store.activity import prune as prune_activity
from router.store.db import make_engine
from router.store.keeper import StorageKeeper
from router.store.writelock import shared_between_processes, sqlite_file, write_lock_for
from router.worklist.service import WorklistService

log = logging.getLogger(__name__)


class StartupError(Exception):
    pass


DATA_FOLDERS = ("objects", "tmp", "quarantine", "derived", "commitment", "mpps")  # made at start-up


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        try:
            _pynetdicom.install()  # before any association: pynetdicom configured and patched
        except _pynetdicom.UnsupportedPynetdicom as exc:
            raise StartupError(str(exc)) from exc
        read_values_as_they_came()
        self.pm = build_plugin_manager(config)
        self.stages = collect_stages(self.pm)
        problems = peer_problems(self.pm, config)
        if problems:
            raise StartupError(f"{config.source or 'configuration'}: invalid configuration\n" + "\n".join(problems))
        files.set_access(config.data_access)  # modes of everything under data_dir (router/store/files.py)
        files.secure_data_dir(config.data_dir, DATA_FOLDERS, sqlite_file(config.effective_database_url))
        object_storage.register(config)  # the store every reader of this process finds by data_dir
        self.engine = make_engine(config.effective_database_url)
        self.rules = LiveRules(config.rules_dir, self.stages, config, self.pm)
        if self.engine.dialect.name == "postgresql":  # a cluster's nodes route by one rule set (docs/cluster.md)
            self.rules.share(self.engine, config.node_id)
        self.write_lock = write_lock_for(config.effective_database_url)  # one writer at a time (SQLite)
        intake = IntakeContext(config, self.engine, lambda: self.rules.current, self.stages, self.pm, self.write_lock)
        self.ingestor = Ingestor(intake)
        self.storage = StorageKeeper(config, self.engine, self.write_lock, self.pm)  # archive or cache, keep_days
        self.ingestor.on_stored = self.storage.stored
        self.ledger = CommitLedger(config, self.engine, self.pm, self.write_lock)
        # the forward workers: a process of their own (see router.forward.process), or threads of this one
        self.forwarder: Forwarder | ForwardProcess
        if config.forward.process and shared_between_processes(config.effective_database_url):
            self.forwarder = ForwardProcess(config)
        else:
            self.forwarder = make_forwarder(config, self.engine, self.pm, self.ledger)
        wake = self.forwarder.wake
        self.ledger.on_jobs_requeued = wake
        self.ingestor.on_jobs_committed = wake
        self.hl7 = Hl7Intake(intake)
        self.hl7.on_jobs_committed = wake
        self.hl7.on_patients_merged = self.ingestor.ids.clear
        self.worklist = WorklistService(config, self.engine)
        self.commitment = CommitmentSCP(config, self.engine, self.pm)
        self.commitment.wake = wake
        self.mpps = MppsService(intake)
        self.mpps.on_jobs_committed = wake
        workflow = WorkflowServices(self.commitment, self.ledger, self.mpps)
        self.listener = DicomListener(config, self.ingestor, self.pm, self.worklist, workflow)
        self.listener.qr.on_patients_used = self.storage.uses.patients
        self.mllp = MllpServer(
            config.hl7.host,
            config.hl7.port,
            self.hl7.handle,
            max_message_bytes=config.hl7.max_message_bytes,
            idle_timeout=config.hl7.idle_timeout,
            message_timeout=config.hl7.message_timeout,
            max_connections=config.hl7.max_connections,
        )
        self.hl7_port: int | None = None
        exposed = exposure_problem(config, self.engine)
        if exposed:
            raise StartupError(exposed)
        api = ApiServices(config, self.engine, self.pm, self.rules, self.stages, self.write_lock, wake,
                          lambda: {"dicom": self.dicom_port, "hl7": self.hl7_port, "http": self.http_port})  # fmt: skip
        app = make_app(config, self.ingestor, self.engine, self.pm, api, self.storage.uses.patients)
        self.web = WebServer(config.http, app)
        self.http_port: int | None = None
        self.scheduler = BackgroundScheduler(daemon=True)
        self.dicom_port: int | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        self.rules.reload_if_changed()
        if self.rules.last_problems:
            raise StartupError("rules are invalid:\n" + "\n".join(self.rules.last_problems))
        self._clear_partial_writes()
        try:
            self.ingestor.open_journal()  # a power cut's objects stored again before anything is received
        except OSError as exc:  # a damaged journal, a replay that cannot write: the message says what to do
            raise StartupError(f"write-ahead journal: {exc} (docs/storage.md)") from exc
        notify(self.pm, "router_startup", config=self.config, process="serve", plugin_settings=self.pm.settings)
        self.forwarder.start()
        self.scheduler.add_job(
            self.rules.reload_if_changed,
            "interval",
            seconds=self.config.rules_reload_interval,
            id="rules-reload",
            max_instances=1,
            coalesce=True,
        )
        self.storage.start(self.scheduler)  # removals a crash interrupted finish before anything is received
        self.scheduler.add_job(self._prune_activity, "interval", hours=1, id="activity-prune", max_instances=1,
                               coalesce=True, next_run_time=datetime.now(UTC))  # fmt: skip
        self.scheduler.start()
        self.dicom_port = self.listener.start()
        self.hl7_port = self.mllp.start()
        log.info("HL7 MLLP listener on %s:%d", self.config.hl7.host, self.hl7_port)
        self.http_port = self.web.start()

    def _prune_activity(self) -> None:
        gone = prune_activity(self.engine, self.config.activity.keep_days, self.write_lock)
        if gone:
            log.info("activity: removed %d row(s) older than %g days", gone, self.config.activity.keep_days)

    def _clear_partial_writes(self) -> None:
        """Temp files left by a crash were never acknowledged: they can go."""
        tmp = object_storage.tmp_dir(self.config)
        leftovers = list(tmp.glob("*.part"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            log.info("removed %d partial write(s) left by an earlier run", len(leftovers))

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.listener.stop()
        self.mllp.stop()
        self.web.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.forwarder.stop()
        notify(self.pm, "router_shutdown", process="serve")
        self.ingestor.close()
        self.hl7.group.close()
        self.write_lock.close()
        self.engine.dispose()
        log.info("router stopped")

    def serve_forever(self) -> None:
        done = threading.Event()

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            done.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        self.start()
        try:
            done.wait()
        finally:
            self.stop()
