"""Browser tests for the Mercurio web app (mercurio/web/static), against the real server.

Run:  .venv/bin/python -m pytest tests/browser -q
Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`); the tests are
skipped when it is missing. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess as BaseServer
from tests.conftest import server_files

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DEV_KEY = "that-is-a-super-freaking-secret-key"  # the development HS256 key (auth/dev.key)

NO_CHROMIUM = "browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)"


class ServerProcess(BaseServer):
    """The real `python -m mercurio serve`, restartable on the same port and database."""

    def __init__(self, tmp_path: Path) -> None:
        self.auth_key = DEV_KEY
        super().__init__(
            {
                **server_files(tmp_path),
                "MERCURIO_SSE_HEARTBEAT": "5",
                "MERCURIO_AUTH_PK_TEXT": DEV_KEY,
            }
        )


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
