"""The web console at ``/`` on the ``http`` listener: server-rendered pages (Jinja2) with a little htmx, every
asset served from ``static/`` (no CDN), all of it a client of the admin API (``client``). docs/console.md shows
the pages and the roles.

- ``pages``: the pages (GET), ``actions``: the buttons (POST), ``render``: templates and security headers,
  ``chart``: the dashboard's SVG chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from router.listeners.http.console.actions import Actions
from router.listeners.http.console.client import ApiClient
from router.listeners.http.console.pages import Pages, signed_in

STATIC = Path(__file__).parent / "static"
PUBLIC = ("/login", "/static/")  # reached without signing in (the sign-in page and its assets)


def routes(api_routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """The console's routes, calling the admin API through ``api_routes``."""
    api = ApiClient(api_routes)
    pages = Pages(api)
    actions = Actions(api, pages)
    get = {
        "/": pages.dashboard, "/dashboard/panel": pages.panel, "/peers": pages.peers, "/queue": pages.queue,
        "/activity": pages.activity, "/activity/trace": pages.trace, "/rules": pages.rules,
        "/rules/{file}": pages.rule_file, "/rules/{file}/history/{version:int}": pages.rule_version,
        "/worklist": pages.worklist, "/studies": pages.studies,
    }  # fmt: skip
    post = {
        "/logout": actions.logout, "/peers/{name}/{action:str}": actions.peer,
        "/queue/retry": actions.retry_all, "/queue/{id:int}/{action:str}": actions.job,
        "/studies/{uid}/send": actions.send_study, "/rules/{file}/check": actions.check_rules,
        "/rules/{file}": actions.save_rules, "/rules/{file}/history/{version:int}/revert": actions.revert_rules,
        "/rules/{file}/{action:str}": actions.dry_run,
    }  # fmt: skip
    return [
        Route("/login", pages.login, methods=["GET"]),
        Route("/login", actions.login, methods=["POST"]),
        *(Route(path, signed_in(handler), methods=["GET"]) for path, handler in get.items()),
        *(Route(path, signed_in(handler), methods=["POST"]) for path, handler in post.items()),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


__all__ = ["PUBLIC", "routes"]
