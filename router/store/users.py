"""The admin API's users: names, roles, argon2id password hashes and API tokens (``router users``, ``/api/users``).

- Passwords are hashed with argon2id (argon2-cffi's defaults, the RFC 9106 low-memory profile: 64 MiB, 3 passes,
  about 0.1 s here), so a stolen database does not give them away. HTTP basic credentials come with every request
  of a script: a password checked once is remembered for ``VERIFIED_FOR`` seconds as a keyed digest (never the
  password), for as long as the user's hash is unchanged, so a script does not pay the 0.1 s per call.
- An API token is 32 random bytes; only its SHA-256 is stored (a random token needs no slow hash), and it is shown
  once, when made.
- A name that is not a user is checked against a dummy hash all the same: a wrong name and a wrong password take
  the same time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine

from router.store.models import utcnow
from router.store.ops_models import ROLES
from router.store.tables import API_TOKEN, USER, WEB_SESSION

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 takes any length; a megabyte "password" would only cost us time
TOKEN_PREFIX = "rt_"
VERIFIED_FOR = 300.0  # s
VERIFIED_MAX = 1024  # remembered verifications, at most

_hasher = PasswordHasher()
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))
_KEY = secrets.token_bytes(32)  # keys the remembered verifications; new in every process


class UserError(ValueError):
    """A refused change: the message says what is wrong (an unknown role, a short password, a taken name)."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (viewer < operator < admin); an unknown role may do nothing."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def _check(name: str | None = None, role: str | None = None, password: str | None = None) -> None:
    if name is not None and not NAME.match(name):
        raise UserError("a user name is 1-64 letters, digits and . _ @ -, starting with a letter or digit")
    if role is not None and role not in ROLES:
        raise UserError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if password is not None and not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def add_user(engine: Engine, name: str, role: str, password: str) -> Account:
    _check(name, role, password)
    hashed = _hasher.hash(password)
    with engine.begin() as conn:
        if conn.execute(select(USER.c.id).where(USER.c.name == name)).first() is not None:
            raise UserError(f"user {name!r} exists already")
        now = utcnow()
        conn.execute(insert(USER).values(name=name, role=role, password_hash=hashed, created_at=now, updated_at=now))
    return Account(name, role)


