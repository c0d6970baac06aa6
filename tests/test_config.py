"""Configuration: defaults, relative paths, and errors that name the key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.config import DEFAULT_CONFIG, ConfigError, RouterConfig, load_config, parse_config

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config" / "router.yaml"


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("ROUTER_CONFIG", raising=False)
    monkeypatch.delenv("ROUTER_DATA_DIR", raising=False)
    return monkeypatch


def test_example_configuration_is_valid_and_points_at_the_repository(no_env: pytest.MonkeyPatch) -> None:
    cfg = load_config(EXAMPLE)
    root = EXAMPLE.parent.parent
    assert cfg.ae_title == "ROUTER"
    assert cfg.data_dir == root / "var"
    assert cfg.rules_dir == root / "rules"
    assert cfg.dicom.port == 11112 and cfg.dicom.max_associations == 16
    assert cfg.dicom.allowed_calling_aets == []
    assert cfg.hl7.port == 2575 and cfg.http.port == 8080
    assert cfg.peers["PACS"].port == 11113
    assert cfg.effective_database_url == f"sqlite:///{root / 'var' / 'router.db'}"


def test_embedded_defaults_are_package_data_resolved_against_the_current_folder(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    no_env.chdir(tmp_path)
    cfg = load_config()
    assert DEFAULT_CONFIG.parent == Path(sys.modules["router.config"].__file__ or "").parent
    assert cfg.source == DEFAULT_CONFIG
    assert cfg.ae_title == "ROUTER"
    assert cfg.data_dir == tmp_path / "var"
    assert cfg.rules_dir == tmp_path / "rules"
    assert cfg.dicom.port == 11112 and cfg.hl7.port == 2575 and cfg.http.port == 8080
    assert cfg.peers["PACS"].port == 11113
    assert cfg.effective_database_url == f"sqlite:///{tmp_path / 'var' / 'router.db'}"


def test_embedded_defaults_name_nothing_the_models_already_say() -> None:
    """Only the example peer (which has no default); every setting comes from the models, so the two cannot
    disagree."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert set(data) == {"peers"}


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "peers":
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _example_settings(uncommented: bool) -> dict[str, Any]:
    text = EXAMPLE.read_text()
    if uncommented:
        head, _, tail = text.partition("# What a site usually sets next")
        text = head + re.sub(r"^# ?", "", tail.split("\n", 1)[1], flags=re.M)
    data: dict[str, Any] = yaml.safe_load(text)
    return data


@pytest.mark.parametrize("uncommented", [False, True], ids=["as-shipped", "suggestions-uncommented"])
def test_example_configuration_names_only_what_differs(uncommented: bool, tmp_path: Path) -> None:
    data = _example_settings(uncommented)
    parse_config(data, EXAMPLE.parent)  # the suggestions are valid settings too
    defaults = _leaves(RouterConfig().model_dump(mode="json"))
    same = {k: v for k, v in _leaves(data).items() if k in defaults and defaults[k] == v}
    assert same == {}, "the example repeats defaults"


