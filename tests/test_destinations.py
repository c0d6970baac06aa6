"""Destinations: peers of a type a plugin provides, behind a live router, and the peer entries' validation.

The sample plugin (sample_plugins/folder_destination.py) writes forwarded objects into a folder; the forward
workers claim, retry, dead-letter and announce its jobs as they do for the built-in destinations.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.config import ConfigError, DicomPeer, DicomwebPeer, MllpPeer, PluginPeer, parse_config

from peers import RouterProcess, make_instance, query, send_datasets, wait_for

PLUGIN = Path(__file__).parent / "sample_plugins" / "folder_destination.py"
RECORDER = Path(__file__).parent / "sample_plugins" / "stamp.py"  # records router_forwarded and friends
ALL_TO_ARCHIVE = {"10.yaml": [{"name": "archive", "when": {"kind": "dicom"}, "then": [{"forward": "ARCHIVE"}]}]}


def _jobs(router: RouterProcess) -> list[tuple[str, str, str]]:
    return query(router.data_dir / "router.db", "select sop_uid, state, last_error from job order by id")


def test_a_plugin_destination_receives_what_the_rules_forward(workdir: Path) -> None:
    archive = workdir / "archive"
    archive.mkdir()
    events = workdir / "events.jsonl"
    router = RouterProcess(
        workdir,
        plugin_modules=[str(PLUGIN), str(RECORDER)],
        peers={"ARCHIVE": {"type": "folder", "path": str(archive)}},
        rules=ALL_TO_ARCHIVE,
    )
    router.env["ROUTER_TEST_EVENTS"] = str(events)
    instances = [make_instance(PatientID=f"P{i}") for i in range(3)]
    try:
        router.start()
        assert send_datasets(router.port, instances) == [0, 0, 0]
        wait_for(lambda: len(list(archive.glob("*.dcm"))) == 3, 30, what="three objects in the archive folder")
        wait_for(lambda: {s for _, s, _ in _jobs(router)} == {"done"}, 30, what="the jobs marked done")
    finally:
        router.stop()
    stored = {p.stem: p.read_bytes() for p in (router.data_dir / "objects").rglob("*.dcm")}
    written = {p.stem: p.read_bytes() for p in archive.glob("*.dcm")}
    assert written == stored, "the folder holds exactly the stored objects, byte for byte"
    forwarded = [json.loads(line) for line in events.read_text().splitlines()]
    assert sorted(e["sop"] for e in forwarded if e["event"] == "forwarded") == sorted(stored)


def test_a_plugin_destination_refusal_is_dead_lettered_and_an_absent_folder_retried(workdir: Path) -> None:
    archive = workdir / "archive"
    instance = make_instance()
    router = RouterProcess(
        workdir,
        plugin_modules=[str(PLUGIN)],
        peers={"ARCHIVE": {"type": "folder", "path": str(archive)}},
        rules=ALL_TO_ARCHIVE,
    )
    try:
        router.start()
        assert send_datasets(router.port, [instance]) == [0]
        # no folder yet: the peer is unreachable, the job waits and is tried again
        wait_for(lambda: any("is not there" in e for _, _, e in _jobs(router)), 30, what="an unreachable attempt")
        assert [s for _, s, _ in _jobs(router)] in (["pending"], ["inflight"]), "retried, not dead-lettered"
        staging = workdir / "staging"  # the folder appears at once, already holding another version
        staging.mkdir()
        (staging / f"{instance.SOPInstanceUID}.dcm").write_bytes(b"another version")
        staging.rename(archive)
        wait_for(lambda: [s for _, s, _ in _jobs(router)] == ["dead"], 30, what="the refused job dead-lettered")
    finally:
        router.stop()
    [(_, _, error)] = _jobs(router)
    assert error.endswith("holds another version")


def test_a_destination_that_cannot_be_made_is_retried_then_dead_lettered(workdir: Path) -> None:
    router = RouterProcess(
        workdir,
        plugin_modules=[str(PLUGIN)],
        peers={"ARCHIVE": {"type": "broken", "path": str(workdir)}},
        rules=ALL_TO_ARCHIVE,
        forward={"max_attempts": 3},
    )
    try:
        router.start()
        assert send_datasets(router.port, [make_instance()]) == [0]
        wait_for(lambda: [s for _, s, _ in _jobs(router)] == ["dead"], 30, what="the job dead-lettered")
        attempts = query(router.data_dir / "router.db", "select attempts from job")
        assert router.alive(), "the forward workers keep running"
    finally:
        router.stop()
    assert attempts == [(3,)]
    [(_, _, error)] = _jobs(router)
    assert "cannot make the destination: RuntimeError('this destination cannot be made')" in error


def _serve_problems(workdir: Path, peers: dict[str, object]) -> str:
    config = workdir / "router.yaml"
    config.write_text(yaml.safe_dump({"plugin_modules": [str(PLUGIN)], "data_dir": "var", "peers": peers,
                                      "dicom": {"port": 0}, "hl7": {"port": 0}, "http": {"port": 0}}))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stderr


def test_a_peer_whose_type_no_plugin_provides_is_refused_at_start(workdir: Path) -> None:
    stderr = _serve_problems(workdir, {"TAPE": {"type": "tape", "drive": "/dev/st0"}})
    assert "peers.TAPE.type: no destination of type 'tape' is provided" in stderr


def test_a_plugin_peer_entry_is_checked_by_its_plugin(workdir: Path) -> None:
    stderr = _serve_problems(workdir, {"ARCHIVE": {"type": "folder", "pth": "/srv"}})
    assert "peers.ARCHIVE.path: Field required" in stderr
    assert "peers.ARCHIVE.pth: unknown key" in stderr


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        ({"ae_title": "PACS", "host": "h", "port": 104}, DicomPeer),
        ({"type": "dicom", "ae_title": "PACS", "host": "h", "port": 104}, DicomPeer),
        ({"mllp": "ris:2575"}, MllpPeer),
        ({"stow_url": "http://pacs/dicom-web/studies"}, DicomwebPeer),
        ({"type": "dicomweb", "stow_url": "https://pacs/dicom-web/studies"}, DicomwebPeer),
        ({"type": "folder", "path": "/srv/archive"}, PluginPeer),
    ],
)
def test_a_peer_type_is_given_or_told_by_its_keys(entry: dict[str, object], kind: type, tmp_path: Path) -> None:
    peer = parse_config({"peers": {"P": entry}}, tmp_path).peers["P"]
    assert type(peer) is kind
    assert peer.type == entry.get("type", peer.type)
    if isinstance(peer, PluginPeer):
        assert peer.settings == {"path": "/srv/archive"} and peer.max_associations == 2


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"type": "mllp", "stow_url": "http://x/studies"}, "peers.P: Value error, a peer is one of DICOM"),
        ({"type": "dicomweb"}, "peers.P.stow_url: Field required"),
        ({"stow_url": "http://x/studies", "commit_wait": 5}, "commit_wait: storage commitment settings are for DICOM"),
        ({"mllp": "h:1", "auth": {"bearer_token": "x" * 16}}, "auth is for DICOMweb peers (stow_url)"),
    ],
)
def test_a_peer_entry_of_one_type_refuses_another_types_keys(
    entry: dict[str, object], expected: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"peers": {"P": entry}}, tmp_path)
    assert expected in str(caught.value)
