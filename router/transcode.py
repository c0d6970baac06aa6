"""Changing the transfer syntax of a Part 10 object: decode what pydicom and the pylibjpeg plugins can read, encode
what their encoders can write, and keep the attributes that describe the pixels consistent with the result.

    transcode(raw, "explicit-le")                                  # decompress (or just re-encode) losslessly
    transcode(raw, "jpeg2000-lossless")                            # compress losslessly
    transcode(raw, "jpeg2000", allow_lossy=True, ratio=10)         # lossy: only when asked for explicitly

A pure library: no router state. Every failure is a ``TranscodeError`` raised before any bytes are returned, so a
caller never sees a half-written object. What it keeps consistent:

- the Transfer Syntax UID of the file meta;
- the Image Pixel module (Photometric Interpretation, Samples per Pixel, Planar Configuration, Bits Allocated/Stored,
  High Bit, Pixel Representation, Number of Frames) as the decoder describes the decoded pixels: lossy JPEG in YCbCr
  is converted to RGB (as DCMTK's dcmdjpeg does by default); a lossless source keeps its colour space, except JPEG
  2000's YBR_RCT/YBR_ICT, whose colour transform the decoder undoes (RGB);
- Lossy Image Compression (0028,2110): ``01`` once pixels come from a lossy syntax (JPEG baseline/extended always;
  JPEG-LS near-lossless and JPEG 2000 unless the sender stated otherwise) and after our own lossy step, which also
  appends to Lossy Image Compression Ratio/Method (0028,2112/2114).

The SOP Instance UID is never changed: the peer receives the same instance in another encoding. Objects without
pixel data change only their encoding (for an encapsulated target that is Explicit VR Little Endian, PS3.5 A.4).
"""

from __future__ import annotations

import math
import re
from io import BytesIO
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.pixels import compress, get_decoder, get_encoder, pack_bits
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)


class TranscodeError(Exception):
    """The object cannot be put in the requested transfer syntax; nothing was produced."""


# The names rule files use. A full transfer syntax UID is accepted wherever a name is.
SYNTAXES: dict[str, UID] = {
    "explicit-le": ExplicitVRLittleEndian,
    "implicit-le": ImplicitVRLittleEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "big-endian": ExplicitVRBigEndian,
    "rle": RLELossless,
    "jpeg-baseline": JPEGBaseline8Bit,
    "jpeg-extended": JPEGExtended12Bit,
    "jpeg-lossless": JPEGLosslessSV1,
    "jpeg-ls-lossless": JPEGLSLossless,
    "jpeg-ls-near-lossless": JPEGLSNearLossless,
    "jpeg2000-lossless": JPEG2000Lossless,
    "jpeg2000": JPEG2000,
}
NATIVE_TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
# Retired, kept for reading: we never write big endian.
DECODE_ONLY = frozenset({ExplicitVRBigEndian})
# Encoding to these loses information; they must be asked for with allow_lossy=True.
LOSSY_TARGETS = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000})
# Pixels decoded from these were certainly lossy compressed ...
ALWAYS_LOSSY_SOURCES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
# ... and from these possibly (the syntax allows both): lossy unless the object says otherwise.
MAYBE_LOSSY_SOURCES = frozenset(
    {JPEGLSNearLossless, JPEG2000, UID("1.2.840.10008.1.2.4.92"), UID("1.2.840.10008.1.2.4.93")}
    | {UID("1.2.840.10008.1.2.4.203")}  # HTJ2K (lossy or lossless)
)
LOSSY_METHOD = {  # Defined Terms of Lossy Image Compression Method (0028,2114)
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
}
DEFAULT_RATIO = 10.0
J2K_MIN_SIZE = 32
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)+")
PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)
SWAP_SIZES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}  # values byte-swapped between big and little endian


