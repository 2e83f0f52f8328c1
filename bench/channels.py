"""How many pushes and e-mail digests one node sends per second, to servers on loopback.

    .venv/bin/python -m bench.channels [--users 200] [--rounds 5]

Web Push: `--users` users with one subscription each on the strict mock push service of the
tests (it checks every VAPID signature and decrypts every body, in this process), and
`--rounds` broadcasts to all of them: users x rounds pushes. E-mail: `--users` users with an
address, one broadcast to all of them: one digest each, to aiosmtpd in a thread. Each figure is
from the first publish to the last push or digest received, with the server's CPU seconds for
that span; the mock's and aiosmtpd's own CPU is in this process, on the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench import proc as procstat
from bench.loadgen import mint_tokens
from bench.servers import Server, mercurio_env, stopping
from tests.push_service import MockPushService


class CountingMailbox:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        return "250 OK"


SOURCE: Path | None = None
"""--source: run the server from another tree (before/after)."""


def server(folder: Path, extra: dict[str, str]) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    env = {**mercurio_env(folder, 10_000), **extra}
    command = [sys.executable, "-m", "mercurio", "serve"]
    return Server("mercurio", command, env, folder / "server.log", SOURCE)


async def broadcast(http: httpx.AsyncClient, publisher: str, users: list[str]) -> None:
    body = {"sourceID": "bench", "destinations": users, "data": {"title": "bench", "body": "x"}}
    answer = await http.post(
        "/api/events/broadcast", json=body, headers={"Authorization": f"Bearer {publisher}"}
    )
    answer.raise_for_status()


async def until(done: Any, what: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish in {limit} s")
        await asyncio.sleep(0.01)


async def pushes(folder: Path, users: int, rounds: int) -> dict[str, float]:
    names = [f"push-{i}" for i in range(users)]
    tokens = mint_tokens(names)
    (publisher,) = mint_tokens(["666"], publisher=True)
    async with MockPushService() as service:
        extra = {"MERCURIO_PUSH": "on", "MERCURIO_PUSH_ENDPOINT_HOSTS": "127.0.0.1"}
        with stopping(server(folder / "push", extra)) as node:
            await node.ready()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
                for name, token in zip(names, tokens, strict=True):
                    answer = await http.post(
                        f"/api/clients/{name}/push-subscriptions",
                        json=service.device().subscription_json(),
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    answer.raise_for_status()
                cpu, start = node.cpu(), time.monotonic()
                for _ in range(rounds):
                    await broadcast(http, publisher, names)
                await until(lambda: len(service.received) >= users * rounds, "the pushes")
                seconds, cpu = time.monotonic() - start, node.cpu() - cpu
    sent = users * rounds
    return {"pushes": sent, "pushes_per_s": sent / seconds, "cpu_us_per_push": cpu / sent * 1e6}


async def digests(folder: Path, users: int) -> dict[str, float]:
    names = [f"mail-{i}" for i in range(users)]
    tokens = mint_tokens(names)
    (publisher,) = mint_tokens(["666"], publisher=True)
    mailbox = CountingMailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=procstat.free_port())
    smtp.start()
    try:
        extra = {
            "MERCURIO_PUSH": "off",
            "MERCURIO_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
            "MERCURIO_EMAIL_FROM": "Mercurio <noreply@mercurio.test>",
            "MERCURIO_EMAIL_DELAY": "0",
        }
        with stopping(server(folder / "email", extra)) as node:
            await node.ready()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
                for name, token in zip(names, tokens, strict=True):
                    answer = await http.put(
                        f"/api/clients/{name}/contact",
                        json={"email": f"{name}@example.com"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    answer.raise_for_status()
                cpu, start = node.cpu(), time.monotonic()
                await broadcast(http, publisher, names)
                await until(lambda: mailbox.count >= users, "the digests")
                seconds, cpu = time.monotonic() - start, node.cpu() - cpu
    finally:
        smtp.stop()
    return {
        "digests": users,
        "digests_per_s": users / seconds,
        "cpu_us_per_digest": cpu / users * 1e6,
    }


async def main(users: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mercurio-channels-") as tmp:
        push = await pushes(Path(tmp), users, rounds)
        print(
            f"web push: {push['pushes']:,.0f} pushes, {push['pushes_per_s']:,.0f}/s, "
            f"{push['cpu_us_per_push']:,.0f} µs server CPU each"
        )
        mail = await digests(Path(tmp), users)
        print(
            f"e-mail:   {mail['digests']:,.0f} digests, {mail['digests_per_s']:,.0f}/s, "
            f"{mail['cpu_us_per_digest']:,.0f} µs server CPU each"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--source", type=Path, default=None)
    options = parser.parse_args()
    SOURCE = options.source
    asyncio.run(main(options.users, options.rounds))
