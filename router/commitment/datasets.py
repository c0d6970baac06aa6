"""The datasets of a commitment: N-ACTION Action Information and N-EVENT-REPORT Event Information (PS3.4 J.3).

Pure functions: building, reading and checking them, and encoding a report for the outbox (a Part 10 file, so a
report that could not be delivered at once survives a restart byte for byte).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from router.commitment import EVENT_ALL_COMMITTED, EVENT_FAILURES, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
from router.store.datasets import to_part10


class BadRequest(ValueError):
    """The Action or Event Information is not a usable commitment dataset."""


@dataclass(frozen=True)
class Ref:
    sop_class_uid: str
    sop_uid: str


@dataclass
class Report:
    """What a peer committed and what it did not (with the Failure Reason), by SOP Instance UID."""

    transaction_uid: str
    committed: dict[str, Ref] = field(default_factory=dict)
    failed: dict[str, tuple[Ref, int]] = field(default_factory=dict)


def _uid(value: object) -> str:
    return str(value or "").rstrip("\x00 ").strip()


def _refs(ds: Dataset, keyword: str) -> list[tuple[Ref, Dataset]]:
    out = []
    for number, item in enumerate(ds.get(keyword) or [], start=1):
        ref = Ref(_uid(item.get("ReferencedSOPClassUID")), _uid(item.get("ReferencedSOPInstanceUID")))
        if not ref.sop_class_uid or not ref.sop_uid:
            raise BadRequest(f"{keyword} item {number} lacks Referenced SOP Class or Instance UID")
        out.append((ref, item))
    return out


def _transaction_uid(ds: Dataset) -> str:
    uid = _uid(ds.get("TransactionUID"))
    if not uid:
        raise BadRequest("Transaction UID (0008,1195) is missing or empty")
    if not UID(uid).is_valid:
        raise BadRequest(f"Transaction UID {uid!r} is not a valid UID")
    return uid


def action_information(transaction_uid: str, refs: list[Ref]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = Sequence([_item(ref) for ref in refs])
    return ds


def read_action(ds: Dataset) -> tuple[str, list[Ref]]:
    """Transaction UID and the instances asked for; raises BadRequest."""
    uid = _transaction_uid(ds)
    refs = [ref for ref, _ in _refs(ds, "ReferencedSOPSequence")]
    if not refs:
        raise BadRequest("Referenced SOP Sequence (0008,1199) is missing or empty")
    return uid, refs


def _item(ref: Ref, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_uid
    if reason is not None:
        item.FailureReason = reason
    return item


def event_information(
    transaction_uid: str, outcomes: list[tuple[Ref, int | None]], retrieve_ae: str
) -> tuple[int, Dataset]:
    """The report for ``outcomes`` (a Failure Reason, or None for committed), in the order asked: event type 1
    with every instance in Referenced SOP Sequence, or 2 with the failures in Failed SOP Sequence."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    committed = [_item(ref) for ref, reason in outcomes if reason is None]
    failed = [_item(ref, reason) for ref, reason in outcomes if reason is not None]
    if committed:
        ds.RetrieveAETitle = retrieve_ae
        ds.ReferencedSOPSequence = Sequence(committed)
    if failed:
        ds.FailedSOPSequence = Sequence(failed)
    return (EVENT_FAILURES if failed else EVENT_ALL_COMMITTED), ds


def read_report(ds: Dataset) -> Report:
    """Raises BadRequest."""
    report = Report(_transaction_uid(ds))
    for ref, _item_ds in _refs(ds, "ReferencedSOPSequence"):
        report.committed[ref.sop_uid] = ref
    for ref, item in _refs(ds, "FailedSOPSequence"):
        reason = item.get("FailureReason")
        report.failed[ref.sop_uid] = (ref, int(reason) if reason is not None and reason != "" else 0x0110)
    return report


def report_uids(ds: Dataset) -> tuple[list[str], list[str]]:
    """The SOP Instance UIDs an Event Information reports committed, and those it reports failed."""
    committed = [str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", [])]
    return committed, [str(i.ReferencedSOPInstanceUID) for i in ds.get("FailedSOPSequence", [])]


def event_type_of(ds: Dataset) -> int:
    return EVENT_FAILURES if ds.get("FailedSOPSequence") else EVENT_ALL_COMMITTED


def to_bytes(ds: Dataset) -> bytes:
    """A report as a Part 10 file, for the outbox."""
    return to_part10(ds, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
