"""The ``forward`` stage: queue the object, as it is at this point of the pipeline, for one or more peers.

    - forward: PACS
    - forward: [PACS, ARCHIVE]
    - forward: {to: PACS}
    - forward: {to: PACS, commit: true}   # then ask PACS for storage commitment (docs/workflow.md)

Each peer gets a durable outbox job committed together with the stored object; delivery, retries and dead
letters are the forward queue's business (``router queue``). DICOM objects and MPPS messages go to DICOM peers,
HL7 messages to MLLP peers. A peer with ``patient_id: bsn`` gets the patient's BSN in Patient ID (see
``router.hl7.demographics.apply_bsn_mode``) when the hospital system gave the patient one.
"""

from __future__ import annotations

import copy
import logging
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.filewriter import dcmwrite

from router.config import DicomPeer, ObjectPeer, RouterConfig
from router.hl7.demographics import apply_bsn_mode, known_demographics
from router.hooks.specs import hookimpl
from router.intake.envelope import Envelope
from router.intake.stage import Stage, StageContext, StageError
from router.transcode import TranscodeError, syntax_name, syntax_uid, transcode

log = logging.getLogger(__name__)

ARG_KEYS = frozenset({"to", "commit"})
PEER_KINDS = {"mllp": "an HL7", "dicomweb": "a DICOMweb"}  # how a rule problem names a peer of that type


def peer_names(args: Any, keys: frozenset[str] = frozenset({"to"})) -> list[str] | str:
    """The peer names, or an error message; ``keys`` are the arguments the stage takes in its mapping form."""
    if isinstance(args, dict):
        unknown = set(args) - keys
        if unknown:
            return f"unknown argument(s) {sorted(unknown)} (expected {sorted(keys)})"
        if "to" not in args:
            return "needs 'to: PEER'"
        args = args["to"]
    names = args if isinstance(args, list) else [args]
    if not names or not all(isinstance(n, str) and n for n in names):
        return "expects a peer name, a list of peer names, or {to: PEER}"
    return list(dict.fromkeys(names))


def _kind_of(peer_type: str) -> str:
    return PEER_KINDS.get(peer_type, f"a {peer_type!r}")


class ForwardStage:
    name = "forward"

    def check(self, args: Any, config: RouterConfig) -> list[str]:
        peers = peer_names(args, ARG_KEYS)
        if isinstance(peers, str):
            return [peers]
        known = sorted(config.peers)
        problems = [
            f"unknown peer {p!r} (peers: {', '.join(known) or 'none configured'})"
            for p in peers
            if p not in config.peers
        ]
        if isinstance(args, dict) and "commit" in args:
            if not isinstance(args["commit"], bool):
                problems.append("commit: expects true or false")
            elif args["commit"]:
                problems += [
                    f"commit: peer {p!r} is {_kind_of(config.peers[p].type)} peer"
                    for p in peers
                    if p in config.peers and not isinstance(config.peers[p], DicomPeer)
                ]
        return problems

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        peers = peer_names(args, ARG_KEYS)
        assert isinstance(peers, list), "rules are checked before they run"
        commit = isinstance(args, dict) and args.get("commit") is True
        if commit and env.kind != "dicom":
            raise StageError(f"commit: storage commitment is for DICOM objects, not {env.kind}")
        notes = []
        for name in peers:
            peer = ctx.config.peers[name]
            if env.kind not in peer.carries:
                wanted = "an HL7 (mllp)" if env.kind == "hl7" else "a DICOM"
                raise StageError(f"peer {name!r} is not {wanted} peer: cannot forward {env.kind} there")
            payload: bytes | None = None
            if not isinstance(peer, ObjectPeer) or env.kind != "dicom":
                ctx.plan_forward(name, env, payload, commit=commit)
                continue
            if peer.patient_id == "bsn":
                payload = _bsn_payload(env, ctx)
                notes.append(f"{name}: BSN as Patient ID" if payload else f"{name}: no BSN known, MRN sent")
            if peer.transfer_syntaxes:
                payload, note = _in_peer_syntax(
                    payload if payload is not None else env.payload(), peer.transfer_syntaxes
                )
                if note:
                    notes.append(f"{name}: {note}")
            ctx.plan_forward(name, env, payload, commit=commit)
        what = "as changed by earlier stages" if env.modified else "as received"
        verb = "would forward" if ctx.dry_run else "forward"
        then = ", then request storage commitment" if commit else ""
        return f"{verb} to {', '.join(peers)}{then} ({what}{'; ' if notes else ''}{'; '.join(notes)})"


def _in_peer_syntax(data: bytes, syntaxes: list[str]) -> tuple[bytes, str]:
    """``data`` in the first of the peer's syntaxes that can be produced (as is when it already is in one)."""
    current = str(dcmread(BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
    wanted = [str(syntax_uid(s)) for s in syntaxes]
    if current in wanted:
        return data, ""
    errors = []
    for target in wanted:
        try:
            return transcode(data, target), f"transcoded to {syntax_name(target)}"
        except TranscodeError as exc:
            errors.append(str(exc))
    log.warning("cannot transcode to any of the peer's syntaxes, sending as is: %s", "; ".join(errors))
    return data, "sent as is: " + "; ".join(errors)


def _bsn_payload(env: Envelope, ctx: StageContext) -> bytes | None:
    """The object as it is now, with the BSN mode applied; None when the patient has no known BSN."""
    if ctx.engine is None:
        return None
    with ctx.engine.connect() as conn:
        known = known_demographics(conn, env.header)
    ds = copy.deepcopy(env.dataset)
    if not apply_bsn_mode(ds, known, ctx.config):
        return None
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


@hookimpl
def router_stages() -> list[Stage]:
    from plugins.printing import PrintStage  # late: it shares peer_names with this module

    return [ForwardStage(), PrintStage()]
