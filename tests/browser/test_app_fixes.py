"""What was seen wrong in /app/ (issue 14, item 4), each with the test named after it, and the
screenshots at 1280 and 375 px, in Chromium against the real server."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import ROOT, ConsoleErrors
from tests.browser.test_web_app import LIVE_TIMEOUT, expect_badge, items, open_inbox
from tests.conftest import ServerProcess

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect

# The pictures in docs/ are rewritten only when asked (MERCURIO_UPDATE_SCREENSHOTS=1), so that
# a test run leaves the checkout as it found it; otherwise they go with the other artifacts.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("MERCURIO_UPDATE_SCREENSHOTS") == "1"
    else ROOT / "tests" / "artifacts"
)
LONG_CATEGORY = "quarterly-shareholder-statements"  # 32 characters, the longest a slug may be
WIDE_CATEGORY = "w" * 32  # and the widest one
LONG_MESSAGE = "\n".join(
    f"Line {i}: your order of the blue ceramic mugs was split into several parcels."
    for i in range(1, 21)
)
# Resolves once the page has stopped scrolling (the bell scrolls smoothly) for 10 frames.
SCROLL_SETTLED = """() => new Promise((resolve) => {
  let last = -1, still = 0;
  const tick = () => {
    still = window.scrollY === last ? still + 1 : 0;
    last = window.scrollY;
    if (still >= 10) resolve(window.scrollY); else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})"""


def phone(browser: Any, console: ConsoleErrors, height: int = 812) -> Any:
    ctx = browser.new_context(
        viewport={"width": 375, "height": height},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    ctx.on("page", console.watch)
    return ctx


def box(page: Any, selector: str) -> dict[str, float]:
    """The element's edges in the viewport (CSS px)."""
    b = page.locator(selector).bounding_box()
    assert b is not None, selector
    return {
        "left": b["x"],
        "right": b["x"] + b["width"],
        "top": b["y"],
        "bottom": b["y"] + b["height"],
    }


def sideways(page: Any) -> list[str]:
    """The outermost elements that stick out past a 375 px page (for a failure's message)."""
    return list(
        page.evaluate("""() => [...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > 375.5
                && !(e.parentElement.getBoundingClientRect().right > 375.5))
            .map((e) => `${e.tagName}.${e.className} ${e.getBoundingClientRect().right}`)""")
    )


def clamped(item: Any) -> bool:
    """Does the message's box cut its text (the clamp), or show all of it?"""
    return bool(item.locator(".item-text").evaluate("(t) => t.scrollHeight > t.clientHeight + 1"))


def dev_token(server: Any, user: str) -> str:
    answer = httpx.post(f"{server.url}/api/dev/token", json={"userID": user})
    return str(answer.json()["token"])


# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_long_message_is_clamped_with_show_more(
    context: Any, server: Any, publisher: Any, console: Any
) -> None:
    publisher.unicast("123", LONG_MESSAGE)
    publisher.unicast("123", "A short one")
    page = open_inbox(context, server)
    long_item = items(page, "Line 1:")
    short_item = items(page, "A short one")
    expect(long_item).to_have_count(1)
    more = long_item.get_by_role("button", name="Show more")
    expect(more).to_be_visible()
    expect(more).to_have_attribute("aria-expanded", "false")
    assert clamped(long_item)
    expect(short_item.locator(".show-more")).to_be_hidden()
    assert not clamped(short_item)

    more.click()
    less = long_item.get_by_role("button", name="Show less")
    expect(less).to_have_attribute("aria-expanded", "true")
    assert not clamped(long_item)
    expect(long_item.locator(".item-text")).to_contain_text("Line 20:")
    # opening the text is not reading it
    expect(long_item).to_have_attribute("data-read", "false")
    expect_badge(page, 2)

    less.click()
    expect(long_item.get_by_role("button", name="Show more")).to_be_visible()
    assert clamped(long_item)
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_at_375px_the_category_select_stays_on_screen(
    browser: Any, server: Any, publisher: Any, console: Any
) -> None:
    publisher.unicast("123", "Your statement is ready", category=LONG_CATEGORY)
    publisher.unicast("123", "Wide, as wide gets", category=WIDE_CATEGORY)
    ctx = phone(browser, console)
    try:
        page = open_inbox(ctx, server)
        expect(page.locator(f"#category-filter option[value='{WIDE_CATEGORY}']")).to_have_count(1)
        select = box(page, "#category-filter")
        assert select["left"] >= 0 and select["right"] <= 375, select
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 375, sideways(page)
        page.locator("#category-filter").select_option(WIDE_CATEGORY)
        expect(items(page)).to_have_count(1, timeout=LIVE_TIMEOUT)
        assert box(page, "#category-filter")["right"] <= 375
        # and the preferences, whose mute table lists it too
        page.locator("#mute-menu summary").click()
        expect(page.get_by_role("switch", name=f"Mute {WIDE_CATEGORY}")).to_be_attached()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 375, sideways(page)
    finally:
        ctx.close()
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_tapping_the_bell_keeps_the_heading_visible(
    browser: Any, server: Any, publisher: Any, console: Any
) -> None:
    for i in range(8):
        publisher.unicast("123", f"Something happened, number {i}")
    ctx = phone(browser, console, height=700)
    try:
        page = open_inbox(ctx, server)
        expect(items(page)).to_have_count(8)
        page.evaluate("() => window.scrollTo(0, document.documentElement.scrollHeight)")
        page.evaluate(SCROLL_SETTLED)
        assert box(page, "#inbox-heading")["bottom"] < 0, "the heading should be scrolled away"
        page.locator("#bell").tap()
        page.evaluate(SCROLL_SETTLED)
        heading = box(page, "#inbox-heading")
        topbar = box(page, ".topbar")
        assert heading["top"] >= topbar["bottom"], (heading, topbar)
        assert heading["bottom"] <= 700
        expect(page.locator("#inbox-heading")).to_be_focused()
    finally:
        ctx.close()
    assert console.app_errors() == []


