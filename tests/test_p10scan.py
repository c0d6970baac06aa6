"""The header scan (pure logic, no network): it reads the values pydicom reads, vouches for no object pydicom
would not read whole, and leaves everything unusual to pydicom."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from router.intake.envelope import Envelope, HeaderValues, Source, dataset_text, read_values_as_they_came
from router.intake.p10scan import _text_vr, scan_p10

from peers import DATA_ROOT, pydicom_reads_whole

FILES = sorted((DATA_ROOT / "test_files").glob("**/*.dcm")) + sorted((DATA_ROOT / "charset_files").glob("*.dcm"))


def decoded(raw: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(BytesIO(raw), stop_before_pixels=True)


@pytest.fixture(autouse=True, scope="module")
def router_reading_mode() -> None:
    read_values_as_they_came()


def test_most_of_the_corpus_is_scanned_and_the_rest_left_to_pydicom() -> None:
    scanned = {p.name for p in FILES if scan_p10(p.read_bytes()) is not None}
    assert len(scanned) > 70
    assert {"CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "chrH31.dcm"} <= scanned
    left = {"MR_small_bigendian.dcm", "image_dfl.dcm", "no_meta.dcm", "MR_truncated.dcm", "SC_rgb_jpeg.dcm"}
    assert not left & scanned, "big endian, deflated, without file meta, cut short, VRs pydicom guesses at"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_scanned_values_are_pydicoms(path: Path) -> None:
    raw = path.read_bytes()
    scan = scan_p10(raw)
    if scan is None:
        return
    ds = decoded(raw)
    assert scan.transfer_syntax == str(ds.file_meta.TransferSyntaxUID)
    assert set(ds.keys()) <= set(scan.elements)
    compared = 0
    for elem in ds:
        if not elem.keyword or _text_vr(elem.tag) is None:
            continue
        found = scan.text(elem.tag)
        if found is not None:
            assert found == dataset_text(ds, elem.keyword, 1 << 30), elem.keyword
            compared += 1
    assert compared or not any(_text_vr(e.tag) for e in ds)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_an_object_cut_anywhere_is_never_vouched_for_unless_pydicom_reads_it_whole(path: Path) -> None:
    raw = path.read_bytes()
    step = max(1, len(raw) // 97)
    for cut in range(132, len(raw), step):
        if scan_p10(raw[:cut]) is not None:
            assert pydicom_reads_whole(raw[:cut]), f"cut at {cut} of {len(raw)} bytes"


def test_text_that_is_not_plain_ascii_is_read_by_pydicom() -> None:
    raw = (DATA_ROOT / "charset_files" / "chrH31.dcm").read_bytes()  # Japanese, ISO 2022 escapes
    scan = scan_p10(raw)
    assert scan is not None
    ds = decoded(raw)
    assert scan.text(0x00100010) is None  # PatientName
    values = HeaderValues(scan, lambda: ds)
    assert values.text("PatientName") == dataset_text(ds, "PatientName") != ""
    assert values.text("SOPInstanceUID") == dataset_text(ds, "SOPInstanceUID")


def p10(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def sample() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.1"
    ds.PatientID = "P 1 "
    ds.ImageType = ["ORIGINAL", "PRIMARY "]
    ds.InstanceNumber = " 7"
    ds.SliceLocation = "1.50"
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_values_as_text_in_both_little_endian_encodings(syntax: str) -> None:
    scan = scan_p10(p10(sample(), syntax))
    assert scan is not None
    assert scan.text(0x00100020) == "P 1"  # PatientID: surrounding spaces stripped, inner ones kept
    assert scan.text(0x00080008) == "ORIGINAL\\PRIMARY"
    assert scan.text(0x00200013) == "7"
    assert scan.text(0x00201041) == "1.50"  # a DS keeps its digits
    assert scan.text(0x00080020) == ""  # StudyDate: absent
    assert scan.text(0x00280010) is None  # Rows: not text
    assert scan.meta_text(0x00020003) == "1.2.3.4"


def test_a_number_that_is_not_one_is_left_to_pydicom() -> None:
    ds = sample()
    ds.InstanceNumber = "77777"
    scan = scan_p10(p10(ds).replace(b"77777 ", b"seven "))
    assert scan is not None and scan.text(0x00200013) is None


def test_nested_undefined_length_sequences_are_walked_and_a_missing_delimiter_is_refused() -> None:
    ds = sample()
    inner = Dataset()
    inner.CodeValue = "X"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.9"
    item.ConceptNameCodeSequence = [inner]
    ds.ReferencedImageSequence = [item]
    ds["ReferencedImageSequence"].is_undefined_length = True
    item["ConceptNameCodeSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    raw = p10(ds, ImplicitVRLittleEndian)
    assert scan_p10(raw) is not None
    delimiter = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    assert raw.count(delimiter) == 2
    last = raw.rindex(delimiter)
    assert scan_p10(raw[:last] + raw[last + 8 :]) is None  # the outer sequence never closes


def test_a_scanned_envelope_decodes_nothing_until_asked() -> None:
    raw = p10(sample())
    env = Envelope.from_p10(raw, Source("file"))
    assert (env.sop_instance_uid, env.sop_class_uid) == ("1.2.3.4", "1.2.840.10008.5.1.4.1.1.7")
    assert env.transfer_syntax == ExplicitVRLittleEndian
    assert env.stored_values().text("PatientID") == "P 1"
    assert env._header is None, "no pydicom data set was built"
    assert env.header.PatientID == "P 1"
    assert env._header is not None
