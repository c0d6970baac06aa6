"""What decision hooks answer, and what some notifications carry.

A decision hook (``firstresult``) returns ``None`` for "no opinion: ask the next plugin", or one of these answers.

Association policy (``router_association_policy``), PS3.8 9.3.4 / 7.1.1.9 A-ASSOCIATE-RJ:

- ``Accept()``: let the association in, skipping the plugins after this one (the built-in checks included);
- ``Reject(reason, result, source, diagnostic)``: refuse it with an A-ASSOCIATE-RJ of that result, source and
  diagnostic; ``reason`` is the text logged and announced with ``router_association_rejected``.

HTTP authentication (``router_authenticate``):

- ``Authenticated(user, method, role)``: the request goes on, as ``user``, with the admin API's ``role``;
- ``Denied(reason, user)``: 401; ``user`` is whom the request claimed to be, when known (never a secret).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A-ASSOCIATE-RJ result, source and diagnostic (PS3.8 9.3.4)
REJECTED_PERMANENT, REJECTED_TRANSIENT = 0x01, 0x02
SERVICE_USER, SERVICE_PROVIDER_ACSE, SERVICE_PROVIDER_PRESENTATION = 0x01, 0x02, 0x03
NO_REASON_GIVEN = 0x01
APPLICATION_CONTEXT_NOT_SUPPORTED = 0x02
CALLING_AE_NOT_RECOGNIZED = 0x03
CALLED_AE_NOT_RECOGNIZED = 0x07
PROTOCOL_VERSION_NOT_SUPPORTED = 0x02  # source: service provider (ACSE)
TEMPORARY_CONGESTION, LOCAL_LIMIT_EXCEEDED = 0x01, 0x02  # source: service provider (presentation)
VALID_DIAGNOSTICS = {
    SERVICE_USER: (NO_REASON_GIVEN, APPLICATION_CONTEXT_NOT_SUPPORTED, CALLING_AE_NOT_RECOGNIZED,
                   CALLED_AE_NOT_RECOGNIZED),
    SERVICE_PROVIDER_ACSE: (NO_REASON_GIVEN, PROTOCOL_VERSION_NOT_SUPPORTED),
    SERVICE_PROVIDER_PRESENTATION: (TEMPORARY_CONGESTION, LOCAL_LIMIT_EXCEEDED),
}  # fmt: skip


@dataclass(frozen=True)
class Accept:
    """Let the association in (no later plugin is asked)."""

    reason: str = ""


@dataclass(frozen=True)
class Reject:
    """Refuse the association with an A-ASSOCIATE-RJ. The defaults: rejected-permanent, service-user, no reason."""

    reason: str
    result: int = REJECTED_PERMANENT
    source: int = SERVICE_USER
    diagnostic: int = NO_REASON_GIVEN

    def __post_init__(self) -> None:
        if self.result not in (REJECTED_PERMANENT, REJECTED_TRANSIENT):
            raise ValueError(f"result {self.result} is neither 1 (permanent) nor 2 (transient)")
        if self.diagnostic not in VALID_DIAGNOSTICS.get(self.source, ()):
            raise ValueError(f"diagnostic {self.diagnostic} is not valid for source {self.source} (PS3.8 9.3.4)")


# What the router answers when the policy itself fails (a plugin raised): refused, and the caller may try again.
POLICY_FAILED = Reject("the association policy failed", REJECTED_TRANSIENT, SERVICE_USER, NO_REASON_GIVEN)


@dataclass(frozen=True)
class Authenticated:
    """The request is from ``user``; ``method`` says how it was shown (``bearer``, ``basic``, ``token``, a plugin's
    own). ``role`` is what the admin API lets the user do (``viewer``, ``operator``, ``admin``; ``""``: nothing);
    two answers for the same user and method are equal whatever their roles."""

    user: str
    method: str
    role: str = field(default="", compare=False)


@dataclass(frozen=True)
class Denied:
    """The request is refused (401). ``user``: the name it claimed, when there was one."""

    reason: str
    user: str = ""


AUTHENTICATION_FAILED = Denied("the authentication check failed")


@dataclass(frozen=True)
class InstanceRef:
    """One instance an export sent (``router_instances_exported``)."""

    study_uid: str
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class ImportedInstance:
    """One instance read from media (``router_instances_imported``): the values an Import audit message names.
    The patient values are for an audit trail: never log them."""

    study_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    patient_id: str = ""
    issuer: str = ""
    patient_name: str = ""
    accession: str = ""
