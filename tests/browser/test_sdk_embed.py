"""<mercurio-inbox> and the JS SDK in Chromium, embedded by a page on ANOTHER origin.

The embedding site is a tiny static server on its own 127.0.0.1 port: it serves the page and,
as a real embedder's back end would, mints the user's JWTs (/token). The page loads the SDK
from the Mercurio server (/sdk/mercurio.js), so the module, the REST calls and the stream are
all cross-origin.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from tests.browser.conftest import DEV_KEY

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect

LIVE_TIMEOUT = 20_000  # ms: generous waits, never wall-clock assertions

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Embedder</title>
<style>
  body { margin: 0; font-family: sans-serif; }
  header { display: flex; align-items: center; justify-content: space-between; padding: 8px 12px;
           background: #f3f4f6; }
  h1 { margin: 0; font-size: 18px; }
  mercurio-inbox.themed { --mercurio-accent: rgb(10, 120, 30); }
  mercurio-inbox.themed::part(badge) { background: rgb(200, 0, 200); }
</style></head>
<body>
%(wrap)s<header><mercurio-inbox id="inbox" class="themed" server="%(server)s"
  client-id="%(user)s" %(extra)s></mercurio-inbox><h1>Embedder</h1></header>%(unwrap)s
<main><p>Some page content.</p></main>
<script type="module">
  import { MercurioClient } from '%(server)s/sdk/mercurio.js';
  window.MercurioClient = MercurioClient;
  window.__events = [];
  window.__tokenCalls = 0;
  const inbox = document.getElementById('inbox');
  for (const type of ['mercurio:notification', 'mercurio:read-state']) {
    document.addEventListener(type, (e) => window.__events.push({ type, detail: e.detail }));
  }
  inbox.tokenProvider = async () => {
    window.__tokenCalls++;
    const r = await fetch('/token?user=%(user)s&ttl=%(ttl)s');
    return (await r.json()).token;
  };
</script>
</body></html>
"""


README = Path(__file__).resolve().parents[2] / "clients" / "js" / "README.md"


def readme_snippet() -> str:
    """The README's paste-into-any-page example for a development server."""
    blocks = re.findall(r"```html\n(.*?)```", README.read_text(), re.S)
    dev = [b for b in blocks if "/api/dev/token" in b]
    assert len(dev) == 1, "the README's development embed example is missing"
    return dev[0]


# A phone-width box in a wide page, which scrolls sideways if anything sticks out of it.
NARROW = '<div id="narrow" style="width: 375px; overflow-x: auto; border: 1px solid #999">'


