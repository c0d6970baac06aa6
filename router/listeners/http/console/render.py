"""The console's pages: Jinja2 templates (autoescape on: every value is escaped) and the security headers every
page carries (a Content-Security-Policy that allows only the router's own scripts, styles and images, no framing,
no referrer)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

import router
from router.listeners.http.console.client import identity_of
from router.store.users import role_allows

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
NAVIGATION = (
    ("/", "Dashboard"), ("/peers", "Peers"), ("/queue", "Queue"), ("/activity", "Activity"), ("/rules", "Rules"),
    ("/worklist", "Worklist"), ("/studies", "Studies"),
)  # fmt: skip


def when(value: Any) -> str:
    """An ISO 8601 date-time as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    if not value:
        return ""
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: Any) -> str:
    """Seconds as ``42 s``, ``5 min``, ``3 h 10 min``, ``2 d``."""
    if seconds is None:
        return "-"
    s = int(float(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d"


def size(value: Any) -> str:
    n = float(value or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


ENVIRONMENT = Environment(
    loader=PackageLoader("router.listeners.http.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters.update(when=when, age=age, size=size)


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context``, the signed-in user, what their role allows, and the headers."""
    identity = identity_of(request)
    role = identity.role if identity is not None else ""
    html = ENVIRONMENT.get_template(template).render(
        request=request, user=identity.user if identity else "", role=role, csrf=identity.csrf_token or ""
        if identity else "", can=lambda needed: bool(role) and role_allows(role, needed), navigation=NAVIGATION,
        path=request.url.path, version=router.__version__, htmx=request.headers.get("hx-request") == "true",
        **context,
    )  # fmt: skip
    return HTMLResponse(html, status, headers=SECURITY_HEADERS)


def redirect(url: str, cookies: list[bytes] | None = None) -> RedirectResponse:
    response = RedirectResponse(url, 303, headers=SECURITY_HEADERS)
    for cookie in cookies or []:
        response.raw_headers.append((b"set-cookie", cookie))
    return response
