"""Peers: where the router sends what it forwards, one entry per peer under ``peers:``.

A peer's ``type`` says which destination delivers to it: ``dicom`` (C-STORE, DIMSE-N: ``ae_title``, ``host``,
``port``), ``mllp`` (HL7 v2: ``mllp: host:port``), ``dicomweb`` (STOW-RS: ``stow_url``), or a type a plugin provides
(``router_destinations``; its settings are checked by that plugin when the router starts). Without ``type`` the
kind is told by the keys, as before: ``mllp`` makes an HL7 peer, ``stow_url`` a DICOMweb one, anything else a DICOM
one.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator

from router.config.base import HostPort, HttpAuth, Port, Strict, check_ae_title
from router.config.printing import PrintSettings

BUILTIN_TYPES = ("dicom", "mllp", "dicomweb")
PLUGIN_TAG = "plugin"  # the union member of every type a plugin provides
_DICOM_KEYS = ("ae_title", "host", "port")
_COMMIT_KEYS = ("commit_new_association", "commit_wait", "commit_timeout", "commit_requests", "delete_after_commit")
_DICOM_ONLY = ("tls", "accept_from", "print")
_ONE_KIND = "a peer is one of DICOM (ae_title, host, port), HL7 (mllp) or DICOMweb (stow_url)"
# the attributes a pinned certificate subject may name: RFC 4514 short names, and OpenSSL's long names for them
SUBJECT_NAMES = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
    "localityName": "L", "stateOrProvinceName": "ST", "streetAddress": "STREET", "domainComponent": "DC",
    "userId": "UID", "emailAddress": "emailAddress", "serialNumber": "serialNumber",
}  # fmt: skip
_SHORT = {name.lower(): short for long, short in SUBJECT_NAMES.items() for name in (long, short)}
Subject = tuple[tuple[str, str], ...]  # (short name, value) pairs, sorted: compared as a whole


def parse_subject(text: str) -> Subject:
    """``CN=pacs.local, O=General Hospital`` -> sorted (short name, value) pairs; ``\\,`` escapes a comma."""
    pairs = []
    for part in re.split(r"(?<!\\),", text):
        name, eq, value = part.partition("=")
        short = _SHORT.get(name.strip().lower())
        if not eq or short is None or not value.strip():
            known = ", ".join(sorted(set(SUBJECT_NAMES.values())))
            raise ValueError(f"{part.strip()!r} is not NAME=value with NAME one of {known}")
        pairs.append((short, value.strip().replace("\\,", ",")))
    return tuple(sorted(pairs))


def subject_text(subject: Subject) -> str:
    escaped = ((name, value.replace(",", "\\,")) for name, value in subject)
    return ", ".join(f"{name}={value}" for name, value in escaped)


def _check_subject(value: str | None) -> str | None:
    if value is not None:
        parse_subject(value)
    return value


def check_network(value: str) -> str:
    """An IP address or a network (``10.1.2.3``, ``10.1.2.0/24``, ``fd00::/8``); host bits may be set."""
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network (host names are not accepted)") from None
    return value.strip()


Network = Annotated[str, AfterValidator(check_network)]


def peer_type(data: Any) -> str:
    """The ``type`` of a peer entry: given, or told by its keys."""
    if isinstance(data, dict):
        given = data.get("type")
        if isinstance(given, str) and given:
            return given
        return "mllp" if "mllp" in data else "dicomweb" if "stow_url" in data else "dicom"
    return str(getattr(data, "type", "dicom"))


def _tag(data: Any) -> str:
    kind = peer_type(data)
    return kind if kind in BUILTIN_TYPES else PLUGIN_TAG


def _refuse_foreign_keys(data: Any, own: str) -> None:
    """A peer that mixes the keys of two kinds, or sets another kind's settings, is refused with a message that
    says what each kind needs (a strict model alone would only call the key unknown)."""
    if not isinstance(data, dict):
        return
    kinds = {"dicom": any(k in data for k in _DICOM_KEYS), "mllp": "mllp" in data, "dicomweb": "stow_url" in data}
    if sum(kinds.values()) > 1 or any(given for kind, given in kinds.items() if kind != own):
        raise ValueError(_ONE_KIND)
    commit = sorted(k for k in _COMMIT_KEYS if k in data)
    if commit and own != "dicom":
        raise ValueError(f"{', '.join(commit)}: storage commitment settings are for DICOM peers")
    if "auth" in data and own != "dicomweb":
        raise ValueError("auth is for DICOMweb peers (stow_url)")
    dicom_only = [k for k in _DICOM_ONLY if k in data]
    if dicom_only and own != "dicom":
        raise ValueError(f"{', '.join(dicom_only)}: for DICOM peers (ae_title, host, port)")


class PeerBase(Strict):
    """What every peer has."""

    carries: ClassVar[frozenset[str]] = frozenset()  # the envelope kinds (dicom, hl7, mpps) it can be sent
    max_associations: int = Field(2, ge=1, le=32, description="parallel associations when a backlog builds")


class ObjectPeer(PeerBase):
    """A peer that takes DICOM objects: what goes to it can be put in its syntaxes and given the BSN."""

    transfer_syntaxes: list[str] = Field(
        default_factory=list,
        description="syntaxes the peer takes (names like jpeg2000-lossless, or UIDs), preferred first; an object in "
        "another syntax is transcoded to the first one that can be produced; empty = as stored",
    )
    patient_id: Literal["mrn", "bsn"] = Field(
        "mrn", description="what goes into Patient ID of objects sent there: the MRN or the Dutch BSN"
    )

    @model_validator(mode="after")
    def _syntaxes_producible(self) -> ObjectPeer:
        if self.transfer_syntaxes:
            from router.transcode import target_problems  # late: the transcoder imports pydicom's encoders

            problems = [p for ts in self.transfer_syntaxes for p in target_problems(ts, allow_lossy=False)]
            if problems:
                raise ValueError("transfer_syntaxes: " + "; ".join(problems))
        return self


class PeerTls(Strict):
    """TLS to a DICOM peer (``peers.NAME.tls``): everything the router opens to it goes over TLS."""

    ca: Path = Field(description="the CA certificates the peer's certificate must chain to (PEM)")
    cert: Path | None = Field(None, description="the router's client certificate (PEM), for a peer asking one")
    key: Path | None = Field(None, description="its private key (PEM, unencrypted)")
    subject: Annotated[str | None, AfterValidator(_check_subject)] = Field(
        None, description="pinned: the peer's certificate must have exactly this subject (CN=..., O=...)"
    )
    check_hostname: bool = Field(True, description="the peer's certificate must name its host (DNS name or IP)")

    @model_validator(mode="after")
    def _pairs(self) -> PeerTls:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self

    @property
    def pinned(self) -> Subject | None:
        return parse_subject(self.subject) if self.subject is not None else None


class DicomPeer(ObjectPeer):
    """A DICOM AE: C-STORE for objects, DIMSE-N for MPPS and storage commitment reports."""

    carries: ClassVar[frozenset[str]] = frozenset({"dicom", "mpps"})
    type: Literal["dicom"] = "dicom"
    ae_title: str = Field("", description="AE title of a DICOM peer")
    host: str = ""
    port: Port = 0
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
    tls: PeerTls | None = Field(None, description="open every association to this peer over TLS")
    accept_from: list[Network] = Field(
        default_factory=list, description="its AE title is accepted only from these addresses or networks"
    )
    print: PrintSettings | None = Field(
        None, description="a DICOM printer: its film settings (docs/print.md); {} for the defaults"
    )

    @model_validator(mode="before")
    @classmethod
    def _own_keys(cls, data: Any) -> Any:
        _refuse_foreign_keys(data, "dicom")
        return data

    @model_validator(mode="after")
    def _complete(self) -> DicomPeer:
        missing = [k for k in _DICOM_KEYS if k not in self.model_fields_set]
        if missing:
            raise ValueError(
                f"a DICOM peer needs ae_title, host and port (missing {', '.join(missing)}); "
                "an HL7 peer needs mllp: host:port; a DICOMweb peer stow_url"
            )
        check_ae_title(self.ae_title)
        if not self.host:
            raise ValueError("host must not be empty")
        if self.commit_timeout < self.commit_wait:
            raise ValueError("commit_timeout must be >= commit_wait")
        return self

    def is_ae(self, ae_title: str) -> bool:
        """Whether this peer is called ``ae_title`` (AE titles compare without their padding)."""
        return self.ae_title.strip() == ae_title.strip()

    def accepts_from(self, host: str) -> bool:
        """Whether ``host`` (an IP address) is in ``accept_from``; an IPv4-mapped IPv6 address counts as IPv4."""
        try:
            address = ipaddress.ip_address(host.strip("[]").partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.accept_from)


class MllpPeer(PeerBase):
    """An HL7 v2 receiver over MLLP: messages are sent one at a time, in order."""

    carries: ClassVar[frozenset[str]] = frozenset({"hl7"})
    type: Literal["mllp"] = "mllp"
    mllp: HostPort = Field(description="host:port of an HL7 MLLP receiver")

    @model_validator(mode="before")
    @classmethod
    def _own_keys(cls, data: Any) -> Any:
        _refuse_foreign_keys(data, "mllp")
        return data

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.mllp.rpartition(":")
        return host.strip("[]"), int(port)


class DicomwebPeer(ObjectPeer):
    """A DICOMweb server: objects are sent by STOW-RS."""

    carries: ClassVar[frozenset[str]] = frozenset({"dicom"})
    type: Literal["dicomweb"] = "dicomweb"
    stow_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] = Field(
        description="STOW-RS endpoint of a DICOMweb peer, e.g. http://pacs/dicom-web/studies"
    )
    auth: HttpAuth | None = Field(None, description="credentials for a DICOMweb peer")

    @model_validator(mode="before")
    @classmethod
    def _own_keys(cls, data: Any) -> Any:
        _refuse_foreign_keys(data, "dicomweb")
        return data


class PluginPeer(PeerBase):
    """A peer of a type a plugin provides: every key besides ``type`` and ``max_associations`` is the plugin's
    to check (``router.destinations.registry.check_plugin_peers``)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    carries: ClassVar[frozenset[str]] = frozenset({"dicom", "hl7", "mpps"})
    type: str

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


Peer = Annotated[
    Annotated[DicomPeer, Tag("dicom")]
    | Annotated[MllpPeer, Tag("mllp")]
    | Annotated[DicomwebPeer, Tag("dicomweb")]
    | Annotated[PluginPeer, Tag(PLUGIN_TAG)],
    Discriminator(_tag),
]
AnyPeer = DicomPeer | MllpPeer | DicomwebPeer | PluginPeer
UNION_TAGS = (*BUILTIN_TYPES, PLUGIN_TAG)  # appear in validation error locations (peers.NAME.TAG.key)
