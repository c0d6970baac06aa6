"""What happens after a commit never turns a stored object into a failure (router.intake.base, step 5): a wake-up of
the forward workers that fails (their process just died: a broken pipe), or an old version's file that cannot be
removed, leaves the object stored, its file in place and its jobs queued, and the sender is answered success."""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.filewriter import dcmwrite

from router.app import Router
from router.config import parse_config
from router.forward.process import ForwardProcess
from router.hl7.ack import ack_code_of
from router.intake import dicom
from router.intake.envelope import Source
from router.statuses import StoreOutcome

from hl7msg import adt, encode
from peers import make_instance, query

SOURCE = Source(protocol="dimse", calling_ae="MODALITY", called_ae="ROUTER", address="127.0.0.1")
RULES = (
    "- name: images\n  when: {kind: dicom}\n  then: [{forward: DEST}]\n"
    "- name: messages\n  when: {kind: hl7}\n  then: [{forward: RIS}]\n"
)


def broken_pipe(_peers: set[str] | None = None) -> None:
    raise BrokenPipeError(32, "Broken pipe")


@pytest.fixture
def router(tmp_path: Path, unstarted_routers: list[Router]) -> Router:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "10-forward.yaml").write_text(RULES)
    config = {"data_dir": "var", "rules_dir": "rules", "dicom": {"duplicates": "overwrite"},
              "peers": {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": 9},
                        "RIS": {"mllp": "127.0.0.1:9"}}}  # fmt: skip
    router = Router(parse_config(config, tmp_path))
    router.rules.reload_if_changed()
    unstarted_routers.append(router)
    return router


def p10(ds_changes: dict[str, str] | None = None, uid: str | None = None) -> tuple[str, bytes]:
    ds = make_instance("1.2.826.0.1.3680043.2.1125.99.1", "1.2.826.0.1.3680043.2.1125.99.2")
    if uid is not None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    for keyword, value in (ds_changes or {}).items():
        setattr(ds, keyword, value)
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return str(ds.SOPInstanceUID), buf.getvalue()


def stored(router: Router) -> dict[str, str]:
    return dict(query(router.config.data_dir / "router.db", "SELECT sop_uid, path FROM instance"))


def jobs(router: Router) -> list[tuple[str, str]]:
    return query(router.config.data_dir / "router.db", "SELECT peer, state FROM job ORDER BY id")


def test_a_failed_wake_up_leaves_the_dicom_object_stored_with_its_file_and_job(router: Router) -> None:
    router.ingestor.on_jobs_committed = broken_pipe
    uid, raw = p10()
    result = router.ingestor.ingest(raw, SOURCE)
    assert (result.outcome, result.jobs) == (StoreOutcome.STORED, 1)
    assert (router.config.data_dir / stored(router)[uid]).read_bytes() == raw
    assert jobs(router) == [("DEST", "pending")]


def test_a_failed_wake_up_leaves_the_hl7_message_applied_and_acknowledged(router: Router) -> None:
    router.hl7.on_jobs_committed = broken_pipe
    ack = router.hl7.handle(encode(adt("A01", {3: "AC1^^^HOSP^MR", 5: "Na^Commit"}, control_id="AC-1")), "127.0.0.1:1")
    assert ack_code_of(ack)[0] == "AA"
    db = router.config.data_dir / "router.db"
    assert query(db, "SELECT control_id FROM hl7log") == [("AC-1",)]
    assert jobs(router) == [("RIS", "pending")]
    (path,) = [p for p in (router.config.data_dir).rglob("*") if p.is_file() and p.suffix == ".hl7"]
    assert b"AC-1" in path.read_bytes()


def test_an_overwrite_whose_old_file_cannot_be_removed_is_stored_all_the_same(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, first = p10()
    assert router.ingestor.ingest(first, SOURCE).outcome == StoreOutcome.STORED
    old = router.config.data_dir / stored(router)[uid]

    def cannot_remove(*_args: object) -> None:
        raise OSError(13, "Permission denied (simulated)")

    monkeypatch.setattr(dicom, "drop_if_orphaned", cannot_remove)
    _, second = p10({"PatientName": "Other^Version"}, uid=uid)
    assert router.ingestor.ingest(second, SOURCE).outcome == StoreOutcome.OVERWRITTEN
    assert (router.config.data_dir / stored(router)[uid]).read_bytes() == second
    assert old.read_bytes() == first  # left behind, logged
    assert [peer for peer, _state in jobs(router)] == ["DEST", "DEST"]


def test_a_wake_up_into_the_pipe_of_a_dead_forward_process_is_dropped_quietly() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    os.close(read_end)  # the child is gone: its end of the pipe closed
    parent = ForwardProcess(None)  # type: ignore[arg-type]  # not started: the pipe is this test's
    parent._pipe = write_end
    parent.wake({"PACS"})  # no BrokenPipeError: the next child reads the whole queue when it starts
    assert parent._pipe is None
    parent.wake({"PACS"})  # and no child now: nothing to write to
