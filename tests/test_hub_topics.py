"""The hub's topic fan-out, without sockets: connected followers only, from their interval."""

from __future__ import annotations

from mercurio.hub import Hub
from mercurio.model import topic_key
from mercurio.stream import Subscription
from tests.test_hub import frames, note


def test_a_topic_frame_goes_to_each_connected_follower_with_its_own_client_id() -> None:
    hub = Hub()
    a, b, outsider = (Subscription(c, limit=10) for c in ("a", "b", "c"))
    hub.register(a, topics={"news": 0})
    hub.register(b)
    hub.register(outsider)
    hub.set_topic("b", "news", 0)
    hub.deliver([note(1, topic_key("news")), note(2, topic_key("other"))])
    assert [(f["notificationID"], f["clientID"], f["topic"]) for f in frames(a)] == [
        (1, "a", "news")
    ]
    assert [f["clientID"] for f in frames(b)] == ["b"]
    assert not outsider.buffer
    assert hub.followers("news") == 2


def test_ids_at_or_below_the_subscribe_point_are_not_sent_live() -> None:
    # Committed before the subscribe, handed over after it: the store would not list it.
    hub = Hub()
    sub = Subscription("a", limit=10)
    hub.register(sub)
    hub.set_topic("a", "news", 5)
    hub.deliver([note(5, topic_key("news")), note(6, topic_key("news"))])
    assert [f["notificationID"] for f in frames(sub)] == [6]


def test_unsubscribe_mute_and_the_last_stream_closing_stop_delivery() -> None:
    hub = Hub()
    first, second = Subscription("a", limit=10), Subscription("a", limit=10)
    hub.register(first, muted=frozenset({"promo"}), topics={"news": 0})
    hub.register(second, topics={"ignored": 0})  # the client is known: the hub's set wins
    assert hub.topics_of("a") == {"news": 0}
    hub.deliver([note(1, topic_key("news"), "promo"), note(2, topic_key("news"))])
    assert [f["notificationID"] for f in frames(first)] == [2]
    assert [f["notificationID"] for f in frames(second)] == [2]
    hub.unregister(first)
    assert hub.followers("news") == 1
    hub.unregister(second)
    assert hub.followers("news") == 0 and hub.topics_of("a") is None
    hub.set_topic("a", "news", 0)  # no stream here: not tracked
    assert hub.followers("news") == 0
    again = Subscription("a", limit=10)
    hub.register(again, topics={"news": 0})
    hub.set_topic("a", "news", None)
    hub.deliver([note(3, topic_key("news"))])
    assert not again.buffer


def test_after_an_unsubscribe_what_is_up_to_its_end_still_goes_live_and_nothing_later() -> None:
    # Committed before the unsubscribe (listed for the client), handed over after it.
    hub = Hub()
    sub = Subscription("a", limit=10)
    hub.register(sub, topics={"news": 0})
    hub.set_topic("a", "news", None, 7)
    hub.deliver([note(7, topic_key("news")), note(8, topic_key("news"))])
    assert [f["notificationID"] for f in frames(sub)] == [7]
    assert hub.followers("news") == 0  # past its end: forgotten


def test_frames_during_a_stored_change_wait_for_the_interval_the_store_picked() -> None:
    hub = Hub()
    sub = Subscription("a", limit=10)
    hub.register(sub)
    hub.hold_topic("a", "news")  # the subscribe is being stored
    hub.deliver([note(3, topic_key("news")), note(4, topic_key("news"))])
    assert not sub.buffer
    assert hub.topics_of("a") == {}
    hub.set_topic("a", "news", 3)  # the store put the start after 3
    assert [f["notificationID"] for f in frames(sub)] == [4]
    hub.hold_topic("a", "news")  # the unsubscribe is being stored
    hub.deliver([note(5, topic_key("news")), note(6, topic_key("news"))])
    hub.set_topic("a", "news", None, 5)  # ...and ended at 5
    assert [f["notificationID"] for f in frames(sub)] == [4, 5]


def test_a_failed_subscribe_releases_nothing_and_follows_nothing() -> None:
    hub = Hub()
    sub = Subscription("a", limit=10)
    hub.register(sub)
    hub.hold_topic("a", "news")
    hub.deliver([note(1, topic_key("news"))])
    hub.release_topic("a", "news")
    hub.deliver([note(2, topic_key("news"))])
    assert not sub.buffer and hub.followers("news") == 0
