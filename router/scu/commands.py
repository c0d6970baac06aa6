"""SCU side of the DICOM services, for the ``router echo|find|move|get|send`` commands.

Every call opens one association to a configured peer with the router's AE title and its configured timeouts
(``make_requestor``), TCP_NODELAY on. C-FIND proposes relational queries and combined date-time matching (SOP Class
Extended Negotiation); a peer that does not agree answers hierarchical queries as usual. C-GET proposes the
storage SOP classes pynetdicom lists as common, uncompressed, in the SCP role, and writes what it receives as Part
10 files. ``send`` reuses the forward queue's ``StoreAssociation``: files go as stored, byte-identical.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pynetdicom import StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.presentation import build_context

from router.config import DicomPeer, RouterConfig
from router.query.model import FIND, GET, MOVE, InfoModel, sop_class_for
from router.scu.association import (
    MAX_CONTEXTS,
    AssociationFailed,
    Item,
    NoContext,
    StoreAssociation,
    context_count,
    make_requestor,
    open_association,
)
from router.statuses import SUCCESS

VERIFICATION = "1.2.840.10008.1.1"


class BadKey(ValueError):
    """A ``-k`` key that names no DICOM attribute."""


# -- identifiers ------------------------------------------------------------------------------------------------------
def _tag(name: str) -> int:
    text = name.strip()
    if "," in text:
        group, elem = text.split(",", 1)
        try:
            return int(Tag(int(group, 16), int(elem, 16)))
        except ValueError:
            raise BadKey(f"not a tag: {name!r}") from None
    tag = tag_for_keyword(text)
    if tag is None:
        raise BadKey(f"not a DICOM keyword: {name!r}")
    return int(tag)


def _set(ds: Dataset, tag: int, value: str) -> None:
    vr = dictionary_VR(tag)
    if vr == "SQ":  # a return key: every item with every attribute
        ds.add_new(tag, vr, Sequence([]))
        return
    ds.add_new(tag, vr, value.split("\\") if "\\" in value else (value or None))


def build_identifier(level: str, keys: Iterable[str], defaults: Iterable[str] = ()) -> Dataset:
    """``QueryRetrieveLevel`` plus each key: ``Keyword=value``, ``Keyword`` (a return key), ``gggg,eeee=value``,
    or ``Sequence.Keyword=value`` (one item deep). Keys given later replace earlier ones and the defaults."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key in [*defaults, *keys]:
        name, _, value = key.partition("=")
        if "." in name:
            seq_name, _, item_name = name.partition(".")
            seq_tag, item_tag = _tag(seq_name), _tag(item_name)
            if dictionary_VR(seq_tag) != "SQ":
                raise BadKey(f"{seq_name} is not a sequence")
            if seq_tag not in ds or not ds[seq_tag].value:
                ds.add_new(seq_tag, "SQ", Sequence([Dataset()]))
            _set(ds[seq_tag].value[0], item_tag, value)
        else:
            _set(ds, _tag(name), value)
    return ds


DEFAULT_KEYS = {
    "PATIENT": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies"],
    "STUDY": [
        "PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription",
        "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyInstanceUID",
    ],
    "SERIES": ["Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances", "SeriesInstanceUID"],
    "IMAGE": ["InstanceNumber", "SOPClassUID", "SOPInstanceUID"],
}  # fmt: skip


