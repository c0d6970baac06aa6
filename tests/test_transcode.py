"""router.transcode and the transcode stage, in process: pydicom's own test files as sources, every target we write.

A lossless transcode must give back exactly the pixels pydicom decodes from the source; what cannot be done must
be a TranscodeError that says why, never a half-written object. DCMTK reads what we write (test_transcode_interop
covers the router and real peers).
"""

from __future__ import annotations

import logging
import subprocess
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from plugins.coerce import CoerceStage
from plugins.forward import ForwardStage
from plugins.transcode import TranscodeStage
from router.config import RouterConfig
from router.intake.envelope import Envelope, Source
from router.intake.stage import StageContext, StageError
from router.transcode import (
    SYNTAXES,
    TranscodeError,
    can_decode,
    can_encode,
    encodable,
    is_lossy,
    syntax_name,
    syntax_uid,
    target_problems,
    transcode,
)

from tools import dcmtk

LOSSLESS_TARGETS = ["explicit-le", "implicit-le", "deflated", "rle", "jpeg2000-lossless"]
# source file -> (its transfer syntax, what pydicom's decoder reports as Photometric Interpretation)
CORPUS = {
    "examples_ybr_color.dcm": "1.2.840.10008.1.2.4.50",  # JPEG baseline YBR_FULL_422, 30 frames
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": "1.2.840.10008.1.2.4.50",  # JPEG baseline YBR_FULL_422
    "JPGExtended.dcm": "1.2.840.10008.1.2.4.51",  # JPEG extended, 12 bits
    "SC_rgb_jpeg_gdcm.dcm": "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1, RGB
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless, signed 16 bits
    "SC_rgb_jls_lossy_line.dcm": "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless, RGB
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless, signed 16 bits
    "examples_jpeg2k.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless, YBR_RCT
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",
    "SC_rgb_rle_2frame.dcm": "1.2.840.10008.1.2.5",  # RGB, 2 frames
    "SC_rgb_rle_16bit_2frame.dcm": "1.2.840.10008.1.2.5",
    "MR_small_bigendian.dcm": "1.2.840.10008.1.2.2",
    "ExplVR_BigEnd.dcm": "1.2.840.10008.1.2.2",  # RGB
    "rtdose_expb.dcm": "1.2.840.10008.1.2.2",  # 32 bits, 15 frames
    "liver_expb_1frame.dcm": "1.2.840.10008.1.2.2",  # 1 bit
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",
    "MR_small_implicit.dcm": "1.2.840.10008.1.2",
    "CT_small.dcm": "1.2.840.10008.1.2.1",
    "SC_ybr_full_422_uncompressed.dcm": "1.2.840.10008.1.2.1",
    "examples_palette.dcm": "1.2.840.10008.1.2.1",
    "liver_1frame.dcm": "1.2.840.10008.1.2.1",  # 1 bit
}
# What cannot be encoded, and the reason the error must give.
REFUSED = {
    ("rtdose_expb.dcm", "rle"): "Bits Allocated: 32",  # RLE profile: 8 or 16 bits (PS3.5 8.2.2)
    ("rtdose_expb.dcm", "jpeg2000-lossless"): "at least 32 rows and columns",  # 10x10 (and 32 bits)
    ("liver_expb_1frame.dcm", "rle"): "1-bit",
    ("liver_expb_1frame.dcm", "jpeg2000-lossless"): "1-bit",
    ("liver_1frame.dcm", "rle"): "1-bit",
    ("liver_1frame.dcm", "jpeg2000-lossless"): "1-bit",
}
LOSSY_SOURCES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"}


