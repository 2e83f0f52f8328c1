"""Web Push in the web app (sw.js, push.js, desktop.js), in Chromium against the real server.

Headless Chromium has no push service (and refuses the Push API in its incognito-like
contexts), so an init script stands in for PushManager.subscribe/getSubscription with a
subscription whose endpoint and keys the test gives. Pushes reach the service worker through
the DevTools protocol (ServiceWorker.deliverPushMessage), with the server's payload format.
Most tests answer the push routes in the browser with FakePushRoutes (their contract:
vapid-public-key, push-subscriptions POST/GET/DELETE), so they can count what the app asked;
the end-to-end test uses the server's real routes and the mock push service
(tests/push_service.py): a publish is pushed, decrypted, and what it carried is shown.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect

LIVE_TIMEOUT = 20_000  # ms
ENABLE = "Enable desktop notifications"
DISABLE = "Turn off desktop notifications"
SUBSCRIPTION = {
    "endpoint": "https://push.example.test/send/device-1",
    "expirationTime": None,
    "keys": {"p256dh": "BKm3" + "A" * 83, "auth": "c2VjcmV0LWF1dGgtMTY"},
}

# Stands in for the browser's push service: subscribe() answers a subscription with the given
# endpoint and keys, remembered (in localStorage) so getSubscription() finds it after a reload.
FAKE_PUSH_MANAGER = """
(() => {
  const json = %s;
  const KEY = 'mercurio-test-push-key';
  const make = (serverKey) => ({
    endpoint: json.endpoint,
    expirationTime: null,
    options: { userVisibleOnly: true, applicationServerKey: new Uint8Array(serverKey).buffer },
    toJSON() { return JSON.parse(JSON.stringify(json)); },
    getKey() { return null; },
    async unsubscribe() {
      localStorage.removeItem(KEY);
      localStorage.setItem('mercurio-test-unsubscribed', '1');
      return true;
    },
  });
  PushManager.prototype.subscribe = async function (options) {
    const serverKey = [...new Uint8Array(options.applicationServerKey)];
    const asked = { serverKey, userVisibleOnly: options.userVisibleOnly };
    localStorage.setItem(KEY, JSON.stringify(asked));
    return make(serverKey);
  };
  PushManager.prototype.getSubscription = async function () {
    const saved = localStorage.getItem(KEY);
    return saved ? make(JSON.parse(saved).serverKey) : null;
  };
})();
"""

SHOWN = """async (tag) => {
  const reg = await navigator.serviceWorker.getRegistration('/app/');
  const shown = reg ? await reg.getNotifications(tag ? { tag } : {}) : [];
  return shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }));
}"""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def vapid_public_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


class FakePushRoutes:
    """The server's push routes, answered in the browser by their contract."""

    def __init__(self, context: Any, public_key: bytes | None) -> None:
        self.public_key = public_key
        self.stored: dict[int, dict[str, Any]] = {}
        self.deleted: list[int] = []
        self.key_requests = 0
        context.route("**/api/push/vapid-public-key", self._key)
        context.route("**/api/clients/*/push-subscriptions", self._collection)
        context.route("**/api/clients/*/push-subscriptions/*", self._one)

    def _key(self, route: Any) -> None:
        self.key_requests += 1
        if self.public_key is None:
            route.fulfill(status=404, json={"error": "push is off on this server"})
        else:
            route.fulfill(json={"publicKey": b64url(self.public_key)})

    def _collection(self, route: Any) -> None:
        request = route.request
        client = request.url.split("/api/clients/")[1].split("/")[0]
        if request.method == "POST":
            body = json.loads(request.post_data)
            for sid, s in self.stored.items():
                if s["endpoint"] == body["endpoint"]:
                    route.fulfill(status=201, json=self._public(sid))
                    return
            sid = len(self.stored) + len(self.deleted) + 1
            self.stored[sid] = {**body, "clientID": client, "createdAt": "2026-12-03T15:00:00Z"}
            route.fulfill(status=201, json=self._public(sid))
        else:
            mine = [self._public(i) for i, s in self.stored.items() if s["clientID"] == client]
            route.fulfill(json={"clientID": client, "subscriptions": mine})

    def _one(self, route: Any) -> None:
        sid = int(route.request.url.rsplit("/", 1)[1])
        if route.request.method == "DELETE" and self.stored.pop(sid, None) is not None:
            self.deleted.append(sid)
            route.fulfill(json={"status": "deleted"})
        else:
            route.fulfill(status=404, json={"error": "push subscription not found"})

    def _public(self, sid: int) -> dict[str, Any]:
        s = self.stored[sid]
        return {"id": sid, "endpoint": s["endpoint"], "createdAt": s["createdAt"]}


