"""Every raw ASGI layer of the service, outermost first as create_app stacks them.

They stay cheap because a stream lives inside them for hours: one frame and a small closure
each. Each layer hands the scope it was given on (never a copy), so the route template an
inner endpoint writes into the scope is there for RequestContext to log.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercurio.api import stream
from mercurio.api.errors import send_error
from mercurio.api.events import UnicastIn, publish_unicast
from mercurio.auth import AuthError, bearer_token, single_authorization
from mercurio.metrics import HttpTally
from mercurio.model import CLIENT_ID_PATTERN
from mercurio.node import Node

log = structlog.get_logger("mercurio.http")

REQUEST_ID = re.compile(r"[A-Za-z0-9._~:@/+=-]{1,128}")
STREAM_ROUTE = "/api/clients/{clientID}/notifications/stream"
UNICAST_ROUTE = "/api/events/unicast"
STATIC_ROUTE = "/app/{path}"
# Served by mounts and plain routes, which FastAPI leaves no template for in the scope.
UNTEMPLATED = (("/app/", STATIC_ROUTE), ("/docs/assets/", "/docs/assets/{path}"))
UNMATCHED = "unmatched"
# Where a raw endpoint writes its route template; FastAPI's routes leave theirs in "route".
ROUTE_TEMPLATE = "route_template"

_REQUEST_ID_PREFIX = os.urandom(8).hex()
_request_ids = itertools.count()

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


class RequestContext:
    """Binds request and node ids into structlog's context, echoes X-Request-ID, logs the end.

    Only the route template is logged, never the raw path or query string: a query string may
    carry a stream ticket (or a token that is about to be refused). The answer is counted in
    tally for /metrics by the same template.
    """

    def __init__(self, app: ASGIApp, node_id: str, tally: HttpTally | None = None) -> None:
        self.app = app
        self.node_id = node_id
        self.tally = tally

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope["headers"])
        policy = scope["path"] not in DOCS_PAGES
        status = 0
        counted = False

        def count() -> None:
            nonlocal counted
            if self.tally is not None and not counted:
                self.tally.record(scope["method"], route_of(scope), status)
            counted = True

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Built here, not kept beside the id: a stream would hold both for hours.
                echoed = (b"x-request-id", request_id.encode())
                message["headers"] = _with_headers(message.get("headers", ()), echoed, policy)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the client can have the whole answer: an app may still work
                # after its last byte (a file answer closes its file in a thread), and a client
                # that reads /metrics next must find this answer there.
                count()
            await send(message)

        # Unbound by name at the end, not reset with the tokens bind returns: those tokens
        # would live as long as the request, a stream's hours included.
        structlog.contextvars.bind_contextvars(request_id=request_id, node_id=self.node_id)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            status = status or 500
            raise
        finally:
            _log(scope, status, time.perf_counter() - started)
            count()
            structlog.contextvars.unbind_contextvars("request_id", "node_id")


def route_of(scope: Scope) -> str:
    """The template of the route that answered: a raw endpoint's, FastAPI's, or by path."""
    template = scope.get(ROUTE_TEMPLATE)
    if isinstance(template, str):
        return template
    matched = getattr(scope.get("route"), "path", None)  # set by FastAPI when it routed
    if isinstance(matched, str):
        return matched
    path: str = scope["path"]
    if path == "/openapi.json":
        return path
    for prefix, template in UNTEMPLATED:
        if path.startswith(prefix):
            return template
    return UNMATCHED


def _log(scope: Scope, status: int, seconds: float) -> None:
    if scope["path"] in PROBES and status < 400:
        level = logging.DEBUG
    elif status >= 500:
        level = logging.ERROR
    else:
        level = logging.INFO
    # bind(): the configured logger itself (cached on first use), without the lazy proxy's
    # __getattr__ on every call, which cost more than the level check.
    logger = log.bind()
    if not logger.is_enabled_for(level):
        return  # one line per request, but its fields are only built when it is written
    fields: dict[str, Any] = {
        "method": scope["method"],
        "route": route_of(scope),
        "status": status or None,  # None: the client left before an answer
        "duration_ms": round(seconds * 1000, 3),
    }
    client_id = scope.get("path_params", {}).get("clientID")
    if client_id is not None and CLIENT_ID_PATTERN.fullmatch(str(client_id)):
        fields["client_id"] = client_id
    logger.log(level, "http.request", **fields)


def _request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if REQUEST_ID.fullmatch(text):
                return text
            break
    # 32 hex digits, as uuid4().hex: a random prefix per process and a counter, unique
    # without a getrandom() call per request.
    return f"{_REQUEST_ID_PREFIX}{next(_request_ids):016x}"


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


class CrossOriginOnly:
    """Hands requests with an Origin header to CORS, and the rest straight on.

    A request without Origin is not a cross-origin one: CORSMiddleware has nothing to decide
    and only adds `Vary: Origin` (so that caches keep apart the answers to requests with and
    without an Origin), which this layer adds the same way. CORSMiddleware parsing the headers
    of every request and answer was a quarter of a unicast's CPU on the request path.
    """

    def __init__(self, cors: ASGIApp, app: ASGIApp) -> None:
        self.cors = cors
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing on the coroutine it chose, as StreamRouter: no frame of
        # this layer lives as long as a stream.
        if scope["type"] != "http" or any(k == b"origin" for k, _ in scope["headers"]):
            return self.cors(scope, receive, send)

        async def send_varying(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _vary_origin(message.get("headers", ()))
            await send(message)

        return self.app(scope, receive, send_varying)


def _vary_origin(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers with Origin added to Vary, as CORSMiddleware sets it: one Vary header."""
    out = list(headers)
    found = [i for i, (name, _) in enumerate(out) if name == b"vary"]
    if not found:
        out.append((b"vary", b"Origin"))
        return out
    joined = b", ".join([*(out[i][1] for i in found), b"Origin"])
    out[found[0]] = (b"vary", joined)
    for i in reversed(found[1:]):
        del out[i]
    return out


