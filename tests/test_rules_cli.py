"""`router rules check` / `router rules test` (transcode stages included), and rules reloaded while the router runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file

from peers import RouterProcess, StoreSCP, make_instance, storescu, wait_for, write_instances

ROOT = Path(__file__).parent.parent
FORWARD_ALL = [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )


def make_config(workdir: Path, rules: dict[str, str]) -> Path:
    (workdir / "rules").mkdir(exist_ok=True)
    for name, text in rules.items():
        (workdir / "rules" / name).write_text(text)
    path = workdir / "router.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "rules_dir": "rules",
                "data_dir": "var",
                "peers": {"PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}},
            }
        )
    )
    return path


def test_rules_check_reports_file_line_and_exit_code(workdir: Path) -> None:
    config = make_config(workdir, {"10.yaml": "- name: a\n  then:\n    - forward: NOPE\n"})
    done = cli(config, "rules", "check")
    assert done.returncode == 1
    assert f"{workdir / 'rules' / '10.yaml'}:3: forward: unknown peer 'NOPE' (peers: PACS)" in done.stdout
    (workdir / "rules" / "10.yaml").write_text("- name: a\n  then:\n    - forward: PACS\n")
    ok = cli(config, "rules", "check")
    assert ok.returncode == 0 and "ok: 1 rule(s) in 1 file(s)" in ok.stdout


def test_shipped_rules_are_valid() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router", "rules", "check"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_test_is_a_dry_run(workdir: Path) -> None:
    example = (ROOT / "rules" / "00-example.yaml").read_text()
    config = make_config(workdir, {"00-example.yaml": example})
    head = make_instance(Modality="CT", StudyDescription="CT HEAD W/O", InstitutionName="X")
    path = write_instances(workdir / "in", [head])[0]
    before = path.read_bytes()
    done = cli(config, "rules", "test", str(path), "--calling-ae", "CT1")
    assert done.returncode == 0, done.stderr
    assert "rule ct-to-pacs (00-example.yaml:4) matches" in done.stdout
    assert "coerce: set InstitutionName" in done.stdout
    assert "would forward to PACS (as changed by earlier stages)" in done.stdout
    assert "dry run: nothing was stored, changed or sent" in done.stdout
    assert path.read_bytes() == before
    assert not (workdir / "var").exists(), "a dry run creates no store"
    other = cli(config, "rules", "test", str(path), "--calling-ae", "MR1")
    assert "no rule matches (1 rule(s) checked)" in other.stdout


def test_rules_check_and_dry_run_with_transcode(workdir: Path) -> None:
    config = make_config(workdir, {})
    rules = workdir / "rules" / "10.yaml"
    rules.write_text("- name: squeeze\n  then:\n    - transcode: {to: jpeg2000}\n    - transcode: jpg\n")
    done = cli(config, "rules", "check")
    assert done.returncode == 1
    lossy = "jpeg2000 is lossy: it must be asked for explicitly (add 'lossy: true')"
    assert f"{rules}:3: transcode: {lossy}" in done.stdout
    assert f"{rules}:4: transcode: unknown transfer syntax 'jpg' (names: explicit-le," in done.stdout

    rules.write_text("- name: squeeze\n  then:\n    - transcode: {to: jpeg2000-lossless}\n    - forward: PACS\n")
    assert cli(config, "rules", "check").returncode == 0
    source = Path(get_testdata_file("MR_small_RLE.dcm"))  # type: ignore[arg-type]
    before = source.read_bytes()
    done = cli(config, "rules", "test", str(source))
    assert done.returncode == 0, done.stderr
    assert "[10.yaml:3] would transcode rle to jpeg2000-lossless (" in done.stdout
    assert "[10.yaml:4] would forward to PACS (as changed by earlier stages)" in done.stdout
    assert "dry run: nothing was stored, changed or sent" in done.stdout
    assert source.read_bytes() == before
    assert not (workdir / "var").exists(), "a dry run creates no store"


@pytest.mark.interop  # DCMTK storescu, storescp
def test_rules_reload_while_running_and_broken_edit_keeps_previous(workdir: Path, dest: StoreSCP) -> None:
    router = RouterProcess(
        workdir,
        peers={"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}},
        rules={"10.yaml": [{"name": "mr-only", "when": {"tags": {"Modality": "MR"}}, "then": [{"forward": "DEST"}]}]},
        rules_reload_interval=0.2,
    )
    ct = write_instances(workdir / "ct1", [make_instance(Modality="CT")])
    try:
        router.start()
        assert storescu(router.port, ct).returncode == 0
        router.write_rules("10.yaml", FORWARD_ALL)  # now CT goes too
        wait_for(
            lambda: "rules loaded: 1 rules" in router.output().split("DICOM listener")[-1],
            10,
            what="the edited rules to load",
        )
        ct2 = write_instances(workdir / "ct2", [make_instance(Modality="CT")])
        assert storescu(router.port, ct2).returncode == 0
        wait_for(lambda: len(dest.received()) == 1, 20, what="the CT sent after the edit")
        assert pydicom.dcmread(dest.received()[0]).SOPInstanceUID == pydicom.dcmread(ct2[0]).SOPInstanceUID

        router.write_rules("20-broken.yaml", "- name: broken\n  then: [fax: X]\n")
        wait_for(lambda: "rules not reloaded" in router.output(), 10, what="the broken edit to be refused")
        ct3 = write_instances(workdir / "ct3", [make_instance(Modality="CT")])
        assert storescu(router.port, ct3).returncode == 0
        wait_for(lambda: len(dest.received()) == 2, 20, what="forwarding under the previous rules")
    finally:
        router.stop()
    assert "20-broken.yaml:2: unknown stage 'fax'" in router.output()
