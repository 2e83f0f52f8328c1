"""The ASGI application: FastAPI for the REST routes, a raw endpoint for the stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from mercurio.api import contact, dev, events, notifications, openapi, ops, push, topics
from mercurio.api.deps import RestApp
from mercurio.api.docs import install_docs
from mercurio.api.errors import ERROR_RESPONSES, install_error_handlers
from mercurio.api.layers import (
    BodyLimit,
    CrossOriginOnly,
    FastUnicast,
    OneAuthorization,
    RelativeRedirects,
    RequestContext,
    StreamRouter,
)
from mercurio.api.sdk import SDK_DIR, SdkFiles
from mercurio.config import Settings
from mercurio.node import Node

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
OPENAPI_URL = "/openapi.json"


class DocumentedApp(RestApp):
    """The REST app whose OpenAPI document is completed once, on first request."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            # super() caches FastAPI's document in openapi_schema; complete() edits it there.
            openapi.complete(super().openapi(), self.node.settings.max_destinations)
        return self.openapi_schema or {}


def build_rest_app(node: Node) -> RestApp:
    """The FastAPI application with every REST route."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    docs = node.settings.docs_enabled  # off in production unless MERCURIO_DOCS is on
    app = DocumentedApp(
        node,
        title="Mercurio",
        version="0.1.0",
        summary="Notifications over server-sent events, with an inbox.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # The pages are our own (api.docs): FastAPI's load their scripts from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL if docs else None,
    )
    install_error_handlers(app)
    if docs:
        install_docs(app, OPENAPI_URL)

    @app.get("/", tags=["meta"])
    async def welcome() -> dict[str, str]:
        """The prototype's greeting."""
        return {"message": "Welcome to Mercurio"}

    @app.get("/app", include_in_schema=False)
    async def app_redirect() -> RedirectResponse:
        return RedirectResponse("/app/")

    app.include_router(events.router)
    app.include_router(notifications.router)
    app.include_router(push.router)
    app.include_router(contact.router)
    app.include_router(topics.router)
    app.include_router(dev.router)
    app.include_router(ops.router)
    if STATIC_DIR.is_dir():
        app.mount("/app", StaticFiles(directory=STATIC_DIR, html=True), name="app")
    if SDK_DIR.is_dir():
        app.mount("/sdk", SdkFiles(directory=SDK_DIR), name="sdk")
    return app


def create_app(node: Node, *, fast_unicast: bool = True) -> ASGIApp:
    """The whole service as one ASGI application, outermost layer first.

    RequestContext is outermost, so that every answer (CORS preflights, 413s, streams) is
    logged and tagged. FastUnicast comes next after CORS: what it takes needs none of the
    layers behind it. fast_unicast=False leaves every unicast to the framework route: the
    parity test compares the two.
    """
    settings = node.settings
    rest = RelativeRedirects(build_rest_app(node))
    routed = OneAuthorization(StreamRouter(BodyLimit(rest, settings.max_body_bytes), node))
    publish = FastUnicast(routed, node) if fast_unicast else routed
    return RequestContext(cors(settings, publish), settings.node_id, node.metrics.http)


def cors(settings: Settings, app: ASGIApp) -> ASGIApp:
    """CORS around app for the configured origins; app itself when there are none."""
    origins = settings.cors_origins
    if not origins:
        return app
    return CrossOriginOnly(
        CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=settings.cors_allowed_methods,
            allow_headers=settings.cors_allowed_headers,
            # Any origin never with credentials: every site could then act as the user.
            allow_credentials="*" not in origins,
            expose_headers=["X-Request-ID", "Retry-After"],
        ),
        app,
    )
