"""Dry runs of the rules: ``POST /api/rules/test`` (one uploaded object or message) and ``POST /api/rules/replay``
(the last objects and messages the router received), with the rules in force and, when the request gives edited
files, with those too. The ``router rules test`` code path (``router.intake.dryrun``): nothing is stored, changed or
sent.

A replay reads each object again (a DICOM object from its stored file, an HL7 message from the activity record)
and compares what the rules would do (rules matched, peers forwarded to, a stage's error): with edited files, the
rules in force against the edited ones; without, what was done when it was received against the rules now.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import select

from router import storage
from router.intake.dryrun import (
    DryRun,
    NotReadable,
    describe,
    dry_run,
    load_with_edits,
    problem_json,
    read_object,
)
from router.intake.envelope import Envelope
from router.listeners.http.api.endpoint import ApiError, Call, Endpoint
from router.listeners.http.api.services import ApiServices
from router.rules.loader import LoadResult
from router.store.activity import received_lately
from router.store.tables import INSTANCE

MAX_REPLAY = 500
EDITS = {"type": "object", "additionalProperties": {"type": "string"},
         "description": "rule files as edited (name -> YAML), replacing or adding to those in force"}  # fmt: skip
TEST_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["object"], "properties": {
        "object": {"type": "string", "description": "the DICOM file or HL7 message, base64"},
        "calling_ae": {"type": "string", "maxLength": 16}, "called_ae": {"type": "string", "maxLength": 16},
        "rules": EDITS}}}}}  # fmt: skip
REPLAY_BODY = {"content": {"application/json": {"schema": {"type": "object", "properties": {
    "last": {"type": "integer", "minimum": 1, "maximum": MAX_REPLAY, "default": 50}, "rules": EDITS}}}}}  # fmt: skip


def _edits(body: dict[str, Any]) -> dict[str, str] | None:
    edits = body.get("rules")
    if edits is None:
        return None
    if not isinstance(edits, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in edits.items()):
        raise ApiError(400, "rules: an object of file name -> YAML text")
    return edits


class DryRuns:
    def __init__(self, services: ApiServices) -> None:
        self.services = services

    def rule_sets(self, edits: dict[str, str] | None) -> tuple[LoadResult, LoadResult | None]:
        """The rules in force (as the files are now) and, with ``edits``, the edited ones; 422 for their problems."""
        services = self.services
        config, stages = services.config, services.stages
        current = load_with_edits(config.rules_dir, {}, stages, config)
        if edits is None:
            return current, None
        try:
            edited = load_with_edits(config.rules_dir, edits, stages, config)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        if edited.problems:
            raise ApiError(422, f"{len(edited.problems)} problem(s) in the edited rules",
                           problems=[problem_json(p) for p in edited.problems])  # fmt: skip
        return current, edited

    def run(self, env: Envelope, rules: LoadResult) -> DryRun:
        return dry_run(env, rules, self.services.stages, self.services.config)

    def test(self, call: Call) -> dict[str, Any]:
        body = call.json()
        try:
            raw = base64.b64decode(str(body.get("object", "")), validate=True)
        except (ValueError, binascii.Error):
            raise ApiError(400, "object: base64 of a DICOM file or an HL7 message") from None
        current, edited = self.rule_sets(_edits(body))
        try:
            env = read_object(raw, self.services.config, str(body.get("calling_ae", ""))[:16],
                              str(body.get("called_ae", ""))[:16])  # fmt: skip
        except NotReadable as exc:
            raise ApiError(422, str(exc)) from None
        answer = {"object": describe(env), "current": self.run(env, current).as_json(), "edited": None}
        if edited is not None:
            answer["edited"] = self.run(read_object(raw, self.services.config, env.source.calling_ae,
                                                    env.source.called_ae), edited).as_json()  # fmt: skip
        return answer

    def replay(self, call: Call) -> dict[str, Any]:
        body = call.json()
        last = body.get("last", 50)
        if not isinstance(last, int) or isinstance(last, bool) or not 1 <= last <= MAX_REPLAY:
            raise ApiError(400, f"last: a number from 1 to {MAX_REPLAY}")
        current, edited = self.rule_sets(_edits(body))
        items, skipped = [], []
        for row in received_lately(self.services.engine, last):
            raw = self._bytes(row)
            if raw is None:
                skipped.append({"subject": row["subject"], "reason": "no longer stored"})
                continue
            items.append(self._compare(row, raw, current, edited))
        return {"items": items, "checked": len(items), "changed": sum(1 for i in items if i["changed"]),
                "skipped": skipped}  # fmt: skip

    def _compare(
        self, row: dict[str, Any], raw: bytes, current: LoadResult, edited: LoadResult | None
    ) -> dict[str, Any]:
        detail = json.loads(row["detail"]) if row["detail"] else {}
        source = detail.get("calling_ae", "") if row["kind"] != "hl7" else ""
        try:
            now = self.run(read_object(raw, self.services.config, source), current)
            then = self.run(read_object(raw, self.services.config, source), edited) if edited else None
        except NotReadable as exc:
            return {"subject": row["subject"], "kind": row["kind"], "received_at": row["at"], "changed": False,
                    "error": str(exc)}  # fmt: skip
        recorded = {"rules": detail.get("rules", []), "forwards": sorted({j["peer"] for j in detail.get("jobs", [])})}
        if then is not None:
            changed = now.outcome() != then.outcome()
        else:
            rules, forwards, error = now.outcome()
            changed = (rules, forwards, error) != (recorded["rules"], recorded["forwards"], "")
        return {"subject": row["subject"], "kind": row["kind"], "received_at": row["at"],
                "sop_uid": row["sop_uid"], "msh10": row["msh10"], "recorded": recorded,
                "current": now.as_json(), "edited": then.as_json() if then else None, "changed": changed}  # fmt: skip

    def _bytes(self, row: dict[str, Any]) -> bytes | None:
        if row["kind"] == "hl7":
            return row["message"].encode("utf-8") if row["message"] else None
        with self.services.engine.connect() as conn:
            path = conn.execute(select(INSTANCE.c.path).where(INSTANCE.c.sop_uid == row["sop_uid"])).scalar()
        if path is None:
            return None
        try:
            return storage.of(self.services.config).read_bytes(path)
        except OSError:
            return None


def make_endpoints(services: ApiServices) -> list[Endpoint]:
    runs = DryRuns(services)
    problems = {422: "the object cannot be read, or the edited rules have problems (file:line: message)"}
    return [
        Endpoint("POST", "/api/rules/test", "Dry-run the rules in force (and edited ones) on an uploaded object",
                 runs.test, body=TEST_BODY, responses=problems, max_body=64 << 20, tag="rules"),
        Endpoint("POST", "/api/rules/replay", "Dry-run the rules on the last objects and messages received: what "
                 "would change", runs.replay, body=REPLAY_BODY, responses=problems, tag="rules"),
    ]  # fmt: skip
