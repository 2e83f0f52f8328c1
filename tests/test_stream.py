"""The SSE stream: framing, credentials, resume, filters, read-state, token lifetime."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from starlette.types import Message
from structlog.testing import capture_logs

from mercurio.auth import Principal
from mercurio.config import load_settings
from mercurio.hub import Hub
from mercurio.model import Notification
from mercurio.store import Store
from mercurio.stream import CloseReason, StreamRequest, StreamWriter, Subscription, serve
from tests.conftest import PUBLISHER, bearer, make_token, new_client_id
from tests.helpers import until
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(60)


def stream_url(client: str) -> str:
    return f"/api/clients/{client}/notifications/stream"


def retries(raw: bytes) -> list[int]:
    """The `retry:` hints a stream sent, in milliseconds."""
    return [int(ms) for ms in re.findall(rb"retry: (\d+)\n\n", raw)]


def note(nid: int, client: str) -> Notification:
    return Notification(nid, f"e{nid}", "src", client, "general", '"d"', datetime.now(UTC))


async def publish(api: httpx.AsyncClient, client: str, data: object = "x", **extra: object) -> int:
    answer = await api.post(
        "/api/events/unicast",
        headers=PUBLISHER,
        json={"sourceID": "s", "destinationID": client, "data": data, **extra},
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def test_response_starts_at_once_with_headers_comment_and_retry(
    api: httpx.AsyncClient,
) -> None:
    client = new_client_id()
    async with api.stream("GET", stream_url(client), headers=bearer(client)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        first = b""
        async for chunk in response.aiter_raw():
            first += chunk
            if b"retry:" in first:
                break
        assert first.startswith(b": connected")
        assert all(3000 <= ms <= 6000 for ms in retries(first)), first  # base to twice base


async def test_heartbeat_comments_arrive_while_idle(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    async with api.stream("GET", stream_url(client), headers=bearer(client)) as response:
        seen = b""
        async for chunk in response.aiter_raw():
            seen += chunk
            if b": heartbeat" in seen:
                break
        assert b": heartbeat\n\n" in seen


async def test_ticket_opens_the_stream_once_only(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    answer = await api.post(f"/api/clients/{client}/stream-tickets", headers=bearer(client))
    assert answer.status_code == 200
    body = answer.json()
    assert body["expiresIn"] == 60
    async with open_stream(api, stream_url(client), params={"ticket": body["ticket"]}) as stream:
        assert stream.status == 200
        nid = await publish(api, client)
        assert (await stream.next_message()).data["notificationID"] == nid
    again = await api.get(stream_url(client), params={"ticket": body["ticket"]})
    assert again.status_code == 401
    assert "already used" in again.json()["error"]


async def test_ticket_is_for_its_client_only(api: httpx.AsyncClient) -> None:
    owner, other = new_client_id(), new_client_id()
    ticket = (await api.post(f"/api/clients/{owner}/stream-tickets", headers=bearer(owner))).json()[
        "ticket"
    ]
    answer = await api.get(stream_url(other), params={"ticket": ticket})
    assert answer.status_code == 403
    forged = await api.get(stream_url(owner), params={"ticket": ticket[:-3] + "abc"})
    assert forged.status_code == 401
    refused = await api.post(f"/api/clients/{owner}/stream-tickets", headers=bearer(other))
    assert refused.status_code == 403


async def test_a_bearer_token_is_not_a_ticket(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    answer = await api.get(stream_url(client), params={"ticket": make_token(client)})
    assert answer.status_code == 401


@pytest.mark.parametrize("name", ["token", "access_token", "jwt"])
async def test_token_in_query_string_is_refused_with_a_pointer_to_tickets(
    api: httpx.AsyncClient, name: str
) -> None:
    client = new_client_id()
    answer = await api.get(stream_url(client), params={name: make_token(client)})
    assert answer.status_code == 401
    assert "ticket" in answer.json()["error"]


async def test_cookie_opens_the_stream(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    headers = {"Cookie": f"mercurio_token={make_token(client)}"}
    async with open_stream(api, stream_url(client), headers=headers) as stream:
        assert stream.status == 200
        nid = await publish(api, client)
        assert (await stream.next_message()).data["notificationID"] == nid


async def test_stream_refusals(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    assert (await api.get(stream_url(client))).status_code == 401
    assert (await api.get(stream_url(client), headers=bearer("someone-else"))).status_code == 403
    bad = await api.get(stream_url(client), headers={**bearer(client), "Last-Event-ID": "x"})
    assert bad.status_code == 400
    cats = await api.get(
        stream_url(client), params={"categories": "Bad Cat"}, headers=bearer(client)
    )
    assert cats.status_code == 400


async def test_resume_with_last_event_id_replays_missed_in_order_then_live(
    api: httpx.AsyncClient,
) -> None:
    client = new_client_id()
    ids = [await publish(api, client, i) for i in range(5)]
    for how in ("header", "query"):
        headers = bearer(client)
        params = None
        if how == "header":
            headers["Last-Event-ID"] = str(ids[1])
        else:
            params = {"lastEventId": str(ids[1])}
        async with open_stream(api, stream_url(client), headers=headers, params=params) as stream:
            replayed = await stream.messages(len(ids) - 2)
            assert [int(m.id) for m in replayed] == ids[2:]
            live = await publish(api, client, "live")
            assert int((await stream.next_message()).id) == live
            ids.append(live)


async def test_reconnecting_client_misses_nothing(api: httpx.AsyncClient) -> None:
    """A client that drops and reconnects with its Last-Event-ID, as EventSource does."""
    client = new_client_id()
    received: list[int] = []
    last: str | None = None
    expected: list[int] = []
    for round_ in range(3):
        headers = bearer(client)
        if last is not None:
            headers["Last-Event-ID"] = last
        async with open_stream(api, stream_url(client), headers=headers) as stream:
            for _ in range(2):
                expected.append(await publish(api, client, round_))
            while len(received) < len(expected):
                message = await stream.next_message()
                received.append(int(message.id))
                last = message.id
        # dropped: these are published while the client is away
        expected.append(await publish(api, client, "away"))
    async with open_stream(
        api, stream_url(client), headers={**bearer(client), "Last-Event-ID": str(last)}
    ) as stream:
        while len(received) < len(expected):
            received.append(int((await stream.next_message()).id))
    assert received == expected


async def test_publishes_during_replay_arrive_once_in_order(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    first = [await publish(api, client, i) for i in range(30)]
    published = list(first)
    stop = asyncio.Event()

    async def keep_publishing() -> None:
        while not stop.is_set():
            published.append(await publish(api, client, "during"))

    publisher = asyncio.create_task(keep_publishing())
    try:
        headers = {**bearer(client), "Last-Event-ID": str(first[0])}
        async with open_stream(api, stream_url(client), headers=headers) as stream:
            got = [int(m.id) for m in await stream.messages(40)]
            stop.set()
            await publisher
            while got[-1] != published[-1]:
                got.append(int((await stream.next_message()).id))
    finally:
        stop.set()
        await publisher
    assert got == published[1:]


async def test_replay_longer_than_limit_sends_newest_then_reset(api: httpx.AsyncClient) -> None:
    client = new_client_id()  # the shared server runs with MERCURIO_REPLAY_MAX=50
    answer = await api.post(
        "/api/events/broadcast",
        headers=PUBLISHER,
        json={"sourceID": "s", "destinations": [client], "data": 0},
    )
    ids = [answer.json()[0]["notificationID"]]
    ids += [await publish(api, client, i) for i in range(1, 60)]
    headers = {**bearer(client), "Last-Event-ID": "0"}
    async with open_stream(api, stream_url(client), headers=headers) as stream:
        replayed = [int(m.id) for m in await stream.messages(50)]
        assert replayed == ids[-50:]
        reset = await stream.next()
        assert reset.event == "reset"


async def test_category_filter_and_muted_categories(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    me = bearer(client)
    async with (
        open_stream(
            api, stream_url(client), headers=me, params={"categories": "comment,mention"}
        ) as filtered,
        open_stream(api, stream_url(client), headers=me) as everything,
    ):
        other = await publish(api, client, "sys", category="system")
        comment = await publish(api, client, "c", category="comment")
        assert int((await filtered.next_message()).id) == comment
        got = [int(m.id) for m in await everything.messages(2)]
        assert got == [other, comment]
        assert everything.pending() == []
        muted = await api.put(
            f"/api/clients/{client}/preferences", json={"mutedCategories": ["mention"]}, headers=me
        )
        assert (muted.json()["clientID"], muted.json()["mutedCategories"]) == (client, ["mention"])
        hidden = await publish(api, client, "m", category="mention")
        shown = await publish(api, client, "c2", category="comment")
        assert int((await everything.next_message()).id) == shown
        assert int((await filtered.next_message()).id) == shown
    listed = (
        await api.get(
            f"/api/clients/{client}/notifications",
            params={"category": "mention", "muted": "include"},
            headers=me,
        )
    ).json()
    assert [n["notificationID"] for n in listed["notifications"]] == [hidden]  # stored
    payload = (await api.get(f"/api/clients/{client}/notifications/{shown}", headers=me)).json()
    assert payload["category"] == "comment"


async def test_stream_payload_carries_category_and_created_at(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    async with open_stream(api, stream_url(client), headers=bearer(client)) as stream:
        await publish(api, client, "x", category="mention")
        data = (await stream.next_message()).data
        assert data["category"] == "mention"
        assert data["createdAt"].endswith("Z")
        assert set(data) == {
            "notificationID",
            "eventID",
            "sourceID",
            "clientID",
            "data",
            "category",
            "createdAt",
        }


async def test_read_state_reaches_every_open_stream_of_the_client(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    me = bearer(client)
    async with (
        open_stream(api, stream_url(client), headers=me) as tab1,
        open_stream(api, stream_url(client), headers=me) as tab2,
    ):
        nid = await publish(api, client)
        await tab1.next_message()
        await tab2.next_message()
        await api.put(f"/api/clients/{client}/notifications/{nid}/read", headers=me)
        for tab in (tab1, tab2):
            event = await tab.next()
            assert event.event == "read-state"
            assert event.data == {
                "notificationID": nid,
                "status": "read",
                "category": "general",
                "unreadCount": 0,
            }
        await api.put(f"/api/clients/{client}/notifications/{nid}/unread", headers=me)
        assert (await tab1.next()).data["unreadCount"] == 1
        assert (await tab2.next()).data["unreadCount"] == 1
        await api.put(f"/api/clients/{client}/notifications/read", headers=me)
        for tab in (tab1, tab2):
            event = await tab.next()
            assert event.data["notificationID"] is None and event.data["unreadCount"] == 0
        await api.delete(f"/api/clients/{client}/notifications/{nid}", headers=me)
        assert (await tab1.next()).data["status"] == "deleted"


async def test_mark_all_read_by_category_and_delete(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    me = bearer(client)
    a = await publish(api, client, 1, category="alpha")
    b = await publish(api, client, 2, category="beta")
    answer = await api.put(
        f"/api/clients/{client}/notifications/read", params={"category": "alpha"}, headers=me
    )
    assert answer.json() == {"status": "read", "updated": 1}
    unread = (
        await api.get(
            f"/api/clients/{client}/notifications", params={"status": "unread"}, headers=me
        )
    ).json()
    assert [n["notificationID"] for n in unread["notifications"]] == [b]
    assert (await api.delete(f"/api/clients/{client}/notifications/{a}", headers=me)).json() == {
        "status": "deleted"
    }
    assert (
        await api.get(f"/api/clients/{client}/notifications/{a}", headers=me)
    ).status_code == 404
    again = await api.delete(f"/api/clients/{client}/notifications/{a}", headers=me)
    assert again.status_code == 404


async def test_idempotent_publish_returns_the_existing_notification(
    api: httpx.AsyncClient,
) -> None:
    client = new_client_id()
    first = await publish(api, client, "once", id="order-42-shipped")
    second = await publish(api, client, "once", id="order-42-shipped")
    assert first == second
    other = new_client_id()
    answer = await api.post(
        "/api/events/broadcast",
        headers=PUBLISHER,
        json={
            "id": "order-42-shipped",
            "sourceID": "s",
            "destinations": [client, other],
            "data": "once",
        },
    )
    assert answer.json()[0]["notificationID"] == first
    assert answer.json()[1]["notificationID"] != first
    changed = await api.post(
        "/api/events/unicast",
        headers=PUBLISHER,
        json={"id": "order-42-shipped", "sourceID": "s", "destinationID": client, "data": "b"},
    )
    assert changed.status_code == 409
    listed = (await api.get(f"/api/clients/{client}/notifications", headers=bearer(client))).json()
    assert [n["data"] for n in listed["notifications"]] == ["once"]


async def test_token_expiry_ends_the_stream_with_an_event(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    headers = bearer(client, ttl=2)
    async with open_stream(api, stream_url(client), headers=headers) as stream:
        events = await stream.ended(timeout=15)
        assert events and events[-1].event == "token-expired"


async def test_ticket_carries_the_token_expiry(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    ticket = (
        await api.post(f"/api/clients/{client}/stream-tickets", headers=bearer(client, ttl=2))
    ).json()["ticket"]
    async with open_stream(api, stream_url(client), params={"ticket": ticket}) as stream:
        events = await stream.ended(timeout=15)
        assert events[-1].event == "token-expired"


# -- the stream module without sockets: the writer's cancel, close reasons in the log -----------


class Socket:
    """An ASGI send and receive for one response; body writes can be held, as on a full socket."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.held: asyncio.Future[None] | None = None
        self.hold_from = 0
        """Body writes from this many on wait for release() (0: none is held)."""
        self.fail_from = 0
        """Body writes from this many on fail as a reset connection (0: none fails)."""
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.bodies = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            self.bodies += 1
            if self.fail_from and self.bodies >= self.fail_from:
                raise ConnectionResetError("reset by peer")
            if self.hold_from and self.bodies >= self.hold_from:
                self.held = asyncio.get_running_loop().create_future()
                await self.held
        self.sent.append(message)

    def release(self) -> None:
        assert self.held is not None
        self.held.set_result(None)

    async def receive(self) -> Message:
        return await self.inbox.get()

    def text(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent)

    def ended_cleanly(self) -> bool:
        last = self.sent[-1]
        return last["type"] == "http.response.body" and last["more_body"] is False


