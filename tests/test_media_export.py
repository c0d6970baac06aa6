"""``router export``: stored studies as a General Purpose file-set with a DICOMDIR, read back by pydicom and by
``router import`` into a second router (byte-identical objects), with Import and Export audit messages; DCMTK reads
the file-set too (interop)."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet

from media import DICOMDIR_TESTS, outcomes, report, rows, run, site
from tools import dcmtk

CT_STUDY = "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.1"  # 4 CT slices of patient 77654033
CR_STUDY = "1.3.6.1.4.1.5962.1.1.0.0.0.1196527414.5534.0.1"  # 3 CR images, same patient
FILE_ID = re.compile(r"^[A-Z0-9_]{1,8}$")


def _stored(config: Path) -> dict[str, bytes]:
    """SOP Instance UID -> the stored file's bytes."""
    return {uid: (config.parent / "var" / path).read_bytes()
            for uid, path in rows(config, "select sop_uid, path from instance")}  # fmt: skip


@pytest.fixture
def first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A router holding pydicom's dicomdirtests objects, with an audit trail in a file."""
    config = site(tmp_path / "first", plugins={"audit": {"file": "audit.log"}})
    assert run(capsys, config, "import", str(DICOMDIR_TESTS / "DICOMDIR"))[0] == 0
    return config


def test_export_round_trip_is_byte_identical(first: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cd"
    code, text, err = run(capsys, first, "export", "--study", CT_STUDY, CR_STUDY, "--out", str(out))
    assert code == 0, err
    assert text.startswith("exported 7 object(s) of 2 study(ies)")
    fs = FileSet(dcmread(out / "DICOMDIR"))
    assert len(fs) == 7 and fs.ID == "ROUTER"
    stored = _stored(first)
    for instance in fs:
        parts = Path(instance.FileID).parts
        assert len(parts) <= 8 and all(FILE_ID.match(p) for p in parts), instance.FileID
        assert (out / instance.FileID).read_bytes() == stored[instance.SOPInstanceUID]
    assert {i.StudyInstanceUID for i in fs} == {CT_STUDY, CR_STUDY}
    assert "no viewer" in (out / "README.TXT").read_text()

    second = site(tmp_path / "second")
    code, _, err = run(capsys, second, "import", str(out), "--report", str(tmp_path / "r.json"))
    assert code == 0, err
    assert outcomes(report(tmp_path / "r.json")) == {"imported": 7, "unreferenced": 1}  # the README
    copied = _stored(second)
    assert copied == {uid: stored[uid] for uid in copied} and len(copied) == 7


def test_export_to_a_zip_and_import_it(first: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "study.zip"
    code, _, err = run(capsys, first, "export", "--study", CT_STUDY, "--patient-id", "77654033", "--out",
                       str(archive), "--no-readme")  # fmt: skip
    assert code == 0, err
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert "DICOMDIR" in names and len(names) == 5 and not any(n.endswith(".partial") for n in names)
    second = site(tmp_path / "second")
    code, out, err = run(capsys, second, "import", str(archive))
    assert code == 0 and "4 imported" in out, err
    assert _stored(second) == {uid: b for uid, b in _stored(first).items() if uid in _stored(second)}


def test_nothing_to_export_and_a_used_folder_are_refused(
    first: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, first, "export", "--study", CT_STUDY, "--patient-id", "SOMEONE-ELSE", "--out",
                       str(tmp_path / "none"))  # fmt: skip
    assert code == 1 and "nothing to export" in err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    code, _, err = run(capsys, first, "export", "--study", CT_STUDY, "--out", str(tmp_path / "used"))
    assert code == 1 and "exists" in err


def test_import_and_export_are_audited(first: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, first, "export", "--study", CT_STUDY, "--out", str(tmp_path / "cd"))[0] == 0
    log = (first.parent / "audit.log").read_text()
    imports = [line for line in log.splitlines() if 'csd-code="110107"' in line]
    exports = [line for line in log.splitlines() if 'csd-code="110106"' in line]
    assert len(imports) == 1 and len(exports) == 1
    assert f"file://{DICOMDIR_TESTS / 'DICOMDIR'}" in imports[0] and CT_STUDY in imports[0]
    assert f"file://{tmp_path / 'cd'}" in exports[0] and CT_STUDY in exports[0]
    assert 'csd-code="110155"' in imports[0] and 'csd-code="110154"' in exports[0]  # Source / Destination Media
    starts = [line for line in log.splitlines() if "router import" in line or "router export" in line]
    assert starts, "the import and export processes announce themselves (Application Start/Stop)"


@pytest.mark.interop  # DCMTK's dcmdump and dcmmkdir
def test_dcmtk_reads_the_exported_file_set(first: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cd"
    assert run(capsys, first, "export", "--study", CT_STUDY, CR_STUDY, "--out", str(out))[0] == 0
    dump = subprocess.run([dcmtk("dcmdump"), str(out / "DICOMDIR")], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0 and not re.search(r"^[EW]:", dump.stderr, re.M), dump.stderr
    assert dump.stdout.count("(0004,1430) CS [IMAGE]") == 7
    assert "=MediaStorageDirectoryStorage" in dump.stdout
    # dcmmkdir builds a General Purpose DICOMDIR of the same files, aborting on a file the profile does not allow
    check = subprocess.run(
        [dcmtk("dcmmkdir"), "-Pgp", "-a", "+r", "+id", str(out), "+D", str(tmp_path / "CHECKDIR"), "PT000000"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    records = dcmread(tmp_path / "CHECKDIR").DirectoryRecordSequence
    assert sum(r.DirectoryRecordType == "IMAGE" for r in records) == 7
