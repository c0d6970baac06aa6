"""The admin API: JSON under ``/api`` on the ``http`` listener, the one backend of the web console and of scripts.

Each module declares its endpoints (``router.listeners.http.api.endpoint.Endpoint``); ``endpoints`` gathers them,
``routes`` makes their Starlette routes and ``/api/openapi.json`` from the same list (``spec``). docs/api.md
describes every endpoint, its role and the ways to sign in.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.listeners.http.api import accounts, activity, dryruns, jobs, nodes, peers, rulecheck, rules, stats, studies
from router.listeners.http.api.endpoint import ApiResponse, Endpoint
from router.listeners.http.api.services import ApiServices
from router.listeners.http.api.spec import openapi
from router.listeners.http.auth import Authenticator

__all__ = ["ApiServices", "endpoints", "routes"]


def endpoints(services: ApiServices, authenticator: Authenticator) -> list[Endpoint]:
    return [
        *accounts.make_endpoints(services, authenticator),
        *peers.make_endpoints(services),
        *jobs.make_endpoints(services),
        *activity.make_endpoints(services),
        *rules.make_endpoints(services),
        *rulecheck.make_endpoints(services),
        *dryruns.make_endpoints(services),
        *studies.make_endpoints(services),
        *stats.make_endpoints(services),
        *nodes.make_endpoints(services),
    ]


def routes(services: ApiServices, authenticator: Authenticator) -> list[Route]:
    """Every endpoint's route, and ``/api/openapi.json`` (open to anyone, like the DICOMweb one)."""
    declared = endpoints(services, authenticator)
    document = openapi(declared)

    async def openapi_json(request: Request) -> Response:
        return ApiResponse(document)

    return [Route("/api/openapi.json", openapi_json, methods=["GET"]), *(e.route() for e in declared)]
