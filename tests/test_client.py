"""The Python client against real servers: publishing, safe retries, and subscribe()."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from mercurio.client import (
    AsyncMercurio,
    Event,
    InboxNotification,
    Mercurio,
    MercurioError,
    MercurioUnavailable,
    NotificationStream,
    ReadState,
    ReceivedNotification,
    Reset,
    RetryPolicy,
    TokenExpired,
    trusting,
)
from tests.conftest import ServerProcess, bearer, free_port, make_token, new_client_id
from tests.helpers import until

PUBLISHER_TOKEN = make_token("666", publisher=True)
FAST = RetryPolicy(attempts=40, base=0.05, cap=0.4)
E = TypeVar("E")


# -- a tiny TCP proxy that can lose answers, answer 429/503 itself, or cut streams -------------


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head + (await reader.readexactly(length) if length else b"")


class Proxy:
    """Forwards to a server; `script` modes apply to the next connections, one each.

    Modes: "forward"; "lose-answer" (forward the request, close before the answer reaches the
    client); "status:<code>:<retry-after>" (answer that status itself); "refuse" (close at once).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.script: list[str] = []
        self.refusing = False
        self.modes_seen: list[str] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()  # every handler then ends by itself (cancelling them makes asyncio log)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self._server.wait_closed()

    def cut(self) -> None:
        """Close every open connection (both sides), as a network drop would."""
        for writer in list(self._writers):
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        mode = self.script.pop(0) if self.script else "refuse" if self.refusing else "forward"
        self.modes_seen.append(mode)
        upstream: asyncio.StreamWriter | None = None
        try:
            if mode == "refuse":
                return
            if mode.startswith("status:"):
                _, code, after = mode.split(":")
                await _read_request(reader)
                body = json.dumps({"error": f"proxy says {code}"}).encode()
                writer.write(
                    b"HTTP/1.1 %s Busy\r\nContent-Type: application/json\r\nRetry-After: %s\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (code.encode(), after.encode(), len(body), body)
                )
                await writer.drain()
                return
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(upstream)
            if mode == "lose-answer":
                upstream.write(await _read_request(reader))
                await upstream.drain()
                await up_reader.readuntil(b"\r\n\r\n")  # the server answered: it has stored it
                return
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for each in (writer, upstream):
                if each is not None:
                    self._writers.discard(each)
                    each.close()
                    with contextlib.suppress(OSError):
                        await each.wait_closed()
            self._tasks.discard(task)  # type: ignore[arg-type]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


# -- helpers --------------------------------------------------------------------------------


async def stored(api: httpx.AsyncClient, client: str) -> list[dict[str, Any]]:
    answer = await api.get(
        f"/api/clients/{client}/notifications", params={"limit": 100}, headers=bearer(client)
    )
    assert answer.status_code == 200, answer.text
    notes: list[dict[str, Any]] = answer.json()["notifications"]
    return [note for note in notes if note["sourceID"] != "announcer"]


def stored_sync(url: str, client: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{url}/api/clients/{client}/notifications", params={"limit": 100}, headers=bearer(client)
    )
    assert answer.status_code == 200, answer.text
    notes: list[dict[str, Any]] = answer.json()["notifications"]
    return [note for note in notes if note["sourceID"] != "announcer"]


