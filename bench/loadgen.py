"""Load-generator processes, driven by the orchestrator over a pipe.

A stream worker holds many open streams and tallies what they receive; a publisher worker
runs N concurrent keep-alive connections publishing unicasts for a fixed time. Each runs in
its own process so its CPU time is read apart from the server's and the orchestrator's.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from array import array
from multiprocessing.connection import Connection
from typing import Any

from bench.client import HttpClient, SSEReader, Tally, stream_request
from bench.proc import cpu_seconds, raise_nofile, run

CTX = mp.get_context("spawn")


def mint_tokens(users: list[str], *, publisher: bool = False) -> list[str]:
    from mercurio.auth import Authenticator
    from mercurio.config import load_settings

    auth = Authenticator(load_settings({"MERCURIO_ENV": "test"}))
    return [auth.mint_token(u, publisher=publisher, ttl=6 * 3600) for u in users]


class Worker:
    """The orchestrator's handle on one load-generator process."""

    def __init__(self, target: Any, *args: Any) -> None:
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def cpu(self) -> float:
        try:
            return cpu_seconds(self.pid)
        except OSError:
            return 0.0

    def send(self, *message: Any) -> None:
        self.conn.send(message)

    async def reply(self, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        if not self.conn.poll():
            ready: asyncio.Future[None] = loop.create_future()
            fd = self.conn.fileno()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            # uvloop makes a watched fd non-blocking; a pickled reply may span many reads.
            os.set_blocking(fd, True)
            try:
                await asyncio.wait_for(ready, timeout)
            finally:
                loop.remove_reader(fd)
        answer = self.conn.recv()
        if isinstance(answer, tuple) and answer and answer[0] == "error":
            raise RuntimeError(f"load generator {self.pid} failed: {answer[1]}")
        return answer

    async def call(self, *message: Any, timeout: float = 120) -> Any:
        self.send(*message)
        return await self.reply(timeout)

    def stop(self) -> None:
        try:
            self.send("exit")
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# -- stream worker ----------------------------------------------------------------------------


def stream_worker(conn: Connection, host: str, port: int) -> None:
    raise_nofile()
    run(_StreamWorker(conn, host, port).main())


class _StreamWorker:
    def __init__(self, conn: Connection, host: str, port: int) -> None:
        self.conn = conn
        self.host = host
        self.port = port
        self.tally = Tally()
        self.readers: list[SSEReader] = []
        self.done: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        loop.add_reader(self.conn.fileno(), self._command)
        os.set_blocking(self.conn.fileno(), True)
        await self.done

    def _command(self) -> None:
        message = self.conn.recv()
        task = asyncio.ensure_future(self._handle(*message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, name: str, *args: Any) -> None:
        try:
            answer = await getattr(self, "do_" + name)(*args)
        except Exception as exc:
            answer = ("error", f"{type(exc).__name__}: {exc}")
        if name == "exit":
            assert self.done is not None
            self.done.set_result(None)
            return
        self.conn.send(answer)

    async def do_exit(self) -> None:
        for reader in self.readers:
            reader.close()

    async def do_open(self, users: list[str], parallel: int = 64) -> dict[str, Any]:
        """Open one stream per user; answer how many opened and how long it took."""
        loop = asyncio.get_running_loop()
        tokens = mint_tokens(users)
        started = time.monotonic()
        gate = asyncio.Semaphore(parallel)
        failures: list[str] = []

        async def one(user: str, token: str) -> None:
            async with gate:
                ready: asyncio.Future[int] = loop.create_future()
                request = stream_request(self.host, self.port, user, token)
                try:
                    _, reader = await loop.create_connection(
                        lambda: SSEReader(self.tally, request, ready), self.host, self.port
                    )
                    status = await asyncio.wait_for(ready, 60)
                except (OSError, TimeoutError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                if status != 200:
                    failures.append(f"HTTP {status}")
                    return
                self.readers.append(reader)

        await asyncio.gather(*(one(u, t) for u, t in zip(users, tokens, strict=True)))
        return {
            "opened": len(users) - len(failures),
            "failed": len(failures),
            "errors": sorted(set(failures))[:5],
            "seconds": time.monotonic() - started,
            "open": self.tally.open,
        }

    async def do_close(self) -> dict[str, int]:
        for reader in self.readers:
            reader.close()
        self.readers.clear()
        for _ in range(200):
            if self.tally.open <= 0:
                break
            await asyncio.sleep(0.01)
        return {"open": self.tally.open}

    async def do_reset(self) -> dict[str, int]:
        self.tally.reset()
        self.tally.lost = 0
        return {"open": self.tally.open, "lost": self.tally.lost}

    async def do_wait(self, expected: int, timeout: float) -> dict[str, Any]:
        """Wait until `expected` stamped frames arrived since the reset (or the timeout)."""
        tally = self.tally
        tally.target = expected
        if tally.frames < expected:
            tally.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(tally.waiter, timeout)
            except TimeoutError:
                pass
            finally:
                tally.waiter = None
        return {
            "frames": tally.frames,
            "first": tally.first,
            "last": tally.last,
            "latencies": tally.latencies,
            "open": tally.open,
            "lost": tally.lost,
        }


# -- publisher worker -------------------------------------------------------------------------


def publisher_worker(conn: Connection, host: str, port: int) -> None:
    raise_nofile()
    while True:
        message = conn.recv()
        if message[0] == "exit":
            return
        try:
            answer = run(_unicast(host, port, *message[1:]))
        except Exception as exc:
            answer = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(answer)


async def _unicast(
    host: str, port: int, users: list[str], concurrency: int, seconds: float, pad: str
) -> dict[str, Any]:
    """`concurrency` connections each publishing back to back for `seconds`."""
    token = mint_tokens(["666"], publisher=True)[0]
    headers = {"authorization": f"Bearer {token}"}
    clients = [HttpClient(host, port, headers) for _ in range(concurrency)]
    for client in clients:
        await client.request("GET", "/")
    latencies = array("d")
    errors: dict[int, int] = {}
    ok_by_user = [0] * len(users)
    counter = [0]
    cpu0 = cpu_seconds()
    started = time.monotonic()
    deadline = started + seconds

    async def loop(client: HttpClient) -> None:
        while time.monotonic() < deadline:
            i = counter[0]
            counter[0] += 1
            t = time.monotonic()
            body = {
                "sourceID": "bench",
                "destinationID": users[i % len(users)],
                "data": {"t": t, "pad": pad},
            }
            status, _ = await client.request("POST", "/api/events/unicast", body)
            if status == 200:
                latencies.append(time.monotonic() - t)
                ok_by_user[i % len(users)] += 1
            else:
                errors[status] = errors.get(status, 0) + 1

    await asyncio.gather(*(loop(c) for c in clients))
    ended = time.monotonic()
    cpu = cpu_seconds() - cpu0
    for client in clients:
        await client.close()
    return {
        "ok": len(latencies),
        "ok_by_user": ok_by_user,
        "errors": errors,
        "latencies": latencies,
        "started": started,
        "ended": ended,
        "cpu": cpu,
    }
