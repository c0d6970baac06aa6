"""Router configuration: one YAML file, validated before anything starts.

A configuration file names only what differs from the defaults of the models (``router.config.model``); it
replaces the embedded default configuration (``defaults.yaml`` beside this module, package data) as a whole.
Relative paths in a file are resolved against the folder that holds that file; those of the embedded defaults
against the current folder, the one the router is started from. Unknown keys and bad values are errors that name
the key and say what is expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from router.config.base import AETitle, ConfigError, HttpAuth, PeerName, Port
from router.config.model import (
    DicomListener,
    DicomTls,
    ForwardSettings,
    Hl7Listener,
    HttpListener,
    HttpTls,
    RouterConfig,
    Timeouts,
)
from router.config.peers import BUILTIN_TYPES as BUILTIN_PEER_TYPES
from router.config.peers import (
    UNION_TAGS,
    AnyPeer,
    DicomPeer,
    DicomwebPeer,
    MllpPeer,
    ObjectPeer,
    Peer,
    PeerTls,
    PluginPeer,
)

__all__ = [
    "BUILTIN_PEER_TYPES",
    "CONFIG_ENV",
    "DATA_DIR_ENV",
    "DEFAULT_CONFIG",
    "AETitle",
    "AnyPeer",
    "ConfigError",
    "DicomListener",
    "DicomPeer",
    "DicomTls",
    "DicomwebPeer",
    "ForwardSettings",
    "Hl7Listener",
    "HttpAuth",
    "HttpListener",
    "HttpTls",
    "MllpPeer",
    "ObjectPeer",
    "Peer",
    "PeerName",
    "PeerTls",
    "PluginPeer",
    "Port",
    "RouterConfig",
    "Timeouts",
    "format_errors",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG = Path(__file__).resolve().parent / "defaults.yaml"  # package data, installed with the router
CONFIG_ENV = "ROUTER_CONFIG"
DATA_DIR_ENV = "ROUTER_DATA_DIR"  # the data folder, for a configuration that names none


def _key(loc: tuple[int | str, ...]) -> str:
    """The dotted key of an error's location, without the union member pydantic names for a peer's type."""
    if len(loc) >= 3 and loc[0] == "peers" and loc[2] in UNION_TAGS:
        loc = loc[:2] + loc[3:]
    return ".".join(str(p) for p in loc) or "(top level)"


def format_errors(exc: ValidationError, prefix: str = "") -> str:
    """One ``key: message`` line per error; ``prefix`` is the key of what was validated (``plugins.audit``)."""
    lines = []
    for err in exc.errors():
        key = _key(err["loc"])
        if prefix:
            key = prefix if key == "(top level)" else f"{prefix}.{key}"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"{key}: {err['msg']}{shown}")
    return "\n".join(lines)


def parse_config(data: Any, base_dir: Path, source: Path | None = None) -> RouterConfig:
    """Validate a decoded YAML document; relative paths are resolved against ``base_dir``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of settings")
    try:
        cfg = RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from None
    resolved = {
        "data_dir": (base_dir / cfg.data_dir).resolve(),
        "rules_dir": (base_dir / cfg.rules_dir).resolve(),
        "plugin_modules": [str((base_dir / p).resolve()) if p.endswith(".py") else p for p in cfg.plugin_modules],
        "source": source,
    }
    if cfg.http.tls is not None:
        resolved["http"] = cfg.http.model_copy(update={"tls": _resolved(cfg.http.tls, base_dir)})
    if cfg.dicom.tls is not None:
        resolved["dicom"] = cfg.dicom.model_copy(update={"tls": _resolved(cfg.dicom.tls, base_dir)})
    resolved["peers"] = {
        name: peer.model_copy(update={"tls": _resolved(peer.tls, base_dir)})
        if isinstance(peer, DicomPeer) and peer.tls is not None
        else peer
        for name, peer in cfg.peers.items()
    }
    cfg = cfg.model_copy(update=resolved)
    from router import tls  # the TLS files must load: a key that names a missing or wrong file is refused here

    problems = tls.problems(cfg)
    if problems:
        raise ConfigError("\n".join(problems))
    from router import storage

    storage.register(cfg)  # what reads objects by data_dir alone finds this store
    return cfg


_Files = TypeVar("_Files", HttpTls, DicomTls, PeerTls)


def _resolved(files: _Files, base_dir: Path) -> _Files:
    """``files`` with its paths (cert, key, ca) relative to ``base_dir``."""
    paths = {k: (base_dir / v).resolve() for k, v in files if isinstance(v, Path)}
    return files.model_copy(update=paths)


def load_config(path: str | os.PathLike[str] | None = None) -> RouterConfig:
    """Load the config named by ``path``, else ``$ROUTER_CONFIG``, else the embedded defaults.

    Relative paths of a named file are relative to its folder; those of the embedded defaults to the current
    folder. A configuration that does not name ``data_dir`` gets ``$ROUTER_DATA_DIR`` when it is set."""
    named = path or os.environ.get(CONFIG_ENV)
    chosen = Path(named).resolve() if named else DEFAULT_CONFIG
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{chosen}: not valid YAML: {exc}") from None
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir and isinstance(data, dict | None) and "data_dir" not in (data or {}):
        data = {**(data or {}), "data_dir": str(Path(data_dir).resolve())}
    try:
        return parse_config(data, chosen.parent if named else Path.cwd(), chosen)
    except ConfigError as exc:
        raise ConfigError(f"{chosen}: invalid configuration\n{exc}") from None