# -- progress -------------------------------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on stderr (redrawn at most 5 times a second); on a file or pipe, a line per 10 %."""

    def __init__(self, what: str, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, done: int, total: int, detail: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw < 0.2 and done < total:
                return
            self._last_draw = now
            filled = int(30 * done / total)
            bar = "#" * filled + "." * (30 - filled)
            self.stream.write(f"\r{self.what} [{bar}] {done}/{total} {detail}  ")
            if done >= total:
                self.stream.write("\n")
        else:
            decile = 10 * done // total
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(f"{self.what}: {done}/{total} {detail}\n")
        self.stream.flush()


# -- associations ---------------------------------------------------------------------------------------------------
def peer_named(config: RouterConfig, name: str) -> DicomPeer:
    """A DICOM peer by its name in ``peers:``, or else by its AE title."""
    if name in config.peers:
        named = config.peers[name]
        if not isinstance(named, DicomPeer):
            raise AssociationFailed(f"peer {name!r} is a {named.type} peer, not a DICOM one")
        return named
    for peer in config.peers.values():
        if isinstance(peer, DicomPeer) and peer.ae_title == name:
            return peer
    known = ", ".join(sorted(config.peers)) or "none configured"
    raise AssociationFailed(f"unknown peer {name!r} (peers: {known})")


@contextlib.contextmanager
def associate(
    config: RouterConfig, peer: DicomPeer, contexts: list[Any], ext_neg: list[Any] | None = None, handlers: Any = ()
) -> Iterator[Association]:
    assoc = open_association(make_requestor(config), peer, contexts, ext_neg, handlers)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _status(rsp: Dataset | None) -> int:
    if rsp is None or "Status" not in rsp:
        raise AssociationFailed("no valid response (timeout, abort or invalid response)")
    return int(rsp.Status)


def echo(config: RouterConfig, peer: DicomPeer) -> int:
    with associate(config, peer, [build_context(VERIFICATION)]) as assoc:
        return _status(assoc.send_c_echo())


# -- C-FIND ---------------------------------------------------------------------------------------------------------
@dataclass
class FindOutcome:
    status: int = SUCCESS
    matches: int = 0


def find(
    config: RouterConfig, peer: DicomPeer, model: InfoModel, identifier: Dataset, outcome: FindOutcome
) -> Iterator[Dataset]:
    """The matches, as they arrive; ``outcome`` holds the final status once the iterator is exhausted."""
    uid = sop_class_for(model, FIND)
    neg = SOPClassExtendedNegotiation()
    neg.sop_class_uid = uid
    neg.service_class_application_information = b"\x01\x01"  # relational queries, combined date-time matching
    with associate(config, peer, [build_context(uid)], [neg]) as assoc:
        for status, match in assoc.send_c_find(identifier, uid):
            code = _status(status)
            if code in (0xFF00, 0xFF01):
                if match is not None:
                    outcome.matches += 1
                    yield match
                continue
            outcome.status = code
            return


def keyword_of(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def display(ds: Dataset, tag: int) -> str:
    if tag not in ds:
        return ""
    elem = ds[tag]
    if elem.VR == "SQ":
        return f"{len(elem.value or [])} item(s)"
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def table(rows: list[Dataset], tags: list[int]) -> str:
    """A plain text table, one column per key."""
    header = [keyword_of(t) for t in tags]
    cells = [[display(ds, t) for t in tags] for ds in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


# -- C-MOVE and C-GET -----------------------------------------------------------------------------------------------
@dataclass
class RetrieveOutcome:
    status: int = SUCCESS
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    received: list[Path] = field(default_factory=list)


def _track(
    responses: Iterable[tuple[Dataset, Dataset | None]], outcome: RetrieveOutcome, progress: Progress
) -> RetrieveOutcome:
    for status, identifier in responses:
        code = _status(status)
        outcome.status = code
        outcome.completed = int(status.get("NumberOfCompletedSuboperations", outcome.completed) or 0)
        outcome.failed = int(status.get("NumberOfFailedSuboperations", outcome.failed) or 0)
        outcome.warning = int(status.get("NumberOfWarningSuboperations", outcome.warning) or 0)
        remaining = int(status.get("NumberOfRemainingSuboperations", 0) or 0)
        done = outcome.completed + outcome.failed + outcome.warning
        progress.update(done, done + remaining, f"({outcome.failed} failed)" if outcome.failed else "")
        if code not in (0xFF00, 0xFF01) and identifier is not None and "FailedSOPInstanceUIDList" in identifier:
            value = identifier.FailedSOPInstanceUIDList
            outcome.failed_uids = [str(v) for v in (value if isinstance(value, list | tuple) else [value]) if v]
    return outcome


def move(
    config: RouterConfig, peer: DicomPeer, destination: str, model: InfoModel, identifier: Dataset, progress: Progress
) -> RetrieveOutcome:
    uid = sop_class_for(model, MOVE)
    with associate(config, peer, [build_context(uid)]) as assoc:
        return _track(assoc.send_c_move(identifier, destination, uid), RetrieveOutcome(), progress)


def get(
    config: RouterConfig, peer: DicomPeer, model: InfoModel, identifier: Dataset, out_dir: Path, progress: Progress
) -> RetrieveOutcome:
    """C-GET; what arrives is written to ``out_dir/<SOP Instance UID>.dcm`` as received."""
    uid = sop_class_for(model, GET)
    storage = [str(cx.abstract_syntax) for cx in StoragePresentationContexts][: MAX_CONTEXTS - 1]
    contexts = [build_context(uid), *(build_context(s) for s in storage)]
    roles = [build_role(s, scp_role=True) for s in storage]
    outcome = RetrieveOutcome()
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_store(event: evt.Event) -> int:
        try:
            name = "".join(
                c for c in str(getattr(event.request, "AffectedSOPInstanceUID", "")) if c.isdigit() or c == "."
            )
            target = out_dir / f"{name or 'unnamed'}.dcm"
            tmp = target.with_suffix(".part")
            tmp.write_bytes(event.encoded_dataset(include_meta=True))
            os.replace(tmp, target)
            outcome.received.append(target)
            return SUCCESS
        except OSError:
            return 0xA700

    with associate(config, peer, contexts, roles, [(evt.EVT_C_STORE, on_store)]) as assoc:
        return _track(assoc.send_c_get(identifier, uid), outcome, progress)


# -- C-STORE --------------------------------------------------------------------------------------------------------
def dicom_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named, and the files under folders named (recursively, sorted)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def item_of(path: Path) -> Item:
    meta = read_file_meta_info(path)
    return Item(path, str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))


@dataclass
class SendOutcome:
    sent: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def send(
    config: RouterConfig,
    peer: DicomPeer,
    paths: list[Path],
    progress: Progress,
    report: Callable[[Path, str], None] = lambda p, m: None,
) -> SendOutcome:
    """C-STORE files as they are, over as few associations as their presentation contexts allow."""
    outcome = SendOutcome()
    items: list[Item] = []
    for path in paths:
        try:
            items.append(item_of(path))
        except Exception as exc:
            outcome.failed.append((path, f"not a DICOM Part 10 file: {exc}"))
            report(path, outcome.failed[-1][1])
    batches: list[list[Item]] = []
    for item in items:
        if batches and context_count([*batches[-1], item]) <= MAX_CONTEXTS:
            batches[-1].append(item)
        else:
            batches.append([item])
    ae = make_requestor(config)
    done, total, msg_id = 0, len(items), 0
    for batch in batches:
        with StoreAssociation(ae, peer, batch) as assoc:
            for item in batch:
                msg_id = msg_id % 65535 + 1
                try:
                    status = assoc.send(item, msg_id)
                    if status == SUCCESS or status == 0x0001 or 0xB000 <= status <= 0xBFFF:
                        outcome.sent += 1
                    else:
                        outcome.failed.append((item.path, f"status 0x{status:04X}"))
                except (NoContext, AssociationFailed) as exc:
                    outcome.failed.append((item.path, str(exc)))
                if outcome.failed and outcome.failed[-1][0] == item.path:
                    report(item.path, outcome.failed[-1][1])
                done += 1
                progress.update(done, total, f"({len(outcome.failed)} failed)" if outcome.failed else "")
    return outcome
