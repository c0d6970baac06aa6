"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data and rendered images from the store.

- studies / series / instances: ``multipart/related; type="application/dicom"``; ``transfer-syntax=UID`` in the
  Accept type chooses the syntax (``*`` = as stored); none given means Explicit VR Little Endian (PS3.18 8.7.3.5).
- metadata: ``application/dicom+json``, bulk data (Pixel Data, and any binary value over 1 KiB) replaced by a
  BulkDataURI.
- frames: ``multipart/related; type="application/octet-stream"`` (uncompressed, frames in the requested order),
  or the compressed media type of the stored syntax (``image/jp2``, ``image/jpeg``, ``image/jls``,
  ``image/x-dicom-rle``) as stored.
- bulkdata: ``{instance}/bulkdata/{tag}`` as ``multipart/related; type="application/octet-stream"``.
- rendered: ``image/jpeg`` or ``image/png`` of one frame (``/rendered`` is the first frame).

404 for UIDs not stored, 400 for values that are not UIDs, 406 for an Accept the service cannot satisfy.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pluggy
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragmented_frames
from pydicom.uid import UID, ExplicitVRLittleEndian
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from router import storage
from router.hooks.answers import InstanceRef
from router.hooks.manager import notify
from router.listeners.http.multipart import media_type_params, public_base
from router.listeners.http.store_lookup import BadUid, StoredRef, stored
from router.transcode import TranscodeError, transcode

log = logging.getLogger(__name__)

BULK_THRESHOLD = 1024
COMPRESSED_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}


class NotAcceptable(Exception):
    pass


def _accepted(request: Request) -> list[tuple[str, dict[str, str]]]:
    header = request.headers.get("accept", "") or "*/*"
    return [media_type_params(part) for part in header.split(",") if part.strip()]


def _boundary() -> str:
    return uuid.uuid4().hex


