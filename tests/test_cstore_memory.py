"""A large multi-frame object received by C-STORE without the router holding it in memory.

The data set goes to a flushed temp file in the node's temp folder as its fragments arrive (router._pynetdicom.spool)
and the intake renames that file into the store: the router's peak resident memory (VmHWM, reset after a warm-up
through /proc/<pid>/clear_refs) may rise by less than 60 MiB for a 200 MiB object. bench/bench_memory.py does the
same with 1 GiB. A smaller object past the 4 MiB threshold is stored byte for byte, and twice is one object; one
cut off by an abort leaves no file behind; a full disk on the way is answered 'out of resources'.
"""

from __future__ import annotations

import errno
import hashlib
import struct
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE

from router._pynetdicom import spool
from router.app import Router
from router.config import parse_config

from memory_probe import FRAMES, MF_WORD_SC, memory, write_frames
from peers import RouterProcess, associate, make_instance, query, send_datasets, wait_for

RISE_LIMIT = 60 * 1024 * 1024
PIECE = 1024 * 1024


def data_set_digest(path: Path) -> str:
    """SHA-256 of a Part 10 file's data set: what follows the preamble and the file meta group."""
    with path.open("rb") as f:
        head = f.read(144)  # preamble, "DICM", (0002,0000) UL: tag, VR, length and its 4-byte value
        assert head[128:132] == b"DICM" and head[132:136] == b"\x02\x00\x00\x00"
        f.seek(144 + struct.unpack("<L", head[140:144])[0])
        return hashlib.file_digest(f, "sha256").hexdigest()


def stored(router: RouterProcess, sop: str) -> list[Path]:
    return [p for p in (router.data_dir / "objects").rglob("*.dcm") if sop in p.name]


def no_part_files(router: RouterProcess) -> bool:
    return not list(router.data_dir.rglob("*.part"))


@pytest.mark.slow
def test_a_200_mb_object_received_by_c_store_raises_resident_memory_by_less_than_60_mb(
    workdir: Path, tmp_path: Path
) -> None:
    obj = tmp_path / "large.dcm"
    _study, sop = write_frames(obj, FRAMES, "MEM2")  # 200 MiB of pixel data
    router = RouterProcess(workdir).start()
    try:
        pid = router.proc.pid
        assert send_datasets(router.port, [make_instance()]) == [0]  # warm-up: the first C-STORE's imports
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = memory(pid)["VmRSS"]
        assert send_datasets(router.port, [obj]) == [0]
        peak = memory(pid)["VmHWM"]
    finally:
        router.stop()
    files = stored(router, sop)
    assert len(files) == 1 and data_set_digest(files[0]) == data_set_digest(obj), "not the data set sent"
    assert no_part_files(router), "a part file was left behind"
    assert peak - before < RISE_LIMIT, f"C-STORE raised VmHWM by {(peak - before) / 2**20:.0f} MiB"


def test_an_object_past_the_spool_threshold_is_stored_as_sent_and_once(workdir: Path, tmp_path: Path) -> None:
    obj = tmp_path / "mid.dcm"
    _study, sop = write_frames(obj, 12, "MEM2")  # 6 MiB: past the 4 MiB kept in memory, in many 16 KiB fragments
    router = RouterProcess(workdir).start()
    try:
        assert send_datasets(router.port, [obj, obj]) == [0, 0]  # the second: the same bytes, accepted again
        rows = query(router.data_dir / "router.db", "SELECT COUNT(*) FROM instance WHERE sop_uid = ?", sop)
    finally:
        router.stop()
    files = stored(router, sop)
    assert rows == [(1,)] and len(files) == 1
    assert data_set_digest(files[0]) == data_set_digest(obj)
    assert no_part_files(router), "the duplicate's part file was left behind"


def test_a_data_set_cut_off_by_an_abort_leaves_no_part_file(workdir: Path, tmp_path: Path) -> None:
    obj = tmp_path / "cut.dcm"
    _study, sop = write_frames(obj, 16, "MEM2")  # 8 MiB
    data = obj.read_bytes()
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = MF_WORD_SC, sop
    request.DataSet = BytesIO(data[144 + struct.unpack("<L", data[140:144])[0] :])
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    router = RouterProcess(workdir).start()
    try:
        assoc = associate(router.port, [(MF_WORD_SC, ExplicitVRLittleEndian)])
        assert assoc.is_established
        fragments = message.encode_msg(assoc.accepted_contexts[0].context_id, assoc.acceptor.maximum_length)
        sent = 0
        for pdata in fragments:  # the command set, then 6 MiB of the data set: past the 4 MiB kept in memory
            assoc.dul.send_pdu(pdata)
            sent += sum(len(value) for _cx, value in pdata.presentation_data_value_list)
            if sent > 6 * 1024 * 1024:
                break
        wait_for(lambda: not no_part_files(router), 20, what="the data set to go to a part file")
        assoc.abort()
        wait_for(lambda: no_part_files(router), 20, what="the part file to be removed")
        assert query(router.data_dir / "router.db", "SELECT COUNT(*) FROM instance WHERE sop_uid = ?", sop) == [(0,)]
    finally:
        router.stop()


def test_a_full_disk_while_the_data_set_arrives_is_answered_out_of_resources_then_recovers(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = tmp_path / "mid.dcm"
    _study, sop = write_frames(obj, 12, "MEM2")
    (workdir / "rules").mkdir()
    config = {"data_dir": "var", "rules_dir": "rules"} | {
        listener: {"host": "127.0.0.1", "port": 0} for listener in ("dicom", "hl7", "http")
    }
    router = Router(parse_config(config, workdir))
    router.start()
    try:
        assert router.dicom_port is not None
        with monkeypatch.context() as patch:
            patch.setattr(spool, "write_all", no_space)
            assert send_datasets(router.dicom_port, [obj]) == [0xA700]
        assert not list((workdir / "var" / "objects").rglob("*.dcm")) and not list(workdir.rglob("*.part"))
        assert send_datasets(router.dicom_port, [obj]) == [0], "the router must take the object once the disk is back"
        assert len(list((workdir / "var" / "objects").rglob(f"*{sop}*.dcm"))) == 1
    finally:
        router.stop()


def no_space(fd: int, data: bytearray) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")
