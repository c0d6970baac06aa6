"""The router's storage commitment SCU against Orthanc (Debian package), a real PACS that reports on a new
association to the modality it knows; with ``delete_after_commit`` the router then forgets what Orthanc holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from router.store.files import object_relpath

from forwarding import db_rows, jobs, wait_while_up
from orthanc import Orthanc
from peers import RouterProcess, free_port, make_instance, running, send_datasets, wait_for

pytestmark = pytest.mark.interop  # Orthanc

RULES = {"10-commit.yaml": [{"name": "to-orthanc", "when": {"kind": "dicom"},
                             "then": [{"forward": {"to": "ORTHANC", "commit": True}}]}]}  # fmt: skip


def test_orthanc_commits_and_the_local_copy_goes(workdir: Path) -> None:
    port = free_port()
    router_as_modality = {"AET": "ROUTER", "Host": "127.0.0.1", "Port": port, "AllowStorageCommitment": True}
    orthanc = Orthanc(workdir, DicomCheckCalledAet=False, StableAge=1, DicomModalities={"router": router_as_modality})
    router = RouterProcess(
        workdir,
        rules=RULES,
        dicom={"port": port},
        peers={"ORTHANC": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.port,
                           "commit_wait": 1, "commit_timeout": 60, "delete_after_commit": True}},
    )  # fmt: skip
    images = [make_instance() for _ in range(5)]
    uids = {str(i.SOPInstanceUID) for i in images}
    with running(orthanc.start(), router.start()):
        assert send_datasets(router.port, images) == [0] * 5
        # stored under objects/<study>/<series>/<instance>.dcm (some may already be committed and gone)
        paths = [router.data_dir / object_relpath(i.StudyInstanceUID, i.SeriesInstanceUID, i.SOPInstanceUID)
                 for i in images]  # fmt: skip
        states = lambda: Counter(j["state"] for j in jobs(router))  # noqa: E731
        wait_while_up(router, lambda: states() == Counter({"done": 5}), 60, "Orthanc's commitment of all five")
        assert orthanc.instances() == uids
        txs = db_rows(router, "select transaction_uid, state from committransaction")
        assert txs and {t["state"] for t in txs} == {"done"}
        committed = db_rows(router, "select sop_uid from commititem where outcome='committed'")
        assert {r["sop_uid"] for r in committed} == uids
        wait_for(lambda: not any(p.exists() for p in paths), 10, what="the local copies removed")
        assert db_rows(router, "select count(*) as n from instance") == [{"n": 0}]
        removed = "committed by its peer: local copy removed"
        wait_for(lambda: router.output().count(removed) == 5, 10, what="five removals logged")
        assert "association from ORTHANC" in router.output(), "the report came on Orthanc's own association"
