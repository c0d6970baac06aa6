"""Peers: where the router sends what it forwards (DICOM, HL7 over MLLP, DICOMweb)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from router.config.base import HostPort, HttpAuth, Port, Strict, check_ae_title


class Peer(Strict):
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
        check_ae_title(self.ae_title)
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
