"""Installable like a real package: the router runs from an empty folder on its embedded defaults, reports its
version, and `python3 -m build` gives a wheel that installs into a fresh virtual environment and serves."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE

import router
from router.config import RouterConfig, parse_config
from router.hooks.manager import build_plugin_manager, collect_stages
from router.rules.live import LiveRules

ROOT = Path(__file__).parent.parent
FORWARD_TO_PACS = "- name: all\n  then: [forward: PACS]\n"


def run_router(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m router ARGS`` in ``cwd`` on the embedded defaults (no configuration named)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ROUTER_CONFIG", "ROUTER_DATA_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "router", *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


# -- an empty folder: no rules folder is no rules and a warning, not a refusal -----------------------------------
def test_rules_check_in_an_empty_folder_warns_and_passes(tmp_path: Path) -> None:
    done = run_router(tmp_path, "rules", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"warning: {tmp_path / 'rules'}: no such folder, so no rules" in done.stderr
    assert f"ok: 0 rule(s) in 0 file(s) in {tmp_path / 'rules'}" in done.stdout
    assert list(tmp_path.iterdir()) == [], "checking rules creates nothing"


def test_rules_check_of_a_named_folder_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    done = run_router(tmp_path, "rules", "check", "rulez")
    assert done.returncode == 2
    assert f"router: {tmp_path / 'rulez'}: no such folder" in done.stderr


def test_rules_dir_that_is_a_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "rules").write_text("not a folder\n")
    done = run_router(tmp_path, "rules", "check")
    assert done.returncode == 1
    assert f"{tmp_path / 'rules'}: not a folder" in done.stdout


@pytest.fixture
def live(tmp_path: Path) -> LiveRules:
    config = parse_config({"peers": {"PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}}}, tmp_path)
    return LiveRules(config.rules_dir, collect_stages(build_plugin_manager([])), config)


def test_live_rules_without_a_folder_start_empty_with_one_warning(
    live: LiveRules, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="router.rules.live"):
        assert live.reload_if_changed()
        assert not live.reload_if_changed(), "nothing changed: not read (nor warned) again"
    assert live.last_problems == []
    assert live.current.rules == ()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"{tmp_path / 'rules'}: no such folder, so no rules: nothing is forwarded or changed"]


def test_live_rules_keep_the_rules_in_force_when_the_folder_goes_away(live: LiveRules, tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "10.yaml").write_text(FORWARD_TO_PACS)
    assert live.reload_if_changed()
    assert [r.name for r in live.current.rules] == ["all"]
    (folder / "10.yaml").unlink()
    folder.rmdir()  # a network share that drops out, an rm -r by mistake: not a reason to stop forwarding
    assert not live.reload_if_changed()
    assert [r.name for r in live.current.rules] == ["all"]
    assert live.last_problems == [f"{folder}: no such folder, so no rules: nothing is forwarded or changed"]


def test_router_starts_without_a_rules_folder(tmp_path: Path) -> None:
    from router.app import Router

    config: RouterConfig = parse_config(
        {
            "dicom": {"host": "127.0.0.1", "port": 0},
            "hl7": {"host": "127.0.0.1", "port": 0},
            "http": {"port": 0},
            "forward": {"process": False},
        },
        tmp_path,
    )
    app = Router(config)
    try:
        app.start()
        assert app.dicom_port and app.rules.current.rules == () and app.rules.last_problems == []
    finally:
        app.stop()


# -- the version ----------------------------------------------------------------------------------------------------
def test_version_names_the_router_and_its_dicom_libraries(tmp_path: Path) -> None:
    import pydicom
    import pynetdicom

    done = run_router(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"router {router.__version__} ")
    assert f"pydicom {pydicom.__version__}" in done.stdout
    assert f"pynetdicom {pynetdicom.__version__}" in done.stdout


# -- the wheel: built by `python3 -m build`, installed into a fresh virtual environment -------------------------------
BUILD_TIMEOUT = 300  # s: sdist, then a wheel from it, each in an isolated build environment
START_TIMEOUT = 60  # s: for the installed router to listen
STOP_TIMEOUT = 30  # s: for it to stop after SIGTERM


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without what would make the venv's Python import the checkout instead of the wheel."""
    drop = ("PYTHONPATH", "ROUTER_CONFIG", "ROUTER_DATA_DIR", "VIRTUAL_ENV")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