class Embedder:
    """The other origin: serves the embedding page and mints tokens as a site's back end does."""

    def __init__(self, mercurio_url: str) -> None:
        self.mercurio_url = mercurio_url
        self.tokens: list[str] = []
        embedder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/token":
                    token = embedder.mint(query["user"], float(query.get("ttl", "3600")))
                    self._send(200, "application/json", json.dumps({"token": token}))
                elif url.path == "/readme":
                    snippet = readme_snippet().replace(
                        "http://127.0.0.1:8000", embedder.mercurio_url
                    )
                    self._send(200, "text/html; charset=utf-8", snippet)
                elif url.path == "/sw.js":
                    self._send(200, "text/javascript", "self.addEventListener('push', () => {});")
                elif url.path == "/":
                    page = PAGE % {
                        "server": embedder.mercurio_url,
                        "user": query.get("user", "123"),
                        "ttl": query.get("ttl", "3600"),
                        "extra": 'service-worker="/sw.js"' if "sw" in query else "",
                        "wrap": NARROW if "narrow" in query else "",
                        "unwrap": "</div>" if "narrow" in query else "",
                    }
                    self._send(200, "text/html; charset=utf-8", page)
                else:
                    self._send(404, "text/plain", "not found")

            def _send(self, status: int, kind: str, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def mint(self, user: str, ttl: float) -> str:
        now = int(time.time())
        token = jwt.encode(
            {"user_id": user, "sub": user, "iat": now, "exp": now + int(ttl)},
            DEV_KEY,
            algorithm="HS256",
        )
        self.tokens.append(token)
        return token

    def page_url(self, user: str, **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"{self.url}/?user={user}{extra}"


@pytest.fixture
def embedder(server: Any) -> Iterator[Embedder]:
    site = Embedder(server.url)
    site.thread.start()
    try:
        yield site
    finally:
        site.httpd.shutdown()
        site.httpd.server_close()


class Requests:
    """Every URL a browser context asked for, and the stream requests still open."""

    def __init__(self, context: Any) -> None:
        self.urls: list[str] = []
        self.log: list[tuple[str, str]] = []  # ("start" | "end", url), in order
        self.streams: dict[Any, Any] = {}
        self.stream_starts = 0
        context.on("request", self._start)
        context.on("requestfinished", self._end)
        context.on("requestfailed", self._end)

    def _start(self, request: Any) -> None:
        self.urls.append(request.url)
        self.log.append(("start", request.url))
        if "/notifications/stream" in request.url:
            self.stream_starts += 1
            self.streams[request] = request.frame.page

    def _end(self, request: Any) -> None:
        self.log.append(("end", request.url))
        self.streams.pop(request, None)

    @property
    def open_streams(self) -> list[Any]:
        return [r for r, page in self.streams.items() if not page.is_closed()]


@pytest.fixture
def requests(context: Any) -> Requests:
    return Requests(context)


def open_page(context: Any, embedder: Embedder, user: str, **query: str) -> Any:
    page = context.new_page()
    page.goto(embedder.page_url(user, **query))
    expect(inbox(page)).to_have_attribute("data-connection", "live", timeout=LIVE_TIMEOUT)
    return page


def inbox(page: Any) -> Any:
    return page.locator("mercurio-inbox")


def bell(page: Any) -> Any:
    return page.get_by_role("button", name=re.compile("^Notifications"))


def rows(page: Any, text: str | None = None) -> Any:
    loc = page.locator("mercurio-inbox li")
    return loc.filter(has_text=text) if text else loc


def expect_badge(page: Any, n: int) -> None:
    badge = page.locator("mercurio-inbox .badge")
    if n == 0:
        expect(badge).to_be_hidden(timeout=LIVE_TIMEOUT)
    else:
        expect(badge).to_have_text(str(n), timeout=LIVE_TIMEOUT)
    label = (
        "no unread notifications" if n == 0 else f"{n} unread notification{'' if n == 1 else 's'}"
    )
    expect(bell(page)).to_have_attribute("aria-label", f"Notifications, {label}")
    assert page.evaluate("() => document.querySelector('mercurio-inbox').unreadCount") == n


def api(server: Any, user: str, path: str) -> Any:
    token = jwt.encode({"user_id": user, "exp": int(time.time()) + 600}, DEV_KEY, algorithm="HS256")
    r = httpx.get(
        f"{server.url}/api/clients/{user}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    r.raise_for_status()
    return r.json()


def open_streams_on_server(server: Any) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(r"^mercurio_open_streams (\S+)$", text, re.M)
    assert match, "mercurio_open_streams is missing from /metrics"
    return float(match.group(1))


def assert_no_token_in_urls(requests: Requests, embedder: Embedder) -> None:
    assert embedder.tokens, "the page never asked for a token"
    for url in requests.urls:
        for token in embedder.tokens:
            assert token not in url, f"a JWT went into a URL: {url[:120]}"


# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_cross_origin_badge_live_read_and_mark_all(
    context: Any,
    server: Any,
    publisher: Any,
    embedder: Embedder,
    requests: Requests,
    console: Any,
    shot: Any,
) -> None:
    """The page on another origin: the badge counts real publishes, a live one arrives (with a
    mercurio:notification event), a click reads it (the API agrees), mark all read empties it."""
    publisher.unicast("123", {"title": "Invoice ready", "body": "Invoice #42 is ready"}, "billing")
    publisher.unicast("123", "Second message")
    page = open_page(context, embedder, "123")
    assert embedder.url.split(":")[-1] != server.url.split(":")[-1]
    expect_badge(page, 2)

    bell(page).click()
    expect(page.get_by_role("dialog", name="Notifications")).to_be_visible()
    expect(rows(page)).to_have_count(2)
    expect(rows(page, "Invoice #42 is ready")).to_contain_text("billing")

    sent = publisher.unicast("123", {"title": "Live one", "body": "arrived over the stream"})
    expect(rows(page, "arrived over the stream")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect_badge(page, 3)
    events = page.evaluate("() => window.__events")
    arrivals = [e for e in events if e["type"] == "mercurio:notification"]
    assert [e["detail"]["notification"]["notificationID"] for e in arrivals] == [
        sent["notificationID"]
    ]
    shot(page, "sdk-1280-open")

    live = rows(page, "arrived over the stream")
    expect(live).to_have_class(re.compile(r"\bunread\b"))
    live.get_by_role("button", name=re.compile("Live one")).click()
    expect(live).not_to_have_class(re.compile(r"\bunread\b"), timeout=LIVE_TIMEOUT)
    expect_badge(page, 2)
    page.wait_for_function(
        "() => window.__events.some("
        "e => e.type === 'mercurio:read-state' && e.detail.source === 'local')"
    )
    read = api(server, "123", f"/notifications/{sent['notificationID']}")
    assert read.get("readAt"), read

    page.get_by_role("button", name="Mark all read").click()
    expect_badge(page, 0)
    expect(page.locator("mercurio-inbox li.unread")).to_have_count(0)
    assert api(server, "123", "/notifications/unread-count")["unreadCount"] == 0
    expect(page.get_by_role("button", name="Mark all read")).to_be_disabled()

    assert_no_token_in_urls(requests, embedder)
    assert any(u.startswith(f"{server.url}/sdk/mercurio.js") for u in requests.urls)
    assert console.app_errors() == []


@pytest.mark.timeout(90)
def test_unread_filter_load_more_and_empty_states(
    context: Any, server: Any, publisher: Any, embedder: Embedder, console: Any
) -> None:
    """An empty inbox says so; 25 notifications page 20 then 5; the unread filter lists only
    unread ones, and says so when there are none."""
    page = open_page(context, embedder, "fresh")
    bell(page).click()
    expect(page.get_by_text("You have no notifications.")).to_be_visible()
    expect_badge(page, 0)

    ids = [publisher.unicast("fresh", f"Message {i:02d}")["notificationID"] for i in range(25)]
    expect_badge(page, 25)
    page.reload()
    expect(inbox(page)).to_have_attribute("data-connection", "live", timeout=LIVE_TIMEOUT)
    bell(page).click()
    expect(rows(page)).to_have_count(20, timeout=LIVE_TIMEOUT)
    expect(rows(page).first).to_contain_text("Message 24")
    page.get_by_role("button", name="Load more").click()
    expect(rows(page)).to_have_count(25, timeout=LIVE_TIMEOUT)
    expect(rows(page).last).to_contain_text("Message 00")
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    rows(page, "Message 24").get_by_role("button", name="Mark as read").click()
    expect_badge(page, 24)
    page.get_by_role("button", name="Unread", exact=True).click()
    expect(page.get_by_role("button", name="Unread", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(rows(page, "Message 24")).to_have_count(0, timeout=LIVE_TIMEOUT)
    expect(rows(page)).to_have_count(20)
    assert api(server, "fresh", f"/notifications/{ids[24]}").get("readAt")

    page.get_by_role("button", name="Mark all read").click()
    expect(page.get_by_text("No unread notifications.")).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(rows(page)).to_have_count(0)
    page.get_by_role("button", name="All", exact=True).click()
    expect(rows(page)).to_have_count(20, timeout=LIVE_TIMEOUT)
    assert console.app_errors() == []


@pytest.mark.timeout(120)
def test_error_state_while_the_server_is_down(
    context: Any, server: Any, publisher: Any, embedder: Embedder, console: Any
) -> None:
    """The server stops: the panel says the connection is lost, a failed load shows an error
    with Retry; back up, Retry lists again and the stream is live again."""
    publisher.unicast("123", "Before the outage")
    page = open_page(context, embedder, "123")
    bell(page).click()
    expect(rows(page)).to_have_count(1)

    server.stop()
    expect(inbox(page)).to_have_attribute("data-connection", "reconnecting", timeout=LIVE_TIMEOUT)
    expect(page.get_by_text("Connection lost: reconnecting…")).to_be_visible()
    page.get_by_role("button", name="Unread", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Could not load notifications", timeout=LIVE_TIMEOUT)
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    expect(page.get_by_text("No unread notifications.")).to_be_hidden()

    server.start()
    page.get_by_role("button", name="Retry").click()
    expect(alert).to_be_hidden(timeout=LIVE_TIMEOUT)
    expect(rows(page, "Before the outage")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(inbox(page)).to_have_attribute("data-connection", "live", timeout=30_000)
    publisher = type(publisher)(server.url)
    publisher.unicast("123", "After the outage")
    expect(rows(page, "After the outage")).to_have_count(1, timeout=LIVE_TIMEOUT)
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_keyboard_and_screen_reader(
    context: Any, server: Any, publisher: Any, embedder: Embedder, console: Any
) -> None:
    """Tab reaches the bell, Enter opens the panel with the focus in it, Escape closes it and
    gives the focus back to the bell; roles and labels say what each part is."""
    publisher.unicast("123", "Keyboard check")
    page = open_page(context, embedder, "123")
    expect_badge(page, 1)
    page.keyboard.press("Tab")
    focused = "() => document.activeElement.shadowRoot?.activeElement?.getAttribute('part')"
    assert page.evaluate(focused) == "bell"
    b = bell(page)
    expect(b).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Notifications")
    expect(dialog).to_be_visible()
    expect(b).to_have_attribute("aria-expanded", "true")
    assert page.evaluate(focused) == "title"
    page.keyboard.press("Tab")  # on to the panel's first control
    inner = "() => document.activeElement.shadowRoot?.activeElement?.textContent"
    assert page.evaluate(inner) == "All"
    expect(page.get_by_role("button", name="Unread: Keyboard check")).to_have_count(1)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(b).to_have_attribute("aria-expanded", "false")
    assert page.evaluate(focused) == "bell"
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    page.locator("main").click()  # a click elsewhere closes it too
    expect(dialog).to_be_hidden()
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_phone_width_has_no_horizontal_overflow(
    browser: Any, server: Any, publisher: Any, embedder: Embedder, console: Any, shot: Any
) -> None:
    """At 375 px the open panel, long unbroken words and all, stays inside the viewport."""
    publisher.unicast("123", {"title": "A long one", "body": "x" * 300})
    publisher.unicast("123", "Short and sweet", "a-rather-long-category-name")
    ctx = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    ctx.on("page", console.watch)
    try:
        page = open_page(ctx, embedder, "123")
        bell(page).click()
        expect(rows(page)).to_have_count(2, timeout=LIVE_TIMEOUT)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, f"the page is {width} px wide at 375"
        box = page.locator("mercurio-inbox .panel").bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, box
        for row in rows(page).all():
            rbox = row.bounding_box()
            assert rbox is not None and rbox["x"] + rbox["width"] <= 375, rbox
        shot(page, "sdk-375-open")
    finally:
        ctx.close()
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_phone_width_container_in_a_wide_page(
    context: Any, server: Any, publisher: Any, embedder: Embedder, console: Any, shot: Any
) -> None:
    """In a 375 px box of a 1280 px page, the bell at the box's left: the panel fits the box."""
    publisher.unicast("123", {"title": "Boxed", "body": "y" * 200})
    page = open_page(context, embedder, "123", narrow="1")
    bell(page).click()
    expect(rows(page)).to_have_count(1, timeout=LIVE_TIMEOUT)
    box = page.locator("#narrow")
    sizes = box.evaluate("b => [b.scrollWidth, b.clientWidth]")
    assert sizes[0] <= sizes[1], f"the 375 px box overflows: {sizes}"
    outer = box.bounding_box()
    panel = page.locator("mercurio-inbox .panel").bounding_box()
    assert outer is not None and panel is not None
    assert panel["x"] >= outer["x"] and panel["x"] + panel["width"] <= outer["x"] + outer["width"]
    # not clipped by the box, which scrolls: what is at the panel's middle is the panel
    hit = "([x, y]) => document.elementFromPoint(x, y)?.id"
    middle = [panel["x"] + panel["width"] / 2, panel["y"] + panel["height"] / 2]
    assert page.evaluate(hit, middle) == "inbox"
    expect(rows(page, "Boxed")).to_be_visible()
    shot(page, "sdk-375-container")
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_theming_with_parts_and_custom_properties(
    context: Any, server: Any, publisher: Any, embedder: Embedder
) -> None:
    """The page's ::part(badge) rule and its --mercurio-accent reach inside the shadow DOM."""
    publisher.unicast("123", "Themed")
    page = open_page(context, embedder, "123")
    expect_badge(page, 1)
    badge = page.locator("mercurio-inbox .badge")
    assert badge.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(200, 0, 200)"
    bell(page).click()
    pressed = page.get_by_role("button", name="All", exact=True)
    assert pressed.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(10, 120, 30)"
    dot = page.locator("mercurio-inbox li.unread .dot")
    assert dot.evaluate("d => getComputedStyle(d).backgroundColor") == "rgb(10, 120, 30)"


@pytest.mark.timeout(90)
def test_two_tabs_share_one_stream(
    context: Any,
    server: Any,
    publisher: Any,
    embedder: Embedder,
    requests: Requests,
    console: Any,
) -> None:
    """Two tabs of one user: one EventSource on the server, both tabs live and receiving; when
    the leading tab closes the other takes the stream over and misses nothing."""
    first = open_page(context, embedder, "123")
    second = open_page(context, embedder, "123")
    publisher.unicast("123", "For both tabs")
    for page in (first, second):
        bell(page).click()
        expect(rows(page, "For both tabs")).to_have_count(1, timeout=LIVE_TIMEOUT)
        expect_badge(page, 1)
    assert len(requests.open_streams) == 1
    assert open_streams_on_server(server) == 1

    # read in one tab: the other hears it as a read-state event (relayed if it follows)
    first.get_by_role("button", name=re.compile("For both tabs")).click()
    expect_badge(second, 0)
    expect(rows(second, "For both tabs")).not_to_have_class(re.compile(r"\bunread\b"))
    second.wait_for_function(
        "() => window.__events.some(e => e.type === 'mercurio:read-state'"
        " && e.detail.source === 'stream' && e.detail.status === 'read')"
    )

    leader = requests.open_streams[0].frame.page
    follower = second if leader is first else first
    leader.close()
    publisher.unicast("123", "After the leader left")
    expect(rows(follower, "After the leader left")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect_badge(follower, 1)
    expect(inbox(follower)).to_have_attribute("data-connection", "live", timeout=LIVE_TIMEOUT)
    assert len(requests.open_streams) == 1
    assert console.app_errors() == []


@pytest.mark.timeout(90)
def test_token_provider_called_again_after_token_expired(
    context: Any,
    server: Any,
    publisher: Any,
    embedder: Embedder,
    requests: Requests,
    console: Any,
) -> None:
    """Tokens of 8 s: the server ends the stream with token-expired, the element asks its
    tokenProvider again (after that stream ended, before the next one), resumes, and what is
    published afterwards still arrives."""
    page = open_page(context, embedder, "123", ttl="8")
    publisher.unicast("123", "Before expiry")
    expect_badge(page, 1)
    for _ in range(150):  # the stream ended by the server at exp, and the next one
        if requests.stream_starts >= 2:
            break
        page.wait_for_timeout(200)
    assert requests.stream_starts >= 2, "the stream was never reopened"
    starts = [(i, url) for i, (kind, url) in enumerate(requests.log) if kind == "start"]
    streams = [i for i, url in starts if "/notifications/stream" in url]
    # While the first stream was open: one renewal on the timer (a quarter of the life before
    # exp; the new token's is due after this stream ends), and one for token-expired.
    asked = [url for i, url in starts if streams[0] < i < streams[1] and "/token?" in url]
    assert len(asked) >= 2, requests.log
    expect(inbox(page)).to_have_attribute("data-connection", "live", timeout=LIVE_TIMEOUT)
    publisher.unicast("123", "After renewal")
    bell(page).click()
    expect(rows(page, "After renewal")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect_badge(page, 2)
    assert_no_token_in_urls(requests, embedder)
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_push_opt_in_when_the_server_offers_web_push(
    context: Any, server: Any, embedder: Embedder
) -> None:
    """The server has Web Push on: with a service worker of the page's origin the panel offers
    desktop notifications; without one (cross-origin) it cannot, and shows nothing."""
    with_worker = open_page(context, embedder, "123", sw="1")
    bell(with_worker).click()
    expect(with_worker.get_by_role("button", name="Enable desktop notifications")).to_be_visible(
        timeout=LIVE_TIMEOUT
    )
    without = open_page(context, embedder, "456")
    bell(without).click()
    expect(without.get_by_role("dialog", name="Notifications")).to_be_visible()
    expect(without.get_by_role("button", name="Enable desktop notifications")).to_be_hidden()


@pytest.mark.timeout(60)
def test_readme_embed_example_works_as_pasted(
    context: Any, server: Any, publisher: Any, embedder: Embedder, console: Any
) -> None:
    """The README's ten lines, only the server's address changed, on another origin."""
    snippet = readme_snippet()
    assert len(snippet.strip().splitlines()) <= 10
    publisher.unicast("123", "Hello from the README")
    page = context.new_page()
    page.goto(f"{embedder.url}/readme")
    expect(inbox(page)).to_have_attribute("data-connection", "live", timeout=LIVE_TIMEOUT)
    expect_badge(page, 1)
    bell(page).click()
    expect(rows(page, "Hello from the README")).to_have_count(1)
    publisher.unicast("123", "And a live one")
    expect(rows(page, "And a live one")).to_have_count(1, timeout=LIVE_TIMEOUT)
    assert console.app_errors() == []


@pytest.mark.timeout(120)
def test_stream_limit_is_said_in_words(
    context: Any, server: Any, embedder: Embedder, console: Any
) -> None:
    """A user already at the server's stream limit (another device holds it): the element
    says the limit was hit instead of "reconnecting" forever, and still lists."""
    server.stop()
    server.env["MERCURIO_MAX_STREAMS_PER_CLIENT"] = "1"
    server.start()
    publisher = httpx.post(
        f"{server.url}/api/dev/token", json={"userID": "666", "publisher": True}
    ).json()["token"]
    httpx.post(
        f"{server.url}/api/events/unicast",
        json={"sourceID": "tests", "destinationID": "123", "data": "Listed anyway"},
        headers={"Authorization": f"Bearer {publisher}"},
    ).raise_for_status()
    token = embedder.mint("123", 600)
    with httpx.stream(
        "GET",
        f"{server.url}/api/clients/123/notifications/stream",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as other_device:
        assert other_device.status_code == 200
        page = context.new_page()
        page.goto(embedder.page_url("123"))
        bell(page).click()
        expect(rows(page, "Listed anyway")).to_have_count(1, timeout=LIVE_TIMEOUT)
        status = page.locator("mercurio-inbox .status")
        expect(status).to_contain_text("too many open streams", timeout=LIVE_TIMEOUT)
        expect(inbox(page)).to_have_attribute("data-connection", "reconnecting")
    # the other device left: a later attempt gets the stream
    expect(inbox(page)).to_have_attribute("data-connection", "live", timeout=40_000)
    expect(page.locator("mercurio-inbox .status")).to_be_hidden()
    assert [e for e in console.app_errors() if "429" not in e] == []


@pytest.mark.timeout(90)
def test_a_retracted_announcement_leaves_the_badge_and_the_list(
    context: Any, server: Any, publisher: Any, embedder: Embedder, console: Any
) -> None:
    """Retracting an announcement sends read-state deleted with unreadCount null (each user's
    count differs); the element dropped the item but kept counting it as unread."""
    publisher.unicast("123", "Yours alone")
    sent = httpx.post(
        f"{server.url}/api/events/announce",
        json={"sourceID": "tests", "id": "maintenance-1", "data": "Maintenance at 22:00"},
        headers=publisher.headers,
    )
    sent.raise_for_status()
    page = open_page(context, embedder, "123")
    expect_badge(page, 2)
    bell(page).click()
    expect(rows(page, "Maintenance at 22:00")).to_have_count(1)

    gone = httpx.delete(f"{server.url}/api/events/maintenance-1", headers=publisher.headers)
    assert gone.status_code == 200, gone.text
    expect(rows(page, "Maintenance at 22:00")).to_have_count(0, timeout=LIVE_TIMEOUT)
    expect_badge(page, 1)
    assert api(server, "123", "/notifications/unread-count")["unreadCount"] == 1
    assert console.app_errors() == []
