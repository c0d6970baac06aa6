"""Printing without a printer: the film settings, the film layout, the pixel pipeline, the print statuses, the stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from router.config import ConfigError, RouterConfig, parse_config
from router.config.printing import PrintSettings
from router.printing import film, pixels
from router.statuses import SendVerdict, classify_print_failure, is_print_warning, print_status_text


def _config(peer: dict[str, Any]) -> RouterConfig:
    return parse_config({"peers": {"PRINTER": peer}}, Path("/tmp"))


def _printer(**film_settings: Any) -> dict[str, Any]:
    return {"ae_title": "IHEFULL", "host": "10.0.0.9", "port": 10005, "print": film_settings}


# -- settings ----------------------------------------------------------------------------------------------------
def test_every_film_key_is_optional_and_the_defaults_are_sent_values() -> None:
    settings = _config(_printer()).peers["PRINTER"].print  # type: ignore[union-attr]
    assert settings is not None
    assert (settings.format, settings.film_size, settings.orientation, settings.copies) == (
        "STANDARD\\1,1", "14INX17IN", "PORTRAIT", 1)  # fmt: skip
    assert settings.medium is None and settings.magnification is None  # not sent: the printer's default


def test_the_format_keeps_its_backslash_and_values_are_normalised() -> None:
    cfg = _config(_printer(format="standard\\2,2", medium="blue film", border_density=150, destination="bin_2"))
    settings = cfg.peers["PRINTER"].print  # type: ignore[union-attr]
    assert settings is not None
    assert (settings.format, settings.medium, settings.border_density, settings.destination) == (
        "STANDARD\\2,2", "BLUE FILM", "150", "BIN_2")  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"format": "STANDARD\x01,1"}, "control character"),  # "STANDARD\1,1" in Python: the pynetdicom trap
        ({"format": "STANDARD 2,2"}, "is not STANDARD\\C,R"),
        ({"format": "STANDARD\\20,20"}, "more than 100 image boxes"),
        ({"film_size": "13INX18IN"}, "is not a film size"),
        ({"medium": "GLASS"}, "is not a medium type"),
        ({"border_density": "GREY"}, "is not BLACK, WHITE or a density"),
        ({"min_density": 300, "max_density": 100}, "min_density must not be above max_density"),
        ({"copies": 0}, "greater than or equal to 1"),
        ({"bits": 16}, "Input should be 8 or 12"),
        ({"papersize": "A4"}, "peers.PRINTER.print.papersize: unknown key"),
    ],
)
def test_bad_film_settings_are_refused_naming_the_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"peers\.PRINTER\.print") as exc:
        _config(_printer(**settings))
    assert message in str(exc.value)


def test_print_is_for_dicom_peers() -> None:
    with pytest.raises(ConfigError, match="print: for DICOM peers"):
        _config({"mllp": "10.0.0.9:2575", "print": {}})


def test_a_job_overrides_format_and_copies_checked_like_the_configuration() -> None:
    settings = PrintSettings(format="STANDARD\\1,1")
    assert settings.with_overrides("STANDARD\\3,4", 3).format == "STANDARD\\3,4"
    with pytest.raises(ValueError, match="control character"):
        settings.with_overrides("STANDARD\x033,4")


# -- film layout -------------------------------------------------------------------------------------------------
def test_standard_row_and_col_formats_divide_the_film() -> None:
    standard = film.boxes(PrintSettings(format="STANDARD\\2,3", film_size="14INX17IN", dpi=100))
    assert [(b.position, b.columns, b.rows) for b in standard][:2] == [(1, 700, 566), (2, 700, 566)]
    assert len(standard) == 6
    landscape = film.boxes(
        PrintSettings(format="STANDARD\\1,1", film_size="14INX17IN", dpi=100, orientation="LANDSCAPE")
    )
    assert [(b.columns, b.rows) for b in landscape] == [(1700, 1400)]
    rows = film.boxes(PrintSettings(format="ROW\\1,2", film_size="10INX12IN", dpi=100))
    assert [(b.columns, b.rows) for b in rows] == [(1000, 600), (500, 600), (500, 600)]
    cols = film.boxes(PrintSettings(format="COL\\2,1", film_size="10INX12IN", dpi=100))
    assert [(b.columns, b.rows) for b in cols] == [(500, 600), (500, 600), (500, 1200)]


def test_fit_keeps_the_shape_and_none_only_shrinks() -> None:
    box = film.Box(1, 400, 300)
    assert film.fit(200, 100, box) == (400, 200)
    assert film.fit(100, 200, box) == (150, 300)
    assert film.fit(100, 100, box, aspect=2.0) == (150, 300)  # pixels twice as high as wide
    assert film.fit(100, 50, box, enlarge=False) == (100, 50)
    assert film.fit(800, 300, box, enlarge=False) == (400, 150)


# -- pixels ------------------------------------------------------------------------------------------------------
def _dataset() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _image(values: np.ndarray, **attrs: Any) -> Dataset:
    ds = _dataset()
    ds.Rows, ds.Columns = values.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = values.astype("<u2").tobytes()
    return ds


def _grey(ds: Dataset) -> tuple[np.ndarray, str]:
    frames, notes = pixels.grey_frames(ds)
    assert len(frames) == 1
    return frames[0], notes[0]


def test_rescale_then_the_window_of_the_object() -> None:
    raw = np.array([[0, 864, 1024, 1064, 1264, 2048]])  # HU -1024, -160, 0, 40, 240, 1024
    grey, note = _grey(_image(raw, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400))
    assert note == "window 40/400 LINEAR"
    expected = [0.0, 0.0, (0 - 39.5) / 399 + 0.5, (40 - 39.5) / 399 + 0.5, 1.0, 1.0]  # PS3.3 C.11.2.1.2.1
    assert np.allclose(grey[0], expected)


def test_the_first_of_several_windows_and_linear_exact() -> None:
    raw = np.array([[100, 150, 200]])
    grey, _ = _grey(_image(raw, WindowCenter=[150, 500], WindowWidth=[100, 1000], VOILUTFunction="LINEAR_EXACT"))
    assert np.allclose(grey[0], [0.0, 0.5, 1.0])


def test_a_voi_lut_sequence_is_applied_and_scaled_by_its_output_bits() -> None:
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]  # 4 entries from 0, 8-bit output
    lut.LUTData = [0, 85, 170, 255]
    grey, note = _grey(_image(np.array([[0, 1, 2, 3, 9]]), VOILUTSequence=[lut]))
    assert note == "VOI LUT Sequence"
    assert np.allclose(grey[0], [0, 1 / 3, 2 / 3, 1, 1])


def test_full_range_without_a_window_and_monochrome1_inverted() -> None:
    grey, note = _grey(_image(np.array([[100, 200, 300]]), PhotometricInterpretation="MONOCHROME1"))
    assert note == "full range 100..300, MONOCHROME1 inverted"
    assert np.allclose(grey[0], [1.0, 0.5, 0.0])


def test_each_frame_is_an_image_over_the_range_of_all_frames() -> None:
    frames, _ = pixels.grey_frames(_image(np.array([[[0, 50]], [[50, 100]]]), NumberOfFrames=2))
    assert [list(f[0]) for f in frames] == [[0.0, 0.5], [0.5, 1.0]]


def test_colour_is_converted_to_grey_with_a_note() -> None:
    ds = _dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = 1, 3, 3, 0
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes([255, 0, 0, 0, 255, 0, 255, 255, 255])
    grey, note = _grey(ds)
    assert note == "colour converted to grey"
    assert np.allclose(grey[0], [0.299, 0.587, 1.0])


def test_no_pixel_data_is_not_printable() -> None:
    with pytest.raises(pixels.NotPrintable, match="no pixel data"):
        pixels.grey_frames(Dataset())


def test_replicate_resizes_to_the_box_with_nearest_pixels_and_quantises() -> None:
    grey = np.array([[0.0, 1.0], [0.5, 0.25]])
    image = pixels.prepare(grey, film.Box(1, 4, 6), 1.0, PrintSettings(magnification="REPLICATE", bits=8))
    assert image.pixels.shape == (4, 4) and image.pixels.dtype == np.uint8
    assert image.pixels[0].tolist() == [0, 0, 255, 255] and image.pixels[3].tolist() == [128, 128, 64, 64]


def test_the_image_box_item_is_a_basic_grayscale_image_sequence_item() -> None:
    item = pixels.image_item(pixels.Printable(np.full((3, 3), 7, dtype=np.uint8), 8))
    assert (item.Rows, item.Columns, item.BitsAllocated, item.BitsStored, item.HighBit) == (3, 3, 8, 8, 7)
    assert item.PhotometricInterpretation == "MONOCHROME2" and len(item.PixelData) == 10  # 9 bytes, padded even
    wide = pixels.image_item(pixels.Printable(np.array([[4095, 1]], dtype=np.uint16), 12))
    assert (wide.BitsAllocated, wide.BitsStored, wide["PixelData"].VR) == (16, 12, "OW")
    assert wide.PixelData == b"\xff\x0f\x01\x00"


# -- statuses ----------------------------------------------------------------------------------------------------
def test_print_statuses_have_their_names_and_verdicts() -> None:
    assert print_status_text(0xC603) == "0xC603 image size is larger than image box size"
    assert print_status_text(0xB604).startswith("0xB604 image size is larger than image box size, the image has")
    assert print_status_text(0xB6FF) == "0xB6FF warning"
    assert is_print_warning(0xB605) and is_print_warning(0x0116) and not is_print_warning(0xC603)
    assert classify_print_failure(0xC603) is SendVerdict.PERMANENT
    assert classify_print_failure(0x0106) is SendVerdict.PERMANENT
    assert classify_print_failure(0xC602) is SendVerdict.RETRY  # the print queue is full: later
    assert classify_print_failure(0xA700) is SendVerdict.RETRY


# -- the stage ---------------------------------------------------------------------------------------------------
def test_the_print_stage_takes_printers_only() -> None:
    from plugins.printing import PrintStage

    cfg = parse_config(
        {"peers": {"PRINTER": _printer(), "PACS": {"ae_title": "PACS", "host": "h", "port": 104}}}, Path("/tmp")
    )
    stage = PrintStage()
    assert stage.check({"to": "PRINTER"}, cfg) == []
    assert stage.check("PACS", cfg) == [
        "peer 'PACS' is not a printer (a DICOM peer with a print section, e.g. print: {})"
    ]
    assert stage.check(["NOPE"], cfg)[0].startswith("unknown peer 'NOPE'")
    assert stage.check({"to": "PRINTER", "copies": 2}, cfg) == [
        "unknown argument(s) ['copies'] (expected ['group', 'settle_seconds', 'to'])"
    ]
