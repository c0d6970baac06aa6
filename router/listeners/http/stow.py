"""STOW-RS (PS3.18 10.5): each part of a multipart/related application/dicom request goes through the same
ingest as a C-STORE (rules, stages, durable store, outbox) and is answered only once durable.

200 every instance stored; 202 some failed; 409 none stored (Failure Reason per instance: 0xA700 out of
resources, 0xC000 cannot understand, 0xA900 identifier mismatch, 0x0111 duplicate refused, 0x0110 processing
failure, also for an instance whose Study Instance UID is not the one in the URL); 400 malformed multipart;
413 over ``http.max_upload_bytes``; 415 another media type.

The body is read as it arrives (``router.listeners.http.multipart_stream``): small parts in memory, a large part
into a temporary file the intake then takes as it is (``router.listeners.http.received``). Nothing is stored before
the whole body is in and well formed (a 400 or 413 stores nothing). The parts in memory are then written to temp files
side by side (their synchronous writes overlap), then every part is checked in the order sent and the request's
parts are committed together (``Ingestor.ingest_many``: one group commit, rows in the order sent, each part in a
savepoint of its own so that a refused or duplicate part fails alone), the intake taking a part's file as it is.
The answer comes when every part is durable or refused: after the commit that holds its rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import IO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router.intake import p10scan
from router.intake.dicom import Ingestor
from router.intake.envelope import Source
from router.listeners.http.multipart import MultipartError, Part, TooLarge, batches, media_type_params, public_base
from router.listeners.http.multipart_stream import PartParser
from router.listeners.http.received import ReceivedFile, Spill
from router.statuses import FAILURE_CANNOT_UNDERSTAND, PROCESSING_FAILURE, SUCCESS

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"


UID_KEYS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
PARALLEL_PARTS = 8  # parts being written to temp files at once, over all requests
INLINE_PIECE = 256 * 1024  # a piece of body this small is parsed on the event loop (no thread hand-over)


UID_TAGS = (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)  # the same, by tag


def _uids(data: bytes) -> list[str]:
    """SOP Class, SOP Instance, Study and Series Instance UIDs of a part, as far as they can be read: from a scan of
    the object (``p10scan``, a fraction of a pydicom decode), or else pydicom reading its header (a part in a file
    from its file)."""
    try:
        scan = p10scan.scan_p10(data)
    except Exception:
        scan = None
    found = [scan.text(tag) for tag in UID_TAGS] if scan is not None else []
    if found and all(value is not None for value in found):
        return [str(value).strip("\x00 ") for value in found]
    try:
        with _readable(data) as f:
            ds = dcmread(f, stop_before_pixels=True, specific_tags=list(UID_KEYS))
    except Exception:
        return ["", "", "", ""]
    return [_text(ds, k) for k in UID_KEYS]


def _readable(data: bytes) -> IO[bytes]:
    return open(data.path, "rb") if isinstance(data, ReceivedFile) else BytesIO(data)


def _text(ds: Dataset, keyword: str) -> str:
    """A value as text, or "" when it cannot be read: pydicom converts an element when it is first read, and a part
    damaged there (an unknown VR, say) raises only then."""
    try:
        return str(ds.get(keyword, "")).strip("\x00 ")
    except Exception:
        return ""


def _item(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class or None
    item.ReferencedSOPInstanceUID = sop_uid or None
    return item


class Stow:
    def __init__(self, ingestor: Ingestor, max_upload_bytes: int) -> None:
        self.ingestor = ingestor
        self.max_upload_bytes = max_upload_bytes
        self._parts = ThreadPoolExecutor(max_workers=PARALLEL_PARTS, thread_name_prefix="stow-part")

    async def handle(self, request: Request) -> Response:
        study = request.path_params.get("study")
        kind, params = media_type_params(request.headers.get("content-type", ""))
        if kind != "multipart/related" or params.get("type", "application/dicom").lower() != "application/dicom":
            return JSONResponse({"error": 'expected multipart/related; type="application/dicom"'}, 415)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_upload_bytes:
            return JSONResponse({"error": f"the request is larger than {self.max_upload_bytes} bytes"}, 413)
        spill = Spill(self.ingestor.tmp_dir)
        received: list[Part] = []
        try:
            received = await self._receive(request, params.get("boundary", ""), spill)
            return await run_in_threadpool(self._store_all, received, study, spill, request)
        except TooLarge as exc:
            return JSONResponse({"error": str(exc)}, 413)
        except MultipartError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        finally:
            for part in received:
                if isinstance(part.body, ReceivedFile):
                    part.body.close()
            spill.discard()  # the part files the intake did not take

    async def _receive(self, request: Request, boundary: str, spill: Spill) -> list[Part]:
        """The whole body's parts (a large part in a flushed temp file). Raises MultipartError, TooLarge. A piece of
        body is parsed (and written) in a worker thread while the next piece arrives."""
        parser = PartParser(boundary, spill.sink)
        received: list[Part] = []
        parsing: asyncio.Future[list[Part]] | None = None
        try:
            async for piece in batches(request.stream(), self.max_upload_bytes):
                if parsing is not None:
                    received += await parsing
                    parsing = None
                if len(piece) <= INLINE_PIECE and not spill.paths:
                    received += parser.feed(piece)
                else:  # writes to a part file, and flushes it when the part ends
                    parsing = asyncio.ensure_future(run_in_threadpool(parser.feed, piece))
            if parsing is not None:
                received += await parsing
                parsing = None
            parser.close()
        except BaseException:
            if parsing is not None:  # the thread cannot be stopped: let it end before the part file goes
                with contextlib.suppress(BaseException):
                    await asyncio.shield(parsing)
            parser.discard()
            for part in received:
                if isinstance(part.body, ReceivedFile):
                    part.body.close()
            raise
        return received

    def _store_all(self, received: list[Part], study: str | None, spill: Spill, request: Request) -> Response:
        if not received:
            raise MultipartError("the request holds no part")
        base = public_base(request.scope.get("server"), request.headers.get("host", ""), request.url.scheme)
        client = request.client
        source = Source("stow", calling_ae=request.scope.get("router.user", ""),
                        address=f"{client.host}:{client.port}" if client else "")  # fmt: skip
        uids = [_uids(part.body) for part in received]
        reasons = self._store_parts(received, uids, study, spill, source)
        stored, failed = Sequence(), Sequence()
        for seen, (reason, (sop_class, sop_uid, part_study, part_series)) in enumerate(
            zip(reasons, uids, strict=True), 1
        ):
            item = _item(sop_class, sop_uid)
            if reason == SUCCESS:
                item.RetrieveURL = f"{base}/studies/{part_study}/series/{part_series}/instances/{sop_uid}"
                stored.append(item)
            else:
                item.FailureReason = reason
                failed.append(item)
                log.warning("STOW-RS part %d (%s) refused: 0x%04X", seen, sop_uid or "unreadable", reason)
        answer = Dataset()
        studies = {str(i.RetrieveURL).split("/studies/")[1].split("/")[0] for i in stored}
        if study or len(studies) == 1:
            answer.RetrieveURL = f"{base}/studies/{study or studies.pop()}"
        if stored:
            answer.ReferencedSOPSequence = stored
        if failed:
            answer.FailedSOPSequence = failed
        status = 200 if not failed else 409 if not stored else 202
        return JSONResponse(answer.to_json_dict(), status, media_type=DICOM_JSON)

    def _store_parts(self, received: list[Part], uids: list[list[str]], study: str | None, spill: Spill,
                     source: Source) -> list[int]:  # fmt: skip
        """Each part's status, in order. The parts in memory are first written to temp files side by side (their
        synchronous writes overlap); then the intake takes them all, in the order sent, each from its file, and
        commits them together (``Ingestor.ingest_many``: one SQLite commit and one folder fsync for up to 64)."""
        reasons: list[int | None] = []
        for part, (_cls, _sop, part_study, _series) in zip(received, uids, strict=True):
            if part.content_type not in ("application/dicom", ""):
                reasons.append(FAILURE_CANNOT_UNDERSTAND)
            elif study is not None and part_study and part_study != study:
                reasons.append(PROCESSING_FAILURE)
            else:
                reasons.append(None)
        bodies = [part.body for part in received]
        in_memory = [i for i, body in enumerate(bodies) if reasons[i] is None and not isinstance(body, ReceivedFile)]
        if len(in_memory) > 1:
            for i, written in zip(in_memory, self._parts.map(spill.written, [bodies[i] for i in in_memory]),
                                  strict=True):  # fmt: skip
                bodies[i] = written
        todo = [i for i, reason in enumerate(reasons) if reason is None]
        results = iter(self.ingestor.ingest_many([bodies[i] for i in todo], source))
        return [next(results).status if reason is None else reason for reason in reasons]
