"""The OpenAPI 3.1 description of the admin API (``/api/openapi.json``), made from the same ``Endpoint`` list as the
routes: a path, method, parameter or role cannot be in one and not the other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import router
from router.listeners.http.api.endpoint import Endpoint

ERROR = {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}
JSON = {"application/json": {"schema": {"type": "object"}}}
COMMON = {
    400: "a parameter or the body is wrong",
    401: "no credentials, or wrong ones",
    403: "the role does not allow it, or a session's CSRF token is missing",
    413: "the body is too large",
}


def _responses(endpoint: Endpoint) -> dict[str, Any]:
    found: dict[str, Any] = {}
    own = {200: "done", **endpoint.responses}
    if endpoint.role is None:
        own = {**{k: v for k, v in COMMON.items() if k not in (401, 403)}, **own}
    else:
        own = {**COMMON, **own}
    for status, description in sorted(own.items()):
        if status < 300:
            schema = {"type": "object"} if endpoint.media == "application/json" else {"type": "string"}
            found[str(status)] = {"description": description, "content": {endpoint.media: {"schema": schema}}}
        else:
            found[str(status)] = {"description": description, "content": ERROR}
    return found


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": f"{endpoint.method.lower()}{endpoint.path.replace('/', '_').replace('{', '').replace('}', '')}",
        "tags": [endpoint.tag] if endpoint.tag else [],
        "parameters": [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path" or p.required,
                "description": p.description,
                "schema": p.schema(),
            }
            for p in endpoint.params
        ],
        "responses": _responses(endpoint),
        "x-role": endpoint.role or "anyone",
    }
    if endpoint.body is not None:
        operation["requestBody"] = endpoint.body
    if endpoint.role is None:
        operation["security"] = []
    return operation


def openapi(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    paths["/api/openapi.json"] = {"get": {"summary": "This description", "operationId": "get_api_openapi",
                                          "security": [], "responses": {"200": {"description": "OpenAPI 3.1",
                                                                                "content": JSON}}}}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "DICOM-HL7 router admin API", "version": router.__version__,
                 "description": "Roles: viewer reads; operator also retries, pauses, sends; admin also edits rules "
                 "and users (x-role says which an operation takes). docs/api.md describes every endpoint."},
        "components": {"securitySchemes": {
            "basic": {"type": "http", "scheme": "basic"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "a user's API token, or http.auth's"},
            "session": {"type": "apiKey", "in": "cookie", "name": "router_session",
                        "description": "from POST /api/login; unsafe requests carry X-CSRF-Token"},
        }},
        "security": [{"basic": []}, {"bearer": []}, {"session": []}],
        "paths": paths,
    }  # fmt: skip
