"""Reading a DICOMDIR (PS3.10 Basic Directory, PS3.3 F.3): which files the file-set holds, and what is damaged.

The directory records are read with pydicom's ``dcmread`` (explicit or implicit VR, little or big endian: a
DICOMDIR in the wrong syntax is read all the same). pydicom's ``FileSet`` is not used to load media: it drops
every record whose file it cannot find with the exact case of the file ID, and refuses a DICOMDIR whose records
have an unknown type; media mounted on Linux changes case, and damaged media is the point here.

The record hierarchy is followed through its offsets. An offset that points a few bytes off a record (seen on
media written by some burners) is taken to the nearest record within ``OFFSET_SLACK`` bytes and reported; records
that no offset reaches are reported as orphans and their files kept. A DICOMDIR whose records cannot be followed
at all is read record by record, in order. Files the DICOMDIR does not reference are not part of the file-set.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset

FIRST = "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity"
NEXT = "OffsetOfTheNextDirectoryRecord"
LOWER = "OffsetOfReferencedLowerLevelDirectoryEntity"
OFFSET_SLACK = 16  # bytes: how far off an offset may point and still be taken to the record nearest to it


@dataclass(frozen=True)
class FileRef:
    """A file the DICOMDIR references: its file ID as a relative path, and the record's type."""

    file_id: str
    record_type: str


@dataclass
class DicomDir:
    files: list[FileRef] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # damage found in the DICOMDIR itself
    file_set_id: str = ""


class NotADicomDir(ValueError):
    """The file cannot be read as a DICOMDIR at all."""


def read_dicomdir(raw: bytes) -> DicomDir:
    """The files a DICOMDIR references, in record order, and the damage met on the way."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about a DICOMDIR in another syntax: reported below
            ds = dcmread(BytesIO(raw), force=True)
            records = list(ds.get("DirectoryRecordSequence", None) or [])
    except Exception as exc:
        raise NotADicomDir(f"cannot read the DICOMDIR: {exc}") from None
    found = DicomDir(file_set_id=str(ds.get("FileSetID", "") or ""))
    syntax = str(getattr(getattr(ds, "file_meta", None), "get", lambda *_: "")("TransferSyntaxUID", "") or "")
    if syntax and syntax != "1.2.840.10008.1.2.1":
        found.problems.append(f"the DICOMDIR is in transfer syntax {syntax}, not Explicit VR Little Endian")
    if "DirectoryRecordSequence" not in ds:
        raise NotADicomDir("no Directory Record Sequence: not a DICOMDIR")
    if not records:  # an empty file-set
        return found
    by_offset: dict[int, Dataset] = {}
    for record in records:
        offset = getattr(record, "seq_item_tell", None)
        if offset is not None:
            by_offset[int(offset)] = record
    reached = _follow(ds, by_offset, found.problems)
    order = {id(r): i for i, r in enumerate(records)}
    if reached is None:
        found.problems.append("the directory records cannot be followed through their offsets: read one by one")
        reached_ids: set[int] = set()
        chosen = records
    else:
        reached_ids = {id(r) for r in reached}
        chosen = sorted(reached, key=lambda r: order[id(r)])
        orphans = [r for r in records if id(r) not in reached_ids and "ReferencedFileID" in r]
        if orphans:
            found.problems.append(f"{len(orphans)} record(s) no offset reaches (orphans): their files are kept")
            chosen = sorted([*chosen, *orphans], key=lambda r: order[id(r)])
    for record in chosen:
        file_id = _file_id(record)
        if file_id:
            found.files.append(FileRef(file_id, str(record.get("DirectoryRecordType", "") or "")))
    return found


def _file_id(record: Dataset) -> str:
    value = record.get("ReferencedFileID", None)
    if value is None or value == "":
        return ""
    parts = [value] if isinstance(value, str) else list(value)
    return "/".join(str(p).strip() for p in parts if str(p).strip())


def _follow(ds: Dataset, by_offset: dict[int, Dataset], problems: list[str]) -> list[Dataset] | None:
    """Every record reached from the root through the offsets (depth first); None when the root cannot be found."""
    offsets = sorted(by_offset)
    off: list[int] = []

    def at(offset: int) -> Dataset | None:
        if offset in by_offset:
            return by_offset[offset]
        near = min(offsets, key=lambda o: abs(o - offset), default=None)
        if near is None or abs(near - offset) > OFFSET_SLACK:
            return None
        off.append(offset - near)
        return by_offset[near]

    first = ds.get(FIRST, None)
    if first is None or not offsets:
        return None
    reached: list[Dataset] = []
    seen: set[int] = set()
    pending = [int(first)]
    while pending:
        offset = pending.pop()
        record = at(offset) if offset else None
        while record is not None and id(record) not in seen:
            seen.add(id(record))
            reached.append(record)
            lower = int(record.get(LOWER, 0) or 0)
            if lower:
                pending.append(lower)
            nxt = int(record.get(NEXT, 0) or 0)
            record = at(nxt) if nxt else None
        if offset and record is None and not reached:
            return None
    if off:
        shifts = ", ".join(f"{d:+d}" for d in sorted(set(off)))
        problems.append(f"{len(off)} offset(s) point a few bytes off a record ({shifts} bytes): taken to the record")
    return reached
