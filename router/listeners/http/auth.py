"""Who each HTTP request is from: the ``router_authenticate`` decision hook, console sessions, slowed-down guessing.

- A request with an ``Authorization`` header is asked of the ``router_authenticate`` hook (the built-in answer,
  plugin ``access``, checks ``http.auth`` and the router's users and tokens) in a worker thread, since a password
  check takes argon2's 0.1 s. 401 with WWW-Authenticate when refused; ``router_authentication_succeeded`` /
  ``router_authentication_failed`` are announced for every request that was checked.
- A request without one but with the console's session cookie (``/api/login``) is from the session's user; it is
  not announced again (its login was).
- Failed attempts (with credentials) are counted per claimed user name and per client address (``Throttle``);
  from the ``FREE_FAILURES``-th on, every attempt of that name or address waits before it is checked, twice as
  long each time up to ``MAX_DELAY``. A success clears the counts of its user and address. The counts live in
  memory, at most ``MAX_TRACKED`` keys, and are forgotten ``FORGET_AFTER`` seconds after the last failure.

The request goes on with ``scope["router.identity"]`` (an ``Identity``) when someone was recognised; whether that
someone may do what the request asks is the route's business (the admin API's roles, ``router.listeners.http.api``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

import pluggy
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from router.config import RouterConfig
from router.hooks.answers import AUTHENTICATION_FAILED, Authenticated, Denied
from router.hooks.manager import decide, notify
from router.store.sessions import SessionInfo, session_for
from router.store.users import any_users

log = logging.getLogger(__name__)

SESSION_COOKIE = "router_session"
PUBLIC_PATHS = {"/api/login", "/api/openapi.json", "/login"}  # reached without credentials, whatever http.auth says
PUBLIC_PREFIXES = ("/static/",)  # the console's assets
SERVICE_PREFIXES = ("/api/", "/dicomweb", "/metrics")  # the rest is the console: a browser is sent to /login
FREE_FAILURES = 5
MAX_DELAY = 10.0  # s
FORGET_AFTER = 900.0  # s
MAX_TRACKED = 10_000


@dataclass(frozen=True)
class Identity:
    """Who a request is from. ``method``: ``basic``, ``bearer``, ``token``, ``session`` or a plugin's; ``role``: what
    the admin API lets them do (``""``: nothing); ``csrf_token``: a session's, which its unsafe requests must carry."""

    user: str
    method: str
    role: str
    csrf_token: str | None = None


class Throttle:
    """Failed authentications per key (a user name, an address): how long the next attempt must wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def delay(self, *keys: str) -> float:
        now = time.monotonic()
        worst = 0
        with self._lock:
            for key in keys:
                found = self._failures.get(key)
                if found is not None and now - found[1] < FORGET_AFTER:
                    worst = max(worst, found[0])
        if worst < FREE_FAILURES:
            return 0.0
        return float(min(MAX_DELAY, 0.5 * 2 ** (worst - FREE_FAILURES)))

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                count, last = self._failures.pop(key, (0, now))
                self._failures[key] = (1 if now - last >= FORGET_AFTER else count + 1, now)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def claimed_user(authorization: str) -> str:
    """The user name of basic credentials ("" for anything else)."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[0][:64]
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return ""


def session_cookie(headers: dict[bytes, bytes]) -> str:
    raw = headers.get(b"cookie", b"").decode("latin-1")
    if SESSION_COOKIE not in raw:
        return ""
    try:
        morsel = SimpleCookie(raw).get(SESSION_COOKIE)
    except CookieError:
        return ""
    return morsel.value if morsel is not None else ""


class Authenticator:
    """The checks (see the module's description), shared by the middleware and the console's login."""

    def __init__(self, config: RouterConfig, pm: pluggy.PluginManager, engine: Engine) -> None:
        self.config = config
        self.pm = pm
        self.engine = engine
        self.throttle = Throttle()

    async def check(self, scope: Scope, authorization: str, announce_as: str = "") -> Authenticated | Denied | None:
        """Ask the hook about ``authorization`` (after the wait the throttle asks for), announce and count the
        outcome (a success as ``announce_as`` when given: ``login``). No answer at all with ``http.auth`` set, or
        for a login, is a denial."""
        address, host = _address(scope)
        path = str(scope.get("path", ""))
        claimed = claimed_user(authorization)
        keys = (f"user:{claimed}", f"host:{host}") if claimed else (f"host:{host}",)
        if authorization and (wait := self.throttle.delay(*keys)):
            await asyncio.sleep(wait)
        kwargs: dict[str, Any] = dict(authorization=authorization, address=address,
                                      method=str(scope.get("method", "")), path=path, config=self.config)  # fmt: skip

        def ask() -> Any:
            return decide(self.pm, "router_authenticate", on_error=AUTHENTICATION_FAILED, **kwargs)

        answer = await run_in_threadpool(ask) if authorization else ask()  # a password check is slow: not here
        if isinstance(answer, Authenticated):
            self.throttle.succeeded(f"user:{answer.user}", f"host:{host}")
            notify(self.pm, "router_authentication_succeeded", user=answer.user, method=announce_as or answer.method,
                   address=address, path=path)  # fmt: skip
            return answer
        if isinstance(answer, Denied) or self.config.http.auth.enabled or announce_as:
            denied = answer if isinstance(answer, Denied) else Denied("no authentication plugin accepted it",
                                                                      claimed)  # fmt: skip
            if authorization:
                self.throttle.failed(*keys)
            log.info("HTTP %s from %s refused: %s", path, address, denied.reason)
            notify(self.pm, "router_authentication_failed", user=denied.user, reason=denied.reason,
                   address=address, path=path)  # fmt: skip
            return denied
        return None


class Authentication:
    """The ASGI middleware in front of every route of the HTTP listener (see the module's description)."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        checks = self.authenticator
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if not authorization and (cookie := session_cookie(headers)):
            session = await run_in_threadpool(session_for, checks.engine, cookie)
            if session is not None:
                scope["router.user"] = session.user
                scope["router.identity"] = Identity(session.user, "session", session.role, session.csrf_token)
                await self.app(scope, receive, send)
                return
        answer = await checks.check(scope, authorization)
        if isinstance(answer, Authenticated):
            scope["router.user"] = answer.user
            scope["router.identity"] = Identity(answer.user, answer.method, answer.role)
        elif isinstance(answer, Denied) and not authorization and not path.startswith(SERVICE_PREFIXES):
            await RedirectResponse("/login", 303)(scope, receive, send)
            return
        elif isinstance(answer, Denied):
            realm = "dicomweb" if str(scope.get("path", "")).startswith("/dicomweb") else "router"
            scheme = "Bearer" if checks.config.http.auth.bearer_token else "Basic"
            headers_out = {"WWW-Authenticate": f'{scheme} realm="{realm}"'}
            response = JSONResponse({"error": "authentication required"}, 401, headers_out)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _address(scope: Scope) -> tuple[str, str]:
    client = scope.get("client")
    return (f"{client[0]}:{client[1]}", str(client[0])) if client else ("", "")


def exposure_problem(config: RouterConfig, engine: Engine) -> str | None:
    """Why the HTTP listener may not start where it is configured: off loopback, with neither ``http.auth`` nor a
    user of the router's to sign in (``http.tls`` is checked with the configuration)."""
    http = config.http
    if http.loopback or http.auth.enabled or any_users(engine):
        return None
    return (
        f"http.host {http.host} is not a loopback address and no one could sign in: add a user "
        "(router users add NAME --role admin) or set http.auth"
    )


__all__ = ["Authentication", "Authenticator", "Identity", "SessionInfo", "Throttle", "exposure_problem"]
