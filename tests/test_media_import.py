"""``router import``: DICOM media (pydicom's dicomdirtests in every variant, lower-case names, a zip, damaged media)
through the router's own intake, with selection, --list, --dry-run and the --report JSON (docs/media.md)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from media import (
    DICOMDIR_TESTS,
    OBJECTS,
    copy_media,
    outcomes,
    report,
    rows,
    run,
    shift_offsets,
    site,
    zip_folder,
)

VARIANTS = ["DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-implicit", "DICOMDIR-nooffset", "DICOMDIR-reordered",
            "DICOMDIR-nopatient"]  # fmt: skip
DAMAGE_REPORTED = {"DICOMDIR-bigEnd": "1.2.840.10008.1.2.2", "DICOMDIR-implicit": "1.2.840.10008.1.2",
                   "DICOMDIR-nopatient": "orphans"}  # fmt: skip


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_dicomdirtests_variant_is_imported_and_its_damage_reported(
    variant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = site(tmp_path / "site")
    code, out, err = run(capsys, config, "import", str(DICOMDIR_TESTS / variant), "--report", str(tmp_path / "r.json"))
    data = report(tmp_path / "r.json")
    assert code == 0, err
    assert data["counts"]["imported"] == OBJECTS
    assert f"{OBJECTS} imported" in out
    if variant in DAMAGE_REPORTED:
        assert any(DAMAGE_REPORTED[variant] in p for p in data["problems"]), data["problems"]
        assert "damaged:" in err
    else:
        assert data["problems"] == []
    assert rows(config, "select count(*) from instance") == [(OBJECTS,)]
    # the rule `when: {source: media}` queued every object for PACS; the `source: dimse` rule matched none
    assert rows(config, "select peer, count(*) from job group by peer") == [("PACS", OBJECTS)]


def test_the_same_media_again_is_all_duplicates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path / "site")
    assert run(capsys, config, "import", str(DICOMDIR_TESTS / "DICOMDIR"))[0] == 0
    code, _, _ = run(capsys, config, "import", str(DICOMDIR_TESTS / "DICOMDIR"), "--report", str(tmp_path / "r.json"))
    assert code == 0
    assert outcomes(report(tmp_path / "r.json")).get("duplicate") == OBJECTS
    assert rows(config, "select count(*) from job") == [(OBJECTS,)], "a duplicate queues nothing again"


def test_lower_case_names_are_matched_to_the_file_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = copy_media(tmp_path / "cdrom", lower=True)
    assert (media / "77654033" / "cr1" / "6154").exists() and (media / "dicomdir").exists()
    config = site(tmp_path / "site")
    code, _, err = run(capsys, config, "import", str(media), "--report", str(tmp_path / "r.json"))
    assert code == 0, err
    assert outcomes(report(tmp_path / "r.json")) == {"imported": OBJECTS}


def test_a_zip_is_read_in_place_and_left_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = zip_folder(copy_media(tmp_path / "cd"), tmp_path / "cd.zip")
    before = (hashlib.sha256(archive.read_bytes()).hexdigest(), archive.stat().st_mtime_ns)
    config = site(tmp_path / "site")
    code, _, err = run(capsys, config, "import", str(archive), "--report", str(tmp_path / "r.json"))
    assert code == 0, err
    assert outcomes(report(tmp_path / "r.json")) == {"imported": OBJECTS}
    assert (hashlib.sha256(archive.read_bytes()).hexdigest(), archive.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cd", "cd.zip", "r.json", "site"], "nothing extracted"


def test_damaged_media_is_reported_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = copy_media(tmp_path / "cd")
    assert shift_offsets(media / "DICOMDIR", 2) > 30  # every record offset points 2 bytes past its record
    (media / "77654033" / "CR2" / "6247").unlink()  # a record names a missing file
    (media / "77654033" / "CR3" / "6278").write_text("this is not DICOM\n")  # a named file that is no object
    (media / "EXTRA").mkdir()
    shutil.copyfile(media / "77654033" / "CR1" / "6154", media / "EXTRA" / "IM1")  # no record names it
    (media / "AUTORUN.INF").write_text("[autorun]\n")
    before = _digest(media)
    config = site(tmp_path / "site")
    code, _, err = run(capsys, config, "import", str(media), "--report", str(tmp_path / "r.json"))
    data = report(tmp_path / "r.json")
    assert code == 1, "damaged files make the exit status non-zero"
    assert outcomes(data) == {"imported": OBJECTS - 2, "damaged": 2, "unreferenced": 2}
    by_file = {f["file"]: f for f in data["files"]}
    assert by_file["77654033/CR2/6247"]["reason"] == "named by the DICOMDIR but not on the medium"
    assert by_file["77654033/CR3/6278"]["reason"] == "not a DICOM Part 10 file"
    assert by_file["EXTRA/IM1"]["outcome"] == by_file["AUTORUN.INF"]["outcome"] == "unreferenced"
    assert any("offset(s) point a few bytes off" in p and "+2" in p for p in data["problems"]), data["problems"]
    assert "damaged: 77654033/CR2/6247" in err
    assert _digest(media) == before, "media is read-only"


def test_a_folder_without_dicomdir_is_walked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = copy_media(tmp_path / "usb")
    (media / "DICOMDIR").unlink()
    (media / "VIEWER.EXE").write_bytes(b"MZ" + bytes(300))
    config = site(tmp_path / "site")
    code, _, _ = run(capsys, config, "import", str(media), "--report", str(tmp_path / "r.json"))
    assert code == 0, "a file that is not DICOM on media without DICOMDIR is no failure"
    assert outcomes(report(tmp_path / "r.json")) == {"imported": OBJECTS, "not-dicom": 1}


def test_selection_by_patient_study_series_and_modality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path / "site")
    media = str(DICOMDIR_TESTS / "DICOMDIR")
    code, _, _ = run(capsys, config, "import", media, "--patient-id", "77654033", "--modality", "CT", "--dry-run",
                     "--report", str(tmp_path / "r.json"))  # fmt: skip
    data = report(tmp_path / "r.json")
    assert code == 0
    chosen = [f for f in data["files"] if f["outcome"] == "would-import"]
    assert len(chosen) == 4 and {f["file"].split("/")[1] for f in chosen} == {"CT2"}
    assert {f["reason"] for f in data["files"] if f["outcome"] == "not-selected"} == {
        "left out by --patient-id",
        "left out by --modality",
    }
    study, series = chosen[0]["study_uid"], chosen[0]["series_uid"]
    code, out, _ = run(capsys, config, "import", media, "--study", study, "--series", series)
    assert code == 0 and "4 imported" in out and f"{OBJECTS - 4} not-selected" in out
    accession_study = rows(config, "select accession_number from study")[0][0]
    assert accession_study, "the accession number selects too"


def test_list_prints_the_tree_and_stores_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path / "site")
    code, out, _ = run(capsys, config, "import", str(DICOMDIR_TESTS / "DICOMDIR"), "--list")
    assert code == 0
    patients = [line for line in out.splitlines() if line.startswith("patient ")]
    assert patients == ["patient 77654033 Doe^Archibald (7 objects)", "patient 98890234 Doe^Peter (24 objects)"]
    assert sum(int(line.rsplit("(", 1)[1].split()[0]) for line in patients) == OBJECTS
    assert "    series " in out
    assert rows(config, "select count(*) from instance") in ([], [(0,)])


def test_dry_run_routes_without_storing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path / "site")
    code, out, _ = run(capsys, config, "import", str(DICOMDIR_TESTS / "DICOMDIR"), "--dry-run",
                       "--report", str(tmp_path / "r.json"))  # fmt: skip
    data = report(tmp_path / "r.json")
    assert code == 0 and data["dry_run"] and out.startswith("dry run:")
    assert outcomes(data) == {"would-import": OBJECTS, "unreferenced": 59}  # the folder's other DICOMDIRs, README
    chosen = [f for f in data["files"] if f["outcome"] == "would-import"]
    assert all(f["rules"] == ["media to pacs"] and f["destinations"] == ["PACS"] for f in chosen)
    assert rows(config, "select count(*) from instance") == [(0,)]
    assert rows(config, "select count(*) from job") == [(0,)]
    assert not list((config.parent / "var" / "objects").rglob("*.dcm"))


def test_the_report_names_each_file_and_its_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path / "site")
    run(capsys, config, "import", str(DICOMDIR_TESTS / "DICOMDIR"), "--report", str(tmp_path / "r.json"))
    data = report(tmp_path / "r.json")
    assert data["media"] == [str(DICOMDIR_TESTS / "DICOMDIR")] and data["destination"] == ""
    first = next(f for f in data["files"] if f["file"] == "77654033/CR1/6154")
    ds = dcmread(DICOMDIR_TESTS / "77654033" / "CR1" / "6154", stop_before_pixels=True)
    assert first["outcome"] == "imported" and first["reason"] == "1 job(s) queued"
    assert (first["sop_instance_uid"], first["study_uid"], first["series_uid"]) == (
        ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID)  # fmt: skip
    assert first["size"] == (DICOMDIR_TESTS / "77654033" / "CR1" / "6154").stat().st_size


def test_unknown_path_or_peer_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path / "site")
    code, _, err = run(capsys, config, "import", str(tmp_path / "nowhere"))
    assert code == 2 and "no such file or folder" in err
    code, _, err = run(capsys, config, "import", str(DICOMDIR_TESTS / "DICOMDIR"), "--to", "NOBODY")
    assert code == 2 and "unknown peer 'NOBODY'" in err


def test_the_source_condition_matches_how_an_object_came_in() -> None:
    from router.rules.matching import Subject, condition_matches
    from router.rules.model import Condition
    from router.rules.patterns import compile_any_of

    media_only = Condition(source=compile_any_of("media"))
    network = Condition(source=compile_any_of(["dimse", "stow"]))
    assert condition_matches(media_only, Subject(kind="dicom", source="media"))
    assert not condition_matches(media_only, Subject(kind="dicom", source="dimse"))
    assert condition_matches(network, Subject(kind="dicom", source="stow"))
    assert not condition_matches(network, Subject(kind="dicom", source="media"))
    assert condition_matches(Condition(), Subject(kind="dicom", source="media")), "no source key: any source"


def test_rules_check_accepts_the_source_condition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path / "site")
    code, out, _ = run(capsys, config, "rules", "check")
    assert code == 0 and out.startswith("ok: 2 rule(s)")
