"""Two senders storing the same SOP Instance UID at the same moment.

Ingest looks the UID up once, before the rules; under the write lock it inserts without looking again and relies
on the unique SOP Instance UID. Here the other sender's commit is put exactly into that window (the first lookup
is made to miss), so the insert fails and the decision is taken again: no file of the winner is overwritten,
nothing of the loser is left behind, and the duplicate policy applies as if the loser had come second.
In-process (ingest is called directly); SQLite and files are real.
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.filewriter import dcmwrite
from sqlalchemy import text

import router.intake.dicom as ingest_module
from router.app import Router
from router.config import parse_config
from router.intake.envelope import Source
from router.statuses import StoreOutcome

from peers import make_instance

SOURCE = Source(protocol="dimse", calling_ae="CT1", called_ae="ROUTER", address="127.0.0.1")


def p10(ds: Any) -> bytes:
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def make_router(workdir: Path, duplicates: str) -> Router:
    (workdir / "rules").mkdir(exist_ok=True)
    config = {"data_dir": "var", "rules_dir": "rules", "dicom": {"duplicates": duplicates}}
    return Router(parse_config(config, workdir))  # not started: nothing listens


def lose_the_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next ingest's lookup before the rules finds nothing, as if it ran before the winner committed."""
    real = ingest_module.find_instance
    calls = {"n": 0}

    def first_lookup_misses(conn: Any, sop_uid: str) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(conn, sop_uid)

    monkeypatch.setattr(ingest_module, "find_instance", first_lookup_misses)


def stored(router: Router) -> list[tuple[str, str]]:
    with router.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("select path, sha256 from instance"))]


def leftovers(router: Router) -> list[Path]:
    return sorted(p for p in (router.config.data_dir / "tmp").iterdir())


@pytest.mark.parametrize(
    ("policy", "same_bytes", "outcome", "kept"),
    [
        ("reject", False, StoreOutcome.DUPLICATE_REJECTED, "winner"),
        ("ignore", False, StoreOutcome.DUPLICATE_IGNORED, "winner"),
        ("reject", True, StoreOutcome.DUPLICATE_IDENTICAL, "winner"),
        ("overwrite", False, StoreOutcome.OVERWRITTEN, "loser"),  # under overwrite the loser is the new version
    ],
)
def test_the_loser_is_a_duplicate_or_the_new_version_and_one_file_stays(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, policy: str, same_bytes: bool, outcome: StoreOutcome, kept: str
) -> None:
    router = make_router(workdir, policy)
    try:
        ds = make_instance()
        winner = p10(ds)
        if not same_bytes:
            ds.PatientName = "OTHER^VERSION"
        loser = p10(ds)
        assert router.ingestor.ingest(winner, SOURCE).outcome is StoreOutcome.STORED
        lose_the_race(monkeypatch)
        assert router.ingestor.ingest(loser, SOURCE).outcome is outcome

        expected = winner if kept == "winner" else loser
        [(path, digest)] = stored(router)
        assert (router.config.data_dir / path).read_bytes() == expected
        assert digest == hashlib.sha256(expected).hexdigest()
        objects = [p for p in (router.config.data_dir / "objects").rglob("*.dcm")]
        assert objects == [router.config.data_dir / path]  # an overwritten version's file is gone with its row
        router.ingestor.close()  # the writer thread is done with its temp files
        assert leftovers(router) == []
    finally:
        router.ingestor.close()
        router.engine.dispose()