class User:
    """The HTTP API as one user, with a development token."""

    def __init__(self, url: str, user: str) -> None:
        self.base = f"{url}/api/clients/{user}"
        token = httpx.post(f"{url}/api/dev/token", json={"userID": user}).json()["token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def read_at(self, nid: int) -> Any:
        r = httpx.get(f"{self.base}/notifications/{nid}", headers=self.headers)
        r.raise_for_status()
        return r.json().get("readAt")

    def mark_read(self, nid: int) -> None:
        httpx.put(f"{self.base}/notifications/{nid}/read", headers=self.headers).raise_for_status()

    def mark_all_read(self) -> None:
        httpx.put(f"{self.base}/notifications/read", headers=self.headers).raise_for_status()


class Pusher:
    """Delivers push messages to the app's service worker through the DevTools protocol."""

    def __init__(self, context: Any, page: Any, origin: str) -> None:
        self.origin = origin
        self.cdp = context.new_cdp_session(page)
        self.registrations: dict[str, str] = {}
        self.cdp.on("ServiceWorker.workerRegistrationUpdated", self._updated)
        self.cdp.send("ServiceWorker.enable")
        self.page = page

    def _updated(self, event: dict[str, Any]) -> None:
        for r in event["registrations"]:
            if not r["isDeleted"]:
                self.registrations[r["scopeURL"]] = r["registrationId"]

    def push(self, payload: dict[str, Any]) -> None:
        scope = f"{self.origin}/app/"
        for _ in range(100):
            if scope in self.registrations:
                break
            self.page.wait_for_timeout(100)
        self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": self.origin,
                "registrationId": self.registrations[scope],
                "data": json.dumps(payload),
            },
        )


def payload(published: dict[str, Any], data: Any, category: str = "general") -> dict[str, Any]:
    return {
        "notificationID": published["notificationID"],
        "clientID": "123",
        "category": category,
        "data": data,
        "createdAt": "2026-12-03T15:00:00Z",
    }


def wait_shown(page: Any, count: int, tag: str | None = None) -> list[dict[str, Any]]:
    """The notifications the service worker shows, once there are `count` of them."""
    for _ in range(200):
        shown: list[dict[str, Any]] = page.evaluate(SHOWN, tag)
        if len(shown) == count:
            return shown
        page.wait_for_timeout(100)
    raise AssertionError(f"expected {count} desktop notifications, saw {shown}")


@pytest.fixture
def push_context(context: Any, server: Any) -> Any:
    context.grant_permissions(["notifications"], origin=server.url)
    context.add_init_script(FAKE_PUSH_MANAGER % json.dumps(SUBSCRIPTION))
    return context


@pytest.fixture
def routes(push_context: Any) -> Iterator[FakePushRoutes]:
    key = vapid_public_key()
    yield FakePushRoutes(push_context, key)


