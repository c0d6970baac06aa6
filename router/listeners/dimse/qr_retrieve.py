"""C-MOVE and C-GET SCP: send stored instances, byte-identical, as C-STORE sub-operations.

pynetdicom's own Q/R retrieve service only sends datasets a handler yields decoded: every object would be decoded and
re-encoded, and one stored compressed could only go to a peer accepting exactly that syntax after a full decode. The
listener therefore has pynetdicom serve the Q/R SOP classes with ``RetrieveService``
(``router._pynetdicom.replace_service_class``), which hands C-MOVE and C-GET requests to the ``Retriever`` of the
listener's AE and leaves everything else (C-FIND) to pynetdicom as before. The sub-operations send the files as
stored. Only when the receiver accepted none of the stored transfer syntax but an uncompressed one, the object is
re-encoded, decompressing it if it is compressed (``store_over``). A C-MOVE opens a new association to the destination
(``router.scu.association.StoreAssociation``, proposing for each stored SOP class its stored syntax plus Explicit and
Implicit VR Little Endian), more than one in turn when the matches need more than 128 presentation contexts.

Statuses (PS3.4 C.4.2.1.5, C.4.3.1.4): a pending response (0xFF00) with the remaining, completed, failed and
warning counts after each sub-operation; finally 0x0000, 0xB000 when some failed (with the Failed SOP Instance UID
List), 0xA702 when all failed, 0xFE00 after a C-CANCEL (checked before each sub-operation), 0xA801 for a
destination that is not a configured peer, 0xA900 / 0xC00x for identifiers that cannot be served, 0xA700 when the
database cannot be read, 0xA701 for more than 65535 instances.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pluggy
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import QueryRetrieveServiceClass
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from router.config import DicomPeer, RouterConfig
from router.hooks.answers import InstanceRef
from router.hooks.manager import notify
from router.listeners.dimse.qr import OUT_OF_RESOURCES_ERRORS
from router.logs import database_error, redact
from router.query.find import QueryError
from router.query.model import GET, MOVE, SOP_CLASSES
from router.query.retrieve import Match, RetrievePlan, context_pairs, count_matches, iter_matches, plan_retrieve
from router.scu.association import (
    MAX_CONTEXTS,
    UNCOMPRESSED,
    AssociationFailed,
    Item,
    NoContext,
    StoreAssociation,
    context_count,
    make_requestor,
)
from router.statuses import (
    QR_CANCELLED,
    QR_CANNOT_DECODE,
    QR_INTERNAL_ERROR,
    QR_MOVE_DESTINATION_UNKNOWN,
    QR_OUT_OF_RESOURCES,
    QR_PENDING,
    QR_SUBOPS_ALL_FAILED,
    QR_SUBOPS_WARNING,
    QR_TOO_MANY_MATCHES,
    SUCCESS,
)

log = logging.getLogger(__name__)

RETRIEVER_ATTR = "router_retriever"  # the AE attribute holding the listener's Retriever
MAX_SUBOPS = 65535  # the counts in a response are US


class RetrieveService(QueryRetrieveServiceClass):
    """pynetdicom's Q/R service class, with C-MOVE and C-GET handed to the AE's ``Retriever``."""

    def SCP(self, req: Any, context: PresentationContext) -> None:
        retriever = getattr(self.assoc.ae, RETRIEVER_ATTR, None)
        entry = SOP_CLASSES.get(str(context.abstract_syntax))
        if isinstance(retriever, Retriever) and entry is not None and isinstance(req, C_MOVE | C_GET):
            retriever.serve(self, req, context)
            return
        super().SCP(req, context)


@dataclass
class Tally:
    """Sub-operation counts of one C-MOVE / C-GET."""

    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    sent: list[InstanceRef] = field(default_factory=list)  # success or warning, for router_instances_exported

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def record(self, match: Match, status: int | None) -> None:
        uid = match.sop_instance_uid
        if status == SUCCESS:
            self.completed += 1
        elif status is not None and (status == 0x0001 or 0xB000 <= status <= 0xBFFF):
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(uid)
            return
        self.sent.append(InstanceRef(match.study_uid, match.item.sop_class_uid, uid))


class Responder:
    """Builds and sends the C-MOVE-RSP / C-GET-RSP messages of one request."""

    def __init__(
        self, service: RetrieveService, req: C_MOVE | C_GET, context: PresentationContext, pm: pluggy.PluginManager
    ) -> None:
        self.service = service
        self.pm = pm
        self.kind = "C-MOVE" if isinstance(req, C_MOVE) else "C-GET"
        self.sop_class = str(context.abstract_syntax)
        self.cx_id = int(context.context_id or 0)
        self.ts = UID(context.transfer_syntax[0])
        self.rsp: C_MOVE | C_GET = C_MOVE() if isinstance(req, C_MOVE) else C_GET()
        self.rsp.MessageIDBeingRespondedTo = req.MessageID
        self.rsp.AffectedSOPClassUID = req.AffectedSOPClassUID

    def send(
        self, status: int, tally: Tally | None = None, *, pending: bool = False, failed_list: bool = False
    ) -> None:
        rsp = self.rsp
        rsp.Status = status
        rsp.Identifier = None
        counts = tally or Tally(0)
        rsp.NumberOfRemainingSuboperations = counts.remaining if (pending or status == QR_CANCELLED) else None
        rsp.NumberOfCompletedSuboperations = counts.completed if tally else None
        rsp.NumberOfFailedSuboperations = counts.failed if tally else None
        rsp.NumberOfWarningSuboperations = counts.warning if tally else None
        if failed_list:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = counts.failed_uids
            encoded = encode(ds, self.ts.is_implicit_VR, self.ts.is_little_endian, self.ts.is_deflated)
            rsp.Identifier = BytesIO(encoded or b"")
        self.service.dimse.send_msg(rsp, self.cx_id)
        if not pending:
            requestor = self.service.assoc.requestor
            notify(self.pm, "router_dimse_answered", service=self.kind, sop_class_uid=self.sop_class,
                   calling_ae=str(requestor.ae_title).strip(), address=f"{requestor.address}:{requestor.port}",
                   status=status)  # fmt: skip

    def final(self, tally: Tally) -> int:
        if tally.failed == 0 and tally.warning == 0:
            status = SUCCESS
        elif tally.failed == tally.total:
            status = QR_SUBOPS_ALL_FAILED
        else:
            status = QR_SUBOPS_WARNING
        self.send(status, tally, failed_list=status != SUCCESS)
        return status


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    """Transfer syntaxes accepted on ``assoc`` for sending C-STORE requests of ``sop_class``."""
    return [
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu and cx.transfer_syntax
    ]


def store_over(assoc: Association, item: Item, msg_id: int, originator: tuple[str, int] | None = None) -> int:
    """C-STORE one stored object over ``assoc``: its file as stored when its transfer syntax was accepted; else,
    when only the other uncompressed syntaxes were, re-encoded (uncompressed) or decompressed (compressed, when
    pydicom can decode it). Returns the peer's status; raises NoContext or AssociationFailed."""
    if not assoc.is_established:
        raise AssociationFailed("association lost")
    accepted = accepted_syntaxes(assoc, item.sop_class_uid)
    aet, orig_id = originator if originator else (None, None)
    if item.transfer_syntax in accepted:
        rsp = assoc.send_c_store(item.path, msg_id=msg_id, originator_aet=aet, originator_id=orig_id)
    elif set(accepted) & set(UNCOMPRESSED):
        ds = dcmread(item.path)
        if UID(item.transfer_syntax).is_compressed:
            try:
                ds.decompress(generate_instance_uid=False)  # the same object, only re-encoded
            except Exception as exc:
                raise NoContext(f"{item.transfer_syntax} is not accepted and cannot be decompressed: {exc}") from exc
        rsp = assoc.send_c_store(ds, msg_id=msg_id, originator_aet=aet, originator_id=orig_id)
    else:
        offered = ", ".join(accepted) or "none"
        raise NoContext(f"no accepted context for {item.sop_class_uid} in {item.transfer_syntax} (accepted: {offered})")
    if "Status" not in rsp:
        raise AssociationFailed("no valid C-STORE response (timeout, abort or invalid response)")
    return int(rsp.Status)