async def stuck_write(sub: Subscription, socket: Socket) -> asyncio.Task[bool]:
    """A task whose writer is inside a write the socket holds."""
    socket.hold_from = 1

    async def write() -> bool:
        return await StreamWriter(socket.send, sub).write(b"chunk")

    task = asyncio.create_task(write())
    await until(lambda: socket.held is not None, what="the write to be held")
    return task


async def test_a_slow_reader_close_interrupts_a_write_stuck_on_a_full_socket() -> None:
    sub, socket = Subscription("a", limit=1), Socket()

    async def write_then_carry_on() -> tuple[bool, int]:
        written = await StreamWriter(socket.send, sub).write(b"chunk")
        await asyncio.sleep(0)  # the cancel was taken back: the task can still wait
        task = asyncio.current_task()
        assert task is not None
        return written, task.cancelling()

    socket.hold_from = 1
    task = asyncio.create_task(write_then_carry_on())
    await until(lambda: socket.held is not None, what="the write to be held")
    sub.push(1, b"a", 0.0)
    assert not sub.push(2, b"b", 0.0)  # the buffer overflows: closed as slow-reader
    assert await asyncio.wait_for(task, 5) == (False, 0)
    assert sub.reason is CloseReason.SLOW_READER and socket.sent == []


@pytest.mark.parametrize(
    ("reason", "written"),
    [
        (CloseReason.DISCONNECT, False),
        (CloseReason.SHUTDOWN, True),
        (CloseReason.TOKEN_EXPIRED, True),
    ],
)
async def test_other_closes_leave_a_held_write_to_finish(
    reason: CloseReason, written: bool
) -> None:
    sub, socket = Subscription("a", limit=5), Socket()
    task = await stuck_write(sub, socket)
    sub.close(reason)
    socket.release()
    assert await asyncio.wait_for(task, 5) is written
    assert [m["body"] for m in socket.sent] == [b"chunk"]  # it went out: nothing cancelled it


