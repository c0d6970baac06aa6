"""The console's pages (GET): each reads the admin API in process (``client.ApiClient``) and renders a template.
Without a signed-in identity a page sends the browser to the sign-in page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from router.listeners.http.api.activity import PARAMS as ACTIVITY_PARAMS
from router.listeners.http.api.jobs import KIND, STATE
from router.listeners.http.api.studies import STUDY_KEYS
from router.listeners.http.console.chart import chart
from router.listeners.http.console.client import Answer, ApiClient, identity_of
from router.listeners.http.console.render import page, redirect

SEARCH_KEYS = tuple(p.name for p in ACTIVITY_PARAMS if p.name not in ("since", "limit"))
QUEUE_FILTERS = ("state", "peer", "kind")
PageHandler = Callable[[Request], Awaitable[Response]]


def signed_in(handler: PageHandler) -> PageHandler:
    async def guarded(request: Request) -> Response:
        if identity_of(request) is None:
            return redirect("/login")
        return await handler(request)

    return guarded


def failed(request: Request, answer: Answer) -> Response:
    return page(request, "error.html", answer.status if answer.status >= 400 else 500, answer=answer)


class Pages:
    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def login(self, request: Request) -> Response:
        return page(request, "login.html")

    async def dashboard(self, request: Request) -> Response:
        return await self._dashboard(request, "dashboard.html")

    async def panel(self, request: Request) -> Response:
        return await self._dashboard(request, "_panel.html")

    async def _dashboard(self, request: Request, template: str) -> Response:
        stats = await self.api.call(request, "GET", "/api/stats")
        status = await self.api.call(request, "GET", "/api/status")
        if not stats.ok:
            return failed(request, stats)
        return page(request, template, stats=stats.data, router_status=status.data if status.ok else {},
                    chart=chart(stats.data["minutes"]))  # fmt: skip

    async def peers(self, request: Request) -> Response:
        found = await self.api.call(request, "GET", "/api/peers")
        if not found.ok:
            return failed(request, found)
        return page(request, "peers.html", peers=found.data["items"], echo=None)

    async def queue(self, request: Request) -> Response:
        q = request.query_params
        filters = {k: q.get(k, "") for k in QUEUE_FILTERS}
        params = {**filters, "cursor": q.get("cursor", ""), "limit": 50}
        found = await self.api.call(request, "GET", "/api/jobs", params)
        if not found.ok:
            return failed(request, found)
        peers = await self.api.call(request, "GET", "/api/peers")
        names = [p["name"] for p in peers.data["items"]] if peers.ok else []
        return page(request, "queue.html", jobs=found.data["items"], next=found.data["next"], filters=filters,
                    states=STATE.enum, kinds=KIND.enum, peers=names, done=q.get("done", ""))  # fmt: skip

    async def activity(self, request: Request) -> Response:
        keys = {k: request.query_params.get(k, "").strip() for k in SEARCH_KEYS}
        subjects: list[dict[str, Any]] = []
        answer = None
        if any(keys.values()):
            answer = await self.api.call(request, "GET", "/api/activity", keys)
            if answer.ok:
                subjects = group(answer.data["items"])
        return page(request, "activity.html", keys=keys, subjects=subjects, answer=answer)

    async def trace(self, request: Request) -> Response:
        q = request.query_params
        key = "sop_uid" if q.get("sop_uid") else "msh10"
        value = q.get(key, "")
        answer = await self.api.call(request, "GET", "/api/activity", {key: value})
        if not answer.ok:
            return failed(request, answer)
        return page(request, "trace.html", key=key, value=value, subjects=group(answer.data["items"]))

    async def rules(self, request: Request) -> Response:
        if request.query_params.get("file"):  # "open or create a file" form
            return redirect(f"/rules/{quote(request.query_params['file'])}")
        found = await self.api.call(request, "GET", "/api/rules")
        if not found.ok:
            return failed(request, found)
        return page(request, "rules.html", files=found.data["items"], problems=found.data["problems"])

    async def rule_file(self, request: Request) -> Response:
        name = request.path_params["file"]
        found = await self.api.call(request, "GET", f"/api/rules/{name}")
        if found.status not in (200, 404):
            return failed(request, found)
        text = found.data if found.ok else ""
        return await self.editor(request, name, str(text), done=request.query_params.get("done", ""))

    async def editor(self, request: Request, name: str, text: str, status: int = 200, **context: Any) -> Response:
        history = await self.api.call(request, "GET", f"/api/rules/{name}/history")
        context.setdefault("problems", [])
        return page(request, "rule_edit.html", status, file=name, text=text,
                    history=history.data["items"] if history.ok else [], **context)  # fmt: skip

    async def rule_version(self, request: Request) -> Response:
        name, version = request.path_params["file"], request.path_params["version"]
        found = await self.api.call(request, "GET", f"/api/rules/{name}/history/{version}")
        if not found.ok:
            return failed(request, found)
        return page(request, "rule_version.html", file=name, version=version, text=found.data)

    async def worklist(self, request: Request) -> Response:
        q = request.query_params
        params = {k: q.get(k, "") for k in ("date", "modality", "station_ae", "accession", "status", "cursor")}
        found = await self.api.call(request, "GET", "/api/worklist", {**params, "limit": 50})
        if not found.ok:
            return failed(request, found)
        return page(request, "worklist.html", items=found.data["items"], next=found.data["next"], filters=params)

    async def studies(self, request: Request) -> Response:
        q = request.query_params
        keys = {k: q.get(k, "") for k in STUDY_KEYS}
        offset = q.get("offset", "")
        found = await self.api.call(request, "GET", "/api/studies", {**keys, "offset": offset, "limit": 50})
        if not found.ok:
            return failed(request, found)
        peers = await self.api.call(request, "GET", "/api/peers")
        dicom_peers = [p["name"] for p in peers.data["items"] if p["type"] == "dicom"] if peers.ok else []
        return page(request, "studies.html", studies=found.data["items"], next_offset=found.data["next_offset"],
                    keys=keys, peers=dicom_peers, done=q.get("done", ""))  # fmt: skip


def group(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Activity rows by subject (one object or message), newest subject first, each subject's rows in time order;
    with what the subject is (its SOP Instance UID or MSH-10) and where it came from."""
    subjects: dict[str, dict[str, Any]] = {}
    for row in items:
        found = subjects.setdefault(row["subject"], {"subject": row["subject"], "kind": row["kind"], "rows": [],
                                                      "sop_uid": "", "msh10": "", "first": row["at"]})  # fmt: skip
        found["rows"].append(row)
        found["kind"] = found["kind"] or row["kind"]
        for key in ("sop_uid", "msh10", "accession", "study_uid"):
            if row.get(key):
                found[key] = row[key]
        found["last"] = row["at"]
        found["events"] = [r["event"] for r in found["rows"]]
    return sorted(subjects.values(), key=lambda s: str(s["last"]), reverse=True)
