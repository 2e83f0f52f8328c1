"""Every request: a request id, one log event, and the security headers on its response.

One pure-ASGI layer around the whole service, the stream included. It stays cheap because a
stream lives inside it for hours: one frame, one small closure, and a single type check per
written chunk.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercurio.model import CLIENT_ID_PATTERN

log = structlog.get_logger("mercurio.http")

REQUEST_ID = re.compile(r"[A-Za-z0-9._~:@/+=-]{1,128}")
STREAM_ROUTE = "/api/clients/{clientID}/notifications/stream"
STREAM_REGEX = re.compile(r"/api/clients/(?P<clientID>[^/]+)/notifications/stream/?")
UNMATCHED = "unmatched"

# Polled every few seconds by orchestrators and scrapers: logged at debug level only.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})

SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
# The web app is same-origin ES modules, one stylesheet, fetch and EventSource to its own
# origin; the favicon is a data: URL. Nothing inline, nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    b"frame-ancestors 'none'"
)
# FastAPI's API docs load Swagger UI and ReDoc from a CDN with inline scripts: no CSP there.
DOCS_PAGES = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


class Route:
    """One route's path pattern, its template for logs, and its methods (None: any)."""

    __slots__ = ("methods", "regex", "template")

    def __init__(
        self, regex: re.Pattern[str], template: str, methods: Iterable[str] | None
    ) -> None:
        self.regex = regex
        self.template = template
        self.methods = frozenset(methods) if methods is not None else None


def routes_of(app: Any) -> list[Route]:
    """The stream's route and the framework's routes, in the framework's matching order."""
    return [Route(STREAM_REGEX, STREAM_ROUTE, None), *_flatten(getattr(app, "routes", ()))]


def _flatten(routes: Iterable[Any]) -> Iterable[Route]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            yield from _flatten(included.routes)
            continue
        regex = getattr(route, "path_regex", None)
        path = getattr(route, "path", None)
        if regex is None or path is None:
            continue
        methods = getattr(route, "methods", None)
        if not hasattr(route, "endpoint"):  # a Mount: the template names the rest
            path = f"{path}/{{path}}"
            methods = None
        yield Route(regex, path, methods)


def match_route(table: list[Route], method: str, path: str) -> tuple[str, str | None]:
    """The route template and the client id for a request, matched as the framework does."""
    partial: tuple[str, str | None] | None = None
    for route in table:
        found = route.regex.match(path)
        if found is None:
            continue
        client_id = found.groupdict().get("clientID")
        if client_id is not None and not CLIENT_ID_PATTERN.fullmatch(client_id):
            client_id = None
        if route.methods is None or method in route.methods:
            return route.template, client_id
        partial = partial or (route.template, client_id)
    return partial or (UNMATCHED, None)


class RequestContext:
    """Binds request and node ids into structlog's context, echoes X-Request-ID, logs the end.

    Only the route template is logged, never the raw path or query string: a query string may
    carry a stream ticket (or a token that is about to be refused).
    """

    def __init__(self, app: ASGIApp, node_id: str, routes: Callable[[], list[Route]]) -> None:
        self.app = app
        self.node_id = node_id
        self._routes = routes
        self._table: list[Route] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope["headers"])
        echoed = (b"x-request-id", request_id.encode())
        policy = scope["path"] not in DOCS_PAGES
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_headers(message.get("headers", ()), echoed, policy)
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id, node_id=self.node_id)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            status = status or 500
            raise
        finally:
            self._log(scope, status, time.perf_counter() - started)
            structlog.contextvars.reset_contextvars(**tokens)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        matched = getattr(scope.get("route"), "path", None)  # set by FastAPI when it routed
        if isinstance(matched, str):
            route = matched
            client_id = scope.get("path_params", {}).get("clientID")
            if client_id is not None and not CLIENT_ID_PATTERN.fullmatch(str(client_id)):
                client_id = None
        else:
            # The raw stream, static files, or a request FastAPI saw under a copied scope.
            if self._table is None:
                self._table = self._routes()  # built on first use: every route exists by then
            route, client_id = match_route(self._table, method, path)
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status or None,  # None: the client left before an answer
            "duration_ms": round(seconds * 1000, 3),
        }
        if client_id is not None:
            fields["client_id"] = client_id
        if path in PROBES and status < 400:
            log.debug("http.request", **fields)
        elif status >= 500:
            log.error("http.request", **fields)
        else:
            log.info("http.request", **fields)


def _request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def _with_headers(
    headers: Iterable[tuple[bytes, bytes]], echoed: tuple[bytes, bytes], policy: bool
) -> list[tuple[bytes, bytes]]:
    out = list(headers)
    present = {name.lower() for name, _ in out}
    out.append(echoed)
    for name, value in SECURITY_HEADERS:
        if name not in present:
            out.append((name, value))
    if policy and b"content-security-policy" not in present:
        for name, value in out:
            if name.lower() == b"content-type" and value.startswith(b"text/html"):
                out.append((b"content-security-policy", CONTENT_SECURITY_POLICY))
                break
    return out
