"""A printer's film settings: the ``print`` section of a DICOM peer (docs/print.md).

    PRINTER: {ae_title: IHEFULL, host: 10.0.0.9, port: 10005,
              print: {film_size: 14INX17IN, format: "STANDARD\\\\2,2", orientation: PORTRAIT, medium: BLUE FILM}}

Every key is optional. Film Session and Film Box attributes (PS3.3 C.13.1, C.13.3) are sent as given; those left out
(``None``) are not sent, so the printer's own default applies. ``film_size``, ``orientation``, ``format`` and ``dpi``
are also what the router sizes each image by: the image box is the film area at ``dpi`` dots per inch divided as the
format says, and every image is resized into its box (docs/print.md#what-is-sent).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from router.config.base import Strict

MM_PER_INCH = 25.4
# Film Size ID (2010,0050) defined terms, PS3.3 C.13.3: width x height in inches, portrait
FILM_SIZES: dict[str, tuple[float, float]] = {
    "8INX10IN": (8, 10), "8_5INX11IN": (8.5, 11), "10INX12IN": (10, 12), "10INX14IN": (10, 14),
    "11INX14IN": (11, 14), "11INX17IN": (11, 17), "14INX14IN": (14, 14), "14INX17IN": (14, 17),
    "24CMX24CM": (24 / 2.54, 24 / 2.54), "24CMX30CM": (24 / 2.54, 30 / 2.54),
    "A4": (210 / MM_PER_INCH, 297 / MM_PER_INCH), "A3": (297 / MM_PER_INCH, 420 / MM_PER_INCH),
}  # fmt: skip
MEDIUM_TYPES = ("PAPER", "CLEAR FILM", "BLUE FILM", "MAMMO CLEAR FILM", "MAMMO BLUE FILM")
_FORMAT = re.compile(r"^(STANDARD\\[1-9][0-9]?,[1-9][0-9]?|(ROW|COL)\\[1-9][0-9]?(,[1-9][0-9]?)*)$")
_DENSITY = re.compile(r"^(BLACK|WHITE|[0-9]{1,4})$")
_DESTINATION = re.compile(r"^(MAGAZINE|PROCESSOR|BIN_[0-9]{1,2})$")
MAX_BOXES = 100  # image boxes on one film: more is a typing error, not a film


def check_format(value: str) -> str:
    """``STANDARD\\C,R``, ``ROW\\a,b,...`` or ``COL\\a,b,...`` (Image Display Format, PS3.3 C.13.3), backslash kept."""
    if any(ord(c) < 0x20 for c in value):
        raise ValueError(
            f"{value!r} holds a control character: in YAML write 'STANDARD\\2,2' (single quotes) or "
            '"STANDARD\\\\2,2" (a double-quoted string needs the backslash doubled; "\\1" is not a backslash)'
        )
    text = value.strip().upper()
    if not _FORMAT.match(text):
        raise ValueError(f"{value!r} is not STANDARD\\C,R (columns, rows), ROW\\a,b,... or COL\\a,b,...")
    if box_count(text) > MAX_BOXES:
        raise ValueError(f"{value!r} has more than {MAX_BOXES} image boxes")
    return text


def box_count(display_format: str) -> int:
    kind, _, numbers = display_format.partition("\\")
    counts = [int(n) for n in numbers.split(",")]
    return counts[0] * counts[1] if kind == "STANDARD" else sum(counts)


def _check_film_size(value: str) -> str:
    text = value.strip().upper()
    if text not in FILM_SIZES:
        raise ValueError(f"{value!r} is not a film size (one of {', '.join(FILM_SIZES)})")
    return text


def _check_medium(value: str) -> str:
    text = value.strip().upper()
    if text not in MEDIUM_TYPES:
        raise ValueError(f"{value!r} is not a medium type (one of {', '.join(MEDIUM_TYPES)})")
    return text


def _check_density(value: str | int) -> str:
    text = str(value).strip().upper()
    if not _DENSITY.match(text):
        raise ValueError(f"{value!r} is not BLACK, WHITE or a density in hundredths of OD (e.g. 150)")
    return text


def _check_destination(value: str) -> str:
    text = value.strip().upper()
    if not _DESTINATION.match(text):
        raise ValueError(f"{value!r} is not MAGAZINE, PROCESSOR or BIN_i")
    return text


def _check_cs(value: str) -> str:
    """A printer-specific Code String (smoothing type): 16 characters of upper case, digits, space, underscore."""
    text = value.strip().upper()
    if not re.match(r"^[A-Z0-9 _]{1,16}$", text):
        raise ValueError(f"{value!r} is not a code string (up to 16 of A-Z, 0-9, space, underscore)")
    return text


DisplayFormat = Annotated[str, AfterValidator(check_format)]
Density = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v), AfterValidator(_check_density)]


class PrintSettings(Strict):
    """``peers.NAME.print``: the film settings of a printer."""

    film_size: Annotated[str, AfterValidator(_check_film_size)] = Field("14INX17IN", description="Film Size ID")
    format: DisplayFormat = Field("STANDARD\\1,1", description="Image Display Format, STANDARD\\C,R")
    orientation: Literal["PORTRAIT", "LANDSCAPE"] = "PORTRAIT"
    medium: Annotated[str, AfterValidator(_check_medium)] | None = Field(None, description="Medium Type")
    destination: Annotated[str, AfterValidator(_check_destination)] | None = Field(None, description="Film Destination")
    copies: int = Field(1, ge=1, le=99, description="Number of Copies of the film session")
    priority: Literal["HIGH", "MED", "LOW"] = "MED"
    magnification: Literal["REPLICATE", "BILINEAR", "CUBIC", "NONE"] | None = Field(
        None, description="Magnification Type; also how the router resizes (REPLICATE: nearest, NONE: only shrink)"
    )
    smoothing: Annotated[str, AfterValidator(_check_cs)] | None = Field(None, description="Smoothing Type")
    border_density: Density | None = None
    empty_image_density: Density | None = None
    min_density: int | None = Field(None, ge=0, le=999, description="hundredths of OD")
    max_density: int | None = Field(None, ge=0, le=999, description="hundredths of OD")
    trim: Literal["YES", "NO"] | None = None
    polarity: Literal["NORMAL", "REVERSE"] | None = Field(None, description="Polarity of every image box")
    resolution: Literal["STANDARD", "HIGH"] | None = Field(None, description="Requested Resolution ID")
    configuration: str | None = Field(None, max_length=1024, description="Configuration Information (printer's own)")
    label: str | None = Field(None, max_length=64, description="Film Session Label")
    dpi: int = Field(150, ge=50, le=600, description="pixels per inch the images are sized for")
    bits: Literal[8, 12] = Field(12, description="grey levels sent: 8 (Bits Allocated 8) or 12 (Bits Allocated 16)")
    timeout: float = Field(120.0, gt=0, le=3600, description="seconds to wait for each answer of the printer")

    @model_validator(mode="after")
    def _densities(self) -> PrintSettings:
        if self.min_density is not None and self.max_density is not None and self.min_density > self.max_density:
            raise ValueError("min_density must not be above max_density")
        return self

    def with_overrides(self, display_format: str | None = None, copies: int | None = None) -> PrintSettings:
        """These settings with a job's own format or number of copies (checked as the configuration is)."""
        data = self.model_dump()
        if display_format is not None:
            data["format"] = display_format
        if copies is not None:
            data["copies"] = copies
        return PrintSettings.model_validate(data)