async def test_someone_elses_cancel_of_a_held_write_propagates() -> None:
    sub, socket = Subscription("a", limit=5), Socket()
    task = await stuck_write(sub, socket)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sub, socket = Subscription("a", limit=5), Socket()
    task = await stuck_write(sub, socket)
    task.cancel()
    sub.close(CloseReason.SLOW_READER)  # the writer takes back its own cancel, not this one
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/stream.db")
    await store.start()
    yield store
    await store.close()


class Served:
    """serve() running as its own task on a Socket, its logs captured."""

    def __init__(self, store: Store, expires_at: float | None = None, **env: str) -> None:
        self.hub = Hub()
        self.socket = Socket()
        self.settings = load_settings({"MERCURIO_ENV": "test", **env})
        self.request = StreamRequest("a", Principal("a", False, expires_at), None, None)
        self.store = store
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Served:
        self.task = asyncio.create_task(
            serve(
                self.hub,
                self.store,
                self.settings,
                self.request,
                self.socket.receive,
                self.socket.send,
                muted=frozenset(),
            )
        )
        await until(lambda: b": connected" in self.socket.text(), what="the stream to open")
        return self

    async def ended(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)
        assert self.hub.open_streams == 0


def close_reasons(logs: list[dict[str, object]]) -> list[object]:
    return [e["reason"] for e in logs if e["event"] == "stream.close"]