# -- names ---------------------------------------------------------------------------------------------------------
def syntax_uid(name_or_uid: str) -> UID:
    """The transfer syntax UID for a name of ``SYNTAXES`` or a transfer syntax UID; TranscodeError otherwise."""
    key = str(name_or_uid).strip()
    if key.lower() in SYNTAXES:
        return SYNTAXES[key.lower()]
    if _UID_RE.fullmatch(key) and UID(key).is_transfer_syntax:
        return UID(key)
    raise TranscodeError(f"unknown transfer syntax {key!r} (names: {', '.join(SYNTAXES)}, or a transfer syntax UID)")


def syntax_name(uid: str) -> str:
    """The short name of a transfer syntax, or pydicom's name for others, or the UID itself."""
    for name, known in SYNTAXES.items():
        if known == uid:
            return name
    named = UID(uid).name
    return named if named != uid else str(uid)


def is_lossy(uid: str) -> bool:
    return UID(uid) in LOSSY_TARGETS


def can_decode(uid: str) -> bool:
    """Whether pixel data in ``uid`` can be decoded here."""
    try:
        return bool(get_decoder(UID(uid)).is_available)
    except NotImplementedError:
        return False


def can_encode(uid: str) -> bool:
    """Whether objects can be written in ``uid`` here (native syntaxes always; others need an encoder plugin)."""
    uid = UID(uid)
    if uid in NATIVE_TARGETS:
        return True
    if uid in DECODE_ONLY or not uid.is_compressed:
        return False
    try:
        return bool(get_encoder(uid).is_available)
    except NotImplementedError:
        return False


def encodable() -> list[str]:
    """The names of ``SYNTAXES`` this installation can write."""
    return [name for name, uid in SYNTAXES.items() if can_encode(uid)]


def target_problems(target: str, *, allow_lossy: bool = False, ratio: float | None = None,
                    psnr: float | None = None) -> list[str]:  # fmt: skip
    """What is wrong with a transcode request before any object is seen (empty when fine)."""
    try:
        uid = syntax_uid(target)
    except TranscodeError as exc:
        return [str(exc)]
    name = syntax_name(uid)
    problems = []
    if uid in DECODE_ONLY:
        problems.append(f"{name} is read but never written (retired); can write: {', '.join(encodable())}")
    elif not can_encode(uid):
        missing = _missing_encoder(uid)
        problems.append(f"cannot write {name} here{missing}; can write: {', '.join(encodable())}")
    if uid in LOSSY_TARGETS and not allow_lossy:
        problems.append(f"{name} is lossy: it must be asked for explicitly (allow lossy compression)")
    if ratio is not None and psnr is not None:
        problems.append("give a compression ratio or a PSNR, not both")
    if (ratio is not None or psnr is not None) and uid not in LOSSY_TARGETS:
        problems.append(f"a compression ratio or PSNR applies to lossy syntaxes only, not {name}")
    if ratio is not None and not (isinstance(ratio, int | float) and math.isfinite(ratio) and ratio > 1):
        problems.append(f"the compression ratio must be a number above 1, not {ratio!r}")
    if psnr is not None and not (isinstance(psnr, int | float) and math.isfinite(psnr) and psnr > 0):
        problems.append(f"the PSNR must be a positive number of decibels, not {psnr!r}")
    return problems


def _missing_encoder(uid: UID) -> str:
    try:
        missing = get_encoder(uid).missing_dependencies
    except NotImplementedError:
        return " (no encoder exists for it)"
    return f" (encoder needs: {'; '.join(missing)})" if missing else ""


