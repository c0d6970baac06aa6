"""Peers: where the router sends what it forwards, one entry per peer under ``peers:``.

A peer's ``type`` says which destination delivers to it: ``dicom`` (C-STORE, DIMSE-N: ``ae_title``, ``host``,
``port``), ``mllp`` (HL7 v2: ``mllp: host:port``), ``dicomweb`` (STOW-RS: ``stow_url``), or a type a plugin provides
(``router_destinations``; its settings are checked by that plugin when the router starts). Without ``type`` the
kind is told by the keys, as before: ``mllp`` makes an HL7 peer, ``stow_url`` a DICOMweb one, anything else a DICOM
one.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator

from router.config.base import HostPort, HttpAuth, Port, Strict, check_ae_title

BUILTIN_TYPES = ("dicom", "mllp", "dicomweb")
PLUGIN_TAG = "plugin"  # the union member of every type a plugin provides
_DICOM_KEYS = ("ae_title", "host", "port")
_COMMIT_KEYS = ("commit_new_association", "commit_wait", "commit_timeout", "commit_requests", "delete_after_commit")
_ONE_KIND = "a peer is one of DICOM (ae_title, host, port), HL7 (mllp) or DICOMweb (stow_url)"


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
