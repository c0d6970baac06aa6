"""The audit plugin's settings: ``plugins: {audit: {...}}`` in the router's configuration (docs/audit.md).

    plugins:
      audit:
        source_id: ROUTER                 # AuditSourceID; default: the router's ae_title
        enterprise_site_id: General Hospital
        repositories:
          - {host: arr.local, port: 6514, transport: tls, ca: certs/ca.pem,
             cert: certs/router.pem, key: certs/router.key}
          - {host: 127.0.0.1, port: 514, transport: udp}
        file: audit/audit.xml.log         # every message also appended here, one per line

Relative paths are relative to the folder of the configuration file, like every path of the configuration.
Without ``repositories`` and ``file`` the plugin records nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Host = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[^\s/]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Repository(Strict):
    """One audit record repository (an ARR): syslog over TLS (RFC 5425) or UDP (RFC 5426)."""

    host: Host
    port: int = Field(ge=1, le=65535)
    transport: Literal["tls", "udp"]
    ca: Path | None = None  # TLS: the CA the repository's certificate must chain to (required for tls)
    cert: Path | None = None  # TLS: the router's client certificate (PEM), shown to the repository
    key: Path | None = None  # TLS: its private key (PEM); may be in ``cert``
    server_name: str | None = None  # TLS: the name its certificate must carry, when not ``host``

    @model_validator(mode="after")
    def _tls_keys(self) -> Repository:
        if self.transport == "tls" and self.ca is None:
            raise ValueError("a tls repository needs ca (the CA its certificate chains to)")
        if self.transport == "udp" and any(v is not None for v in (self.ca, self.cert, self.key, self.server_name)):
            raise ValueError("ca, cert, key and server_name are for tls repositories")
        if self.key is not None and self.cert is None:
            raise ValueError("key goes with cert")
        return self

    @property
    def name(self) -> str:
        """The repository's spool folder name, and how ``router audit status`` names it."""
        return re.sub(r"[^A-Za-z0-9.\-]", "_", f"{self.transport}-{self.host}-{self.port}")

    @property
    def where(self) -> str:
        return f"{self.transport}://{self.host}:{self.port}"


class Settings(Strict):
    source_id: str | None = Field(None, min_length=1, max_length=64, description="AuditSourceID; default ae_title")
    enterprise_site_id: str | None = Field(None, min_length=1, max_length=64)
    repositories: list[Repository] = []
    file: Path | None = None
    app_name: str = Field("router", pattern=r"^[!-~]{1,48}$", description="RFC 5424 APP-NAME")
    retry_initial: float = Field(1.0, gt=0, le=3600, description="s: first wait after a failed delivery")
    retry_max: float = Field(60.0, gt=0, le=86400, description="s: the longest wait between attempts")
    timeout: float = Field(10.0, gt=0, le=300, description="s: to connect, and for a repository to take a batch")
    login_repeat_after: float = Field(
        300.0, ge=0, description="s: a successful HTTP login of the same user from the same host is audited again "
        "only after this long (every request authenticates: there are no sessions); 0 audits every one"
    )  # fmt: skip

    @model_validator(mode="after")
    def _distinct(self) -> Settings:
        names = [r.name for r in self.repositories]
        if len(names) != len(set(names)):
            raise ValueError("two repositories with the same transport, host and port")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.repositories) or self.file is not None

    def resolved(self, base: Path) -> Settings:
        """These settings with every relative path made relative to ``base`` (the configuration's folder)."""

        def fix(path: Path | None) -> Path | None:
            return None if path is None else (base / path).resolve()

        repos = [r.model_copy(update={k: fix(getattr(r, k)) for k in ("ca", "cert", "key")}) for r in self.repositories]
        return self.model_copy(update={"repositories": repos, "file": fix(self.file)})
