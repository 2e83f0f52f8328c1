"""The unicast fast path and the framework route answer alike, byte for byte.

Two real servers on fresh databases of their own, sent the same requests in the same order:
`python -m mercurio serve`, whose FastUnicast layer takes valid publishes, and one built by
build_server(fast_unicast=False), where every unicast goes through FastAPI's route. A hidden
setting would have been one more knob for users to find; the switch is a keyword of the
composition root instead, and the second server runs the same code in its own process.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from mercurio.api.layers import BodyLimit, FastUnicast
from mercurio.config import load_settings
from mercurio.node import Node
from tests.conftest import ROOT, ServerProcess, bearer

FRAMEWORK_ONLY = (
    "from mercurio.config import load_settings\n"
    "from mercurio.logs import configure_logging\n"
    "from mercurio.server import build_server\n"
    "settings = load_settings()\n"
    "configure_logging(settings)\n"
    "build_server(settings, fast_unicast=False).run()\n"
)
# Three rows for the publisher, refilled one per 1000 s: its fourth publish is a 429 whose
# Retry-After (ceil of about 1000 s) both servers compute alike.
BUDGET = {"MERCURIO_PUBLISH_ROW_BURST": "3", "MERCURIO_PUBLISH_ROW_RATE": "0.001"}
PUBLISHER = bearer("parity-publisher", publisher=True)
REQUEST_ID = {"X-Request-ID": "parity"}  # echoed: the same on both sides


class FrameworkServer(ServerProcess):
    """A server whose unicasts all go through the FastAPI route."""

    def start(self) -> ServerProcess:
        env = {
            **os.environ,
            "MERCURIO_ENV": "test",
            "MERCURIO_HTTP_HOST": "127.0.0.1",
            "MERCURIO_HTTP_PORT": str(self.port),
            **self.env,
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", FRAMEWORK_ONLY],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start in 30 s")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    fast_folder = tmp_path_factory.mktemp("fast")
    framework_folder = tmp_path_factory.mktemp("framework")
    fast = ServerProcess.in_folder(fast_folder, BUDGET).start()
    try:
        framework = FrameworkServer.in_folder(framework_folder, BUDGET).start()
    except BaseException:
        fast.stop()
        raise
    yield fast.url, framework.url
    framework.stop()
    fast.stop()


def unicast(event_id: str, data: object = "hello", **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"id": event_id, "sourceID": "parity", "destinationID": "u1"}
    return {**body, "data": data, **extra}


# (name, headers, body): sent in this order to both servers. The publisher's three rows go to
# the first three; the 429 comes after them, and the refusals between spend no rows.
CASES: list[tuple[str, dict[str, str], bytes | dict[str, object]]] = [
    ("valid", PUBLISHER, unicast("e1")),
    ("idempotent repeat", PUBLISHER, unicast("e1")),
    ("conflict", PUBLISHER, unicast("e1", "other content")),
    ("NaN", PUBLISHER, b'{"sourceID": "parity", "destinationID": "u1", "data": NaN}'),
    ("NUL", PUBLISHER, unicast("e2", "a\u0000b")),
    ("unknown field", PUBLISHER, unicast("e3", colour="red")),
    ("announce by unicast", PUBLISHER, {**unicast("e4"), "destinationID": "*"}),
    ("not JSON", PUBLISHER, b"{not json"),
    ("no token", {}, unicast("e5")),
    ("bad token", {"Authorization": "Bearer not-a-token"}, unicast("e6")),
    ("user token", bearer("u1"), unicast("e7")),
    ("over the row budget", PUBLISHER, unicast("e8")),
]


def answer_of(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k, v) for k, v in response.headers.multi_items() if k != "date")
    return response.status_code, headers, response.content


def test_fast_path_and_framework_route_answer_alike(servers: tuple[str, str]) -> None:
    answers: list[list[tuple[int, list[tuple[str, str]], bytes]]] = []
    for url in servers:
        with httpx.Client(base_url=url, timeout=10) as client:
            answers.append([send(client, headers, body) for _, headers, body in CASES])
    fast, framework = answers
    for (name, _, _), one, other in zip(CASES, fast, framework, strict=True):
        assert one == other, name
    statuses = [status for status, _, _ in fast]
    assert statuses == [200, 200, 409, 422, 422, 422, 422, 400, 401, 401, 403, 429]
    retry = dict(fast[-1][1])["retry-after"]
    assert math.isclose(int(retry), 1000, abs_tol=1), retry


def send(
    client: httpx.Client, headers: dict[str, str], body: bytes | dict[str, object]
) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = {**headers, **REQUEST_ID}
    if isinstance(body, bytes):
        response = client.post("/api/events/unicast", content=body, headers=headers)
    else:
        response = client.post("/api/events/unicast", json=body, headers=headers)
    return answer_of(response)


async def test_the_fast_path_takes_valid_publishes_and_hands_on_the_rest(tmp_path: Path) -> None:
    """Without this the parity test could be comparing the framework route with itself."""
    db = f"sqlite:///{tmp_path}/fast.db"
    node = Node(load_settings({"MERCURIO_ENV": "test", "MERCURIO_DB_CONN": db}))
    handed_on: list[str] = []

    async def framework(scope: Scope, receive: Receive, send: Send) -> None:
        handed_on.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    # BodyLimit in front, as in create_app: it hands FastUnicast the whole body at once.
    transport = httpx.ASGITransport(app=BodyLimit(FastUnicast(framework, node), 65536))
    await node.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            taken = await client.post("/api/events/unicast", json=unicast("e1"), headers=PUBLISHER)
            assert taken.status_code == 200 and handed_on == []
            user = await client.post(
                "/api/events/unicast", json=unicast("e2"), headers=bearer("u1")
            )
            assert user.status_code == 299 and handed_on == ["/api/events/unicast"]
    finally:
        await node.stop()
