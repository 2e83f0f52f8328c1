"""E-mail digests end to end: a real server process sends to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import orjson
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.ext.asyncio import create_async_engine

from mercurio.channels.digest import Digest, compose
from mercurio.channels.smtp import parse_smtp_url
from mercurio.config import DEVELOPMENT_KEY, load_settings
from mercurio.errors import ConfigError
from mercurio.model import Notification
from mercurio.schema import consumer_cursors, deliveries
from mercurio.urls import database_url
from tests.conftest import (
    PUBLISHER,
    ServerProcess,
    bearer,
    free_port,
    new_client_id,
    postgres_database,
    server_files,
)
from tests.helpers import until

DELAY = 1.0
"""MERCURIO_EMAIL_DELAY of the test servers, in seconds."""
WAIT = 20.0
"""Seconds a test waits for a digest before it fails."""


class Mailbox:
    """An aiosmtpd handler keeping what it accepted; refusals and holds scripted per address."""

    def __init__(self) -> None:
        self.accepted: list[EmailMessage] = []
        self.raw: dict[str, list[bytes]] = {}
        """Each accepted message as the SMTP server got it, by recipient."""
        self.refused: list[EmailMessage] = []
        self.replies: dict[str, list[str]] = {}
        """Replies to give an address's next messages instead of accepting them."""
        self.holds: dict[str, threading.Event] = {}
        """An address's next DATA gets no reply until the event is set (then a 451)."""
        self.holding = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        (to,) = envelope.rcpt_tos
        hold = self.holds.pop(to, None)
        if hold is not None:
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, hold.wait)
            self.refused.append(message)
            return "451 4.3.0 held by the test"
        scripted = self.replies.get(to)
        if scripted:
            self.refused.append(message)
            return scripted.pop(0)
        self.accepted.append(message)
        self.raw.setdefault(to, []).append(raw)
        return "250 2.0.0 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.accepted if address in str(m["To"])]

    def mentioning(self, text: str) -> list[EmailMessage]:
        return [m for m in self.accepted if text in body(m, "plain")]


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        for hold in handler.holds.values():
            hold.set()
        controller.stop()


def email_env(smtp_port: int, **more: str) -> dict[str, str]:
    return {
        "MERCURIO_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "MERCURIO_EMAIL_FROM": "Mercurio <noreply@mercurio.test>",
        "MERCURIO_EMAIL_DELAY": str(DELAY),
        "MERCURIO_PUSH": "off",
        **more,
    }


