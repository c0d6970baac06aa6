"""The pieces that keep patient data out of logs and other users' reach, one by one (the scenario is test_phi.py):
``router.logs.redact`` and ``database_error``, pydicom's value-quoting warnings below DEBUG, and the file modes of
``router.store.files`` (``data_access: owner`` and ``group``)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.exc import IntegrityError

from router.logs import database_error, redact
from router.store import files

ROOT = Path(__file__).resolve().parent.parent


# -- error texts ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("AE 103 at PID^1^8^1: 'ZEBEDEE' is not a sex", "AE 103 at PID^1^8^1: '...' is not a sex"),
        ("not a DA range: '1947-03-12'", "not a DA range: '...'"),
        ("date '19470312' is not valid", "date '...' is not valid"),
        ('cannot parse the message: "The value DOE^JOHN exceed the max length: 20"', "cannot parse the message: '...'"),
        (
            "SOP Instance UID '1.2.3.4' in the data set, '1.2.3.5' in the C-STORE request",
            "SOP Instance UID '1.2.3.4' in the data set, '1.2.3.5' in the C-STORE request",
        ),
        ("missing StudyInstanceUID", "missing StudyInstanceUID"),
        ("unknown order 'PL-\\'A9001'", "unknown order '...'"),
    ],
)  # fmt: skip
def test_redact_leaves_out_quoted_values_but_keeps_uids(text: str, logged: str) -> None:
    assert redact(text) == logged


def test_database_error_names_neither_statement_nor_values() -> None:
    engine = create_engine("sqlite://", hide_parameters=True)
    patients = Table("patient", MetaData(), Column("id", Integer, primary_key=True), Column("pid", String, unique=True))
    patients.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(patients).values(pid="PHI7731"))
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(insert(patients).values(pid="PHI7731"))
    assert "PHI7731" not in str(caught.value)  # hide_parameters, as the router's engines
    assert database_error(caught.value) == "IntegrityError: UNIQUE constraint failed: patient.pid"

    class PostgresLike(Exception):  # psycopg's text: the message, then DETAIL quoting the key's values
        def __str__(self) -> str:
            return (
                'duplicate key value violates unique constraint "uq_pid"\nDETAIL:  Key (pid)=(PHI7731) already exists.'
            )

    wrapped = IntegrityError("INSERT INTO patient ...", {}, PostgresLike())
    assert database_error(wrapped) == 'PostgresLike: duplicate key value violates unique constraint "uq_pid"'


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("WARNING", False), ("DEBUG", True)])
def test_pydicom_value_warnings_only_at_debug(level: str, shown: bool) -> None:
    """pydicom's validation warnings quote the value ("Invalid value for VR DA: '1947-03-12'"): neither its logger
    nor Python's warnings print them below DEBUG (a fresh interpreter: logging and warnings are process-wide)."""
    script = textwrap.dedent(f"""
        from router.logs import configure_logging
        configure_logging({level!r})
        from pydicom.dataset import Dataset
        ds = Dataset()
        ds.PatientBirthDate = "1947-03-12"
        ds.PatientID = "X" * 70
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert ("1947-03-12" in done.stderr) is shown, done.stderr


# -- file modes ----------------------------------------------------------------------------------------------
@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)
        files.set_access("owner")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("access", "file_mode", "dir_mode"), [("owner", 0o600, 0o700), ("group", 0o640, 0o750)])
def test_files_and_folders_get_the_access_modes(
    tmp_path: Path, usual_umask: None, access: str, file_mode: int, dir_mode: int
) -> None:
    files.set_access(access)
    data = tmp_path / "var"
    files.secure_data_dir(data, ["objects", "tmp", "quarantine"], data / "router.db")
    tmp = files.write_temp(data / "tmp", b"DICM")
    final = data / "objects" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    files.commit_file(tmp, final)
    files.write_private(data / "quarantine" / "x.txt", b"reason: cannot decode")
    files.create_private(data / "router.db")
    for folder in (data, data / "objects", final.parent.parent, final.parent, data / "tmp", data / "quarantine"):
        assert mode(folder) == dir_mode, folder
    for path in (final, data / "quarantine" / "x.txt", data / "router.db"):
        assert mode(path) == file_mode, path


def test_secure_data_dir_takes_back_what_was_left_wide(tmp_path: Path, usual_umask: None) -> None:
    """A data folder from an earlier version (0755 folders, a 0644 database): its folders are set to 0700 and the
    database to 0600; the files already in it keep their modes, out of other users' reach behind the folders."""
    data = tmp_path / "var"
    (data / "objects").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    old_object = data / "objects" / "old.dcm"
    old_object.write_bytes(b"DICM")
    old_object.chmod(0o644)
    for name in ("router.db", "router.db-wal"):
        (data / name).write_bytes(b"")
        (data / name).chmod(0o644)
    files.secure_data_dir(data, ["objects", "quarantine"], data / "router.db")
    assert (mode(data), mode(data / "objects"), mode(data / "quarantine")) == (0o700, 0o700, 0o700)
    assert (mode(data / "router.db"), mode(data / "router.db-wal")) == (0o600, 0o600)
    assert mode(old_object) == 0o644
