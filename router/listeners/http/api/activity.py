"""``/api/activity``: the trace of what the router did with the objects and messages a business key finds.

Each item is one row of the activity record (``router.store.activity``), oldest first: ``received`` (from whom,
which rules matched, what each stage did, the jobs queued), ``refused``, ``duplicate``, each delivery attempt
(``delivered``, ``failed``, ``dead``, with the peer's status and the error) and each operator action (``retried``,
``deleted``, ``sent``). ``subject`` groups the rows of one object (its SOP Instance UID) or HL7 message.
"""

from __future__ import annotations

from typing import Any

from router.listeners.http.api.endpoint import ApiError, Call, Endpoint, Param
from router.listeners.http.api.services import ApiServices
from router.store.activity import KEYS, trace

PARAMS = (
    Param("patient_id", "Patient ID (0010,0020) or PID-3", max_length=64),
    Param("accession", "Accession Number (0008,0050), IPC-1 or OBR-18", max_length=64),
    Param("study_uid", "Study Instance UID", max_length=64),
    Param("sop_uid", "SOP Instance UID", max_length=64),
    Param("msh10", "HL7 message control id (MSH-10)", max_length=199),
    Param("since", "only what happened from then on", kind="date-time"),
    Param("limit", "rows at most", kind="integer", minimum=1, maximum=10_000, default=1000),
)


def make_endpoints(services: ApiServices) -> list[Endpoint]:
    def activity(call: Call) -> dict[str, Any]:
        keys = {k: call.params[k] for k in KEYS if call.params.get(k)}
        if not keys:
            raise ApiError(400, f"give at least one of {', '.join(KEYS)}")
        items, truncated = trace(services.engine, keys, call.params["since"], call.params["limit"])
        return {"items": items, "subjects": len({item["subject"] for item in items}), "truncated": truncated}

    return [
        Endpoint("GET", "/api/activity", "What the router did with the objects and messages a business key finds",
                 activity, params=PARAMS, responses={400: "no business key given"}, tag="activity"),
    ]  # fmt: skip
