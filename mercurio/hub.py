"""The in-process registry of open streams, and the fan-out to them.

Registry and fan-out only: what a stream is, and how it writes, is mercurio.stream's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from mercurio import sse
from mercurio.model import ANNOUNCEMENT, NO_CATEGORIES, Notification
from mercurio.stats import LatencyTally

if TYPE_CHECKING:
    from mercurio.stream import CloseReason

CONTROL = -1
"""The id under which a non-notification frame (read-state, reset…) sits in a buffer."""
PENDING = -1
"""A follower's since_id while its first subscribe is being stored (its frames are held)."""
HOLD_LIMIT = 1000
"""Frames kept for one client while its subscription change is stored; past it, live drops."""


class Mailbox(Protocol):
    """What the hub needs of one open stream (mercurio.mailbox.Subscription is the one)."""

    @property
    def client_id(self) -> str: ...

    def wants(self, category: str) -> bool: ...

    def push(self, notification_id: int, frame: bytes, at: float) -> bool:
        """Queue a frame; False when it overflowed and closed the stream."""
        ...

    def close(self, reason: CloseReason) -> None: ...


class Hub:
    """Which streams are open on this node, by client, and fan-out of frames to them."""

    def __init__(self, replay_concurrency: int = 16) -> None:
        # A tuple per client, not a set: nearly every client has one stream, and a set of one
        # is 0.2 KiB. Tuples are rebuilt on register and unregister only.
        self._by_client: dict[str, tuple[Mailbox, ...]] = {}
        self._muted: dict[str, frozenset[str]] = {}
        # Topic -> {client: the id its subscription starts after}, for clients with a stream
        # here only: a topic publish touches its connected followers, never the store.
        self._followers: dict[str, dict[str, int]] = {}
        self._topics_of: dict[str, dict[str, int]] = {}
        # Topic -> {client: until_id} of followers who unsubscribed: what committed up to
        # until_id is theirs (the store lists it), and may still be on its way to the hub.
        self._leaving: dict[str, dict[str, int]] = {}
        # Topic -> {client: frames} while a subscribe or unsubscribe of that client is being
        # stored: which frames are its depends on the id the store picks (hold_topic).
        self._held: dict[str, dict[str, list[sse.NotificationFrame]]] = {}
        self.topic_changes = 0
        """Subscription changes heard so far (any client): a stream that read its topics from
        the store reads them again when one came in meanwhile, before it registers."""
        self.open_streams = 0
        self.deliveries = 0
        self.slow_disconnects = 0
        self.announce_deliveries = 0
        self.replayed = 0
        self.replay_slots = asyncio.Semaphore(replay_concurrency)
        """How many streams replay what they missed at once; the others wait their turn."""
        self.deliver_latency = LatencyTally()
        self.closing: CloseReason | None = None
        """Why every stream was closed (shutdown); a stream registered afterwards ends at once."""

    # -- registry ---------------------------------------------------------------------------

    def register(
        self,
        sub: Mailbox,
        muted: frozenset[str] = frozenset(),
        topics: Mapping[str, int] | None = None,
    ) -> None:
        """Start delivering to sub (muted: the client's muted categories; topics: those it
        follows with where each subscription starts; both from the store)."""
        subs = self._by_client.get(sub.client_id, ())
        if not subs:
            self._muted[sub.client_id] = muted or NO_CATEGORIES
            for topic, since in (topics or {}).items():
                self._follow(sub.client_id, topic, since)
        self._by_client[sub.client_id] = (*subs, sub)
        self.open_streams += 1
        if self.closing is not None:
            # It was being authenticated when close_all ran: it gets the same goodbye.
            sub.close(self.closing)

    def unregister(self, sub: Mailbox) -> None:
        """Stop delivering to sub; forget the client when it was its last stream."""
        subs = self._by_client.get(sub.client_id)
        if subs is None or sub not in subs:
            return
        subs = tuple(other for other in subs if other is not sub)
        self.open_streams -= 1
        if subs:
            self._by_client[sub.client_id] = subs
        else:
            del self._by_client[sub.client_id]
            self._muted.pop(sub.client_id, None)
            for topic in list(self._topics_of.get(sub.client_id, ())):
                self._unfollow(sub.client_id, topic)

    def streams_of(self, client_id: str) -> int:
        """How many streams the client has open on this node."""
        return len(self._by_client.get(client_id, ()))

    def connected_clients(self) -> list[str]:
        return list(self._by_client)

    def muted_of(self, client_id: str) -> frozenset[str] | None:
        """The client's muted categories when it already has a stream here (no store read)."""
        return self._muted.get(client_id) if client_id in self._by_client else None

    def set_muted(self, client_id: str, muted: frozenset[str]) -> None:
        """The client changed its preferences (here or on another node)."""
        if client_id in self._by_client:
            self._muted[client_id] = muted or NO_CATEGORIES

    def topics_of(self, client_id: str) -> dict[str, int] | None:
        """The client's topics when it already has a stream here (no store read)."""
        if client_id not in self._by_client:
            return None
        mine = self._topics_of.get(client_id, {})
        return {topic: since for topic, since in mine.items() if since != PENDING}

    def hold_topic(self, client_id: str, topic: str) -> None:
        """This node is storing a subscribe or unsubscribe of the client: keep its frames of
        the topic until set_topic (or release_topic) says which ones are its.

        The store picks the interval's end inside its transaction; publishes commit and reach
        the hub meanwhile. Held, then sorted by that end, the live stream gets exactly what
        the list will hold; pushed or dropped at once, it would get a few more or fewer.
        """
        if client_id not in self._by_client:
            return
        if client_id not in self._followers.get(topic, ()):
            self._follow(client_id, topic, PENDING)
        self._held.setdefault(topic, {}).setdefault(client_id, [])

    def release_topic(self, client_id: str, topic: str) -> None:
        """The change is stored (or failed): push what was held that is the client's now."""
        held = self._held.get(topic)
        frames = held.pop(client_id, []) if held is not None else []
        if held is not None and not held:
            del self._held[topic]
        if self._followers.get(topic, {}).get(client_id) == PENDING:
            self._unfollow(client_id, topic)
        now = time.monotonic()
        for frame in frames:
            self._offer(topic, client_id, frame, now)

    def set_topic(
        self, client_id: str, topic: str, since: int | None, until: int | None = None
    ) -> None:
        """The client subscribed (since: where it starts) or unsubscribed (since None; until:
        where it ended, None: at once), here or on another node; only a client with a stream
        here is tracked."""
        self.topic_changes += 1
        if client_id not in self._by_client:
            return
        if since is not None:
            self._leaving.get(topic, {}).pop(client_id, None)
            self._follow(client_id, topic, since)
        elif until is None:
            self._unfollow(client_id, topic)
        elif client_id in self._followers.get(topic, ()):
            self._leaving.setdefault(topic, {})[client_id] = until
        if client_id in self._held.get(topic, ()):
            self.release_topic(client_id, topic)

    def followers(self, topic: str) -> int:
        """How many clients with a stream here follow the topic."""
        return len(self._followers.get(topic, ()))

    def _follow(self, client_id: str, topic: str, since: int) -> None:
        self._followers.setdefault(topic, {})[client_id] = since
        self._topics_of.setdefault(client_id, {})[topic] = since

    def _unfollow(self, client_id: str, topic: str) -> None:
        for by_topic in (self._leaving, self._held):
            entries = by_topic.get(topic)
            if entries is not None:
                entries.pop(client_id, None)
                if not entries:
                    del by_topic[topic]
        followers = self._followers.get(topic)
        if followers is not None:
            followers.pop(client_id, None)
            if not followers:
                del self._followers[topic]
        mine = self._topics_of.get(client_id)
        if mine is not None:
            mine.pop(topic, None)
            if not mine:
                del self._topics_of[client_id]

    # -- fan-out ----------------------------------------------------------------------------

    def deliver(self, notes: Iterable[Notification]) -> None:
        """Push committed notifications, in id order, to every open stream that wants them."""
        now = time.monotonic()
        for note in notes:
            if note.is_announcement:
                if self._by_client:
                    self._announce(sse.NotificationFrame(note), now)
                continue
            topic = note.topic
            if topic is not None:
                followers = self._followers.get(topic)
                if followers:
                    self._to_followers(topic, followers, sse.NotificationFrame(note), now)
                continue
            subs = self._by_client.get(note.client_id)
            if subs and note.category not in self._muted.get(note.client_id, ()):
                frame = sse.notification(note, note.client_id)
                self._push(subs, note.id, note.category, frame, now)

    def written(self, since: float) -> None:
        """A stream wrote frames queued since `since`: publish-to-deliver latency."""
        self.deliver_latency.observe(time.monotonic() - since)

    def _announce(self, frame: sse.NotificationFrame, now: float) -> None:
        before = self.deliveries
        for client_id, subs in self._by_client.items():
            if frame.category not in self._muted.get(client_id, ()):
                self._push(subs, frame.id, frame.category, frame.for_client(client_id), now)
        self.announce_deliveries += self.deliveries - before

    def _to_followers(
        self, topic: str, followers: dict[str, int], frame: sse.NotificationFrame, now: float
    ) -> None:
        leaving = self._leaving.get(topic)
        held = self._held.get(topic)
        # No copy: a push never changes the registry (a closed stream unregisters later, in
        # its own task), so the dict cannot change while this loop runs.
        for client_id, since in followers.items():
            if held and client_id in held:
                box = held[client_id]
                if len(box) < HOLD_LIMIT:
                    box.append(frame)
                continue
            # The hub may hear of a subscribe from another node after a notification committed
            # before it: the interval decides, as in the store.
            if frame.id <= since or frame.category in self._muted.get(client_id, ()):
                continue
            if leaving and client_id in leaving and frame.id > leaving[client_id]:
                continue
            subs = self._by_client.get(client_id)
            if subs:
                self._push(subs, frame.id, frame.category, frame.for_client(client_id), now)
        if leaving:
            # Ids reach the hub in order: past a leaver's until_id, nothing more is theirs.
            for client_id in [c for c, until in leaving.items() if until < frame.id]:
                self._unfollow(client_id, topic)

    def _offer(self, topic: str, client_id: str, frame: sse.NotificationFrame, now: float) -> None:
        """One held frame to one follower, if its interval holds it now."""
        since = self._followers.get(topic, {}).get(client_id)
        if since is None or frame.id <= since:
            return
        until = self._leaving.get(topic, {}).get(client_id)
        if until is not None and frame.id > until:
            return
        subs = self._by_client.get(client_id)
        if subs and frame.category not in self._muted.get(client_id, ()):
            self._push(subs, frame.id, frame.category, frame.for_client(client_id), now)

    def _push(
        self, subs: tuple[Mailbox, ...], nid: int, category: str, frame: bytes, now: float
    ) -> None:
        for sub in subs:
            if not sub.wants(category):
                continue
            if sub.push(nid, frame, now):
                self.deliveries += 1
            else:
                self.slow_disconnects += 1  # the stream logged it, and closed as slow-reader

    def push_event(self, client_id: str, frame: bytes) -> None:
        """Push a control frame (read-state and the like) to every stream of the client;
        ANNOUNCEMENT: to every stream (a retracted or replaced announcement)."""
        now = time.monotonic()
        if client_id == ANNOUNCEMENT:
            for subs in self._by_client.values():
                for sub in subs:
                    sub.push(CONTROL, frame, now)
            return
        for sub in self._by_client.get(client_id, ()):
            sub.push(CONTROL, frame, now)

    def close_all(self, reason: CloseReason) -> None:
        """Close every stream (shutdown): each writer ends at its next turn."""
        self.closing = reason
        for subs in self._by_client.values():
            for sub in subs:
                sub.close(reason)
