"""Browser tests for the Mercurio web app (mercurio/web/static), against the real server.

Run:  .venv/bin/python -m pytest tests/browser -q
Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`); the tests are
skipped when it is missing. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DEV_KEY = "that-is-a-super-freaking-secret-key"  # the development HS256 key (auth/dev.key)

NO_CHROMIUM = "browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The real `python -m mercurio serve`, restartable on the same port and database."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp_path / "mercurio.db"
        self.log_path = tmp_path / "server.log"
        self.auth_key = DEV_KEY
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ)
        env.update(
            MERCURIO_ENV="test",
            MERCURIO_DB_CONN=f"sqlite:///{self.db}",
            MERCURIO_SSE_HEARTBEAT="5",
            MERCURIO_AUTH_PK_TEXT=self.auth_key,
        )
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mercurio",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer GET / within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


class Publisher:
    """Publishes over HTTP with a development publisher token."""

    def __init__(self, url: str) -> None:
        self.url = url
        token = httpx.post(
            f"{url}/api/dev/token", json={"userID": "666", "publisher": True}
        ).json()["token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def unicast(self, dest: str, data: Any, category: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"sourceID": "tests", "destinationID": dest, "data": data}
        if category:
            body["category"] = category
        r = httpx.post(f"{self.url}/api/events/unicast", json=body, headers=self.headers)
        r.raise_for_status()
        return r.json()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def publisher(server: ServerProcess) -> Publisher:
    return Publisher(server.url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield b
        finally:
            b.close()


class ConsoleErrors:
    """Collects console errors and uncaught exceptions of every page it watches."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on(
            "console",
            lambda m: (
                self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        return page

    def app_errors(self) -> list[str]:
        """Errors raised by the app, without the browser's own network lines, which are
        expected while a test has the server down on purpose."""
        return [
            e for e in self.errors if "Failed to load resource" not in e and "net::ERR_" not in e
        ]


@pytest.fixture
def console() -> ConsoleErrors:
    return ConsoleErrors()


@pytest.fixture
def context(browser: Any, console: ConsoleErrors) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.on("page", console.watch)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def shot() -> Any:
    """shot(page, name): save a screenshot into tests/artifacts/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        return path

    return take
