"""Films: how many image boxes a display format has, and each box's size in pixels on a film.

The printer does not tell a Basic Grayscale Print SCU how many pixels an image box holds; the router sizes every box
from the film (``film_size`` and ``orientation``), the resolution it prints for (``dpi``) and the Image Display
Format (PS3.3 C.13.3): ``STANDARD\\C,R`` is R rows of C boxes of one size, ``ROW\\a,b`` rows of a and b boxes (each
row as high as the others), ``COL\\a,b`` columns of a and b boxes, numbered column after column.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.config.printing import FILM_SIZES, PrintSettings


@dataclass(frozen=True)
class Box:
    """One image box: its Image Box Position (1-based) and its size in pixels."""

    position: int
    columns: int
    rows: int


def film_pixels(settings: PrintSettings) -> tuple[int, int]:
    """(columns, rows) of the whole film at ``dpi``, turned for LANDSCAPE."""
    width, height = FILM_SIZES[settings.film_size]
    if settings.orientation == "LANDSCAPE":
        width, height = height, width
    return round(width * settings.dpi), round(height * settings.dpi)


def boxes(settings: PrintSettings) -> list[Box]:
    """The image boxes of one film, in Image Box Position order."""
    columns, rows = film_pixels(settings)
    kind, _, numbers = settings.format.partition("\\")
    counts = [int(n) for n in numbers.split(",")]
    if kind == "STANDARD":
        across, down = counts
        return [Box(i + 1, columns // across, rows // down) for i in range(across * down)]
    found: list[Box] = []
    for count in counts:  # ROW: each entry a row of `count` boxes; COL: each a column
        for _ in range(count):
            if kind == "ROW":
                size = Box(len(found) + 1, columns // count, rows // len(counts))
            else:
                size = Box(len(found) + 1, columns // len(counts), rows // count)
            found.append(size)
    return found


def fit(columns: int, rows: int, box: Box, aspect: float = 1.0, enlarge: bool = True) -> tuple[int, int]:
    """The size (columns, rows) of an image of ``columns`` x ``rows`` pixels (each ``aspect`` times as high as
    wide) resized to fill ``box`` without changing its shape; ``enlarge=False`` only ever shrinks it."""
    height = rows * aspect
    scale = min(box.columns / columns, box.rows / height)
    if not enlarge:
        scale = min(scale, 1.0)
    return max(1, min(box.columns, round(columns * scale))), max(1, min(box.rows, round(height * scale)))
