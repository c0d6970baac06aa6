"""The stored studies and the worklist: ``/api/studies`` (the QIDO-RS engine, ``router.query``), ``/api/worklist``,
and ``POST /api/studies/{uid}/send`` (queue a study's stored instances for a peer through ``outbox.jobs.enqueue``).

Both searches are announced with ``router_query_answered`` (service ``API``), as every query of the store is.
"""

from __future__ import annotations

import itertools
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select

from router.hooks.manager import notify
from router.listeners.http.api.endpoint import ApiError, Call, Endpoint, Param
from router.listeners.http.api.services import ApiServices
from router.listeners.http.qido import BadQuery, identifier
from router.outbox.jobs import JobKind, NewJob, enqueue
from router.query.find import QueryError, plan_find, run_find
from router.query.model import STUDY_ROOT
from router.store.activity import Entry, record
from router.store.models import SpsStatus
from router.store.tables import INSTANCE, PATIENT, SERIES, STUDY, WORKLIST_ITEM

STUDY_KEYS = ("PatientID", "PatientName", "AccessionNumber", "StudyDate", "ModalitiesInStudy", "StudyInstanceUID",
              "StudyDescription", "ReferringPhysicianName")  # fmt: skip
STUDY_PARAMS = (
    *(Param(k, f"{k}: a value, * and ? wildcards, a date range (StudyDate=20240101-20240131)") for k in STUDY_KEYS),
    Param("limit", "studies at most", kind="integer", minimum=1, maximum=1000, default=100),
    Param("offset", "skip this many", kind="integer", minimum=0, maximum=1_000_000, default=0),
)
WORKLIST_PARAMS = (
    Param("date", "scheduled date, YYYYMMDD", max_length=8),
    Param("modality", "modality", max_length=16),
    Param("station_ae", "scheduled station AE title", max_length=16),
    Param("accession", "accession number", max_length=16),
    Param(
        "status",
        "step status",
        enum=(*SpsStatus.ACTIVE, SpsStatus.COMPLETED, SpsStatus.DISCONTINUED, SpsStatus.CANCELED),
    ),
    Param("limit", "items at most", kind="integer", minimum=1, maximum=1000, default=100),
    Param("cursor", "the previous page's next", kind="integer", minimum=1, maximum=2**62),
)
UID = Param("uid", "Study Instance UID", where="path", max_length=64)
SEND_PEER = Param("peer", "the peer to send the study to", max_length=64, required=True)


def _plain(ds: Dataset) -> dict[str, Any]:
    """A match as {keyword: text} (multiple values as a list), without the query's own attributes."""
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle") or elem.VR == "SQ":
            continue
        value = elem.value
        if value is None or value == "":
            out[elem.keyword] = ""
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            out[elem.keyword] = [str(v) for v in value]
        else:
            out[elem.keyword] = str(value)
    return out


class StudiesApi:
    """The handlers of /api/studies and /api/worklist."""

    def __init__(self, services: ApiServices) -> None:
        self.services = services
        self.engine = services.engine
        self.config = services.config

    def announce(self, call: Call, level: str, keys: Dataset | None, matches: int) -> None:
        notify(self.services.pm, "router_query_answered", service="API", calling_ae="", user=call.user,
               address=call.address, sop_class_uid="", level=level, identifier=keys, matches=matches,
               status=200)  # fmt: skip

    def studies(self, call: Call) -> dict[str, Any]:
        asked = [(k, str(call.params[k])) for k in STUDY_KEYS if call.params.get(k)]
        try:
            keys, _, _ = identifier("STUDY", asked, {})
            plan = plan_find(STUDY_ROOT, keys, relational=True, combined_datetime=True)
            offset, limit = call.params["offset"], call.params["limit"]
            found = list(itertools.islice(run_find(self.engine, plan), offset, offset + limit + 1))
        except BadQuery as exc:
            raise ApiError(400, str(exc)) from None
        except QueryError as exc:
            raise ApiError(400, exc.reason) from None
        self.announce(call, "STUDY", keys, min(len(found), limit))
        more = len(found) > limit
        return {"items": [_plain(ds) for ds in found[:limit]], "next_offset": offset + limit if more else None}

    def worklist(self, call: Call) -> dict[str, Any]:
        p = call.params
        item = WORKLIST_ITEM
        query = (
            select(item, PATIENT.c.patient_id, PATIENT.c.name.label("patient_name"))
            .join(PATIENT, PATIENT.c.id == item.c.patient_fk)
            .order_by(item.c.id.desc())
            .limit(p["limit"] + 1)
        )
        for column, key in (("sps_start_date", "date"), ("modality", "modality"), ("station_ae", "station_ae"),
                            ("accession_number", "accession"), ("status", "status")):  # fmt: skip
            if p[key]:
                query = query.where(item.c[column] == p[key])
        if p["cursor"]:
            query = query.where(item.c.id < p["cursor"])
        with self.engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings().all()]
        more = len(rows) > p["limit"]
        rows = rows[: p["limit"]]
        self.announce(call, "", None, len(rows))
        return {"items": rows, "next": rows[-1]["id"] if more and rows else None}

    def send(self, call: Call) -> Any:
        uid, peer_name = call.params["uid"], call.params["peer"]
        peer = self.config.peers.get(peer_name or "")
        if peer is None:
            raise ApiError(422, f"peer: no peer {peer_name!r} in the configuration")
        if "dicom" not in peer.carries:
            raise ApiError(422, f"peer {peer_name!r} ({peer.type}) does not take DICOM objects")
        query = (
            select(INSTANCE.c.sop_uid, INSTANCE.c.sop_class_uid, INSTANCE.c.path, INSTANCE.c.transfer_syntax)
            .join(SERIES, SERIES.c.id == INSTANCE.c.series_fk)
            .join(STUDY, STUDY.c.id == SERIES.c.study_fk)
            .where(STUDY.c.study_uid == uid)
            .order_by(INSTANCE.c.id)
        )
        rule = f"api:{call.user}"[:128]
        with self.services.write_lock, self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                raise ApiError(404, f"no stored instance of study {uid}")
            enqueue(conn, [NewJob(JobKind.DICOM_STORE, peer_name, r.sop_uid, r.path, r.sop_class_uid,
                                  r.transfer_syntax, rule) for r in rows])  # fmt: skip
            record(conn, [Entry("sent", r.sop_uid, "dicom", {"sop_uid": r.sop_uid, "study_uid": uid}, peer=peer_name,
                                detail={"by": call.user}) for r in rows])  # fmt: skip
        self.services.wake({peer_name})
        role = call.identity.role if call.identity else ""
        self.services.changed(call.user, role, "study.sent", uid, call.address, peer=peer_name, instances=len(rows))
        return {"study_uid": uid, "peer": peer_name, "queued": len(rows)}

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "GET",
                "/api/studies",
                "Stored studies (the QIDO-RS self.engine): {items, next_offset}",
                self.studies,
                params=STUDY_PARAMS,
                tag="studies",
            ),
            Endpoint(
                "POST",
                "/api/studies/{uid}/send",
                "Queue the study's stored instances for a peer",
                self.send,
                role="operator",
                params=(UID, SEND_PEER),
                responses={404: "no such study", 422: "no such peer, or it takes no DICOM"},
                tag="studies",
            ),
            Endpoint(
                "GET",
                "/api/worklist",
                "Worklist items (from HL7 orders), newest first: {items, next}",
                self.worklist,
                params=WORKLIST_PARAMS,
                tag="worklist",
            ),
        ]


def make_endpoints(services: ApiServices) -> list[Endpoint]:
    return StudiesApi(services).endpoints()