# -- transcoding ---------------------------------------------------------------------------------------------------
def transcode(
    raw_p10: bytes,
    target: str,
    *,
    allow_lossy: bool = False,
    ratio: float | None = None,
    psnr: float | None = None,
) -> bytes:
    """The complete Part 10 object ``raw_p10`` re-encoded in ``target`` (a name of ``SYNTAXES`` or a UID).

    ``raw_p10`` itself is returned when it is already in ``target``. A lossy ``target`` needs ``allow_lossy``;
    ``ratio`` (default 10) or ``psnr`` (dB) set how lossy JPEG 2000 is. Raises TranscodeError when the request or
    the object cannot be served: unknown or unwritable target, no decoder for the source, pixels the target
    cannot carry, an unreadable object.
    """
    problems = target_problems(target, allow_lossy=allow_lossy, ratio=ratio, psnr=psnr)
    if problems:
        raise TranscodeError("; ".join(problems))
    uid = syntax_uid(target)
    try:
        ds = dcmread(BytesIO(raw_p10))
        source = UID(str(ds.file_meta.get("TransferSyntaxUID", "")).rstrip("\x00 "))
    except Exception as exc:  # pydicom raises many kinds on corrupt input
        raise TranscodeError(f"not a readable Part 10 object: {exc}") from exc
    if not source:
        raise TranscodeError("the file meta has no Transfer Syntax UID")
    if source == uid:
        return raw_p10
    try:
        _to_little_endian_native(ds, source, decode_pixels=uid.is_compressed)
        if uid.is_compressed and PIXEL_DATA in ds:
            _encode(ds, uid, ratio=ratio, psnr=psnr)
        ds.file_meta.TransferSyntaxUID = uid
        out = BytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
        return out.getvalue()
    except TranscodeError:
        raise
    except Exception as exc:
        raise TranscodeError(f"{syntax_name(source)} to {syntax_name(uid)} failed: {_brief(exc)}") from exc


def _to_little_endian_native(ds: Dataset, source: UID, *, decode_pixels: bool) -> None:
    """Leave ``ds`` ready to be written in a little endian native syntax (or handed to an encoder)."""
    if source == ExplicitVRBigEndian:
        _swap_big_endian_values(ds)
    if PIXEL_DATA not in ds:
        if decode_pixels and any(tag in ds for tag in FLOAT_PIXEL_DATA):
            raise TranscodeError("float pixel data cannot be put in an encapsulated transfer syntax")
        return
    if source.is_compressed or source == ExplicitVRBigEndian or decode_pixels:
        _decode_pixels(ds, source)


def _swap_big_endian_values(ds: Dataset) -> None:
    """pydicom converts numbers and text between byte orders itself, but not the bytes of OW/OL/OF/OD/OV values."""
    for elem in ds.iterall():
        if elem.tag == PIXEL_DATA:  # decoded separately: its layout depends on the Image Pixel module
            continue
        if elem.VR == "UN" and elem.value:
            raise TranscodeError(f"element {elem.tag} has an unknown VR (UN): its byte order cannot be converted")
        size = SWAP_SIZES.get(str(elem.VR))
        if size and isinstance(elem.value, bytes | bytearray) and elem.value:
            if len(elem.value) % size:
                raise TranscodeError(f"element {elem.tag} ({elem.VR}) has a length that is not a multiple of {size}")
            elem.value = np.frombuffer(elem.value, dtype=f">u{size}").astype(f"<u{size}").tobytes()


def _decode_pixels(ds: Dataset, source: UID) -> None:
    """Replace Pixel Data by its decoded little endian native form, every frame, and describe it."""
    try:
        decoder = get_decoder(source)
    except NotImplementedError:
        raise TranscodeError(f"no decoder exists for {syntax_name(source)}") from None
    if not decoder.is_available:
        raise TranscodeError(
            f"cannot decode {syntax_name(source)} here (needs: {'; '.join(decoder.missing_dependencies)})"
        )
    frames: list[np.ndarray] = []
    described: dict[str, Any] = {}
    try:
        for arr, frame_description in decoder.iter_array(ds, as_rgb=source in ALWAYS_LOSSY_SOURCES):
            frames.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
            described = frame_description
    except Exception as exc:
        raise TranscodeError(f"cannot decode the {syntax_name(source)} pixel data: {_brief(exc)}") from exc
    if not frames:
        raise TranscodeError("the pixel data holds no frame")
    bits_allocated = int(described["bits_allocated"])
    data = pack_bits(np.stack(frames)) if bits_allocated == 1 else b"".join(f.tobytes() for f in frames)
    if len(data) >= 2**32 - 1:
        raise TranscodeError("the decoded pixel data is larger than a DICOM element can hold (4 GiB)")
    ds.PixelData = data + b"\x00" * (len(data) % 2)
    elem = ds["PixelData"]
    elem.VR = "OB" if bits_allocated <= 8 else "OW"
    elem.is_undefined_length = False
    for tag in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if tag in ds:
            del ds[tag]
    _describe_pixels(ds, described, len(frames))
    _note_lossy_source(ds, source)