def open_inbox(context: Any, server: Any, query: str = "?user=123") -> Any:
    page = context.new_page()
    page.goto(f"{server.url}/app/{query}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    return page


def enable(page: Any) -> None:
    page.get_by_role("button", name=ENABLE).click()
    expect(page.locator("#push-status")).to_have_text(
        "Desktop notifications on", timeout=LIVE_TIMEOUT
    )
    expect(page.get_by_role("button", name=DISABLE)).to_be_visible()


# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_enable_subscribes_registers_shows_pushes_and_closes_them_when_read(
    push_context: Any, server: Any, publisher: Any, routes: Any, console: Any, shot: Any
) -> None:
    page = open_inbox(push_context, server)
    expect(page.get_by_role("button", name=ENABLE)).to_be_visible()
    expect(page.locator("#push-status")).to_be_hidden()
    shot(page, "p1-push-control-off")
    enable(page)
    shot(page, "p2-push-control-on")

    # the app subscribed with the server's key, userVisibleOnly, and gave the server toJSON()
    asked = json.loads(page.evaluate("localStorage.getItem('mercurio-test-push-key')"))
    assert bytes(asked["serverKey"]) == routes.public_key and asked["userVisibleOnly"] is True
    assert [{k: v for k, v in s.items() if k in SUBSCRIPTION} for s in routes.stored.values()] == [
        SUBSCRIPTION
    ]
    reg = page.evaluate(
        "navigator.serviceWorker.getRegistration('/app/')"
        ".then((r) => ({scope: r.scope, script: r.active.scriptURL}))"
    )
    assert reg == {"scope": f"{server.url}/app/", "script": f"{server.url}/app/sw.js"}

    # a reload finds the subscription the server holds: still on
    page.reload()
    expect(page.locator("#push-status")).to_have_text(
        "Desktop notifications on", timeout=LIVE_TIMEOUT
    )

    pusher = Pusher(push_context, page, server.url)
    user = User(server.url, "123")
    convention = {"title": "Order shipped", "body": "It arrives Tuesday", "url": "/app/?user=123"}
    first = publisher.unicast("123", convention, category="billing")
    pusher.push(payload(first, convention, "billing"))
    (shown,) = wait_shown(page, 1)
    assert shown["title"] == "Order shipped" and shown["body"] == "It arrives Tuesday"
    assert shown["tag"] == str(first["notificationID"])
    assert shown["data"] == {
        "notificationID": first["notificationID"],
        "clientID": "123",
        "category": "billing",
        "url": f"{server.url}/app/?user=123",
    }

    # read through the HTTP API elsewhere: the stream's read-state closes it on this device
    user.mark_read(first["notificationID"])
    wait_shown(page, 0)

    # the other shapes of data: a string, JSON without the convention, a truncated payload
    plain = publisher.unicast("123", "Your invoice is ready")
    other = publisher.unicast("123", {"amount": 42}, category="security")
    big = publisher.unicast("123", "x")
    pusher.push(payload(plain, "Your invoice is ready"))
    pusher.push(payload(other, {"amount": 42}, "security"))
    truncated = {k: v for k, v in payload(big, None).items() if k != "data"}
    pusher.push({**truncated, "truncated": True})
    shown_all = {n["tag"]: (n["title"], n["body"]) for n in wait_shown(page, 3)}
    assert shown_all == {
        str(plain["notificationID"]): ("New notification", "Your invoice is ready"),
        str(other["notificationID"]): ("New security notification", '{"amount":42}'),
        str(big["notificationID"]): ("New notification", "Open Mercurio to read it"),
    }

    # one read in another tab closes that one only; "mark all read" closes the rest
    tab2 = open_inbox(push_context, server)
    tab2.locator(f"#list > li.item[data-id='{plain['notificationID']}'] .item-main").click()
    assert {n["tag"] for n in wait_shown(page, 2)} == {
        str(other["notificationID"]),
        str(big["notificationID"]),
    }
    user.mark_all_read()
    wait_shown(page, 0)

    # turn off: the server's record is deleted and the browser unsubscribed
    page.get_by_role("button", name=DISABLE).click()
    expect(page.get_by_role("button", name=ENABLE)).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(page.locator("#push-status")).to_be_hidden()
    assert routes.stored == {} and len(routes.deleted) == 1
    assert page.evaluate("localStorage.getItem('mercurio-test-unsubscribed')") == "1"
    assert console.app_errors() == []


