"""/healthz and /readyz of real servers, with their database or broker taken away."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from mercurio.api.app import create_app
from mercurio.config import load_settings
from mercurio.node import Node
from tests.conftest import ServerProcess, free_port
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)


async def test_healthz_answers_without_io(api: httpx.AsyncClient) -> None:
    answer = await api.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}
    assert answer.headers["cache-control"] == "no-store"


async def test_readyz_is_ready_with_the_database_up(api: httpx.AsyncClient) -> None:
    answer = await api.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready"}


async def test_probes_are_cheap_enough_to_poll(api: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    for _ in range(20):
        assert (await api.get("/readyz")).status_code == 200
        assert (await api.get("/healthz")).status_code == 200
    # Forty requests over loopback with a SELECT 1 each: far below a second on any machine.
    assert time.perf_counter() - started < 5


async def test_readyz_is_503_before_the_node_started() -> None:
    app = create_app(Node(load_settings({"MERCURIO_ENV": "test"})))  # lifespan never run
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["down"] == {"node": "not started or shutting down"}
    assert alive.status_code == 200


@pytest.mark.postgres
async def test_readyz_names_the_broker_when_mq_is_on_and_it_is_down(
    make_server: Callable[..., ServerProcess], postgres_url: str
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    server = make_server(
        {"MERCURIO_DB_CONN": postgres_url, "MERCURIO_MQ": "on", "MERCURIO_MQ_CONN": nobody}
    )
    async with httpx.AsyncClient(base_url=server.url) as client:
        answer = await client.get("/readyz")
        metrics = await client.get("/metrics")
    assert answer.status_code == 503
    assert answer.json() == {"status": "unavailable", "down": {"broker": "not connected"}}
    assert "mercurio_broker_up 0.0" in metrics.text


@pytest.mark.postgres
async def test_readyz_is_ready_with_the_broker_connected(
    make_server: Callable[..., ServerProcess], postgres_url: str
) -> None:
    server = make_server(
        {"MERCURIO_DB_CONN": postgres_url, "MERCURIO_MQ": "on", "MERCURIO_MQ_CONN": "memory://"}
    )
    async with httpx.AsyncClient(base_url=server.url) as client:
        answer = await client.get("/readyz")
        metrics = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert "mercurio_broker_up 1.0" in metrics.text


class ThreadedProxy:
    """tests.tcp_proxy.TcpProxy on an event loop of its own, in a thread: the server reaches
    the database through it while it starts, when this test's loop is blocked waiting for it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.proxy = TcpProxy(target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _run(self, step: Coroutine[Any, Any, object]) -> None:
        asyncio.run_coroutine_threadsafe(step, self.loop).result(10)

    @property
    def port(self) -> int:
        return self.proxy.port

    def __enter__(self) -> ThreadedProxy:
        self.thread.start()
        self._run(self.proxy.start())
        return self

    def __exit__(self, *_: object) -> None:
        self._run(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def cut(self) -> None:
        self._run(self.proxy.cut())

    def restore(self) -> None:
        self._run(self.proxy.restore())


@pytest.fixture
def proxied_postgres(postgres_url: str) -> Iterator[tuple[ThreadedProxy, str]]:
    parts = urlsplit(postgres_url)
    with ThreadedProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        netloc = parts.netloc.replace(f":{parts.port}", "") if parts.port else parts.netloc
        yield proxy, urlunsplit(parts._replace(netloc=f"{netloc}:{proxy.port}"))


@pytest.mark.postgres
async def test_readyz_names_the_database_while_it_is_unreachable(
    make_server: Callable[..., ServerProcess], proxied_postgres: tuple[ThreadedProxy, str]
) -> None:
    proxy, url = proxied_postgres
    server = make_server({"MERCURIO_DB_CONN": url})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        assert (await client.get("/readyz")).status_code == 200
        proxy.cut()
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json() == {"status": "unavailable", "down": {"database": "unreachable"}}
        assert (await client.get("/healthz")).status_code == 200  # alive, not ready
        proxy.restore()
        deadline = time.monotonic() + 15
        while (await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "readyz did not recover with the database"
            await asyncio.sleep(0.2)
