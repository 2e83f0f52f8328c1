"""End-to-end tests of the notification centre in Chromium, against the real server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect

LIVE_TIMEOUT = 20_000  # ms: generous waits, never wall-clock assertions
UNREAD = re.compile(r"\bunread\b")


def open_inbox(
    context: Any, server: Any, user: str = "123", extra: str = "", wait_live: bool = True
) -> Any:
    page = context.new_page()
    page.goto(f"{server.url}/app/?user={user}{extra}")
    if wait_live:
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    return page


def items(page: Any, text: str | None = None) -> Any:
    loc = page.locator("#list > li.item")
    return loc.filter(has_text=text) if text else loc


def expect_badge(page: Any, n: int) -> None:
    badge = page.locator("#unread-badge")
    if n == 0:
        expect(badge).to_be_hidden(timeout=LIVE_TIMEOUT)
        expect(badge).to_have_attribute("aria-label", "No unread notifications")
    else:
        expect(badge).to_have_text(str(n), timeout=LIVE_TIMEOUT)
        label = f"{n} unread notification" + ("" if n == 1 else "s")
        expect(badge).to_have_attribute("aria-label", label)


class StreamCounter:
    """Counts the stream requests a browser context holds open (EventSource or fetch)."""

    def __init__(self, context: Any) -> None:
        self._open: dict[Any, Any] = {}
        self.started = 0
        context.on("request", self._start)
        context.on("requestfinished", self._end)
        context.on("requestfailed", self._end)

    @staticmethod
    def _is_stream(request: Any) -> bool:
        return "/notifications/stream" in request.url

    def _start(self, request: Any) -> None:
        if self._is_stream(request):
            self.started += 1
            self._open[request] = request.frame.page

    def _end(self, request: Any) -> None:
        self._open.pop(request, None)

    @property
    def open(self) -> list[Any]:
        """Stream requests still open, in pages still open (a closed page ends its requests)."""
        return [r for r, page in self._open.items() if not page.is_closed()]


def leaders(pages: list[Any]) -> list[Any]:
    return [p for p in pages if p.evaluate("() => window.__mercurio.isLeader")]


# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_publisher_console_to_inbox(context: Any, server: Any, console: Any, shot: Any) -> None:
    """(a) user 123 and the publisher console in two pages: what is published appears live."""
    inbox = open_inbox(context, server, extra="&view=inbox")
    expect(inbox.locator("#empty")).to_be_visible()
    expect_badge(inbox, 0)
    shot(inbox, "a1-inbox-empty")

    pub = context.new_page()
    pub.goto(f"{server.url}/app/?view=publisher")
    pub.get_by_label("Recipient user id").fill("123")
    pub.locator("#pub-category").fill("billing")
    pub.get_by_label("Message").fill("Your invoice #42 is ready")
    pub.get_by_role("button", name="Send").click()
    expect(pub.locator("#pub-output")).to_contain_text("200", timeout=LIVE_TIMEOUT)
    expect(pub.locator("#pub-output")).to_contain_text("notificationID")
    shot(pub, "a2-publisher-sent")

    item = items(inbox, "Your invoice #42 is ready")
    expect(item).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(item.locator(".chip")).to_have_text("billing")
    expect(item.locator(".item-time")).to_have_text("just now")
    expect(item).to_have_class(UNREAD)
    expect_badge(inbox, 1)

    # JSON mode: invalid JSON is refused in the page, valid JSON is sent and rendered
    pub.get_by_role("switch", name="JSON").check()
    pub.get_by_label("Message").fill('{"title": "Deploy finished", body: oops}')
    pub.get_by_role("button", name="Send").click()
    expect(pub.locator("#pub-data-error")).to_contain_text("Invalid JSON")
    expect(pub.get_by_label("Message")).to_have_attribute("aria-invalid", "true")
    shot(pub, "a3-publisher-invalid-json")
    pub.get_by_label("Message").fill('{"title": "Deploy finished", "body": "v2.3 is live"}')
    pub.locator("#pub-category").fill("system")
    pub.get_by_role("button", name="Send").click()
    expect(items(inbox, "Deploy finished")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(items(inbox, "Deploy finished").locator(".item-text")).to_have_text("v2.3 is live")
    expect_badge(inbox, 2)

    # broadcast to a list, and an announcement to everyone
    pub.get_by_role("switch", name="JSON").uncheck()
    pub.get_by_role("radio", name="A list").check()
    pub.get_by_label("Recipient user ids").fill("123, 456")
    pub.locator("#pub-category").fill("social")
    pub.get_by_label("Message").fill("Team lunch at noon")
    pub.get_by_role("button", name="Send").click()
    expect(pub.locator("#pub-output")).to_contain_text(
        "/api/events/broadcast → 200", timeout=LIVE_TIMEOUT
    )
    answer = json.loads(pub.locator("#pub-output").inner_text().split("\n", 1)[1])
    assert isinstance(answer, list) and len(answer) == 2
    pub.get_by_role("radio", name="Everyone").check()
    expect(pub.get_by_label("Recipient user ids")).to_be_hidden()
    pub.locator("#pub-category").fill("")
    pub.get_by_label("Message").fill("Maintenance tonight 22:00 UTC")
    pub.get_by_role("button", name="Announce to everyone").click()
    expect(pub.locator("#pub-output")).to_contain_text(
        "/api/events/announce → 200", timeout=LIVE_TIMEOUT
    )

    expect(items(inbox, "Team lunch at noon")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(items(inbox, "Maintenance tonight")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect_badge(inbox, 4)
    # newest first
    expect(items(inbox).first).to_contain_text("Maintenance tonight")
    expect(items(inbox).last).to_contain_text("Your invoice #42")
    shot(inbox, "a4-inbox-live")
    shot(pub, "a5-publisher-announce")

    # the same page also works with both panels (the default view)
    both = open_inbox(context, server)
    expect(items(both)).to_have_count(4)
    shot(both, "a6-desktop-both-panels")
    assert console.app_errors() == []


@pytest.mark.timeout(90)
def test_mark_read_syncs_tabs_and_devices(
    browser: Any, context: Any, server: Any, publisher: Any, console: Any, shot: Any
) -> None:
    """(b) marking read in one tab drops the badge in the others (same browser and another one)."""
    for i in range(3):
        publisher.unicast("123", f"Message number {i}", category="general" if i else "security")

    tab1 = open_inbox(context, server)
    tab2 = open_inbox(context, server)
    other_ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    other_ctx.on("page", console.watch)
    try:
        device2 = open_inbox(other_ctx, server)
        for page in (tab1, tab2, device2):
            expect(items(page)).to_have_count(3)
            expect_badge(page, 3)

        # click an item: marked read here, the badge drops everywhere
        items(tab1, "Message number 1").locator(".item-main").click()
        expect(items(tab1, "Message number 1")).not_to_have_class(UNREAD)
        for page in (tab1, tab2, device2):
            expect_badge(page, 2)
        expect(items(tab2, "Message number 1")).to_have_attribute(
            "data-read", "true", timeout=LIVE_TIMEOUT
        )
        shot(tab2, "b1-second-tab-after-read")

        # the per-item menu: mark unread, then delete
        item = items(tab2, "Message number 1")
        item.get_by_role("button", name="Actions for notification").click()
        expect(item.get_by_role("menuitem", name="Mark as unread")).to_be_visible()
        shot(tab2, "b2-item-menu-open")
        item.get_by_role("menuitem", name="Mark as unread").click()
        for page in (tab1, tab2, device2):
            expect_badge(page, 3)

        item = items(device2, "Message number 0")
        item.get_by_role("button", name="Actions for notification").click()
        item.get_by_role("menuitem", name="Delete").click()
        for page in (tab1, tab2, device2):
            expect(items(page, "Message number 0")).to_have_count(0, timeout=LIVE_TIMEOUT)
            expect_badge(page, 2)

        # mark all read
        tab2.get_by_role("button", name="Mark all read").click()
        for page in (tab1, tab2, device2):
            expect_badge(page, 0)
            expect(page.locator("#list > li.item.unread")).to_have_count(0, timeout=LIVE_TIMEOUT)
        shot(tab1, "b3-all-read")
    finally:
        other_ctx.close()
    assert console.app_errors() == []


@pytest.mark.timeout(120)
def test_server_restart_reconnects_without_loss_or_duplicate(
    context: Any, server: Any, publisher: Any, console: Any, shot: Any
) -> None:
    """(c) the indicator goes reconnecting → live across a restart; a notification published
    while the app is away shows exactly once."""
    page = open_inbox(context, server)
    publisher.unicast("123", "Before the restart")
    expect(items(page, "Before the restart")).to_have_count(1, timeout=LIVE_TIMEOUT)
    opens_before = page.evaluate("() => window.__mercurio.streamOpens")

    server.stop()
    expect(page.locator("#conn")).to_have_attribute(
        "data-state", "reconnecting", timeout=LIVE_TIMEOUT
    )
    expect(page.locator("#conn")).to_have_text("Reconnecting…")
    shot(page, "c1-reconnecting")
    page.wait_for_timeout(2500)  # let the back-off grow so the app is still away after the restart

    server.start()
    publisher.unicast("123", "Published while away", category="security")
    reconnected_already = page.evaluate("() => window.__mercurio.streamOpens") > opens_before
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    expect(items(page, "Published while away")).to_have_count(1, timeout=LIVE_TIMEOUT)

    publisher.unicast("123", "After the restart")
    expect(items(page, "After the restart")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(items(page)).to_have_count(3)
    expect(items(page, "Published while away")).to_have_count(1)
    expect_badge(page, 3)
    ids = page.evaluate("() => window.__mercurio.itemIDs")
    assert len(ids) == len(set(ids)) == 3
    shot(page, "c2-live-again")
    print(f"replayed after reconnect: {not reconnected_already}")
    print(f"browser network lines while the server was down: {console.errors}")
    assert console.app_errors() == []


@pytest.mark.timeout(120)
def test_one_stream_for_many_tabs(
    context: Any, server: Any, publisher: Any, console: Any, shot: Any
) -> None:
    """(d) 4 tabs of 123 in one browser: one leader holds the only stream and relays; when it
    closes another tab takes over, losslessly."""
    streams = StreamCounter(context)
    pages = [open_inbox(context, server) for _ in range(4)]
    expect_one = lambda: len(leaders(pages)) == 1  # noqa: E731
    for _ in range(100):
        if expect_one():
            break
        pages[0].wait_for_timeout(100)
    assert len(leaders(pages)) == 1
    assert len(streams.open) == 1, f"{len(streams.open)} streams open for 4 tabs"

    publisher.unicast("123", "Hello all tabs")
    for page in pages:
        expect(items(page, "Hello all tabs")).to_have_count(1, timeout=LIVE_TIMEOUT)
        expect_badge(page, 1)
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    shot(pages[1], "d1-follower-tab")

    leader = leaders(pages)[0]
    followers = [p for p in pages if p is not leader]
    leader.close()
    # published right away, before the new leader has its stream: it comes from the replay
    publisher.unicast("123", "After the leader left")
    for page in followers:
        expect(items(page, "After the leader left")).to_have_count(1, timeout=LIVE_TIMEOUT)
        expect(items(page, "Hello all tabs")).to_have_count(1)
        expect_badge(page, 2)
    for page in followers:
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    assert len(leaders(followers)) == 1
    followers[0].wait_for_timeout(500)
    assert len(streams.open) == 1, f"{len(streams.open)} streams open for 3 tabs"

    publisher.unicast("123", "Third one")
    for page in followers:
        expect(items(page, "Third one")).to_have_count(1, timeout=LIVE_TIMEOUT)
        expect(items(page)).to_have_count(3)
    shot(followers[0], "d2-after-leader-closed")
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_fetch_transport(
    context: Any, server: Any, publisher: Any, console: Any, shot: Any
) -> None:
    """(e) ?transport=fetch reads the stream with fetch() and an Authorization header."""
    streams = StreamCounter(context)
    page = open_inbox(context, server, extra="&transport=fetch")
    assert page.evaluate("() => window.__mercurio.transport") == "fetch"
    assert all("ticket=" not in r.url for r in streams.open)
    publisher.unicast("123", {"title": "Fetched", "body": "over a fetch stream"}, category="social")
    expect(items(page, "Fetched")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect_badge(page, 1)
    # read-state events arrive over the fetch stream too (from another client of 123)
    token = httpx.post(f"{server.url}/api/dev/token", json={"userID": "123"}).json()["token"]
    nid = page.evaluate("() => window.__mercurio.itemIDs[0]")
    r = httpx.put(
        f"{server.url}/api/clients/123/notifications/{nid}/read",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    expect_badge(page, 0)
    expect(items(page, "Fetched")).to_have_attribute("data-read", "true", timeout=LIVE_TIMEOUT)
    shot(page, "e1-fetch-transport")
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_mobile_viewport(
    browser: Any, server: Any, publisher: Any, console: Any, shot: Any
) -> None:
    """(f) a phone-width layout (375x812) that does not scroll sideways."""
    publisher.unicast("123", "Your parcel is out for delivery", category="orders")
    publisher.unicast(
        "123", {"title": "New sign-in", "body": "Chrome on Linux, Berlin"}, category="security"
    )
    publisher.unicast("123", "Anna liked your photo", category="social")
    ctx = browser.new_context(
        viewport={"width": 375, "height": 812},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    ctx.on("page", console.watch)
    try:
        page = open_inbox(ctx, server)
        expect(items(page)).to_have_count(3)
        items(page, "Anna liked").locator(".item-main").click()
        expect_badge(page, 2)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
        shot(page, "f1-mobile-inbox", full_page=False)
        shot(page, "f2-mobile-full", full_page=True)
        page.locator("#mute-menu summary").click()
        expect(page.get_by_role("switch", name="Mute social")).to_be_visible()
        shot(page, "f3-mobile-mute-menu", full_page=False)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    finally:
        ctx.close()
    assert console.app_errors() == []


@pytest.mark.timeout(90)
def test_no_console_errors_filters_mutes_keyboard(
    context: Any, server: Any, publisher: Any, console: Any, shot: Any
) -> None:
    """(g) a tour of the app with no console error at all; filters, mutes and the keyboard."""
    publisher.unicast("123", "Invoice paid", category="billing")
    publisher.unicast("123", "Password changed", category="security")
    publisher.unicast("123", "Card expires soon", category="billing")
    page = open_inbox(context, server)
    expect(items(page)).to_have_count(3)

    # category filter (list query category=)
    page.locator("#category-filter").select_option("billing")
    expect(items(page)).to_have_count(2, timeout=LIVE_TIMEOUT)
    publisher.unicast("123", "Another security alert", category="security")
    publisher.unicast("123", "Refund issued", category="billing")
    expect(items(page, "Refund issued")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(items(page, "Another security alert")).to_have_count(0)
    expect_badge(page, 5)
    shot(page, "g1-category-filter")
    page.locator("#category-filter").select_option("")
    expect(items(page)).to_have_count(5, timeout=LIVE_TIMEOUT)

    # unread filter
    items(page, "Invoice paid").locator(".item-main").click()
    expect_badge(page, 4)
    page.get_by_role("button", name="Unread", exact=True).click()
    expect(items(page)).to_have_count(4, timeout=LIVE_TIMEOUT)
    page.get_by_role("button", name="All", exact=True).click()
    expect(items(page)).to_have_count(5, timeout=LIVE_TIMEOUT)

    # mute toggles (GET/PUT preferences)
    page.locator("#mute-menu summary").click()
    page.get_by_role("switch", name="Mute security").check()
    expect(page.locator("#muted-count")).to_have_text("1", timeout=LIVE_TIMEOUT)
    shot(page, "g2-mute-menu")
    token = httpx.post(f"{server.url}/api/dev/token", json={"userID": "123"}).json()["token"]
    prefs = httpx.get(
        f"{server.url}/api/clients/123/preferences", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert prefs["mutedCategories"] == ["security"]
    page.keyboard.press("Escape")
    expect(page.locator("#mute-menu .mute-pop")).to_be_hidden()
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    page.locator("#mute-menu summary").click()
    expect(page.get_by_role("switch", name="Mute security")).to_be_checked()
    page.get_by_role("switch", name="Mute security").uncheck()
    expect(page.locator("#muted-count")).to_be_hidden(timeout=LIVE_TIMEOUT)
    page.keyboard.press("Escape")

    # keyboard: Tab to the first item, Enter marks it read; the menu opens, arrows, Escape
    first = items(page).first
    first.locator(".item-main").focus()
    page.keyboard.press("Enter")
    expect(first).to_have_attribute("data-read", "true", timeout=LIVE_TIMEOUT)
    page.keyboard.press("Tab")
    expect(first.locator(".menu-btn")).to_be_focused()
    page.keyboard.press("Enter")
    expect(first.locator(".menu-btn")).to_have_attribute("aria-expanded", "true")
    expect(first.get_by_role("menuitem", name="Mark as unread")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(first.get_by_role("menuitem", name="Delete")).to_be_focused()
    shot(page, "g3-keyboard-menu")
    page.keyboard.press("Escape")
    expect(first.locator(".menu-btn")).to_be_focused()
    expect(first.locator(".menu")).to_be_hidden()

    # "Load older" pages with nextBefore
    for i in range(55):
        publisher.unicast("123", f"Bulk {i}", category="general")
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    expect(items(page)).to_have_count(50)
    page.get_by_role("button", name="Load older").click()
    expect(items(page)).to_have_count(60, timeout=LIVE_TIMEOUT)
    expect(page.get_by_role("button", name="Load older")).to_be_hidden()

    page.evaluate("() => new Promise(r => setTimeout(r, 300))")
    assert console.errors == [], console.errors


@pytest.mark.timeout(90)
@pytest.mark.parametrize("transport", ["eventsource", "fetch"])
def test_token_expiry_renews_and_resumes(
    context: Any, server: Any, publisher: Any, console: Any, shot: Any, transport: str
) -> None:
    """(h) an embedder's short-lived token: the server ends the stream with `token-expired`,
    the app asks MERCURIO_TOKEN_PROVIDER for a new token and resumes without loss."""

    now = int(time.time())
    short = jwt.encode(
        {"user_id": "123", "sub": "123", "iat": now, "exp": now + 4},
        server.auth_key,
        algorithm="HS256",
    )
    context.add_init_script(f"""
        window.MERCURIO_TOKEN = {json.dumps(short)};
        window.__renewals = 0;
        window.MERCURIO_TOKEN_PROVIDER = async () => {{
          window.__renewals++;
          const r = await fetch('/api/dev/token', {{
            method: 'POST',
            headers: {{'Content-Type': 'application/json'}},
            body: JSON.stringify({{userID: '123'}}),
          }});
          return (await r.json()).token;
        }};
    """)
    page = context.new_page()
    extra = "?transport=fetch" if transport == "fetch" else ""
    page.goto(f"{server.url}/app/{extra}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    assert page.evaluate("() => window.__mercurio.clientID") == "123"
    publisher.unicast("123", "Before expiry")
    expect(items(page, "Before expiry")).to_have_count(1, timeout=LIVE_TIMEOUT)
    page.wait_for_function("() => window.__renewals >= 1", timeout=LIVE_TIMEOUT)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    page.wait_for_function("() => window.__mercurio.streamOpens >= 2", timeout=LIVE_TIMEOUT)
    publisher.unicast("123", "After renewal")
    expect(items(page, "After renewal")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(items(page)).to_have_count(2)
    expect_badge(page, 2)
    shot(page, f"h1-token-renewed-{transport}")
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_user_picker(context: Any, server: Any, publisher: Any, console: Any, shot: Any) -> None:
    """Without ?user= the page asks whose inbox to open; the picker switches users."""
    publisher.unicast("456", "For 456 only")
    page = context.new_page()
    page.goto(f"{server.url}/app/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "offline")
    shot(page, "i1-chooser")
    page.get_by_role("link", name="user 456").click()
    expect(page).to_have_url(re.compile(r"\?user=456$"))
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    expect(items(page, "For 456 only")).to_have_count(1)
    expect_badge(page, 1)
    page.get_by_label("User", exact=True).fill("123")
    page.get_by_label("User", exact=True).press("Enter")
    expect(page).to_have_url(re.compile(r"\?user=123$"))
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    expect(page.locator("#empty")).to_be_visible()
    expect_badge(page, 0)
    assert console.errors == [], console.errors
