"""A third-party style plugin used by the tests: a ``stamp`` stage plus notification hooks.

    - stamp: {StationName: ROUTED}

Notifications are appended as JSON lines to the file named by $ROUTER_TEST_EVENTS.
"""

from __future__ import annotations

import json
import os
from typing import Any

from router.config import RouterConfig
from router.hooks.specs import hookimpl
from router.intake.envelope import Envelope
from router.intake.stage import Stage, StageContext


class StampStage:
    name = "stamp"

    def check(self, args: Any, config: RouterConfig) -> list[str]:
        if not isinstance(args, dict) or not args:
            return ["expects {Keyword: value}"]
        return []

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        for keyword, value in args.items():
            setattr(env.dataset, keyword, value)
        env.mark_modified(f"stamp {', '.join(args)}")
        return f"stamped {', '.join(args)}"


def _record(event: str, **data: Any) -> None:
    path = os.environ.get("ROUTER_TEST_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, **data}) + "\n")


@hookimpl
def router_stages() -> list[Stage]:
    return [StampStage()]


@hookimpl
def router_startup(process: str) -> None:
    _record("startup", process=process, pid=os.getpid())


@hookimpl
def router_association_accepted(calling_ae: str, direction: str) -> None:
    _record("association_accepted", calling_ae=calling_ae, direction=direction)


@hookimpl
def router_instance_received(envelope: Envelope) -> None:
    _record("instance_received", sop=envelope.sop_instance_uid)


@hookimpl
def router_instance_stored(envelope: Envelope, outcome: str, jobs: int) -> None:
    _record("instance_stored", sop=envelope.sop_instance_uid, outcome=outcome, jobs=jobs)


@hookimpl
def router_forwarded(job: Any, status: int) -> None:
    _record("forwarded", sop=job.sop_uid, peer=job.peer, status=status)
