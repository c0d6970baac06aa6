"""The HTTP application: DICOMweb under ``/dicomweb`` (with its OpenAPI description), the admin API under ``/api``
(``router.listeners.http.api``), authentication in front of both (``router.listeners.http.auth``)."""

from __future__ import annotations

import logging

import pluggy
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router.config import RouterConfig
from router.intake.dicom import Ingestor
from router.listeners.http.api import ApiServices
from router.listeners.http.api import routes as api_routes
from router.listeners.http.auth import Authentication, Authenticator
from router.listeners.http.openapi import openapi
from router.listeners.http.qido import Qido
from router.listeners.http.stow import Stow
from router.listeners.http.wado import Wado

log = logging.getLogger(__name__)

BASE = "/dicomweb"


def make_app(
    config: RouterConfig, ingestor: Ingestor, engine: Engine, pm: pluggy.PluginManager, api: ApiServices | None = None
) -> Starlette:
    stow = Stow(ingestor, config.http.max_upload_bytes)
    wado = Wado(engine, config.data_dir, pm)
    qido = Qido(engine, pm)
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
    authenticator = Authenticator(config, pm, engine)
    if api is not None:
        routes += api_routes(api, authenticator)
    return Starlette(routes=routes, middleware=[Middleware(Authentication, authenticator=authenticator)])
