"""STOW-RS (PS3.18 10.5): each part of a multipart/related application/dicom request goes through the same
ingest as a C-STORE (rules, stages, durable store, outbox) and is answered only once durable.

200 every instance stored; 202 some failed; 409 none stored (Failure Reason per instance: 0xA700 out of
resources, 0xC000 cannot understand, 0xA900 identifier mismatch, 0x0111 duplicate refused, 0x0110 processing
failure, also for an instance whose Study Instance UID is not the one in the URL); 400 malformed multipart;
413 over ``http.max_upload_bytes``; 415 another media type.
"""

from __future__ import annotations

import logging
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router.intake.dicom import Ingestor
from router.intake.envelope import Source
from router.listeners.http.multipart import MultipartError, TooLarge, media_type_params, parts, public_base, spool
from router.statuses import FAILURE_CANNOT_UNDERSTAND, PROCESSING_FAILURE, SUCCESS

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"


UID_KEYS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def _uids(data: bytes) -> list[str]:
    """SOP Class, SOP Instance, Study and Series Instance UIDs of a part, as far as they can be read."""
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=list(UID_KEYS))
    except Exception:
        return ["", "", "", ""]
    return [_text(ds, k) for k in UID_KEYS]


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

    async def handle(self, request: Request) -> Response:
        study = request.path_params.get("study")
        kind, params = media_type_params(request.headers.get("content-type", ""))
        if kind != "multipart/related" or params.get("type", "application/dicom").lower() != "application/dicom":
            return JSONResponse({"error": 'expected multipart/related; type="application/dicom"'}, 415)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_upload_bytes:
            return JSONResponse({"error": f"the request is larger than {self.max_upload_bytes} bytes"}, 413)
        try:
            body = await spool(request.stream(), self.max_upload_bytes)
        except TooLarge as exc:
            return JSONResponse({"error": str(exc)}, 413)
        try:
            return await run_in_threadpool(self._store_all, body, params.get("boundary", ""), study, request)
        except MultipartError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        finally:
            body.close()

    def _store_all(self, body: object, boundary: str, study: str | None, request: Request) -> Response:
        base = public_base(request.scope.get("server"), request.headers.get("host", ""), request.url.scheme)
        client = request.client
        source = Source("stow", calling_ae=request.scope.get("router.user", ""),
                        address=f"{client.host}:{client.port}" if client else "")  # fmt: skip
        stored, failed = Sequence(), Sequence()
        seen = 0
        for part in parts(body, boundary):  # type: ignore[arg-type]
            seen += 1
            sop_class, sop_uid, part_study, part_series = _uids(part.body)
            if part.content_type not in ("application/dicom", ""):
                reason = FAILURE_CANNOT_UNDERSTAND
            elif study is not None and part_study and part_study != study:
                reason = PROCESSING_FAILURE
            else:
                result = self.ingestor.ingest(part.body, source)
                reason = result.status
            if reason == SUCCESS:
                item = _item(sop_class, sop_uid)
                item.RetrieveURL = f"{base}/studies/{part_study}/series/{part_series}/instances/{sop_uid}"
                stored.append(item)
            else:
                item = _item(sop_class, sop_uid)
                item.FailureReason = reason
                failed.append(item)
                log.warning("STOW-RS part %d (%s) refused: 0x%04X", seen, sop_uid or "unreadable", reason)
        if seen == 0:
            raise MultipartError("the request holds no part")
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
