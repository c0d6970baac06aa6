"""What an import did with each file: its outcome, the summary, the ``--report`` JSON, and the progress line.

Outcomes: ``imported`` (stored by the router's intake, or sent with ``--to``), ``duplicate`` (already stored, the
same or as the duplicates policy says), ``refused`` (with the reason: character set, intake, peer status),
``damaged`` (named by the DICOMDIR but missing, unreadable, or not a whole DICOM object), ``unreferenced`` (on the
medium beside a DICOMDIR that does not name it: not part of the file-set, not imported), ``not-dicom`` (a file of a
medium without DICOMDIR that is no DICOM Part 10 file: a viewer, a README), ``not-selected`` (outside
``--patient-id``/``--study``/``--series``/``--modality``) and, with ``--dry-run``, ``would-import``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

IMPORTED, DUPLICATE, REFUSED, DAMAGED = "imported", "duplicate", "refused", "damaged"
UNREFERENCED, NOT_DICOM, NOT_SELECTED, WOULD_IMPORT = "unreferenced", "not-dicom", "not-selected", "would-import"
FAILED = (REFUSED, DAMAGED)  # outcomes that make the exit code non-zero


@dataclass
class FileOutcome:
    file: str  # the file's path on the medium (relative to its root)
    outcome: str
    reason: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    size: int = 0
    corrected: str = ""  # what a character set correction did
    rules: list[str] = field(default_factory=list)  # --dry-run: the rules that match
    destinations: list[str] = field(default_factory=list)  # --dry-run: the peers it would be forwarded to


@dataclass
class ImportReport:
    media: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # damage of a DICOMDIR itself
    files: list[FileOutcome] = field(default_factory=list)
    dry_run: bool = False
    destination: str = ""  # --to PEER, "" for the router's intake
    studies: list[dict[str, Any]] = field(default_factory=list)  # --reconcile: each study's match and changes
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def add(self, outcome: FileOutcome) -> FileOutcome:
        self.files.append(outcome)
        return outcome

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.outcome for f in self.files))

    @property
    def failed(self) -> bool:
        return any(f.outcome in FAILED for f in self.files)

    def finish(self) -> None:
        self.seconds = time.monotonic() - self.started

    def summary(self) -> str:
        counts = self.counts()
        order = (IMPORTED, WOULD_IMPORT, DUPLICATE, REFUSED, DAMAGED, UNREFERENCED, NOT_DICOM, NOT_SELECTED)
        parts = [f"{counts[o]} {o}" for o in order if counts.get(o)]
        size = sum(f.size for f in self.files if f.outcome in (IMPORTED, WOULD_IMPORT))
        where = f" to {self.destination}" if self.destination else ""
        rate = len([f for f in self.files if f.outcome == IMPORTED]) / self.seconds if self.seconds > 0 else 0.0
        head = "dry run: " if self.dry_run else ""
        return f"{head}{', '.join(parts) or 'nothing found'}{where}; {_mb(size)} in {self.seconds:.1f} s" + (
            f" ({rate:.0f} objects/s)" if rate else ""
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "media": self.media,
            "dry_run": self.dry_run,
            "destination": self.destination,
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "problems": self.problems,
            "files": [asdict(f) for f in self.files],
            **({"studies": self.studies} if self.studies else {}),
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), indent=1) + "\n", encoding="utf-8")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


class Progress:
    """Objects and bytes done: a redrawn line on a terminal (at most 5 times a second), else a line per 10 %."""

    def __init__(self, what: str, total: int, total_bytes: int, stream: IO[str] | None = None, enabled: bool = True):
        self.what, self.total, self.total_bytes = what, total, total_bytes
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = self.stream.isatty()
        self.done = self.bytes = self.failed = 0
        self._drawn = 0.0
        self._decile = -1

    def step(self, size: int, failed: bool = False) -> None:
        self.done += 1
        self.bytes += size
        self.failed += failed
        if not self.enabled:
            return
        line = f"{self.what}: {self.done}/{self.total} objects, {_mb(self.bytes)} of {_mb(self.total_bytes)}" + (
            f", {self.failed} failed" if self.failed else ""
        )
        if self.tty:
            now = time.monotonic()
            if now - self._drawn < 0.2 and self.done < self.total:
                return
            self._drawn = now
            filled = 30 * self.done // self.total
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {line}  ")
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            decile = 10 * self.done // self.total
            if decile == self._decile:
                return
            self._decile = decile
            self.stream.write(line + "\n")
        self.stream.flush()
