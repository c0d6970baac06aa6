"""The contract between the pipeline and a stage plugin.

A stage is named in a rule's ``then`` list (``- forward: PACS``). Its plugin returns a ``Stage`` object from the
``router_stages`` hook. The pipeline calls ``check`` when rules are loaded (so ``router rules check`` reports a
bad argument before any object arrives) and ``run`` for every matching object. ``run`` returns a one-line
description of what it did; in a dry run (``ctx.dry_run``) it must change nothing durable and the same text
tells the analyst what *would* happen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from router.config import RouterConfig
    from router.intake.envelope import Envelope


@dataclass(frozen=True)
class PlannedForward:
    """A forward the pipeline will put in the outbox together with the stored object."""

    peer: str
    payload: bytes
    modified: bool
    transfer_syntax: str
    rule: str
    commit: bool = False  # request storage commitment from the peer once delivered (docs/workflow.md)
    kind: str = ""  # the outbox JobKind when it is not a store (``print``); empty: a store, or a store and commit
    settle: float | None = None  # a grouped job (``print-series``): its group is put off this long (outbox.groups)


@dataclass
class StageContext:
    """What a running stage may use. Stages add their durable effects here; the store commits them."""

    config: RouterConfig
    engine: Engine | None = None  # the index, for stages that look things up (coerce demographics); read only
    dry_run: bool = False
    rule: str = ""  # the rule whose stage is running, set by the pipeline
    forwards: list[PlannedForward] = field(default_factory=list)
    resends: list[tuple[str, str]] = field(default_factory=list)  # (peer, rule): stored objects, corrected

    def plan_resend(self, peer: str) -> None:
        """After an HL7 message changed a patient: send that patient's stored objects, corrected, to ``peer``."""
        self.resends.append((peer, self.rule))

    def plan_forward(
        self,
        peer: str,
        env: Envelope,
        payload: bytes | None = None,
        commit: bool = False,
        kind: str = "",
        settle: float | None = None,
    ) -> None:
        """Queue ``env`` as it is now for ``peer`` (or ``payload``, a version of it made for that peer); with
        ``commit`` the peer is asked for storage commitment once it has the object; ``kind`` names another job
        kind than a store (``print``); ``settle`` puts a grouped job's group off (``router.outbox.groups``)."""
        self.forwards.append(
            PlannedForward(
                peer=peer,
                payload=env.payload() if payload is None else payload,
                modified=env.modified or payload is not None,
                transfer_syntax=_syntax(env, payload),
                rule=self.rule,
                commit=commit,
                kind=kind,
                settle=settle,
            )
        )


def _syntax(env: Envelope, payload: bytes | None) -> str:
    """The transfer syntax of what a forward sends: the payload made for the peer, or the envelope as it is."""
    if env.kind != "dicom":
        return ""
    if payload is None:
        return env.payload_transfer_syntax
    from io import BytesIO

    from pydicom import dcmread

    meta = dcmread(BytesIO(payload), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).file_meta
    return str(meta.get("TransferSyntaxUID", "")).rstrip("\x00 ")


class Stage(Protocol):
    name: str

    def check(self, args: Any, config: RouterConfig) -> list[str]:
        """Problems with ``args`` (empty when fine). Called when rule files are loaded."""
        ...

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        """Apply the stage to ``env``; return what was done, one line."""
        ...


class StageError(Exception):
    """A stage could not do its job for this object; the object is refused with a failure status."""
