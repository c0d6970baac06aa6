"""The ``print`` stage: print the object's images on a DICOM printer (docs/print.md).

    - print: PRINTER
    - print: {to: PRINTER}
    - print: [PRINTER, WARD_PRINTER]

A printer is a DICOM peer with a ``print`` section (its film settings). Each printer gets an outbox job committed
together with the stored object: the object as it is at this point of the pipeline (as changed by earlier stages),
every frame one image, one film session per job, as many films as the printer's format needs. Delivery, retries and
dead letters are the forward queue's, as for any forward (``router queue``). The ``forward`` plugin provides this
stage beside its own: both queue deliveries.
"""

from __future__ import annotations

from typing import Any

from plugins.forward import peer_names
from router.config import DicomPeer, RouterConfig
from router.intake.envelope import Envelope
from router.intake.stage import StageContext, StageError
from router.outbox.jobs import JobKind


def _not_a_printer(name: str, config: RouterConfig) -> str | None:
    peer = config.peers.get(name)
    if peer is None:
        return f"unknown peer {name!r} (peers: {', '.join(sorted(config.peers)) or 'none configured'})"
    if not isinstance(peer, DicomPeer) or peer.print is None:
        return f"peer {name!r} is not a printer (a DICOM peer with a print section, e.g. print: {{}})"
    return None


class PrintStage:
    name = "print"

    def check(self, args: Any, config: RouterConfig) -> list[str]:
        peers = peer_names(args)
        if isinstance(peers, str):
            return [peers]
        return [problem for p in peers if (problem := _not_a_printer(p, config)) is not None]

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        if env.kind != "dicom":
            raise StageError(f"print takes DICOM images, not {env.kind}")
        peers = peer_names(args)
        assert isinstance(peers, list), "rules are checked before they run"
        for name in peers:
            problem = _not_a_printer(name, ctx.config)
            if problem is not None:  # the configuration changed since the rules were checked
                raise StageError(problem)
            ctx.plan_forward(name, env, kind=JobKind.PRINT.value)
        what = "as changed by earlier stages" if env.modified else "as received"
        verb = "would print" if ctx.dry_run else "print"
        return f"{verb} on {', '.join(peers)} ({what})"
