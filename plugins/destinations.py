"""The built-in destination types, as an ordinary (``trylast``) plugin: peers of ``type: dicom`` (C-STORE,
DIMSE-N), ``mllp`` (HL7 v2) and ``dicomweb`` (STOW-RS). A plugin that answers ``router_destinations`` for one of
these types first takes it over."""

from __future__ import annotations

from router.destinations.base import DestinationType
from router.destinations.registry import BUILTIN
from router.hooks.specs import hookimpl


@hookimpl(trylast=True)
def router_destinations(peer_type: str) -> DestinationType | None:
    return BUILTIN.get(peer_type)
