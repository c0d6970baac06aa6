"""The ``resend`` stage: after an ADT update or merge, send the patient's stored objects again, corrected.

    - name: corrections-to-pacs
      when: {kind: hl7, message: [ADT^A08, ADT^A40]}
      then:
        - resend: PACS            # a DICOM peer, a list of them, or {to: PACS}

Every stored instance of the patient the message changed (the surviving patient of a merge) is queued for the
peer; when it is sent it carries the demographics known at that moment and the replaced values in Original
Attributes Sequence (reason CORRECT). The stored files are not rewritten.
"""

from __future__ import annotations

from typing import Any

from plugins.forward import peer_names
from router.config import RouterConfig
from router.hooks.specs import hookimpl
from router.intake.envelope import Envelope
from router.intake.stage import Stage, StageContext, StageError


class ResendStage:
    name = "resend"

    def check(self, args: Any, config: RouterConfig) -> list[str]:
        peers = peer_names(args)
        if isinstance(peers, str):
            return [peers]
        problems = [f"unknown peer {p!r}" for p in peers if p not in config.peers]
        problems += [f"peer {p!r} is an HL7 peer: resend sends DICOM objects" for p in peers
                     if p in config.peers and "dicom" not in config.peers[p].carries]  # fmt: skip
        return problems

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        if env.kind != "hl7":
            raise StageError("resend follows an HL7 message (ADT update or merge); use forward for DICOM objects")
        peers = peer_names(args)
        assert isinstance(peers, list), "rules are checked before they run"
        for peer in peers:
            ctx.plan_resend(peer)
        verb = "would re-send" if ctx.dry_run else "re-send"
        return f"{verb} the patient's stored objects, corrected, to {', '.join(peers)}"


@hookimpl
def router_stages() -> list[Stage]:
    return [ResendStage()]
