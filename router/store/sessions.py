"""Console sessions: a login through ``/api/login`` gets a random cookie (only its SHA-256 is stored) and a CSRF
token that every form or unsafe request of the session must carry. A session ends at logout, when its time is up
(``http.session_hours``), or when its user is removed or given a new password."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from router.store.models import utcnow
from router.store.tables import USER, WEB_SESSION


@dataclass(frozen=True)
class SessionInfo:
    user: str
    role: str
    csrf_token: str


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def create_session(engine: Engine, user: str, role: str, from_users: bool, hours: float) -> tuple[str, str]:
    """A new session: (the cookie value, its CSRF token). Sessions past their time are removed on the way."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(delete(WEB_SESSION).where(WEB_SESSION.c.expires_at < now))
        conn.execute(
            insert(WEB_SESSION).values(
                user=user, role=role, from_users=from_users, token_hash=_digest(cookie), csrf_token=csrf,
                created_at=now, expires_at=now + timedelta(hours=hours),
            )
        )  # fmt: skip
    return cookie, csrf


def session_for(engine: Engine, cookie: str) -> SessionInfo | None:
    """The session of a cookie, with its user's current role; None when unknown, over, or its user is gone."""
    if not cookie or len(cookie) > 128:
        return None
    query = (
        select(WEB_SESSION.c.user, WEB_SESSION.c.role, WEB_SESSION.c.from_users, WEB_SESSION.c.csrf_token,
               WEB_SESSION.c.expires_at, USER.c.role.label("current_role"))
        .outerjoin(USER, USER.c.name == WEB_SESSION.c.user)
        .where(WEB_SESSION.c.token_hash == _digest(cookie))
    )  # fmt: skip
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
    if expires <= utcnow():
        return None
    if row.from_users:
        if row.current_role is None:
            return None
        return SessionInfo(row.user, row.current_role, row.csrf_token)
    return SessionInfo(row.user, row.role, row.csrf_token)


def end_session(engine: Engine, cookie: str) -> bool:
    with engine.begin() as conn:
        return bool(conn.execute(delete(WEB_SESSION).where(WEB_SESSION.c.token_hash == _digest(cookie))).rowcount)