@pytest.mark.timeout(90)
def test_the_eleventh_stream_says_the_stream_limit_was_hit(
    context: Any, server: Any, publisher: Any, console: Any
) -> None:
    """Ten streams of user 123 are open elsewhere (MERCURIO_MAX_STREAMS_PER_CLIENT is 10): the
    page says the limit was hit instead of "Reconnecting…" forever, lists anyway, and goes
    live once a stream is given back."""
    publisher.unicast("123", "Listed anyway")
    headers = {"Authorization": f"Bearer {dev_token(server, '123')}"}
    url = f"{server.url}/api/clients/123/notifications/stream"
    with httpx.Client(timeout=30) as http, ExitStack() as streams:
        for _ in range(10):
            held = streams.enter_context(http.stream("GET", url, headers=headers))
            assert held.status_code == 200
        page = open_inbox(context, server, wait_live=False)
        expect(items(page, "Listed anyway")).to_have_count(1, timeout=LIVE_TIMEOUT)
        conn = page.locator("#conn")
        expect(conn).to_have_attribute("data-state", "limit", timeout=LIVE_TIMEOUT)
        expect(conn).to_have_text("Stream limit reached")
        status = page.locator("#stream-status")
        expect(status).to_contain_text("Stream limit reached")
        expect(status).to_contain_text("too many open streams: at most 10 per client")
    # the other streams are closed: a later attempt gets one
    expect(conn).to_have_attribute("data-state", "live", timeout=40_000)
    expect(status).to_be_hidden()
    assert [e for e in console.app_errors() if "429" not in e] == []


