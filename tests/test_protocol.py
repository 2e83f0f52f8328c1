"""Connection limits at the server: header and URL size, header and body time, connection cap.

Raw sockets against a real server process: these limits act before any HTTP client library
would let a test misbehave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from mercurio.protocol import OneWriteCycle
from tests.conftest import ServerProcess, rss_kib

pytestmark = pytest.mark.timeout(60)


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head, answer[:300]
    return int(head.split(b" ")[1]), json.loads(body)["error"]


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send until the server stops taking it (it closes once it has refused)."""
    view = memoryview(data)
    try:
        while view:
            sent = sock.send(view[:65536])
            view = view[sent:]
    except OSError:
        pass


def test_huge_header_is_refused_431_without_growing_server_memory(
    make_server: type[ServerProcess],
) -> None:
    server = make_server()
    assert server.proc is not None
    before = rss_kib(server.proc.pid)
    sock = connect(server)
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n"
    sender = threading.Thread(target=send_quietly, args=(sock, big))
    sender.start()
    answer = read_all(sock)
    sender.join(30)
    sock.close()
    status, error = status_and_error(answer)
    assert status == 431 and "header" in error
    growth_mib = (rss_kib(server.proc.pid) - before) / 1024
    assert growth_mib < 4, f"server grew {growth_mib:.1f} MiB for an 8 MiB header"


def test_many_small_headers_over_the_limit_are_refused_431(
    make_server: type[ServerProcess],
) -> None:
    server = make_server({"MERCURIO_MAX_HEADER_BYTES": "4096"})
    sock = connect(server)
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(60))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    status, _ = status_and_error(read_all(sock))
    sock.close()
    assert status == 431


def test_long_url_is_refused_414(make_server: type[ServerProcess]) -> None:
    server = make_server()
    sock = connect(server)
    sock.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, error = status_and_error(read_all(sock))
    sock.close()
    assert status == 414 and "URL" in error


def test_headers_that_never_finish_get_408_and_close(make_server: type[ServerProcess]) -> None:
    server = make_server({"MERCURIO_HEADER_TIMEOUT": "1"})
    trickler, silent = connect(server), connect(server)
    trickler.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    answer = b""
    trickler.settimeout(0.2)
    while time.monotonic() - started < 15:
        try:
            trickler.sendall(b"X-Slow: 1\r\n")  # one header line at a time, never the end
            chunk = trickler.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
    trickler.close()
    assert status_and_error(answer)[0] == 408
    assert time.monotonic() - started < 10, "the trickling connection was held open"
    # A connection that never sends a byte is closed the same way.
    assert status_and_error(read_all(silent))[0] == 408
    silent.close()


def test_body_that_never_arrives_gets_408(make_server: type[ServerProcess]) -> None:
    server = make_server({"MERCURIO_BODY_TIMEOUT": "1"})
    sock = connect(server)
    sock.sendall(
        b"POST /api/events/unicast HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b'content-length: 1000\r\n\r\n{"sourceID":'
    )
    status, error = status_and_error(read_all(sock))
    sock.close()
    assert status == 408 and "body" in error


def test_connections_beyond_the_cap_get_503(make_server: type[ServerProcess]) -> None:
    server = make_server({"MERCURIO_MAX_CONNECTIONS": "5"})
    held = [connect(server) for _ in range(5)]
    time.sleep(0.3)  # let the server accept them all
    extra = connect(server)
    extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _ = status_and_error(read_all(extra))
    extra.close()
    assert status == 503
    for sock in held:
        sock.close()
    time.sleep(0.3)
    again = connect(server)
    again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert read_all(again).startswith(b"HTTP/1.1 200")
    again.close()


def test_keep_alive_requests_still_work_on_one_connection(
    make_server: type[ServerProcess],
) -> None:
    server = make_server({"MERCURIO_HEADER_TIMEOUT": "1"})
    sock = connect(server)
    for _ in range(3):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
        time.sleep(1.5)  # longer than the header timeout: idle between requests is not slow
    sock.close()


class _Transport:
    """Records each write, as the socket would see it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _answer(headers: list[tuple[bytes, bytes]], bodies: list[bytes]) -> list[bytes]:
    transport = _Transport()
    cycle = OneWriteCycle(
        scope={"type": "http", "method": "POST"},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
    for i, body in enumerate(bodies):
        more = i < len(bodies) - 1
        await cycle.send({"type": "http.response.body", "body": body, "more_body": more})
    return transport.writes


async def test_an_answer_of_known_length_leaves_in_one_write() -> None:
    """Head and body as one send(): each loopback send costs the server kernel time."""
    writes = await _answer([(b"content-length", b"2")], [b"{}"])
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n{}")


async def test_a_streamed_answer_sends_its_head_at_once() -> None:
    """An SSE client must see the head before the first event, however long that takes."""
    transport_writes = await _answer([(b"content-type", b"text/event-stream")], [])
    assert len(transport_writes) == 1 and transport_writes[0].startswith(b"HTTP/1.1 200 OK")
    assert b"transfer-encoding: chunked" in transport_writes[0]
