"""The ``print`` stage: print the object's images on a DICOM printer (docs/print.md).

    - print: PRINTER
    - print: {to: PRINTER}
    - print: [PRINTER, WARD_PRINTER]
    - print: {to: PRINTER, group: series, settle_seconds: 10}

A printer is a DICOM peer with a ``print`` section (its film settings). Each printer gets an outbox job committed
together with the stored object: the object as it is at this point of the pipeline (as changed by earlier stages),
every frame one image, one film session per job, as many films as the printer's format needs. Delivery, retries and
dead letters are the forward queue's, as for any forward (``router queue``). The ``forward`` plugin provides this
stage beside its own: both queue deliveries.

With ``group: series`` each object's job is a ``print-series`` job: the objects of one series, received over one
association or several, are printed together on one film session once the series has been quiet for
``settle_seconds`` (``router.outbox.groups``; the destination: ``router.destinations.printer``).
"""

from __future__ import annotations

from typing import Any

from plugins.forward import peer_names
from router.config import DicomPeer, RouterConfig
from router.intake.envelope import Envelope
from router.intake.stage import StageContext, StageError
from router.outbox.jobs import JobKind

ARG_KEYS = frozenset({"to", "group", "settle_seconds"})
GROUPS = ("series",)
SETTLE_SECONDS = 10.0  # a series is printed once no object of it has come for this long


def grouping(args: Any) -> tuple[str | None, float] | str:
    """(the group, or None, and the settle time), or an error message."""
    if not isinstance(args, dict):
        return None, SETTLE_SECONDS
    group = args.get("group")
    if group is not None and group not in GROUPS:
        return f"group: {group!r} is not a group (one of {', '.join(GROUPS)})"
    settle = args.get("settle_seconds", SETTLE_SECONDS)
    if isinstance(settle, bool) or not isinstance(settle, int | float) or not 0 <= settle <= 86400:
        return f"settle_seconds: {settle!r} is not a number of seconds from 0 to 86400"
    if group is None and "settle_seconds" in args:
        return "settle_seconds needs group: series"
    return group, float(settle)


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
        peers = peer_names(args, ARG_KEYS)
        if isinstance(peers, str):
            return [peers]
        group = grouping(args)
        problems = [group] if isinstance(group, str) else []
        return problems + [problem for p in peers if (problem := _not_a_printer(p, config)) is not None]

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        if env.kind != "dicom":
            raise StageError(f"print takes DICOM images, not {env.kind}")
        peers, group = peer_names(args, ARG_KEYS), grouping(args)
        assert isinstance(peers, list) and not isinstance(group, str), "rules are checked before they run"
        kind, settle = (JobKind.PRINT_SERIES, group[1]) if group[0] == "series" else (JobKind.PRINT, None)
        for name in peers:
            problem = _not_a_printer(name, ctx.config)
            if problem is not None:  # the configuration changed since the rules were checked
                raise StageError(problem)
            ctx.plan_forward(name, env, kind=kind.value, settle=settle)
        what = "as changed by earlier stages" if env.modified else "as received"
        verb = "would print" if ctx.dry_run else "print"
        if settle is not None:
            what += f"; with its series, once it has been quiet for {settle:g} s"
        return f"{verb} on {', '.join(peers)} ({what})"
