"""``router import`` and character sets (the syngo.share import statement, section 6): every set of its table
is read; an invalid set, or text that does not decode under the declared one, is refused with that reason; with
``--assume-charset`` (or ``import.assume_charset``) the text is read under the assumed set, declared in a valid
one, and the original Specific Character Set kept in Original Attributes Sequence."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from router.media import charsets

from media import CHARSET_FILES, outcomes, report, rows, run, site
from peers import SECONDARY_CAPTURE, make_instance

NAME = "Buc^Jérôme"


def _latin1_object(folder: Path, declared: str | None) -> Path:
    """An object whose Patient Name is Latin-1 bytes, declaring no set or ``declared`` (a wrong or invalid one)."""
    ds = make_instance(PatientID="LAT1")
    if declared is not None:
        ds.SpecificCharacterSet = declared
    ds["PatientName"].value = NAME.encode("latin-1")  # the bytes as the sending system wrote them
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "IM000001"
    ds.save_as(path, enforce_file_format=True)
    assert NAME.encode("latin-1") in path.read_bytes()
    return path


def _stored(config: Path) -> Path:
    (path,) = [r[0] for r in rows(config, "select path from instance")]
    return config.parent / "var" / path


def test_every_character_set_of_pydicoms_files_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = tmp_path / "cd"
    media.mkdir()
    files = sorted(CHARSET_FILES.glob("chr*.dcm"))
    names = {}
    for src in files:  # they share SOP Instance UIDs, two have none: new UIDs, every text value's bytes kept
        ds = dcmread(src)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", SECONDARY_CAPTURE)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.save_as(media / src.name, enforce_file_format=True)
        names[ds.SOPInstanceUID] = str(dcmread(src).get("PatientName", ""))
    config = site(tmp_path / "site")
    code, _, err = run(capsys, config, "import", str(media), "--report", str(tmp_path / "r.json"))
    assert code == 0, err
    assert outcomes(report(tmp_path / "r.json")) == {"imported": len(files)}
    for sop_uid, path in rows(config, "select sop_uid, path from instance"):
        assert str(dcmread(config.parent / "var" / path).get("PatientName", "")) == names[sop_uid]
    declared = {tuple(charsets._declared(dcmread(f, stop_before_pixels=True))) for f in files}
    assert {("ISO_IR 192",), ("GB18030",), ("", "ISO 2022 IR 87"), ("", "ISO 2022 IR 149")} <= declared


@pytest.mark.parametrize(("declared", "reason"), [
    (None, "does not decode under the Specific Character Set (none: the default repertoire, ASCII)"),
    ("ISO_IR 192", "does not decode under the Specific Character Set (ISO_IR 192)"),
    ("LATIN1", "Specific Character Set 'LATIN1' is not a defined term"),
])  # fmt: skip
def test_latin1_text_under_no_or_the_wrong_set_is_refused_then_corrected(
    declared: str | None, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    media = tmp_path / "cd"
    original = _latin1_object(media, declared).read_bytes()
    config = site(tmp_path / "site")
    code, _, err = run(capsys, config, "import", str(media), "--report", str(tmp_path / "r.json"))
    (refused,) = report(tmp_path / "r.json")["files"]
    assert code == 1 and refused["outcome"] == "refused" and reason in refused["reason"], refused
    assert "Jérôme" not in err and "J\\xe9r" not in err, "the reason never quotes the text"
    assert rows(config, "select count(*) from instance") in ([], [(0,)])

    code, _, err = run(capsys, config, "import", str(media), "--assume-charset", "ISO_IR 100",
                       "--report", str(tmp_path / "r.json"))  # fmt: skip
    (imported,) = report(tmp_path / "r.json")["files"]
    assert code == 0, err
    assert imported["outcome"] == "imported" and "corrected to 'ISO_IR 100'" in imported["corrected"]
    stored = dcmread(_stored(config))
    assert stored.SpecificCharacterSet == "ISO_IR 100" and str(stored.PatientName) == NAME
    (change,) = stored.OriginalAttributesSequence
    assert change.ReasonForTheAttributeModification == "CORRECT"
    kept = change.ModifiedAttributesSequence[0]
    assert list(kept.keys()) == [0x00080005]
    assert (kept.SpecificCharacterSet or None) == declared, "the original value (empty when there was none)"
    assert NAME.encode("latin-1") in _stored(config).read_bytes(), "a defined term keeps the bytes"
    assert (media / "IM000001").read_bytes() == original, "the medium is not changed"


def test_a_codec_as_assumed_set_is_written_in_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = tmp_path / "cd"
    _latin1_object(media, "ISO_IR 192")
    config = site(tmp_path / "site", **{"import": {"assume_charset": "cp1252"}})  # the configuration's setting
    code, _, err = run(capsys, config, "import", str(media))
    assert code == 0, err
    stored = dcmread(_stored(config))
    assert stored.SpecificCharacterSet == "ISO_IR 192" and str(stored.PatientName) == NAME
    assert NAME.encode("utf-8") in _stored(config).read_bytes()
    assert stored.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].SpecificCharacterSet == "ISO_IR 192"
    charsets.check(_stored(config).read_bytes())  # what was stored now reads under what it declares


def test_text_that_fits_no_assumed_set_stays_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = tmp_path / "cd"
    ds = make_instance()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds["PatientName"].value = b"\xff\xfe^\x81"
    media.mkdir()
    ds.save_as(media / "IM1", enforce_file_format=True)
    config = site(tmp_path / "site")
    code, _, _ = run(capsys, config, "import", str(media), "--assume-charset", "ISO 2022 IR 6",
                     "--report", str(tmp_path / "r.json"))  # fmt: skip
    (refused,) = report(tmp_path / "r.json")["files"]
    assert code == 1 and "does not decode under the assumed set 'ISO 2022 IR 6' either" in refused["reason"]


@pytest.mark.parametrize(("terms", "valid"), [
    ([], True), (["ISO_IR 100"], True), (["ISO_IR 192"], True), (["GBK"], True), (["GB18030"], True),
    (["", "ISO 2022 IR 87"], True), (["ISO 2022 IR 13", "ISO 2022 IR 87"], True), (["ISO 2022 IR 6"], True),
    (["ISO_IR 192", "ISO 2022 IR 87"], False), (["", "ISO_IR 100"], False), (["UTF-8"], False), (["ISO_IR 6"], False),
])  # fmt: skip
def test_the_statements_table_is_what_is_accepted(terms: list[str], valid: bool) -> None:
    assert (charsets.invalid_terms(terms) == "") is valid


def test_the_corrected_object_keeps_every_other_byte(tmp_path: Path) -> None:
    path = _latin1_object(tmp_path, None)
    corrected = charsets.correct(path.read_bytes(), "ISO_IR 100")
    before, after = dcmread(path), dcmread(BytesIO(corrected))
    assert after.PixelData == before.PixelData
    changed = {e.keyword for e in after if e.tag not in before or before[e.tag].value != e.value}
    assert changed == {"SpecificCharacterSet", "OriginalAttributesSequence"}
