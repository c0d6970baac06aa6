"""Signing in and out of the console, and the users (admin only): ``/api/login``, ``/api/logout``, ``/api/session``,
``/api/users``.

A login is asked of the ``router_authenticate`` hook as basic credentials (so a plugin that knows the user, LDAP
say, answers it too), slowed down after failures like every other check (``router.listeners.http.auth``), and
gets the session cookie: HttpOnly, SameSite=Strict, Secure when the listener has TLS, for ``http.session_hours``.
The answer carries the session's CSRF token, which every unsafe request of the session (and every form the
console posts, as ``csrf_token``) must carry.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

import anyio.from_thread
from starlette.responses import Response

from router.hooks.answers import Authenticated
from router.listeners.http.api.endpoint import ApiError, ApiResponse, Call, Endpoint, Param
from router.listeners.http.api.services import ApiServices
from router.listeners.http.auth import SESSION_COOKIE, Authenticator, session_cookie
from router.store import sessions, users
from router.store.ops_models import ROLES

LOGIN_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object", "required": ["username", "password"], "properties": {
            "username": {"type": "string", "maxLength": 64}, "password": {"type": "string", "maxLength": 1024}}}},
        "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
            "username": {"type": "string"}, "password": {"type": "string"}}}},
    },
}  # fmt: skip
USER_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["name", "role", "password"], "properties": {
        "name": {"type": "string"}, "role": {"type": "string", "enum": list(ROLES)},
        "password": {"type": "string", "minLength": users.MIN_PASSWORD}}}}}}  # fmt: skip
CHANGE_BODY = {"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": {
    "role": {"type": "string", "enum": list(ROLES)}, "password": {"type": "string"}}}}}}  # fmt: skip
TOKEN_BODY = {"content": {"application/json": {"schema": {"type": "object", "properties": {
    "label": {"type": "string", "maxLength": 64}}}}}}  # fmt: skip
NAME = Param("name", "user name", where="path", max_length=64)
TOKEN_ID = Param("token", "token id", kind="integer", where="path", minimum=1)


def _credentials(call: Call) -> tuple[str, str]:
    if call.request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = parse_qs(call.body.decode("utf-8", "replace"))
        found: dict[str, Any] = {k: v[0] for k, v in form.items()}
    else:
        found = call.json()
    name, password = found.get("username"), found.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name:
        raise ApiError(400, "username and password, as text")
    return name, password


class AccountsApi:
    """The handlers of /api/login, /api/logout, /api/session and /api/users."""

    def __init__(self, services: ApiServices, authenticator: Authenticator) -> None:
        self.services = services
        self.authenticator = authenticator
        self.engine = services.engine
        self.config = services.config

    def login(self, call: Call) -> Response:
        name, password = _credentials(call)
        authorization = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
        scope = {**call.request.scope, "path": "/api/login"}
        answer = anyio.from_thread.run(self.authenticator.check, scope, authorization, "login")
        if not isinstance(answer, Authenticated):
            raise ApiError(401, "wrong user name or password")
        from_users = answer.method == "basic" and users.user_role(self.engine, answer.user) == answer.role
        cookie, csrf = sessions.create_session(
            self.engine, answer.user, answer.role, from_users, self.config.http.session_hours
        )
        response = ApiResponse({"user": answer.user, "role": answer.role, "csrf_token": csrf})
        response.set_cookie(SESSION_COOKIE, cookie, max_age=int(self.config.http.session_hours * 3600), path="/",
                            httponly=True, samesite="strict", secure=self.config.http.tls is not None)  # fmt: skip
        return response

    def logout(self, call: Call) -> Response:
        cookie = session_cookie(dict(call.request.scope["headers"]))
        if cookie and sessions.end_session(self.engine, cookie):
            self.services.changed(call.user, _role(call), "session.ended", call.user, call.address)
        response = ApiResponse({"ok": True})
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    def session(self, call: Call) -> dict[str, Any]:
        assert call.identity is not None
        return {"user": call.user, "role": call.identity.role, "method": call.identity.method,
                "csrf_token": call.identity.csrf_token}  # fmt: skip

    def list_users(self, call: Call) -> dict[str, Any]:
        return {
            "items": [{**u, "tokens": users.list_tokens(self.engine, u["name"])} for u in users.list_users(self.engine)]
        }

    def add_user(self, call: Call) -> Any:
        body = call.json()
        try:
            account = users.add_user(self.engine, str(body.get("name", "")), str(body.get("role", "")),
                                     str(body.get("password", "")))  # fmt: skip
        except users.UserError as exc:
            raise ApiError(409 if "exists" in str(exc) else 422, str(exc)) from None
        self.services.changed(call.user, _role(call), "user.added", account.name, call.address, new_role=account.role)
        return ApiResponse({"name": account.name, "role": account.role}, 201)

    def change_user(self, call: Call) -> dict[str, Any]:
        body, name = call.json(), call.params["name"]
        role, password = body.get("role"), body.get("password")
        if (role is not None and not isinstance(role, str)) or (password is not None and not isinstance(password, str)):
            raise ApiError(422, "role and password are text")
        if role is None and password is None:
            raise ApiError(422, "nothing to change: give role and/or password")
        try:
            found = users.change_user(self.engine, name, role=role, password=password)
        except users.UserError as exc:
            raise ApiError(422, str(exc)) from None
        if not found:
            raise ApiError(404, f"no user {name!r}")
        self.services.changed(call.user, _role(call), "user.changed", name, call.address, new_role=role,
                         password_changed=password is not None)  # fmt: skip
        return {"name": name, "changed": [k for k, v in (("role", role), ("password", password)) if v is not None]}

    def remove_user(self, call: Call) -> dict[str, Any]:
        name = call.params["name"]
        if not users.remove_user(self.engine, name):
            raise ApiError(404, f"no user {name!r}")
        self.services.changed(call.user, _role(call), "user.removed", name, call.address)
        return {"removed": name}

    def create_token(self, call: Call) -> Any:
        name, label = call.params["name"], str(call.json().get("label", ""))[:64]
        try:
            token_id, token = users.create_token(self.engine, name, label)
        except users.UserError as exc:
            raise ApiError(404, str(exc)) from None
        self.services.changed(
            call.user, _role(call), "token.created", name, call.address, token_id=token_id, label=label
        )
        return ApiResponse({"id": token_id, "label": label, "token": token}, 201)

    def revoke_token(self, call: Call) -> dict[str, Any]:
        name, token_id = call.params["name"], call.params["token"]
        if not users.revoke_token(self.engine, name, token_id):
            raise ApiError(404, f"user {name!r} has no token {token_id}")
        self.services.changed(call.user, _role(call), "token.revoked", name, call.address, token_id=token_id)
        return {"revoked": token_id}

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("POST", "/api/login", "Sign in: a session cookie and its CSRF token", self.login, role=None,
                     body=LOGIN_BODY, responses={200: "signed in", 400: "no user name or password",
                                                 401: "wrong user name or password"}, tag="session"),
            Endpoint("POST", "/api/logout", "Sign out: the session ends", self.logout, tag="session"),
            Endpoint("GET", "/api/session", "Who is signed in: user, role, the session's CSRF token", self.session,
                     tag="session"),
            Endpoint("GET", "/api/users", "The users, their roles and tokens (never a secret)", self.list_users,
                     role="admin", tag="users"),
            Endpoint("POST", "/api/users", "Add a user", self.add_user, role="admin", body=USER_BODY,
                     responses={201: "added", 409: "the name is taken", 422: "a bad name, role or password"},
                     tag="users"),
            Endpoint("PUT", "/api/users/{name}", "Change a user's role or password (a new password ends its "
                     "sessions)", self.change_user, role="admin", params=(NAME,), body=CHANGE_BODY,
                     responses={404: "no such user", 422: "a bad role or password"}, tag="users"),
            Endpoint("DELETE", "/api/users/{name}", "Remove a user, its tokens and sessions", self.remove_user,
                     role="admin", params=(NAME,), responses={404: "no such user"}, tag="users"),
            Endpoint("POST", "/api/users/{name}/tokens", "A new API token for the user (shown once)",
                     self.create_token, role="admin", params=(NAME,), body=TOKEN_BODY,
                     responses={201: "the token", 404: "no such user"}, tag="users"),
            Endpoint("DELETE", "/api/users/{name}/tokens/{token}", "Revoke one of the user's tokens",
                     self.revoke_token, role="admin", params=(NAME, TOKEN_ID), responses={404: "no such token"},
                     tag="users"),
        ]  # fmt: skip


def _role(call: Call) -> str:
    return call.identity.role if call.identity is not None else ""


def make_endpoints(services: ApiServices, authenticator: Authenticator) -> list[Endpoint]:
    return AccountsApi(services, authenticator).endpoints()
