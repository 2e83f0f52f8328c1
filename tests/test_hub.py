"""The hub's fan-out and the subscription's bounded buffer, without sockets."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from mercurio.hub import CONTROL, Hub
from mercurio.model import ANNOUNCEMENT, Notification
from mercurio.stream import CloseReason, Subscription


def note(nid: int, client: str, category: str = "general") -> Notification:
    return Notification(nid, f"e{nid}", "src", client, category, '"d"', datetime.now(UTC))


def frames(sub: Subscription) -> list[dict[str, object]]:
    out = []
    for nid, frame in sub.buffer:
        assert nid != CONTROL
        head, data = frame.decode().split("\ndata: ")
        assert head == f"id: {nid}"
        out.append(json.loads(data))
    return out


def test_every_stream_of_the_client_gets_it_and_no_one_else() -> None:
    hub = Hub()
    mine = [Subscription("a", limit=10) for _ in range(3)]
    other = Subscription("b", limit=10)
    for sub in [*mine, other]:
        hub.register(sub)
    hub.deliver([note(1, "a")])
    assert all(frames(sub)[0]["notificationID"] == 1 for sub in mine)
    assert not other.buffer
    assert hub.deliveries == 3


def test_announcement_carries_each_clients_own_id() -> None:
    hub = Hub()
    a, b = Subscription("a", limit=10), Subscription("b", limit=10)
    hub.register(a)
    hub.register(b)
    hub.deliver([note(5, ANNOUNCEMENT)])
    assert frames(a)[0]["clientID"] == "a"
    assert frames(b)[0]["clientID"] == "b"


def test_category_filter_and_mute() -> None:
    hub = Hub()
    only = Subscription("a", limit=10, categories=frozenset({"x"}))
    every = Subscription("a", limit=10)
    hub.register(only, muted=frozenset({"y"}))
    hub.register(every)
    hub.deliver([note(1, "a", "x"), note(2, "a", "y"), note(3, "a", "z")])
    assert [f["notificationID"] for f in frames(only)] == [1]
    assert [f["notificationID"] for f in frames(every)] == [1, 3]
    hub.set_muted("a", frozenset())
    hub.deliver([note(4, "a", "y")])
    assert [f["notificationID"] for f in frames(every)] == [1, 3, 4]


def test_a_full_buffer_closes_only_that_stream() -> None:
    hub = Hub()
    slow, fast = Subscription("a", limit=2), Subscription("a", limit=100)
    hub.register(slow)
    hub.register(fast)
    hub.deliver([note(i, "a") for i in range(1, 6)])
    assert slow.closed and slow.reason is CloseReason.SLOW_READER
    assert len(slow.buffer) == 2
    assert len(fast.buffer) == 5 and not fast.closed
    assert hub.slow_disconnects == 1


def test_unregister_forgets_the_client() -> None:
    hub = Hub()
    sub = Subscription("a", limit=2)
    hub.register(sub, muted=frozenset({"m"}))
    hub.unregister(sub)
    hub.unregister(sub)
    assert hub.open_streams == 0 and hub.streams_of("a") == 0
    assert hub.connected_clients() == []


async def test_wait_wakes_on_push_and_on_timeout() -> None:
    sub = Subscription("a", limit=5)
    waiting = asyncio.create_task(sub.wait(30))
    await asyncio.sleep(0)
    sub.push(1, b"x", 0.0)
    await asyncio.wait_for(waiting, 5)
    sub.buffer.clear()
    await asyncio.wait_for(sub.wait(0.01), 5)
    assert sub.waiter is None


async def test_idle_streams_of_one_turn_are_written_together_and_one_failure_spares_the_rest() -> (
    None
):
    hub = Hub()
    subs = [Subscription(f"c{i}", limit=5) for i in range(3)]
    written: dict[str, bytes] = {}

    def express_for(sub: Subscription) -> None:
        def express(chunk: bytes) -> bool:
            if sub.client_id == "c0":
                raise RuntimeError("this socket broke")
            written[sub.client_id] = chunk
            return True

        sub.express = express
        sub.sleep(30)  # asleep in its live loop: frames go out without waking it

    for sub in subs:
        hub.register(sub)
        express_for(sub)
    hub.deliver([note(i + 1, f"c{i}") for i in range(3)])
    assert written == {}, "written at the end of the turn, not during the deliver"
    await asyncio.sleep(0)
    assert sorted(written) == ["c1", "c2"]
    assert all(sub.buffer == [] for sub in subs[1:])
    # The stream whose write failed keeps its frame and its writer is woken to send it.
    assert [nid for nid, _ in subs[0].buffer] == [1]
    assert subs[0].waiter is not None and subs[0].waiter.done()