def list_users(engine: Engine) -> list[dict[str, Any]]:
    tokens = select(API_TOKEN.c.user_fk, func.count().label("n")).group_by(API_TOKEN.c.user_fk).subquery()
    query = (
        select(USER.c.name, USER.c.role, USER.c.created_at, USER.c.updated_at, func.coalesce(tokens.c.n, 0))
        .outerjoin(tokens, tokens.c.user_fk == USER.c.id)
        .order_by(USER.c.name)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [{"name": n, "role": r, "created_at": c, "updated_at": u, "tokens": int(t)} for n, r, c, u, t in rows]


def any_users(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(USER.c.id).limit(1)).first() is not None


def user_role(engine: Engine, name: str) -> str | None:
    """The role of user ``name``; None when there is no such user."""
    with engine.connect() as conn:
        found = conn.execute(select(USER.c.role).where(USER.c.name == name)).scalar()
    return str(found) if found is not None else None


def _user_id(conn: Any, name: str) -> int | None:
    found = conn.execute(select(USER.c.id).where(USER.c.name == name)).scalar()
    return int(found) if found is not None else None


def remove_user(engine: Engine, name: str) -> bool:
    """Remove the user, its tokens and its sessions; False when there is no such user."""
    with engine.begin() as conn:
        user_id = _user_id(conn, name)
        if user_id is None:
            return False
        conn.execute(delete(API_TOKEN).where(API_TOKEN.c.user_fk == user_id))
        conn.execute(delete(WEB_SESSION).where(WEB_SESSION.c.user == name, WEB_SESSION.c.from_users.is_(True)))
        conn.execute(delete(USER).where(USER.c.id == user_id))
    return True


def change_user(engine: Engine, name: str, role: str | None = None, password: str | None = None) -> bool:
    """A new role and/or password; a new password ends the user's console sessions. False: no such user."""
    _check(role=role, password=password)
    values: dict[str, Any] = {"updated_at": utcnow()}
    if role is not None:
        values["role"] = role
    if password is not None:
        values["password_hash"] = _hasher.hash(password)
    with engine.begin() as conn:
        done = conn.execute(update(USER).where(USER.c.name == name).values(**values)).rowcount
        if done and password is not None:
            conn.execute(delete(WEB_SESSION).where(WEB_SESSION.c.user == name, WEB_SESSION.c.from_users.is_(True)))
    return bool(done)


class _Verified:
    """Password checks that succeeded lately: keyed digest of name and password -> (the hash it matched, until)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    @staticmethod
    def key(name: str, password: str) -> bytes:
        return hmac.new(_KEY, f"{name}\0{password}".encode(), hashlib.sha256).digest()

    def holds(self, key: bytes, password_hash: str) -> bool:
        with self._lock:
            found = self._entries.get(key)
            return found is not None and found[0] == password_hash and found[1] > time.monotonic()

    def remember(self, key: bytes, password_hash: str) -> None:
        with self._lock:
            self._entries[key] = (password_hash, time.monotonic() + VERIFIED_FOR)
            self._entries.move_to_end(key)
            while len(self._entries) > VERIFIED_MAX:
                self._entries.popitem(last=False)


_verified = _Verified()


def check_password(engine: Engine, name: str, password: str) -> tuple[bool, Account | None]:
    """(whether ``name`` is a user, the account when the password is right). Slow (argon2) unless verified lately."""
    with engine.connect() as conn:
        row = conn.execute(select(USER.c.role, USER.c.password_hash).where(USER.c.name == name)).first()
    if row is None:
        _verify(_DUMMY, password)
        return False, None
    key = _Verified.key(name, password)
    if _verified.holds(key, row.password_hash):
        return True, Account(name, row.role)
    if len(password) > MAX_PASSWORD or not _verify(row.password_hash, password):
        return True, None
    _verified.remember(key, row.password_hash)
    return True, Account(name, row.role)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password[:MAX_PASSWORD]))
    except (VerificationError, InvalidHashError):
        return False


# -- API tokens ------------------------------------------------------------------------------------------------
def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, name: str, label: str = "") -> tuple[int, str]:
    """A new token for ``name``: (its id, the token, shown only now). Raises UserError for an unknown user."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        user_id = _user_id(conn, name)
        if user_id is None:
            raise UserError(f"no user {name!r}")
        token_id = conn.execute(
            insert(API_TOKEN)
            .values(user_fk=user_id, label=label[:64], token_hash=_digest(token), created_at=utcnow())
            .returning(API_TOKEN.c.id)
        ).scalar_one()
    return int(token_id), token


def list_tokens(engine: Engine, name: str) -> list[dict[str, Any]]:
    query = (
        select(API_TOKEN.c.id, API_TOKEN.c.label, API_TOKEN.c.created_at)
        .join(USER, USER.c.id == API_TOKEN.c.user_fk)
        .where(USER.c.name == name)
        .order_by(API_TOKEN.c.id)
    )
    with engine.connect() as conn:
        return [{"id": i, "label": label, "created_at": at} for i, label, at in conn.execute(query).all()]


def revoke_token(engine: Engine, name: str, token_id: int) -> bool:
    with engine.begin() as conn:
        user_id = _user_id(conn, name)
        if user_id is None:
            return False
        gone = conn.execute(delete(API_TOKEN).where(API_TOKEN.c.id == token_id, API_TOKEN.c.user_fk == user_id))
        return bool(gone.rowcount)


def check_token(engine: Engine, token: str) -> Account | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    query = (
        select(USER.c.name, USER.c.role)
        .join(API_TOKEN, API_TOKEN.c.user_fk == USER.c.id)
        .where(API_TOKEN.c.token_hash == _digest(token))
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return Account(row.name, row.role) if row is not None else None
