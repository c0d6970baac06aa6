"""The ``forward`` stage: queue the object, as it is at this point of the pipeline, for one or more peers.

    - forward: PACS
    - forward: [PACS, ARCHIVE]
    - forward: {to: PACS}

Each peer gets a durable outbox job committed together with the stored object; delivery, retries and dead
letters are the forward queue's business (``router queue``).
"""

from __future__ import annotations

from typing import Any

from router.config import RouterConfig
from router.envelope import Envelope
from router.hookspecs import hookimpl
from router.stage import Stage, StageContext

ARG_KEYS = {"to"}


def _peers(args: Any) -> list[str] | str:
    """The peer names, or an error message."""
    if isinstance(args, dict):
        unknown = set(args) - ARG_KEYS
        if unknown:
            return f"unknown argument(s) {sorted(unknown)} (expected {sorted(ARG_KEYS)})"
        if "to" not in args:
            return "needs 'to: PEER'"
        args = args["to"]
    names = args if isinstance(args, list) else [args]
    if not names or not all(isinstance(n, str) and n for n in names):
        return "expects a peer name, a list of peer names, or {to: PEER}"
    return list(dict.fromkeys(names))


class ForwardStage:
    name = "forward"

    def check(self, args: Any, config: RouterConfig) -> list[str]:
        peers = _peers(args)
        if isinstance(peers, str):
            return [peers]
        known = sorted(config.peers)
        return [
            f"unknown peer {p!r} (peers: {', '.join(known) or 'none configured'})"
            for p in peers
            if p not in config.peers
        ]

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        peers = _peers(args)
        assert isinstance(peers, list), "rules are checked before they run"
        for peer in peers:
            ctx.plan_forward(peer, env)
        what = "as changed by earlier stages" if env.modified else "as received"
        verb = "would forward" if ctx.dry_run else "forward"
        return f"{verb} to {', '.join(peers)} ({what})"


@hookimpl
def router_stages() -> list[Stage]:
    return [ForwardStage()]
