"""The forward queue: ``/api/jobs`` (list, newest first, keyset pages), retry one or all matching, delete one.

The operations are ``router.outbox.queue.Outbox``'s, the ones ``router queue`` runs: one code path. A dead letter
shows its last status (the peer's DIMSE or HTTP status) and its last error.
"""

from __future__ import annotations

from typing import Any

from router.listeners.http.api.endpoint import ApiError, Call, Endpoint, Param
from router.listeners.http.api.services import ApiServices
from router.outbox.jobs import JobKind
from router.outbox.queue import JobBusy
from router.store.models import Job, JobState

STATE = Param("state", "job state", enum=JobState.ALL)
PEER = Param("peer", "peer name", max_length=64)
KIND = Param("kind", "job kind", enum=tuple(k.value for k in JobKind))
JOB_ID = Param("id", "job id", kind="integer", where="path", minimum=1, maximum=2**62)
LIST_PARAMS = (
    STATE, PEER, KIND,
    Param("limit", "jobs per page", kind="integer", minimum=1, maximum=1000, default=100),
    Param("cursor", "the previous page's next", kind="integer", minimum=1, maximum=2**62),
)  # fmt: skip
RETRY_STATE = Param("state", "the jobs to requeue: dead (default) or pending (try now)",
                    enum=(JobState.DEAD, JobState.PENDING), default=JobState.DEAD)  # fmt: skip


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "state": job.state, "peer": job.peer, "kind": job.kind, "sop_uid": job.sop_uid,
        "sop_class_uid": job.sop_class_uid, "transfer_syntax": job.transfer_syntax, "rule": job.rule,
        "attempts": job.attempts, "next_attempt_at": job.next_attempt_at, "last_status": job.last_status,
        "last_error": job.last_error, "created_at": job.created_at, "updated_at": job.updated_at,
    }  # fmt: skip


def make_endpoints(services: ApiServices) -> list[Endpoint]:
    def role(call: Call) -> str:
        return call.identity.role if call.identity is not None else ""

    def jobs(call: Call) -> dict[str, Any]:
        p = call.params
        found, cursor = services.outbox.page(p["state"], p["peer"], p["kind"], p["limit"], p["cursor"])
        return {"items": [job_json(job) for job in found], "next": cursor}

    def job(call: Call) -> dict[str, Any]:
        found = services.outbox.get(call.params["id"])
        if found is None:
            raise ApiError(404, f"no job {call.params['id']}")
        return job_json(found)

    def retry_one(call: Call) -> dict[str, Any]:
        job_id = call.params["id"]
        found = services.outbox.get(job_id)
        if found is None:
            raise ApiError(404, f"no job {job_id}")
        if not services.outbox.retry(ids=[job_id], by=call.user):
            raise ApiError(409, f"job {job_id} is {found.state}: only dead or pending jobs are retried")
        services.changed(call.user, role(call), "job.retried", str(job_id), call.address, peer=found.peer)
        services.wake({found.peer})
        return {"retried": 1}

    def retry_all(call: Call) -> dict[str, Any]:
        state, peer = call.params["state"], call.params["peer"]
        n = services.outbox.retry(state=state, peer=peer, by=call.user)
        if n:
            services.changed(call.user, role(call), "jobs.retried", peer or "*", call.address, state=state, jobs=n)
            services.wake({peer} if peer else None)
        return {"retried": n}

    def delete(call: Call) -> dict[str, Any]:
        job_id = call.params["id"]
        try:
            gone = services.outbox.delete(job_id, by=call.user)
        except JobBusy as exc:
            raise ApiError(409, str(exc)) from None
        if gone is None:
            raise ApiError(404, f"no job {job_id}")
        services.changed(call.user, role(call), "job.deleted", str(job_id), call.address, peer=gone.peer,
                         state=gone.state)  # fmt: skip
        return {"deleted": job_id}

    return [
        Endpoint("GET", "/api/jobs", "Jobs, newest first: {items, next}; pass next as cursor for the next page",
                 jobs, params=LIST_PARAMS, tag="jobs"),
        Endpoint("GET", "/api/jobs/{id}", "One job, with its last status and error", job, params=(JOB_ID,),
                 responses={404: "no such job"}, tag="jobs"),
        Endpoint("POST", "/api/jobs/{id}/retry", "Requeue a dead job (or try a pending one now), attempts from zero",
                 retry_one, role="operator", params=(JOB_ID,),
                 responses={404: "no such job", 409: "the job is being delivered or done"}, tag="jobs"),
        Endpoint("POST", "/api/jobs/retry", "Requeue every job in state (dead by default), of peer if given",
                 retry_all, role="operator", params=(RETRY_STATE, PEER), tag="jobs"),
        Endpoint("DELETE", "/api/jobs/{id}", "Delete a pending, done or dead job", delete, role="operator",
                 params=(JOB_ID,), responses={404: "no such job", 409: "the job is being delivered"}, tag="jobs"),
    ]  # fmt: skip