class Collector:
    """Reads a subscription in a background task, so a test can await events with timeouts."""

    def __init__(self, sub: NotificationStream) -> None:
        self.sub = sub
        self.queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for event in self.sub:
                await self.queue.put(event)
            await self.queue.put(None)
        except Exception as exc:
            await self.queue.put(exc)

    async def next(self, kind: type[E] = ReceivedNotification, timeout: float = 15) -> E:  # type: ignore[assignment]
        """The next event of that kind, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            item = await asyncio.wait_for(self.queue.get(), max(0.01, deadline - time.monotonic()))
            if isinstance(item, BaseException):
                raise item
            if item is None:
                raise EOFError("subscription ended")
            if isinstance(item, kind):
                return item

    async def end(self, timeout: float = 15) -> list[Event]:
        """Everything until the subscription ends by itself."""
        seen: list[Event] = []
        while True:
            item = await asyncio.wait_for(self.queue.get(), timeout)
            if item is None:
                return seen
            if isinstance(item, BaseException):
                raise item
            seen.append(item)

    def pending(self) -> list[Event]:
        out: list[Event] = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not None and not isinstance(item, BaseException):
                out.append(item)
        return out

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.sub.aclose()


@contextlib.asynccontextmanager
async def collecting(sub: NotificationStream) -> AsyncIterator[Collector]:
    collector = Collector(sub)
    try:
        yield collector
    finally:
        await collector.close()


# -- publishing -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_publish_broadcast_announce(announce_server: ServerProcess) -> None:
    server = announce_server
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        await _publish_broadcast_announce(server, api)


async def _publish_broadcast_announce(server: ServerProcess, api: httpx.AsyncClient) -> None:
    one, two = new_client_id(), new_client_id()
    async with AsyncMercurio(server.url, PUBLISHER_TOKEN) as mercurio:
        sent = await mercurio.publish(one, {"text": "hi"}, category="greetings")
        assert isinstance(sent.notification_id, int)
        uuid.UUID(sent.event_id)  # the client chose the event id
        both = await mercurio.broadcast([one, two], "to both", event_id="evt-both")
        assert [p.event_id for p in both] == ["evt-both", "evt-both"]
        assert len({p.notification_id for p in both}) == 2
        everyone = await mercurio.announce("to all", category="system", source_id="announcer")

    first = (await stored(api, one))[::-1]
    assert [(n["notificationID"], n["data"], n["category"], n["sourceID"]) for n in first] == [
        (sent.notification_id, {"text": "hi"}, "greetings", "666"),  # source: the token's user
        (both[0].notification_id, "to both", "general", "666"),
    ]
    assert [n["notificationID"] for n in await stored(api, two)] == [both[1].notification_id]
    newcomer = new_client_id()
    seen = await api.get(f"/api/clients/{newcomer}/notifications", headers=bearer(newcomer))
    assert everyone.notification_id in [n["notificationID"] for n in seen.json()["notifications"]]


@pytest.mark.timeout(60)
def test_sync_client_publishes_and_is_idempotent(announce_server: ServerProcess) -> None:
    server = announce_server
    client = new_client_id()
    with Mercurio(server.url, PUBLISHER_TOKEN, source_id="billing") as mercurio:
        first = mercurio.publish(client, "invoice ready", event_id="invoice-7")
        again = mercurio.publish(client, "invoice ready", event_id="invoice-7")
        assert again == first  # same event id: the same notification, not a second one
        many = mercurio.broadcast([client, new_client_id()], "sync both")
        assert len(many) == 2 and many[0].event_id == many[1].event_id
        assert mercurio.announce("sync all", source_id="announcer").notification_id > 0
    listed = stored_sync(server.url, client)
    assert sorted(n["notificationID"] for n in listed) == sorted(
        [first.notification_id, many[0].notification_id]
    )


@pytest.mark.timeout(60)
async def test_publish_with_delay_ttl_and_collapse_key_then_retract(server: ServerProcess) -> None:
    client = new_client_id()
    async with AsyncMercurio(server.url, PUBLISHER_TOKEN, source_id="billing") as mercurio:
        waiting = await mercurio.publish(client, "later", delay=1, ttl=600, event_id=uuid4())
        assert waiting.notification_id is None and waiting.deliver_at is not None
        await until(lambda: len(stored_sync(server.url, client)) == 1, what="the delivery")
        (note,) = stored_sync(server.url, client)
        assert note["eventID"] == waiting.event_id and "expiresAt" in note
        first = await mercurio.publish(client, "v1", collapse_key="build")
        second = await mercurio.publish(client, "v2", collapse_key="build")
        listed = [n["notificationID"] for n in stored_sync(server.url, client)]
        assert second.notification_id in listed and first.notification_id not in listed
        done = await mercurio.retract(second.event_id)
        assert (done.status, done.retracted, done.cancelled) == ("retracted", 1, 0)
        pending = await mercurio.publish(client, "never", deliver_at=soon(60))
        assert (await mercurio.retract(pending.event_id)).status == "cancelled"
        with pytest.raises(MercurioError) as missing:
            await mercurio.retract("no-such-event")
        assert missing.value.status == 404
    with Mercurio(server.url, PUBLISHER_TOKEN, source_id="billing") as sync:
        later = sync.publish(client, "sync later", delay=60)
        assert sync.retract(later.event_id).cancelled == 1
    assert [n["data"] for n in stored_sync(server.url, client)] == ["later"]


def uuid4() -> str:
    return str(uuid.uuid4())


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.mark.timeout(60)
async def test_refusals_raise_the_servers_message_without_retrying(server: ServerProcess) -> None:
    async with AsyncMercurio(server.url, PUBLISHER_TOKEN, backoff=FAST) as mercurio:
        with pytest.raises(MercurioError) as bad:
            await mercurio.publish("not a valid id", "x")
        assert bad.value.status == 422
        assert "destinationID" in bad.value.message
        with pytest.raises(MercurioError) as category:
            await mercurio.publish(new_client_id(), "x", category="Not A Slug")
        assert category.value.status == 422
    async with AsyncMercurio(server.url, "not-a-jwt", source_id="x") as anonymous:
        with pytest.raises(MercurioError) as unauthenticated:
            await anonymous.publish(new_client_id(), "x")
        assert unauthenticated.value.status == 401
        assert unauthenticated.value.message  # the server's words, e.g. "token is malformed"
    async with AsyncMercurio(server.url, make_token("someone")) as user:
        started = time.monotonic()
        with pytest.raises(MercurioError) as forbidden:
            await user.publish(new_client_id(), "x")
        assert forbidden.value.status == 403
        assert time.monotonic() - started < 2  # a 4xx is final: no retry
    with pytest.raises(ValueError, match="source_id"):
        async with AsyncMercurio(server.url) as nobody:
            await nobody.publish("123", "x")


@pytest.mark.timeout(60)
async def test_a_lost_answer_is_retried_and_stored_once(
    server: ServerProcess, api: httpx.AsyncClient
) -> None:
    """The request reaches the server but its answer is lost: the retry must not duplicate."""
    client = new_client_id()
    async with (
        Proxy(server.port) as proxy,
        AsyncMercurio(proxy.url, PUBLISHER_TOKEN, backoff=FAST) as mercurio,
    ):
        proxy.script = ["lose-answer", "lose-answer"]
        sent = await mercurio.publish(client, "exactly once")
        proxy.script = ["lose-answer"]
        both = await mercurio.broadcast([client, new_client_id()], "broadcast once")
        assert proxy.modes_seen[:3] == ["lose-answer", "lose-answer", "forward"]
    notes = await stored(api, client)
    assert [(n["notificationID"], n["data"]) for n in notes] == [
        (both[0].notification_id, "broadcast once"),
        (sent.notification_id, "exactly once"),
    ]
    assert notes[1]["eventID"] == sent.event_id


@pytest.mark.timeout(60)
def test_sync_retry_after_a_lost_answer(server: ServerProcess) -> None:
    client = new_client_id()

    async def scenario() -> int:
        async with Proxy(server.port) as proxy:
            proxy.script = ["lose-answer"]

            def publish() -> int:
                with Mercurio(proxy.url, PUBLISHER_TOKEN, backoff=FAST) as mercurio:
                    return mercurio.publish(client, "sync once").notification_id

            return await asyncio.to_thread(publish)

    nid = asyncio.run(scenario())
    assert [n["notificationID"] for n in stored_sync(server.url, client)] == [nid]


@pytest.mark.timeout(60)
async def test_429_and_503_are_retried_after_retry_after(
    server: ServerProcess, api: httpx.AsyncClient
) -> None:
    client = new_client_id()
    async with (
        Proxy(server.port) as proxy,
        AsyncMercurio(proxy.url, PUBLISHER_TOKEN, backoff=FAST) as mercurio,
    ):
        proxy.script = ["status:429:1", "status:503:0", "status:502:0", "status:504:0"]
        started = time.monotonic()
        sent = await mercurio.publish(client, "after the storm")
        assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured
        assert proxy.modes_seen == [
            "status:429:1",
            "status:503:0",
            "status:502:0",
            "status:504:0",
            "forward",
        ]
        proxy.script = ["status:503:0"] * 3
        with pytest.raises(MercurioUnavailable) as gave_up:
            async with AsyncMercurio(
                proxy.url, PUBLISHER_TOKEN, backoff=RetryPolicy(attempts=3, base=0.01)
            ) as impatient:
                await impatient.publish(client, "never")
        assert gave_up.value.status == 503
        assert "proxy says 503" in gave_up.value.message
    assert [n["notificationID"] for n in await stored(api, client)] == [sent.notification_id]


@pytest.mark.timeout(60)
async def test_unreachable_server_gives_up_with_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncMercurio(url, PUBLISHER_TOKEN, backoff=RetryPolicy(attempts=3, base=0.01)) as m:
        with pytest.raises(MercurioUnavailable) as error:
            await m.publish("123", "nobody home")
    assert error.value.status is None
    assert "cannot reach" in error.value.message and "3 attempts" in error.value.message
    assert isinstance(error.value.__cause__, httpx.ConnectError)


@pytest.mark.timeout(60)
async def test_each_retry_says_what_it_waits_for() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    said: list[str] = []
    policy = RetryPolicy(attempts=3, base=0.01)
    async with AsyncMercurio(url, PUBLISHER_TOKEN, backoff=policy, on_retry=said.append) as m:
        with pytest.raises(MercurioUnavailable):
            await m.publish("123", "nobody home")
    assert len(said) == 2  # before the 2nd and the 3rd attempt
    assert said[0].startswith(f"cannot reach {url}/api/events/unicast (ConnectError")
    assert "attempt 2 of 3" in said[0] and "attempt 3 of 3" in said[1]
    sync_said: list[str] = []
    with Mercurio(url, PUBLISHER_TOKEN, backoff=policy, on_retry=sync_said.append) as sync:
        with pytest.raises(MercurioUnavailable):
            sync.publish("123", "nobody home")
    assert len(sync_said) == 2  # the sync client says the same (its error text differs)
    assert all(line.startswith(f"cannot reach {url}/api/events/unicast") for line in sync_said)


async def test_inbox_calls_list_get_read_unread_delete_count_and_preferences(
    server: ServerProcess,
) -> None:
    client = new_client_id()
    async with AsyncMercurio(server.url, PUBLISHER_TOKEN) as publisher:
        first = await publisher.publish(client, "one", category="billing")
        second = await publisher.publish(client, {"n": 2}, category="deploys")
        third = await publisher.publish(client, "three", category="billing")
    async with AsyncMercurio(server.url, make_token(client)) as inbox:  # the token's own user
        page = await inbox.list_notifications(limit=2)
        assert page.client_id == client and page.unread_count == 3
        assert [n.notification_id for n in page.notifications] == [
            third.notification_id,
            second.notification_id,
        ]
        assert page.next_before == second.notification_id
        rest = await inbox.list_notifications(before=page.next_before)
        assert [n.notification_id for n in rest.notifications] == [first.notification_id]

        one = await inbox.get_notification(second.notification_id)
        assert isinstance(one, InboxNotification)
        assert (one.data, one.category, one.source_id, one.read) == (
            {"n": 2},
            "deploys",
            "666",
            False,
        )
        await inbox.mark_read(second.notification_id)
        assert (await inbox.get_notification(second.notification_id)).read
        assert await inbox.unread_count() == 2
        read = await inbox.list_notifications(status="read")
        assert [n.notification_id for n in read.notifications] == [second.notification_id]
        await inbox.mark_unread(second.notification_id)
        assert await inbox.unread_count() == 3

        assert await inbox.mark_all_read(category="billing") == 2
        unread = await inbox.list_notifications(status="unread")
        assert [n.notification_id for n in unread.notifications] == [second.notification_id]
        billing = await inbox.list_notifications(category="billing")
        assert {n.notification_id for n in billing.notifications} == {
            first.notification_id,
            third.notification_id,
        }

        await inbox.delete_notification(first.notification_id)
        with pytest.raises(MercurioError) as gone:
            await inbox.get_notification(first.notification_id)
        assert gone.value.status == 404

        assert await inbox.preferences() == []
        assert await inbox.set_preferences(["deploys", "billing"]) == ["billing", "deploys"]
        assert await inbox.preferences() == ["billing", "deploys"]
        with pytest.raises(MercurioError) as bad:
            await inbox.set_preferences(["Not A Slug"])
        assert bad.value.status == 422
        assert await inbox.preferences() == ["billing", "deploys"]  # untouched

        with pytest.raises(MercurioError) as other:
            await inbox.unread_count(client_id=new_client_id())
        assert other.value.status == 403


def test_sync_inbox_calls_match_the_async_ones(server: ServerProcess) -> None:
    client = new_client_id()
    with Mercurio(server.url, PUBLISHER_TOKEN) as publisher:
        sent = publisher.publish(client, "hello", category="news")
    with Mercurio(server.url, make_token(client)) as inbox:
        page = inbox.list_notifications()
        assert [n.notification_id for n in page.notifications] == [sent.notification_id]
        assert page.next_before is None and page.unread_count == 1
        assert inbox.get_notification(sent.notification_id).data == "hello"
        inbox.mark_read(sent.notification_id)
        assert inbox.unread_count() == 0
        inbox.mark_unread(sent.notification_id)
        assert inbox.mark_all_read() == 1
        assert inbox.set_preferences(["news"]) == ["news"] == inbox.preferences()
        inbox.delete_notification(sent.notification_id)
        assert inbox.list_notifications().notifications == []


@pytest.mark.timeout(60)
def test_a_custom_ca_is_trusted_when_given(
    make_server: Callable[..., ServerProcess], tmp_path: Any
) -> None:
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(cafile=str(ca_file))
    tls = ServerProcess.in_folder(
        tmp_path,
        {"MERCURIO_SSL_CERTFILE": str(certfile), "MERCURIO_SSL_KEYFILE": str(keyfile)},
        tls=context,
    ).start()
    try:
        client = new_client_id()
        once = RetryPolicy(attempts=1)
        with Mercurio(tls.url, PUBLISHER_TOKEN, backoff=once) as untrusting:
            with pytest.raises(MercurioUnavailable) as refused:
                untrusting.publish(client, "x")
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value.__cause__)
        with Mercurio(tls.url, PUBLISHER_TOKEN, verify=trusting(str(ca_file))) as trusted:
            sent = trusted.publish(client, "over TLS")
        with Mercurio(tls.url, make_token(client), verify=trusting(str(ca_file))) as inbox:
            assert inbox.get_notification(sent.notification_id).data == "over TLS"
    finally:
        tls.stop()


@pytest.mark.timeout(150)
async def test_publish_retries_across_a_server_restart(
    make_server: Callable[..., ServerProcess],
) -> None:
    port = free_port()
    first = make_server(port=port)
    first.stop()
    client = new_client_id()
    patient = RetryPolicy(attempts=1000, base=0.05, cap=0.3)  # a loaded machine starts slowly
    async with AsyncMercurio(first.url, PUBLISHER_TOKEN, backoff=patient) as mercurio:
        publishing = asyncio.create_task(mercurio.publish(client, "while you were down"))
        await asyncio.sleep(1.0)
        assert not publishing.done()  # still retrying against the stopped server
        second = await asyncio.to_thread(make_server, port=port)
        sent = await asyncio.wait_for(publishing, 60)
    async with httpx.AsyncClient(base_url=second.url) as api:
        notes = await stored(api, client)
    assert [(n["notificationID"], n["eventID"]) for n in notes] == [
        (sent.notification_id, sent.event_id)
    ]


# -- subscribe ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_subscribe_receives_typed_events(
    server: ServerProcess, api: httpx.AsyncClient
) -> None:
    client = new_client_id()
    async with (
        AsyncMercurio(server.url, PUBLISHER_TOKEN) as mercurio,
        collecting(mercurio.subscribe(client, token=make_token(client))) as events,
    ):
        await until(lambda: events.sub.connections == 1)
        sent = [await mercurio.publish(client, f"n{i}", category="news") for i in range(3)]
        got = [await events.next(ReceivedNotification) for _ in range(3)]
        assert [(n.notification_id, n.event_id, n.data) for n in got] == [
            (p.notification_id, p.event_id, f"n{i}") for i, p in enumerate(sent)
        ]
        assert all(n.client_id == client and n.source_id == "666" for n in got)
        assert all(n.category == "news" and n.created_at is not None for n in got)
        assert events.sub.last_event_id == str(sent[-1].notification_id)
        assert 3.0 <= events.sub.retry <= 6.0  # the server's retry: 3000 hint, jittered

        read = await api.put(
            f"/api/clients/{client}/notifications/{sent[0].notification_id}/read",
            headers=bearer(client),
        )
        assert read.status_code == 200
        state = await events.next(ReadState)
        unread = await api.get(
            f"/api/clients/{client}/notifications/unread-count", headers=bearer(client)
        )
        # (announcements from other tests on this shared server count as unread too)
        expected = ReadState(sent[0].notification_id, "read", "news", unread.json()["unreadCount"])
        assert state == expected


@pytest.mark.timeout(60)
async def test_subscribe_filters_categories_and_resumes_from_a_given_id(
    server: ServerProcess,
) -> None:
    client = new_client_id()
    async with AsyncMercurio(server.url, PUBLISHER_TOKEN) as mercurio:
        old = await mercurio.publish(client, "old", category="news")
        missed = await mercurio.publish(client, "missed", category="news")
        await mercurio.publish(client, "other", category="chat")
        sub = mercurio.subscribe(
            client,
            token=make_token(client),
            last_event_id=old.notification_id,
            categories=["news"],
        )
        async with collecting(sub) as events:
            assert (await events.next()).notification_id == missed.notification_id
            live = await mercurio.publish(client, "live", category="news")
            await mercurio.publish(client, "live chat", category="chat")
            assert (await events.next()).notification_id == live.notification_id
            await asyncio.sleep(0.3)
            assert events.pending() == []


@pytest.mark.timeout(60)
async def test_subscribe_refusals_stop_with_an_error(server: ServerProcess) -> None:
    client = new_client_id()
    async with AsyncMercurio(server.url) as mercurio:
        async with mercurio.subscribe(client, token="garbage") as events:
            with pytest.raises(MercurioError) as bad:
                await anext(events)
        assert bad.value.status == 401
        async with mercurio.subscribe(client, token=make_token("someone-else")) as events:
            with pytest.raises(MercurioError) as other:
                await anext(events)
        assert other.value.status == 403
        assert "another client" in other.value.message


@pytest.mark.timeout(60)
async def test_subscribe_waits_retry_after_on_503(server: ServerProcess) -> None:
    client = new_client_id()
    statuses: list[str] = []
    async with Proxy(server.port) as proxy, AsyncMercurio(proxy.url) as mercurio:
        proxy.script = ["status:503:1"]
        started = time.monotonic()
        sub = mercurio.subscribe(client, token=make_token(client), on_status=statuses.append)
        async with collecting(sub):
            await until(lambda: sub.connections == 1)
        assert time.monotonic() - started >= 1.0
    assert statuses[0].startswith("reconnecting in 1.0s (HTTP 503)")
    assert statuses[1] == "connected"


@pytest.mark.timeout(90)
async def test_subscribe_survives_a_server_restart_without_loss_or_duplicate(
    make_server: Callable[..., ServerProcess],
) -> None:
    port = free_port()
    env = {"MERCURIO_SSE_RETRY_MS": "300", "MERCURIO_SSE_HEARTBEAT": "1"}
    first = make_server(env, port=port)
    client = new_client_id()
    statuses: list[str] = []
    async with AsyncMercurio(first.url, PUBLISHER_TOKEN, backoff=FAST) as mercurio:
        sub = mercurio.subscribe(client, token=make_token(client), on_status=statuses.append)
        async with collecting(sub) as events:
            await until(lambda: sub.connections == 1)
            before = await mercurio.publish(client, "before")
            assert (await events.next()).notification_id == before.notification_id
            assert 0.3 <= sub.retry <= 0.6

            await asyncio.to_thread(first.stop)
            await until(lambda: any(s.startswith("reconnecting") for s in statuses))
            await asyncio.to_thread(make_server, env, port=port)
            # Published at once: the client is most likely still waiting to reconnect, so
            # these arrive by the Last-Event-ID replay; if not, live. Either way, once each.
            after = [await mercurio.publish(client, f"after {i}") for i in range(3)]
            got = [await events.next() for _ in range(3)]
            assert [n.notification_id for n in got] == [p.notification_id for p in after]
            await asyncio.sleep(0.5)
            assert [e for e in events.pending() if isinstance(e, ReceivedNotification)] == []
            assert sub.connections == 2
    assert statuses[0] == "connected" and "connected" in statuses[1:]


@pytest.mark.timeout(60)
async def test_subscribe_resumes_after_a_network_drop_by_replay(
    make_server: Callable[..., ServerProcess],
) -> None:
    """The stream is cut and kept away while notifications are published: replay brings them."""
    target = make_server({"MERCURIO_SSE_RETRY_MS": "100"})
    client = new_client_id()
    async with (
        Proxy(target.port) as proxy,
        AsyncMercurio(target.url, PUBLISHER_TOKEN) as direct,
        AsyncMercurio(proxy.url) as through_proxy,
    ):
        sub = through_proxy.subscribe(client, token=make_token(client))
        async with collecting(sub) as events:
            await until(lambda: sub.connections == 1)
            first = await direct.publish(client, "first")
            assert (await events.next()).notification_id == first.notification_id
            proxy.refusing = True
            proxy.cut()
            missed = [await direct.publish(client, f"missed {i}") for i in range(5)]
            await until(lambda: proxy.modes_seen.count("refuse") >= 2)
            proxy.refusing = False
            got = [await events.next() for _ in range(5)]
            assert [n.notification_id for n in got] == [p.notification_id for p in missed]
            live = await direct.publish(client, "live again")
            assert (await events.next()).notification_id == live.notification_id
            assert [e for e in events.pending() if isinstance(e, ReceivedNotification)] == []
            assert sub.last_event_id == str(live.notification_id)


@pytest.mark.timeout(60)
async def test_subscribe_surfaces_reset(make_server: Callable[..., ServerProcess]) -> None:
    target = make_server({"MERCURIO_REPLAY_MAX": "3"})
    client = new_client_id()
    async with AsyncMercurio(target.url, PUBLISHER_TOKEN) as mercurio:
        mark = await mercurio.publish(client, "seen")
        sent = [await mercurio.publish(client, f"missed {i}") for i in range(6)]
        sub = mercurio.subscribe(
            client, token=make_token(client), last_event_id=mark.notification_id
        )
        async with collecting(sub) as events:
            newest = [await events.next() for _ in range(3)]
            assert [n.notification_id for n in newest] == [p.notification_id for p in sent[-3:]]
            reset = await events.next(Reset)
            assert reset.last_event_id == sent[-1].notification_id
            assert reset.reason == "replay-too-long"


@pytest.mark.timeout(60)
async def test_subscribe_ends_on_token_expired_without_a_provider(server: ServerProcess) -> None:
    client = new_client_id()
    async with AsyncMercurio(server.url, PUBLISHER_TOKEN) as mercurio:
        sub = mercurio.subscribe(client, token=make_token(client, ttl=2))
        async with collecting(sub) as events:
            await until(lambda: sub.connections == 1)
            sent = await mercurio.publish(client, "before expiry")
            seen = await events.end(timeout=15)
    assert [type(e) for e in seen] == [ReceivedNotification, TokenExpired]
    assert seen[1] == TokenExpired(sent.notification_id)


@pytest.mark.timeout(60)
async def test_token_provider_resumes_after_token_expired(server: ServerProcess) -> None:
    client = new_client_id()
    minted: list[str] = []

    async def fresh_token() -> str:
        minted.append(make_token(client))
        return minted[-1]

    async with AsyncMercurio(server.url, PUBLISHER_TOKEN) as mercurio:
        sub = mercurio.subscribe(
            client, token=make_token(client, ttl=2), token_provider=fresh_token
        )
        async with collecting(sub) as events:
            await until(lambda: sub.connections == 1)
            before = await mercurio.publish(client, "before expiry")
            assert (await events.next()).notification_id == before.notification_id
            expired = await events.next(TokenExpired)
            assert expired.last_event_id == before.notification_id
            await until(lambda: sub.connections == 2)
            after = await mercurio.publish(client, "after renewal")
            assert (await events.next()).notification_id == after.notification_id
            assert sub.token == minted[0] and len(minted) == 1


@pytest.mark.timeout(60)
async def test_token_provider_replaces_a_token_refused_with_401(server: ServerProcess) -> None:
    client = new_client_id()
    async with AsyncMercurio(server.url, PUBLISHER_TOKEN) as mercurio:
        sub = mercurio.subscribe(
            client,
            token=make_token(client, ttl=-60),  # long expired
            token_provider=lambda: make_token(client),
        )
        async with collecting(sub) as events:
            await until(lambda: sub.connections == 1)
            sent = await mercurio.publish(client, "hello")
            assert (await events.next()).notification_id == sent.notification_id


# -- one body per call: the sync and async clients send the very same requests ---------------


class Recorder:
    """A scripted server for httpx.MockTransport that records every request it is sent.

    Each call (by event id) answers from its own script: one failure per entry (a status, or
    None for a connect error), then success. Both clients get a fresh recorder with the same script.
    """

    def __init__(self, failures: list[int | None]) -> None:
        self.failures = failures
        self.seen: list[tuple[str, str, list[tuple[str, str]], Any]] = []
        self._left: dict[str, list[int | None]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        headers = sorted((k, v) for k, v in request.headers.items() if k != "content-length")
        body = json.loads(request.content) if request.content else None
        self.seen.append((request.method, str(request.url), headers, body))
        left = self._left.setdefault(body["id"], list(self.failures))
        if left:
            status = left.pop(0)
            if status is None:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(status, headers={"Retry-After": "0"}, json={"error": "busy"})
        if request.url.path.endswith("/broadcast"):
            ids = [(i, body["id"]) for i in range(len(body["destinations"]))]
            return httpx.Response(200, json=[{"notificationID": n, "eventID": e} for n, e in ids])
        return httpx.Response(200, json={"notificationID": 7, "eventID": body["id"]})


NO_WAIT = RetryPolicy(attempts=4, base=0.0, cap=0.0)


async def _every_call_async(http: httpx.AsyncClient) -> list[Any]:
    async with AsyncMercurio("http://hub.test/", PUBLISHER_TOKEN, backoff=NO_WAIT, http=http) as m:
        return [
            await m.publish("123", "hi", event_id="e-1"),
            await m.publish("123", {"n": 1}, category="c", event_id="e-2", source_id="billing"),
            await m.broadcast(["1", "2"], "all", event_id="e-3", category="ops"),
            await m.announce("news", event_id="e-4"),
        ]


def _every_call_sync(http: httpx.Client) -> list[Any]:
    with Mercurio("http://hub.test/", PUBLISHER_TOKEN, backoff=NO_WAIT, http=http) as m:
        return [
            m.publish("123", "hi", event_id="e-1"),
            m.publish("123", {"n": 1}, category="c", event_id="e-2", source_id="billing"),
            m.broadcast(["1", "2"], "all", event_id="e-3", category="ops"),
            m.announce("news", event_id="e-4"),
        ]


@pytest.mark.parametrize(
    "failures", [[], [503, None, 429]], ids=["first-try", "after-503-connect-error-429"]
)
async def test_sync_and_async_clients_send_identical_requests_for_every_call(
    failures: list[int | None],
) -> None:
    async_server, sync_server = Recorder(failures), Recorder(failures)
    async with httpx.AsyncClient(transport=httpx.MockTransport(async_server)) as http:
        async_results = await _every_call_async(http)
    with httpx.Client(transport=httpx.MockTransport(sync_server)) as sync_http:
        sync_results = _every_call_sync(sync_http)

    assert sync_server.seen == async_server.seen
    assert sync_results == async_results
    paths = [url.removeprefix("http://hub.test") for _, url, _, _ in async_server.seen]
    calls = ["unicast", "unicast", "broadcast", "announce"]
    assert paths == [f"/api/events/{c}" for c in calls for _ in range(len(failures) + 1)]
    bodies = [body for *_, body in async_server.seen]
    assert bodies[-1] == {"id": "e-4", "sourceID": "666", "data": "news"}


async def test_a_refusal_is_raised_alike_by_both_clients_after_one_request() -> None:
    async_server, sync_server = Recorder([409]), Recorder([409])
    async with httpx.AsyncClient(transport=httpx.MockTransport(async_server)) as http:
        with pytest.raises(MercurioError) as async_refusal:
            await _every_call_async(http)
    with httpx.Client(transport=httpx.MockTransport(sync_server)) as sync_http:
        with pytest.raises(MercurioError) as sync_refusal:
            _every_call_sync(sync_http)

    assert sync_server.seen == async_server.seen
    assert len(async_server.seen) == 1
    assert (sync_refusal.value.status, sync_refusal.value.message) == (409, "busy")
    assert (async_refusal.value.status, async_refusal.value.message) == (409, "busy")
    assert not isinstance(async_refusal.value, MercurioUnavailable)