def _describe_pixels(ds: Dataset, described: dict[str, Any], nr_frames: int) -> None:
    samples = int(described["samples_per_pixel"])
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = str(described["photometric_interpretation"])
    if samples > 1:
        ds.PlanarConfiguration = int(described.get("planar_configuration", 0))
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.BitsAllocated = int(described["bits_allocated"])
    ds.BitsStored = int(described["bits_stored"])
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(described["pixel_representation"])
    if "NumberOfFrames" in ds or nr_frames > 1:
        ds.NumberOfFrames = nr_frames


def _note_lossy_source(ds: Dataset, source: UID) -> None:
    """Once decoded, the syntax no longer tells that the pixels went through lossy compression: the attribute must."""
    stated = str(ds.get("LossyImageCompression", "")).strip()
    if source in ALWAYS_LOSSY_SOURCES or (source in MAYBE_LOSSY_SOURCES and stated not in ("00", "01")):
        ds.LossyImageCompression = "01"


def _encode(ds: Dataset, uid: UID, *, ratio: float | None, psnr: float | None) -> None:
    if int(ds.get("BitsAllocated", 0)) == 1:
        raise TranscodeError(f"1-bit pixel data cannot be encoded in {syntax_name(uid)}")
    if uid in (JPEG2000, JPEG2000Lossless) and min(int(ds.Rows), int(ds.Columns)) < J2K_MIN_SIZE:
        raise TranscodeError(
            f"the JPEG 2000 encoder (OpenJPEG, 6 resolution levels) needs at least {J2K_MIN_SIZE} rows and "
            f"columns, this image has {ds.Rows}x{ds.Columns}"
        )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what compress() starts from
    native_length = len(ds.PixelData)
    options: dict[str, Any] = {}
    if uid == JPEG2000:
        if psnr is not None:
            options["j2k_psnr"] = [float(psnr)]
        else:
            options["j2k_cr"] = [float(ratio if ratio is not None else DEFAULT_RATIO)]
    try:
        compress(ds, uid, generate_instance_uid=False, **options)
    except Exception as exc:
        raise TranscodeError(f"cannot encode the pixel data in {syntax_name(uid)}: {_brief(exc)}") from exc
    if uid in LOSSY_TARGETS:
        _note_lossy_step(ds, LOSSY_METHOD[uid], native_length / max(1, len(ds.PixelData)))


def _note_lossy_step(ds: Dataset, method: str, ratio: float) -> None:
    """Lossy Image Compression Ratio/Method keep one value per lossy step, oldest first (PS3.3 C.7.6.1.1.5)."""
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = [*_values(ds, "LossyImageCompressionRatio"), f"{ratio:.2f}"]
    ds.LossyImageCompressionMethod = [*_values(ds, "LossyImageCompressionMethod"), method]


def _values(ds: Dataset, keyword: str) -> list[Any]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [v for v in value if v != ""]
    return [value]


def _brief(exc: BaseException) -> str:
    """The message of a pydicom error on one line, without the traceback some of them embed."""
    text = str(exc).split("Traceback (most recent call last)")[0]
    return " ".join(text.split())[:400] or type(exc).__name__