@pytest.fixture(scope="module")
def mail_server(
    mailbox: tuple[Mailbox, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("email-server")
    proc = ServerProcess.in_folder(folder, email_env(mailbox[1], MERCURIO_NID="email-a")).start()
    yield proc
    proc.stop()


@pytest.fixture
async def api(mail_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mail_server.url, timeout=10) as client:
        yield client


@pytest.fixture
def box(mailbox: tuple[Mailbox, int]) -> Mailbox:
    return mailbox[0]


@pytest.fixture
def db(mail_server: ServerProcess) -> str:
    """The shared server's database, which `settled` reads."""
    return mail_server.env["MERCURIO_DB_CONN"]


# -- helpers --------------------------------------------------------------------------------


def address_of(user: str) -> str:
    return f"{user}@example.com"


async def put_contact(api: httpx.AsyncClient, user: str) -> str:
    address = address_of(user)
    answer = await api.put(
        f"/api/clients/{user}/contact", json={"email": address}, headers=bearer(user)
    )
    assert answer.status_code == 200, answer.text
    return address


async def publish(api: httpx.AsyncClient, user: str, data: Any, **more: Any) -> int:
    body = {"sourceID": "666", "destinationID": user, "data": data, **more}
    answer = await api.post("/api/events/unicast", json=body, headers=PUBLISHER)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def arrived(check: Callable[[], bool], what: str) -> None:
    await until(check, WAIT, what, interval=0.05)


async def settled(db_conn: str, clients: list[str], last_id: int) -> None:
    """Wait until e-mail owes these clients nothing more: the enqueuer's cursor is past
    last_id and no delivery row of theirs is left. A row goes only after its send finished or
    was given up, so from here on nothing more can be mailed about those notifications (the
    fence that a sleep would only guess at)."""
    engine = create_async_engine(database_url(db_conn))
    cursor = sa.select(consumer_cursors.c.position).where(consumer_cursors.c.name == "email-digest")
    rows = sa.select(sa.func.count()).where(
        deliveries.c.channel == "email", deliveries.c.client_id.in_(clients)
    )
    deadline = time.monotonic() + WAIT
    try:
        while True:
            async with engine.connect() as conn:
                position = (await conn.execute(cursor)).scalar()
                owed = (await conn.execute(rows)).scalar_one()
            if position is not None and position >= last_id and owed == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"e-mail still owes {owed} (cursor at {position})")
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert isinstance(part, EmailMessage), f"no text/{subtype} part"
    return str(part.get_content())


def unsubscribe_url(message: EmailMessage) -> str:
    header = str(message["List-Unsubscribe"])
    assert header.startswith("<") and header.endswith(">"), header
    return header[1:-1]


def token_with_email(user: str, email: object) -> dict[str, str]:
    token = jwt.encode({"user_id": user, "email": email}, DEVELOPMENT_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


# -- the digest -----------------------------------------------------------------------------


async def test_one_digest_of_the_unread_ones_newest_first_and_never_twice(
    api: httpx.AsyncClient, box: Mailbox, db: str
) -> None:
    user = new_client_id()
    address = await put_contact(api, user)
    await publish(api, user, {"title": "first", "body": "one"})
    await publish(api, user, {"title": "<script>alert(1)</script>", "body": "a & b"})
    last = await publish(api, user, "third, a plain string")

    await arrived(lambda: len(box.to(address)) == 1, "no digest arrived")
    (message,) = box.to(address)
    assert message["Subject"] == "3 unread notifications"
    assert message["From"] == "Mercurio <noreply@mercurio.test>"
    assert str(message["Message-ID"]).startswith("<digest.")
    text, page = body(message, "plain"), body(message, "html")
    assert text.index("third, a plain string") < text.index("<script>") < text.index("first")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b" in page
    assert f"{api.base_url}/app/" in text and f'href="{api.base_url}/app/"' in page

    await settled(db, [user], last)
    assert len(box.to(address)) == 1, "a digest was e-mailed twice"


async def test_read_deleted_and_muted_notifications_are_left_out(
    api: httpx.AsyncClient, box: Mailbox
) -> None:
    user = new_client_id()
    address = await put_contact(api, user)
    mute = {"mutedCategories": ["promo"]}
    answer = await api.put(f"/api/clients/{user}/preferences", json=mute, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    read = await publish(api, user, {"title": "was-read"})
    deleted = await publish(api, user, {"title": "was-deleted"})
    await publish(api, user, {"title": "was-muted"}, category="promo")
    await publish(api, user, {"title": "still-unread"})
    notes = f"/api/clients/{user}/notifications"
    assert (await api.put(f"{notes}/{read}/read", headers=bearer(user))).status_code == 200
    assert (await api.delete(f"{notes}/{deleted}", headers=bearer(user))).status_code == 200

    await arrived(lambda: len(box.to(address)) == 1, "no digest arrived")
    text = body(box.to(address)[0], "plain")
    assert "still-unread" in text
    for gone in ("was-read", "was-deleted", "was-muted"):
        assert gone not in text
    assert box.to(address)[0]["Subject"] == "1 unread notification"


async def test_all_settled_before_the_delay_means_no_mail(
    api: httpx.AsyncClient, box: Mailbox, db: str
) -> None:
    user, marker = new_client_id(), new_client_id()
    address = await put_contact(api, user)
    nobody = new_client_id()  # no address at all
    read = await publish(api, user, {"title": f"settled-{marker}"})
    last = await publish(api, nobody, {"title": f"no-address-{marker}"})
    answer = await api.put(f"/api/clients/{user}/notifications/{read}/read", headers=bearer(user))
    assert answer.status_code == 200
    await settled(db, [user, nobody], last)
    assert not box.to(address), "a digest of nothing but read notifications was sent"
    assert not box.mentioning(marker), "a user without an address was e-mailed"


# -- where digests go -----------------------------------------------------------------------


async def test_contact_routes_own_client_or_publisher(api: httpx.AsyncClient) -> None:
    user, other = new_client_id(), new_client_id()
    route = f"/api/clients/{user}/contact"
    assert (await api.get(route, headers=bearer(user))).json() == {"error": "no contact address"}

    answer = await api.put(route, json={"email": "Someone@Example.COM"}, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    expected = {"clientID": user, "email": "Someone@example.com", "source": "api"}
    assert answer.json() == {**expected, "emailEnabled": True}
    assert (await api.get(route, headers=bearer(user))).json() == {**expected, "emailEnabled": True}

    refused = await api.put(route, json={"email": "x@example.com"}, headers=bearer(other))
    assert refused.status_code == 403
    assert (await api.get(route, headers=bearer(other))).status_code == 403
    assert (await api.delete(route, headers=bearer(other))).status_code == 403

    by_publisher = await api.put(route, json={"email": "new@example.com"}, headers=PUBLISHER)
    assert by_publisher.status_code == 200
    assert by_publisher.json()["email"] == "new@example.com"

    for bad in (
        "not-an-address",
        "a@b@c.com",
        "a@localhost",
        "ü@example.com",
        "a\r\nBcc: x@example.com",
    ):
        answer = await api.put(route, json={"email": bad}, headers=bearer(user))
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["error"].startswith("email: ")
    assert (
        await api.put(route, json={"mail": "x@example.com"}, headers=bearer(user))
    ).status_code == 422

    assert (await api.delete(route, headers=bearer(user))).json() == {"status": "deleted"}
    assert (await api.get(route, headers=bearer(user))).status_code == 404
    # A token's claim does not bring back an address the client deleted.
    claim = token_with_email(user, "claimed@example.com")
    assert (await api.get(f"/api/clients/{user}/notifications", headers=claim)).status_code == 200
    assert (await api.get(route, headers=bearer(user))).status_code == 404


async def test_the_token_email_claim_is_used_when_no_address_was_put(
    api: httpx.AsyncClient, box: Mailbox
) -> None:
    user, bad = new_client_id(), new_client_id()
    address = address_of(user)
    inbox = f"/api/clients/{user}/notifications"
    assert (await api.get(inbox, headers=token_with_email(user, address))).status_code == 200
    contact = (await api.get(f"/api/clients/{user}/contact", headers=bearer(user))).json()
    assert contact == {"clientID": user, "email": address, "source": "token", "emailEnabled": True}
    # A malformed claim is ignored, the token still works.
    for claim in ("no-at-sign", 42, ["a@example.com"]):
        headers = token_with_email(bad, claim)
        assert (
            await api.get(f"/api/clients/{bad}/notifications", headers=headers)
        ).status_code == 200
    assert (await api.get(f"/api/clients/{bad}/contact", headers=bearer(bad))).status_code == 404

    await publish(api, user, {"title": "via the claim"})
    await arrived(lambda: len(box.to(address)) == 1, "no digest to the claimed address")


async def test_one_click_unsubscribe_turns_e_mail_off(
    api: httpx.AsyncClient, box: Mailbox, db: str
) -> None:
    user = new_client_id()
    address = await put_contact(api, user)
    await publish(api, user, {"title": "before"})
    await arrived(lambda: len(box.to(address)) == 1, "no digest arrived")
    (message,) = box.to(address)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = unsubscribe_url(message)
    assert link.startswith(f"{api.base_url}/api/email/unsubscribe?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert query["c"] == user

    forged = await api.post(
        "/api/email/unsubscribe", params={"c": user, "s": query["s"][:-2] + "AA"}
    )
    assert forged.status_code == 403
    other = new_client_id()
    assert (
        await api.post("/api/email/unsubscribe", params={**query, "c": other})
    ).status_code == 403
    page = await api.get(link)  # what a mail scanner fetches: it must change nothing
    assert page.status_code == 200 and '<form method="post"' in page.text
    route = f"/api/clients/{user}/contact"
    assert (await api.get(route, headers=bearer(user))).json()["emailEnabled"] is True

    one_click = await api.post(link, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200, one_click.text
    assert (await api.get(route, headers=bearer(user))).json()["emailEnabled"] is False
    # A publisher updating the address keeps the user's choice.
    by_publisher = await api.put(route, json={"email": address}, headers=PUBLISHER)
    assert by_publisher.json()["emailEnabled"] is False

    await settled(db, [user], await publish(api, user, {"title": "after"}))
    assert len(box.to(address)) == 1, "e-mailed after the one-click unsubscribe"

    # The user's own PUT turns digests back on.
    again = await api.put(route, json={"email": address}, headers=bearer(user))
    assert again.json()["emailEnabled"] is True


# -- the SMTP server's answers ------------------------------------------------------------


async def test_list_unsubscribe_reaches_the_mail_server_as_a_url_not_rfc2047_encoded_words(
    api: httpx.AsyncClient, box: Mailbox
) -> None:
    """aiosmtplib flattened the digest with its own 78-column policy, so the long header went
    out as `=?utf-8?q?=3Chttp…?=`: mail clients look for `<https://…>` and found no link."""
    user = new_client_id()
    address = await put_contact(api, user)
    await publish(api, user, {"title": "read my headers"})
    await arrived(lambda: len(box.to(address)) == 1, "no digest arrived")
    (raw,) = box.raw[address]
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    (line,) = [h for h in head.split("\r\n") if h.startswith("List-Unsubscribe:")]
    assert line == f"List-Unsubscribe: <{unsubscribe_url(box.to(address)[0])}>", head
    assert "=?" not in head, head


async def test_4xx_is_retried_and_delivered_once_5xx_is_given_up(
    api: httpx.AsyncClient, box: Mailbox, db: str
) -> None:
    later, never = new_client_id(), new_client_id()
    later_address, never_address = await put_contact(api, later), await put_contact(api, never)
    box.replies[later_address] = ["451 4.7.1 greylisted, try again later"]
    box.replies[never_address] = ["550 5.1.1 no such mailbox"]
    await publish(api, later, {"title": "try again"})
    last = await publish(api, never, {"title": "refused for good"})

    await arrived(lambda: len(box.to(later_address)) == 1, "not delivered after the 451")
    refused = [m for m in box.refused if later_address in str(m["To"])]
    assert len(refused) == 1
    # The resend is the same message: a receiver can tell a copy from a second digest.
    assert refused[0]["Message-ID"] == box.to(later_address)[0]["Message-ID"]

    await settled(db, [later, never], last)
    assert len(box.to(later_address)) == 1
    assert [m for m in box.refused if never_address in str(m["To"])], "never tried"
    assert len([m for m in box.refused if never_address in str(m["To"])]) == 1, "5xx retried"
    assert not box.to(never_address)


async def test_an_announcement_goes_to_every_address_but_not_to_who_deleted_it(
    mailbox: tuple[Mailbox, int], tmp_path: Path
) -> None:
    # A server of its own: an announcement reaches every contact of its database.
    box, smtp_port = mailbox
    env = email_env(smtp_port, MERCURIO_NID="email-announce", **server_files(tmp_path))
    keeps, deletes = new_client_id(), new_client_id()
    server = ServerProcess(env).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
            addresses = [await put_contact(api, user) for user in (keeps, deletes)]
            body_ = {"sourceID": "666", "data": {"title": "for everyone"}}
            answer = await api.post("/api/events/announce", json=body_, headers=PUBLISHER)
            assert answer.status_code == 200, answer.text
            nid = answer.json()["notificationID"]
            route = f"/api/clients/{deletes}/notifications/{nid}"
            assert (await api.delete(route, headers=bearer(deletes))).status_code == 200
        await arrived(lambda: len(box.to(addresses[0])) == 1, "no digest of the announcement")
        assert "for everyone" in body(box.to(addresses[0])[0], "plain")
        await settled(env["MERCURIO_DB_CONN"], [keeps, deletes], nid)
        assert not box.to(addresses[1]), "e-mailed an announcement the user had deleted"
    finally:
        server.stop()


# -- durability ------------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_kill_9_while_the_smtp_server_holds_data_sends_the_digest_once(
    mailbox: tuple[Mailbox, int], tmp_path: Path
) -> None:
    box, smtp_port = mailbox
    env = email_env(smtp_port, MERCURIO_NID="email-kill", **server_files(tmp_path))
    user = new_client_id()
    address = address_of(user)
    hold = threading.Event()
    box.holding.clear()
    server = ServerProcess(env).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
            assert await put_contact(api, user) == address
            box.holds[address] = hold
            titles = [f"kept-{i}" for i in range(3)]
            last = max([await publish(api, user, {"title": title}) for title in titles])
            await asyncio.get_running_loop().run_in_executor(None, box.holding.wait, WAIT)
            assert box.holding.is_set(), "the digest never reached DATA"
        server.stop(signal.SIGKILL)
    finally:
        hold.set()  # the dead node's DATA gets its (unheard) 451 now
        server.stop(signal.SIGKILL)
    assert not box.to(address)

    restarted = ServerProcess(env).start()
    try:
        await arrived(lambda: len(box.to(address)) == 1, "the digest was lost in the crash")
        text = body(box.to(address)[0], "plain")
        assert all(title in text for title in titles), text
        await settled(env["MERCURIO_DB_CONN"], [user], last)
        assert len(box.to(address)) == 1, "sent twice after the restart"
    finally:
        restarted.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of its own (a sync fixture: postgres_database runs its own event loop)."""
    with postgres_database() as url:
        yield url


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_two_nodes_on_one_postgres_send_each_digest_once(
    mailbox: tuple[Mailbox, int], tmp_path: Path, pg_url: str
) -> None:
    box, smtp_port = mailbox
    nodes = [
        ServerProcess.in_folder(
            tmp_path / name,
            email_env(smtp_port, MERCURIO_DB_CONN=pg_url, MERCURIO_NID=name),
        )
        for name in ("pg-a", "pg-b")
    ]
    try:
        for node in nodes:
            (tmp_path / node.env["MERCURIO_NID"]).mkdir()
            node.start()
        users = [new_client_id() for _ in range(6)]
        async with (
            httpx.AsyncClient(base_url=nodes[0].url, timeout=10) as a,
            httpx.AsyncClient(base_url=nodes[1].url, timeout=10) as b,
        ):
            addresses = [await put_contact(a, user) for user in users]
            published = [
                await publish((a, b)[(i + round_) % 2], user, {"title": f"n{round_}"})
                for i, user in enumerate(users)
                for round_ in range(3)
            ]
        await arrived(lambda: all(box.to(address) for address in addresses), "a digest is missing")
        await settled(pg_url, users, max(published))
        counts = {address: len(box.to(address)) for address in addresses}
        assert set(counts.values()) == {1}, counts
    finally:
        for node in nodes:
            node.stop()


# -- the pieces, without servers -------------------------------------------------------------


def test_smtp_url_shapes() -> None:
    target = parse_smtp_url("smtp://us%40er:p%3Ass@mail.example.com:2525?starttls=true")
    assert (target.host, target.port, target.use_tls, target.start_tls) == (
        "mail.example.com",
        2525,
        False,
        True,
    )
    assert (target.username, target.password) == ("us@er", "p:ss")
    assert "p:ss" not in repr(target)
    tls = parse_smtp_url("smtps://mail.example.com")
    assert (tls.port, tls.use_tls, tls.start_tls, tls.username) == (465, True, False, None)
    assert parse_smtp_url("smtp://localhost").port == 25


@pytest.mark.parametrize(
    "url",
    [
        "smtp://:secret@/",
        "smtp://host:notaport",
        "smtp://host/path",
        "smtp://host?starttls=maybe",
        "smtp://host?tls=true",
        "smtps://host?starttls=true",
    ],
)
def test_a_bad_smtp_url_fails_at_start_without_showing_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match="MERCURIO_SMTP_URL") as refused:
        load_settings({"MERCURIO_ENV": "test", "MERCURIO_SMTP_URL": url})
    assert "secret" not in str(refused.value)


def test_a_bad_sender_address_fails_at_start() -> None:
    env = {"MERCURIO_ENV": "test", "MERCURIO_SMTP_URL": "smtp://h", "MERCURIO_EMAIL_FROM": "nope"}
    with pytest.raises(ConfigError, match="MERCURIO_EMAIL_FROM"):
        load_settings(env)


def test_a_long_digest_shows_twenty_and_counts_the_rest_and_links_only_http() -> None:
    now = datetime.now(UTC)
    notes = [
        Notification(i, f"e{i}", "666", "u1", "general", orjson.dumps(data).decode(), now)
        for i, data in enumerate(
            [{"title": "bad link", "url": "javascript:alert(1)"}]
            + [{"title": f"n{i}", "url": f"https://example.com/{i}"} for i in range(24)]
        )
    ]
    message = compose(
        Digest(
            to="someone@example.com",
            sender="Mercurio <noreply@mercurio.test>",
            notes=notes,
            app_url="https://mercurio.test/app/",
            unsubscribe_url="https://mercurio.test/api/email/unsubscribe?c=u1&s=x",
            message_id="<digest.x@mercurio.test>",
        )
    )
    parsed = message_from_bytes(bytes(message), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "25 unread notifications"
    text, page = body(parsed, "plain"), body(parsed, "html")
    assert "and 5 more" in text and "and 5 more" in page
    assert text.count("* ") == 20
    assert "javascript:" not in page
    assert 'href="https://example.com/3"' in page
    assert unsubscribe_url(parsed) == "https://mercurio.test/api/email/unsubscribe?c=u1&s=x"