def _multipart(parts: Iterator[tuple[str, bytes]], boundary: str) -> Iterator[bytes]:
    """One chunk per part (headers, payload and delimiter together: one socket write, not three)."""
    for content_type, payload in parts:
        yield b"".join((f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1"), payload, b"\r\n"))
    yield f"--{boundary}--\r\n".encode("latin-1")


def _instance_syntax(request: Request) -> str:
    """The transfer syntax asked for: a UID, ``*`` (as stored); Explicit VR LE by default. 406 if not DICOM."""
    for kind, params in _accepted(request):
        part_type = params.get("type", "application/dicom").lower()
        if kind in ("multipart/related", "*/*", "multipart/*") and part_type == "application/dicom":
            return params.get("transfer-syntax", ExplicitVRLittleEndian)
        if kind == "application/dicom":
            return params.get("transfer-syntax", ExplicitVRLittleEndian)
    raise NotAcceptable('this resource is available as multipart/related; type="application/dicom"')


def _in_syntax(data: bytes, stored_syntax: str, wanted: str) -> bytes:
    if wanted == "*" or wanted == stored_syntax:
        return data
    try:
        return transcode(data, wanted)
    except TranscodeError as exc:
        raise NotAcceptable(f"cannot provide transfer syntax {wanted}: {exc}") from exc


class Wado:
    def __init__(self, engine: Engine, data_dir: Any, pm: pluggy.PluginManager) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.pm = pm

    def _exported(self, request: Request, what: str, refs: list[StoredRef], sent: int, status: int = 200) -> None:
        """Announce ``router_instances_exported``: ``sent`` of ``refs`` went out (in order)."""
        client = request.client
        address = f"{client.host}:{client.port}" if client else ""
        notify(self.pm, "router_instances_exported", service=f"WADO-RS{what}", calling_ae="",
               user=str(request.scope.get("router.user", "")), address=address, destination=address,
               instances=[InstanceRef(r.study_uid, r.sop_class_uid, r.sop_uid) for r in refs[:sent]],
               failed=len(refs) - sent, status=status)  # fmt: skip

    def _refs(self, request: Request) -> list[StoredRef]:
        p = request.path_params
        return stored(self.engine, p["study"], p.get("series"), p.get("instance"))

    async def retrieve(self, request: Request) -> Response:
        try:
            wanted = _instance_syntax(request)
            refs = await run_in_threadpool(self._refs, request)
        except BadUid as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except NotAcceptable as exc:
            return JSONResponse({"error": str(exc)}, 406)
        if not refs:
            return JSONResponse({"error": "not found"}, 404)
        if wanted != "*" and all(r.transfer_syntax != wanted for r in refs):
            try:  # fail before the first byte is sent when the syntax cannot be produced at all
                await run_in_threadpool(_in_syntax, storage.at(self.data_dir).read_bytes(refs[0].path),
                                        refs[0].transfer_syntax, wanted)  # fmt: skip
            except NotAcceptable as exc:
                return JSONResponse({"error": str(exc)}, 406)
        boundary = _boundary()

        def parts() -> Iterator[tuple[str, bytes]]:
            sent = 0
            try:
                for ref in refs:
                    data = storage.at(self.data_dir).read_bytes(ref.path)
                    try:
                        out = _in_syntax(data, ref.transfer_syntax, wanted)
                        syntax = ref.transfer_syntax if wanted == "*" else wanted
                    except NotAcceptable:  # this one cannot be converted: sent as stored, its syntax says so
                        out, syntax = data, ref.transfer_syntax
                    yield f"application/dicom; transfer-syntax={syntax}", out
                    sent += 1
            finally:  # also when the client went away: then with what it was given
                self._exported(request, "", refs, sent)

        media = f'multipart/related; type="application/dicom"; boundary={boundary}'
        return StreamingResponse(_multipart(parts(), boundary), media_type=media)

    async def metadata(self, request: Request) -> Response:
        try:
            refs = await run_in_threadpool(self._refs, request)
        except BadUid as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if not refs:
            return JSONResponse({"error": "not found"}, 404)
        base = public_base(request.scope.get("server"), request.headers.get("host", ""), request.url.scheme)
        body = await run_in_threadpool(lambda: [self._metadata(ref, base) for ref in refs])
        self._exported(request, "/metadata", refs, len(refs))
        return JSONResponse(body, media_type="application/dicom+json")

    def _metadata(self, ref: StoredRef, base: str) -> dict[str, Any]:
        ds = dcmread(storage.at(self.data_dir).local_path(ref.path))
        url = f"{base}/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_uid}"

        def bulk(elem: DataElement) -> str:
            if elem.tag == 0x7FE00010:
                return f"{url}/frames/{','.join(str(i + 1) for i in range(int(ds.get('NumberOfFrames', 1) or 1)))}"
            return f"{url}/bulkdata/{int(elem.tag):08X}"

        return ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=bulk)

    async def frames(self, request: Request) -> Response:
        try:
            ref = _one(await run_in_threadpool(self._refs, request))
            numbers = [int(n) for n in request.path_params["frames"].split(",")]
        except BadUid as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except ValueError:
            return JSONResponse({"error": "frame numbers are positive integers, comma separated"}, 400)
        if ref is None:
            return JSONResponse({"error": "not found"}, 404)
        try:
            media, frames = await run_in_threadpool(self._frames, request, ref, numbers)
        except NotAcceptable as exc:
            return JSONResponse({"error": str(exc)}, 406)
        except IndexError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        boundary = _boundary()
        self._exported(request, "/frames", [ref], 1)
        return StreamingResponse(
            _multipart(iter((media, f) for f in frames), boundary),
            media_type=f'multipart/related; type="{media}"; boundary={boundary}',
        )

    def _frames(self, request: Request, ref: StoredRef, numbers: list[int]) -> tuple[str, list[bytes]]:
        ds = dcmread(storage.at(self.data_dir).local_path(ref.path))
        if "PixelData" not in ds:
            raise IndexError("the instance has no pixel data")
        count = int(ds.get("NumberOfFrames", 1) or 1)
        bad = [n for n in numbers if not 1 <= n <= count]
        if bad:
            raise IndexError(f"frame {bad[0]} does not exist (the instance has {count})")
        native_media = COMPRESSED_MEDIA.get(ref.transfer_syntax)
        for kind, params in _accepted(request):
            part = params.get("type", "application/octet-stream").lower() if kind.startswith("multipart/") else kind
            if kind == "*/*" or part in ("application/octet-stream", "*/*"):
                syntax = params.get("transfer-syntax", "")
                if native_media is None or syntax == "*":
                    if native_media is not None:
                        return native_media, self._encapsulated(ds, numbers, count)
                    return "application/octet-stream", self._native(ds, numbers, count)
                return "application/octet-stream", self._native(ds, numbers, count)
            if native_media is not None and part == native_media:
                return native_media, self._encapsulated(ds, numbers, count)
        raise NotAcceptable(f"frames of this instance are available as application/octet-stream"
                            f"{' or ' + native_media if native_media else ''}")  # fmt: skip

    @staticmethod
    def _encapsulated(ds: Dataset, numbers: list[int], count: int) -> list[bytes]:
        frames = list(generate_fragmented_frames(ds.PixelData, number_of_frames=count))
        return [b"".join(frames[n - 1]) for n in numbers]

    @staticmethod
    def _native(ds: Dataset, numbers: list[int], count: int) -> list[bytes]:
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        if syntax.is_compressed:
            raw = transcode(_p10(ds), ExplicitVRLittleEndian)
            ds = dcmread(io.BytesIO(raw))
        data = ds.PixelData
        size = len(data) // count
        return [bytes(data[(n - 1) * size : n * size]) for n in numbers]

    async def bulkdata(self, request: Request) -> Response:
        try:
            ref = _one(await run_in_threadpool(self._refs, request))
            tag = int(request.path_params["tag"], 16)
        except BadUid as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except ValueError:
            return JSONResponse({"error": "a bulk data tag is 8 hexadecimal digits"}, 400)
        if ref is None:
            return JSONResponse({"error": "not found"}, 404)
        ds = await run_in_threadpool(dcmread, storage.at(self.data_dir).local_path(ref.path))
        if tag not in ds or ds[tag].value is None:
            return JSONResponse({"error": "no such attribute"}, 404)
        boundary = _boundary()
        self._exported(request, "/bulkdata", [ref], 1)
        value = ds[tag].value
        payload = value if isinstance(value, bytes) else bytes(value)
        return StreamingResponse(
            _multipart(iter([("application/octet-stream", payload)]), boundary),
            media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
        )

    async def rendered(self, request: Request) -> Response:
        kinds = [k for k, _ in _accepted(request)]
        media = next((k for k in kinds if k in ("image/jpeg", "image/png")), "image/jpeg" if "*/*" in kinds or
                     "image/*" in kinds else None)  # fmt: skip
        if media is None:
            return JSONResponse({"error": "rendered images are image/jpeg or image/png"}, 406)
        try:
            ref = _one(await run_in_threadpool(self._refs, request))
            frame = int(request.path_params.get("frame", "1"))
        except BadUid as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except ValueError:
            return JSONResponse({"error": "one frame number"}, 400)
        if ref is None:
            return JSONResponse({"error": "not found"}, 404)
        try:
            image = await run_in_threadpool(render, storage.at(self.data_dir).local_path(ref.path), frame, media)
        except IndexError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        except Exception as exc:
            log.warning("cannot render %s: %s", ref.sop_uid, exc)
            return JSONResponse({"error": f"cannot render this instance: {exc}"}, 406)
        self._exported(request, "/rendered", [ref], 1)
        return Response(image, media_type=media)


def _one(refs: list[StoredRef]) -> StoredRef | None:
    return refs[0] if refs else None


def _p10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def render(path: Any, frame: int, media: str) -> bytes:
    """One frame as an 8-bit picture: the window of the object (first one) when it has one, else min..max."""
    from PIL import Image

    ds = dcmread(path)
    if "PixelData" not in ds:
        raise IndexError("the instance has no pixel data")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= count:
        raise IndexError(f"frame {frame} does not exist (the instance has {count})")
    pixels = ds.pixel_array
    if count > 1:
        pixels = pixels[frame - 1]
    pixels = pixels.astype(np.float64)
    if ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is not None and width is not None:
            c = float(center[0] if isinstance(center, list | tuple) or hasattr(center, "__len__") else center)
            w = float(width[0] if isinstance(width, list | tuple) or hasattr(width, "__len__") else width)
            low, high = c - w / 2, c + w / 2
        else:
            low, high = float(pixels.min()), float(pixels.max())
        scaled = np.clip((pixels - low) / max(high - low, 1e-9), 0, 1) * 255
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            scaled = 255 - scaled
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    else:
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG" if media == "image/jpeg" else "PNG")
    return out.getvalue()
