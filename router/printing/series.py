"""A series printed on one film session: the ``print-series`` jobs of one batch, grouped and put in series order.

The outbox hands the printer destination each group whole (``router.outbox.groups``); here the jobs are grouped by
the Series Instance UID of what each prints (its payload: the stored object, or a stage's version of it) and the
images laid out in series order: Instance Number, then SOP Instance UID (an object without an Instance Number, or
with one that is not a number, after those with one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from router import storage
from router.store.models import Job

_HEADER = ["SeriesInstanceUID", "InstanceNumber", "SOPInstanceUID"]
_NO_NUMBER = 2**63  # after every Instance Number


@dataclass(frozen=True)
class Member:
    """One job of a series group: its payload and where it goes in the series."""

    job: Job
    path: Path
    series_uid: str
    order: tuple[int, str]


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def order_key(instance_number: str, sop_uid: str) -> tuple[int, str]:
    """Series order: Instance Number (an IS; absent or unreadable: last), then SOP Instance UID."""
    try:
        number = int(float(instance_number))
    except ValueError:
        number = _NO_NUMBER
    return number, sop_uid


def member(data_dir: Path, job: Job) -> Member:
    """Read the header of ``job``'s payload; raises OSError or InvalidDicomError when it cannot be read."""
    path = storage.at(data_dir).local_path(job.path)
    ds = dcmread(path, stop_before_pixels=True, specific_tags=_HEADER)
    sop_uid = _text(ds, "SOPInstanceUID") or job.sop_uid
    return Member(job, path, _text(ds, "SeriesInstanceUID"), order_key(_text(ds, "InstanceNumber"), sop_uid))


def gather(data_dir: Path, jobs: Sequence[Job]) -> tuple[list[list[Member]], list[tuple[Job, str]]]:
    """The groups of ``jobs`` (each in series order; the groups in the order of their first job) and the jobs
    whose payload cannot be read, with the reason."""
    groups: dict[str, list[Member]] = {}
    unreadable: list[tuple[Job, str]] = []
    for job in jobs:
        try:
            one = member(data_dir, job)
        except FileNotFoundError:
            unreadable.append((job, f"the print job's file {job.path} is missing"))
            continue
        except (OSError, InvalidDicomError, ValueError) as exc:
            unreadable.append((job, f"the print job's file {job.path} cannot be read: {exc}"))
            continue
        groups.setdefault(one.series_uid, []).append(one)
    return [sorted(group, key=lambda m: m.order) for group in groups.values()], unreadable


def objects(group: Sequence[Member]) -> Iterator[Dataset]:
    """The group's objects in series order, one at a time (a series is not held in memory at once)."""
    for one in group:
        yield dcmread(one.path)
