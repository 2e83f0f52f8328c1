"""The web app renders any JSON a publisher sends, and says so when the inbox cannot load."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_web_app import LIVE_TIMEOUT, items, open_inbox

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect

XSS = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>"

# Each value carries a marker that its rendered text must contain.
HOSTILE: list[tuple[str, Any]] = [
    ("h-title-tostring", {"title": {"toString": 1, "m": "h-title-tostring"}}),
    ("h-msg-valueof", {"message": {"valueOf": None, "toString": "x", "m": "h-msg-valueof"}}),
    ("h-body-array", {"body": [{"toString": 1}, "h-body-array"]}),
    ("h-top-tostring", {"toString": 1, "valueOf": 2, "m": "h-top-tostring"}),
    ("h-proto", {"__proto__": {"title": 1}, "constructor": {"name": 1}, "m": "h-proto"}),
    ("h-subject-proto", {"subject": {"__proto__": None, "toString": None, "m": "h-subject-proto"}}),
    ("h-tojson", {"text": {"toJSON": 1, "toString": [], "m": "h-tojson"}}),
    ("h-nested", {"title": {"a": {"b": {"c": [1, {"toString": 0}]}}, "m": "h-nested"}}),
    ("h-xss", {"title": XSS, "body": XSS + "h-xss"}),
    ("h-array", [None, True, 1.5, "h-array", {"toString": 1}]),
    ("h-huge", {"text": "h-huge" + "A" * 40_000}),
    ("h-plain-xss", XSS + "h-plain-xss"),
]
HARMLESS = "Harmless notification"


def expect_rendered(page: Any, markers: list[str]) -> None:
    for marker in markers:
        expect(items(page, marker)).to_have_count(1, timeout=LIVE_TIMEOUT)


@pytest.mark.parametrize("transport", ["", "&transport=fetch"], ids=["eventsource", "fetch"])
def test_hostile_notification_data_cannot_break_the_inbox(
    context: Any, server: Any, publisher: Any, console: Any, transport: str
) -> None:
    """Objects with non-callable toString/valueOf (and other odd JSON) used to throw while
    rendering, so the inbox never loaded and stayed on "Reconnecting…"."""
    publisher.unicast("123", HARMLESS)
    for _, data in HOSTILE:
        publisher.unicast("123", data)
    bare: list[Any] = [None, 42, 0, False, [], {}]  # primitives and empties carry no marker
    for value in bare:
        publisher.unicast("123", value)
    page = open_inbox(context, server, extra=transport)
    expect(items(page, HARMLESS)).to_have_count(1)
    expect_rendered(page, [m for m, _ in HOSTILE])
    expect(items(page)).to_have_count(len(HOSTILE) + 7)

    # the same values arriving live must neither break the stream nor hide anything
    for marker, data in HOSTILE[:8]:
        publisher.unicast("123", {"title": data, "body": f"live-{marker}"})
    publisher.unicast("123", "Harmless after the live ones")
    expect(items(page, "Harmless after the live ones")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect_rendered(page, [f"live-{m}" for m, _ in HOSTILE[:8]])
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#conn")).to_have_text("Live")
    expect(page.locator("#inbox-error")).to_be_hidden()

    assert page.evaluate("() => window.__xss") is None  # rendered as text, never as markup
    assert page.locator("#list img, #list script").count() == 0
    assert console.app_errors() == []


def test_failing_inbox_load_shows_an_error_and_backs_off(
    context: Any, server: Any, publisher: Any, console: Any
) -> None:
    """A list route that keeps failing used to leave "Reconnecting…" forever with no cause."""
    publisher.unicast("123", HARMLESS)
    page = context.new_page()
    attempts: list[str] = []

    def fail(route: Any) -> None:
        attempts.append(route.request.url)
        route.fulfill(status=500, json={"error": "the list exploded"})

    page.route(re.compile(r"/api/clients/123/notifications\?"), fail)
    page.goto(f"{server.url}/app/?user=123")

    error = page.locator("#inbox-error")
    expect(error).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(error).to_contain_text("the list exploded")
    expect(error).to_contain_text(re.compile(r"Retrying in \d+ s"))
    expect(page.locator("#conn")).to_have_attribute("data-state", "error")
    expect(page.locator("#conn")).not_to_have_text("Reconnecting…")

    # it retries on its own, but backs off instead of hammering the server
    page.wait_for_timeout(4000)
    assert 2 <= len(attempts) <= 6, attempts
    expect(page.locator("#conn")).to_have_attribute("data-state", "error")

    page.unroute(re.compile(r"/api/clients/123/notifications\?"))
    page.locator("#inbox-retry").click()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    expect(items(page, HARMLESS)).to_have_count(1)
    expect(error).to_be_hidden()
    assert [e for e in console.app_errors() if "500" not in e] == []


def test_one_item_that_fails_to_render_hides_no_other_item(
    context: Any, server: Any, publisher: Any, console: Any
) -> None:
    """Any throw while rendering one item used to abort the whole list load, forever."""
    for text in ("First harmless", "Second harmless", "Third harmless"):
        publisher.unicast("123", text)
    page = context.new_page()
    # formatting the first item's date always throws, as a stand-in for any per-item bug
    page.add_init_script(
        """(() => {
          const original = Date.prototype.toLocaleString;
          let cursed = null;
          Date.prototype.toLocaleString = function (...args) {
            cursed ??= this.getTime();
            if (this.getTime() === cursed) throw new TypeError('renderer bug');
            return original.apply(this, args);
          };
        })();"""
    )
    page.goto(f"{server.url}/app/?user=123")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    expect(items(page)).to_have_count(3)
    expect(items(page, "could not be shown")).to_have_count(1)
    expect(items(page, "harmless")).to_have_count(2)
    expect(page.locator("#inbox-error")).to_be_hidden()
    assert console.app_errors() == []
