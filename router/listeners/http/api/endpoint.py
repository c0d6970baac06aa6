"""How an admin API endpoint is declared, checked and answered: one ``Endpoint`` gives both its Starlette route and
its entry in ``/api/openapi.json`` (``router.listeners.http.api.spec``), so the two cannot drift apart.

Every request of an endpoint goes through ``Endpoint.route``: who (401 without an identity, 403 when the role does
not allow it, 403 for a session's unsafe request without its CSRF token), its parameters (400 naming the one that
is wrong), its body (413 over ``max_body``); then the handler runs in a worker thread (it reads the database or a
peer) and its answer is sent as JSON. A handler refuses with ``ApiError(status, message, **extra)``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router.listeners.http.auth import Identity
from router.store.users import role_allows

log = logging.getLogger(__name__)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


class ApiError(Exception):
    """A refusal: ``status`` and a message (``{"error": message, **extra}``)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    return str(value)


class ApiResponse(JSONResponse):
    """JSON with date-times as ISO 8601 (UTC) text."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode()


def error(status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    return ApiResponse({"error": message, **extra}, status, headers=dict(headers or {}))


@dataclass(frozen=True)
class Param:
    """A query or path parameter. ``kind``: ``string``, ``integer``, ``boolean`` or ``date-time`` (ISO 8601)."""

    name: str
    description: str
    kind: str = "string"
    where: str = "query"
    enum: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    default: Any = None
    max_length: int = 256
    required: bool = False

    def parse(self, raw: str) -> Any:
        if self.kind == "integer":
            try:
                value: Any = int(raw)
            except ValueError:
                raise ApiError(400, f"{self.name}: not an integer") from None
            low, high = self.minimum, self.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                raise ApiError(400, f"{self.name}: from {self.minimum} to {self.maximum}")
            return value
        if self.kind == "boolean":
            if raw.lower() not in ("true", "false"):
                raise ApiError(400, f"{self.name}: true or false")
            return raw.lower() == "true"
        if self.kind == "date-time":
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                raise ApiError(400, f"{self.name}: not an ISO 8601 date-time") from None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if len(raw) > self.max_length:
            raise ApiError(400, f"{self.name}: longer than {self.max_length} characters")
        if self.enum and raw not in self.enum:
            raise ApiError(400, f"{self.name}: one of {', '.join(self.enum)}")
        return raw

    def schema(self) -> dict[str, Any]:
        if self.kind == "integer":
            found: dict[str, Any] = {"type": "integer"}
            found.update({k: v for k, v in (("minimum", self.minimum), ("maximum", self.maximum)) if v is not None})
        elif self.kind == "boolean":
            found = {"type": "boolean"}
        elif self.kind == "date-time":
            found = {"type": "string", "format": "date-time"}
        else:
            found = {"type": "string", "maxLength": self.max_length}
            if self.enum:
                found["enum"] = list(self.enum)
            if self.where == "path":
                found["minLength"] = 1
                found["pattern"] = r"^[^/]+$"
        if self.default is not None:
            found["default"] = self.default
        return found


@dataclass
class Call:
    """One request as a handler sees it."""

    request: Request
    identity: Identity | None
    params: dict[str, Any]
    body: bytes

    @property
    def user(self) -> str:
        return self.identity.user if self.identity is not None else ""

    @property
    def address(self) -> str:
        client = self.request.client
        return f"{client.host}:{client.port}" if client else ""

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (400 otherwise)."""
        try:
            found = json.loads(self.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the body is not JSON") from None
        if not isinstance(found, dict):
            raise ApiError(400, "the body is not a JSON object")
        return found


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Endpoint:
    """One method on one path. ``role``: the least role that may call it (None: anyone, e.g. the login);
    ``body``: the OpenAPI request body; ``responses``: status -> description, beside the common ones."""

    method: str
    path: str
    summary: str
    handler: Handler
    role: str | None = "viewer"
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    responses: dict[int, str] = field(default_factory=dict)
    max_body: int = 1 << 20
    tag: str = ""
    media: str = "application/json"  # of a success

    def route(self) -> Route:
        async def handle(request: Request) -> Response:
            return await self.answer(request)

        return Route(self.path, handle, methods=[self.method], name=f"{self.method} {self.path}")

    async def answer(self, request: Request) -> Response:
        identity: Identity | None = request.scope.get("router.identity")
        if self.role is not None:
            if identity is None:
                return error(401, "authentication required", {"WWW-Authenticate": 'Basic realm="router"'})
            if not role_allows(identity.role, self.role):
                return error(403, f"{identity.user} ({identity.role or 'no role'}) may not do this: it takes "
                             f"{self.role}")  # fmt: skip
        declared = int(request.headers.get("content-length") or 0)
        if declared > self.max_body:
            return error(413, f"the body is larger than {self.max_body} bytes")
        body = await request.body()
        if len(body) > self.max_body:
            return error(413, f"the body is larger than {self.max_body} bytes")
        unsafe = request.method not in SAFE_METHODS
        if identity is not None and identity.method == "session" and unsafe and not csrf_ok(request, body, identity):
            return error(403, "this session's CSRF token is missing or wrong (X-CSRF-Token or csrf_token)")
        try:
            params = self._params(request)
            answer = await run_in_threadpool(self.handler, Call(request, identity, params, body))
        except ApiError as exc:
            return error(exc.status, exc.message, **exc.extra)
        return answer if isinstance(answer, Response) else ApiResponse(answer)

    def _params(self, request: Request) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for param in self.params:
            source = request.path_params if param.where == "path" else request.query_params
            raw = source.get(param.name)
            if (raw is None or raw == "") and param.required:
                raise ApiError(400, f"{param.name}: required")
            found[param.name] = param.default if raw is None or raw == "" else param.parse(str(raw))
        return found


def csrf_ok(request: Request, body: bytes, identity: Identity) -> bool:
    """The session's CSRF token in the X-CSRF-Token header, or in the ``csrf_token`` field of a form body."""
    expected = identity.csrf_token or ""
    given = request.headers.get(CSRF_HEADER, "")
    if not given and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        given = (parse_qs(body.decode("latin-1")).get(CSRF_FIELD) or [""])[0]
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
