"""The DICOM listener: C-ECHO, C-STORE, Query/Retrieve (C-FIND, C-MOVE, C-GET) and the worklist SCP; with
``workflow``, storage commitment and MPPS (``workflow.py``).

Accepts every standard storage SOP class pynetdicom knows, the private classes named in the conformance
statements, and any other private (non-``1.2.840.10008``) or newer standard storage class a caller proposes,
each with every transfer syntax (objects are stored as received). Association policy (PS3.8 9.3.4): first the
``router_association_policy`` decision hook, whose built-in answer (``plugins/access.py``) is

- called AE not ours (``dicom.check_called_aet``): rejected-permanent, service-user,
  called-AE-title-not-recognized;
- calling AE not in ``dicom.allowed_calling_aets`` (when the list is not empty): rejected-permanent,
  service-user, calling-AE-title-not-recognized;

- calling AE title of a peer with ``accept_from`` presented from an address not in it: rejected-permanent,
  service-user, calling-AE-title-not-recognized;

then pynetdicom's limit: more than ``dicom.max_associations`` at once: rejected-transient, service-provider
(presentation), local-limit-exceeded. Every rejection is announced (``router_association_rejected``), every
C-FIND and worklist query answered too (``router_query_answered``), and the final status of every request
(``router_dimse_answered``).

With ``dicom.tls`` a second listener serves the same associations over TLS (``router.tls``: TLS 1.2 and 1.3, BCP
195 suites, client certificates chaining to ``ca`` when it is set), each handshake on its connection's own thread
within the ACSE timeout; every failed handshake is announced (``router_tls_failed``, direction ``inbound``).

Storage contexts also accept the SCP role a C-GET requestor proposes for them (SCP/SCU role selection), so the
C-GET sub-operations can come back on its association. Query/Retrieve lives in ``router.listeners.dimse.qr*``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pluggy
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt, register_uid, sop_class
from pynetdicom.presentation import build_context
from pynetdicom.service_class import QueryRetrieveServiceClass, ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import ThreadedAssociationServer

from router import _pynetdicom, tls
from router.config import RouterConfig
from router.hooks.answers import POLICY_FAILED, Accept, Reject
from router.hooks.manager import decide, notify
from router.intake.dicom import Ingestor
from router.intake.envelope import Source
from router.listeners.dimse.qr import FIND_SOP_CLASSES, QR_SOP_CLASSES, FindResult, QueryRetrieveSCP, on_extended
from router.listeners.dimse.qr_retrieve import RETRIEVER_ATTR, Retriever, RetrieveService
from router.listeners.dimse.received import head, ingest_received
from router.listeners.dimse.workflow import WorkflowServices
from router.logs import redact
from router.scu.association import set_nodelay
from router.statuses import PROCESSING_FAILURE
from router.worklist.service import MWL_FIND, UNABLE_TO_PROCESS, WorklistService

log = logging.getLogger(__name__)

# Private storage classes named in the ISUDM 2.1 and syngo.share import conformance statements.
PRIVATE_STORAGE = {
    "1.2.840.113619.4.27": "GE Private 3D Model Storage",
    "1.3.46.670589.5.0.1": "Philips EasyVision Volume Storage",
    "1.3.46.670589.5.0.1.1": "Philips ViewForum 3D Volume New Storage",
    "1.3.46.670589.5.0.2": "Philips EasyVision 3D Volume Object Storage",
    "1.3.46.670589.5.0.2.1": "Philips ViewForum 3D Volume Object New Storage",
    "1.3.46.670589.5.0.3": "Philips EasyVision Surface Storage",
    "1.3.46.670589.5.0.7": "Philips MR Cardio Profile Image Storage",
    "1.3.46.670589.5.0.8": "Philips EasyVision MR Cardio Storage",
    "1.3.46.670589.5.0.9": "Philips ViewForum CT Synthetic Image Storage",
    "1.3.46.670589.5.0.11": "Philips EasyVision MR Cardio Analysis Storage",
    "1.3.46.670589.5.0.12": "Philips ViewForum CX Synthetic Image Storage",
    "1.3.46.670589.2.4.1.1": "Philips Reconstructed X-ray Storage",
    "1.3.46.670589.2.5.1.1": "Philips 3D Presentation State Storage",
    "1.3.46.670589.11.0.0.12.1": "Philips MR Spectrum Storage",
    "1.3.46.670589.11.0.0.12.2": "Philips MR Series Data Storage",
}
STANDARD_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1."
DICOM_ROOT = "1.2.840.10008."
_UNCOMPRESSED_ORDER = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
]
# pynetdicom accepts the first syntax of *this* list that the caller proposed. Store as received: take the
# caller's compressed syntax when it offers one, then explicit before implicit, big endian last.
PREFERRED_SYNTAXES = [ts for ts in ALL_TRANSFER_SYNTAXES if ts not in _UNCOMPRESSED_ORDER] + _UNCOMPRESSED_ORDER
VERIFICATION = "1.2.840.10008.1.1"
PENDING_STATUSES = (0xFF00, 0xFF01)
POLICY_REJECTION_ATTR = "router_policy_rejection"  # on an Association the policy rejected: its Reject
# Requests whose handler returns the final status, announced by _answered (C-FIND: _on_find; C-MOVE and C-GET:
# qr_retrieve.Responder)
ANSWERED_BY_HANDLER = {evt.EVT_C_ECHO: "C-ECHO", evt.EVT_C_STORE: "C-STORE", evt.EVT_N_ACTION: "N-ACTION",
                       evt.EVT_N_EVENT_REPORT: "N-EVENT-REPORT", evt.EVT_N_CREATE: "N-CREATE",
                       evt.EVT_N_SET: "N-SET"}  # fmt: skip


def _keyword(uid: str) -> str:
    return "RouterStorage_" + re.sub(r"\W", "_", uid)


def treat_as_storage(uid: str) -> bool:
    """Unknown private classes and newer standard storage classes are accepted as storage."""
    if not UID(uid).is_valid:
        return False
    known = uid_to_service_class(uid)
    if known is StorageServiceClass:
        return True
    if known is not ServiceClass:  # a known non-storage service (Q/R, MWL ...): not ours to accept here
        return False
    return not uid.startswith(DICOM_ROOT) or uid.startswith(STANDARD_STORAGE_PREFIX)


def ensure_storage_uid(uid: str) -> None:
    """Make pynetdicom dispatch C-STORE on ``uid`` to the storage service."""
    if uid_to_service_class(uid) is not StorageServiceClass:
        register_uid(uid, _keyword(uid), StorageServiceClass)


for _uid in PRIVATE_STORAGE:
    if not hasattr(sop_class, _keyword(_uid)):
        ensure_storage_uid(_uid)


def _accept_proposed_storage(event: evt.Event) -> None:
    """EVT_REQUESTED: add contexts for storage classes we accept but do not list in advance."""
    acceptor = event.assoc.acceptor
    supported = {str(cx.abstract_syntax) for cx in acceptor.supported_contexts}
    extra = []
    for cx in event.assoc.requestor.requested_contexts:
        uid = str(cx.abstract_syntax)
        if uid not in supported and treat_as_storage(uid):
            ensure_storage_uid(uid)
            cx = build_context(uid, PREFERRED_SYNTAXES)
            cx.scu_role = cx.scp_role = True  # a C-GET requestor may take the SCP role
            extra.append(cx)
            supported.add(uid)
    if extra:
        log.info(
            "accepting %d storage class(es) not listed in advance: %s",
            len(extra),
            ", ".join(str(c.abstract_syntax) for c in extra),
        )
        acceptor.supported_contexts = [*acceptor.supported_contexts, *extra]


def _requested(event: evt.Event) -> tuple[str, str, str]:
    """Calling AE, called AE (as the caller asked for it) and address of an association request."""
    req = event.assoc.requestor
    rq = req.primitive
    calling = str(rq.calling_ae_title if rq is not None else req.ae_title).strip()
    called = str(rq.called_ae_title if rq is not None else event.assoc.acceptor.ae_title).strip()
    return calling, called, f"{req.address}:{req.port}"


def _status_of(answer: Any) -> int:
    """The status a handler answered: a number, or a status data set (alone or with the reply's data set)."""
    if isinstance(answer, tuple):
        answer = answer[0]
    return int(answer.get("Status", PROCESSING_FAILURE) if isinstance(answer, Dataset) else answer)


def announce_answer(pm: pluggy.PluginManager, event: evt.Event, service: str, status: int) -> None:
    """``router_dimse_answered`` for the request of ``event`` (a handler's event on an inbound association)."""
    calling, _called, address = _requested(event)
    notify(pm, "router_dimse_answered", service=service, sop_class_uid=str(event.context.abstract_syntax),
           calling_ae=calling, address=address, status=status)  # fmt: skip


def _source(event: evt.Event) -> Source:
    req = event.assoc.requestor
    return Source(
        protocol="dimse",
        calling_ae=str(req.ae_title).strip(),
        called_ae=str(event.assoc.acceptor.ae_title).strip(),
        address=f"{req.address}:{req.port}",
    )


class DicomListener:
    def __init__(
        self,
        config: RouterConfig,
        ingestor: Ingestor,
        pm: pluggy.PluginManager,
        worklist: WorklistService,
        workflow: WorkflowServices | None = None,
    ) -> None:
        self.config = config
        self.ingestor = ingestor
        self.pm = pm
        _pynetdicom.install()
        # C-MOVE, C-GET: qr_retrieve; C-FIND responses pre-encoded (qr.py)
        _pynetdicom.replace_service_class(QueryRetrieveServiceClass, _pynetdicom.find_service(RetrieveService))
        self.qr = QueryRetrieveSCP(config, ingestor.engine)
        self.c_find: dict[str, Callable[[evt.Event], Iterator[FindResult]]] = {
            uid: self.qr.on_find for uid in FIND_SOP_CLASSES
        }
        self.worklist = worklist
        self.c_find[MWL_FIND] = self._on_worklist_find
        self.workflow = workflow
        self.ae = self._make_ae()
        setattr(self.ae, RETRIEVER_ATTR, Retriever(config, ingestor.engine, pm))
        self.server: ThreadedAssociationServer | None = None
        self.tls_server: ThreadedAssociationServer | None = None
        self.tls_port: int | None = None

    def _make_ae(self) -> AE:
        cfg = self.config.dicom
        ae = _pynetdicom.listener_ae(self.config.ae_title)
        ae.maximum_associations = cfg.max_associations
        ae.maximum_pdu_size = cfg.max_pdu
        ae.acse_timeout = cfg.timeouts.acse
        ae.dimse_timeout = cfg.timeouts.dimse
        ae.network_timeout = cfg.timeouts.network
        # called / calling AE checks: the association policy (plugins.access by default), in _on_requested
        ae.require_called_aet = False
        ae.require_calling_aet = []
        _pynetdicom.spool_large(ae, self.ingestor.tmp_dir, head)  # a large C-STORE data set goes to a file
        ae.add_supported_context(VERIFICATION, _UNCOMPRESSED_ORDER)
        ae.add_supported_context(MWL_FIND, _UNCOMPRESSED_ORDER)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(str(cx.abstract_syntax), PREFERRED_SYNTAXES, scu_role=True, scp_role=True)
        for uid in PRIVATE_STORAGE:
            ae.add_supported_context(uid, PREFERRED_SYNTAXES, scu_role=True, scp_role=True)
        for uid in QR_SOP_CLASSES:
            ae.add_supported_context(uid, _UNCOMPRESSED_ORDER)
        if self.workflow is not None:
            self.workflow.add_contexts(ae, _UNCOMPRESSED_ORDER)
        return ae

    def handlers(self) -> list[Any]:
        return [(kind, self._answered(kind, handler)) if kind in ANSWERED_BY_HANDLER else (kind, handler)
                for kind, handler in self._handlers()]  # fmt: skip

    def _answered(self, kind: Any, handler: Callable[[evt.Event], Any]) -> Callable[[evt.Event], Any]:
        """``handler``, announcing the status it answers (``router_dimse_answered``)."""
        service = ANSWERED_BY_HANDLER[kind]

        def answer(event: evt.Event) -> Any:
            answered = handler(event)
            announce_answer(self.pm, event, service, _status_of(answered))
            return answered

        return answer

    def _handlers(self) -> list[Any]:
        return [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_SOP_EXTENDED, on_extended),
            *(self.workflow.handlers() if self.workflow is not None else []),
        ]

    def start(self) -> int:
        """Start listening (non-blocking); returns the bound port."""
        cfg = self.config.dicom
        server = self.ae.start_server((cfg.host, cfg.port), block=False, evt_handlers=self.handlers())
        assert server is not None
        _pynetdicom.tune_server(server)
        self.server = server
        port = int(server.server_address[1])
        log.info("DICOM listener %s on %s:%d", self.config.ae_title, cfg.host, port)
        if cfg.tls is not None:
            context = tls.server_context(cfg.tls)
            tls_server = _pynetdicom.tls_server(
                self.ae, (cfg.host, cfg.tls.port), context, cfg.timeouts.acse, self._tls_failed, self.handlers()
            )
            _pynetdicom.tune_server(tls_server)
            self.tls_server = tls_server
            self.tls_port = int(tls_server.server_address[1])
            mutual = "client certificates required" if cfg.tls.ca is not None else "no client certificates asked"
            log.info("DICOM TLS listener %s on %s:%d (%s)", self.config.ae_title, cfg.host, self.tls_port, mutual)
        return port

    def stop(self) -> None:
        for server in (self.server, self.tls_server):
            if server is not None:
                server.shutdown()
        self.server = self.tls_server = None

    def _tls_failed(self, address: str, port: int, reason: str) -> None:
        log.warning("TLS handshake from %s:%d failed: %s", address, port, reason)
        notify(self.pm, "router_tls_failed", direction="inbound", address=address, port=port, reason=reason)

    # -- handlers -----------------------------------------------------------------------------------------
    def _on_established(self, event: evt.Event) -> None:
        src = _source(event)
        log.info("association from %s (%s) to %s", src.calling_ae, src.address, src.called_ae)
        notify(
            self.pm,
            "router_association_accepted",
            calling_ae=src.calling_ae,
            called_ae=src.called_ae,
            address=src.address,
            direction="inbound",
        )

    def _on_requested(self, event: evt.Event) -> None:
        """EVT_REQUESTED: the association policy first (PS3.8 A-ASSOCIATE-RJ from it), then the storage classes
        not listed in advance. pynetdicom skips its negotiation of an association rejected here."""
        try:
            verdict = self._policy(event)
        except Exception:  # never let an association through because the policy could not be asked
            log.exception("association policy failed")
            verdict = POLICY_FAILED
        if isinstance(verdict, Reject):
            setattr(event.assoc, POLICY_REJECTION_ATTR, verdict)
            try:
                event.assoc.requestor.ae_title = _requested(event)[0]  # as pynetdicom's negotiation would have
                event.assoc.acse.send_reject(verdict.result, verdict.source, verdict.diagnostic)
                evt.trigger(event.assoc, evt.EVT_REJECTED, {})
                event.assoc.kill()  # as pynetdicom does after its own rejections: the A-ASSOCIATE-RJ goes out first
            finally:
                event.assoc.is_rejected = True  # whatever failed above, pynetdicom must not negotiate it
            return
        _accept_proposed_storage(event)

    def _policy(self, event: evt.Event) -> Accept | Reject | None:
        calling, called, address = _requested(event)
        return decide(self.pm, "router_association_policy", on_error=POLICY_FAILED, calling_ae=calling,
                      called_ae=called, address=address, config=self.config)  # fmt: skip

    def _on_rejected(self, event: evt.Event) -> None:
        calling, called, address = _requested(event)
        prim = event.assoc.acceptor.primitive
        codes = (int(prim.result or 0), int(prim.result_source or 0), int(prim.diagnostic or 0)) if prim else (0, 0, 0)
        rejection = getattr(event.assoc, POLICY_REJECTION_ATTR, None)
        if rejection is not None:
            reason = rejection.reason
        elif prim is not None:
            reason = " / ".join(str(getattr(prim, attr, "")) for attr in ("result_str", "source_str", "reason_str"))
        else:
            reason = "rejected"
        log.warning("association from %s (%s) to %s rejected: %s", calling, address, called, reason)
        notify(self.pm, "router_association_rejected", calling_ae=calling, called_ae=called, address=address,
               reason=reason, result=codes[0], source=codes[1], diagnostic=codes[2])  # fmt: skip

    def _on_find(self, event: evt.Event) -> Iterator[FindResult]:
        """C-FIND, by SOP class (the Q/R information models; other services add theirs to ``c_find``)."""
        sop_class = str(event.context.abstract_syntax)
        handler = self.c_find.get(sop_class)
        if handler is None:
            announce_answer(self.pm, event, "C-FIND", 0x0122)  # the generator is closed at the yield
            yield 0x0122, None  # SOP class not supported
            return
        matches, status, exhausted = 0, None, False
        try:
            for status, answer in handler(event):
                matches += status in PENDING_STATUSES
                yield status, answer
            exhausted = True
        finally:  # also when the association ends first: then with the last status sent
            self._announce_query(event, sop_class, matches, status)
            if status is not None and status not in PENDING_STATUSES:
                announce_answer(self.pm, event, "C-FIND", status)
            elif exhausted:  # pynetdicom ends the pending responses with a success
                announce_answer(self.pm, event, "C-FIND", 0x0000)

    def _announce_query(self, event: evt.Event, sop_class: str, matches: int, status: int | None) -> None:
        identifier: Dataset | None = None
        level = ""
        try:
            identifier = event.identifier
            if sop_class != MWL_FIND:
                level = str(event.identifier.get("QueryRetrieveLevel", "") or "")
        except Exception:  # the handler answered a data set it could not decode
            pass
        calling, _called, address = _requested(event)
        notify(self.pm, "router_query_answered", service="MWL" if sop_class == MWL_FIND else "C-FIND",
               calling_ae=calling, user="", address=address, sop_class_uid=sop_class, level=level,
               identifier=identifier, matches=matches, status=-1 if status is None else status)  # fmt: skip

    def _on_store(self, event: evt.Event) -> int:
        try:
            return ingest_received(self.ingestor, event, _source(event)).status
        except Exception:
            log.exception("C-STORE from %s failed unexpectedly", event.assoc.requestor.ae_title)
            return PROCESSING_FAILURE

    def _on_worklist_find(self, event: evt.Event) -> Iterator[FindResult]:
        """Modality Worklist C-FIND (router.worklist.service)."""
        try:
            identifier = event.identifier
        except Exception as exc:
            log.warning("C-FIND from %s: cannot decode the identifier: %s", event.assoc.requestor.ae_title, redact(exc))
            yield UNABLE_TO_PROCESS, None
            return
        try:
            yield from self.worklist.find(identifier, lambda: bool(event.is_cancelled))
        except Exception:
            log.exception("worklist C-FIND failed")
            yield UNABLE_TO_PROCESS + 1, None
