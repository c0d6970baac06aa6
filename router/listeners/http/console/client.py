"""The console as a client of the admin API, in process: each page and button calls an ``/api`` route through the
same ASGI route objects that serve scripts, with the browser's own identity (its session) and, for a change, the
CSRF token the browser sent. So the role checks, the CSRF check, the parameter checks and the handler are the API's
own: the console adds no permission logic of its own (it only hides the buttons a role may not use)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.routing import BaseRoute, Router
from starlette.types import Message

from router.listeners.http.api.endpoint import CSRF_HEADER
from router.listeners.http.auth import Identity


@dataclass
class Answer:
    """An API answer: its status, its JSON (or text), its Set-Cookie headers (a login's)."""

    status: int
    data: Any
    cookies: list[bytes]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        return str(self.data.get("error", "")) if isinstance(self.data, dict) else str(self.data)


class ApiClient:
    """Calls the admin API's routes in process (see the module's description)."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.router = Router(routes=list(routes))

    async def call(
        self,
        request: Request,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: bytes = b"",
        content_type: str = "application/json",
        csrf: str = "",
    ) -> Answer:
        """``method path?params`` as the browser's user; ``csrf``: the token the browser sent with its change."""
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None and v != ""})
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        if csrf:
            headers.append((CSRF_HEADER.encode(), csrf.encode("latin-1", "replace")))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
            "headers": headers, "client": request.scope.get("client"), "server": request.scope.get("server"),
            "router.identity": request.scope.get("router.identity"), "router.user": request.scope.get("router.user"),
        }  # fmt: skip
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, chunks, response_headers = 500, [], []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_headers.extend(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        await self.router(scope, receive, send)
        raw = b"".join(chunks)
        kind = next((v.decode() for k, v in response_headers if k.lower() == b"content-type"), "")
        data: Any = raw.decode("utf-8", "replace")
        if "json" in kind:
            with contextlib.suppress(ValueError):
                data = json.loads(raw or b"null")
        cookies = [v for k, v in response_headers if k.lower() == b"set-cookie"]
        return Answer(status, data, cookies)


def identity_of(request: Request) -> Identity | None:
    found = request.scope.get("router.identity")
    return found if isinstance(found, Identity) else None
