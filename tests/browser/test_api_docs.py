"""/docs and /redoc render in Chromium with no network beyond the server itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import ConsoleErrors, ServerProcess

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect

RENDER_TIMEOUT = 20_000  # ms


def offline_page(context: Any) -> tuple[Any, list[str]]:
    """A page whose requests to anywhere but 127.0.0.1 are recorded and refused."""
    elsewhere: list[str] = []

    def gate(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    return context.new_page(), elsewhere


def csp_violations(page: Any) -> Any:
    """The page's securitypolicyviolation events, as recorded by the page itself."""
    return page.evaluate("window.__violations || []")


WATCH_CSP = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', e =>
    window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def test_swagger_ui_renders_every_operation_offline(
    context: Any, server: ServerProcess, console: ConsoleErrors, shot: Any
) -> None:
    context.add_init_script(WATCH_CSP)
    page, elsewhere = offline_page(context)
    answer = page.goto(f"{server.url}/docs")
    assert answer is not None and answer.status == 200
    assert "script-src 'self' 'sha256-" in answer.headers["content-security-policy"]
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible(timeout=RENDER_TIMEOUT)
    assert operations.count() >= 20
    stream = page.locator(".opblock-get .opblock-summary-path", has_text="/notifications/stream")
    expect(stream.first).to_be_visible()
    expect(page.locator(".btn.authorize")).to_be_visible()  # the bearer scheme
    shot(page, "api-docs-swagger")
    assert elsewhere == []
    assert csp_violations(page) == []
    assert console.errors == []


def test_redoc_renders_offline(context: Any, server: ServerProcess, console: ConsoleErrors) -> None:
    context.add_init_script(WATCH_CSP)
    page, elsewhere = offline_page(context)
    answer = page.goto(f"{server.url}/redoc")
    assert answer is not None and answer.status == 200
    expect(page.get_by_text("Stream", exact=True).first).to_be_attached(timeout=RENDER_TIMEOUT)
    expect(page.locator("h1").first).to_contain_text("Mercurio")
    assert elsewhere == []
    # ReDoc's "powered by" badge is an image on its CDN: the policy keeps it from loading.
    assert [v for v in csp_violations(page) if "cdn.redoc.ly" not in v] == []
    assert [e for e in console.errors if "cdn.redoc.ly" not in e] == []
