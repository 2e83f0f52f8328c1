"""`mercurio send` and `mercurio listen` as real processes against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, ServerProcess, bearer, free_port, make_token, new_client_id

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  #(?P<id>\d+)  \[(?P<category>[a-z0-9_-]+)\]  "
    r"from (?P<source>\S+): (?P<data>.*)$"
)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MERCURIO_TOKEN"}
    return {**env, "MERCURIO_ENV": "test", "NO_COLOR": "1", **extra}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mercurio", *args],
        env=cli_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def stored(url: str, client: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/clients/{client}/notifications", headers=bearer(client))
    assert answer.status_code == 200, answer.text
    notes: list[dict[str, Any]] = answer.json()["notifications"]
    return [n for n in notes if n["sourceID"] != "announcer"]


# -- send -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_send_unicast_broadcast_and_announce(announce_server: ServerProcess) -> None:
    server = announce_server
    one, two = new_client_id(), new_client_id()
    done = run_cli("send", "--to", one, "--url", server.url, "hello from the terminal")
    assert done.returncode == 0, done.stderr
    match = re.fullmatch(r"sent #(\d+) to (\S+) \(event (\S+)\)\n", done.stdout)
    assert match and match.group(2) == one
    [note] = stored(server.url, one)
    assert note["notificationID"] == int(match.group(1))
    assert (note["data"], note["category"], note["sourceID"]) == (
        "hello from the terminal",
        "general",
        "666",  # minted as the development publisher
    )
    assert note["eventID"] == match.group(3)

    both = run_cli(
        "send",
        "--to",
        one,
        "--to",
        two,
        "--category",
        "deploys",
        "--json",
        "--id",
        "deploy-42",
        "--url",
        server.url,
        '{"service": "api", "ok": true}',
    )
    assert both.returncode == 0, both.stderr
    lines = both.stdout.splitlines()
    assert [line.split()[3] for line in lines] == [one, two]
    for client in (one, two):
        newest = stored(server.url, client)[0]
        assert newest["data"] == {"service": "api", "ok": True}
        assert (newest["category"], newest["eventID"]) == ("deploys", "deploy-42")

    everyone = run_cli(
        "send", "--all", "--source", "announcer", "--url", server.url, "maintenance at 22:00"
    )
    assert everyone.returncode == 0, everyone.stderr
    assert " to everyone " in everyone.stdout
    newcomer = new_client_id()
    listed = httpx.get(
        f"{server.url}/api/clients/{newcomer}/notifications", headers=bearer(newcomer)
    ).json()["notifications"]
    assert "maintenance at 22:00" in [n["data"] for n in listed]


@pytest.mark.timeout(120)
def test_send_with_ttl_delay_and_collapse_key(server: ServerProcess) -> None:
    client = new_client_id()
    later = run_cli(
        "send", "--to", client, "--delay", "1", "--ttl", "600", "--url", server.url, "soon"
    )
    assert later.returncode == 0, later.stderr
    assert re.fullmatch(
        r"scheduled for \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC to \S+ \(event \S+\)\n", later.stdout
    ), later.stdout
    deadline = time.monotonic() + 20
    while not stored(server.url, client):
        assert time.monotonic() < deadline, "the scheduled notification never came"
        time.sleep(0.1)
    [note] = stored(server.url, client)
    assert note["data"] == "soon" and "expiresAt" in note
    for text in ("v1", "v2"):
        sent = run_cli("send", "--to", client, "--collapse-key", "k1", "--url", server.url, text)
        assert sent.returncode == 0, sent.stderr
    assert [n["data"] for n in stored(server.url, client)] == ["v2", "soon"]
    bad = run_cli("send", "--to", client, "--delay", "0", "--url", server.url, "x")
    assert bad.returncode == 2 and "--delay" in bad.stderr
    refused = run_cli(
        "send", "--to", client, "--collapse-key", "no spaces", "--url", server.url, "x"
    )
    assert refused.returncode != 0 and "collapseKey" in refused.stderr


@pytest.mark.timeout(120)
def test_send_refusals_and_usage_errors(server: ServerProcess) -> None:
    client = new_client_id()
    garbage = run_cli("send", "--to", client, "--url", server.url, "x", MERCURIO_TOKEN="garbage")
    # Reported as what it is, not as a missing --source (the token names no user).
    assert garbage.returncode == 2 and garbage.stderr.startswith("mercurio: bad token: not a JWT")
    assert "MERCURIO_TOKEN" in garbage.stderr and "source" not in garbage.stderr
    garbage = run_cli(
        "send", "--to", client, "--source", "me", "--url", server.url, "x", MERCURIO_TOKEN="garbage"
    )
    assert garbage.returncode == 1
    assert garbage.stderr.startswith("mercurio: bad token (401: ")
    forged = make_token("666", publisher=True)[:-6] + "AAAAAA"  # a JWT, wrongly signed
    refused = run_cli("send", "--to", client, "--url", server.url, "x", MERCURIO_TOKEN=forged)
    assert refused.returncode == 1 and refused.stderr.startswith("mercurio: bad token (401: ")
    not_publisher = run_cli(
        "send", "--to", client, "--url", server.url, "x", MERCURIO_TOKEN=make_token("nobody")
    )
    assert not_publisher.returncode == 1 and "403" in not_publisher.stderr
    bad_json = run_cli("send", "--to", client, "--json", "--url", server.url, "{nope")
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    nobody = run_cli("send", "--url", server.url, "x")
    assert nobody.returncode == 2 and "--to" in nobody.stderr
    production = run_cli(
        "send",
        "--to",
        client,
        "--url",
        server.url,
        "x",
        MERCURIO_ENV="production",
        MERCURIO_AUTH_PK_TEXT="a-production-key-that-is-long-enough-to-be-accepted",
    )
    assert production.returncode == 2 and "MERCURIO_TOKEN" in production.stderr
    assert stored(server.url, client) == []


@pytest.mark.timeout(120)
def test_send_says_what_it_waits_for_while_the_server_is_away() -> None:
    away = f"http://127.0.0.1:{free_port()}"
    result = run_cli("send", "--to", "123", "--url", away, "x")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    waits = [line for line in lines if line.startswith("· cannot reach ")]
    assert len(waits) == 5  # before each of the 5 retries of 6 attempts
    assert f"{away}/api/events/unicast" in waits[0] and "retrying in" in waits[0]
    assert "attempt 2 of 6" in waits[0] and "attempt 6 of 6" in waits[-1]
    assert lines[-1].startswith("mercurio: cannot reach") and "gave up after 6" in lines[-1]


@pytest.mark.timeout(120)
def test_send_and_listen_trust_a_custom_ca(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ServerProcess.in_folder(
        tmp_path,
        {"MERCURIO_SSL_CERTFILE": str(certfile), "MERCURIO_SSL_KEYFILE": str(keyfile)},
        tls=ssl.create_default_context(cafile=str(ca_file)),
    ).start()
    try:
        client = new_client_id()
        sent = run_cli("send", "--to", client, "--url", tls.url, "--cacert", str(ca_file), "hi")
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("sent #")
        by_env = run_cli(
            "send", "--to", client, "--url", tls.url, "again", MERCURIO_CACERT=str(ca_file)
        )
        assert by_env.returncode == 0, by_env.stderr
        untrusted = run_cli("send", "--to", client, "--url", tls.url, "no")
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        missing = run_cli("send", "--to", client, "--url", tls.url, "--cacert", "/nope.pem", "x")
        assert missing.returncode == 2 and "--cacert /nope.pem" in missing.stderr
    finally:
        tls.stop()


# -- listen ---------------------------------------------------------------------------------


class Listener:
    """A running `mercurio listen`; its stdout and stderr lines are gathered as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: asyncio.Queue[str] = asyncio.Queue()
        self.err: list[str] = []
        self.readers = [
            asyncio.create_task(self._read(proc.stdout, self.out.put_nowait)),
            asyncio.create_task(self._read(proc.stderr, self.err.append)),
        ]

    @staticmethod
    async def _read(stream: asyncio.StreamReader | None, sink: Callable[[str], None]) -> None:
        assert stream is not None
        while line := await stream.readline():
            sink(line.decode().rstrip("\n"))

    async def line(self, timeout: float = 20) -> str:
        return await asyncio.wait_for(self.out.get(), timeout)

    async def stderr_has(self, text: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while sum(text in line for line in self.err) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on stderr: {self.err}")
            if self.proc.returncode is not None:
                raise AssertionError(f"listen exited {self.proc.returncode}: {self.err}")
            await asyncio.sleep(0.05)

    def lines_so_far(self) -> list[str]:
        out = []
        while not self.out.empty():
            out.append(self.out.get_nowait())
        return out


@contextlib.asynccontextmanager
async def listening(*args: str, **env: str) -> AsyncIterator[Listener]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mercurio",
        "listen",
        *args,
        env=cli_env(**env),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    listener = Listener(proc)
    try:
        yield listener
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(*listener.readers)


def publish(url: str, client: str, data: str, category: str = "general") -> int:
    answer = httpx.post(
        f"{url}/api/events/unicast",
        json={"sourceID": "666", "destinationID": client, "data": data, "category": category},
        headers=bearer("666", publisher=True),
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


@pytest.mark.timeout(120)
async def test_listen_prints_one_line_per_notification(server: ServerProcess) -> None:
    client = new_client_id()
    async with listening("--user", client, "--url", server.url) as listener:
        await listener.stderr_has("connected")
        first = await asyncio.to_thread(publish, server.url, client, "hello\nworld", "news")
        second = await asyncio.to_thread(publish, server.url, client, "second")
        lines = [await listener.line(), await listener.line()]
        parsed = [LINE.fullmatch(line) for line in lines]
        assert all(parsed), lines
        assert [(int(m["id"]), m["category"], m["source"], m["data"]) for m in parsed if m] == [
            (first, "news", "666", "hello\\nworld"),  # one line, even for multi-line data
            (second, "general", "666", "second"),
        ]
        read = await asyncio.to_thread(
            httpx.put,
            f"{server.url}/api/clients/{client}/notifications/{first}/read",
            headers=bearer(client),
        )
        assert read.status_code == 200
        await listener.stderr_has(f"#{first} read elsewhere")
    assert listener.proc.returncode == 0  # Ctrl-C is the normal way out
    assert listener.lines_so_far() == []


@pytest.mark.timeout(150)
async def test_listen_reconnects_across_a_server_restart(
    make_server: Callable[..., ServerProcess],
) -> None:
    port = free_port()
    env = {"MERCURIO_SSE_RETRY_MS": "200"}
    target = make_server(env, port=port)
    client = new_client_id()
    async with listening("--user", client, "--url", target.url) as listener:
        await listener.stderr_has("connected")
        before = await asyncio.to_thread(publish, target.url, client, "before")
        assert LINE.fullmatch(await listener.line())["id"] == str(before)  # type: ignore[index]
        await asyncio.to_thread(target.stop)
        await listener.stderr_has("reconnecting")
        await asyncio.to_thread(make_server, env, port=port)
        after = [
            await asyncio.to_thread(publish, target.url, client, f"after {i}") for i in range(2)
        ]
        got = [await listener.line(30), await listener.line(30)]
        assert [LINE.fullmatch(line)["id"] for line in got] == [str(n) for n in after]  # type: ignore[index]
        await listener.stderr_has("connected", count=2)
        await asyncio.sleep(0.5)
        assert listener.lines_so_far() == []  # nothing twice


@pytest.mark.timeout(120)
async def test_listen_with_an_expiring_token_says_so(server: ServerProcess) -> None:
    client = new_client_id()
    token = make_token(client, ttl=2)
    async with listening("--user", client, "--url", server.url, MERCURIO_TOKEN=token) as listener:
        await listener.stderr_has("connected")
        await asyncio.wait_for(listener.proc.wait(), 20)
        await asyncio.gather(*listener.readers)
    assert listener.proc.returncode == 1
    assert any("token expired" in line for line in listener.err)


@pytest.mark.timeout(120)
async def test_listen_refused_token_exits_with_the_servers_message(server: ServerProcess) -> None:
    other = make_token("someone-else")
    async with listening(
        "--user", new_client_id(), "--url", server.url, MERCURIO_TOKEN=other
    ) as listener:
        await asyncio.wait_for(listener.proc.wait(), 30)
        await asyncio.gather(*listener.readers)
    assert listener.proc.returncode == 1
    assert any(line.startswith("mercurio: 403: ") for line in listener.err), listener.err


@pytest.mark.timeout(60)
async def test_listen_says_what_it_waits_for_and_calls_a_bad_token_a_bad_token(
    server: ServerProcess,
) -> None:
    client = new_client_id()
    async with listening("--user", client, "--url", server.url) as listener:
        await listener.stderr_has(f"connecting to {server.url} for user {client}")
        await listener.stderr_has(f"waiting for user {client}'s notifications")
    forged = make_token(client)[:-6] + "AAAAAA"
    async with listening("--user", client, "--url", server.url, MERCURIO_TOKEN=forged) as bad:
        await asyncio.wait_for(bad.proc.wait(), 30)
        await asyncio.gather(*bad.readers)
    assert bad.proc.returncode == 1
    assert any(line.startswith("mercurio: bad token (401: ") for line in bad.err), bad.err
    async with listening("--user", client, "--url", server.url, MERCURIO_TOKEN="x") as junk:
        await asyncio.wait_for(junk.proc.wait(), 30)
        await asyncio.gather(*junk.readers)
    assert junk.proc.returncode == 2
    assert any(line.startswith("mercurio: bad token: not a JWT") for line in junk.err), junk.err