class OneAuthorization:
    """Two Authorization headers get the same 400 on every route, the stream included.

    Each parser would otherwise pick its own: the first, the last, or the two joined.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function, as StreamRouter: no frame of this layer lives as long as a stream.
        if scope["type"] == "http":
            try:
                single_authorization(scope["headers"])
            except AuthError as exc:
                return send_error(send, exc.status, exc.message)
        return self.app(scope, receive, send)


class StreamRouter:
    """Routes the stream to its lean endpoint and everything else to FastAPI.

    A plain function handing back the coroutine it chose, not a coroutine awaiting it: the
    caller awaits that one directly, and no frame of this layer lives as long as a stream.
    """

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            match = stream.STREAM_PATH.fullmatch(scope["path"])
            if match is not None and scope["method"] != "OPTIONS":
                scope[ROUTE_TEMPLATE] = STREAM_ROUTE
                scope["path_params"] = {"clientID": match.group(1)}
                return stream.handle(self.node, scope, receive, send, match.group(1))
        return self.app(scope, receive, send)


class BodyLimit:
    """413 for a request body over the limit, whether it declares its length or not.

    Bodies are small (64 KiB by default), so the body is read here in full and handed on as
    one message; the framework never sees a body that is too large.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        _json_by_default(scope)
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await send_error(send, 413, f"request body over {self.limit} bytes")
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await send_error(send, 413, f"request body over {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks)}
        await self.app(scope, _replay(whole, receive), send)


def _json_by_default(scope: Scope) -> None:
    """Read a body sent without a JSON content type as JSON, as the prototype did.

    `curl -d` labels bodies as form data; the API only speaks JSON, so the label is corrected
    rather than the request refused. In place: the scope is the one RequestContext logs.
    """
    kinds = [v for k, v in scope["headers"] if k == b"content-type"]
    if kinds and b"json" in kinds[0]:
        return
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    scope["headers"] = [*headers, (b"content-type", b"application/json")]


class FastUnicast:
    """POST /api/events/unicast from a publisher with a valid body, without the framework.

    Unicast is the publish back ends send most. Through FastAPI it spent two thirds of its CPU
    in routing, dependency solving and middleware frames (py-spy, bench/run.py unicast c=64).
    This layer only decides whether it can take the request, with the same pydantic model and
    the same Authenticator; the answer comes from events.publish_unicast, as the framework
    route's does. Anything else (bad JSON, a refused token, a plain user, a repeated
    Authorization header, a body in several pieces or over the limit) goes on unchanged, to
    the layers that refuse it.

    It sits just inside CORS, in front of OneAuthorization, StreamRouter and BodyLimit, which
    have nothing to do for a unicast it takes: a body that came in one message within the
    limit is one BodyLimit would have let through as it is.
    """

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node
        self.limit = node.settings.max_body_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function for what it does not take, as StreamRouter: no frame of this layer
        # lives as long as a stream.
        if scope["type"] != "http" or scope["path"] != UNICAST_ROUTE or scope["method"] != "POST":
            return self.app(scope, receive, send)
        return self._unicast(scope, receive, send)

    async def _unicast(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        taken = None
        if message["type"] == "http.request" and not message.get("more_body"):
            body = message.get("body", b"")
            if len(body) <= self.limit:
                taken = self._accept(scope, body)
        if taken is None:
            await self.app(scope, _replay(message, receive), send)
            return
        scope[ROUTE_TEMPLATE] = UNICAST_ROUTE
        request, publisher = taken
        answer = await publish_unicast(self.node, publisher, request)
        await answer.send(send)

    def _accept(self, scope: Scope, body: bytes) -> tuple[UnicastIn, str] | None:
        try:
            # Two Authorization headers raise here, and OneAuthorization, inside, refuses them.
            token = bearer_token(single_authorization(scope["headers"]))
            principal = self.node.auth.verify(token) if token else None
            if principal is None or not principal.is_publisher:
                return None
            return UnicastIn.model_validate_json(body), principal.user_id
        except (AuthError, ValidationError):
            return None


class RelativeRedirects:
    """Every redirect names a path only: Starlette builds its from the client's Host header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = [_relative(k, v) for k, v in message.get("headers", [])]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_relative)


def _relative(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    if name.lower() != b"location":
        return name, value
    parts = urlsplit(value.decode("latin-1"))
    # One leading slash: "//evil.example/", or a backslash browsers read as one, leaves the site.
    path = "/" + parts.path.lstrip("/\\")
    return name, urlunsplit(("", "", path, parts.query, parts.fragment)).encode("latin-1")


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive that hands out first, then reads on from receive."""
    pending: Message | None = first

    async def replay() -> Message:
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        return await receive()

    return replay