@pytest.mark.timeout(120)
def test_click_marks_read_and_follows_a_same_origin_url(
    push_context: Any, server: Any, publisher: Any, routes: Any, console: Any, shot: Any
) -> None:
    page = open_inbox(push_context, server, "?user=123&view=inbox")
    enable(page)
    pusher = Pusher(push_context, page, server.url)
    user = User(server.url, "123")
    data = {"title": "Deploy done", "body": "v2", "url": "/app/?user=123&view=publisher"}
    n = publisher.unicast("123", data)
    pusher.push(payload(n, data))
    wait_shown(page, 1)
    shot(page, "p3-before-click")

    # A notificationclick made by script cannot waitUntil(), so the test calls the listener's
    # body in the worker with the real notification: it closes it and messages this tab.
    (worker,) = push_context.service_workers
    worker.evaluate(
        "async (tag) => onNotificationClick((await self.registration.getNotifications({tag}))[0])",
        str(n["notificationID"]),
    )
    page.wait_for_url("**/app/?user=123&view=publisher", timeout=LIVE_TIMEOUT)
    assert user.read_at(n["notificationID"]) is not None
    wait_shown(page, 0)

    # A url to another origin is not followed; the notification is still marked read.
    evil = publisher.unicast("123", {"title": "Phish", "url": "https://evil.example/"})
    page.evaluate(
        "(m) => navigator.serviceWorker.dispatchEvent(new MessageEvent('message', {data: m}))",
        {
            "type": "mercurio:notification-click",
            "notificationID": evil["notificationID"],
            "clientID": "123",
            "url": "https://evil.example/",
        },
    )
    for _ in range(100):
        if user.read_at(evil["notificationID"]) is not None:
            break
        page.wait_for_timeout(100)
    assert user.read_at(evil["notificationID"]) is not None
    assert page.url == f"{server.url}/app/?user=123&view=publisher"
    assert console.app_errors() == []


@pytest.mark.timeout(120)
def test_opened_by_a_click_marks_read_then_goes_next(
    push_context: Any, server: Any, publisher: Any, routes: Any, console: Any, shot: Any
) -> None:
    """The page the worker opens when no app tab is there: /app/?read=<id>&client=<c>&next=."""
    user = User(server.url, "123")
    n = publisher.unicast("123", "Open me")
    page = push_context.new_page()
    page.goto(
        f"{server.url}/app/?read={n['notificationID']}&client=123&next=%2Fapp%2F%3Fuser%3D123%26view%3Dinbox"
    )
    page.wait_for_url("**/app/?user=123&view=inbox", timeout=LIVE_TIMEOUT)
    assert user.read_at(n["notificationID"]) is not None
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)

    # without next, or with a next elsewhere: marked read, stays, the landing parameters gone
    m = publisher.unicast("123", "Me too")
    page.goto(
        f"{server.url}/app/?read={m['notificationID']}&client=123&next=https%3A%2F%2Fevil.example%2F"
    )
    expect(page.locator(f"#list > li.item[data-id='{m['notificationID']}']")).to_have_attribute(
        "data-read", "true", timeout=LIVE_TIMEOUT
    )
    assert page.url == f"{server.url}/app/?user=123"
    assert user.read_at(m["notificationID"]) is not None

    # another user's notification is not marked read by this user
    other = publisher.unicast("456", "Not yours")
    page.goto(f"{server.url}/app/?user=123&read={other['notificationID']}&client=456")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    page.wait_for_url("**/app/?user=123", timeout=LIVE_TIMEOUT)
    assert User(server.url, "456").read_at(other["notificationID"]) is None
    shot(page, "p4-opened-from-notification")
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_control_hidden_when_push_is_off_on_the_server(
    push_context: Any, server: Any, console: Any
) -> None:
    routes = FakePushRoutes(push_context, None)
    page = open_inbox(push_context, server)
    for _ in range(100):  # the key is asked for after the first load
        if routes.key_requests:
            break
        page.wait_for_timeout(100)
    assert routes.key_requests == 1
    page.wait_for_timeout(300)  # the 404 answer's handling
    expect(page.get_by_role("button", name=ENABLE)).to_be_hidden()
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_denied_permission_is_said(context: Any, server: Any, shot: Any) -> None:
    context.add_init_script(FAKE_PUSH_MANAGER % json.dumps(SUBSCRIPTION))
    context.add_init_script("Notification.requestPermission = async () => 'denied';")
    routes = FakePushRoutes(context, vapid_public_key())
    page = open_inbox(context, server)
    page.get_by_role("button", name=ENABLE).click()
    expect(page.locator("#push-status")).to_contain_text(
        "blocked for this site", timeout=LIVE_TIMEOUT
    )
    assert routes.stored == {}
    shot(page, "p5-push-denied")


