"""Peers for the storage commitment and MPPS tests: pynetdicom SCUs and SCPs on loopback.

Every server here is started on a free port and stopped by the test that started it (``with ...serving()``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.dsutils import decode
from pynetdicom.pdu import P_DATA_TF

from peers import free_port

COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
MPPS = "1.2.840.10008.3.1.2.3.3"
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


N_EVENT_REPORT_RSP, N_ACTION_RSP = 0x8100, 0x8130  # Command Field (PS3.7 E.1)


def commands_sent(event: evt.Event) -> list[int]:
    """The Command Field of each command set an EVT_PDU_SENT event's P-DATA-TF carried: it fires once the PDU is
    written to the socket, so a response seen here is on the wire, ahead of anything sent after it."""
    if not isinstance(event.pdu, P_DATA_TF):
        return []
    raw, offset, found = bytes(event.pdu.encode()), 6, []
    while offset + 6 <= len(raw):
        length, header = int.from_bytes(raw[offset : offset + 4], "big"), raw[offset + 5]
        if header & 0x03 == 0x03:  # a command set, in one (last) fragment: responses are
            command = decode(BytesIO(raw[offset + 6 : offset + 4 + length]), True, True)
            found.append(int(command.CommandField))
        offset += 4 + length
    return found


def refs(*pairs: tuple[str, str]) -> Dataset:
    """Action Information: a fresh Transaction UID and (SOP class, SOP instance) pairs."""
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for sop_class, sop_uid in pairs:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


def listed(ds: Dataset, keyword: str) -> list[tuple[str, ...]]:
    """(class, instance[, failure reason]) of each item of a report's sequence."""
    out = []
    for item in ds.get(keyword) or []:
        row: tuple[str, ...] = (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
        if "FailureReason" in item:
            row = (*row, f"0x{int(item.FailureReason):04X}")
        out.append(row)
    return out


@dataclass
class Report:
    calling_ae: str
    event_type: int
    info: Dataset
    same_association: bool


# -- the router's storage commitment SCP, driven by a pynetdicom SCU -------------------------------------------------
@dataclass
class CommitSCU:
    """A modality asking the router for commitment; reports on its own association are answered ``answer``."""

    port: int
    calling: str = "MODALITY"
    answer: int = 0x0000
    reports: list[Report] = field(default_factory=list)

    def request(self, action: Dataset, action_type: int = 1, wait: float = 10.0) -> tuple[int | None, Dataset]:
        """N-ACTION, then wait up to ``wait`` for a report on the association; (status, status dataset)."""
        got, answered = threading.Event(), threading.Event()

        def on_report(event: evt.Event) -> tuple[int, None]:
            self.reports.append(Report(self.calling, event.event_type, event.event_information, True))
            got.set()
            return self.answer, None

        def on_sent(event: evt.Event) -> None:
            if N_EVENT_REPORT_RSP in commands_sent(event):
                answered.set()

        ae = AE(ae_title=self.calling)
        ae.add_requested_context(COMMITMENT, SYNTAXES)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
        handlers = [(evt.EVT_N_EVENT_REPORT, on_report), (evt.EVT_PDU_SENT, on_sent)]
        assoc = ae.associate("127.0.0.1", self.port, ae_title="ROUTER", evt_handlers=handlers)
        assert assoc.is_established
        try:
            status, _reply = assoc.send_n_action(action, action_type, COMMITMENT, COMMITMENT_INSTANCE)
            code = int(status.Status) if "Status" in status else None
            if code == 0x0000 and wait and got.wait(wait):
                # our answer to the report goes out before the release: the router records it as delivered
                assert answered.wait(15), "the answer to the router's report was never sent"
            return code, status
        finally:
            if assoc.is_established:
                assoc.release()


class ReportSink:
    """A modality listening for the router's reports on new associations (role selection accepted)."""

    def __init__(self, aet: str = "MODALITY", answer: int = 0x0000) -> None:
        self.aet = aet
        self.port = free_port()
        self.answer = answer
        self.reports: list[Report] = []
        self.roles: list[tuple[bool, bool]] = []

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        cx = next(c for c in event.assoc.accepted_contexts if c.abstract_syntax == COMMITMENT)
        self.roles.append((bool(cx.as_scu), bool(cx.as_scp)))
        self.reports.append(
            Report(str(event.assoc.requestor.ae_title).strip(), event.event_type, event.event_information, False)
        )
        return self.answer, None

    @contextlib.contextmanager
    def serving(self) -> Iterator[ReportSink]:
        ae = AE(ae_title=self.aet)
        ae.add_supported_context(COMMITMENT, SYNTAXES, scu_role=True, scp_role=True)
        server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )
        try:
            yield self
        finally:
            server.shutdown()


