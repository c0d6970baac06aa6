"""Router configuration: one YAML file, validated before anything starts.

``config/router.yaml`` is the embedded default. Relative paths in a file are resolved against the folder that
holds that file. Unknown keys and bad values are errors that name the key and say what is expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "router.yaml"
CONFIG_ENV = "ROUTER_CONFIG"


def _ae_title(value: str) -> str:
    if (
        not 1 <= len(value) <= 16
        or not value.strip()
        or "\\" in value
        or not value.isprintable()
        or not value.isascii()
    ):
        raise ValueError("an AE title is 1-16 printable ASCII characters, not all spaces, without a backslash")
    return value


AETitle = Annotated[str, AfterValidator(_ae_title)]
Port = Annotated[int, Field(ge=0, le=65535)]
PeerName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^\S+$")]


class ConfigError(Exception):
    """The configuration cannot be used; the message names every offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    acse: float = Field(30.0, gt=0, description="ARTIM / association negotiation timeout, seconds")
    dimse: float = Field(60.0, gt=0, description="wait for a DIMSE message, seconds")
    network: float = Field(60.0, gt=0, description="idle connection timeout, seconds")
    connect: float = Field(10.0, gt=0, description="TCP connect timeout for outgoing associations")


class DicomListener(_Strict):
    host: str = "0.0.0.0"
    port: Port = 11112
    max_associations: int = Field(16, ge=1)
    allowed_calling_aets: list[AETitle] = Field(default_factory=list)
    check_called_aet: bool = True
    max_pdu: int = Field(262144, ge=65536, description="largest PDU we accept, bytes (0 is not allowed)")
    timeouts: Timeouts = Timeouts()
    duplicates: Literal["reject", "ignore", "overwrite"] = "reject"


class AssigningAuthority(_Strict):
    """The universal id of an HL7 assigning authority known only by its namespace (HD.1)."""

    universal_id: str = Field(min_length=1, max_length=64)
    universal_id_type: str = Field("ISO", max_length=16)


class Worklist(_Strict):
    station_ae_by_modality: dict[str, list[AETitle]] = Field(
        default_factory=dict, description="Scheduled Station AE Title(s) for orders that name none, per modality"
    )
    utc_offset: str | None = Field(
        None,
        pattern=r"^[+-](0\d|1[0-4])[0-5]\d$",
        description="the time zone scheduled times are in (+HHMM); null = this server's local zone",
    )


class Hl7Listener(_Strict):
    host: str = "0.0.0.0"
    port: Port = 2575
    max_message_bytes: int = Field(1_048_576, ge=1024, description="a larger message closes its connection")
    idle_timeout: float = Field(300.0, gt=0, description="close a connection idle this long, seconds")
    max_connections: int = Field(64, ge=1, description="simultaneous MLLP connections; more are closed at once")
    accepted_processing_ids: list[Literal["P", "T", "D"]] = Field(["P"], min_length=1, description="MSH-11 accepted")
    assigning_authorities: dict[str, AssigningAuthority] = Field(default_factory=dict)
    worklist: Worklist = Worklist()


class HttpAuth(_Strict):
    bearer_token: str | None = Field(None, min_length=16, description="clients send Authorization: Bearer TOKEN")
    username: str | None = Field(None, min_length=1)
    password: str | None = Field(None, min_length=8)

    @model_validator(mode="after")
    def _pairs(self) -> HttpAuth:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    @property
    def enabled(self) -> bool:
        return self.bearer_token is not None or self.username is not None


class HttpTls(_Strict):
    cert: Path
    key: Path


class HttpListener(_Strict):
    host: str = "127.0.0.1"
    port: Port = 8080
    auth: HttpAuth = HttpAuth()
    tls: HttpTls | None = None
    max_upload_bytes: int = Field(4 * 1024**3, ge=1024, description="a larger STOW-RS request is answered 413")

    @model_validator(mode="after")
    def _protected_off_loopback(self) -> HttpListener:
        loopback = self.host in ("localhost", "::1") or self.host.startswith("127.")
        if not loopback and not self.auth.enabled:
            raise ValueError(
                f"host {self.host} is not a loopback address: set http.auth (bearer_token, or username and "
                "password) so patient data is not served to anyone who asks"
            )
        if not loopback and self.auth.username is not None and self.tls is None:
            raise ValueError("basic credentials off loopback need http.tls (cert, key)")
        return self


class ForwardSettings(_Strict):
    batch_size: int = Field(64, ge=1, le=1000)
    max_attempts: int = Field(30, ge=1, description="with the default backoff: about 2 h of outage")
    backoff_initial: float = Field(5.0, gt=0, description="seconds before the first retry")
    backoff_max: float = Field(300.0, gt=0, description="cap on the delay between retries, seconds")
    idle_release: float = Field(2.0, ge=0, description="keep an idle association this long, seconds")
    poll_interval: float = Field(1.0, gt=0, description="how often the queue is scanned, seconds")
    process: bool = Field(
        True, description="run the forward workers in a process of their own (false: threads of the serving process)"
    )

    @model_validator(mode="after")
    def _cap_not_below_initial(self) -> ForwardSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        return self