@pytest.fixture
def push_server(tmp_path: Path) -> Iterator[Any]:
    """The real server with its real push routes, pushing to the mock push service on loopback."""
    from tests.browser.conftest import ServerProcess

    srv = ServerProcess(tmp_path)
    srv.env["MERCURIO_PUSH_ENDPOINT_HOSTS"] = "127.0.0.1"
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.timeout(120)
def test_end_to_end_publish_reaches_the_push_service_and_the_worker_shows_it(
    context: Any, push_server: Any, console: Any, shot: Any
) -> None:
    """The app subscribes against the server's real routes with a mock push service device;
    a publish is pushed there, signed with the key the app subscribed with, and decrypts to the
    payload the worker then shows."""
    from tests.browser.conftest import Publisher
    from tests.push_service import ThreadedPushService

    server = push_server
    with ThreadedPushService() as service:
        device = service.device()
        context.grant_permissions(["notifications"], origin=server.url)
        context.add_init_script(FAKE_PUSH_MANAGER % json.dumps(device.subscription_json()))
        page = open_inbox(context, server)
        enable(page)

        user = User(server.url, "123")
        listed = httpx.get(f"{user.base}/push-subscriptions", headers=user.headers).json()
        assert [s["endpoint"] for s in listed["subscriptions"]] == [device.endpoint]
        key = httpx.get(f"{server.url}/api/push/vapid-public-key", headers=user.headers).json()
        asked = json.loads(page.evaluate("localStorage.getItem('mercurio-test-push-key')"))
        assert b64url(bytes(asked["serverKey"])) == key["publicKey"].rstrip("=")
        service.expect_vapid_key(key["publicKey"])

        data = {"title": "Build green", "body": "main is deployable", "url": "/app/?user=123"}
        published = Publisher(server.url).unicast("123", data, category="system")
        (received,) = service.wait_for(1)
        assert service.refused == []
        pushed = received.json()
        assert pushed["notificationID"] == published["notificationID"]
        assert pushed["clientID"] == "123" and pushed["category"] == "system"
        assert pushed["data"] == data and isinstance(pushed["createdAt"], str)

        # what the push service carried, delivered to the worker as the browser would
        Pusher(context, page, server.url).push(pushed)
        (shown,) = wait_shown(page, 1)
        assert (shown["title"], shown["body"]) == ("Build green", "main is deployable")
        assert shown["tag"] == str(published["notificationID"])
        shot(page, "p6-end-to-end-pushed")

        user.mark_read(published["notificationID"])
        wait_shown(page, 0)

        # turning off deletes the server's record
        page.get_by_role("button", name=DISABLE).click()
        expect(page.get_by_role("button", name=ENABLE)).to_be_visible(timeout=LIVE_TIMEOUT)
        listed = httpx.get(f"{user.base}/push-subscriptions", headers=user.headers).json()
        assert listed["subscriptions"] == []
    assert console.app_errors() == []


@pytest.mark.timeout(60)
def test_control_hidden_when_the_real_server_has_push_off(
    context: Any, tmp_path: Path, console: Any
) -> None:
    from tests.browser.conftest import ServerProcess

    srv = ServerProcess(tmp_path)
    srv.env["MERCURIO_PUSH"] = "off"
    srv.start()
    try:
        context.grant_permissions(["notifications"], origin=srv.url)
        page = context.new_page()
        asked = []
        page.on(
            "response",
            lambda r: asked.append(r.status) if "vapid-public-key" in r.url else None,
        )
        page.goto(f"{srv.url}/app/?user=123")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
        for _ in range(100):
            if asked:
                break
            page.wait_for_timeout(100)
        assert asked == [404]
        page.wait_for_timeout(300)
        expect(page.get_by_role("button", name=ENABLE)).to_be_hidden()
        expect(page.locator("#push-status")).to_be_hidden()
    finally:
        srv.stop()
    assert console.app_errors() == []
