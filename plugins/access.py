"""Who may come in: the built-in association policy and HTTP authentication, as ordinary (``trylast``) plugins.

- ``router_association_policy``: ``dicom.check_called_aet`` (the called AE title must be ours),
  ``dicom.allowed_calling_aets`` (when not empty, the calling AE title must be one of them) and the peers'
  ``accept_from`` (a calling AE title that a DICOM peer with ``accept_from`` has may come only from the addresses
  and networks listed there, those of every such peer with that AE title together); every refusal is
  rejected-permanent by the service user, as PS3.8 9.3.4 names them. The called AE title is checked first, the
  order in which pynetdicom answered before this was a hook.
- ``router_authenticate``: ``http.auth`` (a bearer token, or basic credentials, compared in constant time; role
  ``admin`` in the admin API), then the router's users (``router users add``: basic credentials checked against
  their argon2id hashes, or one of their API tokens, ``rt_...``; the user's role). Credentials that name no one are
  denied when ``http.auth`` is set or users exist; with neither, and no credentials, no opinion: the request goes
  on unless another plugin refuses it (the admin API still wants a user).

A plugin that wants to decide before these (a calling AE bound to a certificate, an LDAP login) implements the same
hook; its answer (anything but ``None``) wins, as ``trylast`` puts these behind every other implementation.
"""

from __future__ import annotations

import base64
import hmac
import threading

from sqlalchemy.engine import Engine

from router.config import DicomPeer, RouterConfig
from router.hooks.answers import (
    CALLED_AE_NOT_RECOGNIZED,
    CALLING_AE_NOT_RECOGNIZED,
    REJECTED_PERMANENT,
    SERVICE_USER,
    Authenticated,
    Denied,
    Reject,
)
from router.hooks.specs import hookimpl
from router.store.db import make_engine
from router.store.users import TOKEN_PREFIX, any_users, check_password, check_token


@hookimpl(trylast=True)
def router_association_policy(calling_ae: str, called_ae: str, address: str, config: RouterConfig) -> Reject | None:
    dicom = config.dicom
    if dicom.check_called_aet and called_ae.strip() != config.ae_title.strip():
        return Reject(f"called AE title {called_ae!r} is not {config.ae_title!r}", REJECTED_PERMANENT, SERVICE_USER,
                      CALLED_AE_NOT_RECOGNIZED)  # fmt: skip
    allowed = [ae.strip() for ae in dicom.allowed_calling_aets]
    if allowed and calling_ae.strip() not in allowed:
        return Reject(f"calling AE title {calling_ae!r} is not in dicom.allowed_calling_aets", REJECTED_PERMANENT,
                      SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)  # fmt: skip
    return _wrong_address(calling_ae, address, config)


def _wrong_address(calling_ae: str, address: str, config: RouterConfig) -> Reject | None:
    """A Reject when ``calling_ae`` is bound to addresses (``peers.NAME.accept_from``) and ``address`` is not one."""
    bound = {
        name: peer
        for name, peer in config.peers.items()
        if isinstance(peer, DicomPeer) and peer.accept_from and peer.is_ae(calling_ae)
    }
    host = address.rpartition(":")[0] if ":" in address else address
    if not bound or any(peer.accepts_from(host) for peer in bound.values()):
        return None
    keys = ", ".join(f"peers.{name}.accept_from" for name in bound)
    return Reject(f"calling AE title {calling_ae!r} may not come from {host} ({keys})", REJECTED_PERMANENT,
                  SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)  # fmt: skip


ADMIN = "admin"  # what http.auth's credentials may do in the admin API: they are the site's own
_engines: dict[str, Engine] = {}  # the router's database, by URL: the users and their tokens are there
_engines_lock = threading.Lock()


def _engine(config: RouterConfig) -> Engine:
    url = config.effective_database_url
    with _engines_lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


def _bearer(token: str, config: RouterConfig) -> Authenticated | Denied | None:
    auth = config.http.auth
    if auth.bearer_token and hmac.compare_digest(token.encode(), auth.bearer_token.encode()):
        return Authenticated("bearer", "bearer", ADMIN)
    if token.startswith(TOKEN_PREFIX):
        account = check_token(_engine(config), token)
        return Authenticated(account.name, "token", account.role) if account else Denied("wrong bearer token")
    return Denied("wrong bearer token") if auth.bearer_token else None


def _basic(value: str, config: RouterConfig) -> Authenticated | Denied | None:
    auth = config.http.auth
    try:
        user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return Denied("unreadable basic credentials")
    site_user, site_password = auth.username, auth.password
    if site_user is not None and site_password is not None and hmac.compare_digest(user.encode(), site_user.encode()):
        if hmac.compare_digest(password.encode(), site_password.encode()):
            return Authenticated(user, "basic", ADMIN)
        return Denied("wrong user name or password", user)
    engine = _engine(config)
    known, account = check_password(engine, user, password)
    if account is not None:
        return Authenticated(account.name, "basic", account.role)
    if known or auth.username is not None or any_users(engine):
        return Denied("wrong user name or password", user)
    return None


@hookimpl(trylast=True)
def router_authenticate(authorization: str, config: RouterConfig) -> Authenticated | Denied | None:
    auth = config.http.auth
    scheme, _, value = authorization.partition(" ")
    answer: Authenticated | Denied | None = None
    if scheme.lower() == "bearer" and value.strip():
        answer = _bearer(value.strip(), config)
    elif scheme.lower() == "basic" and value.strip():
        answer = _basic(value.strip(), config)
    if answer is not None or not auth.enabled:
        return answer
    return Denied("no credentials" if not authorization else f"{scheme or 'these'} credentials are not accepted")
