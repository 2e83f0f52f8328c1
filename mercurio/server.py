"""Run the service on uvicorn, closing open streams when asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import structlog
import uvicorn

from mercurio.api.app import create_app
from mercurio.config import Settings
from mercurio.node import Node
from mercurio.protocol import Limits, guarded_protocol
from mercurio.stream import CloseReason

log = structlog.get_logger("mercurio.server")


class MercurioServer(uvicorn.Server):
    """uvicorn's server, which also ends every open stream on SIGINT/SIGTERM.

    uvicorn waits for open responses before it runs the lifespan shutdown; an SSE stream never
    ends by itself, so the streams are closed (with a `retry:` hint) as soon as the signal
    arrives. In-flight publishes finish, then the lifespan drains the store's queue. The whole
    shutdown is bounded by MERCURIO_SHUTDOWN_GRACE.
    """

    def __init__(self, config: uvicorn.Config, node: Node, grace: float = 10.0) -> None:
        super().__init__(config)
        self.node = node
        self.grace = grace

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # This runs inside a signal handler, possibly in the middle of the event loop's own
        # bookkeeping: waking futures here is not safe, so the close is handed to the loop.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.node.hub.close_all(CloseReason.SHUTDOWN)
        else:
            loop.call_soon_threadsafe(self.node.hub.close_all, CloseReason.SHUTDOWN)
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        tune_garbage_collector()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown, lifespan included, cut off after the grace."""
        try:
            await asyncio.wait_for(super().shutdown(sockets), self.grace)
        except TimeoutError:
            log.error("shutdown.grace_exceeded", grace=self.grace)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises a caught signal after shutting down, so the process would end
        # "killed by SIGTERM" (status 143). SIGTERM is how orchestrators ask a service to stop;
        # having stopped cleanly, Mercurio exits 0 instead. SIGINT keeps uvicorn's behaviour.
        if threading.current_thread() is not threading.main_thread():
            with super().capture_signals():
                yield
            return
        previous = signal.signal(signal.SIGTERM, _stopped)
        try:
            with super().capture_signals():
                yield
        finally:
            signal.signal(signal.SIGTERM, previous)


def tune_garbage_collector() -> None:
    """Collect cycles less often: open streams are long-lived and allocation-heavy.

    With 10,000 open streams the default thresholds ran a young collection every 700
    allocations and a full one every few seconds, each walking every stream's objects: 22% of
    the server's CPU in the fan-out benchmark, and the stalls were its p99. What exists at
    start-up is frozen out of collection altogether.
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _stopped(sig: int, frame: FrameType | None) -> None:
    """The SIGTERM uvicorn raises again once the server has shut down: nothing left to do."""


def build_server(
    settings: Settings, *, fast_unicast: bool = True, **uvicorn_options: Any
) -> MercurioServer:
    """A configured server for the settings' host and port (TLS when a certificate is set)."""
    node = Node(settings)
    app = create_app(node, fast_unicast=fast_unicast)
    if settings.ssl_certfile:
        uvicorn_options.setdefault("ssl_certfile", settings.ssl_certfile)
        uvicorn_options.setdefault("ssl_keyfile", settings.ssl_keyfile)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="auto",
        http=guarded_protocol(connection_limits(settings)),
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=connection_wait(settings.shutdown_grace),
        timeout_keep_alive=settings.keep_alive_timeout,
        # The protocol refuses connection max+1 itself, with JSON; uvicorn's own cap (a 503
        # at max+1 requests in flight) is the backstop for pipelined requests.
        limit_concurrency=settings.max_connections + 1,
        **uvicorn_options,
    )
    return MercurioServer(config, node, settings.shutdown_grace)


def connection_limits(settings: Settings) -> Limits:
    """What one connection may send, and how slowly, from the settings."""
    return Limits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
    )


def connection_wait(grace: float) -> int:
    """How long uvicorn waits for open requests: the grace less a second to close the store."""
    return max(1, math.floor(grace) - 1)


def reload_app() -> Any:
    """The app factory `mercurio serve --reload` hands to uvicorn's reloader."""
    from mercurio.config import load_settings
    from mercurio.logs import configure_logging

    settings = load_settings()
    configure_logging(settings)
    return create_app(Node(settings))
