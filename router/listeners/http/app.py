"""The HTTP application: DICOMweb under ``/dicomweb`` (with its OpenAPI description), the admin API under ``/api``
(``router.listeners.http.api``), the Prometheus metrics at ``/metrics``, authentication in front of all three
(``router.listeners.http.auth``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pluggy
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from router.config import RouterConfig
from router.intake import journaled
from router.intake.dicom import Ingestor
from router.listeners.http.api import ApiServices
from router.listeners.http.api import routes as api_routes
from router.listeners.http.auth import Authentication, Authenticator
from router.listeners.http.console import routes as console_routes
from router.listeners.http.health import Health
from router.listeners.http.openapi import openapi
from router.listeners.http.qido import Qido
from router.listeners.http.stow import Stow
from router.listeners.http.wado import Wado
from router.store.journal import Journal

log = logging.getLogger(__name__)

BASE = "/dicomweb"
# the text format every Prometheus reads; generate_latest writes it (metric names it cannot carry are escaped)
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Scrape(CollectorRegistry):
    """One scrape of ``/metrics``: the write-ahead journal's state, then the collectors every plugin provides
    (``router_metrics``), asked now. A collector that raises is logged and left out; the others are still exposed."""

    def __init__(self, pm: pluggy.PluginManager, journal: Callable[[], Journal | None]) -> None:
        super().__init__()
        self.pm = pm
        self.journal = journal

    def collect(self) -> Iterator[Metric]:
        yield from journaled.metric_families(self.journal())
        for provided in self.pm.hook.router_metrics():
            for collector in provided:
                try:
                    yield from collector.collect()
                except Exception:
                    log.exception("/metrics: collector %r failed", collector)


def make_app(
    config: RouterConfig,
    ingestor: Ingestor,
    engine: Engine,
    pm: pluggy.PluginManager,
    api: ApiServices | None = None,
    patients_used: Callable[[set[int]], None] | None = None,
) -> Starlette:
    """The HTTP application; ``api``: the admin API's services (none: no ``/api``), ``patients_used`` is told the
    patients QIDO-RS finds (the storage keeper)."""
    stow = Stow(ingestor, config.http.max_upload_bytes)
    wado = Wado(engine, config.data_dir, pm)
    qido = Qido(engine, pm, patients_used)
    study = f"{BASE}/studies/{{study}}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{instance}}"

    def journal() -> Journal | None:  # opened when the router starts, after the application is made
        return ingestor.journal

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi())

    async def metrics(request: Request) -> Response:  # collectors may read the database: off the event loop
        return Response(await run_in_threadpool(generate_latest, Scrape(pm, journal)), media_type=METRICS_TYPE)

    routes: list[BaseRoute] = [
        Route("/metrics", metrics, methods=["GET"]),
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
        served = api_routes(api, authenticator)
        routes += [*served, *console_routes(served)]  # the web console at /, a client of the API
    # /healthz, /readyz: before authentication
    health = Middleware(Health, engine=engine, data_dir=config.data_dir, config=config, journal=journal)
    return Starlette(routes=routes, middleware=[health, Middleware(Authentication, authenticator=authenticator)])
