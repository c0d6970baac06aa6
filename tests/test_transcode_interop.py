"""Transcoding in a running router, against DCMTK's storescp: the transcode stage, the forward fallback to a peer
that accepts only uncompressed syntaxes, a peer's transfer syntaxes setting. Loopback only; every server is stopped.
(The rules CLI on transcode stages: test_rules_cli.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from peers import RouterProcess, StoreSCP, dataset_bytes, query, same_content, send_datasets, wait_for

pytestmark = pytest.mark.interop  # DCMTK storescp

SUCCESS = 0


def sample(name: str) -> Path:
    return Path(get_testdata_file(name))  # type: ignore[arg-type]


def by_sop(paths: list[Path]) -> dict[str, Path]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in paths}


def stored_paths(router: RouterProcess) -> dict[str, Path]:
    rows = query(router.data_dir / "router.db", "select sop_uid, path from instance")
    return {uid: router.data_dir / path for uid, path in rows}


def peer(scp: StoreSCP) -> dict[str, Any]:
    return {"ae_title": scp.aet, "host": "127.0.0.1", "port": scp.port}


@pytest.fixture
def uncompressed_only(workdir: Path) -> Iterator[StoreSCP]:
    """DCMTK storescp with its default negotiation: uncompressed transfer syntaxes only."""
    scp = StoreSCP(workdir, "PLAIN")
    scp.args.remove("--accept-all")
    scp.start()
    try:
        yield scp
    finally:
        scp.stop()


def test_transcode_stage_forwards_the_transcoded_object_and_stores_the_original(workdir: Path, dest: StoreSCP) -> None:
    rules = [
        {
            "name": "j2k-to-dest",
            "when": {"kind": "dicom"},
            "then": [{"transcode": {"to": "jpeg2000-lossless"}}, {"forward": "DEST"}],
        }
    ]
    sent = [
        sample("CT_small.dcm"),  # Explicit VR LE
        sample("SC_rgb_rle_2frame.dcm"),  # RLE, 2 frames
        sample("examples_ybr_color.dcm"),  # JPEG baseline YBR_FULL_422, 30 frames
        sample("JPEG-lossy.dcm"),  # damaged JPEG: cannot be decoded, goes on as received
    ]
    router = RouterProcess(workdir, peers={"DEST": peer(dest)}, rules={"10.yaml": rules})
    try:
        router.start()
        assert send_datasets(router.port, sent) == [SUCCESS] * len(sent)
        wait_for(lambda: len(dest.received()) == len(sent), 60, what="every object at the destination")
    finally:
        router.stop()
    originals, received, stored = by_sop(sent), by_sop(dest.received()), stored_paths(router)
    assert set(received) == set(originals) == set(stored)
    damaged = str(pydicom.dcmread(sample("JPEG-lossy.dcm"), stop_before_pixels=True).SOPInstanceUID)
    for uid, original in originals.items():
        assert dataset_bytes(stored[uid]) == dataset_bytes(original), f"{original.name}: stored as received"
        got = pydicom.dcmread(received[uid])
        if uid == damaged:
            assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
            # storescp writes sequences with defined lengths: compare after parsing
            assert same_content(received[uid], original), "forwarded as received"
            continue
        assert got.file_meta.TransferSyntaxUID == JPEG2000Lossless, original.name
        assert np.array_equal(got.pixel_array, pydicom.dcmread(original).pixel_array), original.name
    db = router.data_dir / "router.db"
    indexed = dict(query(db, "select sop_uid, transfer_syntax from instance"))
    assert indexed == {u: str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for u, p in originals.items()}
    jobs = dict(query(db, "select sop_uid, transfer_syntax from job where state = 'done'"))
    assert jobs == {u: JPEG2000Lossless if u != damaged else "1.2.840.10008.1.2.4.51" for u in originals}
    assert f"transcode of {damaged} from jpeg-extended to jpeg2000-lossless failed" in router.output()


def test_peer_accepting_only_uncompressed_gets_a_lossless_transcode(workdir: Path, uncompressed_only: StoreSCP) -> None:
    plain = sample("CT_small.dcm")
    compressed = [
        sample("MR_small_jp2klossless.dcm"),  # JPEG 2000 lossless
        sample("examples_jpeg2k.dcm"),  # JPEG 2000 lossless, YBR_RCT
        sample("SC_rgb_rle_2frame.dcm"),  # RLE, 2 frames
        sample("SC_rgb_dcmtk_+eb+cy+s2.dcm"),  # JPEG baseline
    ]
    damaged = sample("JPEG-lossy.dcm")
    router = RouterProcess(
        workdir,
        peers={"PLAIN": peer(uncompressed_only)},
        rules={"10.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "PLAIN"}]}]},
    )
    sent = [plain, *compressed, damaged]
    db = router.data_dir / "router.db"
    try:
        router.start()
        assert send_datasets(router.port, sent) == [SUCCESS] * len(sent)
        wait_for(lambda: len(uncompressed_only.received()) == len(sent) - 1, 60, what="the decodable objects")
        wait_for(
            lambda: query(db, "select count(*) from job where state in ('done', 'dead')")[0][0] == len(sent),
            30,
            what="every job to finish",
        )
    finally:
        router.stop()
    originals, received, stored = by_sop(sent), by_sop(uncompressed_only.received()), stored_paths(router)
    plain_uid, damaged_uid = (str(pydicom.dcmread(p).SOPInstanceUID) for p in (plain, damaged))
    # sent from its file as stored (storescp drops the trailing padding when it writes its copy)
    assert same_content(received[plain_uid], stored[plain_uid])
    assert f"sending {stored[plain_uid].name}" not in router.output(), "an accepted syntax is never transcoded"
    for path in compressed:
        uid = str(pydicom.dcmread(path).SOPInstanceUID)
        got = pydicom.dcmread(received[uid])
        assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian, path.name
        assert np.array_equal(got.pixel_array, pydicom.dcmread(stored[uid]).pixel_array), path.name
        assert dataset_bytes(stored[uid]) == dataset_bytes(originals[uid]), "the store keeps the compressed original"
    assert damaged_uid not in received
    states = {uid: (state, error) for uid, state, error in query(db, "select sop_uid, state, last_error from job")}
    assert {uid for uid, (state, _) in states.items() if state == "done"} == set(received)
    state, error = states[damaged_uid]
    assert state == "dead" and "only in explicit-le, not in jpeg-extended, and transcoding failed" in error
    assert "in explicit-le: it did not accept jpeg2000-lossless" in router.output()


def test_peer_transfer_syntaxes_setting(workdir: Path, dest: StoreSCP) -> None:
    """`transfer_syntaxes: [rle]` on the peer: what is not RLE is sent as RLE (a derived file), RLE as stored."""
    router = RouterProcess(
        workdir,
        peers={"DEST": {**peer(dest), "transfer_syntaxes": ["rle"]}},
        rules={"10.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]},
    )
    sent = [sample("CT_small.dcm"), sample("SC_rgb_rle_2frame.dcm")]
    try:
        router.start()
        assert send_datasets(router.port, sent) == [SUCCESS] * len(sent)
        wait_for(lambda: len(dest.received()) == len(sent), 60, what="both objects at the destination")
    finally:
        router.stop()
    received = by_sop(dest.received())
    for original in sent:
        uid = str(pydicom.dcmread(original, stop_before_pixels=True).SOPInstanceUID)
        got = pydicom.dcmread(received[uid])
        assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5", original.name
        assert np.array_equal(got.pixel_array, pydicom.dcmread(original).pixel_array), original.name
    bad = RouterProcess(workdir / "bad", peers={"DEST": {**peer(dest), "transfer_syntaxes": ["jpeg2000"]}})
    check = bad.cli("rules", "check", check=False)
    assert check.returncode != 0 and "transfer_syntaxes" in check.stderr + check.stdout