def raw_of(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(BytesIO(data))


def expected_photometric(source: Dataset) -> str:
    """What the decoded pixels are: lossy JPEG in YCbCr becomes RGB, JPEG 2000's RCT/ICT are undone."""
    pi = str(source.PhotometricInterpretation)
    ts = source.file_meta.TransferSyntaxUID
    if ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51") and pi.startswith("YBR"):
        return "RGB"
    if pi in ("YBR_RCT", "YBR_ICT"):
        return "RGB"
    if pi == "YBR_FULL_422" and not ts.is_compressed:
        return "YBR_FULL"  # expanded to full resolution when the pixels have to be decoded
    return pi


# -- names ------------------------------------------------------------------------------------------------------
def test_names_and_uids_resolve_and_unknown_names_list_the_valid_ones() -> None:
    assert syntax_uid("jpeg2000-lossless") == JPEG2000Lossless
    assert syntax_uid("JPEG2000") == JPEG2000
    assert syntax_uid("explicit-le") == ExplicitVRLittleEndian
    assert syntax_uid("1.2.840.10008.1.2.5") == RLELossless, "a full UID is accepted"
    assert syntax_uid("jpeg-lossless") == "1.2.840.10008.1.2.4.70", "SV1"
    assert all(syntax_name(uid) == name for name, uid in SYNTAXES.items())
    assert syntax_name("1.2.840.10008.1.2.4.201").startswith("High-Throughput JPEG 2000")
    with pytest.raises(TranscodeError) as err:
        syntax_uid("jpeg3000")
    assert "'jpeg3000'" in str(err.value)
    assert all(name in str(err.value) for name in SYNTAXES)
    with pytest.raises(TranscodeError):
        syntax_uid("1.2.3.4")  # a UID, but not a transfer syntax


def test_encodable_syntaxes_include_what_the_issue_requires() -> None:
    assert {"explicit-le", "implicit-le", "deflated", "rle", "jpeg2000-lossless", "jpeg2000"} <= set(encodable())
    assert not can_encode(ExplicitVRBigEndian), "big endian is read, never written"
    assert not can_encode("1.2.840.10008.1.2.4.100"), "no MPEG-2 encoder"
    assert all(can_decode(uid) for uid in SYNTAXES.values()), "every named syntax is read"
    assert not can_decode("1.2.840.10008.1.2.4.100"), "video is not"
    assert [name for name, uid in SYNTAXES.items() if is_lossy(uid)] == [
        "jpeg-baseline",
        "jpeg-extended",
        "jpeg-ls-near-lossless",
        "jpeg2000",
    ]
    problems = target_problems("jpeg-baseline", allow_lossy=True)
    assert problems and "cannot write jpeg-baseline here" in problems[0] and "jpeg2000-lossless" in problems[0]
    assert "big-endian is read but never written" in target_problems("big-endian")[0]


# -- lossless round trips ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", LOSSLESS_TARGETS)
@pytest.mark.parametrize("name", list(CORPUS))
def test_lossless_transcode_gives_the_source_pixels(name: str, target: str) -> None:
    raw = raw_of(name)
    source = read(raw)
    assert source.file_meta.TransferSyntaxUID == CORPUS[name], "the corpus is what it says"
    if (name, target) in REFUSED:
        with pytest.raises(TranscodeError) as err:
            transcode(raw, target)
        assert REFUSED[(name, target)] in str(err.value)
        return
    out = transcode(raw, target)
    if source.file_meta.TransferSyntaxUID == syntax_uid(target):
        assert out is raw, "already in the target syntax: nothing to do"
        return
    result = read(out)
    assert result.file_meta.TransferSyntaxUID == syntax_uid(target)
    assert result.SOPInstanceUID == source.SOPInstanceUID, "the same instance, in another encoding"
    assert result.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert np.array_equal(result.pixel_array, source.pixel_array), f"{name} -> {target}: pixels differ"
    frames = int(source.get("NumberOfFrames", 1) or 1)
    assert int(result.get("NumberOfFrames", 1) or 1) == frames, "every frame"
    if result.file_meta.TransferSyntaxUID.is_compressed or source.file_meta.TransferSyntaxUID.is_compressed:
        assert result.PhotometricInterpretation == expected_photometric(source)
    else:
        assert result.PhotometricInterpretation == source.PhotometricInterpretation, "only the encoding changed"
    if result.SamplesPerPixel > 1 and result.file_meta.TransferSyntaxUID != RLELossless:
        assert result.PlanarConfiguration == 0
    assert result.HighBit == result.BitsStored - 1
    assert result.BitsAllocated >= result.BitsStored
    if CORPUS[name] in LOSSY_SOURCES:
        assert result.LossyImageCompression == "01", "decoded lossy pixels stay marked as lossy"
    else:
        assert result.get("LossyImageCompression") == source.get("LossyImageCompression")
    assert "ExtendedOffsetTable" not in result or result.file_meta.TransferSyntaxUID.is_compressed


def test_native_to_native_changes_only_the_encoding() -> None:
    raw = raw_of("CT_small.dcm")
    source = read(raw)
    for target in (ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        result = read(transcode(raw, target))
        assert {e.tag: e.value for e in result} == {e.tag: e.value for e in source}


def test_already_in_the_target_syntax_returns_the_bytes_unchanged() -> None:
    raw = raw_of("MR_small_jp2klossless.dcm")
    assert transcode(raw, "jpeg2000-lossless") is raw
    assert transcode(raw, JPEG2000Lossless) is raw


@pytest.mark.parametrize("target", ["jpeg2000-lossless", "implicit-le", "deflated", "rle"])
def test_objects_without_pixel_data_change_only_their_encoding(target: str) -> None:
    raw = raw_of("test-SR.dcm")
    source = read(raw)
    result = read(transcode(raw, target))
    assert result.file_meta.TransferSyntaxUID == syntax_uid(target)
    assert {e.tag: e.value for e in result} == {e.tag: e.value for e in source}


def test_big_endian_other_word_values_are_swapped_too() -> None:
    """OW values other than Pixel Data (here a LUT and an overlay) must change byte order with the dataset."""
    ds = read(raw_of("MR_small.dcm"))
    pixels = ds.pixel_array
    lut = np.array([0, 1, 256, 4095, 65535], dtype="<u2")
    ds.RedPaletteColorLookupTableData = lut.astype(">u2").tobytes()
    ds["RedPaletteColorLookupTableData"].VR = "OW"
    ds.PixelData = pixels.astype(">i2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    out = BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    result = read(transcode(out.getvalue(), "explicit-le"))
    assert np.frombuffer(result.RedPaletteColorLookupTableData, "<u2").tolist() == lut.tolist()
    assert np.array_equal(result.pixel_array, pixels)


# -- lossy ------------------------------------------------------------------------------------------------------
def test_lossy_target_must_be_asked_for() -> None:
    raw = raw_of("CT_small.dcm")
    with pytest.raises(TranscodeError, match="jpeg2000 is lossy"):
        transcode(raw, "jpeg2000")
    with pytest.raises(TranscodeError, match="lossy syntaxes only"):
        transcode(raw, "jpeg2000-lossless", ratio=10)
    with pytest.raises(TranscodeError, match="not both"):
        transcode(raw, "jpeg2000", allow_lossy=True, ratio=10, psnr=40)
    with pytest.raises(TranscodeError, match="above 1"):
        transcode(raw, "jpeg2000", allow_lossy=True, ratio=0.5)


@pytest.mark.parametrize("name", ["CT_small.dcm", "examples_rgb_color.dcm", "examples_ybr_color.dcm"])
def test_lossy_jpeg2000_records_the_lossy_step(name: str) -> None:
    raw = raw_of(name)
    source = read(raw)
    result = read(transcode(raw, "jpeg2000", allow_lossy=True, ratio=8))
    assert result.file_meta.TransferSyntaxUID == JPEG2000
    assert result.LossyImageCompression == "01"
    methods, ratios = values(result, "LossyImageCompressionMethod"), values(result, "LossyImageCompressionRatio")
    assert ratios[:-1] == values(source, "LossyImageCompressionRatio"), "our step is appended to earlier ones"
    assert methods[-1] == "ISO_15444_1"
    assert 2 < float(ratios[-1]) < 40
    assert result.SOPInstanceUID == source.SOPInstanceUID
    assert result.PhotometricInterpretation == expected_photometric(source)
    decoded, original = result.pixel_array.astype(float), source.pixel_array.astype(float)
    assert decoded.shape == original.shape
    span = original.max() - original.min()
    assert np.abs(decoded - original).mean() < 0.02 * span, "the same picture, with some loss"


def values(ds: Dataset, keyword: str) -> list[Any]:
    if keyword not in ds:
        return []
    value = ds[keyword].value
    return list(value) if isinstance(value, MultiValue) else [value]


def test_lossy_step_appends_to_earlier_ratio_and_method() -> None:
    ds = read(raw_of("CT_small.dcm"))
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "5"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    result = read(transcode(out.getvalue(), "jpeg2000", allow_lossy=True, psnr=50))
    ratios = [float(v) for v in values(result, "LossyImageCompressionRatio")]
    assert len(ratios) == 2 and ratios[0] == 5 and ratios[1] > 1
    assert values(result, "LossyImageCompressionMethod") == ["ISO_10918_1", "ISO_15444_1"]


def test_jpeg2000_source_is_marked_lossy_unless_the_sender_said_otherwise() -> None:
    """1.2.840.10008.1.2.4.91 may hold lossy or lossless pixels: trust the sender's statement, else assume lossy."""
    j2k = read(raw_of("JPEG2000.dcm"))
    for stated, expected in ((None, "01"), ("00", "00"), ("01", "01")):
        if stated is None:
            del j2k.LossyImageCompression
        else:
            j2k.LossyImageCompression = stated
        out = BytesIO()
        j2k.save_as(out, enforce_file_format=True)
        assert read(transcode(out.getvalue(), "explicit-le")).LossyImageCompression == expected


# -- what cannot be done ----------------------------------------------------------------------------------------
def test_undecodable_and_unwritable_give_a_clear_error() -> None:
    with pytest.raises(TranscodeError, match="cannot decode the jpeg-extended pixel data"):
        transcode(raw_of("JPEG-lossy.dcm"), "explicit-le")  # pydicom's deliberately damaged JPEG
    with pytest.raises(TranscodeError, match="not a readable Part 10 object"):
        transcode(b"plain text, not DICOM " * 20, "explicit-le")
    with pytest.raises(TranscodeError, match="read but never written"):
        transcode(raw_of("CT_small.dcm"), "big-endian")
    with pytest.raises(TranscodeError, match="at least 32 rows and columns"):
        transcode(raw_of("SC_rgb_small_odd.dcm"), "jpeg2000-lossless")
    with pytest.raises(TranscodeError, match=r"cannot encode the pixel data in jpeg2000.*PALETTE COLOR"):
        transcode(raw_of("examples_palette.dcm"), "jpeg2000", allow_lossy=True)  # not allowed by PS3.5 8.2.4
    with pytest.raises(TranscodeError, match="no decoder exists"):
        mpeg = read(raw_of("CT_small.dcm"))
        mpeg.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        mpeg.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
        out = BytesIO()
        mpeg.save_as(out, enforce_file_format=True)
        transcode(out.getvalue(), "explicit-le")


# -- DCMTK reads what we write ------------------------------------------------------------------------------------
def dcmtk_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, errors="replace", timeout=60)


@pytest.mark.interop  # DCMTK dcmdump, dcmdrle, dcmconv
@pytest.mark.parametrize(
    "name, target, lossy",
    [
        ("examples_ybr_color.dcm", "rle", False),
        ("MR_small_jp2klossless.dcm", "rle", False),
        ("MR_small_RLE.dcm", "jpeg2000-lossless", False),
        ("examples_jpeg2k.dcm", "explicit-le", False),
        ("SC_rgb_jpeg_gdcm.dcm", "implicit-le", False),
        ("MR_small_bigendian.dcm", "deflated", False),
        ("CT_small.dcm", "jpeg2000", True),
    ],
)
def test_dcmtk_reads_what_we_write(tmp_path: Path, name: str, target: str, lossy: bool) -> None:
    out = transcode(raw_of(name), target, allow_lossy=lossy)
    path = tmp_path / "out.dcm"
    path.write_bytes(out)
    dump = dcmtk_run(dcmtk("dcmdump"), "-Un", str(path))
    assert dump.returncode == 0 and "E:" not in dump.stderr and "W:" not in dump.stderr, dump.stderr
    assert f"(0002,0010) UI [{syntax_uid(target)}]" in dump.stdout
    expected = read(raw_of(name)).pixel_array
    plain = tmp_path / "plain.dcm"
    if target == "rle":  # DCMTK's own RLE decoder must give the same pixels
        done = dcmtk_run(dcmtk("dcmdrle"), str(path), str(plain))
    elif syntax_uid(target).is_compressed:  # DCMTK has no JPEG 2000 codec: the structure must still parse
        done = dcmtk_run(dcmtk("dcmconv"), str(path), str(plain))
        assert done.returncode == 0, done.stderr
        assert read(plain.read_bytes()).file_meta.TransferSyntaxUID == syntax_uid(target)
        return
    else:
        done = dcmtk_run(dcmtk("dcmconv"), "+te", str(path), str(plain))
    assert done.returncode == 0, done.stderr
    converted = read(plain.read_bytes())
    assert converted.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(converted.pixel_array, expected)


# -- the stage, in process --------------------------------------------------------------------------------------
CONFIG = RouterConfig.model_validate({"peers": {"PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}}})


def envelope(name: str) -> Envelope:
    return Envelope.from_p10(raw_of(name), Source("dimse", calling_ae="MOD"))


def run(env: Envelope, *calls: tuple[Any, Any], dry_run: bool = False) -> tuple[StageContext, list[str]]:
    ctx = StageContext(config=CONFIG, dry_run=dry_run, rule="r")
    texts = [stage.run(env, args, ctx) for stage, args in calls]
    return ctx, texts


def test_stage_check_reports_mistakes() -> None:
    stage = TranscodeStage()
    assert stage.check("explicit-le", CONFIG) == []
    assert stage.check({"to": "jpeg2000-lossless"}, CONFIG) == []
    assert stage.check({"to": "jpeg2000", "lossy": True, "ratio": 20}, CONFIG) == []
    assert stage.check({"to": "1.2.840.10008.1.2.5", "on_error": "refuse"}, CONFIG) == []
    [unknown] = stage.check({"to": "jpg"}, CONFIG)
    assert "unknown transfer syntax 'jpg'" in unknown and "jpeg2000-lossless" in unknown and "explicit-le" in unknown
    assert stage.check({"to": "jpeg2000"}, CONFIG) == [
        "jpeg2000 is lossy: it must be asked for explicitly (add 'lossy: true')"
    ]
    assert "cannot write jpeg-baseline here" in stage.check({"to": "jpeg-baseline", "lossy": True}, CONFIG)[0]
    assert stage.check({"to": "rle", "colour": 1}, CONFIG) == [
        "unknown argument 'colour' (expected to, lossy, ratio, psnr, on_error)"
    ]
    assert stage.check({"to": "rle", "on_error": "drop"}, CONFIG) == ["on_error: must be one of forward, refuse"]
    assert stage.check({"lossy": True}, CONFIG) == ["needs 'to: NAME' (a transfer syntax name or UID)"]
    assert stage.check(["rle"], CONFIG)[0].startswith("expects a transfer syntax name")
    assert stage.check({"to": "jpeg2000", "lossy": "yes", "ratio": "ten"}, CONFIG) == [
        "lossy: must be true or false",
        "ratio: must be a number",
    ]


def test_stage_hands_the_transcoded_object_to_forward_and_keeps_the_original() -> None:
    env = envelope("MR_small_jp2klossless.dcm")
    raw = env.raw
    ctx, texts = run(env, (TranscodeStage(), "explicit-le"), (ForwardStage(), "PACS"))
    assert texts[0].startswith("transcoded jpeg2000-lossless to explicit-le (")
    [fwd] = ctx.forwards
    assert fwd.modified and fwd.transfer_syntax == ExplicitVRLittleEndian
    assert read(fwd.payload).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(read(fwd.payload).pixel_array, read(raw).pixel_array)
    assert env.raw is raw, "the store keeps what was received"
    assert env.transfer_syntax == JPEG2000Lossless, "and indexes it under the syntax it came in"


def test_stage_combines_with_coerce_in_either_order() -> None:
    coerce = (CoerceStage(), {"set": {"InstitutionName": "Routed"}})
    env = envelope("MR_small_RLE.dcm")
    ctx, _ = run(env, coerce, (TranscodeStage(), {"to": "jpeg2000-lossless"}), (ForwardStage(), "PACS"))
    first = read(ctx.forwards[0].payload)
    assert first.InstitutionName == "Routed" and first.file_meta.TransferSyntaxUID == JPEG2000Lossless
    env = envelope("MR_small_RLE.dcm")
    ctx, _ = run(env, (TranscodeStage(), {"to": "jpeg2000-lossless"}), coerce, (ForwardStage(), "PACS"))
    second = read(ctx.forwards[0].payload)
    assert second.InstitutionName == "Routed" and second.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert ctx.forwards[0].transfer_syntax == JPEG2000Lossless
    assert np.array_equal(second.pixel_array, read(raw_of("MR_small_RLE.dcm")).pixel_array)
    assert env.transfer_syntax == RLELossless


def test_stage_failure_passes_the_object_on_unchanged_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    env = envelope("JPEG-lossy.dcm")
    with caplog.at_level(logging.WARNING, logger="plugins.transcode"):
        ctx, texts = run(env, (TranscodeStage(), "explicit-le"), (ForwardStage(), "PACS"))
    assert "cannot transcode jpeg-extended to explicit-le" in texts[0] and "passed on unchanged" in texts[0]
    [fwd] = ctx.forwards
    assert fwd.payload is env.raw and not fwd.modified and fwd.transfer_syntax == "1.2.840.10008.1.2.4.51"
    [record] = [r for r in caplog.records if r.name == "plugins.transcode"]
    assert str(env.sop_instance_uid) in record.getMessage() and "failed" in record.getMessage()
    assert "PatientName" not in record.getMessage() and str(env.header.PatientName) not in record.getMessage()


def test_stage_failure_refuses_the_object_when_told_to() -> None:
    env = envelope("JPEG-lossy.dcm")
    with pytest.raises(StageError, match="cannot transcode jpeg-extended to explicit-le"):
        run(env, (TranscodeStage(), {"to": "explicit-le", "on_error": "refuse"}))


def test_stage_dry_run_says_what_would_happen(caplog: pytest.LogCaptureFixture) -> None:
    _, texts = run(envelope("CT_small.dcm"), (TranscodeStage(), {"to": "rle"}), dry_run=True)
    assert texts[0].startswith("would transcode explicit-le to rle (")
    _, texts = run(envelope("JPEG-lossy.dcm"), (TranscodeStage(), "rle"), dry_run=True)
    assert "would pass on unchanged" in texts[0]
    assert not [r for r in caplog.records if r.name == "plugins.transcode"], "a dry run warns no operator"
    _, texts = run(envelope("MR_small_RLE.dcm"), (TranscodeStage(), "rle"))
    assert texts[0] == "transcode: already rle, nothing to do"