# -- a PACS for the router's storage commitment SCU -------------------------------------------------------------
@dataclass
class Request:
    transaction_uid: str
    sops: list[str]
    calling_ae: str


class CommitPACS:
    """C-STORE SCP and Storage Commitment SCP. ``fail(times, sop_uid) -> reason | None`` decides each instance
    (``times``: how often that instance has been asked for, this request included); ``report`` is "same" (on the
    N-ACTION's association), "new" (a new association to the router after ``delay`` seconds, retried until the
    router listens) or "never"; clearing ``hold`` blocks N-ACTION requests until it is set again."""

    def __init__(
        self,
        router_port: int,
        aet: str = "PACS",
        report: str = "new",
        delay: float = 0.0,
        fail: Callable[[int, str], int | None] = lambda times, uid: None,
    ) -> None:
        self.aet = aet
        self.port = free_port()
        self.router_port = router_port
        self.report, self.delay, self.fail = report, delay, fail
        self.stored: list[str] = []
        self.requests: list[Request] = []
        self.report_statuses: list[int | None] = []
        self.hold = threading.Event()
        self.hold.set()
        self.holding = threading.Event()  # set once an N-ACTION request has arrived and waits for ``hold``
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._actions: dict[Any, list[int]] = {}  # per association: N-ACTIONs received, N-ACTION responses sent
        self._action_answered = threading.Condition()

    def _on_store(self, event: evt.Event) -> int:
        self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def _on_pdu_sent(self, event: evt.Event) -> None:
        answered = commands_sent(event).count(N_ACTION_RSP)
        if answered:
            with self._action_answered:
                self._actions.setdefault(event.assoc, [0, 0])[1] += answered
                self._action_answered.notify_all()

    def _wake(self, _event: evt.Event | None = None) -> None:
        """A connection closed, or the test is over: a report thread waiting for a response stops waiting."""
        with self._action_answered:
            self._action_answered.notify_all()

    def _on_action(self, event: evt.Event) -> tuple[int, None]:
        with self._action_answered:
            counts = self._actions.setdefault(event.assoc, [0, 0])
            counts[0] += 1
            nth = counts[0]
        if not self.hold.is_set():
            self.holding.set()
        self.hold.wait(60)
        info = event.action_information
        sops = [str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence]
        request = Request(str(info.TransactionUID), sops, str(event.assoc.requestor.ae_title).strip())
        self.requests.append(request)
        asked = [uid for r in self.requests for uid in r.sops]
        outcomes = [(i, self.fail(asked.count(str(i.ReferencedSOPInstanceUID)), str(i.ReferencedSOPInstanceUID)))
                    for i in info.ReferencedSOPSequence]  # fmt: skip
        report = Dataset()
        report.TransactionUID = info.TransactionUID
        ok = [i for i, reason in outcomes if reason is None]
        bad = []
        for item, reason in outcomes:
            if reason is not None:
                copy = Dataset()
                copy.ReferencedSOPClassUID, copy.ReferencedSOPInstanceUID = (item.ReferencedSOPClassUID,
                                                                             item.ReferencedSOPInstanceUID)  # fmt: skip
                copy.FailureReason = reason
                bad.append(copy)
        if ok:
            report.ReferencedSOPSequence = Sequence(ok)
        if bad:
            report.FailedSOPSequence = Sequence(bad)
        if self.report != "never":
            thread = threading.Thread(target=self._send_report, args=(event.assoc, nth, report, 2 if bad else 1))
            thread.start()
            self._threads.append(thread)
        return 0x0000, None

    def _send_report(self, assoc: Any, nth: int, report: Dataset, event_type: int) -> None:
        """Report on the association of the ``nth`` N-ACTION it carried ("same") or on a new one."""
        if self.report == "same":
            with self._action_answered:  # our N-ACTION response first
                self._action_answered.wait_for(
                    lambda: self._actions[assoc][1] >= nth or self._stop.is_set() or not assoc.is_established, 30
                )
            if not assoc.is_established:  # the router went away (killed)
                self.report_statuses.append(None)
                return
            status, _ = assoc.send_n_event_report(report, event_type, COMMITMENT, COMMITMENT_INSTANCE)
            self.report_statuses.append(int(status.Status) if "Status" in status else None)
            return
        if self._stop.wait(self.delay):
            return
        ae = AE(ae_title=self.aet)
        ae.add_requested_context(COMMITMENT, SYNTAXES)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
        ae.connection_timeout = 2
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            assoc = ae.associate("127.0.0.1", self.router_port, ae_title="ROUTER",
                                 ext_neg=[build_role(COMMITMENT, scp_role=True)])  # fmt: skip
            if assoc.is_established:
                status, _ = assoc.send_n_event_report(report, event_type, COMMITMENT, COMMITMENT_INSTANCE)
                assoc.release()
                if "Status" in status:
                    self.report_statuses.append(int(status.Status))
                    return
            self._stop.wait(0.3)  # the router is down (a restart): try again, unless the test is over

    @contextlib.contextmanager
    def serving(self) -> Iterator[CommitPACS]:
        ae = AE(ae_title=self.aet)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, SYNTAXES)
        ae.add_supported_context(COMMITMENT, SYNTAXES)
        ae.dimse_timeout = ae.network_timeout = 30
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_N_ACTION, self._on_action),
            (evt.EVT_PDU_SENT, self._on_pdu_sent),
            (evt.EVT_CONN_CLOSE, self._wake),
        ]
        server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        try:
            yield self
        finally:
            self._stop.set()
            self.hold.set()
            self._wake()
            for thread in self._threads:
                thread.join(20)
            server.shutdown()


