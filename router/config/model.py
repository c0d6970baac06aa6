"""The router's settings: listeners, forwarding, and the whole configuration (``RouterConfig``)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from router.config.base import AETitle, HttpAuth, PeerName, Port, Strict
from router.config.peers import DicomPeer, Peer
from router.config.storage import StorageSettings
from router.hl7.coding import DEFAULT_LOCAL_SCHEME, LOCAL_SCHEME_PATTERN


class Timeouts(Strict):
    acse: float = Field(30.0, gt=0, description="ARTIM / association negotiation timeout, seconds")
    dimse: float = Field(60.0, gt=0, description="wait for a DIMSE message, seconds")
    network: float = Field(60.0, gt=0, description="idle connection timeout, seconds")
    connect: float = Field(10.0, gt=0, description="TCP connect timeout for outgoing associations")


class DicomTls(Strict):
    """The TLS listener (``dicom.tls``): a second DIMSE listener beside the plain one."""

    port: Port = Field(2762, description="TCP port of the TLS listener (2762: dicom-tls)")
    cert: Path = Field(description="the router's certificate (PEM; the chain after it)")
    key: Path = Field(description="its private key (PEM, unencrypted)")
    ca: Path | None = Field(None, description="present = clients must show a certificate chaining to these CAs")


class DicomListener(Strict):
    host: str = "0.0.0.0"
    port: Port = 11112
    max_associations: int = Field(16, ge=1)
    allowed_calling_aets: list[AETitle] = Field(default_factory=list)
    check_called_aet: bool = True
    max_pdu: int = Field(262144, ge=65536, description="largest PDU we accept, bytes (0 is not allowed)")
    timeouts: Timeouts = Timeouts()
    duplicates: Literal["reject", "ignore", "overwrite"] = "reject"
    tls: DicomTls | None = None

    @model_validator(mode="after")
    def _two_ports(self) -> DicomListener:
        if self.tls is not None and self.tls.port == self.port and self.port != 0:
            raise ValueError(f"tls.port must differ from port ({self.port}): the TLS listener is a second listener")
        return self


class AssigningAuthority(Strict):
    """The universal id of an HL7 assigning authority known only by its namespace (HD.1)."""

    universal_id: str = Field(min_length=1, max_length=64)
    universal_id_type: str = Field("ISO", max_length=16)


class Worklist(Strict):
    station_ae_by_modality: dict[str, list[AETitle]] = Field(
        default_factory=dict, description="Scheduled Station AE Title(s) for orders that name none, per modality"
    )
    utc_offset: str | None = Field(
        None,
        pattern=r"^[+-](0\d|1[0-4])[0-5]\d$",
        description="the time zone scheduled times are in (+HHMM); null = this server's local zone",
    )


class Hl7Listener(Strict):
    host: str = "0.0.0.0"
    port: Port = 2575
    max_message_bytes: int = Field(1_048_576, ge=1024, description="a larger message closes its connection")
    idle_timeout: float = Field(300.0, gt=0, description="close a connection idle this long, seconds")
    message_timeout: float = Field(
        120.0, gt=0, description="close a connection whose message has not ended this long after it began, seconds"
    )
    max_connections: int = Field(64, ge=1, description="simultaneous MLLP connections; more are closed at once")
    accepted_processing_ids: list[Literal["P", "T", "D"]] = Field(["P"], min_length=1, description="MSH-11 accepted")
    validation: Literal["segments", "structure"] = Field(
        "segments", description="structure: also parse every message with hl7apy (about 10 ms each)"
    )
    assigning_authorities: dict[str, AssigningAuthority] = Field(default_factory=dict)
    worklist: Worklist = Worklist()
    local_coding_scheme: str = Field(
        DEFAULT_LOCAL_SCHEME,
        pattern=LOCAL_SCHEME_PATTERN,
        description="the DICOM Coding Scheme Designator of codes the feed marks local (HL7 'L', 'LB', no system)",
    )


class HttpTls(Strict):
    cert: Path
    key: Path


class HttpListener(Strict):
    host: str = "127.0.0.1"
    port: Port = 8080
    auth: HttpAuth = HttpAuth()
    tls: HttpTls | None = None
    max_upload_bytes: int = Field(4 * 1024**3, ge=1024, description="a larger STOW-RS request is answered 413")
    header_timeout: float = Field(
        30.0, gt=0, description="a request's headers must be in this long after the connection or the last response"
    )
    body_timeout: float = Field(60.0, gt=0, description="the longest pause in a request body, seconds")
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="a console login lasts this long, hours")

    @property
    def loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    @model_validator(mode="after")
    def _protected_off_loopback(self) -> HttpListener:
        # Off loopback the listener also needs someone to sign in: http.auth, or the router's users (router users
        # add), which only the database knows: the router checks that when it starts.
        if not self.loopback and self.tls is None:
            raise ValueError(
                f"host {self.host} is not a loopback address: set http.tls (cert, key), so that passwords, tokens "
                "and patient data do not cross the network in clear"
            )
        return self


class ActivitySettings(Strict):
    keep_days: float = Field(30.0, gt=0, description="activity rows (GET /api/activity) older than this are removed")


class ForwardSettings(Strict):
    batch_size: int = Field(64, ge=1, le=1000)
    max_attempts: int = Field(30, ge=1, description="with the default backoff: about 2 h of outage")
    backoff_initial: float = Field(5.0, gt=0, description="seconds before the first retry")
    backoff_max: float = Field(300.0, gt=0, description="cap on the delay between retries, seconds")
    idle_release: float = Field(2.0, ge=0, description="keep an idle association this long, seconds")
    poll_interval: float = Field(1.0, gt=0, description="how often the queue is scanned, seconds")
    process: bool = Field(
        True, description="run the forward workers in a process of their own (false: threads of the serving process)"
    )
    lease_seconds: float = Field(
        30.0, ge=3, le=3600, description="a claimed job's lease: another node takes the job over once it has expired"
    )

    @model_validator(mode="after")
    def _cap_not_below_initial(self) -> ForwardSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        return self


class ImportSettings(Strict):
    """``router import`` (docs/media.md)."""

    assume_charset: str = Field(
        "",
        description="read the text of an object whose Specific Character Set is invalid or does not fit its text "
        "under this set (a defined term such as 'ISO_IR 100', or a codec such as cp1252), instead of refusing it",
    )


def _host_name() -> str:
    """The default ``node_id``: the host name (its first 64 characters, no white space)."""
    return "".join(socket.gethostname().split())[:64] or "router"


class RouterConfig(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)  # `import` is a Python keyword
    ae_title: AETitle = "ROUTER"
    node_id: PeerName = Field(
        default_factory=_host_name, description="this node's name among the routers sharing one database"
    )
    data_dir: Path = Path("var")
    data_access: Literal["owner", "group"] = Field(
        "owner", description="who may read data_dir: the router's user (0600/0700), or its group too (0640/0750)"
    )
    database_url: str | None = None
    rules_dir: Path = Path("rules")
    rules_reload_interval: float = Field(2.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    plugin_modules: list[str] = Field(
        default_factory=list, description="extra plugin modules or .py files (beside the built-in and installed ones)"
    )
    plugins: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="each plugin's own settings, by plugin name, validated by the plugin"
    )
    dicom: DicomListener = DicomListener()
    hl7: Hl7Listener = Hl7Listener()
    http: HttpListener = HttpListener()
    forward: ForwardSettings = ForwardSettings()
    storage: StorageSettings = StorageSettings()
    activity: ActivitySettings = ActivitySettings()
    media_import: ImportSettings = Field(ImportSettings(), alias="import")
    peers: dict[PeerName, Peer] = Field(default_factory=dict)
    source: Path | None = Field(None, exclude=True)

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugins_by_name(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError(
                "a mapping of plugin name to that plugin's settings; list extra plugin modules under plugin_modules"
            )
        return value

    def peer_by_ae(self, ae_title: str) -> str | None:
        """The name of the first DICOM peer with this AE title (for reports to a requesting peer)."""
        return next(
            (name for name, peer in self.peers.items() if isinstance(peer, DicomPeer) and peer.is_ae(ae_title)), None
        )

    def dicom_peer(self, name: str) -> DicomPeer | None:
        """The DICOM peer called ``name`` in ``peers:``; None when there is none or it is of another type."""
        peer = self.peers.get(name)
        return peer if isinstance(peer, DicomPeer) else None

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'router.db'}"
