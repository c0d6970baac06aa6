"""The ``coerce`` stage: change attributes of what is forwarded (the stored original is kept as received).

    - coerce:
        set: {InstitutionName: General Hospital, "(0008,1010)": STATION1}
        remove: [PatientComments]
        copy: {AccessionNumber: StudyID}      # source -> destination

Operations run in the order written. Keys are DICOM keywords or tags of the public dictionary; a value
is text, a number or a list (multi-valued). ``set`` with an empty value sets a zero-length attribute.
Later stages of the same rule (``forward``) see the changed object.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from router.config import RouterConfig
from router.envelope import Envelope
from router.hookspecs import hookimpl
from router.rules.loader import parse_tag
from router.stage import Stage, StageContext

OPS = ("set", "remove", "copy")
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
        changes = apply(env.dataset, args)
        if changes:
            env.mark_modified("coerce: " + ", ".join(changes))
        return ("coerce: " + ", ".join(changes)) if changes else "coerce: nothing to change"


@hookimpl
def router_stages() -> list[Stage]:
    return [CoerceStage()]
