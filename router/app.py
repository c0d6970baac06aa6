"""Wiring: one Router object owns the plugin manager, database, rules, ingest path, listener and workers."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from pydicom import config as pydicom_config

from router.commitment.ledger import CommitLedger
from router.commitment.scp import CommitmentSCP
from router.config import RouterConfig
from router.dimse.scp import DicomListener
from router.dimse.workflow import WorkflowServices
from router.forwarder import Forwarder
from router.hl7.intake import Hl7Intake
from router.hl7.mllp import MllpServer
from router.mpps.service import MppsService
from router.outbox import Outbox
from router.plugins import build_plugin_manager, collect_stages, notify
from router.rules.live import LiveRules
from router.store.db import make_engine
from router.store.ingest import Ingestor
from router.web.app import make_app
from router.web.server import WebServer
from router.worklist.service import WorklistService

log = logging.getLogger(__name__)


class StartupError(Exception):
    pass


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        # Values are read as they came: a router passes objects on and does not judge them. pydicom's default
        # (WARN) ran a regular expression over every UI, DA, TM... value read, and logged each oddity on every read.
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        self.pm = build_plugin_manager(config.plugins)
        self.stages = collect_stages(self.pm)
        for sub in ("objects", "tmp", "quarantine", "derived", "commitment", "mpps"):
            (config.data_dir / sub).mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(config.effective_database_url)
        self.rules = LiveRules(config.rules_dir, self.stages, config)
        # claims and done marks need not be flushed one by one (see router.store.db)
        self.bookkeeping = make_engine(config.effective_database_url, durable=False)
        self.ingestor = Ingestor(config, self.engine, lambda: self.rules.current, self.stages, self.pm)
        sqlite = self.engine.dialect.name == "sqlite"  # one writer at a time: see Outbox
        self.outbox = Outbox(
            self.bookkeeping, config.forward, config.data_dir, self.ingestor.write_lock if sqlite else None
        )
        self.ledger = CommitLedger(config, self.engine, self.pm, self.ingestor.write_lock)
        self.forwarder = Forwarder(config, self.engine, self.outbox, self.pm, self.ledger)
        self.ingestor.on_jobs_committed = self.forwarder.wake
        self.hl7 = Hl7Intake(
            config, self.engine, lambda: self.rules.current, self.stages, self.pm, self.ingestor.write_lock
        )
        self.hl7.on_jobs_committed = self.forwarder.wake
        self.hl7.on_patients_merged = self.ingestor.ids.clear
        self.worklist = WorklistService(config, self.engine)
        self.commitment = CommitmentSCP(config, self.engine)
        self.commitment.wake = self.forwarder.wake
        self.mpps = MppsService(
            config, self.engine, lambda: self.rules.current, self.stages, self.pm, self.ingestor.write_lock
        )
        self.mpps.on_jobs_committed = self.forwarder.wake
        workflow = WorkflowServices(self.commitment, self.ledger, self.mpps)
        self.listener = DicomListener(config, self.ingestor, self.pm, self.worklist, workflow)
        self.mllp = MllpServer(
            config.hl7.host,
            config.hl7.port,
            self.hl7.handle,
            max_message_bytes=config.hl7.max_message_bytes,
            idle_timeout=config.hl7.idle_timeout,
            max_connections=config.hl7.max_connections,
        )
        self.hl7_port: int | None = None
        self.web = WebServer(config.http, make_app(config, self.ingestor, self.engine))
        self.http_port: int | None = None
        self.scheduler = BackgroundScheduler(daemon=True)
        self.dicom_port: int | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        self.rules.reload_if_changed()
        if self.rules.last_problems:
            raise StartupError("rules are invalid:\n" + "\n".join(self.rules.last_problems))
        self._clear_partial_writes()
        notify(self.pm, "router_startup", config=self.config)
        self.forwarder.start()
        self.scheduler.add_job(
            self.rules.reload_if_changed,
            "interval",
            seconds=self.config.rules_reload_interval,
            id="rules-reload",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.start()
        self.dicom_port = self.listener.start()
        self.hl7_port = self.mllp.start()
        log.info("HL7 MLLP listener on %s:%d", self.config.hl7.host, self.hl7_port)
        self.http_port = self.web.start()

    def _clear_partial_writes(self) -> None:
        """Temp files left by a crash were never acknowledged: they can go."""
        tmp = self.config.data_dir / "tmp"
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
        self.ingestor.close()
        self.bookkeeping.dispose()
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
