"""Nothing spins: an idle server holding 1,000 open streams uses no measurable CPU."""

from __future__ import annotations

import asyncio
import os
import resource

import pytest

from tests.conftest import ServerProcess, make_token

pytestmark = pytest.mark.timeout(120)

STREAMS = 1000


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def open_raw_stream(port: int, user: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/clients/{user}/notifications/stream HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {make_token(user)}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b": connected")
    assert b" 200 " in head.split(b"\r\n", 1)[0]
    return writer


async def test_idle_streams_cost_no_cpu(make_server: type[ServerProcess]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < STREAMS + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for {STREAMS} streams")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, STREAMS + 200), hard))
    server = make_server({"MERCURIO_SSE_HEARTBEAT": "60"})
    assert server.proc is not None
    writers = []
    try:
        for start in range(0, STREAMS, 100):
            writers += await asyncio.gather(
                *(open_raw_stream(server.port, f"idle{i}") for i in range(start, start + 100))
            )
        await asyncio.sleep(0.5)  # let the opening work settle
        before = cpu_seconds(server.proc.pid)
        await asyncio.sleep(3)
        spent = cpu_seconds(server.proc.pid) - before
        # uvicorn's own 10 Hz housekeeping tick costs a few ms; a polling loop per stream
        # would cost far more than this.
        assert spent < 0.1, f"idle server used {spent:.3f} s of CPU in 3 s"
    finally:
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
