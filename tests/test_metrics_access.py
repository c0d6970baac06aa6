"""Who may scrape ``/metrics``: from loopback without a login, from elsewhere with ``http.auth``'s credentials.

Tests reach only loopback, so a client off loopback is the HTTP application driven in-process with another client
address (httpx's ASGI transport), through the same authentication middleware and the same ``router_authenticate``
plugins as the listener; the loopback side is also checked on a live router's socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.config import parse_config
from router.hooks.manager import build_plugin_manager, notify
from router.listeners.http.app import make_app
from router.store.db import make_engine

from peers import RouterProcess

TOKEN = "t" * 24
OFF_LOOPBACK = ("192.0.2.7", 40000)  # TEST-NET-1: never routed, only an address the application is told
LOOPBACK = ("127.0.0.1", 40000)
NO_INGEST = SimpleNamespace(journal=None)  # what the application reads of the ingest: no write-ahead journal


def get(settings: dict[str, Any], tmp_path: Path, client: tuple[str, int], path: str, **headers: str) -> int:
    """The status of GET ``path`` from ``client`` on an application built from ``settings``, as the router builds it."""
    config = parse_config({"data_dir": str(tmp_path), **settings}, tmp_path)
    pm = build_plugin_manager(config)
    notify(pm, "router_startup", config=config, process="serve", plugin_settings=pm.settings)
    engine = make_engine(config.effective_database_url)
    try:
        app = make_app(config, NO_INGEST, engine, pm)  # type: ignore[arg-type]  # no STOW here: no ingest needed

        async def request() -> int:
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
                return (await http.get(path, headers=headers)).status_code

        return asyncio.run(request())
    finally:
        notify(pm, "router_shutdown", process="serve")
        engine.dispose()


BEARER = {"http": {"auth": {"bearer_token": TOKEN}}}


@pytest.mark.parametrize(
    ("settings", "client", "path", "headers", "status"),
    [
        pytest.param(BEARER, OFF_LOOPBACK, "/metrics", {}, 401, id="off-loopback-without-credentials"),
        pytest.param(BEARER, OFF_LOOPBACK, "/metrics", {"authorization": "Bearer wrong-token-wrong"}, 401,
                     id="off-loopback-wrong-credentials"),
        pytest.param(BEARER, OFF_LOOPBACK, "/metrics", {"authorization": f"Bearer {TOKEN}"}, 200,
                     id="off-loopback-with-credentials"),
        pytest.param(BEARER, LOOPBACK, "/metrics", {}, 200, id="loopback-without-credentials"),
        pytest.param(BEARER, LOOPBACK, "/dicomweb/studies", {}, 401, id="loopback-dicomweb-still-asks"),
        pytest.param({}, OFF_LOOPBACK, "/metrics", {}, 401, id="off-loopback-without-http-auth"),
        pytest.param({}, LOOPBACK, "/metrics", {}, 200, id="loopback-without-http-auth"),
    ],
)  # fmt: skip
def test_who_may_scrape(
    tmp_path: Path, settings: dict[str, Any], client: tuple[str, int], path: str, headers: dict[str, str], status: int
) -> None:
    assert get(settings, tmp_path, client, path, **headers) == status


@pytest.fixture
def guarded_router(workdir: Path) -> Iterator[RouterProcess]:
    router = RouterProcess(workdir, http={"auth": {"bearer_token": TOKEN}}).start()
    try:
        yield router
    finally:
        router.stop()


def test_a_live_router_with_http_auth_is_scraped_from_loopback_without_a_login(guarded_router: RouterProcess) -> None:
    base = f"http://127.0.0.1:{guarded_router.http_port}"
    response = httpx.get(f"{base}/metrics", timeout=30)
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"router_instances_received", "router_outbox_jobs", "router_build_info"} <= names
    assert httpx.get(f"{base}/dicomweb/studies", timeout=30).status_code == 401
