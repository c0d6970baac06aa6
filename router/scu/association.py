"""C-STORE SCU: one association to a peer, reused for a batch of objects.

Objects are sent from their files without being decoded (byte-identical forwarding). For each SOP class we
propose the object's own transfer syntax and, as separate contexts, Explicit and Implicit VR Little Endian, so
the peer can accept each independently. When the peer takes only an uncompressed syntax for a compressed object,
the object is transcoded (losslessly) to it rather than not delivered.

Every association the router opens to a peer goes through ``open_association``: over TLS when the peer has
``tls`` (``router.tls``, one client context per peer, kept by the requesting AE), a failed handshake announced
(``router_tls_failed``, direction ``outbound``) when the AE was made with a plugin manager.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from router import _pynetdicom, tls
from router.config import DicomPeer, RouterConfig
from router.hooks.calls import notify
from router.transcode import TranscodeError, syntax_name, transcode

if TYPE_CHECKING:
    import pluggy

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
ReportHandler = Callable[[evt.Event], Any]  # EVT_N_EVENT_REPORT: the peer's storage commitment report
REPORT_ANSWER_WAIT = 5.0  # s: the longest a request waits for our answer to the peer's N-EVENT-REPORT to go out


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN: no Nagle on a new DICOM connection (DIMSE is request/response; Nagle adds 40 ms stalls)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class AssociationFailed(Exception):
    """The peer could not be reached or refused the association."""


class NoContext(Exception):
    """The peer accepted no presentation context able to carry this object."""


@dataclass(frozen=True)
class Item:
    path: Path
    sop_class_uid: str
    transfer_syntax: str


def context_keys(items: Iterable[Item]) -> dict[tuple[str, str], None]:
    """The (SOP class, transfer syntax) pairs ``items`` need, uncompressed fallbacks included, in order."""
    wanted: dict[tuple[str, str], None] = {}
    for item in items:
        for ts in (item.transfer_syntax, *UNCOMPRESSED):
            wanted[(item.sop_class_uid, ts)] = None
    return wanted


def contexts_for(items: Iterable[Item]) -> list[PresentationContext]:
    """One single-syntax context per (SOP class, transfer syntax) needed, uncompressed fallbacks included."""
    return [build_context(sop, [ts]) for sop, ts in context_keys(items)]


def context_count(items: Iterable[Item]) -> int:
    return len(context_keys(items))


class Requestor(AE):
    """pynetdicom's AE, holding the client TLS contexts of the peers it opens associations to."""

    def __init__(self, ae_title: str, tls_contexts: tls.ClientContexts) -> None:
        super().__init__(ae_title=ae_title)
        self.tls_contexts = tls_contexts


def make_requestor(config: RouterConfig, pm: pluggy.PluginManager | None = None) -> Requestor:
    """The AE the router requests associations with (pynetdicom configured and patched first: ``install()``); with
    ``pm``, a failed TLS handshake to a peer is announced (``router_tls_failed``)."""
    _pynetdicom.install()
    on_failed: tls.FailureHandler | None = None
    if pm is not None:

        def on_failed(address: str, port: int, reason: str) -> None:
            notify(pm, "router_tls_failed", direction="outbound", address=address, port=port, reason=reason)

    ae = Requestor(config.ae_title, tls.ClientContexts(on_failed))
    t = config.dicom.timeouts
    ae.acse_timeout = t.acse
    ae.dimse_timeout = t.dimse
    ae.network_timeout = t.network
    ae.connection_timeout = t.connect
    ae.maximum_pdu_size = config.dicom.max_pdu
    return ae


def open_association(
    ae: AE, peer: DicomPeer, contexts: list[PresentationContext], ext_neg: list[Any] | None = None, handlers: Any = ()
) -> Association:
    """An association from ``ae`` to ``peer`` (TCP_NODELAY on its socket; over TLS when the peer has ``tls``);
    AssociationFailed when none is made."""
    tls_args = None
    if peer.tls is not None:
        contexts_of = ae.tls_contexts if isinstance(ae, Requestor) else tls.ClientContexts()
        tls_args = (contexts_of.get(peer), peer.host)
    assoc = ae.associate(
        peer.host,
        peer.port,
        contexts=contexts,
        ae_title=peer.ae_title,
        ext_neg=ext_neg or None,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay), *handlers],
        tls_args=tls_args,
    )
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        failure = tls.failure_on(assoc.dul) if peer.tls is not None else None
        if failure is not None:
            reason += f": TLS handshake failed: {failure}"
        raise AssociationFailed(f"association to {peer.ae_title}@{peer.host}:{peer.port} {reason}")
    return assoc


