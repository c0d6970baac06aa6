"""The admin API against its own OpenAPI description: schemathesis generates requests for every operation of
``/api/openapi.json`` (bounded: a few examples each) against a live router, and none may be answered 500 nor with a
status the description does not list. And the description is the routes: the same list of endpoints makes both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import status_code_conformance
from starlette.routing import Route

from router.config import parse_config
from router.hooks.manager import build_plugin_manager, collect_stages
from router.listeners.http.api import ApiServices, routes
from router.listeners.http.auth import Authenticator
from router.rules.live import LiveRules
from router.store.db import make_engine
from router.store.writelock import WriteLock

from peers import RouterProcess

TOKEN = "a-site-token-for-the-schema-test"  # http.auth's: role admin, and quick (no password hash)
RULES = {"10-all.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    workdir = tmp_path_factory.mktemp("api-schema")
    peers = {"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": 9}}  # discard port: nobody answers
    process = RouterProcess(workdir, peers=peers, rules=RULES, http={"auth": {"bearer_token": TOKEN}})
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def api_schema(router: RouterProcess) -> Any:
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{router.http_port}/api/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_answers_500_or_an_undocumented_status(case: Any) -> None:
    if case.path in ("/api/logout",):  # would end nothing (no session) but is not worth the examples
        return
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                           checks=[status_code_conformance])  # fmt: skip


def test_the_description_is_the_routes(tmp_path: Path) -> None:
    """Every route under /api is described, and every description has its route (same methods)."""
    config = parse_config({"data_dir": "var", "rules_dir": "rules"}, tmp_path)
    engine = make_engine(config.effective_database_url)
    pm = build_plugin_manager(config)
    stages = collect_stages(pm)
    services = ApiServices(config, engine, pm, LiveRules(config.rules_dir, stages, config), stages, WriteLock(),
                           lambda peers: None)  # fmt: skip
    made = routes(services, Authenticator(config, pm, engine))
    served = {(method, r.path) for r in made if isinstance(r, Route) for method in (r.methods or ()) - {"HEAD"}}
    from router.listeners.http.api import endpoints
    from router.listeners.http.api.spec import openapi

    document = openapi(endpoints(services, Authenticator(config, pm, engine)))
    described = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert served == described
    assert all(p.startswith("/api/") for _, p in served)
    engine.dispose()
