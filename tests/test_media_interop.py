"""``router import`` with DCMTK: media built by ``dcmmkdir +r -Pgp``, ``--to`` a DCMTK storescp, and an import into
a running router whose forward workers send the queued jobs to a storescp."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from media import outcomes, report, run, site
from peers import RouterProcess, StoreSCP, make_instance, running, same_content, wait_for
from tools import dcmtk

pytestmark = pytest.mark.interop  # DCMTK's dcmmkdir and storescp


def dcmtk_media(folder: Path, studies: int = 2, per_series: int = 3) -> list[Path]:
    """Objects in 8-character folders and files, and a DICOMDIR made by DCMTK over them (General Purpose CD-R)."""
    written = []
    for s in range(studies):
        study = generate_uid()
        series = generate_uid()
        for n in range(per_series):
            ds = make_instance(study, series, PatientID=f"DCMTK{s}", StudyTime="120000", StudyID=str(s + 1),
                               SeriesNumber="1", InstanceNumber=str(n + 1), Modality="MR" if s else "CT")  # fmt: skip
            path = folder / f"ST{s:06d}" / f"IM{n:06d}"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    made = subprocess.run([dcmtk("dcmmkdir"), "+r", "-Pgp", "+id", str(folder), "+D", str(folder / "DICOMDIR")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return written


def test_dcmtk_built_media_is_imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = tmp_path / "cd"
    written = dcmtk_media(media)
    config = site(tmp_path / "site")
    code, _, err = run(capsys, config, "import", str(media / "DICOMDIR"), "--modality", "MR",
                       "--report", str(tmp_path / "r.json"))  # fmt: skip
    data = report(tmp_path / "r.json")
    assert code == 0, err
    assert outcomes(data) == {"imported": 3, "not-selected": 3} and data["problems"] == []
    assert {f["file"] for f in data["files"]} == {str(p.relative_to(media)) for p in written}


def test_import_to_a_peer_sends_straight_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    media = tmp_path / "cd"
    written = dcmtk_media(media)
    scp = StoreSCP(tmp_path, "DEST").start()
    with running(scp):
        config = site(tmp_path / "site", peers={"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": scp.port}})
        code, out, err = run(capsys, config, "import", str(media), "--to", "DEST", "--report", str(tmp_path / "r.json"))
        assert code == 0, err
        assert "6 imported to DEST" in out
        received = scp.received()
    assert len(received) == 6
    assert all(any(same_content(r, w) for w in written) for r in received)
    assert not [p for p in (config.parent / "var").rglob("*") if p.is_file() and "objects" in p.parts], (
        "--to stores nothing"
    )


def test_an_import_into_a_running_router_is_forwarded_by_its_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    media = tmp_path / "cd"
    dcmtk_media(media)
    scp = StoreSCP(tmp_path, "DEST").start()
    router = RouterProcess(
        tmp_path / "router",
        peers={"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": scp.port}},
        rules={"10-media.yaml": [{"name": "media", "when": {"source": "media"}, "then": [{"forward": "DEST"}]}]},
    )
    with running(scp, router.start()):
        done = router.cli("import", str(media), "-q", check=False)
        assert done.returncode == 0, done.stderr
        assert "6 imported" in done.stdout
        wait_for(lambda: len(scp.received()) == 6, 30, what="the router's workers to forward the imported objects")
