"""The console's guard: loopback only, a per-run token, CSRF checks on every POST.

Like a notebook server, the console prints a URL with a random token once; the first request
trades it for a cookie (HttpOnly, SameSite=Strict) and redirects to the same page without it.
Every later request must carry the cookie. A POST must come from the console's own origin
(Origin, or Referer when there is none; checked here) and carry the per-run CSRF value in its
form (checked by ``csrf_form``, which every POST view calls before it acts). The Host header
must name the console itself, which shuts out DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import URL, FormData
from starlette.exceptions import HTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

COOKIE = "orderpipe_console"
CSRF_FIELD = "csrf"
LOOPBACK_NAMES = ("localhost",)


class NotLoopback(ValueError):
    """A bind address other than loopback, without the user asking for it."""


def check_bind_host(host: str, *, allow_remote: bool) -> str:
    """Loopback addresses only, unless the user explicitly allowed others."""
    if host in LOOPBACK_NAMES:
        return host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise NotLoopback(
            f"refusing to listen on {host}: the console binds loopback only "
            "(pass --allow-remote to serve other addresses, at your own risk)"
        )
    return host


@dataclass(frozen=True)
class Secrets:
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Guard(BaseHTTPMiddleware):
    """Token on every request, CSRF on every POST; ``hosts`` lists the names the console answers."""

    def __init__(self, app: object, *, keys: Secrets, hosts: frozenset[str] | None) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.keys = keys
        self.hosts = hosts

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        host = request.headers.get("host", "")
        if self.hosts is not None and host not in self.hosts:
            return PlainTextResponse("unknown host", status_code=421)
        offered = request.query_params.get("token")
        if offered is not None and request.method == "GET":
            if not _same(offered, self.keys.token):
                return _refused()
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = URL(path=request.url.path, query=urlencode(rest))
            response: Response = RedirectResponse(str(target), status_code=303)
            response.set_cookie(COOKIE, self.keys.token, httponly=True, samesite="strict", path="/")
            return response
        if not _same(request.cookies.get(COOKIE), self.keys.token):
            return _refused()
        if request.method not in ("GET", "HEAD") and not _same_origin(request, host):
            return PlainTextResponse("refused: cross-site request", status_code=403)
        response = await call_next(request)
        _harden(response)
        return response


def _same_origin(request: Request, host: str) -> bool:
    """The request came from one of the console's own pages (Origin, else Referer)."""
    own = f"{request.url.scheme}://{host}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == own
    referer = request.headers.get("referer")
    return referer is not None and _origin_of(referer) == own


async def csrf_form(request: Request, keys: Secrets) -> FormData:
    """The POSTed form, once its CSRF value is checked; 403 otherwise."""
    form = await request.form()
    value = form.get(CSRF_FIELD)
    if not isinstance(value, str) or not _same(value, keys.csrf):
        raise HTTPException(403, "refused: missing or wrong CSRF value")
    return form


def _refused() -> Response:
    return PlainTextResponse(
        "This console needs its token: open the URL `orderpipe console` printed.",
        status_code=403,
    )


def _harden(response: Response) -> None:
    headers = response.headers
    headers.setdefault(
        "content-security-policy",  # a view may set its own (the sandboxed e-mail frame)
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    )
    headers.setdefault("x-frame-options", "DENY")
    headers.setdefault("x-content-type-options", "nosniff")
    headers.setdefault("referrer-policy", "same-origin")
    headers.setdefault("cache-control", "no-store")
