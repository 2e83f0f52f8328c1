"""Following and unfollowing topics in the app's Preferences menu, through the real routes:
what is followed reaches the list live, what is unfollowed stops, and a bad name is refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.test_preferences_panel import open_menu
from tests.browser.test_web_app import LIVE_TIMEOUT, items, open_inbox

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect


def followed_on_server(server: Any, user: str) -> list[str]:
    token = httpx.post(f"{server.url}/api/dev/token", json={"userID": user}).json()["token"]
    answer = httpx.get(
        f"{server.url}/api/clients/{user}/topics", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["topics"])


def until_followed(server: Any, want: list[str]) -> None:
    deadline = time.monotonic() + LIVE_TIMEOUT / 1000
    while followed_on_server(server, "123") != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert followed_on_server(server, "123") == want


def publish_topic(server: Any, publisher: Any, topic: str, data: str) -> int:
    answer = httpx.post(
        f"{server.url}/api/events/topic",
        json={"topic": topic, "sourceID": "tests", "data": data},
        headers=publisher.headers,
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


@pytest.mark.timeout(90)
def test_follow_and_unfollow_a_topic_from_the_preferences_menu(
    context: Any, server: Any, publisher: Any, console: Any, shot: Any
) -> None:
    publish_topic(server, publisher, "release-notes", "Before following: never shown")
    page = open_inbox(context, server)
    open_menu(page)
    expect(page.locator("#topic-none")).to_be_visible()

    page.locator("#topic-add-input").fill("Not A Slug")
    page.get_by_role("button", name="Follow", exact=True).click()
    expect(page.locator("#topic-error")).to_contain_text("lowercase letters, digits")
    assert followed_on_server(server, "123") == []

    page.locator("#topic-add-input").fill("release-notes")
    page.get_by_role("button", name="Follow", exact=True).click()
    expect(page.locator("#topic-list li")).to_have_text(["release-notesUnfollow"])
    expect(page.locator("#topic-none")).to_be_hidden()
    until_followed(server, ["release-notes"])
    shot(page, "topics-followed")

    publish_topic(server, publisher, "release-notes", "Version 2 is out")
    expect(items(page, "Version 2 is out")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(items(page, "never shown")).to_have_count(0)

    page.get_by_role("button", name="Unfollow release-notes").click()
    expect(page.locator("#topic-list li")).to_have_count(0)
    until_followed(server, [])
    publish_topic(server, publisher, "release-notes", "After unfollowing: not for 123")
    page.reload()
    expect(items(page, "Version 2 is out")).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(items(page, "not for 123")).to_have_count(0)
    assert console.app_errors() == []
