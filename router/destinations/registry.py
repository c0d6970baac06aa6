"""Which destination delivers to a peer: the built-in types, and the types plugins add.

Each peer entry has a ``type`` (``router.config.peers``). The ``router_destinations`` hook answers, for a type, the
destination type (a factory ``(name, peer, context) -> Destination``) that delivers to it; the first plugin that
knows the type wins, and the built-in plugin ``destinations`` (``plugins/destinations.py``) answers last with
``BUILTIN``.
"""

from __future__ import annotations

import pluggy
from pydantic import ValidationError

from router.config import BUILTIN_PEER_TYPES, PluginPeer, RouterConfig, format_errors
from router.destinations.base import DestinationType, settings_model
from router.destinations.dicom import DicomDestination
from router.destinations.mllp import MllpDestination
from router.destinations.stow import StowDestination
from router.hooks.calls import decide

BUILTIN: dict[str, DestinationType] = {
    "dicom": DicomDestination,
    "mllp": MllpDestination,
    "dicomweb": StowDestination,
}
assert set(BUILTIN) == set(BUILTIN_PEER_TYPES)


def destination_type(pm: pluggy.PluginManager, peer_type: str) -> DestinationType | None:
    """The destination type for peers of ``peer_type``; None when no plugin provides it."""
    found: DestinationType | None = decide(pm, "router_destinations", on_error=None, peer_type=peer_type)
    return found


def peer_problems(pm: pluggy.PluginManager, config: RouterConfig) -> list[str]:
    """Every peer whose type no plugin provides, and every plugin peer whose settings its plugin refuses, as
    ``peers.NAME.key: message`` lines (the form of every configuration error)."""
    problems: list[str] = []
    for name, peer in config.peers.items():
        kind = destination_type(pm, peer.type)
        if kind is None:
            problems.append(
                f"peers.{name}.type: no destination of type {peer.type!r} is provided (built in: "
                f"{', '.join(BUILTIN_PEER_TYPES)}; a plugin adds others with the router_destinations hook)"
            )
            continue
        model = settings_model(kind)
        if isinstance(peer, PluginPeer) and model is not None:
            try:
                model.model_validate(peer.settings)
            except ValidationError as exc:
                problems += format_errors(exc, f"peers.{name}").splitlines()
    return problems
