"""Per-channel preferences (issue 12, item 9): the extended preferences route, what push and
e-mail do with it, and the migration that brings old databases along. All against real
server processes (push against the mock push service, e-mail against aiosmtpd)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from mercurio.store import Store
from tests.conftest import (
    PUBLISHER,
    ServerProcess,
    bearer,
    free_port,
    new_client_id,
    postgres_database,
)
from tests.push_service import MockPushService
from tests.test_email_digest import (
    Mailbox,
    address_of,
    arrived,
    body,
    email_env,
    publish,
    put_contact,
    settled,
    unsubscribe_url,
)
from tests.test_push_delivery import metric_shows, push_env, pushed_ids, start

pytestmark = pytest.mark.timeout(120)

DEFAULTS: dict[str, Any] = {
    "mutedCategories": [],
    "channels": {
        "push": {"enabled": True, "mutedCategories": []},
        "email": {"enabled": True, "mutedCategories": []},
    },
}


def route(user: str) -> str:
    return f"/api/clients/{user}/preferences"


async def get_prefs(api: httpx.AsyncClient, user: str) -> dict[str, Any]:
    answer = await api.get(route(user), headers=bearer(user))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def put_prefs(api: httpx.AsyncClient, user: str, change: dict[str, Any]) -> dict[str, Any]:
    answer = await api.put(route(user), json=change, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def expected(user: str, **changes: Any) -> dict[str, Any]:
    """DEFAULTS for user, with changes keyed by path: channels__push__enabled=False."""
    out: dict[str, Any] = {"clientID": user, **deepcopy(DEFAULTS)}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = out
        for part in parents:
            target = target[part]
        target[leaf] = value
    return out


# -- the route ------------------------------------------------------------------------------


async def test_get_answers_the_defaults_for_a_client_who_chose_nothing(
    api: httpx.AsyncClient,
) -> None:
    user = new_client_id()
    assert await get_prefs(api, user) == expected(user)


async def test_each_part_put_alone_replaces_only_itself(api: httpx.AsyncClient) -> None:
    user = new_client_id()
    state: dict[str, Any] = {}
    steps: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"mutedCategories": ["promo"]}, {"mutedCategories": ["promo"]}),
        ({"channels": {"push": {"enabled": False}}}, {"channels__push__enabled": False}),
        (
            {"channels": {"push": {"mutedCategories": ["social", "billing"]}}},
            {"channels__push__mutedCategories": ["billing", "social"]},
        ),
        ({"channels": {"email": {"enabled": False}}}, {"channels__email__enabled": False}),
        (
            {"channels": {"email": {"mutedCategories": ["news"]}}},
            {"channels__email__mutedCategories": ["news"]},
        ),
        ({"channels": {"push": {"enabled": True}}}, {"channels__push__enabled": True}),
        ({"channels": {"email": {"enabled": True}}}, {"channels__email__enabled": True}),
        ({"mutedCategories": []}, {"mutedCategories": []}),
        (
            {"channels": {"push": {"mutedCategories": []}, "email": {"enabled": False}}},
            {"channels__push__mutedCategories": [], "channels__email__enabled": False},
        ),
    ]
    for change, effect in steps:
        state.update(effect)
        want = expected(user, **state)
        assert await put_prefs(api, user, change) == want, change
        assert await get_prefs(api, user) == want, change
    # Turning e-mail off and on made no address up.
    contact = await api.get(f"/api/clients/{user}/contact", headers=bearer(user))
    assert contact.status_code == 404


async def test_the_old_body_still_mutes_everywhere_and_keeps_the_channels(
    api: httpx.AsyncClient,
) -> None:
    user = new_client_id()
    await put_prefs(api, user, {"channels": {"push": {"enabled": False}}})
    answer = await put_prefs(api, user, {"mutedCategories": ["security", "billing", "security"]})
    assert answer["clientID"] == user
    assert answer["mutedCategories"] == ["billing", "security"]
    assert answer["channels"]["push"] == {"enabled": False, "mutedCategories": []}
    assert await get_prefs(api, user) == answer


BAD_BODIES: list[tuple[dict[str, Any] | list[Any], str]] = [
    ({}, "nothing to change"),
    ({"channels": {}}, "nothing to change"),
    ({"channels": {"push": {}, "email": {}}}, "nothing to change"),
    ({"channels": {"sms": {"enabled": False}}}, "channels.sms: unknown field"),
    ({"channels": {"push": {"enabled": False, "muted": []}}}, "channels.push.muted"),
    ({"channels": {"push": {"enabled": "false"}}}, "channels.push.enabled"),
    ({"channels": {"push": {"enabled": 0}}}, "channels.push.enabled"),
    ({"channels": {"email": {"enabled": None}}}, "channels.email.enabled"),
    ({"channels": {"push": {"mutedCategories": ["Not A Slug"]}}}, "channels.push.mutedCategories"),
    (
        {"mutedCategories": ["ok"], "channels": {"email": {"mutedCategories": ["ok", "x" * 33]}}},
        "channels.email.mutedCategories",
    ),
    ({"channels": {"push": {"mutedCategories": ["a"] * 101}}}, "channels.push.mutedCategories"),
    ({"channels": {"email": {"mutedCategories": "news"}}}, "channels.email.mutedCategories"),
    ({"mutedCategories": ["Bad"]}, "mutedCategories"),
    ({"mutedCategories": None}, "mutedCategories"),
    ({"channels": None}, "channels"),
    ({"channels": []}, "channels"),
    ({"mutedCategories": [], "extra": True}, "extra: unknown field"),
    ([], ""),
]


@pytest.mark.parametrize(("bad", "says"), BAD_BODIES)
async def test_a_bad_body_is_422_and_changes_nothing(
    api: httpx.AsyncClient, bad: dict[str, Any] | list[Any], says: str
) -> None:
    user = new_client_id()
    before = await put_prefs(
        api,
        user,
        {
            "mutedCategories": ["kept"],
            "channels": {"push": {"mutedCategories": ["p"]}, "email": {"enabled": False}},
        },
    )
    answer = await api.put(route(user), json=bad, headers=bearer(user))
    assert answer.status_code == 422, answer.text
    assert set(answer.json()) == {"error"} and says in answer.json()["error"]
    assert await get_prefs(api, user) == before


async def test_another_client_may_not_read_or_change_them(api: httpx.AsyncClient) -> None:
    user, other = new_client_id(), new_client_id()
    change = {"channels": {"push": {"enabled": False}}}
    assert (await api.get(route(user), headers=bearer(other))).status_code == 403
    assert (await api.put(route(user), json=change, headers=bearer(other))).status_code == 403
    assert (await api.put(route(user), json=change, headers=PUBLISHER)).status_code == 403
    assert await get_prefs(api, user) == expected(user)


# -- e-mail ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def mail_server(
    smtp: tuple[Mailbox, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("prefs-email")
    proc = ServerProcess.in_folder(folder, email_env(smtp[1], MERCURIO_NID="prefs-mail")).start()
    yield proc
    proc.stop()


@pytest.fixture
async def mail_api(mail_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mail_server.url, timeout=10) as client:
        yield client


async def test_email_muted_categories_are_left_out_of_the_digest_but_still_listed(
    mail_api: httpx.AsyncClient, smtp: tuple[Mailbox, int]
) -> None:
    box, _ = smtp
    user = new_client_id()
    address = await put_contact(mail_api, user)
    change = {"channels": {"email": {"mutedCategories": ["promo"]}, "push": {"enabled": False}}}
    await put_prefs(mail_api, user, change)
    await publish(mail_api, user, {"title": "email-muted"}, category="promo")
    await publish(mail_api, user, {"title": "mailed"}, category="billing")
    await arrived(lambda: len(box.to(address)) == 1, "no digest arrived")
    text = body(box.to(address)[0], "plain")
    assert "mailed" in text and "email-muted" not in text
    assert box.to(address)[0]["Subject"] == "1 unread notification"
    # Muted for e-mail only: still in the inbox.
    listed = await mail_api.get(f"/api/clients/{user}/notifications", headers=bearer(user))
    assert len(listed.json()["notifications"]) == 2


async def test_email_turned_off_sends_nothing_and_on_again_sends(
    mail_api: httpx.AsyncClient, smtp: tuple[Mailbox, int], mail_server: ServerProcess
) -> None:
    box, _ = smtp
    db = mail_server.env["MERCURIO_DB_CONN"]
    user = new_client_id()
    address = await put_contact(mail_api, user)
    off = await put_prefs(mail_api, user, {"channels": {"email": {"enabled": False}}})
    assert off["channels"]["email"]["enabled"] is False
    contact = await mail_api.get(f"/api/clients/{user}/contact", headers=bearer(user))
    assert contact.json() == {
        "clientID": user,
        "email": address,
        "source": "api",
        "emailEnabled": False,
    }
    await settled(db, [user], await publish(mail_api, user, {"title": "while-off"}))
    assert box.to(address) == []

    await put_prefs(mail_api, user, {"channels": {"email": {"enabled": True}}})
    await publish(mail_api, user, {"title": "while-on"})
    await arrived(lambda: len(box.to(address)) == 1, "no digest after e-mail was on again")
    assert "while-on" in body(box.to(address)[0], "plain")


async def test_the_one_click_unsubscribe_shows_as_email_disabled(
    mail_api: httpx.AsyncClient, smtp: tuple[Mailbox, int]
) -> None:
    box, _ = smtp
    user = new_client_id()
    address = await put_contact(mail_api, user)
    assert address == address_of(user)
    await publish(mail_api, user, {"title": "has a link"})
    await arrived(lambda: len(box.to(address)) == 1, "no digest arrived")
    link = unsubscribe_url(box.to(address)[0])
    assert (await get_prefs(mail_api, user))["channels"]["email"]["enabled"] is True
    one_click = await mail_api.post(link, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200, one_click.text
    assert await get_prefs(mail_api, user) == expected(user, channels__email__enabled=False)
    # The preferences switch turns it back on, the same flag the contact route shows.
    await put_prefs(mail_api, user, {"channels": {"email": {"enabled": True}}})
    contact = await mail_api.get(f"/api/clients/{user}/contact", headers=bearer(user))
    assert contact.json()["emailEnabled"] is True


# -- Web Push -------------------------------------------------------------------------------


@pytest.fixture
async def service() -> AsyncIterator[MockPushService]:
    async with MockPushService() as running:
        yield running


@pytest.fixture
async def started() -> AsyncIterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.stop(signal.SIGKILL)


def dropped(count: int) -> str:
    return f'mercurio_channel_deliveries_total{{channel="push",result="dropped"}} {count}.0'


async def test_push_turned_off_pushes_nothing_and_on_again_pushes(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user = new_client_id()
    await api.register(user, service.device())
    await put_prefs(api.http, user, {"channels": {"push": {"enabled": False}}})
    await api.unicast(user, "while off")
    await metric_shows(api, dropped(1))
    assert service.attempts == [] and service.received == []

    await put_prefs(api.http, user, {"channels": {"push": {"enabled": True}}})
    on = await api.unicast(user, "while on")
    await service.wait_for(1)
    assert pushed_ids(service) == [on]
    await api.close()


async def test_a_push_muted_category_is_not_pushed_and_the_others_are(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user = new_client_id()
    await api.register(user, service.device())
    change = {
        "mutedCategories": ["security"],
        "channels": {"push": {"mutedCategories": ["social"]}, "email": {"mutedCategories": ["x"]}},
    }
    await put_prefs(api.http, user, change)
    await api.unicast(user, "push-muted", category="social")
    await api.unicast(user, "muted everywhere", category="security")
    email_muted = await api.unicast(user, "muted for e-mail only", category="x")
    pushed = await api.unicast(user, "pushed", category="billing")
    await service.wait_for(2)
    await metric_shows(api, dropped(2))
    assert sorted(pushed_ids(service)) == [email_muted, pushed]
    await api.close()


# -- the migration --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def db_conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    with postgres_database() as url:
        yield url


def _migrate(connection: sa.Connection, revision: str, down: bool = False) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option(
        "script_location", str(Path(__file__).parents[1] / "mercurio/migrations")
    )
    config.attributes["connection"] = connection
    (command.downgrade if down else command.upgrade)(config, revision)


async def test_a_database_at_0004_keeps_its_preferences_rows_through_0005(
    db_conn: str, tmp_path: Path
) -> None:
    user, unsubscribed = new_client_id(), new_client_id()
    old = Store(db_conn)
    await old.start(migrate=False)
    async with old.write_engine().begin() as conn:
        await conn.run_sync(_migrate, "0004")
        await conn.execute(
            sa.text("INSERT INTO preferences (client_id, muted_categories) VALUES (:c, :m)"),
            {"c": user, "m": '["promo", "social"]'},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO contacts (client_id, email, source, email_off, updated_at)"
                " VALUES (:c, NULL, 'token', :off, CURRENT_TIMESTAMP)"
            ),
            {"c": unsubscribed, "off": True},
        )
    await old.close()

    server = ServerProcess.in_folder(tmp_path, {"MERCURIO_DB_CONN": db_conn})
    await asyncio.to_thread(server.start)  # migrates to the newest revision
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
            kept = expected(user, mutedCategories=["promo", "social"])
            assert await get_prefs(api, user) == kept
            off = expected(unsubscribed, channels__email__enabled=False)
            assert await get_prefs(api, unsubscribed) == off
            changed = await put_prefs(api, user, {"channels": {"push": {"enabled": False}}})
            assert changed == expected(
                user, mutedCategories=["promo", "social"], channels__push__enabled=False
            )
    finally:
        server.stop()

    down = Store(db_conn)
    await down.start(migrate=False)
    try:
        async with down.write_engine().begin() as conn:
            await conn.run_sync(_migrate, "0004", True)
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("preferences")}
            )
            rows = (await conn.execute(sa.text("SELECT muted_categories FROM preferences"))).all()
        assert columns == {"client_id", "muted_categories"}
        assert [row[0] for row in rows] == ['["promo", "social"]']
    finally:
        await down.close()
