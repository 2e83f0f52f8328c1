"""The ASGI application: FastAPI for the REST routes, a raw endpoint for the stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercurio.api import dev, events, notifications, ops, stream
from mercurio.api.errors import ERROR_RESPONSES, install_error_handlers, send_error
from mercurio.api.fast_unicast import FastUnicast
from mercurio.api.middleware import RequestContext, routes_of
from mercurio.auth import AuthError, single_authorization
from mercurio.config import Settings
from mercurio.node import Node

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"


class BodyLimit:
    """413 for a request body over the limit, whether it declares its length or not.

    Bodies are small (64 KiB by default), so the body is read here in full and handed on;
    the framework never sees a body that is too large.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        scope = _json_by_default(scope)
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
        body: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()

        await self.app(scope, replay, send)


def _json_by_default(scope: Scope) -> Scope:
    """Read a body sent without a JSON content type as JSON, as the prototype did.

    `curl -d` labels bodies as form data; the API only speaks JSON, so the label is corrected
    rather than the request refused.
    """
    if scope["method"] not in ("POST", "PUT", "PATCH"):
        return scope
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    kinds = [v for k, v in scope["headers"] if k == b"content-type"]
    if kinds and b"json" in kinds[0]:
        return scope
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


class OneAuthorization:
    """Two Authorization headers get the same 400 on every route, the stream included.

    Each parser would otherwise pick its own: the first, the last, or the two joined.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                single_authorization(scope["headers"])
            except AuthError as exc:
                await send_error(send, exc.status, exc.message)
                return
        await self.app(scope, receive, send)


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


class Mercurio:
    """Routes the stream to its lean endpoint and everything else to FastAPI."""

    def __init__(self, node: Node, rest: ASGIApp) -> None:
        self.node = node
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = stream.STREAM_PATH.fullmatch(scope["path"])
            if match is not None and scope["method"] != "OPTIONS":
                await stream.handle(self.node, scope, receive, send, match.group(1))
                return
        await self.rest(scope, receive, send)


def build_rest_app(node: Node) -> FastAPI:
    """The FastAPI application with every REST route."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    docs = node.settings.docs_enabled  # off in production unless MERCURIO_DOCS is on
    app = FastAPI(
        title="Mercurio",
        version="0.1.0",
        summary="Notifications over server-sent events, with an inbox.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.node = node
    install_error_handlers(app)

    @app.get("/", tags=["meta"])
    async def welcome() -> dict[str, str]:
        """The prototype's greeting."""
        return {"message": "Welcome to Mercurio"}

    @app.get("/app", include_in_schema=False)
    async def app_redirect() -> RedirectResponse:
        return RedirectResponse("/app/")

    app.include_router(events.router)
    app.include_router(notifications.router)
    app.include_router(dev.router)
    app.include_router(ops.router)
    if STATIC_DIR.is_dir():
        app.mount("/app", StaticFiles(directory=STATIC_DIR, html=True), name="app")
    return app


def create_app(settings: Settings) -> ASGIApp:
    """The whole service as one ASGI application."""
    node = Node(settings)
    rest = build_rest_app(node)
    fast = FastUnicast(
        RelativeRedirects(rest), node, node.publish_budget, node.publish_stats
    )
    app: ASGIApp = OneAuthorization(Mercurio(node, BodyLimit(fast, settings.max_body_bytes)))
    origins = settings.cors_origins
    if origins:
        app = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=settings.cors_allowed_methods,
            allow_headers=settings.cors_allowed_headers,
            # Any origin never with credentials: every site could then act as the user.
            allow_credentials="*" not in origins,
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    # Outermost, so that every answer (CORS preflights, 413s, streams) is logged and tagged.
    return RequestContext(app, settings.node_id, lambda: routes_of(rest))
