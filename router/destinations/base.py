"""The contract between the forward workers and a destination: how a batch of jobs reaches one peer.

A sender thread of the forward workers owns one ``Destination`` for one peer while it drains that peer's queue.
It hands it batches of claimed jobs; ``send`` yields an ``Outcome`` for each job as soon as it is known and
returns early when it must (the connection was lost, the router is stopping). The worker records every outcome
(done marks, retries with backoff, dead letters, plugin notifications) the same way for every destination; a job
``send`` did not report goes back to the queue untouched. ``Unreachable`` raised before any outcome means the peer
could not be reached at all: the worker charges the attempt to every job of the peer and leaves it alone until the
backoff has passed.

A destination type is a class (or any callable) ``(name, peer, context) -> Destination``; built-in ones are
``dicom``, ``mllp`` and ``dicomweb``, and a plugin adds one with the ``router_destinations`` hook and a ``type:``
in its peers' entries (docs/plugins.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from router.statuses import SendVerdict

if TYPE_CHECKING:
    import pluggy
    from pydantic import BaseModel
    from pynetdicom import AE
    from sqlalchemy.engine import Engine

    from router.commitment.ledger import CommitLedger
    from router.config import AnyPeer, RouterConfig
    from router.store.models import Job


class Unreachable(ConnectionError):
    """The peer could not be reached (no connection, association refused): nothing of the batch was attempted."""


@dataclass(frozen=True)
class Outcome:
    """What became of one job. ``status`` is the peer's answer when it gave one (a DIMSE status, an HTTP status);
    ``reason`` says why in one line. ``handed_over``: the job was delivered and its state now belongs to
    another part of the router (storage commitment: it is ``committing`` until the peer reports)."""

    job: Job
    verdict: SendVerdict
    status: int | None = None
    reason: str = ""
    handed_over: bool = False

    @classmethod
    def done(cls, job: Job, status: int | None = None, reason: str = "") -> Outcome:
        return cls(job, SendVerdict.DONE, status, reason)

    @classmethod
    def retry(cls, job: Job, reason: str, status: int | None = None) -> Outcome:
        return cls(job, SendVerdict.RETRY, status, reason)

    @classmethod
    def permanent(cls, job: Job, reason: str, status: int | None = None) -> Outcome:
        return cls(job, SendVerdict.PERMANENT, status, reason)


@dataclass
class DestinationContext:
    """What the forward workers give every destination they make."""

    config: RouterConfig
    engine: Engine  # the database (read: corrected copies look up demographics)
    pm: pluggy.PluginManager
    stop: threading.Event  # set when the router stops: finish the object being sent, report, return
    requestor: AE  # the router's DICOM application entity as an association requestor (shared)
    ledger: CommitLedger  # storage commitment requests (DICOM peers with commit: true)


class Destination(Protocol):
    """One peer's link, kept by its sender between batches while it is ``alive``."""

    ordered: ClassVar[bool]  # one job at a time, one sender, each done before the next is claimed (HL7 streams)

    @property
    def alive(self) -> bool:
        """Whether the link is open and worth keeping for the next batch."""
        ...

    def send(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        """Deliver ``jobs`` (claimed, in queue order), opening the link if needed; raise ``Unreachable`` before the
        first outcome when the peer cannot be reached."""
        ...

    def close(self) -> None:
        """Release the link (called when the sender goes idle or stops)."""
        ...


class DestinationType(Protocol):
    """Makes the destination for a peer. ``settings_model`` (optional): a pydantic model the peer entry's own keys
    are checked against when the router starts (a plugin's destination type; built-in peer types are validated with
    the configuration)."""

    def __call__(self, name: str, peer: AnyPeer, context: DestinationContext) -> Destination: ...


def settings_model(kind: DestinationType) -> type[BaseModel] | None:
    """The settings model a destination type declares, if any."""
    model = getattr(kind, "settings_model", None)
    return model if isinstance(model, type) else None
