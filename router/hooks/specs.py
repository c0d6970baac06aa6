"""Every hook a plugin can implement. Each is a documented stub.

Two kinds, as in pynetdicom's events: ``router_stages`` *provides* behaviour (stages that rules can name); all
other hooks are *notifications*: they are told what happened and cannot change it. A notification hook that
raises is logged and ignored; it never fails an association or a store.

Hook arguments are keyword-only in pluggy; implement only the arguments you need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.destinations.base import DestinationType
    from router.intake.envelope import Envelope
    from router.intake.stage import Stage
    from router.store.models import Job

PROJECT = "router"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def router_stages() -> list[Stage]:  # type: ignore[empty-body]
    """Return the stages this plugin provides, each with a unique ``name`` used in rule files."""


@hookspec(firstresult=True)
def router_destinations(peer_type: str) -> DestinationType | None:
    """Decision: the destination type that delivers to peers configured with ``type: <peer_type>``, or None when
    this plugin does not provide it. The first plugin that answers wins; the built-in ``dicom``, ``mllp`` and
    ``dicomweb`` types answer last. A destination type is a factory ``(name, peer, context) -> Destination``
    (``router.destinations.base``); its optional ``settings`` attribute, a pydantic model, checks the keys of the
    peer entry besides ``type`` and ``max_associations`` when the router starts."""


@hookspec
def router_startup(config: RouterConfig, process: str) -> None:
    """The router has loaded its configuration and is about to start its listeners. Called once in each of the
    router's processes, each with its own plugin instances: ``process`` is ``serve`` (listeners, ingest) or
    ``forward`` (the forward workers, which announce ``router_forwarded`` and ``router_forward_failed``)."""


@hookspec
def router_association_accepted(calling_ae: str, called_ae: str, address: str, direction: str) -> None:
    """An association was established. ``direction`` is ``inbound`` or ``outbound``."""


@hookspec
def router_association_rejected(calling_ae: str, called_ae: str, address: str, reason: str) -> None:
    """An inbound association was rejected (``reason`` says which A-ASSOCIATE-RJ reason)."""


@hookspec
def router_instance_received(envelope: Envelope) -> None:
    """An object was received and decoded, before rules run and before it is durable."""


@hookspec
def router_instance_stored(envelope: Envelope, outcome: str, path: str, jobs: int) -> None:
    """An object is durable (file fsynced, index and outbox committed) and about to be acknowledged.

    ``outcome`` is a ``router.statuses.StoreOutcome`` value (``stored``, ``duplicate-identical`` ...);
    ``jobs`` is the number of outbox jobs created for it.
    """


@hookspec
def router_instance_refused(source: Any, sop_instance_uid: str, outcome: str, status: int, reason: str) -> None:
    """An inbound object was refused with a failure ``status`` (quarantined, duplicate, out of resources)."""


@hookspec
def router_forwarded(job: Job, status: int) -> None:
    """An outbox job was delivered to its peer, which answered ``status`` (success or warning)."""


@hookspec
def router_forward_failed(job: Job, error: str, dead: bool) -> None:
    """An attempt to deliver an outbox job failed; ``dead`` is true when it went to the dead letters."""


@hookspec
def router_query_answered(service: str, calling_ae: str, level: str, matches: int, status: int) -> None:
    """A query (C-FIND, QIDO-RS ...) was answered with ``matches`` results and final ``status``."""
