"""The ``transcode`` stage: put what is forwarded in another transfer syntax (the stored original is kept as received).

    - transcode: explicit-le
    - transcode: {to: jpeg2000-lossless}
    - transcode: {to: jpeg2000, lossy: true, ratio: 15}     # or psnr: 45 (dB); lossy needs lossy: true
    - transcode: {to: rle, on_error: refuse}               # default on_error: forward

Later stages of the rule (``forward``) get the transcoded object. When one object cannot be transcoded (no decoder
for its syntax, pixels the target cannot carry), the default is to log a warning and let later stages have it
unchanged: a router must not lose a study because a codec failed. ``on_error: refuse`` refuses the object instead
(the sender gets a failure status). The names are those of ``router.transcode.SYNTAXES``, or a transfer syntax UID.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from router.config import RouterConfig
from router.hooks.specs import hookimpl
from router.intake.envelope import Envelope
from router.intake.stage import Stage, StageContext, StageError
from router.logs import redact
from router.transcode import TranscodeError, syntax_name, syntax_uid, target_problems, transcode

log = logging.getLogger(__name__)

ARG_KEYS = ("to", "lossy", "ratio", "psnr", "on_error")
ON_ERROR = ("forward", "refuse")


@dataclass(frozen=True)
class Request:
    to: str
    lossy: bool = False
    ratio: float | None = None
    psnr: float | None = None
    on_error: str = "forward"


def _request(args: Any) -> Request | list[str]:
    """The parsed arguments, or the problems with them."""
    if isinstance(args, str) and args.strip():
        args = {"to": args}
    if not isinstance(args, dict):
        return ["expects a transfer syntax name or {to: NAME, lossy, ratio, psnr, on_error}"]
    problems = [f"unknown argument {k!r} (expected {', '.join(ARG_KEYS)})" for k in args if k not in ARG_KEYS]
    if not isinstance(args.get("to"), str) or not args["to"].strip():
        return [*problems, "needs 'to: NAME' (a transfer syntax name or UID)"]
    if not isinstance(args.get("lossy", False), bool):
        problems.append("lossy: must be true or false")
    if args.get("on_error", "forward") not in ON_ERROR:
        problems.append(f"on_error: must be one of {', '.join(ON_ERROR)}")
    for key in ("ratio", "psnr"):
        value = args.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"{key}: must be a number")
    if problems:
        return problems
    return Request(
        to=args["to"].strip(),
        lossy=args.get("lossy", False),
        ratio=args.get("ratio"),
        psnr=args.get("psnr"),
        on_error=args.get("on_error", "forward"),
    )


class TranscodeStage:
    name = "transcode"

    def check(self, args: Any, config: RouterConfig) -> list[str]:
        request = _request(args)
        if isinstance(request, list):
            return request
        problems = target_problems(request.to, allow_lossy=request.lossy, ratio=request.ratio, psnr=request.psnr)
        return [p.replace("(allow lossy compression)", "(add 'lossy: true')") for p in problems]

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        request = _request(args)
        assert isinstance(request, Request), "rules are checked before they run"
        target = syntax_uid(request.to)
        source = env.payload_transfer_syntax
        route = f"{syntax_name(source)} to {syntax_name(target)}"
        if source == target:
            return f"transcode: already {syntax_name(target)}, nothing to do"
        before = env.payload()
        try:
            data = transcode(before, target, allow_lossy=request.lossy, ratio=request.ratio, psnr=request.psnr)
        except TranscodeError as exc:
            if request.on_error == "refuse":
                raise StageError(f"cannot transcode {route}: {exc}") from exc
            if not ctx.dry_run:
                log.warning(
                    "transcode of %s from %s failed, passed on unchanged: %s", env.sop_instance_uid, route, redact(exc)
                )
            verb = "would pass" if ctx.dry_run else "passed"
            return f"transcode: cannot transcode {route} ({exc}); {verb} on unchanged"
        env.replace_payload(data, target, f"transcode: {route}")
        verb = "would transcode" if ctx.dry_run else "transcoded"
        return f"{verb} {route} ({len(before)} -> {len(data)} bytes)"


@hookimpl
def router_stages() -> list[Stage]:
    return [TranscodeStage()]
