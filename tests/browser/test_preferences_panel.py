"""The preferences menu's channel switches and per-channel mutes, through the real route."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.test_web_app import LIVE_TIMEOUT, open_inbox

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect


def stored(server: Any, user: str) -> dict[str, Any]:
    """What the server holds, read with the user's own token."""
    token = httpx.post(f"{server.url}/api/dev/token", json={"userID": user}).json()["token"]
    answer = httpx.get(
        f"{server.url}/api/clients/{user}/preferences",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def switch(page: Any, name: str) -> Any:
    return page.get_by_role("switch", name=name, exact=True)


def open_menu(page: Any) -> None:
    page.locator("#mute-menu summary").click()
    expect(page.locator("#mute-menu .mute-pop")).to_be_visible()


def expect_stored(server: Any, want: dict[str, Any]) -> None:
    """Until the server holds want (the saves are asynchronous), then exactly that."""
    deadline = time.monotonic() + LIVE_TIMEOUT / 1000
    while stored(server, "123") != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored(server, "123") == want


def test_channel_switches_and_per_channel_mutes_round_trip(
    context: Any, server: Any, publisher: Any, console: Any, shot: Any
) -> None:
    publisher.unicast("123", "Anna liked your photo", category="social")
    publisher.unicast("123", "Invoice paid", category="billing")
    page = open_inbox(context, server)
    open_menu(page)
    push, email = switch(page, "Desktop notifications"), switch(page, "E-mail digests")
    expect(push).to_be_checked()
    expect(email).to_be_checked()

    push.uncheck()
    switch(page, "No e-mail digests for social").check()
    switch(page, "No desktop notifications for billing").check()
    switch(page, "Mute billing").check()
    # Muted everywhere covers the channels: shown on, and not editable per channel.
    expect(switch(page, "No e-mail digests for billing")).to_be_checked()
    expect(switch(page, "No e-mail digests for billing")).to_be_disabled()
    expect(page.locator("#muted-count")).to_have_text("1", timeout=LIVE_TIMEOUT)
    email.uncheck()

    want = {
        "clientID": "123",
        "mutedCategories": ["billing"],
        "channels": {
            "push": {"enabled": False, "mutedCategories": ["billing"]},
            "email": {"enabled": False, "mutedCategories": ["social"]},
        },
    }
    expect_stored(server, want)
    expect(page.locator("#mute-error")).to_be_hidden()
    shot(page, "p1-preferences-menu", full_page=False)

    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    open_menu(page)
    expect(switch(page, "Desktop notifications")).not_to_be_checked(timeout=LIVE_TIMEOUT)
    expect(switch(page, "E-mail digests")).not_to_be_checked()
    expect(switch(page, "Mute billing")).to_be_checked()
    expect(switch(page, "No e-mail digests for social")).to_be_checked()
    expect(switch(page, "No desktop notifications for social")).not_to_be_checked()
    expect(switch(page, "Mute social")).not_to_be_checked()

    # Un-muting everywhere shows the channel's own choice again, and all of it is reversible.
    switch(page, "Mute billing").uncheck()
    expect(switch(page, "No desktop notifications for billing")).to_be_checked()
    expect(switch(page, "No e-mail digests for billing")).not_to_be_checked()
    expect(switch(page, "No e-mail digests for billing")).to_be_enabled()
    switch(page, "Desktop notifications").check()
    switch(page, "E-mail digests").check()
    switch(page, "No e-mail digests for social").uncheck()
    switch(page, "No desktop notifications for billing").uncheck()
    expect_stored(
        server,
        {
            "clientID": "123",
            "mutedCategories": [],
            "channels": {
                "push": {"enabled": True, "mutedCategories": []},
                "email": {"enabled": True, "mutedCategories": []},
            },
        },
    )
    assert console.app_errors() == []


def test_a_failed_save_is_shown_and_the_switch_goes_back(context: Any, server: Any) -> None:
    page = open_inbox(context, server)
    open_menu(page)
    expect(switch(page, "E-mail digests")).to_be_checked()
    server.stop()  # the PUT cannot reach it: the menu must say so, not keep the new state
    # click(), not uncheck(): the refusal may flip it back before Playwright looks.
    switch(page, "E-mail digests").click()
    error = page.locator("#mute-error")
    expect(error).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(error).to_contain_text("Could not save")
    expect(switch(page, "E-mail digests")).to_be_checked()
    server.start()
    assert stored(server, "123")["channels"]["email"]["enabled"] is True
