"""The console's buttons (POST): each is one admin API call made with the browser's session and the CSRF token the
browser sent (the ``csrf_token`` field of the form, or htmx's ``X-CSRF-Token`` header), so the API refuses what the
role does not allow (403) and a change without the session's token (403). A change needs a console session: a
browser holding basic credentials gets 403 here (its forms carry no CSRF token to check)."""

from __future__ import annotations

import base64
import json
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from router.listeners.http.api.endpoint import CSRF_FIELD, CSRF_HEADER
from router.listeners.http.console.client import Answer, ApiClient, identity_of
from router.listeners.http.console.pages import Pages, failed
from router.listeners.http.console.render import page, redirect

MAX_FORM = 64 << 20  # a dry run's uploaded object


async def read_form(request: Request) -> dict[str, Any]:
    """A urlencoded or multipart/form-data body as {field: text, or (filename, bytes) for a file}."""
    if int(request.headers.get("content-length") or 0) > MAX_FORM:
        raise HTTPException(413, f"the form is larger than {MAX_FORM} bytes")
    body = await request.body()
    if len(body) > MAX_FORM:  # chunked: counted as it came
        raise HTTPException(413, f"the form is larger than {MAX_FORM} bytes")
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        parsed: EmailMessage = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {kind}\r\n\r\n".encode() + body)
        found: dict[str, Any] = {}
        for part in parsed.iter_parts() if parsed.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if isinstance(name, str) and isinstance(payload, bytes):
                found[name] = (filename, payload) if filename else payload.decode("utf-8", "replace")
        return found
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