def test_a_file_names_only_what_differs(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("ae_title: SITE\n")
    cfg = load_config(path)
    expected = RouterConfig(ae_title="SITE", data_dir=tmp_path / "var", rules_dir=tmp_path / "rules", source=path)
    assert cfg == expected
    assert cfg.peers == {}, "nothing is merged from the embedded defaults"


def test_data_dir_environment_variable(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    no_env.chdir(tmp_path)
    no_env.setenv("ROUTER_DATA_DIR", "data")
    assert load_config().data_dir == tmp_path / "data", "relative to the current folder"
    (tmp_path / "etc").mkdir()
    bare = tmp_path / "etc" / "bare.yaml"
    bare.write_text("ae_title: SITE\n")
    assert load_config(bare).data_dir == tmp_path / "data"
    named = tmp_path / "etc" / "named.yaml"
    named.write_text("data_dir: here\n")
    assert load_config(named).data_dir == tmp_path / "etc" / "here", "a file that names data_dir wins"


def test_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "r.yaml"
    path.write_text("data_dir: ../data\nrules_dir: my-rules\n")
    cfg = load_config(path)
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.rules_dir == tmp_path / "etc" / "my-rules"


def test_environment_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("ae_title: FROMENV\n")
    monkeypatch.setenv("ROUTER_CONFIG", str(path))
    assert load_config().ae_title == "FROMENV"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"dicom": {"prot": 104}}, "dicom.prot: unknown key"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"dicom": {"port": 70000}}, "dicom.port: Input should be less than or equal to 65535"),
        ({"dicom": {"port": "eleven"}}, "dicom.port: Input should be a valid integer"),
        (
            {"ae_title": "A_TITLE_THAT_IS_TOO_LONG"},
            "ae_title: Value error, an AE title is 1-16",
        ),
        ({"dicom": {"max_pdu": 16384}}, "dicom.max_pdu: Input should be greater than or equal to 65536"),
        ({"dicom": {"duplicates": "replace"}}, "dicom.duplicates: Input should be 'reject', 'ignore' or 'overwrite'"),
        (
            {"peers": {"PACS": {"ae_title": "PACS", "host": "h"}}},
            "peers.PACS: Value error, a DICOM peer needs ae_title, host and port (missing port)",
        ),
        ({"peers": {"RIS": {"mllp": "ris.local"}}}, "peers.RIS.mllp: String should match pattern"),
        (
            {"peers": {"RIS": {"mllp": "h:2575", "port": 1}}},
            "a peer is one of DICOM (ae_title, host, port), HL7 (mllp) or DICOMweb (stow_url)",
        ),
        (
            {"peers": {"PACS": {"ae_title": "BAD\\AE", "host": "h", "port": 1}}},
            "peers.PACS: Value error, an AE title is",
        ),
        (
            {"peers": {"PACS": {"ae_title": "P", "host": "h", "port": 1, "patient_id": "ssn"}}},
            "Input should be 'mrn' or 'bsn'",
        ),
        ({"hl7": {"worklist": {"utc_offset": "+25:00"}}}, "hl7.worklist.utc_offset: String should match pattern"),
        ({"hl7": {"accepted_processing_ids": ["X"]}}, "hl7.accepted_processing_ids.0: Input should be 'P', 'T' or 'D'"),
        ({"forward": {"backoff_initial": 10, "backoff_max": 1}}, "backoff_max must be >= backoff_initial"),
        ({"peers": {"P" * 65: {"ae_title": "P", "host": "h", "port": 1}}}, "String should have at most 64 characters"),
    ],
)
def test_bad_settings_name_the_key(data: dict[str, object], expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path)
    assert expected in str(caught.value)


def test_router_refuses_to_start_on_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("dicom:\n  port: 11112\n  max_assocs: 3\n")
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "dicom.max_assocs: unknown key" in done.stderr
    assert not (tmp_path / "var").exists(), "nothing is created before the config is valid"


# -- the reference tables of docs/configuration.md say the models' defaults -------------------------------------------
DOCS = ROOT / "docs" / "configuration.md"
_ROW = re.compile(r"^\| ((?:`[\w.]+`(?:, )?)+) \| ([^|]+) \|")


def _documented() -> dict[str, str | None]:
    """``dotted.key -> default`` of every row of the reference tables (peers' keys as ``peers.*.key``); the default
    is None where the table gives none in backquotes."""
    rows: dict[str, str | None] = {}
    prefix = None
    for line in DOCS.read_text().splitlines():
        if line.startswith("## "):
            section = re.match(r"## `(\w+)`", line)
            prefix = f"{section.group(1)}." if section else ("" if line == "## Settings" else None)
            if prefix == "peers.":
                prefix = "peers.*."
            continue
        row = _ROW.match(line)
        if prefix is None or not row:
            continue
        keys = re.findall(r"`([\w.]+)`", row.group(1))
        cells: list[str | None] = list(re.findall(r"`([^`]*)`", row.group(2)))  # none: "—", "local zone" ...
        cells = cells if len(cells) == len(keys) else [None] * len(keys)
        rows.update({prefix + key: cell for key, cell in zip(keys, cells, strict=True)})
    return rows


def _model_defaults() -> dict[str, Any]:
    def leaves(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict) and value:
            return {k: v for key, sub in value.items() for k, v in leaves(sub, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): value}

    from router.config import DicomPeer, DicomwebPeer, MllpPeer

    found = leaves(RouterConfig().model_dump(mode="json", exclude={"peers"}), "")
    for kind in (DicomPeer, MllpPeer, DicomwebPeer):  # the built-in peer types share one table
        for name, field in kind.model_fields.items():
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            found[f"peers.*.{name}"] = default if name != "type" else None  # told by the keys when not given
    return found


def test_reference_tables_state_the_models_defaults() -> None:
    documented, defaults = _documented(), _model_defaults()
    undocumented = [k for k in defaults if k not in documented and not any(d.startswith(k + ".") for d in documented)]
    assert undocumented == [], "settings missing from docs/configuration.md"
    unset_sections = [k for k, v in defaults.items() if v is None]  # http.tls: documented as tls.cert, tls.key
    unknown = [k for k in documented if k not in defaults and not any(k.startswith(u + ".") for u in unset_sections)]
    assert unknown == [], "documented settings the models do not have"
    wrong = {
        key: (cell, defaults.get(key))
        for key, cell in documented.items()
        if cell is not None and yaml.safe_load(cell) != defaults.get(key)
    }
    assert wrong == {}, "docs/configuration.md default (left) differs from the model's (right)"
