"""The ``coerce`` stage: change attributes of what is forwarded (the stored original is kept as received).

    - coerce:
        set: {InstitutionName: General Hospital, "(0008,1010)": STATION1}
        remove: [PatientComments]
        copy: {AccessionNumber: StudyID}      # source -> destination

Operations run in the order written. Keys are DICOM keywords or tags of the public dictionary; a value
is text, a number or a list (multi-valued). ``set`` with an empty value sets a zero-length attribute.
Later stages of the same rule (``forward``) see the changed object.

    - coerce: {demographics: true}

makes the object agree with the hospital system: when its Accession Number (or Study Instance UID) is a known
HL7 order, or its Patient ID a known HL7 patient, the patient and order attributes take the HL7 values and the
replaced ones are kept in Original Attributes Sequence. Unlike the other operations this one also changes the
**stored** object (the index and query services then show what the hospital system knows).
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from router.config import RouterConfig
from router.hl7.demographics import apply_demographics, known_demographics
from router.hooks.specs import hookimpl
from router.intake.envelope import Envelope
from router.intake.stage import Stage, StageContext, StageError
from router.rules.loader import parse_tag

OPS = ("set", "remove", "copy", "demographics")
NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}


def _tag(key: Any) -> int | None:
    parsed = parse_tag(str(key))
    if parsed is None:
        return None
    try:
        dictionary_VR(parsed[0])
    except KeyError:
        return None
    return parsed[0]


def _problems(args: Any) -> list[str]:
    if not isinstance(args, dict) or not args:
        return ["expects a mapping with set, remove and/or copy"]
    problems = [f"unknown operation {op!r} (expected {', '.join(OPS)})" for op in args if op not in OPS]
    for op, value in args.items():
        if op == "demographics":
            if not isinstance(value, bool):
                problems.append("demographics: expects true or false")
            continue
        if op == "remove":
            keys = value if isinstance(value, list) else [value]
            problems += [f"remove: unknown DICOM keyword or tag {k!r}" for k in keys if _tag(k) is None]
        elif op in ("set", "copy"):
            if not isinstance(value, dict):
                problems.append(f"{op}: expects a mapping")
                continue
            keys = list(value) + (list(value.values()) if op == "copy" else [])
            problems += [f"{op}: unknown DICOM keyword or tag {k!r}" for k in keys if _tag(k) is None]
            if op == "set":
                problems += [
                    f"set: {k}: a value must be text, a number or a list of them"
                    for k, v in value.items()
                    if isinstance(v, dict)
                ]
    return problems


def _set(ds: Dataset, tag: int, value: Any) -> None:
    vr = dictionary_VR(tag)
    if value is None or value == "":
        ds.add_new(tag, vr, None)
        return
    numeric = vr in NUMERIC_VRS
    if isinstance(value, list | MultiValue):
        ds.add_new(tag, vr, [v if numeric else str(v) for v in value])
        return
    ds.add_new(tag, vr, value if numeric else str(value))


def apply(ds: Dataset, args: dict[str, Any]) -> list[str]:
    """Apply the operations to ``ds``; return a description of each change."""
    changes: list[str] = []
    for op, value in args.items():
        if op == "set":
            for key, new in value.items():
                _set(ds, _tag(key) or 0, new)
                changes.append(f"set {key}")
        elif op == "remove":
            for key in value if isinstance(value, list) else [value]:
                tag = _tag(key) or 0
                if tag in ds:
                    del ds[tag]
                    changes.append(f"removed {key}")
        elif op == "copy":
            for src, dst in value.items():
                elem = ds.get(_tag(src) or 0)
                if elem is not None:
                    _set(ds, _tag(dst) or 0, elem.value)
                    changes.append(f"copied {src} to {dst}")
    return changes


class CoerceStage:
    name = "coerce"

    def check(self, args: Any, config: RouterConfig) -> list[str]:
        return _problems(args)

    def run(self, env: Envelope, args: Any, ctx: StageContext) -> str:
        if env.kind != "dicom":
            raise StageError("coerce works on DICOM objects only")
        changes: list[str] = []
        if args.get("demographics") is True:
            changes += _demographics(env, ctx)
        changes += apply(env.dataset, {op: v for op, v in args.items() if op != "demographics"})
        if changes:
            env.mark_modified("coerce: " + ", ".join(changes))
        if args.get("demographics") is True and not ctx.dry_run:
            env.keep_as_stored()
        return ("coerce: " + ", ".join(changes)) if changes else "coerce: nothing to change"


def _demographics(env: Envelope, ctx: StageContext) -> list[str]:
    if ctx.engine is None:
        return ["demographics: no index to look in"] if ctx.dry_run else []
    with ctx.engine.connect() as conn:
        known = known_demographics(conn, env.header)
    if known is None:
        return []
    changed = apply_demographics(env.dataset, known)
    return [f"demographics from {known.matched_by} ({', '.join(changed)})"] if changed else []


@hookimpl
def router_stages() -> list[Stage]:
    return [CoerceStage()]