class StoreAssociation:
    """``with StoreAssociation(ae, peer, items) as a: a.send(item)`` -> status.

    With ``on_report`` the association also proposes Storage Commitment Push Model (default roles: we are its
    SCU), so ``request_commitment`` can be sent on it and the peer's N-EVENT-REPORT reaches ``on_report``."""

    def __init__(self, ae: AE, peer: DicomPeer, items: Iterable[Item], on_report: ReportHandler | None = None) -> None:
        self.ae = ae
        self.peer = peer
        self.contexts = contexts_for(items)
        self._keys = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in self.contexts}
        self.on_report = on_report
        if on_report is not None:
            self.contexts.append(build_context(STORAGE_COMMITMENT, list(UNCOMPRESSED)))
        self.assoc: Association | None = None
        self._accepted_by_class: dict[str, list[str]] | None = None
        self._report_threads: list[threading.Thread] = []

    def __enter__(self) -> StoreAssociation:
        return self.open()

    def open(self) -> StoreAssociation:
        handlers = [(evt.EVT_N_EVENT_REPORT, self._report)] if self.on_report is not None else []
        assoc = open_association(self.ae, self.peer, self.contexts, handlers=handlers)
        _pynetdicom.keep_responses(assoc)
        self.assoc = assoc
        self._accepted_by_class = None
        return self

    def _report(self, event: evt.Event) -> Any:
        """The peer's N-EVENT-REPORT, on the thread pynetdicom starts for it; that thread sends our answer."""
        self._report_threads.append(threading.current_thread())
        assert self.on_report is not None
        return self.on_report(event)

    def _wait_for_report_answers(self) -> None:
        """Let our answer to a report go out before the next request: a peer waiting for that answer (pynetdicom
        is one) would otherwise take our C-STORE request for it, and both would be lost."""
        while self._report_threads:
            self._report_threads[0].join(REPORT_ANSWER_WAIT)
            self._report_threads.pop(0)

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None

    def abort(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.abort()
        self.assoc = None

    def proposes(self, items: Iterable[Item], commitment: bool = False) -> bool:
        """Whether this association was negotiated with every context ``items`` (and a commitment) need."""
        if commitment and self.on_report is None:
            return False
        return context_keys(items).keys() <= self._keys

    @property
    def can_commit(self) -> bool:
        """Whether the peer accepted Storage Commitment on this association."""
        return self.alive and bool(self._accepted(STORAGE_COMMITMENT))

    def request_commitment(self, action_information: Dataset) -> int | None:
        """N-ACTION (Request Storage Commitment); the peer's status, None without a valid response."""
        if not self.alive:
            raise AssociationFailed("association lost")
        assert self.assoc is not None
        self._wait_for_report_answers()
        status, _reply = self.assoc.send_n_action(action_information, 1, STORAGE_COMMITMENT, COMMITMENT_INSTANCE)
        return int(status.Status) if "Status" in status else None

    @property
    def alive(self) -> bool:
        return self.assoc is not None and self.assoc.is_established

    def _accepted(self, sop_class: str) -> list[str]:
        """The transfer syntaxes the peer accepted for ``sop_class`` (fixed once the association is established)."""
        assert self.assoc is not None
        if self._accepted_by_class is None:
            by_class: dict[str, list[str]] = {}
            for cx in self.assoc.accepted_contexts:
                if cx.transfer_syntax:
                    by_class.setdefault(str(cx.abstract_syntax), []).append(str(cx.transfer_syntax[0]))
            self._accepted_by_class = by_class
        return self._accepted_by_class.get(sop_class, [])

    def _fallback(self, item: Item, accepted: list[str]) -> str | None:
        """The uncompressed syntax to transcode ``item`` to when the peer took none for its own (Explicit VR Little
        Endian preferred); None when the peer accepted the object's syntax or no uncompressed one."""
        if item.transfer_syntax in accepted or UID(item.transfer_syntax) in UNCOMPRESSED:
            return None
        return next((ts for ts in UNCOMPRESSED if ts in accepted), None)

    def can_carry(self, item: Item) -> bool:
        accepted = self._accepted(item.sop_class_uid)
        if item.transfer_syntax in accepted or self._fallback(item, accepted):
            return True
        return UID(item.transfer_syntax) in UNCOMPRESSED and bool(set(accepted) & set(UNCOMPRESSED))

    def send(self, item: Item, msg_id: int) -> int:
        """Send one object; returns the peer's status. Raises NoContext or AssociationFailed.

        The file is sent as stored whenever the peer accepted its transfer syntax. Otherwise an uncompressed object
        goes in the other little endian syntax, and any other object is transcoded (losslessly) to the uncompressed
        syntax the peer accepted."""
        if not self.alive:
            raise AssociationFailed("association lost")
        assert self.assoc is not None
        accepted = self._accepted(item.sop_class_uid)
        self._wait_for_report_answers()
        try:
            rsp = self._send_c_store(item, msg_id, accepted)
        except ValueError as exc:  # pynetdicom: the file is not in the syntax the job said (no context for it)
            raise NoContext(f"{self.peer.ae_title}: {exc}") from exc
        if "Status" not in rsp:
            raise AssociationFailed("no valid C-STORE response (timeout, abort or invalid response)")
        return int(rsp.Status)

    def _send_c_store(self, item: Item, msg_id: int, accepted: list[str]) -> Dataset:
        assert self.assoc is not None
        fallback = self._fallback(item, accepted)
        if item.transfer_syntax in accepted:
            rsp = self.assoc.send_c_store(item.path, msg_id=msg_id)
        elif UID(item.transfer_syntax) in UNCOMPRESSED and set(accepted) & set(UNCOMPRESSED):
            # the peer took the other little endian syntax: pynetdicom re-encodes the decoded dataset
            rsp = self.assoc.send_c_store(dcmread(item.path), msg_id=msg_id)
        elif fallback is not None:
            rsp = self.assoc.send_c_store(self._transcoded(item, fallback), msg_id=msg_id)
        else:
            offered = ", ".join(accepted) or "none"
            raise NoContext(
                f"{self.peer.ae_title} accepts no context for SOP class {item.sop_class_uid} "
                f"in {item.transfer_syntax} (accepted: {offered})"
            )
        return rsp

    def _transcoded(self, item: Item, target: str) -> Dataset:
        try:
            data = transcode(item.path.read_bytes(), target)
        except TranscodeError as exc:
            raise NoContext(
                f"{self.peer.ae_title} accepts SOP class {item.sop_class_uid} only in {syntax_name(target)}, "
                f"not in {syntax_name(item.transfer_syntax)}, and transcoding failed: {exc}"
            ) from exc
        log.info(
            "sending %s to %s in %s: it did not accept %s",
            item.path.name,
            self.peer.ae_title,
            syntax_name(target),
            syntax_name(item.transfer_syntax),
        )
        return dcmread(BytesIO(data))