def _pair_items(pairs: list[tuple[str, str]]) -> list[Item]:
    return [Item(Path(), sop_class, ts) for sop_class, ts in pairs]


def chunk_pairs(pairs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Split (SOP class, transfer syntax) pairs into groups one association can carry (128 contexts)."""
    chunks: list[list[tuple[str, str]]] = []
    for pair in pairs:
        if chunks and context_count(_pair_items([*chunks[-1], pair])) <= MAX_CONTEXTS:
            chunks[-1].append(pair)
        else:
            chunks.append([pair])
    return chunks


class Retriever:
    """Serves the C-MOVE and C-GET requests of one listener."""

    def __init__(self, config: RouterConfig, engine: Engine, pm: pluggy.PluginManager) -> None:
        self.config = config
        self.engine = engine
        self.pm = pm
        self.ae: AE = make_requestor(config, pm)  # the C-MOVE sub-operation associations (TLS failures announced)

    def destination(self, ae_title: str) -> DicomPeer | None:
        peers = self.config.peers.values()
        return next((p for p in peers if isinstance(p, DicomPeer) and p.ae_title == ae_title), None)

    def serve(self, service: RetrieveService, req: C_MOVE | C_GET, context: PresentationContext) -> None:
        started = time.monotonic()
        responder = Responder(service, req, context, self.pm)
        kind = MOVE if isinstance(req, C_MOVE) else GET
        model, _service = SOP_CLASSES[str(context.abstract_syntax)]
        calling = str(service.assoc.requestor.ae_title).strip()
        what = f"{kind} {model.name} from {calling}"
        try:
            ts = responder.ts
            identifier = decode(req.Identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)  # type: ignore[arg-type]
        except Exception as exc:
            log.warning("%s refused: cannot decode the identifier: %s", what, redact(exc))
            responder.send(QR_CANNOT_DECODE)
            return
        try:
            plan = plan_retrieve(model, identifier)
            peer = None
            if isinstance(req, C_MOVE):
                dest = str(req.MoveDestination or "").strip()
                peer = self.destination(dest)
                what += f" to {dest}"
                if peer is None:
                    log.warning("%s refused: %r is not a configured peer", what, dest)
                    responder.send(QR_MOVE_DESTINATION_UNKNOWN)
                    return
            total = count_matches(self.engine, plan)
            if total > MAX_SUBOPS:
                log.warning("%s refused: %d instances, more than %d", what, total, MAX_SUBOPS)
                responder.send(QR_TOO_MANY_MATCHES)
                return
            tally = Tally(total)
            if total == 0:
                log.info("%s: no instance matches", what)
                responder.send(SUCCESS, tally)
                return
            pairs = context_pairs(self.engine, plan)
            cancelled = self._run(service, req, responder, plan, pairs, peer, tally)
        except Exception as exc:
            responder.send(_failure_status(what, exc))
            return
        if cancelled:
            responder.send(QR_CANCELLED, tally, failed_list=True)
        status = QR_CANCELLED if cancelled else responder.final(tally)
        log.info(
            "%s %s: %d instance(s), %d completed, %d failed, %d warning, %d not sent: %s in %.0f ms",
            what, plan.level, tally.total, tally.completed, tally.failed, tally.warning, tally.remaining,
            "cancelled" if cancelled else f"0x{status:04X}", (time.monotonic() - started) * 1000,
        )  # fmt: skip
        self._announce(service, req, peer, tally, status)

    def _announce(
        self, service: RetrieveService, req: C_MOVE | C_GET, peer: DicomPeer | None, tally: Tally, status: int
    ) -> None:
        requestor = service.assoc.requestor
        calling = str(requestor.ae_title).strip()
        notify(self.pm, "router_instances_exported", service="C-MOVE" if isinstance(req, C_MOVE) else "C-GET",
               calling_ae=calling, user="", address=f"{requestor.address}:{requestor.port}",
               destination=peer.ae_title if peer is not None else calling, instances=tally.sent,
               failed=tally.total - len(tally.sent), status=status)  # fmt: skip

    def _run(
        self,
        service: RetrieveService,
        req: C_MOVE | C_GET,
        responder: Responder,
        plan: RetrievePlan,
        pairs: list[tuple[str, str]],
        peer: DicomPeer | None,
        tally: Tally,
    ) -> bool:
        """Send every match, a pending response after each; True when a C-CANCEL stopped it."""
        ids = _message_ids(int(req.MessageID or 0) if peer is None else 0)
        originator = (str(service.assoc.requestor.ae_title).strip(), int(req.MessageID or 0))
        for chunk in [pairs] if peer is None else chunk_pairs(pairs):
            link = _Link(service.assoc if peer is None else StoreAssociation(self.ae, peer, _pair_items(chunk)))
            try:
                for pair in chunk:
                    for match in iter_matches(self.engine, plan, pair, self.config.data_dir):
                        if service.is_cancelled(int(req.MessageID or 0)):
                            return True
                        status = link.send(match, next(ids), originator if peer is not None else None)
                        tally.record(match, status)
                        responder.send(QR_PENDING, tally, pending=True)
            finally:
                link.close()
        return False


def _failure_status(what: str, exc: Exception) -> int:
    """The status answering a request that failed with ``exc`` (logged); called while handling it."""
    if isinstance(exc, QueryError):
        log.warning("%s refused (0x%04X): %s", what, exc.status, redact(exc.reason))
        return exc.status
    if isinstance(exc, OUT_OF_RESOURCES_ERRORS):
        log.error("%s: out of resources: %s", what, exc)
        return QR_OUT_OF_RESOURCES
    if isinstance(exc, DBAPIError):
        log.error("%s: database error: %s", what, database_error(exc))
        return QR_INTERNAL_ERROR
    log.exception("%s failed unexpectedly", what)
    return QR_INTERNAL_ERROR


def _message_ids(start: int) -> Iterator[int]:
    n = start
    while True:
        n = n % 65535 + 1
        yield n


class _Link:
    """Where sub-operations go: a new association to the move destination (``StoreAssociation``, opened with the
    contexts the matches need), or the C-GET requestor's own association. A lost move association is opened again
    once; after that, or when the requestor's association is lost, the remaining sub-operations fail untried."""

    def __init__(self, target: StoreAssociation | Association) -> None:
        self.target = target
        self.opens_left = 2  # the first association and one more after a loss
        self.dead = False

    def send(self, match: Match, msg_id: int, originator: tuple[str, int] | None) -> int | None:
        """The peer's C-STORE status; None when the sub-operation failed on our side."""
        item = match.item
        if not item.path.is_file():
            log.error("sub-operation for %s: the stored file %s is missing", match.sop_instance_uid, item.path)
            return None
        assoc = None if self.dead else self._ready()
        if assoc is None:
            return None
        try:
            return store_over(assoc, item, msg_id, originator)
        except NoContext as exc:
            log.warning("sub-operation for %s failed: %s", match.sop_instance_uid, exc)
        except AssociationFailed as exc:
            log.warning("sub-operation for %s failed: %s", match.sop_instance_uid, exc)
            self.dead = not isinstance(self.target, StoreAssociation)
        except (OSError, ValueError, AttributeError, RuntimeError) as exc:
            log.warning("sub-operation for %s failed: %r", match.sop_instance_uid, exc)
        return None

    def _ready(self) -> Association | None:
        target = self.target
        if not isinstance(target, StoreAssociation):
            return target
        if not target.alive:
            if self.opens_left == 0:
                self.dead = True
                return None
            self.opens_left -= 1
            try:
                target.open()
            except AssociationFailed as exc:
                log.warning("cannot reach the move destination: %s", exc)
                self.dead = True
                return None
        return target.assoc

    def close(self) -> None:
        if isinstance(self.target, StoreAssociation):
            self.target.close()
