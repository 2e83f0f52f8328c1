"""Run the service on uvicorn, closing open streams when asked to stop."""

from __future__ import annotations

from types import FrameType
from typing import Any

import uvicorn

from mercurio.api.app import create_app
from mercurio.config import Settings


class MercurioServer(uvicorn.Server):
    """uvicorn's server, which also ends every open stream on SIGINT/SIGTERM.

    uvicorn waits for open responses before it runs the lifespan shutdown; an SSE stream never
    ends by itself, so the streams are closed as soon as the signal arrives.
    """

    def __init__(self, config: uvicorn.Config, node: Any) -> None:
        super().__init__(config)
        self.node = node

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.node.hub.close_all("shutdown")
        super().handle_exit(sig, frame)


def build_server(settings: Settings, **uvicorn_options: Any) -> MercurioServer:
    """A configured server for the settings' host and port."""
    app = create_app(settings)
    node = _find_node(app)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        **uvicorn_options,
    )
    return MercurioServer(config, node)


def _find_node(app: Any) -> Any:
    while not hasattr(app, "node"):
        app = app.app
    return app.node


def reload_app() -> Any:
    """The app factory `mercurio serve --reload` hands to uvicorn's reloader."""
    from mercurio.config import load_settings
    from mercurio.logs import configure_logging

    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
