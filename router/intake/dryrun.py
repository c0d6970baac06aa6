"""Dry runs: what the rules would do with an object or message, without storing, changing or sending anything.

One code path for ``router rules test`` and the admin API (``POST /api/rules/test``, ``/api/rules/replay``):
``read_object`` makes the envelope of a DICOM Part 10 file or an HL7 v2 message, ``dry_run`` runs the matching
rules' stages over it in dry-run mode (``router.intake.pipeline``), and ``load_with_edits`` reads the rules as they
would be with some files replaced (edited in the console, not yet saved), reporting problems as ``file:line:
message`` like ``router rules check``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.config import RouterConfig
from router.hl7.errors import Hl7Error
from router.hl7.message import parse_message
from router.intake.envelope import Envelope, Source
from router.intake.pipeline import PipelineResult, run_pipeline
from router.intake.stage import Stage, StageError
from router.rules.loader import LoadResult, load_rules, rule_files

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.ya?ml$")
_PROBLEM = re.compile(r"^(?P<file>[^:]*):(?P<line>\d+): (?P<message>.*)$", re.S)


class NotReadable(ValueError):
    """Neither a DICOM Part 10 file nor an HL7 message that can be read."""


def is_hl7(raw: bytes) -> bool:
    return raw.lstrip(b"\x0b\r\n \t").startswith(b"MSH")


def read_object(raw: bytes, config: RouterConfig, calling_ae: str = "", called_ae: str = "") -> Envelope:
    """The envelope of ``raw``: an HL7 message (it starts with MSH; MLLP framing is taken off) or a DICOM file."""
    if is_hl7(raw):
        text = raw.strip(b"\x0b\x1c\r\n \t") + b"\r"
        try:
            msg = parse_message(text, accepted_processing_ids=("P", "T", "D"))
        except Hl7Error as exc:
            raise NotReadable(f"not a readable HL7 message: {exc}") from None
        source = Source("mllp", calling_ae or msg.sending_application, called_ae or msg.receiving_application)
        return Envelope.from_hl7(text, msg, source)
    try:
        return Envelope.from_p10(raw, Source("file", calling_ae=calling_ae, called_ae=called_ae))
    except Exception as exc:
        raise NotReadable(f"not a readable DICOM file: {exc}") from None


@dataclass
class DryRun:
    """What the rules would do: the matching rules, each stage's text, the peers forwarded to; or the stage error."""

    result: PipelineResult = field(default_factory=PipelineResult)
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "rules": [{"name": r.name, "where": r.where, "stop": r.stop} for r in self.result.rules],
            "steps": [{"rule": s.rule, "stage": s.stage, "where": s.where, "text": s.text} for s in self.result.steps],
            "forwards": sorted({f.peer for f in self.result.forwards}),
            "error": self.error,
        }

    def outcome(self) -> tuple[list[str], list[str], str]:
        """Rules matched, peers forwarded to, error: what ``replay`` compares."""
        found = self.as_json()
        return [r["name"] for r in found["rules"]], found["forwards"], self.error


def dry_run(env: Envelope, result: LoadResult, stages: Mapping[str, Stage], config: RouterConfig) -> DryRun:
    try:
        return DryRun(run_pipeline(env, result.ruleset, stages, config, dry_run=True))
    except StageError as exc:
        return DryRun(error=str(exc))


def describe(env: Envelope) -> dict[str, Any]:
    """What the object is, for the answer (no patient data)."""
    if env.kind == "hl7":
        msg = env.message
        return {"kind": "hl7", "message_type": msg.message_type, "control_id": msg.control_id,
                "sending_application": msg.sending_application}  # fmt: skip
    return {"kind": env.kind, "sop_instance_uid": env.sop_instance_uid, "sop_class_uid": env.sop_class_uid,
            "calling_ae": env.source.calling_ae}  # fmt: skip


def load_with_edits(
    rules_dir: Path, edits: Mapping[str, str], stages: Mapping[str, Stage], config: RouterConfig
) -> LoadResult:
    """The rules of ``rules_dir`` with the files named in ``edits`` replaced by their text (added when new), read
    from a copy; problems name the files alone (``10-ct.yaml:3: message``)."""
    bad = [name for name in edits if not FILE_NAME.match(name)]
    if bad:
        raise ValueError(f"{bad[0]!r}: a rule file name is letters, digits, . _ - and ends in .yaml or .yml")
    with tempfile.TemporaryDirectory(prefix="rules-") as tmp:
        folder = Path(tmp)
        for path in rule_files(rules_dir):
            shutil.copyfile(path, folder / path.name)
        for name, text in edits.items():
            (folder / name).write_text(text, encoding="utf-8")
        result = load_rules(folder, stages, config)
    prefix = f"{folder}/"
    result.problems = [p.replace(prefix, "") for p in result.problems]
    return result


def problem_json(problem: str) -> dict[str, Any]:
    """``file:line: message`` as data (a problem that names no line keeps the whole text as its message)."""
    found = _PROBLEM.match(problem)
    if found is None:
        return {"file": "", "line": None, "message": problem, "text": problem}
    return {"file": found["file"], "line": int(found["line"]), "message": found["message"], "text": problem}