@pytest.mark.timeout(90)
def test_an_action_while_offline_says_offline_and_keeps_badge_and_item_agreeing(
    context: Any, server: Any, publisher: Any, console: Any
) -> None:
    publisher.unicast("123", "First thing")
    publisher.unicast("123", "Second thing")
    page = open_inbox(context, server)
    expect(items(page)).to_have_count(2)
    expect_badge(page, 2)
    error = page.locator("#inbox-error")

    context.set_offline(True)
    items(page, "First thing").locator(".item-main").click()
    expect(error).to_contain_text("You are offline", timeout=LIVE_TIMEOUT)
    expect(error).not_to_contain_text("Failed to fetch")
    expect(items(page, "First thing")).to_have_attribute("data-read", "false")
    expect_badge(page, 2)

    item = items(page, "Second thing")
    item.get_by_role("button", name="Actions for notification").click()
    item.get_by_role("menuitem", name="Delete").click()
    expect(error).to_contain_text("You are offline: could not delete it")
    expect(items(page, "Second thing")).to_have_count(1)
    expect_badge(page, 2)

    page.get_by_role("button", name="Mark all read").click()
    expect(error).to_contain_text("You are offline: could not mark all read")
    expect(page.locator("#list > li.item.unread")).to_have_count(2)
    expect_badge(page, 2)
    page.wait_for_timeout(600)  # the count refresh after each action fails offline too
    expect_badge(page, 2)

    context.set_offline(False)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    items(page, "First thing").locator(".item-main").click()
    expect(items(page, "First thing")).to_have_attribute("data-read", "true")
    expect_badge(page, 1)
    expect(error).to_be_hidden()
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_a_failed_send_clears_the_old_status_line(context: Any, server: Any, console: Any) -> None:
    page = context.new_page()
    page.goto(f"{server.url}/app/?view=publisher")
    output = page.locator("#pub-output")
    status = page.locator("#pub-status")
    page.get_by_label("Message").fill("This one goes out")
    page.get_by_role("button", name="Send").click()
    expect(output).to_contain_text("/api/events/unicast → 200", timeout=LIVE_TIMEOUT)
    expect(status).to_have_text("Sent.")

    # refused in the page: the last answer is not left standing as if it were this one's
    page.get_by_label("Message").fill("")
    page.get_by_role("button", name="Send").click()
    expect(status).to_have_text("Not sent.")
    expect(output).not_to_contain_text("→ 200")
    expect(output).to_contain_text("Not sent")

    # the server cannot be reached: said as such, not "Failed to fetch"
    page.get_by_label("Message").fill("This one cannot go out")
    page.context.set_offline(True)
    page.get_by_role("button", name="Send").click()
    expect(status).to_contain_text("You are offline", timeout=LIVE_TIMEOUT)
    expect(output).to_contain_text("POST /api/events/unicast failed")
    expect(output).not_to_contain_text("→ 200")
    expect(output).not_to_contain_text("Failed to fetch")
    page.context.set_offline(False)
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_production_does_not_claim_a_development_token(
    context: Any, tmp_path: Path, console: Any
) -> None:
    prod = ServerProcess.in_folder(
        tmp_path,
        {
            "MERCURIO_ENV": "production",
            "MERCURIO_AUTH_PK_TEXT": "a-production-key-of-enough-length-0123456789",
            "MERCURIO_PUSH": "off",
        },
    )
    try:
        prod.start()
    except RuntimeError as exc:
        pytest.skip(f"a production server would not start here: {exc}")
    try:
        page = context.new_page()
        page.goto(f"{prod.url}/app/")
        sub = page.locator("#pub-sub")
        expect(sub).to_contain_text("Not signed in", timeout=LIVE_TIMEOUT)
        expect(sub).to_contain_text("MERCURIO_PUBLISHER_TOKEN")
        body = page.locator("body").inner_text()
        assert "development token" not in body
        assert "publisher 666" not in body
        expect(page.get_by_role("button", name="Send")).to_be_disabled()
    finally:
        prod.stop()
    assert [e for e in console.app_errors() if "404" not in e] == []


@pytest.mark.timeout(90)
def test_screenshots_at_1280_and_375_px(
    browser: Any, context: Any, server: Any, publisher: Any, console: Any
) -> None:
    """app-1280.png and app-375.png (docs/screenshots/ when updating): the app with a few
    notifications."""
    publisher.unicast("123", "Your parcel is out for delivery", category="orders")
    publisher.unicast(
        "123", {"title": "New sign-in", "body": "Chrome on Linux, Berlin"}, category="security"
    )
    publisher.unicast("123", {"title": "Order split", "body": LONG_MESSAGE}, category="orders")
    publisher.unicast("123", "Your statement is ready", category=LONG_CATEGORY)
    publisher.unicast("123", "Anna liked your photo", category="social")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page = open_inbox(context, server)
    expect(items(page)).to_have_count(5)
    items(page, "Anna liked").locator(".item-main").click()
    expect_badge(page, 4)
    page.mouse.move(0, 799)  # no hover highlight in the picture
    page.screenshot(path=str(SCREENSHOTS / "app-1280.png"), animations="disabled")

    ctx = phone(browser, console)
    try:
        mobile = open_inbox(ctx, server)
        expect(items(mobile)).to_have_count(5)
        assert mobile.evaluate("() => document.documentElement.scrollWidth") <= 375
        mobile.screenshot(path=str(SCREENSHOTS / "app-375.png"), animations="disabled")
    finally:
        ctx.close()
    for name in ("app-1280.png", "app-375.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000, name
    assert console.app_errors() == []
