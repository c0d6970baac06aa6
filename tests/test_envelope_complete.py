"""Decoding a received object (pure logic, no network): every object pydicom reads as complete is accepted, and
an object cut short anywhere, its pixel data and what follows included, is refused."""

from __future__ import annotations

import struct
import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from router.intake.envelope import Envelope, Source

from peers import DATA_ROOT, pydicom_reads_whole

FILES = sorted((DATA_ROOT / "test_files").glob("*.dcm")) + sorted((DATA_ROOT / "charset_files").glob("*.dcm"))
SOURCE = Source("file")


def decodes(raw: bytes) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Envelope.from_p10(raw, SOURCE)
    except Exception:
        return False
    return True


def pixel_data_offset(raw: bytes) -> int:
    stream = BytesIO(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcmread(stream, stop_before_pixels=True)
    return stream.tell()


WHOLE = [p for p in FILES if pydicom_reads_whole(p.read_bytes())]


def test_the_corpus_covers_native_encapsulated_and_odd_encodings() -> None:
    names = {p.name for p in WHOLE}
    assert len(WHOLE) > 80
    assert {"CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm"} <= names
    assert "SC_rgb_jpeg.dcm" in names, "says explicit VR, its pixel data element is encoded implicit"


@pytest.mark.parametrize("path", WHOLE, ids=[p.name for p in WHOLE])
def test_whole_object_accepted_and_cut_object_refused(path: Path) -> None:
    raw = path.read_bytes()
    assert decodes(raw), "pydicom reads it whole: so must the router"
    start = pixel_data_offset(raw)
    if len(raw) - start < 16:
        return  # nothing after the header to cut (no pixel data): the header's own check covers it
    for cut in (start + 10, start + 20, (start + len(raw)) // 2, len(raw) - 9):
        # pydicom's own errors when the cut falls in the element header it reads last; ours after that
        with pytest.raises((InvalidDicomError, EOFError, ValueError, struct.error)):
            Envelope.from_p10(raw[:cut], SOURCE)
