"""Making an image printable: what a Basic Grayscale Image Box takes (PS3.4 H.4.3, PS3.3 C.13.5).

Each frame of an object becomes one grey image, MONOCHROME2 (0 is black), 8 or 12 bits:

1. colour (RGB, YBR, PALETTE COLOR) is turned to grey (ITU-R BT.601 luma), with a note;
2. the Modality LUT (Rescale Slope/Intercept, or a Modality LUT Sequence) gives the modality's values;
3. the VOI LUT Sequence or the first Window Center/Width (VOI LUT Function LINEAR, LINEAR_EXACT, SIGMOID) maps them
   to the displayed range; an object with neither is shown over its full range (minimum to maximum over every frame);
4. MONOCHROME1 is inverted, so that what is sent is always MONOCHROME2;
5. the image is resized into its image box without changing its shape (Pillow; nearest pixel for REPLICATE, bicubic
   for CUBIC, bilinear otherwise; NONE only shrinks what is larger than the box), counting non-square pixels
   (Pixel Spacing, else Pixel Aspect Ratio);
6. the result is quantised to 2^bits - 1 levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from router.config.printing import PrintSettings
from router.printing.film import Box, fit

_RESAMPLE = {"REPLICATE": Image.Resampling.NEAREST, "CUBIC": Image.Resampling.BICUBIC}
LUMA = (0.299, 0.587, 0.114)


class NotPrintable(ValueError):
    """The object has no image the router can print (no pixel data, or pixel data it cannot decode)."""


@dataclass(frozen=True)
class Printable:
    """One image ready for an image box: MONOCHROME2, ``bits`` stored (8 or 12)."""

    pixels: np.ndarray  # rows x columns, uint8 (8 bits) or uint16 (12 bits)
    bits: int


def grey_frames(ds: Dataset) -> tuple[list[np.ndarray], list[str]]:
    """Every frame as floats from 0 (black) to 1 (white), and notes on what was done to them."""
    if "PixelData" not in ds:
        raise NotPrintable("the object has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom's decoders raise many kinds
        raise NotPrintable(f"its pixel data cannot be decoded: {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = int(ds.get("SamplesPerPixel", 1)) > 1 or ds.get("PhotometricInterpretation") == "PALETTE COLOR"
    if frames == 1:
        arr = arr[np.newaxis]
    if colour:
        return [_luma(frame, ds) for frame in arr], ["colour converted to grey"]
    values = apply_modality_lut(arr, ds).astype(np.float64)
    grey, note = _voi(values, ds)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        grey = 1.0 - grey
        note += ", MONOCHROME1 inverted"
    return list(grey), [note]


def _luma(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        top = float(2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1)
    else:
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
    rgb = frame.astype(np.float64) / top
    return np.clip(rgb[..., 0] * LUMA[0] + rgb[..., 1] * LUMA[1] + rgb[..., 2] * LUMA[2], 0.0, 1.0)


def _voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str]:
    """The modality values mapped to 0..1 for display, and which mapping it was."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        item = ds.VOILUTSequence[0]
        out_bits = int(item.LUTDescriptor[2])
        mapped = apply_voi(np.rint(values).astype(np.int64), ds, 0).astype(np.float64)  # a LUT is indexed
        return np.clip(mapped / float(2**out_bits - 1), 0.0, 1.0), "VOI LUT Sequence"
    if "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        if width >= 1 or (function != "LINEAR" and width > 0):
            return window(values, centre, width, function), f"window {centre:g}/{width:g} {function}"
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values), "full range (uniform image)"
    return (values - low) / (high - low), f"full range {low:g}..{high:g}"


def _first(value: Any) -> float:
    """The first of a multi-valued Window Center or Width (the default view), or the only one."""
    return float(value[0]) if isinstance(value, MultiValue | list) else float(value)


def window(values: np.ndarray, centre: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window Center/Width (PS3.3 C.11.2.1.2) onto 0..1."""
    if function == "SIGMOID":
        return np.asarray(1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width)))
    if function == "LINEAR_EXACT":
        return np.clip((values - (centre - width / 2.0)) / width, 0.0, 1.0)
    if width < 1:
        raise ValueError("a LINEAR window is at least 1 wide")
    if width == 1:  # a threshold
        return (values > centre - 0.5).astype(np.float64)
    return np.clip((values - (centre - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def aspect_of(ds: Dataset) -> float:
    """How many times as high as wide a pixel is (Pixel Spacing row\\column, else Pixel Aspect Ratio)."""
    for keyword in ("PixelSpacing", "PixelAspectRatio"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            return float(value[0]) / float(value[1])
    return 1.0


def resize(grey: np.ndarray, box: Box, aspect: float, magnification: str | None) -> np.ndarray:
    """``grey`` resized into ``box`` without changing its shape (see the module's step 5)."""
    rows, columns = grey.shape
    size = fit(columns, rows, box, aspect, enlarge=magnification != "NONE")
    if size == (columns, rows):
        return grey
    resample = _RESAMPLE.get(magnification or "", Image.Resampling.BILINEAR)
    image = Image.fromarray(grey.astype(np.float32))
    return np.clip(np.asarray(image.resize(size, resample), dtype=np.float64), 0.0, 1.0)


def quantise(grey: np.ndarray, bits: int) -> np.ndarray:
    top = 2**bits - 1
    return np.rint(grey * top).astype(np.uint8 if bits == 8 else np.uint16)


def prepare(grey: np.ndarray, box: Box, aspect: float, settings: PrintSettings) -> Printable:
    """One grey frame (0..1) resized into ``box`` and quantised to ``settings.bits``."""
    return Printable(quantise(resize(grey, box, aspect, settings.magnification), settings.bits), settings.bits)


def image_item(image: Printable) -> Dataset:
    """The item of Basic Grayscale Image Sequence (2020,0110) that carries ``image`` (PS3.3 C.13.5.1)."""
    rows, columns = image.pixels.shape
    item = Dataset()
    item.SamplesPerPixel = 1
    item.PhotometricInterpretation = "MONOCHROME2"
    item.Rows, item.Columns = rows, columns
    item.PixelAspectRatio = [1, 1]
    item.BitsAllocated = 8 if image.bits == 8 else 16
    item.BitsStored = image.bits
    item.HighBit = image.bits - 1
    item.PixelRepresentation = 0
    data = image.pixels.astype("<u2" if image.bits > 8 else np.uint8).tobytes()
    item.PixelData = data + b"\x00" * (len(data) % 2)
    item["PixelData"].VR = "OW" if image.bits > 8 else "OB"
    return item
