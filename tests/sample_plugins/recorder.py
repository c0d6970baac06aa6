"""A third-party style plugin that records every notification, with settings of its own, and an association policy.

    plugin_modules: [tests/sample_plugins/recorder.py]
    plugins:
      recorder:
        events: /tmp/events.jsonl      # each notification appended as one JSON line
        reject_calling: [BLOCKED]      # calling AE titles this plugin's policy refuses

What an audit plugin would do, minus the audit: every hook with the arguments an audit message needs, reduced to
JSON (UIDs, AE titles, codes, counts; never a patient's name). Its settings arrive in ``router_startup``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydicom.dataset import Dataset

from router.config import RouterConfig
from router.hl7.message import Hl7Header
from router.hooks.answers import InstanceRef, Reject
from router.hooks.specs import hookimpl
from router.intake.envelope import Envelope
from router.store.models import Job


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: str
    reject_calling: list[str] = []
    reject_reason: str = "refused by the recorder's policy"


settings_model = Settings
_settings: list[Settings] = []  # set by router_startup, in each process


def _record(event: str, **data: Any) -> None:
    if not _settings:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), **data}) + "\n"
    fd = os.open(_settings[0].events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _keys(ds: Dataset | None, *keywords: str) -> dict[str, str] | None:
    return None if ds is None else {k: str(ds.get(k, "")) for k in keywords}


@hookimpl
def router_startup(process: str, plugin_settings: Mapping[str, BaseModel]) -> None:
    mine = plugin_settings["recorder"]
    assert isinstance(mine, Settings)
    _settings[:] = [mine]
    _record("startup", process=process, settings=sorted(plugin_settings))


@hookimpl
def router_shutdown(process: str) -> None:
    _record("shutdown", process=process)


@hookimpl
def router_rules_reloaded(ok: bool, rules: int, files: list[str], problems: list[str]) -> None:
    _record("rules_reloaded", ok=ok, rules=rules, files=[os.path.basename(f) for f in files], problems=problems)


@hookimpl
def router_association_policy(calling_ae: str, config: RouterConfig) -> Reject | None:
    if _settings and calling_ae in _settings[0].reject_calling:
        return Reject(_settings[0].reject_reason, result=2, source=1, diagnostic=1)
    return None


@hookimpl
def router_association_accepted(calling_ae: str, called_ae: str, address: str, direction: str) -> None:
    _record("association_accepted", calling_ae=calling_ae, called_ae=called_ae, direction=direction)


@hookimpl
def router_association_rejected(
    calling_ae: str, called_ae: str, address: str, reason: str, result: int, source: int, diagnostic: int
) -> None:
    _record("association_rejected", calling_ae=calling_ae, called_ae=called_ae, address=address, reason=reason,
            codes=[result, source, diagnostic])  # fmt: skip


@hookimpl
def router_instance_stored(envelope: Envelope, outcome: str) -> None:
    _record("instance_stored", sop=envelope.sop_instance_uid, outcome=outcome)


@hookimpl
def router_forwarded(job: Job, status: int) -> None:
    _record("forwarded", sop=job.sop_uid, peer=job.peer, status=status)


@hookimpl
def router_jobs_taken_over(node_id: str, peers: dict[str, int]) -> None:
    _record("jobs_taken_over", node_id=node_id, peers=peers)


@hookimpl
def router_hl7_received(message_type: str, control_id: str, sending_application: str, sending_facility: str,
                        address: str, message: Hl7Header) -> None:  # fmt: skip
    _record("hl7_received", message_type=message_type, control_id=control_id, sending=sending_application,
            facility=sending_facility, has_address=bool(address), parsed=message.message_type)  # fmt: skip


@hookimpl
def router_hl7_acknowledged(ack_code: str, error: str, message_type: str, control_id: str,
                            sending_application: str, address: str, message: Hl7Header | None) -> None:  # fmt: skip
    _record("hl7_acknowledged", ack_code=ack_code, error=error, message_type=message_type, control_id=control_id,
            sending=sending_application, has_message=message is not None)  # fmt: skip


@hookimpl
def router_mpps_created(sop_instance_uid: str, status: str, calling_ae: str, dataset: Dataset) -> None:
    _record("mpps_created", sop=sop_instance_uid, status=status, calling_ae=calling_ae,
            step=_keys(dataset, "PerformedProcedureStepID", "Modality"))  # fmt: skip


@hookimpl
def router_mpps_updated(sop_instance_uid: str, status: str, calling_ae: str, dataset: Dataset) -> None:
    _record("mpps_updated", sop=sop_instance_uid, status=status, calling_ae=calling_ae,
            step=_keys(dataset, "PerformedProcedureStepID", "PerformedProcedureStepEndTime"))  # fmt: skip


@hookimpl
def router_commitment_requested(transaction_uid: str, direction: str, peer_ae: str, address: str,
                                sop_instance_uids: list[str]) -> None:  # fmt: skip
    _record("commitment_requested", transaction=transaction_uid, direction=direction, peer_ae=peer_ae,
            has_address=bool(address), sops=sop_instance_uids)  # fmt: skip


@hookimpl
def router_commitment_reported(transaction_uid: str, direction: str, peer_ae: str, committed: list[str],
                               failed: list[str]) -> None:  # fmt: skip
    _record("commitment_reported", transaction=transaction_uid, direction=direction, peer_ae=peer_ae,
            committed=committed, failed=failed)  # fmt: skip


@hookimpl
def router_query_answered(service: str, calling_ae: str, user: str, sop_class_uid: str, level: str,
                          identifier: Dataset | None, matches: int, status: int) -> None:  # fmt: skip
    _record("query_answered", service=service, calling_ae=calling_ae, user=user, sop_class=sop_class_uid,
            level=level, keys=_keys(identifier, "StudyInstanceUID", "AccessionNumber"), matches=matches,
            status=status)  # fmt: skip


@hookimpl
def router_instances_exported(service: str, calling_ae: str, user: str, address: str, destination: str,
                              instances: list[InstanceRef], failed: int, status: int) -> None:  # fmt: skip
    _record("instances_exported", service=service, calling_ae=calling_ae, user=user, has_address=bool(address),
            destination=destination, sops=sorted(i.sop_instance_uid for i in instances),
            studies=sorted({i.study_uid for i in instances}), classes=sorted({i.sop_class_uid for i in instances}),
            failed=failed, status=status)  # fmt: skip


@hookimpl
def router_authentication_succeeded(user: str, method: str, path: str) -> None:
    _record("authentication_succeeded", user=user, method=method, path=path)


@hookimpl
def router_authentication_failed(user: str, reason: str, address: str, path: str) -> None:
    _record("authentication_failed", user=user, reason=reason, has_address=bool(address), path=path)
