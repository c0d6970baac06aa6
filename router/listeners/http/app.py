"""The DICOMweb application: routes under ``/dicomweb``, authentication, the OpenAPI description."""

from __future__ import annotations

import base64
import hmac
import logging

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from router.config import HttpAuth, RouterConfig
from router.intake.dicom import Ingestor
from router.listeners.http.openapi import openapi
from router.listeners.http.qido import Qido
from router.listeners.http.stow import Stow
from router.listeners.http.wado import Wado

log = logging.getLogger(__name__)

BASE = "/dicomweb"


class Authentication:
    """Bearer token or basic credentials when configured (401 with WWW-Authenticate otherwise)."""

    def __init__(self, app: ASGIApp, auth: HttpAuth) -> None:
        self.app = app
        self.auth = auth

    def _user(self, header: str) -> str | None:
        scheme, _, value = header.partition(" ")
        if self.auth.bearer_token and scheme.lower() == "bearer":
            return "bearer" if hmac.compare_digest(value.strip(), self.auth.bearer_token) else None
        if self.auth.username is not None and self.auth.password is not None and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            ok = hmac.compare_digest(user, self.auth.username) & hmac.compare_digest(password, self.auth.password)
            return user if ok else None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.auth.enabled:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        user = self._user(headers.get(b"authorization", b"").decode("latin-1"))
        if user is None:
            challenge = 'Bearer realm="dicomweb"' if self.auth.bearer_token else 'Basic realm="dicomweb"'
            response = JSONResponse({"error": "authentication required"}, 401, {"WWW-Authenticate": challenge})
            await response(scope, receive, send)
            return
        scope["router.user"] = user
        await self.app(scope, receive, send)


def make_app(config: RouterConfig, ingestor: Ingestor, engine: Engine) -> Starlette:
    stow = Stow(ingestor, config.http.max_upload_bytes)
    wado = Wado(engine, config.data_dir)
    qido = Qido(engine)
    study = f"{BASE}/studies/{{study}}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{instance}}"

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi())

    routes = [
        Route(f"{BASE}/openapi.json", openapi_json, methods=["GET"]),
        Route(f"{BASE}/studies", stow.handle, methods=["POST"]),
        Route(study, stow.handle, methods=["POST"]),
        Route(f"{BASE}/studies", qido.handler("STUDY"), methods=["GET"]),
        Route(f"{BASE}/series", qido.handler("SERIES"), methods=["GET"]),
        Route(f"{study}/series", qido.handler("SERIES"), methods=["GET"]),
        Route(f"{BASE}/instances", qido.handler("IMAGE"), methods=["GET"]),
        Route(f"{study}/instances", qido.handler("IMAGE"), methods=["GET"]),
        Route(f"{series}/instances", qido.handler("IMAGE"), methods=["GET"]),
        *(Route(path, wado.retrieve, methods=["GET"]) for path in (study, series, instance)),
        *(Route(f"{path}/metadata", wado.metadata, methods=["GET"]) for path in (study, series, instance)),
        Route(f"{instance}/frames/{{frames}}", wado.frames, methods=["GET"]),
        Route(f"{instance}/bulkdata/{{tag}}", wado.bulkdata, methods=["GET"]),
        Route(f"{instance}/rendered", wado.rendered, methods=["GET"]),
        Route(f"{instance}/frames/{{frame}}/rendered", wado.rendered, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Authentication, auth=config.http.auth)])
