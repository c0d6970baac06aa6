"""Router configuration: one YAML file, validated before anything starts.

``config/router.yaml`` is the embedded default. Relative paths in a file are resolved against the folder that
holds that file. Unknown keys and bad values are errors that name the key and say what is expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from router.config.base import AETitle, ConfigError, HttpAuth, PeerName, Port
from router.config.model import (
    DicomListener,
    ForwardSettings,
    Hl7Listener,
    HttpListener,
    HttpTls,
    RouterConfig,
    Timeouts,
)
from router.config.peers import Peer

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "AETitle",
    "ConfigError",
    "DicomListener",
    "ForwardSettings",
    "Hl7Listener",
    "HttpAuth",
    "HttpListener",
    "HttpTls",
    "Peer",
    "PeerName",
    "Port",
    "RouterConfig",
    "Timeouts",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent.parent / "config" / "router.yaml"
CONFIG_ENV = "ROUTER_CONFIG"


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
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
        raise ConfigError(_format_errors(exc)) from None
    resolved = {
        "data_dir": (base_dir / cfg.data_dir).resolve(),
        "rules_dir": (base_dir / cfg.rules_dir).resolve(),
        "plugin_modules": [str((base_dir / p).resolve()) if p.endswith(".py") else p for p in cfg.plugin_modules],
        "source": source,
    }
    if cfg.http.tls is not None:
        tls = cfg.http.tls.model_copy(
            update={"cert": (base_dir / cfg.http.tls.cert).resolve(), "key": (base_dir / cfg.http.tls.key).resolve()}
        )
        resolved["http"] = cfg.http.model_copy(update={"tls": tls})
    return cfg.model_copy(update=resolved)


def load_config(path: str | os.PathLike[str] | None = None) -> RouterConfig:
    """Load the config named by ``path``, else ``$ROUTER_CONFIG``, else the embedded default."""
    chosen = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).resolve()
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{chosen}: not valid YAML: {exc}") from None
    try:
        return parse_config(data, chosen.parent, chosen)
    except ConfigError as exc:
        raise ConfigError(f"{chosen}: invalid configuration\n{exc}") from None