class Actions:
    def __init__(self, api: ApiClient, pages: Pages) -> None:
        self.api = api
        self.pages = pages

    async def _change(self, request: Request, method: str, path: str, form: dict[str, Any], **kw: Any) -> Answer:
        token = request.headers.get(CSRF_HEADER) or str(form.get(CSRF_FIELD, ""))
        identity = identity_of(request)
        if identity is None or identity.method != "session":
            return Answer(403, {"error": "changes from the console need a console session (sign in)"}, [])
        return await self.api.call(request, method, path, csrf=token, **kw)

    async def login(self, request: Request) -> Response:
        form = await read_form(request)
        body = {k: str(form.get(k, "")) for k in ("username", "password")}
        answer = await self.api.call(request, "POST", "/api/login", body=urlencode(body).encode(),
                                     content_type="application/x-www-form-urlencoded")  # fmt: skip
        if not answer.ok:
            return page(request, "login.html", 401 if answer.status == 401 else answer.status, error=answer.error,
                        username=body["username"])  # fmt: skip
        return redirect("/", answer.cookies)

    async def logout(self, request: Request) -> Response:
        form = await read_form(request)
        answer = await self._change(request, "POST", "/api/logout", form)
        return redirect("/login", answer.cookies) if answer.ok else failed(request, answer)

    async def peer(self, request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ("echo", "pause", "resume"):
            return failed(request, Answer(404, {"error": f"no such action: {action}"}, []))
        answer = await self._change(request, "POST", f"/api/peers/{name}/{action}", await read_form(request))
        if not answer.ok:
            return failed(request, answer)
        if action == "echo":
            peers = await self.api.call(request, "GET", "/api/peers")
            return page(request, "peers.html", peers=peers.data["items"] if peers.ok else [], echo=answer.data)
        return redirect("/peers")

    async def job(self, request: Request) -> Response:
        job_id, action = request.path_params["id"], request.path_params["action"]
        form = await read_form(request)
        if action not in ("retry", "delete"):
            return failed(request, Answer(404, {"error": f"no such action: {action}"}, []))
        retry = ("POST", f"/api/jobs/{job_id}/retry")
        method, path = ("DELETE", f"/api/jobs/{job_id}") if action == "delete" else retry
        answer = await self._change(request, method, path, form)
        if not answer.ok:
            return failed(request, answer)
        done = f"job {job_id} deleted" if action == "delete" else f"job {job_id} requeued"
        return redirect(f"/queue?{_back(form)}&done={quote(done)}")

    async def retry_all(self, request: Request) -> Response:
        form = await read_form(request)
        params = {"state": form.get("state") or "dead", "peer": form.get("peer", "")}
        answer = await self._change(request, "POST", "/api/jobs/retry", form, params=params)
        if not answer.ok:
            return failed(request, answer)
        return redirect(f"/queue?{_back(form)}&done={quote(str(answer.data['retried']) + ' job(s) requeued')}")

    async def send_study(self, request: Request) -> Response:
        uid = request.path_params["uid"]
        form = await read_form(request)
        answer = await self._change(request, "POST", f"/api/studies/{uid}/send", form,
                                    params={"peer": form.get("peer", "")})  # fmt: skip
        if not answer.ok:
            return failed(request, answer)
        done = f"{answer.data['queued']} instance(s) queued for {answer.data['peer']}"
        return redirect(f"/studies?done={quote(done)}")

    async def _send_rules(self, request: Request, method: str, suffix: str) -> tuple[str, str, Answer]:
        """The editor's text sent to the rules API (``/api/rules/{file}{suffix}``): file name, text, answer."""
        name = request.path_params["file"]
        form = await read_form(request)
        text = str(form.get("text", ""))
        answer = await self._change(request, method, f"/api/rules/{name}{suffix}", form, body=text.encode(),
                                    content_type="application/yaml")  # fmt: skip
        return name, text, answer

    async def check_rules(self, request: Request) -> Response:
        name, text, answer = await self._send_rules(request, "POST", "/check")
        if not answer.ok:
            return failed(request, answer)
        checked = answer.data
        return await self.pages.editor(request, name, text, problems=checked["problems"], checked=checked)

    async def save_rules(self, request: Request) -> Response:
        name, text, answer = await self._send_rules(request, "PUT", "")
        if answer.status == 422:
            return await self.pages.editor(request, name, text, 422, problems=answer.data.get("problems", []),
                                           refused=answer.error)  # fmt: skip
        if not answer.ok:
            return failed(request, answer)
        saved = "saved" if answer.data.get("saved") else "unchanged"
        return redirect(f"/rules/{quote(name)}?done={quote(saved)}")

    async def revert_rules(self, request: Request) -> Response:
        name, version = request.path_params["file"], request.path_params["version"]
        form = await read_form(request)
        answer = await self._change(request, "POST", f"/api/rules/{name}/history/{version}/revert", form)
        if not answer.ok:
            return failed(request, answer)
        return redirect(f"/rules/{quote(name)}?done={quote('reverted to version ' + str(version))}")

    async def dry_run(self, request: Request) -> Response:
        """Test (an uploaded object) or replay (the last objects received): the rules in force and the edited
        text side by side."""
        name, action = request.path_params["file"], request.path_params["action"]
        if action not in ("test", "replay"):
            return failed(request, Answer(404, {"error": f"no such action: {action}"}, []))
        form = await read_form(request)
        text = str(form.get("text", ""))
        if action == "test":
            upload = form.get("object")
            if not isinstance(upload, tuple) or not upload[1]:
                return await self.pages.editor(request, name, text, 400, refused="choose a file to test")
            body: dict[str, Any] = {"object": base64.b64encode(upload[1]).decode(), "rules": {name: text},
                                    "calling_ae": str(form.get("calling_ae", ""))[:16]}  # fmt: skip
        else:
            body = {"last": _last(form.get("last")), "rules": {name: text}}
        answer = await self._change(request, "POST", f"/api/rules/{action}", form, body=json.dumps(body).encode())
        if answer.status == 422:
            problems = answer.data.get("problems", []) if isinstance(answer.data, dict) else []
            return await self.pages.editor(request, name, text, 422, problems=problems, refused=answer.error)
        if not answer.ok:
            return failed(request, answer)
        return await self.pages.editor(request, name, text, **{action: answer.data})


def _back(form: dict[str, Any]) -> str:
    return urlencode({k: form.get(f"back_{k}", "") for k in ("state", "peer", "kind")})


def _last(raw: Any) -> int:
    try:
        return min(max(int(str(raw or 50)), 1), 500)
    except ValueError:
        return 50
