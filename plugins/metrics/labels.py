"""Label values from the configuration only: whatever else a peer sends is counted as ``other``.

A label value that came from the network unchecked (a calling AE title, an HL7 message type) would let any caller
create as many time series as it likes, and could carry what must not leave the router (a UID, a patient's name
typed into the wrong field). So every label value is one of a set the configuration or the router's code fixes.
"""

from __future__ import annotations

from router.config import DicomPeer, RouterConfig
from router.hl7.patients import MERGE_EVENTS, UPDATE_EVENTS
from router.hooks.answers import (
    CALLED_AE_NOT_RECOGNIZED,
    CALLING_AE_NOT_RECOGNIZED,
    LOCAL_LIMIT_EXCEEDED,
    SERVICE_PROVIDER_PRESENTATION,
    SERVICE_USER,
    TEMPORARY_CONGESTION,
)
from router.intake.hl7 import ORDER_MESSAGES

OTHER = "other"
# the HL7 message types the router applies (router.intake.hl7); a type that is only routed counts as other
HL7_TYPES = frozenset(
    {f"ADT^{event}" for event in UPDATE_EVENTS | MERGE_EVENTS}
    | {f"{code}^{event}" for code, events in ORDER_MESSAGES.items() for event in events}
)
ACK_CODES = frozenset({"AA", "AE", "AR"})
DIMSE_SERVICES = frozenset(
    {"C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET", "N-ACTION", "N-EVENT-REPORT", "N-CREATE", "N-SET"}
)
QUERY_SERVICES = frozenset({"C-FIND", "MWL", "QIDO-RS"})
EXPORT_SERVICES = frozenset({"C-MOVE", "C-GET", "WADO-RS"})
TRANSPORTS = frozenset({"dimse", "stow", "mllp", "file"})
REJECTION_REASONS = {
    (SERVICE_USER, CALLING_AE_NOT_RECOGNIZED): "calling-ae-not-recognized",
    (SERVICE_USER, CALLED_AE_NOT_RECOGNIZED): "called-ae-not-recognized",
    (SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED): "local-limit-exceeded",
    (SERVICE_PROVIDER_PRESENTATION, TEMPORARY_CONGESTION): "temporary-congestion",
}


def one_of(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


def status_class(status: int) -> str:
    """PS3.7 Annex C: ``success``, ``warning``, ``cancel`` or ``failure`` (pending statuses are never final)."""
    if status == 0x0000:
        return "success"
    if status == 0x0001 or 0xB000 <= status <= 0xBFFF:
        return "warning"
    if status == 0xFE00:
        return "cancel"
    return "failure"


def rejection_reason(source: int, diagnostic: int) -> str:
    """An A-ASSOCIATE-RJ's source and diagnostic as a word (``other`` for the rest)."""
    return REJECTION_REASONS.get((source, diagnostic), OTHER)


def export_service(service: str) -> str:
    """``WADO-RS/metadata``, ``/frames`` ... count as ``WADO-RS``."""
    return one_of(service.partition("/")[0], EXPORT_SERVICES)


class Labels:
    """The label values one configuration allows: its peers' names and the AE titles it knows."""

    def __init__(self, config: RouterConfig) -> None:
        self.peers = frozenset(config.peers)
        known = {peer.ae_title.strip() for peer in config.peers.values() if isinstance(peer, DicomPeer)}
        known |= {ae.strip() for ae in config.dicom.allowed_calling_aets}
        self.ae_titles = frozenset(ae for ae in known if ae)

    def calling_ae(self, ae_title: str) -> str:
        """A configured peer's AE title or one of ``dicom.allowed_calling_aets``; else ``other``."""
        return one_of(ae_title.strip(), self.ae_titles)

    def destination(self, peer: str) -> str:
        """A peer's name in ``peers:``; ``other`` for a job whose peer is no longer configured."""
        return one_of(peer, self.peers)