NOT_SOURCES = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist", "var", "venv")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``python3 -m build`` as a release would run it (an sdist, then the wheel from the sdist, each in an isolated
    build environment, which pip fills from the package index) on a copy of the checkout, so that nothing is
    written into the checkout: (sdist, wheel)."""
    tree, out = tmp_path_factory.mktemp("tree") / "src", tmp_path_factory.mktemp("dist")
    shutil.copytree(ROOT, tree, ignore=NOT_SOURCES)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def venv(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel. It sees this Python's packages (--system-site-packages) so
    that nothing is downloaded, and the wheel goes in with --no-deps: what it proves is that the wheel alone
    carries the code, the package data and the entry points (`pip check` then checks its declared dependencies
    are met)."""
    path = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)], check=True, timeout=60
    )
    python = str(path / "bin" / "python")
    install = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", str(built[1])]
    done = subprocess.run(install, capture_output=True, text=True, timeout=120, env=clean_env())
    assert done.returncode == 0, done.stdout + done.stderr
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, timeout=60, env=clean_env())
    assert "dicom-hl7-router" not in check.stdout, check.stdout
    return path


def test_wheel_holds_both_packages_the_defaults_and_the_entry_points(built: tuple[Path, Path]) -> None:
    sdist, wheel = built
    assert wheel.name == f"dicom_hl7_router-{router.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        dist_info = f"dicom_hl7_router-{router.__version__}.dist-info"
        entry_points = whl.read(f"{dist_info}/entry_points.txt").decode()
    assert {"router/__init__.py", "router/config/defaults.yaml", "router/py.typed", "plugins/__init__.py"} <= names
    assert "router/forward/process.py" in names and "router/listeners/http/app.py" in names
    assert "router = router.cli:main" in entry_points
    assert not any(n.startswith(("tests/", "bench/", "config/", "rules/")) for n in names)
    assert sdist.name == f"dicom_hl7_router-{router.__version__}.tar.gz"


def test_installed_wheel_runs_from_an_empty_folder(venv: Path, tmp_path: Path) -> None:
    """`router --version` and `router rules check` from an empty folder, on the embedded defaults of the wheel."""
    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import router.config as c; print(c.DEFAULT_CONFIG)"],
        capture_output=True, text=True, timeout=60, cwd=empty, env=clean_env(),
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(venv)), "the wheel's code runs, not the checkout's"
    version = subprocess.run(
        [str(venv / "bin" / "router"), "--version"], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert version.returncode == 0 and version.stdout.startswith(f"router {router.__version__} (pydicom ")
    check = subprocess.run(
        [str(venv / "bin" / "router"), "rules", "check"],
        capture_output=True, text=True, timeout=60, cwd=empty, env=clean_env(),
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"warning: {empty / 'rules'}: no such folder, so no rules" in check.stderr
    assert list(empty.iterdir()) == []


@pytest.fixture
def served(venv: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """`router serve` of the venv, started from an empty folder; its listeners on ports the system picks, named in a
    small configuration that names nothing else. Stopped (and killed if it must be) when the test ends."""
    empty, etc = tmp_path / "empty", tmp_path / "etc"
    empty.mkdir()
    etc.mkdir()
    (etc / "router.yaml").write_text(
        "dicom: {host: 127.0.0.1, port: 0}\nhl7: {host: 127.0.0.1, port: 0}\nhttp: {port: 0}\n"
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "router"), "serve", "--config", str(etc / "router.yaml")],
            cwd=empty, stdout=out, stderr=subprocess.STDOUT, env=clean_env(),
        )  # fmt: skip
    try:
        yield proc, log, etc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def _ports(log: Path, proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """(DICOM port, HTTP port) once the router logs its last listener; fails if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        http = re.search(r"DICOMweb on http://127\.0\.0\.1:(\d+)/dicomweb", text)
        if http:
            dicom = re.search(r"DICOM listener ROUTER on 127\.0\.0\.1:(\d+)", text)
            assert dicom, text
            return int(dicom.group(1)), int(http.group(1))
        assert proc.poll() is None, f"router serve exited with {proc.returncode}:\n{text}"
        time.sleep(0.1)
    raise AssertionError(f"router serve did not listen within {START_TIMEOUT} s:\n{log.read_text(errors='replace')}")


def _c_echo(port: int) -> int:
    ae = AE(ae_title="PACKAGING")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    assert assoc.is_established, "the installed router refused the association"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    return int(status.Status)


def test_installed_wheel_serves_from_an_empty_folder(served: tuple[subprocess.Popen[bytes], Path, Path]) -> None:
    proc, log, etc = served
    dicom_port, http_port = _ports(log, proc)
    assert _c_echo(dicom_port) == 0x0000
    assert httpx.get(f"http://127.0.0.1:{http_port}/dicomweb/studies", timeout=10).status_code in (200, 204)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_TIMEOUT) == 0, log.read_text(errors="replace")
    text = log.read_text(errors="replace")
    assert f"{etc / 'rules'}: no such folder, so no rules" in text
    assert "router stopped" in text
    assert (etc / "var" / "router.db").is_file(), "data goes beside the configuration that names no data_dir"
    assert list((etc.parent / "empty").iterdir()) == [], "nothing is written into the folder it was started from"
