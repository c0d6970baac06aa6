"""Installable like a real package: the router runs from an empty folder on its embedded defaults, reports its
version, and `python3 -m build` gives a wheel that installs into a fresh virtual environment and serves."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