HostPort = Annotated[str, StringConstraints(pattern=r"^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$")]


class Peer(_Strict):
    """A DICOM peer (``ae_title``, ``host``, ``port``), an HL7 peer (``mllp: host:port``) or a DICOMweb peer
    (``stow_url``)."""

    ae_title: str = Field("", description="AE title of a DICOM peer")
    host: str = ""
    port: Port = 0
    mllp: HostPort | None = Field(None, description="host:port of an HL7 MLLP receiver")
    stow_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = Field(
        None, description="STOW-RS endpoint of a DICOMweb peer, e.g. http://pacs/dicom-web/studies"
    )
    auth: HttpAuth | None = Field(None, description="credentials for a DICOMweb peer")
    transfer_syntaxes: list[str] = Field(
        default_factory=list,
        description="syntaxes the peer takes (names like jpeg2000-lossless, or UIDs), preferred first; an object in "
        "another syntax is transcoded to the first one that can be produced; empty = as stored",
    )
    max_associations: int = Field(2, ge=1, le=32, description="parallel associations when a backlog builds")
    patient_id: Literal["mrn", "bsn"] = Field(
        "mrn", description="what goes into Patient ID of objects sent there: the MRN or the Dutch BSN"
    )
    # storage commitment (docs/workflow.md)
    commit_new_association: bool = Field(
        False, description="our commitment reports to this peer always go over a new association"
    )
    commit_wait: float = Field(
        60.0, ge=0, description="seconds to wait for this peer's report on the association of the N-ACTION"
    )
    commit_timeout: float = Field(
        3600.0, gt=0, description="duration of applicability: no report this long after the N-ACTION = failure"
    )
    commit_requests: int = Field(
        3, ge=1, le=100, description="commitment requests per object (each after a re-send) before dead-lettering"
    )
    delete_after_commit: bool = Field(False, description="remove the local copy once this peer has committed it")

    @model_validator(mode="after")
    def _one_kind(self) -> Peer:
        given = [k for k in ("ae_title", "host", "port") if k in self.model_fields_set]
        other = [k for k in ("mllp", "stow_url") if getattr(self, k) is not None]
        if len(other) > 1 or (other and given):
            raise ValueError("a peer is one of DICOM (ae_title, host, port), HL7 (mllp) or DICOMweb (stow_url)")
        if self.transfer_syntaxes:
            from router.transcode import target_problems  # late: the transcoder imports pydicom's encoders

            problems = [p for ts in self.transfer_syntaxes for p in target_problems(ts, allow_lossy=False)]
            if problems:
                raise ValueError("transfer_syntaxes: " + "; ".join(problems))
        if self.auth is not None and self.stow_url is None:
            raise ValueError("auth is for DICOMweb peers (stow_url)")
        if other:
            dicom_only = sorted(k for k in self.model_fields_set if k.startswith(("commit_", "delete_after")))
            if dicom_only:
                raise ValueError(f"{', '.join(dicom_only)}: storage commitment settings are for DICOM peers")
            return self
        missing = [k for k in ("ae_title", "host", "port") if k not in given]
        if missing:
            raise ValueError(
                f"a DICOM peer needs ae_title, host and port (missing {', '.join(missing)}); "
                "an HL7 peer needs mllp: host:port; a DICOMweb peer stow_url"
            )
        _ae_title(self.ae_title)
        if not self.host:
            raise ValueError("host must not be empty")
        if self.commit_timeout < self.commit_wait:
            raise ValueError("commit_timeout must be >= commit_wait")
        return self

    @property
    def is_mllp(self) -> bool:
        return self.mllp is not None

    def is_dicom_ae(self, ae_title: str) -> bool:
        """Whether this is the DICOM peer called ``ae_title`` (AE titles compare without their padding)."""
        return not self.is_mllp and not self.is_stow and self.ae_title.strip() == ae_title.strip()

    @property
    def is_stow(self) -> bool:
        return self.stow_url is not None

    @property
    def mllp_address(self) -> tuple[str, int]:
        assert self.mllp is not None
        host, _, port = self.mllp.rpartition(":")
        return host.strip("[]"), int(port)


class RouterConfig(_Strict):
    ae_title: AETitle = "ROUTER"
    data_dir: Path = Path("var")
    database_url: str | None = None
    rules_dir: Path = Path("rules")
    rules_reload_interval: float = Field(2.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    plugins: list[str] = Field(default_factory=list, description="extra plugin modules or .py files")
    dicom: DicomListener = DicomListener()
    hl7: Hl7Listener = Hl7Listener()
    http: HttpListener = HttpListener()
    forward: ForwardSettings = ForwardSettings()
    peers: dict[PeerName, Peer] = Field(default_factory=dict)
    source: Path | None = Field(None, exclude=True)

    def peer_by_ae(self, ae_title: str) -> str | None:
        """The name of the first DICOM peer with this AE title (for reports to a requesting peer)."""
        return next((name for name, peer in self.peers.items() if peer.is_dicom_ae(ae_title)), None)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'router.db'}"


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
        "plugins": [str((base_dir / p).resolve()) if p.endswith(".py") else p for p in cfg.plugins],
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