# -- an MPPS SCP downstream (the RIS) ---------------------------------------------------------------------------------
class MppsSCP:
    """Records each N-CREATE (attribute list) and N-SET (modification list) it receives, answering ``answer``."""

    def __init__(self, aet: str = "RIS") -> None:
        self.aet = aet
        self.port = free_port()
        self.received: list[tuple[str, str, Dataset]] = []
        self.answer = 0x0000

    def _on_create(self, event: evt.Event) -> tuple[int, Dataset | None]:
        self.received.append(("N-CREATE", str(event.request.AffectedSOPInstanceUID), event.attribute_list))
        return self.answer, None

    def _on_set(self, event: evt.Event) -> tuple[int, Dataset | None]:
        self.received.append(("N-SET", str(event.request.RequestedSOPInstanceUID), event.modification_list))
        return self.answer, None

    @contextlib.contextmanager
    def serving(self) -> Iterator[MppsSCP]:
        ae = AE(ae_title=self.aet)
        ae.add_supported_context(MPPS, SYNTAXES)
        handlers = [(evt.EVT_N_CREATE, self._on_create), (evt.EVT_N_SET, self._on_set)]
        server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        try:
            yield self
        finally:
            server.shutdown()


def mpps_scu(port: int, calling: str = "MODALITY") -> Any:
    """An association for MPPS to the router (the caller releases it)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(MPPS, SYNTAXES)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    assert assoc.is_established
    return assoc