async def test_a_disconnect_ends_the_live_loop_and_is_the_logged_reason(store: Store) -> None:
    with capture_logs() as logs:
        served = await Served(store).start()
        served.socket.inbox.put_nowait({"type": "http.disconnect"})
        await served.ended()
    assert close_reasons(logs) == ["disconnect"]
    assert not served.socket.ended_cleanly()  # nobody is there to read a last chunk


async def test_a_slow_reader_is_cut_off_mid_write_and_logged_so(store: Store) -> None:
    with capture_logs() as logs:
        served = await Served(store, MERCURIO_STREAM_BUFFER="2").start()
        served.socket.hold_from = served.socket.bodies + 1
        served.hub.deliver([note(1, "a")])
        await until(lambda: served.socket.held is not None, what="the write to be held")
        served.hub.deliver([note(i, "a") for i in range(2, 6)])
        await served.ended()
    assert close_reasons(logs) == ["slow-reader"]
    assert served.hub.slow_disconnects == 1


async def test_shutdown_sends_retry_then_ends_and_is_the_logged_reason(store: Store) -> None:
    with capture_logs() as logs:
        served = await Served(store).start()
        served.hub.close_all(CloseReason.SHUTDOWN)
        await served.ended()
    assert close_reasons(logs) == ["shutdown"]
    text = served.socket.text()
    connected, goodbye = retries(text)  # the same jittered delay, at the start and the end
    assert connected == goodbye and 3000 <= goodbye <= 6000
    assert text.endswith(b"retry: %d\n\n" % goodbye)
    assert served.socket.ended_cleanly()


async def test_token_expiry_reports_the_head_and_is_the_logged_reason(store: Store) -> None:
    with capture_logs() as logs:
        served = Served(store, expires_at=0.0)
        await served.start()
        await served.ended()
    assert close_reasons(logs) == ["token-expired"]
    assert b'event: token-expired\ndata: {"lastEventId":0}' in served.socket.text()
    assert served.socket.ended_cleanly()


async def test_a_reset_connection_ends_the_stream_as_ended(store: Store) -> None:
    with capture_logs() as logs:
        served = await Served(store).start()
        served.socket.fail_from = served.socket.bodies + 1
        served.hub.deliver([note(1, "a")])
        await served.ended()
    assert close_reasons(logs) == ["ended"]
